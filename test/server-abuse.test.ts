// The server under abuse, on loopback only, every loop bounded and every wait with a short deadline: slowloris,
// abandoned streams, huge and malformed bodies, wrong types in every field, over-long prompts, unknown routes and
// methods, connection caps, Connection: close on streams; /health stays fast during a long prefill, a client that
// disconnects mid-prefill stops the work within one chunk, and afterwards a normal completion works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { loadModel, type LoadedModel } from '../src/runtime/load.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { createServer, type RwkvServer, type ServerOptions } from '../src/server/index.js';
import { PrefillPacer } from '../src/server/pacing.js';
import { raw } from './helpers/raw-http.js';

// wasm: the pacing checks need a backend whose one-token call is well under 100 ms (js: ~60 ms, the head).
const BACKEND = process.env.RWKV7_ABUSE_BACKEND === 'js' ? 'js' : 'wasm';
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

interface Started { app: RwkvServer; url: string; port: number; logs: string[] }

async function start(opts: ServerOptions = {}): Promise<Started> {
  const logs: string[] = [];
  const app = createServer(loaded, { tokenizer, log: (l) => logs.push(l), ...opts });
  servers.push(app);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  assert.ok(addr && typeof addr === 'object');
  return { app, url: `http://127.0.0.1:${addr.port}`, port: addr.port, logs };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 20 ms until it holds or `ms` pass; returns whether it held. */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(20);
  }
  return cond();
}

/** Nothing that points inside this machine: stack frames, this checkout's path, module folders, source files. */
function assertNoLeak(text: string): void {
  assert.ok(!/\n\s+at\s/.test(text), `stack trace in ${JSON.stringify(text.slice(0, 200))}`);
  assert.ok(!text.includes(process.cwd()), `local path in ${JSON.stringify(text.slice(0, 200))}`);
  assert.ok(!/node_modules|\.ts:\d|\.js:\d|file:\/\//.test(text), `source location in ${JSON.stringify(text.slice(0, 200))}`);
}

/** Checks an OpenAI error body: exactly {error: {message, type, param, code}}. */
function assertApiError(text: string, status: number, code?: string): { message: string; param: string | null; code: string | null } {
  assertNoLeak(text);
  const j = JSON.parse(text) as { error: { message: string; type: string; param: string | null; code: string | null } };
  assert.deepEqual(Object.keys(j), ['error'], text);
  assert.deepEqual(Object.keys(j.error).sort(), ['code', 'message', 'param', 'type'], text);
  assert.equal(typeof j.error.message, 'string');
  assert.equal(typeof j.error.type, 'string');
  assert.equal(j.error.type, status >= 500 ? 'server_error' : status === 429 ? 'rate_limit_error' : 'invalid_request_error');
  if (code) assert.equal(j.error.code, code, text);
  return j.error;
}

function post(url: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(url + path, {
    method: 'POST', headers: { 'content-type': 'application/json' }, signal,
    body: (typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body)) as RequestInit['body'],
  });
}

async function healthMs(url: string): Promise<number> {
  const t = performance.now();
  const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(5000) });
  await res.json();
  assert.equal(res.status, 200);
  return performance.now() - t;
}

/** A prompt of `n` token ids (no tokenization time), varied so the state cache does not shortcut it. */
const longPrompt = (n: number, salt: number) => Array.from({ length: n }, (_, i) => 1 + ((i * 7919 + salt * 104729) % 60000));

