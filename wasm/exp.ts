// The sampler's kernels (src/runtime/fast-exp.ts, src/runtime/sampler-workspace.ts), AssemblyScript compiled to
// WebAssembly SIMD128: a small module of its own (its own memory, no threads), embedded in src/runtime/exp-wasm.ts by
// wasm/build-exp.mjs. The softmax (max_of, exp_sum) and the O(n) loops of the sampler's bucketed top-p and draw
// (candidates, scatter, grid_sum, grid_sum_div, grid_walk, split); fast-exp.ts has the same loops in JS for hosts without the
// module, and sampler-workspace.ts describes what they compute and why the results are those of the sorted sequential
// sums.
//
// exp_sum computes e[i] = exp(x[i] - max) and their sum in index order with results that are bit for bit those of
// V8's Math.exp, which is fdlibm's e_exp.c (V8 src/base/ieee754.cc, `exp`). The same algorithm, two lanes at a time,
// for the arguments the sampler produces (d = x - max ≤ 0):
//
//   reduction   k = 0 when |d| ≤ 0.5 ln2 (high word of |d| ≤ 0x3fd62e42), else k = trunc(d / ln2 - 0.5);
//               hi = d - k * ln2_hi, lo = k * ln2_lo, r = hi - lo    (ln2_hi has 32 bits: k * ln2_hi is exact)
//   polynomial  t = r², c = r - t (P1 + t (P2 + t (P3 + t (P4 + t P5))))
//   result      y = 1 - ((lo - r c / (2 - c)) - hi), exp(d) = y · 2^k
//
// fdlibm's own branches reduce to this one formula on d ≤ 0: its 0.5 ln2 < |d| < 1.5 ln2 branch (hi = d + ln2_hi,
// lo = -ln2_lo, k = -1) is what the general formula gives there (trunc lands on -1 in that whole range), and its k = 0
// return `1 - ((d c) / (c - 2) - d)` is the same operations up to the sign of a zero that the final subtraction
// absorbs. Lanes with |d| < 2^-28 take fdlibm's `1 + d`; d below the underflow threshold (-745.13…, -Infinity
// included) gives +0 as in fdlibm. Every other argument the fast path does not cover — d < -708 (k < -1021:
// subnormal results, scaled differently in fdlibm), d > 0, NaN — and the last n mod 128 ones are computed by the
// host's own Math.exp (the import `env.exp`).
// The host checks exp_sum against Math.exp when it loads the module and computes the exponentials with Math.exp
// instead if any value differs (the other functions do not depend on it).

// @ts-ignore: decorator
@external("env", "exp")
declare function host_exp(x: f64): f64;

// The constants, as bit patterns (fdlibm's hexadecimal values). Kept in memory and loaded into locals once per call:
// as v128.const immediates inside the loop they would be rematerialised on every iteration.
const K = memory.data<u64>([
  0x3FF71547652B82FE, // 0: 1 / ln2
  0x3FE62E42FEE00000, // 1: ln2_hi
  0x3DEA39EF35793C76, // 2: ln2_lo
  0x3FC555555555553E, // 3: P1
  0xBF66C16C16BEBD93, // 4: P2
  0x3F11566AAF25DE2C, // 5: P3
  0xBEBBBD41C5D26BF1, // 6: P4
  0x3E66376972BEA4D0, // 7: P5
  0x3FE0000000000000, // 8: 0.5
  0x3FF0000000000000, // 9: 1
  0x4000000000000000, // 10: 2
  0x3FD62E4300000000, // 11: |d| ≥ this ⇔ high word of |d| > 0x3fd62e42 (k ≠ 0)
  0x3E30000000000000, // 12: 2^-28: |d| < this ⇔ high word of |d| < 0x3e300000 (result 1 + d)
  0xC086200000000000, // 13: -708: d ≥ this ⇒ k ≥ -1021 (2^k is a normal number)
  0xC0874910D52D3051, // 14: fdlibm's underflow threshold -745.13321910194110842
  0x43300000000003FF, // 15: 2^52 + 1023: k + this (exact) has k + 1023 in its low bits
]);

