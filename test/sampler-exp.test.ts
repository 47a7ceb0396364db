// The sampler's exp kernels (src/runtime/fast-exp.ts): the wasm SIMD port (wasm/exp.ts) and the scalar JS port of
// fdlibm's exp must give Math.exp's bits — every value and the sum in index order — on millions of arguments over
// everything the sampler can pass (d = logit - max ≤ 0: tiny, -0, the subnormal range, underflow, -Infinity, NaN),
// and the other kernel loops must agree between the wasm module and the JS fallback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  fexp, selfCheck, selfCheckArguments, expKind, expKindAvailable, samplerKernel, highWordOf, type ExpKind, type LoopKind,
} from '../src/runtime/fast-exp.js';
import { EXP_WASM_BASE64 } from '../src/runtime/exp-wasm.js';
import { Rng } from '../src/runtime/sampler.js';

const rng = new Rng(2024);
const bitsView = new DataView(new ArrayBuffer(8));
/** A double from 64 random bits (every exponent equally likely), made ≤ 0. */
const randomNegative = (): number => {
  bitsView.setUint32(0, rng.nextU32() | 0x80000000);
  bitsView.setUint32(4, rng.nextU32());
  return bitsView.getFloat64(0);
};

/** Chunks of arguments: uniform on a few ranges, random bit patterns, tiny magnitudes, and the self-check set. */
function* argumentChunks(perRange: number, chunk = 65536): Generator<Float64Array> {
  const gens: Array<() => number> = [
    () => -rng.next(), // flat logits
    () => -40 * rng.next(), // peaked
    () => -745.2 * rng.next(), // down to the underflow threshold
    () => -708 - 38 * rng.next(), // the subnormal results
    () => -800 * rng.next() ** 4,
    () => -(2 ** (-70 * rng.next())), // tiny, around the 2^-28 boundary
    () => -Math.LN2 * (0.25 + 1.5 * rng.next()), // around the 0.5 ln2 and 1.5 ln2 boundaries
    randomNegative,
  ];
  for (const g of gens) {
    for (let done = 0; done < perRange; done += chunk) yield Float64Array.from({ length: chunk }, g);
  }
  yield selfCheckArguments();
}

test('the JS port of fdlibm exp gives Math.exp\'s bits (≈ 4 million arguments)', () => {
  let n = 0;
  for (const xs of argumentChunks(1 << 19)) {
    for (let i = 0; i < xs.length; i++) {
      const x = xs[i]!;
      if (!Object.is(fexp(x), Math.exp(x))) assert.fail(`fexp(${x}) = ${fexp(x)}, Math.exp = ${Math.exp(x)}`);
    }
    n += xs.length;
  }
  assert.ok(n > 4e6);
  for (const x of [0, -0, -Infinity, NaN, -5e-324, -1e-300, -745.1332191019411, -745.1332191019412, -708, -708.3964185322641]) {
    assert.ok(Object.is(fexp(x), Math.exp(x)), String(x));
  }
});

test('the wasm kernel gives Math.exp\'s bits and their sum in index order (≈ 4 million arguments, several maxima)', () => {
  assert.ok(expKindAvailable('wasm'), 'the wasm kernel is available and passes its self-check here');
  let n = 0;
  let c = 0;
  for (const xs of argumentChunks(1 << 19)) {
    // subtract a maximum as the sampler does: 0, or a positive m with the arguments shifted by it
    const m = [0, 0.25, 3, 17.5][c++ % 4]!;
    const k = samplerKernel(xs.length, 'wasm');
    for (let i = 0; i < xs.length; i++) k.x[i] = xs[i]! + m;
    const shifted = Float64Array.from(k.x);
    let sum = 0;
    let eMin = Infinity;
    for (let i = 0; i < xs.length; i++) {
      const e = Math.exp(shifted[i]! - m);
      sum += e;
      if (e < eMin && e > 0) eMin = e;
    }
    const got = k.expSum(m);
    for (let i = 0; i < xs.length; i++) {
      const want = Math.exp(shifted[i]! - m);
      if (!Object.is(k.e[i], want)) assert.fail(`exp(${shifted[i]} - ${m}) = ${k.e[i]}, Math.exp = ${want}`);
    }
    assert.ok(Object.is(got, sum), `sum ${got} vs ${sum}`);
    assert.ok(Object.is(k.eMin, eMin));
    n += xs.length;
  }
  assert.ok(n > 4e6);
});

