// Continuous batching in the server (src/server/batcher.ts, engine.ts): the batcher on a fake model (step
// composition, budgets, aborts, errors), then servers on a tiny golden model on the js backend — where a batched
// forward pass equals the single one bit for bit — checking that a request gives the same text alone and beside
// others, `n` > 1 (seeds per choice, streaming indices, usage), and streaming load with disconnects (nothing leaks
// between sequences, every state is freed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadModel, type LoadedModel } from '../src/runtime/load.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { createServer, type RwkvServer, type ServerOptions } from '../src/server/index.js';
import { Batcher, type StepInfo } from '../src/server/batcher.js';
import { choiceSeed } from '../src/server/engine.js';
import { AbortedError } from '../src/server/scheduler.js';
import { PrefillPacer } from '../src/server/pacing.js';
import type { BatchItem } from '../src/model/rwkv7.js';
import type { State } from '../src/model/state.js';

const shared = fileURLToPath(new URL('../../shared/', import.meta.url));
const TINY = `${shared}fixtures/models/tiny-l2-d128.pth`; // vocabulary 1000: prompts are token ids

let tiny: LoadedModel;
let tokenizer: WorldTokenizer;
const servers: RwkvServer[] = [];

before(async () => {
  tiny = await loadModel(TINY, { backend: 'js' });
  tokenizer = WorldTokenizer.default();
});

after(async () => {
  for (const s of servers) await s.close();
  await tiny?.model.backend.dispose();
});

async function start(opts: ServerOptions = {}, loaded: LoadedModel = tiny): Promise<{ app: RwkvServer; url: string }> {
  const app = createServer(loaded, { tokenizer, web: false, ...opts });
  servers.push(app);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  assert.ok(addr && typeof addr === 'object');
  return { app, url: `http://127.0.0.1:${addr.port}` };
}

function post(url: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end && !cond()) await sleep(10);
  return cond();
}

/** A token-id prompt for the tiny model (ids 1..999), different for every salt. */
const prompt = (salt: number, n = 6 + (salt % 5)) => Array.from({ length: n }, (_, i) => 1 + ((salt * 131 + i * 37) % 999));

