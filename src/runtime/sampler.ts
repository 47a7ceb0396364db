/**
 * Token sampling, following the official `rwkv` pip package (`rwkv/utils.py`: `PIPELINE.sample_logits` and the
 * repetition-penalty bookkeeping of `PIPELINE.generate`, which the official chat demos share):
 *
 *   1. bans:       logits[t] = -inf for every banned token
 *   2. penalties:  logits[t] -= presence + count[t] * frequency, for every token t recorded so far
 *   3. sampling:   temperature 0 → argmax (greedy); otherwise
 *                  probs = softmax(logits) (float64 here)
 *                  top-p: sort descending, find the first position where the cumulative probability reaches top_p,
 *                         cutoff = the probability there, zero every token below the cutoff (ties are kept)
 *                  top-k: keep only the k most probable tokens (0 = off)
 *                  probs = probs ** (1 / temperature), renormalised, and one token drawn from them
 *   4. bookkeeping (after the token is chosen): every count *= penalty_decay, then count[token] += weight, where
 *      weight = 0 when the token's decoded text is a substring of " \t0123456789" (Python's `ttt in ' \t0123456789'`:
 *      a single space, tab or digit, a run of consecutive characters of that string such as "12" or "789", or the
 *      empty string, e.g. token 0), else 1. A token that is an incomplete UTF-8 piece decodes to U+FFFD (in the
 *      package too), which is not such a substring, so it is counted.
 *      As in the package, a weight-0 token is still *recorded* (count 0), so from then on it still receives the
 *      presence penalty, but its frequency count never grows.
 *
 * Deliberate differences from the package: temperature 0 takes the single argmax (the package samples among
 * exact ties); when the cumulative probability never reaches top_p (top_p ≥ 1 or rounding) every token is kept
 * (the package's `np.argmax` of an all-false mask would fall back to greedy); the random numbers come from a
 * seeded xoshiro128** generator instead of numpy's global one.
 */
import type { WorldTokenizer } from '../tokenizer/index.js';
import { UserError } from '../errors.js';
import { Rng, randomSeed } from './rng.js';
import { PenaltyTracker, isPenaltyFreeText } from './penalties.js';
import { workspace, type Workspace } from './sampler-workspace.js';

// The pieces live in modules of their own — the random generator (./rng.ts), the penalty bookkeeping
// (./penalties.ts) and the bucketed softmax / top-p / draw (./sampler-workspace.ts) — and are re-exported here:
// this module stays the sampler's public surface.
export { Rng, randomSeed } from './rng.js';
export { PenaltyTracker, isPenaltyFreeText } from './penalties.js';
export { bucketWalkForTests } from './sampler-workspace.js';

export interface SamplingOptions {
  /** 0 = greedy (argmax). */
  temperature: number;
  /** Nucleus sampling threshold in (0, 1]; 1 = off. */
  topP: number;
  /** Keep only the k most probable tokens; 0 = off. */
  topK: number;
  /** Subtracted once from the logit of every token already generated (the package's `alpha_presence`). */
  presencePenalty: number;
  /** Subtracted per (decayed) occurrence (the package's `alpha_frequency`). */
  frequencyPenalty: number;
  /** Every occurrence count is multiplied by this after each token (the package's `alpha_decay`). */
  penaltyDecay: number;
  /** Token ids that are never sampled. */
  banTokens?: number[];
  /** Seed of the random generator: the same seed gives the same tokens. Default: random. */
  seed?: number;
}

/** The `rwkv` package's `PIPELINE_ARGS` defaults (used by `rwkv7 generate`). */
export const GENERATE_DEFAULTS: SamplingOptions = Object.freeze({
  temperature: 1.0,
  topP: 0.85,
  topK: 0,
  presencePenalty: 0.2,
  frequencyPenalty: 0.2,
  penaltyDecay: 0.996,
}) as SamplingOptions;

/** The official RWKV-7 G1 chat demo's settings (used by `rwkv7 chat`). */
export const CHAT_DEFAULTS: SamplingOptions = Object.freeze({
  temperature: 1.0,
  topP: 0.5,
  topK: 0,
  presencePenalty: 2.0,
  frequencyPenalty: 0.1,
  penaltyDecay: 0.99,
}) as SamplingOptions;