// @ts-ignore: decorator
@inline function kv(i: i32): v128 {
  return f64x2.splat(load<f64>(K + (<usize>i << 3)));
}

/** Largest x[i], i < n, as `if (x[i] > m) m = x[i]` from m = -Infinity (NaN never wins); -Infinity if n = 0. */
export function max_of(xp: usize, n: i32): f64 {
  let m0 = f64x2.splat(-Infinity), m1 = m0;
  let i = 0;
  // pmax(m, v) = m < v ? v : m: a NaN v leaves m as it is; of +0 and -0 the first one seen stays (either is fine:
  // the caller only subtracts the maximum, and d - (+0) and d - (-0) have the same exp).
  for (; i + 4 <= n; i += 4) {
    const p = xp + (<usize>i << 3);
    m0 = f64x2.pmax(m0, v128.load(p));
    m1 = f64x2.pmax(m1, v128.load(p, 16));
  }
  m0 = f64x2.pmax(m0, m1);
  let m = f64x2.extract_lane(m0, 0);
  const m2 = f64x2.extract_lane(m0, 1);
  if (m2 > m) m = m2;
  for (; i < n; i++) {
    const v = load<f64>(xp + (<usize>i << 3));
    if (v > m) m = v;
  }
  return m;
}

// Scratch for exp_sum's blocks: d, r, hi, lo, k and c of 128 arguments.
const BLOCK = 128;
const BLOCK_BYTES: usize = BLOCK * 8;
const SCRATCH = memory.data(6 * BLOCK * 8, 16);

/** The last step of exp_sum for two lanes (from the scratch rows at these addresses). */
// @ts-ignore: decorator
@inline function expLanes(rp: usize, cp: usize, dp: usize, lop: usize, hip: usize, kfp: usize, ONE: v128, TWO: v128, MAGIC: v128, UTH: v128, TINY: v128): v128 {
  const r = v128.load(rp), c = v128.load(cp), d = v128.load(dp);
  const y = f64x2.sub(ONE, f64x2.sub(f64x2.sub(v128.load(lop), f64x2.div(f64x2.mul(r, c), f64x2.sub(TWO, c))), v128.load(hip)));
  const twopk = i64x2.shl(f64x2.add(v128.load(kfp), MAGIC), 52);
  const e = v128.andnot(f64x2.mul(y, twopk), f64x2.lt(d, UTH));
  return v128.bitselect(f64x2.add(ONE, d), e, f64x2.lt(f64x2.neg(d), TINY));
}

/**
 * e[i] = exp(x[i] - max) for i < n (x and e may be the same array); returns their sum, added in index order
 * (sum = 0; sum += e[0]; sum += e[1]; …). The smallest positive e[i] is kept for last_emin().
 *
 * Blocks of 128 arguments in three passes (reduction; polynomial; division and scaling), so that each pass's
 * dependency chain is short and many independent iterations are in flight at once: one pass over the whole
 * formula is one ≈ 110-cycle chain per pair, and the processor's scheduler cannot hold enough of them to overlap.
 * Where a block needs no Math.exp fix-up, the sum (still e[0], e[1], … one at a time) and the minimum are taken
 * in the third pass itself, so that the sum's chain of dependent additions runs alongside the divisions.
 */
