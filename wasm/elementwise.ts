// Element-wise and normalization ops of the RWKV-7 block, in SIMD128 (statistics and the f64 formulas of the
// reference in f64x2 lanes). Each takes its share of token rows [lo, hi), so the thread pool can split the longer
// ones; results do not depend on the split. Plain SIMD only (no relaxed multiply-add): every element is computed
// with the same roundings in both builds. A scalar tail handles lengths that are not a multiple of 4.
//
// At decode these run on 768–3072 values each, dozens of times per token. Hot in cache, the SIMD forms take a
// fraction of the scalar loops' time (layer norm of 768 values ~2.3 µs, one token-shift lerp of 768 values ~0.4 µs); inside a
// decode step their cost is mostly the cold reads of each layer's vectors (0.68 → 0.55 ms per 0.1B step, per op).

import { lo64, hi64, hsum64, demote4, f4 } from './common';

/** Σ of g f32 values at p, in f64 (two f64x2 partial sums over lanes 0,1 and 2,3, then the tail). */
@inline function sum64(p: usize, g: i32): f64 {
  let s0 = f64x2.splat(0), s1 = s0;
  let i = 0;
  for (; i + 3 < g; i += 4) {
    const v = v128.load(p + f4(<usize>i));
    s0 = f64x2.add(s0, lo64(v)); s1 = f64x2.add(s1, hi64(v));
  }
  let s = hsum64(f64x2.add(s0, s1));
  for (; i < g; i++) s += <f64>load<f32>(p + f4(<usize>i));
  return s;
}

/** Layer norm of each token row (n values), or group norm over `groups` equal groups of it; eps as its f64 bits' two words. */
export function layer_norm(lo: i32, hi: i32, out: usize, x: usize, w: usize, b: usize, T: i32, n: i32, groups: i32, epsLo: u32, epsHi: u32): void {
  const g = n / groups;
  const eps = reinterpret<f64>((<u64>epsHi << 32) | <u64>epsLo);
  for (let t = lo; t < min(hi, T); t++) {
    for (let h = 0; h < groups; h++) {
      const xp = x + f4(<usize>(t * n + h * g)), op = out + f4(<usize>(t * n + h * g));
      const wp = w + f4(<usize>(h * g)), bp = b + f4(<usize>(h * g));
      const mean = sum64(xp, g) / <f64>g;
      const m = f64x2.splat(mean);
      let v0 = f64x2.splat(0), v1 = v0;
      let i = 0;
      for (; i + 3 < g; i += 4) {
        const xv = v128.load(xp + f4(<usize>i));
        const d0 = f64x2.sub(lo64(xv), m), d1 = f64x2.sub(hi64(xv), m);
        v0 = f64x2.add(v0, f64x2.mul(d0, d0)); v1 = f64x2.add(v1, f64x2.mul(d1, d1));
      }
      let v = hsum64(f64x2.add(v0, v1));
      for (let j = i; j < g; j++) {
        const d = <f64>load<f32>(xp + f4(<usize>j)) - mean;
        v += d * d;
      }
      const inv = 1.0 / Math.sqrt(v / <f64>g + eps);
      const iv = f64x2.splat(inv);
      i = 0;
      for (; i + 3 < g; i += 4) {
        const o = f4(<usize>i);
        const xv = v128.load(xp + o), wv = v128.load(wp + o), bv = v128.load(bp + o);
        const y0 = f64x2.add(f64x2.mul(f64x2.mul(f64x2.sub(lo64(xv), m), iv), lo64(wv)), lo64(bv));
        const y1 = f64x2.add(f64x2.mul(f64x2.mul(f64x2.sub(hi64(xv), m), iv), hi64(wv)), hi64(bv));
        v128.store(op + o, demote4(y0, y1));
      }
      for (; i < g; i++) {
        const o = f4(<usize>i);
        const d = <f64>load<f32>(xp + o) - mean;
        store<f32>(op + o, <f32>(d * inv * <f64>load<f32>(wp + o) + <f64>load<f32>(bp + o)));
      }
    }
  }
}

/** out = x + (p - x) * m over n f32 values (f32, no fused multiply-add: the same bits as the scalar form). */
@inline function lerp(out: usize, x: usize, p: usize, m: usize, n: i32): void {
  let i = 0;
  for (; i + 3 < n; i += 4) {
    const o = f4(<usize>i);
    const xv = v128.load(x + o);
    v128.store(out + o, f32x4.add(xv, f32x4.mul(f32x4.sub(v128.load(p + o), xv), v128.load(m + o))));
  }
  for (; i < n; i++) {
    const o = f4(<usize>i);
    const xi = load<f32>(x + o);
    store<f32>(out + o, xi + (load<f32>(p + o) - xi) * load<f32>(m + o));
  }
}

/** out[t] = x[t] + (prev[t] - x[t]) * mix, prev[0] = shift, prev[t] = x[t-1]. (Caller updates shift afterwards.) */
export function shift_lerp(lo: i32, hi: i32, out: usize, x: usize, shift: usize, mix: usize, T: i32, C: i32): void {
  for (let t = lo; t < min(hi, T); t++) {
    const xt = x + f4(<usize>(t * C));
    lerp(out + f4(<usize>(t * C)), xt, t == 0 ? shift : xt - f4(<usize>C), mix, C);
  }
}

