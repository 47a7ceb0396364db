/**
 * Moves a checkpoint's tensors (canonical BlinkDL names, see src/formats/types.ts) onto a backend.
 *
 * Vectors become f32 buffers; matrices are uploaded as [out, in] (`matmul` computes W · x): the Linear
 * weights already are, the LoRA factors (`w1` [C, r], `w2` [r, C], ... used as `x @ w1`) are transposed here.
 * bf16/f16 data stay 16-bit all the way to the backend, so nothing is rounded twice; a GGUF's Q4_0/Q8_0 blocks go
 * along with their exact values (`HostMatrix.blocks`), for backends storing that block type as it is.
 * The embedding stays on the host (one row per token is looked up and layer-normed by the model).
 */
import type { Backend, Buf, HostBlocks, HostMatrix, Mat } from '../backends/kernels.js';
import type { GgufTensorRef } from '../formats/gguf-rwkv7.js';
import type { Checkpoint, TensorRef } from '../formats/types.js';
import type { ModelConfig } from './config.js';
import { FormatError } from '../errors.js';
import { f16ToNumber, isFloatDType, toFloat32 } from '../formats/dtype.js';
import { dequantize } from '../formats/gguf-quant.js';
import { assertFinite } from '../formats/finite.js';

export interface AttentionWeights {
  x_r: Buf; x_w: Buf; x_k: Buf; x_v: Buf; x_a: Buf; x_g: Buf;
  w0: Buf; w1: Mat; w2: Mat;
  a0: Buf; a1: Mat; a2: Mat;
  /** Absent in layer 0 (its v is v_first). */
  v0?: Buf; v1?: Mat; v2?: Mat;
  g1: Mat; g2: Mat;
  k_k: Buf; k_a: Buf; r_k: Buf;
  receptance: Mat; key: Mat; value: Mat; output: Mat;
  ln_x_w: Buf; ln_x_b: Buf;
}

export interface LayerWeights {
  ln1w: Buf; ln1b: Buf; ln2w: Buf; ln2b: Buf;
  att: AttentionWeights;
  ffn: { x_k: Buf; key: Mat; value: Mat };
}

/** The embedding table, kept on the host in its file dtype. */
export interface Embedding {
  /** Writes row `id` into `out` (length C). */
  row(id: number, out: Float64Array): void;
}

export interface ModelWeights {
  emb: Embedding;
  ln0w: Float64Array; ln0b: Float64Array;
  layers: LayerWeights[];
  lnOutW: Buf; lnOutB: Buf;
  head: Mat;
}

export type LoadProgress = (done: number, total: number) => void;

export interface LoadWeightsOptions {
  /** Called once per tensor. */
  onProgress?: LoadProgress;
  /**
   * Accept weights holding NaN or infinities. Default false: such a checkpoint is corrupt (it would produce NaN
   * logits), and is refused naming the first such tensor. Each tensor is scanned once, as it is converted.
   */
  allowNonFinite?: boolean;
}

