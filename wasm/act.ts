// Exponential-based element-wise kernels, two f64 lanes at a time: the matmul activations tanh and sigmoid (applied
// after the product, over its whole output), and the RWKV-7 decay. Re-exported by kernels.ts.
//
// AssemblyScript's Math.exp is scalar (~20 ns here); these ops evaluate ~20K exponentials per decoded token of the
// 0.1B model. `exp2` below is a plain f64x2 exp, accurate to about 1 ulp of f64 (its results are then rounded to f32,
// or, for the decay, kept to ~48 bits with its residual):
//   k = round(x / ln2) (by the 1.5·2^52 shifter, whose low mantissa bits then hold k), r = x − k·ln2 (ln2 in two
//   parts, the first with 21 trailing zero bits so k·ln2_hi is exact for |k| < 2^21), e^r by its Taylor series to
//   r^13/13! (|r| ≤ ln2/2: truncation < 2e-16 relative), times 2^k built in the exponent bits.
// x is clamped to [−708, 708] first, so 2^k stays a normal number: e^−708 ≈ 3e-308 and e^708 ≈ 3e307 stand in for 0 and
// ∞, which gives the same f32 results for what these ops compute (1/(1+e^x), 1 − 2/(e^2x + 1)). NaN stays NaN.

// The constants, in memory: as v128.const immediates V8 rematerialises each one at every use inside the loops
// (3 instructions); a load from here folds into the operation that uses it.
const KC = memory.data<f64>([
  -708.0, // 0
  708.0, // 1
  6755399441055744.0, // 2
  1.4426950408889634, // 3
  0.6931471803691238, // 4
  1.9082149292705877e-10, // 5
  1.0 / 6227020800.0, // 6
  1.0 / 479001600.0, // 7
  1.0 / 39916800.0, // 8
  1.0 / 3628800.0, // 9
  1.0 / 362880.0, // 10
  1.0 / 40320.0, // 11
  1.0 / 5040.0, // 12
  1.0 / 720.0, // 13
  1.0 / 120.0, // 14
  1.0 / 24.0, // 15
  1.0 / 6.0, // 16
  0.5, // 17
  1.0, // 18
  2.0, // 19
  1.0 / 3.0, // 20
  0.001953125, // 21
]);

@inline function kc(i: i32): v128 {
  return v128.load64_splat(KC + (<usize>i << 3));
}

/** e^x in both f64 lanes (see above). */
@inline function exp2(x: v128): v128 {
  x = f64x2.pmin(f64x2.pmax(x, kc(0)), kc(1)); // (pmin/pmax: one instruction each; NaN in x stays NaN)
  const shifter = kc(2); // 1.5 · 2^52
  const t = f64x2.add(f64x2.mul(x, kc(3)), shifter);
  const k = f64x2.sub(t, shifter);
  const r = f64x2.sub(f64x2.sub(x, f64x2.mul(k, kc(4))), f64x2.mul(k, kc(5)));
  // Horner from 1/13! down to 1/0!, written out: as a loop it would keep two exp2 calls' chains out of one block,
  // and `activate`/`decay` rely on two of them interleaving
  let p = kc(6); // 1/13!
  p = f64x2.add(f64x2.mul(p, r), kc(7));
  p = f64x2.add(f64x2.mul(p, r), kc(8));
  p = f64x2.add(f64x2.mul(p, r), kc(9));
  p = f64x2.add(f64x2.mul(p, r), kc(10));
  p = f64x2.add(f64x2.mul(p, r), kc(11));
  p = f64x2.add(f64x2.mul(p, r), kc(12));
  p = f64x2.add(f64x2.mul(p, r), kc(13));
  p = f64x2.add(f64x2.mul(p, r), kc(14));
  p = f64x2.add(f64x2.mul(p, r), kc(15));
  p = f64x2.add(f64x2.mul(p, r), kc(16));
  p = f64x2.add(f64x2.mul(p, r), kc(17));
  p = f64x2.add(f64x2.mul(p, r), kc(18));
  p = f64x2.add(f64x2.mul(p, r), kc(18));
  // 2^k: k + 1023 into the exponent field (the shifter's low bits hold k in two's complement)
  const scale = i64x2.shl(i64x2.add(t, i64x2.splat(1023)), 52);
  return f64x2.mul(p, scale);
}

/** sigmoid(v) = 1 / (1 + e^−v) in both lanes. */
@inline function sigmoid2(v: v128): v128 {
  return f64x2.div(kc(18), f64x2.add(kc(18), exp2(f64x2.neg(v))));
}

/** tanh(v) in both lanes: 1 − 2 / (e^2v + 1), and v·(1 − v²/3) where |v| < 2^-9 (the other form cancels there). */
@inline function tanh2(v: v128): v128 {
  const big = f64x2.sub(kc(18), f64x2.div(kc(19), f64x2.add(exp2(f64x2.add(v, v)), kc(18))));
  const small = f64x2.mul(v, f64x2.sub(kc(18), f64x2.mul(f64x2.mul(v, v), kc(20))));
  return v128.bitselect(small, big, f64x2.lt(f64x2.abs(v), kc(21)));
}

