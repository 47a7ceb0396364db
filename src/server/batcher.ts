/**
 * Continuous batching: every forward pass the server needs — each generation's decode step (one token) and each
 * prompt's prefill — is a request to the `Batcher`, and one *step* runs the requests waiting at that moment as ONE
 * `model.forwardBatch(items)` (each sequence with its own state and its own number of new tokens; a weight matrix
 * is read once per step instead of once per sequence). Sequences join and leave between steps.
 *
 * A step:
 *   1. starts on a macrotask (setImmediate) after the request that triggered it, so that every generation that
 *      just got its logits from the previous step has sampled and asked again (generate() yields one macrotask
 *      before it samples; a step that follows a step waits two turns, see `schedule`), and so that the event loop
 *      (I/O, /health, client disconnects, timers) runs between any two steps;
 *   2. takes the waiting one-token requests (decode steps) first, oldest first, up to `maxBatch` sequences and
 *      `batchTokens` rows; while a prompt waits, one sequence and one row stay reserved for prefill, so that a
 *      crowd of decoders cannot starve a new prompt;
 *   3. fills the rest with prefill: the oldest waiting prompts, up to `min(batchTokens − decode rows,
 *      prefillChunk(decode rows))` tokens in all — `prefillChunk` is the time-based pacer's chunk (pacing.ts), so prefill adds
 *      at most about one slice to a step and a long prompt never stalls the decoders for long. A prompt longer than
 *      what a step gives it stays queued, at its place, with its remaining tokens (its promise resolves with the
 *      logits after its last token);
 *   4. runs the pass through `exclusive` (the model lock: state copies, cache inserts and frees take turns with the
 *      steps), then resolves each finished request with its own logits (a fresh Float32Array owned by the caller).
 *
 * Aborts: a request whose signal aborts while it waits leaves the queue at once (its promise rejects with an
 * AbortedError; the caller frees its state); one aborted during a running step is rejected when the step ends.
 * Errors: when forwardBatch throws, every request of that step is rejected with the error (their states are left
 * half-updated: callers drop them); the others stay queued and the next step runs as usual.
 */
import type { BatchItem } from '../model/rwkv7.js';
import type { State } from '../model/state.js';
import { AbortedError } from './scheduler.js';

export interface BatchModel {
  forwardBatch(items: readonly BatchItem[]): Promise<Float32Array[]>;
}

export interface BatcherOptions {
  /** Most sequences in one step (≥ 1). */
  maxBatch: number;
  /** Most token rows in one step: decode tokens plus prefill tokens (≥ 1). */
  batchTokens: number;
  /**
   * Most prefill tokens in one step beside `decodeRows` decode tokens (the pacer's chunk; default: no limit beyond
   * batchTokens). Asked every step.
   */
  prefillChunk?: (decodeRows: number) => number;
  /** Runs a step exclusively (the engine's model lock); default: directly. */
  exclusive?: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Called after every successful step (the pacer's measurements, statistics). */
  onStep?: (step: StepInfo) => void;
  /** Defers a function by one macrotask (default setImmediate). */
  defer?: (fn: () => void) => void;
}

export interface StepInfo {
  /** Token rows in the pass. */
  rows: number;
  /** Sequences in the pass. */
  sequences: number;
  /** Of the rows: decode (one-token) requests. */
  decodeRows: number;
  /** Of the rows: prefill tokens. */
  prefillRows: number;
  ms: number;
}

export interface SubmitOptions {
  /** Aborting removes the request from the queue (the promise rejects with AbortedError). */
  signal?: AbortSignal;
  /** Called after every step that ran some of the request's tokens, with their number. */
  onProgress?: (tokens: number) => void;
}

export interface BatcherStats {
  steps: number;
  /** Token rows run in all. */
  rows: number;
  /** Sequences run in all (summed over steps: rows of different sequences). */
  sequences: number;
  /** Most sequences seen in one step. */
  maxSequences: number;
  /** Requests waiting now (decode and prefill). */
  waiting: number;
  failedSteps: number;
}

interface Pending {
  tokens: ArrayLike<number>;
  state: State;
  /** Tokens already run (a prefill spread over several steps). */
  done: number;
  signal?: AbortSignal;
  onProgress?: (tokens: number) => void;
  resolve: (logits: Float32Array) => void;
  reject: (err: unknown) => void;
  running: boolean;
  settled: boolean;
  onAbort?: () => void;
}

const immediate = (fn: () => void): void => { setImmediate(fn); };

export class Batcher {
  private readonly queue: Pending[] = [];
  /** A step is scheduled or running. */
  private busy = false;
  private readonly totals = { steps: 0, rows: 0, sequences: 0, maxSequences: 0, failedSteps: 0 };
  private readonly defer: (fn: () => void) => void;

  constructor(private readonly model: BatchModel, private readonly opts: BatcherOptions) {
    if (!(Number.isInteger(opts.maxBatch) && opts.maxBatch >= 1)) throw new RangeError('maxBatch must be an integer ≥ 1');
    if (!(Number.isInteger(opts.batchTokens) && opts.batchTokens >= 1)) throw new RangeError('batchTokens must be an integer ≥ 1');
    this.defer = opts.defer ?? immediate;
  }

  get waiting(): number {
    return this.queue.length;
  }

  stats(): BatcherStats {
    return { ...this.totals, waiting: this.queue.length };
  }

