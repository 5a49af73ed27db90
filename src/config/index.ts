import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { ErrorCodes, FabricError } from '../errors/index.js'

/** How one option is read: flag name, environment variables, type and default. */
export interface OptionSpec {
  /** Flag name without dashes, e.g. `control-port`; also the key in a config file. */
  readonly name: string
  readonly env?: readonly string[]
  readonly type: 'string' | 'int' | 'bool' | 'list'
  readonly default?: string | number | boolean | readonly string[]
  readonly description: string
  /** Never echoed back (keys, tokens). */
  readonly secret?: boolean
}

export type OptionValues = Record<string, string | number | boolean | string[] | undefined>

/** The default data directory: `$GPUF_DATA_DIR`, else `~/.gpufabric`. */
export function defaultDataDir(): string {
  return process.env['GPUF_DATA_DIR'] ?? join(homedir(), '.gpufabric')
}

/** Environment variable names of an option: its explicit ones, then `GPUF_<NAME>`. */
export function envNames(spec: OptionSpec): string[] {
  return [...(spec.env ?? []), `GPUF_${spec.name.toUpperCase().replace(/-/g, '_')}`]
}

/**
 * Resolves options: command-line flag, then environment, then config file, then default.
 * Validated once, at start-up; unknown config-file keys are rejected with a suggestion.
 */
export function resolveOptions(
  specs: readonly OptionSpec[],
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
): OptionValues {
  const configPath = (flags['config'] as string | undefined) ?? env['GPUF_CONFIG']
  const file = configPath === undefined ? {} : readConfigFile(configPath, specs)
  const out: OptionValues = {}
  for (const spec of specs) {
    const key = camel(spec.name)
    let raw: unknown = flags[key]
    let source = `--${spec.name}`
    if (raw === undefined) {
      for (const name of envNames(spec)) {
        if (env[name] !== undefined && env[name] !== '') {
          raw = env[name]
          source = `$${name}`
          break
        }
      }
    }
    if (raw === undefined && spec.name in file) {
      raw = file[spec.name]
      source = `${spec.name} in ${configPath}`
    }
    if (raw === undefined) raw = spec.default
    out[key] = raw === undefined ? undefined : convert(spec, raw, source)
  }
  return out
}

function convert(spec: OptionSpec, raw: unknown, source: string): string | number | boolean | string[] {
  switch (spec.type) {
    case 'int': {
      const n = typeof raw === 'number' ? raw : Number(String(raw))
      if (!Number.isInteger(n) || n < 0) {
        throw new FabricError(
          ErrorCodes.CONFIG,
          `${source}: expected a non-negative integer, got '${String(raw)}'`,
        )
      }
      return n
    }
    case 'bool':
      if (typeof raw === 'boolean') return raw
      if (/^(1|true|yes|on)$/i.test(String(raw))) return true
      if (/^(0|false|no|off)$/i.test(String(raw))) return false
      throw new FabricError(ErrorCodes.CONFIG, `${source}: expected true or false, got '${String(raw)}'`)
    case 'list':
      return Array.isArray(raw)
        ? raw.map(String)
        : String(raw)
            .split(',')
            .map((s) => s.trim())
            .filter((s) => s.length > 0)
    default:
      return String(raw)
  }
}

function readConfigFile(path: string, specs: readonly OptionSpec[]): Record<string, unknown> {
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'))
  } catch (cause) {
    throw new FabricError(ErrorCodes.CONFIG, `cannot read config file ${path}: ${(cause as Error).message}`, {
      cause,
    })
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new FabricError(ErrorCodes.CONFIG, `config file ${path} must hold a JSON object`)
  }
  const known = new Set(specs.map((s) => s.name))
  const out: Record<string, unknown> = {}
  for (const [rawKey, value] of Object.entries(parsed)) {
    // Accept camelCase keys too, as written in code.
    const key = rawKey.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
    if (!known.has(key)) {
      const hint = closest(key, [...known])
      throw new FabricError(
        ErrorCodes.CONFIG,
        `unknown option '${rawKey}' in ${path}${hint === undefined ? '' : ` (did you mean '${hint}'?)`}`,
      )
    }
    out[key] = value
  }
  return out
}

function camel(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
}

function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined
  let bestDistance = 4
  for (const c of candidates) {
    const d = distance(word, c)
    if (d < bestDistance) {
      best = c
      bestDistance = d
    }
  }
  return best
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = tmp
    }
  }
  return row[b.length]!
}
