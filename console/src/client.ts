/**
 * Calls to the management API on this origin, with the signed-in key as a bearer token. The
 * key lives in sessionStorage: it is gone when the tab closes and never reaches a cookie.
 */
import type { Me } from './types.js'

const STORAGE_KEY = 'gpufabric.console.key'

/** An error answer of the API: its status and the message of its `{ error }` body. */
export class ApiError extends Error {
  readonly status: number
  readonly code: string | undefined

  constructor(status: number, message: string, code?: string) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
  }
}

/** The signed-in key, if any. */
export function storedKey(): string | undefined {
  try {
    return sessionStorage.getItem(STORAGE_KEY) ?? undefined
  } catch {
    return undefined
  }
}

export function storeKey(key: string | undefined): void {
  try {
    if (key === undefined) sessionStorage.removeItem(STORAGE_KEY)
    else sessionStorage.setItem(STORAGE_KEY, key)
  } catch {
    // Storage disabled: the session lasts as long as the page.
  }
}

let onUnauthorized: (message: string) => void = () => undefined
/** What to do when the API no longer accepts the key (sign out). */
export function whenUnauthorized(fn: (message: string) => void): void {
  onUnauthorized = fn
}

/** Options of {@link api}. */
export interface CallOptions {
  readonly method?: 'GET' | 'POST' | 'PATCH' | 'DELETE'
  readonly body?: unknown
  readonly signal?: AbortSignal | undefined
  /** Another key than the stored one (signing in). */
  readonly key?: string
  /** Calls the sign-out hook on 401. @default true */
  readonly signOutOn401?: boolean
}

/** Calls the API; resolves with the JSON answer or rejects with an {@link ApiError}. */
export async function api<T>(path: string, options: CallOptions = {}): Promise<T> {
  const key = options.key ?? storedKey()
  const headers: Record<string, string> = { accept: 'application/json' }
  if (key !== undefined) headers['authorization'] = `Bearer ${key}`
  if (options.body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(path, {
    method: options.method ?? 'GET',
    headers,
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    cache: 'no-store',
    credentials: 'omit',
  })
  const text = await res.text()
  let json: unknown
  try {
    json = text === '' ? undefined : JSON.parse(text)
  } catch {
    json = undefined
  }
  if (!res.ok) {
    const error = (json as { error?: { message?: string; code?: string } } | undefined)?.error
    const failure = new ApiError(res.status, error?.message ?? `${res.status} ${res.statusText}`, error?.code)
    if (res.status === 401 && options.signOutOn401 !== false) onUnauthorized(failure.message)
    throw failure
  }
  return json as T
}

/** Who a key is (`GET /api/v1/me`). */
export function whoAmI(key?: string, signal?: AbortSignal): Promise<Me> {
  return api<Me>('/api/v1/me', {
    ...(key === undefined ? {} : { key }),
    signal,
    signOutOn401: key === undefined,
  })
}

/** Whether the caller may create, revoke and rotate keys. */
export function canManage(me: Me): boolean {
  return me.role === 'admin' || me.scope === 'manage'
}

/** A message for a failed call; undefined for an aborted one (the page was left). */
export function failureText(err: unknown): string | undefined {
  if (err instanceof DOMException && err.name === 'AbortError') return undefined
  if (err instanceof ApiError) return err.message
  if (err instanceof TypeError) return 'The server cannot be reached.'
  return err instanceof Error ? err.message : String(err)
}
