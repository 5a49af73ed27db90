/**
 * One worker: what it is, its GPUs now, and history charts from its raw heartbeats (the last
 * few hundred) and daily statistics (the last two weeks), refreshed every few seconds.
 */

import { barChart, lineChart } from '../chart.js'
import { api, failureText } from '../client.js'
import { h, notice, replace, table } from '../dom.js'
import { ago, bytes, count, dateTime, daysBetween, percent, rate, unit, utcDay } from '../format.js'
import { type PageContext, poll } from '../page.js'
import type { Heartbeat, UsageRow, Worker, WorkerStats } from '../types.js'
import { gpuLine, load, statusBadge, workerStatus } from './gpus.js'

/** How often the page is refreshed. */
export const WORKER_POLL_MS = 5_000
/** Raw heartbeats drawn. */
const HEARTBEATS = 360
/** Days of daily statistics drawn. */
const DAYS = 14

export function workerPage(ctx: PageContext): void {
  const id = ctx.params[0] ?? ''
  const path = `/api/v1/workers/${encodeURIComponent(id)}`
  const info = h('div', { class: 'region' }, 'Loading…')
  const charts = h('div', { class: 'region' })
  replace(
    ctx.view,
    h(
      'div',
      { class: 'page-head' },
      h('p', { class: 'crumbs' }, h('a', { href: '#/workers' }, '← Workers')),
      h('h1', { tabindex: -1 }, id),
    ),
    info,
    h('h2', null, 'History'),
    charts,
  )
  poll(ctx.signal, WORKER_POLL_MS, async () => {
    const from = utcDay(-(DAYS - 1))
    const [worker, stats, usage] = await Promise.allSettled([
      api<Worker>(path, { signal: ctx.signal }),
      api<WorkerStats>(`${path}/stats?heartbeats=${HEARTBEATS}`, { signal: ctx.signal }),
      api<{ usage: UsageRow[] }>(`/api/v1/usage?workerId=${encodeURIComponent(id)}&from=${from}`, {
        signal: ctx.signal,
      }),
    ])
    if (ctx.signal.aborted) return
    if (worker.status === 'rejected') {
      const text = failureText(worker.reason)
      if (text !== undefined) replace(info, notice('error', text))
    } else replace(info, details(worker.value))
    if (stats.status === 'rejected') {
      const text = failureText(stats.reason)
      if (text !== undefined) replace(charts, notice('info', `No statistics: ${text}`))
      return
    }
    const usageRows = usage.status === 'fulfilled' ? usage.value.usage : []
    replace(charts, history(stats.value, usageRows, from))
  })
}

function details(w: Worker): HTMLElement {
  const m = w.metrics ?? undefined
  const item = (term: string, value: Node | string) =>
    h('div', null, h('dt', null, term), h('dd', null, value))
  const gpus = m?.gpus ?? []
  return h(
    'div',
    null,
    h(
      'dl',
      { class: 'facts' },
      item('Status', statusBadge(workerStatus(w))),
      item('Host', `${w.hostname ?? '–'}${w.os === null || w.os === undefined ? '' : ` (${w.os})`}`),
      item('Engine', w.engineType ?? '–'),
      item('Models', w.models.join(', ') || '–'),
      item('Connected', w.connectedAt === undefined ? '–' : dateTime(w.connectedAt)),
      item('Last heartbeat', w.online ? ago(w.lastHeartbeatAt) : `last seen ${dateTime(w.lastSeenAt)}`),
      item('In flight', count(w.inflight)),
      item('CPU', load(m?.cpuPercent, 'CPU')),
      item(
        'Memory',
        h(
          'span',
          null,
          load(m?.memPercent, 'memory'),
          ` ${bytes(m?.memUsedBytes)} / ${bytes(m?.memTotalBytes)}`,
        ),
      ),
      item('Disk', load(m?.diskPercent, 'disk')),
      item('Network', `↓ ${rate(m?.netRxRate)} ↑ ${rate(m?.netTxRate)}`),
    ),
    gpus.length === 0
      ? undefined
      : h('section', null, h('h2', null, 'GPUs'), h('div', { class: 'gpus wide' }, gpus.map(gpuLine))),
  )
}

