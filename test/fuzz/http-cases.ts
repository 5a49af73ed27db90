import type { Rng } from './rng.js'

/**
 * Malformed HTTP/1.1 requests for the public and management ports: a plausible request from
 * a template, then one to three mutations of its request line, target, headers, credential,
 * body or framing, or plain garbage. The generator knows which requests are still complete
 * as sent (the server must answer or close those) and which present a wrong credential.
 */

export type HttpPort = 'public' | 'api'

/** One malformed request, as the bytes to write. */
export interface HttpCase {
  readonly port: HttpPort
  /** What was done to it, for the statistics (`template+mutation+...`). */
  readonly kind: string
  /** The bytes, in the pieces they are written in. */
  readonly chunks: readonly Buffer[]
  /** Complete as sent: the server must answer it or close the connection. */
  readonly mustAnswer: boolean
  /** Presents a wrong credential (sent from an address of its own, which gets throttled). */
  readonly badCredential: boolean
}

interface Draft {
  method: string
  /** The request target as characters; sent as their UTF-8 bytes unless `rawTarget` is set. */
  target: string
  rawTarget?: Buffer
  version: string
  headers: [string, string][]
  body: Buffer
  /** How the body is delimited when serialised; `custom` leaves it to the headers as they are. */
  framing: 'length' | 'chunked' | 'custom'
  eol: string
  /** Written after the request (pipelined bytes). */
  trailer: Buffer
  mustAnswer: boolean
  badCredential: boolean
  kind: string[]
}

const WORDS = ['hello', 'world', 'fuzz', 'ünïcödé', '😀', '"quoted"', '\\', '\u0000', 'a'.repeat(50)]

function sentence(rng: Rng): string {
  return Array.from({ length: rng.range(0, 6) }, () => rng.pick(WORDS)).join(' ')
}

/** Bodies of the inference routes, valid before mutation. */
function inferenceBody(rng: Rng, path: string): Record<string, unknown> {
  const model = rng.chance(0.9) ? 'echo' : rng.pick(['other', 'echo:latest', 'ECHO'])
  const messages = [{ role: 'user', content: sentence(rng) }]
  const stream = rng.chance(0.3)
  switch (path) {
    case '/v1/completions':
    case '/api/generate':
      return { model, prompt: sentence(rng), stream, max_tokens: rng.range(1, 50) }
    case '/v1/embeddings':
    case '/api/embed':
    case '/api/embeddings':
      return { model, input: rng.chance(0.5) ? sentence(rng) : [sentence(rng), sentence(rng)] }
    default:
      return { model, messages, stream, temperature: rng.next() * 2 }
  }
}

const INFERENCE_PATHS = [
  '/v1/chat/completions',
  '/v1/chat/completions',
  '/v1/completions',
  '/v1/embeddings',
  '/api/chat',
  '/api/generate',
  '/api/embed',
  '/api/embeddings',
]
const PUBLIC_GETS = ['/', '/health', '/healthz', '/v1/models', '/v1/models/echo', '/api/tags', '/api/version']
const API_GETS = [
  '/health',
  '/api/v1/health',
  '/api/v1/workers',
  '/api/v1/workers/echo-worker',
  '/api/v1/workers/nobody',
  '/api/v1/models',
  '/api/v1/stats',
  '/api/v1/keys',
  '/api/v1/keys/abc',
  '/api/v1/users',
  '/api/v1/requests',
  '/api/v1/requests?limit=5',
  '/api/v1/requests?limit=-1&since=yesterday',
  '/api/v1/requests?since=2024-01-01T00:00:00Z&keyId=x',
]
const API_WRITES: [string, string][] = [
  ['POST', '/api/v1/keys'],
  ['POST', '/api/v1/users'],
  ['POST', '/api/v1/keys/abc/revoke'],
  ['POST', '/api/v1/keys/abc/rotate'],
  ['DELETE', '/api/v1/keys/abc'],
  ['PUT', '/api/v1/keys/abc'],
]

