/**
 * The sampler's numeric kernels: the softmax numerators — m = max x[i], e[i] = exp(x[i] - m) and their sum in index
 * order — bit for bit what `Math.exp` gives but faster (V = 65536 calls of Math.exp cost ≈ 1 ms), and the O(V)
 * loops of the sampler's bucketed top-p and draw (./sampler-workspace.ts, class Workspace, says what they compute).
 *
 * V8's Math.exp is fdlibm's e_exp.c (V8 src/base/ieee754.cc). The exponentials (`ExpKind`):
 *
 *   'wasm'  wasm/exp.ts: fdlibm's algorithm two lanes at a time with WebAssembly SIMD128 (the module is embedded in
 *           ./exp-wasm.ts and compiled synchronously; it imports Math.exp for the arguments it does not cover);
 *   'js'    the scalar JS port below (`fexp`), written out inline in `expSumJs` — a second, independent check of
 *           the algorithm (tests compare it with Math.exp); V8 runs it no faster than Math.exp, so it is only used
 *           when forced;
 *   'math'  plain Math.exp, the reference, and the fallback.
 *
 * Each port is checked against Math.exp when first used (`selfCheck`: a few thousand arguments over the whole range
 * the sampler can produce, boundaries of every branch included) and is not used if a single bit differs, so another
 * engine (another libm) can slow sampling down but never change its results: Chromium 156's Math.exp, for one, is
 * no longer fdlibm's, and there the sampler uses Math.exp. test/sampler-exp.test.ts compares both ports with Math.exp
 * on millions of arguments.
 *
 * The loops (`LoopKind`) run in the same wasm module whenever it can be instantiated (with 'math' exponentials
 * computed in JS into its memory where the wasm ones are refused), else in JS (`JsKernel`): the same IEEE
 * operations in the same order, so the same bits (the tests run the sampler with every combination).
 */
import { EXP_WASM_BASE64 } from './exp-wasm.js';

export type ExpKind = 'wasm' | 'js' | 'math';

// fdlibm's constants, from their bit patterns.
const bits = (hi: number, lo: number): number => {
  const b = new DataView(new ArrayBuffer(8));
  b.setUint32(0, hi);
  b.setUint32(4, lo);
  return b.getFloat64(0);
};
const INVLN2 = bits(0x3ff71547, 0x652b82fe);
const LN2HI = bits(0x3fe62e42, 0xfee00000);
const LN2LO = bits(0x3dea39ef, 0x35793c76);
const P1 = bits(0x3fc55555, 0x5555553e);
const P2 = bits(0xbf66c16c, 0x16bebd93);
const P3 = bits(0x3f11566a, 0xaf25de2c);
const P4 = bits(0xbebbbd41, 0xc5d26bf1);
const P5 = bits(0x3e663769, 0x72bea4d0);
/** |d| ≥ KT ⇔ the high word of |d| is above 0x3fd62e42 (fdlibm reduces by k ≠ 0). */
const KT = bits(0x3fd62e43, 0);
/** |d| < TINY ⇔ the high word of |d| is below 0x3e300000 (fdlibm returns 1 + d). */
const TINY = bits(0x3e300000, 0);
/** d ≥ LOWEST ⇒ k ≥ -1021: 2^k is a normal number (below, fdlibm scales in two steps). */
const LOWEST = -708;
/** fdlibm's underflow threshold: exp(d) = +0 below it. */
const UTH = bits(0xc0874910, 0xd52d3051);
/** POW2[k + 1021] = 2^k for k = -1021 … 0 (halvings of 1: exact). */
const POW2 = new Float64Array(1022);
for (let i = 1021, t = 1; i >= 0; i--, t /= 2) POW2[i] = t;

/**
 * exp(d) computed as fdlibm does, for d in [-708, 0] (k = 0 and the 0.5 ln2 < |d| < 1.5 ln2 case fall out of the
 * general reduction there, see wasm/exp.ts); other arguments go to Math.exp. Exported for the tests.
 */
