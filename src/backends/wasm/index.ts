/**
 * The WebAssembly CPU backend: SIMD128 kernels (wasm/kernels.ts, AssemblyScript, built into dist/wasm/) over one
 * shared linear memory, with mat-muls split by rows between the main thread and a pool of worker threads.
 *
 * - Memory: every Buf/Mat lives in the shared WebAssembly.Memory (max 4 GiB); a bump allocator with per-size
 *   free lists hands out 64-byte-aligned blocks. Activations and state are f32.
 * - Weights: f32, bf16, f16, int8, q4 or q8_0 in the layouts of ./layout.ts. `weightBytes` sums what a decode step reads.
 * - matmul: T ≤ 2 token rows use the mat-vec kernels (weights streamed straight from memory, per dtype);
 *   larger T uses the blocked mat-mat kernel (4-row tiles widened once to f32, 4×2 register tile over token pairs).
 *   With `activations: 'q8'`, q4 products take x rounded to 8 bits: integer mat-vec, or the rounded values in f32.
 * - Relaxed SIMD (fused multiply-add) is used when the runtime validates the relaxed build; on Node 20 it is
 *   enabled with the V8 flag `--experimental-wasm-relaxed-simd` at run time. Otherwise plain SIMD128.
 */
import type { Activation, ActivationMode, Backend, Buf, HostMatrix, Mat, MatmulOptions, WeightDType, WkvSegment } from '../kernels.js';
import type { BackendOptions } from '../index.js';
import { UserError } from '../../errors.js';
import { ThreadPool } from './pool.js';
import { platform, type AssetName } from '../../platform/index.js';
import { INT8_GROUP, QBLOCK, storageDType } from '../quant.js';
import {
  DTYPE_CODE, DTYPE_Q4X4, HEAP_BASE, LOAD_STAGE_BYTES, PREFETCH_PAD, WASM_MAX_BYTES, blockCodeBytes, layout16, layoutBlocks, layoutQ4x4, layoutF32, layoutInt8, matrixBytes,
  paddedCols, paddedRows, type Layout16Kernels, type WasmLoader,
} from './layout.js';

export { matrixBytes, WASM_MAX_BYTES } from './layout.js';

/**
 * Wasm memory a model needs with weight dtype `dtype`: its matrices ([rows, cols, name] as in
 * src/runtime/fit.ts `matrixShapes`), `vectorFloats` f32 vectors, state and activations for `maxChunk` rows.
 */
export function wasmModelBytes(
  matrices: ReadonlyArray<readonly [number, number, string]>, dtype: WeightDType, extraFloats: number,
): number {
  let bytes = HEAP_BASE + PREFETCH_PAD + extraFloats * 4;
  for (const [rows, cols, name] of matrices) {
    const dt = storageDType(dtype, name);
    bytes += Math.ceil(matrixBytes(rows, cols, dt) / 64) * 64;
  }
  return bytes;
}

export interface WasmBackendOptions extends BackendOptions {
  /** SIMD flavour: relaxed when available (default), or force plain SIMD128. */
  simd?: 'auto' | 'plain';
  /** Token rows per op (prefill chunk), default 64. */
  maxChunk?: number;
}

class WBuf implements Buf {
  constructor(readonly length: number, readonly ptr: number, readonly bytes: number) {}
}

class WMat implements Mat {
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly K: number,
    readonly rowsP: number,
    readonly ptr: number,
    readonly sc: number,
    readonly bytes: number,
    /** DTYPE_CODE of this matrix's storage. */
    readonly dt: number,
    /** Use the blocked-accumulation mat-mat kernel. */
    readonly blocked: boolean,
    /** f16: the stored values are the weights ×2^f16Shift (layout16). */
    readonly f16Shift: number,
  ) {}
}

