/**
 * `npm run soak`: the server under abuse, end to end, on loopback only. Starts a server (a child process, so
 * that its RSS and event loop are its own) on 127.0.0.1 with the default limits, then:
 *
 *   1. a 16k-token prompt is prefilled while /health is probed every 50 ms (latency p50/p99; target p99 ≤ 100 ms),
 *      and 50 slowloris clients send headers byte by byte at the same time;
 *   2. abusive clients, one kind after another: 200 streams opened and abandoned, 50 MB bodies, 100k-deep JSON,
 *      invalid UTF-8, wrong types in every field, 200k-token prompts, unknown routes and methods, malformed HTTP,
 *      a connection flood past the per-address cap;
 *   3. a normal chat completion; RSS after (garbage collected) against before (within 10%); the baseline is taken
 *      after a warm-up round of the same abusive clients, so what is compared is the growth of a second round
 *      (a leak), not the first filling of allocator pools and of the state cache (bounded by --state-cache-mb).
 *
 * Every response is checked: the expected status, OpenAI's error shape, no stack trace or local path. Bounded in
 * count and time (it stops by itself, at the latest after 5 minutes); exit code 0 when every check passed.
 *
 *   npm run soak [-- --backend wasm|js|auto] [--prompt-tokens 16000]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { raw, type RawResult } from '../test/helpers/raw-http.js';

const HOST = '127.0.0.1';
const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};

// ---------------------------------------------------------------- server side (child process)

async function serve(): Promise<void> {
  const { loadModel } = await import('../src/runtime/load.js');
  const { createServer } = await import('../src/server/index.js');
  const loaded = await loadModel(undefined, { backend: flag('--backend', 'auto') as 'auto' });
  const app = createServer(loaded, {});
  await app.listen({ host: HOST, port: 0 });
  const addr = app.server.address();
  const gc = (globalThis as { gc?: () => void }).gc;
  const send = (m: unknown) => process.send?.(m);
  const eld = monitorEventLoopDelay({ resolution: 5 });
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'rss') {
      for (let i = 0; i < 3; i++) gc?.();
      const mu = process.memoryUsage();
      send({ rss: { rss: mu.rss, heap: mu.heapUsed, external: mu.external, cache: app.rwkv.engine.cache.stats().bytes } });
    } else if (m.cmd === 'eld-start') {
      eld.reset();
      eld.enable();
      send({ eldStarted: true });
    } else if (m.cmd === 'eld') {
      eld.disable();
      send({ eld: { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 } });
    } else if (m.cmd === 'stats') {
      send({ stats: app.rwkv.engine.stats() });
    } else if (m.cmd === 'exit') {
      void app.rwkv.shutdown(1000).finally(() => process.exit(0));
    }
  });
  send({ port: typeof addr === 'object' && addr ? addr.port : 0, backend: loaded.model.backend.name, model: app.rwkv.modelName });
}

// ---------------------------------------------------------------- client side

interface Mem { rss: number; heap: number; external: number; cache: number }

type Raw = RawResult;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const request = (method: string, path: string, body?: string | Buffer, extra = '') => {
  const len = body === undefined ? '' : `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`;
  const head = `${method} ${path} HTTP/1.1\r\nhost: ${HOST}\r\nconnection: close\r\n${len}${extra}\r\n`;
  return body === undefined ? head : Buffer.concat([Buffer.from(head, 'latin1'), Buffer.isBuffer(body) ? body : Buffer.from(body)]);
};

/** Results per kind of client, and everything every response revealed. */
class Report {
  readonly rows: { kind: string; sent: number; handled: number; outcomes: Map<string, number> }[] = [];
  responses = 0;
  leaks: string[] = [];
  failures: string[] = [];

  row(kind: string) {
    const r = { kind, sent: 0, handled: 0, outcomes: new Map<string, number>() };
    this.rows.push(r);
    return {
      /** `ok`: the reply was one of those expected for this kind; `label` says which. */
      add: (label: string, ok: boolean, reply?: Raw | { status: number; body: string }) => {
        r.sent++;
        if (ok) r.handled++;
        else this.failures.push(`${kind}: ${label}`);
        r.outcomes.set(label, (r.outcomes.get(label) ?? 0) + 1);
        if (reply) this.check(kind, reply.body);
      },
    };
  }