export function fexp(d: number): number {
  if (!(d >= LOWEST && d <= 0)) return d < UTH ? 0 : Math.exp(d);
  const ax = -d;
  if (ax < TINY) return 1 + d;
  const k = ax >= KT ? (INVLN2 * d - 0.5) | 0 : 0;
  const hi = d - k * LN2HI;
  const lo = k * LN2LO;
  const r = hi - lo;
  const t = r * r;
  const c = r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
  return (1 - ((lo - (r * c) / (2 - c)) - hi)) * POW2[k + 1021]!;
}

/** The JS kernel: e[i] = exp(x[i] - max) (fexp written out); returns the sum in index order. */
function expSumJs(x: Float64Array, e: Float64Array, n: number, max: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const d = x[i]! - max;
    let v: number;
    if (d >= LOWEST && d <= 0) {
      const ax = -d;
      if (ax < TINY) v = 1 + d;
      else {
        const k = ax >= KT ? (INVLN2 * d - 0.5) | 0 : 0;
        const hi = d - k * LN2HI;
        const lo = k * LN2LO;
        const r = hi - lo;
        const t = r * r;
        const c = r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
        v = (1 - ((lo - (r * c) / (2 - c)) - hi)) * POW2[k + 1021]!;
      }
    } else v = d < UTH ? 0 : Math.exp(d);
    e[i] = v;
    sum += v;
  }
  return sum;
}

/** The reference kernel: Math.exp. */
function expSumMath(x: Float64Array, e: Float64Array, n: number, max: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = Math.exp(x[i]! - max);
    e[i] = v;
    sum += v;
  }
  return sum;
}

/** The smallest positive e[i], i < n (+Infinity if none). */
function minPositive(e: Float64Array, n: number): number {
  let m = Infinity;
  for (let i = 0; i < n; i++) {
    const v = e[i]!;
    if (v < m && v > 0) m = v;
  }
  return m;
}

function maxJs(x: Float64Array, n: number): number {
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (x[i]! > m) m = x[i]!;
  return m;
}

// ---- the wasm module ------------------------------------------------------------------------------------------

interface ExpExports {
  memory: WebAssembly.Memory;
  max_of(xp: number, n: number): number;
  exp_sum(xp: number, ep: number, n: number, max: number): number;
  last_emin(): number;
  candidates(ep: number, V: number, sum: number, eps: number, lim: number, candp: number, hMax: number, shift: number, B: number, endp: number, bkp: number, histp: number): number;
  scatter(ep: number, candp: number, n: number, B: number, endp: number, idsp: number, valsp: number, bkp: number): void;
  grid_sum(valsp: number, s: number, e: number, S: number): number; grid_sum_div(valsp: number, s: number, e: number, S: number, total: number): number;
  grid_walk(valsp: number, endsp: number, j0: number, m: number, s: number, stop: number, S: number, limit: number, total: number, divide: number): number;
  walk_sum(): number; walk_start(): number; implicit_ids(): number;
  split(idsp: number, valsp: number, s: number, e: number, endsp: number, tmpIdsp: number, tmpValsp: number): number;
  heap_base(): number;
}

let wasmExports: ExpExports | null | undefined;

/** The instantiated module, or null where WebAssembly SIMD is unavailable (or compiling is not allowed). */
function wasmModule(): ExpExports | null {
  if (wasmExports !== undefined) return wasmExports;
  wasmExports = null;
  try {
    const bin = atob(EXP_WASM_BASE64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { exp: Math.exp } });
    wasmExports = instance.exports as unknown as ExpExports;
  } catch {
    // no WebAssembly, no SIMD128, or a content security policy that forbids compiling: the JS kernel is used
  }
  return wasmExports;
}

// ---- kernels over buffers ---------------------------------------------------------------------------------------

/** The most buckets the sampler's layout uses (see sampler-workspace.ts, MAX_BUCKETS). */
export const KERNEL_MAX_BUCKETS = 256;
/** split(): at most this many sub-buckets, and this many recursion levels (each has its own ends). */
export const SPLIT_MAX = 64;
export const SPLIT_LEVELS = 9;

/** The high word of a double's bits is the Uint32 at index 2k + HI of an aliasing Uint32Array. */
const HI = new Uint32Array(Float64Array.of(1).buffer)[1] === 0x3ff00000 ? 1 : 0;

