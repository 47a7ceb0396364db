// Block-32 weight kernels: ggml's Q4_0 (dtype 4, `q4`) and Q8_0 (dtype 5, `q8_0`), re-exported by kernels.ts.
//
// Layout (src/backends/wasm/layout.ts), K = cols rounded up to 128 (4 blocks), rowsP rows:
//   codes  at W : q4: [rowsP, K/2] bytes, each 16-byte group one ggml block's `qs` as stored (byte j: element j in
//                 the low nibble, j + 16 in the high nibble; w = (q - 8)·d); q8_0: [rowsP, K] int8 (w = q·d).
//   scales at sc: [rowsP, K/32] u16, the blocks' f16 d multiplied by 2^shift (exact; every nonzero scale a normal
//                 f16, as layout16 does for f16 weights, so widening never multiplies a subnormal).
// Padding blocks have d = 0.
//
// Mat-vec (decode): x is split per token and block of 32 into two int16 parts, x ≈ s·(h + l/2^16) with
// s = max|x_b| / 32767 (quant_x32), so each block's two dot products are exact in i32 (i32x4.dot_i16x8_s) and
// f32 multiply-adds apply d_w·s per block. (One int16 part alone, as the int8 kernels use, moved the golden logits by
// 8e-4: RWKV's outlier channels leave the other values of their block with few bits.) Rows are paired and prefetched
// as in the other mat-vec kernels (kernels.ts).
// Mat-mat (prefill): `widenBlocks` writes 4 rows as exact f32 values (q·d is exact in f32) for kernels.ts's mm.

import { madd, hsum, f4, finish, f16mul, f16lo, ahead } from './common';

let sinkQ: u32 = 0;

/** 4 consecutive stored scales at p (u16 each) as f32 values d (mul = f16mul(shift)). */
@inline function scales4(p: usize, mul: v128): v128 {
  return f16lo(i32x4.extend_low_i16x8_u(v128.load64_zero(p)), mul);
}

/**
 * One block's dot product, f32x4 partial sums: the 32 codes at wp with the block's x values at xp (32 int16 hi parts,
 * then 32 lo parts at xp + 64), as hi + lo·2^-16 (both integer sums exact).
 */
@inline function dotBlock(wp: usize, xp: usize, q4: bool, m15: v128, m8: v128): v128 {
  let w0: v128, w1: v128, w2: v128, w3: v128;
  if (q4) {
    // bytes widened to u16 first, so each nibble comes out with one and or one 16-bit shift, then q − 8 in 16 bits
    // (x86 has no 8-bit shift; the constants are the caller's, set up once outside the loops)
    const v = v128.load(wp);
    const l = i16x8.extend_low_i8x16_u(v), h = i16x8.extend_high_i8x16_u(v);
    w0 = i16x8.sub(v128.and(l, m15), m8); w1 = i16x8.sub(v128.and(h, m15), m8); // elements 0..7, 8..15
    w2 = i16x8.sub(i16x8.shr_u(l, 4), m8); w3 = i16x8.sub(i16x8.shr_u(h, 4), m8); // elements 16..23, 24..31
  } else {
    const a = v128.load(wp), b = v128.load(wp, 16);
    w0 = i16x8.extend_low_i8x16_s(a); w1 = i16x8.extend_high_i8x16_s(a);
    w2 = i16x8.extend_low_i8x16_s(b); w3 = i16x8.extend_high_i8x16_s(b);
  }
  const hi = i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(w0, v128.load(xp)), i32x4.dot_i16x8_s(w1, v128.load(xp, 16))),
    i32x4.add(i32x4.dot_i16x8_s(w2, v128.load(xp, 32)), i32x4.dot_i16x8_s(w3, v128.load(xp, 48))));
  const lo = i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(w0, v128.load(xp, 64)), i32x4.dot_i16x8_s(w1, v128.load(xp, 80))),
    i32x4.add(i32x4.dot_i16x8_s(w2, v128.load(xp, 96)), i32x4.dot_i16x8_s(w3, v128.load(xp, 112))));
  return madd(f32x4.convert_i32x4_s(lo), f32x4.splat(1.0 / 65536), f32x4.convert_i32x4_s(hi));
}

/**
 * One pass over rows ra and rb of one token: xt its int16 hi/lo values (128 bytes per block), xst its block scales.
 * Each block's two i32 sums are exact and combined in f32, so x enters with about f32 precision.
 */
