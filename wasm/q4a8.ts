// Q4_0 weights × 8-bit activations (the wasm backend's `activations: 'q8'` mode, llama.cpp's own arithmetic for
// Q4_0), re-exported by kernels.ts. x is rounded per token and block of 32 to int8 codes c with a scale
// s = f16(max|x_b| / 127) (quant_x8), and each block's dot product Σ (q − 8)·c is exact in i32.
//
// Layout `q4x4` (dtype 6; src/backends/wasm/layout.ts layoutQ4x4): rows in groups of 4, each group's blocks in column
// order, 64 code bytes per group and block: vector j = 0..3 (16 bytes) holds in its i32 lane r the 4 bytes of row r,
// byte i = q[8j + i] | q[8j + 4 + i] << 4 (q: the block's 4-bit codes, w = (q − 8)·d). Then, at sc, the 4 rows' f16
// scales d (×2^shift, as layoutBlocks) of every block: [groups, K/32, 4] u16. A group's weights are one contiguous
// stream, and lane r of every vector belongs to row r, so a block's 4 row sums come out in one vector: no
// horizontal sums, no transposes, and the x codes enter as 4-byte broadcasts (loads, no shuffles).
//
// Per vector j: lo = v & 15 holds q[8j..8j+3] of each row and hi = (v >> 4) & 15 holds q[8j+4..8j+7], multiplied
// by the broadcast codes c[8j..8j+3] and c[8j+4..8j+7]. Relaxed build: relaxed_dot_i8x16_i7x16 with the 4-bit codes
// as the 7-bit operand (so the result is the same on every engine), pair sums in int16 lanes; the 8 products of a
// block add up in int16 (each lane 16 products, |·| ≤ 16·15·127 = 30480 < 2^15), widened once (extadd_pairwise).
// Plain build: codes widened to int16 for i32x4.dot_i16x8_s (quant_x8 then stores int16 codes). The −8 offset is
// added once per block from −8·Σc, which quant_x8 stores beside the scale, and each row's sum is scaled by d·s in
// one f32 multiply-add per block, in column order.

import { madd, f4, f16mul, store4 } from './common';
import { scales4 } from './blocks';

let sinkA: u32 = 0;

/**
 * Bytes per block of quant_x8's output: the 32 codes in 8 groups of 4 consecutive ones, each group broadcast to a
 * whole vector (16 bytes: 4 copies of 4 int8 codes for the relaxed dot product; 2 copies of 4 int16 for the plain
 * one), so the kernel loads them at constant offsets (V8 neither folds a broadcast load's offset nor keeps 8
 * broadcasts' addresses in registers); then the block's scale s·2^(112 − shift) (f32, at A8_SCALE) and −8·Σc (i32,
 * at A8_COR, Q4_0's offset), padded to 16 bytes.
 */
const A8_BYTES: usize = 144;
const A8_SCALE: usize = 128, A8_COR: usize = 132;

/** s + the int16 pair sums of one code vector v (low nibbles × xl, high nibbles × xh), relaxed build (bound: see above). */
@inline function step4(s: v128, xl: v128, xh: v128, v: v128, m15: v128): v128 {
  return i16x8.add(s, i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(xl, v128.and(v, m15)),
    i16x8.relaxed_dot_i8x16_i7x16_s(xh, v128.and(i16x8.shr_u(v, 4), m15))));
}

/** Lane r: Σ q·c of row r over one block, from the group's 64 code bytes at wp and the block's codes at xp. */
@inline function block4(wp: usize, xp: usize, m15: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    // written out: as a loop over the 4 vectors (binaryen keeps it rolled) it ran at 12–13 against 16–17 G weights/s
    let p = step4(i16x8.splat(0), v128.load(xp), v128.load(xp, 16), v128.load(wp), m15);
    p = step4(p, v128.load(xp, 32), v128.load(xp, 48), v128.load(wp, 16), m15);
    p = step4(p, v128.load(xp, 64), v128.load(xp, 80), v128.load(wp, 32), m15);
    p = step4(p, v128.load(xp, 96), v128.load(xp, 112), v128.load(wp, 48), m15);
    return i32x4.extadd_pairwise_i16x8_s(p);
  } else {
    // int16 codes: lanes of rows 0, 1 (low bytes) and 2, 3 (high), two pair sums per row, folded at the end
    let a01 = i32x4.splat(0), a23 = a01;
    for (let j: usize = 0; j < 4; j++) {
      const v = v128.load(wp + (j << 4));
      const lo = v128.and(v, m15), hi = v128.and(i16x8.shr_u(v, 4), m15);
      const cl = v128.load(xp + (j << 5)), ch = v128.load(xp + (j << 5), 16);
      a01 = i32x4.add(a01, i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo), cl), i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi), ch)));
      a23 = i32x4.add(a23, i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo), cl), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi), ch)));
    }
    return i32x4.add(v128.shuffle<i32>(a01, a23, 0, 2, 4, 6), v128.shuffle<i32>(a01, a23, 1, 3, 5, 7));
  }
}

