#!/usr/bin/env bash
# Installs the real servers the tests run against when they are missing: PostgreSQL and
# Redis from Debian's packages, Prometheus for its `promtool` (the /metrics test checks the
# exposition with it), and Chromium (the web console's end-to-end test drives it headless
# through playwright-core, which downloads no browser of its own). The tests start their own
# instances (temp dirs, free ports) through test/helpers/services.ts; nothing here runs as a
# system service.
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ -x /usr/bin/chromium ] || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
# Debian's packages start system-wide instances on install; the tests do not use them.
if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server postgresql prometheus >/dev/null 2>&1 || true; fi
service redis-server stop >/dev/null 2>&1 || true
service prometheus stop >/dev/null 2>&1 || true
echo "== services: redis $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/'), postgresql $(ls /usr/lib/postgresql | sort -V | tail -1), $(/usr/bin/chromium --version 2>/dev/null | head -1)"
