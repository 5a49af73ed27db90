/** The request log, newest first, refreshed every few seconds. */
import { api, failureText } from '../client.js'
import { field, h, notice, replace, table } from '../dom.js'
import { clock, count, dateTime } from '../format.js'
import { keepScroll, type PageContext, poll } from '../page.js'
import type { ApiKey, RequestRow } from '../types.js'

/** How often the log is refreshed. */
export const REQUESTS_POLL_MS = 5_000

export function requestsPage(ctx: PageContext): void {
  const limit = h(
    'select',
    { name: 'limit' },
    [50, 100, 500, 1000].map((n) => h('option', { value: n, selected: n === 100 }, String(n))),
  )
  const updated = h('p', { class: 'muted' }, 'Loading…')
  const region = h('div', { class: 'region' })
  replace(
    ctx.view,
    h('div', { class: 'page-head' }, h('h1', { tabindex: -1 }, 'Requests'), updated),
    h(
      'div',
      { class: 'card filters', role: 'group', 'aria-label': 'Request log options' },
      field('Newest', limit),
    ),
    region,
  )
  let names = new Map<string, string>()
  const loadKeys = api<{ keys: ApiKey[] }>('/api/v1/keys', { signal: ctx.signal }).then(
    ({ keys }) => {
      names = new Map(keys.map((k) => [k.id, k.name ?? k.prefix]))
    },
    () => undefined,
  )
  const load = async () => {
    try {
      await loadKeys
      const { requests } = await api<{ requests: RequestRow[] }>(`/api/v1/requests?limit=${limit.value}`, {
        signal: ctx.signal,
      })
      keepScroll(region, () => replace(region, requestsTable(requests, names)))
      updated.textContent = `Updated ${clock(Date.now())} · refreshes every ${REQUESTS_POLL_MS / 1000} s`
    } catch (err) {
      const text = failureText(err)
      if (text !== undefined) replace(region, notice('error', text))
    }
  }
  limit.addEventListener('change', () => void load())
  poll(ctx.signal, REQUESTS_POLL_MS, load)
}

function requestsTable(requests: readonly RequestRow[], names: ReadonlyMap<string, string>): HTMLElement {
  const rows = requests.map((r) =>
    h(
      'tr',
      null,
      h('td', null, dateTime(r.at)),
      h('td', null, names.get(r.keyId) ?? (r.keyId === 'static' ? 'static key' : r.keyId)),
      h('td', null, r.model),
      h('td', null, r.workerId ?? '–'),
      h('td', null, h('code', null, r.path)),
      h('td', { class: 'num' }, h('span', { class: `badge ${r.status < 400 ? 'ok' : 'failed'}` }, r.status)),
      h('td', { class: 'num' }, `${count(r.durationMs)} ms`),
      h('td', { class: 'num' }, count(r.totalTokens)),
    ),
  )
  return table(
    'Request log',
    [
      'Time',
      'Key',
      'Model',
      'Worker',
      'Path',
      { text: 'Status', num: true },
      { text: 'Duration', num: true },
      { text: 'Tokens', num: true },
    ],
    rows,
    'No requests yet.',
  )
}
