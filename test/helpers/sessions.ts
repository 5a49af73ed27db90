import type { ClientHttp2Session } from 'node:http2'
import { setTimeout as sleep } from 'node:timers/promises'
import type { ControlChannel } from '../../src/protocol/index.js'
import { WorkerSession } from '../../src/routing/worker-session.js'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import type { Engine } from '../../src/worker/engines/types.js'

/** A registry session with stand-ins for its control channel and (when routable) one data link. */
export function fakeSession(
  clientId: string,
  models: string[],
  options: { routable?: boolean; capacity?: number } = {},
): WorkerSession {
  const session = new WorkerSession({
    sessionId: clientId,
    clientId,
    engineType: 'echo',
    channel: { closed: false, close() {} } as unknown as ControlChannel,
    dataToken: `token-${clientId}`,
    models,
    remoteAddress: '127.0.0.1',
    capacity: options.capacity ?? 0,
  })
  if (options.routable !== false)
    session.addLink({
      closed: false,
      destroyed: false,
      once() {},
      destroy() {},
    } as unknown as ClientHttp2Session)
  return session
}

/** The echo engine serving `models`, each call `delayMs` slower (no relay fast path). */
export function delayedEcho(models: string[], delayMs: number): Engine {
  const echo = createEchoEngine({ models })
  const engine: Engine = {
    ...echo,
    async call(call) {
      await sleep(delayMs)
      return echo.call(call)
    },
  }
  delete (engine as Partial<Engine>).relay
  return engine
}
