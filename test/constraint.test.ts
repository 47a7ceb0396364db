// Constrained decoding: the JSON automaton (valid and invalid prefixes, escapes, numbers, nesting, whitespace),
// refused schema keywords, token masks (the string shortcut agrees with the full walk), the generate() option,
// the CLI flag, and 200 seeded generations with random small schemas on the bundled model, each parsed and
// validated with ajv.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { JsonGrammar, constraintFromResponseFormat } from '../src/runtime/constraint/index.js';
import { TokenIndex, computeMask } from '../src/runtime/constraint/token-mask.js';
import type { Frame } from '../src/runtime/constraint/automaton.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { loadModel } from '../src/runtime/load.js';
import { generate } from '../src/runtime/generate.js';
import { GENERATE_DEFAULTS } from '../src/runtime/sampler.js';
import { UserError } from '../src/errors.js';

const tok = WorldTokenizer.default();
const utf8 = new TextEncoder();
const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

/** Steps `text` through a grammar: 'complete', 'prefix' (valid so far) or 'invalid'. */
function run(g: JsonGrammar, text: string): 'complete' | 'prefix' | 'invalid' {
  const a = g.automaton;
  let f: Frame | null = a.start();
  for (const b of utf8.encode(text)) {
    f = a.step(f, b);
    if (!f) return 'invalid';
  }
  return a.complete(f) ? 'complete' : 'prefix';
}

function stateAfter(g: JsonGrammar, text: string): Frame {
  let f: Frame | null = g.automaton.start();
  for (const b of utf8.encode(text)) f = g.automaton.step(f!, b);
  assert.ok(f, `prefix ${text} is valid`);
  return f;
}

function check(schema: unknown, cases: Record<string, 'complete' | 'prefix' | 'invalid'>, maxWhitespace?: number): void {
  const g = JsonGrammar.fromSchema(schema, { maxWhitespace });
  for (const [text, want] of Object.entries(cases)) assert.equal(run(g, text), want, `${JSON.stringify(schema)}: ${JSON.stringify(text)}`);
}

test('automaton: any JSON object (json_object)', () => {
  check({ type: 'object' }, {
    '{}': 'complete', '{"a":1,"b":[true,null,{"c":"x"}],"d":-0.5e+3}': 'complete', ' { "a" : [ ] }': 'complete',
    '{"a":': 'prefix', '{"a"': 'prefix', '[': 'invalid', '"x"': 'invalid', '{,': 'invalid', '{"a":1,}': 'invalid',
    '{"a":tru': 'prefix', '{"a":trux': 'invalid', '{} ': 'invalid', '{"a\\"b":0}': 'complete',
  });
});

test('automaton: strings (escapes, UTF-8, control characters, lengths)', () => {
  check({ type: 'string' }, {
    '"a\\"b\\\\c\\n\\/\\t\\u00e9\\u20AC"': 'complete', '"é€𝄞"': 'complete', '"\\u': 'prefix', '"\\u12': 'prefix',
    '"\\x"': 'invalid', '"\\u12G': 'invalid', '"\\ud800"': 'invalid', '"\\udfff"': 'invalid', '"\\ud7ff"': 'complete',
    '"a\nb"': 'invalid', '"\t"': 'invalid', '"abc': 'prefix',
  });
  // raw bytes: invalid UTF-8 is refused (a lone continuation byte, an overlong lead, a surrogate encoding)
  const g = JsonGrammar.fromSchema({ type: 'string' });
  for (const bad of [[0x22, 0x80], [0x22, 0xc0, 0x80], [0x22, 0xed, 0xa0, 0x80], [0x22, 0xf5]]) {
    let f: Frame | null = g.automaton.start();
    for (const b of bad) f = f && g.automaton.step(f, b);
    assert.equal(f, null, `bytes ${bad}`);
  }
  check({ type: 'string', minLength: 2, maxLength: 3 }, {
    '"ab"': 'complete', '"abc"': 'complete', '"a"': 'invalid', '"abcd': 'invalid', '"é€𝄞"': 'complete', '"\\n\\u0041"': 'complete',
  });
});

test('automaton: numbers follow the JSON grammar', () => {
  check({ type: 'number' }, {
    '0': 'complete', '-0': 'complete', '12.5e-3': 'complete', '1E+2': 'complete', '-': 'prefix', '1.': 'prefix', '1e': 'prefix',
    '01': 'invalid', '+1': 'invalid', '.5': 'invalid', '1.e3': 'invalid', '--1': 'invalid', '0x1': 'invalid',
    '1234567890123456': 'invalid', '1e123': 'invalid',
  });
  check({ type: 'integer' }, { '42': 'complete', '-7': 'complete', '4.2': 'invalid', '1e3': 'invalid' });
  check({ type: 'array', items: { type: 'integer' } }, { '[1,22,-3]': 'complete', '[1 , 2]': 'complete', '[1,]': 'invalid', '[1 2]': 'invalid' });
});

