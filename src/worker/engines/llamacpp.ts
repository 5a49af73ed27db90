/**
 * Embedded llama.cpp engine: serves a local GGUF model in-process through `node-llama-cpp`, with an
 * OpenAI-compatible surface (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`).
 *
 * `node-llama-cpp` is an optional dependency (large native install), so it is imported lazily and only
 * its types are imported statically.
 */
import { randomUUID } from 'node:crypto'
import { basename } from 'node:path'
import type {
  ChatHistoryItem,
  ChatWrapper,
  LLamaContextualRepeatPenalty,
  Llama,
  LlamaContext,
  LlamaContextSequence,
  LlamaEmbeddingContext,
  LlamaModel,
} from 'node-llama-cpp'
import { z } from 'zod'
import { ErrorCodes, FabricError } from '../../errors/index.js'
import type { Engine, EngineApi, EngineCall, EngineReply } from './types.js'

type LlamaCppModule = typeof import('node-llama-cpp')

/** The part of a pino-style logger the engine uses. */
export interface LlamaCppLogger {
  error(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  debug(obj: object, msg?: string): void
}

/** Options of {@link createLlamaCppEngine}. */
export interface LlamaCppEngineOptions {
  /** Path of the GGUF model file. */
  modelPath: string
  /** Name the model is served under; defaults to the file's base name without `.gguf`. */
  modelName?: string
  /** Tokens per sequence; defaults to the model's training context, capped at 4096. */
  contextSize?: number
  /** Requests generating at the same time; more wait in a queue. Defaults to 1. */
  maxParallel?: number
  /** CPU threads; defaults to 1 for tiny models, llama.cpp's choice otherwise. */
  threads?: number
  logger?: LlamaCppLogger
}

/** Models smaller than this run single-threaded: thread synchronisation costs more than their math. */
const TINY_MODEL_BYTES = 64 * 1024 * 1024
const DEFAULT_MAX_CONTEXT = 4096

/**
 * Loads the model and returns an engine serving it on the CPU.
 * Throws `ENGINE_UNAVAILABLE` when `node-llama-cpp` is missing or the model cannot be loaded.
 */
export async function createLlamaCppEngine(options: LlamaCppEngineOptions): Promise<Engine> {
  const mod = await importNodeLlamaCpp()
  const logger = options.logger
  let llama: Llama
  try {
    llama = await withForkableExecArgv(() =>
      mod.getLlama({
        gpu: false,
        // Building llama.cpp from source takes many minutes; the prebuilt binaries cover x64/arm64.
        build: 'never',
        logLevel: mod.LlamaLogLevel.warn,
        ...(logger ? { logger: (level: string, message: string) => logLlama(logger, level, message) } : {}),
      }),
    )
  } catch (err) {
    throw new FabricError(ErrorCodes.ENGINE_UNAVAILABLE, `llama.cpp could not start: ${errorMessage(err)}`, {
      cause: err,
    })
  }
  try {
    const model = await llama.loadModel({ modelPath: options.modelPath, gpuLayers: 0 })
    const threads = options.threads ?? (model.size < TINY_MODEL_BYTES ? 1 : undefined)
    const context = await model.createContext({
      contextSize: options.contextSize ?? { max: DEFAULT_MAX_CONTEXT },
      sequences: Math.max(1, options.maxParallel ?? 1),
      ...(threads === undefined ? {} : { threads }),
    })
    const name = options.modelName ?? basename(options.modelPath).replace(/\.gguf$/i, '')
    // Resolving the wrapper renders the model's Jinja template many times (~0.3 s): do it once.
    const chatWrapper = mod.resolveChatWrapper(model)
    return new LlamaCppEngine(mod, llama, model, context, chatWrapper, name, threads)
  } catch (err) {
    await llama.dispose().catch(() => {})
    throw new FabricError(
      ErrorCodes.ENGINE_UNAVAILABLE,
      `cannot load model ${options.modelPath}: ${errorMessage(err)}`,
      { cause: err },
    )
  }
}

async function importNodeLlamaCpp(): Promise<LlamaCppModule> {
  try {
    return await import('node-llama-cpp')
  } catch (err) {
    const missing = (err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND'
    const message = missing
      ? 'the llamacpp engine needs the optional dependency node-llama-cpp: run `npm install node-llama-cpp@3.21.1`'
      : `node-llama-cpp failed to load: ${errorMessage(err)}`
    throw new FabricError(ErrorCodes.ENGINE_UNAVAILABLE, message, { cause: err })
  }
}

/**
 * node-llama-cpp checks its prebuilt binary in a forked child, which inherits `process.execArgv`. Under
 * `node -e`/`-p` the child would run the eval'd code instead of the check, never answer, and loading would
 * fail with "Binding binary test failed to run a test process" (NoBinaryFoundError). Dropping the eval
 * flags for the duration of the load lets the child run the checker file as intended.
 */
async function withForkableExecArgv<T>(fn: () => Promise<T>): Promise<T> {
  const original = process.execArgv
  const filtered: string[] = []
  for (let i = 0; i < original.length; i++) {
    const arg = original[i]!
    if (['-e', '--eval', '-p', '--print', '-pe', '--input-type'].includes(arg)) i++
    else if (!/^--(eval|print|input-type)=/.test(arg)) filtered.push(arg)
  }
  if (filtered.length === original.length) return fn()
  process.execArgv = filtered
  try {
    return await fn()
  } finally {
    process.execArgv = original
  }
}

function logLlama(logger: LlamaCppLogger, level: string, message: string): void {
  const text = message.trim()
  if (text === '') return
  if (level === 'error' || level === 'fatal') logger.error({ engine: 'llamacpp' }, text)
  else if (level === 'warn') logger.warn({ engine: 'llamacpp' }, text)
  else logger.debug({ engine: 'llamacpp' }, text)
}

// ---------------------------------------------------------------------------------------------------------
// Request bodies (OpenAI). Unknown fields are allowed and ignored.

const samplingFields = {
  max_tokens: z.number().int().positive().nullish(),
  max_completion_tokens: z.number().int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
}
type Sampling = z.infer<z.ZodObject<typeof samplingFields>>

const contentPart = z.looseObject({ type: z.string(), text: z.string().optional() })
const ChatBody = z.looseObject({
  messages: z
    .array(
      z.looseObject({
        role: z.string(),
        content: z.union([z.string(), z.array(contentPart), z.null()]).optional(),
      }),
    )
    .min(1),
  ...samplingFields,
})
const CompletionBody = z.looseObject({
  prompt: z.union([z.string(), z.array(z.string()).length(1)]),
  ...samplingFields,
})
const EmbeddingBody = z.looseObject({
  input: z.union([z.string(), z.array(z.string()).min(1).max(2048)]),
})

type FinishReason = 'stop' | 'length'

/** One prepared generation on an acquired sequence. */
interface Job {
  readonly promptTokens: number
  /** Most tokens the sequence still has room for. */
  readonly room: number
  run(
    onText: (text: string) => void,
    signal: AbortSignal,
  ): Promise<{ finishReason: FinishReason; completionTokens: number }>
  dispose(): void
}

/** How one endpoint shapes its JSON answer and its stream chunks. */
interface ReplyShape {
  full(text: string, finishReason: FinishReason, usage: Usage): object
  /** Sent before any text (the chat API announces the role); null for none. */
  start(): object | null
  delta(text: string): object
  end(finishReason: FinishReason): object
  usage(usage: Usage): object
}

interface Usage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
}

class LlamaCppEngine implements Engine {
  readonly type = 'llamacpp' as const
  readonly apis: ReadonlySet<EngineApi> = new Set<EngineApi>(['openai'])
  private readonly pool: SequencePool
  private readonly closing = new AbortController()
  private readonly active = new Set<Promise<unknown>>()
  private embedding: Promise<LlamaEmbeddingContext> | undefined
  /** Embedding requests run one at a time on the single embedding sequence. */
  private embeddingQueue: Promise<unknown> = Promise.resolve()

