/**
 * Element-type conversions. All tensor bytes are little-endian (as in .pth and safetensors files); the
 * typed-array views below assume a little-endian host, which every platform Node supports today is.
 */
import { FormatError } from '../errors.js';
import { DTYPE_BYTES, type DType, type TensorRef } from './types.js';

/** Returns `bytes` if its offset suits `align`, else an aligned copy (typed arrays need aligned offsets). */
function aligned(bytes: Uint8Array, align: number): Uint8Array {
  return bytes.byteOffset % align === 0 ? bytes : bytes.slice();
}

let f16Table: Uint32Array | undefined;
/** f16 bit pattern -> f32 bit pattern, exact for every value (subnormals, infinities, NaN payloads). */
function halfTable(): Uint32Array {
  if (f16Table) return f16Table;
  const t = new Uint32Array(65536);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      f[0] = mant * 2 ** -24; // zero or subnormal: exactly representable in f32
      t[h] = (u[0]! | sign) >>> 0;
    } else if (exp === 31) {
      t[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf / NaN (payload kept)
    } else {
      t[h] = (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
    }
  }
  return (f16Table = t);
}

/** Decodes raw little-endian tensor bytes of `dtype` into a Float32Array. */
export function bytesToFloat32(dtype: DType, bytes: Uint8Array): Float32Array {
  const es = DTYPE_BYTES[dtype];
  if (bytes.length % es) throw new FormatError(`tensor byte length ${bytes.length} is not a multiple of ${dtype} size ${es}`);
  const n = bytes.length / es;
  const b = aligned(bytes, es);
  switch (dtype) {
    case 'F32':
      return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
    case 'BF16': {
      // bf16 is the top half of an f32: a 16-bit shift.
      const src = new Uint16Array(b.buffer, b.byteOffset, n);
      const out = new Uint32Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i]! << 16;
      return new Float32Array(out.buffer);
    }
    case 'F16': {
      const src = new Uint16Array(b.buffer, b.byteOffset, n);
      const table = halfTable();
      const out = new Uint32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[src[i]!]!;
      return new Float32Array(out.buffer);
    }
    case 'F64': return Float32Array.from(new Float64Array(b.buffer, b.byteOffset, n));
    case 'I64': return Float32Array.from(new BigInt64Array(b.buffer, b.byteOffset, n), (v) => Number(v));
    case 'I32': return Float32Array.from(new Int32Array(b.buffer, b.byteOffset, n));
    case 'I16': return Float32Array.from(new Int16Array(b.buffer, b.byteOffset, n));
    case 'I8': return Float32Array.from(new Int8Array(b.buffer, b.byteOffset, n));
    case 'U8': case 'BOOL': return Float32Array.from(b);
  }
}

/**
 * The largest tensor this runtime loads. A tensor is accepted when its stored bytes and its f32 form (what toFloat32
 * and the js backend hold) are each under 2 GiB: fewer than 2^29 elements for 8-, 16- and 32-bit types, 2^28 for
 * 64-bit ones. Beyond that, single reads and typed arrays fail here (`Invalid typed array length`, a negative read
 * length), and no RWKV-7 release comes near it: the largest tensor of a 14B model, its 65536 x 5120 embedding, is
 * 2^28.3 elements (1.25 GiB as f32). Readers check this from the header, by tensor name, before allocating anything.
 */
export const MAX_TENSOR_BYTES = 2 ** 31;

/** Elements of a shape, exactly (a BigInt product: a lying header can claim more than 2^53). */
export function shapeElements(shape: readonly number[]): bigint {
  let n = 1n;
  for (const d of shape) n *= BigInt(d);
  return n;
}

/**
 * Throws a FormatError naming the file and tensor if a tensor of `numel` elements of `bytesPerElement` bytes (in the
 * file) is larger than MAX_TENSOR_BYTES allows; returns `numel` as a number otherwise.
 */
