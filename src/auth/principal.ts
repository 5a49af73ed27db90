import type { AccessLevel, KeyRecord, KeyScope } from '../store/index.js'

/** Who a request is from, once its key checked out. */
export interface Principal {
  /** Key id, or `static` for the static fallback key. */
  readonly keyId: string
  readonly userId: string | null
  readonly accessLevel: AccessLevel
  /** What the key may do on the management API besides inference. */
  readonly scope: KeyScope
  /** Dedicated keys: the workers (client ids) their requests may go to. */
  readonly workers: ReadonlySet<string> | null
  /** Model allow-list; null = every model. */
  readonly models: ReadonlySet<string> | null
  readonly rpmLimit: number | null
  readonly tpmLimit: number | null
  /** Epoch ms, or Infinity. */
  readonly expiresAt: number
}

/** The principal of the static fallback key: no limits, every model, every worker. */
export const STATIC_PRINCIPAL: Principal = {
  keyId: 'static',
  userId: null,
  accessLevel: 'shared',
  scope: 'inference',
  workers: null,
  models: null,
  rpmLimit: null,
  tpmLimit: null,
  expiresAt: Number.POSITIVE_INFINITY,
}

/** Builds the principal of a stored key. */
export function principalOf(record: KeyRecord): Principal {
  return {
    keyId: record.id,
    userId: record.userId,
    accessLevel: record.accessLevel,
    // Records cached by a server older than schema v4 have no scope.
    scope: record.scope ?? 'inference',
    workers: record.accessLevel === 'dedicated' ? new Set(record.workerIds) : null,
    models: record.models === null ? null : new Set(record.models),
    rpmLimit: record.rpmLimit,
    tpmLimit: record.tpmLimit,
    expiresAt: record.expiresAt === null ? Number.POSITIVE_INFINITY : record.expiresAt.getTime(),
  }
}
