/**
 * An OpenAI-compatible HTTP server (fastify) over one loaded RWKV-7 model:
 *
 *   GET  /health                 liveness + load and cache counters (no API key needed)
 *   GET  /v1/models              the loaded model (any `model` value in a request is accepted)
 *   GET  /v1/models/:id
 *   POST /v1/completions         text_completion, with or without `stream`
 *   POST /v1/chat/completions    chat.completion(.chunk): messages rendered with the RWKV-7 G1 template
 *
 * Concurrency, batching and caching live in engine.ts / batcher.ts / scheduler.ts / runtime/state-cache.ts; timeouts,
 * connection caps and framework errors in hardening.ts; keeping the event loop free while the model computes in
 * pacing.ts. This file maps HTTP to the engine: validation (validate.ts), API key, errors as OpenAI error objects (errors.ts), SSE
 * streaming (sse.ts), client disconnects → AbortSignal, and draining on shutdown.
 *
 * Streaming responses send their headers only once the request has a slot and its prompt is processed: until
 * then a failure (429 queue full, 400 prompt too long, 503 shutting down) is still a proper HTTP status, and the
 * headers can report the cache hit (`x-rwkv7-cached-tokens`, `x-rwkv7-prefill-tokens`).
 *
 * `n` > 1: the prompt is prefilled once and the n choices decode side by side (engine.ts); choice i samples with
 * `seed + i` when the request has a seed (`choiceSeed`), else with a random seed of its own. Streamed chunks carry
 * `index` = i (each choice's pieces in order, the choices interleaved), each choice gets its own finish chunk when
 * it ends; usage counts the prompt once and the completion tokens of every choice.
 */
import { randomBytes, createHash, timingSafeEqual } from 'node:crypto';
import { basename, extname } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { LoadedModel } from '../runtime/load.js';
import { WorldTokenizer } from '../tokenizer/index.js';
import { validateSampling } from '../runtime/sampler.js';
import { CHAT_STOP } from '../runtime/chat.js';
import { UserError } from '../errors.js';
import { VERSION } from '../version.js';
import { ApiError, errors, invalid } from './errors.js';
import { parseRequest, type Endpoint, type GenRequest } from './validate.js';
import { BATCH_DEFAULTS, Engine, type PrefillInfo, type RunRequest, type RunResult } from './engine.js';
import { AbortedError, QueueFullError } from './scheduler.js';
import { SseWriter } from './sse.js';
import { registerWeb, isWebPath } from './web.js';
import { LogprobTrack, chatLogprobs, completionLogprobs } from './logprobs.js';
import { constraintFromResponseFormat } from '../runtime/constraint/index.js';
import type { TokenLogprob } from '../runtime/logprobs.js';
import type { InitialState } from '../model/state-file.js';
import { fastifyOptions, installJsonParser, limitConnections, netLimits, notFoundHandler, safeMessage, type NetLimits } from './hardening.js';

export interface ServerOptions extends Partial<NetLimits> {
  /** Tokenizer (default: the bundled World tokenizer). */
  tokenizer?: WorldTokenizer;
  /** Serve the chat page at `/` (with the browser bundle at /lib/ and the model at /model); default true. */
  web?: boolean;
  /** Initial states a request may select by name (`"state": "<name>"`; `rwkv7 serve --state FILE`). */
  states?: readonly InitialState[];
  /** Require `Authorization: Bearer <apiKey>` on /v1/* when set. */
  apiKey?: string;
  /** Requests generating at the same time, their tokens batched into shared forward passes (default 16). */
  maxConcurrency?: number;
  /** Most sequences in one forward pass (default 16; also the largest `n`). */
  maxBatch?: number;
  /** Most token rows in one forward pass, decode and prefill together (default 64). */
  batchTokens?: number;
  /** Requests waiting for a slot before new ones get 429 (default 64). */
  maxQueue?: number;
  /** Largest max_tokens honoured; larger values are clamped (default 4096). Also chat's default max_tokens. */
  maxTokensCap?: number;
  /** Longest prompt in tokens (default 16384; longer → 400). */
  maxPromptTokens?: number;
  /** State cache budget in MiB (default 256; 0 disables the cache). */
  stateCacheMb?: number;
  /** Also cache the state after prompt + completion (default true). */
  cacheCompletions?: boolean;
  /** Largest request body in bytes (default 1 MiB; larger → 413). */
  bodyLimit?: number;
  /** Target ms of one synchronous prefill call, between which the server serves other work (default 50). */
  prefillSliceMs?: number;
  /** The model id reported to clients (default: the checkpoint's file name without extension). */
  modelName?: string;
  /** One line per request and per notable event (default: silent). */
  log?: (line: string) => void;
}

