/**
 * Constrained decoding: output that always parses as JSON and matches a JSON Schema (the subset documented in
 * schema.ts). The pieces:
 *   schema.ts      JSON Schema → schema tree (refusing unsupported keywords with their JSON Pointer)
 *   lexers.ts      string-content and number DFAs
 *   automaton.ts   the byte-level pushdown automaton over the schema tree
 *   token-mask.ts  the vocabulary as a sorted trie, walked against the automaton → the allowed tokens
 *   this file      grammars (compiled once, with a cache of masks by state) and per-generation constraints
 *
 * Use (library):
 *   const c = JsonGrammar.fromSchema(schema).constraint(tokenizer);
 *   await generate(model, tokenizer, state, ids, { maxTokens, sampling, constraint: c });
 * or, for an OpenAI `response_format` value: `constraintFromResponseFormat(body.response_format, tokenizer)`.
 */
import { UserError } from '../../errors.js';
import type { WorldTokenizer } from '../../tokenizer/index.js';
import { JsonAutomaton, type AutomatonOptions, type Frame } from './automaton.js';
import { compileSchema } from './schema.js';
import { TokenIndex, TokenMask, computeMask } from './token-mask.js';

export { TokenMask } from './token-mask.js';
export { DEFAULT_MAX_WHITESPACE } from './automaton.js';

/** What the generation loop needs from a constraint (generate.ts's `constraint` option). */
export interface TokenConstraint {
  /** Writes `logits` to `out` (may be the same array) with every token that cannot come next set to -Infinity. */
  mask(logits: Float32Array, out: Float32Array): void;
  /** Moves past a sampled token; throws a UserError if the token was not allowed. */
  accept(token: number): void;
  /** The output so far is a complete value: the end-of-text token is allowed. */
  readonly complete: boolean;
  /** Complete, and nothing but end-of-text may follow: generation should end now. */
  readonly done: boolean;
}

export interface JsonConstraintOptions extends AutomatonOptions {
  /** The end-of-text token, allowed only once the value is complete (default 0, the World vocabulary's). */
  eosId?: number;
}

/** Counters of one constraint's masking work (for benchmarks and logs). */
export interface ConstraintStats {
  /** Masks asked for (one per generated token). */
  masks: number;
  /** Of those, found in the grammar's cache. */
  cacheHits: number;
  /** Time spent computing and applying masks, in ms. */
  maskMs: number;
}

/** Masks kept per grammar and vocabulary (FIFO eviction beyond this; a bitmap mask is 8 KiB). */
const MASK_CACHE_LIMIT = 2048;
/** Compiled grammars kept by `fromSchema` (so repeated requests with the same schema share their masks). */
const GRAMMAR_CACHE_LIMIT = 64;

/** A compiled JSON Schema: immutable, shareable between generations; holds the mask cache. */
export class JsonGrammar {
  readonly automaton: JsonAutomaton;
  readonly eosId: number;
  private readonly masks = new Map<TokenIndex, Map<string, TokenMask>>();
  private static readonly compiled = new Map<string, JsonGrammar>();

  private constructor(schema: unknown, opts: JsonConstraintOptions) {
    const ws = opts.maxWhitespace;
    if (ws !== undefined && !(Number.isInteger(ws) && ws >= 0)) throw new UserError(`maxWhitespace must be an integer ≥ 0 (got ${ws})`);
    const { root, compiler } = compileSchema(schema);
    this.automaton = new JsonAutomaton(root, compiler, opts);
    this.eosId = opts.eosId ?? 0;
  }

  /**
   * Compiles a JSON Schema (throws a UserError naming an unsupported keyword and where it is). The same schema
   * and options give the same (cached) grammar.
   */
  static fromSchema(schema: unknown, opts: JsonConstraintOptions = {}): JsonGrammar {
    let key: string;
    try {
      key = JSON.stringify([schema, opts.maxWhitespace ?? null, opts.eosId ?? 0]);
    } catch (e) {
      throw new UserError(`the JSON schema is not JSON: ${(e as Error).message}`);
    }
    let g = JsonGrammar.compiled.get(key);
    if (g) {
      // Refresh its place in the FIFO, so much-used grammars stay.
      JsonGrammar.compiled.delete(key);
    } else {
      g = new JsonGrammar(schema, opts);
      if (JsonGrammar.compiled.size >= GRAMMAR_CACHE_LIMIT) JsonGrammar.compiled.delete(JsonGrammar.compiled.keys().next().value!);
    }
    JsonGrammar.compiled.set(key, g);
    return g;
  }

  /** Any JSON object (OpenAI's `response_format: {"type": "json_object"}`). */
  static anyObject(opts: JsonConstraintOptions = {}): JsonGrammar {
    return JsonGrammar.fromSchema({ type: 'object' }, opts);
  }

  /** A fresh constraint (one per generation) over a tokenizer's vocabulary. */
  constraint(tokenizer: WorldTokenizer): JsonConstraint {
    return new JsonConstraint(this, tokenizer);
  }