function apiBody(rng: Rng): Record<string, unknown> {
  const fields: Record<string, unknown> = {}
  const names = [
    'name',
    'user',
    'kind',
    'access',
    'accessLevel',
    'workers',
    'worker_ids',
    'models',
    'rpm',
    'tpm',
  ]
  const values = [
    'x',
    '',
    'api',
    'worker',
    'shared',
    'dedicated',
    ['echo'],
    [1, 2],
    5,
    -1,
    1.5,
    null,
    { a: 1 },
    'x'.repeat(300),
    '2024-01-01',
    'not a date',
  ]
  for (let i = rng.range(0, 5); i > 0; i--) {
    fields[rng.chance(0.9) ? rng.pick([...names, 'expiresAt', 'expires_in_days']) : `unknown_${i}`] =
      rng.pick(values)
  }
  return fields
}

function template(rng: Rng, port: HttpPort, apiKey: string): Draft {
  const draft: Draft = {
    method: 'GET',
    target: '/',
    version: 'HTTP/1.1',
    headers: [['host', '127.0.0.1']],
    body: Buffer.alloc(0),
    framing: 'length',
    eol: '\r\n',
    trailer: Buffer.alloc(0),
    mustAnswer: true,
    badCredential: false,
    kind: [],
  }
  if (rng.chance(0.95)) {
    draft.headers.push(rng.chance(0.8) ? ['authorization', `Bearer ${apiKey}`] : ['x-api-key', apiKey])
  }
  if (port === 'public') {
    if (rng.chance(0.75)) {
      const path = rng.pick(INFERENCE_PATHS)
      draft.method = 'POST'
      draft.target = path
      draft.body = Buffer.from(JSON.stringify(inferenceBody(rng, path)))
      draft.headers.push(['content-type', 'application/json'])
      draft.kind.push('infer')
    } else {
      draft.target = rng.pick(PUBLIC_GETS)
      draft.kind.push('get')
    }
  } else if (rng.chance(0.5)) {
    draft.target = rng.pick(API_GETS)
    draft.kind.push('get')
  } else {
    const [method, path] = rng.pick(API_WRITES)
    draft.method = method
    draft.target = path
    draft.body = Buffer.from(JSON.stringify(apiBody(rng)))
    draft.headers.push(['content-type', 'application/json'])
    draft.kind.push('write')
  }
  if (rng.chance(0.2)) draft.headers.push(['connection', rng.pick(['close', 'keep-alive'])])
  return draft
}

// ---------------------------------------------------------------------------------------------
// Mutations

const BAD_ESCAPES = [
  '%',
  '%%',
  '%E0%A4%A',
  '%E0%A4',
  '%C0%AF',
  '%ED%A0%80',
  '%F4%90%80%80',
  '%FF',
  '%80',
  '%00',
  '%2F',
  '%2e%2e',
  '%G1',
  '%1',
  '%u0041',
]
const METHODS = [
  'GET',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
  'HEAD',
  'TRACE',
  'CONNECT',
  'PRI',
  'post',
  'QUERY',
]
const VERSIONS = [
  'HTTP/1.0',
  'HTTP/1.2',
  'HTTP/2.0',
  'HTTP/0.9',
  'HTTP/1',
  'HTTP/',
  'http/1.1',
  'HTTP/1.1 extra',
  '',
  'HTTP/11.1',
  'ICE/1.0',
  'HTTP/1.1\u0000',
]

function insertAt(text: string, at: number, piece: string): string {
  return text.slice(0, at) + piece + text.slice(at)
}

function mutateRequestLine(rng: Rng, d: Draft): void {
  switch (rng.int(6)) {
    case 0:
      d.method = rng.pick(METHODS)
      break
    case 1:
      d.method = rng.pick(['', 'G T', 'GET\t', 'G\u0000T', 'X'.repeat(rng.range(20, 5000)), '\u00ffGET'])
      break
    case 2:
      d.version = rng.pick(VERSIONS)
      break
    case 3:
      d.eol = rng.pick(['\n', '\r', '\r\r\n', '\n\r'])
      d.mustAnswer = false // a parser may wait for a line end it recognises
      break
    case 4:
      // Extra separators: double spaces, tabs, leading empty lines.
      d.method = rng.pick([`${d.method} `, `\r\n${d.method}`, `\r\n\r\n${d.method}`, `${d.method}\t`])
      break
    default:
      d.version = `${d.version}${rng.pick([' ', '  ', '\t', ' x'])}`
  }
}

