/**
 * 4-bit (q4 = ggml Q4_0 blocks) and native Q8_0 weights: the wasm kernels against the js reference with the same
 * storage, the Q4_0 fixture's golden outputs on js / wasm / webgpu with the file's blocks kept as stored, the stored
 * blocks equal to the file's (Q4_0 fixture, and a Q8_0 file written by our converter) bit for bit, and float weights
 * quantized exactly as ggml's reference quantizer (= the fixture, which llama.cpp's converter wrote).
 * Run: node --import tsx --test test/q4.test.ts   (webgpu parts: eval "$(.ci/setup-swiftshader.sh)" first)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsBackend } from '../src/backends/js/index.js';
import { createWasmBackend, type WasmBackend } from '../src/backends/wasm/index.js';
import type { HostMatrix, Mat } from '../src/backends/kernels.js';
import { BLOCK_BYTES, blocksPerRow, storageDType, type BlockDType } from '../src/backends/quant.js';
import { f16ToNumber } from '../src/formats/dtype.js';
import { openCheckpoint } from '../src/formats/index.js';
import type { GgufTensorRef } from '../src/formats/gguf-rwkv7.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { loadWeights } from '../src/model/weights.js';
import { loadModel, defaultWeightDType } from '../src/runtime/load.js';
import { verifyGolden } from '../src/runtime/verify.js';
import { checkBlockMatmuls } from './helpers/block-matmul.js';
import { convertToGguf } from '../src/cli/convert.js';

const shared = fileURLToPath(new URL('../../shared/', import.meta.url));
const Q4_GGUF = shared + 'fixtures/gguf/storyteller-L6-D192-q4_0.gguf';
const Q4_GOLDEN = shared + 'fixtures/gguf/storyteller-L6-D192-q4_0.golden.safetensors';
const PTH = shared + 'models/rwkv7-storyteller-L6-D192.pth';

let seed = 11;
const rand = () => { seed = (seed * 1664525 + 1013904223) >>> 0; return seed / 4294967296; };
const randn = (n: number, lo = -1, hi = 1) => Float32Array.from({ length: n }, () => lo + (hi - lo) * rand());

// ---- kernels: wasm vs js, same blocks ----

// Measured: mat-vec (T ≤ 2, x split into two int16 parts per block) ≤ 1e-6; mat-mat (exact f32 widening, then the f32
// kernel) ≤ 7.3e-6 with the outliers (as the f32 mat-mat kernel itself).
for (const dtype of ['q4', 'q8_0'] as const) {
  for (const threads of [1, 2]) {
    test(`wasm ${dtype} matmul matches js with the same blocks (${threads} thread(s))`, async () => {
      const wb = await createWasmBackend({ dtype, threads });
      try {
        // cols: whole groups of 4 blocks, padded ones (32, 96, 200, 130), outliers in x (RWKV's large channels)
        await checkBlockMatmuls(wb, new JsBackend(dtype), [
          [37, 128, 1, 'none', false], [5, 32, 2, 'tanh', false], [130, 200, 2, 'sigmoid', false], [256, 96, 1, 'relu2', false],
          [300, 768, 7, 'none', true], [257, 130, 64, 'tanh', false], [64, 256, 33, 'sigmoid', false], [513, 1024, 1, 'none', true],
        ], randn);
      } finally {
        await wb.dispose();
      }
    });
  }
}

// ---- the Q4_0 fixture's golden outputs, weights kept in 4 bits ----

test('Q4_0 GGUF: the default dtype is q4 (js: f32), and q4 on js is the exact dequantization (≤ 1e-5)', async () => {
  const ck = openCheckpoint(Q4_GGUF);
  try {
    assert.equal(defaultWeightDType(ck, 'wasm'), 'q4');
    assert.equal(defaultWeightDType(ck, 'js'), 'f32');
  } finally {
    ck.close();
  }
  const { model } = await loadModel(Q4_GGUF, { backend: 'js', dtype: 'q4' });
  const r = await verifyGolden(model, Q4_GOLDEN, ['rnn', 'seq']);
  assert.ok(r.max_deviation <= 1e-5, `js q4: max deviation ${r.max_deviation}`);
});

// Measured: 2.4e-6 (seq), 2.0e-6 (rnn).
for (const threads of [1, 2]) {
  test(`Q4_0 GGUF golden on wasm q4 ≤ 5e-5 (${threads} thread(s))`, async () => {
    const { model } = await loadModel(Q4_GGUF, { backend: 'wasm', dtype: 'q4', threads });
    try {
      const r = await verifyGolden(model, Q4_GOLDEN, ['rnn', 'seq']);
      assert.ok(r.max_deviation <= 5e-5, `max deviation ${r.max_deviation}`);
      assert.ok(r.max_state_rel_error! <= 5e-5, `state error ${r.max_state_rel_error}`);
    } finally {
      await model.backend.dispose();
    }
  });
}

let gpuSkip: string | false = false;
try {
  const { createWebGpuBackend } = await import('../src/backends/webgpu/index.js');
  await (await createWebGpuBackend({ dtype: 'q4' })).dispose();
} catch (e) {
  gpuSkip = `no WebGPU adapter (${(e as Error).message}); run: eval "$(.ci/setup-swiftshader.sh)"`;
}

// Measured on SwiftShader: 5.0e-6.
test('Q4_0 GGUF golden on webgpu q4 ≤ 5e-5', { skip: gpuSkip }, async () => {
  const { model } = await loadModel(Q4_GGUF, { backend: 'webgpu', dtype: 'q4' });
  try {
    const r = await verifyGolden(model, Q4_GOLDEN, ['rnn', 'seq']);
    assert.ok(r.max_deviation <= 5e-5, `max deviation ${r.max_deviation}`);
  } finally {
    await model.backend.dispose();
  }
});

// ---- stored blocks = the file's blocks ----

/** The ggml blocks a wasm q4/q8_0 matrix holds, rebuilt from its codes and (shifted) scales. */
function storedBlocks(wb: WasmBackend, W: Mat, dtype: BlockDType): Uint8Array {
  const m = W as unknown as { rows: number; cols: number; K: number; ptr: number; sc: number; f16Shift: number };
  const mem = new Uint8Array((wb as unknown as { memory: WebAssembly.Memory }).memory.buffer);
  const nb = blocksPerRow(m.cols), BB = BLOCK_BYTES[dtype], cb = BB - 2, rowBytes = dtype === 'q4' ? m.K / 2 : m.K;
  const out = new Uint8Array(m.rows * nb * BB);
  const sc = new Uint16Array(mem.buffer, m.sc, m.rows * (m.K / 32));
  for (let r = 0; r < m.rows; r++) {
    for (let b = 0; b < nb; b++) {
      const o = (r * nb + b) * BB;
      const h = sc[r * (m.K / 32) + b]!;
      // undo the exact ×2^shift: the f16 with value h / 2^shift
      const d = m.f16Shift ? f16Bits(f16ToNumber(h) / 2 ** m.f16Shift) : h;
      out[o] = d & 0xff; out[o + 1] = d >> 8;
      out.set(mem.subarray(m.ptr + r * rowBytes + b * cb, m.ptr + r * rowBytes + (b + 1) * cb), o + 2);
    }
  }
  return out;
}