test('pacing: the prefill chunk is the largest that fits the slice budget under the measured cost', () => {
  // A simulated backend: c1 ms for one token, b ms for each further one; the first call runs cold.
  const settle = (maxChunk: number, c1: number, b: number) => {
    const p = new PrefillPacer(maxChunk, 50);
    const cost = (t: number) => c1 + b * (t - 1);
    p.observe(1, 10 * c1);
    const sizes: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t = p.next();
      sizes.push(t);
      p.observe(t, cost(t));
      if (i % 3 === 0) p.observe(1, c1); // a decode step of another request
    }
    return { chunk: p.next(), budget: p.budgetMs, sizes, cost };
  };
  const wasm = settle(64, 5, 0.5); // bundled model on wasm: 64 tokens take 36.5 ms
  assert.equal(wasm.chunk, 64);
  assert.deepEqual(wasm.sizes.slice(0, 5), [1, 8, 16, 32, 64]); // measure c1, probe b, then grow
  const js = settle(32, 60, 7.5); // js: one token is over 50 ms; budget 1.5 × 60 = 90 ms
  assert.equal(js.budget, 90);
  assert.equal(js.chunk, 5); // 60 + 7.5·4 = 90
  const mid = settle(64, 20, 2); // 20 + 2·15 = 50
  assert.equal(mid.chunk, 16);
  for (const r of [wasm, js, mid]) assert.ok(r.sizes.slice(2).every((t) => r.cost(t) <= r.budget), JSON.stringify(r.sizes));
  // Calls slower than the model predicts, again and again, shrink the chunk (slowly: one slow call is the host's
  // doing, not the model's); it never drops below 2.
  const p = new PrefillPacer(64, 50);
  p.observe(1, 99);
  p.observe(1, 5);
  p.observe(8, 8.5);
  assert.equal(p.next(), 16);
  for (let i = 0; i < 10; i++) p.observe(16, 400);
  assert.ok(p.next() >= 2 && p.next() <= 3, String(p.next()));
});

