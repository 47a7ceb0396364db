import type { Backend } from '../kernels.js';
import type { BackendOptions } from '../index.js';
import { JsBackend } from '../js/index.js';

/** Placeholder until the WASM SIMD backend lands: runs the js kernels. */
export async function createWasmBackend(opts: BackendOptions): Promise<Backend> {
  return new JsBackend(opts.dtype);
}
