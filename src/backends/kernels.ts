/**
 * The kernel interface: everything the RWKV-7 model (src/model/rwkv7.ts) asks of a compute backend.
 *
 * The model owns the math's *order*; a backend owns memory and the arithmetic of each op. Backends
 * (js, wasm, webgpu) implement this interface and nothing else, so a new backend replaces kernels, not the model.
 *
 * Conventions
 * - A `Buf` is a backend-owned float buffer of `length` elements (f32 or wider). Activations are row-major
 *   `[T, n]`: T token rows of n values. Ops get T and sizes explicitly.
 * - A `Mat` is a weight matrix `[rows, cols]` = `[out, in]` (PyTorch Linear order), stored in the backend's
 *   weight dtype. `matmul` computes `out[t] = act(W · x[t] + bias)` for every row t.
 * - Ops are enqueued in call order and may run asynchronously (WebGPU records them into one submission);
 *   only `read` waits. Output buffers never alias input buffers unless an op says so.
 * - WKV state layout per layer: `[H, N, N]` with `S[h][i][j]`, i the value index and j the key index
 *   (as in the reference `S @ r`).
 */

/**
 * Storage type of weight matrices. Vectors and activations are always f32 (or wider).
 * `q4` and `q8_0` are ggml's Q4_0 and Q8_0 blocks (32 values, one f16 scale; see ./quant.ts): a GGUF with those
 * blocks is used as stored, float weights are quantized as ggml's reference quantizer does.
 */
export type WeightDType = 'f32' | 'f16' | 'bf16' | 'int8' | 'q4' | 'q8_0';
export const WEIGHT_DTYPES: readonly WeightDType[] = ['f32', 'f16', 'bf16', 'int8', 'q4', 'q8_0'];

/**
 * What the inputs of 4-bit (q4) matrix products are: `full`, the activations as they are (the default, within the
 * golden bounds); or `q8`, rounded per token and block of 32 to 8-bit codes with an f32 scale, as llama.cpp computes
 * Q4_0 products (its Q8_0 activations). `q8` lets the CPU multiply in integers (about 2× faster 4-bit decode on
 * wasm) at some accuracy (see `rwkv7 ppl`); the rounding is roundActivationsQ8 in ./quant.ts.
 */
export type ActivationMode = 'full' | 'q8';
export const ACTIVATION_MODES: readonly ActivationMode[] = ['full', 'q8'];

/** Backend-owned float buffer (opaque to the model). */
export interface Buf {
  readonly length: number;
}

/** Backend-owned weight matrix [rows=out, cols=in] (opaque to the model). */
export interface Mat {
  readonly rows: number;
  readonly cols: number;
}

/**
 * A weight matrix as read from a checkpoint, row-major [rows=out, cols=in].
 * `BF16`/`F16` data are the raw 16-bit patterns (so bf16 checkpoints stay exact and compact).
 * `blocks`: the file's own ggml blocks of the same matrix (a GGUF Q4_0/Q8_0 tensor, already in [out, in]
 * orientation: each row is cols / 32 blocks); `data` then holds their exact dequantization. A backend storing that
 * block type takes the blocks as they are (no re-rounding).
 * `fill` (16-bit matrices of files read by offset): writes rows [row, row + n) of `data` (n·cols values, natural
 * order) into `dst`, straight from the file and checked as `data` is, so that a backend can read a matrix into its
 * own memory with no host copy of it; `data` is then read only if something asks for it. With `unchecked`, the
 * caller checks the values itself (in a pass it makes over them anyway) and, if one is not finite, reads `data`:
 * that checks the whole tensor and throws the error `data` gives (or, where non-finite values are allowed, returns).
 */
export type HostMatrix =
  | { name: string; rows: number; cols: number; dtype: 'F32'; data: Float32Array; blocks?: HostBlocks }
  | { name: string; rows: number; cols: number; dtype: 'BF16' | 'F16'; data: Uint16Array; blocks?: HostBlocks; fill?: (dst: Uint16Array, row: number, n: number, unchecked?: boolean) => void };

/** ggml Q4_0 (18 bytes per 32 values) or Q8_0 (34 bytes) blocks, row-major. */
export interface HostBlocks {
  type: 'Q4_0' | 'Q8_0';
  data: Uint8Array;
}

/** Activation applied by `matmul` after the optional bias. `relu2` is `relu(x)²` (the channel-mix key). */
export type Activation = 'none' | 'tanh' | 'sigmoid' | 'relu2';

export interface MatmulOptions {
  /** Added to every output row before the activation (length = W.rows). */
  bias?: Buf;
  act?: Activation;
  /** `out[t] += W · x[t]` instead of `out[t] = ...` (the residual add; no bias or activation allowed then). */
  accumulate?: boolean;
}

/** One sequence's rows of a batched `wkvSegments`: its WKV state ([H, N, N]) and its rows [start, start + length). */
export interface WkvSegment {
  readonly state: Buf;
  readonly start: number;
  readonly length: number;
}

