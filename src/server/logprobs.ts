/**
 * logprobs in the OpenAI response shapes. The numbers come from runtime/logprobs.ts (log_softmax of the raw logits
 * each token was sampled from). A token's entry goes out with the text it produced: entries wait in `pending` until
 * the generation loop emits text (the stop-string matcher may hold text back), and tokens whose text never goes out
 * (the beginning of a stop string) are not reported.
 */
import type { WorldTokenizer } from '../tokenizer/index.js';
import { tokenLogprob, type TokenLogprob } from '../runtime/logprobs.js';

export class LogprobTrack {
  private pending: TokenLogprob[] = [];
  /** Every entry committed so far (the non-streaming answer's list). */
  readonly all: TokenLogprob[] = [];

  constructor(private readonly tokenizer: WorldTokenizer, private readonly top: number) {}

  /** generate's onToken hook. */
  readonly onToken = (id: number, logits: Float32Array): void => {
    this.pending.push(tokenLogprob(logits, id, this.top, this.tokenizer));
  };

  /** Text went out: the tokens so far are reported with it. Returns them. */
  commit(): TokenLogprob[] {
    const out = this.pending;
    this.pending = [];
    this.all.push(...out);
    return out;
  }
}

/** Chat completions: `{ content: [{ token, logprob, bytes, top_logprobs: [...] }], refusal: null }`. */
export function chatLogprobs(list: readonly TokenLogprob[]) {
  return {
    content: list.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes, top_logprobs: t.top_logprobs })),
    refusal: null,
  };
}

/** Legacy completions: parallel arrays, top_logprobs as {token: logprob} maps, text offsets from `start`. */
export function completionLogprobs(list: readonly TokenLogprob[], start: number) {
  let at = start;
  const text_offset = list.map((t) => { const o = at; at += t.token.length; return o; });
  return {
    tokens: list.map((t) => t.token),
    token_logprobs: list.map((t) => t.logprob),
    top_logprobs: list.map((t) => Object.fromEntries(t.top_logprobs.map((a) => [a.token, a.logprob]))),
    text_offset,
  };
}
