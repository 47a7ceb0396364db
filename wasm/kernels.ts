// RWKV-7 CPU kernels in AssemblyScript, compiled to WebAssembly SIMD128 (and a second build with relaxed SIMD).
//
// The module owns no memory of its own: it imports one shared linear memory that the host (src/backends/wasm)
// manages, and every kernel takes byte pointers into it. The same module is instantiated on the main thread and on
// every worker thread; a parallel kernel takes its share of the work as its first two arguments `(lo, hi)`
// (a row range of a matrix, or a head range of the WKV scan), so threads never write the same bytes.
//
// Weight layouts (all row-major [rowsP, K] where K = cols rounded up with zero padding, rowsP = rows rounded up to 4):
//   f32  : plain floats, K % 16 == 0.
//   bf16 : 16-bit patterns, K % 16 == 0, and each group of 8 columns stored as [w0 w4 w1 w5 w2 w6 w3 w7], so that one
//          v128 load holds 4 u32 lanes `w[k] | w[k+4] << 16`: `lane << 16` is f32 w[k..k+3] and `lane & 0xffff0000`
//          is f32 w[k+4..k+7] — 2 ops widen 8 weights, consumed against x in natural order.
//   f16  : same interleave as bf16; widened with bit ops and one multiply by 2^112 (exact, subnormals included).
//   int8 : K % 64 == 0, symmetric per-group quantization: one f32 scale per row and 64-column group
//          (scales [rowsP, K/64]). Mat-vec quantizes x to int16 per token and uses i32x4.dot_i16x8_s; each group's
//          i32 sum (at most 16 products of 127·32767 per lane, no overflow) is scaled into an f32 accumulator.
//   q4, q8_0: ggml Q4_0 / Q8_0 blocks of 32 with f16 scales, K % 128 == 0: see wasm/blocks.ts.
//
// Mat-vec (decode, T = 1..2): each row is streamed once per token, several rows at a time from far-apart parts of
// the matrix (four for 16-bit and int8, two for f32), with software prefetch (see the mat-vec section).
// Mat-mat (prefill, batches): register/cache blocking. Rows are processed in tiles of 4; a tile is widened to f32
// into a per-thread scratch (interleaved so one pointer walks it; in K blocks of 1024 columns, L1 resident) once, then
// every pair of token rows (packed side by side by pack_x2) is multiplied against it with 4 × 2 f32x4 accumulators
// (4 weight vectors and 2 activation vectors loaded per 32 MACs), so weights are read from memory once per chunk of
// T tokens instead of once per token.
// ---------------------------------------------------------------------------------------------------------------

import { madd, hsum, lo64, hi64, hsum64, demote4, f4, finish64, finish, bf16lo, bf16hi, f16mul, f16lo, f16hi, f16loRaw, f16hiRaw, PF, ahead, store4 } from './common';
import { widenBlocks } from './blocks';

export { mv_q4, mv_q8, quant_x32 } from './blocks';
export { mv_q4a8, quant_x8, round_x8 } from './q4a8';
import { widenQ4x4, PF_A8 } from './q4a8';
export { bw_read } from './probe';
export { activate, decay } from './act';
export { quant_i8_bf16, f16_as_bf16, pair16, shift_f16, split_blocks, q4x4_blocks } from './load';
export { quant_blocks_bf16 } from './blockquant';
export { quant_x, pad_rows, scale_x } from './xprep';
export { layer_norm, shift_lerp, lerp_inplace, key_prep, bonus_gate } from './elementwise';
import { pad_rows } from './xprep';

// ---------------------------------------------------------------------------------------------------------------
// mat-vec kernels: rows [lo, hi) of out[t, r] = act(W[r] · x[t] + bias[r]) for t < T (weights re-read per token)
//
// Decode is bound by how fast the weights stream in, and a single sequential stream per thread does not keep enough
// reads in flight: on the 2-core Xeon VM this was tuned on, one thread read a 50 MB int8 matrix at 5.3 GB/s with
// the plain row loop, 12–14 GB/s with these two changes (PF retuned on a later Sapphire Rapids VM: see common.ts):
//  - each pass takes one row from each half of the thread's range (rows lo+i and lo+h+i): two streams in flight
//    (16-bit and int8: one from each quarter, four streams: they gained 15–25% more on the Sapphire Rapids VM);
//  - each pass also loads the bytes PF ahead in each row. WebAssembly has no prefetch instruction, so these are
//    plain loads whose values are or-ed into `sink` (a per-instance global), which keeps the compiler from
//    dropping them. They read at most PF bytes past a matrix's end: the host keeps PREFETCH_PAD ≥ PF bytes of
//    memory past its last allocation.
// Each row's sum is computed as a one-row loop would (same accumulators, same order): the grouping changes no bits.

let sink: u32 = 0;

/** The farthest prefetch (PF; q4a8.ts's PF_A8), for the host to check against the memory it keeps past its last allocation. */
export function prefetch_distance(): i32 {
  return <i32>max(PF, PF_A8);
}