interface Kernels {
  mv_f32: Function; mv_bf16: Function; mv_f16: Function; mv_i8: Function; mm: Function; wkv: Function; mmp: Function;
  mv_q4: Function; mv_q8: Function; bw_read: Function; mv_f16x: Function; mv_q4a8: Function; activate: Function;
  layer_norm: Function; shift_lerp: Function; decay: Function; key_prep: Function; bonus_gate: Function;
  quant_x(xq: number, xsc: number, x: number, T: number, xs: number, cols: number, K: number): void;
  quant_x32(xq: number, xsc: number, x: number, T: number, xs: number, cols: number, K: number): void;
  quant_x8(xq: number, x: number, T: number, xs: number, cols: number, K: number, shift: number): void;
  round_x8(dst: number, x: number, T: number, xs: number, cols: number): void;
  prefetch_distance(): number;
  quant_i8_bf16(q: number, sc: number, src: number, rows: number, cols: number, K: number): number;
  f16_as_bf16(p: number, n: number, shift: number): number;
  pair16(p: number, n: number, expo: number, big: number): number;
  split_blocks(codes: number, scales: number, src: number, rows: number, nb: number, bb: number, rowBytes: number, sStride: number): number;
  q4x4_blocks(codes: number, scales: number, src: number, rows: number, nb: number, NB: number, g0: number): number;
  quant_blocks_bf16(dst: number, src: number, rows: number, cols: number, q4: number): number;
  shift_f16(p: number, n: number): void;
  pad_rows(dst: number, x: number, T: number, xs: number, cols: number, K: number): void;
  scale_x(dst: number, x: number, T: number, xs: number, cols: number, K: number, shift: number): number;
  pack_x2(dst: number, x: number, T: number, xs: number, cols: number, K: number): void;
  lerp_inplace(x: number, target: number, gate: number, n: number): void;
}

/** Kernels the thread pool can split, by op index. */
const PAR_OPS = ['mv_f32', 'mv_bf16', 'mv_f16', 'mv_i8', 'mm', 'wkv', 'mmp', 'mv_q4', 'mv_q8', 'bw_read',
  'layer_norm', 'shift_lerp', 'decay', 'key_prep', 'bonus_gate', 'mv_q4a8', 'activate', 'mv_f16x'] as const;
const OP_MV = [0, 1, 2, 3, 7, 8]; // by DTYPE_CODE
const OP_MM = 4, OP_WKV = 5, OP_MMP = 6, OP_BW = 9, OP_LN = 10, OP_SHIFT = 11, OP_DECAY = 12, OP_KEY = 13, OP_BONUS = 14, OP_MV_Q4A8 = 15, OP_ACT = 16, OP_MV_F16X = 17;
/** Element-wise ops over at least this many values are split between the threads (by rows; decay by channels). */
const PAR_MIN_ELEMS = 1 << 14;
/** Matrices multiplied with blocked f64 accumulation in prefill (their errors are amplified by the state). */
const BLOCKED = /receptance|\.(a1|a2)$/;
/** Below this many multiply-adds an op runs on the main thread alone (a hand-off costs a few µs). */
const PAR_MIN_MACS = 1 << 14;
const ACT: Record<Activation, number> = { none: 0, tanh: 1, sigmoid: 2, relu2: 3 };

const modules = new Map<string, Promise<WebAssembly.Module>>();

/** The kernels' builds: shared memory (threads) or not (pages that are not cross-origin isolated), × SIMD flavour. */
function assetName(simd: 'relaxed' | 'plain', shared: boolean): AssetName {
  if (shared) return simd === 'relaxed' ? 'rwkv7-relaxed.wasm' : 'rwkv7.wasm';
  return simd === 'relaxed' ? 'rwkv7-single-relaxed.wasm' : 'rwkv7-single.wasm';
}

/**
 * A build's bytes: read synchronously where the host can (so that compiling starts at once, in the background, even
 * if the caller goes on with synchronous work before it next awaits), else asynchronously.
 */
async function buildBytes(name: AssetName): Promise<BufferSource> {
  return (platform.assetSync(name) as Uint8Array<ArrayBuffer> | undefined) ?? await platform.asset(name);
}

