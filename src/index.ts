// Public library API of rwkv7-ts.
export { UserError, FormatError } from './errors.js';
export { WorldTokenizer } from './tokenizer/index.js';