/** One f32 mat-vec pass over rows ra and rb (rb stored only when `both`); returns the prefetch loads. */
@inline function pairF32(out: usize, xt: usize, W: usize, K: i32, ra: i32, rb: i32, both: bool, bias: usize, act: i32, acc: i32): u32 {
  const wa = W + f4(<usize>ra * <usize>K), wb = W + f4(<usize>rb * <usize>K);
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  let pf: u32 = 0;
  for (let c: usize = 0; c < f4(<usize>K); c += 64) {
    // one x vector live at a time: V8 keeps only 16 vector registers, and spilled accumulators serialize the loop
    const pa = wa + c, pb = wb + c, xp = xt + c;
    pf = ahead(pf, pa, pb);
    let xv = v128.load(xp);
    a0 = madd(v128.load(pa), xv, a0); b0 = madd(v128.load(pb), xv, b0);
    xv = v128.load(xp, 16);
    a1 = madd(v128.load(pa, 16), xv, a1); b1 = madd(v128.load(pb, 16), xv, b1);
    xv = v128.load(xp, 32);
    a2 = madd(v128.load(pa, 32), xv, a2); b2 = madd(v128.load(pb, 32), xv, b2);
    xv = v128.load(xp, 48);
    a3 = madd(v128.load(pa, 48), xv, a3); b3 = madd(v128.load(pb, 48), xv, b3);
  }
  finish(out + f4(<usize>ra), hsum(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3))), bias, ra, act, acc);
  if (both) finish(out + f4(<usize>rb), hsum(f32x4.add(f32x4.add(b0, b1), f32x4.add(b2, b3))), bias, rb, act, acc);
  return pf;
}

/** Columns k..k+3 (`lo`) or k+4..k+7 of a pair-interleaved 16-bit vector: kind 0 bf16, 1 f16 (×mul), 2 f16 raw (x prescaled). */
@inline function w16(u: v128, lo: bool, kind: i32, mul: v128): v128 {
  if (kind == 0) return lo ? bf16lo(u) : bf16hi(u);
  if (kind == 1) return lo ? f16lo(u, mul) : f16hi(u, mul);
  return lo ? f16loRaw(u) : f16hiRaw(u);
}

export function mv_f32(lo: i32, hi: i32, out: usize, x: usize, W: usize, K: i32, T: i32, xs: i32, os: i32, bias: usize, act: i32, acc: i32, rows: i32): void {
  if (hi > rows) hi = rows;
  const h = (hi - lo + 1) >> 1; // pass i: rows lo+i and lo+h+i (the last pass has one row when hi - lo is odd)
  let pf: u32 = 0;
  for (let t = 0; t < T; t++) {
    const xt = x + f4(<usize>(t * xs)), ot = out + f4(<usize>(t * os));
    for (let i = 0; i < h; i++) {
      const rb = lo + h + i;
      pf |= pairF32(ot, xt, W, K, lo + i, rb < hi ? rb : lo + i, rb < hi, bias, act, acc);
    }
  }
  sink |= pf;
}

// Four-row passes (quad16, quadI8): pass i of a thread's rows [lo, hi) takes rows lo + i + j·q, j < 4, with
// q = ceil((hi - lo) / 4): one from each quarter. The last passes have fewer than four (n); a missing row repeats
// the first one (computed, not stored), so the loops need no tests.

/** How many of the rows r, r + q, r + 2q, r + 3q are below hi (r < hi). */
@inline function quadRows(r: i32, q: i32, hi: i32): i32 {
  return r + 3 * q < hi ? 4 : r + 2 * q < hi ? 3 : r + q < hi ? 2 : 1;
}

/** Row j of the pass at r (r itself where j ≥ n). */
@inline function quadRow(r: i32, q: i32, n: i32, j: i32): i32 {
  return j < n ? r + j * q : r;
}

/** Stores the n sums of a four-row pass (rows r + j·q) as `finish` does. */
@inline function finishQuad(out: usize, s0: f32, s1: f32, s2: f32, s3: f32, r: i32, q: i32, n: i32, bias: usize, act: i32, acc: i32): void {
  finish(out + f4(<usize>r), s0, bias, r, act, acc);
  if (n > 1) finish(out + f4(<usize>(r + q)), s1, bias, r + q, act, acc);
  if (n > 2) finish(out + f4(<usize>(r + 2 * q)), s2, bias, r + 2 * q, act, acc);
  if (n > 3) finish(out + f4(<usize>(r + 3 * q)), s3, bias, r + 3 * q, act, acc);
}

/**
 * 16-bit pass over rows ra + j·q (weights as `w16` kind; see quadRows): four weight streams in flight, one row from
 * each quarter of the thread's range, with two accumulators per row (columns k..k+3 and k+4..k+7 of each 8) so that
 * the eight fit V8's vector registers with the two x vectors.
 * Against two rows with four accumulators each: [16384, 768] bf16 matrices cycled from memory, one thread 5.2 → 6.2
 * GMAC/s, two 9.7 → 11.4–12.0; decode 0.1B, 2 threads, +15% (bf16) and +18% (f16).
 */