  /** The allowed tokens from `state` (cached by the state's key). */
  maskFor(index: TokenIndex, state: Frame, stats?: ConstraintStats): TokenMask {
    let cache = this.masks.get(index);
    if (!cache) this.masks.set(index, (cache = new Map()));
    const key = this.automaton.key(state);
    let mask = cache.get(key);
    if (mask) {
      if (stats) stats.cacheHits++;
      return mask;
    }
    mask = computeMask(index, this.automaton, state, this.eosId);
    if (cache.size >= MASK_CACHE_LIMIT) {
      // Drop the oldest quarter.
      let drop = MASK_CACHE_LIMIT >> 2;
      for (const k of cache.keys()) {
        cache.delete(k);
        if (--drop === 0) break;
      }
    }
    cache.set(key, mask);
    return mask;
  }
}

/** One generation's position in a grammar: the automaton state after the tokens accepted so far. */
export class JsonConstraint implements TokenConstraint {
  private state: Frame;
  private readonly index: TokenIndex;
  private ended = false;
  /** The bytes accepted so far. */
  private readonly out: number[] = [];
  readonly stats: ConstraintStats = { masks: 0, cacheHits: 0, maskMs: 0 };

  constructor(
    readonly grammar: JsonGrammar,
    private readonly tokenizer: WorldTokenizer,
  ) {
    this.state = grammar.automaton.start();
    this.index = TokenIndex.of(tokenizer);
  }

  /** The tokens allowed next. */
  allowed(): TokenMask {
    return this.grammar.maskFor(this.index, this.state, this.stats);
  }

  mask(logits: Float32Array, out: Float32Array): void {
    const t0 = performance.now();
    this.stats.masks++;
    if (this.ended) {
      out.fill(-Infinity);
    } else {
      this.allowed().apply(logits, out);
    }
    this.stats.maskMs += performance.now() - t0;
  }

  accept(token: number): void {
    if (token === this.grammar.eosId) {
      if (!this.complete) throw new UserError(`token ${token} (end of text) is not allowed: the JSON value is not complete`);
      this.ended = true;
      return;
    }
    if (this.ended) throw new UserError(`token ${token} is not allowed: the output has ended`);
    const bytes = this.tokenizer.tokenBytes(token);
    if (bytes.length === 0) throw new UserError(`token ${token} is not allowed: it has no bytes`);
    let f: Frame | null = this.state;
    for (let k = 0; k < bytes.length && f; k++) f = this.grammar.automaton.step(f, bytes[k]!);
    if (!f) {
      const text = JSON.stringify(new TextDecoder().decode(bytes));
      throw new UserError(`token ${token} (${text}) cannot continue the JSON output ${JSON.stringify(this.text())}`);
    }
    this.state = f;
    for (const b of bytes) this.out.push(b);
  }

  get complete(): boolean {
    return this.ended || this.grammar.automaton.complete(this.state);
  }

  get done(): boolean {
    if (this.ended) return true;
    if (!this.grammar.automaton.complete(this.state)) return false;
    const m = this.allowed();
    return m.count === 1 && m.has(this.grammar.eosId);
  }

  /** The output accepted so far, as text. */
  text(): string {
    return new TextDecoder().decode(Uint8Array.from(this.out));
  }
}

/**
 * The constraint for an OpenAI-style `response_format` value, or undefined for none / `{"type": "text"}`:
 *   {"type": "json_object"}                                    any JSON object
 *   {"type": "json_object", "schema": {...}}                   (llama-server's form) that schema
 *   {"type": "json_schema", "json_schema": {"schema": {...}}}  that schema (`name`, `strict` are ignored)
 * Throws a UserError (a 400 for a server) for anything else or an unsupported schema.
 */
export function constraintFromResponseFormat(
  responseFormat: unknown,
  tokenizer: WorldTokenizer,
  opts: JsonConstraintOptions = {},
): JsonConstraint | undefined {
  if (responseFormat === undefined || responseFormat === null) return undefined;
  if (typeof responseFormat !== 'object' || Array.isArray(responseFormat)) {
    throw new UserError('response_format must be an object such as {"type": "json_object"}');
  }
  const rf = responseFormat as Record<string, unknown>;
  switch (rf.type) {
    case 'text':
      return undefined;
    case 'json_object':
      return (rf.schema === undefined ? JsonGrammar.anyObject(opts) : JsonGrammar.fromSchema(rf.schema, opts)).constraint(tokenizer);
    case 'json_schema': {
      const js = rf.json_schema;
      if (typeof js !== 'object' || js === null || !('schema' in js)) {
        throw new UserError('response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}');
      }
      return JsonGrammar.fromSchema((js as { schema: unknown }).schema, opts).constraint(tokenizer);
    }
    default:
      throw new UserError(`response_format type ${JSON.stringify(rf.type)} is not supported (expected text, json_object or json_schema)`);
  }
}
