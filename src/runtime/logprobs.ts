/**
 * Log-probabilities of generated tokens, in OpenAI's shapes (`logprobs` / `top_logprobs`).
 *
 * Convention (as llama-server's default and OpenAI's): the model's own distribution, `log_softmax(logits)` of the raw
 * logits the token was sampled from — before repetition penalties, temperature, top-p/top-k and any constraint mask.
 * So the numbers describe the model, not the sampler settings, and a greedy token has the largest logprob.
 * Computed in float64; O(V) per token (one pass for the normalizer, one for the top-k by insertion into k slots).
 */
import type { WorldTokenizer } from '../tokenizer/index.js';

/** OpenAI allows at most 20 alternatives per token. */
export const MAX_TOP_LOGPROBS = 20;

export interface TopLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface TokenLogprob extends TopLogprob {
  id: number;
  top_logprobs: TopLogprob[];
}

/** log Σ exp(logits), computed stably in float64. */
export function logSumExp(logits: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return max + Math.log(sum);
}

/** The `k` largest entries' indices, largest first (ties: the lower id first). */
export function topIndices(x: ArrayLike<number>, k: number): number[] {
  const idx: number[] = [];
  if (k <= 0) return idx;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (idx.length === k && !(v > x[idx[k - 1]!]!)) continue;
    let p = idx.length < k ? idx.length : k - 1;
    while (p > 0 && v > x[idx[p - 1]!]!) p--;
    idx.splice(p, 0, i);
    if (idx.length > k) idx.pop();
  }
  return idx;
}

function entry(tokenizer: WorldTokenizer, id: number, logprob: number): TopLogprob {
  const bytes = tokenizer.tokenBytes(id);
  return { token: new TextDecoder().decode(bytes), logprob, bytes: Array.from(bytes) };
}

/** The chosen token's logprob and the `top` most likely tokens' at this step. */
export function tokenLogprob(logits: ArrayLike<number>, id: number, top: number, tokenizer: WorldTokenizer): TokenLogprob {
  const lse = logSumExp(logits);
  const top_logprobs = topIndices(logits, Math.min(Math.max(0, top), MAX_TOP_LOGPROBS))
    .map((t) => entry(tokenizer, t, logits[t]! - lse));
  return { id, ...entry(tokenizer, id, logits[id]! - lse), top_logprobs };
}