export function exp_sum(xp: usize, ep: usize, n: i32, max: f64): f64 {
  const INVLN2 = kv(0), LN2HI = kv(1), LN2LO = kv(2), P1 = kv(3), P2 = kv(4), P3 = kv(5), P4 = kv(6), P5 = kv(7);
  const HALF = kv(8), ONE = kv(9), TWO = kv(10), KT = kv(11), TINY = kv(12), LOWEST = kv(13), UTH = kv(14);
  const MAGIC = kv(15);
  const ZERO = f64x2.splat(0);
  const m = f64x2.splat(max);
  const D = SCRATCH, R = D + BLOCK_BYTES, HI = R + BLOCK_BYTES, LO = HI + BLOCK_BYTES, KF = LO + BLOCK_BYTES;
  const C = KF + BLOCK_BYTES;
  let sum: f64 = 0;
  let em: f64 = Infinity;
  let emv = f64x2.splat(Infinity);
  let i = 0;
  for (; i + BLOCK <= n; i += BLOCK) {
    const xb = xp + (<usize>i << 3);
    const eb = ep + (<usize>i << 3);
    // reduction: k as a double (an integer value; +0 where |d| ≤ 0.5 ln2), hi, lo, r
    let other = i32x4.splat(0); // lanes the fast path does not cover
    for (let k: usize = 0; k < BLOCK_BYTES; k += 16) {
      const d = f64x2.sub(v128.load(xb + k), m);
      const kf = v128.and(f64x2.trunc(f64x2.sub(f64x2.mul(INVLN2, d), HALF)), f64x2.ge(f64x2.neg(d), KT));
      const hi = f64x2.sub(d, f64x2.mul(kf, LN2HI));
      const lo = f64x2.mul(kf, LN2LO);
      v128.store(D + k, d);
      v128.store(R + k, f64x2.sub(hi, lo));
      v128.store(HI + k, hi);
      v128.store(LO + k, lo);
      v128.store(KF + k, kf);
      // covered: -708 ≤ d ≤ 0, and the underflows d < -745.13… (NaN is neither)
      other = v128.or(other, v128.not(v128.or(v128.and(f64x2.ge(d, LOWEST), f64x2.le(d, ZERO)), f64x2.lt(d, UTH))));
    }
    // polynomial: c = r - t (P1 + t (P2 + t (P3 + t (P4 + t P5)))), t = r²
    for (let k: usize = 0; k < BLOCK_BYTES; k += 16) {
      const r = v128.load(R + k);
      const t = f64x2.mul(r, r);
      const p5 = f64x2.add(P4, f64x2.mul(t, P5));
      const p4 = f64x2.add(P3, f64x2.mul(t, p5));
      const p3 = f64x2.add(P2, f64x2.mul(t, p4));
      const p2 = f64x2.add(P1, f64x2.mul(t, p3));
      v128.store(C + k, f64x2.sub(r, f64x2.mul(t, p2)));
    }
    // y = 1 - ((lo - r c / (2 - c)) - hi), exp = y · 2^k (2^k: the low bits of k + 2^52 + 1023 shifted into the
    // exponent field); 1 + d where |d| < 2^-28; +0 below the underflow threshold
    if (!v128.any_true(other)) {
      // every lane is covered: the sum (in index order: lane 0, then lane 1) and the smallest positive value are
      // taken in the same loop, so that the sum's chain of dependent additions overlaps the formula's work
      for (let k: usize = 0; k < BLOCK_BYTES; k += 16) {
        const e = expLanes(R + k, C + k, D + k, LO + k, HI + k, KF + k, ONE, TWO, MAGIC, UTH, TINY);
        v128.store(eb + k, e);
        sum += f64x2.extract_lane(e, 0);
        sum += f64x2.extract_lane(e, 1);
        // em = min(em, e) over e > 0, lane by lane (a minimum: its order does not matter)
        emv = v128.bitselect(e, emv, v128.and(f64x2.lt(e, emv), f64x2.gt(e, ZERO)));
      }
      continue;
    }
    for (let k: usize = 0; k < BLOCK_BYTES; k += 16) {
      v128.store(eb + k, expLanes(R + k, C + k, D + k, LO + k, HI + k, KF + k, ONE, TWO, MAGIC, UTH, TINY));
    }
    // the other lanes (d < -708 but not an underflow, d > 0, NaN): the host's Math.exp
    for (let k: usize = 0; k < BLOCK_BYTES; k += 8) {
      const d = load<f64>(D + k);
      if (!((d >= -708 && d <= 0) || d < reinterpret<f64>(0xC0874910D52D3051))) store<f64>(eb + k, host_exp(d));
    }
    for (let k: usize = 0; k < BLOCK_BYTES; k += 8) {
      const e = load<f64>(eb + k);
      sum += e;
      if (e < em && e > 0) em = e;
    }
  }
  const em0 = f64x2.extract_lane(emv, 0), em1 = f64x2.extract_lane(emv, 1);
  if (em0 < em) em = em0;
  if (em1 < em) em = em1;
  for (; i < n; i++) {
    const e = host_exp(load<f64>(xp + (<usize>i << 3)) - max);
    store<f64>(ep + (<usize>i << 3), e);
    sum += e;
    if (e < em && e > 0) em = e;
  }
  eMin = em;
  return sum;
}

