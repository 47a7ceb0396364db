/**
 * The generation loop (as the official `rwkv` package's `PIPELINE.generate`): process the prompt, then repeatedly
 * sample a token from the logits, feed it back through the model in RNN mode and stream its text, until a stop
 * token, a stop string, the token limit or an abort.
 *
 * Contract on the state: it is updated in place; afterwards it holds the prompt and every token in
 * `result.tokens` (each sampled token is fed through the model before the loop checks whether to stop; a stop
 * token id is not fed, and is not part of `tokens`). So a conversation can continue from it by processing only
 * the new tokens.
 */
import { platform } from '../platform/index.js';
import type { RWKV7 } from '../model/rwkv7.js';
import type { State, HostState } from '../model/state.js';
import type { WorldTokenizer } from '../tokenizer/index.js';
import { UserError } from '../errors.js';
import { Sampler, type SamplingOptions } from './sampler.js';
import type { TokenConstraint } from './constraint/index.js';

export interface GenerateOptions {
  /** Most tokens to generate (≥ 0). */
  maxTokens: number;
  sampling: SamplingOptions;
  /** Generation ends just before the first occurrence of any of these strings (matched across token boundaries). */
  stop?: string[];
  /** Generation ends when one of these ids is sampled (default [0], the end-of-document token). */
  stopTokens?: number[];
  /** Aborting ends generation after the current token with finishReason 'abort'. */
  signal?: AbortSignal;
  /** Called with each new piece of text as soon as it is final (complete UTF-8, and not part of a possible stop string). */
  onText?: (chunk: string) => void;
  /**
   * Called with each generated token id, and the raw model logits it was sampled from (before penalties, temperature
   * and any constraint mask: what `logprobs` are computed from; see runtime/logprobs.ts). Do not keep the array.
   */
  onToken?: (id: number, logits: Float32Array) => void;
  /** Use this sampler (and its penalty history and random stream) instead of a fresh one built from `sampling`. */
  sampler?: Sampler;
  /**
   * Logits after the last token already in `state`: lets `promptIds` be empty (continue generating from the
   * state). Ignored when `promptIds` is not empty.
   */
  lastLogits?: Float32Array;
  /**
   * Constrained decoding (e.g. `JsonGrammar.fromSchema(schema).constraint(tokenizer)`, one per generation): every
   * token that cannot continue a valid output gets logit -Infinity before sampling, and generation ends with
   * finishReason 'stop' (stoppedBy undefined) as soon as the output is complete and nothing more may follow.
   */
  constraint?: TokenConstraint;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerateResult {
  /** The generated text, ending exactly before the stop string when one matched. */
  text: string;
  /** Generated token ids (all of them fed into the state; a stop token id is not included). */
  tokens: number[];
  promptTokens: number;
  completionTokens: number;
  finishReason: FinishReason;
  /** The stop string that matched, or the stop token id that was sampled (finishReason 'stop'). */
  stoppedBy?: string | number;
  /** Prompt tokens per second (0 when there was no prompt). */
  prefillTokS: number;
  /** Generated tokens per second (model + sampling). */
  decodeTokS: number;
  prefillMs: number;
  decodeMs: number;
  /** The seed the sampler used. */
  seed: number;
  /** Logits after the last token fed into the state (to continue generating without a new prompt). */
  lastLogits: Float32Array;
}

/**
 * Holds back text that could be the beginning of a stop string, so that streamed output never contains any
 * part of a stop string. Feed it text pieces with `push`; `flush` at the end returns what is held back.
 */
export class StopMatcher {
  private held = '';
  private done = false;
  /** The stop string that matched. */
  matched?: string;

  constructor(private readonly stops: readonly string[]) {
    for (const s of stops) if (s.length === 0) throw new UserError('a stop string cannot be empty');
  }

