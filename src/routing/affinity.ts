/**
 * Request affinity: the same session, or the same prompt prefix, goes to the same worker, so
 * the engine's prefix (KV) cache hits. The worker is chosen by rendezvous hashing over the
 * eligible workers (adding or removing one moves only its share), with a load bound so that a
 * hot key cannot overload one worker: a worker above `AFFINITY_LOAD_FACTOR` times the average
 * load is passed over for the next one in the key's order.
 */
import { LIMITS } from '../config/defaults.js'

/** What requests are kept together. */
export type AffinityMode = 'off' | 'session' | 'prefix' | 'auto'
export const AFFINITY_MODES: readonly AffinityMode[] = ['off', 'session', 'prefix', 'auto']

/** Header naming a session explicitly (else the OpenAI `user` field). */
export const SESSION_HEADER = 'x-gpufabric-session'

/** 32-bit FNV-1a of a string (its UTF-16 code units). */
export function hash32(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** A worker's score for a key: a well-mixed 32-bit value of both (murmur3's finaliser). */
export function score(key: number, workerSeed: number): number {
  let h = (key ^ workerSeed) >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** The text a prompt starts with, at most `LIMITS.affinityPrefixChars` characters. */
function promptPrefix(request: Record<string, unknown>): string | undefined {
  const limit = LIMITS.affinityPrefixChars
  let text = ''
  const messages = request['messages']
  if (Array.isArray(messages)) {
    for (const m of messages) {
      if (text.length >= limit) break
      if (typeof m !== 'object' || m === null) continue
      const content = (m as Record<string, unknown>)['content']
      const role = (m as Record<string, unknown>)['role']
      text += `${typeof role === 'string' ? role : ''}:`
      if (typeof content === 'string') text += content
      else if (Array.isArray(content))
        for (const part of content)
          if (
            typeof part === 'object' &&
            part !== null &&
            typeof (part as { text?: unknown }).text === 'string'
          )
            text += (part as { text: string }).text
      text += '\n'
    }
  } else {
    const prompt = request['prompt'] ?? request['input']
    if (typeof prompt === 'string') text = prompt
    else if (Array.isArray(prompt) && typeof prompt[0] === 'string') text = prompt[0]
  }
  return text.length === 0 ? undefined : text.slice(0, limit)
}

/**
 * The affinity key of a request, or undefined for none: `session` uses the session header or
 * the OpenAI `user` field; `prefix` the prompt's start; `auto` the session when there is one,
 * else the prefix. Keys of different models never meet (the pick is per model).
 */
export function affinityKey(
  mode: AffinityMode,
  request: Record<string, unknown>,
  sessionHeader: string | string[] | undefined,
): number | undefined {
  if (mode === 'off') return undefined
  if (mode !== 'prefix') {
    const header = Array.isArray(sessionHeader) ? sessionHeader[0] : sessionHeader
    const user = request['user']
    const session =
      header !== undefined && header !== ''
        ? header
        : typeof user === 'string' && user !== ''
          ? user
          : undefined
    if (session !== undefined) return hash32(`s:${session.slice(0, 256)}`)
    if (mode === 'session') return undefined
  }
  const prefix = promptPrefix(request)
  return prefix === undefined ? undefined : hash32(`p:${prefix}`)
}