@inline function pairBlocks(out: usize, xt: usize, xst: usize, W: usize, K: i32, sc: usize, ra: i32, rb: i32, both: bool,
  bias: usize, act: i32, acc: i32, q4: bool, mul: v128, m15: v128, m8: v128): u32 {
  const nb = <usize>(K >> 5);
  const rowBytes: usize = q4 ? <usize>K >> 1 : <usize>K;
  const bb: usize = q4 ? 16 : 32; // code bytes per block
  const wa = W + <usize>ra * rowBytes, wb = W + <usize>rb * rowBytes;
  const sa = sc + ((<usize>ra * nb) << 1), sb = sc + ((<usize>rb * nb) << 1);
  let fa = f32x4.splat(0), fb = fa;
  let pf: u32 = 0;
  for (let g: usize = 0; g < nb; g += 4) {
    const xs = v128.load(xst + (g << 2));
    const ca = f32x4.mul(scales4(sa + (g << 1), mul), xs);
    const cb = f32x4.mul(scales4(sb + (g << 1), mul), xs);
    const pa = wa + g * bb, pb = wb + g * bb, xp = xt + (g << 7);
    pf = ahead(pf, pa, pb);
    if (!q4) pf = ahead(pf, pa + 64, pb + 64);
    // One block per inner iteration, its d·s in lane 0 (rotated in): a loop body per block keeps the compiler
    // from hoisting all 4 blocks' loads ahead of their use (which spilled most registers).
    let da = ca, db = cb;
    for (let j: usize = 0; j < 4; j++) {
      fa = madd(dotBlock(pa + j * bb, xp + (j << 7), q4, m15, m8), v128.shuffle<f32>(da, da, 0, 0, 0, 0), fa);
      fb = madd(dotBlock(pb + j * bb, xp + (j << 7), q4, m15, m8), v128.shuffle<f32>(db, db, 0, 0, 0, 0), fb);
      da = v128.shuffle<f32>(da, da, 1, 2, 3, 0);
      db = v128.shuffle<f32>(db, db, 1, 2, 3, 0);
    }
  }
  finish(out + f4(<usize>ra), hsum(fa), bias, ra, act, acc);
  if (both) finish(out + f4(<usize>rb), hsum(fb), bias, rb, act, acc);
  return pf;
}

@inline function mvBlocks(lo: i32, hi: i32, out: usize, xq: usize, W: usize, K: i32, T: i32, xsc: usize, os: i32, bias: usize,
  act: i32, acc: i32, rows: i32, sc: usize, shift: i32, q4: bool): void {
  const mul = f16mul(shift), m15 = i16x8.splat(15), m8 = i16x8.splat(8);
  if (hi > rows) hi = rows;
  const h = (hi - lo + 1) >> 1;
  let pf: u32 = 0;
  const nb = <usize>(K >> 5);
  for (let t = 0; t < T; t++) {
    const xt = xq + ((<usize>t * <usize>K) << 2), xst = xsc + ((<usize>t * nb) << 2);
    const ot = out + f4(<usize>(t * os));
    for (let i = 0; i < h; i++) {
      const rb = lo + h + i;
      pf |= pairBlocks(ot, xt, xst, W, K, sc, lo + i, rb < hi ? rb : lo + i, rb < hi, bias, act, acc, q4, mul, m15, m8);
    }
  }
  sinkQ |= pf;
}

/** Q4_0 mat-vec: xq int16 hi/lo [T, K] with block scales xsc f32 [T, K/32] (quant_x32); W codes, sc scales. */
export function mv_q4(lo: i32, hi: i32, out: usize, xq: usize, W: usize, K: i32, T: i32, xsc: usize, os: i32, bias: usize, act: i32, acc: i32, rows: i32, sc: usize, shift: i32): void {
  mvBlocks(lo, hi, out, xq, W, K, T, xsc, os, bias, act, acc, rows, sc, shift, true);
}

/** Q8_0 mat-vec, as mv_q4. */
export function mv_q8(lo: i32, hi: i32, out: usize, xq: usize, W: usize, K: i32, T: i32, xsc: usize, os: i32, bias: usize, act: i32, acc: i32, rows: i32, sc: usize, shift: i32): void {
  mvBlocks(lo, hi, out, xq, W, K, T, xsc, os, bias, act, acc, rows, sc, shift, false);
}

