// Sampler golden values: digests of sampling distributions and of whole Sampler token sequences, recorded from the
// implementation as it was before the fast-exp rewrite (commit f10c9f5: Math.exp softmax, bucketed O(V) top-p).
// Any change in a chosen token, in the order of the kept tokens or in one bit of one probability changes a digest.
//
// To re-record (only when the sampling semantics are changed on purpose):
//   SAMPLER_GOLDEN_RECORD=1 node --import tsx --test test/sampler-golden.test.ts
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  Sampler, Rng, GENERATE_DEFAULTS, CHAT_DEFAULTS, samplingDistribution, type SamplingOptions,
} from '../src/runtime/sampler.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { forceExpKind, type ExpKind, type LoopKind } from '../src/runtime/fast-exp.js';
import { makeLogits } from '../bench/sampler.js';

const RECORD = process.env.SAMPLER_GOLDEN_RECORD === '1';
const tok = WorldTokenizer.default();

/** Logit vectors of many shapes (flat, peaked, ties, -Infinity bans, tiny ranges, a wide range reaching exp underflow). */
function cases(rng: Rng, V: number): Float64Array[] {
  const out: Float64Array[] = [];
  for (const kind of ['flat', 'gaussian', 'dominant'] as const) out.push(Float64Array.from(makeLogits(kind, V, rng)));
  out.push(Float64Array.from({ length: V }, () => Math.floor(rng.next() * 4))); // integers: massive ties
  out.push(Float64Array.from({ length: V }, () => 1e-6 * rng.next())); // nearly uniform
  out.push(new Float64Array(V)); // all equal
  const banned = Float64Array.from(makeLogits('gaussian', V, rng));
  for (let i = 0; i < V; i += 3) banned[i] = -Infinity;
  out.push(banned);
  out.push(Float64Array.from({ length: V }, (_, i) => (i % 7 === 3 ? 5 : rng.next()))); // plateau of equal tops
  // a huge range: exp underflows to subnormals and to 0 for part of the vocabulary
  out.push(Float64Array.from({ length: V }, () => -800 * rng.next() ** 3));
  // float32 logits of a real-model-like spread with a few very strong tokens
  const strong = makeLogits('gaussian', V, rng);
  for (let k = 0; k < 6; k++) strong[Math.floor(rng.next() * V)] = 14 + rng.next();
  out.push(Float64Array.from(strong));
  return out;
}

function digest(ids: ArrayLike<number>, probs: ArrayLike<number>): string {
  const h = createHash('sha256');
  h.update(new Uint8Array(Int32Array.from(ids).buffer));
  h.update(new Uint8Array(Float64Array.from(probs).buffer));
  return h.digest('hex').slice(0, 16);
}

const SETTINGS: Array<[number, number, number]> = [
  [1, 0.85, 0], [1, 0.5, 0], [0.7, 0.85, 0], [1, 1, 0], [1, 1, 50], [1.3, 0.95, 100], [1, 0, 0], [0.4, 0.999, 0],
];

function distributionDigests(): string[] {
  const out: string[] = [];
  const rng = new Rng(101);
  for (const V of [300, 2048, 65536]) {
    for (const logits of cases(rng, V)) {
      for (const [t, topP, topK] of SETTINGS) {
        const d = samplingDistribution(logits, t, topP, topK);
        out.push(digest(d.ids, d.probs));
      }
    }
  }
  return out;
}

function sequenceDigests(): string[] {
  const configs: SamplingOptions[] = [
    GENERATE_DEFAULTS, CHAT_DEFAULTS,
    { ...GENERATE_DEFAULTS, topP: 1 }, { ...GENERATE_DEFAULTS, topK: 5 }, { ...CHAT_DEFAULTS, temperature: 0.6 },
    { ...GENERATE_DEFAULTS, banTokens: [0, 11, 33] }, { ...CHAT_DEFAULTS, temperature: 0, banTokens: [1] },
  ];
  const rng = new Rng(202);
  const V = 65536;
  const steps = Array.from({ length: 40 }, (_, i) => {
    const l = makeLogits((['flat', 'gaussian', 'dominant'] as const)[i % 3]!, V, rng);
    for (let k = 0; k < 4; k++) l[Math.floor(rng.next() * V)] = 8 + 4 * rng.next();
    return l;
  });
  const out: string[] = [];
  for (const opts of configs) {
    for (const seed of [1, 2]) {
      const s = new Sampler({ ...opts, seed }, tok);
      const tokens = steps.map((l) => s.sample(l));
      out.push(digest(tokens, []));
    }
  }
  return out;
}

