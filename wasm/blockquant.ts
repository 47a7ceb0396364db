// Load-time Q4_0 / Q8_0 quantization of bf16 rows (a .pth loaded with --dtype q4 or q8_0), re-exported by
// kernels.ts: the ggml blocks that src/formats/gguf-quant.ts quantizeQ4_0 / quantizeQ8_0 give, bit for bit, about
// 10× faster than them in JavaScript. The host then lays the blocks out as from a file (load.ts split_blocks,
// q4x4_blocks).
//
// The reference's arithmetic is f32 (Math.fround of f64 operations on f32 values: for one multiply, add or divide
// the double rounding is innocuous, so each is the f32 operation); its f16 scale is round-to-nearest-even
// (formats/dtype.ts f32BitsToF16, ported below). Q8_0: d = amax / 127, id = 1/d, code = roundf(x·id) (half away
// from zero; taken as trunc + a ≥ 0.5 test on the exact fraction: |v| + 0.5 rounds in f32), stored modulo 2^8. Q4_0: max = the value
// of largest magnitude (the first such), d = max / −8, id = 1/d, code = min(15, trunc((x·id) + 8.5)), two codes a byte.

/** f32 → f16 pattern, round to nearest even; overflow → inf, tiny → subnormal or zero (formats/dtype.ts f32BitsToF16). */
// @ts-ignore: decorator
@inline function f16Of(x: f32): u32 {
  const b = reinterpret<u32>(x);
  const sign = (b >> 16) & 0x8000, exp = <i32>((b >> 23) & 0xff), mant = b & 0x7fffff;
  if (exp == 255) return sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    const shift = 14 - e;
    if (shift > 24) return sign;
    const m = mant | 0x800000;
    let h = m >> <u32>shift;
    const rem = m & ((<u32>1 << <u32>shift) - 1), half = <u32>1 << <u32>(shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return sign | h;
  }
  let h = (<u32>e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; // a carry into the exponent is correct (up to inf)
  return sign | h;
}

/** Value j (0..31) of the bf16 block at p, as f32. */
// @ts-ignore: decorator
@inline function at(p: usize, j: usize): f32 {
  return reinterpret<f32>(<u32>load<u16>(p + (j << 1)) << 16);
}

/** 4 values j..j+3 of the bf16 block at p as f32 lanes. */
// @ts-ignore: decorator
@inline function four(p: usize, j: usize): v128 {
  return i32x4.shl(v128.load16x4_u(p + (j << 1)), 16);
}

/**
 * Rows [0, rows) of `cols` bf16 values at src (cols % 32 == 0) to ggml blocks at dst (rows · cols/32 blocks of 18
 * bytes, Q4_0, when q4, else 34, Q8_0), in order. Stops before the first row holding an inf or NaN (for the host's
 * reference quantizer: such rows load only with allowNonFinite) and returns the number of rows done.
 */
export function quant_blocks_bf16(dst: usize, src: usize, rows: i32, cols: i32, q4: i32): i32 {
  const nb = cols >> 5, BB: usize = q4 ? 18 : 34;
  const EXP = i32x4.splat(0x7f800000);
  for (let r = 0; r < rows; r++) {
    const row = src + ((<usize>r * <usize>cols) << 1);
    // a non-finite value: leave this row to the host
    let bad = i32x4.splat(0);
    for (let j: usize = 0; j < <usize>cols; j += 4) bad = v128.or(bad, i32x4.eq(v128.and(four(row, j), EXP), EXP));
    if (v128.any_true(bad)) return r;
    for (let b = 0; b < nb; b++) {
      const p = row + (<usize>b << 6), o = dst + (<usize>(r * nb + b)) * BB;
      let m = f32x4.splat(0);
      for (let j: usize = 0; j < 32; j += 4) m = f32x4.max(m, f32x4.abs(four(p, j)));
      const amax = max(max(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)), max(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
      if (q4) {
        // mx = the first value with |v| = amax (the reference's strict `amax < |v|` scan); 0 if all are 0
        let mx: f32 = 0;
        if (amax > 0) {
          const A = f32x4.splat(amax);
          for (let j: usize = 0; j < 32; j += 4) {
            const hit = i32x4.bitmask(f32x4.eq(f32x4.abs(four(p, j)), A));
            if (hit) { mx = at(p, j + <usize>ctz(hit)); break; }
          }
        }
        const d = mx / -8;
        const id: f32 = d != 0 ? 1 / d : 0;
        store<u16>(o, <u16>f16Of(d));
        const ID = f32x4.splat(id), H = f32x4.splat(8.5), Z = i32x4.splat(0), F = i32x4.splat(15);
        for (let j: usize = 0; j < 16; j += 4) {
          const lo = i32x4.min_s(i32x4.max_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(four(p, j), ID), H)), Z), F);
          const hi = i32x4.min_s(i32x4.max_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(four(p, j + 16), ID), H)), Z), F);
          const byte = v128.or(lo, i32x4.shl(hi, 4)); // q[j] | q[j + 16] << 4, one per i32 lane
          store<u32>(o + 2 + j, i32x4.extract_lane(i8x16.shuffle(byte, byte, 0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0));
        }
      } else {
        const d = amax / 127;
        const id: f32 = d != 0 ? 1 / d : 0;
        store<u16>(o, <u16>f16Of(d));
        const ID = f32x4.splat(id), HALF = f32x4.splat(0.5), SIGN = i32x4.splat(0x80000000), BIG = f32x4.splat(2147483648);
        for (let j: usize = 0; j < 32; j += 16) {
          let q = i32x4.splat(0), w = q, y = q, z = q;
          for (let k: usize = 0; k < 4; k++) {
            const v = f32x4.mul(four(p, j + (k << 2)), ID), a = f32x4.abs(v), t = f32x4.trunc(a);
            const r = f32x4.add(t, v128.and(f32x4.ge(f32x4.sub(a, t), HALF), f32x4.splat(1))); // roundf of |v|, exact
            // the reference stores the code with DataView.setInt8 (modulo 2^8): codes past ±127 appear only when d
            // is subnormal (1/d then inexact or infinite); |r| ≥ 2^31 is a multiple of 256 (or inf), NaN gives 0
            const c = v128.andnot(i32x4.trunc_sat_f32x4_s(v128.or(r, v128.and(v, SIGN))), f32x4.ge(r, BIG));
            if (k == 0) q = c; else if (k == 1) w = c; else if (k == 2) y = c; else z = c;
          }
          // the low byte of each code (the modulo), 16 of them
          const lo = i8x16.shuffle(q, w, 0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0);
          const hi = i8x16.shuffle(y, z, 0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0);
          v128.store(o + 2 + j, v128.shuffle<i64>(lo, hi, 0, 2));
        }
      }
    }
  }
  return rows;
}
