/**
 * Streamed OpenAI answers carry token usage only when the user asks for it
 * (`stream_options.include_usage`). To meter every request the gateway asks the engine for it
 * anyway ({@link withStreamUsage}) and takes the extra out of what the user receives
 * ({@link UsageStripper}), so the user's stream is what the engine would have sent without it:
 * the final usage chunk (`choices: []`, a `usage` object) is dropped, and the `"usage":null`
 * the engine adds to every other chunk is removed.
 */

/** API paths whose streams follow OpenAI's chunk format. */
const OPENAI_STREAMED_PATHS = new Set(['/v1/chat/completions', '/v1/completions'])

/**
 * The request body with `stream_options.include_usage` set, when `path` is a streamed OpenAI
 * request that did not ask for usage; undefined when the body goes as it is.
 */
export function withStreamUsage(path: string, request: Record<string, unknown>): Buffer | undefined {
  if (!OPENAI_STREAMED_PATHS.has(path) || request['stream'] !== true) return undefined
  const options = request['stream_options']
  if (options !== undefined && options !== null && typeof options !== 'object') return undefined
  const given = (options ?? {}) as Record<string, unknown>
  if (given['include_usage'] === true) return undefined
  return Buffer.from(JSON.stringify({ ...request, stream_options: { ...given, include_usage: true } }))
}

const USAGE_NULL = /,\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,\s*/
const EMPTY = Buffer.alloc(0)
/**
 * Most bytes of an unfinished event held back. The usage chunk is a few hundred bytes: an event
 * longer than this cannot be it, so its bytes go on at once (and a stream without event
 * boundaries is relayed as it comes, never buffered).
 */
export const MAX_HELD_EVENT_BYTES = 16 * 1024

/**
 * Removes the usage the gateway asked for from an SSE stream, one event at a time. Works on
 * bytes: an event ends at a blank line (a byte UTF-8 never uses inside a character), an event
 * without a `"usage"` field passes as the very bytes that came, and only an event holding one
 * is decoded and rewritten. An event is passed on as soon as its blank line arrives; only an
 * incomplete event is held (engines write whole events, so in practice nothing waits), and at
 * most {@link MAX_HELD_EVENT_BYTES} of it.
 */
export class UsageStripper {
  #pending: Buffer = EMPTY

  /** The part of `chunk` to send now (possibly empty). */
  push(chunk: Buffer): Buffer {
    const buf = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk])
    const out: Buffer[] = []
    let start = 0
    for (let end = eventEnd(buf, start); end > 0; end = eventEnd(buf, start)) {
      const event = this.#event(buf.subarray(start, end))
      if (event.length > 0) out.push(event)
      start = end
    }
    if (buf.length - start > MAX_HELD_EVENT_BYTES) {
      out.push(buf.subarray(start))
      start = buf.length
    }
    this.#pending = start === buf.length ? EMPTY : buf.subarray(start)
    return out.length === 1 ? out[0]! : Buffer.concat(out)
  }

  /** What is left at the end of the stream (an event without its blank line), unchanged. */
  flush(): Buffer {
    const rest = this.#pending
    this.#pending = EMPTY
    return rest
  }

  #event(event: Buffer): Buffer {
    if (event.indexOf('"usage"') < 0) return event
    const text = event.toString('utf8')
    if (/"usage"\s*:\s*\{/.test(text) && isUsageChunk(text)) return EMPTY
    const rewritten = text.replace(USAGE_NULL, '')
    return rewritten === text ? event : Buffer.from(rewritten, 'utf8')
  }
}

/** The index just after the blank line (`\n\n` or `\n\r\n`) that ends the event starting at `from`; -1 if none yet. */
function eventEnd(buf: Buffer, from: number): number {
  for (let i = buf.indexOf(10, from); i >= 0; i = buf.indexOf(10, i + 1)) {
    if (buf[i + 1] === 10) return i + 2
    if (buf[i + 1] === 13 && buf[i + 2] === 10) return i + 3
  }
  return -1
}

/** True for the extra final chunk: a data event whose JSON has an empty `choices` and a `usage`. */
function isUsageChunk(event: string): boolean {
  const data = event
    .split(/\r?\n/)
    .filter((line) => line.startsWith('data:'))
    .map((line) => line.slice(5).trimStart())
    .join('\n')
  try {
    const parsed = JSON.parse(data) as { choices?: unknown; usage?: unknown }
    return (
      Array.isArray(parsed.choices) &&
      parsed.choices.length === 0 &&
      typeof parsed.usage === 'object' &&
      parsed.usage !== null
    )
  } catch {
    return false
  }
}
