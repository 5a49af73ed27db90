import { EventEmitter, once } from 'node:events'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

/** Options of the fake OpenAI-compatible engine used as a test double. */
export interface FakeEngineOptions {
  /** Models it lists on `/v1/models` (and `/api/tags` when `ollama`). */
  models: string[]
  /** Tag put into every answer, so a test can tell which engine served it. */
  name: string
  /** Streamed chunks per answer. */
  chunks?: number
  /** Pause between streamed chunks. */
  chunkIntervalMs?: number
  /** Also serve Ollama's native `/api/*` routes (as Ollama does). */
  ollama?: boolean
  /** Listen on this port (default: a free one). */
  port?: number
  /** Report token usage (`usage`, `stream_options.include_usage`)? Default true. */
  reportsUsage?: boolean
}

/** A running fake engine. */
export interface FakeEngine {
  port: number
  requests: { method: string; path: string; body: string }[]
  /** Emits 'aborted' (with ms since the request started) when a client goes away mid-answer. */
  events: EventEmitter
  close(): Promise<void>
}

/**
 * A real HTTP server speaking enough of OpenAI's (and optionally Ollama's) API for tests:
 * chat, completions, embeddings, models; streams SSE/NDJSON chunks at a set pace and
 * records requests that were abandoned mid-stream.
 */
export async function startFakeEngine(options: FakeEngineOptions): Promise<FakeEngine> {
  const requests: FakeEngine['requests'] = []
  const events = new EventEmitter()
  const chunks = options.chunks ?? 3
  const interval = options.chunkIntervalMs ?? 0
  const server = createServer(async (req, res) => {
    const body = await readBody(req)
    const path = (req.url ?? '/').split('?')[0]!
    requests.push({ method: req.method ?? '', path, body })
    const json = body.length > 0 ? (JSON.parse(body) as Record<string, unknown>) : {}
    const model = String(json['model'] ?? options.models[0])
    if (req.method === 'GET' && path === '/v1/models') {
      return send(res, {
        object: 'list',
        data: options.models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'fake' })),
      })
    }
    if (options.ollama && req.method === 'GET' && path === '/api/tags') {
      return send(res, {
        models: options.models.map((name) => ({ name, model: name, size: 1, digest: 'x' })),
      })
    }
    const text = `from ${options.name}`
    switch (path) {
      case '/v1/chat/completions':
      case '/v1/completions': {
        const chat = path === '/v1/chat/completions'
        if (json['stream'] !== true) {
          return send(
            res,
            chat
              ? {
                  id: 'c1',
                  object: 'chat.completion',
                  created: 1,
                  model,
                  choices: [
                    { index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' },
                  ],
                  ...(options.reportsUsage === false
                    ? {}
                    : { usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } }),
                }
              : {
                  id: 'c1',
                  object: 'text_completion',
                  created: 1,
                  model,
                  choices: [{ index: 0, text, finish_reason: 'stop' }],
                  usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
                },
          )
        }
        // OpenAI's `stream_options.include_usage`: `usage: null` on every chunk, a usage chunk last.
        const withUsage =
          options.reportsUsage !== false &&
          (json['stream_options'] as { include_usage?: unknown } | undefined)?.include_usage === true
        const u = (chunk: object) => JSON.stringify(withUsage ? { ...chunk, usage: null } : chunk)
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        await stream(
          req,
          res,
          events,
          chunks,
          interval,
          (i) =>
            `data: ${u(
              chat
                ? {
                    id: 'c1',
                    object: 'chat.completion.chunk',
                    created: 1,
                    model,
                    choices: [{ index: 0, delta: { content: `${text} ${i};` }, finish_reason: null }],
                  }
                : {
                    id: 'c1',
                    object: 'text_completion',
                    created: 1,
                    model,
                    choices: [{ index: 0, text: `${text} ${i};`, finish_reason: null }],
                  },
            )}\n\n`,
        )
        if (!res.destroyed) {
          res.write(
            `data: ${u({ id: 'c1', object: chat ? 'chat.completion.chunk' : 'text_completion', created: 1, model, choices: [{ index: 0, ...(chat ? { delta: {} } : { text: '' }), finish_reason: 'stop' }] })}\n\n`,
          )
          if (withUsage) {
            const usage = { prompt_tokens: 4, completion_tokens: chunks, total_tokens: 4 + chunks }
            res.write(
              `data: ${JSON.stringify({ id: 'c1', object: chat ? 'chat.completion.chunk' : 'text_completion', created: 1, model, choices: [], usage })}\n\n`,
            )
          }
          res.end('data: [DONE]\n\n')
        }
        return
      }
      case '/v1/embeddings': {
        const input = json['input']
        const inputs = Array.isArray(input) ? input : [input]
        return send(res, {
          object: 'list',
          data: inputs.map((_, index) => ({ object: 'embedding', index, embedding: [0.1, 0.2, 0.3] })),
          model,
          usage: { prompt_tokens: 1, total_tokens: 1 },
        })
      }
      case '/api/chat':
      case '/api/generate': {
        if (!options.ollama) break
        const field = (t: string) =>
          path === '/api/chat' ? { message: { role: 'assistant', content: t } } : { response: t }
        res.writeHead(200, { 'content-type': 'application/x-ndjson' })
        await stream(
          req,
          res,
          events,
          chunks,
          interval,
          (i) =>
            `${JSON.stringify({ model, created_at: new Date().toISOString(), ...field(`${text} ${i};`), done: false })}\n`,
        )
        if (!res.destroyed)
          res.end(
            `${JSON.stringify({ model, created_at: new Date().toISOString(), ...field(''), done: true, done_reason: 'stop' })}\n`,
          )
        return
      }
    }
    res.writeHead(404, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: { message: `no route ${path}` } }))
  })
  server.listen(options.port ?? 0, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    events,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

async function stream(
  req: IncomingMessage,
  res: ServerResponse,
  events: EventEmitter,
  chunks: number,
  interval: number,
  make: (i: number) => string,
): Promise<void> {
  const started = Date.now()
  let gone = false
  res.once('close', () => {
    if (!res.writableFinished) {
      gone = true
      events.emit('aborted', Date.now() - started)
    }
  })
  req.socket.setNoDelay(true)
  for (let i = 0; i < chunks && !gone; i++) {
    if (i > 0 && interval > 0) await new Promise((r) => setTimeout(r, interval))
    if (!gone) res.write(make(i))
  }
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = []
  for await (const chunk of req) parts.push(chunk as Buffer)
  return Buffer.concat(parts).toString('utf8')
}

function send(res: ServerResponse, value: unknown): void {
  const body = JSON.stringify(value)
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}
