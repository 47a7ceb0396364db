/**
 * The wasm-against-js check of the block (q4/q8_0) matmul kernels, shared by test/q4.test.ts and
 * test/q4-activations.test.ts: each case on random bf16 weights and x with outlier channels (every 97th value ×60,
 * RWKV's large channels), both backends given the same data, the results within 2e-6 (mat-vec, T ≤ 2) or 1.5e-5
 * (mat-mat) of js relative to its largest value.
 */
import assert from 'node:assert/strict';
import type { Activation, Backend, Buf, HostMatrix } from '../../src/backends/kernels.js';
import { numberToBf16 } from '../../src/formats/dtype.js';

export type BlockMatmulCase = [rows: number, cols: number, T: number, act: Activation, accumulate: boolean];

function buf(b: Backend, data: Float32Array): Buf {
  const x = b.buffer(data.length);
  b.write(x, data);
  return x;
}

function maxRel(a: Float32Array, b: Float32Array): number {
  let m = 0, s = 0;
  for (let i = 0; i < a.length; i++) { m = Math.max(m, Math.abs(a[i]! - b[i]!)); s = Math.max(s, Math.abs(b[i]!)); }
  return m / Math.max(s, 1e-30);
}

/** Runs every case on `wasm` and `js` (random values from `randn`, in the same order for each case) and compares. */
export async function checkBlockMatmuls(wasm: Backend, js: Backend, cases: readonly BlockMatmulCase[], randn: (n: number) => Float32Array): Promise<void> {
  for (const [rows, cols, T, act, acc] of cases) {
    const m: HostMatrix = { name: 'blocks.0.att.key.weight', rows, cols, dtype: 'BF16', data: Uint16Array.from(randn(rows * cols), numberToBf16) };
    const x = randn(T * cols);
    for (let i = 0; i < x.length; i += 97) x[i]! *= 60;
    const bias = randn(rows), init = randn(T * rows);
    const run = async (b: Backend) => {
      const W = b.matrix(m);
      const o = buf(b, init);
      b.matmul(o, buf(b, x), W, T, acc ? { accumulate: true } : { bias: buf(b, bias), act });
      return b.read(o);
    };
    const e = maxRel(await run(wasm), await run(js));
    assert.ok(e <= (T <= 2 ? 2e-6 : 1.5e-5), `${rows}x${cols} T=${T} ${act}${acc ? ' acc' : ''}: rel error ${e}`);
  }
}
