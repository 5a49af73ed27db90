import { ErrorCodes, FabricError } from '../errors/index.js'
import type { AccessLevel, KeyChanges, KeyKind, KeyRecord, KeyScope, Store } from '../store/index.js'
import { mintKey } from './keys.js'
import { DEFAULT_USER } from './workers.js'

/** What a caller (CLI or API) asks for when creating a key. */
export interface CreateKeyInput {
  readonly kind?: KeyKind
  /** Owner's user name; created if missing. Default `default`. */
  readonly user?: string
  readonly name?: string | null
  readonly accessLevel?: AccessLevel
  /** Management API access of an API key. @default 'inference' */
  readonly scope?: KeyScope
  readonly workerIds?: readonly string[]
  readonly models?: readonly string[] | null
  readonly rpmLimit?: number | null
  readonly tpmLimit?: number | null
  readonly expiresAt?: Date | null
}

/** A key as shown to people and scripts: everything but the hash. */
export function publicKeyView(r: KeyRecord) {
  return {
    id: r.id,
    prefix: r.prefix,
    kind: r.kind,
    userId: r.userId,
    name: r.name,
    accessLevel: r.accessLevel,
    scope: r.scope,
    workerIds: r.workerIds,
    models: r.models,
    rpmLimit: r.rpmLimit,
    tpmLimit: r.tpmLimit,
    expiresAt: r.expiresAt?.toISOString() ?? null,
    revokedAt: r.revokedAt?.toISOString() ?? null,
    createdAt: r.createdAt.toISOString(),
  }
}

/**
 * Creates, lists, revokes and rotates keys. The full key exists only in the value returned
 * by `create`/`rotate`; the store keeps its prefix and hash. `onRevoked` spreads a
 * revocation to caches (this process, Redis, other servers).
 */
export class KeyManager {
  readonly #store: Store
  readonly #onRevoked: (record: KeyRecord) => Promise<void>

  constructor(store: Store, onRevoked: (record: KeyRecord) => Promise<void> = async () => {}) {
    this.#store = store
    this.#onRevoked = onRevoked
  }

  async create(input: CreateKeyInput): Promise<{ key: string; record: KeyRecord }> {
    const kind = input.kind ?? 'api'
    const accessLevel = input.accessLevel ?? 'shared'
    const workerIds = [...(input.workerIds ?? [])]
    if (accessLevel === 'dedicated' && workerIds.length === 0) {
      throw new FabricError(ErrorCodes.BAD_REQUEST, 'a dedicated key needs the worker ids it may use')
    }
    for (const [label, value] of [
      ['rpmLimit', input.rpmLimit],
      ['tpmLimit', input.tpmLimit],
    ] as const) {
      if (value !== undefined && value !== null && (!Number.isInteger(value) || value <= 0)) {
        throw new FabricError(ErrorCodes.BAD_REQUEST, `${label} must be a positive integer`)
      }
    }
    const scope = input.scope ?? 'inference'
    if (kind === 'worker' && scope !== 'inference')
      throw new FabricError(ErrorCodes.BAD_REQUEST, 'a worker token has no management scope')
    const user = await this.#store.ensureUser(input.user ?? DEFAULT_USER)
    const minted = mintKey(kind)
    const record = await this.#store.createKey({
      prefix: minted.prefix,
      hash: minted.hash,
      kind,
      userId: user.id,
      name: input.name ?? null,
      accessLevel,
      scope,
      workerIds,
      models: input.models === undefined ? null : input.models,
      rpmLimit: input.rpmLimit ?? null,
      tpmLimit: input.tpmLimit ?? null,
      expiresAt: input.expiresAt ?? null,
    })
    return { key: minted.key, record }
  }

  list(filter?: { userId?: string; kind?: KeyKind }): Promise<KeyRecord[]> {
    return this.#store.listKeys(filter)
  }

  get(id: string): Promise<KeyRecord | undefined> {
    return this.#store.getKey(id)
  }

  /** Revokes a key; resolves with it, or undefined when there is no such (unrevoked) key. */
  async revoke(id: string): Promise<KeyRecord | undefined> {
    const record = await this.#store.getKey(id)
    if (record === undefined || !(await this.#store.revokeKey(id))) return undefined
    await this.#onRevoked(record)
    return record
  }

  /**
   * Changes an active key's label and limits. Every cache forgets the key (as for a
   * revocation), so the new limits hold at once here and, through the shared cache's pub/sub,
   * on the other servers. Resolves with the key as it is now, or undefined when there is no
   * such active key.
   */
  async update(id: string, changes: KeyChanges): Promise<KeyRecord | undefined> {
    for (const [label, value] of [
      ['rpmLimit', changes.rpmLimit],
      ['tpmLimit', changes.tpmLimit],
    ] as const) {
      if (value !== undefined && value !== null && (!Number.isInteger(value) || value <= 0)) {
        throw new FabricError(ErrorCodes.BAD_REQUEST, `${label} must be a positive integer`)
      }
    }
    const record = await this.#store.updateKey(id, changes)
    if (record !== undefined) await this.#onRevoked(record)
    return record
  }

  /** Issues a new key with the same settings and revokes the old one. */
  async rotate(id: string): Promise<{ key: string; record: KeyRecord; revoked: KeyRecord }> {
    const old = await this.#store.getKey(id)
    if (old === undefined || old.revokedAt !== null) {
      throw new FabricError(ErrorCodes.NOT_FOUND, `no active key with id '${id}'`)
    }
    const user = await this.#store.getUser(old.userId)
    const created = await this.create({
      kind: old.kind,
      user: user?.name ?? DEFAULT_USER,
      name: old.name,
      accessLevel: old.accessLevel,
      scope: old.scope,
      workerIds: old.workerIds,
      models: old.models,
      rpmLimit: old.rpmLimit,
      tpmLimit: old.tpmLimit,
      expiresAt: old.expiresAt,
    })
    await this.revoke(id)
    return { ...created, revoked: old }
  }
}