/** The relaxed-SIMD build's bytes when this engine validates them (enabling the feature where it must be), else undefined. */
async function relaxedBytes(shared: boolean): Promise<BufferSource | undefined> {
  const bytes = await buildBytes(assetName('relaxed', shared));
  if (WebAssembly.validate(bytes)) return bytes;
  await platform.enableRelaxedSimd();
  return WebAssembly.validate(bytes) ? bytes : undefined;
}

function loadModule(simd: 'relaxed' | 'plain', shared: boolean): Promise<WebAssembly.Module> {
  const key = `${simd}/${shared}`;
  let p = modules.get(key);
  if (!p) {
    p = (async () => {
      if (simd === 'relaxed') {
        const bytes = await relaxedBytes(shared);
        if (bytes) return WebAssembly.compile(bytes);
        throw new Error('relaxed SIMD unavailable');
      }
      return WebAssembly.compile(await buildBytes(assetName('plain', shared)));
    })();
    modules.set(key, p);
  }
  return p;
}

export async function defaultThreads(): Promise<number> {
  return platform.cpuCount();
}

export async function createWasmBackend(opts: WasmBackendOptions = {}): Promise<WasmBackend> {
  const dtype = opts.dtype ?? 'f32';
  let threads = Math.max(1, Math.floor(opts.threads ?? (await defaultThreads())));
  // Browsers share a WebAssembly.Memory between threads only on cross-origin isolated pages: elsewhere run on one
  // thread, with the build that does not declare its memory shared.
  const shared = platform.sharedMemory();
  if (shared !== true && threads > 1) {
    opts.log?.(`wasm: ${shared}; running on 1 thread`);
    threads = 1;
  }
  const isShared = shared === true;
  let simd: 'relaxed' | 'plain' = 'plain';
  let module: WebAssembly.Module;
  if (opts.simd !== 'plain') {
    try {
      module = await loadModule('relaxed', isShared);
      simd = 'relaxed';
    } catch {
      module = await loadModule('plain', isShared);
    }
  } else {
    module = await loadModule('plain', isShared);
  }
  const memory = new WebAssembly.Memory({ initial: HEAP_BASE / 65536 + 16, maximum: 65536, shared: isShared });
  const instance = await WebAssembly.instantiate(module, { env: { memory } });
  const pool = await ThreadPool.create(module, memory, instance.exports, PAR_OPS, threads, !opts.deferThreads);
  return new WasmBackend(dtype, threads, simd, memory, instance.exports, pool, opts.maxChunk ?? 64, opts.activations);
}

export class WasmBackend implements Backend {
  readonly name = 'wasm';
  /** Bytes of all weight matrices (what one decode step streams). */
  weightBytes = 0;
  private readonly k: Kernels;
  private top = HEAP_BASE;
  private readonly freeLists = new Map<number, number[]>();
  private viewLen = 0;
  private f32v!: Float32Array;
  private u8v!: Uint8Array;
  private i32v!: Int32Array;
  /** Largest padded K of any matrix; sizes the per-op scratch. */
  private maxK = 0;
  private scratch = { tile: 0, tileStride: 0, xpad: 0, xq: 0, xsc: 0, segs: 0, bytes: 0 };
  /**
   * Residual buffers of `decay` outputs (by buffer pointer), and the buffers whose residual is current (pointer →
   * residual pointer): a `decay` output, or a copy of one (the model copies a batch's later sequences into scratch
   * rows for the WKV; the residual travels with the values, so each sequence's WKV sees what it sees alone).
   */
  private readonly decaySide = new Map<number, WBuf>();
  private readonly decayLive = new Map<number, number>();
  /** The load kernels' staging area (layout.ts WasmLoader), allocated with the first matrix that uses it. */
  private loader?: WasmLoader;
  /** layout16's permutation, checks and f16 rescale in wasm (wasm/load.ts pair16, shift_f16). */
  private readonly layout16Kernels: Layout16Kernels = {
    pair: (ptr, n, expo, big) => this.k.pair16(ptr, n, expo, big),
    shift: (ptr, n) => this.k.shift_f16(ptr, n),
  };