test('automaton: objects (order, required, additionalProperties), arrays, nesting, enums, unions', () => {
  const person = {
    type: 'object',
    properties: { name: { type: 'string' }, age: { type: 'integer' }, tags: { type: 'array', items: { enum: ['a', 'b'] }, minItems: 1, maxItems: 2 } },
    required: ['name'],
  };
  check(person, {
    '{"name":"x"}': 'complete', '{"name":"x","age":3,"tags":["a","b"]}': 'complete', '{"name":"x","tags":["b"]}': 'complete',
    '{"age":3}': 'invalid', '{}': 'invalid', '{"name":"x","name"': 'invalid', '{"age"': 'invalid',
    '{"name":"x","tags":[]}': 'invalid', '{"name":"x","tags":["a","b","a"]': 'invalid', '{"name":"x","tags":["c"]': 'invalid',
    '{"name":"x","extra":1}': 'invalid',
  });
  check({ ...person, additionalProperties: { type: 'boolean' } }, {
    '{"name":"x","extra":true}': 'complete', '{"name":"x","extra":1}': 'invalid', '{"name":"x","age":1,"z":false,"y":true}': 'complete',
    '{"name":"x","age"': 'prefix', '{"name":"x","a\\u0041":true}': 'invalid', '{"extra":true}': 'invalid',
  });
  check({ type: 'object', properties: { a: { type: 'integer' } }, additionalProperties: true }, {
    '{"b":"x"}': 'complete', '{"a":1,"a":2}': 'invalid', '{"a":"x"}': 'invalid',
  });
  check({ type: 'object', required: ['k'] }, { '{"k":[1]}': 'complete', '{}': 'invalid' });
  check({ enum: [1, 12, 'x', null, { a: [1] }] }, {
    '1': 'complete', '12': 'complete', '123': 'invalid', '"x"': 'complete', 'null': 'complete', '{"a":[1]}': 'complete', '"y"': 'invalid',
  });
  check({ type: 'array', items: { enum: [1, 12] } }, { '[1,12,1]': 'complete', '[13]': 'invalid' });
  check({ const: 'fixed' }, { '"fixed"': 'complete', '"fixe"': 'invalid' });
  check({ type: ['string', 'null', 'integer', 'number'] }, { '"a"': 'complete', 'null': 'complete', '1.5': 'complete', 'true': 'invalid' });
  check({ type: 'object', properties: { o: { type: 'object', properties: { p: { type: 'array', items: { type: 'array', items: { type: 'boolean' } } } }, required: ['p'] } }, required: ['o'] }, {
    '{"o":{"p":[[true],[],[false,true]]}}': 'complete', '{"o":{"p":[[1]]}}': 'invalid', '{"o":{}}': 'invalid',
  });
});

test('automaton: whitespace is bounded (one line feed per gap, no CR)', () => {
  check({ type: 'object' }, { '{\n  "a": 1\n}': 'complete', '{\n\n"a":1}': 'invalid', '{\r\n"a":1}': 'invalid', '{    "a":1}': 'invalid' }, 3);
  check({ type: 'object' }, { '{"a":1}': 'complete', '{ "a":1}': 'invalid' }, 0);
  check({ type: 'object' }, { [`{${' '.repeat(16)}}`]: 'complete', [`{${' '.repeat(17)}}`]: 'invalid' });
});

