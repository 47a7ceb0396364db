/**
 * The plain-TypeScript backend: the reference implementation of every kernel, written for clarity.
 *
 * Activations and state are Float64Array (JavaScript numbers are doubles, so this costs nothing and keeps
 * the js backend within ~1e-7 of the float64 reference); weights are f32, or bf16 bit patterns widened on the fly.
 *
 * f16 and int8 are offered as references for the fast backends' lower-precision storage: the weights are rounded
 * to f16, or quantized exactly as the wasm backend stores int8 (../quant.ts), then held as f32 and used in float64.
 * So `--backend js --dtype int8` is the int8 model itself, without the wasm kernels' own rounding. Likewise q4/q8_0:
 * the same ggml blocks every backend stores (a GGUF's own, or ggml's reference quantization), dequantized exactly.
 * With `activations: 'q8'` the inputs of q4 products are rounded first (roundActivationsQ8), the reference for wasm's
 * integer kernels.
 */
import type { Activation, ActivationMode, Backend, Buf, HostMatrix, Mat, MatmulOptions, WeightDType } from '../kernels.js';
import { UserError } from '../../errors.js';
import { bytesToFloat32, f16ToNumber, fromFloat32, numberToF16 } from '../../formats/dtype.js';
import { hostMatrixReader } from '../host-matrix.js';
import { INT8_GROUP, dequantizeBlocks, isBlockDType, matrixBlocks, quantizeRowInt8, roundActivationsQ8, storageDType } from '../quant.js';

class JsBuf implements Buf {
  readonly data: Float64Array;
  constructor(readonly length: number) {
    this.data = new Float64Array(length);
  }
}

class JsMat implements Mat {
  constructor(
    readonly rows: number,
    readonly cols: number,
    /** f32 values, or bf16 bit patterns. */
    readonly data: Float32Array | Uint16Array,
    /** Round the inputs to 8 bits first (a q4 matrix with `activations: 'q8'`). */
    readonly roundInputs = false,
  ) {}
}

const d = (b: Buf) => (b as JsBuf).data;

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** Σ w[wb + c] · x[xb + c] for c < n, in float64 with four independent partial sums (they overlap in the CPU). */
function dot(w: Float32Array, wb: number, x: Float64Array, xb: number, n: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let c = 0;
  for (; c + 3 < n; c += 4) {
    s0 += w[wb + c]! * x[xb + c]!;
    s1 += w[wb + c + 1]! * x[xb + c + 1]!;
    s2 += w[wb + c + 2]! * x[xb + c + 2]!;
    s3 += w[wb + c + 3]! * x[xb + c + 3]!;
  }
  for (; c < n; c++) s0 += w[wb + c]! * x[xb + c]!;
  return s0 + s1 + s2 + s3;
}

function activate(x: number, act: Activation): number {
  switch (act) {
    case 'none': return x;
    case 'tanh': return Math.tanh(x);
    case 'sigmoid': return sigmoid(x);
    case 'relu2': return x > 0 ? x * x : 0;
  }
}

export class JsBackend implements Backend {
  readonly name = 'js';
  readonly maxChunk = 32;

  constructor(readonly weightDType: WeightDType = 'f32', readonly activations: ActivationMode = 'full') {}

  buffer(length: number): Buf {
    return new JsBuf(length);
  }

  write(dst: Buf, src: Float32Array | Float64Array, dstOffset = 0): void {
    d(dst).set(src, dstOffset);
  }

  async read(src: Buf, offset = 0, length = src.length - offset): Promise<Float32Array> {
    return Float32Array.from(d(src).subarray(offset, offset + length));
  }

  copy(dst: Buf, src: Buf, length: number, dstOffset = 0, srcOffset = 0): void {
    d(dst).set(d(src).subarray(srcOffset, srcOffset + length), dstOffset);
  }