/**
 * The sampler's O(V) loops over buffers of V entries (sampler-workspace.ts, class Workspace, says what they are for):
 * fill `x`, then max(), expSum(), candidates(), layout(), and the walks' gridSum()/gridSumDiv().
 */
export interface SamplerKernel {
  readonly kind: ExpKind;
  readonly V: number;
  /** The input (the penalised logits). For 'wasm' these arrays are views of the module's memory. */
  readonly x: Float64Array;
  /** exp(x[i] - max); then (candidates) the candidates' probabilities, compacted. The same array as x. */
  readonly e: Float64Array;
  /** The candidates' token ids, in id order. */
  readonly candIds: Int32Array;
  /** The candidates laid out bucket after bucket: ids and probabilities; bucketEnd[b] = end of bucket b. */
  readonly ids: Int32Array;
  readonly vals: Float64Array;
  readonly bucketEnd: Int32Array;
  /** max x[i] over i < V, as `if (x[i] > m) m = x[i]` from -Infinity. */
  max(): number;
  /** e[i] = exp(x[i] - max) for i < V; returns the sum in index order and sets eMin. */
  expSum(max: number): number;
  /** The smallest positive e[i] of the last expSum (+Infinity if none). */
  eMin: number;
  /**
   * Compacts the candidates (q = e[i] / sum, q > 0 and q ≥ eps; e[i] < lim is known to fail) and counts them in
   * their buckets, min((hMax - highword(q)) >> shift, B - 1), into bucketEnd; returns their number.
   */
  candidates(sum: number, eps: number, lim: number, hMax: number, shift: number, B: number): number;
  /** Scatters the n counted candidates into their buckets, stably; bucketEnd[b] becomes the end of bucket b. */
  scatter(n: number, hMax: number, shift: number, B: number): void;
  /** S + Σ (fl(S + v) - S) over vals[s, e) if no tie and the result stays in S's binade, else -1. */
  gridSum(s: number, e: number, S: number): number;
  /** The same with v = vals[k] / total. */
  gridSumDiv(s: number, e: number, S: number, total: number): number;
  /**
   * The walks' loop over the segments [start, ends[j]) (bucketEnd: level -1, else splitEnds at that level), for
   * j = j0 …, each added by gridSum / gridSumDiv while that holds: wasm/exp.ts, grid_walk, says exactly what it does.
   * Returns that j; walkSum and walkStart are the running sum and the start of segment j.
   */
  walk(level: number, j0: number, m: number, s: number, stop: number, S: number, limit: number, total: number, divide: boolean): number;
  readonly walkSum: number; readonly walkStart: number;
  /**
   * Splits ids/vals[s, e) into m = min(SPLIT_MAX, (e - s) >> 3) sub-buckets by probability, highest first
   * (floor((hi - v) * m / (hi - lo)), clamped: equal values share one), with a stable counting sort; their end
   * offsets go to splitEnds[level * SPLIT_MAX …]. Returns m, or 0 (nothing moved) when all values are equal or
   * their range is too small to scale.
   */
  split(s: number, e: number, level: number): number;
  readonly splitEnds: Int32Array;
}

