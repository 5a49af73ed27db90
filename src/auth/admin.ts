import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Store } from '../store/index.js'
import { hashKey, keyMatches } from './keys.js'

const SETTING = 'admin_key_sha256'

/** Checks the admin key of the management API. Keeps only its hash. */
export class AdminAuth {
  readonly #hash: string
  readonly #accepted = new Set<string>()

  constructor(hash: string) {
    this.#hash = hash
  }

  /** An AdminAuth for a known key. */
  static forKey(key: string): AdminAuth {
    return new AdminAuth(hashKey(key))
  }

  check(key: string): boolean {
    if (this.#accepted.has(key)) return true
    const ok = keyMatches(key, this.#hash)
    if (ok) this.#accepted.add(key)
    return ok
  }
}

/**
 * The admin key: `--admin-key` when given; otherwise the one whose hash the database holds
 * (shared by every server on that database); otherwise a new one, created now, its hash
 * stored, the key itself written to `<dataDir>/admin-key` (0600) and returned to show once.
 */
export async function resolveAdminKey(options: {
  given?: string | undefined
  store?: Store | undefined
  dataDir: string
}): Promise<{ auth: AdminAuth; created?: string }> {
  if (options.given !== undefined && options.given.length > 0)
    return { auth: AdminAuth.forKey(options.given) }
  const stored = await options.store?.getSetting(SETTING).catch(() => undefined)
  if (stored !== undefined) return { auth: new AdminAuth(stored) }
  const file = join(options.dataDir, 'admin-key')
  const saved = existsSync(file) ? readFileSync(file, 'utf8').trim() : ''
  // An empty file would make '' the admin key: treat it as absent and create a new key.
  if (saved.length > 0) {
    await options.store?.setSetting(SETTING, hashKey(saved)).catch(() => undefined)
    return { auth: AdminAuth.forKey(saved) }
  }
  const key = `gpufadmin_${randomBytes(24).toString('base64url')}`
  await mkdir(options.dataDir, { recursive: true })
  await writeFile(file, `${key}\n`, { mode: 0o600 })
  await options.store?.setSetting(SETTING, hashKey(key)).catch(() => undefined)
  return { auth: AdminAuth.forKey(key), created: key }
}
