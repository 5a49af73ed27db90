import { ErrorCodes, FabricError } from '../errors/index.js'
import type { Store, StoreOptions } from './index.js'
import { PostgresStore } from './postgres.js'
import { SqliteStore } from './sqlite.js'

/**
 * Opens the store `options` describe: PostgreSQL for a `postgres://` or `postgresql://`
 * `databaseUrl`, else SQLite at `sqlitePath`. Does not migrate: call `migrate()` next.
 * PostgreSQL connects lazily, so this succeeds while the database is down.
 */
export async function createStore(options: StoreOptions): Promise<Store> {
  const { databaseUrl, sqlitePath, onQuery } = options
  if (databaseUrl !== undefined && databaseUrl !== '') {
    if (!/^postgres(ql)?:\/\//i.test(databaseUrl)) {
      throw new FabricError(
        ErrorCodes.CONFIG,
        'databaseUrl must start with postgres:// or postgresql:// (leave it out to use the embedded SQLite store)',
      )
    }
    return new PostgresStore({ url: databaseUrl, onQuery })
  }
  if (sqlitePath === undefined || sqlitePath === '') {
    throw new FabricError(
      ErrorCodes.CONFIG,
      'the store needs a databaseUrl (PostgreSQL) or a sqlitePath (SQLite)',
    )
  }
  return new SqliteStore({ path: sqlitePath, onQuery })
}