/**
 * Quantize T rows of x (stride xs, `cols` values) per block of 32 values with scale s = max|x_b| / 32767 (f32
 * [T, K/32] at xsc): x ≈ s·(h + l/65536) with int16 h = round(x/s) and l = round((x − s·h)·65536/s), stored per
 * block as 32 h then 32 l (128 bytes; [T, 2K] int16 at xq).
 */
export function quant_x32(xq: usize, xsc: usize, x: usize, T: i32, xs: i32, cols: i32, K: i32): void {
  for (let t = 0; t < T; t++) {
    const xt = x + f4(<usize>(t * xs));
    const st = xsc + f4(<usize>t * <usize>(K >> 5));
    for (let c0 = 0; c0 < K; c0 += 32) {
      const c1 = min(c0 + 32, cols);
      const qb = xq + ((<usize>t * <usize>K) << 2) + (<usize>c0 << 2);
      let m: f32 = 0;
      for (let c = c0; c < c1; c++) m = max(m, abs(load<f32>(xt + f4(<usize>c))));
      const scale: f32 = m / 32767;
      const inv: f64 = m > 0 ? 1.0 / <f64>scale : 0;
      for (let c = c0; c < c0 + 32; c++) {
        const v: f64 = c < c1 ? <f64>load<f32>(xt + f4(<usize>c)) * inv : 0;
        const h = nearest<f64>(v);
        const l = min(32767.0, max(-32767.0, nearest<f64>((v - h) * 65536.0)));
        const o = <usize>(c - c0) << 1;
        store<i16>(qb + o, <i16><i32>h);
        store<i16>(qb + o + 64, <i16><i32>l);
      }
      store<f32>(st + f4(<usize>(c0 >> 5)), scale);
    }
  }
}

/** Columns [k0, k1) of rows [r, r+4) of block weights (q4: dtype 4) as exact f32 into `dst`, as kernels.ts's `widenTile`. */
@inline export function widenBlocks(dst: usize, W: usize, K: i32, r: i32, k0: usize, k1: usize, q4: bool, sc: usize, shift: i32): void {
  const mul = f16mul(shift);
  const nbr = <usize>(K >> 5); // blocks per row
  const bb: usize = q4 ? 16 : 32;
  for (let j: usize = 0; j < 4; j++) {
    const row = <usize>r + j;
    const src = W + row * (nbr * bb);
    const s = sc + ((row * nbr) << 1);
    for (let b = k0 >> 5; b < k1 >> 5; b++) {
      const d = f16lo(i32x4.splat(<i32>load<u16>(s + (b << 1))), mul);
      const wp = src + b * bb;
      const o = dst + ((b - (k0 >> 5)) << 9) + (j << 4); // block b covers 8 chunks of 64 bytes; row j's vector in each
      let lo: v128, hi: v128;
      if (q4) {
        const v = v128.load(wp);
        lo = i8x16.sub(v128.and(v, i8x16.splat(15)), i8x16.splat(8));
        hi = i8x16.sub(i8x16.shr_u(v, 4), i8x16.splat(8));
      } else {
        lo = v128.load(wp);
        hi = v128.load(wp, 16);
      }
      widen16(o, lo, d);
      widen16(o + 256, hi, d);
    }
  }
}

/** 16 int8 values times d as f32: 4 vectors at o, o + 64, o + 128, o + 192 (one per interleaved chunk). */
@inline function widen16(o: usize, v: v128, d: v128): void {
  const l = i16x8.extend_low_i8x16_s(v), h = i16x8.extend_high_i8x16_s(v);
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(l)), d));
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(l)), d), 64);
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(h)), d), 128);
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(h)), d), 192);
}

// ---------------------------------------------------------------------------------------------------------------
// Q4_0 × 8-bit activations (the backend's `activations: 'q8'` mode, llama.cpp's own arithmetic for Q4_0): x is
// rounded per token and block of 32 to int8 codes c with a scale s = f16(max|x_b| / 127) (quant_x8), and each block's
// dot product Σ (q − 8)·c is exact in i32: Σ q·c by relaxed_dot_i8x16_i7x16 (the codes q = 0..15 are the 7-bit
// operand, so the result is the same on every engine: no pair sum can saturate, 2·127·15 < 2^15), plus the block's
// −8·Σc, which quant_x8 stores beside the scale. Plain SIMD widens both to int16 for i32x4.dot_i16x8_s instead
// (quant_x8 then stores int16 codes). Four blocks' i32 sums are transposed into one vector, lane j block j, and
// scaled by d_w·s in one f32 multiply-add.

