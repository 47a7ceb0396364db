/** Helpers for backends that repack `HostMatrix` weights into their own layouts. */
import type { HostMatrix } from './kernels.js';
import { bf16ToNumber, f16ToNumber } from '../formats/dtype.js';

/** Element i (row-major) of a host matrix as a number, whatever its 16/32-bit storage. */
export function hostMatrixReader(m: HostMatrix): (i: number) => number {
  if (m.dtype === 'F32') {
    const d = m.data;
    return (i) => d[i]!;
  }
  const d = m.data;
  return m.dtype === 'BF16' ? (i) => bf16ToNumber(d[i]!) : (i) => f16ToNumber(d[i]!);
}