  /** Adds text; returns the part that is now final, and whether a stop string was found (then nothing follows). */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.done) return { emit: '', stopped: true };
    const buf = this.held + text;
    // The earliest occurrence of any stop string (on a tie, the longest string, which is the same position).
    let at = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at || (i === at && s.length > this.matched!.length))) {
        at = i;
        this.matched = s;
      }
    }
    if (at >= 0) {
      this.done = true;
      this.held = '';
      return { emit: buf.slice(0, at), stopped: true };
    }
    // Hold back the longest suffix of buf that is a proper prefix of some stop string.
    let keep = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > keep; n--) {
        if (buf.endsWith(s.slice(0, n))) { keep = n; break; }
      }
    }
    this.held = buf.slice(buf.length - keep);
    return { emit: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** End of text without a stop: returns what was held back. */
  flush(): string {
    const h = this.done ? '' : this.held;
    this.held = '';
    return h;
  }
}

/** Lets pending events (Ctrl-C, aborts, socket writes) run between tokens of a CPU-bound loop. */
function yieldToEventLoop(): Promise<void> {
  return platform.yieldToEventLoop();
}

/**
 * Processes `promptIds` from `state` (updated in place: afterwards it holds prompt + generated tokens), then
 * generates.
 */
export async function generate(
  model: RWKV7,
  tokenizer: WorldTokenizer,
  state: State,
  promptIds: number[],
  opts: GenerateOptions,
): Promise<GenerateResult> {
  if (!(Number.isInteger(opts.maxTokens) && opts.maxTokens >= 0)) {
    throw new UserError(`max tokens must be an integer ≥ 0 (got ${opts.maxTokens})`);
  }
  const sampler = opts.sampler ?? new Sampler(opts.sampling, tokenizer);
  const stopTokens = new Set(opts.stopTokens ?? [0]);
  const matcher = new StopMatcher(opts.stop ?? []);
  const decoder = tokenizer.streamDecoder();
  const signal = opts.signal;
  const constraint = opts.constraint;
  // The masked copy of the logits (the model's own array is left as it is: it may be returned as lastLogits).
  let masked: Float32Array | undefined;

  // ---- prefill ----
  const t0 = performance.now();
  let logits: Float32Array;
  if (promptIds.length > 0) {
    logits = await model.forward(promptIds, state);
  } else if (opts.lastLogits) {
    logits = opts.lastLogits;
  } else {
    throw new UserError('nothing to generate from: the prompt is empty');
  }
  const prefillMs = performance.now() - t0;

  // ---- decode ----
  const t1 = performance.now();
  const tokens: number[] = [];
  let text = '';
  let finishReason: FinishReason = 'length';
  let stoppedBy: string | number | undefined;
  const emit = (s: string) => {
    if (s.length === 0) return;
    text += s;
    opts.onText?.(s);
  };
  for (let i = 0; i < opts.maxTokens; i++) {
    if (signal) {
      await yieldToEventLoop();
      if (signal.aborted) { finishReason = 'abort'; break; }
    }
    if (constraint?.done) { finishReason = 'stop'; break; }
    // Masking before the sampler = masking after its penalties (a -Infinity logit stays -Infinity) and before
    // temperature/top-p/top-k, so that the nucleus is chosen among the allowed tokens only.
    if (constraint) constraint.mask(logits, (masked ??= new Float32Array(logits.length)));
    const token = sampler.sample(constraint ? masked! : logits);
    if (stopTokens.has(token)) {
      finishReason = 'stop';
      stoppedBy = token;
      break;
    }
    constraint?.accept(token);
    tokens.push(token);
    opts.onToken?.(token, logits);
    // Show the text before running the model on the token (lower latency); the state then takes the token in.
    const r = matcher.push(decoder.push(token));
    emit(r.emit);
    logits = await model.forward([token], state);
    if (r.stopped) {
      finishReason = 'stop';
      stoppedBy = matcher.matched;
      break;
    }
    if (constraint?.done) { finishReason = 'stop'; break; }
  }
  if (typeof stoppedBy !== 'string') {
    // No stop string matched: whatever the decoder and the matcher still hold is part of the text.
    const r = matcher.push(decoder.flush());
    emit(r.emit);
    if (r.stopped) {
      finishReason = 'stop';
      stoppedBy = matcher.matched;
    } else {
      emit(matcher.flush());
    }
  }
  const decodeMs = performance.now() - t1;

  return {
    text,
    tokens,
    promptTokens: promptIds.length,
    completionTokens: tokens.length,
    finishReason,
    stoppedBy,
    prefillTokS: promptIds.length > 0 && prefillMs > 0 ? (promptIds.length * 1000) / prefillMs : 0,
    decodeTokS: tokens.length > 0 && decodeMs > 0 ? (tokens.length * 1000) / decodeMs : 0,
    prefillMs,
    decodeMs,
    seed: sampler.seed,
    lastLogits: logits,
  };
}

