/** How numbers, sizes and times are shown. */

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']

/** `1.5 GiB`; a dash for nothing. */
export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–'
  let v = Math.abs(n)
  let unit = 0
  while (v >= 1024 && unit < BYTE_UNITS.length - 1) {
    v /= 1024
    unit += 1
  }
  const digits = unit === 0 || v >= 100 ? 0 : 1
  return `${n < 0 ? '-' : ''}${v.toFixed(digits)} ${BYTE_UNITS[unit]}`
}

/** `12.3 KiB/s`. */
export function rate(n: number | null | undefined): string {
  return n === null || n === undefined ? '–' : `${bytes(n)}/s`
}

/** `87%` (one decimal below 10). */
export function percent(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–'
  return `${n < 10 && n !== 0 ? n.toFixed(1) : Math.round(n)}%`
}

/** `1,234`. */
export function count(n: number | null | undefined): string {
  return n === null || n === undefined ? '–' : Math.round(n).toLocaleString('en-US')
}

/** A number with a unit, or a dash. */
export function unit(n: number | null | undefined, suffix: string, digits = 0): string {
  return n === null || n === undefined || !Number.isFinite(n) ? '–' : `${n.toFixed(digits)} ${suffix}`
}

/** `3 s ago`, `5 min ago`. */
export function ago(iso: string | undefined, now = Date.now()): string {
  if (iso === undefined) return '–'
  const ms = now - Date.parse(iso)
  if (!Number.isFinite(ms)) return '–'
  const sec = Math.max(0, Math.round(ms / 1000))
  if (sec < 60) return `${sec} s ago`
  if (sec < 3600) return `${Math.round(sec / 60)} min ago`
  if (sec < 86_400) return `${Math.round(sec / 3600)} h ago`
  return `${Math.round(sec / 86_400)} d ago`
}

/** `2026-11-30 18:44:26` in local time. */
export function dateTime(iso: string | null | undefined): string {
  if (iso === null || iso === undefined) return '–'
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return '–'
  const p = (n: number) => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
}

/** `18:44:26` in local time. */
export function clock(ms: number): string {
  const d = new Date(ms)
  const p = (n: number) => String(n).padStart(2, '0')
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
}

/** The UTC day (`YYYY-MM-DD`) `offset` days from today: the days the server counts usage in. */
export function utcDay(offset = 0, now = Date.now()): string {
  return new Date(now + offset * 86_400_000).toISOString().slice(0, 10)
}

/** Every day from `from` to `to`, both included (at most `max`). */
export function daysBetween(from: string, to: string, max = 400): string[] {
  const out: string[] = []
  let t = Date.parse(`${from}T00:00:00Z`)
  const end = Date.parse(`${to}T00:00:00Z`)
  if (!Number.isFinite(t) || !Number.isFinite(end)) return out
  while (t <= end && out.length < max) {
    out.push(new Date(t).toISOString().slice(0, 10))
    t += 86_400_000
  }
  return out
}
