// Load-time kernels: int8 quantization of bf16 weights (src/backends/wasm/layout.ts layoutInt8), bit for bit what the
// host's reference quantizer (src/backends/quant.ts quantizeRowInt8) gives, about 10× faster than it in JavaScript.
//
// The reference, per row and group of 64 columns: mx = max|w|, scale s = fround(mx / 127) (0 when mx = 0), and
// q = clamp(round(w / s), -127, 127) with the division in f64 and JavaScript's Math.round (ties toward +∞).
// Here y = w · (1/s) in f32, 4 lanes at a time: |y - w/s| < 2e-5 (two f32 roundings of a value below 128), so
// nearest(y) is the reference's code unless y lies within GUARD of a half-integer; such a chunk of 16 values is
// recomputed exactly as the reference does it (f64 division, floor + 0.5 test, 2 lanes at a time). Ties are common:
// a bf16 value over a bf16 max times 127 often lands on k + 1/2 exactly (~5% of chunks of random bf16 weights).
// A group whose scale is below the smallest normal f32 (1/s would overflow) is computed the reference's way too.

const GUARD: f32 = 1.0e-4;
const F32_MIN_NORMAL: f32 = 1.1754943508222875e-38;

/** The reference's code of one value: clamp(Math.round(w / s), -127, 127), w and s as f64. */
@inline function exactCode(w: f64, s: f64): i32 {
  const x = w / s;
  let r = Math.floor(x);
  if (x - r >= 0.5) r += 1;
  return <i32>Math.max(-127, Math.min(127, r));
}

/** Math.round(x) for 2 f64 lanes, as the reference computes it: floor(x), plus 1 when x - floor(x) ≥ 0.5. */
@inline function round2(x: v128): v128 {
  const f = f64x2.floor(x);
  return f64x2.add(f, v128.and(f64x2.ge(f64x2.sub(x, f), f64x2.splat(0.5)), f64x2.splat(1.0)));
}

/** The reference's codes of 4 f32 values (w / s in f64, Math.round) as i32 lanes (|code| ≤ 127 as in `codes`). */
@inline function exact4(w: v128, sd: v128): v128 {
  const lo = i32x4.trunc_sat_f64x2_s_zero(round2(f64x2.div(f64x2.promote_low_f32x4(w), sd)));
  const hi = i32x4.trunc_sat_f64x2_s_zero(round2(f64x2.div(f64x2.promote_low_f32x4(v128.shuffle<f32>(w, w, 2, 3, 0, 1)), sd)));
  return v128.shuffle<i32>(lo, hi, 0, 1, 4, 5);
}

/** f32 values of the low / high 4 bf16 lanes of v (each lane's bits moved to the top half: one unpack). */
@inline function bf16lo4(v: v128): v128 {
  return v128.shuffle<u16>(i32x4.splat(0), v, 0, 8, 1, 9, 2, 10, 3, 11);
}
@inline function bf16hi4(v: v128): v128 {
  return v128.shuffle<u16>(i32x4.splat(0), v, 4, 12, 5, 13, 6, 14, 7, 15);
}

/** 1.5·2^23: y + MAGIC holds nearest(y) (ties to even) in its low mantissa bits, for |y| < 2^22. */
const MAGIC: f32 = 12582912.0;

/** y + MAGIC (see MAGIC). */
@inline function roundMagic(y: v128): v128 {
  return f32x4.add(y, f32x4.splat(MAGIC));
}

/**
 * Codes from y + MAGIC: the integer in the low bits. No clamp is needed: |w| ≤ max|w| makes |y| ≤ 127·(1 + 2^-22),
 * which rounds to at most 127 (the reference's clamp to ±127 never acts either).
 */
@inline function codes(m: v128): v128 {
  return i32x4.sub(m, i32x4.splat(0x4b400000));
}

/**
 * Quantize rows [0, rows) of bf16 values at `src` (`cols` per row, cols % 64 == 0) into int8 codes at `q` (row
 * stride K bytes) and f32 scales at `sc` (row stride K/64 floats). Returns the first row holding a non-finite
 * value (its group's max is Inf/NaN: left, with the rows after it, for the host's reference code), or `rows`.
 */
