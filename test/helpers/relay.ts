import { once } from 'node:events'
import { connect, createServer, type Socket } from 'node:net'

/** A TCP relay that can silently drop everything (a blackholed path) and heal again. */
export interface Relay {
  readonly port: number
  /** Stop forwarding in both directions, keeping every connection open (no FIN, no RST). */
  blackhole(): void
  heal(): void
  close(): Promise<void>
}

/** Relays loopback connections on a free port to `targetPort`. */
export async function startRelay(targetPort: number): Promise<Relay> {
  let holed = false
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1')
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.setNoDelay(true)
      s.on('error', () => {})
      s.on('close', () => sockets.delete(s))
    }
    client.on('data', (chunk) => {
      if (!holed) upstream.write(chunk)
    })
    upstream.on('data', (chunk) => {
      if (!holed) client.write(chunk)
    })
    // A hole passes nothing, not even a close.
    client.on('end', () => {
      if (!holed) upstream.end()
    })
    upstream.on('end', () => {
      if (!holed) client.end()
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: (server.address() as { port: number }).port,
    blackhole() {
      holed = true
    },
    heal() {
      holed = false
    },
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
