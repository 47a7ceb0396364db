/**
 * Backend selection. `auto` picks WebGPU when a hardware adapter exists, else the WASM CPU backend.
 * Backends are imported lazily so that, e.g., the Dawn native module is only loaded when WebGPU is wanted.
 */
import type { ActivationMode, Backend, WeightDType } from './kernels.js';
import { ACTIVATION_MODES, WEIGHT_DTYPES } from './kernels.js';
import { UserError } from '../errors.js';

export type BackendName = 'auto' | 'js' | 'wasm' | 'webgpu';
export const BACKEND_NAMES: readonly BackendName[] = ['auto', 'js', 'wasm', 'webgpu'];

export interface BackendOptions {
  /** Weight storage type (default f32). */
  dtype?: WeightDType;
  /** Inputs of q4 matrix products: full precision (default) or rounded to 8 bits (js and wasm; see ActivationMode). */
  activations?: ActivationMode;
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

export function parseActivationMode(s: string): ActivationMode {
  if ((ACTIVATION_MODES as readonly string[]).includes(s)) return s as ActivationMode;
  throw new UserError(`unknown activations mode '${s}' (expected one of: ${ACTIVATION_MODES.join(', ')})`);
}

/** The weights a backend computes with, for messages: `bf16`, or `q4, activations q8`. */
export function weightsLabel(b: Pick<Backend, 'weightDType' | 'activations'>): string {
  return b.activations === 'q8' ? `${b.weightDType}, activations q8` : b.weightDType;
}

/** `activations: 'q8'` is about q4 products: refused, by name, with any other weight dtype. */
export function checkActivations(dtype: WeightDType, activations: ActivationMode | undefined): void {
  if (activations === 'q8' && dtype !== 'q4') {
    throw new UserError(`--activations q8 rounds the inputs of 4-bit products: it needs --dtype q4 (or a Q4_0 GGUF), not ${dtype}`);
  }
}

export async function createBackend(name: BackendName, opts: BackendOptions = {}): Promise<Backend> {
  const dtype = opts.dtype ?? 'f32';
  switch (name) {
    case 'js': {
      const { JsBackend } = await import('./js/index.js');
      return new JsBackend(dtype, opts.activations);
    }
    case 'wasm': {
      const { createWasmBackend } = await import('./wasm/index.js');
      return createWasmBackend({ ...opts, dtype });
    }
    case 'webgpu': {
      if (opts.activations === 'q8') throw new UserError('--activations q8 is computed by the js and wasm backends; webgpu multiplies 4-bit weights with full-precision activations');
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
