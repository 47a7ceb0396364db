/**
 * Constrained-decoding benchmark: the per-token cost of JSON-schema masking during real generation on the
 * bundled model, next to the model's own per-token time.
 *
 *   npx tsx bench/constraint.ts [--backend js|wasm] [--runs N] [--max-tokens N]
 *
 * For each schema, N seeded generations (default sampling, fresh grammar cache for the first one): masking
 * ms/token = time in `constraint.mask` (cache lookup or computation, and applying it to the logits) divided
 * by the tokens masked. "cold" is the first generation of a schema (empty mask cache, string tables built on
 * first use per process), "warm" the following ones (the cache persists with the grammar, as in a server).
 */
import { loadModel } from '../src/runtime/load.js';
import { generate } from '../src/runtime/generate.js';
import { GENERATE_DEFAULTS } from '../src/runtime/sampler.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { JsonGrammar, type ConstraintStats } from '../src/runtime/constraint/index.js';
import type { BackendName } from '../src/backends/index.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : dflt;
}
const backend = arg('--backend', 'wasm') as BackendName;
const RUNS = Number(arg('--runs', '6'));
const MAX_TOKENS = Number(arg('--max-tokens', '96'));

const SCHEMAS: [string, unknown][] = [
  ['json_object', { type: 'object' }],
  ['person', {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 24 },
      age: { type: 'integer' },
      email: { type: 'string' },
      tags: { type: 'array', items: { type: 'string', maxLength: 10 }, maxItems: 4 },
    },
    required: ['name', 'age'],
  }],
  ['nested', {
    type: 'object',
    properties: {
      title: { type: 'string' },
      mood: { enum: ['happy', 'sad', 'calm'] },
      scenes: {
        type: 'array', maxItems: 3, minItems: 1,
        items: { type: 'object', properties: { place: { type: 'string' }, n: { type: 'number' }, ok: { type: 'boolean' } }, required: ['place'] },
      },
    },
    required: ['title', 'mood', 'scenes'],
  }],
];

const tokenizer = WorldTokenizer.default();
const loaded = await loadModel(undefined, { backend });
const prompt = tokenizer.encode('Here is the story as JSON:\n');
console.log(`backend ${backend}, ${RUNS} generations per schema, at most ${MAX_TOKENS} tokens each`);
console.log('schema       | gens ok | tokens | mask ms/token cold | warm  | cache hits (warm) | model ms/token');
for (const [name, schema] of SCHEMAS) {
  const grammar = JsonGrammar.fromSchema(schema);
  const cold: ConstraintStats = { masks: 0, cacheHits: 0, maskMs: 0 };
  const warm: ConstraintStats = { masks: 0, cacheHits: 0, maskMs: 0 };
  let ok = 0;
  let tokens = 0;
  let modelMs = 0;
  for (let r = 0; r < RUNS; r++) {
    const c = grammar.constraint(tokenizer);
    const state = loaded.model.newState();
    const res = await generate(loaded.model, tokenizer, state, prompt, {
      maxTokens: MAX_TOKENS, sampling: { ...GENERATE_DEFAULTS, seed: 1000 + r }, constraint: c,
    });
    try {
      JSON.parse(res.text);
      ok++;
    } catch { /* cut short by --max-tokens */ }
    tokens += res.completionTokens;
    modelMs += res.decodeMs - c.stats.maskMs;
    const into = r === 0 ? cold : warm;
    into.masks += c.stats.masks;
    into.cacheHits += c.stats.cacheHits;
    into.maskMs += c.stats.maskMs;
  }
  const per = (s: ConstraintStats) => (s.masks > 0 ? s.maskMs / s.masks : 0).toFixed(3);
  const hits = warm.masks > 0 ? `${((100 * warm.cacheHits) / warm.masks).toFixed(0)}%` : '-';
  console.log(
    `${name.padEnd(12)} | ${`${ok}/${RUNS}`.padStart(7)} | ${String(tokens).padStart(6)} | ${per(cold).padStart(18)} | ` +
      `${per(warm).padStart(5)} | ${hits.padStart(17)} | ${(modelMs / Math.max(1, tokens)).toFixed(2)}`,
  );
}
process.exit(0); // the wasm backend's worker threads would keep the process alive
