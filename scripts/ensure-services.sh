#!/usr/bin/env bash
# Installs the real servers the tests run against when they are missing: PostgreSQL and
# Redis from Debian's packages, and Prometheus for its `promtool` (the /metrics test checks the
# exposition with it). The tests start their own instances (temp dirs, free ports)
# through test/helpers/services.ts; nothing here runs as a system service.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing ${need[*]}: install them (Debian: apt-get install -y ${need[*]})" >&2
    exit 1
  fi
  echo "== installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # The mirrors can hiccup: try a few times before failing the run.
  for attempt in 1 2 3; do
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then break; fi
    if [ "$attempt" -eq 3 ]; then echo "could not install ${need[*]}" >&2; exit 1; fi
    sleep $((attempt * 5))
  done
fi
# Debian's packages start system-wide instances on install; the tests do not use them.
if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server postgresql prometheus >/dev/null 2>&1 || true; fi
service redis-server stop >/dev/null 2>&1 || true
service prometheus stop >/dev/null 2>&1 || true
echo "== services: redis $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/'), postgresql $(ls /usr/lib/postgresql | sort -V | tail -1)"
