/**
 * The server's generation engine: admission (SlotQueue), exclusive model access (FifoLock), the prompt state
 * cache, prefill and the generation loop (runtime/generate.ts).
 *
 * Life of a request:
 *   1. wait for a generation slot (FIFO; QueueFullError when the queue is full, AbortedError if the client
 *      leaves while waiting);
 *   2. look up the longest cached prefix of the prompt tokens and take a private copy of its state (a prefix
 *      shorter than the prompt, or the whole prompt when the cache kept the logits after it: a repeat needs no
 *      prefill at all);
 *   3. prefill the remaining prompt tokens, one chunk per lock turn, sized by time (pacing.ts) and followed by a
 *      turn of the event loop, so that other requests, /health and disconnects are served while a long prompt
 *      is processed; an abort (client gone) is checked before every chunk;
 *   4. cache a copy of the state (and logits) at the end of the prompt — the next chat turn's prompt starts
 *      with it;
 *   5. `onStart` (the HTTP layer sends its headers), then generate; every decode step takes the lock once (and
 *      generate() yields to the event loop before each one);
 *   6. optionally cache the state after prompt + completion (a follow-up that quotes the answer verbatim hits
 *      it), free the request's state, release the slot.
 * A request's state is its own from step 2 to 6: states are copied in and out of the cache, never shared.
 */
import type { RWKV7, ForwardOptions } from '../model/rwkv7.js';
import type { State } from '../model/state.js';
import type { WorldTokenizer } from '../tokenizer/index.js';
import type { SamplingOptions } from '../runtime/sampler.js';
import { generate, type FinishReason } from '../runtime/generate.js';
import { StateCache } from '../runtime/state-cache.js';
import type { TokenConstraint } from '../runtime/constraint/index.js';
import type { InitialState } from '../model/state-file.js';
import { FifoLock, SlotQueue } from './scheduler.js';
import { PrefillPacer, yieldToEventLoop, type PacerStats } from './pacing.js';

export interface EngineOptions {
  maxActive: number;
  maxQueue: number;
  /** Bytes of state the prefix cache may hold (0 = off). */
  cacheBytes: number;
  /** Also cache the state after prompt + completion. */
  cacheCompletions: boolean;
  /** Target ms of one synchronous prefill call (the chunk size adapts to it; default 50). See pacing.ts. */
  sliceMs?: number;
}

export interface RunRequest {
  tokens: number[];
  maxTokens: number;
  sampling: SamplingOptions;
  stop: string[];
  signal: AbortSignal;
  /** Called once, after the prompt is processed and before the first token is sampled. */
  onStart?: (info: PrefillInfo) => void;
  onText?: (chunk: string) => void;
  /** Each generated token with the raw logits it was sampled from (for logprobs). */
  onToken?: (id: number, logits: Float32Array) => void;
  /** Constrained decoding (response_format): one per request. */
  constraint?: TokenConstraint;
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

export interface RunResult extends PrefillInfo {
  text: string;
  completionTokens: number;
  finishReason: FinishReason;
  prefillMs: number;
  decodeMs: number;
  seed: number;
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
  prefill: PacerStats;
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
  /** The model with every forward pass taken under the lock (what `generate` is given). */
  private readonly locked: RWKV7;
  readonly pacer: PrefillPacer;
  private readonly totals = { requests: 0, aborted: 0, completionTokens: 0, prefillTokens: 0, prefillChunks: 0, cachedTokens: 0 };

  constructor(
    readonly model: RWKV7,
    readonly tokenizer: WorldTokenizer,
    private readonly opts: EngineOptions,
  ) {
    this.lock = lockFor(model);
    this.slots = new SlotQueue(opts.maxActive, opts.maxQueue);
    this.cache = new StateCache(opts.cacheBytes);
    this.pacer = new PrefillPacer(Math.max(1, model.backend.maxChunk), opts.sliceMs);
    // An object that inherits everything from the model but routes `forward` through the lock, so that the
    // generation loop's decode steps of concurrent requests take turns (one forward pass at a time); each
    // call is timed for the pacer.
    const locked = Object.create(model) as RWKV7;
    Object.defineProperty(locked, 'forward', {
      value: (tokens: ArrayLike<number>, state: State, o?: ForwardOptions) => this.lock.run(() => this.timedForward(tokens, state, o)),
    });
    this.locked = locked;
  }

