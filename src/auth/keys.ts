import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { KeyKind } from '../store/index.js'

/**
 * Key format: `<scheme>_<prefix>_<secret>`: scheme `gpuf` (API key) or `gpufw` (worker token),
 * a 12-character public prefix (the lookup handle, unique in the store) and a 32-character
 * secret. Only the prefix and the SHA-256 of the whole key are stored.
 */
const SCHEMES: Record<KeyKind, string> = { api: 'gpuf', worker: 'gpufw' }
const PREFIX_LENGTH = 12
const PREFIX_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789'

/** A freshly minted key: the secret to show once, and what to store. */
export interface MintedKey {
  readonly key: string
  readonly prefix: string
  readonly hash: string
}

/** Mints a new key of the given kind. */
export function mintKey(kind: KeyKind): MintedKey {
  const bytes = randomBytes(PREFIX_LENGTH)
  let prefix = ''
  for (const b of bytes) prefix += PREFIX_ALPHABET[b % PREFIX_ALPHABET.length]
  const key = `${SCHEMES[kind]}_${prefix}_${randomBytes(24).toString('base64url')}`
  return { key, prefix, hash: hashKey(key) }
}

/** The stored hash of a key: SHA-256, hex. Keys carry 192 random bits, so a fast hash is enough. */
export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex')
}

/** The public prefix and kind of a well-formed key, or undefined for anything else. */
export function parseKey(key: string): { kind: KeyKind; prefix: string } | undefined {
  const first = key.indexOf('_')
  if (first < 0) return undefined
  const scheme = key.slice(0, first)
  const kind: KeyKind | undefined = scheme === 'gpuf' ? 'api' : scheme === 'gpufw' ? 'worker' : undefined
  if (kind === undefined) return undefined
  const prefix = key.slice(first + 1, first + 1 + PREFIX_LENGTH)
  if (prefix.length !== PREFIX_LENGTH || key[first + 1 + PREFIX_LENGTH] !== '_') return undefined
  for (const c of prefix) if (!PREFIX_ALPHABET.includes(c)) return undefined
  return { kind, prefix }
}

/** Constant-time check of a presented key against a stored hash. */
export function keyMatches(key: string, storedHash: string): boolean {
  const presented = Buffer.from(hashKey(key), 'hex')
  const stored = Buffer.from(storedHash, 'hex')
  return presented.length === stored.length && timingSafeEqual(presented, stored)
}
