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
 */
import type { HostMatrix, WeightDType } from '../kernels.js';

/** Values per u32 word for each weight type. */
export const PACK: Record<WeightDType, number> = { f32: 1, f16: 2, bf16: 2, int8: 4 };

export interface PackedMatrix {
  /** u32 words per row. */
  stride: number;
  /** rows * stride words (f32 bits for f32). */
  words: Uint32Array;
  /** int8 only: one scale per row. */
  scales?: Float32Array;
}

const f32Buf = new Float32Array(1);
const u32Buf = new Uint32Array(f32Buf.buffer);

/** f16 bit pattern → number (exact). */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** bf16 bit pattern → number (exact). */
export function bf16ToF32(b: number): number {
  u32Buf[0] = (b << 16) >>> 0;
  return f32Buf[0]!;
}

/** number → f16 bit pattern, round to nearest even (overflow → ±Inf, NaN stays NaN, subnormals kept). */
export function f32ToF16(x: number): number {
  f32Buf[0] = x;
  const u = u32Buf[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal (or zero) in f16: shift the full mantissa (with its implicit 1) right, rounding to nearest even.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e; // 24-bit mantissa → 10-bit subnormal field
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let q = mant >>> shift;
    if (rest > half || (rest === half && q & 1)) q++;
    return sign | q;
  }
  let q = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && q & 1)) q++; // may carry into the exponent (→ Inf at the top): correct
  return sign | q;
}

/** number → bf16 bit pattern, round to nearest even (NaN stays NaN). */
export function f32ToBf16(x: number): number {
  f32Buf[0] = x;
  const u = u32Buf[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Element i of a host matrix as a number. */
function reader(m: HostMatrix): (i: number) => number {
  if (m.dtype === 'F32') { const d = m.data; return (i) => d[i]!; }
  const d = m.data;
  return m.dtype === 'BF16' ? (i) => bf16ToF32(d[i]!) : (i) => f16ToF32(d[i]!);
}

/** Convert and pack a host matrix for `dtype` (16-bit sources of the same type are copied bit for bit). */
export function packMatrix(m: HostMatrix, dtype: WeightDType): PackedMatrix {
  const { rows, cols } = m;
  const stride = Math.ceil(cols / PACK[dtype]);
  const words = new Uint32Array(rows * stride);
  const get = reader(m);
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
        : dtype === 'f16' ? (i: number) => f32ToF16(get(i)) : (i: number) => f32ToBf16(get(i));
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
  }
}
