/**
 * API keys and worker tokens: list, create, revoke, rotate. A new or rotated key is shown
 * once, in a marked box with a copy button; the server keeps only its hash. Creating,
 * revoking and rotating are offered to the admin and to keys with scope manage only.
 */
import { api, canManage, failureText } from '../client.js'
import { field, h, notice, replace, table } from '../dom.js'
import { dateTime } from '../format.js'
import type { PageContext } from '../page.js'
import type { ApiKey, KeyScope, NewKey } from '../types.js'

export function keysPage(ctx: PageContext): void {
  const manage = canManage(ctx.me)
  const secret = h('div', { class: 'secret-slot' })
  const status = h('div', { class: 'status-slot' })
  const list = h('div', { class: 'region' }, 'Loading…')

  const refresh = async () => {
    try {
      const { keys } = await api<{ keys: ApiKey[] }>('/api/v1/keys', { signal: ctx.signal })
      keys.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0))
      replace(list, keysTable(keys, manage, act))
    } catch (err) {
      const text = failureText(err)
      if (text !== undefined) replace(list, notice('error', text))
    }
  }

  const showSecret = (created: NewKey, what: string) => {
    replace(
      secret,
      secretBox(created, what, () => replace(secret)),
    )
    secret.querySelector<HTMLElement>('h2')?.focus()
  }

  async function act(key: ApiKey, action: 'revoke' | 'rotate' | Limits): Promise<void> {
    replace(status)
    try {
      if (typeof action === 'object') {
        await api(`/api/v1/keys/${encodeURIComponent(key.id)}`, {
          method: 'PATCH',
          body: action,
          signal: ctx.signal,
        })
        replace(status, notice('info', `Limits of ${label(key)} changed; every server applies them at once.`))
      } else if (action === 'revoke') {
        await api(`/api/v1/keys/${encodeURIComponent(key.id)}/revoke`, { method: 'POST', signal: ctx.signal })
        replace(status, notice('info', `Key ${label(key)} revoked.`))
      } else {
        const rotated = await api<NewKey>(`/api/v1/keys/${encodeURIComponent(key.id)}/rotate`, {
          method: 'POST',
          signal: ctx.signal,
        })
        showSecret(rotated, `Key ${label(key)} rotated: the old key no longer works.`)
      }
    } catch (err) {
      const text = failureText(err)
      if (text !== undefined) replace(status, notice('error', text))
    }
    await refresh()
  }

  replace(
    ctx.view,
    h('div', { class: 'page-head' }, h('h1', { tabindex: -1 }, 'Keys')),
    manage
      ? createForm(ctx, async (created) => {
          showSecret(created, `Key ${label(created)} created.`)
          await refresh()
        })
      : notice('info', 'This key may only look: creating, revoking and rotating keys take scope manage.'),
    secret,
    status,
    h('h2', null, 'All keys'),
    list,
  )
  void refresh()
}

function label(key: Pick<ApiKey, 'name' | 'prefix'>): string {
  return key.name === null || key.name === '' ? key.prefix : key.name
}

