/**
 * The library in a real browser: Debian's Chromium driven by playwright-core (no browser download), WebGPU on
 * SwiftShader. The bundle (dist/browser/rwkv7.js) is built here from the sources, served with COOP/COEP from a
 * loopback server, and run on the golden fixtures exactly as in Node.
 * Without Chromium these tests skip locally; under CI=true they must run.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startStaticServer, type StaticServer } from './helpers/static-server.js';
import { loadModel } from '../src/runtime/load.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { generate } from '../src/runtime/generate.js';

const repo = fileURLToPath(new URL('../', import.meta.url));
const shared = fileURLToPath(new URL('../../shared/', import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=swiftshader', '--use-webgpu-adapter=swiftshader', '--no-sandbox'];

const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;
if (skip && process.env.CI) test('chromium available under CI', () => assert.fail(skip));
if (skip && !process.env.CI) console.log(`# browser tests skipped: ${skip}`);

let browser: Browser;
let isolated: StaticServer;
let plain: StaticServer;
let page: Page;

const HARNESS = '<!doctype html><meta charset="utf-8"><title>rwkv7 test</title><script src="/t/harness.js"></script>';

before(async () => {
  if (skip) return;
  const { buildBrowser } = await import('../scripts/build-browser.mjs' as string) as { buildBrowser(o?: object): Promise<unknown> };
  await buildBrowser();
  const roots = { '/lib/': `${repo}dist/browser/`, '/shared/': shared, '/t/': `${repo}test/browser/` };
  isolated = await startStaticServer(roots, { pages: { '/': HARNESS } });
  plain = await startStaticServer(roots, { isolated: false, pages: { '/': HARNESS } });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`# page error: ${e.message}`));
  await page.goto(`${isolated.url}/`);
});

after(async () => {
  await browser?.close();
  await isolated?.close();
  await plain?.close();
});

interface Verified {
  report: { max_deviation: number; max_state_rel_error: number; groups: { name: string; mode: string; max_deviation: number }[] };
  info: { backend: string; dtype: string; threads: number };
}

async function verify(p: Page, model: string, golden: string, opts: object, modes?: string[]): Promise<Verified> {
  return p.evaluate(`rwkvTest.verify(${JSON.stringify(model)}, ${JSON.stringify(golden)}, ${JSON.stringify(opts)}, ${JSON.stringify(modes)})`);
}

const TINY = ['tiny-l2-d128', 'tiny-l2-d96-h32', 'tiny-l3-d256'];
const FIXTURES: [string, string, string][] = [
  ...TINY.map((m): [string, string, string] => [m, `/shared/fixtures/models/${m}.pth`, `/shared/fixtures/golden/${m}.golden.safetensors`]),
  ['storyteller', '/shared/models/rwkv7-storyteller-L6-D192.pth', '/shared/fixtures/golden/storyteller.text.safetensors'],
];

test('the page is cross-origin isolated and has a WebGPU adapter', { skip }, async () => {
  const env = await page.evaluate('rwkvTest.env()') as { isolated: boolean; gpu: boolean };
  assert.equal(env.isolated, true);
  assert.equal(env.gpu, true, 'no WebGPU adapter in Chromium (SwiftShader)');
});

test('all golden tokenizer cases encode to the golden ids in the page', { skip }, async () => {
  const r = await page.evaluate(`rwkvTest.tokenizer('/shared/fixtures/tokenizer/golden.jsonl')`) as { n: number; nBad: number; bad: number[] };
  assert.equal(r.n, 5496);
  assert.equal(r.nBad, 0, `mismatching cases (line numbers): ${r.bad.join(', ')}`);
});

for (const [name, model, golden] of FIXTURES) {
  test(`verifyGolden in the browser: ${name} on js (≤ 1e-5)`, { skip }, async (t) => {
    const r = await verify(page, model, golden, { backend: 'js' }, ['seq']);
    t.diagnostic(`max_deviation ${r.report.max_deviation}`);
    assert.equal(r.info.backend, 'js');
    assert.ok(r.report.max_deviation <= 1e-5, `${name} js: ${r.report.max_deviation}`);
  });
  for (const threads of [1, 2]) {
    test(`verifyGolden in the browser: ${name} on wasm f32, ${threads} thread(s), in the worker (≤ 5e-5)`, { skip }, async (t) => {
      const r = await verify(page, model, golden, { backend: 'wasm', dtype: 'f32', threads });
      t.diagnostic(`max_deviation ${r.report.max_deviation}`);
      assert.equal(r.info.backend, 'wasm');
      assert.equal(r.info.threads, threads);
      assert.ok(r.report.max_deviation <= 5e-5, `${name} wasm ${threads}: ${r.report.max_deviation}`);
      assert.ok(r.report.groups.some((g) => g.mode === 'rnn') && r.report.groups.some((g) => g.mode === 'seq'));
    });
  }
  test(`verifyGolden in the browser: ${name} on webgpu f32 (sequence mode${name === TINY[0] ? ' and RNN mode' : ''}; ≤ 5e-5)`, { skip }, async (t) => {
    const modes = name === TINY[0] ? ['rnn', 'seq'] : ['seq'];
    const r = await verify(page, model, golden, { backend: 'webgpu', dtype: 'f32' }, modes);
    t.diagnostic(`max_deviation ${r.report.max_deviation}`);
    assert.equal(r.info.backend, 'webgpu');
    assert.ok(r.report.max_deviation <= 5e-5, `${name} webgpu: ${r.report.max_deviation}`);
  });
}

test('GGUF files load in the browser too (llama.cpp F32 and Q4_0 files against their golden references)', { skip }, async (t) => {
  const f32 = await verify(page, '/shared/fixtures/gguf/tiny-l2-d128-f32.gguf', '/shared/fixtures/golden/tiny-l2-d128.golden.safetensors', { backend: 'wasm', dtype: 'f32', threads: 2 }, ['seq']);
  assert.ok(f32.report.max_deviation <= 5e-5, `f32 gguf: ${f32.report.max_deviation}`);
  const q4 = await verify(page, '/shared/fixtures/gguf/storyteller-L6-D192-q4_0.gguf', '/shared/fixtures/gguf/storyteller-L6-D192-q4_0.golden.safetensors', { backend: 'js' }, ['seq']);
  assert.ok(q4.report.max_deviation <= 1e-5, `q4_0 gguf: ${q4.report.max_deviation}`);
  // The Q4_0 file's golden with the weights kept in 4-bit: wasm (2 threads, in the worker) and webgpu.
  for (const backend of ['wasm', 'webgpu']) {
    const r = await verify(page, '/shared/fixtures/gguf/storyteller-L6-D192-q4_0.gguf', '/shared/fixtures/gguf/storyteller-L6-D192-q4_0.golden.safetensors', { backend, dtype: 'q4', threads: 2 }, ['seq']);
    assert.equal(r.info.dtype, 'q4');
    t.diagnostic(`q4_0 gguf on ${backend}: max_deviation ${r.report.max_deviation}`);
    assert.ok(r.report.max_deviation <= 5e-5, `q4_0 gguf on ${backend}: ${r.report.max_deviation}`);
  }
});

test("the storyteller's greedy continuation in the browser equals Node's token for token", { skip }, async () => {
  const prompt = 'Once upon a time';
  const n = 32;
  const greedy = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0, penaltyDecay: 1 };
  const loaded = await loadModel(`${shared}models/rwkv7-storyteller-L6-D192.pth`, { backend: 'wasm', threads: 2 });
  const tok = WorldTokenizer.default();
  const state = loaded.model.newState();
  const node = await generate(loaded.model, tok, state, tok.encode(prompt), { maxTokens: n, sampling: greedy, stopTokens: [] });
  await loaded.model.backend.dispose();
  const web = await page.evaluate(`rwkvTest.greedy('/shared/models/rwkv7-storyteller-L6-D192.pth', ${JSON.stringify(prompt)}, ${n}, { backend: 'wasm', threads: 2 })`) as { tokens: number[]; text: string };
  assert.deepEqual(web.tokens, node.tokens);
  assert.equal(web.text, node.text);
});

test('a page without cross-origin isolation runs wasm on one thread and says so', { skip }, async () => {
  const p = await browser.newPage();
  try {
    await p.goto(`${plain.url}/`);
    assert.equal((await p.evaluate('rwkvTest.env()') as { isolated: boolean }).isolated, false);
    const r = await verify(p, '/shared/fixtures/models/tiny-l2-d128.pth', '/shared/fixtures/golden/tiny-l2-d128.golden.safetensors', { backend: 'wasm', dtype: 'f32', threads: 2 }, ['seq']);
    assert.equal(r.info.threads, 1);
    assert.ok(r.report.max_deviation <= 5e-5);
    const notices = await p.evaluate('rwkvTest.notices') as string[];
    assert.ok(notices.some((t) => /not cross-origin isolated.*1 thread/.test(t)), `notices: ${JSON.stringify(notices)}`);
  } finally {
    await p.close();
  }
});

test('a model loaded by URL is cached in OPFS: the second load downloads nothing', { skip }, async () => {
  // A query string of its own: earlier tests cached the plain URL already.
  const url = `/shared/fixtures/models/tiny-l2-d96-h32.pth?fresh=${Date.now()}`;
  const first = await page.evaluate(`rwkvTest.cachedLoad(${JSON.stringify(url)}, { backend: 'js' })`) as { info: { cached: boolean }; progress: number; last: [number, number] };
  const size = readFileSync(`${shared}fixtures/models/tiny-l2-d96-h32.pth`).length;
  const path = url.split('?')[0]!;
  const hits = isolated.hits.get(path);
  assert.equal(first.info.cached, false);
  assert.ok(first.progress >= 1);
  assert.deepEqual(first.last, [size, size]);
  const second = await page.evaluate(`rwkvTest.cachedLoad(${JSON.stringify(url)}, { backend: 'js' })`) as { info: { cached: boolean }; progress: number };
  assert.equal(second.info.cached, true);
  assert.equal(second.progress, 0);
  assert.equal(isolated.hits.get(path), hits, 'the cached model was requested again');
});

test('loading errors in the browser: 404, a web page instead of a checkpoint, a cross-origin refusal', { skip }, async () => {
  const missing = await page.evaluate(`rwkvTest.loadError('/shared/no-such-model.pth', { backend: 'js' })`) as { message: string } | null;
  assert.match(missing?.message ?? '', /no-such-model\.pth: not found \(HTTP 404\)/);
  const html = await page.evaluate(`rwkvTest.loadError('/', { backend: 'js' })`) as { message: string } | null;
  assert.match(html?.message ?? '', /web page .*not a checkpoint/);
  // The other server is another origin and sends no CORS headers: the browser refuses the response.
  const cors = await page.evaluate(`rwkvTest.loadError(${JSON.stringify(`${plain.url}/shared/fixtures/models/tiny-l2-d128.pth`)}, { backend: 'js' })`) as { message: string } | null;
  assert.match(cors?.message ?? '', /could not be fetched .*cross-origin/);
});