/** Running totals of a session's throughput (for `/stats` and the exit summary). */
export interface SessionStats {
  promptTokens: number;
  completionTokens: number;
  prefillMs: number;
  decodeMs: number;
  /** Tokens currently in the state (prompt + generated, since the last reset). */
  contextTokens: number;
}

export function tokensPerSecond(tokens: number, ms: number): number {
  return tokens > 0 && ms > 0 ? (tokens * 1000) / ms : 0;
}

/**
 * A model, a tokenizer and one state that persists across calls: each call processes only the new text.
 * Used by the chat command; the server can hold one per conversation.
 */
export class Session {
  readonly state: State;
  /** Logits after the last token fed (undefined on a fresh state). */
  lastLogits?: Float32Array;
  readonly stats: SessionStats = { promptTokens: 0, completionTokens: 0, prefillMs: 0, decodeMs: 0, contextTokens: 0 };

  /**
   * `initialState` (e.g. a state-tuned file's, from `readStateFile`): the state starts from it (written into
   * `state` when one is given) and `reset()` returns to it instead of to zero.
   */
  constructor(
    readonly model: RWKV7,
    readonly tokenizer: WorldTokenizer,
    state?: State,
    readonly initialState?: HostState,
  ) {
    this.state = state ?? model.newState();
    if (initialState) this.state.fromHost(initialState);
  }

  /** Feeds text into the state without generating (e.g. the `\n\n` that closes a chat turn). */
  async feed(text: string): Promise<number> {
    const ids = this.tokenizer.encode(text);
    if (ids.length === 0) return 0;
    const t0 = performance.now();
    this.lastLogits = await this.model.forward(ids, this.state);
    this.stats.prefillMs += performance.now() - t0;
    this.stats.promptTokens += ids.length;
    this.stats.contextTokens += ids.length;
    return ids.length;
  }

  /** Processes `prompt` (only this new text) and generates from the state. */
  async generate(prompt: string, opts: GenerateOptions): Promise<GenerateResult> {
    const ids = this.tokenizer.encode(prompt);
    const r = await generate(this.model, this.tokenizer, this.state, ids, { ...opts, lastLogits: this.lastLogits });
    this.lastLogits = r.lastLogits;
    this.stats.promptTokens += r.promptTokens;
    this.stats.completionTokens += r.completionTokens;
    this.stats.prefillMs += r.prefillMs;
    this.stats.decodeMs += r.decodeMs;
    this.stats.contextTokens += r.promptTokens + r.completionTokens;
    return r;
  }

  /** Back to the initial state (zero unless the session was given one). */
  reset(): void {
    if (this.initialState) this.state.fromHost(this.initialState);
    else this.state.reset();
    this.lastLogits = undefined;
    this.stats.contextTokens = 0;
  }

  get prefillTokS(): number {
    return tokensPerSecond(this.stats.promptTokens, this.stats.prefillMs);
  }

  get decodeTokS(): number {
    return tokensPerSecond(this.stats.completionTokens, this.stats.decodeMs);
  }
}
