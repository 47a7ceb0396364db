/**
 * `rwkv7 serve`: the OpenAI-compatible HTTP server (src/server) over one model.
 * Binds to 127.0.0.1 unless --host says otherwise; SIGINT/SIGTERM drain it gracefully (a second signal quits).
 * The network limits (timeouts, connection caps, body size) default to src/server/hardening.ts's NET_DEFAULTS.
 */
import type { Command } from 'commander';
import { addModelOptions, loadModelFromFlags, parseInteger, parseNumber, type ModelFlags } from './common.js';
import { createServer } from '../server/index.js';
import { BATCH_DEFAULTS } from '../server/engine.js';
import { checkActivations, createBackend, weightsLabel } from '../backends/index.js';
import { syntheticModel } from '../runtime/synthetic.js';
import { NET_DEFAULTS } from '../server/hardening.js';
import { UserError } from '../errors.js';
import { loadInitialState } from '../model/state-file.js';

interface ServeFlags extends ModelFlags {
  host: string;
  port: number;
  apiKey?: string;
  maxConcurrency: number;
  maxBatch: number;
  batchTokens: number;
  synthetic?: string;
  maxQueue: number;
  maxTokensCap: number;
  maxPromptTokens: number;
  stateCacheMb: number;
  modelName?: string;
  quiet?: boolean;
  bodyLimit: number;
  headersTimeout: number;
  requestTimeout: number;
  idleTimeout: number;
  keepAliveTimeout: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  prefillSliceMs: number;
  state?: string[];
}

