/**
 * A minimal fake OpenAI-compatible engine for the latency benchmark.
 *
 * It answers `POST /v1/chat/completions` with one small, fixed, non-streaming
 * `chat.completion` and `GET /v1/models` with the single model `bench`. The
 * bodies are serialised once at start-up so the engine costs the same on every
 * path and adds as little noise as possible to what the benchmark measures.
 *
 * Usage: `node dist/bench/engine.js [--port N]` (default 0 = any free port).
 * Prints `listening <port>` on stdout once it accepts connections.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'

/** The assistant text every completion carries; the client checks for it. */
export const BENCH_CONTENT = 'bench-engine-says-hello'

/** The model name the fake engine serves. */
export const BENCH_MODEL = 'bench'

const completionBody = Buffer.from(
  JSON.stringify({
    id: 'chatcmpl-bench',
    object: 'chat.completion',
    created: 1_700_000_000,
    model: BENCH_MODEL,
    choices: [{ index: 0, message: { role: 'assistant', content: BENCH_CONTENT }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1, completion_tokens: 4, total_tokens: 5 },
  }),
)
const modelsBody = Buffer.from(
  JSON.stringify({
    object: 'list',
    data: [{ id: BENCH_MODEL, object: 'model', created: 1_700_000_000, owned_by: 'bench' }],
  }),
)
const notFoundBody = Buffer.from(JSON.stringify({ error: { message: 'not found', type: 'not_found' } }))

function main(): void {
  const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } })
  const server = createServer((req, res) => {
    // Read the request to its end before answering, as a real engine must
    // parse the prompt; answering early would flatter the direct path.
    req.resume()
    req.on('end', () => {
      const path = req.url?.split('?')[0]
      let status = 200
      let body = notFoundBody
      if (req.method === 'POST' && path === '/v1/chat/completions') body = completionBody
      else if (req.method === 'GET' && path === '/v1/models') body = modelsBody
      else status = 404
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length })
      res.end(body)
    })
  })
  // Clients keep connections open between rounds; Node's default 5 s
  // keep-alive would close them during slow start-up phases.
  server.keepAliveTimeout = 60_000
  // Exit normally on SIGTERM (the harness's stop) so that node's exit hooks run,
  // e.g. --cpu-prof writing its profile (see BENCH_CHILD_NODE_ARGS).
  process.once('SIGTERM', () => process.exit(0))
  server.listen(Number(values.port), '127.0.0.1', () => {
    process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`)
  })
}

// Only run when executed directly, so the latency script can import the
// constants above without starting a server.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main()
