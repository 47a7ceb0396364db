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

/**
 * xoshiro128** (Blackman & Vigna), a small fast 32-bit PRNG, seeded through splitmix32 so that any number
 * (including 0 and non-integers) gives a well-mixed non-zero state.
 */
export class Rng {
  private s = new Uint32Array(4);

  constructor(seed: number) {
    // Fold the seed (possibly larger than 32 bits or fractional) into two 32-bit words.
    let x = (Math.floor(seed) >>> 0) ^ (Math.floor(seed / 2 ** 32) >>> 0) ^ (Math.round((seed % 1) * 2 ** 31) >>> 0);
    for (let i = 0; i < 4; i++) {
      // splitmix32
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s[0] === 0 && this.s[1] === 0 && this.s[2] === 0 && this.s[3] === 0) this.s[0] = 1;
  }

  /** Next 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.s;
    const rotl = (v: number, k: number) => ((v << k) | (v >>> (32 - k))) >>> 0;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

/** A random seed (used when none is given). */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 32);
}

/** True when the package would give this decoded token weight 0 (`ttt in ' \t0123456789'`, a substring test). */
export function isPenaltyFreeText(text: string): boolean {
  return ' \t0123456789'.includes(text);
}

/**
 * Repetition-penalty bookkeeping: decayed occurrence counts of the generated tokens.
 * Kept separate from the sampler so it can be tested (and reset) on its own.
 */
export class PenaltyTracker {
  /** token id → decayed count; a token present with count 0 still gets the presence penalty. */
  readonly counts = new Map<number, number>();

  constructor(
    private readonly presence: number,
    private readonly frequency: number,
    private readonly decay: number,
  ) {}

  /** logits[t] -= presence + count[t] * frequency for every recorded token (in place). */
  apply(logits: Float32Array | Float64Array): void {
    for (const [t, c] of this.counts) {
      if (t < logits.length) logits[t] = logits[t]! - (this.presence + c * this.frequency);
    }
  }

  /** After sampling `token`: decay every count, then add `weight` (0 or 1) to the token's count. */
  record(token: number, weight: number): void {
    for (const [t, c] of this.counts) this.counts.set(t, c * this.decay);
    this.counts.set(token, (this.counts.get(token) ?? 0) + weight);
  }

  clear(): void {
    this.counts.clear();
  }
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
 * Turns (already penalised) logits into the final sampling distribution of the package's `sample_logits`
 * for temperature > 0: softmax → top-p cutoff → top-k → ** (1/temperature) → renormalise.
 * Returns the kept token ids and their probabilities (summing to 1), most probable first.
 * Exported for tests.
 */
export function samplingDistribution(logits: ArrayLike<number>, temperature: number, topP: number, topK: number): { ids: number[]; probs: number[] } {
  const V = logits.length;
  // softmax in float64
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i]! > max) max = logits[i]!;
  if (max === -Infinity) throw new UserError('cannot sample: every token is banned');
  const p = new Float64Array(V);
  let sum = 0;
  for (let i = 0; i < V; i++) {
    const e = Math.exp(logits[i]! - max);
    p[i] = e;
    sum += e;
  }
  for (let i = 0; i < V; i++) p[i]! /= sum;

  // Candidates, sorted by probability (descending, ties by id). Only tokens that can matter are sorted: every
  // token left out has p < eps, so all of them together hold < V * eps = 1 - topP, hence the sorted candidates
  // alone reach the cumulative top_p, and the cutoff lies among them. With top-p off (≥ 1) every token is a
  // candidate unless top-k limits the set (then the k best are found among the top candidates anyway).
  const eps = topP < 1 ? (1 - topP) / V : 0;
  const cand: number[] = [];
  for (let i = 0; i < V; i++) if (p[i]! > 0 && p[i]! >= eps) cand.push(i);
  cand.sort((a, b) => p[b]! - p[a]! || a - b);

  // top-p: cutoff = probability of the first sorted token where the cumulative sum reaches top_p.
  let cutoff = 0;
  if (topP < 1) {
    let cum = 0;
    for (const id of cand) {
      cum += p[id]!;
      if (cum >= topP) { cutoff = p[id]!; break; }
    }
  }
  // Keep every token with p ≥ cutoff (ties with the cutoff are kept, as `probs[probs < cutoff] = 0` does).
  let kept = cand.filter((id) => p[id]! >= cutoff);
  // top-k: the k most probable (in sorted order).
  if (topK > 0 && kept.length > topK) kept = kept.slice(0, topK);

  const probs = kept.map((id) => (temperature === 1 ? p[id]! : p[id]! ** (1 / temperature)));
  let total = 0;
  for (const q of probs) total += q;
  if (!(total > 0) || !Number.isFinite(total)) {
    // Extreme temperatures can underflow/overflow: fall back to the most probable token.
    return { ids: [kept[0]!], probs: [1] };
  }
  return { ids: kept, probs: probs.map((q) => q / total) };
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
    const x = new Float64Array(logits);
    for (const t of this.opts.banTokens ?? []) if (t < x.length) x[t] = -Infinity;
    this.penalties.apply(x);
    if (this.opts.temperature === 0) return argmax(x);
    const { ids, probs } = samplingDistribution(x, this.opts.temperature, this.opts.topP, this.opts.topK);
    const u = this.rng.next();
    let acc = 0;
    for (let i = 0; i < ids.length; i++) {
      acc += probs[i]!;
      if (u < acc) return ids[i]!;
    }
    return ids[ids.length - 1]!;
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

  /** The current decayed occurrence counts (token id → count). */
  get counts(): ReadonlyMap<number, number> {
    return this.penalties.counts;
  }
}
