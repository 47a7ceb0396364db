/**
 * ggml tensor types as stored in GGUF files: the type ids, block geometry, exact dequantization to f32 and the
 * reference quantizers for Q8_0 and Q4_0.
 *
 * Facts from ggml (ggml.h `enum ggml_type`, ggml-common.h block structs, ggml-quants.c `dequantize_row_*` and
 * `quantize_row_*_ref`) and gguf-py (`constants.GGML_QUANT_SIZES`, `quants.py`). A quantized tensor is a sequence
 * of fixed-size blocks along ne[0] (the innermost dimension); every block starts with the f16 scale(s) unless
 * noted. All multi-byte fields are little-endian.
 *
 * Exactness: ggml dequantizes in f32 arithmetic. Every product of an f16 scale with a small integer code (and of
 * the K-quant super-scale with a 6/8-bit sub-scale) is exact in f32, so the only rounding is at the last
 * operation (`q·d + m`, `d·sc·q`). Here those are computed in float64, where they are exact, and rounded once
 * when stored into the Float32Array: the same single rounding, so the values equal ggml's and gguf-py's bit for
 * bit.
 */
import { f16ToNumber, numberToF16 } from './dtype.js';

/** A ggml type this runtime knows how to read. */
export interface GgmlTypeInfo {
  readonly id: number;
  readonly name: string;
  /** Elements per block (1 for plain types). */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
}

/** ggml type ids (ggml.h). Ids 4, 5 (old Q4_2/Q4_3) and 31-33, 36-38 (removed repacked types) are gone upstream. */
export const GGML_TYPE = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9, Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13,
  Q6_K: 14, Q8_K: 15, IQ2_XXS: 16, IQ2_XS: 17, IQ3_XXS: 18, IQ1_S: 19, IQ4_NL: 20, IQ3_S: 21, IQ2_S: 22, IQ4_XS: 23,
  I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, IQ1_M: 29, BF16: 30, TQ1_0: 34, TQ2_0: 35, MXFP4: 39,
} as const;

const NAMES = new Map<number, string>(Object.entries(GGML_TYPE).map(([k, v]) => [v, k]));

/** The name of a ggml type id (`Q4_0`), or `type <id>` for ids ggml does not define. */
export function ggmlTypeName(id: number): string {
  return NAMES.get(id) ?? `type ${id}`;
}

/** QK_K: the K-quants' super-block size. */
const QK_K = 256;

/** The types read here, with (block size, bytes per block) as in gguf-py's GGML_QUANT_SIZES. */
export const SUPPORTED_TYPES: ReadonlyMap<number, GgmlTypeInfo> = new Map(([
  ['F32', 1, 4], ['F16', 1, 2], ['BF16', 1, 2],
  ['Q4_0', 32, 2 + 16], // f16 d; 16 bytes of 4-bit codes: byte j holds element j (low nibble) and j+16 (high)
  ['Q4_1', 32, 2 + 2 + 16], // f16 d, f16 m; codes as Q4_0 but unsigned: x = q·d + m
  ['Q5_0', 32, 2 + 4 + 16], // f16 d; u32 qh (bit j = 5th bit of element j); low nibbles as Q4_0; x = (q - 16)·d
  ['Q5_1', 32, 2 + 2 + 4 + 16], // f16 d, f16 m, u32 qh, nibbles; x = q·d + m
  ['Q8_0', 32, 2 + 32], // f16 d; 32 int8 codes; x = q·d
  ['Q4_K', QK_K, 2 + 2 + 12 + QK_K / 2], // f16 d, f16 dmin, 12 bytes of 6-bit sub-scales/mins, 128 bytes nibbles
  ['Q5_K', QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2], // as Q4_K plus 32 bytes of 5th bits (qh) before the nibbles
  ['Q6_K', QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2], // ql[128], qh[64], int8 scales[16], then f16 d (last!)
] as const).map(([name, blockSize, typeSize]) => {
  const id = GGML_TYPE[name];
  return [id, { id, name, blockSize, typeSize }];
}));