export interface RwkvServerInfo {
  engine: Engine;
  modelName: string;
  /**
   * Graceful stop: refuse new requests (503), fail queued ones, let active generations finish for up to
   * `graceMs`, abort whatever is still running, then close the server and free the cache.
   */
  shutdown(graceMs?: number): Promise<void>;
}

export type RwkvServer = FastifyInstance & { rwkv: RwkvServerInfo };

const DEFAULTS = {
  maxConcurrency: 16,
  maxBatch: BATCH_DEFAULTS.maxBatch,
  batchTokens: BATCH_DEFAULTS.batchTokens,
  maxQueue: 64,
  maxTokensCap: 4096,
  maxPromptTokens: 16384,
  stateCacheMb: 256,
  bodyLimit: 1024 * 1024,
};

/** Default model id: "rwkv7-storyteller-L6-D192" for ".../rwkv7-storyteller-L6-D192.pth". */
export function modelNameFromPath(path: string): string {
  const b = basename(path.replace(/[\\/]+$/, ''));
  const ext = extname(b);
  return ext === '.pth' || ext === '.safetensors' ? b.slice(0, -ext.length) : b;
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Maps anything thrown while handling a request to an ApiError (unknown errors become a bare 500). */
function toApiError(err: unknown, bodyLimit: number): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof QueueFullError) return errors.queueFull();
  if (err instanceof AbortedError) return errors.shuttingDown();
  if (err instanceof UserError) return invalid(err.message);
  const e = err as { statusCode?: number; code?: string; message?: string };
  if (e && typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    // fastify's own request errors (bad JSON, empty body, wrong content type, too large): their messages are
    // plain descriptions of the request, safe to return.
    if (e.statusCode === 413) return errors.tooLarge(bodyLimit);
    const code = typeof e.code === 'string' && /^[A-Za-z0-9_]{1,64}$/.test(e.code) ? e.code : null;
    return new ApiError(e.statusCode, safeMessage(String(e.message ?? 'Bad request')), 'invalid_request_error', null, code);
  }
  return errors.internal();
}

