/**
 * Weights read straight into backend memory (ByteSource.readInto → TensorRef.readInto → HostMatrix.fill, used by the
 * wasm layouts) store exactly what reading each tensor into a fresh buffer stored: layout16 (in place and staged,
 * several chunks, bf16 and f16), the int8 quantizer, whole models (the same logits, bit for bit), and the same error
 * for a non-finite weight. Run: node --import tsx --test test/load-into.test.ts
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import type { HostMatrix } from '../src/backends/kernels.js';
import { bytesSource, type ByteSource } from '../src/formats/source.js';
import { layout16, paddedCols, paddedRows } from '../src/backends/wasm/layout.js';
import { loadModel } from '../src/runtime/load.js';
import { fileSource, DEFAULT_MODEL_PATH } from '../src/platform/node.js';
import { writePth, tensor } from './helpers/pth-writer.js';
import { openCheckpoint } from '../src/formats/index.js';

/** The same source without readInto: every tensor is read into a fresh buffer, as before. */
function withoutReadInto(src: ByteSource): ByteSource {
  return { name: src.name, size: src.size, read: (o, n) => src.read(o, n), close: () => src.close() };
}

function randomBits(n: number, seed: number, f16: boolean): Uint16Array {
  const out = new Uint16Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    // finite patterns of all magnitudes (f16: below 64 mostly, so the ×2^10 shift is taken)
    out[i] = f16 ? (s >>> 16) & 0xd3ff : (s >>> 16) & 0xbf7f;
  }
  return out;
}

test('layout16 from fill = layout16 from data (bf16/f16, unpadded and padded rows, several chunks)', () => {
  for (const dtype of ['BF16', 'F16'] as const) {
    for (const [rows, cols] of [[37, 64], [5, 40], [300, 768], [1000, 24], [3, 8]] as const) {
      const data = randomBits(rows * cols, rows * 31 + cols, dtype === 'F16');
      const K = paddedCols(cols, 'bf16'), R = paddedRows(rows);
      const target = dtype === 'BF16' ? 'bf16' : 'f16';
      const plain: HostMatrix = { name: 'm', rows, cols, dtype, data };
      const a = new Uint16Array(R * K);
      const sa = layout16(plain, a, K, target);
      let calls = 0;
      const filled: HostMatrix = {
        name: 'm', rows, cols, dtype,
        get data(): Uint16Array { throw new Error('data read'); },
        fill(dst, row, n) { calls++; dst.set(data.subarray(row * cols, (row + n) * cols)); },
      };
      const b = new Uint16Array(R * K);
      const sb = layout16(filled, b, K, target);
      assert.equal(sb, sa, `${dtype} [${rows}, ${cols}] shift`);
      assert.deepEqual(b, a, `${dtype} [${rows}, ${cols}]`);
      assert.ok(calls >= (rows * K * 2 > 256 * 1024 ? 2 : 1));
    }
  }
});

test('a model read into place gives the logits of one read tensor by tensor (wasm bf16, int8, f16)', async () => {
  for (const dtype of ['bf16', 'int8', 'f16'] as const) {
    const logits: Float32Array[] = [];
    for (const src of [fileSource(DEFAULT_MODEL_PATH), withoutReadInto(fileSource(DEFAULT_MODEL_PATH))]) {
      const { model } = await loadModel(src, { backend: 'wasm', dtype, threads: 2 });
      try {
        const st = model.newState();
        await model.forward([510, 1195, 11, 33], st);
        logits.push((await model.forward([45], st)).slice());
      } finally {
        await model.backend.dispose();
      }
    }
    assert.deepEqual(logits[0], logits[1], dtype);
  }
});

test('a non-finite weight read into place is refused with the whole-tensor message', async () => {
  const dir = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'rwkv7-into-'));
  try {
    // the bundled model with one NaN and one Inf in a big matrix (not in its first chunk)
    const ck = openCheckpoint(DEFAULT_MODEL_PATH);
    const victim = 'blocks.1.ffn.key.weight';
    const file = nodePath.join(dir, 'nan.pth');
    writePth(file, [...ck.tensors.values()].map((t) => tensor(t.name, t.dtype, [...t.shape], () => {
      const b = t.read().slice();
      if (t.name === victim) {
        const u = new Uint16Array(b.buffer);
        u[u.length - 5] = 0x7fc0; // NaN
        u[u.length - 3] = 0xff80; // -Inf
      }
      return b;
    })));
    ck.close();
    const messages: string[] = [];
    for (const src of [fileSource(file), withoutReadInto(fileSource(file))]) {
      await assert.rejects(loadModel(src, { backend: 'wasm', dtype: 'bf16', threads: 1 }), (e: Error) => { messages.push(e.message); return true; });
    }
    assert.match(messages[0]!, new RegExp(`tensor ${victim} holds 2 non-finite values \\(the first, NaN`));
    assert.equal(messages[0], messages[1]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('bytesSource.readInto copies the bytes asked for', () => {
  const src = bytesSource(Uint8Array.from({ length: 100 }, (_, i) => i));
  const dst = new Uint8Array(10);
  src.readInto!(42, dst);
  assert.deepEqual([...dst], [42, 43, 44, 45, 46, 47, 48, 49, 50, 51]);
  src.close();
  assert.throws(() => src.readInto!(0, dst), /closed/);
});
