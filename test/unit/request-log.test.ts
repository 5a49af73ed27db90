/**
 * The request tracker against fake stores that behave like the adapters: a batch is written
 * whole or refused whole, a refusal is a non-retryable BAD_REQUEST, an outage a
 * GPUF_STORE_UNAVAILABLE. What must hold: numbers from workers and engines never make a
 * row unwritable, a row the database refuses never blocks the rows behind it, and rows
 * wait (in order, none lost) while the database is down.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ErrorCodes, FabricError } from '../../src/errors/index.js'
import { createLogger } from '../../src/observability/logger.js'
import {
  boundRequestRow,
  REQUEST_LOG_MAX_TEXT_CHARS,
  RequestTracker,
  type TrackedRequest,
} from '../../src/server/request-log.js'
import { requestRowValues } from '../../src/store/shared.js'

const INT32_MAX = 2 ** 31 - 1

function row(n: number, fields: Partial<TrackedRequest> = {}): TrackedRequest {
  return {
    at: new Date(Date.UTC(2030, 0, 1) + n),
    keyId: 'key_0123456789abcdef',
    userId: 'usr_0123456789abcdef',
    model: 'llama3:8b',
    workerId: 'w-1',
    path: `/v1/chat/completions#${n}`,
    status: 200,
    durationMs: 12.5,
    promptTokens: 1,
    completionTokens: 2,
    totalTokens: 3,
    ...fields,
  }
}

/** Which rows (by the `#n` of their path) a list holds. */
const ids = (rows: readonly TrackedRequest[]): number[] => rows.map((r) => Number(r.path.split('#')[1]))

/**
 * A store that checks rows as both adapters do (`requestRowValues`) and refuses any batch
 * holding a row that `poisoned` picks, whole, as a database constraint would. While `down`,
 * every call fails like an unreachable database.
 */
class FakeStore {
  readonly written: TrackedRequest[] = []
  calls = 0
  down: 'no' | 'unreachable' | 'closed' = 'no'
  /** Goes down (unreachable) once this many more calls have been made. */
  downAfterCalls = Number.POSITIVE_INFINITY
  gate: Promise<void> | undefined

  constructor(readonly poisoned: (row: TrackedRequest) => boolean = () => false) {}

  async recordRequests(rows: readonly TrackedRequest[]): Promise<void> {
    this.calls++
    if (this.downAfterCalls-- <= 0) this.down = 'unreachable'
    await this.gate
    if (this.down === 'unreachable') {
      throw new FabricError(ErrorCodes.STORE_UNAVAILABLE, 'PostgreSQL unavailable: connect ECONNREFUSED', {
        retryable: true,
      })
    }
    if (this.down === 'closed')
      throw new FabricError(ErrorCodes.STORE_UNAVAILABLE, 'the fake store is closed')
    rows.forEach(requestRowValues)
    if (rows.some(this.poisoned)) {
      throw new FabricError(
        ErrorCodes.BAD_REQUEST,
        'postgres: null value in column "key_id" violates not-null',
      )
    }
    this.written.push(...rows)
  }
}

function capture() {
  const lines: Record<string, unknown>[] = []
  const logger = createLogger({
    level: 'debug',
    destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  })
  return { logger, lines }
}

