/**
 * `/docs`: the OpenAPI document rendered as one self-contained HTML page (no scripts, no
 * external assets: the fabric may run without internet, and the page's CSP allows neither).
 */

type Json = Record<string, unknown>

const escapeHtml = (s: unknown): string => String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`)

const METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const

/** A schema as a short type expression: `$ref` names, arrays, unions, enums. */
function typeOf(schema: unknown): string {
  if (typeof schema !== 'object' || schema === null) return 'any'
  const s = schema as Json
  if (typeof s['$ref'] === 'string') return (s['$ref'] as string).split('/').pop() ?? 'object'
  if (Array.isArray(s['enum'])) return (s['enum'] as unknown[]).map((v) => JSON.stringify(v)).join(' | ')
  if (Array.isArray(s['anyOf'])) return (s['anyOf'] as unknown[]).map(typeOf).join(' | ')
  if (Array.isArray(s['oneOf'])) return (s['oneOf'] as unknown[]).map(typeOf).join(' | ')
  const type = Array.isArray(s['type']) ? (s['type'] as string[]).join(' | ') : String(s['type'] ?? 'object')
  if (s['type'] === 'array') return `${typeOf(s['items'])}[]`
  return type
}

function propertiesTable(schema: unknown): string {
  const s = (schema ?? {}) as Json
  const props = (s['properties'] ?? {}) as Record<string, Json>
  const required = new Set((s['required'] as string[] | undefined) ?? [])
  const rows = Object.entries(props).map(
    ([name, p]) =>
      `<tr><td><code>${escapeHtml(name)}</code>${required.has(name) ? ' <b>required</b>' : ''}</td><td><code>${escapeHtml(typeOf(p))}</code></td><td>${escapeHtml(p['description'] ?? '')}</td></tr>`,
  )
  return rows.length === 0
    ? ''
    : `<table><tr><th>field</th><th>type</th><th></th></tr>${rows.join('')}</table>`
}

/** Renders the document. */
export function renderDocs(doc: unknown): string {
  const d = doc as Json
  const info = (d['info'] ?? {}) as Json
  const paths = (d['paths'] ?? {}) as Record<string, Record<string, Json>>
  const schemas = (((d['components'] ?? {}) as Json)['schemas'] ?? {}) as Record<string, Json>
  const byTag = new Map<string, string[]>()
  for (const [path, item] of Object.entries(paths)) {
    for (const method of METHODS) {
      const op = item[method]
      if (op === undefined) continue
      const tag = ((op['tags'] as string[] | undefined) ?? ['other'])[0] ?? 'other'
      const params = ((op['parameters'] as Json[] | undefined) ?? []).map(
        (p) =>
          `<tr><td><code>${escapeHtml(p['name'])}</code> (${escapeHtml(p['in'])})${p['required'] === true ? ' <b>required</b>' : ''}</td><td><code>${escapeHtml(typeOf(p['schema']))}</code></td><td>${escapeHtml(p['description'] ?? '')}</td></tr>`,
      )
      const body = ((op['requestBody'] as Json | undefined)?.['content'] as Json | undefined)?.[
        'application/json'
      ] as Json | undefined
      const responses = Object.entries((op['responses'] ?? {}) as Record<string, Json>).map(([status, r]) => {
        const schema = ((r['content'] as Json | undefined)?.['application/json'] as Json | undefined)?.[
          'schema'
        ]
        return `<li><code>${escapeHtml(status)}</code> ${escapeHtml(r['description'] ?? '')}${schema === undefined ? '' : ` — <code>${escapeHtml(typeOf(schema))}</code>`}</li>`
      })
      const html = `<section id="${escapeHtml(`${method}-${path}`)}"><h3><span class="m ${method}">${method.toUpperCase()}</span> <code>${escapeHtml(path)}</code></h3>
<p>${escapeHtml(op['summary'] ?? '')}</p>${op['description'] === undefined ? '' : `<p>${escapeHtml(op['description'])}</p>`}
${params.length === 0 ? '' : `<h4>Parameters</h4><table><tr><th>name</th><th>type</th><th></th></tr>${params.join('')}</table>`}
${body === undefined ? '' : `<h4>Body <code>${escapeHtml(typeOf(body['schema']))}</code></h4>${propertiesTable(body['schema'])}`}
<h4>Responses</h4><ul>${responses.join('')}</ul></section>`
      const list = byTag.get(tag) ?? []
      list.push(html)
      byTag.set(tag, list)
    }
  }
  const sections = [...byTag.entries()]
    .map(([tag, ops]) => `<h2>${escapeHtml(tag)}</h2>${ops.join('\n')}`)
    .join('\n')
  const models = Object.entries(schemas)
    .map(
      ([name, s]) =>
        `<section id="schema-${escapeHtml(name)}"><h3>${escapeHtml(name)}</h3>${s['description'] === undefined ? '' : `<p>${escapeHtml(s['description'])}</p>`}${propertiesTable(s)}</section>`,
    )
    .join('\n')
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(info['title'] ?? 'API')}</title><style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:1rem;color:#1d232a}
code{font:13px ui-monospace,monospace;background:#f1f3f5;padding:0 .25em;border-radius:3px}
section{border-top:1px solid #dde1e5;padding:.25rem 0}table{border-collapse:collapse;display:block;overflow-x:auto}
td,th{border:1px solid #dde1e5;padding:.2rem .5rem;text-align:left;vertical-align:top}
.m{font:bold 12px ui-monospace,monospace;padding:.1rem .4rem;border-radius:3px;color:#fff;background:#495057}
.get{background:#1971c2}.post{background:#2f9e44}.delete{background:#c92a2a}.patch,.put{background:#e8590c}
</style></head><body><h1>${escapeHtml(info['title'] ?? 'API')} <small>${escapeHtml(info['version'] ?? '')}</small></h1>
<p>${escapeHtml(info['description'] ?? '')}</p><p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI ${escapeHtml(d['openapi'] ?? '')}).</p>
${sections}<h2>Schemas</h2>${models}</body></html>`
}