export interface Backend {
  readonly name: string;
  /** Storage type of the weight matrices this backend was created for. */
  readonly weightDType: WeightDType;
  /** Inputs of q4 products (js and wasm; absent or `full`: as they are). */
  readonly activations?: ActivationMode;
  /** Largest number of token rows the model should pass to one op (prefill is cut into chunks of this size). */
  readonly maxChunk: number;

  // ---- memory ----
  /** A zero-filled float buffer of `length` elements. */
  buffer(length: number): Buf;
  /**
   * Copy host values into `dst` starting at element `dstOffset` (default 0). Float64Array input lets a backend
   * that computes in double precision (js) keep it; f32 backends round it once.
   */
  write(dst: Buf, src: Float32Array | Float64Array, dstOffset?: number): void;
  /** Read `length` elements from `offset` (defaults: the whole buffer). Waits for all queued work. */
  read(src: Buf, offset?: number, length?: number): Promise<Float32Array>;
  /** `dst[dstOffset + i] = src[srcOffset + i]` for i < length. */
  copy(dst: Buf, src: Buf, length: number, dstOffset?: number, srcOffset?: number): void;
  /** Upload a weight matrix, converting it to `weightDType`. */
  matrix(m: HostMatrix): Mat;
  /** Free a buffer or matrix (no-op where memory is garbage-collected). */
  free(b: Buf | Mat): void;

  // ---- ops ----
  /**
   * Layer norm over `groups` equal groups of each row of n values (groups = 1: LayerNorm; groups = H: the
   * per-head GroupNorm of the time-mix output): `out = (x - mean) / sqrt(var + eps) * w + b`.
   * `out` may alias `x`.
   */
  layerNorm(out: Buf, x: Buf, w: Buf, b: Buf, T: number, n: number, groups: number, eps: number): void;

  /** `out[t] = act(W · x[t] + bias)` (or `out[t] += W · x[t]` with `accumulate`), x: [T, W.cols], out: [T, W.rows]. */
  matmul(out: Buf, x: Buf, W: Mat, T: number, opts?: MatmulOptions): void;

  /**
   * Token shift and lerps. With `prev[0] = shift` and `prev[t] = x[t-1]`:
   * `outs[i][t] = x[t] + (prev[t] - x[t]) * mixes[i]` for each mix vector (length C). Then `shift = x[T-1]`.
   */
  shiftLerp(outs: readonly Buf[], x: Buf, shift: Buf, mixes: readonly Buf[], T: number, C: number): void;

  /** Decay, in place: `w = exp(-0.606531 * sigmoid(w0 + w))` (w: [T, C], w0: [C]). */
  decay(w: Buf, w0: Buf, T: number, C: number): void;

  /** In place, element-wise over `length` values: `x = x + (target - x) * gate` (the value residual). */
  lerpInPlace(x: Buf, target: Buf, gate: Buf, length: number): void;

  /**
   * Key preparation (k, a: [T, C]; kK, kA: [C]):
   * `kk = normalize_per_head(k * kK)` (L2 over each head of N values, norm clamped at 1e-12), then in place
   * `k = k * (1 + (a - 1) * kA)`.
   */
  keyPrep(kk: Buf, k: Buf, a: Buf, kK: Buf, kA: Buf, T: number, C: number, N: number): void;

  /**
   * The WKV-7 recurrence over T tokens, updating `S` ([H, N, N]) in place and writing y: [T, C]. Per token and head:
   * `sa[i] = Σ_j S[i][j] · (-kk[j])`, `S[i][j] = S[i][j]·w[j] + sa[i]·kk[j]·a[j] + v[i]·k[j]`, `y[i] = Σ_j S[i][j]·r[j]`.
   */
  wkv(S: Buf, r: Buf, w: Buf, k: Buf, v: Buf, kk: Buf, a: Buf, y: Buf, T: number, C: number, N: number): void;

  /**
   * Optional: `wkv` for several sequences in one op — segment g runs rows [start, start + length) of r … y from its
   * own state — with the same results as one `wkv` per segment on those rows. A backend that has it spares the
   * model a copy of each later sequence's rows and one hand-off per sequence (with batching: one op, not B).
   */
  wkvSegments?(segs: readonly WkvSegment[], r: Buf, w: Buf, k: Buf, v: Buf, kk: Buf, a: Buf, y: Buf, C: number, N: number): void;

  /**
   * Bonus and gate, in place on y ([T, C], already group-normed):
   * `y[t,h,i] = (y[t,h,i] + (Σ_j r[t,h,j]·k[t,h,j]·rK[h,j]) · v[t,h,i]) · g[t,h,i]`.
   */
  bonusGate(y: Buf, r: Buf, k: Buf, v: Buf, rK: Buf, g: Buf, T: number, C: number, N: number): void;

  /** Wait for all queued work (a no-op for synchronous backends). */
  sync(): Promise<void>;
  /** Release everything (threads, devices). */
  dispose(): Promise<void> | void;
}
