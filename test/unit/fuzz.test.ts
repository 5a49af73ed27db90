import { test } from 'node:test'
import { properties } from '../fuzz/properties.js'

// A short run of every decoder fuzz property (about two seconds in all); `npm run fuzz` runs
// the same properties on a million inputs. A failure prints fast-check's counterexample and
// seed; GPUF_FUZZ_SEED replays it.
const RUNS_PER_WEIGHT = Number(process.env['GPUF_FUZZ_UNIT_RUNS'] ?? 1000)
const SEED = process.env['GPUF_FUZZ_SEED'] === undefined ? undefined : Number(process.env['GPUF_FUZZ_SEED'])

for (const property of properties) {
  test(`fuzz: ${property.name}`, () => {
    property.check(RUNS_PER_WEIGHT * property.weight, SEED)
  })
}
