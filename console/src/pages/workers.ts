/** The workers table, live: polled every few seconds. */
import { api, failureText } from '../client.js'
import { h, notice, replace, table } from '../dom.js'
import { ago, clock, count, dateTime, percent } from '../format.js'
import { keepScroll, type PageContext, poll } from '../page.js'
import type { Worker } from '../types.js'
import { gpuList, load, statusBadge, workerStatus } from './gpus.js'

/** How often the table is refreshed. */
export const WORKERS_POLL_MS = 3_000

export function workersPage(ctx: PageContext): void {
  const updated = h('p', { class: 'muted', 'aria-live': 'off' }, 'Loading…')
  const summary = h('div', { class: 'summary' })
  const region = h('div', { class: 'region' })
  replace(
    ctx.view,
    h('div', { class: 'page-head' }, h('h1', { tabindex: -1 }, 'Workers'), updated),
    summary,
    region,
  )
  poll(ctx.signal, WORKERS_POLL_MS, async () => {
    try {
      const { workers } = await api<{ workers: Worker[] }>('/api/v1/workers', { signal: ctx.signal })
      const now = Date.now()
      workers.sort((a, b) => a.clientId.localeCompare(b.clientId))
      replace(summary, figures(workers))
      keepScroll(region, () => replace(region, workersTable(workers, now)))
      updated.textContent = `Updated ${clock(now)} · refreshes every ${WORKERS_POLL_MS / 1000} s`
    } catch (err) {
      const text = failureText(err)
      if (text !== undefined) replace(region, notice('error', text))
    }
  })
}

function figures(workers: readonly Worker[]): HTMLElement[] {
  const gpus = workers.flatMap((w) => w.metrics?.gpus ?? [])
  const loads = gpus.map((g) => g.utilizationPercent).filter((v): v is number => v !== null)
  const avg = loads.length === 0 ? null : loads.reduce((a, b) => a + b, 0) / loads.length
  const inflight = workers.reduce((s, w) => s + (w.inflight ?? 0), 0)
  const stat = (label: string, value: string) =>
    h(
      'div',
      { class: 'stat' },
      h('span', { class: 'stat-value' }, value),
      h('span', { class: 'stat-label' }, label),
    )
  return [
    stat('workers', count(workers.length)),
    stat('GPUs', count(gpus.length)),
    stat('average GPU load', percent(avg)),
    stat('requests in flight', count(inflight)),
  ]
}

function workersTable(workers: readonly Worker[], now: number): HTMLElement {
  const rows = workers.map((w) => {
    const m = w.metrics ?? undefined
    return h(
      'tr',
      { 'data-worker': w.clientId },
      h(
        'th',
        { scope: 'row' },
        h('a', { href: `#/workers/${encodeURIComponent(w.clientId)}` }, w.clientId),
        w.hostname === null ? undefined : h('div', { class: 'muted small' }, w.hostname),
      ),
      h('td', null, statusBadge(workerStatus(w, now))),
      h('td', null, w.engineType ?? '–'),
      h('td', { class: 'models' }, w.models.length === 0 ? '–' : w.models.join(', ')),
      h('td', null, load(m?.cpuPercent, 'CPU')),
      h('td', null, load(m?.memPercent, 'memory')),
      h('td', null, load(m?.diskPercent, 'disk')),
      h('td', { class: 'gpu-cell' }, gpuList(w)),
      h('td', { class: 'num' }, count(w.inflight)),
      h('td', { title: dateTime(w.lastHeartbeatAt) }, ago(w.lastHeartbeatAt, now)),
    )
  })
  return table(
    'Connected workers',
    [
      'Worker',
      'Status',
      'Engine',
      'Models',
      'CPU',
      'Memory',
      'Disk',
      'GPUs: load, memory, temperature, power',
      { text: 'In flight', num: true },
      'Last heartbeat',
    ],
    rows,
    'No worker is connected.',
  )
}
