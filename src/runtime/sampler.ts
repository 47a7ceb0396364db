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
import {
  expKind, loopKind, samplerKernel, highWordOf, KERNEL_MAX_BUCKETS, SPLIT_LEVELS, SPLIT_MAX,
  type ExpKind, type LoopKind, type SamplerKernel,
} from './fast-exp.js';

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
    const m = Math.imul(s[1]!, 5) >>> 0;
    const result = Math.imul(((m << 7) | (m >>> 25)) >>> 0, 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    const w = s[3]!;
    s[3] = ((w << 11) | (w >>> 21)) >>> 0;
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
 * Kept separate from the sampler so it can be tested (and reset) on its own. The counts live in typed arrays, in the
 * order the tokens were first recorded (a step costs a pass over the distinct tokens so far, not a Map update each).
 */
export class PenaltyTracker {
  private ids = new Int32Array(64);
  private cnt = new Float64Array(64);
  private size = 0;
  /** token id → its index in ids/cnt */
  private readonly slot = new Map<number, number>();

  constructor(
    private readonly presence: number,
    private readonly frequency: number,
    private readonly decay: number,
  ) {}

  /** token id → decayed count (a snapshot); a token present with count 0 still gets the presence penalty. */
  get counts(): ReadonlyMap<number, number> {
    const m = new Map<number, number>();
    for (let k = 0; k < this.size; k++) m.set(this.ids[k]!, this.cnt[k]!);
    return m;
  }

  /** logits[t] -= presence + count[t] * frequency for every recorded token (in place). */
  apply(logits: Float32Array | Float64Array): void {
    const { ids, cnt, presence, frequency } = this;
    const V = logits.length;
    for (let k = 0; k < this.size; k++) {
      const t = ids[k]!;
      if (t < V) logits[t] = logits[t]! - (presence + cnt[k]! * frequency);
    }
  }

  /** After sampling `token`: decay every count, then add `weight` (0 or 1) to the token's count. */
  record(token: number, weight: number): void {
    const { cnt, decay } = this;
    for (let k = 0; k < this.size; k++) cnt[k] = cnt[k]! * decay;
    const k = this.slot.get(token);
    if (k !== undefined) {
      cnt[k] = cnt[k]! + weight;
      return;
    }
    if (this.size === this.ids.length) {
      const ids = new Int32Array(2 * this.size);
      const c = new Float64Array(2 * this.size);
      ids.set(this.ids);
      c.set(this.cnt);
      this.ids = ids;
      this.cnt = c;
    }
    this.slot.set(token, this.size);
    this.ids[this.size] = token;
    this.cnt[this.size] = 0 + weight;
    this.size++;
  }

  clear(): void {
    this.size = 0;
    this.slot.clear();
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

// ---------------------------------------------------------------------------------------------------------------
// The sampling distribution in O(V).
//
// The package (and the first version of this file) sorts the candidates by probability with a comparator and walks
// the sorted list: the cumulative sum that finds the top-p cutoff, the renormalising total and the cumulative sum
// that picks the token are all floating-point sums in that order, so their exact bits (and therefore which token a
// given random number selects) depend on the order. To give the same tokens bit for bit, the code below produces
// exactly the same results as that order — probability descending, token id ascending on ties — with the same
// arithmetic operations; only the way they are found changes:
//
//   - softmax: max, e = exp(x - max) summed in id order, q = e / sum — the O(V) loops run in the small wasm module
//     of ./fast-exp.ts (JS where it cannot be used), whose exponentials give Math.exp's bits (fdlibm's algorithm,
//     checked against Math.exp first; Math.exp itself where they differ).
//   - candidates: the tokens with q > 0 and q ≥ eps, collected in id order.
//   - bucketing: every candidate goes to one of at most 256 buckets by a monotone function of its probability (its
//     exponent and leading mantissa bits: logarithmic spacing), so every token in bucket b is at least as probable
//     as every token in bucket b + 1, and equal probabilities share a bucket. A stable counting scatter (in id
//     order) lays the buckets out one after another; a bucket is put in order only where its order matters (below).
//   - sums without sorting: a running sum S in the binade [P, 2P) lies on the grid of multiples of u = ulp(P), and
//     so does S + v rounded, as long as the result stays below 2P: fl(S + v) = S + r(v), where r(v) — v rounded to
//     the grid — does not depend on S, except for an exact tie (v - r(v) = ±u/2), which rounds to the even
//     neighbour. So over a segment whose additions all stay in one binade, without ties, the sequential sum in
//     sorted order is S + Σ r(v), whatever order the r(v) are added in (their partial sums are multiples of u below
//     P: exact). The top-p walk and the draw therefore add up most buckets as they lie; a bucket where this does not
//     hold, or where the sum reaches its threshold (the top-p value, the random number), is split by probability
//     (a stable counting sort into sub-buckets) and its sub-buckets walked the same way, and only small segments are
//     sorted and added one by one: the first bucket, about one per binade the sum passes (≈ 20), and the one where
//     it stops.
//
// Every step is a pass over the vocabulary, the candidates or one bucket, so the cost is O(V) for flat and peaked
// distributions alike, and the flat ones (nearly every token in the nucleus) are no longer sorted. The buffers are
// typed arrays (in the wasm module's memory where it is used) owned by one module-level workspace and reused from
// call to call (the sampling functions are synchronous, so calls never interleave); no step allocates per token.
// Outside the defaults (temperature ≠ 1, a top-k cut) and for `samplingDistribution`, the kept tokens are then
// sorted completely, bucket by bucket, as before.
// ---------------------------------------------------------------------------------------------------------------

/** Buckets this small are insertion-sorted; larger ones are bucketed again over their own value range. */
const SMALL_BUCKET = 24;
/** Recursion limit of the re-bucketing; beyond it (pathological clustering) a comparator sort finishes the bucket. */
const MAX_DEPTH = 8;
/** About V / 2^BUCKET_SHIFT buckets… */
const BUCKET_SHIFT = 5;
/**
 * …but at most this many: the scatter writes to one place per bucket, and beyond a few hundred of them (a write
 * stream each, for ids and for probabilities) the stores stop hitting the L1 cache — ≈ 4× slower at 1024.
 */
const MAX_BUCKETS = KERNEL_MAX_BUCKETS;
/** e < eps · sum · PREFILTER ⇒ e / sum < eps after rounding (the margin dwarfs the two roundings involved). */
const PREFILTER = 1 - 2 ** -20;

/** Reusable buffers for one vocabulary size (and one kernel). */
class Workspace {
  /** The O(V) loops and the arrays they work on (x: the penalised logits to sample from — fill it, then prepare()). */
  readonly kernel: SamplerKernel;
  /** Whether a bucket is in its final order. */
  readonly bucketSorted: Uint8Array;
  /** Scratch for re-bucketing a large bucket; `tmpVals` later holds the tempered weights when temperature ≠ 1. */
  readonly tmpIds: Int32Array;
  readonly tmpVals: Float64Array;
  readonly subCounts: Int32Array;
  /** Number of candidates and of buckets; the lazy in-order sort: buckets before nextBucket are sorted. */
  n = 0;
  buckets = 1;
  sortedEnd = 0;
  nextBucket = 0;
  /** The result of keptDistribution. */
  kept = 0;
  total = 0;
  weights: Float64Array;

  constructor(readonly V: number, readonly kind: ExpKind, readonly loops: LoopKind) {
    this.kernel = samplerKernel(V, kind, loops);
    this.bucketSorted = new Uint8Array(MAX_BUCKETS);
    this.tmpIds = new Int32Array(V);
    this.tmpVals = new Float64Array(V);
    this.subCounts = new Int32Array(V + 1);
    this.weights = this.kernel.vals;
  }

  /** Candidates laid out bucket after bucket (sorted where needed): token ids and their probabilities. */
  get ids(): Int32Array {
    return this.kernel.ids;
  }
  get vals(): Float64Array {
    return this.kernel.vals;
  }

  /**
   * Softmax of kernel.x (float64, exactly the package's operations: max, exp(x - max) summed in id order, divide by
   * the sum), then the candidates — p > 0 and p ≥ eps — bucketed and scattered into `ids`/`vals`.
   */
  prepare(eps: number): void {
    const kernel = this.kernel;
    const max = kernel.max();
    if (max === -Infinity) throw new UserError('cannot sample: every token is banned');
    const sum = kernel.expSum(max);
    // The max token has exp(0) = 1, so its q = 1 / sum is the largest; every candidate has q ≥ eps, and
    // q ≈ e / sum ≥ eMin / sum. (A NaN sum — NaN or +Infinity logits — leaves no candidate.)
    this.arrange(sum, eps, Math.max(eps, kernel.eMin / sum), 1 / sum);
  }

  /**
   * The candidates — q = e / sum with q > 0 and q ≥ eps, in id order (kernel.e holds the e) — bucketed and
   * scattered into `ids`/`vals`, bucket 0 first. A candidate's bucket is min((H(qMax) - H(q)) >> shift, B - 1),
   * where H(q) is the high 32-bit word of q (sign 0, exponent, 20 mantissa bits: increasing with q), so buckets are
   * spaced logarithmically, a fixed fraction of a binade each, the shift chosen for at most MAX_BUCKETS (and about
   * V / 32) buckets over [qLo, qMax]. Every q ≤ qMax; those below qLo share the last bucket (qLo only matters for
   * efficiency).
   */
  arrange(sum: number, eps: number, qLo: number, qMax: number): void {
    const kernel = this.kernel;
    const hMax = highWordOf(qMax);
    const range = hMax - highWordOf(qLo);
    const target = Math.min(MAX_BUCKETS, Math.max(1, this.V >> BUCKET_SHIFT));
    let shift = 0;
    if (!(range >= 0)) shift = 31;
    while ((range >>> shift) + 1 > target && shift < 31) shift++;
    const B = Math.min(target, (range >>> shift) + 1);
    const n = kernel.candidates(sum, eps, eps * sum * PREFILTER, hMax, shift, B);
    kernel.scatter(n, hMax, shift, B);
    this.bucketSorted.fill(0, 0, B);
    this.n = n;
    this.buckets = B;
    this.sortedEnd = 0;
    this.nextBucket = 0;
  }

  /** Puts bucket b = ids/vals[s, e) into its final order (once). */
  sortBucket(b: number, s: number, e: number): void {
    if (this.bucketSorted[b]) return;
    if (e - s > SMALL_BUCKET) this.sortSegment(s, e, 0);
    else if (e - s > 1) this.insertionSort(s, e);
    this.bucketSorted[b] = 1;
  }

  /** Sorts buckets in order until at least `count` candidates (or all) are in final order. */
  sortThrough(count: number): void {
    while (this.sortedEnd < count && this.nextBucket < this.buckets) {
      const b = this.nextBucket++;
      const end = this.kernel.bucketEnd[b]!;
      this.sortBucket(b, this.sortedEnd, end);
      this.sortedEnd = end;
    }
  }

  /**
   * top-p: the number of candidates kept — up to the first position (in sorted order) where the cumulative sum
   * reaches topP, plus the ties with the probability there (`probs[probs < cutoff] = 0` keeps them); all n when
   * the sum never reaches topP (rounding, or topP = Infinity) — with the cumulative sum over them, in sorted order,
   * in `this.total`. Sorts only where the order matters (see the section comment and `nucleusSegment`).
   */
  nucleus(topP: number): number {
    const bucketEnd = this.kernel.bucketEnd;
    const B = this.buckets;
    this.S = 0;
    this.limit = topP;
    let s = 0;
    for (let b = 0; b < B; b++) {
      const e = bucketEnd[b]!;
      if (e === s) continue;
      const k = this.nucleusSegment(s, e, 0);
      if (k >= 0) {
        // the sum reached topP at position k, in a sorted leaf segment: keep the ties with vals[k] too (equal
        // probabilities share a bucket and every sub-bucket of it, so they follow k in that leaf)
        const vals = this.kernel.vals;
        const cutoff = vals[k]!;
        let S = this.S;
        let kept = k + 1;
        while (kept < this.n && vals[kept]! >= cutoff) S += vals[kept++]!;
        this.total = S;
        return kept;
      }
      s = e;
    }
    this.total = this.S;
    return this.n;
  }

  /** The running sum and its threshold (topP, or the random number u) of the segment walks. */
  private S = 0;
  private limit = 0;

  /**
   * Adds vals[s, e) to this.S in sorted order — a segment whose probabilities all lie between those of the segments
   * walked before it and those after it — stopping where the sum reaches this.limit: returns that position (the
   * segment then sorted up to it), or -1 with the whole segment added. When the grid argument holds for the whole
   * segment, it is added without being sorted; else it is split by probability (a stable counting sort into ≈ 8
   * per sub-bucket) and the sub-segments are walked in turn, and small segments are sorted and added one by one.
   */
  private nucleusSegment(s: number, e: number, depth: number): number {
    return this.segment(s, e, depth, false, 1);
  }

  /**
   * The walk of nucleusSegment (adds vals[k], stops where the sum reaches this.limit) and, with `draw`, of the draw
   * (adds vals[k] / total, stops at the first position where this.limit < the sum).
   */
  private segment(s: number, e: number, depth: number, draw: boolean, total: number): number {
    const kernel = this.kernel;
    if (this.S > 0) {
      const end = draw ? kernel.gridSumDiv(s, e, this.S, total) : kernel.gridSum(s, e, this.S);
      if (end >= 0 && (draw ? !(this.limit < end) : end < this.limit)) {
        this.S = end;
        return -1;
      }
    }
    if (e - s > SMALL_BUCKET && depth < SPLIT_LEVELS) {
      const m = kernel.split(s, e, depth);
      if (m > 0) {
        const ends = kernel.splitEnds;
        let t = s;
        for (let j = 0; j < m; j++) {
          const u = ends[depth * SPLIT_MAX + j]!;
          if (u > t) {
            const k = this.segment(t, u, depth + 1, draw, total);
            if (k >= 0) return k;
          }
          t = u;
        }
        return -1;
      }
    }
    this.sortSegment(s, e, 0);
    const vals = kernel.vals;
    let S = this.S;
    for (let k = s; k < e; k++) {
      if (draw) {
        S += vals[k]! / total;
        if (this.limit < S) { this.S = S; return k; }
      } else {
        S += vals[k]!;
        if (S >= this.limit) { this.S = S; return k; }
      }
    }
    this.S = S;
    return -1;
  }

  /**
   * The position (in sorted order) of the drawn token among the first `kept`: the first where the running sum of
   * vals[j] / total exceeds u, else the last one. The same walk as `nucleus`, for that sum (`segment` with `total`).
   */
  drawPosition(kept: number, total: number, u: number): number {
    const bucketEnd = this.kernel.bucketEnd;
    this.S = 0;
    this.limit = u;
    let s = 0;
    let b = 0;
    for (; s < kept; b++) {
      const be = bucketEnd[b]!;
      const e = be < kept ? be : kept;
      if (e === s) continue;
      const k = this.segment(s, e, 0, true, total);
      if (k >= 0) return k;
      s = e;
    }
    // u is not below any partial sum (rounding): the last kept token, in the last bucket visited
    const last = b - 1;
    this.sortBucket(last, last > 0 ? bucketEnd[last - 1]! : 0, bucketEnd[last]!);
    return kept - 1;
  }
  /** Insertion sort of ids/vals[s, e) by probability, descending; stable (`<` never moves past an equal value). */
  private insertionSort(s: number, e: number): void {
    const { ids, vals } = this.kernel;
    for (let k = s + 1; k < e; k++) {
      const v = vals[k]!, id = ids[k]!;
      let j = k - 1;
      while (j >= s && vals[j]! < v) {
        vals[j + 1] = vals[j]!;
        ids[j + 1] = ids[j]!;
        j--;
      }
      vals[j + 1] = v;
      ids[j + 1] = id;
    }
  }

  /**
   * Sorts ids/vals[s, e) by probability, descending, stably (the segment is in id order, so ties stay in id order).
   */
  private sortSegment(s: number, e: number, depth: number): void {
    const { ids, vals } = this.kernel;
    const n = e - s;
    if (n <= SMALL_BUCKET) {
      this.insertionSort(s, e);
      return;
    }
    let hi = -Infinity, lo = Infinity;
    for (let k = s; k < e; k++) {
      const v = vals[k]!;
      if (v > hi) hi = v;
      if (v < lo) lo = v;
    }
    if (hi === lo) return; // all equal: already in id order
    if (depth >= MAX_DEPTH) {
      this.comparatorSort(s, e);
      return;
    }
    // Re-bucket into n sub-buckets over [lo, hi] (see subBucket).
    // The top value lands in sub-bucket 0 and the bottom one in n - 1, so every sub-bucket is smaller than n.
    const { tmpIds, tmpVals, subCounts } = this;
    const scale = n / (hi - lo);
    if (scale === Infinity) {
      this.comparatorSort(s, e); // a range of a few subnormals: not worth bucketing
      return;
    }
    subCounts.fill(0, 0, n);
    for (let k = s; k < e; k++) subCounts[subBucket(vals[k]!, hi, scale, n)]!++;
    let acc = s;
    for (let b = 0; b < n; b++) {
      const c = subCounts[b]!;
      subCounts[b] = acc;
      acc += c;
    }
    for (let k = s; k < e; k++) {
      const pos = subCounts[subBucket(vals[k]!, hi, scale, n)]!++;
      tmpIds[pos] = ids[k]!;
      tmpVals[pos] = vals[k]!;
    }
    ids.set(tmpIds.subarray(s, e), s);
    vals.set(tmpVals.subarray(s, e), s);
    // Sort each run of equal sub-bucket index (recomputed: the counts scratch is reused by the nested calls).
    let runStart = s;
    let runSub = subBucket(vals[s]!, hi, scale, n);
    for (let k = s + 1; k <= e; k++) {
      const b = k < e ? subBucket(vals[k]!, hi, scale, n) : -1;
      if (b !== runSub) {
        if (k - runStart > 1) this.sortSegment(runStart, k, depth + 1);
        runStart = k;
        runSub = b;
      }
    }
  }

  /** Fallback for pathologically clustered values: a comparator sort (probability descending, id ascending). */
  private comparatorSort(s: number, e: number): void {
    const { ids, vals } = this.kernel;
    const order = Array.from({ length: e - s }, (_, k) => s + k);
    order.sort((a, b) => vals[b]! - vals[a]! || ids[a]! - ids[b]!);
    const oi = order.map((k) => ids[k]!);
    const ov = order.map((k) => vals[k]!);
    ids.set(oi, s);
    vals.set(ov, s);
  }
}

/**
 * Sub-bucket of value v in a segment of n values spanning [lo, hi], scale = n / (hi - lo): floor((hi - v) * scale),
 * clamped to [0, n - 1]. Rounded subtraction and multiplication are monotone, so larger values never land in a
 * later sub-bucket.
 */
function subBucket(v: number, hi: number, scale: number, n: number): number {
  const f = (hi - v) * scale;
  return f >= n ? n - 1 : f > 0 ? f | 0 : 0;
}

let shared: Workspace | undefined;
/** The workspace for vocabulary size V, with the softmax kernel in use. */
function workspace(V: number): Workspace {
  const kind = expKind();
  const loops = kind === 'wasm' ? 'wasm' : loopKind();
  if (!shared || shared.V !== V || shared.kind !== kind || shared.loops !== loops) shared = new Workspace(V, kind, loops);
  return shared;
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

/**
 * Test access to the bucketed walks (not part of the API): probabilities `q` (in id order; ids are their indices;
 * the positive ones are the candidates) laid out as the sampler lays them out, with the loops in wasm or JS, then the
 * top-p walk and the draw of `drawPosition`. Returns the number kept, their total, the drawn id for each u, and the
 * candidate ids in sorted order (sorting everything).
 */
export function bucketWalkForTests(q: ArrayLike<number>, topP: number, us: number[], loops: LoopKind = 'js'): { kept: number; total: number; drawn: number[]; order: number[] } {
  const n = q.length;
  const ws = new Workspace(n, 'math', loops);
  let qMin = Infinity, qMax = -Infinity;
  for (let i = 0; i < n; i++) {
    ws.kernel.e[i] = q[i]!;
    if (q[i]! < qMin) qMin = q[i]!;
    if (q[i]! > qMax) qMax = q[i]!;
  }
  ws.arrange(1, 0, qMin, qMax); // q / 1 = q: every positive q is a candidate
  const kept = ws.nucleus(topP < 1 ? topP : Infinity);
  const total = ws.total;
  const drawn = us.map((u) => ws.ids[ws.drawPosition(kept, total, u)]!);
  ws.sortThrough(ws.n);
  return { kept, total, drawn, order: Array.from(ws.ids.subarray(0, ws.n)) };
}
