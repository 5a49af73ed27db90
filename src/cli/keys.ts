import { join } from 'node:path'
import type { Command } from 'commander'
import { invalidateKeyInCache } from '../auth/authenticator.js'
import { KeyManager, publicKeyView } from '../auth/manage.js'
import { type Cache, createCache } from '../cache/index.js'
import { defaultDataDir, resolveOptions } from '../config/index.js'
import { ErrorCodes, FabricError } from '../errors/index.js'
import { createStore, KEY_SCOPES, type KeyScope, type Store } from '../store/index.js'
import { SERVER_OPTIONS } from './options.js'

/** Where the CLI finds the database (and the cache to tell about revocations). */
interface StoreFlags {
  dataDir?: string
  databaseUrl?: string
  redisUrl?: string
  config?: string
  json?: boolean
}

/**
 * The server's database and cache, found as the server finds them: flag, then environment
 * (`DATABASE_URL`/`GPUF_DATABASE_URL`, `REDIS_URL`/`GPUF_REDIS_URL`, `GPUF_DATA_DIR`), then
 * the config file (`--config`/`GPUF_CONFIG`), then the defaults.
 */
function storeLocation(flags: StoreFlags): { dataDir: string; databaseUrl?: string; redisUrl?: string } {
  const o = resolveOptions(SERVER_OPTIONS, flags as Record<string, unknown>)
  return {
    dataDir: (o['dataDir'] as string | undefined) ?? defaultDataDir(),
    ...(o['databaseUrl'] === undefined ? {} : { databaseUrl: o['databaseUrl'] as string }),
    ...(o['redisUrl'] === undefined ? {} : { redisUrl: o['redisUrl'] as string }),
  }
}

/** Opens the store the server uses: its PostgreSQL URL, else the SQLite file in its data dir. */
async function openStore(flags: StoreFlags): Promise<Store> {
  const where = storeLocation(flags)
  return createStore({ databaseUrl: where.databaseUrl, sqlitePath: join(where.dataDir, 'gpufabric.db') })
}

async function withManager<T>(flags: StoreFlags, fn: (manager: KeyManager) => Promise<T>): Promise<T> {
  const store = await openStore(flags)
  await store.migrate()
  const { redisUrl } = storeLocation(flags)
  let cache: Cache | undefined
  if (redisUrl !== undefined) cache = await createCache({ redisUrl })
  const manager = new KeyManager(store, async (record) => {
    // Servers also poll the database for revocations (every 500 ms); telling Redis is quicker.
    if (cache !== undefined) await invalidateKeyInCache(cache, record.prefix).catch(() => undefined)
  })
  try {
    return await fn(manager)
  } finally {
    await cache?.close()
    await store.close()
  }
}

function print(flags: StoreFlags, value: unknown, text: string): void {
  process.stdout.write(flags.json ? `${JSON.stringify(value, null, 2)}\n` : `${text}\n`)
}

function positiveInt(name: string, raw: unknown): number | undefined {
  if (raw === undefined) return undefined
  const n = Number(raw)
  if (!Number.isInteger(n) || n <= 0)
    throw new FabricError(ErrorCodes.CONFIG, `${name} must be a positive integer`)
  return n
}

function list(raw: unknown): string[] | undefined {
  if (raw === undefined) return undefined
  return String(raw)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
}

function storeOptions(command: Command): Command {
  return command
    .option('--data-dir <dir>', 'data directory of the SQLite database (default ~/.gpufabric)')
    .option('--database-url <url>', 'PostgreSQL URL [env DATABASE_URL]')
    .option('--redis-url <url>', 'Redis URL, to tell every server about revocations at once [env REDIS_URL]')
    .option('--config <file>', "the server's config file")
    .option('--json', 'print JSON for scripts')
}