interface Completion {
  choices: { text: string; index: number; finish_reason: string; logprobs: { tokens: string[] } | null }[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

async function complete(url: string, body: Record<string, unknown>): Promise<Completion> {
  const res = await post(url, '/v1/completions', { max_tokens: 16, temperature: 1, top_p: 0.9, ...body });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as Completion;
}

/** Parses a finished SSE body into its JSON events (the last line is [DONE]). */
function events(body: string): Record<string, unknown>[] {
  assert.ok(body.endsWith('data: [DONE]\n\n'), body.slice(-80));
  return body.slice(0, -2).split('\n\n').slice(0, -1).map((e) => JSON.parse(e.slice(6)) as Record<string, unknown>);
}

// ---- the batcher on a fake model ----

/** A fake model: records each step's items; the logits of an item are [first token, token count, step]. */
function fakeModel(fail?: (step: number) => boolean) {
  const steps: { tokens: number[]; state: unknown }[][] = [];
  return {
    steps,
    async forwardBatch(items: readonly BatchItem[]): Promise<Float32Array[]> {
      const k = steps.length;
      steps.push(items.map((it) => ({ tokens: Array.from(it.tokens), state: it.state })));
      if (fail?.(k)) throw new Error(`step ${k} failed`);
      return items.map((it) => new Float32Array([it.tokens[0]!, it.tokens.length, k]));
    },
  };
}
const fakeState = (name: string) => ({ name }) as unknown as State;

test('batcher: one step takes every waiting request; decode first, prefill up to the budget and the chunk', async () => {
  const m = fakeModel();
  const info: StepInfo[] = [];
  const b = new Batcher(m, { maxBatch: 8, batchTokens: 6, prefillChunk: () => 4, onStep: (s) => info.push(s) });
  const long = Array.from({ length: 10 }, (_, i) => 100 + i);
  const progress: number[] = [];
  const pLong = b.submit(long, fakeState('long'), { onProgress: (n) => progress.push(n) });
  const decodes = [1, 2, 3].map((t) => b.submit([t], fakeState(`d${t}`)));
  const d = await Promise.all(decodes);
  // All four were in the first step: three decode rows and 6 − 3 = 3 prefill rows (the chunk of 4 does not fit).
  assert.deepEqual(m.steps[0]!.map((it) => it.tokens.length), [1, 1, 1, 3]);
  d.forEach((l, i) => assert.deepEqual([...l], [i + 1, 1, 0]));
  const l = await pLong;
  // The rest of the prompt ran alone, at most 4 (the chunk) per step; every token once, in order.
  assert.deepEqual(m.steps.slice(1).map((s) => s.map((it) => it.tokens.length)), [[4], [3]]);
  assert.deepEqual(m.steps.flatMap((s) => s.filter((it) => (it.state as { name: string }).name === 'long').flatMap((it) => it.tokens)), long);
  assert.deepEqual([...l], [107, 3, 2], 'the logits after the last token');
  assert.deepEqual(progress, [3, 4, 3]);
  assert.deepEqual(info.map((s) => [s.rows, s.sequences, s.decodeRows, s.prefillRows]), [[6, 4, 3, 3], [4, 1, 0, 4], [3, 1, 0, 3]]);
  for (const s of m.steps) assert.ok(s.reduce((a, it) => a + it.tokens.length, 0) <= 6);
});

test('batcher: max sequences per step, one kept for a waiting prompt; FIFO across steps', async () => {
  const m = fakeModel();
  const b = new Batcher(m, { maxBatch: 4, batchTokens: 64 });
  const all = Array.from({ length: 10 }, (_, i) => b.submit([i], fakeState(`d${i}`)));
  await Promise.all(all);
  assert.deepEqual(m.steps.map((s) => s.map((it) => it.tokens[0])), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]);
  // With a prompt waiting, decoders take at most maxBatch − 1 sequences (and leave a row): the prompt is not starved.
  m.steps.length = 0;
  const more = Array.from({ length: 6 }, (_, i) => b.submit([i], fakeState(`e${i}`)));
  const p = b.submit([7, 8, 9], fakeState('prompt'));
  await Promise.all([...more, p]);
  assert.deepEqual(m.steps[0]!.map((it) => it.tokens), [[0], [1], [2], [7, 8, 9]]);
  assert.equal(b.stats().maxSequences, 4);
  assert.equal(b.waiting, 0);
});

test('batcher: requests submitted in the same macrotask turn share a step (the generations of one round)', async () => {
  const m = fakeModel();
  const b = new Batcher(m, { maxBatch: 16, batchTokens: 64 });
  // Eight "generations": each yields one macrotask (as generate() does), submits, and repeats three times.
  const gen = async (i: number) => {
    for (let r = 0; r < 3; r++) {
      await new Promise((res) => setImmediate(res));
      await b.submit([i], fakeState(`g${i}`));
    }
  };
  await Promise.all(Array.from({ length: 8 }, (_, i) => gen(i)));
  assert.deepEqual(m.steps.map((s) => s.length), [8, 8, 8]);
});

test('batcher: an aborted waiting request leaves at once; a failed step rejects its requests only, then it serves on', async () => {
  const m = fakeModel((k) => k === 1);
  const b = new Batcher(m, { maxBatch: 8, batchTokens: 64 });
  const ac = new AbortController();
  const gone = b.submit([5, 6, 7], fakeState('gone'), { signal: ac.signal });
  const stay = b.submit([1], fakeState('stay'));
  ac.abort();
  await assert.rejects(gone, AbortedError);
  assert.deepEqual([...(await stay)], [1, 1, 0]);
  assert.deepEqual(m.steps[0]!.map((it) => it.tokens), [[1]], 'the aborted request never ran');
  await assert.rejects(b.submit([1], fakeState('x'), { signal: AbortSignal.abort() }), AbortedError);

  // Step 1 throws: both of its requests reject with the error; the next step runs normally.
  const [a, c] = [b.submit([2], fakeState('a')), b.submit([3, 4], fakeState('c'))];
  await assert.rejects(a, /step 1 failed/);
  await assert.rejects(c, /step 1 failed/);
  assert.deepEqual([...(await b.submit([9], fakeState('after')))], [9, 1, 2]);
  assert.deepEqual(b.stats().failedSteps, 1);
  assert.equal(b.waiting, 0);

  // A prompt spread over several steps, aborted while its first chunk runs: rejected after that step.
  const m2 = fakeModel();
  const b2 = new Batcher(m2, { maxBatch: 8, batchTokens: 4 });
  const ac2 = new AbortController();
  const runs = b2.submit(Array.from({ length: 12 }, (_, i) => i + 1), fakeState('p'), { signal: ac2.signal, onProgress: () => ac2.abort() });
  await assert.rejects(runs, AbortedError);
  assert.equal(m2.steps.length, 1);
});

test('pacer with batched steps: decode-only steps measure the decode rows, mixed steps the prefill on top of them', () => {
  const p = new PrefillPacer(64, 50);
  const cost = (D: number, P: number) => 20 + (D - 1) * 5 + P * 4; // c1 = 20 ms, 5 ms per further decode row, 4 per prefill token
  p.observe(1, 200); // cold
  p.observe(1, 20);
  p.observeStep(8, 0, cost(8, 0));
  const sizes: number[] = [];
  for (let i = 0; i < 6; i++) {
    const P = p.next(8);
    sizes.push(P);
    p.observeStep(8, P, cost(8, P));
  }
  // A probe, then the prefill that adds one 50 ms budget to the step: 50 / 4 = 12 tokens.
  assert.deepEqual(sizes, [8, 12, 12, 12, 12, 12]);
  assert.deepEqual(p.stats(), { chunk: 8, oneTokenMs: 20, perTokenMs: 4, perDecodeRowMs: 5 }); // alone: 1 + (50 − 20) / 4
});

test('choiceSeed: seed + i, wrapping at the end of the safe-integer range; no seed, no derived seed', () => {
  assert.equal(choiceSeed(7, 0), 7);
  assert.equal(choiceSeed(7, 3), 10);
  assert.equal(choiceSeed(Number.MAX_SAFE_INTEGER, 0), Number.MAX_SAFE_INTEGER);
  assert.equal(choiceSeed(Number.MAX_SAFE_INTEGER, 1), Number.MIN_SAFE_INTEGER);
  assert.equal(choiceSeed(Number.MAX_SAFE_INTEGER - 1, 3), Number.MIN_SAFE_INTEGER + 1);
  assert.equal(choiceSeed(undefined, 2), undefined);
});

// ---- servers on the tiny model (js backend: batched = single, bit for bit) ----

test('the same seed gives the same text alone and beside 7 other concurrent requests (js)', async () => {
  const { app, url } = await start({ maxConcurrency: 8, stateCacheMb: 0 });
  const bodies = Array.from({ length: 8 }, (_, i) => ({ prompt: prompt(i), seed: 100 + i, max_tokens: 20 }));
  const alone: string[] = [];
  for (const b of bodies) alone.push((await complete(url, b)).choices[0]!.text);
  assert.ok(new Set(alone).size >= 7, 'different prompts and seeds give different texts');
  const before = app.rwkv.engine.stats().batch;
  const together = await Promise.all(bodies.map((b) => complete(url, b)));
  assert.deepEqual(together.map((r) => r.choices[0]!.text), alone);
  const st = app.rwkv.engine.stats();
  // They really shared forward passes: several sequences per step on average.
  const perStep = (st.batch.sequences - before.sequences) / (st.batch.steps - before.steps);
  assert.ok(perStep > 3 && st.batch.maxSequences >= 6, JSON.stringify(st.batch));
  assert.deepEqual([st.active, st.queued, st.generating, st.liveStates, st.batch.waiting], [0, 0, 0, 0, 0]);
});

test('n > 1: choice i equals a single request with seed + i; usage counts the prompt once; logprobs per choice', async () => {
  const { url } = await start({ maxConcurrency: 4 });
  const p = prompt(42, 9);
  const seed = 2024;
  const r = await complete(url, { prompt: p, n: 4, seed, max_tokens: 12, logprobs: 1 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
  const singles = await Promise.all([0, 1, 2, 3].map((i) => complete(url, { prompt: p, seed: seed + i, max_tokens: 12 })));
  assert.deepEqual(r.choices.map((c) => c.text), singles.map((s) => s.choices[0]!.text));
  assert.deepEqual(r.choices.map((c) => c.finish_reason), singles.map((s) => s.choices[0]!.finish_reason));
  assert.ok(new Set(r.choices.map((c) => c.text)).size >= 3, 'the choices differ');
  // One logprobs entry per generated token of that choice (no stop strings here: every token's text went out).
  r.choices.forEach((c, i) => assert.equal(c.logprobs!.tokens.length, singles[i]!.usage.completion_tokens));
  const completion = singles.reduce((a, s) => a + s.usage.completion_tokens, 0);
  assert.deepEqual(r.usage, { ...r.usage, prompt_tokens: p.length, completion_tokens: completion, total_tokens: p.length + completion });

  // Without a seed each choice draws its own.
  const free = await complete(url, { prompt: p, n: 3, max_tokens: 16 });
  assert.equal(free.choices.length, 3);
  assert.ok(new Set(free.choices.map((c) => c.text)).size >= 2, JSON.stringify(free.choices.map((c) => c.text)));

  // Streaming: chunks carry index = choice; each choice's pieces make its text; one finish chunk per choice.
  const res = await post(url, '/v1/completions', { prompt: p, n: 4, seed, max_tokens: 12, temperature: 1, top_p: 0.9, stream: true, stream_options: { include_usage: true } });
  assert.equal(res.status, 200);
  const evs = events(await res.text()) as { choices: { index: number; text: string; finish_reason: string | null }[]; usage?: Completion['usage'] | null }[];
  const texts = ['', '', '', ''];
  const finishes: number[] = [];
  for (const e of evs) {
    assert.ok(e.choices.length <= 1);
    for (const c of e.choices) {
      texts[c.index] += c.text;
      if (c.finish_reason) finishes.push(c.index);
    }
  }
  assert.deepEqual(texts, r.choices.map((c) => c.text));
  assert.deepEqual(finishes.sort(), [0, 1, 2, 3]);
  assert.deepEqual(evs.at(-1)!.choices, []);
  const u = evs.at(-1)!.usage!;
  assert.deepEqual([u.prompt_tokens, u.completion_tokens, u.total_tokens], [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens]);

  // The cap: a clear 400 naming n.
  for (const n of [17, 0, 2.5, 'two']) {
    const bad = await post(url, '/v1/completions', { prompt: p, n });
    assert.equal(bad.status, 400);
    const e = ((await bad.json()) as { error: { param: string; message: string } }).error;
    assert.equal(e.param, 'n');
    if (n === 17) assert.match(e.message, /'n' must be between 1 and 16 on this server \(got 17\)/);
  }
});

test('chat with n > 1 (bundled model): n choices, streamed with index and a role chunk each', async () => {
  const story = await loadModel(undefined, { backend: 'js' });
  try {
    const { url } = await start({ maxConcurrency: 2, maxBatch: 3 }, story);
    const body = { messages: [{ role: 'user', content: 'Hi' }], n: 3, seed: 5, max_tokens: 4, temperature: 1 };
    const res = await post(url, '/v1/chat/completions', body);
    assert.equal(res.status, 200);
    const j = (await res.json()) as { choices: { index: number; message: { content: string } }[]; usage: { completion_tokens: number } };
    assert.deepEqual(j.choices.map((c) => c.index), [0, 1, 2]);
    const s = await post(url, '/v1/chat/completions', { ...body, stream: true });
    const evs = events(await s.text()) as { choices: { index: number; delta: { role?: string; content?: string } }[] }[];
    const roles = evs.flatMap((e) => e.choices.filter((c) => c.delta.role === 'assistant').map((c) => c.index));
    assert.deepEqual(roles, [0, 1, 2]);
    const texts = ['', '', ''];
    for (const e of evs) for (const c of e.choices) texts[c.index] += c.delta.content ?? '';
    assert.deepEqual(texts, j.choices.map((c) => c.message.content));
    // --max-batch 3 caps n at 3.
    assert.equal((await post(url, '/v1/chat/completions', { ...body, n: 4 })).status, 400);
  } finally {
    await story.model.backend.dispose();
  }
});

test('8 concurrent streams, 3 disconnecting mid-stream: the others equal their lone runs; everything is freed', async () => {
  const { app, url } = await start({ maxConcurrency: 8, stateCacheMb: 0 });
  const engine = app.rwkv.engine;
  const N = 8;
  const MAX = 24;
  const body = (i: number) => ({ prompt: prompt(300 + i), seed: 7 * i + 1, max_tokens: MAX, stream: true, temperature: 1, top_p: 0.95 });
  // Reads a stream; `quit` aborts it after that many text chunks. Returns the text received.
  const read = async (i: number, quit?: number): Promise<{ text: string; finished: boolean }> => {
    const ac = new AbortController();
    const res = await post(url, '/v1/completions', body(i), ac.signal);
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let text = '';
    let chunks = 0;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let k: number;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, k);
          buf = buf.slice(k + 2);
          if (ev === 'data: [DONE]') return { text, finished: true };
          const c = (JSON.parse(ev.slice(6)) as { choices: { text: string }[] }).choices[0];
          if (c?.text) { text += c.text; chunks++; }
          if (quit !== undefined && chunks >= quit) { ac.abort(); return { text, finished: false }; }
        }
      }
    } catch (e) {
      if (!ac.signal.aborted) throw e;
    }
    return { text, finished: false };
  };
  const alone: string[] = [];
  for (let i = 0; i < N; i++) {
    const r = await read(i);
    assert.ok(r.finished);
    alone.push(r.text);
  }
  const quitters = new Set([1, 4, 6]);
  const abortedBefore = engine.stats().aborted;
  const results = await Promise.all(Array.from({ length: N }, (_, i) => read(i, quitters.has(i) ? 2 + i % 3 : undefined)));
  results.forEach((r, i) => {
    if (quitters.has(i)) assert.ok(alone[i]!.startsWith(r.text), `stream ${i}: a prefix of its lone run`);
    else assert.equal(r.text, alone[i], `stream ${i}`);
  });
  assert.ok(await until(() => engine.stats().active === 0), JSON.stringify(engine.stats()));
  const st = engine.stats();
  assert.deepEqual([st.active, st.queued, st.generating, st.liveStates, st.batch.waiting], [0, 0, 0, 0, 0]);
  assert.ok(st.aborted - abortedBefore <= quitters.size);
  const health = (await (await fetch(`${url}/health`)).json()) as { active: number; liveStates: number };
  assert.deepEqual([health.active, health.liveStates], [0, 0]);
});

