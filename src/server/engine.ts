/**
 * The server's generation engine: admission (SlotQueue), continuous batching (Batcher: every forward pass of every
 * request goes through it), the model lock (FifoLock), the prompt state cache, and the generation loop
 * (runtime/generate.ts) over a model whose `forward` is a request to the batcher.
 *
 * Life of a request (n choices, n ≥ 1):
 *   1. wait for a generation slot (FIFO; QueueFullError when the queue is full, AbortedError if the client
 *      leaves while waiting); a request takes one slot whatever its n;
 *   2. look up the longest cached prefix of the prompt tokens and take a private copy of its state (a prefix
 *      shorter than the prompt, or the whole prompt when the cache kept the logits after it: a repeat needs no
 *      prefill at all);
 *   3. prefill the remaining prompt tokens through the batcher: each step runs a chunk of them (at most the
 *      pacer's time-based chunk, pacing.ts, and what the step's token budget leaves after the decode tokens of the
 *      other requests) side by side with every active generation's next token, so a long prompt neither stalls
 *      the others nor waits for them; the event loop runs between steps (/health, disconnects); an abort (client
 *      gone) takes the prompt out of the queue at once;
 *   4. cache a copy of the state (and logits) at the end of the prompt — the next chat turn's prompt starts
 *      with it;
 *   5. `onStart` (the HTTP layer sends its headers); the prompt's state is cloned for choices 1..n−1 (the prompt
 *      is prefilled once); then the n choices generate concurrently, each with its own sampler (seed: see
 *      `choiceSeed`), stop matcher and constraint; each decode step is one token for the batcher, so the n
 *      choices and every other request's tokens share the same forward passes;
 *   6. optionally cache the state after prompt + completion of each choice (a follow-up that quotes the answer
 *      verbatim hits it), free the request's states, release the slot.
 * A request's states are its own from step 2 to 6: states are copied in and out of the cache, never shared. Every
 * backend operation outside a step (state copies, cache inserts, frees) runs under the model lock, as the steps do.
 */
import type { RWKV7 } from '../model/rwkv7.js';
import type { State } from '../model/state.js';
import type { WorldTokenizer } from '../tokenizer/index.js';
import type { SamplingOptions } from '../runtime/sampler.js';
import { generate, type FinishReason, type GenerateResult } from '../runtime/generate.js';
import { StateCache } from '../runtime/state-cache.js';
import type { TokenConstraint } from '../runtime/constraint/index.js';
import type { InitialState } from '../model/state-file.js';
import { AbortedError, FifoLock, SlotQueue } from './scheduler.js';
import { PrefillPacer, type PacerStats } from './pacing.js';
import { Batcher, type BatcherStats } from './batcher.js';

export interface EngineOptions {
  maxActive: number;
  maxQueue: number;
  /** Bytes of state the prefix cache may hold (0 = off). */
  cacheBytes: number;
  /** Also cache the state after prompt + completion. */
  cacheCompletions: boolean;
  /** Target ms of the prefill part of one step (the chunk size adapts to it; default 50). See pacing.ts. */
  sliceMs?: number;
  /** Most sequences in one forward pass (default 16). */
  maxBatch?: number;
  /** Most token rows in one forward pass, decode and prefill together (default 64; the pacer's chunk ≤ this). */
  batchTokens?: number;
}

export interface RunRequest {
  tokens: number[];
  maxTokens: number;
  sampling: SamplingOptions;
  stop: string[];
  signal: AbortSignal;
  /** Choices to generate from the one prompt (OpenAI's `n`; default 1). */
  n?: number;
  /** Called once, after the prompt is processed and before the first token is sampled. */
  onStart?: (info: PrefillInfo) => void;
  onText?: (chunk: string, choice: number) => void;
  /** Each generated token with the raw logits it was sampled from (for logprobs). */
  onToken?: (id: number, logits: Float32Array, choice: number) => void;
  /** A choice has finished (the others may still be generating). */
  onChoiceEnd?: (choice: ChoiceResult) => void;
  /** Constrained decoding (response_format): one per choice — a function of the choice index when n > 1. */
  constraint?: TokenConstraint | ((choice: number) => TokenConstraint | undefined);
  /** Start from this state instead of the zero state (`--state`); its fingerprint keys the prompt cache. */
  initial?: Pick<InitialState, 'host' | 'fingerprint'>;
}

