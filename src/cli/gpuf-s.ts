#!/usr/bin/env node
import { buildProgram } from './program.js'

// `gpuf-s [flags]` is `gpufabric server [flags]`, as the seed names it.
await buildProgram('server').parseAsync(process.argv)
