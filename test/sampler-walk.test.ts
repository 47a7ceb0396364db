// The sampler's bucketed top-p walk and draw (src/runtime/sampler-workspace.ts, Workspace.nucleus / drawPosition)
// add most buckets up without sorting them (the grid argument: within one binade, fl(S + v) - S does not depend on S,
// except at exact half-ulp ties). Compared here with the plain definition — sort by probability descending, id
// ascending, then running sums — on probability arrays built to break it: exact ties at half an ulp, sums that land
// exactly on powers of two, massive equal values, values spread over hundreds of binades, subnormals, tiny arrays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bucketWalkForTests, Rng } from '../src/runtime/sampler.js';
import type { LoopKind } from '../src/runtime/fast-exp.js';

/** The definition: sorted order, the top-p cutoff with its ties, the total, and the draw for each u. */
function reference(q: ArrayLike<number>, topP: number, us: number[]) {
  const order = Array.from({ length: q.length }, (_, i) => i).filter((i) => q[i]! > 0);
  order.sort((a, b) => q[b]! - q[a]! || a - b);
  let kept = order.length;
  let total = 0;
  if (topP < 1) {
    let cum = 0;
    let cutoff = -1;
    for (let j = 0; j < order.length; j++) {
      cum += q[order[j]!]!;
      if (cum >= topP) { cutoff = q[order[j]!]!; break; }
    }
    if (cutoff >= 0) kept = order.filter((i) => q[i]! >= cutoff).length;
  }
  for (let j = 0; j < kept; j++) total += q[order[j]!]!;
  const drawn = us.map((u) => {
    let acc = 0;
    for (let j = 0; j < kept; j++) {
      acc += q[order[j]!]! / total;
      if (u < acc) return order[j]!;
    }
    return order[kept - 1]!;
  });
  return { kept, total, drawn, order };
}

const rng = new Rng(77);
const US = [0, 1e-12, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999999, 1 - 2 ** -53];
const randomUs = () => [...US, ...Array.from({ length: 20 }, () => rng.next())];

function check(q: ArrayLike<number>, what: string) {
  for (const topP of [0, 0.05, 0.3, 0.5, 0.85, 0.95, 0.999, 1]) {
    const us = randomUs();
    const want = reference(q, topP, us);
    for (const loops of ['js', 'wasm'] as LoopKind[]) checkOne(q, topP, us, want, `${what} (${loops} loops)`, loops);
  }
}

function checkOne(q: ArrayLike<number>, topP: number, us: number[], want: ReturnType<typeof reference>, what: string, loops: LoopKind) {
  const got = bucketWalkForTests(q, topP, us, loops);
  assert.equal(got.kept, want.kept, `${what} topP ${topP}: kept`);
  assert.ok(Object.is(got.total, want.total), `${what} topP ${topP}: total ${got.total} vs ${want.total}`);
  assert.deepStrictEqual(got.drawn, want.drawn, `${what} topP ${topP}: drawn`);
  assert.deepStrictEqual(got.order, want.order, `${what} topP ${topP}: order`);
}

test('random distributions: flat, peaked, spread over many binades, with a few huge values', () => {
  for (const n of [1, 2, 3, 10, 100, 1000, 20000, 65536]) {
    const flat = Float64Array.from({ length: n }, () => (0.5 + rng.next()) / n);
    check(flat, `flat n ${n}`);
    const peaked = Float64Array.from({ length: n }, () => Math.exp(-20 * rng.next()));
    let s = 0;
    for (const v of peaked) s += v;
    check(peaked.map((v) => v / s), `peaked n ${n}`);
    check(Float64Array.from({ length: n }, () => 2 ** (-60 * rng.next())), `log-uniform n ${n}`);
    const heads = Float64Array.from({ length: n }, () => 1e-7 * rng.next());
    for (let k = 0; k < 3 && k < n; k++) heads[Math.floor(rng.next() * n)] = 0.3;
    check(heads, `three heads n ${n}`);
  }
});

test('exact half-ulp ties: additions that round to even, so the order decides the sums', () => {
  // Once the running sum passes 1/2 (ulp 2^-53): (2^40 + odd) · 2^-54 ≈ 2^-14 ends in half an ulp (a tie, rounded to
  // the even neighbour) and (2^39 + odd) · 2^-53 in an odd ulp (exact, but it flips the parity the next tie sees).
  const tie = () => (2 ** 40 + 2 * Math.floor(rng.next() * 2 ** 20) + 1) * 2 ** -54;
  const odd = () => (2 ** 39 + 2 * Math.floor(rng.next() * 2 ** 19) + 1) * 2 ** -53;
  for (const n of [3000, 20000, 40000]) {
    check(Float64Array.from({ length: n }, () => (rng.next() < 0.5 ? tie() : odd())), `ties and odd ulps n ${n}`);
    check(Float64Array.from({ length: n }, tie), `ties only n ${n}`);
    // with a few values repeated many times (ties in value as well)
    const q = Float64Array.from({ length: n }, () => (rng.next() < 0.3 ? tie() : odd()));
    check(q.map((v, i) => (i % 5 === 0 ? q[0]! : v)), `ties, odd ulps and equal values n ${n}`);
  }
});

test('sums that land exactly on powers of two, and runs of equal probabilities', () => {
  check(new Float64Array(1024).fill(2 ** -10), '1024 × 2^-10 (every sum exact, crossing binades on their boundary)');
  check(new Float64Array(4096).fill(2 ** -12), '4096 × 2^-12');
  check(Float64Array.from({ length: 5000 }, (_, i) => 2 ** -(13 + (i % 3))), 'three powers of two');
  check(Float64Array.from({ length: 30000 }, () => [1e-4, 2e-5, 3e-5, 7e-6, 1e-9][Math.floor(rng.next() * 5)]!), 'five values');
  check(Float64Array.from({ length: 2000 }, (_, i) => 1 - i * 2 ** -52), 'adjacent doubles');
});

test('subnormal and tiny probabilities next to normal ones', () => {
  const q = Float64Array.from({ length: 3000 }, (_, i) => (i % 3 === 0 ? 5e-324 * (1 + (i % 7)) : i % 3 === 1 ? 1e-310 * rng.next() : rng.next() / 3000));
  check(q, 'subnormals');
  check(Float64Array.from({ length: 500 }, (_, i) => 2 ** (-1070 + 2 * i)), 'one per binade, from 2^-1070 up');
});