test('schemas with unsupported keywords are refused with the keyword and its JSON path', () => {
  const refuse = (schema: unknown, re: RegExp) => assert.throws(() => JsonGrammar.fromSchema(schema), (e: unknown) => e instanceof UserError && re.test(e.message));
  refuse({ type: 'object', properties: { a: { type: 'string', pattern: 'x' } } }, /'pattern' at #\/properties\/a\b/);
  refuse({ anyOf: [{ type: 'string' }] }, /'anyOf' at #/);
  refuse({ type: 'array', items: { $ref: '#/$defs/x' } }, /'\$ref' at #\/items/);
  refuse({ type: 'string', format: 'date' }, /'format'/);
  refuse({ type: 'number', minimum: 0 }, /'minimum'/);
  refuse({ type: 'array', items: [{ type: 'string' }] }, /tuple.*#\/items/);
  refuse({ type: 'object', properties: { 'a/b': { type: 'string', maxLength: -1 } } }, /#\/properties\/a~1b\/maxLength/);
  refuse({ type: 'string', minLength: 3, maxLength: 2 }, /minLength 3 > maxLength 2/);
  refuse({ type: 'object', properties: {}, additionalProperties: false, required: ['x'] }, /'x' is required/);
  refuse({ enum: [] }, /no enum\/const value/);
  refuse({ type: 'integer', enum: ['a'] }, /no enum\/const value/);
  refuse({ type: 'date' }, /unknown type "date"/);
  refuse(false, /false/);
  // annotations are fine
  JsonGrammar.fromSchema({ $schema: 'https://json-schema.org/draft/2020-12/schema', title: 't', description: 'd', type: 'string' });
});

test('token masks: the string shortcut agrees with the full trie walk; end of text only when complete', () => {
  const index = TokenIndex.of(tok);
  const g = JsonGrammar.fromSchema({
    type: 'object', properties: { s: { type: 'string', maxLength: 4 }, t: { type: 'string', minLength: 2 }, n: { type: 'number' } },
  });
  for (const prefix of ['{"s":"', '{"s":"ab', '{"s":"abcd', '{"s":"\\u00', '{"s":"é', '{"t":"', '{"t":"x']) {
    const f = stateAfter(g, prefix);
    const fast = computeMask(index, g.automaton, f, 0);
    const slow = computeMask(index, g.automaton, f, 0, true);
    assert.deepEqual(fast.bits, slow.bits, prefix);
  }
  const anyObj = JsonGrammar.anyObject();
  const key = stateAfter(anyObj, '{"ke');
  assert.deepEqual(computeMask(index, anyObj.automaton, key, 0).bits, computeMask(index, anyObj.automaton, key, 0, true).bits);
  // a token that closes the string and goes on ("," etc.) is allowed when the rest fits
  const m = computeMask(index, g.automaton, stateAfter(g, '{"s":"ab'), 0);
  for (const text of ['",', '"}', 'c', 'cd']) {
    const ids = tok.encode(text);
    if (ids.length === 1) assert.ok(m.has(ids[0]!), text);
  }
  assert.ok(!m.has(tok.encode('abc')[0]!) || tok.encode('abc').length > 1, 'abc would exceed maxLength');
  assert.ok(!m.has(0));
  const done = computeMask(index, g.automaton, stateAfter(g, '{"n":1'), 0);
  assert.ok(!done.has(0), 'an object is not complete before its brace');
  const top = JsonGrammar.fromSchema({ type: 'integer' });
  const m2 = computeMask(index, top.automaton, stateAfter(top, '12'), 0);
  assert.ok(m2.has(0) && m2.has(tok.encode('3')[0]!));
});

test('constraint cursor: accept, done, refusals; response_format', () => {
  const c = JsonGrammar.fromSchema({ enum: ['yes', 'no'] }).constraint(tok);
  assert.equal(c.done, false);
  assert.throws(() => c.accept(0), /not complete/);
  assert.throws(() => c.accept(tok.encode('x')[0]!), /cannot continue/);
  for (const id of tok.encode('"yes"')) c.accept(id);
  assert.equal(c.complete, true);
  assert.equal(c.done, true);
  assert.equal(c.text(), '"yes"');
  const logits = new Float32Array(tok.vocabSize).fill(1);
  c.mask(logits, logits);
  assert.equal(logits[0], 1);
  assert.equal(logits.filter((x) => x === 1).length, 1);

  assert.equal(constraintFromResponseFormat(undefined, tok), undefined);
  assert.equal(constraintFromResponseFormat({ type: 'text' }, tok), undefined);
  assert.ok(constraintFromResponseFormat({ type: 'json_object' }, tok));
  const s = constraintFromResponseFormat({ type: 'json_schema', json_schema: { name: 'x', strict: true, schema: { type: 'boolean' } } }, tok)!;
  for (const id of tok.encode('false')) s.accept(id);
  assert.equal(s.done, true);
  assert.throws(() => constraintFromResponseFormat({ type: 'json_schema' }, tok), UserError);
  assert.throws(() => constraintFromResponseFormat({ type: 'xml' }, tok), /not supported/);
  assert.throws(() => constraintFromResponseFormat({ type: 'json_schema', json_schema: { schema: { not: {} } } }, tok), /'not'/);
});

// ---- random schemas on the bundled model ----

/** mulberry32: a tiny seeded PRNG for the schema generator. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Schema = Record<string, unknown>;
const WORDS = ['name', 'age', 'ok', 'tags', 'x', 'city', 'score', 'id', 'kind', 'note'];

/** A random small schema with every length bounded, and an upper bound on its JSON's bytes (whitespace aside). */
function randomSchema(r: () => number, depth: number): { schema: Schema; bytes: number; gaps: number } {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const kind = depth >= 2 ? pick(['string', 'integer', 'number', 'boolean', 'null', 'enum', 'const', 'union'])
    : pick(['object', 'object', 'array', 'string', 'integer', 'enum', 'union', 'boolean']);
  switch (kind) {
    case 'string': {
      const maxLength = int(0, 6);
      return { schema: { type: 'string', minLength: int(0, Math.min(2, maxLength)), maxLength }, bytes: 2 + 6 * maxLength, gaps: 0 };
    }
    case 'integer': return { schema: { type: 'integer' }, bytes: 16, gaps: 0 };
    case 'number': return { schema: { type: 'number' }, bytes: 36, gaps: 0 };
    case 'boolean': return { schema: { type: 'boolean' }, bytes: 5, gaps: 0 };
    case 'null': return { schema: { type: 'null' }, bytes: 4, gaps: 0 };
    case 'enum': {
      const values = [...new Set(Array.from({ length: int(1, 4) }, () => (r() < 0.5 ? pick(WORDS) : int(-5, 20))))];
      return { schema: { enum: values }, bytes: Math.max(...values.map((v) => JSON.stringify(v).length)), gaps: 0 };
    }
    case 'const': return { schema: { const: pick(WORDS) }, bytes: 8, gaps: 0 };
    case 'union': {
      const maxLength = int(1, 4);
      return { schema: { type: ['string', 'null', pick(['integer', 'boolean'])], maxLength }, bytes: 2 + 6 * maxLength + 16, gaps: 0 };
    }
    case 'array': {
      const item = randomSchema(r, depth + 1);
      const maxItems = int(1, 3);
      return {
        schema: { type: 'array', items: item.schema, minItems: int(0, 1), maxItems },
        bytes: 2 + maxItems * (item.bytes + 1), gaps: 2 * maxItems + 2 + maxItems * item.gaps,
      };
    }
    default: {
      const names = [...new Set(Array.from({ length: int(1, 3) }, () => pick(WORDS)))];
      const properties: Record<string, Schema> = {};
      let bytes = 2;
      let gaps = 2;
      for (const n of names) {
        const sub = randomSchema(r, depth + 1);
        properties[n] = sub.schema;
        bytes += n.length + 4 + sub.bytes;
        gaps += 4 + sub.gaps;
      }
      const required = names.filter(() => r() < 0.6);
      return { schema: { type: 'object', properties, required, additionalProperties: false }, bytes, gaps };
    }
  }
}

test('200 seeded generations with random small schemas parse and validate (ajv)', async () => {
  // wasm on one thread: the fastest for this small model on a shared machine (the js backend is slower)
  const { model } = await loadModel(undefined, { backend: 'wasm', threads: 1 });
  const ajv = new Ajv({ strict: true, allowUnionTypes: true });
  const prompt = tok.encode('Here is the data as JSON:\n');
  const base = model.newState();
  const lastLogits = await model.forward(prompt, base);
  const r = rng(16);
  let tokens = 0;
  let maskMs = 0;
  for (let k = 0; k < 200; k++) {
    const { schema, bytes, gaps } = randomSchema(r, 0);
    const maxWhitespace = k % 4 === 0 ? 2 : 0;
    const c = JsonGrammar.fromSchema(schema, { maxWhitespace }).constraint(tok);
    // Every token has ≥ 1 byte, so this many tokens always suffice: every generation must end by itself.
    const maxTokens = bytes + (gaps + 1) * maxWhitespace;
    const res = await generate(model, tok, base.clone(), [], {
      maxTokens, sampling: { ...GENERATE_DEFAULTS, seed: k }, constraint: c, lastLogits,
    });
    const where = `#${k} ${JSON.stringify(schema)} → ${JSON.stringify(res.text)}`;
    assert.equal(res.finishReason, 'stop', where);
    let value: unknown;
    assert.doesNotThrow(() => { value = JSON.parse(res.text); }, where);
    assert.ok(ajv.validate(schema, value), `${where}: ${ajv.errorsText()}`);
    tokens += res.completionTokens;
    maskMs += c.stats.maskMs;
  }
  console.log(`# 200 generations, ${tokens} tokens, masking ${(maskMs / tokens).toFixed(3)} ms/token`);
});

test('rwkv7 generate --json-schema', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-schema-'));
  const file = join(dir, 's.json');
  writeFileSync(file, JSON.stringify({ type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] }));
  const cli = (...args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', main, 'generate', '--backend', 'wasm', ...args], (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
  const ok = await cli('-p', 'JSON:', '--json-schema', file, '--max-whitespace', '0', '-n', '20', '--seed', '1', '--json', '-q');
  assert.equal(ok.code, 0, ok.stderr);
  const out = JSON.parse(ok.stdout) as { text: string; finish_reason: string };
  assert.equal(out.finish_reason, 'stop');
  assert.equal(typeof (JSON.parse(out.text) as { ok: unknown }).ok, 'boolean');
  writeFileSync(file, JSON.stringify({ type: 'string', pattern: '^a' }));
  const bad = await cli('-p', 'x', '--json-schema', file);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /unsupported JSON Schema keyword 'pattern' at #/);
});