  stats(): EngineStats {
    return { active: this.slots.activeCount, queued: this.slots.queuedCount, ...this.totals, prefill: this.pacer.stats() };
  }

  /** One forward call (the caller holds the lock), timed for the pacer. */
  private async timedForward(tokens: ArrayLike<number>, state: State, o?: ForwardOptions): Promise<Float32Array> {
    const t = performance.now();
    const logits = await this.model.forward(tokens, state, o);
    this.pacer.observe(tokens.length, performance.now() - t);
    return logits;
  }

  async run(req: RunRequest): Promise<RunResult> {
    const t0 = performance.now();
    const release = await this.slots.acquire(req.signal);
    const queueMs = performance.now() - t0;
    let state: State | undefined;
    try {
      const { tokens, signal } = req;
      const n = tokens.length;
      // Steps 2 + 3: a private copy of the longest cached prefix, then the rest of the prompt.
      const origin = req.initial?.fingerprint ?? '';
      const fresh = (): State => {
        const s = this.model.newState();
        if (req.initial) s.fromHost(req.initial.host);
        return s;
      };
      const hit = await this.lock.run(() => this.cache.lookup(tokens, fresh, origin));
      state = hit.state;
      const st = state;
      const info: PrefillInfo = { promptTokens: n, cachedTokens: hit.length, prefillTokens: n - hit.length, queueMs };
      const tp = performance.now();
      let logits: Float32Array | undefined = hit.logits;
      let done = hit.length;
      while (done < n && !signal.aborted) {
        const part = tokens.slice(done, Math.min(n, done + this.pacer.next()));
        logits = await this.lock.run(() => this.timedForward(part, st));
        done += part.length;
        this.totals.prefillTokens += part.length;
        this.totals.prefillChunks++;
        if (done < n) await yieldToEventLoop();
      }
      const prefillMs = performance.now() - tp;
      this.totals.requests++;
      this.totals.cachedTokens += info.cachedTokens;
      if (signal.aborted || !logits) {
        this.totals.aborted++;
        return {
          ...info, prefillTokens: done - hit.length, text: '', completionTokens: 0, finishReason: 'abort', prefillMs, decodeMs: 0,
          seed: req.sampling.seed ?? 0,
        };
      }
      // Step 4: the state at the end of the prompt, before generation changes it.
      const promptLogits = logits;
      if (this.cache.enabled) await this.lock.run(() => this.cache.insert(tokens, st, promptLogits, origin));

      // Step 5.
      req.onStart?.(info);
      const r = await generate(this.locked, this.tokenizer, st, [], {
        maxTokens: req.maxTokens,
        sampling: req.sampling,
        stop: req.stop,
        signal,
        onText: req.onText,
        onToken: req.onToken,
        constraint: req.constraint,
        lastLogits: logits,
      });
      this.totals.completionTokens += r.completionTokens;
      if (r.finishReason === 'abort') this.totals.aborted++;

      // Step 6: the state now holds prompt + every token in r.tokens.
      if (this.opts.cacheCompletions && this.cache.enabled && r.finishReason !== 'abort' && r.tokens.length > 0) {
        await this.lock.run(() => this.cache.insert(tokens.concat(r.tokens), st, r.lastLogits, origin));
      }
      return {
        ...info,
        text: r.text,
        completionTokens: r.completionTokens,
        finishReason: r.finishReason,
        prefillMs,
        decodeMs: r.decodeMs,
        seed: r.seed,
      };
    } finally {
      try {
        const s = state;
        if (s) await this.lock.run(() => s.free());
      } finally {
        release();
      }
    }
  }

  /** Frees the cached states. */
  close(): void {
    this.slots.close();
    this.cache.clear();
  }
}