// Recorded with SAMPLER_GOLDEN_RECORD=1 from commit f10c9f5.
const GOLDEN_DISTRIBUTIONS: string[] = [
  '64558ef879551e19', 'b2737ff5a0f389e9', 'a1cc0baa0dfd0451', '8df8f592614e7a4d', '3a5cd45701bbda2e', 'bb2310d45323c098', '24b9597a484b3355', '8a85dd37c271a0a8',
  '68b7b27246194cbc', 'd8495aedd0265a0c', 'e7c8d5df8c11794d', '8657e7bf4bf824dc', '014c4dbbeb7cea42', '1dbccbd0f6896927', '2422bd00b966edc7', '602c974ac93ccd4e',
  'cee30f6120c043a2', 'cee30f6120c043a2', 'cee30f6120c043a2', '97403b9278f5e5eb', 'fa60337c97aaba4b', 'cee30f6120c043a2', 'cee30f6120c043a2', 'cee30f6120c043a2',
  'baffee243f44c9b0', '31f6376a88a42081', '9b5dff625d1c9b32', '35ec8ceaebb9f292', 'f33aa63dcd66c9d4', '94a5ab0bb22572dc', '31f6376a88a42081', 'f1abf5396aba73db',
  '780166febf93925c', '5670197db6417ddb', '8f77b6c862737435', 'd855a6ccfd63bc95', '4b86c3ec3caa4629', 'd64d694cdf86e0c9', 'a5fe9aea0f113afc', '441f8f9996261d51',
  'ce08e3e91d661b93', 'ce08e3e91d661b93', '464738bf3d40b797', 'ce08e3e91d661b93', '11da6661cbba8437', '5cce4cda515c9d62', 'ce08e3e91d661b93', '80272334255ae577',
  'ec5eb84d36b1e887', '1b161ea788a58321', '5182672f668da318', '6937de4921909906', '6255f5905bfc6d6f', '3e1cde142832b97d', 'ebd1742f711c9653', '15efaf8913423786',
  'e0f5d93cb7f8ddd5', 'e0f5d93cb7f8ddd5', '437296626df42429', '63e458160e10ebfb', '7e7531df541402a0', '6f0cd77207314462', 'e0f5d93cb7f8ddd5', '9b28f9a02ff65a41',
  '4da5f247e0d9177a', 'fd52c623cf338832', '3c39046fbf662aaa', '1d377c0a1e2ab5ab', 'c04afad5ac4ebaa3', '40c23f90abb566fe', '313dac06e2d7ec29', 'af354f333662b030',
  '86d13f5ae779b0ad', 'b87cf34796f471ce', '3698d65a2263d9a0', '1dbeb2525cb4cce7', 'ae84f6ef2b5b035d', '2ca0237a2b82e11e', 'bd940c3c2a247ef8', 'ef85eb9d6d1b8d71',
  'ff104ce1119218af', '5b49d6bcac87502f', 'c2e01d2574c659c2', 'ab4c6cd187cad1f2', 'b30cf6319eb8e65d', 'b4f59c75d48dd424', 'c8d9aebd03e69e63', '0496b3a262b02e91',
  '5859170fd0b1849e', 'c2cbc9219434aea2', '06456af8fa7205a2', 'bde7ed8b6649a239', '036b1972792672e8', 'dece4f9da9f4ef63', 'e8f2f22d681274f5', 'e81927e9914700a0',
  '3a69f38605f9e709', '3a69f38605f9e709', '3a69f38605f9e709', 'f972f4e337832acd', 'ba79325a7503c41f', '3a69f38605f9e709', '3a69f38605f9e709', '3a69f38605f9e709',
  '458586d3390fd79f', 'e193443b148e536a', 'e4432bace857a100', '9640818e64fcf79e', '7932999da2f7818c', 'e588481bcb9af1a8', 'e193443b148e536a', '6c783c93fe5494e8',
  '7e62867e9ef276c5', 'e8696e0907d2e853', '6ed654c8870a21d2', '5d75acf4d0680451', '0945af82ea2b7c0e', '76cd485749d31d7a', '063b7142fddbb71c', 'e48bcf01503cda79',
  'a60934cfed62da6a', 'a60934cfed62da6a', '5ebf57bbdff5ab4f', 'a60934cfed62da6a', 'e4be7a9bc42ef418', 'e4baa03b0ac37968', 'a60934cfed62da6a', '740145e5cbeeb830',
  '894352a7536d877d', '8dbec03025d80350', '8c70a6789ac65a6e', '29ced0cb7053f17a', 'c605db3173e6d490', '3250329eada6df1c', 'e1f2520142a6b902', '84208189d22c6749',
  '032bf22324d0c6db', '032bf22324d0c6db', '142cf9700c0ac237', 'e958d808c6b05e90', 'deb3c39ad136aa11', 'af769bd7382e098d', '032bf22324d0c6db', '4b856b90260a9fd1',
  '3858d91026c3bcf3', '4ae0994be8459ca0', '97395682e49f300b', '8458c9458becbf53', 'dfb590d328116b17', '2b283757e5301343', 'dc428083a92b1ffb', '0e1d95fd6602a25e',
  'fc4bb18b34436a42', 'd8d69d4f719f17c8', '9a2d30da6f2af67d', '6ebdfc315578cdf8', '22faa4a9f9f122b8', 'aa8c6314737510c8', '1cf10c420ef3bd5b', '3aa1933211770888',
  '0ad36221c0ead3b3', '5245eab28e7582cf', '590cb899ad8b10ba', '8e3c8625651ad026', 'c7ea4bd8aa891925', 'cb83aaba0dd0f8db', '794d2443889abe6d', 'c5361181ab9e5f79',
  '8f8e3e867a6de28e', 'ef99cb48f5598024', '730c8efbbf97dd24', 'bb4a4bcf646154b2', 'cda31c7b476d7911', 'e1b88ba3e9d38f13', '9f35ce6bc0276c13', '621b9ced2e72051c',
  'e03e6652d8fc3180', 'e03e6652d8fc3180', 'e03e6652d8fc3180', '70a671ab5a813b13', 'b82152e25c636302', 'e03e6652d8fc3180', 'e03e6652d8fc3180', 'e03e6652d8fc3180',
  'd91a8a89aa60bcbb', '416c2eae8f705710', '5d8a261f67738f41', '6e4d9b8ed8064a83', '84eefbc995f61814', 'ffac0210ea2ecc11', '416c2eae8f705710', '54a11cc1e046c54f',
  '7eac86abebea089b', '326a534cfc3f1a09', 'dcf1d1390de60284', '5a8cf0620bb6d19c', 'c8e3821867ad8adf', '5f056863d034d14b', 'e3c4a9ae86004c4d', '057f08f07813c2fa',
  '65a6712b9262e092', '65a6712b9262e092', '710eab727ddb1c59', '65a6712b9262e092', 'e4be7a9bc42ef418', '4d2f7cb78d9f2670', '65a6712b9262e092', '65a6712b9262e092',
  'c75e8b0fea89e234', 'bc5ab5ef84350d14', '20ab53b0f0b0ba0b', 'a9059222e3e57798', '233fdbb616af983c', '94c511cca5e11382', '5e477fb44e4eeeda', '3e28a835f4bec0ea',
  '8c5d518697c9c15d', '8c5d518697c9c15d', '2f579c7bf06d09f4', 'bce69cbe360b15a8', 'deb3c39ad136aa11', '50cb581eb8ea7645', '8c5d518697c9c15d', '319bba994c9cd705',
  '42f7f8beb8830256', '9cd029f90ba13e0b', '3df5f20bf9deb16d', '35c9581663a7fa0e', '4ec70324d72521e4', 'd28d9c0b0a68523a', 'bc2c65716f8dc0c3', '5d0f950e91b26e5c',
  'e380e4c13b3eda53', 'abaa63baba98cd9e', '0c62fccf3449f13f', '535e8b1470b23d21', 'f89335ed13d4f0bc', 'fbc111e51b9f22a9', '6c90206b1798426e', 'b883df7ccb4f6a28',
];
const GOLDEN_SEQUENCES: string[] = [
  '73b034fe4c345078', '375eb6c1deae58c7', '503912ea0856f710', 'ae6d9cd96c71bbd6', 'fd4456fcba4a8091', '6f29230afe4dde52', 'c53260f0a34ce048', 'b7e4a94d40c033df',
  'cd7cdc8d570dc2c3', 'c597d9ef8fee1d3f', 'c8653dc450796b5c', '8d54b69b13b41913', '56e05aefacee57fd', '56e05aefacee57fd',
];