/** Upload every tensor of `ck` to `backend` (the 4th argument: a progress callback, or options). */
export function loadWeights(ck: Checkpoint, config: ModelConfig, backend: Backend, options?: LoadProgress | LoadWeightsOptions): ModelWeights {
  const opts: LoadWeightsOptions = typeof options === 'function' ? { onProgress: options } : options ?? {};
  const onProgress = opts.onProgress;
  const finite: FiniteCheck = opts.allowNonFinite ? () => {} : (name, values, dtype) => assertFinite(ck.path, name, values, dtype);
  const total = ck.tensors.size;
  let done = 0;
  const ref = (name: string): TensorRef => {
    const t = ck.tensors.get(name);
    if (!t) throw new FormatError(`${ck.path}: tensor '${name}' is missing`);
    return t;
  };
  const tick = () => onProgress?.(++done, total);
  const vec = (name: string): Buf => {
    const data = toF32(ref(name), ck.path);
    finite(name, data);
    const b = backend.buffer(data.length);
    backend.write(b, data);
    tick();
    return b;
  };
  /** A Linear weight, already [out, in]. */
  const linear = (name: string): Mat => {
    const m = backend.matrix(hostMatrix(ref(name), ck.path, false, finite));
    tick();
    return m;
  };
  /** A LoRA factor stored [in, out] (used as `x @ W`): transposed to [out, in]. */
  const lora = (name: string): Mat => {
    const m = backend.matrix(hostMatrix(ref(name), ck.path, true, finite));
    tick();
    return m;
  };
  const host64 = (name: string): Float64Array => {
    const f = toF32(ref(name), ck.path);
    finite(name, f);
    const v = Float64Array.from(f);
    tick();
    return v;
  };

  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.nLayer; i++) {
    const p = `blocks.${i}.`;
    const has = (n: string) => ck.tensors.has(p + n);
    // Uploaded in the order a step uses them (src/model/rwkv7.ts), so that each layer's small LoRA factors and vectors
    // sit between the matrices read just before and after them: cold in cache every step, they start faster so
    // (decode 0.1B, 2 threads, median round of paired runs against the checkpoint's order: int8 ×1.001 and ×1.012,
    // q4+a8 ×1.030 and ×1.020 — a small gain, near this host's noise; the order changes no value).
    const ln1w = vec(p + 'ln1.weight'), ln1b = vec(p + 'ln1.bias');
    const att: AttentionWeights = {
      x_r: vec(p + 'att.x_r'), x_w: vec(p + 'att.x_w'), x_k: vec(p + 'att.x_k'),
      x_v: vec(p + 'att.x_v'), x_a: vec(p + 'att.x_a'), x_g: vec(p + 'att.x_g'),
      receptance: linear(p + 'att.receptance.weight'),
      w1: lora(p + 'att.w1'), w2: lora(p + 'att.w2'), w0: vec(p + 'att.w0'),
      key: linear(p + 'att.key.weight'), value: linear(p + 'att.value.weight'),
      ...(i > 0 ? { v1: lora(p + 'att.v1'), v2: lora(p + 'att.v2'), v0: vec(p + 'att.v0') } : {}),
      a1: lora(p + 'att.a1'), a2: lora(p + 'att.a2'), a0: vec(p + 'att.a0'),
      g1: lora(p + 'att.g1'), g2: lora(p + 'att.g2'),
      k_k: vec(p + 'att.k_k'), k_a: vec(p + 'att.k_a'),
      ln_x_w: vec(p + 'att.ln_x.weight'), ln_x_b: vec(p + 'att.ln_x.bias'), r_k: vec(p + 'att.r_k'),
      output: linear(p + 'att.output.weight'),
    };
    if (i === 0 && has('att.v0')) done += ['att.v0', 'att.v1', 'att.v2'].filter(has).length; // present in some releases, unused in layer 0
    const ln2w = vec(p + 'ln2.weight'), ln2b = vec(p + 'ln2.bias');
    const ffn = { x_k: vec(p + 'ffn.x_k'), key: linear(p + 'ffn.key.weight'), value: linear(p + 'ffn.value.weight') };
    layers.push({ ln1w, ln1b, ln2w, ln2b, att, ffn });
  }
  const emb = embedding(ref('emb.weight'), config, ck.path, finite);
  tick();
  const weights: ModelWeights = {
    emb,
    ln0w: host64('blocks.0.ln0.weight'), ln0b: host64('blocks.0.ln0.bias'),
    layers,
    lnOutW: vec('ln_out.weight'), lnOutB: vec('ln_out.bias'),
    head: linear('head.weight'),
  };
  onProgress?.(total, total);
  return weights;
}

