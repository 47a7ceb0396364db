/**
 * The fast load path stores exactly what the code it replaced stored: the wasm weight layouts (layout16's 32-bit
 * interleave, layoutF32, layoutInt8 through the wasm kernel wasm/load.ts and through quantizeRowInt8) and the
 * word-at-a-time non-finite scan, each against a verbatim copy of the old per-element code, bit for bit, on edge
 * cases (ties, zeros, -0, subnormals, huge values, tiny scales, Inf/NaN rows, odd widths, misaligned data).
 * No timing here (bench/load.ts measures). Run: node --import tsx --test test/load-speed.test.ts
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { HostMatrix } from '../src/backends/kernels.js';
import { bf16ToNumber, f16ToNumber, numberToBf16, numberToF16 } from '../src/formats/dtype.js';
import { findNonFinite16 } from '../src/formats/finite.js';
import { BLOCK_BYTES, INT8_GROUP, QBLOCK, blocksPerRow, matrixBlocks, quantizeRowInt8, type BlockDType } from '../src/backends/quant.js';
import { quantizeQ4_0, quantizeQ8_0 } from '../src/formats/gguf-quant.js';
import { toFloat32 } from '../src/formats/dtype.js';
import { F16_SHIFT, blockCodeBytes, layout16, layoutBlocks, layoutF32, layoutInt8, layoutQ4x4, paddedCols, paddedRows } from '../src/backends/wasm/layout.js';
import { createWasmBackend } from '../src/backends/wasm/index.js';

// ---- the old code, verbatim (but for names) ----

function hostMatrixReader(m: HostMatrix): (i: number) => number {
  if (m.dtype === 'F32') { const d = m.data; return (i) => d[i]!; }
  const d = m.data;
  return m.dtype === 'BF16' ? (i) => bf16ToNumber(d[i]!) : (i) => f16ToNumber(d[i]!);
}

function oldLayoutF32(m: HostMatrix, dst: Float32Array, K: number): void {
  const get = hostMatrixReader(m);
  for (let r = 0; r < m.rows; r++) for (let c = 0; c < m.cols; c++) dst[r * K + c] = get(r * m.cols + c);
}

function oldLayout16(m: HostMatrix, dst: Uint16Array, K: number, target: 'bf16' | 'f16'): number {
  const { rows, cols } = m;
  const same = (target === 'bf16' && m.dtype === 'BF16') || (target === 'f16' && m.dtype === 'F16');
  const src16 = m.data as Uint16Array;
  const get = hostMatrixReader(m);
  const enc = target === 'bf16' ? numberToBf16 : numberToF16;
  let big = false;
  for (let r = 0; r < rows; r++) {
    const sb = r * cols, db = r * K;
    for (let c = 0; c < cols; c++) {
      const k = c & 7;
      const slot = k < 4 ? 2 * k : 2 * (k - 4) + 1;
      const h = same ? src16[sb + c]! : enc(get(sb + c));
      dst[db + (c & ~7) + slot] = h;
      if ((h & 0x7fff) >= 0x5400) big = true;
    }
  }
  if (target === 'bf16' || big) return 0;
  for (let i = 0; i < rows * K; i++) if (dst[i]) dst[i] = numberToF16(f16ToNumber(dst[i]!) * 2 ** F16_SHIFT);
  return F16_SHIFT;
}

function oldLayoutInt8(m: HostMatrix, dst: Int8Array, scales: Float32Array, K: number): void {
  const { rows, cols } = m;
  const get = hostMatrixReader(m);
  const row = new Float64Array(K);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) row[c] = get(r * cols + c);
    quantizeRowInt8(row, dst, r * K, scales, r * (K / INT8_GROUP));
  }
}

function oldMatrixBlocks(m: HostMatrix, dtype: BlockDType): Uint8Array {
  const nb = blocksPerRow(m.cols), BB = BLOCK_BYTES[dtype];
  const get = hostMatrixReader(m);
  const quant = dtype === 'q4' ? quantizeQ4_0 : quantizeQ8_0;
  const row = new Float32Array(nb * QBLOCK);
  const out = new Uint8Array(m.rows * nb * BB);
  for (let r = 0; r < m.rows; r++) {
    for (let c = 0; c < m.cols; c++) row[c] = get(r * m.cols + c);
    out.set(quant(row), r * nb * BB);
  }
  return out;
}

function oldLayoutBlocks(m: HostMatrix, dtype: BlockDType, codes: Uint8Array, scales: Uint16Array, K: number): number {
  const blocks = oldMatrixBlocks(m, dtype);
  const nb = blocksPerRow(m.cols), BB = BLOCK_BYTES[dtype], cb = BB - 2;
  const rowBytes = dtype === 'q4' ? K / 2 : K;
  let big = false;
  for (let r = 0; r < m.rows; r++) {
    for (let b = 0; b < nb; b++) {
      const o = (r * nb + b) * BB;
      const h = blocks[o]! | (blocks[o + 1]! << 8);
      if ((h & 0x7fff) >= 0x5400) big = true;
      scales[r * (K / QBLOCK) + b] = h;
      codes.set(blocks.subarray(o + 2, o + 2 + cb), r * rowBytes + b * cb);
    }
  }
  if (big) return 0;
  for (let i = 0; i < scales.length; i++) if (scales[i]! & 0x7fff) scales[i] = numberToF16(f16ToNumber(scales[i]!) * 2 ** F16_SHIFT);
  return F16_SHIFT;
}

function oldFindNonFinite16(bits: Uint16Array, dtype: 'BF16' | 'F16') {
  const exp = dtype === 'BF16' ? 0x7f80 : 0x7c00;
  const n = bits.length;
  let i = 0;
  while (i < n && (bits[i]! & exp) !== exp) i++;
  if (i === n) return undefined;
  const h = bits[i]!;
  const value = (h & (dtype === 'BF16' ? 0x7f : 0x3ff)) !== 0 ? NaN : h & 0x8000 ? -Infinity : Infinity;
  let c = 0;
  for (let k = i; k < n; k++) if ((bits[k]! & exp) === exp) c++;
  return { count: c, first: i, value };
}

// ---- data ----

let seed = 12345;
const rnd = () => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed; };

/** 16-bit patterns of `dtype` with exponents in [lo, hi] (biased), random sign and mantissa. */
function patterns(n: number, dtype: 'BF16' | 'F16', lo: number, hi: number): Uint16Array {
  const u = new Uint16Array(n);
  const [mb, eb] = dtype === 'BF16' ? [7, 8] : [10, 5];
  for (let i = 0; i < n; i++) {
    const r = rnd();
    const e = lo + ((r >>> 8) % (hi - lo + 1));
    u[i] = ((r >>> 31) << 15) | (e << mb) | (rnd() & ((1 << mb) - 1));
    void eb;
  }
  return u;
}

