/**
 * A few lines instead of a framework: `h('td', { class: 'num' }, text)` builds an element.
 * Text always becomes text nodes (never HTML), so nothing from the API can inject markup, and
 * no `style` attribute is ever written (the page's CSP allows none): styles are classes, and
 * sizes go through the CSSOM.
 */

/** A child: a node, text (numbers too), or nothing. */
export type Child = Node | string | number | null | undefined | false | readonly Child[]

/** Attributes (strings, or true for a bare attribute; false/undefined/null leave it out) and listeners (`on…`). */
export type Props = {
  readonly [name: string]: string | number | boolean | null | undefined | ((event: Event) => void)
}

function append(parent: Node, child: Child): void {
  if (child === null || child === undefined || child === false) return
  if (Array.isArray(child)) {
    for (const c of child as readonly Child[]) append(parent, c)
    return
  }
  parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)))
}

function apply(el: Element, props: Props | null | undefined): void {
  if (props === null || props === undefined) return
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue
    if (typeof value === 'function') {
      el.addEventListener(name.slice(2).toLowerCase(), value)
      continue
    }
    if (name === 'style') throw new Error('no style attributes: the CSP forbids them; use a class')
    el.setAttribute(name, value === true ? '' : String(value))
  }
}

/** An HTML element. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props?: Props | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  apply(el, props)
  for (const c of children) append(el, c)
  return el
}

const SVG_NS = 'http://www.w3.org/2000/svg'

/** An SVG element. */
export function s<K extends keyof SVGElementTagNameMap>(
  tag: K,
  props?: Props | null,
  ...children: Child[]
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag)
  apply(el, props)
  for (const c of children) append(el, c)
  return el
}

/** Replaces the children of `el`. */
export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren()
  for (const c of children) append(el, c)
}

let ids = 0
/** A fresh id for label/field pairs. */
export function uid(prefix: string): string {
  ids += 1
  return `${prefix}-${ids}`
}

/** A labelled form field: `<label for>` and the control. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = control.id === '' ? uid('f') : control.id
  control.id = id
  const hintEl = hint === undefined ? undefined : h('small', { id: `${id}-hint`, class: 'hint' }, hint)
  if (hintEl !== undefined) control.setAttribute('aria-describedby', hintEl.id)
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintEl)
}

/** A table inside a wrapper that scrolls sideways on its own on narrow screens. */
export function table(
  caption: string,
  headings: readonly (string | { text: string; num?: boolean })[],
  rows: readonly Child[],
  empty = 'Nothing yet.',
): HTMLElement {
  const head = h(
    'tr',
    null,
    headings.map((c) =>
      typeof c === 'string'
        ? h('th', { scope: 'col' }, c)
        : h('th', { scope: 'col', class: c.num === true ? 'num' : undefined }, c.text),
    ),
  )
  const body =
    rows.length === 0 ? h('tr', null, h('td', { colspan: headings.length, class: 'empty' }, empty)) : rows
  return h(
    'div',
    { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': caption },
    h(
      'table',
      null,
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', null, head),
      h('tbody', null, body),
    ),
  )
}

/** A message box: `error` (role alert) or `info` (role status). */
export function notice(kind: 'error' | 'info', text: string): HTMLElement {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text)
}
