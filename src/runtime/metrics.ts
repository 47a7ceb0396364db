/**
 * Comparing logits and scoring text: softmax in float64, distribution distances, top-k agreement,
 * and perplexity from sequence-mode logits.
 */
import type { RWKV7 } from '../model/rwkv7.js';
import { UserError } from '../errors.js';

/** Softmax of `logits[offset .. offset+length)` in float64. */
export function softmax64(logits: ArrayLike<number>, offset = 0, length = logits.length - offset): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, logits[offset + i]!);
  const p = new Float64Array(length);
  let sum = 0;
  for (let i = 0; i < length; i++) sum += p[i] = Math.exp(logits[offset + i]! - max);
  for (let i = 0; i < length; i++) p[i]! /= sum;
  return p;
}

/** `log softmax(logits)[target]` in float64. */
export function logProb(logits: ArrayLike<number>, target: number, offset = 0, length = logits.length - offset): number {
  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, logits[offset + i]!);
  let sum = 0;
  for (let i = 0; i < length; i++) sum += Math.exp(logits[offset + i]! - max);
  return logits[offset + target]! - max - Math.log(sum);
}

/** Indices of the k largest values, largest first (ties: lower index first). */
export function topK(x: ArrayLike<number>, k: number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < x.length; i++) {
    if (idx.length < k || x[i]! > x[idx[idx.length - 1]!]!) {
      let j = idx.length < k ? idx.length : k - 1;
      while (j > 0 && x[idx[j - 1]!]! < x[i]!) j--;
      idx.splice(j, 0, i);
      if (idx.length > k) idx.pop();
    }
  }
  return idx;
}

export interface CompareReport {
  size: number;
  /** Σ|pA − pB| */
  l1: number;
  /** sqrt(Σ (pA − pB)²) */
  l2: number;
  /** max |pA − pB| */
  linf: number;
  kl_a_b: number;
  kl_b_a: number;
  /** Does A's top-1 equal B's? */
  top1_agree: boolean;
  /** |topk(A) ∩ topk(B)| / k */
  top5_overlap: number;
  top10_overlap: number;
  /** max|A − B| / std(B) on the raw logits (the golden-check deviation). */
  logit_deviation: number;
}

function kl(p: Float64Array, q: Float64Array): number {
  let s = 0;
  for (let i = 0; i < p.length; i++) if (p[i]! > 0) s += p[i]! * (Math.log(p[i]!) - Math.log(Math.max(q[i]!, Number.MIN_VALUE)));
  return s;
}

/** Compare two logit vectors (A = ours, B = reference) through their softmaxes. */
export function compareLogits(a: ArrayLike<number>, b: ArrayLike<number>): CompareReport {
  if (a.length !== b.length) throw new UserError(`cannot compare: ${a.length} values vs ${b.length} values`);
  const pa = softmax64(a), pb = softmax64(b);
  let l1 = 0, l2 = 0, linf = 0, maxAbs = 0, mean = 0;
  for (let i = 0; i < pa.length; i++) {
    const d = Math.abs(pa[i]! - pb[i]!);
    l1 += d; l2 += d * d; linf = Math.max(linf, d);
    maxAbs = Math.max(maxAbs, Math.abs(a[i]! - b[i]!));
    mean += b[i]!;
  }
  mean /= b.length;
  let v = 0;
  for (let i = 0; i < b.length; i++) v += (b[i]! - mean) ** 2;
  const overlap = (k: number) => {
    const ta = new Set(topK(a, k));
    return topK(b, k).filter((i) => ta.has(i)).length / k;
  };
  return {
    size: a.length, l1, l2: Math.sqrt(l2), linf,
    kl_a_b: kl(pa, pb), kl_b_a: kl(pb, pa),
    top1_agree: topK(a, 1)[0] === topK(b, 1)[0],
    top5_overlap: overlap(5), top10_overlap: overlap(10),
    logit_deviation: maxAbs / Math.sqrt(v / b.length),
  };
}

export interface PerplexityReport {
  tokens: number;
  mean_nll: number;
  perplexity: number;
}

/**
 * Mean negative log-likelihood of tokens[1..] given the preceding ones, from the zero state, no token prepended
 * (as the reference computes it). Runs in sequence mode, chunk by chunk, so memory stays bounded.
 */
export async function perplexity(model: RWKV7, tokens: ArrayLike<number>, onProgress?: (done: number, total: number) => void): Promise<PerplexityReport> {
  const n = tokens.length - 1;
  if (n < 1) throw new UserError('perplexity needs at least 2 tokens');
  const V = model.config.vocabSize;
  const state = model.newState();
  const chunk = Math.max(1, Math.min(model.backend.maxChunk, 256));
  let nll = 0;
  try {
    for (let start = 0; start < n; start += chunk) {
      const T = Math.min(chunk, n - start);
      const ids = Array.from({ length: T }, (_, i) => tokens[start + i]!);
      const logits = await model.forward(ids, state, { allLogits: true });
      for (let t = 0; t < T; t++) nll -= logProb(logits, tokens[start + t + 1]!, t * V, V);
      onProgress?.(start + T, n);
    }
  } finally {
    state.free();
  }
  const mean = nll / n;
  return { tokens: n, mean_nll: mean, perplexity: Math.exp(mean) };
}