function mutateTarget(rng: Rng, d: Draft): void {
  switch (rng.int(9)) {
    case 0:
    case 1: {
      const at = rng.int(d.target.length + 1)
      d.target = insertAt(d.target, at, rng.pick(BAD_ESCAPES))
      break
    }
    case 2:
      d.target = `${d.target}${d.target.includes('?') ? '&' : '?'}${rng.pick(['%', 'a=%E0%A4%A', 'x=%zz', '%%=%', 'q=%ED%A0%80', '&&&=', 'a=1&a=2'])}`
      break
    case 3:
      d.target = rng.pick([
        '*',
        '',
        'http://127.0.0.1/v1/models',
        '127.0.0.1:80',
        '//',
        '///%',
        '/../..',
        '#frag',
      ])
      break
    case 4:
      d.target = `${d.target}/${'a'.repeat(rng.pick([1_000, 10_000, 70_000]))}`
      break
    case 5:
      // Raw bytes in the target: invalid UTF-8, controls, a lone surrogate encoded.
      d.rawTarget = Buffer.concat([
        Buffer.from(d.target),
        rng.pick([
          Buffer.from([0xff, 0xfe]),
          Buffer.from([0xed, 0xa0, 0x80]),
          Buffer.from([0x7f]),
          rng.bytes(4),
        ]),
      ])
      break
    case 6:
      d.target = `/v1/models/${rng.pick(BAD_ESCAPES)}${rng.pick(['', 'echo', '\u00e9', '\ud800'])}`
      break
    case 7:
      d.target = `/api/v1/${rng.pick(['workers', 'keys', 'requests'])}/${rng.pick(BAD_ESCAPES)}`
      break
    default:
      d.target = insertAt(d.target, rng.int(d.target.length + 1), rng.pick([' ', '  /x', '\t']))
  }
}

function mutateHeaders(rng: Rng, d: Draft): void {
  switch (rng.int(12)) {
    case 0:
      d.headers = d.headers.filter(([n]) => n !== 'host')
      break
    case 1:
      d.headers.push(['host', rng.pick(['other', '', 'a b', '127.0.0.1:99999'])])
      break
    case 2:
      d.headers.push([rng.pick(['bad header', 'x\u0000y', '(', '', 'x:y', 'é']), 'value'])
      break
    case 3:
      // A line without a colon, and obsolete line folding.
      d.headers.push([rng.pick(['no colon here', ' folded continuation', '\tfolded']), ''])
      break
    case 4:
      d.headers.push([
        'x-bad-value',
        rng.pick(['a\u0000b', 'a\rb', 'a\nb', '\u007f', '\u00ff\u00fe', ' '.repeat(100)]),
      ])
      break
    case 5: {
      const size = rng.pick([4_000, 16_000, 17_000, 40_000])
      d.headers.push(['x-big', 'v'.repeat(size)])
      if (size > 16_000) d.kind.push('oversized')
      break
    }
    case 6: {
      const count = rng.pick([100, 1_000, 2_500])
      for (let i = 0; i < count; i++) d.headers.push([`x-h${i}`, 'v'])
      break
    }
    case 7:
      d.headers.push([
        'content-type',
        rng.pick(['text/plain', 'application/json; charset=latin1', '', '\u00ff', 'x'.repeat(500)]),
      ])
      break
    case 8:
      d.headers.push(['expect', rng.pick(['100-continue', '200-ok', ''])])
      break
    case 9:
      d.headers.push(['connection', rng.pick(['upgrade', 'close, te', 'keep-alive, keep-alive'])])
      d.headers.push(['upgrade', rng.pick(['websocket', 'h2c', 'x'])])
      break
    case 10:
      d.headers.push(['keep-alive', rng.pick(['timeout=abc', 'max=-1', ''])])
      break
    default: {
      // Shuffle: duplicated and reordered headers.
      const copy = d.headers[rng.int(d.headers.length)]
      if (copy !== undefined) d.headers.splice(rng.int(d.headers.length + 1), 0, [copy[0], copy[1]])
    }
  }
}

