/** Token logprobs: log_softmax of the raw logits, top-k in order, and the generate hook that feeds them. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { logSumExp, tokenLogprob, topIndices } from '../src/runtime/logprobs.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { loadModel } from '../src/runtime/load.js';
import { generate } from '../src/runtime/generate.js';
import { GENERATE_DEFAULTS } from '../src/runtime/sampler.js';

test('topIndices: the k largest, largest first, ties by lower id', () => {
  assert.deepEqual(topIndices([1, 5, 3, 5, -1, 4], 3), [1, 3, 5]);
  assert.deepEqual(topIndices([2, 2, 2], 2), [0, 1]);
  assert.deepEqual(topIndices([1, 2], 5), [1, 0]);
  assert.deepEqual(topIndices([1, 2], 0), []);
  // Against a full sort on random data.
  let s = 7;
  const x = Array.from({ length: 5000 }, () => ((s = (s * 16807) % 2147483647) / 2147483647) * 10 - 5);
  const want = x.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, 20).map((p) => p[1]);
  assert.deepEqual(topIndices(x, 20), want);
});

test('tokenLogprob is log_softmax in float64, with bytes and the top alternatives', () => {
  const tok = WorldTokenizer.default();
  const logits = new Float32Array(tok.vocabSize).map((_, i) => Math.sin(i) * 3);
  const lp = tokenLogprob(logits, 1000, 5, tok);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v);
  assert.ok(Math.abs(lp.logprob - (logits[1000]! - Math.log(sum))) < 1e-9);
  assert.equal(lp.top_logprobs.length, 5);
  assert.ok(lp.top_logprobs.every((t, i, a) => i === 0 || a[i - 1]!.logprob >= t.logprob));
  assert.deepEqual(lp.bytes, Array.from(tok.tokenBytes(1000)));
  assert.equal(lp.token, tok.decode([1000]));
  assert.ok(Math.abs(Array.from(logits).reduce((a, v) => a + Math.exp(v - logSumExp(logits)), 0) - 1) < 1e-9);
});

test('generate reports each token with the raw logits it was sampled from', async () => {
  const { model } = await loadModel(undefined, { backend: 'js' });
  const tok = WorldTokenizer.default();
  const seen: { id: number; logits: Float32Array }[] = [];
  const state = model.newState();
  const ids = tok.encode('Once upon a time');
  const r = await generate(model, tok, state, ids, {
    maxTokens: 4, sampling: { ...GENERATE_DEFAULTS, seed: 3 }, stopTokens: [],
    onToken: (id, logits) => seen.push({ id, logits: logits.slice() }),
  });
  assert.deepEqual(seen.map((s) => s.id), r.tokens);
  // The first token's logits are the prompt's: the same as a fresh forward pass over the prompt.
  const fresh = await model.forward(ids, model.newState());
  assert.deepEqual(Array.from(seen[0]!.logits), Array.from(fresh));
});