/** `gpufabric keys …` and `gpufabric db …`. */
export function addKeyCommands(
  program: Command,
  action: (fn: (...args: never[]) => Promise<void>) => (...args: never[]) => Promise<void>,
): void {
  const keys = program
    .command('keys')
    .description('create, list, revoke and rotate API keys and worker tokens')
  storeOptions(keys.command('create').description('create a key; the full key is shown once'))
    .option('--name <name>', 'a label for the key')
    .option('--user <user>', 'owner (created if missing)', 'default')
    .option('--worker', 'a worker token instead of an API key')
    .option('--models <list>', 'comma-separated model allow-list')
    .option('--dedicated <workers>', 'only route to these worker client ids (comma-separated)')
    .option('--rpm <n>', 'requests per minute')
    .option('--tpm <n>', 'tokens per minute')
    .option('--expires-in-days <n>', 'expiry, in days from now')
    .option('--expires-at <iso>', 'expiry date')
    .option(
      '--scope <scope>',
      "management API access: inference (none), read (its own user's workers, keys, usage), manage (read, and its own keys)",
      'inference',
    )
    .action(
      action(async (flags: Record<string, unknown>) => {
        const dedicated = list(flags['dedicated'])
        const days = positiveInt('--expires-in-days', flags['expiresInDays'])
        let expiresAt: Date | undefined
        if (flags['expiresAt'] !== undefined) {
          expiresAt = new Date(String(flags['expiresAt']))
          if (Number.isNaN(expiresAt.getTime()))
            throw new FabricError(ErrorCodes.CONFIG, '--expires-at is not a date')
        }
        if (days !== undefined) expiresAt = new Date(Date.now() + days * 86_400_000)
        const models = list(flags['models'])
        const rpmLimit = positiveInt('--rpm', flags['rpm'])
        const tpmLimit = positiveInt('--tpm', flags['tpm'])
        const scope = String(flags['scope'])
        if (!(KEY_SCOPES as readonly string[]).includes(scope))
          throw new FabricError(ErrorCodes.CONFIG, `--scope is one of ${KEY_SCOPES.join(', ')}`)
        await withManager(flags as StoreFlags, async (manager) => {
          const { key, record } = await manager.create({
            kind: flags['worker'] === true ? 'worker' : 'api',
            user: String(flags['user']),
            name: (flags['name'] as string | undefined) ?? null,
            ...(dedicated === undefined ? {} : { accessLevel: 'dedicated' as const, workerIds: dedicated }),
            ...(models === undefined ? {} : { models }),
            ...(rpmLimit === undefined ? {} : { rpmLimit }),
            ...(tpmLimit === undefined ? {} : { tpmLimit }),
            scope: scope as KeyScope,
            ...(expiresAt === undefined ? {} : { expiresAt }),
          })
          print(
            flags as StoreFlags,
            { ...publicKeyView(record), key },
            `created ${record.kind === 'worker' ? 'worker token' : 'API key'} ${record.id}\n${key}\n(shown once: only its hash is stored)`,
          )
        })
      }) as never,
    )
  storeOptions(keys.command('list').description('list keys (never the keys themselves)'))
    .option('--worker', 'worker tokens only')
    .action(
      action(async (flags: Record<string, unknown>) => {
        await withManager(flags as StoreFlags, async (manager) => {
          const records = await manager.list(flags['worker'] === true ? { kind: 'worker' } : undefined)
          const rows = records.map(publicKeyView)
          const text = rows
            .map(
              (r) =>
                `${r.id}  ${r.kind.padEnd(6)} ${r.revokedAt === null ? 'active ' : 'revoked'}  ${r.name ?? ''}${r.rpmLimit === null ? '' : `  rpm=${r.rpmLimit}`}${r.tpmLimit === null ? '' : `  tpm=${r.tpmLimit}`}`,
            )
            .join('\n')
          print(flags as StoreFlags, rows, text || '(no keys)')
        })
      }) as never,
    )
  storeOptions(keys.command('revoke').description('revoke a key by id').argument('<id>')).action(
    action(async (id: string, flags: Record<string, unknown>) => {
      await withManager(flags as StoreFlags, async (manager) => {
        const revoked = await manager.revoke(id)
        if (revoked === undefined)
          throw new FabricError(ErrorCodes.NOT_FOUND, `no active key with id '${id}'`)
        print(flags as StoreFlags, { id, revoked: true }, `revoked ${id}`)
      })
    }) as never,
  )
  storeOptions(
    keys
      .command('rotate')
      .description('replace a key with a new one with the same settings')
      .argument('<id>'),
  ).action(
    action(async (id: string, flags: Record<string, unknown>) => {
      await withManager(flags as StoreFlags, async (manager) => {
        const { key, record } = await manager.rotate(id)
        print(
          flags as StoreFlags,
          { ...publicKeyView(record), key, replaced: id },
          `${id} revoked; new key ${record.id}\n${key}\n(shown once)`,
        )
      })
    }) as never,
  )
  const db = program.command('db').description('database maintenance')
  db.command('migrate')
    .description('apply pending schema migrations')
    .option('--data-dir <dir>', 'data directory of the SQLite database (default ~/.gpufabric)')
    .option('--database-url <url>', 'PostgreSQL URL [env DATABASE_URL]')
    .option('--config <file>', "the server's config file")
    .action(
      action(async (flags: Record<string, unknown>) => {
        const store = await openStore(flags as StoreFlags)
        try {
          const applied = await store.migrate()
          process.stdout.write(
            `${applied.length === 0 ? 'schema up to date' : `applied migrations ${applied.join(', ')}`} (version ${await store.schemaVersion()}, ${store.kind})\n`,
          )
        } finally {
          await store.close()
        }
      }) as never,
    )
}
