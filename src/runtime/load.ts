/**
 * Loading a model: open the checkpoint (any supported format and layout), read its hyperparameters from
 * the tensor shapes, create the backend and upload the weights.
 */
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { openCheckpoint } from '../formats/index.js';
import type { FileFormat, Layout } from '../formats/types.js';
import { configFromCheckpoint, type ModelConfig } from '../model/config.js';
import { loadWeights, type LoadProgress } from '../model/weights.js';
import { RWKV7 } from '../model/rwkv7.js';
import { createBackend, type BackendName, type BackendOptions } from '../backends/index.js';
import { UserError } from '../errors.js';

/** The small real model shipped inside the package (used when no --model is given). */
export const DEFAULT_MODEL_PATH = fileURLToPath(new URL('../../assets/rwkv7-storyteller-L6-D192.pth', import.meta.url));

export interface LoadOptions extends BackendOptions {
  backend?: BackendName;
  onProgress?: LoadProgress;
}

export interface LoadedModel {
  model: RWKV7;
  config: ModelConfig;
  path: string;
  format: FileFormat;
  layout: Layout;
}

export async function loadModel(path: string | undefined, opts: LoadOptions = {}): Promise<LoadedModel> {
  const p = path ?? DEFAULT_MODEL_PATH;
  if (!existsSync(p)) throw new UserError(`model not found: ${p}`);
  const ck = openCheckpoint(p);
  try {
    const config = configFromCheckpoint(ck);
    const backend = await createBackend(opts.backend ?? 'auto', opts);
    const weights = loadWeights(ck, config, backend, opts.onProgress);
    return { model: new RWKV7(backend, config, weights), config, path: p, format: ck.format, layout: ck.layout };
  } finally {
    ck.close();
  }
}
