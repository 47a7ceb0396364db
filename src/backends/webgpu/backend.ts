/// <reference types="@webgpu/types" />
/**
 * The WebGPU backend: every op of the kernel interface is a WGSL compute dispatch (shaders.ts) recorded into one
 * command encoder; nothing is submitted until `read`/`sync` (or a host `write` into a buffer that recorded work
 * may still use), so a whole token step or prefill chunk is one submission and only the logits come back.
 *
 * - Pipelines are built once per kernel variant and cached; bind groups are cached per (pipeline, buffers).
 * - Op parameters go into 256-byte slots of one uniform buffer, bound with a dynamic offset; the host copy of the
 *   slots is uploaded right before the submission that uses them.
 * - Weight matrices are packed (pack.ts) and split by rows into several GPU buffers when one would exceed the
 *   device's storage-binding or buffer size limit (e.g. a 65536-row head); `matmul` dispatches once per part.
 * - Activations and state are f32.
 */
import type { Activation, Backend, Buf, HostMatrix, Mat, MatmulOptions, WeightDType } from '../kernels.js';
import { PACK, packMatrix } from './pack.js';
import { isBlockDType, storageDType } from '../quant.js';
import {
  EW_WG, GEMM, bonusGateKernel, copyKernel, decayKernel, oneMinusKernel, gemmKernel, keyPrepKernel, layerNormKernel, lerpKernel,
  matvecKernel, nextPow2, shiftLerpKernel, wkvKernel, type KernelSource, type MatmulVariant, type MatvecShape,
} from './shaders.js';

// WebGPU flag values (the GPUBufferUsage / GPUMapMode / GPUShaderStage globals do not exist in Node).
const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 } as const;
const MAP_READ = 0x1;
const STAGE_COMPUTE = 0x4;

/** Bytes of the uniform binding of every kernel (its Params struct has at most 8 scalars). */
const PARAM_BYTES = 32;
/** Parameter slots per submission (a submission is split when more ops are recorded). */
const PARAM_SLOTS = 4096;
/**
 * Kernel choices per kind of adapter. GPUs: a warp per mat-vec row, and the tiled mat-mat kernel from 8 tokens.
 * Software adapters (SwiftShader in CI) pay per invocation that reaches a barrier, so there: a thread per row
 * and mat-vec for every T. Same WGSL templates either way; the tests run both on SwiftShader.
 */
export interface Tuning {
  matvec: MatvecShape;
  /** Token rows from which `matmul` uses the tiled mat-mat kernel (Infinity: never). */
  gemmMinT: number;
}
export const GPU_TUNING: Tuning = { matvec: { lanes: 32, rows: 8 }, gemmMinT: 8 };
export const SOFTWARE_TUNING: Tuning = { matvec: { lanes: 1, rows: 64 }, gemmMinT: Infinity };
const MAX_GROUPS_X = 65535;

let nextId = 1;

interface Resource {
  readonly id: number;
  readonly buffer: GPUBuffer;
}

class GpuBuf implements Buf, Resource {
  readonly id = nextId++;
  constructor(readonly length: number, readonly buffer: GPUBuffer) {}
}

/** Rows rowOff .. rowOff + rows of a matrix, in their own buffer (plus per-row scales for int8, block scales for q4/q8_0). */
interface MatPart extends Resource {
  rows: number;
  rowOff: number;
  scales?: Resource;
}

class GpuMat implements Mat {
  constructor(
    readonly rows: number,
    readonly cols: number,
    /** u32 words per packed row. */
    readonly stride: number,
    readonly parts: MatPart[],
    /** Storage of this matrix (q4/q8_0 keep the LoRA factors 16-bit: ../quant.ts). */
    readonly dtype: WeightDType,
  ) {}
}

interface Pipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  src: KernelSource;
}

export interface WebGpuBackendOptions {
  dtype: WeightDType;
  /** Largest bytes of one storage binding (default: the device limit); tests lower it to exercise the row split. */
  maxBindingBytes?: number;
  tuning: Tuning;
}