function createForm(ctx: PageContext, created: (key: NewKey) => Promise<void>): HTMLElement {
  const admin = ctx.me.role === 'admin'
  const name = h('input', { type: 'text', name: 'name', maxlength: 256, autocomplete: 'off' })
  const kind = h(
    'select',
    { name: 'kind' },
    h('option', { value: 'api' }, 'API key (users call models)'),
    h('option', { value: 'worker' }, 'Worker token (workers log in)'),
  )
  const user = h('input', { type: 'text', name: 'user', maxlength: 256, autocomplete: 'off' })
  const scope = h(
    'select',
    { name: 'scope' },
    h('option', { value: 'inference' }, 'inference: models only'),
    h('option', { value: 'read' }, 'read: also sees its workers, keys, usage'),
    h('option', { value: 'manage' }, 'manage: also creates and revokes its keys'),
  )
  const rpm = h('input', { type: 'number', name: 'rpm', min: 1, step: 1, inputmode: 'numeric' })
  const tpm = h('input', { type: 'number', name: 'tpm', min: 1, step: 1, inputmode: 'numeric' })
  const models = h('input', { type: 'text', name: 'models', autocomplete: 'off' })
  const expires = h('input', {
    type: 'number',
    name: 'expires',
    min: 1,
    max: 36500,
    step: 1,
    inputmode: 'numeric',
  })
  const status = h('div', { class: 'status-slot' })
  const submit = h('button', { type: 'submit' }, 'Create key')
  const form = h(
    'form',
    { class: 'card form-grid', 'aria-labelledby': 'create-key-title' },
    h('h2', { id: 'create-key-title' }, 'Create a key'),
    field('Name', name, 'What it is for, e.g. "alice laptop".'),
    field('Kind', kind),
    admin ? field('User', user, 'Owner (name); created if missing. Empty: the default user.') : undefined,
    field('Scope', scope, 'What the key may do on this management API.'),
    field('Requests per minute', rpm, 'Empty: no limit.'),
    field('Tokens per minute', tpm, 'Empty: no limit.'),
    field('Models', models, 'Comma-separated; empty: every model.'),
    field('Expires in days', expires, 'Empty: never.'),
    h('div', { class: 'actions' }, submit),
    status,
  )
  const positive = (input: HTMLInputElement) => {
    const v = input.value.trim()
    return v === '' ? undefined : Number(v)
  }
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const body: Record<string, unknown> = { kind: kind.value, scope: scope.value as KeyScope }
    if (name.value.trim() !== '') body['name'] = name.value.trim()
    if (admin && user.value.trim() !== '') body['user'] = user.value.trim()
    const limits: [string, HTMLInputElement][] = [
      ['rpm_limit', rpm],
      ['tpm_limit', tpm],
      ['expires_in_days', expires],
    ]
    for (const [key, input] of limits) {
      const v = positive(input)
      if (v === undefined) continue
      if (!Number.isInteger(v) || v < 1) {
        replace(
          status,
          notice('error', `${input.labels?.[0]?.textContent ?? key}: a whole number of at least 1.`),
        )
        input.focus()
        return
      }
      body[key] = v
    }
    const modelList = models.value
      .split(',')
      .map((m) => m.trim())
      .filter((m) => m !== '')
    if (modelList.length > 0) body['models'] = modelList
    submit.disabled = true
    replace(status)
    api<NewKey>('/api/v1/keys', { method: 'POST', body, signal: ctx.signal })
      .then(async (key) => {
        form.reset()
        await created(key)
      })
      .catch((err: unknown) => {
        const text = failureText(err)
        if (text !== undefined) replace(status, notice('error', text))
      })
      .finally(() => {
        submit.disabled = false
      })
  })
  return form
}

/** The key, shown once, with a copy button. */
function secretBox(created: NewKey, what: string, dismiss: () => void): HTMLElement {
  const value = h('code', { class: 'secret-value', 'data-secret': '', id: 'new-key-value' }, created.key)
  const copied = h('span', { class: 'muted', role: 'status' })
  const copy = h('button', { type: 'button' }, 'Copy key')
  copy.addEventListener('click', () => {
    copyText(created.key, value).then(
      (ok) => {
        copied.textContent = ok ? 'Copied.' : 'Select the key and copy it by hand.'
      },
      () => {
        copied.textContent = 'Select the key and copy it by hand.'
      },
    )
  })
  return h(
    'section',
    { class: 'secret', 'aria-labelledby': 'new-key-title' },
    h('h2', { id: 'new-key-title', tabindex: -1 }, 'New key: copy it now, it is shown only once'),
    h(
      'p',
      null,
      what,
      ' The server keeps only its hash: once this box is closed the key cannot be shown again.',
    ),
    value,
    h(
      'div',
      { class: 'actions' },
      copy,
      h('button', { type: 'button', class: 'secondary', onclick: dismiss }, 'I have stored it'),
      copied,
    ),
  )
}

/** Copies through the Clipboard API where the page may (a secure context); else by selection. */
async function copyText(text: string, element: HTMLElement): Promise<boolean> {
  if (window.isSecureContext && navigator.clipboard !== undefined) {
    try {
      await navigator.clipboard.writeText(text)
      return true
    } catch {
      // Refused (no permission): fall back to the selection.
    }
  }
  const range = document.createRange()
  range.selectNodeContents(element)
  const selection = window.getSelection()
  selection?.removeAllRanges()
  selection?.addRange(range)
  // execCommand is deprecated but still the only way to copy outside a secure context.
  return document.execCommand('copy')
}

/** New limits of a key: null = no limit. */
interface Limits {
  readonly rpmLimit: number | null
  readonly tpmLimit: number | null
}

