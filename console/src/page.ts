/** What every page of the console gets, and the polling helper pages share. */
import type { Me } from './types.js'

/** A page's world while it is shown; `signal` aborts when the user leaves it. */
export interface PageContext {
  readonly me: Me
  /** Aborted when the page is left: stops its polls and cancels its requests. */
  readonly signal: AbortSignal
  /** The page's root element (`<main>`), already emptied. */
  readonly view: HTMLElement
  /** Route parameters after the section (`#/workers/<id>` → `[id]`), decoded. */
  readonly params: readonly string[]
}

/** Draws a page into `ctx.view`. */
export type Page = (ctx: PageContext) => void

/**
 * Runs `tick` now and then `intervalMs` after each run ends (runs never overlap), until
 * `signal` aborts. While the tab is hidden no request is made; it catches up when shown.
 */
export function poll(signal: AbortSignal, intervalMs: number, tick: () => Promise<void>): void {
  let timer: ReturnType<typeof setTimeout> | undefined
  const run = async () => {
    timer = undefined
    if (signal.aborted) return
    if (document.visibilityState !== 'hidden') await tick().catch(() => undefined)
    if (!signal.aborted) timer = setTimeout(run, intervalMs)
  }
  const onVisible = () => {
    if (document.visibilityState === 'visible' && timer !== undefined) {
      clearTimeout(timer)
      void run()
    }
  }
  document.addEventListener('visibilitychange', onVisible)
  signal.addEventListener(
    'abort',
    () => {
      if (timer !== undefined) clearTimeout(timer)
      document.removeEventListener('visibilitychange', onVisible)
    },
    { once: true },
  )
  void run()
}

/** Keeps a scrolled table's sideways position across a redraw of `region`. */
export function keepScroll(region: HTMLElement, redraw: () => void): void {
  const before = region.querySelector('.table-wrap')?.scrollLeft ?? 0
  redraw()
  const wrap = region.querySelector('.table-wrap')
  if (wrap !== null) wrap.scrollLeft = before
}
