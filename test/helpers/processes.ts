import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'

/** The compiled CLI entry point. */
export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url))

/** Finds free loopback ports (bind to 0, read, release). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, async () => {
      const s = createServer()
      s.listen(0, '127.0.0.1')
      await once(s, 'listening')
      return s
    }),
  )
  const ports = servers.map((s) => (s.address() as { port: number }).port)
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  return ports
}

/** A CLI child process with its output collected. */
export interface CliProcess {
  child: ChildProcess
  output(): string
  /** Resolves when stdout or stderr has printed `text`. */
  waitForOutput(text: string | RegExp, timeoutMs?: number): Promise<void>
  kill(signal?: NodeJS.Signals): Promise<void>
}

const running = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

/** Starts `gpufabric <args>` as a child process; `fdLimit` caps its open file descriptors (`ulimit -n`). */
export function startCli(args: string[], options: { fdLimit?: number } = {}): CliProcess {
  const child =
    options.fdLimit === undefined
      ? spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(
          'bash',
          ['-c', `ulimit -n ${options.fdLimit} && exec "$@"`, 'gpufabric', process.execPath, CLI, ...args],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        )
  running.add(child)
  let out = ''
  const listeners = new Set<() => void>()
  const onData = (chunk: Buffer) => {
    out += chunk.toString()
    for (const l of listeners) l()
  }
  child.stdout!.on('data', onData)
  child.stderr!.on('data', onData)
  const exited = once(child, 'exit')
  child.once('exit', () => running.delete(child))
  return {
    child,
    output: () => out,
    waitForOutput(text, timeoutMs = 15_000) {
      const matches = () => (typeof text === 'string' ? out.includes(text) : text.test(out))
      if (matches()) return Promise.resolve()
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          listeners.delete(check)
          reject(new Error(`timed out waiting for ${String(text)}; output so far:\n${out}`))
        }, timeoutMs)
        const check = () => {
          if (!matches()) return
          clearTimeout(timer)
          listeners.delete(check)
          resolve()
        }
        listeners.add(check)
      })
    },
    async kill(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill(signal)
      await exited
    },
  }
}
