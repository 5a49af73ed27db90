/**
 * A minimal Node reverse proxy: the yardstick the fabric is measured against.
 *
 * One `node:http` server, one keep-alive `http.Agent`, request and response
 * piped through untouched — what any Node HTTP hop costs at the least. Chaining
 * two of these (two processes) gives the "two hops" reference: the fabric also
 * crosses two processes (server, worker) between the user and the engine.
 *
 * Usage: `node dist/bench/reference-proxy.js --target 127.0.0.1:PORT [--port N]`.
 * Prints `listening <port>` on stdout once it accepts connections.
 */
import { Agent, createServer, type IncomingHttpHeaders, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { parseArgs } from 'node:util'

/** Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection, not to the message. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

function endToEnd(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {}
  for (const name in headers) if (!HOP_BY_HOP.has(name)) out[name] = headers[name]
  return out
}

function main(): void {
  const { values } = parseArgs({
    options: { target: { type: 'string' }, port: { type: 'string', default: '0' } },
  })
  const target = values.target ?? ''
  const colon = target.lastIndexOf(':')
  if (colon <= 0) throw new Error('--target host:port is required')
  const targetHost = target.slice(0, colon)
  const targetPort = Number(target.slice(colon + 1))

  // Generous maxSockets so concurrency would never queue behind the agent;
  // keep-alive so each request reuses a warm upstream connection, as the
  // fabric reuses its long-lived data link.
  const agent = new Agent({ keepAlive: true, maxSockets: 1024, keepAliveMsecs: 60_000 })

  const server = createServer((req, res) => {
    const upstream = request(
      {
        host: targetHost,
        port: targetPort,
        method: req.method,
        path: req.url,
        headers: endToEnd(req.headers),
        agent,
      },
      (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, endToEnd(upstreamRes.headers))
        upstreamRes.pipe(res)
      },
    )
    upstream.on('error', (err) => {
      if (res.headersSent) res.destroy(err)
      else {
        res.writeHead(502, { 'content-type': 'text/plain' })
        res.end(`upstream error: ${err.message}`)
      }
    })
    // A client that leaves cancels the upstream request too.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy()
    })
    req.pipe(upstream)
  })
  server.keepAliveTimeout = 60_000
  // Exit normally on SIGTERM (the harness's stop) so that node's exit hooks run,
  // e.g. --cpu-prof writing its profile (see BENCH_CHILD_NODE_ARGS).
  process.once('SIGTERM', () => process.exit(0))
  server.listen(Number(values.port), '127.0.0.1', () => {
    process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`)
  })
}

main()