  constructor(
    private readonly mod: LlamaCppModule,
    private readonly llama: Llama,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    private readonly chatWrapper: ChatWrapper,
    private readonly modelName: string,
    private readonly threads: number | undefined,
  ) {
    this.pool = new SequencePool(context)
  }

  async listModels(): Promise<string[]> {
    return [this.modelName]
  }

  async call(call: EngineCall): Promise<EngineReply> {
    if (this.closing.signal.aborted) throw new FabricError(ErrorCodes.ENGINE_UNAVAILABLE, 'engine is closed')
    const path = call.path.split('?')[0]!.replace(/\/+$/, '')
    const route = `${call.method.toUpperCase()} ${path}`
    if (route === 'GET /v1/models') return jsonReply(200, this.modelsBody())
    if (route === 'POST /v1/chat/completions') {
      return this.withBody(call, ChatBody, (body) =>
        this.generate(call, body, this.chatJob(body), chatShape(this.modelName)),
      )
    }
    if (route === 'POST /v1/completions') {
      return this.withBody(call, CompletionBody, (body) =>
        this.generate(call, body, this.completionJob(body), completionShape(this.modelName)),
      )
    }
    if (route === 'POST /v1/embeddings')
      return this.withBody(call, EmbeddingBody, (body) => this.embed(call, body))
    return errorReply(404, `no route for ${call.method} ${path}`, 'not_found')
  }