  /** Counts a response body and looks for stack frames or paths of this machine in it. */
  check(kind: string, body: string): void {
    this.responses++;
    if (/\n\s+at\s|node_modules|\.ts:\d|\.js:\d|file:\/\//.test(body) || body.includes(process.cwd())) {
      this.leaks.push(`${kind}: ${body.slice(0, 160)}`);
    }
  }
}

/** Is `r` an OpenAI error with this status (and code, when given)? */
function isApiError(r: { status: number; body: string }, status: number, code?: string): boolean {
  if (r.status !== status) return false;
  try {
    const j = JSON.parse(r.body) as { error?: Record<string, unknown> };
    const e = j.error;
    return !!e && Object.keys(j).length === 1 && typeof e.message === 'string' && typeof e.type === 'string' &&
      'param' in e && 'code' in e && (code === undefined || e.code === code);
  } catch {
    return false;
  }
}

async function health(port: number): Promise<number> {
  const t = performance.now();
  const res = await fetch(`http://${HOST}:${port}/health`, { signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`/health answered ${res.status}`);
  return performance.now() - t;
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? NaN;
const tokens = (n: number, salt: number) => Array.from({ length: n }, (_, i) => 1 + ((i * 7919 + salt * 104729) % 60000));

/** Phase 1: a long prefill with /health probes, and slowloris clients at the same time. */
async function prefillPhase(port: number, report: Report, n: number, progress: () => Promise<{ prefillTokens: number; prefill: unknown }>) {
  const slow = report.row('slowloris: 50 connections, headers byte by byte');
  const head = `POST /v1/completions HTTP/1.1\r\nhost: ${HOST}\r\ncontent-type: application/json\r\nx-pad: ${'p'.repeat(300)}`;
  const loris = Array.from({ length: 50 }, () => raw(port, '', 20_000, (s) => {
    let i = 0;
    const iv = setInterval(() => (s.destroyed || i >= head.length ? clearInterval(iv) : s.write(head[i++]!)), 100);
    s.on('close', () => clearInterval(iv));
  }).then((r) => {
    const ok = r.closed && isApiError(r, 408, 'request_timeout') && r.ms < 13_000;
    slow.add(ok ? `408 and closed after ${(r.ms / 1000).toFixed(0)} s` : `status ${r.status}, closed ${r.closed}, ${r.ms.toFixed(0)} ms`, ok, r);
  }));

  const body = JSON.stringify({ prompt: tokens(n, 1), max_tokens: 1 });
  const t0 = performance.now();
  let finished = false;
  const long = raw(port, request('POST', '/v1/completions', body), 280_000).then((r) => { finished = true; return r; });
  const lat: number[] = [];
  const slowest: [number, number][] = [];
  let shown = performance.now();
  while (!finished) {
    const ms = await health(port);
    lat.push(ms);
    slowest.push([ms, (performance.now() - t0) / 1000]);
    await sleep(50);
    if (performance.now() - shown > 10_000) {
      shown = performance.now();
      const st = await progress();
      process.stderr.write(`soak: prefilling… ${st.prefillTokens} tokens so far, pacer ${JSON.stringify(st.prefill)}\n`);
    }
  }
  const r = await long;
  const prefillS = (performance.now() - t0) / 1000;
  report.check('long prefill', r.body);
  await Promise.all(loris);
  lat.sort((a, b) => a - b);
  slowest.sort((a, b) => b[0] - a[0]);
  return { lat, prefillS, status: r.status, slowest: slowest.slice(0, 3) };
}

/** Phase 2: one kind of abusive client after another. */
async function abusePhase(port: number, report: Report, ipCap: number) {
  // 200 streams opened and abandoned: each reads a little (or nothing) and disconnects.
  const streams = report.row('200 streams opened and abandoned');
  await Promise.all(Array.from({ length: 200 }, (_, i) => {
    const body = JSON.stringify({ prompt: `Once upon a time, story ${i}`, max_tokens: 400, stream: true });
    return raw(port, request('POST', '/v1/completions', body), 100 + (i % 10) * 60).then((r) => {
      const label = r.status === 0 ? 'left before any reply' : r.status === 200 ? '200 stream, left mid-stream'
        : isApiError(r, 429) ? '429 queue full' : isApiError(r, 503, 'too_many_connections') ? '503 connection cap' : `unexpected ${r.status}`;
      streams.add(label, !label.startsWith('unexpected'), r.status === 200 ? undefined : r);
    });
  }));

  const big = report.row('50 MB bodies');
  for (const chunked of [false, true]) {
    const size = 50 * 1024 * 1024;
    const piece = Buffer.alloc(64 * 1024, 0x61);
    const head = `POST /v1/completions HTTP/1.1\r\nhost: ${HOST}\r\ncontent-type: application/json\r\n` +
      (chunked ? 'transfer-encoding: chunked\r\n\r\n' : `content-length: ${size}\r\n\r\n`);
    const frame = chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece;
    const r = await raw(port, head, 10_000, (s) => {
      let sent = 0;
      const pump = () => {
        while (!s.destroyed && sent < size) {
          sent += piece.length;
          if (!s.write(frame)) { s.once('drain', pump); return; }
        }
      };
      pump();
    });
    const ok = isApiError(r, 413, 'request_too_large') && r.closed;
    big.add(ok ? `413 in ${r.ms.toFixed(0)} ms, closed` : `status ${r.status}`, ok, r);
  }

  const bad = report.row('malformed bodies (deep JSON, bad UTF-8, bad JSON)');
  const bodies: [string, string | Buffer][] = [
    ['100k-deep array', `{"prompt":${'['.repeat(100_000)}${']'.repeat(100_000)}}`],
    ['100k-deep object', `{"prompt":${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}}`],
    ['invalid UTF-8', Buffer.concat([Buffer.from('{"prompt":"'), Buffer.from([0xff, 0xfe, 0xc0, 0xaf]), Buffer.from('"}')])],
    ['truncated JSON', '{"prompt": "abc'],
    ['prototype poisoning', '{"prompt":"a","__proto__":{"x":1}}'],
    ['empty', ''],
  ];
  for (const [name, b] of bodies) {
    const r = await raw(port, request('POST', '/v1/completions', b), 5000);
    bad.add(isApiError(r, 400) ? '400' : `${name}: ${r.status}`, isApiError(r, 400), r);
  }

  const types = report.row('wrong types in every field');
  const values: unknown[] = [[], {}, 'x', 1.5, -1, true, 1e308, [[[]]], { a: {} }];
  const fields = ['model', 'prompt', 'max_tokens', 'temperature', 'top_p', 'top_k', 'presence_penalty', 'frequency_penalty', 'seed',
    'stop', 'stream', 'stream_options', 'n', 'logprobs', 'top_logprobs', 'logit_bias', 'echo', 'best_of', 'suffix', 'user', 'messages'];
  for (const field of fields) {
    for (const v of values) {
      const path = field === 'messages' ? '/v1/chat/completions' : '/v1/completions';
      const base = field === 'messages' ? {} : { prompt: 'Hi', max_tokens: 1 };
      const r = await raw(port, request('POST', path, JSON.stringify({ ...base, [field]: v })), 10_000);
      const ok = isApiError(r, 400) || r.status === 200;
      types.add(ok ? (r.status === 200 ? '200 (value accepted)' : '400') : `${field}: ${r.status}`, ok, r);
    }
  }

  const long = report.row('200k-token prompts');
  for (const prompt of [Array.from({ length: 200_000 }, () => 1), 'x '.repeat(400_000)]) {
    const r = await raw(port, request('POST', '/v1/completions', JSON.stringify({ prompt, max_tokens: 1 })), 10_000);
    const ok = isApiError(r, 400, 'context_length_exceeded');
    long.add(ok ? `400 in ${r.ms.toFixed(0)} ms` : `status ${r.status}`, ok, r);
  }

  const routes = report.row('unknown routes, methods, malformed HTTP');
  const http: [string | Buffer, number][] = [
    [request('GET', '/nope'), 404], [request('DELETE', '/v1/completions'), 405], [request('GET', '/v1/chat/completions'), 405],
    [request('POST', '/health', '{}'), 405], [request('GET', `/v1/models/${'m'.repeat(300)}`), 414],
    [request('GET', `/v1/${'u'.repeat(9000)}`), 414], [request('GET', '/v1/models/%E0%A4%A'), 400],
    ['FOO / HTTP/1.1\r\nhost: x\r\n\r\n', 400], ['hello\r\n\r\n', 400], [`GET / HTTP/1.1\r\nx: ${'h'.repeat(20_000)}\r\n\r\n`, 431],
    ['POST /v1/completions HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n{', 400],
    [Buffer.from('GET /\xff\xfe HTTP/1.1\r\n\r\n', 'latin1'), 400],
  ];
  for (const [data, status] of http) {
    const r = await raw(port, data, 5000);
    routes.add(isApiError(r, status) ? String(status) : `expected ${status}, got ${r.status}`, isApiError(r, status), r);
  }

  // More idle connections than the per-address cap: the excess gets 503 and is closed.
  const flood = report.row(`connection flood (${ipCap + 16} idle sockets, cap ${ipCap})`);
  const sockets = Array.from({ length: ipCap + 16 }, () => raw(port, '', 1500));
  for (const r of await Promise.all(sockets)) {
    if (r.status === 0 && !r.closed) flood.add('accepted (idle)', true);
    else flood.add(isApiError(r, 503, 'too_many_connections') ? '503 connection cap, closed' : `status ${r.status}`, isApiError(r, 503) && r.closed, r);
  }
}

async function main(): Promise<void> {
  const deadline = setTimeout(() => { process.stderr.write('soak: time limit (5 min) reached\n'); child?.kill('SIGKILL'); process.exit(2); }, 300_000);
  const n = Number(flag('--prompt-tokens', '16000'));
  const self = fileURLToPath(import.meta.url);
  const child: ChildProcess = fork(self, ['--server', ...args], { execArgv: [...process.execArgv, '--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const ask = <T>(cmd: string, key: string) => new Promise<T>((resolve) => {
    const on = (m: Record<string, unknown>) => { if (key in m) { child.off('message', on); resolve(m[key] as T); } };
    child.on('message', on);
    if (cmd) child.send({ cmd });
  });
  const info = await new Promise<{ port: number; backend: string; model: string }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as { port: number; backend: string; model: string }));
    child.once('exit', (c) => reject(new Error(`the server exited (${c})`)));
  });
  const { port } = info;
  const report = new Report();
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out(`rwkv7 soak: ${info.model} on ${info.backend}, http://${HOST}:${port} (loopback only), default limits`);

  // Warm up: a completion (the pacer measures the model), and one round of the abusive clients (allocator pools,
  // compiled code, the state cache entries of their prompts) whose results are not counted. Then the baseline:
  // a second round must not grow the server's memory by more than 10%.
  await raw(port, request('POST', '/v1/completions', JSON.stringify({ prompt: 'Once upon a time', max_tokens: 8 })), 60_000);
  process.stderr.write('soak: warm-up round…\n');
  await abusePhase(port, new Report(), 64);
  await sleep(1500);
  const memBefore = await ask<Mem>('rss', 'rss');
  process.stderr.write(`soak: ${n}-token prefill with /health probes and slowloris clients…\n`);

  const t0 = performance.now();
  await ask('eld-start', 'eldStarted');
  const p = await prefillPhase(port, report, n, () => ask('stats', 'stats'));
  const eld = await ask<{ p50: number; p99: number; max: number }>('eld', 'eld');
  const stats = await ask<{ prefill: unknown }>('stats', 'stats');
  process.stderr.write('soak: abusive clients…\n');
  await abusePhase(port, report, 64);
  await sleep(1500); // let abandoned streams unwind
  const after = await ask<{ active: number; queued: number; aborted: number }>('stats', 'stats');

  const chat = await fetch(`http://${HOST}:${port}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(60_000),
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Tell me a short story about a fox.' }], max_tokens: 24 }),
  });
  const chatBody = await chat.text();
  report.check('chat', chatBody);
  const content = chat.status === 200 ? (JSON.parse(chatBody) as { choices: { message: { content: string } }[] }).choices[0]!.message.content : '';
  const memAfter = await ask<Mem>('rss', 'rss');

  // ---- report ----
  const checks: [string, boolean][] = [];
  out('\nabusive clients                                        sent  handled  outcomes');
  for (const r of report.rows) {
    const outcomes = [...r.outcomes].map(([k, v]) => `${v}× ${k}`).join('; ');
    out(`  ${r.kind.padEnd(52)} ${String(r.sent).padStart(4)}  ${String(r.handled).padStart(7)}  ${outcomes.slice(0, 160)}`);
    checks.push([`${r.kind}: all handled`, r.handled === r.sent]);
  }
  const p50 = quantile(p.lat, 0.5), p99 = quantile(p.lat, 0.99);
  out(`\n/health during a ${n}-token prefill: ${p.lat.length} probes, p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${p.lat.at(-1)?.toFixed(1)} ms (target p99 ≤ 100 ms)`);
  out(`  the prefill: HTTP ${p.status}, ${p.prefillS.toFixed(1)} s (${(n / p.prefillS).toFixed(0)} tokens/s, with the slowloris clients); pacer ${JSON.stringify(stats.prefill)}`);
  out(`  the server's event-loop delay meanwhile: p50 ${eld.p50.toFixed(1)} ms, p99 ${eld.p99.toFixed(1)} ms, max ${eld.max.toFixed(1)} ms`);
  out(`  slowest probes: ${p.slowest.map(([ms, at]) => `${ms.toFixed(0)} ms at ${at.toFixed(1)} s`).join(', ')}`);
  checks.push(['/health p99 ≤ 100 ms during the prefill', p99 <= 100], ['the long prompt was answered', p.status === 200]);
  out(`after the abuse: ${after.active} active, ${after.queued} queued, ${after.aborted} requests aborted by their clients so far`);
  checks.push(['no request left running', after.active === 0 && after.queued === 0]);
  out(`normal chat completion afterwards: HTTP ${chat.status}, ${JSON.stringify(content.slice(0, 80))}`);
  checks.push(['normal chat completion afterwards', chat.status === 200 && content.length > 0]);
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const growth = (memAfter.rss - memBefore.rss) / memBefore.rss;
  out(`RSS (after GC): before ${mib(memBefore.rss)}, after ${mib(memAfter.rss)} (${(growth * 100).toFixed(1)}%, limit 10%); ` +
    `JS heap ${mib(memBefore.heap)} → ${mib(memAfter.heap)}, external ${mib(memBefore.external)} → ${mib(memAfter.external)}, ` +
    `state cache ${mib(memBefore.cache)} → ${mib(memAfter.cache)}`);
  checks.push(['RSS back within 10%', Math.abs(growth) <= 0.1]);
  out(`stack traces or local paths leaked: ${report.leaks.length} in ${report.responses} responses`);
  for (const l of report.leaks.slice(0, 5)) out(`  ${l}`);
  checks.push(['no stack trace or path leaked', report.leaks.length === 0]);
  for (const f of report.failures.slice(0, 10)) out(`  unexpected: ${f}`);
  const failed = checks.filter(([, ok]) => !ok);
  out(`\n${failed.length === 0 ? 'PASS' : 'FAIL'}: ${checks.length - failed.length}/${checks.length} checks in ${((performance.now() - t0) / 1000).toFixed(0)} s` +
    (failed.length ? ` — failed: ${failed.map(([c]) => c).join('; ')}` : ''));

  child.send({ cmd: 'exit' });
  await new Promise((r) => { child.once('exit', r); setTimeout(r, 3000).unref(); });
  clearTimeout(deadline);
  process.exit(failed.length === 0 ? 0 : 1);
}

if (args.includes('--server')) {
  void serve();
} else {
  main().catch((e: unknown) => {
    process.stderr.write(`soak: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