/** f16 bits of a value known to be an exact f16 (search over the 2^16 patterns' order; fine for tests). */
function f16Bits(v: number): number {
  if (v === 0) return Object.is(v, -0) ? 0x8000 : 0;
  const sign = v < 0 ? 0x8000 : 0;
  let lo = 0, hi = 0x7c00;
  const a = Math.abs(v);
  while (lo < hi) { const mid = (lo + hi) >> 1; if (f16ToNumber(mid) < a) lo = mid + 1; else hi = mid; }
  assert.equal(f16ToNumber(lo), a, `${v} is not an f16`);
  return sign | lo;
}

/** Loads `file` on wasm with `dtype` and checks every q4/q8_0 matrix holds `expected(name)` bit for bit. */
async function checkStored(file: string, dtype: BlockDType, expected: (name: string) => Uint8Array | undefined): Promise<number> {
  const ck = openCheckpoint(file);
  const wb = await createWasmBackend({ dtype, threads: 1 });
  try {
    const config = configFromCheckpoint(ck);
    const mats: Array<[string, Mat]> = [];
    const spy = new Proxy(wb, {
      get(t, k) {
        if (k === 'matrix') return (m: HostMatrix) => { const W = t.matrix(m); mats.push([m.name, W]); return W; };
        const v = Reflect.get(t, k, t);
        return typeof v === 'function' ? v.bind(t) : v;
      },
    });
    loadWeights(ck, config, spy);
    let n = 0;
    for (const [name, W] of mats) {
      const want = expected(name);
      if (!want) continue;
      const got = storedBlocks(wb, W, dtype);
      assert.equal(got.length, want.length, name);
      const i = got.findIndex((v, j) => v !== want[j]);
      assert.equal(i, -1, `${name}: byte ${i} of the stored blocks differs from the file's`);
      n++;
    }
    return n;
  } finally {
    ck.close();
    await wb.dispose();
  }
}

