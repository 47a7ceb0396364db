/**
 * Backend selection. `auto` picks WebGPU when a hardware adapter exists, else the WASM CPU backend.
 * Backends are imported lazily so that, e.g., the Dawn native module is only loaded when WebGPU is wanted.
 */
import type { Backend, WeightDType } from './kernels.js';
import { WEIGHT_DTYPES } from './kernels.js';
import { UserError } from '../errors.js';

export type BackendName = 'auto' | 'js' | 'wasm' | 'webgpu';
export const BACKEND_NAMES: readonly BackendName[] = ['auto', 'js', 'wasm', 'webgpu'];

export interface BackendOptions {
  /** Weight storage type (default f32). */
  dtype?: WeightDType;
  /** CPU worker threads for the wasm backend (default: the number of cores). */
  threads?: number;
  /**
   * wasm: return before the worker threads have started (they start while the caller goes on, e.g. uploads the
   * weights; ops run on the calling thread until they are up, with the same results); `sync()` waits for them.
   */
  deferThreads?: boolean;
  /** Called with a one-line notice (e.g. "no GPU adapter, using wasm"). */
  log?: (msg: string) => void;
}

export function parseBackendName(s: string): BackendName {
  if ((BACKEND_NAMES as readonly string[]).includes(s)) return s as BackendName;
  throw new UserError(`unknown backend '${s}' (expected one of: ${BACKEND_NAMES.join(', ')})`);
}

export function parseWeightDType(s: string): WeightDType {
  if ((WEIGHT_DTYPES as readonly string[]).includes(s)) return s as WeightDType;
  throw new UserError(`unknown dtype '${s}' (expected one of: ${WEIGHT_DTYPES.join(', ')})`);
}

export async function createBackend(name: BackendName, opts: BackendOptions = {}): Promise<Backend> {
  const dtype = opts.dtype ?? 'f32';
  switch (name) {
    case 'js': {
      const { JsBackend } = await import('./js/index.js');
      return new JsBackend(dtype);
    }
    case 'wasm': {
      const { createWasmBackend } = await import('./wasm/index.js');
      return createWasmBackend({ ...opts, dtype });
    }
    case 'webgpu': {
      const { createWebGpuBackend } = await import('./webgpu/index.js');
      return createWebGpuBackend({ ...opts, dtype });
    }
    case 'auto': {
      const { findHardwareAdapter } = await import('./webgpu/index.js');
      const why = await findHardwareAdapter();
      if (why === true) return createBackend('webgpu', opts);
      opts.log?.(`${why}; using the wasm CPU backend`);
      return createBackend('wasm', opts);
    }
  }
}
