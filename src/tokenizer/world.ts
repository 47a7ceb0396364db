/**
 * The RWKV World tokenizer: greedy longest-byte-match over the 65536-token World vocabulary,
 * exactly as the official `TRIE_TOKENIZER` / `rwkv` package tokenizer.
 */
import { UserError } from '../errors.js';
import { platform } from '../platform/index.js';
import { readAll, type ByteSource } from '../formats/source.js';
import { parseVocab, type Vocab } from './vocab.js';
import { ByteTrie } from './trie.js';

/** Number of rows in every RWKV World model's embedding (the vocabulary file defines ids 1..65529). */
export const WORLD_VOCAB_SIZE = 65536;

/** The bundled vocabulary's bytes are below 4 MiB; a vocabulary file over this is not one. */
const MAX_VOCAB_BYTES = 64 * 1024 * 1024;

export interface WorldTokenizerOptions {
  /**
   * The model's vocabulary size: ids below it are valid even if the file does not define them
   * (they decode to no bytes, like id 0, the end-of-text token). Defaults to the largest id + 1.
   */
  vocabSize?: number;
}

/** Incremental decoder: feed ids one at a time and get text as soon as characters are complete. */
export interface StreamDecoder {
  /** Adds one token; returns the text of every UTF-8 character completed so far (possibly ''). */
  push(id: number): string;
  /** Ends the stream; returns what is left (an incomplete trailing sequence becomes U+FFFD). */
  flush(): string;
}

const utf8Encoder = new TextEncoder();

/** Decodes UTF-8 like `TextDecoder`, replacing invalid sequences with U+FFFD, and keeping a leading BOM. */
function newUtf8Decoder(): TextDecoder {
  return new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
}

/** Largest vocabulary a tokenizer may be asked to span (real ones have 65536 ids; the id table costs 4 bytes an id). */
export const MAX_VOCAB_SIZE = 1 << 24;

/** Options are checked before anything is parsed or allocated. */
function checkOptions(options: WorldTokenizerOptions): void {
  const v = options.vocabSize;
  if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_VOCAB_SIZE)) {
    throw new UserError(`vocabSize must be an integer from 1 to ${MAX_VOCAB_SIZE}, got ${String(v)}`);
  }
}

export class WorldTokenizer {
  /** Ids run from 0 to vocabSize - 1. */
  readonly vocabSize: number;
  private readonly data: Uint8Array;
  private readonly offsets: Uint32Array;
  private readonly trie: ByteTrie;
  private readonly decoder = newUtf8Decoder();
  private scratch = new Int32Array(1024);
  private static cached: WorldTokenizer | undefined;

  private constructor(vocab: Vocab, name: string, options: WorldTokenizerOptions) {
    const requested = options.vocabSize;
    if (requested !== undefined && requested < vocab.size) {
      throw new UserError(`vocabSize ${requested} is smaller than the vocabulary in ${name} (largest id ${vocab.size - 1})`);
    }
    this.vocabSize = requested ?? vocab.size;
    this.data = vocab.data;
    // Ids past the file's last id (but below vocabSize) have no bytes: extend the offset table.
    const offsets = new Uint32Array(this.vocabSize + 1);
    offsets.set(vocab.offsets);
    offsets.fill(vocab.offsets[vocab.size]!, vocab.size + 1);
    this.offsets = offsets;
    this.trie = new ByteTrie(vocab, name);
  }

  /** Loads a vocabulary in the World format (`ID REPR LEN` lines) from a path (Node) or a ByteSource. */
  static fromFile(input: string | ByteSource, options: WorldTokenizerOptions = {}): WorldTokenizer {
    checkOptions(options);
    const opened = typeof input === 'string' ? platform.openPath(input) : input;
    if (!('read' in opened)) throw new UserError(`${opened.name}: is a folder, expected a vocabulary file`);
    try {
      if (opened.size > MAX_VOCAB_BYTES) throw new UserError(`${opened.name}: ${opened.size} bytes is too large for a vocabulary file`);
      return WorldTokenizer.fromBuffer(readAll(opened), opened.name, options);
    } finally {
      opened.close();
    }
  }

  /** Parses a vocabulary from the file's bytes; `name` is used in error messages. */
  static fromBuffer(buf: Uint8Array, name: string, options: WorldTokenizerOptions = {}): WorldTokenizer {
    checkOptions(options);
    return new WorldTokenizer(parseVocab(buf, name), name, options);
  }

