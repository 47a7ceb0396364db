// The inputs of the mat-vec kernels (kernels.ts), prepared once per product on the calling thread: x padded to the
// matrix's K columns, rounded to int16 (int8 weights), or multiplied by the f16 weights' rescale.

import { f4, f16mul } from './common';

/** Quantize T rows of x (stride xs, `cols` values) to int16 [T, K] with one scale per row (max|x| → 32767). */
export function quant_x(xq: usize, xsc: usize, x: usize, T: i32, xs: i32, cols: i32, K: i32): void {
  for (let t = 0; t < T; t++) {
    const xt = x + f4(<usize>(t * xs));
    const qt = xq + ((<usize>t * <usize>K) << 1);
    let m: f32 = 0;
    for (let c = 0; c < cols; c++) m = max(m, abs(load<f32>(xt + f4(<usize>c))));
    const scale: f32 = m > 0 ? m / 32767 : 1;
    const inv: f32 = 1 / scale;
    for (let c = 0; c < cols; c++) store<i16>(qt + (<usize>c << 1), <i16>(<i32>nearest<f32>(load<f32>(xt + f4(<usize>c)) * inv)));
    for (let c = cols; c < K; c++) store<i16>(qt + (<usize>c << 1), 0);
    store<f32>(xsc + f4(<usize>t), scale);
  }
}

/** The largest finite f32. */
const FMAX: f32 = reinterpret<f32>(0x7f7fffff);

/**
 * pad_rows with every value multiplied by f16mul(shift) (exact: a power of two), for mv_f16x. Returns 0 if a finite
 * value overflowed (|x| ≥ 2^(16 + shift)): the caller then runs mv_f16, which rescales the weights instead.
 */
export function scale_x(dst: usize, x: usize, T: i32, xs: i32, cols: i32, K: i32, shift: i32): i32 {
  const mul = f16mul(shift), lim = f32x4.splat(FMAX), c4 = cols & ~3;
  let bad = i32x4.splat(0);
  for (let t = 0; t < T; t++) {
    const d = dst + f4(<usize>t * <usize>K), s = x + f4(<usize>(t * xs));
    let c = 0;
    for (; c < c4; c += 4) {
      const v = v128.load(s + f4(<usize>c)), y = f32x4.mul(v, mul);
      bad = v128.or(bad, v128.andnot(f32x4.gt(f32x4.abs(y), lim), f32x4.gt(f32x4.abs(v), lim))); // y = ±inf from a finite v
      v128.store(d + f4(<usize>c), y);
    }
    for (; c < cols; c++) {
      const v = load<f32>(s + f4(<usize>c)), y = v * f32x4.extract_lane(mul, 0);
      if (abs(y) > FMAX && !(abs(v) > FMAX)) bad = i32x4.splat(-1);
      store<f32>(d + f4(<usize>c), y);
    }
    memory.fill(d + f4(<usize>cols), 0, f4(<usize>(K - cols)));
  }
  return v128.any_true(bad) ? 0 : 1;
}

/** Copy T rows of `cols` values (stride xs) into rows of K values with zero padding. */
export function pad_rows(dst: usize, x: usize, T: i32, xs: i32, cols: i32, K: i32): void {
  for (let t = 0; t < T; t++) {
    const d = dst + f4(<usize>t * <usize>K);
    memory.copy(d, x + f4(<usize>(t * xs)), f4(<usize>cols));
    memory.fill(d + f4(<usize>cols), 0, f4(<usize>(K - cols)));
  }
}
