import type { Http2Session } from 'node:http2'

/**
 * Pings an HTTP/2 data link every `intervalMs` and destroys it when a ping stays unanswered
 * for `deadlineMs`: a link whose path went silent (half-open, blackholed) is found in
 * seconds, so its requests are retried elsewhere and the worker dials a new one. Both ends
 * run it. The timer is unref'd and cleared when the link closes.
 */
export function superviseLink(session: Http2Session, intervalMs: number, deadlineMs: number): void {
  let pendingSince = 0
  const timer = setInterval(() => {
    if (session.destroyed || session.closed) {
      clearInterval(timer)
      return
    }
    if (pendingSince !== 0) {
      if (Date.now() - pendingSince > deadlineMs)
        session.destroy(new Error(`data link silent for ${deadlineMs} ms`))
      return
    }
    pendingSince = Date.now()
    try {
      session.ping((err) => {
        if (err === null) pendingSince = 0
      })
    } catch {
      session.destroy()
    }
  }, intervalMs)
  timer.unref()
  session.once('close', () => clearInterval(timer))
}