class JsKernel implements SamplerKernel {
  readonly x: Float64Array;
  readonly e: Float64Array;
  readonly candIds: Int32Array;
  readonly ids: Int32Array;
  readonly vals: Float64Array;
  readonly bucketEnd: Int32Array;
  eMin = Infinity;
  readonly splitEnds = new Int32Array(SPLIT_MAX * SPLIT_LEVELS);
  private readonly eWords: Uint32Array;
  private readonly tmpIds: Int32Array;
  private readonly tmpVals: Float64Array;
  constructor(readonly kind: 'js' | 'math', readonly V: number) {
    this.x = this.e = new Float64Array(V);
    this.eWords = new Uint32Array(this.e.buffer);
    this.candIds = new Int32Array(V);
    this.ids = new Int32Array(V);
    this.vals = new Float64Array(V);
    this.bucketEnd = new Int32Array(KERNEL_MAX_BUCKETS);
    this.tmpIds = new Int32Array(V);
    this.tmpVals = new Float64Array(V);
  }
  split(s: number, e: number, level: number): number {
    const { ids, vals, tmpIds, tmpVals } = this;
    let hi = -Infinity, lo = Infinity;
    for (let k = s; k < e; k++) {
      const v = vals[k]!;
      if (v > hi) hi = v;
      if (v < lo) lo = v;
    }
    if (hi === lo) return 0;
    const m = Math.min(SPLIT_MAX, (e - s) >> 3);
    const scale = m / (hi - lo);
    if (scale === Infinity) return 0;
    const ends = this.splitEnds;
    const o = level * SPLIT_MAX;
    ends.fill(0, o, o + m);
    for (let k = s; k < e; k++) {
      const f = (hi - vals[k]!) * scale;
      ends[o + (f >= m ? m - 1 : f > 0 ? f | 0 : 0)]!++;
    }
    let acc = s;
    for (let j = 0; j < m; j++) {
      const c = ends[o + j]!;
      ends[o + j] = acc;
      acc += c;
    }
    for (let k = s; k < e; k++) {
      const v = vals[k]!;
      const f = (hi - v) * scale;
      const pos = ends[o + (f >= m ? m - 1 : f > 0 ? f | 0 : 0)]!++;
      tmpIds[pos] = ids[k]!;
      tmpVals[pos] = v;
    }
    ids.set(tmpIds.subarray(s, e), s);
    vals.set(tmpVals.subarray(s, e), s);
    return m;
  }
  max(): number {
    return maxJs(this.x, this.V);
  }
  expSum(max: number): number {
    const { x, e, V } = this;
    const sum = this.kind === 'js' ? expSumJs(x, e, V, max) : expSumMath(x, e, V, max);
    this.eMin = minPositive(e, V);
    return sum;
  }
  candidates(sum: number, eps: number, lim: number, hMax: number, shift: number, B: number): number {
    const { e, eWords, candIds, bucketEnd, V } = this;
    bucketEnd.fill(0, 0, B);
    let n = 0;
    for (let i = 0; i < V; i++) {
      const ei = e[i]!;
      if (ei < lim) continue;
      const q = ei / sum;
      if (q > 0 && q >= eps) {
        candIds[n] = i;
        e[n] = q;
        const b = (hMax - eWords[2 * n + HI]!) >> shift;
        bucketEnd[b < B ? b : B - 1]!++;
        n++;
      }
    }
    return n;
  }
  scatter(n: number, hMax: number, shift: number, B: number): void {
    const { e, eWords, candIds, ids, vals, bucketEnd } = this;
    let acc = 0;
    for (let b = 0; b < B; b++) {
      const c = bucketEnd[b]!;
      bucketEnd[b] = acc;
      acc += c;
    }
    for (let k = 0; k < n; k++) {
      const b = (hMax - eWords[2 * k + HI]!) >> shift;
      const pos = bucketEnd[b < B ? b : B - 1]!++;
      ids[pos] = candIds[k]!;
      vals[pos] = e[k]!;
    }
  }
  walkSum = 0; walkStart = 0;
  walk(level: number, j0: number, m: number, s: number, stop: number, S: number, limit: number, total: number, divide: boolean): number {
    const ends = level < 0 ? this.bucketEnd : this.splitEnds;
    const o = level < 0 ? 0 : level * SPLIT_MAX;
    let j = j0;
    for (; j < m && s < stop; j++) {
      const e = Math.min(ends[o + j]!, stop);
      if (e === s) continue;
      if (!(S > 0)) break;
      const end = divide ? this.gridSumDiv(s, e, S, total) : this.gridSum(s, e, S);
      if (!(end >= 0 && (divide ? !(limit < end) : end < limit))) break;
      S = end;
      s = e;
    }
    this.walkSum = S; this.walkStart = s;
    return j;
  }
  gridSum(s: number, e: number, S: number): number {
    const vals = this.vals;
    const P = binadeOf(S);
    const h = P * HALF_ULP;
    let sumR = 0;
    let tie = false;
    for (let k = s; k < e; k++) {
      const v = vals[k]!;
      const r = (S + v) - S;
      const d = v - r;
      if (d === h || d === -h) tie = true;
      sumR += r;
    }
    const end = S + sumR;
    return !tie && end < 2 * P ? end : -1;
  }
  gridSumDiv(s: number, e: number, S: number, total: number): number {
    const vals = this.vals;
    const P = binadeOf(S);
    const h = P * HALF_ULP;
    let sumR = 0;
    let tie = false;
    for (let k = s; k < e; k++) {
      const v = vals[k]! / total;
      const r = (S + v) - S;
      const d = v - r;
      if (d === h || d === -h) tie = true;
      sumR += r;
    }
    const end = S + sumR;
    return !tie && end < 2 * P ? end : -1;
  }
}