/**
 * The 4 f16 scales at p (i16 each) as f32 without the rebias: d·2^(−112) (and the stored ×2^shift): the sign-extended
 * f16 shifted left by 13 has its exponent and mantissa where an f32's go and copies of its sign in bits 31-28, of
 * which the mask keeps bit 31. Exact, and a normal f32 for every normal f16 (layout.ts shiftScales keeps the scales normal).
 */
@inline function rawScales4(p: usize): v128 {
  return v128.and(i32x4.shl(v128.load16x4_s(p), 13), i32x4.splat(0x8fffe000));
}

/**
 * Q4_0 mat-vec on 8-bit activations, `q4x4` layout: row groups [lo/4, ⌈hi/4⌉) of out[t, r] for all t < T. xq: per
 * token K/32 blocks of A8_BYTES (quant_x8). Each pass takes one group from each half of the range (two weight
 * streams in flight, as the other mat-vec kernels do), and the two share the token's code loads: decode 0.1B, 2
 * threads, against one group per pass, builds alternated 3 times: 119.0/125.7/124.2 → 137.6/135.0/129.6 tok/s. The
 * same sums, bit for bit.
 */
export function mv_q4a8(lo: i32, hi: i32, out: usize, xq: usize, W: usize, K: i32, T: i32, os: i32, bias: usize, act: i32, acc: i32, rows: i32, sc: usize): void {
  const m15 = i8x16.splat(15);
  if (hi > rows) hi = rows;
  const nb = <usize>(K >> 5);
  const g0 = lo >> 2, ng = (hi - lo + 3) >> 2, h = (ng + 1) >> 1;
  let pf: u32 = 0;
  for (let t = 0; t < T; t++) {
    const xt = xq + <usize>t * nb * A8_BYTES, ot = out + f4(<usize>(t * os));
    for (let i = 0; i < h; i++) {
      const gb = g0 + h + i;
      pf |= groups(ot, xt, W, sc, nb, g0 + i, gb < g0 + ng ? gb : -1, m15, bias, act, acc, rows);
    }
  }
  sinkA |= pf;
}

/** Row groups ga and gb (gb < 0: ga alone) of one token (codes at xt); returns the prefetch loads. */
@inline function groups(ot: usize, xt: usize, W: usize, sc: usize, nb: usize, ga: i32, gb: i32, m15: v128, bias: usize, act: i32, acc: i32, rows: i32): u32 {
  const two = gb >= 0, gbu = <usize>(two ? gb : ga);
  // one pointer per stream, each advanced by a constant: the groups' codes, their scales, the token's blocks
  let wa = W + ((<usize>ga * nb) << 6), wb = W + ((gbu * nb) << 6), sa = sc + ((<usize>ga * nb) << 3), sb = sc + ((gbu * nb) << 3), xp = xt;
  const end = wa + (nb << 6);
  let fa = f32x4.splat(0), fb = fa;
  let pf: u32 = 0;
  while (wa < end) {
    pf |= load<u32>(wa + PF_A8);
    const cor = v128.load32_splat(xp + A8_COR), xs = v128.load32_splat(xp + A8_SCALE);
    // d·s as d·2^(shift−112) (the stored f16 bits in f32 position) times s·2^(112−shift) (quant_x8): exact scalings
    if (two) {
      pf |= load<u32>(wb + PF_A8);
      let ia: v128, ib: v128;
      if (ASC_FEATURE_RELAXED_SIMD) {
        // block4 for both groups, the token's codes loaded once for the two
        let xl = v128.load(xp), xh = v128.load(xp, 16);
        let pa = step4(i16x8.splat(0), xl, xh, v128.load(wa), m15), pb = step4(i16x8.splat(0), xl, xh, v128.load(wb), m15);
        xl = v128.load(xp, 32); xh = v128.load(xp, 48);
        pa = step4(pa, xl, xh, v128.load(wa, 16), m15); pb = step4(pb, xl, xh, v128.load(wb, 16), m15);
        xl = v128.load(xp, 64); xh = v128.load(xp, 80);
        pa = step4(pa, xl, xh, v128.load(wa, 32), m15); pb = step4(pb, xl, xh, v128.load(wb, 32), m15);
        xl = v128.load(xp, 96); xh = v128.load(xp, 112);
        pa = step4(pa, xl, xh, v128.load(wa, 48), m15); pb = step4(pb, xl, xh, v128.load(wb, 48), m15);
        ia = i32x4.extadd_pairwise_i16x8_s(pa); ib = i32x4.extadd_pairwise_i16x8_s(pb);
      } else { ia = block4(wa, xp, m15); ib = block4(wb, xp, m15); }
      fa = madd(f32x4.convert_i32x4_s(i32x4.add(ia, cor)), f32x4.mul(rawScales4(sa), xs), fa);
      fb = madd(f32x4.convert_i32x4_s(i32x4.add(ib, cor)), f32x4.mul(rawScales4(sb), xs), fb);
    } else {
      fa = madd(f32x4.convert_i32x4_s(i32x4.add(block4(wa, xp, m15), cor)), f32x4.mul(rawScales4(sa), xs), fa);
    }
    wa += 64; wb += 64; sa += 8; sb += 8; xp += A8_BYTES;
  }
  const ra = ga << 2;
  store4(ot + f4(<usize>ra), fa, bias, ra, act, acc, rows);
  if (two) store4(ot + f4(<usize>(gb << 2)), fb, bias, gb << 2, act, acc, rows);
  return pf;
}

