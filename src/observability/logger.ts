import { pino } from 'pino'

/** The logger type every component takes. */
export type Logger = pino.Logger

/** Creates the root logger. Secrets are redacted wherever they might appear. */
export function createLogger(
  options: { level?: string | undefined; name?: string; destination?: pino.DestinationStream } = {},
): Logger {
  // Logs go to stderr: stdout carries what a person or a script reads (banner, keys, JSON).
  return pino(
    {
      name: options.name ?? 'gpufabric',
      level: options.level ?? process.env['LOG_LEVEL'] ?? process.env['GPUF_LOG_LEVEL'] ?? 'info',
      redact: {
        paths: [
          'token',
          'apiKey',
          'api_key',
          'authorization',
          'password',
          'adminKey',
          'workerToken',
          'databaseUrl',
          'redisUrl',
          '*.token',
          '*.apiKey',
          '*.adminKey',
          '*.workerToken',
          '*.authorization',
          // Client errors (ioredis) carry the failed command; AUTH's arguments are a password.
          '*.command.args',
        ],
        censor: '[redacted]',
      },
    },
    options.destination ?? pino.destination(2),
  )
}

/** A logger that writes nothing (tests, embedded use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