export interface PrefillInfo {
  promptTokens: number;
  /** Prompt tokens taken from the state cache. */
  cachedTokens: number;
  /** Prompt tokens run through the model (after an abort: those run before it). */
  prefillTokens: number;
  /** Time spent waiting for a slot. */
  queueMs: number;
}

export interface ChoiceResult {
  index: number;
  text: string;
  completionTokens: number;
  finishReason: FinishReason;
  decodeMs: number;
  seed: number;
}

export interface RunResult extends PrefillInfo {
  /** Choice 0's text, finish reason and seed (the whole result when n = 1). */
  text: string;
  /** Over all choices. */
  completionTokens: number;
  /** 'abort' when the request was aborted; else choice 0's. */
  finishReason: FinishReason;
  prefillMs: number;
  /** Until the last choice finished. */
  decodeMs: number;
  seed: number;
  choices: ChoiceResult[];
}

export interface EngineStats {
  active: number;
  queued: number;
  requests: number;
  /** Requests that ended by an abort (client gone, or a shutdown past its grace period). */
  aborted: number;
  completionTokens: number;
  /** Prompt tokens run through the model, counted chunk by chunk as they run. */
  prefillTokens: number;
  prefillChunks: number;
  cachedTokens: number;
  /** Sequences generating now (a request with n choices counts n). */
  generating: number;
  /** States held by requests now (0 when idle: every request frees what it took). */
  liveStates: number;
  prefill: PacerStats;
  batch: BatcherStats;
}

/** The defaults of `--max-batch` / `--batch-tokens` (see src/cli/serve.ts for how they were measured). */
export const BATCH_DEFAULTS = { maxBatch: 16, batchTokens: 64 };

/**
 * The seed of choice `i` of a request with `seed`: seed + i (choice 0 uses the seed itself, so n = 1 is unchanged),
 * wrapping from Number.MAX_SAFE_INTEGER to Number.MIN_SAFE_INTEGER so that every derived seed is an exact integer
 * a request may send. Without a seed every choice draws its own random one.
 */
export function choiceSeed(seed: number | undefined, i: number): number | undefined {
  if (seed === undefined) return undefined;
  const max = Number.MAX_SAFE_INTEGER;
  return seed > max - i ? Number.MIN_SAFE_INTEGER + (i - (max - seed) - 1) : seed + i;
}

/**
 * One lock per model object: the model's scratch buffers are shared by everything that runs it, so even two
 * servers (engines) over the same loaded model must take turns.
 */
const modelLocks = new WeakMap<RWKV7, FifoLock>();
function lockFor(model: RWKV7): FifoLock {
  let l = modelLocks.get(model);
  if (!l) modelLocks.set(model, (l = new FifoLock()));
  return l;
}

export class Engine {
  readonly lock: FifoLock;
  readonly slots: SlotQueue;
  readonly cache: StateCache;
  readonly batcher: Batcher;
  readonly pacer: PrefillPacer;
  private readonly totals = { requests: 0, aborted: 0, completionTokens: 0, prefillTokens: 0, prefillChunks: 0, cachedTokens: 0 };
  private generating = 0;
  private liveStates = 0;