function mutateCredential(rng: Rng, d: Draft): void {
  const withoutAuth = d.headers.filter(([n]) => n !== 'authorization' && n !== 'x-api-key')
  const bad = rng.pick<[string, string][]>([
    [['authorization', 'Bearer wrong-key']],
    [['authorization', 'Bearer ']],
    [['authorization', 'bearer']],
    [['authorization', 'Basic dXNlcjpwYXNz']],
    [['authorization', `Bearer ${'k'.repeat(rng.pick([100, 10_000]))}`]],
    [['authorization', 'Bearer \u00ff\u0000key']],
    [['x-api-key', '']],
    [
      ['x-api-key', 'wrong'],
      ['x-api-key', 'wrong-too'],
    ],
    [
      ['authorization', 'Bearer wrong'],
      ['authorization', 'Bearer wrong-again'],
    ],
    [],
  ])
  d.headers = [...withoutAuth, ...bad]
  d.badCredential = true
}

/** Things a parser of JSON may not expect. */
const JSON_BODIES = [
  '',
  'null',
  '[]',
  '"str"',
  '0',
  '{',
  '}',
  '{"model":}',
  '{"model":"echo"',
  '{"model":"echo","model":1}',
  '{"model":"echo","messages":"hi"}',
  '{"model":"echo","messages":[1,null,{}]}',
  '{"model":"echo","messages":[{"role":5,"content":{"a":[]}}]}',
  '{"model":"echo","messages":[{"role":"user","content":[{"type":"text","text":5}]}]}',
  '{"model":"echo","prompt":{"x":1},"input":[[1]]}',
  '{"__proto__":{"model":"echo"}}',
  '{"constructor":{"prototype":{"model":"echo"}}}',
  '{"model":"echo","stream":"yes","max_tokens":-5,"temperature":1e999}',
  '\ufeff{"model":"echo","messages":[]}',
  '{"model":"\\ud800","messages":[]}',
  '{"model":"echo\\u0000","messages":[]}',
  '{"model":"echo","messages":[{"role":"user","content":"\\uDEAD"}]}',
  `{"name":"${'n'.repeat(200)}"}`,
  `{"model":"${'m'.repeat(70_000)}"}`,
]

function mutateBody(rng: Rng, d: Draft): void {
  const text = d.body.toString('utf8')
  switch (rng.int(10)) {
    case 0:
      d.body = d.body.subarray(0, rng.int(d.body.length + 1))
      break
    case 1:
      d.body = Buffer.from(rng.pick(JSON_BODIES))
      break
    case 8:
    case 9:
      // Valid JSON that is not an object: handlers that expect one must still answer 4xx.
      d.body = Buffer.from(rng.pick(['null', '[]', '[{}]', '"text"', '0', '-1.5e3', 'true', '{}']))
      break
    case 2: {
      const depth = rng.pick([100, 5_000, 100_000])
      const nested = `${'['.repeat(depth)}${']'.repeat(rng.chance(0.5) ? depth : depth - 1)}`
      d.body = Buffer.from(rng.chance(0.5) ? nested : `{"model":"echo","messages":${nested}}`)
      break
    }
    case 3:
      d.body = Buffer.from(
        text.replace(
          /"model":"[^"]*"/,
          `"model":${rng.pick(['123', 'null', '[]', '{}', '""', '"../../etc/passwd"', '"ech\\u0000o"', '"\\ud800"', 'true'])}`,
        ),
      )
      break
    case 4: {
      // Bytes that are not UTF-8 inside the JSON.
      const bytes = Buffer.from(d.body)
      if (bytes.length > 0) bytes[rng.int(bytes.length)] = rng.pick([0xff, 0xc0, 0xed, 0x80, 0x00])
      d.body = bytes
      break
    }
    case 5:
      d.body = rng.bytes(rng.size(2048))
      break
    case 6:
      d.body = Buffer.from(
        text.replace(
          /"messages":\[/,
          `"messages":[${'{"role":"user","content":"x"},'.repeat(rng.range(1, 2000))}`,
        ),
      )
      break
    default:
      d.body = Buffer.from(`${text}${rng.pick([',', '}', ' garbage', '\u0000', '{"model":"echo"}'])}`)
  }
  if (d.method === 'GET' && rng.chance(0.5)) d.method = 'POST'
}