/**
 * Prefetch distance of each of mv_q4a8's weight streams (bytes; ≤ PREFETCH_PAD in src/backends/wasm/layout.ts). On the
 * AMD VM, side-by-side decode against int8 (bench/paired.ts, 3 alternating pairs of builds): ×1.49/1.62/1.49 at 4096
 * against ×1.46/1.59/1.45 at 2048. On the Sapphire Rapids VM, 8192 (the other kernels' PF) measured the same as 4096
 * within that host's noise (6 alternating runs each).
 */
export const PF_A8: usize = 4096;

/**
 * Columns [k0, k1) of the 4 rows of group r/4 (`q4x4`) as exact f32 (q·d is exact in f32) into `dst`, interleaved
 * as kernels.ts's `widenTile`: for each 4-column chunk the 4 rows' vectors side by side — which is the order of the
 * nibbles of one code vector, so each vector's low nibbles make one chunk and its high nibbles the next.
 */
@inline export function widenQ4x4(dst: usize, W: usize, K: i32, r: i32, k0: usize, k1: usize, sc: usize, shift: i32): void {
  const mul = f16mul(shift), m15 = i8x16.splat(15), m8 = i8x16.splat(8);
  const nb = <usize>(K >> 5), g = <usize>(r >> 2);
  for (let b = k0 >> 5; b < k1 >> 5; b++) {
    const d = scales4(sc + ((g * nb + b) << 3), mul);
    const wp = W + ((g * nb + b) << 6), o = dst + ((b - (k0 >> 5)) << 9);
    for (let j: usize = 0; j < 4; j++) {
      const v = v128.load(wp + (j << 4));
      widenRows(o + (j << 7), i8x16.sub(v128.and(v, m15), m8), d);
      widenRows(o + (j << 7) + 64, i8x16.sub(v128.and(i16x8.shr_u(v, 4), m15), m8), d);
    }
  }
}

/** One chunk: 16 int8 values, 4 per row (lane r of `v` as i32), times row r's scale (lane r of d) as f32 at o. */
@inline function widenRows(o: usize, v: v128, d: v128): void {
  const l = i16x8.extend_low_i8x16_s(v), h = i16x8.extend_high_i8x16_s(v);
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(l)), v128.shuffle<f32>(d, d, 0, 0, 0, 0)));
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(l)), v128.shuffle<f32>(d, d, 1, 1, 1, 1)), 16);
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(h)), v128.shuffle<f32>(d, d, 2, 2, 2, 2)), 32);
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(h)), v128.shuffle<f32>(d, d, 3, 3, 3, 3)), 48);
}

/** max|x| over columns [c0, c1) of x (at xt). */
@inline function amax(xt: usize, c0: i32, c1: i32): f32 {
  let m: f32 = 0;
  for (let c = c0; c < c1; c++) m = max(m, abs(load<f32>(xt + f4(<usize>c))));
  return m;
}

