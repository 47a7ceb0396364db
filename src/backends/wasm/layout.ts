/**
 * Weight storage layouts of the wasm backend (see wasm/kernels.ts for how the kernels read them) and the
 * memory budget of a model in 32-bit wasm memory.
 *
 * Every matrix is row-major [rowsP, K]: rows padded to a multiple of 4 (the mat-mat row tile) and columns
 * zero-padded to K (a multiple of 16; of 64 for int8, the quantization group; of 128 for q4/q8_0, 4 blocks). bf16/f16 store each group of 8
 * columns pair-interleaved as [w0 w4 w1 w5 w2 w6 w3 w7] so the kernel widens 8 values with 2 SIMD ops; int8 adds an
 * f32 scale per row and 64 columns (symmetric: scale = max|w| / 127).
 *
 * What fits in the 4 GiB of wasm32 memory (all weight matrices — the embedding stays on the host — plus vectors,
 * state and 64-row activations; computed with wasmModelBytes(), GiB; q4/q8_0 with bf16 LoRA factors):
 *   model    f32      bf16/f16  int8, q8_0  q4
 *   0.1B     0.55     0.29      0.17        0.10     all fit
 *   0.4B     1.46     0.74      0.42        0.25     all fit
 *   1.5B     5.23 ✗   2.64      1.47        0.84     bf16/f16/int8/q8_0/q4
 *   2.9B    10.4 ✗    5.23 ✗    2.89        1.64     int8, q8_0, q4
 *   7.2B    25.9 ✗   13.0 ✗     7.13 ✗      4.00 ✗   none (q4 misses by a few MB: its bf16 LoRA factors are 0.4 GiB)
 *   13.3B   48.4 ✗   24.3 ✗    13.3 ✗       7.47 ✗   none
 */
import type { HostMatrix, WeightDType } from '../kernels.js';
import { bf16ToNumber, f16ToNumber, numberToBf16, numberToF16 } from '../../formats/dtype.js';
import { BLOCK_BYTES, INT8_GROUP, QBLOCK, blocksPerRow, hostRow, matrixBlocks, quantizeRowInt8, type BlockDType } from '../quant.js';
import { quantizeQ4_0, quantizeQ8_0 } from '../../formats/gguf-quant.js';

export const WASM_MAX_BYTES = 65536 * 65536; // 4 GiB
/** Bytes below this address are reserved (AssemblyScript statics, the thread-pool control block). */
export const HEAP_BASE = 65536;
/** Bytes kept readable past the last allocation: the mat-vec kernels' prefetch loads reach past a matrix's end. */
export const PREFETCH_PAD = 8192;

export const DTYPE_CODE: Record<WeightDType, number> = { f32: 0, bf16: 1, f16: 2, int8: 3, q4: 4, q8_0: 5 };
/** The storage code of q4 in the `q4x4` layout (layoutQ4x4), which the backend uses when activations are q8. */
export const DTYPE_Q4X4 = 6;

/** Columns of q4/q8_0 rows are padded to whole groups of 4 blocks (the mat-vec reads 4 scales at once). */
const BLOCK_GROUP = 4 * QBLOCK;

export function paddedCols(cols: number, dtype: WeightDType): number {
  const q = dtype === 'int8' ? INT8_GROUP : dtype === 'q4' || dtype === 'q8_0' ? BLOCK_GROUP : 16;
  return Math.ceil(cols / q) * q;
}

export function paddedRows(rows: number): number {
  return Math.ceil(rows / 4) * 4;
}

/** Bytes of one stored matrix (data + int8 scales), as read per token by a mat-vec. */
export function matrixBytes(rows: number, cols: number, dtype: WeightDType): number {
  const K = paddedCols(cols, dtype), R = paddedRows(rows);
  switch (dtype) {
    case 'f32': return R * K * 4;
    case 'bf16': case 'f16': return R * K * 2;
    case 'int8': return R * K + R * (K / INT8_GROUP) * 4;
    case 'q4': return R * K / 2 + R * (K / QBLOCK) * 2;
    case 'q8_0': return R * K + R * (K / QBLOCK) * 2;
  }
}