  constructor(
    readonly weightDType: WeightDType,
    readonly threads: number,
    readonly simd: 'relaxed' | 'plain',
    private readonly memory: WebAssembly.Memory,
    exports: WebAssembly.Exports,
    private readonly pool: ThreadPool,
    readonly maxChunk: number,
    /** `q8`: the inputs of q4 products are rounded to 8 bits and multiplied in integers (wasm/q4a8.ts mv_q4a8, on q4 stored in 4-row groups). */
    readonly activations: ActivationMode = 'full',
  ) {
    this.k = exports as unknown as Kernels;
    if (this.k.prefetch_distance() > PREFETCH_PAD) throw new Error('wasm kernels prefetch further than PREFETCH_PAD');
    this.views();
    this.growScratch(64);
  }

  // ---- memory ----

  private views(): void {
    const buf = this.memory.buffer;
    if (buf.byteLength !== this.viewLen) {
      this.viewLen = buf.byteLength;
      this.f32v = new Float32Array(buf);
      this.i32v = new Int32Array(buf);
      this.u8v = new Uint8Array(buf);
    }
  }

  private alloc(bytes: number, what: string): number {
    const size = Math.max(64, Math.ceil(bytes / 64) * 64);
    const list = this.freeLists.get(size);
    if (list && list.length) {
      const p = list.pop()!;
      this.u8v.fill(0, p, p + size);
      return p;
    }
    const p = this.top;
    const end = p + size;
    const need = end + PREFETCH_PAD; // the kernels' prefetch loads may read this far
    if (need > WASM_MAX_BYTES) {
      throw new UserError(
        `out of wasm memory allocating ${what} (${(size / 2 ** 20).toFixed(1)} MiB): the wasm backend has 4 GiB in all and ` +
        `${(p / 2 ** 30).toFixed(2)} GiB are in use. Use a smaller weight dtype (--dtype bf16, int8 or q4) or a smaller model.`,
      );
    }
    const have = this.memory.buffer.byteLength;
    if (need > have) {
      const grow = Math.max(Math.ceil((need - have) / 65536), Math.min(Math.ceil(have / 65536 / 4), 65536 - have / 65536));
      try {
        this.memory.grow(Math.min(grow, 65536 - have / 65536));
      } catch {
        this.memory.grow(Math.ceil((need - have) / 65536));
      }
      this.views();
    }
    this.top = end;
    return p;
  }

  private release(ptr: number, bytes: number): void {
    let list = this.freeLists.get(bytes);
    if (!list) this.freeLists.set(bytes, (list = []));
    list.push(ptr);
  }

  buffer(length: number): Buf {
    const bytes = Math.max(64, Math.ceil((length * 4) / 64) * 64);
    return new WBuf(length, this.alloc(bytes, 'a buffer'), bytes);
  }

  write(dst: Buf, src: Float32Array | Float64Array, dstOffset = 0): void {
    this.touch(p(dst));
    this.views();
    this.f32v.set(src, (dst as WBuf).ptr / 4 + dstOffset);
  }

  async read(src: Buf, offset = 0, length = src.length - offset): Promise<Float32Array> {
    this.views();
    const p = (src as WBuf).ptr / 4 + offset;
    // Not f32v.slice: on a view of shared memory V8 copies element by element there (≈ 3 GB/s, 2 ms for a batch of
    // 8 logit rows); set() from a subarray is a block copy (≈ 4× faster).
    const out = new Float32Array(length);
    out.set(this.f32v.subarray(p, p + length));
    return out;
  }

