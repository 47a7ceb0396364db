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
@inline export function scales4(p: usize, mul: v128): v128 {
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