function mat16(name: string, rows: number, cols: number, dtype: 'BF16' | 'F16', data: Uint16Array): HostMatrix {
  return { name, rows, cols, dtype, data };
}

/** The same data at a byte offset of 2 (not 4-aligned). */
function misaligned(u: Uint16Array): Uint16Array {
  const b = new Uint16Array(u.length + 1);
  b.set(u, 1);
  return b.subarray(1);
}

const same = (a: ArrayLike<number>, b: ArrayLike<number>, what: string) => {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) assert.fail(`${what}: element ${i}: ${a[i]} vs ${b[i]}`);
};

// ---- layout16 / layoutF32 ----

function check16(m: HostMatrix, target: 'bf16' | 'f16', what: string): void {
  const K = paddedCols(m.cols, target), R = paddedRows(m.rows);
  const a = new Uint16Array(R * K), b = new Uint16Array(R * K);
  const sa = oldLayout16(m, a, K, target), sb = layout16(m, b, K, target);
  assert.equal(sb, sa, `${what}: shift`);
  same(b, a, what);
}

test('layout16: bf16 and f16 repacks, conversions, shifts = the old per-element code', () => {
  for (const [rows, cols] of [[5, 64], [7, 96], [3, 13], [9, 8], [4, 200], [6, 777]] as const) {
    const bf = patterns(rows * cols, 'BF16', 0x60, 0x85);
    check16(mat16('m', rows, cols, 'BF16', bf), 'bf16', `bf16 ${rows}x${cols}`);
    check16(mat16('m', rows, cols, 'BF16', misaligned(bf)), 'bf16', `bf16 misaligned ${rows}x${cols}`);
    check16(mat16('m', rows, cols, 'BF16', bf), 'f16', `bf16->f16 ${rows}x${cols}`);
    // f16 with every nonzero |w| < 64 (shifted), with subnormals, zeros and -0
    const small = patterns(rows * cols, 'F16', 0, 0x14);
    small[0] = 0x8000; small[1 % small.length] = 0; small[2 % small.length] = 0x0001; small[3 % small.length] = 0x83ff;
    check16(mat16('m', rows, cols, 'F16', small), 'f16', `f16 small ${rows}x${cols}`);
    check16(mat16('m', rows, cols, 'F16', misaligned(small)), 'f16', `f16 small misaligned ${rows}x${cols}`);
    check16(mat16('m', rows, cols, 'F16', small), 'bf16', `f16->bf16 ${rows}x${cols}`);
    // one value ≥ 64: not shifted
    const big = small.slice();
    big[big.length - 1] = 0x5400;
    check16(mat16('m', rows, cols, 'F16', big), 'f16', `f16 big ${rows}x${cols}`);
    // non-finite values (NaN payloads, ±Inf) through the conversions
    const odd = bf.slice(), oddF = small.slice();
    odd[0] = 0x7f81; odd[1 % odd.length] = 0xff80; odd[2 % odd.length] = 0x7fc0;
    oddF[0] = 0x7c01; oddF[1 % oddF.length] = 0xfc00; oddF[2 % oddF.length] = 0x7e00;
    check16(mat16('m', rows, cols, 'BF16', odd), 'f16', `bf16->f16 non-finite ${rows}x${cols}`);
    check16(mat16('m', rows, cols, 'BF16', odd), 'bf16', `bf16 non-finite ${rows}x${cols}`);
    check16(mat16('m', rows, cols, 'F16', oddF), 'bf16', `f16->bf16 non-finite ${rows}x${cols}`);
    check16(mat16('m', rows, cols, 'F16', oddF), 'f16', `f16 non-finite ${rows}x${cols}`);
    const f32 = Float32Array.from({ length: rows * cols }, () => (rnd() / 2 ** 32 - 0.5) * 2 ** ((rnd() % 40) - 30));
    for (const t of ['bf16', 'f16'] as const) check16({ name: 'm', rows, cols, dtype: 'F32', data: f32 }, t, `f32->${t} ${rows}x${cols}`);
  }
});

