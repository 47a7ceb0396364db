/**
 * Keeping the server responsive while the model computes. The model runs on the main thread and one forward
 * call is synchronous from start to end, so the event loop (new connections, /health, client disconnects,
 * timeouts) only runs between calls. Two rules keep those gaps short:
 *
 * 1. every prefill chunk and every decode step is followed by `yieldToEventLoop()` (a macrotask turn: an
 *    `await` of an already-settled promise only runs microtasks, never I/O); its cost is ~15 µs;
 * 2. the prefill chunk is sized by time, not by the backend's `maxChunk`: `PrefillPacer` measures what the
 *    calls really take and picks the chunk for a slice budget.
 *
 * The cost model: a forward call of T tokens takes about `c1 + b·(T − 1)` ms, c1 being a one-token call
 * (embedding, every layer once, and the 65536-row logits head, which every call computes; every decode step
 * measures it) and b each further token (measured by the prefill calls). The chunk is the largest T whose
 * call fits the budget `max(sliceMs, 1.5·c1)`, between 2 and `maxChunk`, and at most twice the largest chunk
 * measured so far. The floor of the budget at 1.5·c1 matters where a single token already exceeds `sliceMs` — the js
 * reference backend (~60 ms, nearly all of it the head), a 0.1B model on a slow or busy CPU: one decode step
 * is the shortest slice there is anyway, and prefill chunks of up to 1.5 decode steps still reach a good part
 * of the backend's prefill speed instead of running token by token. The engine's very first call is not
 * measured (cold caches, compilation). Both estimates follow a faster call quickly and a slower one slowly: a
 * slow call is mostly the host running something else (then the event loop was not running either), and
 * chunks sized for a busy moment would stay small long after it. c1 never exceeds what a longer call took.
 *
 * Measured on the 2-core development host (busy): the bundled L6-D192 model on wasm takes ~5 ms for one
 * token and ~0.5 ms per further token (64-token chunks ≈ 35 ms: the chunk stays at maxChunk); on js ~63 ms
 * + ~7.5 ms/token (chunks of ~5, ≈ 90 ms); a 0.1B-shaped model on wasm ~130 ms + ~17 ms/token (chunks of ~4,
 * ≈ 190 ms). On an idle desktop CPU the 0.1B numbers are several times smaller and the 50 ms target is met
 * with chunks of ~10–20.
 */

/*
 * With continuous batching (batcher.ts) a forward call is a step: the decode tokens of every active generation
 * plus prefill tokens of waiting prompts. The pacer observes every step (`observeStep`: decode-only steps measure
 * e, the cost of each further decode row — a row of the logits head included —, mixed steps b, the cost of a
 * prefill token on top of the decode rows) and its chunk bounds the *prefill* tokens of one step: beside decode
 * tokens, `next(decodeRows)` is budget / b, so prefill adds at most about one slice to a step, whatever the decode
 * tokens beside it cost. The chunk is also at most the step's token budget (`--batch-tokens`: the engine passes
 * min(maxChunk, batchTokens) as maxChunk).
 */

/** Lets pending I/O (new connections, other requests, socket closes, timers) run. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export interface PacerStats {
  /** Tokens in the next prefill chunk. */
  chunk: number;
  /** Estimated ms of a one-token forward call (undefined until measured). */
  oneTokenMs?: number;
  /** Estimated ms of each token beyond the first in one call. */
  perTokenMs?: number;
  /** Estimated ms of each decode token beyond the first in a batched step. */
  perDecodeRowMs?: number;
}

const PROBE = 8; // tokens in the call that first measures b

export class PrefillPacer {
  private c1?: number;
  private b?: number;
  /** ms of each decode row beyond the first in a batched step (measured by decode-only steps). */
  private e?: number;
  /** ms of the latest decode-only steps, by their number of decode rows (the base a mixed step adds prefill to). */
  private readonly decodeStep = new Map<number, number>();
  private calls = 0;
  private last = 0;

  /**
   * @param maxChunk the backend's largest chunk
   * @param sliceMs target duration of one synchronous forward call
   */
  constructor(readonly maxChunk: number, readonly sliceMs = 50) {
    if (!(Number.isInteger(maxChunk) && maxChunk >= 1)) throw new RangeError('maxChunk must be an integer ≥ 1');
    if (!(sliceMs > 0)) throw new RangeError('sliceMs must be > 0');
  }

