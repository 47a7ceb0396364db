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

// ---------------------------------------------------------------------------------------------------------------
// The sampling distribution in O(V).
//
// The package (and the first version of this file) sorts the candidates by probability with a comparator and walks
// the sorted list: the cumulative sum that finds the top-p cutoff, the renormalising total and the cumulative sum
// that picks the token are all floating-point sums in that order, so their exact bits (and therefore which token a
// given random number selects) depend on the order. To give the same tokens bit for bit, the code below produces
// exactly the same order — probability descending, token id ascending on ties — and performs the same arithmetic
// operations in the same sequence; only the way the order is found changes:
//
//   - bucketing: every candidate goes to one of B buckets by a monotone function of its probability
//     (floor((pMax - p) * B / (pMax - pLo)), clamped), so every token in bucket b is at least as probable as every
//     token in bucket b + 1. A stable counting scatter (in token id order) lays the buckets out one after another.
//   - lazy sorting: the walk sorts a bucket only when it reaches it (insertion sort when small, the same bucketing
//     again on its own value range when large). The top-p walk stops at the cutoff, so the tail below the nucleus is
//     never sorted; ties with the cutoff have equal probabilities, hence the same bucket, and are already in order.
//
// Every step is a pass over the vocabulary or over one bucket, so the cost is O(V) for flat and peaked distributions
// alike (the old comparator sort was O(V log V) and took ≈ 27 ms at V = 65536 when nearly every token was a
// candidate). The buffers are typed arrays owned by one module-level workspace and reused from call to call (the
// sampling functions are synchronous, so calls never interleave).
// ---------------------------------------------------------------------------------------------------------------

/** Buckets this small are insertion-sorted; larger ones are bucketed again over their own value range. */
const SMALL_BUCKET = 24;
/** Recursion limit of the re-bucketing; beyond it (pathological clustering) a comparator sort finishes the bucket. */
const MAX_DEPTH = 8;

/** Reusable buffers for one vocabulary size. */
class Workspace {
  /** The penalised logits (Sampler path). */
  readonly x: Float64Array;
  /** Softmax probabilities by token id. */
  readonly p: Float64Array;
  /** Bucket counts, then (after the scatter) the end offset of every bucket. */
  readonly bucketEnd: Int32Array;
  /** Candidates laid out bucket after bucket (sorted as the walk proceeds): token ids and their probabilities. */
  readonly ids: Int32Array;
  readonly vals: Float64Array;
  /** Scratch for re-bucketing a large bucket; `tmpVals` later holds the tempered weights when temperature ≠ 1. */
  readonly tmpIds: Int32Array;
  readonly tmpVals: Float64Array;
  readonly subCounts: Int32Array;
  readonly buckets: number;
  /** Number of candidates, and the state of the lazy walk: ids/vals[0, sortedEnd) are in final order. */
  n = 0;
  sortedEnd = 0;
  nextBucket = 0;

  constructor(readonly V: number) {
    this.buckets = Math.max(1, V >> 2); // ≈ 4 candidates a bucket when nearly all tokens are candidates
    this.x = new Float64Array(V);
    this.p = new Float64Array(V);
    this.bucketEnd = new Int32Array(this.buckets);
    this.ids = new Int32Array(V);
    this.vals = new Float64Array(V);
    this.tmpIds = new Int32Array(V);
    this.tmpVals = new Float64Array(V);
    this.subCounts = new Int32Array(V + 1);
  }

  /**
   * Softmax of `logits` into `p` (float64, exactly the package's operations: max, exp(x - max) summed in id order,
   * divide by the sum), then the candidates — p > 0 and p ≥ eps — bucketed and scattered into `ids`/`vals`.
   */
  prepare(logits: ArrayLike<number>, eps: number): void {
    const { V, p, bucketEnd, ids, vals } = this;
    const B = this.buckets;
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (logits[i]! > max) max = logits[i]!;
    if (max === -Infinity) throw new UserError('cannot sample: every token is banned');
    let sum = 0;
    let eMin = Infinity; // smallest positive exp, for the lower end of the bucket range
    for (let i = 0; i < V; i++) {
      const e = Math.exp(logits[i]! - max);
      p[i] = e;
      sum += e;
      if (e < eMin && e > 0) eMin = e;
    }
    // Bucket range [pLo, pMax]: the max token has exp(0) = 1, so p = 1 / sum; every candidate has p ≥ eps and
    // p ≥ eMin / sum. (Only efficiency depends on the range: the clamping keeps the mapping monotone regardless.)
    const pMax = 1 / sum;
    const pLo = Math.max(eps, eMin / sum);
    const scale = pMax > pLo ? B / (pMax - pLo) : 0;
    // The bucket of candidate probability q (0 = most probable); used identically by both passes below.
    const bucket = (q: number) => {
      const f = (pMax - q) * scale;
      return f >= B ? B - 1 : f > 0 ? f | 0 : 0;
    };
    bucketEnd.fill(0);
    let n = 0;
    for (let i = 0; i < V; i++) {
      const q = p[i]! / sum;
      p[i] = q;
      if (q > 0 && q >= eps) {
        bucketEnd[bucket(q)]!++;
        n++;
      }
    }
    // Counts → start offsets; the scatter (in id order, so stable) advances each to its bucket's end.
    let acc = 0;
    for (let b = 0; b < B; b++) {
      const c = bucketEnd[b]!;
      bucketEnd[b] = acc;
      acc += c;
    }
    for (let i = 0; i < V; i++) {
      const q = p[i]!;
      if (q > 0 && q >= eps) {
        const pos = bucketEnd[bucket(q)]!++;
        ids[pos] = i;
        vals[pos] = q;
      }
    }
    this.n = n;
    this.sortedEnd = 0;
    this.nextBucket = 0;
  }