test('odd lengths, the tail and every special lane go through the wasm kernel exactly', () => {
  for (const V of [0, 1, 2, 3, 127, 128, 129, 255, 257, 1000]) {
    const xs = Float64Array.from({ length: V }, (_, i) => (i % 17 === 0 ? -Infinity : i % 29 === 5 ? NaN : i % 31 === 3 ? -720 : -rng.next() * 30));
    const k = samplerKernel(V, 'wasm');
    k.x.set(xs);
    let max = -Infinity;
    for (const x of xs) if (x > max) max = x;
    assert.ok(Object.is(k.max(), max), `max, V ${V}`);
    const m = max === -Infinity ? 0 : max;
    let sum = 0;
    for (const x of xs) sum += Math.exp(x - m);
    assert.ok(Object.is(k.expSum(m), sum), `sum, V ${V}`);
    xs.forEach((x, i) => assert.ok(Object.is(k.e[i], Math.exp(x - m)), `V ${V} i ${i}`));
  }
});

test('max follows `if (x > m) m = x` from -Infinity: NaN never wins', () => {
  for (const loops of ['wasm', 'js'] as LoopKind[]) {
    for (const xs of [[NaN, 1, 2], [-Infinity, -Infinity], [NaN, NaN, NaN], [3, NaN, 7, -1, 7, 2, 9, 9, 0]]) {
      const k = samplerKernel(xs.length, 'math', loops);
      k.x.set(xs);
      let m = -Infinity;
      for (const x of xs) if (x > m) m = x;
      assert.ok(Object.is(k.max(), m), `${loops} ${xs}`);
    }
  }
});

test('the self-check accepts the kernels here, picks wasm, and rejects an exp that differs in one bit', () => {
  assert.equal(selfCheck('wasm'), true);
  assert.equal(selfCheck('js'), true);
  assert.equal(selfCheck('math'), true);
  assert.equal(expKind(), 'wasm');
  // A host whose Math.exp differs (another libm): the ports no longer match it, so neither would be used.
  const real = Math.exp;
  try {
    Math.exp = (x: number) => { const e = real(x); return e > 0 && e < 1 && x < -0.5 ? e * (1 + 2 ** -52) : e; };
    assert.equal(selfCheck('wasm'), false);
    assert.equal(selfCheck('js'), false);
    assert.equal(selfCheck('math'), true);
  } finally {
    Math.exp = real;
  }
});

/** At most 256 buckets by high word, from 1/sum's down to `low`'s, as the kernels' tests use them. */
function bucketLayout(sum: number, low: number): { hMax: number; shift: number; B: number } {
  const hMax = highWordOf(1 / sum);
  const range = hMax - highWordOf(low);
  let shift = 0;
  while ((range >>> shift) + 1 > 256) shift++;
  return { hMax, shift, B: (range >>> shift) + 1 };
}

test('the loops in wasm and in JS agree on the exponentials, candidates, scatter, grid sums and splits', () => {
  for (const V of [5, 300, 4096, 65536]) {
    for (let trial = 0; trial < 3; trial++) {
      const e = Float64Array.from({ length: V }, () => (rng.next() < 0.1 ? 0 : Math.exp(-12 * rng.next() ** 2)));
      e[Math.floor(rng.next() * V)] = 1;
      let sum = 0;
      for (const v of e) sum += v;
      const eps = [0, 0.15 / V, 0.5 / V][trial]!;
      const { hMax, shift, B } = bucketLayout(sum, Math.max(eps, 1e-6 / sum));
      const kernels: Array<[ExpKind, LoopKind]> = [['wasm', 'wasm'], ['math', 'wasm'], ['math', 'js'], ['js', 'js']];
      const out = kernels.map(([kind, loops]) => {
        const k = samplerKernel(V, kind, loops);
        // the exponentials of logits with this e as their exp, then the candidates of that e
        k.x.set(e.map((v) => (v > 0 ? Math.log(v) : -Infinity)));
        const s0 = k.expSum(0);
        const ex = Array.from(k.e);
        k.e.set(e);
        const n = k.candidates(sum, eps, eps * sum * (1 - 2 ** -20), hMax, shift, B);
        const counts = Array.from(k.bucketEnd.subarray(0, B));
        k.scatter(n, hMax, shift, B);
        const r = {
          s0, ex, n, counts,
          cand: Array.from(k.candIds.subarray(0, n)), q: Array.from(k.e.subarray(0, n)),
          ends: Array.from(k.bucketEnd.subarray(0, B)), ids: Array.from(k.ids.subarray(0, n)), vals: Array.from(k.vals.subarray(0, n)),
          grid: [] as number[], split: [] as number[],
        };
        for (let s = 0; s + 1 < n; s += 37) {
          const t = Math.min(n, s + 40);
          for (const S of [1e-3, 0.3, 0.7, 0.999]) r.grid.push(k.gridSum(s, t, S), k.gridSumDiv(s, t, S, 0.85));
        }
        if (n > 60) {
          const m = k.split(10, n - 10, 2);
          r.split = [m, ...Array.from(k.splitEnds.subarray(2 * 64, 2 * 64 + m)), ...Array.from(k.ids.subarray(0, n))];
        }
        return r;
      });
      assert.deepStrictEqual(out[0], out[1], `V ${V} trial ${trial}`);
    }
  }
});