/** Bytes of the codes of a q4/q8_0 matrix (its scales follow). */
export function blockCodeBytes(rows: number, cols: number, dtype: BlockDType): number {
  const K = paddedCols(cols, dtype);
  return paddedRows(rows) * (dtype === 'q4' ? K / 2 : K);
}

/**
 * The load kernels of the wasm module (wasm/load.ts) and a staging area in its memory, where host data is copied
 * a chunk at a time for them (small enough to stay in cache between the copy and the kernel).
 */
export interface WasmLoader {
  kernels: {
    quant_i8_bf16(q: number, sc: number, src: number, rows: number, cols: number, K: number): number;
    split_blocks(codes: number, scales: number, src: number, rows: number, nb: number, bb: number, rowBytes: number, sStride: number): number;
    q4x4_blocks(codes: number, scales: number, src: number, rows: number, nb: number, NB: number, g0: number): number;
    quant_blocks_bf16(dst: number, src: number, rows: number, cols: number, q4: number): number;
    shift_f16(p: number, n: number): void;
  };
  memory: WebAssembly.Memory;
  stage: number;
  stageBytes: number;
}

/** Bytes of a WasmLoader's staging area. */
export const LOAD_STAGE_BYTES = 256 * 1024;

/** Write `m` in the f32 layout into `dst` ([rowsP, K] floats, zero-filled). */
export function layoutF32(m: HostMatrix, dst: Float32Array, K: number): void {
  const { rows, cols } = m;
  if (m.dtype === 'F32') {
    if (cols === K) dst.set(m.data.subarray(0, rows * cols));
    else for (let r = 0; r < rows; r++) dst.set(m.data.subarray(r * cols, (r + 1) * cols), r * K);
    return;
  }
  const src = m.data;
  if (m.dtype === 'BF16') {
    // bf16 is the top half of an f32 (a NaN comes out quiet, as through a float conversion)
    const d32 = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
    for (let r = 0; r < rows; r++) {
      const sb = r * cols, db = r * K;
      for (let c = 0; c < cols; c++) {
        const h = src[sb + c]!;
        d32[db + c] = ((h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0 ? h | 0x40 : h) << 16;
      }
    }
    return;
  }
  for (let r = 0; r < rows; r++) {
    const sb = r * cols, db = r * K;
    for (let c = 0; c < cols; c++) dst[db + c] = f16ToNumber(src[sb + c]!);
  }
}

/**
 * Pair-interleave `groups` groups of 8 16-bit values, as 32-bit words: from `s` at word `si` (natural order,
 * w0 w1 | w2 w3 | w4 w5 | w6 w7) to `d` at word `di` ([w0 w4] [w1 w5] [w2 w6] [w3 w7]; little-endian: the first
 * value of each pair in the low half).
 */
function interleave(s: Uint32Array, si: number, d: Uint32Array, di: number, groups: number): void {
  for (let g = 0; g < groups; g++, si += 4, di += 4) {
    const a = s[si]!, b = s[si + 1]!, c = s[si + 2]!, e = s[si + 3]!;
    d[di] = (a & 0xffff) | (c << 16);
    d[di + 1] = (a >>> 16) | (c & 0xffff0000);
    d[di + 2] = (b & 0xffff) | (e << 16);
    d[di + 3] = (b >>> 16) | (e & 0xffff0000);
  }
}

/** Whether any of `n` f16 patterns from word `i` of `w` has |value| ≥ 64 (or is inf/nan): (h & 0x7fff) ≥ 0x5400. */
function bigF16(w: Uint32Array, i: number, n: number): boolean {
  // per 16-bit half: (h & 0x7fff) + 0x2c00 reaches bit 15 exactly when h & 0x7fff >= 0x5400 (and never carries out)
  for (const end = i + (n >> 1); i < end; i++) if ((((w[i]! & 0x7fff7fff) + 0x2c002c00) & 0x80008000) !== 0) return true;
  return false;
}

/**
 * Write `m` as 16-bit patterns (bf16 or f16) in the pair-interleaved layout into `dst` ([rowsP, K], zero-filled).
 * Returns the power of two the values were stored multiplied by: 0 for bf16; for f16, 10 when every f16 value times
 * 2^10 stays finite (|w| < 64, true of trained weights), else 0. Scaling by 2^10 is exact and makes every nonzero f16
 * a normal number, so the kernels never multiply a subnormal (slow on x86; see wasm/kernels.ts, f16lo).
 *
 * A matrix already in the target type is a pure 16-bit permutation, done a group of 8 (four 32-bit words) at a time;
 * anything else is converted a row at a time into natural order first (round to nearest even, as before).
 */
export function layout16(m: HostMatrix, dst: Uint16Array, K: number, target: 'bf16' | 'f16', wasm?: Layout16Kernels): number {
  const { rows, cols } = m;
  const same = (target === 'bf16' && m.dtype === 'BF16') || (target === 'f16' && m.dtype === 'F16');
  const d32 = new Uint32Array(dst.buffer, dst.byteOffset, dst.length >> 1); // K % 16 == 0; wasm allocations are 64-aligned
  const G = cols >> 3;
  let big = false; // an f16 value with |w| ≥ 64 (or inf/nan): ×2^10 would overflow
  // the wasm kernels' arguments: the exponent that marks inf/nan, and the f16 magnitude from which ×2^10 overflows
  const expo = target === 'bf16' ? 0x7f80 : 0x7c00, bound = target === 'f16' ? 0x5400 : 0x8000;
  if (same && cols % 8 === 0 && 'fill' in m && m.fill) {
    // read from the file a cache-sized chunk of rows at a time, then permuted while hot: in place when the rows
    // are not padded, else from a staging buffer
    const fill = m.fill;
    const per = Math.max(1, Math.floor(FILL_CHUNK_BYTES / (2 * K)));
    const stage = cols === K ? undefined : new Uint16Array(Math.min(per, rows) * cols);
    const stage32 = stage && new Uint32Array(stage.buffer);
    for (let r0 = 0; r0 < rows; r0 += per) {
      const n = Math.min(per, rows - r0);
      if (!stage && wasm) {
        // the permutation and the checks in one wasm pass over the rows just read (wasm/load.ts pair16)
        const part = dst.subarray(r0 * K, (r0 + n) * K);
        fill(part, r0, n, true);
        const flags = wasm.pair(part.byteOffset, n * K, expo, bound);
        if (flags & 1) void m.data; // a non-finite value: the whole tensor's check (its error, or allowed)
        if (flags & 2) big = true;
      } else if (!stage) {
        fill(dst.subarray(r0 * K, (r0 + n) * K), r0, n);
        if (target === 'f16' && !big) big = bigF16(d32, (r0 * K) >> 1, n * K);
        interleave(d32, (r0 * K) >> 1, d32, (r0 * K) >> 1, n * G);
      } else {
        fill(stage, r0, n);
        if (target === 'f16' && !big) big = bigF16(stage32!, 0, n * cols);
        for (let r = 0; r < n; r++) interleave(stage32!, (r * cols) >> 1, d32, ((r0 + r) * K) >> 1, G);
      }
    }
  } else if (same && cols % 8 === 0 && wasm) {
    // copied into place, then permuted (and scanned for |w| ≥ 64) in wasm; `data` was checked when it was read
    const src = m.data as Uint16Array;
    if (cols === K) dst.set(src.subarray(0, rows * cols));
    else for (let r = 0; r < rows; r++) dst.set(src.subarray(r * cols, (r + 1) * cols), r * K);
    if (wasm.pair(dst.byteOffset, rows * K, expo, bound) & 2) big = true;
  } else if (same && cols % 8 === 0 && m.data.byteOffset % 4 === 0) {
    // straight from the source: each row starts on a 16-byte boundary
    const s32 = new Uint32Array(m.data.buffer, m.data.byteOffset, (rows * cols) >> 1);
    if (target === 'f16') big = bigF16(s32, 0, rows * cols);
    if (cols === K) interleave(s32, 0, d32, 0, rows * G);
    else for (let r = 0; r < rows; r++) interleave(s32, (r * cols) >> 1, d32, (r * K) >> 1, G);
  } else {
    // a row at a time through a natural-order buffer (zero past cols, up to a whole group)
    const W = Math.ceil(cols / 8) * 8;
    const row = new Uint16Array(W), row32 = new Uint32Array(row.buffer);
    const src = m.data;
    for (let r = 0; r < rows; r++) {
      const sb = r * cols;
      if (same) row.set((src as Uint16Array).subarray(sb, sb + cols));
      else if (m.dtype === 'F32') {
        const f = m.data, enc = target === 'bf16' ? numberToBf16 : numberToF16;
        for (let c = 0; c < cols; c++) row[c] = enc(f[sb + c]!);
      } else {
        const dec = m.dtype === 'BF16' ? bf16ToNumber : f16ToNumber, enc = target === 'bf16' ? numberToBf16 : numberToF16;
        for (let c = 0; c < cols; c++) row[c] = enc(dec(src[sb + c]!));
      }
      if (target === 'f16' && !big) big = bigF16(row32, 0, W);
      interleave(row32, 0, d32, (r * K) >> 1, W >> 3);
    }
  }
  if (target === 'bf16' || big) return 0;
  if (wasm) wasm.shift(dst.byteOffset, rows * K);
  else shiftF16(dst, rows * K);
  return F16_SHIFT;
}

/**
 * layout16's loops in wasm (wasm/load.ts), on its own memory: `pair` permutes n 16-bit patterns in place and returns
 * flags (1: an inf/nan, exponent `expo`, seen; 2: an f16 magnitude ≥ `big`); `shift` multiplies n f16 patterns by 2^10.
 */
export interface Layout16Kernels {
  pair(ptr: number, n: number, expo: number, big: number): number;
  shift(ptr: number, n: number): void;
}

/** Bytes of 16-bit rows read from a file at a time by layout16 (small enough to stay in cache while permuted). */
const FILL_CHUNK_BYTES = 256 * 1024;

/**
 * The first n f16 patterns of u (none with |w| ≥ 64) times 2^F16_SHIFT, exactly: a normal value gains F16_SHIFT in its
 * exponent field (at most 20 + 10: no overflow, no carry into the sign), a subnormal is renormalized, ±0 stays.
 */
function shiftF16(u: Uint16Array, n: number): void {
  let i = 0;
  if (u.byteOffset % 4 === 0) {
    const w = new Uint32Array(u.buffer, u.byteOffset, n >> 1);
    const add = F16_SHIFT << 10;
    for (let j = 0; j < w.length; j++) {
      const x = w[j]!;
      if (x === 0) continue;
      const e = x & 0x7c007c00;
      // both halves normal (the common case): one add
      if ((e & 0x7c00) !== 0 && (e & 0x7c000000) !== 0) { w[j] = x + (add | (add << 16)); continue; }
      shiftOne(u, 2 * j); shiftOne(u, 2 * j + 1);
    }
    i = 2 * w.length;
  }
  for (; i < n; i++) shiftOne(u, i);
}

function shiftOne(u: Uint16Array, i: number): void {
  const h = u[i]!;
  if (h & 0x7c00) u[i] = h + (F16_SHIFT << 10);
  else if (h & 0x3ff) u[i] = numberToF16(f16ToNumber(h) * 2 ** F16_SHIFT);
}

/** The power of two f16 weights are stored multiplied by, when they allow it (see layout16). */
export const F16_SHIFT = 10;

/**
 * Quantize `m` to int8 ([rowsP, K], zero-filled) with one scale per row and group (`scales` [rowsP, K/INT8_GROUP]),
 * exactly as quantizeRowInt8 does it. bf16 matrices whose rows are whole groups go through the wasm kernel
 * (`loader`; wasm/load.ts) a cache-sized chunk of rows at a time; anything else, and any row holding a non-finite
 * value, through quantizeRowInt8 itself.
 */
export function layoutInt8(m: HostMatrix, dst: Int8Array, scales: Float32Array, K: number, loader?: WasmLoader): void {
  const { rows, cols } = m;
  const G = K / INT8_GROUP;
  const row = new Float64Array(K);
  const reference = (r: number): void => {
    hostRow(m, r, row);
    quantizeRowInt8(row, dst, r * K, scales, r * G);
  };
  if (!loader || m.dtype !== 'BF16' || cols % INT8_GROUP !== 0 || 2 * cols > loader.stageBytes) {
    for (let r = 0; r < rows; r++) reference(r);
    return;
  }
  const per = Math.floor(loader.stageBytes / (2 * cols));
  const stage = new Uint16Array(loader.memory.buffer, loader.stage, per * cols);
  for (let r0 = 0; r0 < rows; r0 += per) {
    const n = Math.min(per, rows - r0);
    if (m.fill) m.fill(stage, r0, n); // straight from the file
    else stage.set(m.data.subarray(r0 * cols, (r0 + n) * cols));
    for (let done = 0; done < n;) {
      const r = r0 + done;
      const ok = loader.kernels.quant_i8_bf16(dst.byteOffset + r * K, scales.byteOffset + r * G * 4, loader.stage + done * cols * 2, n - done, cols, K);
      done += ok;
      if (done < n) { reference(r0 + done); done++; } // a row with Inf/NaN (only loaded with allowNonFinite)
    }
  }
}

/**
 * Write `m` as q4/q8_0 (wasm/blocks.ts): the codes of each ggml block (matrixBlocks: the file's own blocks, or
 * ggml's reference quantization) into `codes` [rowsP, K/2 or K], their f16 scales into `scales` [rowsP, K/32]
 * (both zero-filled: padding blocks have d = 0). Returns the power of two the scales were multiplied by, as layout16:
 * F16_SHIFT unless a scale times 2^F16_SHIFT would overflow.
 */
export function layoutBlocks(m: HostMatrix, dtype: BlockDType, codes: Uint8Array, scales: Uint16Array, K: number, loader?: WasmLoader): number {
  const nb = blocksPerRow(m.cols), BB = BLOCK_BYTES[dtype], cb = BB - 2;
  const rowBytes = dtype === 'q4' ? K / 2 : K, NB = K / QBLOCK;
  if (loader) {
    // in wasm (wasm/load.ts split_blocks, shift_f16), from the blocks staged a chunk of rows at a time
    let big = 0;
    const staged = stagedBlocks(m, dtype, loader, 1, (src, r0, n) => {
      big |= loader.kernels.split_blocks(codes.byteOffset + r0 * rowBytes, scales.byteOffset + r0 * NB * 2, src, n, nb, BB, rowBytes, NB);
    });
    if (staged) return finishScales(scales, big, loader);
  }
  const blocks = matrixBlocks(m, dtype);
  for (let r = 0; r < m.rows; r++) {
    for (let b = 0; b < nb; b++) {
      const o = (r * nb + b) * BB;
      scales[r * NB + b] = blocks[o]! | (blocks[o + 1]! << 8);
      for (let j = 0, d = r * rowBytes + b * cb, s = o + 2; j < cb; j++) codes[d + j] = blocks[s + j]!;
    }
  }
  return shiftScales(scales);
}

/** The wasm paths' end of layoutBlocks/layoutQ4x4: shiftScales, with the test already made (`big`) and the shift in wasm. */
function finishScales(scales: Uint16Array, big: number, loader: WasmLoader): number {
  if (big) return 0;
  loader.kernels.shift_f16(scales.byteOffset, scales.length);
  return F16_SHIFT;
}

/**
 * The ggml blocks of `m` (matrixBlocks' blocks, the same bytes) staged in the loader's memory a chunk of rows at a
 * time (a multiple of `align` rows but the last), each chunk handed to `use(pointer, first row, rows)`. bf16 rows
 * (a .pth loaded as q4/q8_0) are quantized there by wasm/blockquant.ts, straight from the file when `m` can be read
 * into place; a row holding inf/NaN (allowed by allowNonFinite) by the reference quantizer. Other sources go
 * through matrixBlocks and are copied in. Returns false (nothing done) where a chunk would not fit.
 */
function stagedBlocks(m: HostMatrix, dtype: BlockDType, loader: WasmLoader, align: number, use: (src: number, r0: number, n: number) => void): boolean {
  const { rows, cols } = m;
  const nb = blocksPerRow(cols), BB = BLOCK_BYTES[dtype], blockRow = nb * BB;
  const mem = () => new Uint8Array(loader.memory.buffer);
  const fileBlocks = m.blocks && cols % QBLOCK === 0;
  if (m.dtype === 'BF16' && !fileBlocks && cols % QBLOCK === 0) {
    // the first half of the stage takes the bf16 rows, the second their blocks (at most 34/64 of their bytes)
    const half = loader.stageBytes >> 1;
    const per = Math.floor(half / (2 * cols) / align) * align;
    if (per < 1) return false;
    const src = loader.stage, dst = loader.stage + half;
    const stage = new Uint16Array(loader.memory.buffer, src, per * cols);
    const row = new Float32Array(nb * QBLOCK);
    const quant = dtype === 'q4' ? quantizeQ4_0 : quantizeQ8_0;
    for (let r0 = 0; r0 < rows; r0 += per) {
      const n = Math.min(per, rows - r0);
      if (m.fill) m.fill(stage, r0, n); // checked as it is read
      else stage.set(m.data.subarray(r0 * cols, (r0 + n) * cols));
      for (let done = 0; done < n;) {
        done += loader.kernels.quant_blocks_bf16(dst + done * blockRow, src + done * cols * 2, n - done, cols, dtype === 'q4' ? 1 : 0);
        if (done < n) { hostRow(m, r0 + done, row); mem().set(quant(row), dst + done * blockRow); done++; }
      }
      use(dst, r0, n);
    }
    return true;
  }
  const per = Math.floor(loader.stageBytes / blockRow / align) * align;
  if (per < 1) return false;
  const blocks = matrixBlocks(m, dtype);
  for (let r0 = 0; r0 < rows; r0 += per) {
    const n = Math.min(per, rows - r0);
    mem().set(blocks.subarray(r0 * blockRow, (r0 + n) * blockRow), loader.stage);
    use(loader.stage, r0, n);
  }
  return true;
}

/**
 * Write `m` as q4 in the `q4x4` layout of the 8-bit-activation kernels (wasm/q4a8.ts): rows in groups of 4, per
 * group and block 64 code bytes, byte 16j + 4r + i = q[8j + i] | q[8j + 4 + i] << 4 for row r of the group (q: the
 * block's codes in column order), then the scales as [groups, K/32, 4]. The same blocks, codes and scales as
 * layoutBlocks, rearranged.
 */
export function layoutQ4x4(m: HostMatrix, codes: Uint8Array, scales: Uint16Array, K: number, loader?: WasmLoader): number {
  const nb = blocksPerRow(m.cols), BB = BLOCK_BYTES.q4, NB = K / QBLOCK;
  if (loader) {
    // in wasm (wasm/load.ts q4x4_blocks, shift_f16), from the blocks staged a chunk of whole row groups at a time
    let big = 0;
    const staged = stagedBlocks(m, 'q4', loader, 4, (src, r0, n) => {
      big |= loader.kernels.q4x4_blocks(codes.byteOffset, scales.byteOffset, src, n, nb, NB, r0 >> 2);
    });
    if (staged) return finishScales(scales, big, loader);
  }
  const blocks = matrixBlocks(m, 'q4');
  const q = new Uint8Array(QBLOCK);
  for (let r = 0; r < m.rows; r++) {
    const g = r >> 2, lane = r & 3;
    for (let b = 0; b < nb; b++) {
      const o = (r * nb + b) * BB, at = g * NB + b;
      scales[at * 4 + lane] = blocks[o]! | (blocks[o + 1]! << 8);
      for (let i = 0; i < 16; i++) { const v = blocks[o + 2 + i]!; q[i] = v & 15; q[i + 16] = v >> 4; } // ggml's qs order
      const d = at * 64 + 4 * lane;
      for (let j = 0; j < 4; j++) for (let i = 0; i < 4; i++) codes[d + 16 * j + i] = q[8 * j + i]! | (q[8 * j + 4 + i]! << 4);
    }
  }
  return shiftScales(scales);
}

/** Multiply the f16 scales by 2^F16_SHIFT in place and return F16_SHIFT, or leave them and return 0 if one would overflow. */
function shiftScales(scales: Uint16Array): number {
  for (let i = 0; i < scales.length; i++) if ((scales[i]! & 0x7fff) >= 0x5400) return 0;
  shiftF16(scales, scales.length);
  return F16_SHIFT;
}
