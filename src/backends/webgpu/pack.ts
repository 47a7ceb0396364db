/**
 * Host-side packing of weight matrices into the u32 words the WGSL kernels read (see shaders.ts).
 *
 * Layout of one packed matrix (row-major, each row starts on a u32 boundary):
 * - f32:  `stride = cols` words per row, one f32 per word.
 * - f16:  `stride = ceil(cols / 2)`; word m of a row holds column 2m in its low 16 bits and 2m+1 in its high
 *         16 bits (the order `unpack2x16float` returns as .x / .y); a padding half is +0.
 * - bf16: same packing as f16 with bf16 bit patterns (widened in the shader by a 16-bit shift).
 * - int8: `stride = ceil(cols / 4)`; word m holds columns 4m..4m+3 in bytes 0..3 (two's complement), and a
 *         separate f32 per row: `W[r][c] ≈ scale[r] * q[r][c]`, `scale[r] = max_c |W[r][c]| / 127`.
 * - q8_0: ggml Q8_0 blocks (../quant.ts): codes packed as int8 (4 per word), and per row `ceil(cols / 64)` words
 *         of block scales, two f16 d per word (block 2i low, 2i+1 high): `W[r][c] = q[r][c] * d[r][c / 32]`.
 * - q4:   ggml Q4_0 blocks: `stride = ceil(cols / 8)`; word m holds columns 8m..8m+7 as 4-bit codes (bits 4e..4e+3:
 *         column 8m+e), `W[r][c] = (q[r][c] - 8) * d[r][c / 32]`, scales as q8_0.
 */
import type { HostMatrix, WeightDType } from '../kernels.js';
import { numberToBf16, numberToF16 } from '../../formats/dtype.js';
import { hostMatrixReader } from '../host-matrix.js';
import { blockCode, blockScale, blocksPerRow, matrixBlocks, type BlockDType } from '../quant.js';

/** Values per u32 word for each weight type. */
export const PACK: Record<WeightDType, number> = { f32: 1, f16: 2, bf16: 2, int8: 4, q8_0: 4, q4: 8 };

export interface PackedMatrix {
  /** u32 words per row. */
  stride: number;
  /** rows * stride words (f32 bits for f32). */
  words: Uint32Array;
  /** int8: one f32 scale per row; q4/q8_0: `scaleStride` words of f16 pairs per row. */
  scales?: Float32Array | Uint32Array;
  /** Words of `scales` per row. */
  scaleStride?: number;
}

/** Convert and pack a host matrix for `dtype` (16-bit sources of the same type are copied bit for bit). */
export function packMatrix(m: HostMatrix, dtype: WeightDType): PackedMatrix {
  const { rows, cols } = m;
  const stride = Math.ceil(cols / PACK[dtype]);
  const words = new Uint32Array(rows * stride);
  const get = hostMatrixReader(m);
  switch (dtype) {
    case 'f32': {
      if (m.dtype === 'F32') {
        words.set(new Uint32Array(m.data.buffer, m.data.byteOffset, rows * cols));
      } else {
        const f = new Float32Array(words.buffer);
        for (let i = 0; i < rows * cols; i++) f[i] = get(i);
      }
      return { stride, words };
    }
    case 'f16':
    case 'bf16': {
      const same = (dtype === 'f16' && m.dtype === 'F16') || (dtype === 'bf16' && m.dtype === 'BF16');
      const bits = same
        ? (i: number) => (m.data as Uint16Array)[i]!
        : dtype === 'f16' ? (i: number) => numberToF16(get(i)) : (i: number) => numberToBf16(get(i));
      for (let r = 0; r < rows; r++) {
        const src = r * cols, dst = r * stride;
        for (let c = 0; c < cols; c += 2) {
          const lo = bits(src + c);
          const hi = c + 1 < cols ? bits(src + c + 1) : 0;
          words[dst + (c >> 1)] = (lo | (hi << 16)) >>> 0;
        }
      }
      return { stride, words };
    }
    case 'int8': {
      const scales = new Float32Array(rows);
      for (let r = 0; r < rows; r++) {
        const src = r * cols, dst = r * stride;
        let max = 0;
        for (let c = 0; c < cols; c++) max = Math.max(max, Math.abs(get(src + c)));
        const scale = max / 127;
        scales[r] = scale;
        const inv = scale > 0 ? 1 / scale : 0;
        for (let c = 0; c < cols; c++) {
          const q = Math.max(-127, Math.min(127, Math.round(get(src + c) * inv)));
          words[dst + (c >> 2)]! |= (q & 0xff) << (8 * (c & 3));
        }
      }
      return { stride, words, scales };
    }
    case 'q4':
    case 'q8_0':
      return packBlocks(m, dtype, stride, words);
  }
}

function packBlocks(m: HostMatrix, dtype: BlockDType, stride: number, words: Uint32Array): PackedMatrix {
  const { rows, cols } = m;
  const blocks = matrixBlocks(m, dtype);
  const nb = blocksPerRow(cols), scaleStride = Math.ceil(nb / 2);
  const scales = new Uint32Array(rows * scaleStride);
  const bits = dtype === 'q4' ? 4 : 8, mask = (1 << bits) - 1, per = 32 / bits;
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const bi = r * nb + b;
      scales[r * scaleStride + (b >> 1)]! |= blockScale(blocks, dtype, bi) << (16 * (b & 1));
      for (let j = 0; j < 32 && b * 32 + j < cols; j++) {
        const c = b * 32 + j;
        words[r * stride + Math.floor(c / per)]! |= (blockCode(blocks, dtype, bi, j) & mask) << (bits * (c % per));
      }
    }
  }
  return { stride, words, scales, scaleStride };
}