test('layout16 in the wasm backend (read into place, or copied from data) = the old layout and shift; a non-finite value read into place reads `data`', async () => {
  // cols = K: the rows are read straight into wasm memory and permuted and checked there (wasm/load.ts pair16);
  // 700 x 768 spans several read chunks, and the odd values sit in a late one
  for (const target of ['bf16', 'f16'] as const) {
    const dtype = target === 'bf16' ? 'BF16' : 'F16';
    const be = await createWasmBackend({ dtype: target, threads: 1 });
    try {
      for (const [rows, cols] of [[5, 64], [700, 768], [9, 3072]] as const) {
        const base = target === 'bf16' ? patterns(rows * cols, 'BF16', 0x60, 0x85) : patterns(rows * cols, 'F16', 0, 0x14);
        const cases: Array<[string, Uint16Array, boolean]> = [['plain', base, false]];
        if (target === 'f16') { const big = base.slice(); big[big.length - 7] = 0x5400; cases.push(['one value >= 64', big, false]); }
        const odd = base.slice();
        odd[odd.length - 3] = target === 'bf16' ? 0x7fc0 : 0x7e00; // NaN (a checkpoint loaded with allowNonFinite)
        odd[odd.length - 2] = target === 'bf16' ? 0xff80 : 0xfc00; // -Inf
        cases.push(['non-finite', odd, true]);
        for (const [what, data, nonFinite] of cases) {
          // without `fill` (data in host memory, checked when it was read): copied into place, permuted and
          // rescaled in wasm
          const K0 = paddedCols(cols, target), R0 = paddedRows(rows), want0 = new Uint16Array(R0 * K0);
          const shift0 = oldLayout16(mat16('m', rows, cols, dtype, data), want0, K0, target);
          const W0 = be.matrix(mat16('m', rows, cols, dtype, data)) as unknown as { ptr: number; f16Shift: number };
          assert.equal(W0.f16Shift, shift0, `${target} ${rows}x${cols} ${what} (data): shift`);
          same(new Uint16Array((be as unknown as { memory: WebAssembly.Memory }).memory.buffer, W0.ptr, R0 * K0), want0, `${target} ${rows}x${cols} ${what} (data)`);
          let dataReads = 0, checkedFills = 0;
          const m: HostMatrix = {
            name: 'm', rows, cols, dtype,
            get data() { dataReads++; return data; },
            fill(dst, row, n, unchecked) { dst.set(data.subarray(row * cols, (row + n) * cols)); if (!unchecked) checkedFills++; },
          };
          const K = paddedCols(cols, target), R = paddedRows(rows);
          const want = new Uint16Array(R * K);
          const shift = oldLayout16(mat16('m', rows, cols, dtype, data), want, K, target);
          const W = be.matrix(m) as unknown as { ptr: number; f16Shift: number };
          const mem = (be as unknown as { memory: WebAssembly.Memory }).memory.buffer;
          const label = `${target} ${rows}x${cols} ${what}`;
          assert.equal(W.f16Shift, shift, `${label}: shift`);
          same(new Uint16Array(mem, W.ptr, R * K), want, label);
          assert.equal(checkedFills, 0, `${label}: the kernel checks the values`);
          assert.equal(dataReads > 0, nonFinite, `${label}: data read (the whole-tensor check) exactly when a value is not finite`);
        }
      }
    } finally {
      await be.dispose();
    }
  }
});