  /**
   * Runs `tokens` (≥ 1) from `state` (updated in place) in one or more steps; resolves with the logits after the
   * last token. A state must not have two requests in flight.
   */
  submit(tokens: ArrayLike<number>, state: State, o: SubmitOptions = {}): Promise<Float32Array> {
    if (o.signal?.aborted) return Promise.reject(new AbortedError());
    if (tokens.length === 0) return Promise.reject(new RangeError('batcher: no tokens to run'));
    return new Promise<Float32Array>((resolve, reject) => {
      const p: Pending = { tokens, state, done: 0, signal: o.signal, onProgress: o.onProgress, resolve, reject, running: false, settled: false };
      if (o.signal) {
        p.onAbort = () => {
          if (p.running || p.settled) return; // a running request is rejected when its step ends
          this.remove(p);
          this.settle(p, new AbortedError());
        };
        o.signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.queue.push(p);
      this.schedule(1);
    });
  }

  /**
   * Schedules a step `turns` macrotasks from now unless one is scheduled or running. A submit waits one turn (the
   * other generations of the same round submit in the same turn: each sampled in a setImmediate of its own, queued
   * when the previous step resolved them); the step after a step waits two (generate() yields one turn before it
   * samples, so the decoders that step just served are back by then).
   */
  private schedule(turns: number): void {
    if (this.busy || this.queue.length === 0) return;
    this.busy = true;
    const go = (left: number): void => {
      if (left > 1) { this.defer(() => go(left - 1)); return; }
      this.defer(() => { void this.step(); });
    };
    go(turns);
  }

  private remove(p: Pending): void {
    const i = this.queue.indexOf(p);
    if (i >= 0) this.queue.splice(i, 1);
  }

  private settle(p: Pending, result: Float32Array | unknown, ok = false): void {
    if (p.settled) return;
    p.settled = true;
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    if (ok) p.resolve(result as Float32Array);
    else p.reject(result);
  }

  /** Picks the requests of the next step and how many tokens each runs. */
  private select(): { p: Pending; n: number }[] {
    const { maxBatch, batchTokens } = this.opts;
    const left = (p: Pending) => p.tokens.length - p.done;
    const chunkFor = (decodeRows: number) => Math.max(1, Math.floor(this.opts.prefillChunk?.(decodeRows) ?? batchTokens));
    if (maxBatch === 1 || batchTokens === 1) {
      // No room to mix: the oldest request alone (decode steps and prefill chunks take turns, round-robin).
      const p = this.queue[0];
      return p ? [{ p, n: Math.min(left(p), batchTokens, chunkFor(0)) }] : [];
    }
    const prefillWaiting = this.queue.some((p) => left(p) > 1);
    // While a prompt waits, keep one sequence and one row for it.
    const seqCap = prefillWaiting && maxBatch > 1 ? maxBatch - 1 : maxBatch;
    const rowCap = prefillWaiting && batchTokens > 1 ? batchTokens - 1 : batchTokens;
    const picked: { p: Pending; n: number }[] = [];
    let rows = 0;
    for (const p of this.queue) {
      if (picked.length >= seqCap || rows >= rowCap) break;
      if (left(p) === 1) { picked.push({ p, n: 1 }); rows++; }
    }
    let prefill = Math.min(batchTokens - rows, chunkFor(rows));
    for (const p of this.queue) {
      if (picked.length >= maxBatch || prefill <= 0) break;
      const l = left(p);
      if (l <= 1) continue;
      const n = Math.min(l, prefill);
      picked.push({ p, n });
      prefill -= n;
    }
    return picked;
  }

  private async step(): Promise<void> {
    const picked = this.select();
    if (picked.length === 0) { this.busy = false; return; }
    for (const { p } of picked) p.running = true;
    const items: BatchItem[] = picked.map(({ p, n }) => ({
      tokens: p.done === 0 && n === p.tokens.length ? p.tokens : Array.prototype.slice.call(p.tokens, p.done, p.done + n) as number[],
      state: p.state,
    }));
    const rows = picked.reduce((a, x) => a + x.n, 0);
    const decodeRows = picked.filter((x) => x.p.tokens.length - x.p.done === 1).length;
    const exclusive = this.opts.exclusive ?? (<T>(fn: () => Promise<T>) => fn());
    let out: Float32Array[] | undefined;
    let error: unknown;
    let ms = 0;
    try {
      out = await exclusive(async () => {
        const t = performance.now();
        const r = await this.model.forwardBatch(items);
        ms = performance.now() - t;
        return r;
      });
    } catch (e) {
      error = e;
    }
    if (out) {
      this.totals.steps++;
      this.totals.rows += rows;
      this.totals.sequences += picked.length;
      this.totals.maxSequences = Math.max(this.totals.maxSequences, picked.length);
      try {
        this.opts.onStep?.({ rows, sequences: picked.length, decodeRows, prefillRows: rows - decodeRows, ms });
      } catch { /* statistics never break a step */ }
    } else {
      this.totals.failedSteps++;
    }
    picked.forEach(({ p, n }, i) => {
      p.running = false;
      if (!out) {
        this.remove(p);
        this.settle(p, error);
        return;
      }
      p.done += n;
      try { p.onProgress?.(n); } catch { /* a caller's counter never breaks a step */ }
      if (p.done === p.tokens.length) {
        this.remove(p);
        this.settle(p, out[i]!, true);
      } else if (p.signal?.aborted) {
        this.remove(p);
        this.settle(p, new AbortedError());
      }
    });
    this.busy = false;
    this.schedule(2);
  }
}