@inline function quad16(out: usize, xt: usize, W: usize, K: i32, ra: i32, q: i32, n: i32, bias: usize, act: i32, acc: i32, kind: i32, mul: v128): u32 {
  const rb = quadRow(ra, q, n, 1), rc = quadRow(ra, q, n, 2), rd = quadRow(ra, q, n, 3);
  const rowB = <usize>K << 1;
  let pa = W + <usize>ra * rowB, pb = W + <usize>rb * rowB, pc = W + <usize>rc * rowB, pd = W + <usize>rd * rowB, xp = xt;
  const end = pa + rowB;
  let a0 = f32x4.splat(0), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
  let pf: u32 = 0;
  for (; pa < end; pa += 16) {
    pf = ahead(ahead(pf, pa, pb), pc, pd);
    const xl = v128.load(xp), xh = v128.load(xp, 16);
    let u = v128.load(pa);
    a0 = madd(w16(u, true, kind, mul), xl, a0); a1 = madd(w16(u, false, kind, mul), xh, a1);
    u = v128.load(pb);
    b0 = madd(w16(u, true, kind, mul), xl, b0); b1 = madd(w16(u, false, kind, mul), xh, b1);
    u = v128.load(pc);
    c0 = madd(w16(u, true, kind, mul), xl, c0); c1 = madd(w16(u, false, kind, mul), xh, c1);
    u = v128.load(pd);
    d0 = madd(w16(u, true, kind, mul), xl, d0); d1 = madd(w16(u, false, kind, mul), xh, d1);
    pb += 16; pc += 16; pd += 16; xp += 32;
  }
  finishQuad(out, hsum(f32x4.add(a0, a1)), hsum(f32x4.add(b0, b1)), hsum(f32x4.add(c0, c1)), hsum(f32x4.add(d0, d1)), ra, q, n, bias, act, acc);
  return pf;
}

/** 16-bit mat-vec over rows [lo, hi) of every token, weights as `w16` kind. */
@inline function mv16(lo: i32, hi: i32, out: usize, x: usize, W: usize, K: i32, T: i32, xs: i32, os: i32, bias: usize, act: i32, acc: i32, rows: i32, kind: i32, mul: v128): void {
  if (hi > rows) hi = rows;
  const q = (hi - lo + 3) >> 2;
  let pf: u32 = 0;
  for (let t = 0; t < T; t++) {
    const xt = x + f4(<usize>(t * xs)), ot = out + f4(<usize>(t * os));
    for (let i = 0; i < q; i++) pf |= quad16(ot, xt, W, K, lo + i, q, quadRows(lo + i, q, hi), bias, act, acc, kind, mul);
  }
  sink |= pf;
}

export function mv_bf16(lo: i32, hi: i32, out: usize, x: usize, W: usize, K: i32, T: i32, xs: i32, os: i32, bias: usize, act: i32, acc: i32, rows: i32): void {
  mv16(lo, hi, out, x, W, K, T, xs, os, bias, act, acc, rows, 0, f16mul(0));
}

/** f16 mat-vec; W holds the weights ×2^shift. */
export function mv_f16(lo: i32, hi: i32, out: usize, x: usize, W: usize, K: i32, T: i32, xs: i32, os: i32, bias: usize, act: i32, acc: i32, rows: i32, shift: i32): void {
  mv16(lo, hi, out, x, W, K, T, xs, os, bias, act, acc, rows, 1, f16mul(shift));
}

/** mv_f16 on x multiplied by f16mul(shift) (scale_x): the weights are used unscaled (a separate export: binaryen merges both variants of one function into a loop that branches per vector). */
export function mv_f16x(lo: i32, hi: i32, out: usize, x: usize, W: usize, K: i32, T: i32, xs: i32, os: i32, bias: usize, act: i32, acc: i32, rows: i32): void {
  mv16(lo, hi, out, x, W, K, T, xs, os, bias, act, acc, rows, 2, f16mul(0));
}

/** Dot of one int8 row group (64 weights at wp) with 64 int16 x values (at xp), as i32x4 partial sums. */
@inline function dotI8(wp: usize, xp: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const w0 = v128.load(wp), w1 = v128.load(wp, 16), w2 = v128.load(wp, 32), w3 = v128.load(wp, 48);
  let i0 = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w0), x0);
  let i1 = i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w0), x1);
  i0 = i32x4.add(i0, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w1), x2));
  i1 = i32x4.add(i1, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w1), x3));
  i0 = i32x4.add(i0, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w2), v128.load(xp, 64)));
  i1 = i32x4.add(i1, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w2), v128.load(xp, 80)));
  i0 = i32x4.add(i0, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w3), v128.load(xp, 96)));
  i1 = i32x4.add(i1, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w3), v128.load(xp, 112)));
  return i32x4.add(i0, i1);
}

/**
 * int8 pass over rows ra + j·q of one token (xt: its int16 values, xscale: their scale; see quadRows). Four rows,
 * one from each quarter of the thread's range: four weight streams in flight, which the int8 rows need to keep the
 * memory busy (per byte they take twice the work of 16-bit rows): [16384, 768] int8, 302 MB of matrices cycled, one thread 8.3 → 9.8 GMAC/s, two 15.4 → 19.3
 * against two rows per pass. Each row's sum is taken as before (same partial sums, same order): the same bits.
 */