/** Content-Length and Transfer-Encoding mischief; most leave the request unfinished. */
function mutateFraming(rng: Rng, d: Draft): void {
  const length = d.body.length
  switch (rng.int(10)) {
    case 0:
      d.framing = 'custom'
      d.headers.push(['content-length', String(length + rng.range(1, 1000))])
      d.mustAnswer = false // the server waits for the rest of the body
      break
    case 1: {
      // Shorter than the body: the rest is read as the next (garbage) request.
      d.framing = 'custom'
      const declared = rng.int(length + 1)
      d.headers.push(['content-length', String(declared)])
      break
    }
    case 2:
      d.framing = 'custom'
      d.headers.push([
        'content-length',
        rng.pick([
          '-1',
          'abc',
          '1.5',
          '+5',
          '0x10',
          '99999999999999999999',
          `${length}, ${length}`,
          `${length},1`,
          ` ${length}`,
          '',
        ]),
      ])
      d.mustAnswer = false
      break
    case 3:
      d.framing = 'custom'
      d.headers.push(['content-length', String(length)], ['content-length', String(length + 1)])
      d.mustAnswer = false
      break
    case 4:
      d.framing = 'custom'
      d.headers.push(['content-length', String(length)], ['transfer-encoding', 'chunked'])
      d.mustAnswer = false
      break
    case 5:
      d.framing = 'chunked'
      break
    case 6: {
      // Chunked with broken chunk lines.
      d.framing = 'custom'
      d.headers.push(['transfer-encoding', 'chunked'])
      const size = rng.pick([
        'zz',
        '-1',
        'ffffffffffffffffffff',
        `${length.toString(16)};${'e'.repeat(rng.pick([5, 20_000]))}`,
        ' 1',
        '1 1',
        '',
      ])
      d.body = Buffer.concat([
        Buffer.from(`${size}\r\n`),
        d.body,
        Buffer.from(rng.pick(['\r\n0\r\n\r\n', '\n0\n\n', '', '\r\n'])),
      ])
      d.mustAnswer = false
      break
    }
    case 7: {
      d.framing = 'custom'
      d.headers.push(['transfer-encoding', 'chunked'])
      // The declared chunk size is off, or the last chunk or its trailers are wrong.
      const declared = Math.max(0, length + rng.range(-5, 5)).toString(16)
      const end = rng.pick([
        '0\r\n\r\n',
        '0\r\nx-trailer: 1\r\n\r\n',
        '0\r\nbad trailer\r\n\r\n',
        '0\r\n',
        '1\r\n',
      ])
      d.body = Buffer.concat([Buffer.from(`${declared}\r\n`), d.body, Buffer.from(`\r\n${end}`)])
      d.mustAnswer = false
      break
    }
    case 8:
      d.framing = 'custom'
      d.headers.push([
        'transfer-encoding',
        rng.pick(['gzip', 'chunked, chunked', 'Chunked', 'identity', 'chunked, gzip', 'x']),
      ])
      d.mustAnswer = false
      break
    default:
      // A body larger than the gateway takes, announced but never sent.
      d.framing = 'custom'
      d.headers.push(['content-length', String(rng.pick([17 * 1024 * 1024, 65 * 1024, 2 ** 40]))])
      d.mustAnswer = false
  }
}

function mutateGarbage(rng: Rng, d: Draft): 'replace' | undefined {
  switch (rng.int(3)) {
    case 0:
      d.trailer = Buffer.concat([d.trailer, rng.bytes(rng.size(1024))])
      return undefined
    case 1:
      d.trailer = Buffer.concat([
        d.trailer,
        Buffer.from(`GET /${rng.pick(BAD_ESCAPES)} HTTP/1.1\r\nhost: x\r\n\r\n`),
      ])
      return undefined
    default:
      return 'replace'
  }
}