/** Checks the ranges of the sampling options; throws a UserError naming the bad one. */
export function validateSampling(o: SamplingOptions): void {
  const bad = (what: string) => { throw new UserError(`invalid sampling option: ${what}`); };
  if (!(Number.isFinite(o.temperature) && o.temperature >= 0)) bad(`temperature must be ≥ 0 (got ${o.temperature})`);
  if (!(Number.isFinite(o.topP) && o.topP >= 0 && o.topP <= 1)) bad(`top-p must be in [0, 1] (got ${o.topP})`);
  if (!(Number.isInteger(o.topK) && o.topK >= 0)) bad(`top-k must be an integer ≥ 0 (got ${o.topK})`);
  if (!Number.isFinite(o.presencePenalty)) bad(`presence penalty must be a number (got ${o.presencePenalty})`);
  if (!Number.isFinite(o.frequencyPenalty)) bad(`frequency penalty must be a number (got ${o.frequencyPenalty})`);
  if (!(Number.isFinite(o.penaltyDecay) && o.penaltyDecay >= 0 && o.penaltyDecay <= 1)) bad(`penalty decay must be in [0, 1] (got ${o.penaltyDecay})`);
  if (o.seed !== undefined && !(Number.isFinite(o.seed))) bad(`seed must be a number (got ${o.seed})`);
  for (const t of o.banTokens ?? []) if (!(Number.isInteger(t) && t >= 0)) bad(`banned token ${t} is not a token id`);
}

/** Index of the largest value (the first one on ties); -inf/NaN entries never win over a finite value. */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v > bv) { bv = v; best = i; }
  }
  return best;
}

/**
 * The kept tokens of the package's `sample_logits` (temperature > 0) for the logits in ws.kernel.x:
 * softmax → top-p cutoff → top-k → ** (1/temperature). On return ws.kept is their number and ws.total the sum of
 * their weights in sorted order. With `sorted`, ws.ids[0, kept) are the kept token ids, most probable first, and
 * `ws.weights[0, kept)` their unnormalised weights; without it that order is only guaranteed where `drawPosition`
 * establishes it (temperature 1 and no top-k cut: returns false), else (returns true) it is complete.
 */
function keptDistribution(ws: Workspace, temperature: number, topP: number, topK: number, sorted: boolean): boolean {
  // Every token with p < eps can be left out: all of them together hold < V * eps = 1 - topP, so the candidates
  // alone reach the cumulative top_p, and the cutoff lies among them (with top-p off, every p > 0 is a candidate).
  const eps = topP < 1 ? (1 - topP) / ws.V : 0;
  ws.prepare(eps);
  const { vals, n } = ws;
  // No candidate at all only happens when the logits hold NaN or +Infinity (the softmax is NaN everywhere).
  if (n === 0) throw new UserError('cannot sample: the logits are not finite numbers');

  // top-p, and the sum of the kept probabilities in sorted order: with temperature 1 and no top-k cut it is the
  // total below (the same additions in the same order).
  let kept = ws.nucleus(topP < 1 ? topP : Infinity);
  let total = ws.total;
  // top-k: the k most probable (in sorted order).
  let cut = false;
  if (topK > 0 && kept > topK) {
    kept = topK;
    cut = true;
  }
  ws.kept = kept;
  ws.weights = vals;
  if (temperature === 1 && !cut) {
    ws.total = total;
    if (sorted) ws.sortThrough(kept);
    return sorted;
  }
  ws.sortThrough(kept);
  let weights = vals;
  if (temperature !== 1) {
    weights = ws.tmpVals; // free once sorting is done
    const inv = 1 / temperature;
    for (let j = 0; j < kept; j++) weights[j] = vals[j]! ** inv;
  }
  total = 0;
  for (let j = 0; j < kept; j++) total += weights[j]!;
  ws.weights = weights;
  ws.total = total;
  return true;
}

/** Extreme temperatures can underflow/overflow the total: then the most probable token is taken. */
const degenerate = (total: number) => !(total > 0) || !Number.isFinite(total);