export class WebGpuBackend implements Backend {
  readonly name = 'webgpu';
  readonly maxChunk = 128;
  readonly weightDType: WeightDType;
  readonly tuning: Tuning;

  private readonly queue: GPUQueue;
  private readonly maxBinding: number;
  private readonly slotBytes: number;
  private readonly paramBuf: GPUBuffer;
  private readonly paramHost: ArrayBuffer;
  private readonly paramU32: Uint32Array;
  private readonly paramF32: Float32Array;
  private nParams = 0;

  private enc?: GPUCommandEncoder;
  private pass?: GPUComputePassEncoder;
  /** Buffers freed while recorded work may still use them: destroyed after the next submission. */
  private pendingDestroy: GPUBuffer[] = [];
  private readonly live = new Set<GPUBuffer>();
  private readonly staging: { buffer: GPUBuffer; size: number; busy: boolean }[] = [];

  private readonly pipelines = new Map<string, Pipeline>();
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  private readonly groupsOf = new Map<number, Set<string>>();

  /** Buffers whose first n elements hold 1 - w instead of the decay w (see `decay`). */
  private readonly oneMinus = new Map<GpuBuf, number>();
  /** Bytes of all weight matrices uploaded (packed words and int8 scales), for bandwidth figures. */
  weightBytes = 0;
  private error?: string;
  private disposed = false;

  constructor(
    /** The GPU object (navigator.gpu or Dawn's `create()` result): kept referenced while the device lives. */
    private gpu: GPU | undefined,
    readonly adapterName: string,
    readonly software: boolean,
    private readonly device: GPUDevice,
    opts: WebGpuBackendOptions,
  ) {
    this.weightDType = opts.dtype;
    this.tuning = opts.tuning;
    this.queue = device.queue;
    const lim = device.limits;
    this.maxBinding = Math.min(opts.maxBindingBytes ?? Infinity, lim.maxStorageBufferBindingSize, lim.maxBufferSize);
    this.slotBytes = Math.max(PARAM_BYTES, lim.minUniformBufferOffsetAlignment);
    this.paramHost = new ArrayBuffer(PARAM_SLOTS * this.slotBytes);
    this.paramU32 = new Uint32Array(this.paramHost);
    this.paramF32 = new Float32Array(this.paramHost);
    this.paramBuf = device.createBuffer({ size: this.paramHost.byteLength, usage: USAGE.UNIFORM | USAGE.COPY_DST });
    device.addEventListener('uncapturederror', (ev) => {
      this.error ??= (ev as GPUUncapturedErrorEvent).error.message;
    });
    void device.lost.then((info) => {
      if (!this.disposed) this.error ??= `WebGPU device lost: ${info.message || info.reason}`;
    });
  }

  // ---- memory ----

  buffer(length: number): Buf {
    const buffer = this.device.createBuffer({
      size: Math.max(4, length * 4),
      usage: USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST,
    });
    this.live.add(buffer);
    return new GpuBuf(length, buffer);
  }

  write(dst: Buf, values: Float32Array | Float64Array, dstOffset = 0): void {
    const src = values instanceof Float32Array ? values : Float32Array.from(values);
    const d = dst as GpuBuf;
    checkRange('write', d, dstOffset, src.length);
    if (src.length === 0) return;
    this.materialize(d);
    // queue.writeBuffer runs before anything recorded but not yet submitted: submit that first to keep the order.
    if (this.enc) this.flush();
    this.queue.writeBuffer(d.buffer, dstOffset * 4, src.buffer, src.byteOffset, src.byteLength);
  }

  async read(src: Buf, offset = 0, length = src.length - offset): Promise<Float32Array> {
    const s = src as GpuBuf;
    checkRange('read', s, offset, length);
    this.throwIfFailed();
    if (length === 0) return new Float32Array(0);
    this.materialize(s);
    const bytes = length * 4;
    const st = this.takeStaging(bytes);
    this.endPass();
    this.encoder().copyBufferToBuffer(s.buffer, offset * 4, st.buffer, 0, bytes);
    this.flush();
    try {
      await st.buffer.mapAsync(MAP_READ, 0, bytes);
      const out = new Float32Array(st.buffer.getMappedRange(0, bytes).slice(0));
      st.buffer.unmap();
      this.throwIfFailed();
      return out;
    } finally {
      st.busy = false;
    }
  }

