// The sampler's bucketed softmax / top-p / draw over reusable buffers (src/runtime/sampler.ts applies it; the O(V)
// loops themselves are in ./fast-exp.ts).
import { UserError } from '../errors.js';
import {
  expKind, loopKind, samplerKernel, highWordOf, KERNEL_MAX_BUCKETS, SPLIT_LEVELS, SPLIT_MAX,
  type ExpKind, type LoopKind, type SamplerKernel,
} from './fast-exp.js';

// ---------------------------------------------------------------------------------------------------------------
// The sampling distribution in O(V).
//
// The package (and the first version of the sampler) sorts the candidates by probability with a comparator and walks
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
export class Workspace {
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
   * in `this.total`. Sorts only where the order matters (see the section comment and `segment`).
   */
  nucleus(topP: number): number {
    const kernel = this.kernel;
    const bucketEnd = kernel.bucketEnd;
    const B = this.buckets;
    this.S = 0;
    this.limit = topP;
    let s = 0;
    for (let b = 0; ; b++) {
      // the buckets that their grid sums add, in one call; then the one where that does not hold, if any
      b = kernel.walk(-1, b, B, s, this.n, this.S, topP, 1, false);
      this.S = kernel.walkSum;
      s = kernel.walkStart;
      if (b >= B || s >= this.n) break;
      const e = bucketEnd[b]!;
      const k = this.segment(s, e, 0, false, 1, true);
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
   * That is the top-p walk (adds vals[k], stops where the sum reaches this.limit) and, with `draw`, the draw's
   * (adds vals[k] / total, stops at the first position where this.limit < the sum). `gridTried`: the caller's
   * kernel.walk has found already that the grid sum does not add the whole segment.
   */
  private segment(s: number, e: number, depth: number, draw: boolean, total: number, gridTried: boolean): number {
    const kernel = this.kernel;
    if (!gridTried && this.S > 0) {
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
        for (let j = 0; ; j++) {
          // the sub-buckets that their grid sums add (one call), then the next one, split or sorted
          j = kernel.walk(depth, j, m, t, e, this.S, this.limit, total, draw);
          this.S = kernel.walkSum;
          t = kernel.walkStart;
          if (j >= m || t >= e) return -1;
          const u = ends[depth * SPLIT_MAX + j]!;
          const k = this.segment(t, u, depth + 1, draw, total, true);
          if (k >= 0) return k;
          t = u;
        }
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
    const kernel = this.kernel;
    const bucketEnd = kernel.bucketEnd;
    this.S = 0;
    this.limit = u;
    let s = 0;
    let b = 0;
    for (; ; b++) {
      // as in nucleus: the buckets that their grid sums add, in one call, then the next one
      b = kernel.walk(-1, b, this.buckets, s, kept, this.S, u, total, true);
      this.S = kernel.walkSum;
      s = kernel.walkStart;
      if (s >= kept || b >= this.buckets) break; // b: one past the last bucket visited
      const be = bucketEnd[b]!;
      const e = be < kept ? be : kept;
      const k = this.segment(s, e, 0, true, total, true);
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
export function workspace(V: number): Workspace {
  const kind = expKind();
  const loops = kind === 'wasm' ? 'wasm' : loopKind();
  if (!shared || shared.V !== V || shared.kind !== kind || shared.loops !== loops) shared = new Workspace(V, kind, loops);
  return shared;
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
