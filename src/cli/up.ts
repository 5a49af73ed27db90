import { request } from 'undici'
import { TIMEOUTS } from '../config/defaults.js'
import { createLogger } from '../observability/logger.js'
import { WorkerAgent } from '../worker/agent.js'
import { createEngine, type EngineOptions } from '../worker/engines/index.js'
import type { Engine } from '../worker/engines/types.js'
import { startServerFromFlags, stopOnSignals } from './server.js'
import { stableClientId } from './worker.js'

/** Local engines `up` looks for, in order. */
const PROBES: readonly { name: string; type: 'ollama' | 'openai'; port: number; path: string }[] = [
  { name: 'Ollama', type: 'ollama', port: 11434, path: '/api/tags' },
  { name: 'vLLM', type: 'openai', port: 8000, path: '/v1/models' },
  { name: 'llama.cpp server', type: 'openai', port: 8080, path: '/v1/models' },
  { name: 'LM Studio', type: 'openai', port: 1234, path: '/v1/models' },
]

/** Finds an engine answering on this machine's usual ports. */
export async function findLocalEngine(): Promise<(typeof PROBES)[number] | undefined> {
  const found = await Promise.all(
    PROBES.map(async (probe) => {
      try {
        const res = await request(`http://127.0.0.1:${probe.port}${probe.path}`, {
          signal: AbortSignal.timeout(800),
        })
        await res.body.dump()
        return res.statusCode === 200 ? probe : undefined
      } catch {
        return undefined
      }
    }),
  )
  return found.find((p) => p !== undefined)
}

/**
 * `gpufabric up`: the server on embedded defaults plus a local worker for an engine found
 * on this machine (or `--model-path file.gguf`, or `--echo`). Prints the endpoint, a key
 * and a curl example; keeps serving when no engine is found.
 */
export async function runUp(flags: Record<string, unknown>): Promise<void> {
  const started = await startServerFromFlags(flags)
  const { ports, apiKey, workerToken, dataDir } = started
  let engineOptions: EngineOptions | undefined
  let label = ''
  if (typeof flags['modelPath'] === 'string') {
    engineOptions = { type: 'llamacpp', modelPath: flags['modelPath'] }
    label = `embedded llama.cpp (${flags['modelPath']})`
  } else if (flags['echo'] === true) {
    engineOptions = { type: 'echo' }
    label = 'echo test engine (no inference)'
  } else {
    const probe = await findLocalEngine()
    if (probe !== undefined) {
      engineOptions = { type: probe.type, localPort: probe.port }
      label = `${probe.name} on 127.0.0.1:${probe.port}`
    }
  }
  let engine: Engine | undefined
  let agent: WorkerAgent | undefined
  if (engineOptions === undefined) {
    process.stdout.write(
      [
        'no inference engine found on this machine (looked for Ollama :11434, vLLM :8000, llama.cpp :8080, LM Studio :1234).',
        'The server keeps running. To add an engine:',
        '  - start one of those engines and run `gpufabric up` again, or',
        `  - attach a worker: gpufabric worker --engine-type ollama|openai --local-port <port> --data-dir ${dataDir}`,
        '  - serve a GGUF file: gpufabric up --model-path model.gguf',
        '  - try the fabric with the echo test engine: gpufabric up --echo',
        '',
      ].join('\n'),
    )
  } else {
    engine = await createEngine(engineOptions)
    agent = new WorkerAgent({
      serverHost: '127.0.0.1',
      controlPort: ports.control,
      proxyPort: ports.proxy,
      clientId: await stableClientId(dataDir),
      token: workerToken,
      trust: { fingerprints: [started.fingerprint256] },
      engine,
      logger: createLogger({ level: started.logger.level, name: 'gpufabric-worker' }),
    })
    agent.start()
    await agent.ready(AbortSignal.timeout(30_000))
    const models = await engine.listModels().catch(() => [])
    process.stdout.write(`local worker serving ${label}: ${models.join(', ') || '(no models yet)'}\n`)
  }
  const model = engine === undefined ? 'MODEL' : ((await engine.listModels().catch(() => []))[0] ?? 'MODEL')
  process.stdout.write(
    [
      '',
      `endpoint: http://localhost:${ports.public}/v1`,
      `api key:  ${apiKey}`,
      'try:',
      `  curl http://localhost:${ports.public}/v1/chat/completions \\`,
      `    -H "Authorization: Bearer ${apiKey}" -H "Content-Type: application/json" \\`,
      `    -d '{"model":"${model}","messages":[{"role":"user","content":"Hello"}]}'`,
      '',
    ].join('\n'),
  )
  stopOnSignals(async () => {
    // The server drains first: answers in flight still need the local worker.
    await started.server.stop({ drainMs: TIMEOUTS.drainMs })
    await agent?.stop()
    await engine?.close()
  })
}