test('boundRequestRow keeps every value within what the request_log columns hold', () => {
  const cases: [string, Partial<TrackedRequest>, Partial<TrackedRequest>][] = [
    ['in range: unchanged', {}, {}],
    ['2^31 tokens', { totalTokens: 2 ** 31 }, { totalTokens: INT32_MAX }],
    ['1e300 tokens', { promptTokens: 1e300 }, { promptTokens: INT32_MAX }],
    ['infinite tokens', { completionTokens: Number.POSITIVE_INFINITY }, { completionTokens: INT32_MAX }],
    ['NaN tokens: unknown', { totalTokens: Number.NaN }, { totalTokens: null }],
    ['negative tokens', { totalTokens: -5 }, { totalTokens: 0 }],
    ['fractional tokens', { promptTokens: 2.6 }, { promptTokens: 3 }],
    [
      'absent tokens',
      { promptTokens: null, completionTokens: null },
      { promptTokens: null, completionTokens: null },
    ],
    ['huge status', { status: 1e12 }, { status: INT32_MAX }],
    ['negative status', { status: -(2 ** 40) }, { status: -(2 ** 31) }],
    ['NaN status', { status: Number.NaN }, { status: 0 }],
    ['fractional status', { status: 200.4 }, { status: 200 }],
    ['NaN duration', { durationMs: Number.NaN }, { durationMs: 0 }],
    ['infinite duration', { durationMs: Number.POSITIVE_INFINITY }, { durationMs: 0 }],
    ['negative duration (clock step)', { durationMs: -3 }, { durationMs: 0 }],
    ['fractional duration: kept', { durationMs: 0.1 + 0.2 }, { durationMs: 0.1 + 0.2 }],
    ['NUL in text (PostgreSQL text cannot hold it)', { model: 'a\u0000b' }, { model: 'a\uFFFDb' }],
  ]
  for (const [what, input, expected] of cases) {
    const bounded = boundRequestRow(row(1, input))
    assert.deepEqual(bounded, row(1, { ...input, ...expected }), what)
    assert.doesNotThrow(() => requestRowValues(bounded, 0), what)
  }

  const long = 'x'.repeat(REQUEST_LOG_MAX_TEXT_CHARS * 4)
  const bounded = boundRequestRow(
    row(1, { keyId: long, userId: long, model: long, workerId: long, path: long }),
  )
  for (const field of ['keyId', 'userId', 'model', 'workerId', 'path'] as const) {
    assert.equal(bounded[field]?.length, REQUEST_LOG_MAX_TEXT_CHARS, field)
  }
  // A cut never splits a surrogate pair (half a character is not valid UTF-8).
  const emoji = `${'x'.repeat(REQUEST_LOG_MAX_TEXT_CHARS - 1)}🚀🚀`
  const cut = boundRequestRow(row(1, { model: emoji })).model
  assert.equal(cut, 'x'.repeat(REQUEST_LOG_MAX_TEXT_CHARS - 1))
  assert.equal(boundRequestRow(row(1, { userId: null, workerId: null })).userId, null)
})

test('numbers out of the columns range are bounded on track, not refused', async () => {
  const store = new FakeStore()
  const tracker = new RequestTracker({ store, logger: capture().logger, maxBatch: 3 })
  const poisons: Partial<TrackedRequest>[] = [
    { totalTokens: 2 ** 31 },
    { totalTokens: 1e300 },
    { totalTokens: Number.NaN },
    { totalTokens: -5 },
    { status: 2 ** 31, durationMs: Number.NaN },
  ]
  for (const [i, fields] of poisons.entries()) tracker.track(row(i, fields))
  tracker.track(row(5))
  await tracker.flush()
  assert.deepEqual(ids(store.written), [0, 1, 2, 3, 4, 5])
  assert.deepEqual(
    store.written.map((r) => r.totalTokens),
    [INT32_MAX, INT32_MAX, null, 0, 3, 3],
  )
  assert.equal(store.written[4]!.status, INT32_MAX)
  assert.equal(store.written[4]!.durationMs, 0)
  assert.deepEqual(tracker.stats(), { pending: 0, written: 6, refused: 0, dropped: 0 })
})