  async close(): Promise<void> {
    if (this.closing.signal.aborted) return
    this.closing.abort(new FabricError(ErrorCodes.SHUTTING_DOWN, 'engine closed'))
    this.pool.close()
    // Generations stop at the next token once aborted; disposing under them would crash native code.
    await Promise.allSettled([...this.active])
    const embedding = await this.embedding?.catch(() => undefined)
    await embedding?.dispose()
    await this.context.dispose()
    await this.model.dispose()
    await this.llama.dispose()
  }

  private modelsBody(): object {
    return {
      object: 'list',
      data: [{ id: this.modelName, object: 'model', created: 0, owned_by: 'llamacpp' }],
    }
  }

  private async withBody<T>(
    call: EngineCall,
    schema: z.ZodType<T>,
    handle: (body: T) => Promise<EngineReply>,
  ): Promise<EngineReply> {
    let json: unknown
    try {
      json = JSON.parse(call.body.toString('utf8'))
    } catch {
      return errorReply(400, 'request body is not valid JSON', 'invalid_json')
    }
    const parsed = schema.safeParse(json)
    if (!parsed.success) return errorReply(400, z.prettifyError(parsed.error), 'invalid_request')
    return handle(parsed.data)
  }

  /** Tracks a piece of work so `close()` can wait for it. */
  private track<T>(work: Promise<T>): Promise<T> {
    this.active.add(work)
    const forget = (): void => {
      this.active.delete(work)
    }
    work.then(forget, forget)
    return work
  }

