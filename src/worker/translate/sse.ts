/**
 * Parses an SSE byte stream into the JSON payloads of its `data:` events, as they arrive.
 * `[DONE]` ends the stream. Partial lines are held until their newline comes; nothing else is buffered.
 */
export async function* sseEvents(body: AsyncIterable<Uint8Array> | Uint8Array): AsyncGenerator<unknown> {
  const source = body instanceof Uint8Array ? [body] : body
  const decoder = new TextDecoder()
  let pending = ''
  for await (const chunk of source) {
    pending += decoder.decode(chunk, { stream: true })
    let newline = pending.indexOf('\n')
    while (newline >= 0) {
      const line = pending.slice(0, newline).replace(/\r$/, '')
      pending = pending.slice(newline + 1)
      newline = pending.indexOf('\n')
      if (!line.startsWith('data:')) continue
      const data = line.slice(5).trim()
      if (data === '[DONE]') return
      if (data.length === 0) continue
      try {
        yield JSON.parse(data)
      } catch {
        // A malformed event from the engine is skipped, not fatal for the stream.
      }
    }
  }
}

/** Collects a whole body into one buffer. */
export async function readAll(body: AsyncIterable<Uint8Array> | Uint8Array): Promise<Buffer> {
  if (body instanceof Uint8Array) return Buffer.from(body)
  const chunks: Buffer[] = []
  for await (const chunk of body) chunks.push(Buffer.from(chunk))
  return Buffer.concat(chunks)
}
