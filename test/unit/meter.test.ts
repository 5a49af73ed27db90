import assert from 'node:assert/strict'
import { test } from 'node:test'
import { checkCost } from '../../src/cache/common.js'
import { type AnswerFacts, AnswerMeter } from '../../src/server/gateway/meter.js'

function meter(body: string): AnswerFacts {
  let facts: AnswerFacts | undefined
  const m = new AnswerMeter((f) => {
    facts = f
  })
  m.status = 200
  m.workerId = 'w-1'
  m.observe(Buffer.from(body))
  m.finish()
  assert.ok(facts)
  return facts
}

test('token counts an engine reports are whole, non-negative and safe, however many digits', () => {
  const huge = '9'.repeat(400)
  const facts = meter(
    `{"usage":{"prompt_tokens":${'1'.repeat(20)},"completion_tokens":4,"total_tokens":${huge}}}`,
  )
  assert.deepEqual(facts.tokens, {
    total: Number.MAX_SAFE_INTEGER,
    prompt: Number.MAX_SAFE_INTEGER,
    completion: 4,
    reported: true,
  })
  // The TPM limiter takes it: the answer is counted (as very many), not silently skipped.
  assert.equal(checkCost(facts.tokens.total), Number.MAX_SAFE_INTEGER)

  // Ollama's counts are summed; the sum is bounded too.
  const ollama = meter(`{"done":true,"prompt_eval_count":${huge},"eval_count":${huge}}`)
  assert.equal(ollama.tokens.total, Number.MAX_SAFE_INTEGER)

  assert.deepEqual(meter('{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}').tokens, {
    total: 7,
    prompt: 3,
    completion: 4,
    reported: true,
  })
})
