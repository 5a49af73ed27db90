import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { casesInFlight, formatReport, runNetworkFuzz } from '../fuzz/network.js'
import { type FuzzTarget, startFuzzTarget } from '../fuzz/target.js'

// 100,000 requests (the acceptance count) take about 75 s on two cores (client and server
// share one event loop); GPUF_NETFUZZ_REQUESTS sets the count and GPUF_FUZZ_SEED replays a run.
const REQUESTS = Number(process.env['GPUF_NETFUZZ_REQUESTS'] ?? 100_000)
const SEED = process.env['GPUF_FUZZ_SEED'] === undefined ? undefined : Number(process.env['GPUF_FUZZ_SEED'])

let target: FuzzTarget | undefined

// A crash of the server is a crash of this process: say which cases were on the wire.
process.on('uncaughtExceptionMonitor', () => {
  const active = casesInFlight()
  if (active.length > 0) console.error(`network fuzz cases in flight:\n  ${active.join('\n  ')}`)
})

before(async () => {
  target = await startFuzzTarget()
})
after(() => target?.close())

test(`the server survives ${REQUESTS} malformed requests on all four ports and serves a valid client throughout`, {
  timeout: Math.max(120_000, REQUESTS * 15),
}, async (t) => {
  const report = await runNetworkFuzz({
    target: target!,
    requests: REQUESTS,
    ...(SEED === undefined ? {} : { seed: SEED }),
  })
  for (const line of formatReport(report).split('\n')) t.diagnostic(line)
  assert.deepEqual(report.findings, [], `findings (replay with GPUF_FUZZ_SEED=${report.seed})`)
  // The valid client was served all along (one request after another, from 127.0.0.2).
  assert.equal(report.valid.failed, 0)
  assert.ok(report.valid.ok >= 1)
  if (REQUESTS < 2_000) return // too few for the coverage checks below to be certain
  assert.ok(report.valid.ok >= 10, `only ${report.valid.ok} valid requests were made`)
  // The fuzzer reached every port and its handlers, not only the connection limits.
  for (const category of ['http/public', 'http/api', 'control', 'proxy', 'records', 'plain']) {
    assert.ok((report.categories[category] ?? 0) > 0, `no ${category} cases`)
  }
  const answered = (prefix: string, status: number) => report.statuses[`${prefix} ${status}`] ?? 0
  assert.ok(
    answered('public', 400) > 0 && answered('api', 400) > 0,
    'no 400 answers: the requests were not read',
  )
  assert.ok(answered('public', 200) > 0, 'no fuzzed request reached the worker')
  assert.ok(report.closedByServer > 0, 'the server closed no malformed connection')
})
