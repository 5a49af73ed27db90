import type { Server, Socket } from 'node:net'
import { addressKey } from '../auth/address.js'

export { addressKey }

/** Limits of one port's {@link ConnectionBudget}. */
export interface ConnectionLimits {
  /** Open connections on the port. */
  readonly maxConnections: number
  /** Open connections from one address. */
  readonly maxPerAddress: number
  /** Connections not yet authenticated (TLS handshake, login, bind). */
  readonly maxPending: number
  /** Connections not yet authenticated from one address. */
  readonly maxPendingPerAddress: number
}

/** Why a connection was refused, counted per reason. */
export interface RefusalCounts {
  port: number
  address: number
  pending: number
  pendingAddress: number
  /** TLS handshakes not completed in time. */
  handshake: number
}

interface AddressCount {
  open: number
  pending: number
}

/** One admitted connection: released when its socket closes. */
interface Ticket {
  readonly address: string
  pending: boolean
  /** Cuts a TLS connection whose handshake is not done in time. */
  handshake?: NodeJS.Timeout | undefined
  /** The TLS socket over this connection, once known. */
  tls?: Socket | undefined
}

const ticketId = (socket: Socket) => `${socket.remoteAddress}|${socket.remotePort}`

/**
 * Connection accounting for one port: a cap for the port, a cap per address, and a smaller
 * budget for connections that have not authenticated yet, so that one address can never fill
 * a port's caps and keep others (workers above all) out. Connections are counted from the
 * moment they are accepted (before any TLS handshake) until their socket closes; workers
 * already logged in are never evicted, a flood is refused at the door.
 */
export class ConnectionBudget {
  readonly #limits: ConnectionLimits
  readonly #byAddress = new Map<string, AddressCount>()
  /** Admitted sockets by `address|port`: a TLS socket finds the ticket of the raw socket it wraps. */
  readonly #tickets = new Map<string, Ticket>()
  #open = 0
  #pending = 0
  readonly refused: RefusalCounts = { port: 0, address: 0, pending: 0, pendingAddress: 0, handshake: 0 }

  constructor(limits: ConnectionLimits) {
    this.#limits = limits
  }

  /** Open connections on the port. */
  get open(): number {
    return this.#open
  }

  /** Connections not yet authenticated. */
  get pending(): number {
    return this.#pending
  }

  /**
   * Counts every connection `server` accepts, and destroys at once those over a limit. With
   * `pending`, a new connection counts as unauthenticated until {@link authenticated}.
   */
  guard(server: Server, pending: boolean, handshakeMs?: number): void {
    server.on('connection', (socket: Socket) => {
      if (!this.admit(socket, pending)) {
        socket.destroy()
        return
      }
      if (handshakeMs === undefined) return
      const ticket = this.#tickets.get(ticketId(socket))
      if (ticket === undefined) return
      // Node's own handshake timeout is an idle timer: a ClientHello followed by silence never
      // trips it. This one runs from accept, whatever the peer sends meanwhile.
      ticket.handshake = setTimeout(() => {
        this.refused.handshake++
        ;(ticket.tls ?? socket).destroy()
      }, handshakeMs)
      ticket.handshake.unref()
    })
    if (handshakeMs === undefined) return
    // The TLS socket wrapping an accepted one is handed out by no event before its handshake
    // ends, except 'keylog', emitted as soon as the ClientHello produced keys: from then on it
    // is the one to destroy (destroying the raw socket under it no longer closes anything).
    server.on('keylog', (_line: Buffer, tls: Socket) => {
      const ticket = this.#tickets.get(ticketId(tls))
      if (ticket !== undefined) ticket.tls ??= tls
    })
    server.on('secureConnection', (tls: Socket) => {
      const ticket = this.#tickets.get(ticketId(tls))
      if (ticket !== undefined) clearTimeout(ticket.handshake)
    })
  }

  /** Counts a new socket; false when a limit refuses it (the caller destroys it). */
  admit(socket: Socket, pending: boolean): boolean {
    // Gone before we saw it (reset while queued): nothing to count, nothing to serve.
    if (socket.remoteAddress === undefined) return false
    const address = addressKey(socket.remoteAddress)
    const limits = this.#limits
    let count = this.#byAddress.get(address)
    if (this.#open >= limits.maxConnections) {
      this.refused.port++
      return false
    }
    if (count !== undefined && count.open >= limits.maxPerAddress) {
      this.refused.address++
      return false
    }
    if (pending) {
      if (this.#pending >= limits.maxPending) {
        this.refused.pending++
        return false
      }
      if (count !== undefined && count.pending >= limits.maxPendingPerAddress) {
        this.refused.pendingAddress++
        return false
      }
    }
    if (count === undefined) {
      count = { open: 0, pending: 0 }
      this.#byAddress.set(address, count)
    }
    count.open++
    this.#open++
    if (pending) {
      count.pending++
      this.#pending++
    }
    const ticket: Ticket = { address, pending }
    const id = ticketId(socket)
    this.#tickets.set(id, ticket)
    socket.once('close', () => {
      clearTimeout(ticket.handshake)
      this.#tickets.delete(id)
      this.#settle(ticket)
      const c = this.#byAddress.get(address)
      if (c === undefined) return
      this.#open--
      if (--c.open === 0) this.#byAddress.delete(address)
    })
    return true
  }

  /**
   * The connection on this socket (or the TLS socket wrapping it) has authenticated: it no
   * longer counts against the pending budgets.
   */
  authenticated(socket: Socket): void {
    const ticket = this.#tickets.get(ticketId(socket))
    if (ticket !== undefined) this.#settle(ticket)
  }

  #settle(ticket: Ticket): void {
    if (!ticket.pending) return
    ticket.pending = false
    this.#pending--
    const c = this.#byAddress.get(ticket.address)
    if (c !== undefined) c.pending--
  }

  /** Counters for the management API. */
  snapshot() {
    return {
      open: this.#open,
      pending: this.#pending,
      addresses: this.#byAddress.size,
      refused: { ...this.refused },
    }
  }
}
