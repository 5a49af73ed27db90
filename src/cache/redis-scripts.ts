/**
 * Lua scripts of the Redis cache. Redis runs a script atomically, so a read-check-write
 * stays exact however many servers count against the same window.
 *
 * Windows are fixed: the first use of a key starts one of ARGV windowMs (PEXPIRE), and
 * every later use in it adds to the same counter until the key expires. A refused
 * `consume` changes nothing, not even to start a window.
 */

/** KEYS[1] window; ARGV cost, limit, windowMs. Returns {allowed 0|1, used, ms to reset}. */
export const CONSUME_SCRIPT = `
local cost = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + cost > tonumber(ARGV[2]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = tonumber(ARGV[3]) end
  return {0, used, ttl}
end
used = redis.call('INCRBY', KEYS[1], cost)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  ttl = tonumber(ARGV[3])
end
return {1, used, ttl}
`

/** KEYS[1] window; ARGV cost, windowMs. Adds without refusing. Returns {used, ms to reset}. */
export const ADD_SCRIPT = `
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {used, ttl}
`

/** KEYS[1] window. Returns {used, ms to reset}; an absent window is {0, 0}. */
export const PEEK_SCRIPT = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = 0 end
return {used, ttl}
`

/** KEYS[1] entry; ARGV channel, message. Deletes the entry and tells every subscriber. */
export const INVALIDATE_SCRIPT = `
redis.call('DEL', KEYS[1])
return redis.call('PUBLISH', ARGV[1], ARGV[2])
`
