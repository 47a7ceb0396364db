// Shared helpers of the wasm kernels (wasm/kernels.ts, wasm/blocks.ts): SIMD multiply-add, horizontal sums, the
// output finish (bias, activation, accumulate), 16-bit float widening and the mat-vec prefetch distance.

@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return f32x4.relaxed_madd(a, b, c);
  } else {
    return f32x4.add(f32x4.mul(a, b), c);
  }
}

@inline export function hsum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/** a + the 4 f32 lanes of p, in f64 (2 lanes each). */
@inline export function acc64(a: v128, p: v128): v128 {
  return f64x2.add(f64x2.add(a, f64x2.promote_low_f32x4(p)), f64x2.promote_low_f32x4(v128.shuffle<f32>(p, p, 2, 3, 0, 1)));
}

@inline export function lo64(v: v128): v128 {
  return f64x2.promote_low_f32x4(v);
}
@inline export function hi64(v: v128): v128 {
  return f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 0, 1));
}

/** The 4 f32 lanes of two f64x2 values (lanes of a, then of b), each rounded once: the inverse of lo64/hi64. */
@inline export function demote4(a: v128, b: v128): v128 {
  return v128.shuffle<f32>(f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(b), 0, 1, 4, 5);
}

@inline export function hsum64(v: v128): f64 {
  return f64x2.extract_lane(v, 0) + f64x2.extract_lane(v, 1);
}

@inline export function f4(p: usize): usize {
  return p << 2;
}

@inline export function finish64(out: usize, v: f64, bias: usize, r: i32, act: i32, acc: i32): void {
  if (acc) {
    store<f32>(out, <f32>(<f64>load<f32>(out) + v));
    return;
  }
  if (bias) v += <f64>load<f32>(bias + f4(<usize>r));
  if (act == 3) v = v > 0 ? v * v : 0;
  store<f32>(out, <f32>v);
}

/**
 * Store one output value with bias and activation (act: 0 none, 3 relu²), or accumulate. Tanh and sigmoid (1, 2) are
 * not applied here: the host runs them after the product over its whole output (wasm/act.ts `activate`).
 */
@inline export function finish(out: usize, s: f32, bias: usize, r: i32, act: i32, acc: i32): void {
  if (acc) {
    store<f32>(out, load<f32>(out) + s);
    return;
  }
  let v: f64 = <f64>s;
  if (bias) v += <f64>load<f32>(bias + f4(<usize>r));
  if (act == 3) v = v > 0 ? v * v : 0;
  store<f32>(out, <f32>v);
}

/**
 * Store the sums of rows r..r+3 (lanes of s) at o0 as `finish` would, on the vector where the operation allows:
 * accumulate (f32 add), bias (f32(f64(s) + f64(b)) is the f32 sum: double rounding through f64 is exact for
 * addition), relu² without bias (s² is exact in f64); relu² with a bias, and rows past `rows`, lane by lane.
 */
@inline export function store4(o0: usize, s: v128, bias: usize, r: i32, act: i32, acc: i32, rows: i32): void {
  if (r + 3 < rows) {
    if (acc) { v128.store(o0, f32x4.add(v128.load(o0), s)); return; }
    if (act == 0) { v128.store(o0, bias ? f32x4.add(s, v128.load(bias + f4(<usize>r))) : s); return; }
    if (act == 3 && !bias) { v128.store(o0, v128.and(f32x4.mul(s, s), f32x4.gt(s, f32x4.splat(0)))); return; }
  }
  finish(o0, f32x4.extract_lane(s, 0), bias, r, act, acc);
  if (r + 1 < rows) finish(o0 + 4, f32x4.extract_lane(s, 1), bias, r + 1, act, acc);
  if (r + 2 < rows) finish(o0 + 8, f32x4.extract_lane(s, 2), bias, r + 2, act, acc);
  if (r + 3 < rows) finish(o0 + 12, f32x4.extract_lane(s, 3), bias, r + 3, act, acc);
}

// bf16 pair-interleaved lanes → f32 (see layout above)
@inline export function bf16lo(v: v128): v128 {
  return i32x4.shl(v, 16);
}
@inline export function bf16hi(v: v128): v128 {
  return i32x4.shl(i32x4.shr_u(v, 16), 16); // two shifts rather than a mask: no constant held in a vector register
}
// f16 pair-interleaved lanes → f32: move sign, exponent and mantissa into f32 position, rescale by `mul`.
// The host stores f16 matrices multiplied by 2^shift (shift 10 unless a value would overflow, see layout16), so
// every nonzero weight is a normal f16 and the rescale never multiplies a subnormal f32: on x86 each such multiply
// takes a microcode assist, and the ~0.2% of trained weights that are f16-subnormal cost ~30% of f16 mat-vec speed.
/** 2^(112 − shift) in every lane: exact for any f16 stored ×2^shift. */
@inline export function f16mul(shift: i32): v128 {
  return f32x4.splat(reinterpret<f32>((239 - shift) << 23));
}
// The f16 at the top of a lane, shifted right arithmetically by 3, has its exponent and mantissa where an f32's low
// 5 exponent bits and top 10 mantissa bits go, its sign at bit 31 (and copies of it in bits 30-28, masked off): the
// multiply by `mul` then rebiases the exponent and keeps the sign (4 ops for the low halves, 3 for the high ones).
@inline export function f16lo(v: v128, mul: v128): v128 {
  return f32x4.mul(f16loRaw(v), mul);
}
@inline export function f16hi(v: v128, mul: v128): v128 {
  return f32x4.mul(f16hiRaw(v), mul);
}
// Without the rescale: the weight ×2^(shift − 112), exact. The f16 mat-vec multiplies x by `mul` instead, once per
// value (xprep.ts scale_x, for kernels.ts mv_f16x): (w·2^(s−112))·(x·2^(112−s)) is the same real product, so the same f32 sums.
@inline export function f16loRaw(v: v128): v128 {
  return v128.and(i32x4.shr_s(i32x4.shl(v, 16), 3), i32x4.splat(0x8fffe000));
}
@inline export function f16hiRaw(v: v128): v128 {
  return v128.and(i32x4.shr_s(v, 3), i32x4.splat(0x8fffe000));
}

/**
 * Prefetch distance in bytes (≤ PREFETCH_PAD in src/backends/wasm/layout.ts); see the mat-vec notes in kernels.ts.
 * 8192 (was 2048): on the 2-core Sapphire Rapids VM, decode 0.1B with 2 threads, old and new builds alternated 3 times
 * (`rwkv7 bench --synthetic 0.1b --threads 2 --json`, median of each build's three): int8 81.4 → 94.4 tok/s, bf16 57.5 → 62.9,
 * f16 57.9 → 60.4, q4 70.5 → 82.5, q8_0 74.5 → 75.5; in one process, int8 rose up to 8192 and stayed level to 24576.
 */
export const PF: usize = 8192;

/**
 * `pf` or-ed with the words PF bytes ahead of wa and wb (software prefetch; the result must reach a global). Scalar
 * loads: they fetch the cache line as well, and keep the running value out of the vector registers, which the
 * kernels' accumulators need (a vector here made V8 spill accumulators in the mat-vec loops).
 */
@inline export function ahead(pf: u32, wa: usize, wb: usize): u32 {
  return pf | load<u32>(wa + PF) | load<u32>(wb + PF);
}