/** Half an ulp of a power of two P is P · 2^-53. */
const HALF_ULP = 2 ** -53;
const binF = new Float64Array(1);
const binU = new Uint32Array(binF.buffer);
/** The power of two P with P ≤ x < 2P, for a positive normal x (x's sign and exponent bits). */
export function binadeOf(x: number): number {
  binF[0] = x;
  binU[1 - HI] = 0;
  binU[HI]! &= 0xfff00000;
  return binF[0]!;
}
/** The high 32-bit word of x's bits (sign, exponent, top 20 mantissa bits). */
export function highWordOf(x: number): number {
  binF[0] = x;
  return binU[HI]!;
}

/**
 * The wasm kernel. All kernels place their arrays at the start of the module's heap (the sampler uses one at a time
 * and nothing keeps their contents from one sampling call to the next); a kernel for a larger size grows the
 * memory, which detaches the views of the others: they are re-created then.
 */
class WasmKernel implements SamplerKernel {
  eMin = Infinity;
  private buffer: ArrayBuffer | null = null;
  private views!: { x: Float64Array; candIds: Int32Array; ids: Int32Array; vals: Float64Array; bucketEnd: Int32Array; splitEnds: Int32Array };
  // The arrays' addresses in the module's memory; bkp/histp: the candidates' buckets (one byte each) and the four
  // histograms that count them (wasm/exp.ts, candidates).
  private readonly xp: number; private readonly candp: number; private readonly idsp: number;
  private readonly valsp: number; private readonly endp: number; private readonly splitp: number;
  private readonly tmpIdsp: number; private readonly tmpValsp: number;
  private readonly bkp: number; private readonly histp: number;
  constructor(private readonly w: ExpExports, readonly kind: ExpKind, readonly V: number) {
    const n = Math.max(V, 1);
    let need = w.heap_base();
    const take = (bytes: number) => { const p = (need + 63) & ~63; need = p + bytes; return p; }; // 64-byte aligned
    this.xp = take(8 * n); this.candp = take(4 * n); this.idsp = take(4 * n); this.valsp = take(8 * n);
    this.endp = take(4 * KERNEL_MAX_BUCKETS); this.splitp = take(4 * SPLIT_MAX * SPLIT_LEVELS);
    this.tmpIdsp = take(4 * n); this.tmpValsp = take(8 * n); this.bkp = take(n); this.histp = take(16 * KERNEL_MAX_BUCKETS);
    const have = w.memory.buffer.byteLength;
    if (need > have) w.memory.grow(Math.ceil((need - have) / 65536));
  }
  private v() {
    const buf = this.w.memory.buffer;
    if (buf !== this.buffer) {
      this.buffer = buf;
      this.views = {
        x: new Float64Array(buf, this.xp, this.V),
        candIds: new Int32Array(buf, this.candp, this.V),
        ids: new Int32Array(buf, this.idsp, this.V),
        vals: new Float64Array(buf, this.valsp, this.V),
        bucketEnd: new Int32Array(buf, this.endp, KERNEL_MAX_BUCKETS),
        splitEnds: new Int32Array(buf, this.splitp, SPLIT_MAX * SPLIT_LEVELS),
      };
    }
    return this.views;
  }
  get x(): Float64Array { return this.v().x; }
  get e(): Float64Array { return this.v().x; }
  /** The first `implicitIds` candidates of the last candidates() are tokens 0, 1, …, not written (wasm/exp.ts). */
  private implicitIds = 0;
  get candIds(): Int32Array {
    const c = this.v().candIds;
    for (; this.implicitIds > 0; this.implicitIds--) c[this.implicitIds - 1] = this.implicitIds - 1;
    return c;
  }
  get ids(): Int32Array { return this.v().ids; }
  get vals(): Float64Array { return this.v().vals; }
  get bucketEnd(): Int32Array { return this.v().bucketEnd; }
  get splitEnds(): Int32Array { return this.v().splitEnds; }
  max(): number {
    return this.w.max_of(this.xp, this.V);
  }
  expSum(max: number): number {
    if (this.kind !== 'wasm') {
      // the loops in wasm, the exponentials in JS (Math.exp where the engine's is not fdlibm's: see selfCheck)
      const x = this.x;
      const sum = this.kind === 'js' ? expSumJs(x, x, this.V, max) : expSumMath(x, x, this.V, max);
      this.eMin = minPositive(x, this.V);
      return sum;
    }
    const sum = this.w.exp_sum(this.xp, this.xp, this.V, max);
    this.eMin = this.w.last_emin();
    return sum;
  }
  candidates(sum: number, eps: number, lim: number, hMax: number, shift: number, B: number): number {
    const n = this.w.candidates(this.xp, this.V, sum, eps, lim, this.candp, hMax, shift, B, this.endp, this.bkp, this.histp);
    this.implicitIds = this.w.implicit_ids();
    return n;
  }
  scatter(n: number, _hMax: number, _shift: number, B: number): void {
    this.w.scatter(this.xp, this.candp, n, B, this.endp, this.idsp, this.valsp, this.bkp);
  }
  gridSum(s: number, e: number, S: number): number {
    return this.w.grid_sum(this.valsp, s, e, S);
  }
  gridSumDiv(s: number, e: number, S: number, total: number): number {
    return this.w.grid_sum_div(this.valsp, s, e, S, total);
  }
  walkSum = 0; walkStart = 0;
  walk(level: number, j0: number, m: number, s: number, stop: number, S: number, limit: number, total: number, divide: boolean): number {
    const endsp = level < 0 ? this.endp : this.splitp + 4 * SPLIT_MAX * level;
    const j = this.w.grid_walk(this.valsp, endsp, j0, m, s, stop, S, limit, total, divide ? 1 : 0);
    this.walkSum = this.w.walk_sum();
    this.walkStart = this.w.walk_start();
    return j;
  }
  split(s: number, e: number, level: number): number {
    return this.w.split(this.idsp, this.valsp, s, e, this.splitp + 4 * SPLIT_MAX * level, this.tmpIdsp, this.tmpValsp);
  }
}

