import { isIPv6 } from 'node:net'

/**
 * The unit a per-address limit counts: an IPv4 address, or the /64 an IPv6 address is in
 * (one customer's whole network gets a /64, so counting single IPv6 addresses counts nothing).
 * IPv4-mapped IPv6 addresses count as their IPv4 address.
 */
export function addressKey(address: string | undefined): string {
  if (address === undefined || address.length === 0) return '?'
  if (!address.includes(':')) return address
  if (address.startsWith('::ffff:') && address.includes('.')) return address.slice(7)
  if (!isIPv6(address)) return address
  return `${expandIPv6(address).slice(0, 4).join(':')}::/64`
}

/** The eight hextets of an IPv6 address (no zone id), lower case, without leading zeros. */
function expandIPv6(address: string): string[] {
  const bare = address.split('%')[0]!
  const [head = '', tail] = bare.split('::') as [string, string | undefined]
  const left = head.length > 0 ? head.split(':') : []
  const right = tail !== undefined && tail.length > 0 ? tail.split(':') : []
  // An embedded IPv4 tail (`::1.2.3.4`) takes two hextets; only the first four matter here.
  const fill = tail === undefined ? 0 : Math.max(0, 8 - left.length - right.length)
  return [...left, ...new Array<string>(fill).fill('0'), ...right].map((h) =>
    h.includes('.') ? h : (Number.parseInt(h, 16) || 0).toString(16),
  )
}
