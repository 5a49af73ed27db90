import { isFabricError } from '../errors/index.js'
import type { Logger } from '../observability/logger.js'
import type { Store } from '../store/index.js'
import type { WorkerAuthenticator } from './credentials.js'
import { secretsEqual } from './credentials.js'
import { keyMatches, parseKey } from './keys.js'

/** The user that shared-token workers belong to. */
export const DEFAULT_USER = 'default'

/**
 * Worker logins against the store: a worker token issued to a user (`gpufw_…`), or the shared
 * `--worker-token` (the zero-configuration default, acting as the `default` user). The first
 * login of a client id registers it to that user; another user's token cannot take it over.
 */
export function storeWorkerAuthenticator(options: {
  store: Store
  sharedToken?: string | undefined
  logger: Logger
}): WorkerAuthenticator {
  const { store, sharedToken, logger } = options
  let defaultUserId: string | undefined
  return async (login) => {
    let userId: string
    let credential: string | undefined
    if (sharedToken !== undefined && secretsEqual(login.token, sharedToken)) {
      try {
        defaultUserId ??= (await store.ensureUser(DEFAULT_USER)).id
        userId = defaultUserId
      } catch (err) {
        // The shared token is valid on its own; ownership is checked when the database is back.
        logger.warn(
          { err: isFabricError(err) ? err.code : String(err) },
          'database unavailable; shared-token login allowed',
        )
        return { ok: true }
      }
    } else {
      const parsed = parseKey(login.token)
      if (parsed === undefined || parsed.kind !== 'worker')
        return { ok: false, reason: 'invalid worker token' }
      try {
        const record = await store.findKeyByPrefix(parsed.prefix)
        if (
          record === undefined ||
          record.kind !== 'worker' ||
          record.revokedAt !== null ||
          !keyMatches(login.token, record.hash)
        ) {
          return { ok: false, reason: 'invalid worker token' }
        }
        if (record.expiresAt !== null && record.expiresAt.getTime() <= Date.now()) {
          return { ok: false, reason: 'worker token expired' }
        }
        userId = record.userId
        credential = record.prefix
      } catch {
        return {
          ok: false,
          reason: 'cannot check the worker token now (database unavailable); retrying',
          unavailable: true,
        }
      }
    }
    try {
      const claim = await store.claimWorker(login.clientId, userId)
      if (claim === 'taken')
        return { ok: false, reason: `client id '${login.clientId}' is registered to another user` }
      const worker = await store.getWorker(login.clientId)
      if (worker !== undefined && !worker.valid)
        return { ok: false, reason: `worker '${login.clientId}' is disabled` }
    } catch {
      return {
        ok: false,
        reason: 'cannot register the worker now (database unavailable); retrying',
        unavailable: true,
      }
    }
    return { ok: true, credential, userId }
  }
}
