// Public library API of rwkv7-ts.
export { UserError, FormatError } from './errors.js';
export { WorldTokenizer } from './tokenizer/index.js';

// Checkpoints: .pth / safetensors / fla-HF folders, and hyperparameters from tensor shapes.
export { openCheckpoint, openSafetensors, writeSafetensors, toFloat32 } from './formats/index.js';
export type { Checkpoint, TensorRef, DType, OpenedCheckpoint, RawTensorFile, TensorSource } from './formats/index.js';
export { configFromCheckpoint } from './model/config.js';
export type { ModelConfig } from './model/config.js';

// Runtime: sampling and generation.
export {
  Sampler, PenaltyTracker, Rng, GENERATE_DEFAULTS, CHAT_DEFAULTS, validateSampling, samplingDistribution, argmax,
  isPenaltyFreeText, randomSeed,
} from './runtime/sampler.js';
export type { SamplingOptions } from './runtime/sampler.js';
export { generate, Session, StopMatcher, tokensPerSecond } from './runtime/generate.js';
export type { GenerateOptions, GenerateResult, FinishReason, SessionStats } from './runtime/generate.js';
