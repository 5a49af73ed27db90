import type { Command } from 'commander'
import { request } from 'undici'
import { DEFAULT_PORTS } from '../config/defaults.js'
import { ErrorCodes, FabricError } from '../errors/index.js'
import type { GpuMetrics, Metrics } from '../protocol/index.js'

interface WorkerView {
  clientId: string
  engineType: string
  models: string[]
  hostname: string | null
  remoteAddress: string
  dataLinks: number
  inflight: number
  lastHeartbeatAt: string
  metrics: Pick<
    Metrics,
    'cpuPercent' | 'memUsedBytes' | 'memTotalBytes' | 'memPercent' | 'diskPercent' | 'gpus'
  > | null
}

async function fetchWorkers(url: string, adminKey: string): Promise<WorkerView[]> {
  let res: Awaited<ReturnType<typeof request>>
  try {
    res = await request(`${url}/api/v1/workers`, {
      headers: { authorization: `Bearer ${adminKey}` },
      signal: AbortSignal.timeout(3_000),
    })
  } catch (cause) {
    throw new FabricError(ErrorCodes.TIMEOUT_CONNECT, `cannot reach the management API at ${url}`, { cause })
  }
  const body = (await res.body.json()) as { workers?: WorkerView[]; error?: { message?: string } }
  if (res.statusCode !== 200) {
    throw new FabricError(
      ErrorCodes.UNAUTHORIZED,
      `management API answered ${res.statusCode}: ${body.error?.message ?? ''}`,
    )
  }
  return body.workers ?? []
}

/** One GPU as a monitor cell: index, load, memory used of total (GiB), temperature, power. */
function gpuCell(g: GpuMetrics): string {
  const gib = (b: number | null) => (b === null ? '?' : (b / 1024 ** 3).toFixed(0))
  const parts = [
    `${g.index}:${g.utilizationPercent === null ? '?' : g.utilizationPercent.toFixed(0)}%`,
    `${gib(g.memoryUsedBytes)}/${gib(g.memoryTotalBytes)}G`,
  ]
  if (g.temperatureC !== null) parts.push(`${g.temperatureC.toFixed(0)}C`)
  if (g.powerDrawW !== null) parts.push(`${g.powerDrawW.toFixed(0)}W`)
  return parts.join(' ')
}

/** A plain-text table of workers, one line each (the columns of the console's workers table). */
export function formatWorkers(workers: readonly WorkerView[], now = Date.now()): string {
  const rows = [
    [
      'CLIENT ID',
      'ENGINE',
      'LINKS',
      'IN FLIGHT',
      'CPU %',
      'MEM',
      'DISK',
      'SEEN',
      'ADDRESS',
      'GPUS',
      'MODELS',
    ],
  ]
  for (const w of workers) {
    const m = w.metrics
    const memPercent =
      m?.memPercent ??
      (m?.memUsedBytes !== undefined && m.memTotalBytes
        ? (100 * m.memUsedBytes) / m.memTotalBytes
        : undefined)
    rows.push([
      w.clientId,
      w.engineType,
      String(w.dataLinks),
      String(w.inflight),
      m?.cpuPercent === undefined ? '-' : m.cpuPercent.toFixed(0),
      memPercent === undefined ? '-' : `${Math.round(memPercent)}%`,
      m?.diskPercent === undefined ? '-' : `${Math.round(m.diskPercent)}%`,
      `${Math.max(0, Math.round((now - Date.parse(w.lastHeartbeatAt)) / 1000))}s ago`,
      w.remoteAddress,
      m?.gpus === undefined || m.gpus.length === 0 ? '-' : m.gpus.map(gpuCell).join(' | '),
      w.models.join(','),
    ])
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  const lines = rows.map((r) =>
    r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '),
  )
  return `${lines.join('\n')}\n${workers.length} worker${workers.length === 1 ? '' : 's'}\n`
}

/** `gpufabric monitor`: the connected workers, refreshed, from the management API. */
export function addMonitorCommand(
  program: Command,
  action: (
    fn: (flags: Record<string, unknown>) => Promise<void>,
  ) => (flags: Record<string, unknown>) => Promise<void>,
): void {
  program
    .command('monitor')
    .description('watch the connected workers (from the management API)')
    .option('--api-url <url>', 'management API', `http://127.0.0.1:${DEFAULT_PORTS.api}`)
    .option('--admin-key <key>', 'admin key [env ADMIN_KEY, GPUF_ADMIN_KEY]')
    .option('--interval <seconds>', 'refresh interval', '2')
    .option('--once', 'print once and exit')
    .option('--json', 'print the workers as JSON once and exit')
    .action(
      action(async (flags) => {
        const adminKey =
          (flags['adminKey'] as string | undefined) ??
          process.env['ADMIN_KEY'] ??
          process.env['GPUF_ADMIN_KEY']
        if (adminKey === undefined)
          throw new FabricError(
            ErrorCodes.CONFIG,
            'the monitor needs --admin-key (or ADMIN_KEY / GPUF_ADMIN_KEY)',
          )
        const url = String(flags['apiUrl']).replace(/\/$/, '')
        if (flags['json'] === true) {
          process.stdout.write(`${JSON.stringify(await fetchWorkers(url, adminKey), null, 2)}\n`)
          return
        }
        if (flags['once'] === true) {
          process.stdout.write(formatWorkers(await fetchWorkers(url, adminKey)))
          return
        }
        const intervalMs = Math.max(0.2, Number(flags['interval'])) * 1000
        for (;;) {
          const text = await fetchWorkers(url, adminKey).then(
            formatWorkers,
            (err: Error) => `${err.message}\n`,
          )
          // Clear the screen and redraw, as `watch` does.
          process.stdout.write(`\x1b[2J\x1b[H${new Date().toISOString()}  ${url}\n\n${text}`)
          await new Promise((r) => setTimeout(r, intervalMs))
        }
      }),
    )
}