  copy(dst: Buf, src: Buf, length: number, dstOffset = 0, srcOffset = 0): void {
    this.touch(p(dst));
    this.views();
    const s = (src as WBuf).ptr / 4 + srcOffset;
    this.f32v.copyWithin((dst as WBuf).ptr / 4 + dstOffset, s, s + length);
    const lo = this.decayLive.get(p(src));
    if (lo !== undefined) {
      const side = this.sideOf(dst);
      const r = lo / 4 + srcOffset;
      this.f32v.copyWithin(side / 4 + dstOffset, r, r + length);
      this.decayLive.set(p(dst), side);
    }
  }

  /** The residual buffer of `b` (allocated on first use). */
  private sideOf(b: Buf): number {
    let side = this.decaySide.get(p(b));
    if (!side) {
      this.decaySide.set(p(b), (side = this.buffer(b.length) as WBuf));
      this.views();
    }
    return side.ptr;
  }

  matrix(m: HostMatrix): Mat {
    const dt = storageDType(this.weightDType, m.name, m); // int8/q4/q8_0 keep the LoRA factors 16-bit (../quant.ts)
    const K = paddedCols(m.cols, dt), R = paddedRows(m.rows);
    if (dt === 'int8' || dt === 'q4' || dt === 'q8_0') this.loader ??= { kernels: this.k, memory: this.memory, stage: this.alloc(LOAD_STAGE_BYTES, 'load staging'), stageBytes: LOAD_STAGE_BYTES };
    const bytes = matrixBytes(m.rows, m.cols, dt);
    const q4x4 = dt === 'q4' && this.activations === 'q8'; // 4-row groups for the 8-bit-activation kernels (wasm/q4a8.ts)
    const ptr = this.alloc(bytes, `matrix ${m.name} [${m.rows}, ${m.cols}] (${dt})`);
    const buf = this.memory.buffer;
    let sc = 0, f16Shift = 0, code = q4x4 ? DTYPE_Q4X4 : DTYPE_CODE[dt];
    switch (dt) {
      case 'f32': layoutF32(m, new Float32Array(buf, ptr, R * K), K); break;
      case 'bf16': case 'f16':
        f16Shift = layout16(m, new Uint16Array(buf, ptr, R * K), K, dt, this.layout16Kernels);
        // f16 values that bf16 holds exactly (f16 made from bf16 weights) multiply faster as bf16 (wasm/load.ts)
        if (dt === 'f16' && this.k.f16_as_bf16(ptr, R * K, f16Shift)) { code = DTYPE_CODE.bf16; f16Shift = 0; }
        break;
      case 'int8':
        sc = ptr + R * K;
        layoutInt8(m, new Int8Array(buf, ptr, R * K), new Float32Array(buf, sc, R * (K / INT8_GROUP)), K, this.loader);
        break;
      case 'q4': case 'q8_0': {
        const cb = blockCodeBytes(m.rows, m.cols, dt);
        sc = ptr + cb;
        const codes = new Uint8Array(buf, ptr, cb), scales = new Uint16Array(buf, sc, R * (K / QBLOCK));
        f16Shift = q4x4 ? layoutQ4x4(m, codes, scales, K, this.loader) : layoutBlocks(m, dt, codes, scales, K, this.loader);
        break;
      }
    }
    this.weightBytes += bytes;
    if (K > this.maxK) this.growScratch(K);
    return new WMat(m.rows, m.cols, K, R, ptr, sc, bytes, code, BLOCKED.test(m.name), f16Shift);
  }