export function createServer(loaded: Pick<LoadedModel, 'model' | 'path'>, opts: ServerOptions = {}): RwkvServer {
  const o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as typeof DEFAULTS & ServerOptions;
  const { model } = loaded;
  const tokenizer = o.tokenizer ?? WorldTokenizer.default();
  const modelName = o.modelName ?? modelNameFromPath(loaded.path);
  const log = o.log ?? (() => {});
  const created = Math.floor(Date.now() / 1000);
  const fingerprint = `rwkv7-ts-${VERSION}-${model.backend.name}-${model.backend.weightDType}${model.backend.activations === 'q8' ? '-a8' : ''}`;
  const engine = new Engine(model, tokenizer, {
    maxActive: o.maxConcurrency,
    maxQueue: o.maxQueue,
    cacheBytes: Math.floor(o.stateCacheMb * 1024 * 1024),
    cacheCompletions: o.cacheCompletions ?? true,
    sliceMs: o.prefillSliceMs,
    maxBatch: o.maxBatch,
    batchTokens: o.batchTokens,
  });
  /** The largest `n`: every choice of a request fits one forward pass. */
  const maxN = Math.min(MAX_N, o.maxBatch);
  const states = new Map<string, InitialState>();
  for (const st of o.states ?? []) {
    if (states.has(st.name)) throw new UserError(`two initial states are named '${st.name}' (${states.get(st.name)!.path} and ${st.path}); rename one file`);
    states.set(st.name, st);
  }
  const keyHash = o.apiKey ? sha256(o.apiKey) : undefined;
  /** Abort controllers of the requests in progress (aborted when a shutdown's grace period runs out). */
  const inflight = new Set<AbortController>();
  let draining = false;

  const limits = netLimits(o);
  const app = Fastify(fastifyOptions(limits, o.bodyLimit));
  const connections = limitConnections(app, limits, log);
  installJsonParser(app);

  // ---- errors: always an OpenAI error object, never a stack trace ----
  app.setErrorHandler((err, req, reply) => {
    const api = toApiError(err, o.bodyLimit);
    // Unexpected failures are logged with their stack (server side only); the client gets a bare 500.
    if (api.status >= 500 && !(err instanceof ApiError)) log(`error: ${req.method} ${req.url.slice(0, 200)}: ${(err as Error)?.stack ?? String(err)}`);
    // A body over the limit is not read: close the connection rather than reading (and discarding) the rest.
    if (api.status === 413) void reply.header('connection', 'close');
    void reply.code(api.status).type('application/json').send(api.body());
  });
  app.setNotFoundHandler(notFoundHandler(app));
  // The chat page, the browser bundle and the served checkpoint (web.ts); off with `web: false`.
  if (o.web !== false) void app.register((scope) => registerWeb(scope, { modelPath: loaded.path, modelName, protected: !!keyHash }));

  // ---- API key (checked before the body is read) ----
  app.addHook('onRequest', async (req) => {
    if (!keyHash || req.url === '/health' || req.url.startsWith('/health?') || isWebPath(req.url)) return;
    const h = req.headers.authorization;
    const m = typeof h === 'string' ? /^Bearer\s+(.+)$/i.exec(h.trim()) : null;
    if (!m || !timingSafeEqual(sha256(m[1]!), keyHash)) throw errors.unauthorized();
  });

  // ---- info routes ----
  const modelCard = () => ({ id: modelName, object: 'model', created, owned_by: 'rwkv7-ts' });
  app.get('/health', async () => ({
    status: draining ? 'draining' : 'ok',
    model: modelName,
    backend: model.backend.name,
    weight_dtype: model.backend.weightDType,
    threads: (model.backend as { threads?: number }).threads ?? 1,
    states: [...states.keys()],
    ...engine.stats(),
    cache: engine.cache.stats(),
    connections: connections(),
  }));
  app.get('/v1/models', async () => ({ object: 'list', data: [modelCard()] }));
  // Extension: the initial states a request can pick with "state" (llama-server has no such thing; ai00 has).
  app.get('/v1/states', async () => ({
    object: 'list',
    data: [...states.values()].map((st) => ({ id: st.name, object: 'state', kind: st.kind, fingerprint: st.fingerprint })),
  }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (req) => {
    if (req.params.id !== modelName) {
      throw new ApiError(404, `The model '${req.params.id.slice(0, 200)}' does not exist (this server has '${modelName}').`, 'invalid_request_error', 'model', 'model_not_found');
    }
    return modelCard();
  });

  // ---- generation routes ----
  const handle = (endpoint: Endpoint) => async (request: FastifyRequest, reply: FastifyReply) => {
    if (draining) throw errors.shuttingDown();
    const t0 = performance.now();
    const req = parseRequest(endpoint, request.body, { maxTokensCap: o.maxTokensCap, vocabSize: model.config.vocabSize, maxN });
    try {
      validateSampling(req.sampling);
    } catch (e) {
      throw invalid((e as Error).message);
    }
    let constraint: RunRequest['constraint'];
    try {
      const first = constraintFromResponseFormat(req.responseFormat, tokenizer);
      // One constraint per choice (each tracks its own output); the first one has validated the format.
      constraint = req.n > 1 && first ? (i: number) => (i === 0 ? first : constraintFromResponseFormat(req.responseFormat, tokenizer)) : first;
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      throw invalid(safeMessage(e.message), 'response_format', 'invalid_value');
    }
    const initial = req.state === undefined ? undefined : states.get(req.state);
    if (req.state !== undefined && !initial) {
      const known = [...states.keys()];
      throw invalid(`no state named ${JSON.stringify(req.state.slice(0, 64))} (this server has ${known.length ? known.join(', ') : 'none: start it with --state FILE'})`, 'state', 'invalid_value');
    }
    const param = endpoint === 'chat' ? 'messages' : 'prompt';
    const tokens = typeof req.prompt === 'string' ? tokenizer.encode(req.prompt) : req.prompt;
    if (tokens.length === 0) throw invalid(`the ${param} encodes to no tokens`, param, 'invalid_value');
    if (tokens.length > o.maxPromptTokens) {
      throw invalid(`the ${param} has ${tokens.length} tokens; this server accepts at most ${o.maxPromptTokens}`, param, 'context_length_exceeded');
    }

    // The client going away (socket closed before the response finished) aborts the generation.
    const ac = new AbortController();
    const onClose = () => { if (!reply.raw.writableFinished) ac.abort(); };
    reply.raw.on('close', onClose);
    // No idle timeout while the model works for this request (a long prompt sends nothing for a while); a
    // client that leaves is still noticed at once through 'close'.
    const socket = request.raw.socket;
    socket.setTimeout(0);
    inflight.add(ac);
    const id = `${endpoint === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
    const logDone = (status: number, r?: RunResult, note = '') => log(
      `${request.method} ${request.url} ${status}${req.stream ? ' stream' : ''} id=${id}${req.n > 1 ? ` n=${req.n}` : ''} prompt=${tokens.length}` +
      (r ? ` cached=${r.cachedTokens} prefill=${r.prefillTokens} completion=${r.completionTokens} finish=${r.finishReason}` +
        ` queue=${r.queueMs.toFixed(0)}ms prefill=${r.prefillMs.toFixed(0)}ms decode=${r.decodeMs.toFixed(0)}ms` : '') +
      ` total=${(performance.now() - t0).toFixed(0)}ms${note}`,
    );
    try {
      if (req.stream) {
        await stream(endpoint, id, req, tokens, ac.signal, reply, logDone, { constraint, initial });
        return reply;
      }
      const texts = Array.from({ length: req.n }, () => new Collector(endpoint === 'chat'));
      const lps = req.logprobs ? texts.map(() => new LogprobTrack(tokenizer, req.logprobs!.top)) : undefined;
      const r = await engine.run({
        tokens, n: req.n, maxTokens: req.maxTokens, sampling: req.sampling, stop: stopsFor(endpoint, req), signal: ac.signal,
        onText: (s, i) => { texts[i]!.push(s); lps?.[i]!.commit(); },
        onToken: lps ? (t, l, i) => lps[i]!.onToken(t, l) : undefined,
        constraint, initial,
      });
      if (r.finishReason === 'abort') {
        // Only a vanished client (or a shutdown past its grace period) aborts; nobody is left to answer.
        logDone(499, r, ' (client gone)');
        if (!reply.raw.destroyed) return reply.code(503).send(errors.shuttingDown().body());
        return reply.hijack();
      }
      logDone(200, r);
      void reply.headers(cacheHeaders(r));
      const usage = usageOf(r);
      const finish = (i: number) => r.choices[i]!.finishReason;
      if (endpoint === 'chat') {
        return {
          id, object: 'chat.completion', created: now(), model: modelName, system_fingerprint: fingerprint,
          choices: texts.map((t, index) => ({
            index, message: { role: 'assistant', content: t.text, refusal: null }, logprobs: lps ? chatLogprobs(lps[index]!.all) : null, finish_reason: finish(index),
          })),
          usage,
        };
      }
      return {
        id, object: 'text_completion', created: now(), model: modelName, system_fingerprint: fingerprint,
        choices: texts.map((t, index) => ({ text: t.text, index, logprobs: lps ? completionLogprobs(lps[index]!.all, 0) : null, finish_reason: finish(index) })),
        usage,
      };
    } catch (err) {
      if (err instanceof AbortedError && ac.signal.aborted && reply.raw.destroyed) {
        logDone(499, undefined, ' (client gone while queued)');
        return reply.hijack();
      }
      const api = toApiError(err, o.bodyLimit);
      logDone(api.status, undefined, ` ${api.code ?? api.type}`);
      throw err;
    } finally {
      inflight.delete(ac);
      reply.raw.off('close', onClose);
      if (!socket.destroyed) socket.setTimeout(limits.connectionTimeout);
    }
  };

  /** The streaming half of `handle`: SSE chunks in OpenAI's shapes, then `data: [DONE]`. */
  async function stream(
    endpoint: Endpoint, id: string, req: GenRequest, tokens: number[], signal: AbortSignal, reply: FastifyReply,
    logDone: (status: number, r?: RunResult, note?: string) => void,
    run: Pick<RunRequest, 'constraint' | 'initial'>,
  ): Promise<void> {
    const sse = new SseWriter(reply.raw);
    const created = now();
    const base = endpoint === 'chat'
      ? { id, object: 'chat.completion.chunk', created, model: modelName, system_fingerprint: fingerprint }
      : { id, object: 'text_completion', created, model: modelName, system_fingerprint: fingerprint };
    const extra = req.includeUsage ? { usage: null } : {};
    const lps = req.logprobs ? Array.from({ length: req.n }, () => new LogprobTrack(tokenizer, req.logprobs!.top)) : undefined;
    const offsets = new Array<number>(req.n).fill(0); // completions' text_offset: where each choice's next chunk starts
    const chunk = (index: number, content: string | null, finish: string | null, first = false, lp?: TokenLogprob[]) => endpoint === 'chat'
      ? { ...base, choices: [{ index, delta: first ? { role: 'assistant', content: '' } : content === null ? {} : { content }, logprobs: lp ? chatLogprobs(lp) : null, finish_reason: finish }], ...extra }
      : { ...base, choices: [{ text: content ?? '', index, logprobs: lp ? completionLogprobs(lp, offsets[index]!) : null, finish_reason: finish }], ...extra };
    const texts = Array.from({ length: req.n }, () => new Collector(endpoint === 'chat'));
    let started = false;
    let r: RunResult;
    try {
      r = await engine.run({
        tokens, n: req.n, maxTokens: req.maxTokens, sampling: req.sampling, stop: stopsFor(endpoint, req), signal,
        ...run,
        onToken: lps ? (t, l, i) => lps[i]!.onToken(t, l) : undefined,
        onStart: (info: PrefillInfo) => {
          // From here on the response belongs to us, not fastify.
          void reply.hijack();
          sse.open(cacheHeaders(info));
          started = true;
          if (endpoint === 'chat') for (let i = 0; i < req.n; i++) sse.send(chunk(i, null, null, true));
        },
        onText: (s, i) => {
          const piece = texts[i]!.push(s);
          if (!piece) return;
          // The logprobs of the tokens whose text this is go with it.
          sse.send(chunk(i, piece, null, false, lps?.[i]!.commit()));
          offsets[i]! += piece.length;
        },
        // Each choice's finish chunk as soon as it ends (OpenAI's order for n > 1).
        onChoiceEnd: (c) => sse.send(chunk(c.index, null, c.finishReason)),
      });
    } catch (err) {
      if (!started) throw err; // still a normal HTTP error response
      // Headers are out: report the error as a final event (OpenAI's shape) and end the stream.
      const api = toApiError(err, o.bodyLimit);
      log(`error: stream ${id}: ${(err as Error)?.stack ?? String(err)}`);
      sse.send(api.body());
      sse.end();
      logDone(api.status, undefined, ' (error mid-stream)');
      return;
    }
    if (r.finishReason === 'abort') {
      if (!started && !reply.raw.destroyed) throw errors.shuttingDown(); // aborted during prefill by a shutdown
      logDone(499, r, ' (client gone)');
      if (!started) void reply.hijack();
      sse.end();
      return;
    }
    if (req.includeUsage) sse.send({ ...base, choices: [], usage: usageOf(r) });
    sse.done();
    logDone(200, r);
  }

  app.post('/v1/completions', handle('completion'));
  app.post('/v1/chat/completions', handle('chat'));

  const info: RwkvServerInfo = {
    engine,
    modelName,
    async shutdown(graceMs = 10_000) {
      if (draining) return;
      draining = true;
      engine.slots.close();
      const deadline = Date.now() + graceMs;
      while (engine.slots.activeCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const ac of inflight) ac.abort();
      await app.close();
    },
  };
  app.decorate('rwkv', info);
  app.addHook('onClose', async () => {
    draining = true;
    for (const ac of inflight) ac.abort();
    // Let aborted generations unwind (they free their states under the lock), then drop the cache.
    const deadline = Date.now() + 5000;
    while (engine.slots.activeCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    engine.close();
  });
  return app as unknown as RwkvServer;
}

/** The largest `n` any server accepts (each choice is a sequence of the batch; see --max-batch). */
const MAX_N = 16;

function now(): number {
  return Math.floor(Date.now() / 1000);
}

/** Chat stops at the end of the assistant turn (the template's stops) as well as at the client's strings. */
function stopsFor(endpoint: Endpoint, req: GenRequest): string[] {
  return endpoint === 'chat' ? [...new Set([...CHAT_STOP, ...req.stop])] : req.stop;
}

function cacheHeaders(info: PrefillInfo): Record<string, string> {
  return {
    'x-rwkv7-prompt-tokens': String(info.promptTokens),
    'x-rwkv7-cached-tokens': String(info.cachedTokens),
    'x-rwkv7-prefill-tokens': String(info.prefillTokens),
  };
}

function usageOf(r: RunResult) {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
    prompt_tokens_details: { cached_tokens: r.cachedTokens },
  };
}

/**
 * Accumulates generated text. For chat the answer's leading whitespace (the space the model writes after
 * "Assistant:") is dropped, in the streamed pieces too, so the streamed and the non-streamed content agree.
 */
class Collector {
  text = '';
  private lead: boolean;

  constructor(trimLeading: boolean) {
    this.lead = trimLeading;
  }

  /** Adds a piece; returns the part to send (possibly empty). */
  push(s: string): string {
    if (this.lead) {
      s = s.trimStart();
      if (!s) return '';
      this.lead = false;
    }
    this.text += s;
    return s;
  }
}
