import { ErrorCodes, FabricError } from '../../errors/index.js'
import type { KeyScope } from '../../store/index.js'

/**
 * Who called the management API: the admin key (everything), or a user's API key whose
 * scope lets it in (`read`: its own user's workers, keys and usage; `manage`: also its own keys).
 */
export type Caller =
  | { readonly role: 'admin' }
  | {
      readonly role: 'user'
      readonly userId: string
      readonly keyId: string
      readonly scope: Exclude<KeyScope, 'inference'>
    }

/** The user whose data a caller is limited to; undefined for the admin. */
export function ownUser(caller: Caller): string | undefined {
  return caller.role === 'admin' ? undefined : caller.userId
}

/** Refuses anyone but the admin. */
export function requireAdmin(caller: Caller, what: string): void {
  if (caller.role !== 'admin') throw new FabricError(ErrorCodes.FORBIDDEN, `${what} needs the admin key`)
}

/** Refuses user keys without the `manage` scope. */
export function requireManage(caller: Caller, what: string): void {
  if (caller.role === 'user' && caller.scope !== 'manage')
    throw new FabricError(ErrorCodes.FORBIDDEN, `${what} needs the admin key or a key with scope manage`)
}

/**
 * Whether a caller may see something owned by `userId`. Things a user key may not see answer
 * as if they did not exist (404), so ids of other users' workers and keys are not confirmed.
 */
export function maySee(caller: Caller, userId: string | null | undefined): boolean {
  return caller.role === 'admin' || (userId !== null && userId !== undefined && userId === caller.userId)
}
