// Public library API of rwkv7-ts.
export { UserError, FormatError } from './errors.js';
export { WorldTokenizer } from './tokenizer/index.js';

// Checkpoints: .pth / safetensors / fla-HF folders, and hyperparameters from tensor shapes.
export { openCheckpoint, openSafetensors, writeSafetensors, toFloat32, bytesSource, memorySink } from './formats/index.js';
export type { Checkpoint, TensorRef, DType, OpenedCheckpoint, RawTensorFile, TensorSource, ByteSource, ByteSink, FileSet } from './formats/index.js';
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
export { JsonGrammar, JsonConstraint, constraintFromResponseFormat, TokenMask, DEFAULT_MAX_WHITESPACE } from './runtime/constraint/index.js';
export type { TokenConstraint, JsonConstraintOptions, ConstraintStats } from './runtime/constraint/index.js';
export { Chat, CHAT_STOP, cleanMessage, userTurn, systemBlock, renderHistory } from './runtime/chat.js';
export type { ChatTurn, ChatHistory } from './runtime/chat.js';

// Model, state, backends, verification.
export { loadModel } from './runtime/load.js';
export { DEFAULT_MODEL_PATH, fileSource, folderFileSet, fileSink } from './platform/node.js';
export type { LoadOptions, LoadedModel } from './runtime/load.js';
export { RWKV7 } from './model/rwkv7.js';
export type { ForwardOptions } from './model/rwkv7.js';
export { State, saveState, loadState, stateToBytes, zeroHostState } from './model/state.js';
export type { HostState } from './model/state.js';
export { readStateFile, loadInitialState, stateFingerprint, stateNameOf } from './model/state-file.js';
export type { InitialState, StateFileKind } from './model/state-file.js';
// Model cache (Node): rwkv7 pull / list.
export { CATALOGUE, catalogueEntry, modelsDir, listCached, resolveModelArg } from './platform/models.js';
export type { CatalogueEntry, CachedModel } from './platform/models.js';
export { pull, pullTarget } from './platform/download.js';
export type { PullTarget, PullOptions, PullResult } from './platform/download.js';
export { createBackend, parseBackendName, parseWeightDType } from './backends/index.js';
export type { BackendName, BackendOptions } from './backends/index.js';
export type { Backend, Buf, Mat, HostMatrix, WeightDType, Activation, MatmulOptions } from './backends/kernels.js';
export { verifyGolden, deviation } from './runtime/verify.js';
export type { VerifyReport, GroupResult, VerifyMode } from './runtime/verify.js';
export { perplexity, compareLogits, softmax64, logProb, topK } from './runtime/metrics.js';
export type { PerplexityReport, CompareReport } from './runtime/metrics.js';
export { createServer, type ServerOptions, type RwkvServer } from './server/index.js';
