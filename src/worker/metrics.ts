import { cpus, freemem, loadavg, totalmem, uptime } from 'node:os'
import type { Metrics } from '../protocol/index.js'

/** Samples host metrics; CPU use is measured between two calls. */
export class HostMetrics {
  #last = cpuTimes()

  sample(): Metrics {
    const now = cpuTimes()
    const busy = now.busy - this.#last.busy
    const total = now.total - this.#last.total
    this.#last = now
    const total0 = totalmem()
    return {
      cpuPercent: total > 0 ? Math.round((busy / total) * 1000) / 10 : 0,
      load1: loadavg()[0] ?? 0,
      memUsedBytes: total0 - freemem(),
      memTotalBytes: total0,
      uptimeSeconds: uptime(),
    }
  }
}

function cpuTimes(): { busy: number; total: number } {
  let busy = 0
  let total = 0
  for (const cpu of cpus()) {
    const t = cpu.times
    const all = t.user + t.nice + t.sys + t.idle + t.irq
    total += all
    busy += all - t.idle
  }
  return { busy, total }
}