@inline function quadI8(out: usize, xt: usize, xscale: f32, W: usize, K: i32, sc: usize, ra: i32, q: i32, n: i32, bias: usize, act: i32, acc: i32): u32 {
  const rb = quadRow(ra, q, n, 1), rc = quadRow(ra, q, n, 2), rd = quadRow(ra, q, n, 3);
  const G = K >> 6;
  const wa = W + <usize>ra * <usize>K, wb = W + <usize>rb * <usize>K, wc = W + <usize>rc * <usize>K, wd = W + <usize>rd * <usize>K;
  const sa = sc + f4(<usize>ra * <usize>G), sb = sc + f4(<usize>rb * <usize>G), sc2 = sc + f4(<usize>rc * <usize>G), sd = sc + f4(<usize>rd * <usize>G);
  let fa = f32x4.splat(0), fb = fa, fc = fa, fd = fa;
  let pf: u32 = 0;
  for (let g = 0; g < G; g++) {
    const xp = xt + (<usize>g << 7), wg = <usize>g << 6;
    const x0 = v128.load(xp), x1 = v128.load(xp, 16), x2 = v128.load(xp, 32), x3 = v128.load(xp, 48);
    pf = ahead(ahead(pf, wa + wg, wb + wg), wc + wg, wd + wg);
    fa = madd(f32x4.convert_i32x4_s(dotI8(wa + wg, xp, x0, x1, x2, x3)), v128.load32_splat(sa + f4(<usize>g)), fa);
    fb = madd(f32x4.convert_i32x4_s(dotI8(wb + wg, xp, x0, x1, x2, x3)), v128.load32_splat(sb + f4(<usize>g)), fb);
    fc = madd(f32x4.convert_i32x4_s(dotI8(wc + wg, xp, x0, x1, x2, x3)), v128.load32_splat(sc2 + f4(<usize>g)), fc);
    fd = madd(f32x4.convert_i32x4_s(dotI8(wd + wg, xp, x0, x1, x2, x3)), v128.load32_splat(sd + f4(<usize>g)), fd);
  }
  finishQuad(out, hsum(fa) * xscale, hsum(fb) * xscale, hsum(fc) * xscale, hsum(fd) * xscale, ra, q, n, bias, act, acc);
  return pf;
}

/** int8 mat-vec: xq is int16 [T, K] (per-token scale in xsc[t]), W int8 [rowsP, K], sc f32 [rowsP, K/64]. */
export function mv_i8(lo: i32, hi: i32, out: usize, xq: usize, W: usize, K: i32, T: i32, xsc: usize, os: i32, bias: usize, act: i32, acc: i32, rows: i32, sc: usize): void {
  if (hi > rows) hi = rows;
  const q = (hi - lo + 3) >> 2;
  let pf: u32 = 0;
  for (let t = 0; t < T; t++) {
    const xt = xq + ((<usize>t * <usize>K) << 1), ot = out + f4(<usize>(t * os));
    const xscale = load<f32>(xsc + f4(<usize>t));
    for (let i = 0; i < q; i++) pf |= quadI8(ot, xt, xscale, W, K, sc, lo + i, q, quadRows(lo + i, q, hi), bias, act, acc);
  }
  sink |= pf;
}

// ---------------------------------------------------------------------------------------------------------------
// mat-mat (prefill)

/** Address of 4-column chunk `k >> 2` of tile row `r` in an interleaved tile (see `mm`). */
@inline function tileAt(dst: usize, r: usize, k: usize): usize {
  return dst + ((k >> 2) << 6) + (r << 4);
}

/**
 * Row step within a tile of `mm`/`mmp`. With few tokens (T ≤ 16: batched decode) a tile is multiplied for too short
 * a time to hide the reads of the next one, so for the row-major dtypes (0–3) a thread's `tiles` tiles take rows
 * r, r + tiles, r + 2·tiles, r + 3·tiles (one from each quarter of its range): widening a tile reads four streams,
 * which the hardware prefetcher follows ahead. Batch 8 decode, 0.1B bf16, 2 threads: +6%. Longer chunks (prefill)
 * keep rows r..r+3 (step 1), whose results are stored a vector at a time (strided: −4% at T = 64), as do the block
 * dtypes (their 4-row groups). The results are the same either way (same sums, `finish` = `store4` per value).
 */
@inline function tileStep(dtype: i32, tiles: i32, T: i32): i32 {
  return dtype <= 3 && tiles > 1 && T <= 16 ? tiles : 1;
}

/**
 * Columns [k0, k1) of rows r + j·step (j < 4) of W (step 1 for dtypes 4–6) (dtype 0 f32, 1 bf16, 2 f16 ×2^shift, 3 int8, 4 q4, 5 q8_0, 6 q4x4) as f32 into
 * `dst`, interleaved: for each 4-column chunk, the 4 rows' vectors side by side (64 bytes), so `mm` walks one
 * pointer. k0 and k1 are multiples of 128 (or k1 = K).
 */
