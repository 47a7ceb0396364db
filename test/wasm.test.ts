/**
 * The wasm backend: kernels against the js reference backend on random data (odd sizes, head size 32 and 64,
 * 1 and 2 threads, every weight dtype), golden verification of whole models, and perplexity with f16/int8 weights.
 * Run: node --import tsx --test test/wasm.test.ts
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { JsBackend } from '../src/backends/js/index.js';
import { createWasmBackend, type WasmBackend } from '../src/backends/wasm/index.js';
import type { Backend, Buf, HostMatrix, WeightDType, Activation } from '../src/backends/kernels.js';
import { numberToBf16 as f32ToBf16, numberToF16 as f32ToF16 } from '../src/formats/dtype.js';
import { perplexity } from '../src/runtime/metrics.js';
import { loadModel } from '../src/runtime/load.js';
import { verifyGolden } from '../src/runtime/verify.js';
import { openSafetensors } from '../src/formats/safetensors.js';

const shared = fileURLToPath(new URL('../../shared/', import.meta.url));

type Uniform = (n: number, lo?: number, hi?: number) => Float32Array;
/** n uniform values in [lo, hi) from a seeded LCG stream of their own. */
function uniformStream(seed: number): Uniform {
  const rand = () => { seed = (seed * 1664525 + 1013904223) >>> 0; return seed / 4294967296; };
  return (n, lo = -1, hi = 1) => Float32Array.from({ length: n }, () => lo + (hi - lo) * rand());
}
const randn = uniformStream(7);

function maxRel(a: Float32Array, b: Float32Array): number {
  let m = 0, s = 0;
  for (let i = 0; i < a.length; i++) { m = Math.max(m, Math.abs(a[i]! - b[i]!)); s = Math.max(s, Math.abs(b[i]!)); }
  return m / Math.max(s, 1e-30);
}

/** `f` on the js reference backend (same weight storage as `wasm`) and on `wasm`. */
async function both<T>(wasm: Backend, f: (b: Backend) => Promise<T>): Promise<[T, T]> {
  return [await f(new JsBackend(wasm.weightDType)), await f(wasm)];
}

function buf(b: Backend, data: Float32Array): Buf {
  const x = b.buffer(data.length);
  b.write(x, data);
  return x;
}

/** A host matrix of random values in `dtype` ('F32', 'BF16' or 'F16' bit patterns). */
function hostMatrix(rows: number, cols: number, dtype: 'F32' | 'BF16' | 'F16', rnd: Uniform = randn): HostMatrix {
  const v = rnd(rows * cols);
  if (dtype === 'F32') return { name: 'm', rows, cols, dtype, data: v };
  return { name: 'm', rows, cols, dtype, data: Uint16Array.from(v, dtype === 'BF16' ? f32ToBf16 : f32ToF16) };
}

const SOURCE: Record<WeightDType, 'F32' | 'BF16' | 'F16'> = { f32: 'F32', bf16: 'BF16', f16: 'F16', int8: 'BF16', q4: 'BF16', q8_0: 'BF16' };
// The js reference stores the same weights (f16-rounded, or the same int8 quantization), so only arithmetic differs;
// for int8 the mat-vec (T ≤ 2) also rounds x to int16 per token (~1/65534 of max|x| per value).
// q4/q8_0 (x rounded to int16 per block of 32): test/q4.test.ts
const MATMUL_TOL: Record<WeightDType, number> = { f32: 2e-6, bf16: 2e-6, f16: 2e-6, int8: 5e-5, q4: 2e-5, q8_0: 2e-5 };

type MatmulCase = [rows: number, cols: number, T: number, act: Activation, accumulate: boolean];

/** Each case's matmul on wasm `wb` (weight dtype `dtype`) against js, on random data drawn from `rnd`. */
async function checkMatmuls(wb: Backend, dtype: WeightDType, cases: readonly MatmulCase[], rnd: Uniform = randn): Promise<void> {
  for (const [rows, cols, T, act, acc] of cases) {
    const m = hostMatrix(rows, cols, SOURCE[dtype], rnd);
    const x = rnd(T * cols), bias = rnd(rows), init = rnd(T * rows);
    const [ref, got] = await both(wb, async (b) => {
      const W = b.matrix(m);
      const o = buf(b, init);
      b.matmul(o, buf(b, x), W, T, acc ? { accumulate: true } : { bias: buf(b, bias), act });
      return b.read(o);
    });
    const e = maxRel(got, ref);
    assert.ok(e <= MATMUL_TOL[dtype], `${dtype} ${rows}x${cols} T=${T} ${act}${acc ? ' acc' : ''}: rel error ${e}`);
  }
}

