/**
 * The console's static files: a page path falls back to index.html, a request path can never
 * reach a file outside the folder (dot-dot segments, escapes, backslashes, links), the headers
 * carry the CSP, and a missing build says so.
 */
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { assetKey, CONSOLE_DIR, consoleAssets } from '../../src/server/api/console.js'

let root: string
let dir: string

before(() => {
  root = mkdtempSync(join(tmpdir(), 'gpuf-console-'))
  dir = join(root, 'console')
  mkdirSync(join(dir, 'pages'), { recursive: true })
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>console</title>')
  writeFileSync(join(dir, 'main.js'), 'export {}')
  writeFileSync(join(dir, 'main.js.map'), '{}')
  writeFileSync(join(dir, 'app.css'), 'body{}')
  writeFileSync(join(dir, 'favicon.svg'), '<svg/>')
  writeFileSync(join(dir, 'data.bin'), 'x')
  writeFileSync(join(dir, 'pages', 'keys.js'), 'export const keys = 1')
  writeFileSync(join(dir, '.tsbuildinfo'), 'hidden')
  writeFileSync(join(root, 'secret.txt'), 'outside')
  symlinkSync(join(root, 'secret.txt'), join(dir, 'linked.txt'))
  symlinkSync(root, join(dir, 'up'))
})

after(() => rmSync(root, { recursive: true, force: true }))

const text = (a: { body: Buffer } | undefined) => a?.body.toString()

describe('consoleAssets', () => {
  test('the root and page paths without an extension answer index.html', () => {
    const assets = consoleAssets(dir)
    for (const path of ['/', '', '/keys', '/workers/gpu-1', '/workers/gpu-1/', '/?x=1', '/usage#top']) {
      const a = assets.get(path)
      assert.equal(a?.status, 200, path)
      assert.equal(a?.headers['content-type'], 'text/html; charset=utf-8', path)
      assert.equal(text(a), '<!doctype html><title>console</title>', path)
    }
  })

  test('files answer with their content type; a missing file with an extension is not ours', () => {
    const assets = consoleAssets(dir)
    const types: [string, string][] = [
      ['/main.js', 'text/javascript; charset=utf-8'],
      ['/app.css', 'text/css; charset=utf-8'],
      ['/favicon.svg', 'image/svg+xml'],
      ['/main.js.map', 'application/json'],
      ['/pages/keys.js', 'text/javascript; charset=utf-8'],
      ['/data.bin', 'application/octet-stream'],
      ['/index.html', 'text/html; charset=utf-8'],
    ]
    for (const [path, type] of types) assert.equal(assets.get(path)?.headers['content-type'], type, path)
    assert.equal(text(assets.get('/pages/keys.js')), 'export const keys = 1')
    assert.equal(text(assets.get('/%6Dain.js')), 'export {}', 'percent-escapes are decoded')
    assert.equal(assets.get('/missing.js'), undefined)
    assert.equal(assets.get('/pages/missing.css'), undefined)
  })

  test('no path reaches outside the folder, a dot-file or a symbolic link', () => {
    const assets = consoleAssets(dir)
    const attacks = [
      '/../secret.txt',
      '/pages/../../secret.txt',
      '/%2e%2e/secret.txt',
      '/%2E%2E%2Fsecret.txt',
      '/..%2fsecret.txt',
      '/..%5csecret.txt',
      '/..\\secret.txt',
      '\\..\\secret.txt',
      '/pages/%2e%2e/%2e%2e/secret.txt',
      '//../secret.txt',
      '/linked.txt',
      '/up/secret.txt',
      '/up/console/index.html',
      '/.tsbuildinfo',
      '/%2etsbuildinfo',
      '/main.js%00.html',
      '/%zz.js',
    ]
    for (const path of attacks) {
      const a = assets.get(path)
      assert.ok(a === undefined || text(a) !== 'outside', `${path} must not answer the outside file`)
      assert.ok(a === undefined || text(a) !== 'hidden', `${path} must not answer a dot-file`)
      assert.equal(a, undefined, path)
    }
    // A link is never followed, even where a page path would fall back to index.html.
    assert.equal(text(assets.get('/up')), '<!doctype html><title>console</title>')
  })

  test('every answer carries the strict CSP, nosniff and no-cache', () => {
    const a = consoleAssets(dir).get('/')!
    const csp = a.headers['content-security-policy'] ?? ''
    assert.match(csp, /default-src 'none'/)
    assert.match(csp, /script-src 'self'(;|$)/)
    assert.match(csp, /style-src 'self'(;|$)/)
    assert.match(csp, /connect-src 'self'/)
    assert.match(csp, /frame-ancestors 'none'/)
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/)
    assert.equal(a.headers['x-content-type-options'], 'nosniff')
    assert.equal(a.headers['cache-control'], 'no-cache')
  })

  test('a console that was not built answers 404 saying so, and is found once built', () => {
    const later = join(root, 'later')
    const assets = consoleAssets(later)
    for (const path of ['/', '/keys', '/main.js']) {
      const a = assets.get(path)
      assert.equal(a?.status, 404, path)
      assert.match(text(a) ?? '', /console was not built.*npm run build/)
      assert.equal(a?.headers['content-type'], 'text/plain; charset=utf-8')
    }
    mkdirSync(later)
    writeFileSync(join(later, 'index.html'), 'built now')
    assert.equal(text(assets.get('/')), 'built now')
  })

  test('files are read once: a change on disk after the first answer is not seen', () => {
    const copy = join(root, 'cached')
    mkdirSync(copy)
    writeFileSync(join(copy, 'index.html'), 'first')
    const assets = consoleAssets(copy)
    assert.equal(text(assets.get('/')), 'first')
    writeFileSync(join(copy, 'index.html'), 'second')
    writeFileSync(join(copy, 'new.js'), 'x')
    assert.equal(text(assets.get('/')), 'first')
    assert.equal(assets.get('/new.js'), undefined)
  })

  test('a folder above the size limit is refused', () => {
    assert.throws(() => consoleAssets(dir, { maxTotalBytes: 10 }).get('/'), /more than 10 bytes/)
    assert.throws(() => consoleAssets(dir, { maxFiles: 2 }).get('/'), /more than 2 files/)
  })

  test('the default folder is the built console beside the compiled sources', () => {
    assert.match(CONSOLE_DIR, /[/\\]console[/\\]$/)
    assert.doesNotMatch(CONSOLE_DIR, /[/\\]src[/\\]/)
  })
})

test('assetKey: plain relative keys only', () => {
  assert.equal(assetKey('/'), '')
  assert.equal(assetKey('/a/./b.js'), 'a/b.js')
  assert.equal(assetKey('//a//b.js'), 'a/b.js')
  assert.equal(assetKey('/a/../b.js'), undefined)
  assert.equal(assetKey('/a%2Fb.js'), 'a/b.js')
  assert.equal(assetKey('/a\\b.js'), undefined)
  assert.equal(assetKey('/%'), undefined)
})
