// RWKV World tokenizer: public API.
export { WorldTokenizer, WORLD_VOCAB_SIZE } from './world.js';
export type { WorldTokenizerOptions, StreamDecoder } from './world.js';