/** Any float tensor as f32 values (bf16 and f16 widen exactly; f64 rounds to nearest). */
export function toF32(t: TensorRef, path: string): Float32Array {
  if (!isFloatDType(t.dtype)) {
    throw new FormatError(`${path}: tensor '${t.name}' has dtype ${t.dtype}; a float type (F32, F16, BF16, F64) was expected`);
  }
  return toFloat32(t);
}

/** Refuses (or, with allowNonFinite, accepts) a tensor's values: f32 data, or raw bf16/f16 bit patterns. */
type FiniteCheck = (name: string, values: Float32Array | Uint16Array, dtype?: 'BF16' | 'F16') => void;

function hostMatrix(t: TensorRef, path: string, transpose: boolean, finite: FiniteCheck): HostMatrix {
  if (t.shape.length !== 2) throw new FormatError(`${path}: tensor '${t.name}' has shape [${t.shape.join(', ')}]; a matrix was expected`);
  let [rows, cols] = t.shape as [number, number];
  const name = t.name;
  if ((t.dtype === 'BF16' || t.dtype === 'F16') && !transpose && t.readInto) return fillable(t, rows, cols, finite, t.dtype);
  if (t.dtype === 'BF16' || t.dtype === 'F16') {
    let data = bits16(t, rows * cols);
    finite(name, data, t.dtype);
    if (transpose) { data = transposed(data, rows, cols, new Uint16Array(rows * cols)); [rows, cols] = [cols, rows]; }
    return { name, rows, cols, dtype: t.dtype, data };
  }
  const blocks = ggmlBlocks(t, transpose);
  if (blocks) return blockMatrix(t, path, rows, cols, transpose, blocks, finite);
  let data = toF32(t, path);
  finite(name, data);
  if (transpose) { data = transposed(data, rows, cols, new Float32Array(rows * cols)); [rows, cols] = [cols, rows]; }
  return { name, rows, cols, dtype: 'F32', data };
}

/**
 * A GGUF Q4_0/Q8_0 matrix with its blocks (`HostMatrix.blocks`): `data`, their dequantization, is computed only if a
 * backend asks for it (one that stores another type). The values are finite exactly when the blocks' f16 scales are
 * (the codes are integers, and a finite scale times a code is finite in f32), so the scales are what is checked; one
 * that is not finite makes `data` be computed and checked, for the error `data` gives.
 */
function blockMatrix(t: TensorRef, path: string, rows: number, cols: number, transpose: boolean, blocks: HostBlocks, finite: FiniteCheck): HostMatrix {
  let data: Float32Array | undefined;
  const whole = (): Float32Array => {
    if (!data) {
      let d = toF32(t, path);
      finite(t.name, d);
      if (transpose) d = transposed(d, rows, cols, new Float32Array(rows * cols));
      data = d;
    }
    return data;
  };
  if (!blockScalesFinite(blocks.data, blocks.type === 'Q4_0' ? 18 : 34)) whole();
  const [R, C] = transpose ? [cols, rows] : [rows, cols];
  return { name: t.name, rows: R, cols: C, dtype: 'F32', blocks, get data() { return whole(); } };
}

/**
 * A 16-bit matrix the backend reads into place (`HostMatrix.fill`): each part is checked for non-finite values as
 * it arrives; one holding any makes the whole tensor be read and checked, for the same error as `data` gives.
 */
function fillable(t: TensorRef, rows: number, cols: number, finite: FiniteCheck, dtype: 'BF16' | 'F16'): HostMatrix {
  const readInto = t.readInto!.bind(t);
  let data: Uint16Array | undefined;
  const whole = (): Uint16Array => {
    if (!data) {
      const d = bits16(t, rows * cols);
      finite(t.name, d, dtype);
      data = d;
    }
    return data;
  };
  return {
    name: t.name, rows, cols, dtype,
    get data() { return whole(); },
    fill(dst, row, n, unchecked = false) {
      if (row < 0 || n < 0 || row + n > rows || dst.length < n * cols) throw new RangeError(`fill: rows [${row}, ${row + n}) of ${t.name} into ${dst.length} values`);
      const part = dst.subarray(0, n * cols);
      readInto(new Uint8Array(part.buffer, part.byteOffset, part.byteLength), row * cols * 2);
      if (unchecked) return; // the caller checks (see HostMatrix.fill)
      try {
        finite(t.name, part, dtype);
      } catch (e) {
        whole(); // throws the whole tensor's error (count and first element)
        throw e;
      }
    },
  };
}