@inline function widenTile(dst: usize, W: usize, K: i32, r: i32, step: i32, k0: usize, k1: usize, dtype: i32, sc: usize, shift: i32): void {
  if (dtype == 6) {
    widenQ4x4(dst, W, K, r, k0, k1, sc, shift);
    return;
  }
  if (dtype >= 4) {
    widenBlocks(dst, W, K, r, k0, k1, dtype == 4, sc, shift);
    return;
  }
  // One pointer walks each source row and one the tile (16 bytes of it per 4 columns, every 64 bytes): the loops
  // carry no address arithmetic and no dtype test, which is what bounded them (≈ 3 cycles per 16 source bytes when
  // every store address was recomputed from k; the tile is widened for every 4 rows, so at T = 8 that was ~27% of `mm`).
  const Ku = <usize>K, base = dst - (k0 << 4);
  for (let j: usize = 0; j < 4; j++) {
    const row = <usize>r + j * <usize>step;
    let d = tileAt(base, j, k0);
    if (dtype == 0) {
      const src = W + f4(row * Ku), end = src + f4(k1);
      for (let p = src + f4(k0); p < end; p += 16, d += 64) v128.store(d, v128.load(p));
    } else if (dtype == 1) {
      const src = W + ((row * Ku) << 1), end = src + (k1 << 1);
      for (let p = src + (k0 << 1); p < end; p += 16, d += 128) {
        const v = v128.load(p);
        v128.store(d, bf16lo(v));
        v128.store(d, bf16hi(v), 64);
      }
    } else if (dtype == 2) {
      const mul = f16mul(shift);
      const src = W + ((row * Ku) << 1), end = src + (k1 << 1);
      for (let p = src + (k0 << 1); p < end; p += 16, d += 128) {
        const v = v128.load(p);
        v128.store(d, f16lo(v, mul));
        v128.store(d, f16hi(v, mul), 64);
      }
    } else {
      // int8: 16 columns per load, one scale per 64 columns (k0 is a multiple of 64)
      const src = W + row * Ku, end = src + k1;
      let s = sc + ((row * (Ku >> 6)) << 2) + ((k0 >> 6) << 2);
      for (let p = src + k0; p < end; s += 4) {
        const scale = v128.load32_splat(s);
        const gEnd = min(p + 64, end);
        for (; p < gEnd; p += 16, d += 256) {
          const v = v128.load(p);
          const l = i16x8.extend_low_i8x16_s(v), h = i16x8.extend_high_i8x16_s(v);
          v128.store(d, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(l)), scale));
          v128.store(d, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(l)), scale), 64);
          v128.store(d, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(h)), scale), 128);
          v128.store(d, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(h)), scale), 192);
        }
      }
    }
  }
}

/**
 * x for `mm`: T rows of `cols` values (stride xs) zero-padded to K and packed by token pairs: pair p holds, for each
 * 4-column chunk, token 2p's vector then token 2p+1's (32 bytes); an odd last token follows as a plain row.
 */
export function pack_x2(dst: usize, x: usize, T: i32, xs: i32, cols: i32, K: i32): void {
  const Ku = <usize>K, c4 = <usize>(cols & ~3);
  let t = 0;
  for (; t + 1 < T; t += 2) {
    const a = x + f4(<usize>(t * xs)), b = a + f4(<usize>xs), d = dst + f4(<usize>t * Ku);
    let k: usize = 0;
    for (; k < c4; k += 4) {
      v128.store(d + (k << 3), v128.load(a + f4(k)));
      v128.store(d + (k << 3), v128.load(b + f4(k)), 16);
    }
    for (; k < Ku; k++) {
      const q = d + ((k >> 2) << 5) + ((k & 3) << 2);
      store<f32>(q, k < <usize>cols ? load<f32>(a + f4(k)) : 0);
      store<f32>(q + 16, k < <usize>cols ? load<f32>(b + f4(k)) : 0);
    }
  }
  if (t < T) pad_rows(dst + f4(<usize>t * Ku), x + f4(<usize>(t * xs)), 1, xs, cols, K);
}

/**
 * The outputs of one row tile and token: the sums of a0..a3 (rows r..r+3) at o0. The four horizontal sums are taken
 * as one transpose-and-add, in `hsum`'s order ((l0 + l1) + (l2 + l3) per row), then stored by common.ts `store4`
 * (tanh and sigmoid: after the product, wasm/act.ts).
 */
@inline function finish4(o0: usize, a0: v128, a1: v128, a2: v128, a3: v128, bias: usize, r: i32, step: i32, act: i32, acc: i32, rows: i32): void {
  const ab = f32x4.add(v128.shuffle<f32>(a0, a1, 0, 4, 2, 6), v128.shuffle<f32>(a0, a1, 1, 5, 3, 7));
  const cd = f32x4.add(v128.shuffle<f32>(a2, a3, 0, 4, 2, 6), v128.shuffle<f32>(a2, a3, 1, 5, 3, 7));
  const s = f32x4.add(v128.shuffle<f32>(ab, cd, 0, 1, 4, 5), v128.shuffle<f32>(ab, cd, 2, 3, 6, 7));
  if (step == 1) {
    store4(o0, s, bias, r, act, acc, rows);
    return;
  }
  // rows r, r + step, r + 2·step, r + 3·step (finish gives what store4 gives, one value at a time)
  const d = f4(<usize>step);
  finish(o0, f32x4.extract_lane(s, 0), bias, r, act, acc);
  if (r + step < rows) finish(o0 + d, f32x4.extract_lane(s, 1), bias, r + step, act, acc);
  if (r + 2 * step < rows) finish(o0 + 2 * d, f32x4.extract_lane(s, 2), bias, r + 2 * step, act, acc);
  if (r + 3 * step < rows) finish(o0 + 3 * d, f32x4.extract_lane(s, 3), bias, r + 3 * step, act, acc);
}

