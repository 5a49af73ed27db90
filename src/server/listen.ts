import { once } from 'node:events'
import type { AddressInfo, Server } from 'node:net'

/** Binds a server; resolves with the port it got (port 0 picks a free one), rejects on EADDRINUSE and the like. */
export async function listen(server: Server, port: number, host: string): Promise<number> {
  server.listen(port, host)
  await once(server, 'listening')
  return (server.address() as AddressInfo).port
}

/** Stops accepting, runs `dropConnections` (the open ones would keep `close` waiting), and waits. */
export async function closeServer(server: Server, dropConnections?: () => void): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()))
  dropConnections?.()
  await closed
}