test('layoutF32 = the old per-element code (f32, bf16, f16 sources)', () => {
  for (const [rows, cols] of [[5, 64], [3, 13], [4, 200]] as const) {
    const K = paddedCols(cols, 'f32'), R = paddedRows(rows);
    const ms: HostMatrix[] = [
      { name: 'm', rows, cols, dtype: 'F32', data: Float32Array.from({ length: rows * cols }, () => rnd() / 2 ** 32 - 0.5) },
      mat16('m', rows, cols, 'BF16', patterns(rows * cols, 'BF16', 0, 0xff)),
      mat16('m', rows, cols, 'F16', patterns(rows * cols, 'F16', 0, 0x1f)),
    ];
    for (const m of ms) {
      const a = new Float32Array(R * K), b = new Float32Array(R * K);
      oldLayoutF32(m, a, K);
      layoutF32(m, b, K);
      // compare bit patterns (NaN payloads included)
      same(new Uint32Array(b.buffer), new Uint32Array(a.buffer), `f32 from ${m.dtype} ${rows}x${cols}`);
    }
  }
});

test('matrixBlocks and layoutBlocks (q4, q8_0) = the old code, from float sources and from a file\'s blocks (JS, and the wasm backend\'s split_blocks)', async () => {
  const backends = { q4: await createWasmBackend({ dtype: 'q4', threads: 1 }), q8_0: await createWasmBackend({ dtype: 'q8_0', threads: 1 }) };
  try {
  for (const [rows, cols] of [[5, 64], [3, 100], [6, 256], [70, 3072]] as const) {
    const sources: HostMatrix[] = [
      mat16('m', rows, cols, 'BF16', patterns(rows * cols, 'BF16', 0x60, 0x85)),
      mat16('m', rows, cols, 'F16', patterns(rows * cols, 'F16', 0, 0x1e)), // some scales ≥ 64: not shifted
      mat16('m', rows, cols, 'F16', patterns(rows * cols, 'F16', 0, 0x12)), // tiny: subnormal scales, shifted
      { name: 'm', rows, cols, dtype: 'F32', data: Float32Array.from({ length: rows * cols }, () => (rnd() / 2 ** 32 - 0.5) * 2 ** ((rnd() % 30) - 20)) },
    ];
    for (const m of sources) {
      for (const dt of ['q4', 'q8_0'] as const) {
        same(matrixBlocks(m, dt), oldMatrixBlocks(m, dt), `matrixBlocks ${dt} from ${m.dtype} ${rows}x${cols}`);
        const withBlocks: HostMatrix = cols % QBLOCK === 0 ? { ...m, blocks: { type: dt === 'q4' ? 'Q4_0' : 'Q8_0', data: oldMatrixBlocks(m, dt) } } : m;
        for (const mm of [m, withBlocks]) {
          const K = paddedCols(cols, dt), R = paddedRows(rows), cb = blockCodeBytes(rows, cols, dt);
          const c0 = new Uint8Array(cb), s0 = new Uint16Array(R * (K / QBLOCK)), c1 = new Uint8Array(cb), s1 = new Uint16Array(R * (K / QBLOCK));
          const sh0 = oldLayoutBlocks(mm, dt, c0, s0, K), sh1 = layoutBlocks(mm, dt, c1, s1, K);
          assert.equal(sh1, sh0, `layoutBlocks ${dt} shift`);
          same(c1, c0, `layoutBlocks ${dt} codes from ${m.dtype}${mm.blocks ? ' blocks' : ''} ${rows}x${cols}`);
          same(s1, s0, `layoutBlocks ${dt} scales from ${m.dtype}${mm.blocks ? ' blocks' : ''} ${rows}x${cols}`);
          // the backend's own path: the blocks staged into wasm memory and split there (70 x 3072: several chunks)
          const w = backends[dt].matrix(mm) as unknown as { ptr: number; sc: number; f16Shift: number };
          const mem = (backends[dt] as unknown as { memory: WebAssembly.Memory }).memory.buffer;
          assert.equal(w.f16Shift, sh0, `wasm layoutBlocks ${dt} shift`);
          same(new Uint8Array(mem, w.ptr, cb), c0, `wasm layoutBlocks ${dt} codes from ${m.dtype}${mm.blocks ? ' blocks' : ''} ${rows}x${cols}`);
          same(new Uint16Array(mem, w.sc, R * (K / QBLOCK)), s0, `wasm layoutBlocks ${dt} scales from ${m.dtype}${mm.blocks ? ' blocks' : ''} ${rows}x${cols}`);
        }
      }
    }
  }
  } finally {
    await backends.q4.dispose();
    await backends.q8_0.dispose();
  }
});

