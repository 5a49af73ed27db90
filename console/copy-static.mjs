// Copies the console's static files (HTML, CSS, icon) beside its compiled scripts:
// `node console/copy-static.mjs [outDir]` (default dist/console). tsc compiles the scripts.
import { cpSync, mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const out = process.argv[2] ?? 'dist/console'
mkdirSync(out, { recursive: true })
cpSync(fileURLToPath(new URL('./static/', import.meta.url)), out, { recursive: true })