  /** Per-op scratch: one 4×K f32 tile and mm's parked sums per thread, a padded copy of x, and int16 x with per-row (or per-block) scales. */
  private growScratch(K: number): void {
    this.maxK = K;
    if (this.scratch.bytes) this.release(this.scratch.tile, this.scratch.bytes);
    // a 4×K f32 tile (mm's partial sums after it), or wkv's 5·N f64 (N ≤ 256)
    const tileStride = Math.max(4 * K * 4 + (this.maxChunk + 2) * 64, 5 * 256 * 8);
    const tileBytes = tileStride * this.threads;
    const xpadBytes = this.maxChunk * K * 4;
    // int16 [T, K]; q4/q8_0: hi/lo [2, 2K]; activations q8: the rounded f32 x [T, K] of a mat-mat, or 2 tokens'
    // blocks of 144 bytes per 32 columns (wasm/q4a8.ts quant_x8)
    const xqBytes = Math.ceil(Math.max(this.maxChunk * K * 4, 2 * (K / QBLOCK) * 144) / 64) * 64;
    // int8 per-row scales [T]; q4/q8_0: block scales [2, K/32]
    const xscBytes = Math.ceil((Math.max(this.maxChunk, 2 * (K / QBLOCK)) * 4) / 64) * 64;
    // wkv's segment table: (state, first row, rows) per sequence of a pass (at most one per row)
    const segsBytes = Math.ceil((this.maxChunk * 12) / 64) * 64;
    const bytes = tileBytes + xpadBytes + xqBytes + xscBytes + segsBytes;
    const base = this.alloc(bytes, 'scratch');
    const xq = base + tileBytes + xpadBytes, xsc = xq + xqBytes;
    this.scratch = { tile: base, tileStride, xpad: base + tileBytes, xq, xsc, segs: xsc + xscBytes, bytes };
  }

  free(b: Buf | Mat): void {
    if (b instanceof WBuf) {
      this.touch(b.ptr);
      this.release(b.ptr, b.bytes);
      const side = this.decaySide.get(b.ptr);
      if (side) { this.decaySide.delete(b.ptr); this.release(side.ptr, side.bytes); }
    }
    else if (b instanceof WMat) {
      this.release(b.ptr, Math.max(64, Math.ceil(b.bytes / 64) * 64));
      this.weightBytes -= b.bytes;
    }
  }

  // ---- ops ----

  layerNorm(out: Buf, x: Buf, w: Buf, b: Buf, T: number, n: number, groups: number, eps: number): void {
    this.touch(p(out));
    F64[0] = eps;
    this.par(OP_LN, T, 1, T * n >= PAR_MIN_ELEMS ? 1 : 0, [p(out), p(x), p(w), p(b), T, n, groups, U32[0]!, U32[1]!]);
  }

  matmul(out: Buf, x: Buf, W: Mat, T: number, opts: MatmulOptions = {}): void {
    const act = ACT[opts.act ?? 'none'];
    if (act === 1 || act === 2) { // tanh, sigmoid: vectorized over the whole output after the product (wasm/act.ts)
      this.product(out, x, W as WMat, T, opts, 0);
      const n = T * W.rows;
      this.par(OP_ACT, n, 4, n >= 4096 ? 1 : 0, [p(out), act]); // split from a few thousand values (decode: one thread)
      return;
    }
    this.product(out, x, W as WMat, T, opts, act);
  }