/**
 * Σ q·c over one block, partial sums: the 16 code bytes at wp, the block's 32 activation codes at xp. Relaxed: i16x8
 * (each lane two pair sums of the relaxed dot product, |·| ≤ 2·2·127·15 = 7620); plain: i32x4.
 */
@inline function dotBlockA8(wp: usize, xp: usize, m15: v128): v128 {
  const v = v128.load(wp);
  const lo = v128.and(v, m15), hi = v128.and(i16x8.shr_u(v, 4), m15); // elements 0..15, 16..31 (x86: no 8-bit shift)
  if (ASC_FEATURE_RELAXED_SIMD) {
    return i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(xp), lo), i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(xp, 16), hi));
  } else {
    return i32x4.add(
      i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo), v128.load(xp)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo), v128.load(xp, 16))),
      i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi), v128.load(xp, 32)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi), v128.load(xp, 48))));
  }
}

/** Lane j: block j's Σ q·c, for the 4 blocks from wp (activation codes from xp). */
@inline function blocks4(wp: usize, xp: usize, m15: v128): v128 {
  const h0 = dotBlockA8(wp, xp, m15), h1 = dotBlockA8(wp + 16, xp + A8_BYTES, m15);
  const h2 = dotBlockA8(wp + 32, xp + 2 * A8_BYTES, m15), h3 = dotBlockA8(wp + 48, xp + 3 * A8_BYTES, m15);
  if (ASC_FEATURE_RELAXED_SIMD) {
    // folded in int16 (halves, then quarters of each block's lanes: |·| ≤ 4·7620 = 30480 < 2^15), then widened once
    const t01 = i16x8.add(v128.shuffle<i64>(h0, h1, 0, 2), v128.shuffle<i64>(h0, h1, 1, 3));
    const t23 = i16x8.add(v128.shuffle<i64>(h2, h3, 0, 2), v128.shuffle<i64>(h2, h3, 1, 3));
    return i32x4.extadd_pairwise_i16x8_s(i16x8.add(v128.shuffle<i32>(t01, t23, 0, 2, 4, 6), v128.shuffle<i32>(t01, t23, 1, 3, 5, 7)));
  } else {
    const t01 = i32x4.add(v128.shuffle<i32>(h0, h1, 0, 4, 1, 5), v128.shuffle<i32>(h0, h1, 2, 6, 3, 7));
    const t23 = i32x4.add(v128.shuffle<i32>(h2, h3, 0, 4, 1, 5), v128.shuffle<i32>(h2, h3, 2, 6, 3, 7));
    return i32x4.add(v128.shuffle<i32>(t01, t23, 0, 1, 4, 5), v128.shuffle<i32>(t01, t23, 2, 3, 6, 7));
  }
}

/** Activation code bytes per block: int8 for the relaxed dot product, int16 for the plain one. */
const A8_BYTES: usize = ASC_FEATURE_RELAXED_SIMD ? 32 : 64;

/** One pass over rows ra and rb of one token: xt its codes, xst its scales then (at xst + K/8 bytes) its −8·Σc. */
@inline function pairA8(out: usize, xt: usize, xst: usize, W: usize, K: i32, sc: usize, ra: i32, rb: i32, both: bool,
  bias: usize, act: i32, acc: i32, mul: v128, m15: v128): u32 {
  const nb = <usize>(K >> 5);
  const wa = W + <usize>ra * (<usize>K >> 1), wb = W + <usize>rb * (<usize>K >> 1);
  const sa = sc + ((<usize>ra * nb) << 1), sb = sc + ((<usize>rb * nb) << 1);
  const xct = xst + (nb << 2);
  let fa = f32x4.splat(0), fb = fa;
  let pf: u32 = 0;
  for (let g: usize = 0; g < nb; g += 4) {
    const pa = wa + (g << 4), pb = wb + (g << 4), xp = xt + g * A8_BYTES;
    pf = ahead(pf, pa, pb);
    const cor = v128.load(xct + (g << 2)), xs = v128.load(xst + (g << 2));
    const ia = blocks4(pa, xp, m15), ib = blocks4(pb, xp, m15);
    fa = madd(f32x4.convert_i32x4_s(i32x4.add(ia, cor)), f32x4.mul(scales4(sa + (g << 1), mul), xs), fa);
    fb = madd(f32x4.convert_i32x4_s(i32x4.add(ib, cor)), f32x4.mul(scales4(sb + (g << 1), mul), xs), fb);
  }
  finish(out + f4(<usize>ra), hsum(fa), bias, ra, act, acc);
  if (both) finish(out + f4(<usize>rb), hsum(fb), bias, rb, act, acc);
  return pf;
}