/** v ≥ 0 rounded to f16 (nearest even; subnormals as f16 has them, ≥ 65520 to infinity), as f32. */
@inline function f16round(v: f32): f32 {
  if (v < 6.103515625e-5) return nearest<f32>(v * 16777216.0) * 5.9604644775390625e-8; // multiples of 2^-24
  if (v >= 65520) return Infinity;
  const b = reinterpret<u32>(v);
  return reinterpret<f32>((b + 0xfff + ((b >> 13) & 1)) & 0xffffe000);
}

/** The 8-bit code of column c of x (at xt): round-half-even(x · inv), inv = f32(127 / max|x_b|) or 0. */
@inline function code8(xt: usize, c: i32, inv: f32): i32 {
  return <i32>nearest<f32>(load<f32>(xt + f4(<usize>c)) * inv);
}

/**
 * Round T rows of x (stride xs, `cols` values, zero-padded to K) to 8 bits per block of 32, as llama.cpp's Q8_0
 * activations (src/backends/quant.ts roundActivationsQ8 is the same rule): m = max|x_b|, code
 * c = round-half-to-even(x · f32(127 / m)), scale s = f16(m / 127). Per token K/32 blocks of A8_BYTES at
 * xq + t·(K/32)·A8_BYTES: codes (int8, or int16 in the plain build), s·2^(112 − shift) (exact, finite: s ≤ 65504 or
 * infinite) and −8·Σc.
 */
export function quant_x8(xq: usize, x: usize, T: i32, xs: i32, cols: i32, K: i32, shift: i32): void {
  const nb = <usize>(K >> 5), up = reinterpret<f32>((239 - shift) << 23); // 2^(112 − shift)
  for (let t = 0; t < T; t++) {
    const xt = x + f4(<usize>(t * xs));
    const qt = xq + <usize>t * nb * A8_BYTES;
    for (let b: usize = 0; b < nb; b++) {
      const c0 = <i32>(b << 5), c1 = min(c0 + 32, cols);
      if (c1 - c0 == 32) { quantBlock8(xt + f4(<usize>c0), qt + b * A8_BYTES, up); continue; }
      const m = amax(xt, c0, c1);
      const inv: f32 = m > 0 ? 127 / m : 0;
      let sum: i32 = 0;
      for (let c = c0; c < c0 + 32; c++) {
        const q = c < c1 ? code8(xt, c, inv) : 0;
        sum += q;
        storeCode(qt + b * A8_BYTES, c - c0, q);
      }
      store<f32>(qt + b * A8_BYTES + A8_SCALE, f16round(m / 127) * up);
      store<i32>(qt + b * A8_BYTES + A8_COR, -8 * sum);
    }
  }
}

/** Code q of column e (0..31) of a block whose codes start at qb, in every copy of its group (A8_BYTES). */
@inline function storeCode(qb: usize, e: i32, q: i32): void {
  const g = qb + (<usize>(e >> 2) << 4), i = <usize>(e & 3);
  if (ASC_FEATURE_RELAXED_SIMD) {
    for (let c: usize = 0; c < 16; c += 4) store<i8>(g + c + i, <i8>q);
  } else {
    store<i16>(g + (i << 1), <i16>q);
    store<i16>(g + 8 + (i << 1), <i16>q);
  }
}

/** 16 int8 codes (4 groups) at qp, each group of 4 broadcast to its own vector. */
@inline function storeGroups8(qp: usize, v: v128): void {
  v128.store(qp, v128.shuffle<i32>(v, v, 0, 0, 0, 0));
  v128.store(qp, v128.shuffle<i32>(v, v, 1, 1, 1, 1), 16);
  v128.store(qp, v128.shuffle<i32>(v, v, 2, 2, 2, 2), 32);
  v128.store(qp, v128.shuffle<i32>(v, v, 3, 3, 3, 3), 48);
}

/** 8 int16 codes (2 groups) at qp, each group of 4 broadcast to its own vector. */
@inline function storeGroups16(qp: usize, v: v128): void {
  v128.store(qp, v128.shuffle<i64>(v, v, 0, 0));
  v128.store(qp, v128.shuffle<i64>(v, v, 1, 1), 16);
}

