// Server features local-model users expect: response_format (JSON mode and JSON schemas) through the official
// `openai` client, logprobs that are log_softmax of the model's logits, and initial states selected per request.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { Ajv } from 'ajv';
import { loadModel, type LoadedModel } from '../src/runtime/load.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { createServer, type RwkvServer } from '../src/server/index.js';
import { saveState } from '../src/model/state.js';
import { loadInitialState } from '../src/model/state-file.js';
import { generate } from '../src/runtime/generate.js';
import { logSumExp } from '../src/runtime/logprobs.js';

let loaded: LoadedModel;
let tokenizer: WorldTokenizer;
let app: RwkvServer;
let url: string;
let dir: string;
const GREEDY = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0, penaltyDecay: 1 };

before(async () => {
  loaded = await loadModel(undefined, { backend: 'wasm', threads: 2 });
  tokenizer = WorldTokenizer.default();
  // An initial state: the state after a story opening, saved as a state file.
  dir = mkdtempSync(join(tmpdir(), 'rwkv7-states-'));
  const st = loaded.model.newState();
  await loaded.model.forward(tokenizer.encode('The old castle stood on a hill above the sea, and in it lived a king.\n\n'), st);
  saveState(join(dir, 'castle.safetensors'), await st.toHost(), loaded.config);
  st.free();
  app = createServer(loaded, { tokenizer, states: [loadInitialState(join(dir, 'castle.safetensors'), loaded.config)], web: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  assert.ok(addr && typeof addr === 'object');
  url = `http://127.0.0.1:${addr.port}`;
});

after(async () => {
  await app?.close();
  await loaded?.model.backend.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const client = () => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none' });

test('response_format json_schema through the openai client: the answer parses and matches the schema', async () => {
  const schema = {
    type: 'object',
    properties: { name: { type: 'string', maxLength: 20 }, age: { type: 'integer' }, tags: { type: 'array', items: { enum: ['a', 'b'] }, maxItems: 3 } },
    required: ['name', 'age', 'tags'],
    additionalProperties: false,
  };
  const validate = new Ajv().compile(schema);
  for (const seed of [1, 2, 3]) {
    const r = await client().chat.completions.create({
      model: 'x', messages: [{ role: 'user', content: 'Describe a person as JSON.' }], max_tokens: 120, seed,
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema } },
    });
    const text = r.choices[0]!.message.content ?? '';
    assert.equal(r.choices[0]!.finish_reason, 'stop', text);
    const value = JSON.parse(text);
    assert.ok(validate(value), `${text}: ${JSON.stringify(validate.errors)}`);
  }
  const obj = await client().completions.create({ model: 'x', prompt: 'Data:', max_tokens: 60, seed: 5, response_format: { type: 'json_object' } } as OpenAI.CompletionCreateParamsNonStreaming);
  const t = obj.choices[0]!.text;
  if (obj.choices[0]!.finish_reason === 'stop') assert.equal(typeof JSON.parse(t), 'object');
  else assert.ok(t.trimStart().startsWith('{'), t);
  // An unsupported schema keyword is a 400 naming it.
  await assert.rejects(
    client().chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'n', schema: { type: 'string', pattern: 'a+' } } } }),
    (e: { status?: number; message: string }) => e.status === 400 && /pattern/.test(e.message),
  );
});