export function checkTensorSize(file: string, tensor: string, shape: readonly number[], dtype: string, bytesPerElement: number, numel: bigint = shapeElements(shape)): number {
  const widest = BigInt(Math.max(4, Math.ceil(bytesPerElement)));
  if (numel * widest >= BigInt(MAX_TENSOR_BYTES)) {
    const gib = (x: bigint): string => (Number(x) / 2 ** 30).toPrecision(3);
    throw new FormatError(`${file}: tensor ${tensor} [${shape.join(', ')}] ${dtype} has ${numel} elements (${gib(numel * BigInt(Math.ceil(bytesPerElement)))} GiB in the file, ${gib(numel * 4n)} GiB as f32): too large for this runtime (a tensor's bytes and its f32 form must each be under 2 GiB)`);
  }
  return Number(numel);
}

/** Reads a tensor and decodes it to f32 (refusing, before reading, a tensor too large to hold: see MAX_TENSOR_BYTES). */
export function toFloat32(ref: TensorRef): Float32Array {
  checkTensorSize('tensor data', ref.name, ref.shape, ref.dtype, DTYPE_BYTES[ref.dtype] ?? 8);
  const bytes = ref.read();
  // f32 bytes that are a whole fresh buffer of their own (TensorRef.read's contract) are used as they are, not copied
  if (ref.dtype === 'F32' && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.byteLength % 4 === 0 &&
      !(typeof SharedArrayBuffer !== 'undefined' && bytes.buffer instanceof SharedArrayBuffer)) {
    return new Float32Array(bytes.buffer, 0, bytes.byteLength / 4);
  }
  return bytesToFloat32(ref.dtype, bytes);
}

const scalarF32 = new Float32Array(1);
const scalarU32 = new Uint32Array(scalarF32.buffer);

/** bf16 bit pattern -> its value (exact). */
export function bf16ToNumber(h: number): number {
  scalarU32[0] = h << 16;
  return scalarF32[0]!;
}

/** f16 bit pattern -> its value (exact). */
export function f16ToNumber(h: number): number {
  scalarU32[0] = halfTable()[h & 0xffff]!;
  return scalarF32[0]!;
}

/** A number rounded to f32, then to bf16 (nearest even): the bit pattern. */
export function numberToBf16(x: number): number {
  scalarF32[0] = x;
  return f32BitsToBf16(scalarU32[0]!);
}

/** A number rounded to f32, then to f16 (nearest even): the bit pattern. */
export function numberToF16(x: number): number {
  scalarF32[0] = x;
  return f32BitsToF16(scalarU32[0]!);
}

/** f32 bit pattern -> bf16 bit pattern, round to nearest even; NaN stays NaN. */
export function f32BitsToBf16(x: number): number {
  x >>>= 0;
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f32 bit pattern -> f16 bit pattern, round to nearest even; overflow -> inf, tiny -> subnormal/zero. */
export function f32BitsToF16(x: number): number {
  x >>>= 0;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 255) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal f16: m = M / 2^(14 - e) with M the 24-bit significand.
    const shift = 14 - e;
    if (shift > 24) return sign;
    const m = mant | 0x800000;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // a carry into the exponent is correct (up to inf)
  return sign | h;
}

export type FloatDType = 'F32' | 'F16' | 'BF16';

/** Encodes f32 values as little-endian bytes of `dtype` (round to nearest even for f16/bf16). */
export function fromFloat32(values: Float32Array, dtype: FloatDType): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  const conv = dtype === 'BF16' ? f32BitsToBf16 : f32BitsToF16;
  for (let i = 0; i < values.length; i++) out[i] = conv(bits[i]!);
  return new Uint8Array(out.buffer);
}

export function isFloatDType(d: DType): d is 'F64' | FloatDType {
  return d === 'F64' || d === 'F32' || d === 'F16' || d === 'BF16';
}

/** Reads a tensor's bytes converted to `dtype`; same dtype (or non-float tensors) are copied bit-exactly. */
export function readAs(ref: TensorRef, dtype: FloatDType): { dtype: DType; bytes: Uint8Array } {
  if (ref.dtype === dtype || !isFloatDType(ref.dtype)) return { dtype: ref.dtype, bytes: ref.read() };
  return { dtype, bytes: fromFloat32(toFloat32(ref), dtype) };
}