  /** The slice budget: sliceMs, or 1.5 one-token calls where a single token takes longer. */
  get budgetMs(): number {
    return Math.max(this.sliceMs, 1.5 * (this.c1 ?? 0));
  }

  /**
   * Tokens for the next prefill call: 1 until c1 is measured, then a probe for b, then the cost model. Beside
   * `decodeRows` > 0 decode tokens (a batched step) the chunk is what adds about one budget to the step: budget / b.
   */
  next(decodeRows = 0): number {
    if (this.c1 === undefined) return 1;
    if (this.b === undefined) return Math.min(this.maxChunk, PROBE);
    const b = Math.max(this.b, 1e-3);
    const fit = decodeRows > 0 ? Math.floor(this.budgetMs / b) : 1 + Math.floor((this.budgetMs - this.c1) / b);
    return Math.max(Math.min(2, this.maxChunk), Math.min(this.maxChunk, 2 * Math.max(1, this.last), fit));
  }

  /** Records that a forward call of `tokens` tokens took `ms` (decode steps count too: they measure c1). */
  observe(tokens: number, ms: number): void {
    if (!(Number.isInteger(tokens) && tokens >= 1) || !(ms >= 0 && Number.isFinite(ms))) return;
    if (this.calls++ === 0) return; // the first call runs cold
    if (tokens === 1) {
      const a = this.c1 === undefined ? 1 : ms < this.c1 ? 0.7 : 0.1;
      this.c1 = this.c1 === undefined ? ms : this.c1 + a * (ms - this.c1);
      return;
    }
    // The growth limit is twice the largest chunk measured (a prompt's last chunk is only its remainder).
    this.last = Math.max(this.last, tokens);
    if (this.c1 === undefined) return;
    this.c1 = Math.min(this.c1, ms);
    const per = Math.max(1e-3, (ms - this.c1) / (tokens - 1));
    this.b = this.b === undefined ? per : this.b + (per < this.b ? 0.5 : 0.1) * (per - this.b);
  }

  /**
   * Records a batched step (batcher.ts): `decodeRows` one-token sequences and `prefillRows` prompt tokens took `ms`.
   * Decode-only steps measure e (and the step time for their number of rows, D); a mixed step measures b as what it
   * took beyond a decode-only step of the same D (else beyond c1 + (D − 1)·e), per prefill token — weighted by
   * P / 8, since a small P leaves the estimate to the noise of the step. A step of one kind only is an ordinary
   * call (`observe`).
   */
  observeStep(decodeRows: number, prefillRows: number, ms: number): void {
    const D = decodeRows, P = prefillRows;
    if (!(Number.isInteger(D) && D >= 0 && Number.isInteger(P) && P >= 0 && D + P >= 1)) return;
    if (D === 0 || (D === 1 && P === 0)) { this.observe(D + P, ms); return; }
    if (!(ms >= 0 && Number.isFinite(ms))) return;
    if (this.calls++ === 0) return;
    // Several sequences before any one-token call: a provisional (low) c1, so that the probes can follow; one-token
    // steps correct it.
    if (this.c1 === undefined) { this.c1 = ms / (D + P); return; }
    const ema = (old: number | undefined, x: number) => (old === undefined ? x : old + (x < old ? 0.5 : 0.1) * (x - old));
    if (P === 0) {
      this.e = ema(this.e, Math.max(1e-3, (ms - this.c1) / (D - 1)));
      const d = this.decodeStep.get(D);
      this.decodeStep.set(D, d === undefined ? ms : d + 0.3 * (ms - d));
      return;
    }
    const base = this.decodeStep.get(D) ?? (D === 1 ? this.c1 : this.e === undefined ? undefined : this.c1 + (D - 1) * this.e);
    if (base === undefined) return; // the decode rows' share is not known yet
    this.last = Math.max(this.last, P);
    const per = Math.max(1e-3, (ms - base) / P);
    if (this.b === undefined) { this.b = per; return; }
    this.b += Math.min(1, P / PROBE) * (per < this.b ? 0.5 : 0.1) * (per - this.b);
  }

  stats(): PacerStats {
    return { chunk: this.next(), oneTokenMs: round(this.c1), perTokenMs: round(this.b), perDecodeRowMs: round(this.e) };
  }
}

function round(x: number | undefined): number | undefined {
  return x === undefined ? undefined : Math.round(x * 100) / 100;
}