/**
 * Turns (already penalised) logits into the final sampling distribution of the package's `sample_logits`
 * for temperature > 0: softmax → top-p cutoff → top-k → ** (1/temperature) → renormalise.
 * Returns the kept token ids and their probabilities (summing to 1), most probable first.
 * Exported for tests; the sampler draws from the same computation without building these arrays.
 */
export function samplingDistribution(logits: ArrayLike<number>, temperature: number, topP: number, topK: number): { ids: number[]; probs: number[] } {
  const ws = workspace(logits.length);
  ws.kernel.x.set(logits);
  keptDistribution(ws, temperature, topP, topK, true);
  const { kept, weights, total } = ws;
  if (degenerate(total)) return { ids: [ws.ids[0]!], probs: [1] };
  const ids = Array.from(ws.ids.subarray(0, kept));
  const probs = Array.from(weights.subarray(0, kept), (w) => w / total);
  return { ids, probs };
}

/**
 * Draws one token from the distribution of `samplingDistribution` for the logits in ws.kernel.x: with
 * u = random() in [0, 1) (drawn once the distribution is known, even when it is degenerate), the first token, most
 * probable first, where the running sum of the normalised probabilities exceeds u. The same operations in the same
 * order as summing `probs` would be.
 */
function drawToken(ws: Workspace, temperature: number, topP: number, topK: number, rng: Rng): number {
  const sorted = keptDistribution(ws, temperature, topP, topK, false);
  const { ids, kept, weights, total } = ws;
  const u = rng.next();
  if (!sorted) return ids[ws.drawPosition(kept, total, u)]!; // temperature 1: total is a positive sum
  if (degenerate(total)) return ids[0]!;
  let acc = 0;
  for (let j = 0; j < kept; j++) {
    acc += weights[j]! / total;
    if (u < acc) return ids[j]!;
  }
  return ids[kept - 1]!;
}

export class Sampler {
  readonly opts: SamplingOptions;
  /** The seed in use (given or drawn at random), so a run can be repeated. */
  readonly seed: number;
  private rng: Rng;
  private readonly penalties: PenaltyTracker;
  /** Cache: does token id decode to penalty-free text? (decoding every step would be wasteful) */
  private readonly freeCache = new Map<number, boolean>();

  constructor(opts: SamplingOptions, private readonly tokenizer: WorldTokenizer) {
    validateSampling(opts);
    this.opts = { ...opts };
    this.seed = opts.seed ?? randomSeed();
    this.rng = new Rng(this.seed);
    this.penalties = new PenaltyTracker(opts.presencePenalty, opts.frequencyPenalty, opts.penaltyDecay);
  }

  /**
   * Picks the next token from `logits` (not modified): applies bans and penalties, samples, and records the
   * token for the repetition penalties of the following steps.
   */
  sample(logits: Float32Array): number {
    const token = this.choose(logits);
    this.record(token);
    return token;
  }

  /** Applies bans and penalties and samples, without recording the token. */
  choose(logits: Float32Array): number {
    const ws = workspace(logits.length);
    const x = ws.kernel.x; // reused buffer (its contents are not needed after this call)
    x.set(logits);
    const bans = this.opts.banTokens;
    if (bans) for (let i = 0; i < bans.length; i++) if (bans[i]! < x.length) x[bans[i]!] = -Infinity;
    this.penalties.apply(x);
    if (this.opts.temperature === 0) return argmax(x);
    // The distribution is computed before the random number is drawn (as before: an all-banned vector throws
    // without consuming it).
    const { temperature, topP, topK } = this.opts;
    return drawToken(ws, temperature, topP, topK, this.rng);
  }

  /** Records a token for the repetition penalties (decay, then count += weight). */
  record(token: number): void {
    let free = this.freeCache.get(token);
    if (free === undefined) {
      free = isPenaltyFreeText(this.tokenizer.decode([token]));
      this.freeCache.set(token, free);
    }
    this.penalties.record(token, free ? 0 : 1);
  }

  /** Forgets the recorded tokens (the penalties start afresh), keeping the random stream. */
  resetPenalties(): void {
    this.penalties.clear();
  }

  /** The current decayed occurrence counts (token id → count; a snapshot). */
  get counts(): ReadonlyMap<number, number> {
    return this.penalties.counts;
  }
}
