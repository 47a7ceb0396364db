/**
 * Loading a model: open the checkpoint (any supported format and layout), read its hyperparameters from
 * the tensor shapes, create the backend and upload the weights.
 */
import { openCheckpoint } from '../formats/index.js';
import type { ByteSource, FileSet } from '../formats/source.js';
import type { Checkpoint, FileFormat, Layout } from '../formats/types.js';
import type { WeightDType } from '../backends/kernels.js';
import type { GgufTensorRef } from '../formats/gguf-rwkv7.js';
import { configFromCheckpoint, type ModelConfig } from '../model/config.js';
import { loadWeights, type LoadProgress } from '../model/weights.js';
import { RWKV7 } from '../model/rwkv7.js';
import { checkActivations, createBackend, type BackendName, type BackendOptions } from '../backends/index.js';
import { platform } from '../platform/index.js';
import { WorldTokenizer, WORLD_VOCAB_SIZE } from '../tokenizer/world.js';
import { checkGgufVocab } from '../formats/gguf-rwkv7.js';
import type { GgufFile } from '../formats/gguf.js';
import { assertModelFits } from './fit.js';


export interface LoadOptions extends BackendOptions {
  /** Compute backend (default `auto`). */
  backend?: BackendName;
  /** Weight storage type (default: `defaultWeightDType`, the checkpoint's own). */
  dtype?: WeightDType;
  onProgress?: LoadProgress;
}

export interface LoadedModel {
  model: RWKV7;
  config: ModelConfig;
  path: string;
  format: FileFormat;
  layout: Layout;
}

/**
 * The weight dtype used when none is asked for: the checkpoint's own float type (bf16 for the official releases:
 * exact, and half the bytes of f32; a GGUF's Q4_0 or Q8_0 blocks: q4 / q8_0), except on the js backend, which computes
 * in f32/f64 and is fastest with f32.
 */
export function defaultWeightDType(ck: Checkpoint, backend: BackendName): WeightDType {
  if (backend === 'js') return 'f32';
  const head = ck.tensors.get('head.weight');
  // A GGUF's Q4_0/Q8_0 blocks are kept as they are (src/backends/quant.ts)
  const ggml = (head as GgufTensorRef | undefined)?.ggml?.type.name;
  if (ggml === 'Q4_0') return 'q4';
  if (ggml === 'Q8_0') return 'q8_0';
  switch (head?.dtype) {
    case 'BF16': return 'bf16';
    case 'F16': return 'f16';
    default: return 'f32';
  }
}

/**
 * A GGUF carries its own tokenizer: it must be the World vocabulary (all official RWKV-7 models use it; tiny test
 * models a prefix of it), or its tokens would not mean what the World tokenizer says they do. A different one is
 * reported (the World tokenizer is still what the commands use: GGUF files of other vocabularies are not supported).
 */
function checkGgufTokenizer(g: GgufFile, config: ModelConfig, log?: (m: string) => void): void {
  const world = WorldTokenizer.defaultIfLoaded() ?? (config.vocabSize === WORLD_VOCAB_SIZE ? safeDefault() : undefined);
  if (!world) return;
  const r = checkGgufVocab(g, world);
  if (r.status === 'different') log?.(`${r.message}; this runtime uses the RWKV World tokenizer`);
}

function safeDefault(): WorldTokenizer | undefined {
  try {
    return WorldTokenizer.default();
  } catch {
    return undefined; // browsers: the vocabulary is loaded asynchronously (WorldTokenizer.load())
  }
}

/**
 * Loads a model from a path (Node; default: the bundled model), a ByteSource (one checkpoint file, on any platform)
 * or a FileSet (a Hugging Face folder).
 */
export async function loadModel(input: string | ByteSource | FileSet | undefined, opts: LoadOptions = {}): Promise<LoadedModel> {
  const ck = openCheckpoint(input ?? platform.defaultModelPath());
  const p = ck.path;
  try {
    const config = configFromCheckpoint(ck);
    if (ck.gguf) checkGgufTokenizer(ck.gguf, config, opts.log);
    const backendName = opts.backend ?? 'auto';
    const dtype = opts.dtype ?? defaultWeightDType(ck, backendName);
    checkActivations(dtype, opts.activations);
    // the wasm threads start while the weights upload
    const backend = await createBackend(backendName, { ...opts, dtype, deferThreads: true });
    assertModelFits(config, backend, p);
    let weights;
    try {
      weights = loadWeights(ck, config, backend, opts.onProgress);
      await backend.sync();
    } catch (e) {
      await backend.dispose();
      throw e;
    }
    return { model: new RWKV7(backend, config, weights), config, path: p, format: ck.format, layout: ck.layout };
  } finally {
    ck.close();
  }
}