/** max|v| over the 32 values of 8 vectors (as `amax`). */
@inline function amax32(v0: v128, v1: v128, v2: v128, v3: v128, v4: v128, v5: v128, v6: v128, v7: v128): f32 {
  let a = f32x4.max(f32x4.max(f32x4.max(f32x4.abs(v0), f32x4.abs(v1)), f32x4.max(f32x4.abs(v2), f32x4.abs(v3))),
    f32x4.max(f32x4.max(f32x4.abs(v4), f32x4.abs(v5)), f32x4.max(f32x4.abs(v6), f32x4.abs(v7))));
  a = f32x4.max(a, v128.shuffle<f32>(a, a, 2, 3, 0, 1));
  return max(f32x4.extract_lane(a, 0), f32x4.extract_lane(a, 1));
}

/**
 * One whole block of quant_x8, 8 vectors at a time (the same codes, scale and sum as its scalar loop, which does the
 * partial last block): 32 f32 at xp → the block of A8_BYTES at qp.
 */
@inline function quantBlock8(xp: usize, qp: usize, up: f32): void {
  const v0 = v128.load(xp), v1 = v128.load(xp, 16), v2 = v128.load(xp, 32), v3 = v128.load(xp, 48);
  const v4 = v128.load(xp, 64), v5 = v128.load(xp, 80), v6 = v128.load(xp, 96), v7 = v128.load(xp, 112);
  const m = amax32(v0, v1, v2, v3, v4, v5, v6, v7);
  const inv = f32x4.splat(m > 0 ? 127 / m : 0);
  // codes: round-half-even(x · inv) (f32x4.nearest), exact in i32, narrowed (|c| ≤ 127: no saturation)
  const c0 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v0, inv))), c1 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v1, inv)));
  const c2 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v2, inv))), c3 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v3, inv)));
  const c4 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v4, inv))), c5 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v5, inv)));
  const c6 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v6, inv))), c7 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v7, inv)));
  const h0 = i16x8.narrow_i32x4_s(c0, c1), h1 = i16x8.narrow_i32x4_s(c2, c3), h2 = i16x8.narrow_i32x4_s(c4, c5), h3 = i16x8.narrow_i32x4_s(c6, c7);
  if (ASC_FEATURE_RELAXED_SIMD) {
    storeGroups8(qp, i8x16.narrow_i16x8_s(h0, h1));
    storeGroups8(qp + 64, i8x16.narrow_i16x8_s(h2, h3));
  } else {
    storeGroups16(qp, h0); storeGroups16(qp + 32, h1); storeGroups16(qp + 64, h2); storeGroups16(qp + 96, h3);
  }
  let sum = i32x4.add(i32x4.add(i32x4.add(c0, c1), i32x4.add(c2, c3)), i32x4.add(i32x4.add(c4, c5), i32x4.add(c6, c7)));
  sum = i32x4.add(sum, v128.shuffle<i32>(sum, sum, 2, 3, 0, 1));
  store<f32>(qp + A8_SCALE, f16round(m / 127) * up);
  store<i32>(qp + A8_COR, -8 * (i32x4.extract_lane(sum, 0) + i32x4.extract_lane(sum, 1)));
}

/** The values quant_x8 rounds x to, s·c, as f32 rows of `cols` at dst (the mat-mat path multiplies them in f32). */
export function round_x8(dst: usize, x: usize, T: i32, xs: i32, cols: i32): void {
  for (let t = 0; t < T; t++) {
    const xt = x + f4(<usize>(t * xs)), dt = dst + f4(<usize>(t * cols));
    for (let c0 = 0; c0 < cols; c0 += 32) {
      const c1 = min(c0 + 32, cols);
      if (c1 - c0 == 32) { // a whole block, vectorized: the same codes (f32x4.nearest) times the same scale
        const xp = xt + f4(<usize>c0), dp = dt + f4(<usize>c0);
        const m = amax32(v128.load(xp), v128.load(xp, 16), v128.load(xp, 32), v128.load(xp, 48),
          v128.load(xp, 64), v128.load(xp, 80), v128.load(xp, 96), v128.load(xp, 112));
        const inv = f32x4.splat(m > 0 ? 127 / m : 0), sv = f32x4.splat(f16round(m / 127));
        for (let j: usize = 0; j < 128; j += 16) v128.store(dp + j, f32x4.mul(sv, f32x4.nearest(f32x4.mul(v128.load(xp + j), inv))));
        continue;
      }
      const m = amax(xt, c0, c1);
      const inv: f32 = m > 0 ? 127 / m : 0, s = f16round(m / 127);
      for (let c = c0; c < c1; c++) store<f32>(dt + f4(<usize>c), s * <f32>code8(xt, c, inv));
    }
  }
}
