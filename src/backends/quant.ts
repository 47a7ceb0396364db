/**
 * Quantized weight formats of the backends, and which storage each matrix gets.
 *
 * int8 (CPU backends): symmetric quantization with one f32 scale per row and group of INT8_GROUP columns
 * (scale = max|w| / 127, q = round(w / scale)). The wasm kernels store it; the js backend evaluates the same
 * quantized weights in float64, as the reference the wasm int8 kernels are tested against.
 *
 * q4 and q8_0 (every backend): ggml's Q4_0 and Q8_0 blocks of 32 values along a row, each with one f16 scale d:
 * Q4_0 holds 4-bit codes q with w = (q - 8)·d, Q8_0 int8 codes with w = q·d. Blocks read from a GGUF are kept
 * exactly as stored (`HostMatrix.blocks`); float weights are quantized by ggml's reference quantizers
 * (src/formats/gguf-quant.ts), so our q4 of a model is the Q4_0 file llama.cpp's converter would write. Every
 * backend stores the same numbers (the layouts differ: see src/backends/wasm/layout.ts, webgpu/pack.ts).
 *
 * Why Q4_0 and not a per-block-offset scheme (Q4_1-like: w = q·d + m, 20 bytes per block, 11% more): measured by
 * bench/q4-accuracy.ts on the storyteller model (perplexity of the passage's first 1024 tokens; bf16 44.63), Q4_0
 * gives 45.68 (+2.4%) and the offset scheme 45.25 (+1.4%). Q4_0 is within the +5% aim, smaller, needs no offset term
 * in the kernels, and is what the Q4_0 GGUFs people have hold: they load without re-rounding.
 *
 * The small LoRA factors (≈3% of the bytes, and the most sensitive: they feed the decay, a, v and gate through
 * sigmoids) are not quantized by int8/q4/q8_0: they stay in their checkpoint's precision (bf16 for int8; for
 * q4/q8_0 the source's own 16/32-bit type, or its ggml blocks when the file has them quantized).
 */
import type { HostMatrix, WeightDType } from './kernels.js';
import { bf16ToNumber, f16ToNumber, numberToF16 } from '../formats/dtype.js';
import { GGML_TYPE, SUPPORTED_TYPES, dequantize, quantizeQ4_0, quantizeQ8_0 } from '../formats/gguf-quant.js';

/** Columns per scale (wasm/kernels.ts assumes 64). */
export const INT8_GROUP = 64;

/** Values per q4/q8_0 block. */
export const QBLOCK = 32;
export type BlockDType = 'q4' | 'q8_0';
/** Bytes per ggml block: f16 scale, then 16 bytes of nibbles (Q4_0) or 32 int8 codes (Q8_0). */
export const BLOCK_BYTES: Record<BlockDType, number> = { q4: 18, q8_0: 34 };
const GGML_NAME: Record<BlockDType, 'Q4_0' | 'Q8_0'> = { q4: 'Q4_0', q8_0: 'Q8_0' };

const LORA_NAME = /\.(w1|w2|a1|a2|v1|v2|g1|g2)$/;

export function isBlockDType(d: WeightDType): d is BlockDType {
  return d === 'q4' || d === 'q8_0';
}

/**
 * The storage a matrix named `name` gets when `dtype` is asked for (`src`: the matrix itself, when known; without
 * it a LoRA factor is assumed bf16, as in the official checkpoints).
 */
export function storageDType(dtype: WeightDType, name: string, src?: HostMatrix): WeightDType {
  if (!LORA_NAME.test(name)) return dtype;
  if (dtype === 'int8') return 'bf16';
  if (isBlockDType(dtype)) {
    if (src?.blocks && src.cols % QBLOCK === 0) return src.blocks.type === 'Q4_0' ? 'q4' : 'q8_0';
    return src?.dtype === 'F32' ? 'f32' : src?.dtype === 'F16' ? 'f16' : 'bf16';
  }
  return dtype;
}

/**
 * Quantize `row` (length a multiple of INT8_GROUP, zero-padded) into `q` at `qOff` and its group scales into
 * `scales` at `sOff`. A group of zeros gets scale 0.
 */
export function quantizeRowInt8(row: ArrayLike<number>, q: Int8Array, qOff: number, scales: Float32Array, sOff: number): void {
  for (let g = 0; g * INT8_GROUP < row.length; g++) {
    const c0 = g * INT8_GROUP, c1 = c0 + INT8_GROUP;
    let mx = 0;
    for (let c = c0; c < c1; c++) mx = Math.max(mx, Math.abs(row[c]!));
    const s = Math.fround(mx / 127);
    scales[sOff + g] = mx > 0 ? s : 0;
    for (let c = c0; c < c1; c++) q[qOff + c] = mx > 0 ? Math.max(-127, Math.min(127, Math.round(row[c]! / s))) : 0;
  }
}

/** Blocks per row of a matrix with `cols` columns (the last one zero-padded). */
export function blocksPerRow(cols: number): number {
  return Math.ceil(cols / QBLOCK);
}

/**
 * `m` as ggml blocks of `dtype`, row-major (rows × blocksPerRow(cols) blocks, padding columns zero): the file's own
 * blocks when they have that type; Q4_0 blocks asked for as q8_0 are widened exactly (same d, codes q - 8); anything
 * else is quantized from its float values by ggml's reference quantizer.
 */