  copy(dst: Buf, src: Buf, length: number, dstOffset = 0, srcOffset = 0): void {
    const d = dst as GpuBuf, s = src as GpuBuf;
    checkRange('copy', d, dstOffset, length);
    checkRange('copy', s, srcOffset, length);
    if (length === 0) return;
    this.materialize(d);
    this.materialize(s);
    if (d === s) {
      // A buffer cannot be bound twice (read and write) nor copied onto itself: go through a temporary.
      const tmp = this.device.createBuffer({ size: length * 4, usage: USAGE.COPY_SRC | USAGE.COPY_DST });
      this.endPass();
      const enc = this.encoder();
      enc.copyBufferToBuffer(s.buffer, srcOffset * 4, tmp, 0, length * 4);
      enc.copyBufferToBuffer(tmp, 0, d.buffer, dstOffset * 4, length * 4);
      this.pendingDestroy.push(tmp);
      return;
    }
    this.elementwise(this.kernel('copy', copyKernel), [d, s], [length, dstOffset, srcOffset], length);
  }

  matrix(m: HostMatrix): Mat {
    const { rows, cols } = m;
    const dtype = isBlockDType(this.weightDType) ? storageDType(this.weightDType, m.name, m) : this.weightDType;
    const packed = packMatrix(m, dtype);
    const rowBytes = packed.stride * 4;
    if (rowBytes > this.maxBinding) {
      throw new Error(`webgpu: one row of '${m.name}' (${rowBytes} bytes) exceeds the device's storage binding limit (${this.maxBinding})`);
    }
    let perPart = Math.floor(this.maxBinding / rowBytes);
    if (perPart < rows && perPart >= 64) perPart -= perPart % 64; // keep parts tile-aligned
    const parts: MatPart[] = [];
    for (let rowOff = 0; rowOff < rows || (rows === 0 && parts.length === 0); rowOff += perPart) {
      const n = Math.min(perPart, rows - rowOff);
      const words = packed.words.subarray(rowOff * packed.stride, (rowOff + n) * packed.stride);
      const part: MatPart = { id: nextId++, buffer: this.upload(words), rows: n, rowOff };
      const ss = packed.scaleStride ?? 1;
      if (packed.scales) part.scales = { id: nextId++, buffer: this.upload(packed.scales.subarray(rowOff * ss, (rowOff + n) * ss)) };
      this.weightBytes += words.byteLength + (packed.scales ? n * ss * 4 : 0);
      parts.push(part);
      if (rows === 0) break;
    }
    return new GpuMat(rows, cols, packed.stride, parts, dtype);
  }

  free(b: Buf | Mat): void {
    const res: Resource[] = b instanceof GpuMat
      ? b.parts.flatMap((p) => (p.scales ? [p, p.scales] : [p]))
      : [b as GpuBuf];
    if (b instanceof GpuMat) {
      for (const p of b.parts) {
        if (this.live.has(p.buffer)) this.weightBytes -= p.buffer.size + (p.scales ? p.scales.buffer.size : 0);
      }
    }
    for (const r of res) {
      this.oneMinus.delete(r as GpuBuf);
      for (const key of this.groupsOf.get(r.id) ?? []) this.bindGroups.delete(key);
      this.groupsOf.delete(r.id);
      if (!this.live.delete(r.buffer)) continue; // already freed
      if (this.enc) this.pendingDestroy.push(r.buffer);
      else r.buffer.destroy();
    }
  }

  // ---- ops ----

  layerNorm(out: Buf, x: Buf, w: Buf, b: Buf, T: number, n: number, groups: number, eps: number): void {
    const g = n / groups;
    if (!Number.isInteger(g)) throw new Error(`layerNorm: ${n} values do not split into ${groups} groups`);
    const wg = g <= 256 ? 64 : 256;
    const inPlace = out === x;
    const k = this.kernel(`layerNorm:${wg}:${inPlace}`, () => layerNormKernel(wg, inPlace));
    const bufs = inPlace ? [x, w, b] : [out, x, w, b];
    this.dispatch(k, bufs as GpuBuf[], [n, g, groups, T * groups, eps], 1 << 4, grid(T * groups));
  }

