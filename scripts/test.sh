#!/usr/bin/env bash
# The whole test suite: install what is missing, build and typecheck (sources, tests and
# benchmarks), lint, then unit, integration and end-to-end tests against real servers on
# loopback. `npm test` runs this; so does CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "== installing dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi

echo "== real servers for the tests (PostgreSQL, Redis, Kafka)"
bash scripts/ensure-services.sh
bash scripts/ensure-kafka.sh
# In CI a missing server is a failure, never a skipped test.
if [ "${CI:-}" = "true" ]; then export GPUF_REQUIRE_SERVICES=1; fi

echo "== build + typecheck"
rm -rf dist
# Sources, tests and benchmarks, then the web console (browser TypeScript, its own tsconfig).
npm run build --silent

echo "== lint + format check"
npx biome check .

echo "== tests"
# One runner for every layer, so its closing summary counts them all.
# (Node 20's --test takes no globs, hence find.)
mapfile -t files < <(for layer in unit contract integration e2e; do find "dist/test/$layer" -name '*.test.js' | sort; done)
node --test --test-reporter=spec --test-timeout=120000 "${files[@]}"