function keyState(key: ApiKey): 'active' | 'revoked' | 'expired' {
  if (key.revokedAt !== null) return 'revoked'
  if (key.expiresAt !== null && Date.parse(key.expiresAt) <= Date.now()) return 'expired'
  return 'active'
}

function keysTable(
  keys: readonly ApiKey[],
  manage: boolean,
  act: (key: ApiKey, action: 'revoke' | 'rotate' | Limits) => Promise<void>,
): HTMLElement {
  const rows = keys.map((key) => {
    const state = keyState(key)
    const actions = h('td', { class: 'row-actions' })
    const offer = () => {
      if (!manage || state !== 'active') return replace(actions, '–')
      replace(
        actions,
        h(
          'button',
          {
            type: 'button',
            class: 'secondary',
            'aria-label': `Limits of ${label(key)}`,
            onclick: () => editLimits(),
          },
          'Limits',
        ),
        h(
          'button',
          {
            type: 'button',
            class: 'secondary',
            'aria-label': `Rotate ${label(key)}`,
            onclick: () => ask('rotate'),
          },
          'Rotate',
        ),
        h(
          'button',
          {
            type: 'button',
            class: 'danger',
            'aria-label': `Revoke ${label(key)}`,
            onclick: () => ask('revoke'),
          },
          'Revoke',
        ),
      )
    }
    // Requests and tokens per minute, edited in place; an empty field means no limit.
    const editLimits = () => {
      const field = (name: string, value: number | null) =>
        h('input', {
          type: 'number',
          min: '1',
          step: '1',
          inputmode: 'numeric',
          name,
          value: value === null ? '' : String(value),
          'aria-label': `${name === 'rpm' ? 'Requests' : 'Tokens'} per minute of ${label(key)} (empty: no limit)`,
          placeholder: 'no limit',
          class: 'limit-input',
        })
      const rpm = field('rpm', key.rpmLimit)
      const tpm = field('tpm', key.tpmLimit)
      const value = (input: HTMLInputElement) => (input.value.trim() === '' ? null : Number(input.value))
      const save = h('button', { type: 'button' }, 'Save limits')
      save.addEventListener('click', () => {
        save.disabled = true
        void act(key, { rpmLimit: value(rpm), tpmLimit: value(tpm) })
      })
      replace(
        actions,
        h('label', { class: 'small' }, 'RPM ', rpm),
        h('label', { class: 'small' }, 'TPM ', tpm),
        save,
        h('button', { type: 'button', class: 'secondary', onclick: offer }, 'Cancel'),
      )
      rpm.focus()
    }
    // Asking in place instead of window.confirm: no modal dialog, and it works the same everywhere.
    const ask = (action: 'revoke' | 'rotate') => {
      const confirm = h(
        'button',
        { type: 'button', class: action === 'revoke' ? 'danger' : '' },
        action === 'revoke' ? 'Confirm revoke' : 'Confirm rotate',
      )
      confirm.addEventListener('click', () => {
        confirm.disabled = true
        void act(key, action)
      })
      replace(
        actions,
        h('span', { class: 'small' }, action === 'revoke' ? 'Revoke this key?' : 'Replace this key?'),
        confirm,
        h('button', { type: 'button', class: 'secondary', onclick: offer }, 'Cancel'),
      )
      confirm.focus()
    }
    offer()
    return h(
      'tr',
      { 'data-key': key.id },
      h('th', { scope: 'row' }, key.name ?? h('span', { class: 'muted' }, '(no name)')),
      h('td', null, h('code', null, key.prefix)),
      h('td', null, h('span', { class: `badge ${state}` }, state)),
      h('td', null, key.kind === 'api' ? 'API key' : 'worker token'),
      h('td', null, key.scope),
      h('td', { class: 'models' }, key.models === null ? 'all' : key.models.join(', ') || 'none'),
      h('td', { class: 'num' }, key.rpmLimit ?? '–'),
      h('td', { class: 'num' }, key.tpmLimit ?? '–'),
      h('td', null, key.expiresAt === null ? 'never' : dateTime(key.expiresAt)),
      h('td', null, dateTime(key.createdAt)),
      h('td', { class: 'small muted' }, key.userId),
      actions,
    )
  })
  return table(
    'Keys',
    [
      'Name',
      'Prefix',
      'State',
      'Kind',
      'Scope',
      'Models',
      { text: 'RPM', num: true },
      { text: 'TPM', num: true },
      'Expires',
      'Created',
      'User',
      'Actions',
    ],
    rows,
    'No keys yet.',
  )
}