test('a row the store refuses is dropped and logged; the rows around and behind it are written', async () => {
  const store = new FakeStore((r) => r.keyId === 'poison')
  const { logger, lines } = capture()
  const tracker = new RequestTracker({ store, logger, maxBatch: 8 })
  for (let i = 0; i < 20; i++) tracker.track(row(i, i === 3 || i === 12 ? { keyId: 'poison' } : {}))
  await tracker.flush()
  const expected = Array.from({ length: 20 }, (_, i) => i).filter((i) => i !== 3 && i !== 12)
  assert.deepEqual(ids(store.written), expected, 'every other row, once, in order')
  assert.deepEqual(tracker.stats(), { pending: 0, written: 18, refused: 2, dropped: 0 })
  // Bisection, not a query per row: two bad rows in 20 cost far fewer than 20 extra calls.
  assert.ok(store.calls <= 16, `${store.calls} calls`)

  const warnings = lines.filter((l) => l['level'] === 40)
  assert.equal(
    warnings.reduce((n, l) => n + Number(l['refused']), 0),
    2,
  )
  assert.ok(warnings.every((l) => l['code'] === ErrorCodes.BAD_REQUEST))

  // Later rows go out too: nothing is stuck.
  for (let i = 20; i < 25; i++) tracker.track(row(i))
  await tracker.flush()
  assert.deepEqual(ids(store.written).slice(-5), [20, 21, 22, 23, 24])

  // A batch of one refused row, alone.
  tracker.track(row(25, { keyId: 'poison' }))
  tracker.track(row(26))
  await tracker.flush()
  assert.deepEqual(ids(store.written).slice(-1), [26])
  assert.equal(tracker.stats().refused, 3)
})

test('while the database is unavailable rows wait in order, none dropped, and go out once it is back', async () => {
  for (const down of ['unreachable', 'closed'] as const) {
    const store = new FakeStore()
    const tracker = new RequestTracker({ store, logger: capture().logger, maxBatch: 4 })
    store.down = down
    for (let i = 0; i < 10; i++) tracker.track(row(i))
    await tracker.flush()
    await tracker.flush()
    assert.deepEqual(store.written, [], down)
    assert.equal(store.calls, 2, `${down}: one try per flush, no splitting`)
    assert.deepEqual(tracker.stats(), { pending: 10, written: 0, refused: 0, dropped: 0 }, down)
    store.down = 'no'
    await tracker.flush()
    assert.deepEqual(
      ids(store.written),
      Array.from({ length: 10 }, (_, i) => i),
      down,
    )
  }
})

test('the database going down in the middle of a split keeps the unsettled rows, once each', async () => {
  for (let after = 1; after < 8; after++) {
    const store = new FakeStore((r) => r.keyId === 'poison')
    const tracker = new RequestTracker({ store, logger: capture().logger, maxBatch: 8 })
    for (let i = 0; i < 12; i++) tracker.track(row(i, i === 5 ? { keyId: 'poison' } : {}))
    store.downAfterCalls = after
    await tracker.flush()
    store.down = 'no'
    store.downAfterCalls = Number.POSITIVE_INFINITY
    await tracker.flush()
    assert.deepEqual(ids(store.written), [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11], `down after ${after} calls`)
    assert.equal(tracker.stats().refused, 1)
  }
})

test('rows tracked while a write is in flight are neither lost nor written twice, even when the queue is full', async () => {
  const store = new FakeStore()
  const tracker = new RequestTracker({ store, logger: capture().logger, maxBatch: 5, maxQueue: 5 })
  for (let i = 0; i < 5; i++) tracker.track(row(i))
  let open: () => void = () => undefined
  store.gate = new Promise((resolve) => {
    open = resolve
  })
  const flushing = tracker.flush()
  for (let i = 5; i < 10; i++) tracker.track(row(i))
  open()
  await flushing
  store.gate = undefined
  await tracker.flush()
  assert.deepEqual(
    ids(store.written),
    Array.from({ length: 10 }, (_, i) => i),
  )
  assert.equal(tracker.stats().dropped, 0)

  // Beyond maxQueue the oldest waiting rows are dropped, counted, and logged.
  store.down = 'unreachable'
  for (let i = 10; i < 18; i++) tracker.track(row(i))
  await tracker.flush()
  store.down = 'no'
  await tracker.flush()
  assert.deepEqual(ids(store.written).slice(10), [13, 14, 15, 16, 17])
  assert.equal(tracker.stats().dropped, 3)
})
