/**
 * Hand-drawn SVG charts: a time-series line chart and a grouped bar chart. A chart library
 * would be larger than the whole console; these draw into a fixed viewBox that scales with
 * the page's width, with colours from the stylesheet (`.series-N`), so the CSP needs no
 * inline style. Each chart has a title, a legend, and a text summary for screen readers.
 */
import { h, s, uid } from './dom.js'

const W = 480
const H = 210
// Wide enough on the left for a tick such as "14.6 KiB/s".
const M = { left: 84, right: 14, top: 12, bottom: 30 }
const PLOT_W = W - M.left - M.right
const PLOT_H = H - M.top - M.bottom
/** Colours in app.css: `.series-0` … `.series-7`. */
const PALETTE = 8

/** One line of a line chart: [time in ms, value] pairs, any order. */
export interface LineSeries {
  readonly name: string
  readonly points: readonly (readonly [number, number])[]
}

/** One group member of a bar chart: a value per category. */
export interface BarSeries {
  readonly name: string
  readonly values: readonly number[]
}

/** Options shared by both charts. */
export interface ChartOptions {
  readonly title: string
  /** Formats an axis value (`87%`, `1.2 MiB/s`). */
  readonly format: (value: number) => string
  /** The top of the value axis (100 for percentages); else rounded up from the data. */
  readonly max?: number
  /** Whole numbers only (counts): every axis tick is a whole number. */
  readonly integer?: boolean
}

/** A round number at or above `v` (1, 2, 2.5, 5 × 10^n). */
export function niceCeil(v: number): number {
  if (!(v > 0)) return 1
  const exp = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v) return m * exp
  return 10 * exp
}

/** The top of the value axis: given, or the data's largest value rounded up (ticks at quarters). */
function axisMax(options: ChartOptions, values: readonly number[]): number {
  if (options.max !== undefined) return options.max
  const top = Math.max(0, ...values)
  return options.integer === true ? 4 * niceCeil(Math.ceil(top / 4)) : niceCeil(top)
}

function frame(options: ChartOptions, max: number, kind: string, empty: boolean) {
  const titleId = uid('chart')
  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'aria-labelledby': titleId,
    class: 'chart-svg',
    preserveAspectRatio: 'xMidYMid meet',
  })
  svg.appendChild(s('title', null, options.title))
  for (let i = 0; i <= 4; i++) {
    const y = M.top + PLOT_H - (PLOT_H * i) / 4
    svg.appendChild(
      s('line', { x1: M.left, x2: W - M.right, y1: y, y2: y, class: i === 0 ? 'axis' : 'grid' }),
    )
    svg.appendChild(
      s(
        'text',
        { x: M.left - 6, y: y + 4, class: 'tick', 'text-anchor': 'end' },
        options.format((max * i) / 4),
      ),
    )
  }
  if (empty)
    svg.appendChild(
      s(
        'text',
        { x: M.left + PLOT_W / 2, y: M.top + PLOT_H / 2, class: 'tick', 'text-anchor': 'middle' },
        'no data yet',
      ),
    )
  const figure = h(
    'figure',
    { class: 'chart', 'data-chart': kind },
    h('figcaption', { id: titleId }, options.title),
    svg,
  )
  return { svg, figure }
}

function legend(names: readonly string[]): HTMLElement | undefined {
  if (names.length < 2) return undefined
  return h(
    'ul',
    { class: 'legend' },
    names.map((name, i) =>
      h('li', null, h('span', { class: `swatch series-${i % PALETTE}`, 'aria-hidden': 'true' }), name),
    ),
  )
}