  matrix(m: HostMatrix): Mat {
    const n = m.rows * m.cols;
    const dtype = storageDType(this.weightDType, m.name, m);
    if (isBlockDType(dtype)) {
      return new JsMat(m.rows, m.cols, dequantizeBlocks(matrixBlocks(m, dtype), dtype, m.rows, m.cols), dtype === 'q4' && this.activations === 'q8');
    }
    if (dtype === 'f16' || dtype === 'int8') return new JsMat(m.rows, m.cols, dtype === 'f16' ? roundedToF16(m) : dequantizedInt8(m));
    if (dtype === 'bf16') {
      if (m.dtype === 'BF16') return new JsMat(m.rows, m.cols, m.data.slice(0, n));
      const f32 = m.dtype === 'F32' ? m.data : bytesToFloat32('F16', u16Bytes(m.data));
      return new JsMat(m.rows, m.cols, new Uint16Array(fromFloat32(f32.subarray(0, n), 'BF16').buffer));
    }
    if (m.dtype === 'F32') return new JsMat(m.rows, m.cols, m.data.slice(0, n));
    return new JsMat(m.rows, m.cols, bytesToFloat32(m.dtype, u16Bytes(m.data.subarray(0, n))));
  }

  free(): void {}

  layerNorm(out: Buf, x: Buf, w: Buf, b: Buf, T: number, n: number, groups: number, eps: number): void {
    const o = d(out), xs = d(x), ws = d(w), bs = d(b);
    const g = n / groups;
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < groups; h++) {
        const base = t * n + h * g;
        let mean = 0;
        for (let i = 0; i < g; i++) mean += xs[base + i]!;
        mean /= g;
        let v = 0;
        for (let i = 0; i < g; i++) v += (xs[base + i]! - mean) ** 2;
        const inv = 1 / Math.sqrt(v / g + eps);
        for (let i = 0; i < g; i++) o[base + i] = (xs[base + i]! - mean) * inv * ws[h * g + i]! + bs[h * g + i]!;
      }
    }
  }

  matmul(out: Buf, x: Buf, W: Mat, T: number, opts: MatmulOptions = {}): void {
    const { rows, cols, data, roundInputs } = W as JsMat;
    const o = d(out);
    let xs = d(x);
    if (roundInputs) {
      const rounded = new Float64Array(T * cols);
      for (let t = 0; t < T; t++) roundActivationsQ8(xs, t * cols, cols, rounded, t * cols);
      xs = rounded;
    }
    const bias = opts.bias ? d(opts.bias) : undefined;
    const act = opts.act ?? 'none';
    const acc = opts.accumulate ?? false;
    // bf16 rows are widened (exactly) into one f32 row buffer; f32 rows are read in place.
    const widened = data instanceof Uint16Array ? new Float32Array(cols) : undefined;
    const widenedBits = widened ? new Uint32Array(widened.buffer) : undefined;
    for (let r = 0; r < rows; r++) {
      let w: Float32Array, wb: number;
      if (widened) {
        const base = r * cols;
        for (let c = 0; c < cols; c++) widenedBits![c] = data[base + c]! << 16;
        w = widened; wb = 0;
      } else {
        w = data as Float32Array; wb = r * cols;
      }
      for (let t = 0; t < T; t++) {
        const s = dot(w, wb, xs, t * cols, cols);
        const i = t * rows + r;
        o[i] = acc ? o[i]! + s : activate(bias ? s + bias[r]! : s, act);
      }
    }
  }

  shiftLerp(outs: readonly Buf[], x: Buf, shift: Buf, mixes: readonly Buf[], T: number, C: number): void {
    const xs = d(x), sh = d(shift);
    for (let t = 0; t < T; t++) {
      const prev = t === 0 ? sh : xs.subarray((t - 1) * C, t * C);
      for (let m = 0; m < mixes.length; m++) {
        const o = d(outs[m]!), mix = d(mixes[m]!);
        for (let i = 0; i < C; i++) {
          const xi = xs[t * C + i]!;
          o[t * C + i] = xi + (prev[i]! - xi) * mix[i]!;
        }
      }
    }
    sh.set(xs.subarray((T - 1) * C, T * C));
  }

  decay(w: Buf, w0: Buf, T: number, C: number): void {
    const ws = d(w), b = d(w0);
    const k = Math.exp(-0.5); // 0.606531
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < C; i++) ws[t * C + i] = Math.exp(-k * sigmoid(b[i]! + ws[t * C + i]!));
    }
  }

  lerpInPlace(x: Buf, target: Buf, gate: Buf, length: number): void {
    const xs = d(x), ts = d(target), gs = d(gate);
    for (let i = 0; i < length; i++) xs[i] = xs[i]! + (ts[i]! - xs[i]!) * gs[i]!;
  }

  keyPrep(kk: Buf, k: Buf, a: Buf, kK: Buf, kA: Buf, T: number, C: number, N: number): void {
    const kks = d(kk), ks = d(k), as = d(a), kkw = d(kK), kaw = d(kA);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < C; h += N) {
        const base = t * C + h;
        let norm = 0;
        for (let j = 0; j < N; j++) {
          const v = ks[base + j]! * kkw[h + j]!;
          kks[base + j] = v;
          norm += v * v;
        }
        const inv = 1 / Math.max(Math.sqrt(norm), 1e-12);
        for (let j = 0; j < N; j++) kks[base + j] = kks[base + j]! * inv;
      }
      for (let i = 0; i < C; i++) {
        const j = t * C + i;
        ks[j] = ks[j]! * (1 + (as[j]! - 1) * kaw[i]!);
      }
    }
  }

  wkv(S: Buf, r: Buf, w: Buf, k: Buf, v: Buf, kk: Buf, a: Buf, y: Buf, T: number, C: number, N: number): void {
    const s = d(S), rs = d(r), ws = d(w), ks = d(k), vs = d(v), kks = d(kk), as = d(a), ys = d(y);
    const H = C / N;
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const x = t * C + h * N; // this head's slice of the token row
        for (let i = 0; i < N; i++) {
          const row = (h * N + i) * N; // S[h][i][:]
          let sa = 0;
          for (let j = 0; j < N; j++) sa -= s[row + j]! * kks[x + j]!;
          const vi = vs[x + i]!;
          let yi = 0;
          for (let j = 0; j < N; j++) {
            const sij = s[row + j]! * ws[x + j]! + sa * kks[x + j]! * as[x + j]! + vi * ks[x + j]!;
            s[row + j] = sij;
            yi += sij * rs[x + j]!;
          }
          ys[x + i] = yi;
        }
      }
    }
  }

  bonusGate(y: Buf, r: Buf, k: Buf, v: Buf, rK: Buf, g: Buf, T: number, C: number, N: number): void {
    const ys = d(y), rs = d(r), ks = d(k), vs = d(v), rk = d(rK), gs = d(g);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < C; h += N) {
        const x = t * C + h;
        let bonus = 0;
        for (let j = 0; j < N; j++) bonus += rs[x + j]! * ks[x + j]! * rk[h + j]!;
        for (let i = 0; i < N; i++) ys[x + i] = (ys[x + i]! + bonus * vs[x + i]!) * gs[x + i]!;
      }
    }
  }

  async sync(): Promise<void> {}
  dispose(): void {}
}

/** `m` rounded to f16 (round to nearest even), as f32. */
function roundedToF16(m: HostMatrix): Float32Array {
  const get = hostMatrixReader(m);
  const out = new Float32Array(m.rows * m.cols);
  for (let i = 0; i < out.length; i++) out[i] = f16ToNumber(numberToF16(get(i)));
  return out;
}

/** `m` quantized to the int8 format of ../quant.ts and dequantized (q · scale) to f32. */
function dequantizedInt8(m: HostMatrix): Float32Array {
  const { rows, cols } = m;
  const get = hostMatrixReader(m);
  const K = Math.ceil(cols / INT8_GROUP) * INT8_GROUP;
  const row = new Float64Array(K), q = new Int8Array(K), scales = new Float32Array(K / INT8_GROUP);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) row[c] = get(r * cols + c);
    quantizeRowInt8(row, q, 0, scales, 0);
    for (let c = 0; c < cols; c++) out[r * cols + c] = q[c]! * scales[Math.floor(c / INT8_GROUP)]!;
  }
  return out;
}

const u16Bytes = (u: Uint16Array) => new Uint8Array(u.buffer, u.byteOffset, u.byteLength);