  matmul(out: Buf, x: Buf, W: Mat, T: number, opts: MatmulOptions = {}): void {
    const M = W as GpuMat;
    const act: Activation = opts.act ?? 'none';
    const accumulate = opts.accumulate ?? false;
    if (accumulate && (opts.bias || act !== 'none')) throw new Error('matmul: accumulate takes no bias or activation');
    checkRange('matmul x', x as GpuBuf, 0, T * M.cols);
    checkRange('matmul out', out as GpuBuf, 0, T * M.rows);
    if (T === 0 || M.rows === 0) return;
    const v: MatmulVariant = { dtype: M.dtype, act, bias: !!opts.bias, accumulate };
    const gemm = T >= this.tuning.gemmMinT;
    const shape = this.tuning.matvec;
    const tt = T === 1 ? 1 : 4;
    const ragged = M.cols % PACK[v.dtype] !== 0;
    const key = gemm ? `gemm:${v.dtype}:${act}:${v.bias}:${accumulate}` : `matvec:${v.dtype}:${act}:${v.bias}:${accumulate}:${tt}:${ragged}:${shape.lanes}x${shape.rows}`;
    const k = this.kernel(key, () => (gemm ? gemmKernel(v) : matvecKernel(v, tt, ragged, shape)));
    for (const p of M.parts) {
      const bufs: Resource[] = [out as GpuBuf, x as GpuBuf, p];
      if (p.scales) bufs.push(p.scales);
      if (opts.bias) bufs.push(opts.bias as GpuBuf);
      const params = [T, M.cols, M.stride, p.rows, p.rowOff, M.rows];
      const groups: [number, number] = gemm ? [Math.ceil(p.rows / GEMM.BR), Math.ceil(T / GEMM.BT)] : grid(Math.ceil(p.rows / shape.rows));
      this.dispatch(k, bufs, params, 0, groups, [], accumulate || M.parts.length > 1 ? 0 : T * M.rows);
    }
  }

  shiftLerp(outs: readonly Buf[], x: Buf, shift: Buf, mixes: readonly Buf[], T: number, C: number): void {
    if (T === 0) return;
    const k = this.kernel('shiftLerp', shiftLerpKernel);
    for (let i = 0; i < mixes.length; i++) {
      this.elementwise(k, [outs[i], x, shift, mixes[i]] as GpuBuf[], [T, C], T * C);
    }
    this.copy(shift, x, C, 0, (T - 1) * C);
  }

  /**
   * The decay w ∈ (0.54, 1) is kept as its complement m = 1 - w in the buffer (a flag says so) until something
   * other than `wkv` touches the buffer, which first turns it back into w (`materialize`). The WKV kernel uses
   * S·w = S - S·m, so the state update does not suffer from w's f32 rounding (a 4e-5 logit deviation on the
   * golden 'repeat' sequences otherwise). Observable contents are always those of the interface.
   */
  decay(w: Buf, w0: Buf, T: number, C: number): void {
    const wb = w as GpuBuf;
    checkRange('decay', wb, 0, T * C);
    if (T * C === 0) return;
    this.elementwise(this.kernel('decay:true', () => decayKernel(true)), [wb, w0 as GpuBuf], [T * C, C], T * C);
    this.oneMinus.set(wb, T * C);
  }

  lerpInPlace(x: Buf, target: Buf, gate: Buf, length: number): void {
    this.elementwise(this.kernel('lerp', lerpKernel), [x, target, gate] as GpuBuf[], [length], length);
  }

  keyPrep(kk: Buf, k: Buf, a: Buf, kK: Buf, kA: Buf, T: number, C: number, N: number): void {
    const wg = Math.max(32, nextPow2(N));
    const H = C / N;
    const kern = this.kernel(`keyPrep:${wg}`, () => keyPrepKernel(wg));
    this.dispatch(kern, [kk, k, a, kK, kA] as GpuBuf[], [C, N, H, T * H], 0, grid(T * H));
  }