export function quant_i8_bf16(q: usize, sc: usize, src: usize, rows: i32, cols: i32, K: i32): i32 {
  const G = cols >> 6;
  const absMask = i16x8.splat(0x7fff);
  for (let r = 0; r < rows; r++) {
    const s0 = src + ((<usize>r * <usize>cols) << 1);
    const q0 = q + <usize>r * <usize>K;
    const c0 = sc + ((<usize>r * <usize>(K >> 6)) << 2);
    // max |w| of each group, from the bit patterns (|w| orders as its bits do); a row with Inf/NaN goes to the host
    for (let g = 0; g < G; g++) {
      const p = s0 + (<usize>g << 7);
      let m = v128.and(v128.load(p), absMask);
      for (let i = 16; i < 128; i += 16) m = i16x8.max_u(m, v128.and(v128.load(p + <usize>i), absMask));
      m = i16x8.max_u(m, v128.shuffle<u16>(m, m, 4, 5, 6, 7, 0, 1, 2, 3));
      m = i16x8.max_u(m, v128.shuffle<u16>(m, m, 2, 3, 0, 1, 4, 5, 6, 7));
      m = i16x8.max_u(m, v128.shuffle<u16>(m, m, 1, 0, 2, 3, 4, 5, 6, 7));
      const mb = <u32>i16x8.extract_lane_u(m, 0);
      if (mb >= 0x7f80) return r;
      store<u32>(c0 + (<usize>g << 2), mb); // the max's bits for now: replaced by the scale below
    }
    for (let g = 0; g < G; g++) {
      const mb = load<u32>(c0 + (<usize>g << 2));
      const p = s0 + (<usize>g << 7), o = q0 + (<usize>g << 6);
      if (mb == 0) {
        store<f32>(c0 + (<usize>g << 2), 0);
        for (let i = 0; i < 64; i += 16) v128.store(o + <usize>i, i32x4.splat(0));
        continue;
      }
      const s: f32 = <f32>(<f64>reinterpret<f32>(mb << 16) / 127);
      store<f32>(c0 + (<usize>g << 2), s);
      if (s < F32_MIN_NORMAL) { // 1/s would overflow f32: the reference's arithmetic for the whole group
        for (let j = 0; j < 64; j++) store<i8>(o + <usize>j, <i8>exactCode(<f64>reinterpret<f32>(<u32>load<u16>(p + (<usize>j << 1)) << 16), <f64>s));
        continue;
      }
      const inv = f32x4.splat(<f32>(1.0 / <f64>s));
      for (let i = 0; i < 64; i += 16) {
        const v0 = v128.load(p + (<usize>i << 1)), v1 = v128.load(p + (<usize>i << 1), 16);
        const y0 = f32x4.mul(bf16lo4(v0), inv), y1 = f32x4.mul(bf16hi4(v0), inv);
        const y2 = f32x4.mul(bf16lo4(v1), inv), y3 = f32x4.mul(bf16hi4(v1), inv);
        const m0 = roundMagic(y0), m1 = roundMagic(y1), m2 = roundMagic(y2), m3 = roundMagic(y3);
        const M = f32x4.splat(MAGIC);
        const r0 = f32x4.sub(m0, M), r1 = f32x4.sub(m1, M), r2 = f32x4.sub(m2, M), r3 = f32x4.sub(m3, M);
        // the largest distance to the nearest integer: a tie (within GUARD) anywhere sends all 16 to the exact path
        const d = f32x4.max(f32x4.max(f32x4.abs(f32x4.sub(y0, r0)), f32x4.abs(f32x4.sub(y1, r1))),
          f32x4.max(f32x4.abs(f32x4.sub(y2, r2)), f32x4.abs(f32x4.sub(y3, r3))));
        if (v128.any_true(f32x4.gt(d, f32x4.splat(<f32>0.5 - GUARD)))) {
          // near a tie (often an exact one: bf16 values over a bf16 max): the reference's f64 arithmetic, 2 lanes at a time
          const sd = f64x2.splat(<f64>s);
          const e0 = i16x8.narrow_i32x4_s(exact4(bf16lo4(v0), sd), exact4(bf16hi4(v0), sd));
          const e1 = i16x8.narrow_i32x4_s(exact4(bf16lo4(v1), sd), exact4(bf16hi4(v1), sd));
          v128.store(o + <usize>i, i8x16.narrow_i16x8_s(e0, e1));
          continue;
        }
        const h0 = i16x8.narrow_i32x4_s(codes(m0), codes(m1));
        const h1 = i16x8.narrow_i32x4_s(codes(m2), codes(m3));
        v128.store(o + <usize>i, i8x16.narrow_i16x8_s(h0, h1));
      }
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------------------------
// f16 weights whose values bf16 holds exactly (every f16 matrix converted from a bf16 checkpoint, which is how F16
// GGUFs of the official models are made): re-encoded as bf16 at load, so that they multiply with the bf16 kernels —
// the same numbers, 2 fewer vector operations per 8 weights than f16's widening (kernels.ts f16loRaw/f16hiRaw).
// A stored f16 pattern h (the value times 2^shift, layout16) is exact in bf16 when its 3 low mantissa bits are 0
// and it is neither subnormal nor inf/nan (the 7-bit mantissa then keeps every set bit; bf16's exponent range is
// f32's). Its bf16 pattern: the sign, then (h & 0x7fff) >> 3 with the exponent rebased by 112 − shift; ±0 stay.

/**
 * If every one of the n f16 patterns at p is exact in bf16, rewrite them in place as bf16 patterns of the same
 * values (h / 2^shift) and return 1; else leave them and return 0. n is a multiple of 8 (layout16's rows).
 */
export function f16_as_bf16(p: usize, n: i32, shift: i32): i32 {
  const end = p + (<usize>n << 1);
  const low = i16x8.splat(7), expo = i16x8.splat(0x7c00), mant = i16x8.splat(0x3ff);
  let bad = i16x8.splat(0);
  for (let q = p; q < end; q += 16) {
    const v = v128.load(q), e = v128.and(v, expo);
    const sub = v128.andnot(i16x8.eq(e, i16x8.splat(0)), i16x8.eq(v128.and(v, mant), i16x8.splat(0))); // e = 0, m ≠ 0
    bad = v128.or(bad, v128.or(v128.or(v128.and(v, low), sub), i16x8.eq(e, expo))); // low bits, subnormal, inf/nan
  }
  if (v128.any_true(bad)) return 0;
  const sign = i16x8.splat(<i16>0x8000), mag = i16x8.splat(0x7fff), rebase = i16x8.splat(<i16>((112 - shift) << 7));
  for (let q = p; q < end; q += 16) {
    const v = v128.load(q), m = v128.and(v, mag);
    const b = i16x8.add(i16x8.shr_u(m, 3), rebase);
    v128.store(q, v128.or(v128.and(v, sign), v128.andnot(b, i16x8.eq(m, i16x8.splat(0)))));
  }
  return 1;
}

/**
 * layout16's permutation in place (src/backends/wasm/layout.ts, `interleave`): n 16-bit patterns at p (n % 8 == 0),
 * each group of 8 from natural order to [w0 w4 w1 w5 w2 w6 w3 w7], one shuffle per group; fused with the checks
 * of the values read: returns bit 0 set if a pattern has the exponent `expo` all ones (inf/nan: bf16 0x7f80, f16
 * 0x7c00), bit 1 if (h & 0x7fff) ≥ `big` (f16: |w| ≥ 64, which ×2^10 would overflow; 0x8000: never).
 */
export function pair16(p: usize, n: i32, expo: i32, big: i32): i32 {
  const end = p + (<usize>n << 1);
  const E = i16x8.splat(<i16>expo), mag = i16x8.splat(0x7fff), B = i16x8.splat(<i16>(big - 1));
  let bad = i16x8.splat(0), large = bad;
  for (let q = p; q < end; q += 16) {
    const v = v128.load(q);
    bad = v128.or(bad, i16x8.eq(v128.and(v, E), E));
    large = v128.or(large, i16x8.gt_s(v128.and(v, mag), B)); // h & 0x7fff > big - 1 (both below 2^15: signed compare)
    v128.store(q, i8x16.shuffle(v, v, 0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15));
  }
  return (v128.any_true(bad) ? 1 : 0) | (v128.any_true(large) ? 2 : 0);
}

/**
 * layout16's f16 rescale in place (src/backends/wasm/layout.ts shiftF16): n f16 patterns at p (n % 8 == 0), none
 * with |w| ≥ 64, times 2^10 exactly. A normal value gains 10 in its exponent field (at most 20 + 10: no overflow, no
 * carry into the sign); a subnormal m·2^-24 becomes the normal m·2^-14, its pattern taken from the f32 m = 2^p·1.f
 * (exact, m < 2^10): exponent field p + 1, mantissa f, i.e. (bits(f32(m)) >> 13) − (126 << 10); ±0 stays.
 */
export function shift_f16(p: usize, n: i32): void {
  const end = p + (<usize>n << 1);
  const EXP = i16x8.splat(0x7c00), MAG = i16x8.splat(0x7fff), SIGN = i16x8.splat(<i16>0x8000), ADD = i16x8.splat(10 << 10);
  const Z = i16x8.splat(0), BIAS = i32x4.splat(126 << 10);
  for (let q = p; q < end; q += 16) {
    const v = v128.load(q);
    const mag = v128.and(v, MAG), zeroExp = i16x8.eq(v128.and(v, EXP), Z);
    let out = v128.bitselect(v, i16x8.add(v, ADD), zeroExp);
    const sub = v128.andnot(zeroExp, i16x8.eq(mag, Z)); // exponent 0, mantissa not 0
    if (v128.any_true(sub)) {
      const lo = i32x4.sub(i32x4.shr_u(f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(mag)), 13), BIAS);
      const hi = i32x4.sub(i32x4.shr_u(f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(mag)), 13), BIAS);
      out = v128.bitselect(v128.or(i16x8.narrow_i32x4_u(lo, hi), v128.and(v, SIGN)), out, sub);
    }
    v128.store(q, out);
  }
}

/**
 * layoutBlocks's split (src/backends/wasm/layout.ts) of `rows` rows of `nb` ggml blocks at src (`bb` bytes each:
 * 34 Q8_0, 18 Q4_0; an f16 scale, then the codes) into the codes ([rows, rowBytes] from `codes`, a block's codes
 * after the previous one's) and the scales ([rows, sStride] u16 from `scales`). Returns 1 if a scale's magnitude is
 * 0x5400 or more (|d| ≥ 64: ×2^10 would overflow, see shiftScales), else 0.
 */
export function split_blocks(codes: usize, scales: usize, src: usize, rows: i32, nb: i32, bb: i32, rowBytes: i32, sStride: i32): i32 {
  let big: u32 = 0;
  const cb = <usize>(bb - 2);
  for (let r = 0; r < rows; r++) {
    let s = src + <usize>(r * nb * bb), c = codes + <usize>(r * rowBytes), d = scales + (<usize>(r * sStride) << 1);
    for (let b = 0; b < nb; b++, s += <usize>bb, c += cb, d += 2) {
      const h = load<u16>(s);
      store<u16>(d, h);
      big |= <u32>((h & 0x7fff) >= 0x5400);
      v128.store(c, v128.load(s, 2));
      if (cb == 32) v128.store(c, v128.load(s, 18), 16);
    }
  }
  return <i32>big;
}

/** One Q4_0 row block's 16 code bytes (at p) as the q4x4 bytes of its row: byte 4j + i = q[8j + i] | q[8j + 4 + i] << 4. */
// @ts-ignore: decorator
@inline function q4x4Row(p: usize): v128 {
  const v = v128.load(p), m15 = i8x16.splat(15);
  const lo = v128.and(v, m15), hi = v128.and(i16x8.shr_u(v, 4), m15); // q[0..15], q[16..31] (ggml's qs order)
  const a = i8x16.shuffle(lo, hi, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const b = i8x16.shuffle(lo, hi, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  return v128.or(a, i16x8.shl(b, 4)); // b < 16 per byte: the shift keeps each byte's bits within it
}

/**
 * layoutQ4x4's rearrangement (src/backends/wasm/layout.ts) of `rows` rows of `nb` Q4_0 blocks at src (18 bytes each)
 * into groups of 4 rows from group g0: per group and block 64 code bytes, byte 16j + 4r + i of row r's q4x4Row
 * lane j (a 4×4 transpose of 32-bit lanes), and the scales as [groups, NB, 4] u16; rows past `rows` in the last
 * group are left as they are (zero). Returns 1 if a scale's magnitude is 0x5400 or more, else 0 (see split_blocks).
 */
export function q4x4_blocks(codes: usize, scales: usize, src: usize, rows: i32, nb: i32, NB: i32, g0: i32): i32 {
  let big: u32 = 0;
  const rowB = <usize>(nb * 18);
  for (let r = 0; r < rows; r += 4) {
    const n = min(4, rows - r), g = <usize>(g0 + (r >> 2));
    for (let b = 0; b < nb; b++) {
      const at = g * <usize>NB + <usize>b, s = src + <usize>r * rowB + <usize>b * 18;
      let r0 = i32x4.splat(0), r1 = r0, r2 = r0, r3 = r0;
      for (let k = 0; k < n; k++) {
        const h = load<u16>(s + <usize>k * rowB);
        store<u16>(scales + ((at << 2) + <usize>k << 1), h);
        big |= <u32>((h & 0x7fff) >= 0x5400);
      }
      r0 = q4x4Row(s + 2);
      if (n > 1) r1 = q4x4Row(s + rowB + 2);
      if (n > 2) r2 = q4x4Row(s + 2 * rowB + 2);
      if (n > 3) r3 = q4x4Row(s + 3 * rowB + 2);
      // vector j = lane j of r0..r3
      const t01l = v128.shuffle<i32>(r0, r1, 0, 4, 1, 5), t01h = v128.shuffle<i32>(r0, r1, 2, 6, 3, 7);
      const t23l = v128.shuffle<i32>(r2, r3, 0, 4, 1, 5), t23h = v128.shuffle<i32>(r2, r3, 2, 6, 3, 7);
      const d = codes + (at << 6);
      v128.store(d, v128.shuffle<i64>(t01l, t23l, 0, 2));
      v128.store(d, v128.shuffle<i64>(t01l, t23l, 1, 3), 16);
      v128.store(d, v128.shuffle<i64>(t01h, t23h, 0, 2), 32);
      v128.store(d, v128.shuffle<i64>(t01h, t23h, 1, 3), 48);
    }
  }
  return <i32>big;
}
