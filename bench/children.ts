/**
 * Child-process plumbing for benchmarks: start helpers, wait until they say
 * they are ready, read their CPU time, and make sure none outlives the run.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { createServer, type Server } from 'node:net'
import { createInterface } from 'node:readline'

/** How many lines of a child's output to keep for error messages. */
const OUTPUT_TAIL_LINES = 30

/**
 * Extra node flags for every child, from `BENCH_CHILD_NODE_ARGS` (space-separated), e.g.
 * `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile the fabric and the proxies; Node
 * refuses such flags in `NODE_OPTIONS`.
 */
const CHILD_NODE_ARGS = (process.env['BENCH_CHILD_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== '')

/** A running helper process. */
export interface BenchChild {
  readonly name: string
  readonly pid: number
  readonly process: ChildProcess
  /** The last lines the child printed (stdout and stderr), for diagnostics. */
  tail(): string
}

/** Options of {@link ChildGroup.start}. */
export interface StartOptions {
  /** The child is ready once a stdout line matches this; omitted = as soon as it is spawned. */
  readonly ready?: RegExp
  /** Give up waiting for `ready` after this long. Default 20 s. */
  readonly readyTimeoutMs?: number
}

/**
 * Every child the benchmark started, so that one `stop()` (or the process
 * exit hook) ends them all, whatever path the run takes.
 */
export class ChildGroup {
  readonly #children = new Set<BenchChild>()

  /**
   * Runs `node script ...args` and resolves with the child and the matched
   * ready line once it prints a line matching `options.ready` (`match` is
   * `null` without one). Rejects (with the child's output) if it exits first
   * or is not ready in time.
   */
  async start(
    name: string,
    script: string,
    args: readonly string[],
    options: StartOptions = {},
  ): Promise<{ child: BenchChild; match: RegExpMatchArray | null }> {
    // Spawn node itself (no shell, no npm): the pid we read /proc for must be
    // the process doing the work.
    const proc = spawn(process.execPath, [...CHILD_NODE_ARGS, script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    if (proc.pid === undefined) {
      await once(proc, 'error').catch(() => {})
      throw new Error(`${name}: failed to spawn ${script}`)
    }
    const lines: string[] = []
    const remember = (line: string): void => {
      lines.push(line)
      if (lines.length > OUTPUT_TAIL_LINES) lines.shift()
    }
    const child: BenchChild = {
      name,
      pid: proc.pid,
      process: proc,
      tail: () => lines.map((l) => `  [${name}] ${l}`).join('\n'),
    }
    this.#children.add(child)
    proc.once('exit', () => this.#children.delete(child))
    createInterface({ input: proc.stderr! }).on('line', remember)
    const stdout = createInterface({ input: proc.stdout! })
    const ready = options.ready
    if (ready === undefined) {
      stdout.on('line', remember)
      return { child, match: null }
    }

    const timeoutMs = options.readyTimeoutMs ?? 20_000
    const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
      const timer = setTimeout(() => {
        finish()
        reject(new Error(`${name}: not ready after ${timeoutMs} ms\n${child.tail()}`))
      }, timeoutMs)
      const onLine = (line: string): void => {
        const m = line.match(ready)
        if (m !== null) {
          finish()
          resolve(m)
        }
      }
      const onExit = (code: number | null, signal: string | null): void => {
        finish()
        reject(new Error(`${name}: exited (${signal ?? code}) before it was ready\n${child.tail()}`))
      }
      const finish = (): void => {
        clearTimeout(timer)
        stdout.off('line', onLine)
        proc.off('close', onExit)
      }
      stdout.on('line', onLine)
      proc.on('close', onExit)
    })
    // Keep remembering stdout afterwards for diagnostics (and keep the pipe drained).
    stdout.on('line', remember)
    return { child, match }
  }

  /** SIGTERM every child, then SIGKILL the ones still alive after `graceMs`. */
  async stop(graceMs = 2_000): Promise<void> {
    const alive = [...this.#children].filter(
      (c) => c.process.exitCode === null && c.process.signalCode === null,
    )
    const exited = alive.map((c) => once(c.process, 'exit').catch(() => {}))
    for (const c of alive) c.process.kill('SIGTERM')
    const timer = setTimeout(() => this.killNow(), graceMs)
    await Promise.all(exited)
    clearTimeout(timer)
  }

  /** Synchronous last resort (for `process.on('exit')`): SIGKILL every child still running. */
  killNow(): void {
    for (const c of this.#children) {
      if (c.process.exitCode === null && c.process.signalCode === null) c.process.kill('SIGKILL')
    }
  }
}

/** Kernel clock ticks per second, the unit of `/proc/<pid>/stat` CPU times. */
export function clockTicksPerSecond(): number {
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    if (Number.isFinite(value) && value > 0) return value
  } catch {
    // getconf missing: fall through to the Linux default.
  }
  return 100
}

/**
 * CPU time (user + system) a process has used so far, in clock ticks, from
 * `/proc/<pid>/stat` fields 14 and 15. Parsed after the last `)` because the
 * command name in field 2 may itself contain spaces or parentheses.
 */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state), so utime (14) is fields[11], stime (15) fields[12].
  return Number(fields[11]) + Number(fields[12])
}

/**
 * Finds `count` distinct free TCP ports on 127.0.0.1 by binding port 0 and
 * closing again, for programs that need explicit ports. All sockets stay open
 * until every port is picked, so the kernel cannot hand out one port twice.
 * (Another process could still take a port before the caller binds it; on a
 * benchmark machine that race is acceptable.)
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = []
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer()
      servers.push(server)
      server.listen(0, '127.0.0.1')
      await once(server, 'listening')
    }
    return servers.map((s) => (s.address() as AddressInfo).port)
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
  }
}