test('the wasm and the JS loops agree on candidates, scatter and the bucket walks, for flat, mixed and peaked inputs', () => {
  for (const V of [7, 301, 65536]) {
    for (const shape of ['flat', 'mixed', 'peaked'] as const) {
      // flat: every token a candidate (the groups of eight that pass whole); mixed: a fifth of them at random;
      // peaked: one dominant token and a tail below eps
      const e = Float64Array.from({ length: V }, () => {
        const r = rng.next();
        return shape === 'flat' ? Math.exp(r - 1) : shape === 'mixed' ? (rng.next() < 0.2 ? Math.exp(-3 * r) : 1e-9 * r) : 1e-12 * r;
      });
      e[Math.floor(rng.next() * V)] = 1;
      let sum = 0;
      for (const v of e) sum += v;
      const eps = 0.15 / V;
      const { hMax, shift, B } = bucketLayout(sum, eps);
      const kernels: Array<[ExpKind, LoopKind]> = [['wasm', 'wasm'], ['math', 'wasm'], ['math', 'js'], ['js', 'js']];
      const out = kernels.map(([kind, loops]) => {
        const k = samplerKernel(V, kind, loops);
        k.e.set(e);
        const n = k.candidates(sum, eps, eps * sum * (1 - 2 ** -20), hMax, shift, B);
        const counts = Array.from(k.bucketEnd.subarray(0, B));
        const cand = Array.from(k.candIds.subarray(0, n)), q = Array.from(k.e.subarray(0, n));
        k.scatter(n, hMax, shift, B);
        const walks: number[] = [];
        for (const [S, limit, total, divide] of [[1e-3, 0.5, 1, false], [0.3, Infinity, 1, false], [1e-4, 0.9, 0.85, true], [0, 1, 1, false]] as const) {
          for (const stop of [n, n >> 1]) walks.push(k.walk(-1, 0, B, 0, stop, S, limit, total, divide), k.walkSum, k.walkStart);
        }
        if (n > 60) {
          const m = k.split(0, n, 1);
          walks.push(m, k.walk(1, 0, m, 0, n, 1e-3, 0.7, 1, false), k.walkSum, k.walkStart);
        }
        return { n, counts, cand, q, ends: Array.from(k.bucketEnd.subarray(0, B)), ids: Array.from(k.ids.subarray(0, n)), vals: Array.from(k.vals.subarray(0, n)), walks };
      });
      for (let i = 1; i < out.length; i++) assert.deepStrictEqual(out[i], out[0], `V ${V} ${shape}: ${kernels[i]!.join('/')}`);
    }
  }
});

test('the embedded module is the build of wasm/exp.ts (npm run build:wasm regenerates src/runtime/exp-wasm.ts)', async () => {
  const build = await import(new URL('../wasm/build-exp.mjs', import.meta.url).href);
  const bytes: Uint8Array = await build.compileExpKernel();
  assert.equal(Buffer.from(bytes).toString('base64'), EXP_WASM_BASE64,
    'src/runtime/exp-wasm.ts is stale: run `npm run build:wasm`');
  const src = readFileSync(fileURLToPath(new URL('../src/runtime/exp-wasm.ts', import.meta.url)), 'utf8');
  assert.equal(src, build.expModuleSource(bytes));
});
