/**
 * The web console end to end, in headless Chromium (the Debian package, driven by
 * playwright-core): a real server on its embedded defaults serves the console on its
 * management port; two workers report GPUs through fake `nvidia-smi` tools. The admin signs
 * in, sees both workers with their GPU figures, opens a worker's charts, creates a key in the
 * UI, uses it through the `openai` client, watches its usage and request appear, revokes it
 * in the UI (the client then gets 401), checks the phone-width layout, and a read-only user
 * key is offered no key management. Any browser console error or page error fails the test.
 * Screenshots of each page go to test-results/console/.
 */
import assert from 'node:assert/strict'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import OpenAI from 'openai'
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core'
import type { WorkerAgent } from '../../src/worker/agent.js'
import { ADMIN_KEY, admin, echoWorker, startWiredServer, type WiredServer } from '../helpers/servers.js'

/** The browser: Debian's `chromium` package (scripts/ensure-services.sh installs it). */
const CHROMIUM = process.env['GPUF_CHROMIUM'] ?? '/usr/bin/chromium'
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/gpu/', import.meta.url))
const SHOTS = fileURLToPath(new URL('../../../test-results/console/', import.meta.url))
const KEY_NAME = 'console-e2e'

/** Why the browser cannot run here, or undefined when it can. CI (`GPUF_REQUIRE_SERVICES=1`) never skips. */
function chromiumMissing(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined
  if (process.env['GPUF_REQUIRE_SERVICES'] === '1')
    throw new Error(`chromium is required but not installed (${CHROMIUM})`)
  return `chromium is not installed at ${CHROMIUM} (scripts/ensure-services.sh installs it)`
}

/** A fake nvidia-smi that prints `csv` whatever it is asked. */
function fakeNvidiaSmi(dir: string, name: string, csv: string): string {
  writeFileSync(join(dir, `${name}.csv`), csv)
  const tool = join(dir, `${name}-nvidia-smi`)
  writeFileSync(tool, `#!/bin/sh\ncat '${join(dir, `${name}.csv`)}'\n`)
  chmodSync(tool, 0o755)
  return tool
}

