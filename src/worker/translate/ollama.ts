import { contentText, jsonReply } from '../engines/openai-format.js'
import type { Engine, EngineCall, EngineReply } from '../engines/types.js'
import { readAll, sseEvents } from './sse.js'

/**
 * Ollama's API (`/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`) served by an
 * engine that only speaks OpenAI's: the request is rewritten once, and each streamed SSE
 * event becomes one NDJSON line as soon as it arrives.
 */
export async function callOllamaOverOpenAI(engine: Engine, call: EngineCall): Promise<EngineReply> {
  const path = call.path.split('?')[0]
  let req: Record<string, unknown>
  try {
    const parsed = JSON.parse(call.body.toString('utf8')) as unknown
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new Error('not an object')
    req = parsed as Record<string, unknown>
  } catch {
    return ollamaError(400, 'request body must be a JSON object')
  }
  const model = String(req['model'] ?? '')
  switch (path) {
    case '/api/chat': {
      const messages = Array.isArray(req['messages']) ? (req['messages'] as Record<string, unknown>[]) : []
      return chatLike(engine, call, req, model, 'message', {
        messages: messages.map((m) => ({
          role: String(m['role'] ?? 'user'),
          content: contentText(m['content']),
        })),
      })
    }
    case '/api/generate': {
      const prompt = String(req['prompt'] ?? '')
      if (req['raw'] === true)
        return chatLike(engine, call, req, model, 'response', { prompt }, '/v1/completions')
      const messages = [
        ...(typeof req['system'] === 'string' ? [{ role: 'system', content: req['system'] }] : []),
        { role: 'user', content: prompt },
      ]
      return chatLike(engine, call, req, model, 'response', { messages })
    }
    case '/api/embed':
    case '/api/embeddings': {
      const single = path === '/api/embeddings'
      const input = single ? String(req['prompt'] ?? '') : req['input']
      const reply = await engine.call(openaiCall(call, '/v1/embeddings', { model, input }))
      const body = JSON.parse((await readAll(reply.body)).toString('utf8') || '{}') as {
        data?: { embedding: number[] }[]
        usage?: { prompt_tokens?: number }
        error?: { message?: string }
      }
      if (reply.status >= 400)
        return ollamaError(reply.status, body.error?.message ?? `engine answered ${reply.status}`)
      const vectors = (body.data ?? []).map((d) => d.embedding)
      if (single) return jsonReply(200, { embedding: vectors[0] ?? [] })
      return jsonReply(200, { model, embeddings: vectors, prompt_eval_count: body.usage?.prompt_tokens ?? 0 })
    }
    default:
      return ollamaError(404, `${path} is not supported by this worker's engine`)
  }
}

/** Ollama's generation options mapped to OpenAI's parameters. */
function samplingOf(req: Record<string, unknown>): Record<string, unknown> {
  const options = (
    typeof req['options'] === 'object' && req['options'] !== null ? req['options'] : {}
  ) as Record<string, unknown>
  const out: Record<string, unknown> = {}
  if (typeof options['temperature'] === 'number') out['temperature'] = options['temperature']
  if (typeof options['top_p'] === 'number') out['top_p'] = options['top_p']
  if (typeof options['seed'] === 'number') out['seed'] = options['seed']
  if (typeof options['num_predict'] === 'number' && options['num_predict'] > 0)
    out['max_tokens'] = options['num_predict']
  if (Array.isArray(options['stop'])) out['stop'] = options['stop']
  if (req['format'] === 'json') out['response_format'] = { type: 'json_object' }
  return out
}

async function chatLike(
  engine: Engine,
  call: EngineCall,
  req: Record<string, unknown>,
  model: string,
  field: 'message' | 'response',
  input: Record<string, unknown>,
  target = '/v1/chat/completions',
): Promise<EngineReply> {
  // Ollama streams unless told otherwise.
  const stream = req['stream'] !== false
  const upstream = {
    model,
    ...input,
    ...samplingOf(req),
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  }
  const started = process.hrtime.bigint()
  const reply = await engine.call(openaiCall(call, target, upstream))
  if (reply.status >= 400) {
    const text = (await readAll(reply.body)).toString('utf8')
    let message = `engine answered ${reply.status}`
    try {
      message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message
    } catch {
      // keep the status message
    }
    return ollamaError(reply.status, message)
  }
  const piece = (text: string) =>
    field === 'message' ? { message: { role: 'assistant', content: text } } : { response: text }

  if (!stream) {
    const body = JSON.parse((await readAll(reply.body)).toString('utf8')) as OpenAIResult
    const choice = body.choices?.[0]
    const text = choice?.message?.content ?? choice?.text ?? ''
    return jsonReply(200, {
      model,
      created_at: new Date().toISOString(),
      ...piece(text),
      done: true,
      done_reason: choice?.finish_reason ?? 'stop',
      ...durations(started, body.usage),
    })
  }
  return {
    status: 200,
    headers: { 'content-type': 'application/x-ndjson' },
    body: (async function* () {
      let finish = 'stop'
      let usageSeen: OpenAIResult['usage']
      for await (const event of sseEvents(reply.body)) {
        const chunk = event as OpenAIResult
        if (chunk.usage) usageSeen = chunk.usage
        const choice = chunk.choices?.[0]
        if (choice === undefined) continue
        if (choice.finish_reason) finish = choice.finish_reason
        const text = choice.delta?.content ?? choice.text ?? ''
        if (text.length === 0) continue
        yield line({ model, created_at: new Date().toISOString(), ...piece(text), done: false })
      }
      yield line({
        model,
        created_at: new Date().toISOString(),
        ...piece(''),
        done: true,
        done_reason: finish,
        ...durations(started, usageSeen),
      })
    })(),
  }
}

interface OpenAIResult {
  choices?: {
    message?: { content?: string }
    delta?: { content?: string }
    text?: string
    finish_reason?: string | null
  }[]
  usage?: { prompt_tokens?: number; completion_tokens?: number }
}

function durations(started: bigint, usage: OpenAIResult['usage']) {
  const total = Number(process.hrtime.bigint() - started)
  return {
    total_duration: total,
    load_duration: 0,
    prompt_eval_count: usage?.prompt_tokens ?? 0,
    prompt_eval_duration: 0,
    eval_count: usage?.completion_tokens ?? 0,
    eval_duration: total,
  }
}

function openaiCall(call: EngineCall, path: string, body: unknown): EngineCall {
  return { method: 'POST', path, body: Buffer.from(JSON.stringify(body)), signal: call.signal }
}

function line(value: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(value)}\n`)
}

function ollamaError(status: number, message: string): EngineReply {
  return jsonReply(status, { error: message })
}
