import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { freePorts } from './processes.js'

const run = promisify(execFile)

/**
 * A real server started for tests, on a free loopback port, in a temp dir. `stop()` and
 * `start()` take it down and bring it back on the same port (fault injection); `close()`
 * removes it for good.
 */
export interface ManagedService {
  readonly url: string
  readonly port: number
  stop(): Promise<void>
  start(): Promise<void>
  close(): Promise<void>
}

/** Why a service cannot run here, or undefined when it can. CI (`GPUF_REQUIRE_SERVICES=1`) never skips. */
export function unavailable(service: 'postgres' | 'redis' | 'kafka' | 'promtool'): string | undefined {
  const missing =
    service === 'redis'
      ? !binaryOnPath('redis-server')
      : service === 'promtool'
        ? !binaryOnPath('promtool')
        : service === 'kafka'
          ? !kafkaInstalled()
          : postgresBin() === undefined
  if (!missing) return undefined
  if (process.env['GPUF_REQUIRE_SERVICES'] === '1')
    throw new Error(`${service} is required but not installed`)
  return `${service} is not installed (scripts/ensure-services.sh installs it)`
}

/** Where scripts/ensure-kafka.sh puts the broker's jars. */
const KAFKA_LIB = fileURLToPath(new URL('../../../.cache/kafka/lib', import.meta.url))

function kafkaInstalled(): boolean {
  return (
    binaryOnPath('java') &&
    existsSync(KAFKA_LIB) &&
    readdirSync(KAFKA_LIB).some((f) => f.startsWith('kafka_2.13-'))
  )
}

function binaryOnPath(name: string): boolean {
  return (process.env['PATH'] ?? '').split(':').some((dir) => existsSync(join(dir, name)))
}

function postgresBin(): string | undefined {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return undefined
  const versions = readdirSync(root).sort((a, b) => Number(b) - Number(a))
  for (const v of versions) if (existsSync(join(root, v, 'bin', 'initdb'))) return join(root, v, 'bin')
  return undefined
}

async function waitForPort(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} after ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Starts a private Redis (no persistence) on a free port. */
export async function startRedis(): Promise<ManagedService> {
  const [port] = await freePorts(1)
  let child: ChildProcess | undefined
  const start = async () => {
    child = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--protected-mode',
        'no',
      ],
      { stdio: 'ignore' },
    )
    await waitForPort(port!)
  }
  const stop = async () => {
    if (child === undefined || child.exitCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGKILL')
    await exited
    child = undefined
  }
  await start()
  return { url: `redis://127.0.0.1:${port}`, port: port!, start, stop, close: stop }
}

/** Starts a private PostgreSQL cluster (trust auth, fsync off) on a free port, with database `gpufabric`. */
export async function startPostgres(): Promise<ManagedService> {
  const bin = postgresBin()
  if (bin === undefined) throw new Error('PostgreSQL is not installed')
  const [port] = await freePorts(1)
  const dir = mkdtempSync(join(tmpdir(), 'gpuf-pg-'))
  const data = join(dir, 'data')
  // PostgreSQL refuses to run as root: run it as the `postgres` user the package created.
  const asRoot = process.getuid?.() === 0
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres'])
    const { stdout: gid } = await run('id', ['-g', 'postgres'])
    chownSync(dir, Number(stdout.trim()), Number(gid.trim()))
  }
  const as = (cmd: string, args: string[]) =>
    asRoot ? run('runuser', ['-u', 'postgres', '--', cmd, ...args]) : run(cmd, args)
  await as(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'])
  const start = async () => {
    await as(join(bin, 'pg_ctl'), [
      '-D',
      data,
      '-l',
      join(dir, 'log'),
      '-w',
      '-o',
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`,
      'start',
    ])
  }
  const stop = async () => {
    await as(join(bin, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', 'stop']).catch(() => undefined)
  }
  await start()
  await as(join(bin, 'createdb'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', 'gpufabric'])
  return {
    url: `postgres://postgres@127.0.0.1:${port}/gpufabric`,
    port: port!,
    start,
    stop,
    async close() {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * A single-node Apache Kafka broker in KRaft mode (broker and controller in one JVM) from the
 * jars scripts/ensure-kafka.sh fetched, on free loopback ports, its log in a temp dir. `url`
 * is the bootstrap address (`127.0.0.1:port`).
 */
export async function startKafka(): Promise<ManagedService> {
  const [port, controllerPort] = (await freePorts(2)) as [number, number]
  const dir = mkdtempSync(join(tmpdir(), 'gpuf-kafka-'))
  const config = join(dir, 'server.properties')
  writeFileSync(
    config,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
      `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
      'controller.listener.names=CONTROLLER',
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      'inter.broker.listener.name=PLAINTEXT',
      `log.dirs=${join(dir, 'data')}`,
      'offsets.topic.replication.factor=1',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      '',
    ].join('\n'),
  )
  const classpath = `${KAFKA_LIB}/*`
  // A cluster id is 16 random bytes in unpadded base64url (what StorageTool random-uuid prints).
  // One that starts with '-' would be read as an option by StorageTool: draw again.
  let clusterId = randomBytes(16).toString('base64url')
  while (clusterId.startsWith('-')) clusterId = randomBytes(16).toString('base64url')
  await run('java', ['-cp', classpath, 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', config])
  let child: ChildProcess | undefined
  const start = async () => {
    child = spawn('java', ['-Xmx512m', '-cp', classpath, 'kafka.Kafka', config], { stdio: 'ignore' })
    await waitForPort(port, 60_000)
  }
  const stop = async () => {
    if (child === undefined || child.exitCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGKILL')
    await exited
    child = undefined
  }
  await start()
  return {
    url: `127.0.0.1:${port}`,
    port,
    start,
    stop,
    async close() {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