test('logprobs are log_softmax of the model logits for the generated tokens (completions, token-id prompt)', async () => {
  const prompt = tokenizer.encode('Once upon a time');
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: 8, temperature: 0, presence_penalty: 0, frequency_penalty: 0, logprobs: 3 }),
  });
  assert.equal(res.status, 200);
  const body = await res.json() as { choices: { text: string; logprobs: { tokens: string[]; token_logprobs: number[]; top_logprobs: Record<string, number>[]; text_offset: number[] } }[] };
  const lp = body.choices[0]!.logprobs;
  assert.equal(lp.tokens.join(''), body.choices[0]!.text);
  // The same tokens, run here: the greedy continuation and its logits at every step.
  const st = loaded.model.newState();
  const steps: { id: number; logits: Float32Array }[] = [];
  await generate(loaded.model, tokenizer, st, prompt, { maxTokens: 8, sampling: GREEDY, stopTokens: [], onToken: (id, logits) => steps.push({ id, logits: logits.slice() }) });
  st.free();
  assert.equal(lp.token_logprobs.length, steps.length);
  steps.forEach((s, i) => {
    const want = s.logits[s.id]! - logSumExp(s.logits);
    assert.ok(Math.abs(lp.token_logprobs[i]! - want) < 1e-6, `token ${i}: ${lp.token_logprobs[i]} vs ${want}`);
    const top = Object.values(lp.top_logprobs[i]!);
    assert.equal(top.length, 3);
    assert.ok(Math.abs(Math.max(...top) - want) < 1e-6, 'greedy: the chosen token is the most likely one');
  });
  assert.deepEqual(lp.text_offset, lp.tokens.map((_, i) => lp.tokens.slice(0, i).join('').length));
});

test('chat logprobs parse in the openai client, streamed and not, and agree', async () => {
  const args = { model: 'x', messages: [{ role: 'user' as const, content: 'Tell me a story.' }], max_tokens: 10, temperature: 0, logprobs: true, top_logprobs: 2 };
  const r = await client().chat.completions.create(args);
  const content = r.choices[0]!.logprobs!.content!;
  assert.ok(content.length > 0);
  for (const t of content) {
    assert.ok(t.logprob <= 0 && t.top_logprobs.length === 2);
    assert.ok(t.top_logprobs[0]!.logprob >= t.top_logprobs[1]!.logprob);
    assert.equal(t.token, Buffer.from(t.bytes!).toString('utf8'));
  }
  const streamed: typeof content = [];
  for await (const c of await client().chat.completions.create({ ...args, stream: true })) {
    streamed.push(...(c.choices[0]?.logprobs?.content ?? []));
  }
  assert.deepEqual(streamed.map((t) => [t.token, t.logprob]), content.map((t) => [t.token, t.logprob]));
});

test('a request selects an initial state by name: the same text as generating from that state here; unknown names are a 400', async () => {
  const prompt = 'Then the king said';
  const ask = async (state?: string) => {
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, max_tokens: 12, temperature: 0, presence_penalty: 0, frequency_penalty: 0, ...(state ? { state } : {}) }),
    });
    return { status: res.status, body: await res.json() as { choices: { text: string }[]; error?: { message: string } } };
  };
  const init = loadInitialState(join(dir, 'castle.safetensors'), loaded.config);
  const st = loaded.model.newState();
  st.fromHost(init.host);
  const local = await generate(loaded.model, tokenizer, st, tokenizer.encode(prompt), { maxTokens: 12, sampling: GREEDY, stopTokens: [] });
  st.free();
  const withState = await ask('castle');
  assert.equal(withState.status, 200);
  assert.equal(withState.body.choices[0]!.text, local.text);
  // The same prompt without the state (after the state's request was cached) must not reuse it.
  const zero = loaded.model.newState();
  const plain = await generate(loaded.model, tokenizer, zero, tokenizer.encode(prompt), { maxTokens: 12, sampling: GREEDY, stopTokens: [] });
  zero.free();
  assert.notEqual(plain.text, local.text);
  assert.equal((await ask()).body.choices[0]!.text, plain.text);
  assert.equal((await ask('castle')).body.choices[0]!.text, local.text);
  const bad = await ask('nope');
  assert.equal(bad.status, 400);
  assert.match(bad.body.error!.message, /no state named "nope" \(this server has castle\)/);
  const list = await (await fetch(`${url}/v1/states`)).json() as { data: { id: string }[] };
  assert.deepEqual(list.data.map((d) => d.id), ['castle']);
});