/** Where the kernel's loops run: in the wasm module (whatever computes the exponentials), or in JS. */
export type LoopKind = 'wasm' | 'js';

function makeKernel(kind: ExpKind, V: number, loops: LoopKind): SamplerKernel {
  const w = loops === 'wasm' ? wasmModule() : null;
  if (w) return new WasmKernel(w, kind, V);
  if (kind === 'wasm') throw new Error('the wasm sampler kernel is not available here');
  return new JsKernel(kind, V);
}

// ---- the self-check ---------------------------------------------------------------------------------------------

/**
 * Arguments covering what the sampler can pass: every branch boundary of fdlibm's exp with its neighbours, zeros,
 * tiny values, the subnormal range, underflow, -Infinity, NaN, a few positive values, and a deterministic sweep of
 * [-750, 0]. Exported for the tests.
 */
export function selfCheckArguments(): Float64Array {
  const v: number[] = [0, -0, -Infinity, NaN, Infinity, 0.5, 1, 700, 710, -5e-324, -1e-300, -1e-20, -1e-9];
  const near = (x: number) => {
    const b = new DataView(new ArrayBuffer(8));
    b.setFloat64(0, x);
    const n = b.getBigUint64(0);
    for (const dlt of [-2n, -1n, 0n, 1n, 2n]) {
      b.setBigUint64(0, n + dlt);
      v.push(b.getFloat64(0));
    }
  };
  for (const x of [-TINY, -KT, -bits(0x3fd62e42, 0xfefa39ef), -bits(0x3ff0a2b2, 0), -bits(0x3ff0a2b2, 0x3f3bab73),
    LOWEST, -708.3964185322641, -709.0895657128241, -709.782712893384, UTH, -745, -1, -2, -0.5, -Math.LN2]) near(x);
  for (let k = 1; k <= 1075; k++) v.push(-k * Math.LN2, -(k + 0.5) * Math.LN2); // every reduction multiple k
  let s = 0x2545f491;
  const rnd = () => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return s / 2 ** 32; };
  for (let i = 0; i < 1500; i++) v.push(-rnd(), -40 * rnd(), -750 * rnd(), -(2 ** (-60 * rnd())));
  return Float64Array.from(v);
}

