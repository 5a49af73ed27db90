import type { WorkerRegistry } from '../../routing/registry.js'

/** `GET /v1/models`: the union of every worker's models, in OpenAI's list shape. */
export function modelsAsOpenAI(registry: WorkerRegistry) {
  const created = Math.floor(Date.now() / 1000)
  return {
    object: 'list' as const,
    data: registry.models().map((id) => ({ id, object: 'model' as const, created, owned_by: 'gpufabric' })),
  }
}

/** `GET /api/tags`: the same union in Ollama's shape. */
export function modelsAsOllamaTags(registry: WorkerRegistry) {
  const modified = new Date().toISOString()
  return {
    models: registry.models().map((name) => ({
      name,
      model: name,
      modified_at: modified,
      size: 0,
      digest: '',
      details: { format: '', family: '', families: null, parameter_size: '', quantization_level: '' },
    })),
  }
}
