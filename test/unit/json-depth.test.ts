import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { jsonDepthExceeds } from '../../src/server/api/index.js'

/** Nesting depth of a parsed JSON value. */
function depth(v: unknown): number {
  if (Array.isArray(v)) return 1 + Math.max(0, ...v.map(depth))
  if (typeof v === 'object' && v !== null) return 1 + Math.max(0, ...Object.values(v).map(depth))
  return 0
}

test('jsonDepthExceeds agrees with the depth of any JSON value, strings with brackets and escapes included', () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 8 }), fc.integer({ min: 0, max: 10 }), (value, max) => {
      const text = Buffer.from(JSON.stringify(value))
      assert.equal(jsonDepthExceeds(text, max), depth(value) > max)
    }),
    { numRuns: 500 },
  )
  assert.equal(jsonDepthExceeds(Buffer.from('"\\"[[[["'), 1), false)
  assert.equal(jsonDepthExceeds(Buffer.from('['.repeat(100_000)), 32), true)
})
