/** Sign in with the admin key or a user's key with scope read or manage. */
import { ApiError, failureText, whoAmI } from '../client.js'
import { field, h, notice, replace } from '../dom.js'
import type { Me } from '../types.js'

/** Draws the sign-in form; `signedIn` gets the accepted key and who it is. */
export function loginPage(
  view: HTMLElement,
  reason: string | undefined,
  signedIn: (key: string, me: Me) => void,
): void {
  const input = h('input', {
    type: 'password',
    name: 'key',
    autocomplete: 'current-password',
    required: true,
    spellcheck: 'false',
  })
  const status = h('div', { class: 'status-slot' })
  const button = h('button', { type: 'submit' }, 'Sign in')
  const form = h(
    'form',
    { class: 'card login', novalidate: true },
    field('API key', input, 'The admin key, or your own key with scope read or manage.'),
    button,
    status,
  )
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const key = input.value.trim()
    if (key === '') {
      replace(status, notice('error', 'Enter a key.'))
      input.focus()
      return
    }
    button.disabled = true
    replace(status, notice('info', 'Checking the key…'))
    whoAmI(key).then(
      (me) => signedIn(key, me),
      (err: unknown) => {
        button.disabled = false
        const text =
          err instanceof ApiError && err.status === 401
            ? 'This key is not accepted.'
            : (failureText(err) ?? 'Sign-in failed.')
        replace(status, notice('error', text))
        input.select()
      },
    )
  })
  replace(
    view,
    h(
      'section',
      { class: 'login-page' },
      h('h1', { tabindex: -1 }, 'GPUFabric console'),
      h('p', { class: 'lead' }, 'Workers, keys and usage of this fabric server.'),
      reason === undefined ? undefined : notice('info', reason),
      form,
    ),
  )
  input.focus()
}