/** Columns per K block of `mm`: a 4-row f32 tile block (16 KiB) and a token pair's block (8 KiB) stay in L1. */
const KB: usize = 1024;

/**
 * Row tiles [lo, hi) (multiples of 4) of out[t, r] = act(W[r] · x[t] + bias[r]) for all t < T.
 * x: packed by pack_x2 ([T, K] floats); scratch: this thread's 16·min(K, KB) bytes of tile, then (T + 2) · 64
 * bytes of partial sums.
 *
 * Each tile of 4 rows is widened to f32 once (interleaved, `widenTile`), then every pair of token rows is
 * multiplied against it with 4 × 2 f32x4 accumulators (4 weight vectors and 2 activation vectors loaded per 32
 * MACs), so weights are read from memory once per chunk of T tokens. Both the tile and x are laid out so that one
 * pointer each walks them with constant offsets: V8 then folds every address into its load (no address arithmetic
 * per load), which is what bounds this loop. Rows longer than KB columns go in K blocks, the accumulators parked
 * in scratch between blocks; each sum is still taken in natural column order per lane, as the mat-vec kernels'
 * single-row loop would, so blocking changes no bits.
 */
export function mm(lo: i32, hi: i32, out: usize, x: usize, W: usize, K: i32, T: i32, os: i32, bias: usize, act: i32, acc: i32, rows: i32, dtype: i32, sc: usize, scratch: usize, shift: i32): void {
  const Ku = <usize>K, park = scratch + (min(Ku, KB) << 4);
  const tiles = (hi - lo) >> 2, step = tileStep(dtype, tiles, T);
  for (let i = 0; i < tiles; i++) {
    const r = step == 1 ? lo + (i << 2) : lo + i; // first row of tile i
    for (let k0: usize = 0; k0 < Ku; k0 += KB) {
      const k1 = min(k0 + KB, Ku), first = k0 == 0, last = k1 == Ku;
      widenTile(scratch, W, K, r, step, k0, k1, dtype, sc, shift);
      const wEnd = scratch + ((k1 - k0) << 4);
      let t = 0;
      for (; t + 1 < T; t += 2) {
        let px = x + f4(<usize>t * Ku) + (k0 << 3);
        const pp = park + (<usize>t << 6);
        let a00 = f32x4.splat(0), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
        if (!first) {
          a00 = v128.load(pp); a10 = v128.load(pp, 16); a20 = v128.load(pp, 32); a30 = v128.load(pp, 48);
          a01 = v128.load(pp, 64); a11 = v128.load(pp, 80); a21 = v128.load(pp, 96); a31 = v128.load(pp, 112);
        }
        for (let pw = scratch; pw < wEnd; pw += 64) {
          const xa = v128.load(px), xb = v128.load(px, 16);
          const v0 = v128.load(pw);
          a00 = madd(v0, xa, a00); a01 = madd(v0, xb, a01);
          const v1 = v128.load(pw, 16);
          a10 = madd(v1, xa, a10); a11 = madd(v1, xb, a11);
          const v2 = v128.load(pw, 32);
          a20 = madd(v2, xa, a20); a21 = madd(v2, xb, a21);
          const v3 = v128.load(pw, 48);
          a30 = madd(v3, xa, a30); a31 = madd(v3, xb, a31);
          px += 32;
        }
        if (last) {
          const o0 = out + f4(<usize>(t * os + r));
          finish4(o0, a00, a10, a20, a30, bias, r, step, act, acc, rows);
          finish4(o0 + f4(<usize>os), a01, a11, a21, a31, bias, r, step, act, acc, rows);
        } else {
          v128.store(pp, a00); v128.store(pp, a10, 16); v128.store(pp, a20, 32); v128.store(pp, a30, 48);
          v128.store(pp, a01, 64); v128.store(pp, a11, 80); v128.store(pp, a21, 96); v128.store(pp, a31, 112);
        }
      }
      if (t < T) {
        let px = x + f4(<usize>t * Ku) + (k0 << 2);
        const pp = park + (<usize>t << 6);
        let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
        if (!first) { a0 = v128.load(pp); a1 = v128.load(pp, 16); a2 = v128.load(pp, 32); a3 = v128.load(pp, 48); }
        for (let pw = scratch; pw < wEnd; pw += 64) {
          const xa = v128.load(px);
          a0 = madd(v128.load(pw), xa, a0);
          a1 = madd(v128.load(pw, 16), xa, a1);
          a2 = madd(v128.load(pw, 32), xa, a2);
          a3 = madd(v128.load(pw, 48), xa, a3);
          px += 16;
        }
        if (last) finish4(out + f4(<usize>(t * os + r)), a0, a1, a2, a3, bias, r, step, act, acc, rows);
        else { v128.store(pp, a0); v128.store(pp, a1, 16); v128.store(pp, a2, 32); v128.store(pp, a3, 48); }
      }
    }
  }
}