  wkv(S: Buf, r: Buf, w: Buf, k: Buf, v: Buf, kk: Buf, a: Buf, y: Buf, T: number, C: number, N: number): void {
    if (T === 0) return;
    const m = (this.oneMinus.get(w as GpuBuf) ?? 0) >= T * C; // w holds 1 - w for (at least) these rows
    const kern = this.kernel(`wkv:${N}:${m}`, () => wkvKernel(N, m));
    this.dispatch(kern, [S, r, w, k, v, kk, a, y] as GpuBuf[], [T, C], 0, [C / N, 1], m ? [w as GpuBuf] : []);
  }

  bonusGate(y: Buf, r: Buf, k: Buf, v: Buf, rK: Buf, g: Buf, T: number, C: number, N: number): void {
    const wg = Math.max(32, nextPow2(N));
    const H = C / N;
    const kern = this.kernel(`bonusGate:${wg}`, () => bonusGateKernel(wg));
    this.dispatch(kern, [y, r, k, v, rK, g] as GpuBuf[], [C, N, H, T * H], 0, grid(T * H));
  }

  async sync(): Promise<void> {
    this.flush();
    await this.queue.onSubmittedWorkDone();
    this.throwIfFailed();
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    try {
      this.flush();
      await this.queue.onSubmittedWorkDone();
    } catch {
      // the device may already be lost; release what is left anyway
    }
    this.disposed = true;
    for (const b of [...this.live, ...this.pendingDestroy, ...this.staging.map((s) => s.buffer), this.paramBuf]) b.destroy();
    this.live.clear();
    this.pendingDestroy = [];
    this.staging.length = 0;
    this.bindGroups.clear();
    this.groupsOf.clear();
    this.pipelines.clear();
    this.device.destroy();
    this.gpu = undefined;
  }

  // ---- recording ----

