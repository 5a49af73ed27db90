/** Stable error codes. Never renumber or rename: clients and logs match on them. */
export const ErrorCodes = {
  UNAUTHORIZED: 'GPUF_UNAUTHORIZED',
  BAD_REQUEST: 'GPUF_BAD_REQUEST',
  MODEL_REQUIRED: 'GPUF_MODEL_REQUIRED',
  MODEL_NOT_FOUND: 'GPUF_MODEL_NOT_FOUND',
  NOT_FOUND: 'GPUF_NOT_FOUND',
  METHOD_NOT_ALLOWED: 'GPUF_METHOD_NOT_ALLOWED',
  BODY_TOO_LARGE: 'GPUF_BODY_TOO_LARGE',
  NO_WORKER: 'GPUF_NO_WORKER',
  WORKER_FAILED: 'GPUF_WORKER_FAILED',
  ENGINE_UNAVAILABLE: 'GPUF_ENGINE_UNAVAILABLE',
  ENGINE_ERROR: 'GPUF_ENGINE_ERROR',
  TIMEOUT_FIRST_BYTE: 'GPUF_TIMEOUT_FIRST_BYTE',
  TIMEOUT_IDLE: 'GPUF_TIMEOUT_IDLE',
  TIMEOUT_CONNECT: 'GPUF_TIMEOUT_CONNECT',
  TIMEOUT_LOGIN: 'GPUF_TIMEOUT_LOGIN',
  TIMEOUT_PING: 'GPUF_TIMEOUT_PING',
  PROTOCOL: 'GPUF_PROTOCOL',
  FRAME_TOO_LARGE: 'GPUF_FRAME_TOO_LARGE',
  UNSUPPORTED_VERSION: 'GPUF_UNSUPPORTED_VERSION',
  LOGIN_REFUSED: 'GPUF_LOGIN_REFUSED',
  SESSION_EVICTED: 'GPUF_SESSION_EVICTED',
  CERTIFICATE: 'GPUF_CERTIFICATE',
  CONFIG: 'GPUF_CONFIG',
  STORE_UNAVAILABLE: 'GPUF_STORE_UNAVAILABLE',
  CACHE_UNAVAILABLE: 'GPUF_CACHE_UNAVAILABLE',
  RATE_LIMITED: 'GPUF_RATE_LIMITED',
  FORBIDDEN: 'GPUF_FORBIDDEN',
  KEY_EXPIRED: 'GPUF_KEY_EXPIRED',
  ABORTED: 'GPUF_ABORTED',
  SHUTTING_DOWN: 'GPUF_SHUTTING_DOWN',
  INTERNAL: 'GPUF_INTERNAL',
  /** Too many failed credentials from this address (or against this key / worker id): wait `retry-after`. */
  AUTH_THROTTLED: 'GPUF_AUTH_THROTTLED',
  /** The credential a worker logged in with was revoked: it is disconnected and must not retry. */
  CREDENTIAL_REVOKED: 'GPUF_CREDENTIAL_REVOKED',
} as const

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes]

/** Options shared by every fabric error. */
export interface FabricErrorOptions {
  cause?: unknown
  /** Whether trying again (maybe elsewhere) can help. */
  retryable?: boolean
}

/** The one base class for errors the fabric raises. */
export class FabricError extends Error {
  readonly code: ErrorCode
  readonly retryable: boolean

  constructor(code: ErrorCode, message: string, options: FabricErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'FabricError'
    this.code = code
    this.retryable = options.retryable ?? false
  }
}

/** True when `err` is a fabric error, optionally of the given code. */
export function isFabricError(err: unknown, code?: ErrorCode): err is FabricError {
  return err instanceof FabricError && (code === undefined || err.code === code)
}