test('layoutQ4x4 (q4 weights, 8-bit activations): the wasm backend\'s q4x4_blocks = the JS layout, every row count mod 4', async () => {
  const be = await createWasmBackend({ dtype: 'q4', activations: 'q8', threads: 1 });
  try {
    for (const [rows, cols] of [[4, 128], [5, 128], [6, 256], [7, 256], [70, 3072], [1023, 768]] as const) {
      for (const [what, lo, hi] of [['tiny (shifted)', 0, 0x12], ['some scales >= 64 (not shifted)', 0, 0x1e]] as const) {
        const data = patterns(rows * cols, 'F16', lo, hi);
        const m: HostMatrix = { ...mat16('m', rows, cols, 'F16', data), blocks: { type: 'Q4_0', data: oldMatrixBlocks(mat16('m', rows, cols, 'F16', data), 'q4') } };
        const K = paddedCols(cols, 'q4'), R = paddedRows(rows), cb = blockCodeBytes(rows, cols, 'q4');
        const c0 = new Uint8Array(cb), s0 = new Uint16Array(R * (K / QBLOCK));
        const sh0 = layoutQ4x4(m, c0, s0, K); // the JS loops (no loader)
        const w = be.matrix(m) as unknown as { ptr: number; sc: number; f16Shift: number };
        const mem = (be as unknown as { memory: WebAssembly.Memory }).memory.buffer;
        const label = `q4x4 ${rows}x${cols} ${what}`;
        assert.equal(w.f16Shift, sh0, `${label}: shift`);
        same(new Uint8Array(mem, w.ptr, cb), c0, `${label}: codes`);
        same(new Uint16Array(mem, w.sc, R * (K / QBLOCK)), s0, `${label}: scales`);
      }
    }
  } finally {
    await be.dispose();
  }
});

