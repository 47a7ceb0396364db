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
import { f16ToNumber, numberToBf16, numberToF16 } from '../../formats/dtype.js';
import { hostMatrixReader } from '../host-matrix.js';
import { BLOCK_BYTES, INT8_GROUP, QBLOCK, blocksPerRow, matrixBlocks, quantizeRowInt8, type BlockDType } from '../quant.js';

export const WASM_MAX_BYTES = 65536 * 65536; // 4 GiB
/** Bytes below this address are reserved (AssemblyScript statics, the thread-pool control block). */
export const HEAP_BASE = 65536;
/** Bytes kept readable past the last allocation: the mat-vec kernels' prefetch loads reach past a matrix's end. */
export const PREFETCH_PAD = 4096;

export const DTYPE_CODE: Record<WeightDType, number> = { f32: 0, bf16: 1, f16: 2, int8: 3, q4: 4, q8_0: 5 };

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

/** Write `m` in the f32 layout into `dst` ([rowsP, K] floats, zero-filled). */
export function layoutF32(m: HostMatrix, dst: Float32Array, K: number): void {
  const get = hostMatrixReader(m);
  for (let r = 0; r < m.rows; r++) for (let c = 0; c < m.cols; c++) dst[r * K + c] = get(r * m.cols + c);
}

/**
 * Write `m` as 16-bit patterns (bf16 or f16) in the pair-interleaved layout into `dst` ([rowsP, K], zero-filled).
 * Returns the power of two the values were stored multiplied by: 0 for bf16; for f16, 10 when every f16 value times
 * 2^10 stays finite (|w| < 64, true of trained weights), else 0. Scaling by 2^10 is exact and makes every nonzero f16
 * a normal number, so the kernels never multiply a subnormal (slow on x86; see wasm/kernels.ts, f16lo).
 */
export function layout16(m: HostMatrix, dst: Uint16Array, K: number, target: 'bf16' | 'f16'): number {
  const { rows, cols } = m;
  const same = (target === 'bf16' && m.dtype === 'BF16') || (target === 'f16' && m.dtype === 'F16');
  const src16 = m.data as Uint16Array;
  const get = hostMatrixReader(m);
  const enc = target === 'bf16' ? numberToBf16 : numberToF16;
  let big = false; // an f16 value with |w| ≥ 64 (or inf/nan): ×2^10 would overflow
  for (let r = 0; r < rows; r++) {
    const sb = r * cols, db = r * K;
    for (let c = 0; c < cols; c++) {
      // column c sits in group g = c & ~7 at slot 2k (k = c & 7 < 4) or 2(k-4)+1
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

/** The power of two f16 weights are stored multiplied by, when they allow it (see layout16). */
export const F16_SHIFT = 10;

/** Quantize `m` to int8 ([rowsP, K], zero-filled) with one scale per row and group (`scales` [rowsP, K/INT8_GROUP]). */
export function layoutInt8(m: HostMatrix, dst: Int8Array, scales: Float32Array, K: number): void {
  const { rows, cols } = m;
  const get = hostMatrixReader(m);
  const row = new Float64Array(K);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) row[c] = get(r * cols + c);
    quantizeRowInt8(row, dst, r * K, scales, r * (K / INT8_GROUP));
  }
}

/**
 * Write `m` as q4/q8_0 (wasm/blocks.ts): the codes of each ggml block (matrixBlocks: the file's own blocks, or
 * ggml's reference quantization) into `codes` [rowsP, K/2 or K], their f16 scales into `scales` [rowsP, K/32]
 * (both zero-filled: padding blocks have d = 0). Returns the power of two the scales were multiplied by, as layout16:
 * F16_SHIFT unless a scale times 2^F16_SHIFT would overflow.
 */
export function layoutBlocks(m: HostMatrix, dtype: BlockDType, codes: Uint8Array, scales: Uint16Array, K: number): number {
  const blocks = matrixBlocks(m, dtype);
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