/** x += (target - x) * gate over n values. */
export function lerp_inplace(x: usize, target: usize, gate: usize, n: i32): void {
  lerp(x, x, target, gate, n);
}

/** kk = normalize(k·kK) per head (norm in f64, floor 1e-12); then k *= 1 + (a - 1)·kA. */
export function key_prep(lo: i32, hi: i32, kk: usize, k: usize, a: usize, kK: usize, kA: usize, T: i32, C: i32, N: i32): void {
  const one = f32x4.splat(1);
  for (let t = lo; t < min(hi, T); t++) {
    for (let h = 0; h < C; h += N) {
      const kp = k + f4(<usize>(t * C + h)), qp = kk + f4(<usize>(t * C + h)), cp = kK + f4(<usize>h);
      let s0 = f64x2.splat(0), s1 = s0;
      let j = 0;
      for (; j + 3 < N; j += 4) {
        const o = f4(<usize>j);
        const v = f32x4.mul(v128.load(kp + o), v128.load(cp + o));
        v128.store(qp + o, v);
        const l = lo64(v), u = hi64(v);
        s0 = f64x2.add(s0, f64x2.mul(l, l)); s1 = f64x2.add(s1, f64x2.mul(u, u));
      }
      let norm = hsum64(f64x2.add(s0, s1));
      for (; j < N; j++) {
        const o = f4(<usize>j);
        const v = load<f32>(kp + o) * load<f32>(cp + o);
        store<f32>(qp + o, v);
        norm += <f64>v * <f64>v;
      }
      const inv = 1.0 / max(Math.sqrt(norm), 1e-12);
      const iv = f64x2.splat(inv);
      j = 0;
      for (; j + 3 < N; j += 4) {
        const p = qp + f4(<usize>j), v = v128.load(p);
        v128.store(p, demote4(f64x2.mul(lo64(v), iv), f64x2.mul(hi64(v), iv)));
      }
      for (; j < N; j++) {
        const p = qp + f4(<usize>j);
        store<f32>(p, <f32>(<f64>load<f32>(p) * inv));
      }
    }
    const kt = k + f4(<usize>(t * C)), at = a + f4(<usize>(t * C));
    let i = 0;
    for (; i + 3 < C; i += 4) {
      const o = f4(<usize>i);
      const g = f32x4.add(one, f32x4.mul(f32x4.sub(v128.load(at + o), one), v128.load(kA + o)));
      v128.store(kt + o, f32x4.mul(v128.load(kt + o), g));
    }
    for (; i < C; i++) {
      const o = f4(<usize>i);
      store<f32>(kt + o, load<f32>(kt + o) * (1 + (load<f32>(at + o) - 1) * load<f32>(kA + o)));
    }
  }
}

/** y = (y + Σ_head(r·k·rK) · v) · g per head, in f64. */
export function bonus_gate(lo: i32, hi: i32, y: usize, r: usize, k: usize, v: usize, rK: usize, g: usize, T: i32, C: i32, N: i32): void {
  for (let t = lo; t < min(hi, T); t++) {
    for (let h = 0; h < C; h += N) {
      const x = f4(<usize>(t * C + h)), cp = rK + f4(<usize>h);
      let s0 = f64x2.splat(0), s1 = s0;
      let j = 0;
      for (; j + 3 < N; j += 4) {
        const o = f4(<usize>j);
        const rv = v128.load(r + x + o), kv = v128.load(k + x + o), cv = v128.load(cp + o);
        s0 = f64x2.add(s0, f64x2.mul(f64x2.mul(lo64(rv), lo64(kv)), lo64(cv)));
        s1 = f64x2.add(s1, f64x2.mul(f64x2.mul(hi64(rv), hi64(kv)), hi64(cv)));
      }
      let bonus = hsum64(f64x2.add(s0, s1));
      for (; j < N; j++) {
        const o = f4(<usize>j);
        bonus += <f64>load<f32>(r + x + o) * <f64>load<f32>(k + x + o) * <f64>load<f32>(cp + o);
      }
      const bv = f64x2.splat(bonus);
      let i = 0;
      for (; i + 3 < N; i += 4) {
        const o = x + f4(<usize>i);
        const yv = v128.load(y + o), vv = v128.load(v + o), gv = v128.load(g + o);
        const y0 = f64x2.mul(f64x2.add(lo64(yv), f64x2.mul(bv, lo64(vv))), lo64(gv));
        const y1 = f64x2.mul(f64x2.add(hi64(yv), f64x2.mul(bv, hi64(vv))), hi64(gv));
        v128.store(y + o, demote4(y0, y1));
      }
      for (; i < N; i++) {
        const o = x + f4(<usize>i);
        store<f32>(y + o, <f32>((<f64>load<f32>(y + o) + bonus * <f64>load<f32>(v + o)) * <f64>load<f32>(g + o)));
      }
    }
  }
}