  constructor(
    readonly model: RWKV7,
    readonly tokenizer: WorldTokenizer,
    private readonly opts: EngineOptions,
  ) {
    const maxBatch = opts.maxBatch ?? BATCH_DEFAULTS.maxBatch;
    const batchTokens = opts.batchTokens ?? BATCH_DEFAULTS.batchTokens;
    this.lock = lockFor(model);
    this.slots = new SlotQueue(opts.maxActive, opts.maxQueue);
    this.cache = new StateCache(opts.cacheBytes);
    // Prefill chunks are at most the step's token budget (and the backend's pass).
    this.pacer = new PrefillPacer(Math.max(1, Math.min(model.backend.maxChunk, batchTokens)), opts.sliceMs);
    this.batcher = new Batcher(model, {
      maxBatch,
      batchTokens,
      prefillChunk: (decodeRows) => this.pacer.next(decodeRows),
      exclusive: (fn) => this.lock.run(fn),
      onStep: (s) => this.pacer.observeStep(s.decodeRows, s.prefillRows, s.ms),
    });
  }

  stats(): EngineStats {
    return {
      active: this.slots.activeCount, queued: this.slots.queuedCount, ...this.totals,
      generating: this.generating, liveStates: this.liveStates, prefill: this.pacer.stats(), batch: this.batcher.stats(),
    };
  }

  /** Frees a request's state under the lock (never while a step may use it: callers wait for their submits). */
  private async free(s: State): Promise<void> {
    await this.lock.run(() => s.free());
    this.liveStates--;
  }

  async run(req: RunRequest): Promise<RunResult> {
    const n = req.n ?? 1;
    if (!(Number.isInteger(n) && n >= 1)) throw new RangeError('n must be an integer ≥ 1');
    const t0 = performance.now();
    const release = await this.slots.acquire(req.signal);
    const queueMs = performance.now() - t0;
    const states: State[] = [];
    try {
      const { tokens, signal } = req;
      const P = tokens.length;
      // Steps 2 + 3: a private copy of the longest cached prefix, then the rest of the prompt.
      const origin = req.initial?.fingerprint ?? '';
      const fresh = (): State => {
        const s = this.model.newState();
        if (req.initial) s.fromHost(req.initial.host);
        return s;
      };
      const hit = await this.lock.run(() => this.cache.lookup(tokens, fresh, origin));
      const st = hit.state;
      states.push(st);
      this.liveStates++;
      const info: PrefillInfo = { promptTokens: P, cachedTokens: hit.length, prefillTokens: P - hit.length, queueMs };
      const tp = performance.now();
      let logits: Float32Array | undefined = hit.logits;
      let done = hit.length;
      if (done < P && !signal.aborted) {
        try {
          logits = await this.batcher.submit(tokens.slice(done), st, {
            signal,
            onProgress: (k) => { done += k; this.totals.prefillTokens += k; this.totals.prefillChunks++; },
          });
        } catch (e) {
          if (!(e instanceof AbortedError && signal.aborted)) throw e;
          logits = undefined;
        }
      }
      const prefillMs = performance.now() - tp;
      this.totals.requests++;
      this.totals.cachedTokens += info.cachedTokens;
      if (signal.aborted || !logits) {
        this.totals.aborted++;
        const seed = req.sampling.seed ?? 0;
        return {
          ...info, prefillTokens: done - hit.length, text: '', completionTokens: 0, finishReason: 'abort', prefillMs, decodeMs: 0, seed,
          choices: Array.from({ length: n }, (_, index) => ({ index, text: '', completionTokens: 0, finishReason: 'abort' as const, decodeMs: 0, seed: choiceSeed(seed, index)! })),
        };
      }
      // Step 4: the state at the end of the prompt, before generation changes it.
      const promptLogits = logits;
      if (this.cache.enabled) await this.lock.run(() => this.cache.insert(tokens, st, promptLogits, origin));

      // Step 5: one state per choice (choice 0 keeps the prompt's own).
      req.onStart?.(info);
      if (n > 1) {
        await this.lock.run(() => {
          for (let i = 1; i < n; i++) { states.push(st.clone()); this.liveStates++; }
        });
      }
      const tg = performance.now();
      const choices = await this.decode(req, states, promptLogits);
      const decodeMs = performance.now() - tg;
      const aborted = signal.aborted || choices.some((c) => c.result.finishReason === 'abort');
      if (aborted) this.totals.aborted++;

      // Step 6: each state now holds prompt + every token in its r.tokens.
      if (this.opts.cacheCompletions && this.cache.enabled && !aborted) {
        for (const { result: r, state } of choices) {
          if (r.tokens.length === 0) continue;
          await this.lock.run(() => this.cache.insert(tokens.concat(r.tokens), state, r.lastLogits, origin));
        }
      }
      const first = choices[0]!.result;
      return {
        ...info,
        text: first.text,
        completionTokens: choices.reduce((a, c) => a + c.result.completionTokens, 0),
        finishReason: aborted ? 'abort' : first.finishReason,
        prefillMs,
        decodeMs,
        seed: first.seed,
        choices: choices.map((c) => c.choice),
      };
    } finally {
      try {
        for (const s of states) await this.free(s);
      } finally {
        release();
      }
    }
  }