test('toFloat32: f32 bytes of a fresh buffer are used without a copy; anything else is copied as before', () => {
  const f = Float32Array.from([1, -2.5, 3e-39, NaN]);
  const fresh = () => new Uint8Array(f.buffer.slice(0));
  const a = toFloat32({ name: 't', dtype: 'F32', shape: [4], read: fresh });
  same(new Uint32Array(a.buffer, a.byteOffset, 4), new Uint32Array(f.buffer), 'fresh');
  const big = new Uint8Array(32);
  big.set(new Uint8Array(f.buffer), 4);
  const sub = toFloat32({ name: 't', dtype: 'F32', shape: [4], read: () => big.subarray(4, 20) });
  same(new Uint32Array(sub.buffer, sub.byteOffset, 4), new Uint32Array(f.buffer), 'subarray');
  assert.equal(sub.buffer.byteLength, 16, 'a part of a larger buffer is copied out');
});

// ---- int8 ----

/** bf16 rows exercising the quantizer's edge cases, group by group. */
function int8Cases(rows: number, cols: number): Uint16Array {
  const u = patterns(rows * cols, 'BF16', 0x70, 0x7f);
  const G = cols / 64;
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < G; g++) {
      const o = r * cols + g * 64;
      const kind = (r * G + g) % 9;
      const set = (j: number, x: number) => { u[o + j] = numberToBf16(x); };
      if (kind === 1) for (let j = 0; j < 64; j++) u[o + j] = j % 2 ? 0x8000 : 0; // zeros and -0: scale 0
      else if (kind === 2) { // ties: max 127·2^e gives scale 2^e exactly, so (k + 0.5)·2^e sits on a tie
        const e = 2 ** ((rnd() % 20) - 10);
        set(0, 127 * e);
        for (let j = 1; j < 64; j++) set(j, ((rnd() % 254) - 127 + 0.5) * e);
      } else if (kind === 3) for (let j = 0; j < 64; j++) u[o + j] = (rnd() & 0x8000) | (rnd() & 0x7f); // subnormal bf16: scale < 2^-126
      else if (kind === 4) for (let j = 0; j < 64; j++) u[o + j] = (rnd() & 0x8000) | (0x7e << 7) | (rnd() & 0x7f); // ~1e38
      else if (kind === 5) { set(0, 1); for (let j = 1; j < 64; j++) u[o + j] = (rnd() & 0x8000) | (rnd() & 0x7f); } // tiny next to 1
      else if (kind === 6) { // values near the ties of a non-power-of-two scale
        const mx = 1 + (rnd() % 127) / 128;
        set(0, -mx);
        for (let j = 1; j < 64; j++) set(j, ((rnd() % 254) - 127 + 0.5) * (mx / 127) * (1 + ((rnd() % 3) - 1) * 2 ** -8));
      }
    }
  }
  return u;
}

async function checkInt8(rowsList: ReadonlyArray<readonly [number, number]>, poison: boolean): Promise<void> {
  const be = await createWasmBackend({ dtype: 'int8', threads: 1 });
  try {
    for (const [rows, cols] of rowsList) {
      const data = int8Cases(rows, cols);
      if (poison) { // a row with +Inf, one with NaN, one with -Inf (loaded only with allowNonFinite)
        data[1 * cols + 5] = 0x7f80; data[Math.min(rows - 1, 3) * cols + 70 % cols] = 0x7fc1; data[(rows - 1) * cols] = 0xff80;
      }
      const m = mat16(`blocks.0.ffn.key.weight`, rows, cols, 'BF16', data);
      const K = paddedCols(cols, 'int8'), R = paddedRows(rows);
      const q0 = new Int8Array(R * K), s0 = new Float32Array(R * K / INT8_GROUP);
      oldLayoutInt8(m, q0, s0, K);
      // the JS path of the new layoutInt8 (no loader)
      const q1 = new Int8Array(R * K), s1 = new Float32Array(R * K / INT8_GROUP);
      layoutInt8(m, q1, s1, K);
      same(q1, q0, `int8 js ${rows}x${cols} codes`);
      same(s1, s0, `int8 js ${rows}x${cols} scales`);
      // the backend's own path (wasm kernel, staged in chunks)
      const w = be.matrix(m) as unknown as { ptr: number; sc: number };
      const mem = (be as unknown as { memory: WebAssembly.Memory }).memory.buffer;
      same(new Int8Array(mem, w.ptr, R * K), q0, `int8 wasm ${rows}x${cols} codes`);
      same(new Float32Array(mem, w.sc, R * K / INT8_GROUP), s0, `int8 wasm ${rows}x${cols} scales`);
    }
  } finally {
    await be.dispose();
  }
}

