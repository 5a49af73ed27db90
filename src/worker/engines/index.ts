import { ErrorCodes, FabricError } from '../../errors/index.js'
import { createEchoEngine } from './echo.js'
import { createHttpEngine } from './http.js'
import type { Engine, EngineType } from './types.js'

export * from './types.js'

/** Default local port of each HTTP engine type. */
export const DEFAULT_ENGINE_PORTS: Record<'ollama' | 'vllm' | 'openai', number> = {
  ollama: 11434,
  vllm: 8000,
  openai: 8000,
}

/** Options to build any engine. */
export interface EngineOptions {
  readonly type: EngineType
  readonly localAddr?: string | undefined
  readonly localPort?: number | undefined
  readonly engineApiKey?: string | undefined
  readonly modelPath?: string | undefined
  readonly modelName?: string | undefined
  readonly chunkDelayMs?: number | undefined
}

/** Creates the engine a worker sits beside. */
export async function createEngine(options: EngineOptions): Promise<Engine> {
  switch (options.type) {
    case 'echo':
      return createEchoEngine({
        models: [options.modelName ?? 'echo'],
        chunkDelayMs: options.chunkDelayMs ?? 0,
      })
    case 'llamacpp': {
      if (options.modelPath === undefined) {
        throw new FabricError(ErrorCodes.CONFIG, '--engine-type llamacpp needs --model-path <file.gguf>')
      }
      const { createLlamaCppEngine } = await import('./llamacpp.js')
      return createLlamaCppEngine({
        modelPath: options.modelPath,
        ...(options.modelName === undefined ? {} : { modelName: options.modelName }),
      })
    }
    default: {
      const host = options.localAddr ?? '127.0.0.1'
      const port = options.localPort ?? DEFAULT_ENGINE_PORTS[options.type]
      return createHttpEngine({
        type: options.type,
        baseUrl: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
        apiKey: options.engineApiKey,
      })
    }
  }
}