  private async generate(
    call: EngineCall,
    sampling: Sampling,
    prepare: (seq: LlamaContextSequence) => Job,
    shape: ReplyShape,
  ): Promise<EngineReply> {
    const signal = anySignal(call.signal, this.closing.signal)
    const seq = await this.pool.acquire(signal.signal).catch((err) => {
      signal.dispose()
      throw abortedError(err)
    })
    if (signal.signal.aborted) {
      // Aborted (or closed) between getting the sequence and resuming here.
      this.pool.release(seq)
      signal.dispose()
      throw abortedError(signal.signal.reason)
    }
    let job: Job
    try {
      job = prepare(seq)
    } catch (err) {
      this.pool.release(seq)
      signal.dispose()
      return errorReply(400, errorMessage(err), 'invalid_request')
    }
    const release = (): void => {
      job.dispose()
      this.pool.release(seq)
      signal.dispose()
    }
    if (job.room <= 0) {
      release()
      return errorReply(
        400,
        `prompt is ${job.promptTokens} tokens, the context holds ${seq.contextSize}`,
        'context_length_exceeded',
      )
    }
    const usage = (completionTokens: number): Usage => ({
      prompt_tokens: job.promptTokens,
      completion_tokens: completionTokens,
      total_tokens: job.promptTokens + completionTokens,
    })

    if (!sampling.stream) {
      let text = ''
      try {
        const result = await this.track(job.run((piece) => (text += piece), signal.signal))
        return jsonReply(200, shape.full(text, result.finishReason, usage(result.completionTokens)))
      } catch (err) {
        if (signal.signal.aborted) throw abortedError(err)
        return errorReply(500, errorMessage(err), 'engine_error', 'server_error')
      } finally {
        release()
      }
    }

    const stream = new PushStream(() => signal.abort())
    const send = (data: object | string): void =>
      stream.push(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`)
    const start = shape.start()
    if (start) send(start)
    const onText = (piece: string): void => {
      if (piece !== '') send(shape.delta(piece))
    }
    const work = job.run(onText, signal.signal)
    void this.track(work)
      .then(
        (result) => {
          send(shape.end(result.finishReason))
          if (sampling.stream_options?.include_usage) send(shape.usage(usage(result.completionTokens)))
          send('[DONE]')
        },
        (err) => {
          // A caller that went away gets nothing more; anyone else learns why the stream stopped.
          if (!signal.signal.aborted)
            send({ error: openAiError(errorMessage(err), 'engine_error', 'server_error') })
        },
      )
      .finally(() => {
        release()
        stream.end()
      })
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' },
      body: stream,
    }
  }

  private chatJob(body: z.infer<typeof ChatBody>): (seq: LlamaContextSequence) => Job {
    return (seq) => {
      const chat = new this.mod.LlamaChat({
        contextSequence: seq,
        chatWrapper: this.chatWrapper,
        autoDisposeSequence: false,
      })
      const history = toChatHistory(body.messages)
      let promptTokens: number
      try {
        promptTokens = chat.chatWrapper
          .generateContextState({ chatHistory: history })
          .contextText.tokenize(this.model.tokenizer).length
      } catch (err) {
        chat.dispose({ disposeSequence: false })
        throw err
      }
      const room = seq.contextSize - promptTokens
      return {
        promptTokens,
        room,
        run: (onText, signal) =>
          countingRun(onText, signal, (options) =>
            chat.generateResponse(history, { ...samplingOptions(body, room), ...options }),
          ),
        dispose: () => chat.dispose({ disposeSequence: false }),
      }
    }
  }

  private completionJob(body: z.infer<typeof CompletionBody>): (seq: LlamaContextSequence) => Job {
    return (seq) => {
      const completion = new this.mod.LlamaCompletion({ contextSequence: seq, autoDisposeSequence: false })
      const prompt = typeof body.prompt === 'string' ? body.prompt : body.prompt[0]!
      const promptTokens = this.model.tokenize(prompt).length + (this.model.tokens.bos === null ? 0 : 1)
      const room = seq.contextSize - promptTokens
      return {
        promptTokens,
        room,
        run: (onText, signal) =>
          countingRun(onText, signal, (options) =>
            completion.generateCompletionWithMeta(prompt, { ...samplingOptions(body, room), ...options }),
          ),
        dispose: () => completion.dispose({ disposeSequence: false }),
      }
    }
  }

  private async embed(call: EngineCall, body: z.infer<typeof EmbeddingBody>): Promise<EngineReply> {
    let context: LlamaEmbeddingContext
    try {
      this.embedding ??= this.model.createEmbeddingContext({
        contextSize: this.context.contextSize,
        ...(this.threads === undefined ? {} : { threads: this.threads }),
      })
      context = await this.embedding
    } catch (err) {
      this.embedding = undefined
      return errorReply(
        400,
        `this model cannot produce embeddings: ${errorMessage(err)}`,
        'embeddings_unsupported',
      )
    }
    const inputs = typeof body.input === 'string' ? [body.input] : body.input
    for (const input of inputs) {
      if (context.calculateInputLength(input) > this.context.contextSize) {
        return errorReply(
          400,
          `an input exceeds the context of ${this.context.contextSize} tokens`,
          'context_length_exceeded',
        )
      }
    }
    const work = this.embeddingQueue.then(async () => {
      const data: object[] = []
      let promptTokens = 0
      for (const [index, input] of inputs.entries()) {
        if (call.signal.aborted || this.closing.signal.aborted) throw abortedError(call.signal.reason)
        const { vector } = await context.getEmbeddingFor(input)
        promptTokens += context.calculateInputLength(input)
        data.push({ object: 'embedding', index, embedding: [...vector] })
      }
      return {
        object: 'list',
        data,
        model: this.modelName,
        usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
      }
    })
    this.embeddingQueue = work.catch(() => {})
    try {
      return jsonReply(200, await this.track(work))
    } catch (err) {
      if (err instanceof FabricError) throw err
      return errorReply(500, errorMessage(err), 'engine_error', 'server_error')
    }
  }
}

/** Hands out the context's sequences; callers beyond the number of sequences wait their turn. */
class SequencePool {
  private readonly idle: LlamaContextSequence[] = []
  private readonly waiting: Array<{ resolve(seq: LlamaContextSequence): void; reject(err: unknown): void }> =
    []
  private closed = false

  constructor(private readonly context: LlamaContext) {}

  acquire(signal: AbortSignal): Promise<LlamaContextSequence> {
    if (signal.aborted) return Promise.reject(signal.reason)
    if (this.closed) return Promise.reject(new FabricError(ErrorCodes.SHUTTING_DOWN, 'engine closed'))
    const seq = this.idle.pop() ?? (this.context.sequencesLeft > 0 ? this.context.getSequence() : undefined)
    if (seq) return Promise.resolve(seq)
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (s: LlamaContextSequence) => {
          signal.removeEventListener('abort', onAbort)
          resolve(s)
        },
        reject,
      }
      const onAbort = (): void => {
        this.waiting.splice(this.waiting.indexOf(waiter), 1)
        reject(signal.reason)
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiting.push(waiter)
    })
  }

  release(seq: LlamaContextSequence): void {
    const next = this.waiting.shift()
    if (next) next.resolve(seq)
    else this.idle.push(seq)
  }

  close(): void {
    this.closed = true
    for (const waiter of this.waiting.splice(0))
      waiter.reject(new FabricError(ErrorCodes.SHUTTING_DOWN, 'engine closed'))
  }
}

/** An async iterable fed by pushes; ending iteration early calls `onCancel` (the reader went away). */
class PushStream implements AsyncIterable<Uint8Array> {
  private readonly items: Uint8Array[] = []
  private ended = false
  private wake: (() => void) | undefined

  constructor(private readonly onCancel: () => void) {}

  push(text: string): void {
    if (this.ended) return
    this.items.push(Buffer.from(text, 'utf8'))
    this.wake?.()
  }

  end(): void {
    this.ended = true
    this.wake?.()
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const item = this.items.shift()
        if (item) yield item
        else if (this.ended) return
        else await new Promise<void>((resolve) => (this.wake = resolve))
      }
    } finally {
      if (!this.ended) {
        this.ended = true
        this.onCancel()
      }
    }
  }
}

function toChatHistory(messages: z.infer<typeof ChatBody>['messages']): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = messages.map((m) => {
    const text =
      typeof m.content === 'string'
        ? m.content
        : (m.content ?? []).map((part) => (part.type === 'text' ? (part.text ?? '') : '')).join('')
    if (m.role === 'system' || m.role === 'developer') return { type: 'system', text }
    if (m.role === 'assistant') return { type: 'model', response: [text] }
    return { type: 'user', text }
  })
  // An empty model turn at the end is what LlamaChat completes.
  history.push({ type: 'model', response: [] })
  return history
}

/** OpenAI sampling parameters in node-llama-cpp's terms. */
function samplingOptions(s: Sampling, room: number) {
  const requested = s.max_completion_tokens ?? s.max_tokens
  const stop = (typeof s.stop === 'string' ? [s.stop] : (s.stop ?? [])).filter((t) => t !== '')
  const penalised = s.frequency_penalty || s.presence_penalty
  const repeatPenalty: false | LLamaContextualRepeatPenalty = penalised
    ? { penalty: 1, frequencyPenalty: s.frequency_penalty ?? 0, presencePenalty: s.presence_penalty ?? 0 }
    : false
  return {
    // Always bounded: a model that never emits end-of-generation would otherwise shift context forever.
    maxTokens: Math.min(requested ?? room, room),
    // OpenAI's default is 1; node-llama-cpp's (0) would be greedy decoding.
    temperature: s.temperature ?? 1,
    ...(s.top_p == null ? {} : { topP: s.top_p }),
    ...(s.seed == null ? {} : { seed: s.seed }),
    ...(stop.length > 0 ? { customStopTriggers: stop } : {}),
    repeatPenalty,
  }
}

/** Runs a generation, streaming its text to `onText` and counting the tokens it produced. */
async function countingRun(
  onText: (text: string) => void,
  signal: AbortSignal,
  generate: (options: {
    signal: AbortSignal
    onTextChunk: (text: string) => void
    onToken: (tokens: readonly unknown[]) => void
  }) => Promise<{ metadata: { stopReason: string } }>,
): Promise<{ finishReason: FinishReason; completionTokens: number }> {
  let completionTokens = 0
  const result = await generate({
    signal,
    onTextChunk: onText,
    onToken: (tokens) => {
      completionTokens += tokens.length
    },
  })
  return { finishReason: finishReason(result.metadata.stopReason), completionTokens }
}

function finishReason(stopReason: string): FinishReason {
  return stopReason === 'maxTokens' ? 'length' : 'stop'
}

function chatShape(model: string): ReplyShape {
  const id = `chatcmpl-${randomUUID()}`
  const created = Math.floor(Date.now() / 1000)
  const chunk = (choices: object[], extra: object = {}): object => ({
    id,
    object: 'chat.completion.chunk',
    created,
    model,
    choices,
    ...extra,
  })
  return {
    full: (text, finish_reason, usage) => ({
      id,
      object: 'chat.completion',
      created,
      model,
      choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason, logprobs: null }],
      usage,
    }),
    start: () => chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]),
    delta: (content) => chunk([{ index: 0, delta: { content }, finish_reason: null }]),
    end: (finish_reason) => chunk([{ index: 0, delta: {}, finish_reason }]),
    usage: (usage) => chunk([], { usage }),
  }
}

function completionShape(model: string): ReplyShape {
  const id = `cmpl-${randomUUID()}`
  const created = Math.floor(Date.now() / 1000)
  const body = (text: string, finish_reason: FinishReason | null, extra: object = {}): object => ({
    id,
    object: 'text_completion',
    created,
    model,
    choices: [{ index: 0, text, finish_reason, logprobs: null }],
    ...extra,
  })
  return {
    full: (text, finishReason, usage) => body(text, finishReason, { usage }),
    start: () => null,
    delta: (text) => body(text, null),
    end: (finishReason) => body('', finishReason),
    usage: (usage) => ({ id, object: 'text_completion', created, model, choices: [], usage }),
  }
}

function jsonReply(status: number, body: object): EngineReply {
  return {
    status,
    headers: { 'content-type': 'application/json' },
    body: Buffer.from(JSON.stringify(body), 'utf8'),
  }
}

function openAiError(message: string, code: string, type = 'invalid_request_error'): object {
  return { message, type, param: null, code }
}

function errorReply(status: number, message: string, code: string, type?: string): EngineReply {
  return jsonReply(status, { error: openAiError(message, code, type) })
}

function abortedError(cause: unknown): FabricError {
  if (cause instanceof FabricError) return cause
  return new FabricError(ErrorCodes.ABORTED, 'request aborted', { cause })
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** An abort signal that fires when any of `signals` does; `abort()` fires it directly. */
function anySignal(...signals: AbortSignal[]): { signal: AbortSignal; abort(): void; dispose(): void } {
  const controller = new AbortController()
  const onAbort = (event: Event): void => controller.abort((event.target as AbortSignal).reason)
  for (const s of signals) {
    if (s.aborted) controller.abort(s.reason)
    else s.addEventListener('abort', onAbort, { once: true })
  }
  return {
    signal: controller.signal,
    abort: () => controller.abort(new FabricError(ErrorCodes.ABORTED, 'stream reader went away')),
    dispose: () => {
      for (const s of signals) s.removeEventListener('abort', onAbort)
    },
  }
}