for (const threads of [1, 2]) {
  for (const dtype of ['f32', 'bf16', 'f16', 'int8'] as const) {
    test(`wasm matmul matches js (${dtype}, ${threads} thread(s))`, async () => {
      const wb = await createWasmBackend({ dtype, threads });
      try {
        await checkMatmuls(wb, dtype, [
          [37, 50, 1, 'none', false], [5, 3, 3, 'tanh', false], [130, 200, 2, 'sigmoid', false],
          [256, 96, 1, 'relu2', false], [300, 768, 7, 'none', true], [257, 130, 64, 'tanh', false], [64, 256, 33, 'sigmoid', false],
        ]);
        // batched-decode sizes (T = 4..8 rows, the mat-mat kernel with few tokens): bias and relu², an odd row
        // count, accumulate. Their own random stream, so the cases above keep their data.
        await checkMatmuls(wb, dtype, [[37, 50, 4, 'relu2', false], [61, 100, 8, 'none', false], [44, 768, 6, 'none', true]], uniformStream(12));
      } finally {
        await wb.dispose();
      }
    });
  }

  test(`wasm mat-mat over K blocks matches js (rows longer than 1024 columns, ${threads} thread(s))`, async () => {
    const rnd = uniformStream(11); // its own random stream, so the other tests' data stay what they were
    for (const dtype of ['f32', 'bf16', 'f16', 'int8'] as const) {
      const wb = await createWasmBackend({ dtype, threads });
      try {
        // a partial last block, two full blocks, and accumulate. No activation: over 2000+ columns the f32 sums'
        // rounding (~√K) is what a squashing activation would turn into a large error relative to its range; the
        // activations are covered by the short rows above, and the blocks change no bits of the sums.
        await checkMatmuls(wb, dtype, [[64, 2100, 6, 'none', false], [12, 2048, 5, 'none', false], [8, 1100, 9, 'none', true]], rnd);
      } finally {
        await wb.dispose();
      }
    }
  });

  test(`wasm f16 mat-vec with x too large to take the weights' rescale matches js (${threads} thread(s))`, async () => {
    // mv_f16x multiplies x by 2^(112 - shift) instead of every weight; from |x| ≥ 2^(16 + shift) that overflows, and
    // the product falls back to rescaling the weights (wasm/xprep.ts scale_x). One value that large in each case.
    const rnd = uniformStream(13);
    const wb = await createWasmBackend({ dtype: 'f16', threads });
    try {
      for (const [rows, cols, T] of [[37, 50, 1], [130, 768, 2]] as const) {
        const m = hostMatrix(rows, cols, 'F16', rnd);
        const x = rnd(T * cols);
        x[cols >> 1] = 3e9; // ×2^102 overflows f32
        const [ref, got] = await both(wb, async (b) => {
          const o = b.buffer(T * rows);
          b.matmul(o, buf(b, x), b.matrix(m), T);
          return b.read(o);
        });
        const e = maxRel(got, ref);
        assert.ok(e <= MATMUL_TOL.f16, `f16 ${rows}x${cols} T=${T} with |x| = 3e9: rel error ${e}`);
      }
    } finally {
      await wb.dispose();
    }
  });

  for (const N of [32, 64]) {
    test(`wasm element-wise ops and wkv match js (head size ${N}, ${threads} thread(s))`, async () => {
      const wb = await createWasmBackend({ dtype: 'f32', threads });
      try {
        const H = 3, C = H * N;
        for (const T of [1, 5, 40]) {
          const n = T * C;
          const d = { x: randn(n), r: randn(n), k: randn(n), v: randn(n), a: randn(n, 0, 1), g: randn(n), y: randn(n),
            w: randn(n, 0.5, 1), kK: randn(C), kA: randn(C), rK: randn(C), w0: randn(C, -2, 0), lw: randn(C), lb: randn(C),
            mix1: randn(C, 0, 1), mix2: randn(C, 0, 1), shift: randn(C), S: randn(H * N * N, -0.5, 0.5) };
          const [ref, got] = await both(wb, async (b) => {
            const B = Object.fromEntries(Object.entries(d).map(([k, v]) => [k, buf(b, v)])) as Record<keyof typeof d, Buf>;
            const o1 = b.buffer(n), o2 = b.buffer(n), ln = b.buffer(n), gn = b.buffer(n), kk = b.buffer(n);
            b.layerNorm(ln, B.x, B.lw, B.lb, T, C, 1, 1e-5);
            b.layerNorm(gn, B.x, B.lw, B.lb, T, C, H, 64e-5);
            b.shiftLerp([o1, o2], B.x, B.shift, [B.mix1, B.mix2], T, C);
            b.decay(B.w, B.w0, T, C);
            b.lerpInPlace(B.v, B.r, B.a, n);
            b.keyPrep(kk, B.k, B.a, B.kK, B.kA, T, C, N);
            b.wkv(B.S, B.r, B.w, B.k, B.v, kk, B.a, B.y, T, C, N);
            b.bonusGate(B.y, B.r, B.k, B.v, B.rK, B.g, T, C, N);
            const out: Record<string, Float32Array> = {};
            for (const [k, v] of Object.entries({ ln, gn, o1, o2, shift: B.shift, w: B.w, v: B.v, kk, k: B.k, S: B.S, y: B.y })) out[k] = await b.read(v);
            return out;
          });
          for (const k of Object.keys(ref)) {
            const e = maxRel(got[k]!, ref[k]!);
            assert.ok(e <= 2e-6, `T=${T} ${k}: rel error ${e}`);
          }
        }
      } finally {
        await wb.dispose();
      }
    });
  }
}

