// Sampler: penalty arithmetic, the package's whitespace/digit rule, top-p/top-k/temperature, bans, seeded PRNG.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Sampler, PenaltyTracker, Rng, GENERATE_DEFAULTS, CHAT_DEFAULTS, samplingDistribution, isPenaltyFreeText, argmax,
  type SamplingOptions,
} from '../src/runtime/sampler.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { UserError } from '../src/errors.js';
import { referenceSamplingDistribution, ReferenceSampler, makeLogits } from '../bench/sampler.js';

const tok = WorldTokenizer.default();
const close = (a: number, b: number, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} != ${b}`);
const noPenalty: SamplingOptions = { temperature: 1, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0, penaltyDecay: 1 };

test('defaults match the rwkv package and the G1 chat demo', () => {
  assert.deepEqual({ ...GENERATE_DEFAULTS }, { temperature: 1, topP: 0.85, topK: 0, presencePenalty: 0.2, frequencyPenalty: 0.2, penaltyDecay: 0.996 });
  assert.deepEqual({ ...CHAT_DEFAULTS }, { temperature: 1, topP: 0.5, topK: 0, presencePenalty: 2, frequencyPenalty: 0.1, penaltyDecay: 0.99 });
});

test('penalty and decay arithmetic (hand-computed)', () => {
  const p = new PenaltyTracker(0.2, 0.2, 0.996);
  p.record(5, 1); // {5: 1}
  p.record(7, 1); // {5: 0.996, 7: 1}
  p.record(5, 1); // {5: 0.996^2 + 1 = 1.992016, 7: 0.996}
  close(p.counts.get(5)!, 1.992016);
  close(p.counts.get(7)!, 0.996);
  const logits = new Float32Array(10).fill(1);
  p.apply(logits);
  close(logits[5]!, 1 - (0.2 + 1.992016 * 0.2), 1e-6); // 0.4015968
  close(logits[7]!, 1 - (0.2 + 0.996 * 0.2), 1e-6); // 0.6008
  close(logits[3]!, 1);
});

test('whitespace/digit tokens: recorded with weight 0 (presence still applies, frequency never grows)', () => {
  // Python's `ttt in ' \t0123456789'` is a substring test.
  for (const s of [' ', '\t', '0', '7', '12', '789', ' \t0', '']) assert.equal(isPenaltyFreeText(s), true, JSON.stringify(s));
  for (const s of ['  ', '13', 'a', ' a', '\n', '\ufffd', '00']) assert.equal(isPenaltyFreeText(s), false, JSON.stringify(s));

  const space = tok.encode(' ');
  const word = tok.encode('Hello');
  assert.equal(space.length, 1);
  assert.equal(word.length, 1);
  const s = new Sampler({ ...noPenalty, presencePenalty: 2, frequencyPenalty: 0.5, penaltyDecay: 0.5 }, tok);
  s.record(space[0]!);
  s.record(word[0]!);
  s.record(space[0]!);
  // space: 0 → 0*0.5 + 0 → 0 ... always 0; word: 1 → 0.5
  assert.equal(s.counts.get(space[0]!), 0);
  close(s.counts.get(word[0]!)!, 0.5);
});

test('sample() applies bans and penalties before choosing, then records the token', () => {
  const s = new Sampler({ ...noPenalty, temperature: 0, presencePenalty: 1, frequencyPenalty: 0, penaltyDecay: 1, banTokens: [3] }, tok);
  const logits = new Float32Array([0, 0.5, 0.9, 5, 0.1]);
  assert.equal(s.sample(logits), 2); // 3 banned → argmax is 2
  assert.equal(s.sample(logits), 1); // 2 now has -1 → 1 wins (0.5 vs -0.1)
  assert.equal(s.sample(logits), 4); // 1 and 2 penalised: 0, -0.5, -0.1, banned, 0.1 → 4
  assert.deepEqual([...logits], [...new Float32Array([0, 0.5, 0.9, 5, 0.1])], 'input logits untouched');
  const all = new Sampler({ ...noPenalty, banTokens: [0, 1] }, tok);
  assert.throws(() => all.sample(new Float32Array([1, 2])), UserError);
});

test('argmax takes the first maximum', () => {
  assert.equal(argmax([1, 3, 3, 2]), 1);
  assert.equal(argmax([-Infinity, -5]), 1);
});

test('top-p keeps the smallest most-probable set reaching top_p (ties with the cutoff kept)', () => {
  const logits = [0.5, 0.3, 0.15, 0.05].map(Math.log);
  let d = samplingDistribution(logits, 1, 0.7, 0);
  assert.deepEqual(d.ids, [0, 1]);
  close(d.probs[0]!, 0.625); close(d.probs[1]!, 0.375);
  d = samplingDistribution(logits, 1, 0.45, 0);
  assert.deepEqual(d.ids, [0]);
  d = samplingDistribution(logits, 1, 0, 0); // top_p 0 → the most probable token only
  assert.deepEqual(d.ids, [0]);
  d = samplingDistribution(logits, 1, 1, 0);
  assert.deepEqual(d.ids, [0, 1, 2, 3]);
  // ties: both tokens with the cutoff probability are kept
  d = samplingDistribution([1, 1, 0], 1, 0.1, 0);
  assert.deepEqual(d.ids, [0, 1]);
});

test('top-k and temperature', () => {
  const logits = [0.5, 0.3, 0.15, 0.05].map(Math.log);
  let d = samplingDistribution(logits, 1, 1, 3);
  assert.deepEqual(d.ids, [0, 1, 2]);
  close(d.probs[2]!, 0.15 / 0.95);
  // temperature 0.5: probs ** 2 renormalised (after the top-p cutoff)
  d = samplingDistribution(logits, 0.5, 0.7, 0);
  close(d.probs[0]!, 0.25 / 0.34); close(d.probs[1]!, 0.09 / 0.34);
  // temperature 2: probs ** 0.5
  d = samplingDistribution(logits, 2, 1, 2);
  const a = Math.sqrt(0.5), b = Math.sqrt(0.3);
  close(d.probs[0]!, a / (a + b));
});

test('top-p on a full 65536 vocabulary matches a full sort', () => {
  const rng = new Rng(3);
  const V = 65536;
  const logits = Float64Array.from({ length: V }, () => rng.next() * 12);
  for (const topP of [0.3, 0.85, 0.99]) {
    const d = samplingDistribution(logits, 1, topP, 0);
    // reference: full sort
    const max = Math.max(...logits.slice(0, 1000), ...logits.slice(1000));
    const p = Array.from(logits, (x) => Math.exp(x - max));
    const sum = p.reduce((s, x) => s + x, 0);
    const sorted = p.map((x, i) => [x / sum, i] as const).sort((x, y) => y[0] - x[0]);
    let cum = 0; let n = 0;
    for (const [q] of sorted) { cum += q; n++; if (cum >= topP) break; }
    assert.equal(d.ids.length, n, `top_p ${topP}`);
    assert.deepEqual(new Set(d.ids), new Set(sorted.slice(0, n).map(([, i]) => i)));
  }
});

test('seeded sampling: same seed → same tokens, other seed → other tokens, frequencies follow the probabilities', () => {
  const logits = new Float32Array([0.5, 0.3, 0.15, 0.05].map(Math.log));
  const run = (seed: number, n: number) => {
    const s = new Sampler({ ...noPenalty, seed }, tok);
    return Array.from({ length: n }, () => s.sample(logits));
  };
  assert.deepEqual(run(42, 50), run(42, 50));
  assert.notDeepEqual(run(42, 50), run(43, 50));
  const counts = [0, 0, 0, 0];
  for (const t of run(1, 20000)) counts[t]!++;
  [0.5, 0.3, 0.15, 0.05].forEach((p, i) => assert.ok(Math.abs(counts[i]! / 20000 - p) < 0.015, `${i}: ${counts[i]}`));
  // no seed: a random one is drawn and reported
  assert.equal(typeof new Sampler(noPenalty, tok).seed, 'number');
});

test('Rng: deterministic, in [0, 1)', () => {
  const a = new Rng(0), b = new Rng(0);
  for (let i = 0; i < 1000; i++) {
    const x = a.next();
    assert.equal(x, b.next());
    assert.ok(x >= 0 && x < 1);
  }
  assert.notEqual(new Rng(1).next(), new Rng(2).next());
});

test('invalid options are rejected', () => {
  assert.throws(() => new Sampler({ ...noPenalty, temperature: -1 }, tok), UserError);
  assert.throws(() => new Sampler({ ...noPenalty, topP: 1.5 }, tok), UserError);
  assert.throws(() => new Sampler({ ...noPenalty, topK: 1.5 }, tok), UserError);
});

// ---- The O(V) sampler against the previous sort-based implementation (bench/sampler.ts keeps it as the oracle).
// What is compared: the kept token ids (same tokens, same order) and every probability with strict equality
// (Object.is via deepStrictEqual) — the new code performs the same float64 operations in the same order, so the
// bits must agree, not merely be close; and for whole Sampler runs, the exact token sequence.

/** Logit vectors of many shapes, including exact ties, -Infinity (banned) entries and tiny value ranges. */
function logitCases(rng: Rng, V: number): Float64Array[] {
  const out: Float64Array[] = [];
  for (const kind of ['flat', 'gaussian', 'dominant'] as const) out.push(Float64Array.from(makeLogits(kind, V, rng)));
  out.push(Float64Array.from({ length: V }, () => Math.floor(rng.next() * 4))); // integers: massive ties
  out.push(Float64Array.from({ length: V }, () => 1e-6 * rng.next())); // nearly uniform: all in a tiny range
  out.push(new Float64Array(V)); // all equal
  const banned = Float64Array.from(makeLogits('gaussian', V, rng));
  for (let i = 0; i < V; i += 3) banned[i] = -Infinity;
  out.push(banned);
  // a plateau of equal top logits (the top-p cutoff falls inside the ties) above a noisy tail
  out.push(Float64Array.from({ length: V }, (_, i) => (i % 7 === 3 ? 5 : rng.next())));
  return out;
}

function assertSameDistribution(logits: ArrayLike<number>, t: number, topP: number, topK: number, what: string) {
  let ref: ReturnType<typeof referenceSamplingDistribution>;
  try {
    ref = referenceSamplingDistribution(logits, t, topP, topK);
  } catch (e) {
    assert.ok(e instanceof UserError); // every token banned: both refuse
    assert.throws(() => samplingDistribution(logits, t, topP, topK), UserError);
    return;
  }
  const got = samplingDistribution(logits, t, topP, topK);
  assert.deepStrictEqual(got.ids, ref.ids, `${what}: ids`);
  assert.deepStrictEqual(got.probs, ref.probs, `${what}: probs`);
}

test('samplingDistribution equals the sort-based reference bit for bit (ids, order, probabilities)', () => {
  const rng = new Rng(11);
  for (const V of [1, 2, 3, 5, 17, 64, 300, 2048]) {
    logitCases(rng, V).forEach((logits, c) => {
      for (const topP of [0, 0.05, 0.3, 0.5, 0.85, 0.95, 0.999, 1]) {
        for (const topK of [0, 1, 3, 40]) {
          for (const t of [0.4, 1, 1.7]) assertSameDistribution(logits, t, topP, topK, `V ${V} case ${c} topP ${topP} topK ${topK} T ${t}`);
        }
      }
    });
  }
});

test('samplingDistribution equals the reference at V = 65536 (flat, peaked, ties)', () => {
  const rng = new Rng(12);
  const V = 65536;
  const cases = logitCases(rng, V);
  const settings: Array<[number, number, number]> = [[1, 0.85, 0], [1, 0.5, 0], [0.7, 0.85, 0], [1, 1, 0], [1, 1, 50], [1.3, 0.95, 100]];
  cases.forEach((logits, c) => {
    const [t, topP, topK] = settings[c % settings.length]!;
    assertSameDistribution(logits, t, topP, topK, `case ${c}`);
    if (c < 3) assertSameDistribution(logits, 1, 0.85, 0, `case ${c} defaults`);
  });
});

test('values clustered many levels deep (the re-bucketing recursion and its comparator fallback) sort as the reference', () => {
  // One dominant token, then a cluster shaped so that each re-bucketing pass peels off only its top value and
  // leaves the rest inside the bottom sub-bucket: the recursion goes deeper than its limit.
  const offsets: number[] = [];
  let range = 1;
  for (let level = 0; level < 9; level++) {
    offsets.push(range);
    range /= 1.2 * (34 - level);
  }
  for (let k = 0; k < 25; k++) offsets.push((range * k) / 25);
  const logits = [8, ...offsets.map((o) => Math.log1p(o))];
  for (const topP of [0.9, 0.999, 1]) assertSameDistribution(logits, 1, topP, 0, `topP ${topP}`);
});

test('Sampler draws the same tokens as the sort-based sampler for the same seed (penalties, bans, greedy, top-k)', () => {
  const weightOf = (t: number) => (isPenaltyFreeText(tok.decode([t])) ? 0 : 1);
  const configs: SamplingOptions[] = [
    GENERATE_DEFAULTS, CHAT_DEFAULTS,
    { ...GENERATE_DEFAULTS, topP: 1 }, { ...GENERATE_DEFAULTS, topP: 0 }, { ...GENERATE_DEFAULTS, topK: 5 },
    { ...CHAT_DEFAULTS, temperature: 0.6 }, { ...CHAT_DEFAULTS, temperature: 1.8, topK: 30 },
    { ...GENERATE_DEFAULTS, temperature: 0, banTokens: [0, 5] }, { ...GENERATE_DEFAULTS, banTokens: [1, 2, 3, 4] },
  ];
  const rng = new Rng(13);
  const V = 1000;
  // Peaked logits with a few strong tokens, so that the penalties change the picks from step to step.
  const steps = Array.from({ length: 40 }, (_, i) => {
    const l = makeLogits(i % 3 === 0 ? 'flat' : 'gaussian', V, rng);
    for (let k = 0; k < 8; k++) l[Math.floor(rng.next() * V)] = 6 + rng.next();
    return l;
  });
  for (const opts of configs) {
    for (let seed = 0; seed < 12; seed++) {
      const mine = new Sampler({ ...opts, seed }, tok);
      const ref = new ReferenceSampler(opts, seed, weightOf);
      const a = steps.map((l) => mine.sample(l));
      const b = steps.map((l) => ref.sample(l));
      assert.deepStrictEqual(a, b, `${JSON.stringify(opts)} seed ${seed}`);
    }
  }
});

test('Sampler at V = 65536 with the default settings: same tokens as the sort-based sampler', () => {
  const rng = new Rng(14);
  const steps = (['flat', 'gaussian', 'dominant', 'flat', 'gaussian'] as const).map((k) => makeLogits(k, 65536, rng));
  for (const opts of [GENERATE_DEFAULTS, CHAT_DEFAULTS]) {
    const mine = new Sampler({ ...opts, seed: 5 }, tok);
    const ref = new ReferenceSampler(opts, 5, (t) => (isPenaltyFreeText(tok.decode([t])) ? 0 : 1));
    assert.deepStrictEqual(steps.map((l) => mine.sample(l)), steps.map((l) => ref.sample(l)));
  }
});

test('samplers sharing the scratch buffers do not disturb each other (interleaved, and across vocabulary sizes)', () => {
  const rng = new Rng(15);
  const big = Array.from({ length: 6 }, () => makeLogits('gaussian', 3000, rng));
  const small = Array.from({ length: 6 }, () => makeLogits('flat', 50, rng));
  const alone = (logits: Float32Array[], seed: number) => {
    const s = new Sampler({ ...GENERATE_DEFAULTS, seed }, tok);
    return logits.map((l) => s.sample(l));
  };
  const a = new Sampler({ ...GENERATE_DEFAULTS, seed: 1 }, tok);
  const b = new Sampler({ ...GENERATE_DEFAULTS, seed: 2 }, tok);
  const ta: number[] = [], tb: number[] = [];
  for (let i = 0; i < 6; i++) { ta.push(a.sample(big[i]!)); tb.push(b.sample(small[i]!)); }
  assert.deepStrictEqual(ta, alone(big, 1));
  assert.deepStrictEqual(tb, alone(small, 2));
});

test('NaN logits are refused with a clear error instead of an undefined token', () => {
  assert.throws(() => samplingDistribution([0, NaN, 1], 1, 0.85, 0), UserError);
});