/** The 2 f32 at p as f64 lanes. */
@inline function load2(p: usize): v128 {
  return f64x2.promote_low_f32x4(v128.load64_zero(p));
}

/** The 2 f64 lanes of v as f32 at p. */
@inline function store2(p: usize, v: v128): void {
  v128.store64_lane(p, f32x4.demote_f64x2_zero(v), 0);
}

/**
 * out[i] = act(out[i]) for i in [lo, hi), in place (act: 1 tanh, 2 sigmoid; computed in f64, rounded once to f32).
 * The host runs the mat-mul with no activation, then this over its output (kernels.ts `finish` computes the others
 * inline); lo is a multiple of 4 (the thread pool's share).
 */
export function activate(lo: i32, hi: i32, out: usize, act: i32): void {
  let i = lo;
  // eight values per step: four independent exp chains in flight. Each chain is a 13-step Horner recurrence, so its
  // latency (not the number of operations) bounds the loop: with two chains a 768-value sigmoid took 8 µs here.
  for (; i + 7 < hi; i += 8) {
    const p = out + (<usize>i << 2);
    const a = load2(p), b = load2(p + 8), c = load2(p + 16), d = load2(p + 24);
    if (act == 1) { store2(p, tanh2(a)); store2(p + 8, tanh2(b)); store2(p + 16, tanh2(c)); store2(p + 24, tanh2(d)); }
    else { store2(p, sigmoid2(a)); store2(p + 8, sigmoid2(b)); store2(p + 16, sigmoid2(c)); store2(p + 24, sigmoid2(d)); }
  }
  for (; i < hi; i++) { // the last few (up to 7): lane 0 of a pair whose lane 1 is 0, the same value per element
    const p = out + (<usize>i << 2);
    const v = f64x2.replace_lane(f64x2.splat(0), 0, <f64>load<f32>(p));
    store<f32>(p, <f32>f64x2.extract_lane(act == 1 ? tanh2(v) : sigmoid2(v), 0));
  }
}

/**
 * w = exp(-e^-0.5 · sigmoid(w0 + w)), in place, for channels [c0, c1) of T rows of C. If `lo` ≠ 0 it also gets the
 * rounding residual w − f32(w), which wkv adds back: with repeated input the same decay multiplies the state every
 * step, so a rounded w would bias it coherently (t × 6e-8) — enough to show in the logits of ill-conditioned steps.
 * Channels go eight at a time, then one at a time; c0 and c1 are multiples of 4 except where c1 = C (the host splits by 4).
 */
export function decay(c0: i32, c1: i32, w: usize, w0: usize, T: i32, C: i32, lo: usize): void {
  const k = f64x2.splat(-0.6065306597126334); // −e^−0.5 (once per call)
  const end = min(c1, C);
  for (let t = 0; t < T; t++) {
    let i = c0;
    for (; i + 7 < end; i += 8) { // four pairs per step (see `activate`)
      const o = (<usize>(t * C + i)) << 2, q = w0 + (<usize>i << 2);
      const va = decay2(q, w + o, k), vb = decay2(q + 8, w + o + 8, k), vc = decay2(q + 16, w + o + 16, k), vd = decay2(q + 24, w + o + 24, k);
      // (all demoted before any is stored: written as one helper per pair, the two-pair loop ran ~1.4× slower)
      const ha = f32x4.demote_f64x2_zero(va), hb = f32x4.demote_f64x2_zero(vb), hc = f32x4.demote_f64x2_zero(vc), hd = f32x4.demote_f64x2_zero(vd);
      v128.store64_lane(w + o, ha, 0);
      v128.store64_lane(w + o + 8, hb, 0);
      v128.store64_lane(w + o + 16, hc, 0);
      v128.store64_lane(w + o + 24, hd, 0);
      if (lo) {
        store2(lo + o, f64x2.sub(va, f64x2.promote_low_f32x4(ha)));
        store2(lo + o + 8, f64x2.sub(vb, f64x2.promote_low_f32x4(hb)));
        store2(lo + o + 16, f64x2.sub(vc, f64x2.promote_low_f32x4(hc)));
        store2(lo + o + 24, f64x2.sub(vd, f64x2.promote_low_f32x4(hd)));
      }
    }
    for (; i < end; i++) { // the last few, one lane each (as in `activate`)
      const o = (<usize>(t * C + i)) << 2;
      const z = f64x2.replace_lane(f64x2.splat(0), 0, <f64>load<f32>(w0 + (<usize>i << 2)) + <f64>load<f32>(w + o));
      const v = f64x2.extract_lane(exp2(f64x2.mul(k, sigmoid2(z))), 0);
      const hi = <f32>v;
      store<f32>(w + o, hi);
      if (lo) store<f32>(lo + o, <f32>(v - <f64>hi));
    }
  }
}

/** The decay of the two channels with w0 at a and w at b, as f64 lanes (k = −e^−0.5). */
@inline function decay2(a: usize, b: usize, k: v128): v128 {
  return exp2(f64x2.mul(k, sigmoid2(f64x2.add(load2(a), load2(b)))));
}
