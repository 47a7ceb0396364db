/**
 * `activations: 'q8'`: the inputs of q4 products rounded to 8 bits per block of 32 (llama.cpp's Q8_0 activations),
 * multiplied in integers by the wasm mat-vec. The rounding rule (roundActivationsQ8), the wasm kernels against the js
 * backend with the same rounding, the Q4_0 fixture against llama.cpp's own output, and the errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { JsBackend } from '../src/backends/js/index.js';
import { createWasmBackend } from '../src/backends/wasm/index.js';
import { createBackend } from '../src/backends/index.js';
import type { Backend, Buf, HostMatrix } from '../src/backends/kernels.js';
import { roundActivationsQ8 } from '../src/backends/quant.js';
import { bytesToFloat32, f16ToNumber, numberToBf16, numberToF16 } from '../src/formats/dtype.js';
import { loadModel } from '../src/runtime/load.js';
import { UserError } from '../src/errors.js';
import { checkBlockMatmuls } from './helpers/block-matmul.js';

const shared = fileURLToPath(new URL('../../shared/', import.meta.url));
const Q4 = shared + 'fixtures/gguf/storyteller-L6-D192-q4_0';

let seed = 5;
const rand = () => { seed = (seed * 1664525 + 1013904223) >>> 0; return seed / 4294967296; };
const randn = (n: number) => Float32Array.from({ length: n }, () => 2 * rand() - 1);

test('roundActivationsQ8: codes round(x·127/max) half to even, the scale an f16, per block of 32 from column 0', () => {
  const cols = 70; // two whole blocks and a short one
  const x = new Float32Array(cols);
  // block 0: max 127, so the codes are x rounded (scale 1): ties go to the even neighbour
  x.set([127, -2.5, 0.5, 3.5, 2.5, 1.49, -127], 0);
  x[32] = 2.54; x[33] = 1.0; x[34] = -0.01; // block 1: max 2.54, 1.0 is code 50, −0.01 is −0.5 → 0
  x[64] = -3; x[69] = 1.5; // the short block
  const out = new Float64Array(cols);
  roundActivationsQ8(x, 0, cols, out, 0);
  assert.deepEqual(Array.from(out.subarray(0, 8)), [127, -2, 0, 4, 2, 1, -127, 0]);
  const s1 = f16ToNumber(numberToF16(Math.fround(2.54) / 127));
  assert.notEqual(s1, Math.fround(Math.fround(2.54) / 127), 'the scale is rounded to f16');
  assert.deepEqual([out[32], out[33], out[34], out[35]], [127 * s1, 50 * s1, 0, 0]);
  const s2 = f16ToNumber(numberToF16(3 / 127));
  assert.deepEqual([out[64], out[69]], [-127 * s2, Math.round(1.5 * 127 / 3) * s2]);
  roundActivationsQ8(new Float32Array(32), 0, 32, out, 0);
  assert.ok(out.subarray(0, 32).every((v) => v === 0), 'an all-zero block rounds to zeros');
});

function buf(b: Backend, data: Float32Array): Buf {
  const x = b.buffer(data.length);
  b.write(x, data);
  return x;
}

// Same f32 inputs, so the same codes: the integer mat-vec (T ≤ 2) differs from js only by its f32 scale products and
// sums (measured ≤ 1e-6), the mat-mat (rounded values in the f32 kernel) as the f32 kernel itself (≤ 7e-6).
for (const simd of ['auto', 'plain'] as const) {
  for (const threads of [1, 2]) {
    test(`wasm q4 matmul on 8-bit activations matches js with the same rounding (${simd} SIMD, ${threads} thread(s))`, async () => {
      const wb = await createWasmBackend({ dtype: 'q4', activations: 'q8', threads, simd });
      const jb = new JsBackend('q4', 'q8');
      try {
        await checkBlockMatmuls(wb, jb, [
          [37, 128, 1, 'none', false], [5, 32, 2, 'tanh', false], [130, 200, 2, 'sigmoid', false], [256, 96, 1, 'relu2', false],
          [300, 768, 7, 'none', true], [257, 130, 64, 'tanh', false], [513, 1024, 1, 'none', true], [64, 3072, 2, 'none', false],
        ], randn);
      } finally {
        await wb.dispose();
      }
    });
  }
}

test('activations q8 rounds only q4 products: other matrices of the model keep full-precision inputs', async () => {
  const m: HostMatrix = { name: 'blocks.0.att.a2', rows: 64, cols: 32, dtype: 'BF16', data: Uint16Array.from(randn(64 * 32), numberToBf16) };
  const x = randn(32);
  const outs: Float32Array[] = [];
  for (const activations of ['full', 'q8'] as const) {
    const b = new JsBackend('q4', activations);
    const o = b.buffer(64);
    b.matmul(o, buf(b, x), b.matrix(m), 1); // a LoRA factor: stored bf16 under q4
    outs.push(await b.read(o));
  }
  assert.deepEqual(outs[1], outs[0]);
});

// llama.cpp computes Q4_0 products on Q8_0 activations: with the same rounding our next-token distribution after the
// fixture's prompt is closer to llama.cpp's than the exact one is. Measured mean |Δ logprob| over the vocabulary:
// full 0.043, q8 0.018 (js and wasm alike; with the scale kept in f32 instead of f16 it was 0.056).
for (const backend of ['js', 'wasm'] as const) {
  test(`Q4_0 fixture on ${backend} with activations q8: llama.cpp's greedy tokens, and logprobs nearer to llama.cpp's than exact`, async () => {
    const ref = JSON.parse(readFileSync(Q4 + '.llama-cpp.json', 'utf8')) as { prompt_tokens: number[]; greedy_tokens: number[] };
    const lp = bytesToFloat32('F32', readFileSync(Q4 + '.llama-cpp.next_logprobs.bin'));
    const meanDiff: Record<string, number> = {};
    for (const activations of ['full', 'q8'] as const) {
      const { model } = await loadModel(Q4 + '.gguf', { backend, dtype: 'q4', activations, threads: 1 });
      try {
        const st = model.newState();
        let logits = await model.forward(ref.prompt_tokens, st);
        let max = -Infinity;
        for (const v of logits) max = Math.max(max, v);
        let sum = 0;
        for (const v of logits) sum += Math.exp(v - max);
        const lse = Math.log(sum) + max;
        let d = 0;
        for (let i = 0; i < lp.length; i++) d += Math.abs(logits[i]! - lse - lp[i]!);
        meanDiff[activations] = d / lp.length;
        if (activations === 'q8') {
          const out: number[] = [];
          for (let i = 0; i < ref.greedy_tokens.length; i++) {
            let t = 0;
            for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[t]!) t = j;
            out.push(t);
            logits = await model.forward([t], st);
          }
          assert.deepEqual(out, ref.greedy_tokens);
        }
      } finally {
        await model.backend.dispose();
      }
    }
    assert.ok(meanDiff.q8! <= 0.025, `q8: mean |Δ logprob| ${meanDiff.q8}`);
    assert.ok(meanDiff.q8! < 0.6 * meanDiff.full!, `q8 ${meanDiff.q8} against full ${meanDiff.full}`);
  });
}

test('activations q8: refused, by name, for weights that are not q4 and on webgpu; an unknown mode is refused', async () => {
  await assert.rejects(loadModel(Q4 + '.gguf', { backend: 'wasm', dtype: 'bf16', activations: 'q8', threads: 1 }),
    (e: Error) => e instanceof UserError && /--activations q8 .*needs --dtype q4.*not bf16/.test(e.message));
  await assert.rejects(createBackend('webgpu', { dtype: 'q4', activations: 'q8' }),
    (e: Error) => e instanceof UserError && /--activations q8 .*js and wasm/.test(e.message));
  const { parseActivationMode } = await import('../src/backends/index.js');
  assert.throws(() => parseActivationMode('q4'), /unknown activations mode 'q4' \(expected one of: full, q8\)/);
});
