/**
 * Non-finite values (NaN, +Infinity, -Infinity) in tensors. A checkpoint holding any in its weights is corrupt (a
 * bit flip, a diverged training run): the model would produce NaN logits without a word. Loaders scan each tensor
 * once, as its values are converted, and refuse it by name unless the user insists.
 *
 * The scans read bit patterns (an f32, bf16 or f16 value is non-finite exactly when its exponent bits are all ones),
 * in one tight pass with no allocation.
 */
import { FormatError } from '../errors.js';

/** Where a scan found non-finite values: how many, and the first one. */
export interface NonFinite {
  count: number;
  /** Element index of the first non-finite value. */
  first: number;
  /** That value (NaN, Infinity or -Infinity). */
  value: number;
}

/** Exponent mask of each format: all ones means Inf or NaN. */
const EXP16 = { BF16: 0x7f80, F16: 0x7c00 } as const;

function count(n: number, bad: (i: number) => boolean, first: number, value: number): NonFinite {
  let c = 0;
  for (let i = first; i < n; i++) if (bad(i)) c++;
  return { count: c, first, value };
}

/** The non-finite values of f32 (or f64) data, or undefined if every value is finite. */
export function findNonFinite(values: Float32Array | Float64Array): NonFinite | undefined {
  const n = values.length;
  let i = 0;
  if (values instanceof Float32Array && values.byteOffset % 4 === 0) {
    const bits = new Uint32Array(values.buffer, values.byteOffset, n);
    while (i < n && (bits[i]! & 0x7f800000) !== 0x7f800000) i++;
  } else {
    while (i < n && Number.isFinite(values[i]!)) i++;
  }
  if (i === n) return undefined;
  return count(n, (k) => !Number.isFinite(values[k]!), i, values[i]!);
}

/** The non-finite values of raw bf16 or f16 bit patterns, or undefined if every value is finite. */
export function findNonFinite16(bits: Uint16Array, dtype: 'BF16' | 'F16'): NonFinite | undefined {
  const exp = EXP16[dtype];
  const n = bits.length;
  let i = 0;
  if (bits.byteOffset % 4 === 0) {
    // Two values per 32-bit word: (h & exp) + the exponent's lowest bit reaches bit 15 exactly when the exponent is
    // all ones (and never carries into the other half). Stops at the first word holding one; the loop below finds it.
    const w = new Uint32Array(bits.buffer, bits.byteOffset, n >> 1);
    const m2 = (exp | (exp << 16)) >>> 0, one = (exp & -exp) * 0x10001;
    let j = 0;
    const end4 = w.length & ~3;
    for (; j < end4; j += 4) {
      const t = (((w[j]! & m2) + one) | ((w[j + 1]! & m2) + one) | ((w[j + 2]! & m2) + one) | ((w[j + 3]! & m2) + one));
      if (t & 0x80008000) break;
    }
    i = 2 * j;
  }
  while (i < n && (bits[i]! & exp) !== exp) i++;
  if (i === n) return undefined;
  const h = bits[i]!;
  const value = (h & (dtype === 'BF16' ? 0x7f : 0x3ff)) !== 0 ? NaN : h & 0x8000 ? -Infinity : Infinity;
  return count(n, (k) => (bits[k]! & exp) === exp, i, value);
}

/** A short description: "3 non-finite values (the first, NaN, at element 17)". */
export function describeNonFinite(nf: NonFinite): string {
  return `${nf.count} non-finite value${nf.count === 1 ? '' : 's'} (the first, ${nf.value}, at element ${nf.first})`;
}

/**
 * Throws a FormatError naming the file and tensor if `values` holds NaN or an infinity.
 * `values` is f32/f64 data, or raw 16-bit patterns of `dtype` BF16/F16.
 */
export function assertFinite(path: string, tensor: string, values: Float32Array | Float64Array | Uint16Array, dtype?: 'BF16' | 'F16'): void {
  const nf = values instanceof Uint16Array ? findNonFinite16(values, dtype ?? 'BF16') : findNonFinite(values);
  if (nf) {
    throw new FormatError(`${path}: tensor ${tensor} holds ${describeNonFinite(nf)}; the checkpoint is corrupt (set allowNonFinite to load it anyway)`);
  }
}
