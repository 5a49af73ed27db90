/**
 * Usage per key and per model over a range of days (UTC, as the server counts them): charts
 * of tokens and requests per day, and tables of the totals. Refreshed every few seconds.
 */

import { type BarSeries, barChart } from '../chart.js'
import { api, failureText } from '../client.js'
import { field, h, notice, replace, table } from '../dom.js'
import { clock, count, daysBetween, utcDay } from '../format.js'
import { keepScroll, type PageContext, poll } from '../page.js'
import type { ApiKey, UsageRow } from '../types.js'

/** How often the figures are refreshed. */
export const USAGE_POLL_MS = 5_000
/** Series drawn per chart; the rest are summed as "others". */
const TOP = 6

export function usagePage(ctx: PageContext): void {
  const from = h('input', { type: 'date', name: 'from', value: utcDay(-6), required: true })
  const to = h('input', { type: 'date', name: 'to', value: utcDay(), required: true })
  const keySelect = h('select', { name: 'key' }, h('option', { value: '' }, 'every key'))
  const model = h('input', { type: 'text', name: 'model', autocomplete: 'off', placeholder: 'every model' })
  const updated = h('p', { class: 'muted' }, 'Loading…')
  const region = h('div', { class: 'region' })
  const form = h(
    'form',
    { class: 'card filters', 'aria-label': 'Usage filters' },
    field('From (UTC day)', from),
    field('To (UTC day)', to),
    field('Key', keySelect),
    field('Model', model),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show')),
  )
  replace(
    ctx.view,
    h('div', { class: 'page-head' }, h('h1', { tabindex: -1 }, 'Usage'), updated),
    form,
    region,
  )

  let names = new Map<string, string>()
  const loadKeys = api<{ keys: ApiKey[] }>('/api/v1/keys', { signal: ctx.signal }).then(
    ({ keys }) => {
      names = new Map(keys.map((k) => [k.id, k.name ?? k.prefix]))
      for (const k of keys.filter((k) => k.kind === 'api'))
        keySelect.appendChild(h('option', { value: k.id }, k.name ?? k.prefix))
    },
    () => undefined,
  )

  const load = async () => {
    if (from.value === '' || to.value === '' || from.value > to.value) {
      replace(region, notice('error', 'Choose a range whose first day is not after its last.'))
      return
    }
    const q = new URLSearchParams({ from: from.value, to: to.value })
    if (keySelect.value !== '') q.set('keyId', keySelect.value)
    if (model.value.trim() !== '') q.set('model', model.value.trim())
    try {
      await loadKeys
      const { usage } = await api<{ usage: UsageRow[] }>(`/api/v1/usage?${q}`, { signal: ctx.signal })
      const name = (id: string) => names.get(id) ?? (id === 'static' ? 'static key' : id)
      keepScroll(region, () => replace(region, figures(usage, daysBetween(from.value, to.value), name)))
      updated.textContent = `Updated ${clock(Date.now())} · refreshes every ${USAGE_POLL_MS / 1000} s`
    } catch (err) {
      const text = failureText(err)
      if (text !== undefined) replace(region, notice('error', text))
    }
  }
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    void load()
  })
  poll(ctx.signal, USAGE_POLL_MS, load)
}

interface Totals {
  requests: number
  errors: number
  promptTokens: number
  completionTokens: number
  totalTokens: number
}

function sum(rows: readonly UsageRow[], by: (r: UsageRow) => string): Map<string, Totals> {
  const out = new Map<string, Totals>()
  for (const r of rows) {
    const k = by(r)
    const t = out.get(k) ?? { requests: 0, errors: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0 }
    t.requests += r.requests
    t.errors += r.errors
    t.promptTokens += r.promptTokens
    t.completionTokens += r.completionTokens
    t.totalTokens += r.totalTokens
    out.set(k, t)
  }
  return out
}

/** Tokens per day, one series per group (the largest first, the rest as "others"). */
function perDay(
  rows: readonly UsageRow[],
  days: readonly string[],
  by: (r: UsageRow) => string,
): BarSeries[] {
  const totals = [...sum(rows, by)].sort((a, b) => b[1].totalTokens - a[1].totalTokens)
  const shown = totals.slice(0, TOP).map(([g]) => g)
  const series = shown.map((g) => ({ name: g, values: days.map(() => 0) }))
  const others = { name: 'others', values: days.map(() => 0) }
  for (const r of rows) {
    const d = days.indexOf(r.day)
    if (d < 0) continue
    const i = shown.indexOf(by(r))
    const target = i < 0 ? others : series[i]!
    target.values[d] = (target.values[d] ?? 0) + r.totalTokens
  }
  return others.values.some((v) => v > 0) ? [...series, others] : series
}

function totalsTable(caption: string, heading: string, totals: Map<string, Totals>): HTMLElement {
  const rows = [...totals]
    .sort((a, b) => b[1].totalTokens - a[1].totalTokens)
    .map(([group, t]) =>
      h(
        'tr',
        null,
        h('th', { scope: 'row' }, group),
        h('td', { class: 'num' }, count(t.requests)),
        h('td', { class: 'num' }, count(t.errors)),
        h('td', { class: 'num' }, count(t.promptTokens)),
        h('td', { class: 'num' }, count(t.completionTokens)),
        h('td', { class: 'num' }, count(t.totalTokens)),
      ),
    )
  return table(
    caption,
    [
      heading,
      { text: 'Requests', num: true },
      { text: 'Errors', num: true },
      { text: 'Prompt tokens', num: true },
      { text: 'Completion tokens', num: true },
      { text: 'Total tokens', num: true },
    ],
    rows,
    'No usage in this range.',
  )
}

function figures(
  rows: readonly UsageRow[],
  days: readonly string[],
  name: (keyId: string) => string,
): HTMLElement {
  const byKey = (r: UsageRow) => name(r.keyId)
  const byModel = (r: UsageRow) => r.model
  const requests = days.map((d) => rows.filter((r) => r.day === d).reduce((s, r) => s + r.requests, 0))
  return h(
    'div',
    null,
    h(
      'div',
      { class: 'charts' },
      barChart({
        title: 'Tokens per day by key',
        format: count,
        integer: true,
        categories: days,
        series: perDay(rows, days, byKey),
      }),
      barChart({
        title: 'Tokens per day by model',
        format: count,
        integer: true,
        categories: days,
        series: perDay(rows, days, byModel),
      }),
      barChart({
        title: 'Requests per day',
        format: count,
        integer: true,
        categories: days,
        series: [{ name: 'Requests', values: requests }],
      }),
    ),
    h(
      'section',
      { 'aria-labelledby': 'usage-by-key' },
      h('h2', { id: 'usage-by-key' }, 'By key'),
      totalsTable('Usage by key', 'Key', sum(rows, byKey)),
    ),
    h(
      'section',
      { 'aria-labelledby': 'usage-by-model' },
      h('h2', { id: 'usage-by-model' }, 'By model'),
      totalsTable('Usage by model', 'Model', sum(rows, byModel)),
    ),
  )
}