  /** Sorts buckets in order until at least `count` candidates (or all) are in final order. */
  sortThrough(count: number): void {
    const B = this.buckets;
    while (this.sortedEnd < count && this.nextBucket < B) {
      const start = this.sortedEnd;
      const end = this.bucketEnd[this.nextBucket++]!;
      if (end - start > SMALL_BUCKET) this.sortSegment(start, end, 0);
      else if (end - start > 1) this.insertionSort(start, end); // the common case: a handful of tokens
      this.sortedEnd = end;
    }
  }

  /** Insertion sort of ids/vals[s, e) by probability, descending; stable (`<` never moves past an equal value). */
  private insertionSort(s: number, e: number): void {
    const { ids, vals } = this;
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
    const { ids, vals } = this;
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
    const { ids, vals } = this;
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
function workspace(V: number): Workspace {
  if (!shared || shared.V !== V) shared = new Workspace(V);
  return shared;
}

/**
 * The kept tokens of the package's `sample_logits` (temperature > 0), in workspace `ws`:
 * softmax → top-p cutoff → top-k → ** (1/temperature). On return ws.ids[0, kept) are the kept token ids, most
 * probable first, `weights[0, kept)` their unnormalised weights and `total` the sum of those weights (in that order).
 */
function keptDistribution(
  logits: ArrayLike<number>, temperature: number, topP: number, topK: number,
): { ws: Workspace; kept: number; weights: Float64Array; total: number } {
  const ws = workspace(logits.length);
  // Every token with p < eps can be left out: all of them together hold < V * eps = 1 - topP, so the candidates
  // alone reach the cumulative top_p, and the cutoff lies among them (with top-p off, every p > 0 is a candidate).
  const eps = topP < 1 ? (1 - topP) / ws.V : 0;
  ws.prepare(logits, eps);
  const { vals, n } = ws;
  // No candidate at all only happens when the logits hold NaN or +Infinity (the softmax is NaN everywhere).
  if (n === 0) throw new UserError('cannot sample: the logits are not finite numbers');

  // top-p: cutoff = probability of the first token (in sorted order) where the cumulative sum reaches top_p; keep
  // every token with p ≥ cutoff (ties with the cutoff are kept, as `probs[probs < cutoff] = 0` does). When the sum
  // never reaches top_p (rounding) every candidate is kept.
  let kept = n;
  // The running sum of vals[0, kept) in order: with temperature 1 and no top-k cut it is bit for bit the total
  // below (the same additions in the same order), which then need not be summed again.
  let cum = 0;
  let cumIsTotal = false;
  if (topP < 1) {
    for (let j = 0; j < n; j++) {
      if (j >= ws.sortedEnd) ws.sortThrough(j + 1);
      cum += vals[j]!;
      if (cum >= topP) {
        const cutoff = vals[j]!;
        kept = j + 1;
        // Equal probabilities share a bucket, so the ties after j are already sorted.
        while (kept < n && vals[kept]! >= cutoff) cum += vals[kept++]!;
        cumIsTotal = true;
        break;
      }
    }
  }
  // top-k: the k most probable (in sorted order).
  if (topK > 0 && kept > topK) {
    kept = topK;
    cumIsTotal = false;
  }
  ws.sortThrough(kept);

  let weights = vals;
  if (temperature !== 1) {
    weights = ws.tmpVals; // free once sorting is done
    const inv = 1 / temperature;
    for (let j = 0; j < kept; j++) weights[j] = vals[j]! ** inv;
    cumIsTotal = false;
  }
  let total = 0;
  if (cumIsTotal) total = cum;
  else for (let j = 0; j < kept; j++) total += weights[j]!;
  return { ws, kept, weights, total };
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
  const { ws, kept, weights, total } = keptDistribution(logits, temperature, topP, topK);
  if (degenerate(total)) return { ids: [ws.ids[0]!], probs: [1] };
  const ids = Array.from(ws.ids.subarray(0, kept));
  const probs = Array.from(weights.subarray(0, kept), (w) => w / total);
  return { ids, probs };
}

/**
 * Draws one token from the distribution of `samplingDistribution`: with u = random() in [0, 1) (drawn once the
 * distribution is known, even when it is degenerate), the first token, most probable first, where the running sum of
 * the normalised probabilities exceeds u. The same operations in the same order as summing `probs` would be.
 */
function drawToken(logits: ArrayLike<number>, temperature: number, topP: number, topK: number, random: () => number): number {
  const { ws, kept, weights, total } = keptDistribution(logits, temperature, topP, topK);
  const ids = ws.ids;
  const u = random();
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
    const x = workspace(logits.length).x; // reused buffer (its contents are not needed after this call)
    x.set(logits);
    for (const t of this.opts.banTokens ?? []) if (t < x.length) x[t] = -Infinity;
    this.penalties.apply(x);
    if (this.opts.temperature === 0) return argmax(x);
    // The distribution is computed before the random number is drawn (as before: an all-banned vector throws
    // without consuming it).
    const { temperature, topP, topK } = this.opts;
    return drawToken(x, temperature, topP, topK, () => this.rng.next());
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
