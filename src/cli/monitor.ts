import type { Command } from 'commander'
import { request } from 'undici'
import { DEFAULT_PORTS } from '../config/defaults.js'
import { ErrorCodes, FabricError } from '../errors/index.js'

interface WorkerView {
  clientId: string
  engineType: string
  models: string[]
  hostname: string | null
  remoteAddress: string
  dataLinks: number
  inflight: number
  lastHeartbeatAt: string
  metrics: { cpuPercent?: number; memUsedBytes?: number; memTotalBytes?: number } | null
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

/** A plain-text table of workers, one line each. */
export function formatWorkers(workers: readonly WorkerView[], now = Date.now()): string {
  const rows = [['CLIENT ID', 'ENGINE', 'LINKS', 'IN FLIGHT', 'CPU %', 'MEM', 'SEEN', 'ADDRESS', 'MODELS']]
  for (const w of workers) {
    const mem =
      w.metrics?.memUsedBytes !== undefined && w.metrics.memTotalBytes
        ? `${Math.round((100 * w.metrics.memUsedBytes) / w.metrics.memTotalBytes)}%`
        : '-'
    rows.push([
      w.clientId,
      w.engineType,
      String(w.dataLinks),
      String(w.inflight),
      w.metrics?.cpuPercent === undefined ? '-' : w.metrics.cpuPercent.toFixed(0),
      mem,
      `${Math.max(0, Math.round((now - Date.parse(w.lastHeartbeatAt)) / 1000))}s ago`,
      w.remoteAddress,
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