/** A line per series over time; the x axis spans the earliest to the latest point. */
export function lineChart(options: ChartOptions & { readonly series: readonly LineSeries[] }): HTMLElement {
  const all = options.series.flatMap((x) => x.points)
  const values = all.map((p) => p[1]).filter(Number.isFinite)
  const max = axisMax(options, values)
  const t0 = Math.min(...all.map((p) => p[0]))
  const t1 = Math.max(...all.map((p) => p[0]))
  const { svg, figure } = frame(options, max, 'line', all.length === 0)
  const x = (t: number) => (t1 === t0 ? M.left + PLOT_W / 2 : M.left + ((t - t0) / (t1 - t0)) * PLOT_W)
  const y = (v: number) => M.top + PLOT_H - (Math.min(Math.max(v, 0), max) / max) * PLOT_H
  options.series.forEach((series, i) => {
    const points = [...series.points].filter((p) => Number.isFinite(p[1])).sort((a, b) => a[0] - b[0])
    if (points.length === 0) return
    const cls = `series-${i % PALETTE}`
    if (points.length === 1) {
      const [p] = points
      svg.appendChild(s('circle', { cx: x(p![0]), cy: y(p![1]), r: 4, class: `dot ${cls}` }))
      return
    }
    const d = points
      .map((p, j) => `${j === 0 ? 'M' : 'L'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`)
      .join('')
    svg.appendChild(s('path', { d, class: `line ${cls}` }))
  })
  if (all.length > 0) {
    const label = (t: number, anchor: string, at: number) =>
      s('text', { x: at, y: H - 8, class: 'tick', 'text-anchor': anchor }, timeLabel(t, t1 - t0))
    svg.appendChild(label(t0, 'start', M.left))
    if (t1 > t0) svg.appendChild(label(t1, 'end', W - M.right))
  }
  figure.appendChild(legend(options.series.map((x) => x.name)) ?? document.createTextNode(''))
  figure.appendChild(h('p', { class: 'visually-hidden' }, summary(options.series, options.format)))
  figure.dataset['points'] = String(all.length)
  return figure
}

/** Grouped bars: one group per category (a day), one bar per series. */
export function barChart(
  options: ChartOptions & { readonly categories: readonly string[]; readonly series: readonly BarSeries[] },
): HTMLElement {
  const values = options.series.flatMap((x) => x.values)
  const max = axisMax(options, values)
  const empty = values.every((v) => v === 0)
  const { svg, figure } = frame(options, max, 'bar', empty)
  const n = Math.max(1, options.categories.length)
  const group = PLOT_W / n
  const gap = Math.min(8, group * 0.2)
  const bar = Math.max(1, (group - gap) / Math.max(1, options.series.length))
  const every = Math.max(1, Math.ceil(n / 8))
  options.categories.forEach((category, c) => {
    options.series.forEach((series, i) => {
      const v = series.values[c] ?? 0
      if (!(v > 0)) return
      const height = (Math.min(v, max) / max) * PLOT_H
      svg.appendChild(
        s(
          'rect',
          {
            x: (M.left + c * group + gap / 2 + i * bar).toFixed(1),
            y: (M.top + PLOT_H - height).toFixed(1),
            width: bar.toFixed(1),
            height: height.toFixed(1),
            class: `bar series-${i % PALETTE}`,
          },
          s('title', null, `${series.name}, ${category}: ${options.format(v)}`),
        ),
      )
    })
    if (c % every === 0)
      svg.appendChild(
        s(
          'text',
          { x: M.left + c * group + group / 2, y: H - 8, class: 'tick', 'text-anchor': 'middle' },
          category.slice(5),
        ),
      )
  })
  figure.appendChild(legend(options.series.map((x) => x.name)) ?? document.createTextNode(''))
  const totals = options.series.map(
    (x) => `${x.name}: ${options.format(x.values.reduce((a, b) => a + b, 0))}`,
  )
  figure.appendChild(h('p', { class: 'visually-hidden' }, `Totals. ${totals.join('; ')}`))
  figure.dataset['points'] = String(values.filter((v) => v > 0).length)
  return figure
}

function timeLabel(t: number, span: number): string {
  const d = new Date(t)
  const p = (n: number) => String(n).padStart(2, '0')
  const time = `${p(d.getHours())}:${p(d.getMinutes())}${span < 600_000 ? `:${p(d.getSeconds())}` : ''}`
  return span > 86_400_000 ? `${d.getMonth() + 1}/${d.getDate()} ${time}` : time
}

function summary(series: readonly LineSeries[], format: (v: number) => string): string {
  return series
    .map((x) => {
      const latest = [...x.points].sort((a, b) => b[0] - a[0])[0]
      return latest === undefined ? `${x.name}: no data` : `${x.name}: latest ${format(latest[1])}`
    })
    .join('; ')
}
