/**
 * The int8 weight format of the CPU backends: symmetric quantization with one f32 scale per row and group of
 * INT8_GROUP columns (scale = max|w| / 127, q = round(w / scale)). The wasm kernels store it; the js backend
 * evaluates the same quantized weights in float64, as the reference the wasm int8 kernels are tested against.
 *
 * The small LoRA factors (≈3% of the bytes, and the most sensitive: they feed the decay, a, v and gate through
 * sigmoids) are not quantized: they stay bf16.
 */
import type { WeightDType } from './kernels.js';

/** Columns per scale (wasm/kernels.ts assumes 64). */
export const INT8_GROUP = 64;

const LORA_NAME = /\.(w1|w2|a1|a2|v1|v2|g1|g2)$/;

/** The storage a matrix named `name` gets when `dtype` is asked for. */
export function storageDType(dtype: WeightDType, name: string): WeightDType {
  return dtype === 'int8' && LORA_NAME.test(name) ? 'bf16' : dtype;
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
