import { once } from 'node:events'
import type { AddressInfo, Server } from 'node:net'
import type { Logger } from '../observability/logger.js'

/**
 * Binds a server; resolves with the port it got (port 0 picks a free one), rejects on
 * EADDRINUSE and the like. Once listening, errors the server emits later (`accept` failing
 * with EMFILE when file descriptors run out, for one) are logged, at most once a second, and
 * never end the process: the listener keeps accepting when descriptors free up.
 */
export async function listen(server: Server, port: number, host: string, logger?: Logger): Promise<number> {
  server.listen(port, host)
  await once(server, 'listening')
  let lastLogged = 0
  let suppressed = 0
  server.on('error', (err: Error & { code?: string }) => {
    const now = Date.now()
    if (now - lastLogged < 1_000) {
      suppressed++
      return
    }
    logger?.error(
      { err: err.message, code: err.code, suppressed },
      'listener error (connection not accepted)',
    )
    lastLogged = now
    suppressed = 0
  })
  return (server.address() as AddressInfo).port
}

/** Stops accepting, runs `dropConnections` (the open ones would keep `close` waiting), and waits. */
export async function closeServer(server: Server, dropConnections?: () => void): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()))
  dropConnections?.()
  await closed
}
