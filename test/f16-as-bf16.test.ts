/**
 * f16 weights that bf16 holds exactly (an f16 copy of bf16 weights, as F16 GGUFs of the official models are) are
 * re-encoded as bf16 by the wasm backend at load (wasm/load.ts f16_as_bf16), and multiply with the bf16 kernels:
 * the products are bit for bit those of the same values given as bf16. Any other f16 matrix stays f16.
 * Run: node --import tsx --test test/f16-as-bf16.test.ts
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createBackend } from '../src/backends/index.js';
import type { Backend, HostMatrix, Mat } from '../src/backends/kernels.js';
import { bf16ToNumber, numberToBf16, numberToF16 } from '../src/formats/dtype.js';

const ROWS = 70, COLS = 200;

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (s * 1103515245 + 12345) >>> 0; return s / 2 ** 32 - 0.5; };
}

/** bf16 values (mostly |w| < 0.2, with zeros and signs), and the same values as f16 patterns. */
function bf16Values(seed: number): { bf: Uint16Array; f16: Uint16Array } {
  const r = rng(seed);
  const bf = Uint16Array.from({ length: ROWS * COLS }, (_, i) => (i % 53 === 0 ? (i % 2 ? 0x8000 : 0) : numberToBf16(r() * 0.4)));
  return { bf, f16: Uint16Array.from(bf, (h) => numberToF16(bf16ToNumber(h))) };
}

const matrix = (dtype: 'BF16' | 'F16', data: Uint16Array): HostMatrix => ({ name: 'blocks.0.att.key.weight', rows: ROWS, cols: COLS, dtype, data });
const storage = (m: Mat) => (m as unknown as { dt: number }).dt; // the wasm backend's storage code: 1 bf16, 2 f16

async function products(b: Backend, W: Mat, x: Float32Array): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const T of [1, 2, 3]) {
    const xb = b.buffer(T * COLS), o = b.buffer(T * ROWS);
    b.write(xb, x.subarray(0, T * COLS));
    b.matmul(o, xb, W, T);
    out.push(await b.read(o));
  }
  return out;
}

test('wasm: an f16 matrix of bf16-exact values is stored as bf16, its products bit for bit those of the bf16 matrix', async () => {
  const r = rng(9);
  const x = Float32Array.from({ length: 3 * COLS }, () => r() * 8);
  const { bf, f16 } = bf16Values(1);
  const wf = await createBackend('wasm', { dtype: 'f16', threads: 1 });
  const wb = await createBackend('wasm', { dtype: 'bf16', threads: 1 });
  try {
    const Wf = wf.matrix(matrix('F16', f16)), Wb = wb.matrix(matrix('BF16', bf));
    assert.equal(storage(Wf), 1, 'stored as bf16');
    // a bf16 source asked for as f16: the same values (all in f16's range), so the same storage
    assert.equal(storage(wf.matrix(matrix('BF16', bf))), 1);
    const a = await products(wf, Wf, x), b = await products(wb, Wb, x);
    for (let i = 0; i < a.length; i++) assert.deepEqual(a[i], b[i], `T=${i + 1}`);
  } finally {
    await wf.dispose(); await wb.dispose();
  }
});

test('wasm: f16 matrices that bf16 cannot hold exactly stay f16 (one low mantissa bit, a subnormal, an infinity)', async () => {
  const wf = await createBackend('wasm', { dtype: 'f16', threads: 1 });
  try {
    const cases: [string, (d: Uint16Array) => void][] = [
      ['one value with a low mantissa bit', (d) => { d[777] = d[777]! | 1; }],
      // a value ≥ 64 keeps the ×2^10 rescale off (layout16), so a subnormal stays subnormal
      ['a subnormal beside a large value', (d) => { d[5] = numberToF16(100); d[6] = 0x0081; }],
      ['an infinity', (d) => { d[3] = 0x7c00; }],
    ];
    for (const [what, edit] of cases) {
      const { f16 } = bf16Values(2);
      edit(f16);
      assert.equal(storage(wf.matrix({ ...matrix('F16', f16), name: 'blocks.0.att.value.weight' })), 2, what);
    }
    // random f16 values: almost none are bf16-exact
    const r = rng(5);
    assert.equal(storage(wf.matrix(matrix('F16', Uint16Array.from({ length: ROWS * COLS }, () => numberToF16(r()))))), 2);
  } finally {
    await wf.dispose();
  }
});