  /**
   * The bundled World vocabulary (`assets/rwkv_vocab_v20230424.txt`), loaded once and cached. Synchronous where the
   * platform can read it so (Node); in a browser, `await WorldTokenizer.load()` once first.
   */
  static default(): WorldTokenizer {
    if (!WorldTokenizer.cached) {
      const bytes = platform.assetSync('vocab');
      if (!bytes) throw new UserError('the bundled vocabulary is not loaded yet: await WorldTokenizer.load() first');
      WorldTokenizer.cached = WorldTokenizer.fromBuffer(bytes, 'rwkv_vocab_v20230424.txt', { vocabSize: WORLD_VOCAB_SIZE });
    }
    return WorldTokenizer.cached;
  }

  /** The bundled World vocabulary if it has been loaded already (no I/O), else undefined. */
  static defaultIfLoaded(): WorldTokenizer | undefined {
    return WorldTokenizer.cached;
  }

  /** The bundled World vocabulary, on any platform (fetched beside the bundle in browsers). */
  static async load(): Promise<WorldTokenizer> {
    if (!WorldTokenizer.cached) {
      const bytes = platform.assetSync('vocab') ?? new Uint8Array(await platform.asset('vocab'));
      WorldTokenizer.cached ??= WorldTokenizer.fromBuffer(bytes, 'rwkv_vocab_v20230424.txt', { vocabSize: WORLD_VOCAB_SIZE });
    }
    return WorldTokenizer.cached;
  }

  /** Encodes text (as its UTF-8 bytes; lone surrogates become U+FFFD as with TextEncoder). */
  encode(text: string): number[] {
    return this.encodeBytes(utf8Encoder.encode(text));
  }

  /** Encodes raw bytes (need not be valid UTF-8). */
  encodeBytes(bytes: Uint8Array): number[] {
    // Encode into a reused typed scratch buffer (never more ids than bytes), then copy into a
    // presized array: much cheaper than growing an array with push().
    if (this.scratch.length < bytes.length) this.scratch = new Int32Array(Math.max(bytes.length, 2 * this.scratch.length));
    const scratch = this.scratch;
    const n = this.trie.encodeInto(bytes, 0, bytes.length, scratch, 0);
    if (n < 0) {
      const bad = ~n;
      throw new UserError(
        `cannot encode byte 0x${bytes[bad]!.toString(16).padStart(2, '0')} at offset ${bad}: ` +
          'the vocabulary has no token for it',
      );
    }
    const out = new Array<number>(n);
    for (let k = 0; k < n; k++) out[k] = scratch[k]!;
    // Do not pin a huge buffer after one huge input.
    if (scratch.length > 1 << 22) this.scratch = new Int32Array(1024);
    return out;
  }

  /** The bytes of one token (a view into the tokenizer's storage: do not modify). Empty for ids the file does not define. */
  tokenBytes(id: number): Uint8Array {
    this.checkId(id);
    return this.data.subarray(this.offsets[id]!, this.offsets[id + 1]!);
  }

  /** Concatenated bytes of the tokens. */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    const offsets = this.offsets;
    const data = this.data;
    let total = 0;
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k]!;
      this.checkId(id);
      total += offsets[id + 1]! - offsets[id]!;
    }
    const out = new Uint8Array(total);
    let o = 0;
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k]!;
      const s = offsets[id]!;
      const e = offsets[id + 1]!;
      // Tokens are short: a byte loop beats creating a subarray per token.
      for (let p = s; p < e; p++) out[o++] = data[p]!;
    }
    return out;
  }

  /** Decodes to text; invalid UTF-8 is replaced with U+FFFD exactly as TextDecoder does. */
  decode(ids: ArrayLike<number>): string {
    return this.decoder.decode(this.decodeBytes(ids));
  }

  /**
   * A streaming decoder: it holds back a character split across tokens until it is complete,
   * so concatenating every push() and the final flush() gives exactly decode(all ids).
   */
  streamDecoder(): StreamDecoder {
    // TextDecoder in streaming mode keeps an incomplete trailing sequence for the next call and
    // is specified to produce the same output as a one-shot decode of the concatenation.
    const decoder = newUtf8Decoder();
    return {
      push: (id: number): string => decoder.decode(this.tokenBytes(id), { stream: true }),
      flush: (): string => decoder.decode(),
    };
  }

  private checkId(id: number): void {
    if (!(Number.isInteger(id) && id >= 0 && id < this.vocabSize)) {
      throw new UserError(`token id ${id} is out of range: the vocabulary has ${this.vocabSize} ids (0..${this.vocabSize - 1})`);
    }
  }
}