/** Registers `rwkv7 serve`. */
export function register(program: Command): void {
  const cmd = program
    .command('serve')
    .description('serve the model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models)');
  addModelOptions(cmd)
    .option('--host <addr>', 'address to bind (use 0.0.0.0 to accept other machines)', '127.0.0.1')
    .option('--port <n>', 'TCP port', parseInteger('--port', 0), 8000)
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on /v1/* (default: $RWKV7_API_KEY, else no key)')
    .option('--synthetic <size>', 'serve random weights of a real shape instead of a checkpoint: 0.1b, 0.4b or 1.5b (load tests; the text is noise)')
    .option('--max-concurrency <n>', 'requests generating at once (admission; more wait in the queue); their tokens share forward passes (continuous batching). Chosen with `npm run bench:server` (wasm, bf16, 2 threads, a busy 2-core host): 16 streaming clients gave the most tokens/s in all (0.1B shape 21.8 tok/s vs 16.9 with 8 clients, 9.2 and 7.1 without batching; bundled model 198 vs 193, unbatched 105 and 114) while each stream\'s inter-token latency doubles from 8 to 16; take 8 where latency matters more', parseInteger('--max-concurrency', 1), 16)
    .option('--max-batch <n>', `most sequences in one forward pass: one token of every generating request plus prompts being prefilled (also the largest "n"). Chosen with "rwkv7 bench --batch B" (wasm, bf16, 2 threads, 2-core host): the bundled model decodes 201/314/410/553/574/461 tok/s in all at B = 1/4/8/16/32/64, the 0.1B shape ~36 at B = 1 and ~70 at B = 8 to 32; 16 takes nearly all of the gain and matches --max-concurrency`, parseInteger('--max-batch', 1), BATCH_DEFAULTS.maxBatch)
    .option('--batch-tokens <n>', `most token rows in one forward pass, decode and prefill together; a prompt's prefill gets what the decode tokens leave, at most the time-boxed chunk of --prefill-slice-ms. ${BATCH_DEFAULTS.batchTokens}: the wasm backend's largest single pass (more rows run as several passes), leaving ≥ 48 rows of prefill beside ${BATCH_DEFAULTS.maxBatch} decoders; keep it above --max-batch`, parseInteger('--batch-tokens', 1), BATCH_DEFAULTS.batchTokens)
    .option('--max-queue <n>', 'requests waiting for a slot before new ones get HTTP 429', parseInteger('--max-queue', 0), 64)
    .option('--max-tokens-cap <n>', 'largest max_tokens honoured (larger requests are clamped)', parseInteger('--max-tokens-cap', 1), 4096)
    .option('--max-prompt-tokens <n>', 'longest prompt accepted, in tokens', parseInteger('--max-prompt-tokens', 1), 16384)
    .option('--state-cache-mb <n>', 'memory for cached prompt states in MiB (0 = no cache)', parseNumber('--state-cache-mb', 0), 256)
    .option('--model-name <id>', 'model id reported to clients (default: the checkpoint file name)')
    .option('--body-limit <bytes>', 'largest request body (larger: HTTP 413, connection closed)', parseInteger('--body-limit', 1), 1024 * 1024)
    .option('--headers-timeout <ms>', 'time a client has to send the request headers (slow clients: 408, closed)', parseInteger('--headers-timeout', 1), NET_DEFAULTS.headersTimeout)
    .option('--request-timeout <ms>', 'time a client has to send the whole request, headers and body', parseInteger('--request-timeout', 1), NET_DEFAULTS.requestTimeout)
    .option('--idle-timeout <ms>', 'a connection with no traffic this long is closed (not while its request is being generated; 0 = never)', parseInteger('--idle-timeout', 0), NET_DEFAULTS.connectionTimeout)
    .option('--keep-alive-timeout <ms>', 'an idle keep-alive connection is closed after this long', parseInteger('--keep-alive-timeout', 1), NET_DEFAULTS.keepAliveTimeout)
    .option('--max-connections <n>', 'open connections in all; more get HTTP 503 and are closed (0 = no cap)', parseInteger('--max-connections', 0), NET_DEFAULTS.maxConnections)
    .option('--max-connections-per-ip <n>', 'open connections from one address (0 = no cap; behind a reverse proxy all clients share its address)', parseInteger('--max-connections-per-ip', 0), NET_DEFAULTS.maxConnectionsPerIp)
    .option('--prefill-slice-ms <ms>', 'target time a prompt\'s prefill adds to one forward pass (the server answers other requests between passes)', parseNumber('--prefill-slice-ms', 1, 10_000), 50)
    .option('--state <file>', 'an initial state a request can select with "state": "<file name without extension>" (our state files or official state-tuned .pth); repeatable', (v: string, prev?: string[]) => [...(prev ?? []), v])
    .option('-q, --quiet', 'do not log requests')
    .action(async (f: ServeFlags) => {
      if (f.port > 65535) throw new UserError('--port must be ≤ 65535');
      if (f.headersTimeout > f.requestTimeout) throw new UserError('--headers-timeout must not exceed --request-timeout');
      const apiKey = f.apiKey ?? (process.env.RWKV7_API_KEY || undefined);
      if (f.synthetic && f.model) throw new UserError('give either --model or --synthetic, not both');
      const loaded = f.synthetic ? await loadSynthetic(f) : await loadModelFromFlags(f);
      const log = f.quiet ? undefined : (line: string) => process.stderr.write(`rwkv7 serve: ${line}\n`);
      const states = (f.state ?? []).map((file) => loadInitialState(file, loaded.config));
      const app = createServer(loaded, {
        apiKey,
        maxConcurrency: f.maxConcurrency,
        maxBatch: f.maxBatch,
        batchTokens: f.batchTokens,
        maxQueue: f.maxQueue,
        maxTokensCap: f.maxTokensCap,
        maxPromptTokens: f.maxPromptTokens,
        stateCacheMb: f.stateCacheMb,
        modelName: f.modelName ?? (f.synthetic ? `synthetic-${f.synthetic.toLowerCase()}` : undefined),
        bodyLimit: f.bodyLimit,
        headersTimeout: f.headersTimeout,
        requestTimeout: f.requestTimeout,
        connectionTimeout: f.idleTimeout,
        keepAliveTimeout: f.keepAliveTimeout,
        maxConnections: f.maxConnections,
        maxConnectionsPerIp: f.maxConnectionsPerIp,
        prefillSliceMs: f.prefillSliceMs,
        states,
        log,
      });
      let address: string;
      try {
        address = await app.listen({ host: f.host, port: f.port });
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        throw new UserError(`cannot listen on ${f.host}:${f.port}: ${err.code ?? err.message}`);
      }
      process.stderr.write(
        `rwkv7 serve: model ${app.rwkv.modelName} (${loaded.model.backend.name}, ${weightsLabel(loaded.model.backend)}) on ${address}/v1` +
        `${apiKey ? ' (API key required)' : ''}; concurrency ${f.maxConcurrency}, batch ${f.maxBatch} sequences / ${f.batchTokens} tokens, queue ${f.maxQueue}, state cache ${f.stateCacheMb} MiB` +
        `${states.length ? `; states: ${states.map((st) => st.name).join(', ')}` : ''}; chat page at ${address}/\n`,
      );

      let stopping = false;
      const stop = (sig: string) => {
        if (stopping) {
          process.stderr.write(`rwkv7 serve: ${sig} again, quitting now\n`);
          process.exit(130);
        }
        stopping = true;
        process.stderr.write(`rwkv7 serve: ${sig}: finishing active requests (send ${sig} again to quit now)\n`);
        app.rwkv.shutdown(10_000).then(
          () => { process.stderr.write('rwkv7 serve: stopped\n'); process.exit(0); },
          (e: unknown) => { process.stderr.write(`rwkv7 serve: shutdown error: ${(e as Error).message}\n`); process.exit(1); },
        );
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    });
}

/** `--synthetic SIZE`: random weights of a real shape (bench/server-load.ts serves the 0.1B shape this way). */
async function loadSynthetic(f: ServeFlags) {
  const name = f.backend === 'auto' ? 'wasm' : f.backend;
  const dtype = f.dtype ?? (name === 'js' ? 'f32' : 'bf16');
  checkActivations(dtype, f.activations);
  const backend = await createBackend(name, { dtype, activations: f.activations, threads: f.threads });
  const { model, config } = syntheticModel(f.synthetic!, backend);
  return { model, config, path: `synthetic:${f.synthetic!.toLowerCase()}` };
}