test('q4 / q8_0 from bf16: the wasm quantizer (blockquant.ts) gives the reference\'s blocks exactly, rows with Inf/NaN through the reference', async () => {
  for (const [dtype, activations] of [['q4', 'full'], ['q8_0', 'full'], ['q4', 'q8']] as const) {
    const be = await createWasmBackend({ dtype, activations, threads: 1 });
    try {
      for (const [rows, cols] of [[9, 64], [2500, 128], [70, 3072], [5, 768]] as const) {
        for (const poison of [false, true]) {
          const data = int8Cases(rows, cols); // ties, tiny next to large, zeros, ...: the rounding cases
          if (poison) { data[1 * cols + 5] = 0x7f80; data[Math.min(rows - 1, 3) * cols + 70 % cols] = 0x7fc1; data[(rows - 1) * cols] = 0xff80; }
          const m = mat16('blocks.0.ffn.key.weight', rows, cols, 'BF16', data);
          const K = paddedCols(cols, dtype), R = paddedRows(rows), cb = blockCodeBytes(rows, cols, dtype);
          const c0 = new Uint8Array(cb), s0 = new Uint16Array(R * (K / QBLOCK));
          const sh0 = activations === 'q8' ? layoutQ4x4(m, c0, s0, K) : layoutBlocks(m, dtype, c0, s0, K); // JS: quantizeQ4_0/Q8_0
          const w = be.matrix(m) as unknown as { ptr: number; sc: number; f16Shift: number };
          const mem = (be as unknown as { memory: WebAssembly.Memory }).memory.buffer;
          const label = `${dtype}${activations === 'q8' ? '+a8' : ''} ${rows}x${cols}${poison ? ' with Inf/NaN' : ''}`;
          assert.equal(w.f16Shift, sh0, `${label}: shift`);
          same(new Uint8Array(mem, w.ptr, cb), c0, `${label}: codes`);
          same(new Uint16Array(mem, w.sc, R * (K / QBLOCK)), s0, `${label}: scales`);
        }
      }
    } finally {
      await be.dispose();
    }
  }
});

test('int8: the wasm kernel and the JS path give quantizeRowInt8\'s codes and scales exactly', async () => {
  // 2500 x 128 spans several staging chunks; 70 x 3072 a few rows per chunk; 33 x 100 is not whole groups (JS path)
  await checkInt8([[9, 64], [2500, 128], [70, 3072], [33, 100], [5, 768]], false);
});

test('int8: rows holding Inf/NaN go through the reference, the rest through the kernel', async () => {
  await checkInt8([[9, 64], [40, 768]], true);
});

// ---- non-finite scan ----

test('findNonFinite16 = the old scalar scan (aligned, misaligned, every position)', () => {
  for (const dtype of ['BF16', 'F16'] as const) {
    const exp = dtype === 'BF16' ? 0x7f80 : 0x7c00;
    for (const n of [0, 1, 2, 7, 8, 9, 31, 64, 1001]) {
      const clean = patterns(n, dtype, 0, dtype === 'BF16' ? 0xfe : 0x1e);
      for (const u of [clean, misaligned(clean)]) assert.deepEqual(findNonFinite16(u, dtype), oldFindNonFinite16(u, dtype));
      for (let at = 0; at < n; at += Math.max(1, Math.floor(n / 37))) {
        for (const v of [exp, exp | 0x8000, exp | 1, exp | 0x8001]) {
          const u = clean.slice();
          u[at] = v;
          if (at + 3 < n) u[at + 3] = exp | 0x8000; // a second one
          for (const w of [u, misaligned(u)]) assert.deepEqual(findNonFinite16(w, dtype), oldFindNonFinite16(w, dtype), `${dtype} n=${n} at ${at}`);
        }
      }
    }
  }
});