/** `finish4` with f64 sums (for `mmp`). */
@inline function finish4d(o0: usize, s0: f64, s1: f64, s2: f64, s3: f64, bias: usize, r: i32, step: i32, act: i32, acc: i32, rows: i32): void {
  const d = f4(<usize>step);
  finish64(o0, s0, bias, r, act, acc);
  if (r + step < rows) finish64(o0 + d, s1, bias, r + step, act, acc);
  if (r + 2 * step < rows) finish64(o0 + 2 * d, s2, bias, r + 2 * step, act, acc);
  if (r + 3 * step < rows) finish64(o0 + 3 * d, s3, bias, r + 3 * step, act, acc);
}

/**
 * `mm` with blocked accumulation: f32 partial sums over 64-column blocks, summed across blocks in f64. For the
 * matrices whose outputs the state amplifies (receptance: y = S·r cancels; the a LoRA), at ~10% extra cost on them.
 * Kept apart from `mm`: its eight f64 block sums would cost `mm`'s inner loop registers (V8 has 16 vector registers).
 */
export function mmp(lo: i32, hi: i32, out: usize, x: usize, W: usize, K: i32, T: i32, os: i32, bias: usize, act: i32, acc: i32, rows: i32, dtype: i32, sc: usize, scratch: usize, shift: i32): void {
  const rowBytes = f4(<usize>K);
  const tiles = (hi - lo) >> 2, step = tileStep(dtype, tiles, T);
  for (let i = 0; i < tiles; i++) {
    const r = step == 1 ? lo + (i << 2) : lo + i; // first row of tile i
    widenTile(scratch, W, K, r, step, 0, <usize>K, dtype, sc, shift);
    const wEnd = scratch + (rowBytes << 2);
    let t = 0;
    for (; t + 1 < T; t += 2) {
      let px = x + f4(<usize>t * <usize>K);
      let s00: f64 = 0, s01: f64 = 0, s10: f64 = 0, s11: f64 = 0, s20: f64 = 0, s21: f64 = 0, s30: f64 = 0, s31: f64 = 0;
      for (let pb = scratch; pb < wEnd; pb += 1024) { // 64 columns: 16 chunks of 64 bytes
        const be = min(pb + 1024, wEnd);
        let a00 = f32x4.splat(0), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
        for (let pw = pb; pw < be; pw += 64) {
          const xa = v128.load(px), xb = v128.load(px, 16);
          const v0 = v128.load(pw);
          a00 = madd(v0, xa, a00); a01 = madd(v0, xb, a01);
          const v1 = v128.load(pw, 16);
          a10 = madd(v1, xa, a10); a11 = madd(v1, xb, a11);
          const v2 = v128.load(pw, 32);
          a20 = madd(v2, xa, a20); a21 = madd(v2, xb, a21);
          const v3 = v128.load(pw, 48);
          a30 = madd(v3, xa, a30); a31 = madd(v3, xb, a31);
          px += 32;
        }
        s00 += hsum(a00); s01 += hsum(a01); s10 += hsum(a10); s11 += hsum(a11);
        s20 += hsum(a20); s21 += hsum(a21); s30 += hsum(a30); s31 += hsum(a31);
      }
      const o0 = out + f4(<usize>(t * os + r));
      finish4d(o0, s00, s10, s20, s30, bias, r, step, act, acc, rows);
      finish4d(o0 + f4(<usize>os), s01, s11, s21, s31, bias, r, step, act, acc, rows);
    }
    if (t < T) {
      let px = x + f4(<usize>t * <usize>K);
      let s0: f64 = 0, s1: f64 = 0, s2: f64 = 0, s3: f64 = 0;
      for (let pb = scratch; pb < wEnd; pb += 1024) {
        const be = min(pb + 1024, wEnd);
        let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
        for (let pw = pb; pw < be; pw += 64) {
          const xa = v128.load(px);
          a0 = madd(v128.load(pw), xa, a0);
          a1 = madd(v128.load(pw, 16), xa, a1);
          a2 = madd(v128.load(pw, 32), xa, a2);
          a3 = madd(v128.load(pw, 48), xa, a3);
          px += 16;
        }
        s0 += hsum(a0); s1 += hsum(a1); s2 += hsum(a2); s3 += hsum(a3);
      }
      finish4d(out + f4(<usize>(t * os + r)), s0, s1, s2, s3, bias, r, step, act, acc, rows);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// WKV-7 recurrence over (sequence, head) items [lo, hi) — heads are independent, so threads split them. `segs`
// holds nSeg entries of three i32: the sequence's state S (H heads of N×N f32), its first row t0 and its number of
// rows T in r, w, k, v, kk, a and y ([rows, C]); item i is head i % H of segment i / H. N % 4 == 0.
// `wlo` (or 0): the decay's rounding residual from `decay`, so S·w uses w to ~48 bits.
//   sa[i] = -Σ_j S[i][j]·kk[j];  S[i][j] = S[i][j]·w[j] + sa[i]·kk[j]·a[j] + v[i]·k[j];  y[i] = Σ_j S[i][j]·r[j]

export function wkv(lo: i32, hi: i32, segs: usize, r: usize, w: usize, k: usize, v: usize, kk: usize, a: usize, y: usize, C: i32, N: i32, wlo: usize, tmp: usize): void {
  const H = C / N;
  for (let it = lo; it < hi; it++) {
    const seg = segs + <usize>(it / H) * 12, h = it % H;
    const S = <usize>load<i32>(seg), t0 = load<i32>(seg, 4), T = load<i32>(seg, 8);
    wkvHead(S + f4(<usize>h * <usize>N * <usize>N), h, t0, T, r, w, k, v, kk, a, y, C, N, wlo, tmp);
  }
}

/** Head h of one sequence (state s), rows [t0, t0 + T). */
// @ts-ignore: decorator
@inline function wkvHead(s: usize, h: i32, t0: i32, T: i32, r: usize, w: usize, k: usize, v: usize, kk: usize, a: usize, y: usize, C: i32, N: i32, wlo: usize, tmp: usize): void {
  // The update is computed in f64 (2 lanes) from the f32 state and rounded once when stored: with repetitive input
  // the state is ill-conditioned and several f32 roundings per element show up in the logits. The per-token key-side
  // vectors are widened once per head into `tmp` (this thread's scratch, 5·N f64): w, kk, kk·a, k, r.
  const nb = f4(<usize>N), n8 = <usize>N << 3;
  const tw = tmp, tkk = tmp + n8, tka = tmp + 2 * n8, tk = tmp + 3 * n8, tr = tmp + 4 * n8;
  for (let t = t0; t < t0 + T; t++) {
    const o = f4(<usize>(t * C + h * N));
    for (let j: usize = 0; j < <usize>N; j++) {
      const q = o + (j << 2), d = j << 3;
      let wv = <f64>load<f32>(w + q);
      if (wlo) wv += <f64>load<f32>(wlo + q);
      const kkv = <f64>load<f32>(kk + q);
      store<f64>(tw + d, wv);
      store<f64>(tkk + d, kkv);
      store<f64>(tka + d, kkv * <f64>load<f32>(a + q));
      store<f64>(tk + d, <f64>load<f32>(k + q));
      store<f64>(tr + d, <f64>load<f32>(r + q));
    }
    // Rows i and i + 1 together: two independent chains of adds (each row's sums in the same order as one row
    // alone: the same bits), and each key-side vector loaded once for both.
    const vp = v + o, yp = y + o;
    for (let i = 0; i < N; i += 2) {
      const ra = s + f4(<usize>i) * <usize>N, rb = ra + nb;
      let saA = f64x2.splat(0), saB = saA;
      for (let j: usize = 0; j < nb; j += 16) {
        const d = j << 1, k0 = v128.load(tkk + d), k1 = v128.load(tkk + d, 16);
        const sA = v128.load(ra + j), sB = v128.load(rb + j);
        saA = f64x2.add(saA, f64x2.add(f64x2.mul(lo64(sA), k0), f64x2.mul(hi64(sA), k1)));
        saB = f64x2.add(saB, f64x2.add(f64x2.mul(lo64(sB), k0), f64x2.mul(hi64(sB), k1)));
      }
      const savA = f64x2.splat(-hsum64(saA)), savB = f64x2.splat(-hsum64(saB));
      const vivA = f64x2.splat(<f64>load<f32>(vp + f4(<usize>i))), vivB = f64x2.splat(<f64>load<f32>(vp + f4(<usize>i), 4));
      let yaA = f64x2.splat(0), yaB = yaA;
      for (let j: usize = 0; j < nb; j += 16) {
        const d = j << 1;
        const sA = v128.load(ra + j), sB = v128.load(rb + j);
        const w0 = v128.load(tw + d), a0 = v128.load(tka + d), kv0 = v128.load(tk + d), r0 = v128.load(tr + d);
        const nLA = f64x2.add(f64x2.add(f64x2.mul(lo64(sA), w0), f64x2.mul(savA, a0)), f64x2.mul(vivA, kv0));
        const nLB = f64x2.add(f64x2.add(f64x2.mul(lo64(sB), w0), f64x2.mul(savB, a0)), f64x2.mul(vivB, kv0));
        const w1 = v128.load(tw + d, 16), a1 = v128.load(tka + d, 16), kv1 = v128.load(tk + d, 16), r1 = v128.load(tr + d, 16);
        const nHA = f64x2.add(f64x2.add(f64x2.mul(hi64(sA), w1), f64x2.mul(savA, a1)), f64x2.mul(vivA, kv1));
        const nHB = f64x2.add(f64x2.add(f64x2.mul(hi64(sB), w1), f64x2.mul(savB, a1)), f64x2.mul(vivB, kv1));
        v128.store(ra + j, demote4(nLA, nHA));
        v128.store(rb + j, demote4(nLB, nHB));
        yaA = f64x2.add(yaA, f64x2.add(f64x2.mul(nLA, r0), f64x2.mul(nHA, r1)));
        yaB = f64x2.add(yaB, f64x2.add(f64x2.mul(nLB, r0), f64x2.mul(nHB, r1)));
      }
      store<f32>(yp + f4(<usize>i), <f32>hsum64(yaA));
      store<f32>(yp + f4(<usize>i), <f32>hsum64(yaB), 4);
    }
  }
}