/** Bytes of `n` elements of a supported type (n a multiple of the block size). */
export function ggmlBytes(info: GgmlTypeInfo, n: number): number {
  return (n / info.blockSize) * info.typeSize;
}

/** Dequantizes `n` elements of type `info` from `src` (exactly `ggmlBytes(info, n)` bytes) to f32. */
export function dequantize(info: GgmlTypeInfo, src: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const nb = n / info.blockSize;
  const ts = info.typeSize;
  const f16 = (o: number): number => f16ToNumber(dv.getUint16(o, true));
  switch (info.name) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = f16(i * 2);
      break;
    case 'BF16': {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(i * 2, true) << 16;
      break;
    }
    case 'Q4_0':
      for (let b = 0; b < nb; b++) {
        const o = b * ts, y = b * 32, d = f16(o);
        for (let j = 0; j < 16; j++) {
          const q = src[o + 2 + j]!;
          out[y + j] = ((q & 15) - 8) * d;
          out[y + j + 16] = ((q >> 4) - 8) * d;
        }
      }
      break;
    case 'Q4_1':
      for (let b = 0; b < nb; b++) {
        const o = b * ts, y = b * 32, d = f16(o), m = f16(o + 2);
        for (let j = 0; j < 16; j++) {
          const q = src[o + 4 + j]!;
          out[y + j] = (q & 15) * d + m;
          out[y + j + 16] = (q >> 4) * d + m;
        }
      }
      break;
    case 'Q5_0':
    case 'Q5_1': {
      const hasMin = info.name === 'Q5_1';
      for (let b = 0; b < nb; b++) {
        const o = b * ts, y = b * 32, d = f16(o), m = hasMin ? f16(o + 2) : 0;
        const qhAt = o + (hasMin ? 4 : 2);
        const qh = dv.getUint32(qhAt, true);
        for (let j = 0; j < 16; j++) {
          const q = src[qhAt + 4 + j]!;
          const lo = (q & 15) | (((qh >>> j) & 1) << 4);
          const hi = (q >> 4) | (((qh >>> (j + 16)) & 1) << 4);
          if (hasMin) { out[y + j] = lo * d + m; out[y + j + 16] = hi * d + m; }
          else { out[y + j] = (lo - 16) * d; out[y + j + 16] = (hi - 16) * d; }
        }
      }
      break;
    }
    case 'Q8_0':
      for (let b = 0; b < nb; b++) {
        const o = b * ts, y = b * 32, d = f16(o);
        for (let j = 0; j < 32; j++) out[y + j] = dv.getInt8(o + 2 + j) * d;
      }
      break;
    case 'Q4_K':
    case 'Q5_K': {
      const five = info.name === 'Q5_K';
      for (let b = 0; b < nb; b++) {
        const o = b * ts, y0 = b * QK_K, d = f16(o), dmin = f16(o + 2);
        const sc = o + 4, qh = sc + 12, qs = five ? qh + 32 : qh;
        // 8 sub-blocks of 32 values, each with a 6-bit scale and a 6-bit min packed in 12 bytes:
        // sub-block j < 4: scale = s[j] & 63, min = s[j+4] & 63;
        // j >= 4: scale = (s[j+4] & 15) | (s[j-4] >> 6) << 4, min = (s[j+4] >> 4) | (s[j] >> 6) << 4.
        for (let j = 0; j < 8; j++) {
          let s: number, m: number;
          if (j < 4) { s = src[sc + j]! & 63; m = src[sc + j + 4]! & 63; }
          else {
            s = (src[sc + j + 4]! & 15) | ((src[sc + j - 4]! >> 6) << 4);
            m = (src[sc + j + 4]! >> 4) | ((src[sc + j]! >> 6) << 4);
          }
          const dj = d * s, mj = dmin * m;
          // Sub-blocks 2k and 2k+1 share bytes qs[32k .. 32k+32): low nibbles, then high nibbles.
          const q = qs + (j >> 1) * 32, shift = (j & 1) * 4, y = y0 + j * 32;
          for (let l = 0; l < 32; l++) {
            let v = (src[q + l]! >> shift) & 15;
            if (five) v |= ((src[qh + l]! >> j) & 1) << 4; // qh[l] bit j: 5th bit of element l of sub-block j
            out[y + l] = dj * v - mj;
          }
        }
      }
      break;
    }
    case 'Q6_K':
      for (let b = 0; b < nb; b++) {
        const o = b * ts, y0 = b * QK_K;
        const d = f16(o + 208);
        // Two halves of 128 values; half h uses ql[64h .. 64h+64), qh[32h .. 32h+32), scales[8h .. 8h+8).
        for (let h = 0; h < 2; h++) {
          const ql = o + h * 64, qh = o + 128 + h * 32, sc = o + 192 + h * 8, y = y0 + h * 128;
          for (let l = 0; l < 32; l++) {
            const is = l >> 4, hb = src[qh + l]!;
            const q1 = ((src[ql + l]! & 15) | ((hb & 3) << 4)) - 32;
            const q2 = ((src[ql + l + 32]! & 15) | (((hb >> 2) & 3) << 4)) - 32;
            const q3 = ((src[ql + l]! >> 4) | (((hb >> 4) & 3) << 4)) - 32;
            const q4 = ((src[ql + l + 32]! >> 4) | (((hb >> 6) & 3) << 4)) - 32;
            out[y + l] = d * dv.getInt8(sc + is) * q1;
            out[y + l + 32] = d * dv.getInt8(sc + is + 2) * q2;
            out[y + l + 64] = d * dv.getInt8(sc + is + 4) * q3;
            out[y + l + 96] = d * dv.getInt8(sc + is + 6) * q4;
          }
        }
      }
      break;
    default:
      throw new Error(`dequantize: unsupported ggml type ${info.name}`);
  }
  return out;
}