export function matrixBlocks(m: HostMatrix, dtype: BlockDType): Uint8Array {
  const nb = blocksPerRow(m.cols), BB = BLOCK_BYTES[dtype];
  if (m.blocks && m.cols % QBLOCK === 0 && m.blocks.data.length === m.rows * nb * BLOCK_BYTES[m.blocks.type === 'Q4_0' ? 'q4' : 'q8_0']) {
    if (m.blocks.type === GGML_NAME[dtype]) return m.blocks.data;
    if (dtype === 'q8_0') return q4ToQ8(m.blocks.data);
  }
  const quant = dtype === 'q4' ? quantizeQ4_0 : quantizeQ8_0;
  const row = new Float32Array(nb * QBLOCK);
  const out = new Uint8Array(m.rows * nb * BB);
  for (let r = 0; r < m.rows; r++) {
    hostRow(m, r, row);
    out.set(quant(row), r * nb * BB);
  }
  return out;
}

/** Row r of a host matrix as numbers into out[0, cols) (the rest of out is left as it is). */
export function hostRow(m: HostMatrix, r: number, out: Float32Array | Float64Array): void {
  const cols = m.cols, sb = r * cols;
  if (m.dtype === 'F32') { out.set(m.data.subarray(sb, sb + cols)); return; }
  const d = m.data;
  if (m.dtype === 'BF16') for (let c = 0; c < cols; c++) out[c] = bf16ToNumber(d[sb + c]!);
  else for (let c = 0; c < cols; c++) out[c] = f16ToNumber(d[sb + c]!);
}

/** Q4_0 blocks as Q8_0 blocks of the same values (d kept, q - 8 as int8). */
function q4ToQ8(src: Uint8Array): Uint8Array {
  const n = src.length / 18;
  const out = new Uint8Array(n * 34);
  for (let b = 0; b < n; b++) {
    const s = b * 18, d = b * 34;
    out[d] = src[s]!; out[d + 1] = src[s + 1]!;
    for (let j = 0; j < 16; j++) {
      const v = src[s + 2 + j]!;
      out[d + 2 + j] = ((v & 15) - 8) & 0xff;
      out[d + 18 + j] = ((v >> 4) - 8) & 0xff;
    }
  }
  return out;
}

/** The exact values of `rows` rows of blocks (from matrixBlocks) as f32 [rows, cols]. */
export function dequantizeBlocks(blocks: Uint8Array, dtype: BlockDType, rows: number, cols: number): Float32Array {
  const nb = blocksPerRow(cols);
  const info = SUPPORTED_TYPES.get(GGML_TYPE[GGML_NAME[dtype]])!;
  const all = dequantize(info, blocks, rows * nb * QBLOCK);
  if (nb * QBLOCK === cols) return all;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) out.set(all.subarray(r * nb * QBLOCK, r * nb * QBLOCK + cols), r * cols);
  return out;
}

/** Block b's f16 scale bits. */
export function blockScale(blocks: Uint8Array, dtype: BlockDType, b: number): number {
  const o = b * BLOCK_BYTES[dtype];
  return blocks[o]! | (blocks[o + 1]! << 8);
}

/** Code j (0..31) of block b: Q4_0 0..15 (value (q - 8)·d), Q8_0 -128..127. */
export function blockCode(blocks: Uint8Array, dtype: BlockDType, b: number, j: number): number {
  const o = b * BLOCK_BYTES[dtype] + 2;
  if (dtype === 'q8_0') return (blocks[o + j]! << 24) >> 24;
  const v = blocks[o + (j & 15)]!;
  return j < 16 ? v & 15 : v >> 4;
}

/**
 * `activations: 'q8'` (ActivationMode): `cols` values of x from xb rounded as the inputs of a q4 matrix product, into
 * out from ob. Per block of 32 columns (from column 0), in f32 arithmetic on the values taken as f32 (what the wasm
 * backend holds), with m = max|x_b|: code c = round-half-to-even(x · f32(127 / m)) (0 when m = 0), scale
 * s = f16(m / 127), value s·c. This is llama.cpp's Q8_0 activation rounding (quantize_row_q8_0, its x86 SIMD form);
 * keeping s in f32 instead moved the storyteller's logprobs twice as far from llama.cpp's own (0.056 against 0.018,
 * mean |Δ| over the vocabulary). wasm/q4a8.ts's quant_x8 computes the same codes and scales.
 */
export function roundActivationsQ8(x: ArrayLike<number>, xb: number, cols: number, out: Float64Array, ob: number): void {
  for (let c0 = 0; c0 < cols; c0 += QBLOCK) {
    const c1 = Math.min(c0 + QBLOCK, cols);
    let m = 0;
    for (let c = c0; c < c1; c++) m = Math.max(m, Math.abs(Math.fround(x[xb + c]!)));
    const inv = m > 0 ? Math.fround(127 / m) : 0;
    const s = f16ToNumber(numberToF16(m / 127));
    for (let c = c0; c < c1; c++) out[ob + c] = s * roundHalfEven(Math.fround(Math.fround(x[xb + c]!) * inv));
  }
}

/** Round to the nearest integer, ties to even (WebAssembly's `nearest`); zero without a sign, as an integer code. */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return (r - v === 0.5 && r % 2 !== 0 ? r - 1 : r) || 0;
}
