import { Command, Option } from 'commander'
import { TIMEOUTS } from '../config/defaults.js'
import type { OptionSpec } from '../config/index.js'
import { defaultDataDir, envNames } from '../config/index.js'
import { FabricError } from '../errors/index.js'
import { writeSelfSignedCertificate } from '../tls/index.js'
import { VERSION } from '../version.js'
import { startConsumerFromFlags } from './consumer.js'
import { addKeyCommands } from './keys.js'
import { addMonitorCommand } from './monitor.js'
import { CONSUMER_OPTIONS, SERVER_OPTIONS, WORKER_OPTIONS } from './options.js'
import { startServerFromFlags, stopOnSignals } from './server.js'
import { runUp } from './up.js'
import { createWorkerFromFlags } from './worker.js'

function addOptions(command: Command, specs: readonly OptionSpec[]): Command {
  for (const spec of specs) {
    const value = spec.type === 'bool' ? '' : spec.type === 'list' ? ' <values>' : ' <value>'
    const defaults = spec.default === undefined || spec.secret ? '' : ` (default: ${String(spec.default)})`
    command.addOption(
      new Option(
        `--${spec.name}${value}`,
        `${spec.description}${defaults} [env ${envNames(spec).join(', ')}]`,
      ),
    )
  }
  return command.option('--config <path>', 'JSON config file with any of these options [env GPUF_CONFIG]')
}

/** Runs a command's action, turning fabric errors into a clear message and exit code 2. */
function action<A extends unknown[]>(fn: (...args: A) => Promise<void>) {
  return async (...args: A) => {
    try {
      await fn(...args)
    } catch (err) {
      if (err instanceof FabricError) {
        process.stderr.write(`gpufabric: ${err.message} [${err.code}]\n`)
        process.exit(2)
      }
      throw err
    }
  }
}

async function runServer(flags: Record<string, unknown>): Promise<void> {
  const started = await startServerFromFlags(flags)
  stopOnSignals(() => started.server.stop({ drainMs: TIMEOUTS.drainMs }))
}

async function runWorker(flags: Record<string, unknown>): Promise<void> {
  const { agent, logger } = await createWorkerFromFlags(flags)
  agent.on('evicted', () => {
    logger.error('another worker logged in with this client id; exiting')
    process.exitCode = 3
    void agent.stop()
  })
  agent.on('revoked', () => {
    process.exitCode = 4
    void agent.stop()
  })
  agent.start()
  // SIGTERM or SIGINT drains (no new requests, those in flight finish, up to TIMEOUTS.drainMs);
  // a second one exits at once.
  stopOnSignals(() => agent.drain())
}

/** Builds the `gpufabric` command line. `defaultCommand` makes the gpuf-s / gpuf-c aliases. */
export function buildProgram(defaultCommand?: 'server' | 'worker'): Command {
  const program = new Command('gpufabric')
    .description('GPUFabric: an inference distribution network')
    .version(VERSION)
    .showHelpAfterError()
  addOptions(
    program
      .command('server', { isDefault: defaultCommand === 'server' })
      .description('run the fabric server (alias gpuf-s)'),
    SERVER_OPTIONS,
  ).action(action(runServer))
  addOptions(
    program
      .command('worker', { isDefault: defaultCommand === 'worker' })
      .description('run a worker beside an inference engine (alias gpuf-c)'),
    WORKER_OPTIONS,
  ).action(action(runWorker))
  addOptions(
    program
      .command('consumer')
      .description(
        'run the heartbeat consumer: Kafka topics client-heartbeats and request-message into the database',
      ),
    CONSUMER_OPTIONS,
  ).action(
    action(async (flags) => {
      const consumer = await startConsumerFromFlags(flags)
      stopOnSignals(() => consumer.stop())
    }),
  )
  addOptions(
    program.command('up').description('quick start: server on embedded defaults plus a local worker'),
    SERVER_OPTIONS,
  )
    .option('--model-path <file>', 'serve this GGUF file with the embedded llama.cpp engine')
    .option('--echo', 'attach the echo test engine (no inference) when no engine is found')
    .action(action(runUp))
  program
    .command('cert')
    .description('create a self-signed TLS certificate (cert.pem, key.pem) for the server')
    .option('--data-dir <dir>', 'where to write it (default ~/.gpufabric)')
    .option('--name <names>', 'extra host names or addresses for the certificate (comma-separated)')
    .action(
      action(async (flags) => {
        const dir = (flags['dataDir'] as string | undefined) ?? defaultDataDir()
        const names = String(flags['name'] ?? '')
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
        const pair = await writeSelfSignedCertificate(dir, names)
        process.stdout.write(
          `wrote ${pair.certPath} and ${pair.keyPath}\nsha256 fingerprint: ${pair.fingerprint256}\n`,
        )
      }),
    )
  addKeyCommands(program, action as never)
  addMonitorCommand(program, action)
  return program
}
