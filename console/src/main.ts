/**
 * The GPUFabric web console: workers, keys, usage and the request log of one fabric server,
 * served by its management API port at `/`.
 *
 * No framework, on purpose. The console is six pages of tables, forms and charts that poll a
 * JSON API; a 60-line DOM helper (`dom.ts`) and hand-drawn SVG charts (`chart.ts`) cover that,
 * and the whole console is a few tens of kilobytes of our own code. What that buys:
 * - nothing to fetch from a CDN or vendor: the fabric may run without internet, and the page's
 *   CSP (`script-src 'self'`, no inline script or style) stays strict;
 * - one compiler, the project's own `tsc` (tsconfig.console.json), emitting ES modules the
 *   browser loads as they are: no bundler, no extra dependency to audit or keep up to date;
 * - text from the API only ever becomes text nodes (`h()` has no HTML path), so a worker's
 *   hostname or a key's name cannot inject markup.
 * A reactive framework (Preact, Lit) would pay off with much shared client state; here each
 * page redraws its region from the latest answer.
 *
 * Routing is by hash (`#/workers/<id>`), so the server serves one `index.html`. The key is
 * kept in sessionStorage and sent as `Authorization: Bearer`; `GET /api/v1/me` says whether
 * it is the admin or a user's key, and with which scope.
 */
import { failureText, storedKey, storeKey, whenUnauthorized, whoAmI } from './client.js'
import { h, notice, replace } from './dom.js'
import type { Page } from './page.js'
import { keysPage } from './pages/keys.js'
import { loginPage } from './pages/login.js'
import { requestsPage } from './pages/requests.js'
import { usagePage } from './pages/usage.js'
import { workerPage } from './pages/worker.js'
import { workersPage } from './pages/workers.js'
import type { Me } from './types.js'

const PAGES: Record<string, { readonly title: string; readonly page: Page }> = {
  workers: { title: 'Workers', page: (ctx) => (ctx.params.length > 0 ? workerPage(ctx) : workersPage(ctx)) },
  keys: { title: 'Keys', page: keysPage },
  usage: { title: 'Usage', page: usagePage },
  requests: { title: 'Requests', page: requestsPage },
}

const view = document.getElementById('view') as HTMLElement
const top = document.getElementById('top') as HTMLElement
const who = document.getElementById('who') as HTMLElement
const logout = document.getElementById('logout') as HTMLButtonElement

let me: Me | undefined
let current: AbortController | undefined
let signOutReason: string | undefined

function route(): { section: string; params: string[] } {
  const parts = location.hash
    .replace(/^#\/?/, '')
    .split('/')
    .filter((p) => p !== '')
  const decode = (p: string) => {
    try {
      return decodeURIComponent(p)
    } catch {
      return p
    }
  }
  return { section: parts[0] ?? '', params: parts.slice(1).map(decode) }
}

function go(hash: string): void {
  if (location.hash === hash) render()
  else location.hash = hash
}

function signOut(reason?: string): void {
  storeKey(undefined)
  me = undefined
  signOutReason = reason
  go('#/login')
}

function render(): void {
  current?.abort()
  current = new AbortController()
  const { section, params } = route()
  if (me === undefined) {
    top.hidden = true
    document.title = 'Sign in · GPUFabric console'
    if (section !== 'login') {
      location.replace('#/login')
      return
    }
    loginPage(view, signOutReason, (key, caller) => {
      storeKey(key)
      me = caller
      signOutReason = undefined
      go('#/workers')
    })
    return
  }
  const entry = PAGES[section]
  if (entry === undefined) {
    location.replace('#/workers')
    return
  }
  top.hidden = false
  who.textContent = me.role === 'admin' ? 'admin' : `${me.user?.name ?? 'user'} · ${me.scope}`
  for (const link of top.querySelectorAll<HTMLAnchorElement>('nav a')) {
    if (link.dataset['section'] === section) link.setAttribute('aria-current', 'page')
    else link.removeAttribute('aria-current')
  }
  document.title = `${params[0] ?? entry.title} · GPUFabric console`
  view.replaceChildren()
  entry.page({ me, signal: current.signal, view, params })
  view.querySelector<HTMLElement>('h1')?.focus({ preventScroll: true })
}

async function start(): Promise<void> {
  whenUnauthorized((message) => signOut(`Signed out: ${message}`))
  logout.addEventListener('click', () => signOut('Signed out.'))
  window.addEventListener('hashchange', render)
  const key = storedKey()
  if (key !== undefined) {
    try {
      me = await whoAmI()
    } catch (err) {
      if (me === undefined && storedKey() !== undefined) {
        replace(
          view,
          h('h1', null, 'GPUFabric console'),
          notice('error', failureText(err) ?? 'The server cannot be reached.'),
        )
        return
      }
    }
  }
  render()
}

void start()