  /** out = W · x (+ bias, then the activation code `act` when it is none or relu², which the kernels apply as they store). */
  private product(out: Buf, x: Buf, m: WMat, T: number, opts: MatmulOptions, act: number): void {
    this.touch(p(out));
    const dt = m.dt;
    const acc = opts.accumulate ? 1 : 0;
    const bias = opts.bias ? p(opts.bias) : 0;
    const { K, rows, cols } = m;
    const macs = rows * K * T;
    const items = macs < PAR_MIN_MACS ? 0 : 1; // 0: run on the main thread only
    const S = this.scratch;
    const a8 = dt === DTYPE_Q4X4; // q4 weights, activations q8
    if (T <= 2) {
      if (a8) { // q4 on 8-bit x: integer dot products per block
        this.k.quant_x8(S.xq, p(x), T, cols, cols, K, m.f16Shift);
        this.par(OP_MV_Q4A8, rows, 4, items, [p(out), S.xq, m.ptr, K, T, rows, bias, act, acc, rows, m.sc]);
        return;
      }
      if (dt >= 4) { // q4, q8_0: x in int16 with a scale per block of 32
        this.k.quant_x32(S.xq, S.xsc, p(x), T, cols, cols, K);
        this.par(OP_MV[dt]!, rows, 4, items, [p(out), S.xq, m.ptr, K, T, S.xsc, rows, bias, act, acc, rows, m.sc, m.f16Shift]);
        return;
      }
      if (dt === 3) {
        this.k.quant_x(S.xq, S.xsc, p(x), T, cols, cols, K);
        this.par(OP_MV[3]!, rows, 4, items, [p(out), S.xq, m.ptr, K, T, S.xsc, rows, bias, act, acc, rows, m.sc]);
        return;
      }
      let xp = p(x), xs = cols, pre = 0;
      // f16: x takes the weights' rescale (exact), which saves two multiplies per 8 weights; unless it overflows
      if (dt === 2) pre = this.k.scale_x(S.xpad, xp, T, cols, cols, K, m.f16Shift);
      if (pre) { xp = S.xpad; xs = K; }
      else if (K !== cols) { this.k.pad_rows(S.xpad, xp, T, cols, cols, K); xp = S.xpad; xs = K; }
      this.par(pre ? OP_MV_F16X : OP_MV[dt]!, rows, 4, items, [p(out), xp, m.ptr, K, T, xs, rows, bias, act, acc, rows, m.f16Shift]);
      return;
    }
    let xp = p(x);
    if (a8) { this.k.round_x8(S.xq, xp, T, cols, cols); xp = S.xq; } // the same 8-bit values, multiplied in f32
    this.k.pack_x2(S.xpad, xp, T, cols, cols, K); // token pairs interleaved, zero-padded to K (see wasm/kernels.ts mm)
    this.par(m.blocked ? OP_MMP : OP_MM, m.rowsP, 4, items, [p(out), S.xpad, m.ptr, K, T, rows, bias, act, acc, rows, dt, m.sc, S.tile, m.f16Shift], 12, S.tileStride);
  }

  /** Run a splittable kernel over `n` items on all threads, or on the main thread alone when `parallel` is 0. */
  private par(op: number, n: number, align: number, parallel: number, args: number[], perArg = -1, perStride = 0): void {
    if (parallel) this.pool.run(op, n, align, args, perArg, perStride);
    else (this.k as unknown as Record<string, (...a: number[]) => void>)[PAR_OPS[op]!]!(0, n, ...args);
  }

  shiftLerp(outs: readonly Buf[], x: Buf, shift: Buf, mixes: readonly Buf[], T: number, C: number): void {
    for (let i = 0; i < mixes.length; i++) this.touch(p(outs[i]!));
    const parallel = T * C >= PAR_MIN_ELEMS ? 1 : 0;
    for (let i = 0; i < mixes.length; i++) this.par(OP_SHIFT, T, 1, parallel, [p(outs[i]!), p(x), p(shift), p(mixes[i]!), T, C]);
    this.copy(shift, x, C, 0, (T - 1) * C);
  }

  decay(w: Buf, w0: Buf, T: number, C: number): void {
    const side = this.sideOf(w);
    // two exponentials per value: worth a hand-off from a few tokens on (for one, the hand-off costs what it saves)
    this.par(OP_DECAY, C, 4, T * C >= 4096 ? 1 : 0, [p(w), p(w0), T, C, side]);
    this.decayLive.set(p(w), side);
  }

  /** Forget the decay residual of a buffer that is being overwritten. */
  private touch(ptr: number): void {
    this.decayLive.delete(ptr);
  }

  lerpInPlace(x: Buf, target: Buf, gate: Buf, length: number): void {
    this.touch(p(x));
    this.k.lerp_inplace(p(x), p(target), p(gate), length);
  }

