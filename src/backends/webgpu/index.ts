/// <reference types="@webgpu/types" />
/**
 * WebGPU backend entry points. One code path for browsers (`navigator.gpu`) and Node (Dawn, via the `webgpu`
 * npm package, loaded only when needed; see src/platform/node.ts). The GPU object is created once per process and
 * kept referenced by every backend created from it (Dawn crashed when it was collected while an adapter lived).
 *
 * Software adapters (SwiftShader, llvmpipe/lavapipe, WARP, ...) do not count as hardware for `auto`, unless
 * RWKV7_WEBGPU_ALLOW_SOFTWARE=1; `--backend webgpu` accepts them (with a notice).
 */
import type { Backend } from '../kernels.js';
import type { BackendOptions } from '../index.js';
import { UserError } from '../../errors.js';
import { platform } from '../../platform/index.js';
import { GPU_TUNING, SOFTWARE_TUNING, WebGpuBackend, type Tuning } from './backend.js';

export { GPU_TUNING, SOFTWARE_TUNING, WebGpuBackend, type Tuning } from './backend.js';

/** navigator.gpu in browsers, Dawn in Node (the platform layer decides); a reason string when there is none. */
function getGpu(): Promise<GPU | string> {
  return platform.gpu();
}

function env(name: string): string | undefined {
  return platform.env(name);
}

export function softwareAllowed(): boolean {
  return env('RWKV7_WEBGPU_ALLOW_SOFTWARE') === '1';
}

export interface AdapterDescription {
  name: string;
  software: boolean;
}

/** A readable adapter name, and whether it is a software (CPU) implementation. */
export function describeAdapter(adapter: GPUAdapter): AdapterDescription {
  const info = (adapter.info ?? {}) as Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean };
  const fields = [info.vendor, info.architecture, info.device, info.description].filter((s): s is string => !!s);
  const name = info.description || fields.join(' ') || 'unknown adapter';
  const fallback = info.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false;
  const software = fallback || /swiftshader|llvmpipe|lavapipe|softpipe|software|basic render|warp/i.test(fields.join(' '));
  return { name, software };
}

async function requestAdapter(gpu: GPU, allowFallback: boolean): Promise<GPUAdapter | null> {
  try {
    const a = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (a || !allowFallback) return a;
    return await gpu.requestAdapter({ forceFallbackAdapter: true });
  } catch {
    return null;
  }
}

/** `true` when a hardware (non-fallback) WebGPU adapter exists, else a short reason why not. */
export async function findHardwareAdapter(): Promise<true | string> {
  const pre = await platform.gpuPrecheck();
  if (pre) return pre;
  const gpu = await getGpu();
  if (typeof gpu === 'string') return gpu;
  const adapter = await requestAdapter(gpu, false);
  if (!adapter) return 'no WebGPU adapter found';
  const d = describeAdapter(adapter);
  if (d.software && !softwareAllowed()) return `only a software WebGPU adapter (${d.name}) found`;
  return true;
}

/** Internal knobs for tests (not CLI options). */
export interface WebGpuTestOptions {
  /** Split weight matrices into parts of at most this many bytes (default: the device limit). */
  maxBindingBytes?: number;
  /** Kernel choices (default: by adapter kind), to run the GPU configuration on a software adapter. */
  tuning?: Tuning;
}

export async function createWebGpuBackend(opts: BackendOptions, test: WebGpuTestOptions = {}): Promise<Backend> {
  const dtype = opts.dtype ?? 'f32';
  const gpu = await getGpu();
  if (typeof gpu === 'string') throw new UserError(`--backend webgpu: ${gpu}; use --backend wasm`);
  const adapter = await requestAdapter(gpu, true);
  if (!adapter) {
    throw new UserError('--backend webgpu: no WebGPU adapter found (no GPU, or no Vulkan/Metal/D3D12 driver for it); use --backend wasm');
  }
  const desc = describeAdapter(adapter);
  // Ask for the adapter's own limits where big models need them (the defaults are 128/256 MiB and 8 buffers).
  const l = adapter.limits;
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({
      requiredLimits: {
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxBufferSize: l.maxBufferSize,
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      },
    });
  } catch (e) {
    throw new UserError(`--backend webgpu: could not open a device on ${desc.name}: ${(e as Error).message}`);
  }
  if (desc.software) opts.log?.(`webgpu: using the software adapter ${desc.name} (slow; for testing)`);
  return new WebGpuBackend(gpu, desc.name, desc.software, device, {
    dtype,
    maxBindingBytes: test.maxBindingBytes,
    tuning: test.tuning ?? (desc.software ? SOFTWARE_TUNING : GPU_TUNING),
  });
}
