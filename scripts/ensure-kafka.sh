#!/usr/bin/env bash
# Installs an Apache Kafka broker for the tests when it is missing: Java and Maven from Debian's
# packages, the broker's jars from Maven Central into .cache/kafka/lib. The tests start their own
# KRaft broker from those jars (test/helpers/services.ts); nothing runs as a system service.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/apt.sh
. scripts/lib/apt.sh
lib=.cache/kafka/lib

have_jars() { ls "$lib"/kafka_2.13-*.jar >/dev/null 2>&1; }

# The broker runs on Java, so a cached .cache/kafka alone is not enough; Maven only fetches jars.
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
have_jars || command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
if have_jars; then exit 0; fi
echo "== fetching the Kafka broker jars (Maven Central)"
mkdir -p "$lib"
for attempt in 1 2 3; do
  if mvn -q -B -f scripts/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory="$PWD/$lib"; then break; fi
  if [ "$attempt" -eq 3 ]; then echo "could not fetch the Kafka jars" >&2; exit 1; fi
  sleep $((attempt * 5))
done