let eMin: f64 = Infinity;

/** The smallest positive e[i] of the last exp_sum (+Infinity if none). */
export function last_emin(): f64 {
  return eMin;
}

// ---- the sampler's loops (see src/runtime/sampler-workspace.ts, class Workspace) ------------------------------

/**
 * The last `candidates` left cand[0, implicitIds) unwritten: those candidates are tokens 0, 1, … (the host fills
 * them in where it reads cand itself, see fast-exp.ts, WasmKernel.candIds).
 */
let implicitIds: i32 = 0;
export function implicit_ids(): i32 {
  return implicitIds;
}

/**
 * Candidates in id order: q = e[i] / sum with q > 0 and q ≥ eps. Their ids go to cand[0, n), their q to e[0, n)
 * (compacted in place: n ≤ i), their buckets min((hMax - highword(q)) >> shift, B - 1) to the bytes bk[0, n)
 * (B ≤ 256), and ends[b] = the number in bucket b. Returns n. (`lim` is not needed here.)
 *
 * Written for speed (≈ 2× the simple loop that tests each lane and counts each candidate as it goes):
 *   - the compaction is branchless within a group of eight: every lane is stored at position n, and n advances by 0
 *     or 1 per lane (a lane that fails is overwritten by the next one), so a peaked distribution, where a few lanes
 *     in many pass at random, does not pay a mispredicted branch per candidate; groups where no lane passes are
 *     skipped (the stores cost more than that one branch where nearly every lane fails: a dominant token);
 *   - the buckets are computed two at a time and only stored (one byte each) here; the counting is a second pass
 *     over those bytes into four histograms (k mod 4: consecutive increments of one bucket do not wait on each
 *     other's store), summed at the end. Counting in the first loop made every increment's address wait on a
 *     division, and the loads behind those stores then stalled.
 */
// The buckets min((hMax - highword(q)) >> shift, B - 1) of two q, as i64 lanes. hMax - highword(q) ≥ 0 for every
// candidate (q ≤ qMax); a lane that fails may give anything: it is not kept.
// @ts-ignore: decorator
@inline function bucketsOf(qv: v128, HM: v128, BM: v128, shift: i32): v128 {
  const bb = i64x2.shr_s(i64x2.sub(HM, i64x2.shr_u(qv, 32)), shift);
  return v128.bitselect(bb, BM, i64x2.lt_s(bb, BM));
}

// One pair of `candidates`: both lanes stored at position n, n advanced past the ones that pass (ok: their bits).
// @ts-ignore: decorator
@inline function candidatePair(ep: usize, candp: usize, bkp: usize, i: i32, n: i32, qv: v128, ok: i32, HM: v128, BM: v128, shift: i32): i32 {
  const bv = bucketsOf(qv, HM, BM, shift);
  store<i32>(candp + (<usize>n << 2), i);
  store<f64>(ep + (<usize>n << 3), f64x2.extract_lane(qv, 0));
  store<u8>(bkp + <usize>n, <u8>i64x2.extract_lane(bv, 0));
  n += ok & 1;
  store<i32>(candp + (<usize>n << 2), i + 1);
  store<f64>(ep + (<usize>n << 3), f64x2.extract_lane(qv, 1));
  store<u8>(bkp + <usize>n, <u8>i64x2.extract_lane(bv, 1));
  return n + (ok >> 1);
}