  private kernel(key: string, make: () => KernelSource): Pipeline {
    let p = this.pipelines.get(key);
    if (p) return p;
    const src = make();
    const layout = this.device.createBindGroupLayout({
      label: src.key,
      entries: [
        { binding: 0, visibility: STAGE_COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true, minBindingSize: PARAM_BYTES } },
        ...src.bindings.map((acc, i) => ({
          binding: i + 1,
          visibility: STAGE_COMPUTE,
          buffer: { type: acc === 'r' ? ('read-only-storage' as const) : ('storage' as const) },
        })),
      ],
    });
    const pipeline = this.device.createComputePipeline({
      label: src.key,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: this.device.createShaderModule({ label: src.key, code: src.code }), entryPoint: 'main' },
    });
    p = { pipeline, layout, src };
    this.pipelines.set(key, p);
    return p;
  }

  private bindGroup(p: Pipeline, bufs: readonly Resource[]): GPUBindGroup {
    const key = `${p.src.key}|${bufs.map((b) => b.id).join(',')}`;
    let bg = this.bindGroups.get(key);
    if (bg) return bg;
    bg = this.device.createBindGroup({
      layout: p.layout,
      entries: [
        { binding: 0, resource: { buffer: this.paramBuf, offset: 0, size: PARAM_BYTES } },
        ...bufs.map((b, i) => ({ binding: i + 1, resource: { buffer: b.buffer } })),
      ],
    });
    this.bindGroups.set(key, bg);
    for (const b of bufs) {
      let s = this.groupsOf.get(b.id);
      if (!s) this.groupsOf.set(b.id, (s = new Set()));
      s.add(key);
    }
    return bg;
  }

  private elementwise(p: Pipeline, bufs: readonly Resource[], params: readonly number[], n: number): void {
    if (n === 0) return;
    this.dispatch(p, bufs, params, 0, grid(Math.ceil(n / EW_WG)));
  }

  /**
   * Record one dispatch; `floats` is a bit mask of the params stored as f32 (the others are u32).
   * Buffers holding a decay complement are materialized first, except those in `keep` (the op reads m itself).
   * `overwrite`: the op writes elements [0, n) of its first buffer without reading them.
   */
  private dispatch(p: Pipeline, bufs: readonly Resource[], params: readonly number[], floats: number, groups: [number, number],
    keep: readonly Resource[] = [], overwrite = 0): void {
    if (bufs.length !== p.src.bindings.length) throw new Error(`${p.src.key}: ${bufs.length} buffers for ${p.src.bindings.length} bindings`);
    if (this.oneMinus.size > 0) {
      bufs.forEach((b, i) => {
        const n = this.oneMinus.get(b as GpuBuf);
        if (n === undefined || keep.includes(b)) return;
        if (i === 0 && overwrite >= n) this.oneMinus.delete(b as GpuBuf);
        else this.materialize(b as GpuBuf);
      });
    }
    if (this.nParams === PARAM_SLOTS) this.flush();
    const slot = this.nParams++;
    const base = (slot * this.slotBytes) / 4;
    for (let i = 0; i < params.length; i++) {
      if (floats & (1 << i)) this.paramF32[base + i] = params[i]!;
      else this.paramU32[base + i] = params[i]!;
    }
    const bg = this.bindGroup(p, bufs);
    const pass = this.computePass();
    pass.setPipeline(p.pipeline);
    pass.setBindGroup(0, bg, [slot * this.slotBytes]);
    pass.dispatchWorkgroups(groups[0], groups[1]);
  }

  /** Turn a buffer holding m = 1 - w (see `decay`) back into w. */
  private materialize(b: GpuBuf): void {
    const n = this.oneMinus.get(b);
    if (n === undefined) return;
    this.oneMinus.delete(b);
    this.elementwise(this.kernel('oneMinus', oneMinusKernel), [b], [n], n);
  }

  private encoder(): GPUCommandEncoder {
    this.enc ??= this.device.createCommandEncoder();
    return this.enc;
  }

  private computePass(): GPUComputePassEncoder {
    this.pass ??= this.encoder().beginComputePass();
    return this.pass;
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = undefined;
  }

  /** Submit everything recorded (with the parameters it uses). */
  private flush(): void {
    if (!this.enc) return;
    this.endPass();
    if (this.nParams > 0) this.queue.writeBuffer(this.paramBuf, 0, this.paramHost, 0, this.nParams * this.slotBytes);
    this.queue.submit([this.enc.finish()]);
    this.enc = undefined;
    this.nParams = 0;
    for (const b of this.pendingDestroy) b.destroy();
    this.pendingDestroy = [];
  }

  private upload(data: Uint32Array | Float32Array): GPUBuffer {
    const buffer = this.device.createBuffer({ size: Math.max(4, data.byteLength), usage: USAGE.STORAGE | USAGE.COPY_DST });
    if (data.byteLength > 0) this.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    this.live.add(buffer);
    return buffer;
  }

  private takeStaging(bytes: number): { buffer: GPUBuffer; size: number; busy: boolean } {
    let s = this.staging.find((x) => !x.busy && x.size >= bytes);
    if (!s) {
      const size = Math.max(4096, nextPow2(bytes));
      s = { buffer: this.device.createBuffer({ size, usage: USAGE.MAP_READ | USAGE.COPY_DST }), size, busy: false };
      this.staging.push(s);
    }
    s.busy = true;
    return s;
  }

  private throwIfFailed(): void {
    if (this.disposed) throw new Error('webgpu: backend used after dispose()');
    if (this.error) throw new Error(`webgpu: ${this.error}`);
  }
}

function checkRange(op: string, b: GpuBuf, offset: number, length: number): void {
  if (offset < 0 || length < 0 || offset + length > b.length) {
    throw new RangeError(`webgpu ${op}: range [${offset}, ${offset + length}) is outside a buffer of ${b.length}`);
  }
}

/** A 1-D count of workgroups as a 2-D grid within the per-dimension limit (kernels skip the extra ones). */
function grid(n: number): [number, number] {
  if (n <= MAX_GROUPS_X) return [Math.max(1, n), 1];
  const y = Math.ceil(n / MAX_GROUPS_X);
  return [Math.ceil(n / y), y];
}