/** True when `kind` reproduces Math.exp (every value and the sum in index order) and the max. */
export function selfCheck(kind: ExpKind): boolean {
  const loops: LoopKind = kind === 'wasm' || wasmModule() ? 'wasm' : 'js';
  try {
    const args = selfCheckArguments();
    const V = args.length;
    const k = makeKernel(kind, V, loops);
    k.x.set(args);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(args[i]!);
    if (!Object.is(k.expSum(0), sum)) return false;
    for (let i = 0; i < V; i++) if (!Object.is(k.e[i], Math.exp(args[i]!))) return false;
    // the sum without the NaN and infinities, and the max of several arrays
    const finite = args.filter((x) => x <= 0 && x > -Infinity);
    const k2 = makeKernel(kind, finite.length, loops);
    k2.x.set(finite);
    let s2 = 0;
    for (const x of finite) s2 += Math.exp(x - 0.25);
    if (!Object.is(k2.expSum(0.25), s2)) return false;
    for (const xs of [finite, args, new Float64Array(7).fill(-Infinity), Float64Array.of(NaN, -3, NaN), Float64Array.of(-1, 5, 2, 5, 9, 1, 9)]) {
      const k3 = makeKernel(kind, xs.length, loops);
      k3.x.set(xs);
      if (k3.max() !== maxJs(xs, xs.length)) return false;
    }
    return true;
  } catch {
    return false;
  }
}

// ---- selection --------------------------------------------------------------------------------------------------

const checked = new Map<ExpKind, boolean>();
let forced: ExpKind | undefined;
let forcedLoops: LoopKind | undefined;
let chosen: ExpKind | undefined;

/** Whether `kind` can be used here (available and bit-identical to Math.exp); checked once. */
export function expKindAvailable(kind: ExpKind): boolean {
  if (kind === 'math') return true;
  let ok = checked.get(kind);
  if (ok === undefined) {
    ok = selfCheck(kind);
    checked.set(kind, ok);
  }
  return ok;
}

/**
 * The exponentials in use: the forced kind, else 'wasm' when it passes its self-check, else 'math' (Math.exp
 * itself: an engine whose Math.exp is not fdlibm's — Chromium 156's, for one — gets its own bits, only slower).
 * ('js' is never chosen by itself: in V8 the scalar port is no faster than Math.exp; it is there to be compared
 * with it.)
 */
export function expKind(): ExpKind {
  if (forced) return forced;
  chosen ??= expKindAvailable('wasm') ? 'wasm' : 'math';
  return chosen;
}

/** Where the loops run: in wasm whenever the module can be instantiated here (unless JS is forced). */
export function loopKind(): LoopKind {
  return forcedLoops ?? (wasmModule() ? 'wasm' : 'js');
}

/**
 * Forces the exponentials' kind and/or where the loops run (tests and benchmarks compare them); undefined returns
 * to the automatic choice. Refuses a kind that failed its self-check. Returns the kind now in use.
 */
export function forceExpKind(kind: ExpKind | undefined, loops?: LoopKind): ExpKind {
  if (kind && !expKindAvailable(kind)) throw new Error(`the ${kind} exp kernel is not bit-identical to Math.exp here`);
  if (kind === 'wasm' && loops === 'js') throw new Error('the wasm exp kernel runs in the wasm loops');
  forced = kind;
  forcedLoops = loops;
  return expKind();
}

/** A kernel for vocabulary size V, with the exponentials and loops in use unless others (available) are named. */
export function samplerKernel(V: number, kind: ExpKind = expKind(), loops: LoopKind = kind === 'wasm' ? 'wasm' : loopKind()): SamplerKernel {
  return makeKernel(kind, V, loops);
}