export function candidates(ep: usize, V: i32, sum: f64, eps: f64, lim: f64, candp: usize, hMax: i32, shift: i32, B: i32, endp: usize, bkp: usize, histp: usize): i32 {
  const S2 = f64x2.splat(sum), EPS = f64x2.splat(eps), Z = f64x2.splat(0);
  const HM = i64x2.splat(<i64>hMax), BM = i64x2.splat(<i64>(B - 1));
  const IOTA = i32x4(0, 1, 2, 3), FOUR = i32x4.splat(4);
  let n = 0;
  let i = 0;
  let implicit = 0;
  for (; i + 8 <= V; i += 8) {
    const p = ep + (<usize>i << 3);
    const q0 = f64x2.div(v128.load(p), S2), q1 = f64x2.div(v128.load(p, 16), S2);
    const q2 = f64x2.div(v128.load(p, 32), S2), q3 = f64x2.div(v128.load(p, 48), S2);
    const m0 = v128.and(f64x2.gt(q0, Z), f64x2.ge(q0, EPS)), m1 = v128.and(f64x2.gt(q1, Z), f64x2.ge(q1, EPS));
    const m2 = v128.and(f64x2.gt(q2, Z), f64x2.ge(q2, EPS)), m3 = v128.and(f64x2.gt(q3, Z), f64x2.ge(q3, EPS));
    if (!v128.any_true(v128.or(v128.or(m0, m1), v128.or(m2, m3)))) continue;
    if (i64x2.all_true(v128.and(v128.and(m0, m1), v128.and(m2, m3)))) {
      // all eight pass (a flat distribution: nearly every group): whole-vector stores instead of 24 scalar ones —
      // the q as they are, the ids i … i + 7, and the buckets' low bytes (< 256) gathered into one 8-byte store
      const o = ep + (<usize>n << 3);
      v128.store(o, q0);
      v128.store(o, q1, 16);
      v128.store(o, q2, 32);
      v128.store(o, q3, 48);
      if (n == i) {
        // every candidate so far is its own index (all of them passed): their ids are left implicit (see
        // implicitIds), which saves a quarter of this pass's writes and of the scatter's reads in the flat case
        implicit = n + 8;
      } else {
        const c = candp + (<usize>n << 2);
        const iv = i32x4.add(i32x4.splat(i), IOTA);
        v128.store(c, iv);
        v128.store(c, i32x4.add(iv, FOUR), 16);
      }
      const b0 = bucketsOf(q0, HM, BM, shift), b1 = bucketsOf(q1, HM, BM, shift);
      const b2 = bucketsOf(q2, HM, BM, shift), b3 = bucketsOf(q3, HM, BM, shift);
      const lo = i8x16.shuffle(b0, b1, 0, 8, 16, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
      const hi = i8x16.shuffle(b2, b3, 0, 8, 16, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
      store<u64>(bkp + <usize>n, i64x2.extract_lane(i8x16.shuffle(lo, hi, 0, 1, 2, 3, 16, 17, 18, 19, 0, 0, 0, 0, 0, 0, 0, 0), 0));
      n += 8;
      continue;
    }
    n = candidatePair(ep, candp, bkp, i, n, q0, i64x2.bitmask(m0), HM, BM, shift);
    n = candidatePair(ep, candp, bkp, i + 2, n, q1, i64x2.bitmask(m1), HM, BM, shift);
    n = candidatePair(ep, candp, bkp, i + 4, n, q2, i64x2.bitmask(m2), HM, BM, shift);
    n = candidatePair(ep, candp, bkp, i + 6, n, q3, i64x2.bitmask(m3), HM, BM, shift);
  }
  for (; i + 2 <= V; i += 2) {
    const qv = f64x2.div(v128.load(ep + (<usize>i << 3)), S2);
    n = candidatePair(ep, candp, bkp, i, n, qv, i64x2.bitmask(v128.and(f64x2.gt(qv, Z), f64x2.ge(qv, EPS))), HM, BM, shift);
  }
  if (i < V) {
    const q = load<f64>(ep + (<usize>i << 3)) / sum;
    if (q > 0 && q >= eps) {
      store<i32>(candp + (<usize>n << 2), i);
      store<f64>(ep + (<usize>n << 3), q);
      store<u8>(bkp + <usize>n, <u8>min((hMax - <i32>(reinterpret<u64>(q) >> 32)) >> shift, B - 1));
      n++;
    }
  }
  implicitIds = implicit;
  // the counts: four histograms of B entries at histp
  const Bb = <usize>B << 2;
  memory.fill(histp, 0, Bb << 2);
  const h1 = histp + Bb, h2 = h1 + Bb, h3 = h2 + Bb;
  let k = 0;
  for (; k + 4 <= n; k += 4) {
    const w = <usize>load<u32>(bkp + <usize>k);
    const p0 = histp + ((w & 255) << 2), p1 = h1 + (((w >> 8) & 255) << 2);
    const p2 = h2 + (((w >> 16) & 255) << 2), p3 = h3 + ((w >> 24) << 2);
    store<i32>(p0, load<i32>(p0) + 1);
    store<i32>(p1, load<i32>(p1) + 1);
    store<i32>(p2, load<i32>(p2) + 1);
    store<i32>(p3, load<i32>(p3) + 1);
  }
  for (; k < n; k++) {
    const p = histp + (<usize>load<u8>(bkp + <usize>k) << 2);
    store<i32>(p, load<i32>(p) + 1);
  }
  for (let b: usize = 0; b < Bb; b += 4) {
    store<i32>(endp + b, load<i32>(histp + b) + load<i32>(h1 + b) + load<i32>(h2 + b) + load<i32>(h3 + b));
  }
  return n;
}

/**
 * The stable counting scatter of the n candidates (ids cand[k], probabilities e[k], buckets bk[k], counted by
 * `candidates`) into their buckets: ends[b] becomes the end offset of bucket b, ids/vals are laid out bucket after
 * bucket. Two candidates per iteration, both positions read before either is written back (the second one's
 * position is one further when both are in the same bucket): ≈ 1.5× faster than one at a time, where every
 * position waited on the previous candidate's increment.
 */
export function scatter(ep: usize, candp: usize, n: i32, B: i32, endp: usize, idsp: usize, valsp: usize, bkp: usize): void {
  let acc = 0;
  for (let b = 0; b < B; b++) {
    const p = endp + (<usize>b << 2);
    const c = load<i32>(p);
    store<i32>(p, acc);
    acc += c;
  }
  scatterRange(ep, candp, 0, implicitIds, endp, idsp, valsp, bkp, true);
  scatterRange(ep, candp, implicitIds, n, endp, idsp, valsp, bkp, false);
}

/** scatter's loop over candidates k0 … k1 - 1; `implicit`: their ids are k (not in cand). */
// @ts-ignore: decorator
@inline function scatterRange(ep: usize, candp: usize, k0: i32, k1: i32, endp: usize, idsp: usize, valsp: usize, bkp: usize, implicit: bool): void {
  let k = k0;
  for (; k + 2 <= k1; k += 2) {
    const b0 = <usize>load<u8>(bkp + <usize>k), b1 = <usize>load<u8>(bkp + <usize>k, 1);
    const p0 = endp + (b0 << 2), p1 = endp + (b1 << 2);
    const pos0 = load<i32>(p0);
    const pos1 = load<i32>(p1) + <i32>(b0 == b1);
    store<i32>(p0, pos0 + 1);
    store<i32>(p1, pos1 + 1); // b0 == b1: overwrites the store above with pos0 + 2
    store<i32>(idsp + (<usize>pos0 << 2), implicit ? k : load<i32>(candp + (<usize>k << 2)));
    store<f64>(valsp + (<usize>pos0 << 3), load<f64>(ep + (<usize>k << 3)));
    store<i32>(idsp + (<usize>pos1 << 2), implicit ? k + 1 : load<i32>(candp + (<usize>k << 2), 4));
    store<f64>(valsp + (<usize>pos1 << 3), load<f64>(ep + (<usize>k << 3), 8));
  }
  if (k < k1) {
    const p = endp + (<usize>load<u8>(bkp + <usize>k) << 2);
    const pos = load<i32>(p);
    store<i32>(p, pos + 1);
    store<i32>(idsp + (<usize>pos << 2), implicit ? k : load<i32>(candp + (<usize>k << 2)));
    store<f64>(valsp + (<usize>pos << 3), load<f64>(ep + (<usize>k << 3)));
  }
}

/**
 * The running sum S (> 0, normal) after adding vals[s, e) one by one in sorted order, computed without sorting:
 * S + Σ r(v), r(v) = fl(S + v) - S, when no v is an exact tie (v - r(v) = ±ulp/2) and the result stays in S's
 * binade; -1 otherwise (the caller then sorts the bucket and adds one by one).
 */
export function grid_sum(valsp: usize, s: i32, e: i32, S: f64): f64 {
  return gridSum(valsp, s, e, S, 1, false);
}

/**
 * grid_sum and grid_sum_div, four values at a time. The r(v) are multiples of ulp(P), each at least 0, so as long
 * as their exact total is below 2P every partial sum of them — in any grouping — is exact and the total is the
 * one the sequential loop gives; when it is not, the sequential and the grouped totals both leave S + total at or
 * above 2P, and both give -1. The tie flag is an OR: its order does not matter either.
 */
// @ts-ignore: decorator
@inline function gridSum(valsp: usize, s: i32, e: i32, S: f64, total: f64, divide: bool): f64 {
  const P = reinterpret<f64>(reinterpret<u64>(S) & 0xFFF0000000000000);
  const h = P * 1.1102230246251565e-16; // 2^-53
  const S2 = f64x2.splat(S), H2 = f64x2.splat(h), T2 = f64x2.splat(total);
  let a0 = f64x2.splat(0), a1 = a0, t = i64x2.splat(0);
  let k = s;
  for (; k + 4 <= e; k += 4) {
    const p = valsp + (<usize>k << 3);
    let v0 = v128.load(p), v1 = v128.load(p, 16);
    if (divide) {
      v0 = f64x2.div(v0, T2);
      v1 = f64x2.div(v1, T2);
    }
    const r0 = f64x2.sub(f64x2.add(S2, v0), S2), r1 = f64x2.sub(f64x2.add(S2, v1), S2);
    const d0 = f64x2.abs(f64x2.sub(v0, r0)), d1 = f64x2.abs(f64x2.sub(v1, r1));
    t = v128.or(t, v128.or(f64x2.eq(d0, H2), f64x2.eq(d1, H2)));
    a0 = f64x2.add(a0, r0);
    a1 = f64x2.add(a1, r1);
  }
  a0 = f64x2.add(a0, a1);
  let sumR = f64x2.extract_lane(a0, 0) + f64x2.extract_lane(a0, 1);
  let tie = v128.any_true(t);
  for (; k < e; k++) {
    let v = load<f64>(valsp + (<usize>k << 3));
    if (divide) v = v / total;
    const r = (S + v) - S;
    const d = v - r;
    tie = tie | (d == h) | (d == -h);
    sumR += r;
  }
  const end = S + sumR;
  return !tie && end < 2 * P ? end : -1;
}

/** grid_sum for the draw's running sum of vals[k] / total. */
export function grid_sum_div(valsp: usize, s: i32, e: i32, S: f64, total: f64): f64 {
  return gridSum(valsp, s, e, S, total, true);
}

let walkSum: f64 = 0;
let walkStart: i32 = 0;

/**
 * The walks' loop over consecutive segments (sampler-workspace.ts, nucleus and segment): segment j = [start, ends[j])
 * clipped to `stop` (start: s for the first, then the previous end), for j = j0, j0 + 1, … < m while start < stop,
 * empty ones skipped. Each is added to S by its grid sum (grid_sum, or grid_sum_div with `divide`) as long as that
 * holds and the sum stays below the limit (draw: not above it); returns the index of the first one that is not
 * (S = 0 included), or where the loop ended, with the running sum and that segment's start in walk_sum() and
 * walk_start(). One call for all the buckets (≈ 180 of them, most added whole) instead of one call from the host
 * per bucket.
 */
export function grid_walk(valsp: usize, endsp: usize, j0: i32, m: i32, s: i32, stop: i32, S: f64, limit: f64, total: f64, divide: bool): i32 {
  let j = j0;
  for (; j < m && s < stop; j++) {
    let e = load<i32>(endsp + (<usize>j << 2));
    if (e > stop) e = stop;
    if (e == s) continue;
    if (!(S > 0)) break;
    let end: f64;
    if (divide) {
      end = gridSum(valsp, s, e, S, total, true);
      if (!(end >= 0 && !(limit < end))) break;
    } else {
      end = gridSum(valsp, s, e, S, 1, false);
      if (!(end >= 0 && end < limit)) break;
    }
    S = end;
    s = e;
  }
  walkSum = S;
  walkStart = s;
  return j;
}

/** The running sum and the segment start where the last grid_walk stopped. */
export function walk_sum(): f64 {
  return walkSum;
}
export function walk_start(): i32 {
  return walkStart;
}

/**
 * Splits vals[s, e) (with ids) into m = min(64, (e - s) >> 3) sub-buckets by probability, highest first:
 * floor((hi - v) * m / (hi - lo)) clamped to [0, m - 1] (monotone: equal values share a sub-bucket), by a stable
 * counting sort through tmp; the sub-bucket end offsets go to ends[0, m). Returns m, or 0 (nothing moved) when all
 * values are equal or their range is too small to scale.
 */
export function split(idsp: usize, valsp: usize, s: i32, e: i32, endsp: usize, tmpIdsp: usize, tmpValsp: usize): i32 {
  let hi: f64 = -Infinity, lo: f64 = Infinity;
  for (let k = s; k < e; k++) {
    const v = load<f64>(valsp + (<usize>k << 3));
    if (v > hi) hi = v;
    if (v < lo) lo = v;
  }
  if (hi == lo) return 0;
  const m = min(64, (e - s) >> 3);
  const scale = <f64>m / (hi - lo);
  if (scale == Infinity) return 0;
  const mf = <f64>m;
  memory.fill(endsp, 0, <usize>m << 2);
  for (let k = s; k < e; k++) {
    const f = (hi - load<f64>(valsp + (<usize>k << 3))) * scale;
    const b = f >= mf ? m - 1 : f > 0 ? <i32>f : 0;
    const p = endsp + (<usize>b << 2);
    store<i32>(p, load<i32>(p) + 1);
  }
  let acc = s;
  for (let j = 0; j < m; j++) {
    const p = endsp + (<usize>j << 2);
    const c = load<i32>(p);
    store<i32>(p, acc);
    acc += c;
  }
  for (let k = s; k < e; k++) {
    const v = load<f64>(valsp + (<usize>k << 3));
    const f = (hi - v) * scale;
    const b = f >= mf ? m - 1 : f > 0 ? <i32>f : 0;
    const p = endsp + (<usize>b << 2);
    const pos = load<i32>(p);
    store<i32>(p, pos + 1);
    store<i32>(tmpIdsp + (<usize>pos << 2), load<i32>(idsp + (<usize>k << 2)));
    store<f64>(tmpValsp + (<usize>pos << 3), v);
  }
  memory.copy(idsp + (<usize>s << 2), tmpIdsp + (<usize>s << 2), <usize>(e - s) << 2);
  memory.copy(valsp + (<usize>s << 3), tmpValsp + (<usize>s << 3), <usize>(e - s) << 3);
  return m;
}

/** First byte past the module's static data (the host places its arrays above it). */
export function heap_base(): usize {
  return __heap_base;
}