function history(stats: WorkerStats, usage: readonly UsageRow[], from: string): HTMLElement {
  const beats = [...stats.heartbeats].reverse()
  const at = (b: Heartbeat) => Date.parse(b.at)
  const line = (name: string, pick: (b: Heartbeat) => number | null | undefined) => ({
    name,
    points: beats.flatMap((b): [number, number][] => {
      const v = pick(b)
      return v === null || v === undefined ? [] : [[at(b), v]]
    }),
  })
  const gpuIndexes = [...new Set(beats.flatMap((b) => (b.extra.gpus ?? []).map((g) => g.index)))].sort(
    (a, b) => a - b,
  )
  const gpuSeries = gpuIndexes.map((i) =>
    line(`GPU ${i}`, (b) => b.extra.gpus?.find((g) => g.index === i)?.utilizationPercent),
  )
  const days = daysBetween(from, utcDay())
  const byDay = new Map(stats.daily.map((d) => [d.day, d]))
  const perDay = (pick: (d: WorkerStats['daily'][number]) => number | null) =>
    days.map((day) => {
      const d = byDay.get(day)
      return d === undefined ? 0 : (pick(d) ?? 0)
    })
  const requests = days.map((day) => usage.filter((u) => u.day === day).reduce((s, u) => s + u.requests, 0))
  const deviceIndexes = [...new Set(stats.deviceDaily.map((d) => d.deviceIndex))].sort((a, b) => a - b)
  const raw = `last ${count(beats.length)} heartbeats`
  return h(
    'div',
    null,
    h(
      'div',
      { class: 'charts' },
      lineChart({
        title: `CPU and memory (%, ${raw})`,
        format: percent,
        max: 100,
        series: [line('CPU', (b) => b.cpuPercent), line('Memory', (b) => b.memPercent)],
      }),
      lineChart({ title: `GPU utilisation (%, ${raw})`, format: percent, max: 100, series: gpuSeries }),
      lineChart({
        title: `Network (${raw})`,
        format: rate,
        series: [line('Received', (b) => b.extra.netRxRate), line('Sent', (b) => b.extra.netTxRate)],
      }),
      lineChart({
        title: `Requests in flight (${raw})`,
        format: count,
        integer: true,
        series: [line('In flight', (b) => b.inflight)],
      }),
      barChart({
        title: 'Requests per day (UTC)',
        format: count,
        integer: true,
        categories: days,
        series: [{ name: 'Requests', values: requests }],
      }),
      barChart({
        title: 'Heartbeats per day (UTC)',
        format: count,
        integer: true,
        categories: days,
        series: [{ name: 'Heartbeats', values: perDay((d) => d.heartbeats) }],
      }),
      barChart({
        title: 'Average load per day (%)',
        format: percent,
        max: 100,
        categories: days,
        series: [
          { name: 'CPU', values: perDay((d) => d.avgCpuPercent) },
          ...deviceIndexes.map((i) => ({
            name: `GPU ${i}`,
            values: days.map(
              (day) =>
                stats.deviceDaily.find((d) => d.day === day && d.deviceIndex === i)?.avgUtilizationPercent ??
                0,
            ),
          })),
        ],
      }),
      barChart({
        title: 'Network per day',
        format: bytes,
        categories: days,
        series: [
          { name: 'Received', values: perDay((d) => d.netInBytes) },
          { name: 'Sent', values: perDay((d) => d.netOutBytes) },
        ],
      }),
    ),
    h('h2', null, 'Daily statistics'),
    table(
      'Daily statistics',
      [
        'Day (UTC)',
        { text: 'Heartbeats', num: true },
        { text: 'Avg CPU', num: true },
        { text: 'Avg memory', num: true },
        { text: 'Max in flight', num: true },
        { text: 'Received', num: true },
        { text: 'Sent', num: true },
        'GPUs (avg load, temperature, power)',
      ],
      [...stats.daily]
        .sort((a, b) => (a.day < b.day ? 1 : -1))
        .map((d) =>
          h(
            'tr',
            null,
            h('td', null, d.day),
            h('td', { class: 'num' }, count(d.heartbeats)),
            h('td', { class: 'num' }, percent(d.avgCpuPercent)),
            h('td', { class: 'num' }, percent(d.avgMemPercent)),
            h('td', { class: 'num' }, count(d.maxInflight)),
            h('td', { class: 'num' }, bytes(d.netInBytes)),
            h('td', { class: 'num' }, bytes(d.netOutBytes)),
            h(
              'td',
              null,
              stats.deviceDaily
                .filter((x) => x.day === d.day)
                .map((x) =>
                  h(
                    'div',
                    null,
                    `#${x.deviceIndex} ${percent(x.avgUtilizationPercent)} · ${unit(x.avgTemperatureC, '°C')} · ${unit(x.avgPowerW, 'W')}`,
                  ),
                ),
            ),
          ),
        ),
      'No daily statistics yet.',
    ),
  )
}
