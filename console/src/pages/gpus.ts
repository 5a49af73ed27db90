/** How a worker's GPUs and load figures are drawn, in the workers table and on a worker's page. */
import { h } from '../dom.js'
import { bytes, percent, unit } from '../format.js'
import type { Gpu, Worker } from '../types.js'

/** A percentage as a meter and its figure. */
export function load(value: number | null | undefined, label: string): HTMLElement {
  const known = value !== null && value !== undefined && Number.isFinite(value)
  return h(
    'span',
    { class: 'load' },
    known
      ? h('meter', {
          min: 0,
          max: 100,
          low: 70,
          high: 90,
          optimum: 0,
          value: Math.min(100, Math.max(0, value)),
          'aria-label': label,
        })
      : undefined,
    h('span', { class: 'num' }, percent(value)),
  )
}

/** `#0 NVIDIA H200 · 87% · 118.8 GiB / 140.4 GiB · 58 °C · 612 W`, as a compact block. */
export function gpuLine(gpu: Gpu): HTMLElement {
  return h(
    'div',
    { class: 'gpu', 'data-gpu': gpu.index },
    h('span', { class: 'gpu-name' }, `#${gpu.index} ${gpu.name}`),
    load(gpu.utilizationPercent, `GPU ${gpu.index} load`),
    h(
      'span',
      { class: 'gpu-figures' },
      h(
        'span',
        { title: 'memory used / total' },
        `${bytes(gpu.memoryUsedBytes)} / ${bytes(gpu.memoryTotalBytes)}`,
      ),
      h('span', { title: 'temperature' }, unit(gpu.temperatureC, '°C')),
      h('span', { title: 'power draw' }, unit(gpu.powerDrawW, 'W')),
    ),
  )
}

/** The GPUs of a worker, or a dash. */
export function gpuList(worker: Worker): HTMLElement | string {
  const gpus = worker.metrics?.gpus ?? []
  return gpus.length === 0 ? '–' : h('div', { class: 'gpus' }, gpus.map(gpuLine))
}

/** A worker whose last heartbeat is older than this is shown as late. */
export const LATE_AFTER_MS = 30_000

/** `online`, `late` (no heartbeat for a while) or `offline`. */
export function workerStatus(worker: Worker, now = Date.now()): 'online' | 'late' | 'offline' {
  if (!worker.online) return 'offline'
  const last = worker.lastHeartbeatAt === undefined ? Number.NaN : Date.parse(worker.lastHeartbeatAt)
  return Number.isFinite(last) && now - last > LATE_AFTER_MS ? 'late' : 'online'
}

export function statusBadge(status: string): HTMLElement {
  return h('span', { class: `badge ${status}` }, status)
}
