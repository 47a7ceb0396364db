import type { Backend } from '../kernels.js';
import type { BackendOptions } from '../index.js';
import { UserError } from '../../errors.js';

/** `true` when a hardware (non-fallback) WebGPU adapter exists, else a short reason why not. */
export async function findHardwareAdapter(): Promise<true | string> {
  return 'WebGPU backend not built yet';
}

export async function createWebGpuBackend(_opts: BackendOptions): Promise<Backend> {
  throw new UserError('the webgpu backend is not available yet');
}