test('a forward pass that throws fails the requests of that step (500), frees their states, and the server serves on', async () => {
  const { app, url } = await start({ maxConcurrency: 4, stateCacheMb: 0 });
  const model = tiny.model;
  let failed = false;
  const real = model.forwardBatch.bind(model);
  // The first pass that holds both requests' decode steps fails.
  model.forwardBatch = async (items) => {
    if (!failed && items.length === 2 && items.every((it) => it.tokens.length === 1)) {
      failed = true;
      throw new Error('simulated backend failure');
    }
    return real(items);
  };
  try {
    const rs = await Promise.all([0, 1].map((i) => post(url, '/v1/completions', { prompt: prompt(500 + i), seed: i, max_tokens: 8 })));
    assert.deepEqual(rs.map((r) => r.status), [500, 500]);
    for (const r of rs) assert.equal(((await r.json()) as { error: { type: string } }).error.type, 'server_error');
  } finally {
    delete (model as { forwardBatch?: unknown }).forwardBatch; // back to the prototype's
  }
  assert.ok(await until(() => app.rwkv.engine.stats().active === 0));
  const st = app.rwkv.engine.stats();
  assert.equal(st.liveStates, 0);
  assert.equal(st.batch.failedSteps, 1);
  const ok = await complete(url, { prompt: prompt(9), seed: 1, max_tokens: 4 });
  assert.equal(ok.choices.length, 1);
});