test('wasm buffers: copy, read ranges, free and reuse', async () => {
  const wb = await createWasmBackend({ dtype: 'f32', threads: 1 });
  const a = wb.buffer(10), b = wb.buffer(10);
  wb.write(a, Float32Array.from({ length: 10 }, (_, i) => i));
  wb.copy(b, a, 4, 2, 5);
  assert.deepEqual(Array.from(await wb.read(b, 1, 6)), [0, 5, 6, 7, 8, 0]);
  wb.free(a);
  const c = wb.buffer(10);
  assert.deepEqual(Array.from(await wb.read(c)), new Array(10).fill(0));
  await wb.dispose();
});

// ---- whole models against the official golden outputs ----

const GOLDEN: Array<[string, string]> = [
  ['fixtures/models/tiny-l2-d128.pth', 'fixtures/golden/tiny-l2-d128.golden.safetensors'],
  ['fixtures/models/tiny-l2-d96-h32.pth', 'fixtures/golden/tiny-l2-d96-h32.golden.safetensors'],
  ['fixtures/models/tiny-l3-d256.pth', 'fixtures/golden/tiny-l3-d256.golden.safetensors'],
  ['models/rwkv7-storyteller-L6-D192.pth', 'fixtures/golden/storyteller.text.safetensors'],
];
// int8 weights alone move the logits by 3e-2..7e-2 on ordinary steps, ~0.2 on storyteller prompt3 and ~0.6 on the
// random tiny models' 'repeat' sequence (which amplifies any weight perturbation): the issue's 5e-2 cannot hold
// against the golden outputs of the original weights (bench/quant-sensitivity.ts). Against the golden outputs this
// bound only guards against regressions; the int8 kernels are checked against the int8 model itself (js backend,
// same quantization, float64) below, and the cost on real text by perplexity.
const GOLDEN_TOL: Record<WeightDType, number> = { f32: 5e-5, bf16: 5e-5, f16: 5e-3, int8: 0.7, q4: 0.7, q8_0: 0.7 };

for (const dtype of ['f32', 'bf16', 'f16', 'int8'] as const) {
  for (const threads of [1, 2]) {
    test(`wasm golden verification (${dtype}, ${threads} thread(s))`, async () => {
      for (const [m, g] of GOLDEN) {
        const { model } = await loadModel(shared + m, { backend: 'wasm', dtype, threads });
        try {
          const r = await verifyGolden(model, shared + g, ['rnn', 'seq']);
          const worst = r.groups.reduce((a, b) => (b.max_deviation > a.max_deviation ? b : a));
          assert.ok(r.max_deviation <= GOLDEN_TOL[dtype], `${m}: max deviation ${r.max_deviation} (${worst.name}/${worst.mode}) > ${GOLDEN_TOL[dtype]}`);
        } finally {
          await model.backend.dispose();
        }
      }
    });
  }
}

