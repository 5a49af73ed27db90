import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/** A random secret in URL-safe base64 with a recognisable prefix (`gpuf_…`). */
export function newSecret(prefix: string, bytes = 24): string {
  return `${prefix}${randomBytes(bytes).toString('base64url')}`
}

/**
 * Reads a secret kept in the data dir, creating it (mode 0600) on first use.
 * Returns whether it was created, so the caller shows it once and never again.
 */
export async function loadOrCreateSecret(
  dataDir: string,
  file: string,
  prefix: string,
): Promise<{ value: string; created: boolean; path: string }> {
  const path = join(dataDir, file)
  if (existsSync(path)) {
    const value = readFileSync(path, 'utf8').trim()
    if (value.length > 0) return { value, created: false, path }
  }
  await mkdir(dataDir, { recursive: true })
  const value = newSecret(prefix)
  await writeFile(path, `${value}\n`, { mode: 0o600 })
  return { value, created: true, path }
}