describe('web console', { skip: chromiumMissing() }, () => {
  let dir: string
  let server: WiredServer
  let browser: Browser
  let context: BrowserContext
  let page: Page
  const workers: WorkerAgent[] = []
  /** Console errors and page errors of every page opened, as text. */
  const browserErrors: string[] = []
  let newKey: string
  /** Set once the console loaded and the admin signed in; the later steps need it. */
  let signedIn = false
  let completionTokens: number

  const watch = (p: Page) => {
    p.on('console', (m) => {
      if (m.type() === 'error') browserErrors.push(`console: ${m.text()} (${m.location().url})`)
    })
    p.on('pageerror', (err) => browserErrors.push(`page error: ${err.stack ?? err.message}`))
  }
  const noBrowserErrors = () => assert.deepEqual(browserErrors, [], 'no browser console or page errors')
  const shot = (p: Page, name: string) => p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true })
  const openai = (key: string) => new OpenAI({ apiKey: key, baseURL: `${server.baseUrl}/v1`, maxRetries: 0 })

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpuf-console-'))
    mkdirSync(SHOTS, { recursive: true })
    server = await startWiredServer({ dataDir: join(dir, 'data'), heartbeatIntervalMs: 200 })
    const eight = readFileSync(join(FIXTURES, 'nvidia-smi-8gpu.csv'), 'utf8').split('\n')
    const tools = {
      'gpu-node-a': fakeNvidiaSmi(dir, 'a', readFileSync(join(FIXTURES, 'nvidia-smi-1gpu.csv'), 'utf8')),
      'gpu-node-b': fakeNvidiaSmi(dir, 'b', `${eight.slice(0, 2).join('\n')}\n`),
    }
    for (const [id, nvidiaSmi] of Object.entries(tools)) {
      const worker = echoWorker(server, id, { gpuTools: { nvidiaSmi }, dataDir: dir })
      workers.push(worker)
      worker.start()
      await worker.ready(AbortSignal.timeout(10_000))
    }
    // Both report their GPUs before the browser looks.
    const deadline = Date.now() + 10_000
    for (;;) {
      const { body } = await admin(server, 'GET', '/api/v1/workers')
      const list = body['workers'] as { metrics: { gpus?: unknown[] } | null }[]
      if (list.length === 2 && list.every((w) => (w.metrics?.gpus?.length ?? 0) > 0)) break
      if (Date.now() > deadline) throw new Error('the workers did not report their GPUs')
      await sleep(50)
    }
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // Root (containers, CI) cannot use Chromium's sandbox; /dev/shm is small in containers.
      chromiumSandbox: process.getuid?.() !== 0,
      args: ['--disable-dev-shm-usage'],
    })
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.apiUrl })
    context.setDefaultTimeout(8_000)
    page = await context.newPage()
    watch(page)
  })

  after(async () => {
    await browser?.close()
    await Promise.allSettled(workers.map((w) => w.stop()))
    await server?.close()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  test('the management port serves the console, and the admin key signs in', async () => {
    const res = await page.goto(`${server.apiUrl}/`)
    assert.equal(res?.status(), 200, `GET / on the API port: ${res?.status()} ${await res?.text()}`)
    assert.match(res?.headers()['content-security-policy'] ?? '', /script-src 'self'/)
    await page.getByRole('heading', { name: 'GPUFabric console' }).waitFor()
    assert.match(page.url(), /#\/login$/)
    await shot(page, 'login')
    await page.getByLabel('API key').fill(ADMIN_KEY)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('heading', { name: 'Workers', level: 1 }).waitFor()
    assert.equal(await page.locator('#who').textContent(), 'admin')
    noBrowserErrors()
    signedIn = true
  })

  test('the workers table shows both workers with each GPU: load, memory, temperature, power', async (t) => {
    if (!signedIn) return t.skip('the console did not load (see the first step)')
    const a = page.locator('tr[data-worker="gpu-node-a"]')
    const b = page.locator('tr[data-worker="gpu-node-b"]')
    await a.locator('[data-gpu="0"]').waitFor()
    await b.locator('[data-gpu="1"]').waitFor()
    const gpuA = (await a.locator('[data-gpu="0"]').textContent()) ?? ''
    for (const part of ['#0 NVIDIA H200', '87%', '119 GiB / 140 GiB', '58 °C', '612 W'])
      assert.ok(gpuA.includes(part), `${part} in ${gpuA}`)
    const gpuB0 = (await b.locator('[data-gpu="0"]').textContent()) ?? ''
    const gpuB1 = (await b.locator('[data-gpu="1"]').textContent()) ?? ''
    for (const part of ['#0 NVIDIA H100 80GB HBM3', '98%', '67 °C', '690 W'])
      assert.ok(gpuB0.includes(part), `${part} in ${gpuB0}`)
    for (const part of ['#1 NVIDIA H100 80GB HBM3', '97%', '65 °C', '675 W'])
      assert.ok(gpuB1.includes(part), `${part} in ${gpuB1}`)
    const rowA = (await a.textContent()) ?? ''
    assert.match(rowA, /online/)
    assert.match(rowA, /echo/)
    assert.match(rowA, /\d+ s ago/)
    assert.equal(await a.locator('meter').count(), 4, 'CPU, memory, disk and one GPU meter')
    assert.equal(await page.locator('.stat', { hasText: 'GPUs' }).locator('.stat-value').textContent(), '3')
    // The table is live: its "updated" line moves on within one poll interval. (Polled from here:
    // waitForFunction evaluates a string in the page, which the console's CSP forbids.)
    const updated = page.locator('.page-head p')
    const first = await updated.textContent()
    const deadline = Date.now() + 5_000
    while ((await updated.textContent()) === first) {
      if (Date.now() > deadline) throw new Error('the workers table was not refreshed')
      await sleep(100)
    }
    await shot(page, 'workers')
    noBrowserErrors()
  })

  test("a worker's page draws its history charts from heartbeats and daily statistics", async (t) => {
    if (!signedIn) return t.skip('the console did not load (see the first step)')
    await page.getByRole('link', { name: 'gpu-node-b' }).click()
    await page.getByRole('heading', { name: 'gpu-node-b', level: 1 }).waitFor()
    assert.match(page.url(), /#\/workers\/gpu-node-b$/)
    const chart = (title: string) => page.locator('figure.chart', { hasText: title })
    // SVG shapes are waited for as attached: a flat line has no height, which Playwright calls hidden.
    const attached = { state: 'attached' } as const
    await chart('GPU utilisation').locator('path.line').nth(1).waitFor(attached)
    assert.equal(await chart('GPU utilisation').locator('path.line').count(), 2, 'one line per GPU')
    assert.equal(await chart('CPU and memory').locator('path.line').count(), 2)
    await chart('Network (').locator('svg').waitFor()
    await chart('Requests in flight').locator('path.line').waitFor(attached)
    await chart('Heartbeats per day').locator('rect.bar').waitFor(attached)
    assert.ok((await page.locator('figure.chart').count()) >= 8)
    assert.match((await page.locator('.gpus.wide').textContent()) ?? '', /NVIDIA H100 80GB HBM3/)
    await page.getByRole('region', { name: 'Daily statistics' }).locator('tbody tr').first().waitFor()
    await shot(page, 'worker')
    noBrowserErrors()
  })

  test('a key created in the UI is shown once, copies, and works with the openai client', async (t) => {
    if (!signedIn) return t.skip('the console did not load (see the first step)')
    await page.getByRole('link', { name: 'Keys' }).click()
    await page.getByRole('heading', { name: 'Keys', level: 1 }).waitFor()
    await page.getByLabel('Name').fill(KEY_NAME)
    await page.getByLabel('Requests per minute').fill('600')
    await page.getByLabel('Tokens per minute').fill('100000')
    await page.getByLabel('Models').fill('echo')
    await page.getByLabel('Expires in days').fill('7')
    await page.getByLabel('Scope').selectOption('inference')
    await page.getByRole('button', { name: 'Create key' }).click()
    const box = page.getByRole('region', { name: /New key: copy it now, it is shown only once/ })
    await box.waitFor()
    newKey = ((await box.locator('[data-secret]').textContent()) ?? '').trim()
    assert.match(newKey, /^gpuf_/)
    await box.getByRole('button', { name: 'Copy key' }).click()
    await box.getByText('Copied.').waitFor()
    assert.equal(await page.evaluate('navigator.clipboard.readText()'), newKey)
    const row = page.locator('tr', { hasText: KEY_NAME })
    await row.waitFor()
    const text = (await row.textContent()) ?? ''
    for (const part of ['active', 'inference', 'echo', '600', '100000'])
      assert.ok(text.includes(part), `${part} in ${text}`)
    await shot(page, 'keys')

    const completion = await openai(newKey).chat.completions.create({
      model: 'echo',
      messages: [{ role: 'user', content: 'hello console' }],
    })
    assert.match(completion.choices[0]?.message.content ?? '', /hello console/)
    completionTokens = completion.usage?.total_tokens ?? 0
    assert.ok(completionTokens > 0)

    // The box goes when the user says the key is stored, and the key is never shown again.
    await box.getByRole('button', { name: 'I have stored it' }).click()
    await box.waitFor({ state: 'detached' })
    assert.ok(!(await page.content()).includes(newKey))
    noBrowserErrors()
  })

  test("the key's usage appears on the usage page, per key and per model", async (t) => {
    if (!signedIn) return t.skip('the console did not load (see the first step)')
    await page.getByRole('link', { name: 'Usage' }).click()
    await page.getByRole('heading', { name: 'Usage', level: 1 }).waitFor()
    const byKey = page.getByRole('region', { name: 'Usage by key' })
    const row = byKey.locator('tr', { hasText: KEY_NAME })
    const deadline = Date.now() + 10_000
    while ((await row.count()) === 0) {
      if (Date.now() > deadline) throw new Error(`no usage row for ${KEY_NAME} on the usage page`)
      await page.getByRole('button', { name: 'Show' }).click()
      await sleep(250)
    }
    const cells = await row.locator('td').allInnerTexts()
    assert.equal(cells[0], '1', 'one request')
    assert.equal(cells[4], String(completionTokens), 'its total tokens')
    await page.getByRole('region', { name: 'Usage by model' }).locator('tr', { hasText: 'echo' }).waitFor()
    const tokensChart = page.locator('figure.chart', { hasText: 'Tokens per day by key' })
    await tokensChart.locator('rect.bar').first().waitFor({ state: 'attached' })
    assert.match((await tokensChart.textContent()) ?? '', new RegExp(KEY_NAME))
    await shot(page, 'usage')

    await page.getByRole('link', { name: 'Requests' }).click()
    const request = page.getByRole('region', { name: 'Request log' }).locator('tr', { hasText: KEY_NAME })
    await request.waitFor()
    const logged = (await request.textContent()) ?? ''
    for (const part of ['echo', 'gpu-node-', '/v1/chat/completions', '200', String(completionTokens)])
      assert.ok(logged.includes(part), `${part} in ${logged}`)
    await shot(page, 'requests')
    noBrowserErrors()
  })

  test('a key revoked in the UI is refused: the openai client gets 401', async (t) => {
    if (!signedIn) return t.skip('the console did not load (see the first step)')
    await page.getByRole('link', { name: 'Keys' }).click()
    const row = page.locator('tr', { hasText: KEY_NAME })
    // Limits changed in place: the API shows them at once.
    await row.getByRole('button', { name: `Limits of ${KEY_NAME}` }).click()
    await row.getByLabel(`Requests per minute of ${KEY_NAME} (empty: no limit)`).fill('42')
    await row.getByLabel(`Tokens per minute of ${KEY_NAME} (empty: no limit)`).fill('')
    await row.getByRole('button', { name: 'Save limits' }).click()
    await page
      .getByRole('status')
      .filter({ hasText: `Limits of ${KEY_NAME} changed` })
      .waitFor()
    const keys = (await (
      await fetch(`${server.apiUrl}/api/v1/keys`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
    ).json()) as { keys: { name: string; rpmLimit: number | null; tpmLimit: number | null }[] }
    const limited = keys.keys.find((k) => k.name === KEY_NAME)
    assert.equal(limited?.rpmLimit, 42)
    assert.equal(limited?.tpmLimit, null)
    await row.locator('td', { hasText: '42' }).first().waitFor()
    await row.getByRole('button', { name: `Revoke ${KEY_NAME}` }).click()
    await row.getByRole('button', { name: 'Confirm revoke' }).click()
    await row.locator('.badge.revoked').waitFor()
    await page
      .getByRole('status')
      .filter({ hasText: `Key ${KEY_NAME} revoked.` })
      .waitFor()
    assert.equal(await row.getByRole('button', { name: `Revoke ${KEY_NAME}` }).count(), 0)
    await assert.rejects(
      openai(newKey).chat.completions.create({
        model: 'echo',
        messages: [{ role: 'user', content: 'again' }],
      }),
      (err: unknown) => err instanceof OpenAI.APIError && err.status === 401,
    )
    await shot(page, 'keys-revoked')
    noBrowserErrors()
  })

  test('at phone width the workers page does not overflow; only its table scrolls sideways', async (t) => {
    if (!signedIn) return t.skip('the console did not load (see the first step)')
    await page.setViewportSize({ width: 390, height: 844 })
    await page.getByRole('link', { name: 'Workers' }).click()
    await page.locator('tr[data-worker="gpu-node-b"] [data-gpu="1"]').waitFor()
    // A string: the tests are compiled without the DOM's types.
    const layout = await page.evaluate<{
      page: number
      viewport: number
      wrapWidth: number
      tableScrolls: boolean
      overflowX: string
    }>(`(() => {
      const wrap = document.querySelector('.table-wrap')
      return {
        page: document.documentElement.scrollWidth,
        viewport: window.innerWidth,
        wrapWidth: wrap.getBoundingClientRect().right,
        tableScrolls: wrap.scrollWidth > wrap.clientWidth,
        overflowX: getComputedStyle(wrap).overflowX,
      }
    })()`)
    assert.ok(
      layout.page <= layout.viewport,
      `page ${layout.page} px wide in a ${layout.viewport} px viewport`,
    )
    assert.ok(layout.wrapWidth <= layout.viewport)
    assert.equal(layout.overflowX, 'auto')
    assert.ok(layout.tableScrolls, 'the wide table scrolls inside its own box')
    await shot(page, 'workers-phone')
    await page.setViewportSize({ width: 1280, height: 900 })
    noBrowserErrors()
  })

  test('a user key with scope read signs in and is offered no key management', async (t) => {
    if (!signedIn) return t.skip('the console did not load (see the first step)')
    const created = await admin(server, 'POST', '/api/v1/keys', {
      name: 'carol read',
      user: 'carol',
      scope: 'read',
    })
    assert.equal(created.status, 201)
    const reader = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    reader.setDefaultTimeout(8_000)
    try {
      const p = await reader.newPage()
      watch(p)
      await p.goto(`${server.apiUrl}/`)
      await p.getByLabel('API key').fill(created.body['key'] as string)
      await p.getByRole('button', { name: 'Sign in' }).click()
      await p.getByRole('heading', { name: 'Workers', level: 1 }).waitFor()
      assert.equal(await p.locator('#who').textContent(), 'carol · read')
      await p.getByText('No worker is connected.').waitFor()
      await p.getByRole('link', { name: 'Keys' }).click()
      await p.locator('tr', { hasText: 'carol read' }).waitFor()
      assert.equal(await p.getByRole('button', { name: 'Create key' }).count(), 0)
      assert.equal(await p.getByRole('button', { name: /^Revoke/ }).count(), 0)
      assert.equal(
        await p.locator('tr', { hasText: KEY_NAME }).count(),
        0,
        "another user's keys are not listed",
      )
      await p.getByText('This key may only look').waitFor()
      await shot(p, 'keys-read-only')
      // Signing out forgets the key: the console asks for one again.
      await p.getByRole('button', { name: 'Sign out' }).click()
      await p.getByLabel('API key').waitFor()
      assert.equal(await p.evaluate('sessionStorage.length'), 0)
    } finally {
      await reader.close()
    }
    noBrowserErrors()
  })
})
