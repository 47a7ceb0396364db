// Public library API of rwkv7-ts.
export { UserError, FormatError } from './errors.js';
export { WorldTokenizer } from './tokenizer/index.js';

// Runtime: sampling and generation.
export {
  Sampler, PenaltyTracker, Rng, GENERATE_DEFAULTS, CHAT_DEFAULTS, validateSampling, samplingDistribution, argmax,
  isPenaltyFreeText, randomSeed,
} from './runtime/sampler.js';
export type { SamplingOptions } from './runtime/sampler.js';
export { generate, Session, StopMatcher, tokensPerSecond } from './runtime/generate.js';
export type { GenerateOptions, GenerateResult, FinishReason, SessionStats } from './runtime/generate.js';