  keyPrep(kk: Buf, k: Buf, a: Buf, kK: Buf, kA: Buf, T: number, C: number, N: number): void {
    this.touch(p(kk)); this.touch(p(k));
    this.par(OP_KEY, T, 1, T * C >= PAR_MIN_ELEMS ? 1 : 0, [p(kk), p(k), p(a), p(kK), p(kA), T, C, N]);
  }

  wkv(S: Buf, r: Buf, w: Buf, k: Buf, v: Buf, kk: Buf, a: Buf, y: Buf, T: number, C: number, N: number): void {
    this.wkvSegments([{ state: S, start: 0, length: T }], r, w, k, v, kk, a, y, C, N);
  }

  /** One op over every (segment, head) pair, the segments' states and rows in a table (wasm/kernels.ts `wkv`). */
  wkvSegments(segs: readonly WkvSegment[], r: Buf, w: Buf, k: Buf, v: Buf, kk: Buf, a: Buf, y: Buf, C: number, N: number): void {
    if (N % 4 !== 0) throw new UserError(`the wasm backend needs a head size divisible by 4 (got ${N})`);
    const H = C / N;
    if (N > 256) throw new UserError(`the wasm backend supports head sizes up to 256 (got ${N})`);
    if (segs.length > this.maxChunk) throw new Error(`wkvSegments: ${segs.length} segments (at most ${this.maxChunk})`);
    let rows = 0;
    this.views();
    const table = this.scratch.segs / 4;
    segs.forEach((g, i) => {
      this.touch(p(g.state));
      this.i32v[table + 3 * i] = p(g.state);
      this.i32v[table + 3 * i + 1] = g.start;
      this.i32v[table + 3 * i + 2] = g.length;
      rows += g.length;
    });
    this.touch(p(y));
    const parallel = rows * C * N >= PAR_MIN_MACS / 4 ? 1 : 0;
    const wlo = this.decayLive.get(p(w)) ?? 0;
    this.par(OP_WKV, segs.length * H, 1, parallel, [this.scratch.segs, p(r), p(w), p(k), p(v), p(kk), p(a), p(y), C, N, wlo, this.scratch.tile], 11, this.scratch.tileStride);
  }

  bonusGate(y: Buf, r: Buf, k: Buf, v: Buf, rK: Buf, g: Buf, T: number, C: number, N: number): void {
    this.touch(p(y));
    this.par(OP_BONUS, T, 1, T * C >= PAR_MIN_ELEMS ? 1 : 0, [p(y), p(r), p(k), p(v), p(rK), p(g), T, C, N]);
  }

  /**
   * Memory read bandwidth (bytes/s) as the mat-vec kernels see it: the median of `reps` passes over a fresh
   * `bytes`-byte buffer (much larger than the caches) on all threads. The buffer is freed again.
   */
  probeBandwidth(bytes = 256 << 20, reps = 5): number {
    const n = Math.ceil(bytes / 4096) * 4096;
    const ptr = this.alloc(n, 'bandwidth probe');
    try {
      this.views();
      this.u8v.fill(1, ptr, ptr + n); // touch every page, so the passes read memory, not the zero page
      const times: number[] = [];
      for (let i = 0; i <= reps; i++) {
        const t = performance.now();
        this.pool.run(OP_BW, n, 4096, [ptr]);
        if (i > 0) times.push(performance.now() - t); // the first pass warms the threads and TLBs
      }
      times.sort((a, b) => a - b);
      return n / (times[times.length >> 1]! / 1e3);
    } finally {
      this.release(ptr, n);
    }
  }

  /** Waits for the pool's threads when they were started in the background (`deferThreads`). */
  async sync(): Promise<void> {
    await this.pool.ready;
  }

  async dispose(): Promise<void> {
    await this.pool.dispose();
  }
}

const p = (b: Buf): number => (b as WBuf).ptr;
/** An f64 as its two 32-bit words (little-endian: U32[0] low), for kernel arguments that go through the pool. */
const F64 = new Float64Array(1), U32 = new Uint32Array(F64.buffer);