  /**
   * Step 5: the n choices, concurrently, each from its own state. The model handed to generate() runs every
   * forward call through the batcher. A failure of one choice (a failed step) stops the others; every choice has
   * settled — none has a request left in the batcher — before this returns or throws.
   */
  private async decode(req: RunRequest, states: State[], logits: Float32Array): Promise<{ result: GenerateResult; choice: ChoiceResult; state: State }[]> {
    const inner = new AbortController();
    const stop = () => inner.abort();
    if (req.signal.aborted) inner.abort();
    else req.signal.addEventListener('abort', stop, { once: true });
    const signal = inner.signal;
    const batched = Object.create(this.model) as RWKV7;
    Object.defineProperty(batched, 'forward', {
      value: (tokens: ArrayLike<number>, state: State) => this.batcher.submit(tokens, state, { signal }),
    });
    const one = async (i: number) => {
      const state = states[i]!;
      const seed = choiceSeed(req.sampling.seed, i);
      const constraint = typeof req.constraint === 'function' ? req.constraint(i) : req.constraint;
      let text = '';
      const tokens: number[] = [];
      const t = performance.now();
      this.generating++;
      let result: GenerateResult;
      try {
        result = await generate(batched, this.tokenizer, state, [], {
          maxTokens: req.maxTokens,
          sampling: { ...req.sampling, seed },
          stop: req.stop,
          signal,
          onText: (s) => { text += s; req.onText?.(s, i); },
          onToken: (id, l) => { tokens.push(id); req.onToken?.(id, l, i); },
          constraint,
          lastLogits: logits,
        });
      } catch (e) {
        // Aborted while its token waited for a step: the same as an abort between steps.
        if (!(e instanceof AbortedError && signal.aborted)) throw e;
        result = {
          text, tokens, promptTokens: 0, completionTokens: tokens.length, finishReason: 'abort', prefillTokS: 0, decodeTokS: 0,
          prefillMs: 0, decodeMs: performance.now() - t, seed: seed ?? 0, lastLogits: logits,
        };
      } finally {
        this.generating--;
      }
      this.totals.completionTokens += result.completionTokens;
      const choice: ChoiceResult = {
        index: i, text: result.text, completionTokens: result.completionTokens, finishReason: result.finishReason,
        decodeMs: result.decodeMs, seed: result.seed,
      };
      if (result.finishReason !== 'abort') req.onChoiceEnd?.(choice);
      return { result, choice, state };
    };
    try {
      const settled = await Promise.allSettled(states.map((_, i) => one(i).catch((e: unknown) => { inner.abort(); throw e; })));
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
      return settled.map((s) => (s as PromiseFulfilledResult<Awaited<ReturnType<typeof one>>>).value);
    } finally {
      req.signal.removeEventListener('abort', stop);
    }
  }

  /** Frees the cached states. */
  close(): void {
    this.slots.close();
    this.cache.clear();
  }
}
