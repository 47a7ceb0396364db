// The OpenAI-compatible server, in-process on loopback ports: the official `openai` client, streaming, errors,
// queueing, a bounded load test with disconnecting clients, and the prefix state cache.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { loadModel, type LoadedModel } from '../src/runtime/load.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { createServer, type RwkvServer, type ServerOptions } from '../src/server/index.js';
import type { BackendName } from '../src/backends/index.js';

const KEY = 'test-key';
const BACKEND = (process.env.RWKV7_TEST_BACKEND ?? 'js') as BackendName;
let loaded: LoadedModel;
let tokenizer: WorldTokenizer;
const servers: RwkvServer[] = [];

before(async () => {
  loaded = await loadModel(undefined, { backend: BACKEND });
  tokenizer = WorldTokenizer.default();
});

after(async () => {
  for (const s of servers) await s.close();
});

/** Starts a server on a free loopback port; returns it and its base URL. */
async function start(opts: ServerOptions = {}): Promise<{ app: RwkvServer; url: string }> {
  const app = createServer(loaded, { tokenizer, apiKey: KEY, ...opts });
  servers.push(app);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  assert.ok(addr && typeof addr === 'object');
  return { app, url: `http://127.0.0.1:${addr.port}` };
}

const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };

function post(url: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(url + path, { method: 'POST', headers: auth, body: typeof body === 'string' ? body : JSON.stringify(body), signal });
}

/** Checks an OpenAI error object and returns it. */
async function apiError(res: Response, status: number): Promise<{ message: string; type: string; param: string | null; code: string | null }> {
  assert.equal(res.status, status);
  const j = (await res.json()) as { error: { message: string; type: string; param: string | null; code: string | null } };
  assert.equal(typeof j.error.message, 'string');
  assert.equal(typeof j.error.type, 'string');
  assert.ok('param' in j.error && 'code' in j.error);
  assert.ok(!/\n\s+at /.test(j.error.message), 'no stack trace');
  return j.error;
}

/** Parses a complete SSE body: every event is one `data:` line; the last is [DONE]. Returns the JSON payloads. */
function parseSse(body: string): Record<string, unknown>[] {
  assert.ok(body.endsWith('data: [DONE]\n\n'), `stream must end with [DONE]: ${JSON.stringify(body.slice(-80))}`);
  const events = body.slice(0, -2).split('\n\n');
  assert.equal(events.pop(), 'data: [DONE]');
  return events.map((e) => {
    assert.ok(e.startsWith('data: ') && !e.includes('\n'), `malformed event ${JSON.stringify(e.slice(0, 80))}`);
    return JSON.parse(e.slice(6)) as Record<string, unknown>;
  });
}

