#!/usr/bin/env node
import { buildProgram } from './program.js'

// `gpuf-c [flags]` is `gpufabric worker [flags]`, as the seed names it.
await buildProgram('worker').parseAsync(process.argv)