/** The raw blocks of each canonical matrix of a GGUF (when in upload orientation), by canonical name. */
function fileBlocks(file: string, type: 'Q4_0' | 'Q8_0'): Map<string, Uint8Array> {
  const ck = openCheckpoint(file);
  const out = new Map<string, Uint8Array>();
  for (const [name, t] of ck.tensors) {
    const g = (t as GgufTensorRef).ggml;
    if (g && g.type.name === type && t.shape.length === 2 && name !== 'emb.weight') out.set(name, g.readRaw());
  }
  ck.close();
  return out;
}

test('Q4_0 GGUF on wasm q4: every Q4_0 matrix is stored as the file\'s blocks, bit for bit (LoRA a/v/g included)', async () => {
  const blocks = fileBlocks(Q4_GGUF, 'Q4_0');
  const n = await checkStored(Q4_GGUF, 'q4', (name) => blocks.get(name));
  assert.equal(n, 36 + 34 + 1); // 4 attention + 2 ffn matrices × 6 layers, the a/g (6 × 4) and v (5 × 2) LoRA factors, the head
});

test('float weights are quantized as ggml\'s reference quantizer: the .pth on wasm q4 stores the Q4_0 fixture\'s blocks', async () => {
  const blocks = fileBlocks(Q4_GGUF, 'Q4_0');
  // the fixture's Linear weights and head (its LoRA are Q4_0 too, but q4 keeps a .pth's bf16 LoRA 16-bit)
  const n = await checkStored(PTH, 'q4', (name) => (storageDType('q4', name) === 'q4' ? blocks.get(name) : undefined));
  assert.equal(n, 36 + 1);
});

test('Q8_0 GGUF (written by rwkv7 convert --dtype q8_0) loads natively: default dtype q8_0, blocks bit for bit, golden of its own values', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-q8-'));
  try {
    const file = join(dir, 'st-q8_0.gguf');
    convertToGguf(PTH, file, { dtype: 'q8_0' });
    const ck = openCheckpoint(file);
    try {
      assert.equal(defaultWeightDType(ck, 'wasm'), 'q8_0');
    } finally {
      ck.close();
    }
    const blocks = fileBlocks(file, 'Q8_0');
    assert.ok(blocks.size >= 37);
    const n = await checkStored(file, 'q8_0', (name) => blocks.get(name));
    assert.equal(n, blocks.size);
    // wasm q8_0 computes with exactly the file's values: against the js backend holding them dequantized (f32)
    const { model } = await loadModel(file, { backend: 'wasm', threads: 2 });
    const { model: ref } = await loadModel(file, { backend: 'js' });
    try {
      assert.equal(model.backend.weightDType, 'q8_0');
      const r = await verifyGolden(model, Q4_GOLDEN, ['rnn', 'seq'], ref);
      assert.ok(r.max_deviation <= 5e-5, `wasm q8_0 vs js f32 of the same file: ${r.max_deviation}`);
    } finally {
      await model.backend.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Q4_0 blocks asked for as q8_0 are widened exactly (same values, no re-rounding)', async () => {
  const { model } = await loadModel(Q4_GGUF, { backend: 'wasm', dtype: 'q8_0', threads: 1 });
  try {
    const r = await verifyGolden(model, Q4_GOLDEN, ['seq']);
    assert.ok(r.max_deviation <= 5e-5, `max deviation ${r.max_deviation}`);
  } finally {
    await model.backend.dispose();
  }
});