const f32 = Math.fround;

/**
 * Q8_0 exactly as ggml's `quantize_row_q8_0_ref` (and gguf-py's Q8_0): per 32 values, d = max|x| / 127 (f32),
 * id = 1/d (0 if d = 0), q = roundf(x·id) (half away from zero), d stored as f16 (nearest even).
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % 32) throw new Error(`quantizeQ8_0: ${x.length} values is not a multiple of 32`);
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
    const d = f32(amax / 127);
    const id = d ? f32(1 / d) : 0;
    dv.setUint16(b * 34, numberToF16(d), true);
    for (let j = 0; j < 32; j++) {
      const v = f32(x[b * 32 + j]! * id);
      const r = Math.sign(v) * Math.floor(Math.abs(v) + 0.5); // roundf; |v| + 0.5 is exact in f64
      dv.setInt8(b * 34 + 2 + j, r);
    }
  }
  return out;
}

/**
 * Q4_0 exactly as ggml's `quantize_row_q4_0_ref`: per 32 values, max = the value of largest magnitude (the first
 * such), d = max / -8, id = 1/d (f32), q = min(15, trunc(x·id + 8.5)) with x·id and + 8.5 two separate f32
 * operations (no fused multiply-add: an FMA, or gguf-py's float64 emulation of one, rounds a value like
 * 3.99999987 down to code 3 where the reference gives 4; llama.cpp's files, and the fixture, follow the reference),
 * d stored as f16. Byte j holds element j (low nibble) and element j+16 (high nibble).
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % 32) throw new Error(`quantizeQ4_0: ${x.length} values is not a multiple of 32`);
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 18);
  const dv = new DataView(out.buffer);
  const q = new Uint8Array(32);
  for (let b = 0; b < nb; b++) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[b * 32 + j]!;
      if (amax < Math.abs(v)) { amax = Math.abs(v); max = v; }
    }
    const d = f32(max / -8);
    const id = d ? f32(1 / d) : 0;
    dv.setUint16(b * 18, numberToF16(d), true);
    for (let j = 0; j < 32; j++) {
      const t = Math.trunc(f32(f32(x[b * 32 + j]! * id) + 8.5));
      q[j] = Math.max(0, Math.min(15, t));
    }
    for (let j = 0; j < 16; j++) out[b * 18 + 2 + j] = q[j]! | (q[j + 16]! << 4);
  }
  return out;
}