/** Q4_0 mat-vec on 8-bit activations: xq codes [T, K] (A8_BYTES per block), xsc [T] × (K/32 f32 scales, K/32 i32 −8·Σc). */
export function mv_q4a8(lo: i32, hi: i32, out: usize, xq: usize, W: usize, K: i32, T: i32, xsc: usize, os: i32, bias: usize, act: i32, acc: i32, rows: i32, sc: usize, shift: i32): void {
  const mul = f16mul(shift), m15 = i8x16.splat(15);
  if (hi > rows) hi = rows;
  const h = (hi - lo + 1) >> 1;
  let pf: u32 = 0;
  const nb = <usize>(K >> 5);
  for (let t = 0; t < T; t++) {
    const xt = xq + <usize>t * nb * A8_BYTES, xst = xsc + ((<usize>t * nb) << 3);
    const ot = out + f4(<usize>(t * os));
    for (let i = 0; i < h; i++) {
      const rb = lo + h + i;
      pf |= pairA8(ot, xt, xst, W, K, sc, lo + i, rb < hi ? rb : lo + i, rb < hi, bias, act, acc, mul, m15);
    }
  }
  sinkQ |= pf;
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
 * c = round-half-to-even(x · f32(127 / m)), scale s = f16(m / 127). Per token: codes at xq + t·(K/32)·A8_BYTES (int8,
 * or int16 in the plain build), then at xsc + t·K/4 bytes the K/32 scales (f32) and the K/32 i32 values −8·Σc (Q4_0's
 * offset, once per block).
 */
export function quant_x8(xq: usize, xsc: usize, x: usize, T: i32, xs: i32, cols: i32, K: i32): void {
  const nb = <usize>(K >> 5);
  for (let t = 0; t < T; t++) {
    const xt = x + f4(<usize>(t * xs));
    const st = xsc + ((<usize>t * nb) << 3);
    const qt = xq + <usize>t * nb * A8_BYTES;
    for (let b: usize = 0; b < nb; b++) {
      const c0 = <i32>(b << 5), c1 = min(c0 + 32, cols);
      if (c1 - c0 == 32) { quantBlock8(xt + f4(<usize>c0), qt + b * A8_BYTES, st + (b << 2), st + (nb << 2) + (b << 2)); continue; }
      const m = amax(xt, c0, c1);
      const inv: f32 = m > 0 ? 127 / m : 0;
      let sum: i32 = 0;
      for (let c = c0; c < c0 + 32; c++) {
        const q = c < c1 ? code8(xt, c, inv) : 0;
        sum += q;
        if (ASC_FEATURE_RELAXED_SIMD) store<i8>(qt + b * A8_BYTES + <usize>(c - c0), <i8>q);
        else store<i16>(qt + b * A8_BYTES + (<usize>(c - c0) << 1), <i16>q);
      }
      store<f32>(st + (b << 2), f16round(m / 127));
      store<i32>(st + (nb << 2) + (b << 2), -8 * sum);
    }
  }
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
 * partial last block): 32 f32 at xp → codes at qp, scale at sp, −8·Σc at cp.
 */
@inline function quantBlock8(xp: usize, qp: usize, sp: usize, cp: usize): void {
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
    v128.store(qp, i8x16.narrow_i16x8_s(h0, h1));
    v128.store(qp, i8x16.narrow_i16x8_s(h2, h3), 16);
  } else {
    v128.store(qp, h0); v128.store(qp, h1, 16); v128.store(qp, h2, 32); v128.store(qp, h3, 48);
  }
  let sum = i32x4.add(i32x4.add(i32x4.add(c0, c1), i32x4.add(c2, c3)), i32x4.add(i32x4.add(c4, c5), i32x4.add(c6, c7)));
  sum = i32x4.add(sum, v128.shuffle<i32>(sum, sum, 2, 3, 0, 1));
  store<f32>(sp, f16round(m / 127));
  store<i32>(cp, -8 * (i32x4.extract_lane(sum, 0) + i32x4.extract_lane(sum, 1)));
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