/**
 * A GGUF tensor's own Q4_0/Q8_0 blocks, when they are rows of the matrix as uploaded ([out, in]): the Linear
 * weights, and the LoRA factors, which GGUF stores already transposed (nn.Linear orientation). Their values are
 * `data` exactly (the reader dequantizes them exactly), so the finiteness check of `data` covers them.
 */
function ggmlBlocks(t: TensorRef, transpose: boolean): HostBlocks | undefined {
  const g = (t as GgufTensorRef).ggml;
  if (!g || g.transposed !== transpose) return undefined;
  const type = g.type.name;
  if (type !== 'Q4_0' && type !== 'Q8_0') return undefined;
  return { type, data: g.readRaw() };
}

/** The first n 16-bit patterns of a BF16/F16 tensor (its bytes copied only where they are not 2-byte aligned). */
function bits16(t: TensorRef, n: number): Uint16Array {
  const bytes = t.read();
  const copy = (bytes.byteOffset & 1) === 0 ? bytes : bytes.slice();
  return new Uint16Array(copy.buffer, copy.byteOffset, n);
}

/** Whether every Q4_0/Q8_0 block (`bytes` each, its f16 scale first) has a finite scale: its exponent not all ones. */
function blockScalesFinite(b: Uint8Array, bytes: number): boolean {
  for (let o = 0; o + 1 < b.length; o += bytes) if ((b[o + 1]! & 0x7c) === 0x7c) return false;
  return true;
}

function transposed<A extends Float32Array | Uint16Array>(src: A, rows: number, cols: number, dst: A): A {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c]!;
  return dst;
}

function embedding(t: TensorRef, config: ModelConfig, path: string, finite: FiniteCheck): Embedding {
  const C = config.nEmbd;
  if (t.dtype === 'BF16' || t.dtype === 'F16') { // kept as it is (half the memory of f32), widened a row at a time
    const u16 = bits16(t, config.vocabSize * C);
    finite(t.name, u16, t.dtype);
    if (t.dtype === 'F16') return { row(id, out) { for (let i = 0; i < C; i++) out[i] = f16ToNumber(u16[id * C + i]!); } };
    const cvt = new Float32Array(1);
    const bits = new Uint32Array(cvt.buffer);
    return {
      row(id, out) {
        const base = id * C;
        for (let i = 0; i < C; i++) { bits[0] = u16[base + i]! << 16; out[i] = cvt[0]!; }
      },
    };
  }
  const g = (t as GgufTensorRef).ggml;
  if (g && !g.transposed && (g.type.name === 'Q4_0' || g.type.name === 'Q8_0') && C % 32 === 0) {
    // a GGUF's quantized table: kept as its blocks, a row dequantized per lookup (exactly the values of `read`)
    const raw = g.readRaw(), rowBytes = (C / 32) * g.type.typeSize;
    if (raw.length !== config.vocabSize * rowBytes) throw new FormatError(`${path}: tensor ${t.name} has ${raw.length} bytes, expected ${config.vocabSize * rowBytes}`);
    if (!blockScalesFinite(raw, g.type.typeSize)) finite(t.name, toF32(t, path)); // the whole table's check and error
    return { row(id, out) { out.set(dequantize(g.type, raw.subarray(id * rowBytes, (id + 1) * rowBytes), C)); } };
  }
  const f32 = toF32(t, path);
  finite(t.name, f32);
  return { row(id, out) { for (let i = 0; i < C; i++) out[i] = f32[id * C + i]!; } };
}
