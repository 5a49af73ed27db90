/**
 * The web console's files (built into `dist/console/` by `npm run build`), answered by the
 * management API port for GET and HEAD requests outside the API.
 *
 * Traversal is impossible by construction: the folder is read once into a map of its regular
 * files (symbolic links and dot-files are skipped), and a request path is only ever a key into
 * that map, never a filesystem path. Dependency-free, so the API app can mount it anywhere.
 */
import { lstatSync, readdirSync, readFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** One answer of {@link ConsoleAssets.get}. */
export interface ConsoleAsset {
  readonly status: number
  readonly body: Buffer
  readonly headers: Record<string, string>
}

/** The console's files, by request path. */
export interface ConsoleAssets {
  /**
   * The file for a request path (`/`, `/main.js`, `/workers/gpu-1`): a path without a file
   * extension is a page of the console and answers `index.html`; a file that does not exist
   * answers undefined (the caller's 404). When the console was not built, every path answers
   * a 404 saying so.
   */
  get(path: string): ConsoleAsset | undefined
}

/** Options of {@link consoleAssets}. */
export interface ConsoleAssetsOptions {
  /**
   * The most bytes read from the folder (all files together); a folder above it is refused
   * with an error on first use rather than held in memory. @default 16 MiB
   */
  readonly maxTotalBytes?: number
  /** The most files read from the folder. @default 1000 */
  readonly maxFiles?: number
}

/** Where the normal build puts the console: `dist/console/`, beside `dist/src/`. */
export const CONSOLE_DIR = fileURLToPath(new URL('../../../console/', import.meta.url))

const DEFAULT_MAX_TOTAL_BYTES = 16 * 1024 * 1024
const DEFAULT_MAX_FILES = 1000

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.map': 'application/json',
}

/**
 * The console runs only its own scripts and styles (no inline script, no inline style
 * attribute, nothing from another origin) and talks only to this origin's API.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

/**
 * Every file is revalidated: the names carry no content hash, and a console whose HTML and
 * scripts came from two different builds would break. The files are small and served from memory.
 */
const COMMON_HEADERS = {
  'cache-control': 'no-cache',
  'content-security-policy': CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
} as const

const NOT_BUILT: ConsoleAsset = {
  status: 404,
  body: Buffer.from(
    'The web console was not built: run `npm run build` (it compiles the console into dist/console/).\n',
  ),
  headers: { ...COMMON_HEADERS, 'content-type': 'text/plain; charset=utf-8' },
}

/**
 * The console's files in `dir` (default {@link CONSOLE_DIR}), read once on first use and kept
 * in memory. A folder that is missing is looked for again on the next request (a build after
 * the server started is picked up).
 */
export function consoleAssets(dir: string = CONSOLE_DIR, options: ConsoleAssetsOptions = {}): ConsoleAssets {
  const maxTotalBytes = options.maxTotalBytes ?? DEFAULT_MAX_TOTAL_BYTES
  const maxFiles = options.maxFiles ?? DEFAULT_MAX_FILES
  let files: Map<string, ConsoleAsset> | undefined
  return {
    get(path: string): ConsoleAsset | undefined {
      files ??= readFolder(dir, maxTotalBytes, maxFiles)
      if (files === undefined || !files.has('index.html')) {
        files = undefined
        return NOT_BUILT
      }
      const key = assetKey(path)
      if (key === undefined) return undefined
      if (key === '') return files.get('index.html')
      const file = files.get(key)
      if (file !== undefined) return file
      // A path without an extension is one of the console's pages.
      return extname(key) === '' ? files.get('index.html') : undefined
    },
  }
}

/**
 * The map key of a request path: its segments, percent-decoded, joined by `/`; `''` for the
 * root. Undefined for anything that is not a plain relative path: `..` segments, dot-files,
 * backslashes, NUL, malformed escapes.
 */
export function assetKey(path: string): string | undefined {
  const q = path.search(/[?#]/)
  const raw = q < 0 ? path : path.slice(0, q)
  let decoded: string
  try {
    decoded = decodeURIComponent(raw)
  } catch {
    return undefined
  }
  if (decoded.includes('\\') || decoded.includes('\0')) return undefined
  const segments: string[] = []
  for (const segment of decoded.split('/')) {
    if (segment === '' || segment === '.') continue
    if (segment.startsWith('.')) return undefined
    segments.push(segment)
  }
  return segments.join('/')
}

/** Every regular file under `dir` (no links, no dot-files), or undefined when `dir` is missing. */
function readFolder(
  dir: string,
  maxTotalBytes: number,
  maxFiles: number,
): Map<string, ConsoleAsset> | undefined {
  try {
    if (!lstatSync(dir).isDirectory()) return undefined
  } catch {
    return undefined
  }
  const files = new Map<string, ConsoleAsset>()
  let total = 0
  const walk = (folder: string, prefix: string) => {
    for (const entry of readdirSync(folder, { withFileTypes: true })) {
      if (entry.name.startsWith('.')) continue
      const full = join(folder, entry.name)
      const key = prefix === '' ? entry.name : `${prefix}/${entry.name}`
      if (entry.isDirectory()) {
        walk(full, key)
        continue
      }
      if (!entry.isFile()) continue
      if (files.size >= maxFiles)
        throw new Error(`the console folder ${dir} holds more than ${maxFiles} files`)
      const body = readFileSync(full)
      total += body.length
      if (total > maxTotalBytes)
        throw new Error(`the console folder ${dir} holds more than ${maxTotalBytes} bytes`)
      files.set(key, {
        status: 200,
        body,
        headers: {
          ...COMMON_HEADERS,
          'content-type': CONTENT_TYPES[extname(entry.name).toLowerCase()] ?? 'application/octet-stream',
        },
      })
    }
  }
  walk(dir, '')
  return files
}