// Measured (2 threads): max deviation 4.5e-4 / 2.3e-3 / 9.2e-3 / 1.8e-3 (rnn; seq ≤ 4.5e-4), state error ≤ 5.6e-4.
for (const threads of [1, 2]) {
  test(`wasm int8 matches the int8 model run by the js backend within 2e-2 (${threads} thread(s))`, async () => {
    for (const [m, g] of GOLDEN) {
      const { model } = await loadModel(shared + m, { backend: 'wasm', dtype: 'int8', threads });
      const { model: ref } = await loadModel(shared + m, { backend: 'js', dtype: 'int8' });
      try {
        const r = await verifyGolden(model, shared + g, ['rnn', 'seq'], ref);
        const worst = r.groups.reduce((a, b) => (b.max_deviation > a.max_deviation ? b : a));
        assert.ok(r.max_deviation <= 2e-2, `${m}: max deviation ${r.max_deviation} (${worst.name}/${worst.mode})`);
        assert.ok(r.max_state_rel_error! <= 2e-2, `${m}: state error ${r.max_state_rel_error}`);
      } finally {
        await model.backend.dispose();
      }
    }
  });
}

// ---- perplexity on real text ----

const PPL_REF = 44.627;
for (const [dtype, slack] of [['f16', 0.005], ['int8', 0.02]] as const) {
  test(`wasm perplexity with ${dtype} weights is within +${slack * 100}% of the reference`, async () => {
    const st = openSafetensors(shared + 'fixtures/golden/storyteller.text.safetensors');
    const b = st.tensors.get('ppl.tokens')!.read();
    st.close();
    const tokens = new Int32Array(b.slice().buffer);
    const { model } = await loadModel(shared + 'models/rwkv7-storyteller-L6-D192.pth', { backend: 'wasm', dtype, threads: 2 });
    try {
      const { perplexity: ppl } = await perplexity(model, tokens);
      assert.ok(ppl <= PPL_REF * (1 + slack), `perplexity ${ppl} > ${PPL_REF} + ${slack * 100}%`);
      assert.ok(ppl >= PPL_REF * 0.98, `perplexity ${ppl} suspiciously low`);
    } finally {
      await model.backend.dispose();
    }
  });
}

test('a model too big for 4 GiB of wasm memory is refused before loading, naming the size', async () => {
  const { assertModelFits } = await import('../src/runtime/fit.js');
  const config = { nLayer: 24, nEmbd: 2048, headSize: 64, nHead: 32, vocabSize: 65536, dimFfn: 8192, lora: { decay: 96, a: 96, v: 64, gate: 256 } };
  const f32 = await createWasmBackend({ dtype: 'f32', threads: 1 });
  const bf16 = await createWasmBackend({ dtype: 'bf16', threads: 1 });
  try {
    assert.throws(() => assertModelFits(config, f32, 'model.pth'), /model\.pth with f32 weights needs 5\.\d\d GiB of wasm memory/);
    assert.doesNotThrow(() => assertModelFits(config, bf16, 'model.pth'));
  } finally {
    await f32.dispose();
    await bf16.dispose();
  }
});

test('f16 weights widen exactly: every finite f16 value (subnormals and ±0 included), mat-vec and mat-mat', async () => {
  const { f16ToNumber } = await import('../src/formats/dtype.js');
  const finite = Array.from({ length: 65536 }, (_, h) => h).filter((h) => (h & 0x7c00) !== 0x7c00);
  // |w| < 64 is stored ×2^10 (no subnormals left); a matrix with larger values is stored as is
  for (const [patterns, shift] of [[finite.filter((h) => (h & 0x7fff) < 0x5400), 10], [finite, 0]] as const) {
    const cols = 16, rows = Math.ceil(patterns.length / cols);
    const data = new Uint16Array(rows * cols);
    data.set(patterns);
    const wb = await createWasmBackend({ dtype: 'f16', threads: 2 });
    try {
      const W = wb.matrix({ name: 'm', rows, cols, dtype: 'F16', data });
      assert.equal((W as unknown as { f16Shift: number }).f16Shift, shift);
      for (const T of [1, 3]) { // mat-vec, then mat-mat (the widened tile)
        const out = wb.buffer(T * rows);
        for (let j = 0; j < cols; j++) {
          const x = new Float32Array(T * cols);
          for (let t = 0; t < T; t++) x[t * cols + j] = 1; // picks column j
          wb.matmul(out, buf(wb, x), W, T);
          const got = await wb.read(out, (T - 1) * rows, rows);
          for (let r = 0; r < rows; r++) {
            const want = f16ToNumber(data[r * cols + j]!);
            if (got[r] !== want) assert.fail(`shift ${shift}, T=${T}: f16 0x${data[r * cols + j]!.toString(16)} widened to ${got[r]}, expected ${want}`);
          }
        }
      }
    } finally {
      await wb.dispose();
    }
  }
});