// Each kernel must give the recorded bits: the wasm SIMD exponentials the sampler uses here; Math.exp with the loops in
// wasm (engines whose Math.exp is not fdlibm's); and, with the loops in JS (no WebAssembly), Math.exp and the JS port.
const KERNELS: Array<[ExpKind, LoopKind]> = RECORD ? [['math', 'js']] : [['wasm', 'wasm'], ['math', 'wasm'], ['math', 'js'], ['js', 'js']];

for (const [kind, loops] of KERNELS) {
  const what = `${kind} exponentials, ${loops} loops`;
  test(`sampling distributions are bit-identical to the recorded ones (${what})`, () => {
    forceExpKind(kind, loops);
    try {
      const got = distributionDigests();
      if (RECORD) { console.log('DIST', JSON.stringify(got)); return; }
      assert.equal(got.length, GOLDEN_DISTRIBUTIONS.length);
      got.forEach((d, i) => assert.equal(d, GOLDEN_DISTRIBUTIONS[i], `distribution case ${i}`));
    } finally {
      forceExpKind(undefined);
    }
  });

  test(`Sampler token sequences are identical to the recorded ones (${what})`, () => {
    forceExpKind(kind, loops);
    try {
      const got = sequenceDigests();
      if (RECORD) { console.log('SEQ', JSON.stringify(got)); return; }
      assert.equal(got.length, GOLDEN_SEQUENCES.length);
      got.forEach((d, i) => assert.equal(d, GOLDEN_SEQUENCES[i], `sequence case ${i}`));
    } finally {
      forceExpKind(undefined);
    }
  });
}