function serialise(d: Draft): Buffer {
  const headers = d.headers.slice()
  let body = d.body
  if (d.framing === 'length' && (body.length > 0 || d.method !== 'GET')) {
    headers.push(['content-length', String(body.length)])
  } else if (d.framing === 'chunked') {
    headers.push(['transfer-encoding', 'chunked'])
    const pieces: Buffer[] = []
    for (let at = 0; at < body.length; at += 1000) {
      const piece = body.subarray(at, at + 1000)
      pieces.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'))
    }
    pieces.push(Buffer.from('0\r\n\r\n'))
    body = Buffer.concat(pieces)
  }
  const target = d.rawTarget ?? Buffer.from(d.target, 'utf8')
  const lines = headers.map(([n, v]) => (v === '' && n.includes(' ') ? n : `${n}: ${v}`))
  return Buffer.concat([
    Buffer.from(`${d.method} `, 'latin1'),
    target,
    Buffer.from(` ${d.version}${d.eol}${lines.map((l) => `${l}${d.eol}`).join('')}${d.eol}`, 'latin1'),
    body,
    d.trailer,
  ])
}

/** Splits the bytes into the pieces they are written in: usually one, sometimes many. */
function pieces(rng: Rng, bytes: Buffer): Buffer[] {
  const count = rng.weighted<number>([
    [6, 1],
    [3, rng.range(2, 4)],
    [1, rng.range(5, 40)],
  ])
  if (count === 1 || bytes.length < 2) return [bytes]
  const cuts = [...new Set(Array.from({ length: count - 1 }, () => rng.range(1, bytes.length - 1)))].sort(
    (a, b) => a - b,
  )
  const out: Buffer[] = []
  let from = 0
  for (const c of cuts) {
    out.push(bytes.subarray(from, c))
    from = c
  }
  out.push(bytes.subarray(from))
  return out
}

/** Generates malformed request `rng` for `port`. */
export function httpCase(rng: Rng, port: HttpPort, apiKey: string): HttpCase {
  // Now and then no HTTP at all: random bytes, or printable noise with line breaks.
  if (rng.chance(0.05)) {
    const bytes = rng.chance(0.5)
      ? rng.bytes(rng.range(1, 4096))
      : Buffer.from(
          Array.from({ length: rng.range(1, 400) }, () =>
            rng.pick([...'GET POST / HTTP/1.1 : \r\n%?&=abc']),
          ).join(''),
          'latin1',
        )
    return { port, kind: 'noise', chunks: pieces(rng, bytes), mustAnswer: false, badCredential: false }
  }
  const d = template(rng, port, apiKey)
  const mutations = rng.weighted<number>([
    [6, 1],
    [3, 2],
    [1, 3],
  ])
  const chosen = Array.from({ length: mutations }, () =>
    rng.weighted<string>([
      [3, 'line'],
      [4, 'target'],
      [4, 'headers'],
      [2, 'credential'],
      [5, 'body'],
      [3, 'framing'],
      [2, 'garbage'],
      [1, 'truncate'],
      [1, 'none'],
    ]),
  )
  // Framing last: its Content-Length and chunk sizes are computed from the body as mutated.
  chosen.sort((a, b) => Number(a === 'framing') - Number(b === 'framing'))
  let replace = false
  let truncate = false
  for (const what of chosen) {
    d.kind.push(what)
    if (what === 'line') mutateRequestLine(rng, d)
    else if (what === 'target') mutateTarget(rng, d)
    else if (what === 'headers') mutateHeaders(rng, d)
    else if (what === 'credential') mutateCredential(rng, d)
    else if (what === 'body') mutateBody(rng, d)
    else if (what === 'framing' && d.framing === 'length') mutateFraming(rng, d)
    else if (what === 'garbage') replace = mutateGarbage(rng, d) === 'replace' || replace
    else if (what === 'truncate') truncate = true
  }
  let bytes = serialise(d)
  let mustAnswer = d.mustAnswer
  if (replace) {
    // Random bytes flipped or overwritten somewhere in an otherwise plausible request.
    bytes = Buffer.from(bytes)
    for (let n = rng.range(1, 8); n > 0; n--) bytes[rng.int(bytes.length)] = rng.int(256)
    mustAnswer = false
  }
  if (truncate) {
    bytes = bytes.subarray(0, rng.int(bytes.length))
    mustAnswer = false
  }
  return {
    port,
    kind: d.kind.join('+'),
    chunks: pieces(rng, bytes),
    mustAnswer,
    badCredential: d.badCredential,
  }
}