test('the openai client: models, chat (plain and streaming), completion with a stop string, API key', async () => {
  const { url, app } = await start();
  const client = new OpenAI({ apiKey: KEY, baseURL: `${url}/v1`, maxRetries: 0, timeout: 60_000 });

  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [app.rwkv.modelName]);
  assert.equal(app.rwkv.modelName, 'rwkv7-storyteller-L6-D192');

  const messages = [
    { role: 'system' as const, content: 'You tell short stories.' },
    { role: 'user' as const, content: 'Tell me about a fox.' },
  ];
  const chat = await client.chat.completions.create({ model: 'anything', messages, max_tokens: 6, seed: 42, temperature: 1, top_p: 0.5 });
  assert.equal(chat.object, 'chat.completion');
  assert.equal(chat.model, app.rwkv.modelName);
  assert.equal(chat.choices.length, 1);
  assert.equal(chat.choices[0]!.message.role, 'assistant');
  const content = chat.choices[0]!.message.content ?? '';
  assert.ok(['stop', 'length'].includes(chat.choices[0]!.finish_reason));
  assert.ok(!content.includes('\n\n') && content === content.trimStart());
  assert.ok(chat.usage && chat.usage.prompt_tokens > 5 && chat.usage.completion_tokens <= 6);
  assert.equal(chat.usage.total_tokens, chat.usage.prompt_tokens + chat.usage.completion_tokens);

  // Streaming, same seed: the same answer, in chat.completion.chunk pieces, with usage in the last chunk.
  const stream = await client.chat.completions.create({
    model: 'x', messages, max_tokens: 6, seed: 42, temperature: 1, top_p: 0.5, stream: true, stream_options: { include_usage: true },
  });
  let streamed = '';
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined | null;
  let chunks = 0;
  for await (const c of stream) {
    chunks++;
    assert.equal(c.object, 'chat.completion.chunk');
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      streamed += ch.delta.content ?? '';
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert.ok(chunks >= 3);
  assert.equal(streamed, content);
  assert.equal(finish, chat.choices[0]!.finish_reason);
  assert.equal(usage?.completion_tokens, chat.usage.completion_tokens);
  assert.equal(usage?.prompt_tokens, chat.usage.prompt_tokens);

  // Completion with a stop string (greedy, so both runs see the same tokens): the text ends right before it.
  const prompt = 'Once upon a time, in a small village,';
  const full = await client.completions.create({ model: 'x', prompt, max_tokens: 12, temperature: 0 });
  const text = full.choices[0]!.text;
  assert.equal(full.object, 'text_completion');
  assert.ok(text.length >= 8, `need some text to cut: ${JSON.stringify(text)}`);
  const stop = text.slice(4, 7);
  const cut = await client.completions.create({ model: 'x', prompt, max_tokens: 12, temperature: 0, stop: [stop, 'never-appears'] });
  assert.equal(cut.choices[0]!.text, text.slice(0, text.indexOf(stop)));
  assert.equal(cut.choices[0]!.finish_reason, 'stop');
  const cut2 = await client.completions.create({ model: 'x', prompt, max_tokens: 12, temperature: 0, stop });
  assert.equal(cut2.choices[0]!.text, cut.choices[0]!.text);

  // API key: a wrong key and a missing key are 401; /health needs none.
  const bad = new OpenAI({ apiKey: 'wrong', baseURL: `${url}/v1`, maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  const err = await apiError(await fetch(`${url}/v1/models`), 401);
  assert.equal(err.code, 'invalid_api_key');
  assert.equal((await fetch(`${url}/health`)).status, 200);
});

test('bad input: OpenAI error objects with the right status, never a crash', async () => {
  const { url } = await start({ bodyLimit: 64 * 1024 });
  const chatOk = { model: 'x', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 };
  assert.equal((await apiError(await post(url, '/v1/chat/completions', '{"model": "x", "messages": ['), 400)).type, 'invalid_request_error');
  await apiError(await post(url, '/v1/chat/completions', 'x'.repeat(100 * 1024)), 413);
  await apiError(await post(url, '/v1/completions', '[1, 2]'), 400);
  await apiError(await fetch(`${url}/v1/nope`, { headers: auth }), 404);
  await apiError(await fetch(`${url}/v1/completions`, { headers: auth }), 405); // GET on a POST route
  const cases: [string, unknown, string | null][] = [
    ['/v1/chat/completions', { ...chatOk, n: 99 }, 'n'],
    ['/v1/chat/completions', { ...chatOk, temperature: 'hot' }, 'temperature'],
    ['/v1/chat/completions', { ...chatOk, temperature: 3 }, 'temperature'],
    ['/v1/chat/completions', { ...chatOk, top_p: -0.1 }, 'top_p'],
    ['/v1/chat/completions', { ...chatOk, max_tokens: -1 }, 'max_tokens'],
    ['/v1/chat/completions', { ...chatOk, max_tokens: 1.5 }, 'max_tokens'],
    ['/v1/chat/completions', { ...chatOk, presence_penalty: 9 }, 'presence_penalty'],
    ['/v1/chat/completions', { ...chatOk, stop: [''] }, 'stop'],
    ['/v1/chat/completions', { ...chatOk, stop: 5 }, 'stop'],
    ['/v1/chat/completions', { ...chatOk, seed: 'x' }, 'seed'],
    ['/v1/chat/completions', { ...chatOk, stream: 'yes' }, 'stream'],
    ['/v1/chat/completions', { ...chatOk, logprobs: true, top_logprobs: 21 }, 'top_logprobs'],
    ['/v1/chat/completions', { ...chatOk, top_logprobs: 2 }, 'top_logprobs'],
    ['/v1/completions', { model: 'x', prompt: 'a', logprobs: true }, 'logprobs'],
    ['/v1/chat/completions', { ...chatOk, response_format: { type: 'yaml' } }, 'response_format.type'],
    ['/v1/chat/completions', { ...chatOk, state: 7 }, 'state'],
    ['/v1/chat/completions', { model: 'x', max_tokens: 2 }, 'messages'],
    ['/v1/chat/completions', { ...chatOk, messages: [] }, 'messages'],
    ['/v1/chat/completions', { ...chatOk, messages: [{ role: 'robot', content: 'hi' }] }, 'messages[0].role'],
    ['/v1/chat/completions', { ...chatOk, messages: [{ role: 'user', content: 7 }] }, 'messages[0].content'],
    ['/v1/completions', { model: 'x', max_tokens: 2 }, 'prompt'],
    ['/v1/completions', { model: 'x', prompt: '' }, 'prompt'],
    ['/v1/completions', { model: 'x', prompt: ['a', 'b'] }, 'prompt'],
    ['/v1/completions', { model: 'x', prompt: [1, 999999] }, 'prompt'],
    ['/v1/completions', { model: 7, prompt: 'a' }, 'model'],
  ];
  for (const [path, body, param] of cases) {
    const e = await apiError(await post(url, path, body), 400);
    assert.equal(e.param, param, `${JSON.stringify(body)} → ${e.message}`);
  }
  // Still fine afterwards; token-id prompts work; max_tokens above the cap is clamped.
  const r = await post(url, '/v1/completions', { model: 'x', prompt: [33, 44, 55], max_tokens: 2, temperature: 0 });
  assert.equal(r.status, 200);
  assert.equal(((await r.json()) as { usage: { prompt_tokens: number } }).usage.prompt_tokens, 3);
});

test('a full queue answers 429; a client leaving the queue frees its place; queued requests run in turn', async () => {
  const { url, app } = await start({ maxConcurrency: 1, maxQueue: 1 });
  const slots = app.rwkv.engine.slots;
  const until = async (cond: () => boolean) => {
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(cond());
  };
  // A holds the only slot: its headers arrive once its prompt is processed, and it streams for a while.
  const acA = new AbortController();
  const a = await post(url, '/v1/completions', { model: 'x', prompt: 'The river', max_tokens: 200, stream: true }, acA.signal);
  assert.equal(a.status, 200);
  assert.equal(slots.activeCount, 1);
  // D queues, then its client leaves: the place is free again.
  const acD = new AbortController();
  const d = post(url, '/v1/completions', { model: 'x', prompt: 'D', max_tokens: 2 }, acD.signal);
  await until(() => slots.queuedCount === 1);
  acD.abort();
  await assert.rejects(d);
  await until(() => slots.queuedCount === 0);
  // B queues; C finds the queue full.
  const b = post(url, '/v1/completions', { model: 'x', prompt: 'The mill', max_tokens: 2, temperature: 0 });
  await until(() => slots.queuedCount === 1);
  const c = await post(url, '/v1/completions', { model: 'x', prompt: 'The mill', max_tokens: 2 });
  const e = await apiError(c, 429);
  assert.equal(e.code, 'queue_full');
  assert.equal(e.type, 'rate_limit_error');
  // A disconnects mid-stream: its generation stops, B gets the slot and completes.
  acA.abort();
  const rb = await b;
  assert.equal(rb.status, 200);
  assert.equal(((await rb.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 2);
  await until(() => slots.activeCount === 0);
});

test('load: 32 concurrent streams, a quarter disconnecting, plus junk requests; the server stays up', async () => {
  const { url, app } = await start({ maxConcurrency: 4, maxQueue: 64, bodyLimit: 256 * 1024 });
  const N = 32;
  const MAX = 5;
  const t0 = performance.now();
  const streams = Array.from({ length: N }, async (_, i) => {
    const ac = new AbortController();
    const quitter = i % 4 === 3;
    // Quitters leave at staggered times: some while queued, some mid-stream.
    if (quitter) setTimeout(() => ac.abort(), 100 + i * 60);
    try {
      const res = await post(url, '/v1/completions', {
        model: 'x', prompt: `Story ${i}: the`, max_tokens: MAX, seed: i, stream: true, stream_options: { include_usage: true },
      }, ac.signal);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
      const events = parseSse(await res.text());
      const finals = events.filter((e) => (e.choices as { finish_reason: string | null }[]).some((c) => c.finish_reason));
      assert.equal(finals.length, 1);
      const last = events[events.length - 1]! as { choices: unknown[]; usage: { completion_tokens: number } };
      assert.deepEqual(last.choices, []);
      assert.ok(last.usage.completion_tokens <= MAX);
      for (const e of events) assert.equal(e.object, 'text_completion');
      return { ok: true, tokens: last.usage.completion_tokens };
    } catch (e) {
      if (quitter && ac.signal.aborted) return { ok: false, tokens: 0 };
      throw e;
    }
  });
  // Junk alongside: malformed JSON, oversized bodies, bad fields.
  const junk = [
    ...Array.from({ length: 4 }, async () => apiError(await post(url, '/v1/completions', '{"prompt": "x",'), 400)),
    ...Array.from({ length: 2 }, async () => apiError(await post(url, '/v1/completions', JSON.stringify({ prompt: 'y'.repeat(300 * 1024) })), 413)),
    ...Array.from({ length: 2 }, async () => apiError(await post(url, '/v1/chat/completions', { messages: 'hi' }), 400)),
  ];
  const results = await Promise.all(streams);
  await Promise.all(junk);
  const secs = (performance.now() - t0) / 1000;
  const done = results.filter((r) => r.ok);
  const tokens = done.reduce((a, r) => a + r.tokens, 0);
  assert.ok(done.length >= N - N / 4, `${done.length} streams finished`);
  console.log(
    `# load (${BACKEND} backend, concurrency 4): ${done.length}/${N} streams finished (${N - done.length} aborted) in ${secs.toFixed(1)} s: ` +
    `${(done.length / secs).toFixed(2)} requests/s, ${(tokens / secs).toFixed(1)} completion tokens/s`,
  );

  // Every slot comes back (the aborted generations stop and free theirs), and the server still answers.
  for (let i = 0; i < 100 && (app.rwkv.engine.slots.activeCount > 0 || app.rwkv.engine.slots.queuedCount > 0); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const health = (await (await fetch(`${url}/health`)).json()) as { status: string; active: number; queued: number };
  assert.deepEqual([health.status, health.active, health.queued], ['ok', 0, 0]);
  const follow = await post(url, '/v1/chat/completions', { model: 'x', messages: [{ role: 'user', content: 'Still there?' }], max_tokens: 3 });
  assert.equal(follow.status, 200);
  assert.equal(((await follow.json()) as { object: string }).object, 'chat.completion');
});

test('state cache: a second chat turn prefills only its new tokens and equals a cold server, token for token', async () => {
  const warm = await start({ stateCacheMb: 64 });
  const cold = await start({ stateCacheMb: 0 });
  const sampling = { max_tokens: 8, seed: 1234, temperature: 1, top_p: 0.7 };
  const chat = async (url: string, messages: unknown[]) => {
    const res = await post(url, '/v1/chat/completions', { model: 'x', messages, ...sampling });
    assert.equal(res.status, 200);
    const j = (await res.json()) as {
      choices: { message: { content: string } }[];
      usage: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details: { cached_tokens: number } };
    };
    const cached = Number(res.headers.get('x-rwkv7-cached-tokens'));
    const prefill = Number(res.headers.get('x-rwkv7-prefill-tokens'));
    assert.equal(cached, j.usage.prompt_tokens_details.cached_tokens);
    assert.equal(cached + prefill, j.usage.prompt_tokens);
    return { content: j.choices[0]!.message.content, usage: j.usage, cached, prefill };
  };

  const turn1 = [
    { role: 'system', content: 'You are a friendly storyteller.' },
    { role: 'user', content: 'Who lives in the old mill by the river?' },
  ];
  const a1 = await chat(warm.url, turn1);
  assert.equal(a1.cached, 0);
  const turn2 = [...turn1, { role: 'assistant', content: a1.content }, { role: 'user', content: 'And what does she eat?' }];
  const a2 = await chat(warm.url, turn2);
  // The whole first prompt (at least) came from the cache: only the answer and the new message were prefilled.
  assert.ok(a2.cached >= a1.usage.prompt_tokens, `cached ${a2.cached} < first prompt ${a1.usage.prompt_tokens}`);
  assert.ok(a2.prefill < a2.usage.prompt_tokens - a1.usage.prompt_tokens + 1);

  // The cold server computes everything from scratch and must produce exactly the same answer.
  const c2 = await chat(cold.url, turn2);
  assert.equal(c2.cached, 0);
  assert.equal(c2.prefill, a2.usage.prompt_tokens);
  assert.equal(c2.content, a2.content);
  assert.equal(c2.usage.completion_tokens, a2.usage.completion_tokens);

  // Repeating a request is served entirely from the cache (state + logits): nothing to prefill, same answer.
  const again = await chat(warm.url, turn2);
  assert.equal(again.prefill, 0);
  assert.equal(again.content, a2.content);

  // Another conversation on the warm server is not affected by what the cache holds.
  const other = [{ role: 'user', content: 'Name a colour.' }];
  const w = await chat(warm.url, other);
  const c = await chat(cold.url, other);
  assert.equal(w.content, c.content);
  const stats = warm.app.rwkv.engine.cache.stats();
  assert.ok(stats.hits >= 2 && stats.entries >= 2 && stats.bytes <= stats.budgetBytes);
});