test('/health answers fast during a long prefill; a client gone mid-prefill stops it within one chunk', async (t) => {
  // Timeouts shorter than the prefill: a request fully received is not cut by them while the model works.
  const { app, url, port, logs } = await start({ requestTimeout: 1500, headersTimeout: 1000, connectionTimeout: 1000 });
  const engine = app.rwkv.engine;
  // Warm the pacer (its first calls measure the model).
  assert.equal((await post(url, '/v1/completions', { prompt: longPrompt(100, 1), max_tokens: 2 })).status, 200);

  const n = 16_000;
  for (const stream of [false, true]) {
    const body = JSON.stringify({ prompt: longPrompt(n, stream ? 3 : 2), max_tokens: 5, stream });
    const before = engine.stats();
    const lat: number[] = [];
    let snap = -1;
    let activeAtDisconnect = -1;
    await raw(port, `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, 20_000, (s) => {
      void (async () => {
        if (!(await until(() => engine.stats().prefillChunks > before.prefillChunks + 2, 5000))) return;
        const end = Date.now() + (stream ? 300 : 2000);
        while (Date.now() < end) {
          lat.push(await healthMs(url));
          await sleep(20);
        }
        activeAtDisconnect = engine.stats().active;
        snap = engine.stats().prefillTokens; // read synchronously, just before the disconnect
        s.destroy();
      })();
    });
    assert.ok(snap >= 0, 'the prefill started');
    assert.equal(activeAtDisconnect, 1, 'still prefilling when the client left (not cut by a timeout)');
    assert.ok(await until(() => engine.stats().active === 0, 3000), 'the aborted request left its slot');
    const after = engine.stats();
    assert.equal(after.aborted, before.aborted + 1);
    assert.ok(after.prefillTokens - snap <= engine.pacer.maxChunk, `ran ${after.prefillTokens - snap} tokens after the disconnect`);
    assert.ok(after.prefillTokens - before.prefillTokens < n, 'the prompt was not prefilled to the end');
    assert.ok(logs.some((l) => / 499 .*client gone/.test(l)), logs.join('\n'));
    if (!stream) {
      lat.sort((a, b) => a - b);
      const q = (f: number) => lat[Math.min(lat.length - 1, Math.floor(lat.length * f))]!;
      const line = `/health during a ${n}-token prefill: ${lat.length} answers, p50 ${q(0.5).toFixed(1)} ms, p90 ${q(0.9).toFixed(1)} ms, ` +
        `max ${lat.at(-1)!.toFixed(1)} ms; pacer ${JSON.stringify(after.prefill)}; ${after.prefillTokens - before.prefillTokens} tokens prefilled`;
      t.diagnostic(line);
      assert.ok(lat.length >= 15, line);
      // No freeze (before the pacing, /health waited out the whole prefill: 15 s). The ≤ 100 ms figure is measured by
      // `npm run soak` (bench/soak.ts); a test on a shared 2-core machine asserts only what load cannot break.
      assert.ok(lat.at(-1)! < 1000, line);
    }
  }

  // Afterwards: a normal chat completion.
  const ok = await post(url, '/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 });
  assert.equal(ok.status, 200);
  assert.equal(((await ok.json()) as { object: string }).object, 'chat.completion');
});

test('slowloris: 50 connections sending headers byte by byte are closed at the headers timeout; /health stays up', async () => {
  const { url, port, app } = await start({ headersTimeout: 800, requestTimeout: 1500 });
  const head = 'POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nx-padding: ' + 'a'.repeat(200);
  const t0 = Date.now();
  const clients = Array.from({ length: 50 }, () => raw(port, '', 4000, (s) => {
    let i = 0;
    const iv = setInterval(() => {
      if (s.destroyed || i >= head.length) { clearInterval(iv); return; }
      s.write(head[i++]!);
    }, 50);
    s.on('close', () => clearInterval(iv));
  }));
  const idle = raw(port, '', 4000); // connects and sends nothing at all
  await sleep(300);
  const h = await healthMs(url);
  assert.ok(h < 1000, `/health took ${h.toFixed(0)} ms`);
  const results = await Promise.all([...clients, idle]);
  for (const r of results) {
    assert.ok(r.closed, 'closed by the server');
    assert.ok(r.ms < 2500, `closed after ${r.ms.toFixed(0)} ms`);
    assert.equal(r.status, 408);
    assertApiError(r.body, 408, 'request_timeout');
  }
  assert.ok(Date.now() - t0 < 4000);
  assert.equal(app.rwkv.engine.stats().active, 0);
  assert.ok((await healthMs(url)) < 1000);
});

test('200 streams opened and abandoned: every slot and queue entry is freed; then a normal completion', async () => {
  const { app, url } = await start({ maxConcurrency: 4, maxQueue: 64, maxConnectionsPerIp: 0 });
  const statuses = new Map<number | string, number>();
  await Promise.all(Array.from({ length: 200 }, async (_, i) => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50 + (i % 10) * 40);
    try {
      const res = await post(url, i % 2 ? '/v1/chat/completions' : '/v1/completions', i % 2
        ? { messages: [{ role: 'user', content: `story ${i}` }], max_tokens: 500, stream: true }
        : { prompt: `Once upon a time ${i}`, max_tokens: 500, stream: true }, ac.signal);
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status !== 200) assertApiError(await res.text(), res.status);
      else await res.text(); // read until the abort cuts it
    } catch (e) {
      const name = (e as Error).name;
      assert.ok(name === 'AbortError', String(e));
      statuses.set(name, (statuses.get(name) ?? 0) + 1);
    }
  }));
  const engine = app.rwkv.engine;
  assert.ok(await until(() => engine.stats().active === 0 && engine.stats().queued === 0, 10_000), JSON.stringify(engine.stats()));
  assert.ok([...statuses.keys()].every((k) => k === 200 || k === 429 || k === 'AbortError'), JSON.stringify([...statuses]));
  const ok = await post(url, '/v1/completions', { prompt: 'The end', max_tokens: 2 });
  assert.equal(ok.status, 200);
});

test('bodies: 50 MB → 413 and the connection closes; deep JSON, invalid UTF-8, bad JSON → 400', async () => {
  const { url, port } = await start();
  // 50 MB declared and sent (as far as the server reads): answered at once, connection closed.
  const big = 50 * 1024 * 1024;
  const piece = Buffer.alloc(64 * 1024, 0x61);
  const r = await raw(port, `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${big}\r\n\r\n`, 5000, (s) => {
    let sent = 0;
    const pump = () => {
      while (!s.destroyed && sent < big) {
        sent += piece.length;
        if (!s.write(piece)) { s.once('drain', pump); return; }
      }
    };
    pump();
  });
  assert.equal(r.status, 413);
  assert.ok(r.ms < 3000 && r.closed);
  assertApiError(r.body, 413, 'request_too_large');
  // The same through fetch, and chunked (no content-length) over the limit.
  const f = await post(url, '/v1/completions', Buffer.alloc(big, 0x20)).catch((e: Error) => e);
  if (f instanceof Response) assertApiError(await f.text(), f.status, 'request_too_large');
  const chunked = await raw(port, `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n`, 5000, (s) => {
    const c = Buffer.concat([Buffer.from(`${(piece.length).toString(16)}\r\n`), piece, Buffer.from('\r\n')]);
    for (let i = 0; i < 40 && !s.destroyed; i++) s.write(c); // 2.5 MB
  });
  assert.equal(chunked.status, 413);
  assertApiError(chunked.body, 413);

  const cases: [string, string | Buffer, string | null][] = [
    ['100k-deep array prompt', `{"prompt":${'['.repeat(100_000)}${']'.repeat(100_000)}}`, 'invalid_type'],
    ['100k-deep object', `{"messages":[${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}]}`, null],
    ['100k-deep body', `${'['.repeat(100_000)}${']'.repeat(100_000)}`, 'invalid_body'],
    ['deep __proto__', `{"x":${'{"__proto__":'.repeat(1000)}1${'}'.repeat(1000)}}`, null],
    ['invalid UTF-8', Buffer.concat([Buffer.from('{"prompt":"a'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]), 'invalid_encoding'],
    ['overlong UTF-8', Buffer.concat([Buffer.from('{"prompt":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]), 'invalid_encoding'],
    ['lone surrogate escape', '{"prompt":"\\ud800"}', null],
    ['truncated JSON', '{"prompt": "abc', null],
    ['empty body', '', null],
    ['not JSON', 'prompt=hello', null],
  ];
  for (const [name, body, code] of cases) {
    const res = await post(url, name.includes('object') ? '/v1/chat/completions' : '/v1/completions', body);
    const text = await res.text();
    if (name === 'lone surrogate escape') { assert.ok(res.status === 200 || res.status === 400, name); continue; }
    assert.equal(res.status, 400, `${name}: ${text.slice(0, 200)}`);
    assertApiError(text, 400, code ?? undefined);
  }
  const wrongType = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' });
  assertApiError(await wrongType.text(), 415);
});

test('wrong types in every field → 400 naming the field (never a 500); 200k-token prompts → 400', async () => {
  const { url } = await start();
  const bad: unknown[] = [[], {}, 'x', 1.5, -1, true, 1e308, null, [[[]]], { a: { b: 1 } }];
  const fields: [string, string][] = [
    'model', 'prompt', 'max_tokens', 'temperature', 'top_p', 'top_k', 'presence_penalty', 'frequency_penalty', 'seed', 'stop', 'stream',
    'stream_options', 'n', 'logprobs', 'top_logprobs', 'logit_bias', 'echo', 'best_of', 'suffix', 'user',
  ].map((f) => ['/v1/completions', f] as [string, string]).concat([
    'messages', 'max_completion_tokens', 'tools', 'functions', 'response_format', 'stream_options',
  ].map((f) => ['/v1/chat/completions', f] as [string, string]));
  const baseFor = (path: string) => path === '/v1/completions' ? { prompt: 'Hi', max_tokens: 1 } : { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1 };
  let refused = 0;
  const check = async (path: string, body: unknown, what: string) => {
    const res = await post(url, path, body);
    const text = await res.text();
    assert.ok(res.status === 200 || res.status === 400, `${what}: ${res.status} ${text.slice(0, 200)}`);
    if (res.status === 400) {
      refused++;
      const e = assertApiError(text, 400);
      assert.ok(e.param === null || typeof e.param === 'string');
    } else {
      assertNoLeak(text);
    }
  };
  for (const [path, field] of fields) {
    for (const v of bad) await check(path, { ...baseFor(path), [field]: v }, `${path} ${field}=${JSON.stringify(v)}`);
  }
  // Inside messages and stream_options.
  const msgs: unknown[] = [
    [null], [1], ['hi'], [[]], [{}], [{ role: 1, content: 'x' }], [{ role: 'robot', content: 'x' }], [{ role: 'user' }],
    [{ role: 'user', content: 5 }], [{ role: 'user', content: [1] }], [{ role: 'user', content: [{ type: 'image_url', image_url: 'x' }] }],
    [{ role: 'user', content: [{ type: 'text', text: 7 }] }], [{ role: 'assistant', content: 'x', tool_calls: [{}] }],
    [{ role: 'user', content: { text: 'x' } }], Array.from({ length: 5000 }, () => ({ role: 'user', content: 'x' })),
  ];
  for (const m of msgs) await check('/v1/chat/completions', { messages: m, max_tokens: 1 }, `messages=${JSON.stringify(m).slice(0, 80)}`);
  for (const v of bad) await check('/v1/chat/completions', { ...baseFor('/v1/chat/completions'), stream_options: { include_usage: v } }, `include_usage=${JSON.stringify(v)}`);
  assert.ok(refused > 150, `${refused} refused`);

  // 200k tokens, as ids (400 KB) and as text (800 KB); both under the body limit, both too long.
  for (const prompt of [Array.from({ length: 200_000 }, () => 1), 'x '.repeat(400_000)]) {
    const t = performance.now();
    const res = await post(url, '/v1/completions', { prompt, max_tokens: 1 });
    assertApiError(await res.text(), 400, 'context_length_exceeded');
    assert.ok(performance.now() - t < 3000);
  }
  const outOfVocab = await post(url, '/v1/completions', { prompt: [1, 2, 1e9], max_tokens: 1 });
  assertApiError(await outOfVocab.text(), 400, 'invalid_value');
});

test('routes, methods and malformed HTTP: 404, 405, 414, 431, 400, all in the OpenAI shape', async () => {
  const { url, port } = await start();
  const req = async (method: string, path: string, status: number, code?: string) => {
    const res = await fetch(url + path, { method });
    assert.equal(res.status, status, `${method} ${path}`);
    if (method !== 'HEAD') assertApiError(await res.text(), status, code);
    return res;
  };
  await req('GET', '/nope', 404, 'unknown_url');
  await req('GET', '/v1/completions/extra?x=1', 404, 'unknown_url');
  await req('PUT', '/nope', 404);
  assert.equal((await req('GET', '/v1/completions', 405, 'method_not_allowed')).headers.get('allow'), 'POST');
  await req('DELETE', '/v1/chat/completions', 405, 'method_not_allowed');
  assert.match((await req('POST', '/health', 405)).headers.get('allow') ?? '', /GET/);
  await req('PATCH', '/v1/models', 405);
  await req('GET', `/v1/models/${'m'.repeat(300)}`, 414, 'uri_too_long');
  await req('GET', `/v1/models/${'m'.repeat(90)}`, 404, 'model_not_found');
  await req('GET', `/v1/${'a'.repeat(9000)}`, 414, 'uri_too_long');
  await req('GET', '/v1/models/%E0%A4%A', 400, 'invalid_url');
  await req('GET', '/v1/models/%ff', 400, 'invalid_url');

  const http = (lines: string | Buffer) => raw(port, lines, 3000);
  const malformed: [string, string, number][] = [
    ['unknown method', 'FOO / HTTP/1.1\r\nhost: x\r\n\r\n', 400],
    ['not HTTP', 'hello there\r\n\r\n', 400],
    ['bad version', 'GET / HTTP/9.9\r\nhost: x\r\n\r\n', 400],
    ['bad header', 'GET /health HTTP/1.1\r\nho st: x\r\n\r\n', 400],
    ['header overflow', `GET /health HTTP/1.1\r\nhost: x\r\nx-big: ${'b'.repeat(20_000)}\r\n\r\n`, 431],
    ['URL overflow', `GET /${'u'.repeat(20_000)} HTTP/1.1\r\nhost: x\r\n\r\n`, 431],
    ['two content lengths', 'POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}', 400],
    ['CL and TE', 'POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n{}', 400],
    ['bad chunk', 'POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n', 400],
    ['raw 0xff in path', 'GET /\xff HTTP/1.1\r\nhost: x\r\n\r\n', 400],
    ['no host', 'GET /nothing HTTP/1.1\r\n\r\n', 404],
  ];
  for (const [name, data, status] of malformed) {
    const r = await http(Buffer.from(data, 'latin1'));
    assert.equal(r.status, status, `${name}: ${r.raw.slice(0, 200)}`);
    assertApiError(r.body, status);
  }
});

test('the raw client de-chunks by bytes: multi-byte characters in a chunk keep the later chunks whole', async () => {
  // (it used to count characters, which cut the body short whenever a sampled token was not ASCII, e.g. "’s")
  const pieces = ['data: a\n\n', 'data: ’s — ☃ 🦆\n\n', 'data: [DONE]\n\n'];
  const srv = createHttpServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', connection: 'close' });
    for (const p of pieces) res.write(p);
    res.end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    const addr = srv.address();
    assert.ok(addr && typeof addr === 'object');
    const got = await raw(addr.port, 'GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n', 3000);
    assert.equal(got.headers['transfer-encoding'], 'chunked');
    assert.equal(got.body, pieces.join(''));
  } finally {
    srv.close();
  }
});

test('Connection: close is honoured on streams (closed after [DONE]); keep-alive otherwise; connection cap', async () => {
  const { url, port } = await start({ maxConnectionsPerIp: 4 });
  const body = JSON.stringify({ prompt: 'Once upon a time', max_tokens: 4, stream: true });
  const reqText = (conn: string) =>
    `POST /v1/completions HTTP/1.1\r\nhost: x\r\nconnection: ${conn}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
  const closed = await raw(port, reqText('close'), 5000);
  assert.equal(closed.status, 200);
  assert.equal(closed.headers.connection, 'close');
  assert.ok(closed.closed, 'the server closed the socket after the stream');
  assert.ok(closed.body.endsWith('data: [DONE]\n\n'), closed.body.slice(-100));
  const kept = await raw(port, reqText('keep-alive'), 1500);
  assert.equal(kept.status, 200);
  assert.equal(kept.headers.connection, 'keep-alive');
  assert.ok(kept.body.endsWith('data: [DONE]\n\n'));
  assert.ok(!kept.closed, 'a keep-alive stream leaves the socket open');

  // Four idle sockets fill the per-address cap; the fifth gets a 503 and is closed.
  const idle = Array.from({ length: 4 }, () => connect(port, '127.0.0.1'));
  await Promise.all(idle.map((s) => new Promise((r) => s.once('connect', r))));
  await sleep(50);
  const over = await raw(port, 'GET /health HTTP/1.1\r\nhost: x\r\n\r\n', 3000);
  assert.equal(over.status, 503);
  assert.ok(over.closed);
  assertApiError(over.body, 503, 'too_many_connections');
  for (const s of idle) s.destroy();
  await sleep(100);
  assert.ok((await healthMs(url)) < 1000);
});
