/**
 * The chat page end to end: the real `rwkv7 serve` server (in-process, the bundled storyteller model) serving
 * dist/web/ at `/`, driven in Debian's Chromium through playwright-core. Both engines — on the server (its
 * /v1/chat/completions stream) and in this browser (the library's model worker with the served checkpoint): the
 * answer streams in, Stop stops it, a second turn continues the conversation. Saves a screenshot of the page to
 * test-output/chat-page.png. Without Chromium these tests skip locally; under CI=true they must run.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { loadModel, type LoadedModel } from '../src/runtime/load.js';
import { createServer, type RwkvServer } from '../src/server/index.js';
import { DEFAULT_MODEL_PATH } from '../src/platform/node.js';
import { startStaticServer, type StaticServer } from './helpers/static-server.js';

const repo = fileURLToPath(new URL('../', import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// As in test/browser.test.ts (importing it would run its tests here too).
const CHROMIUM_ARGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=swiftshader', '--use-webgpu-adapter=swiftshader', '--no-sandbox'];
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;
if (skip && process.env.CI) test('chromium available under CI', () => assert.fail(skip));
if (skip && !process.env.CI) console.log(`# chat page tests skipped: ${skip}`);

let loaded: LoadedModel;
let app: RwkvServer;
let browser: Browser;
let page: Page;
let site: StaticServer;
const pageErrors: string[] = [];

before(async () => {
  if (skip) return;
  // The bundle and the static site (dist/browser/, dist/web/ with web/ and a copy of the bundle).
  execFileSync(process.execPath, [`${repo}scripts/build-browser.mjs`], { cwd: repo, stdio: 'pipe' });
  loaded = await loadModel(undefined, { backend: 'wasm', threads: 2 });
  app = createServer(loaded, {});
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  assert.ok(addr && typeof addr === 'object');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`http://127.0.0.1:${addr.port}/`);
  await page.waitForSelector('.app.ready');
  // dist/web on a plain static host (no rwkv7 server behind it).
  site = await startStaticServer({ '/': `${repo}dist/web/` });
});

after(async () => {
  await browser?.close();
  await app?.close();
  await site?.close();
  await loaded?.model.backend.dispose();
});

const id = (t: string) => `[data-testid="${t}"]`;
const answers = (p: Page) => p.locator(id('assistant-message'));
const lastAnswer = async (p: Page) => (await answers(p).last().textContent()) ?? '';
const sendState = (p: Page) => p.getAttribute(id('send-button'), 'data-state');

/** Types `text` and presses Enter. */
async function say(p: Page, text: string, maxTokens: number): Promise<void> {
  await p.fill(id('max-tokens'), String(maxTokens));
  await p.fill(id('message-input'), text);
  await p.press(id('message-input'), 'Enter');
}

/**
 * In the page: samples the last answer's text length every few ms until it grew twice (the answer streams in), then
 * presses Stop — in the page, so no round trip lets a short answer end first. Resolves with the lengths seen.
 */
const WATCH_AND_STOP = `new Promise((resolve) => {
  const button = document.querySelector('[data-testid="send-button"]');
  const seen = [];
  const tick = () => {
    if (button.dataset.state !== 'stop') return resolve({ seen, pressed: false });
    const all = document.querySelectorAll('[data-testid="assistant-message"]');
    const n = all[all.length - 1].textContent.length;
    if (n > 0 && n !== seen[seen.length - 1]) seen.push(n);
    if (seen.length >= 3) { button.click(); return resolve({ seen, pressed: true }); }
    setTimeout(tick, 4);
  };
  tick();
})`;

/**
 * Asks for a long answer, watches it stream and presses Stop. The storyteller often ends its answer within a
 * sentence, so it asks again (the conversation goes on) until an answer is still streaming when Stop is pressed.
 * Returns the lengths seen and the number of turns.
 */
async function streamAndStop(p: Page): Promise<{ seen: number[]; turns: number }> {
  for (let turn = 1; turn <= 10; turn++) {
    await say(p, PROMPTS[(turn - 1) % PROMPTS.length]!, LONG);
    const { seen, pressed } = await p.evaluate(WATCH_AND_STOP) as { seen: number[]; pressed: boolean };
    await finish(p);
    if (!pressed) continue; // too short to stop: ask again
    assert.ok(seen.every((n, i) => i === 0 || n > seen[i - 1]!), `the answer did not grow: ${JSON.stringify(seen)}`);
    if (/stopped/.test(await p.locator('.msg.assistant .meta').last().textContent() ?? '')) return { seen, turns: turn };
  }
  throw new Error('no answer was long enough to be stopped in 10 turns');
}

async function assertStopped(p: Page): Promise<string> {
  const text = await lastAnswer(p);
  await p.waitForTimeout(600);
  assert.equal(await lastAnswer(p), text, 'the answer kept growing after Stop');
  return text;
}

async function finish(p: Page): Promise<void> {
  await p.waitForSelector(`${id('send-button')}[data-state="send"]`, { timeout: 30_000 });
}

/** One more turn, asked again (at most 4 times) while the storyteller answers with an empty line. Returns the turns. */
async function answered(p: Page, text: string, maxTokens: number): Promise<number> {
  for (let turn = 1; turn <= 4; turn++) {
    await say(p, text, maxTokens);
    await finish(p);
    if ((await lastAnswer(p)).length > 0) return turn;
  }
  throw new Error(`no answer to ${JSON.stringify(text)} in 4 turns`);
}

const LONG = 600;
const PROMPTS = ['Once upon a time, in a quiet village by the sea,', 'Tell me a long story about a little fox who finds a lantern.', 'Once upon a time', 'Go on with the story, please.'];

test('the chat page on the server engine: streams, stops, and sends the history on the second turn', { skip }, async () => {
  assert.equal(await page.inputValue(id('engine-select')), 'server');
  assert.match(await page.textContent(id('status-line')) ?? '', /On the server.*wasm/);
  const { seen, turns } = await streamAndStop(page);
  const partial = await assertStopped(page);
  assert.ok(partial.length >= seen.at(-1)!);

  const request = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
  const more = answered(page, 'What happened next?', 24);
  const body = JSON.parse((await request).postData() ?? '{}') as { messages: { role: string; content: string }[]; stream: boolean };
  const extra = await more;
  assert.equal(body.stream, true);
  assert.deepEqual(body.messages.map((m) => m.role), [...Array.from({ length: turns }, () => ['user', 'assistant']).flat(), 'user']);
  assert.equal(body.messages.at(-2)!.content, partial);
  assert.equal(await answers(page).count(), turns + extra);
  assert.match(await page.textContent(id('status-line')) ?? '', /tok\/s/);
  assert.equal(await page.locator(id('error')).count(), 0, await page.locator(id('error')).allTextContents().then(String));
});

test('the chat page in this browser: the served model loads with progress, streams, stops, and keeps the state', { skip }, async () => {
  await page.click(id('new-chat'));
  assert.equal(await answers(page).count(), 0);
  await page.selectOption(id('engine-select'), 'browser');
  await page.selectOption(id('backend-select'), 'wasm');
  await page.click(id('load-button'));
  // The served checkpoint downloads (bytes done / total), then the answers stream from the worker.
  await page.waitForSelector(`${id('load-card')}:not([hidden])`, { timeout: 10_000 });
  await page.waitForSelector(`${id('load-card')}[hidden]`, { state: 'attached', timeout: 30_000 });
  const bar = page.locator(id('load-progress'));
  const size = String(statSync(DEFAULT_MODEL_PATH).size);
  assert.deepEqual([await bar.getAttribute('data-done'), await bar.getAttribute('data-total')], [size, size], 'the download progress did not reach the whole file');
  const { turns } = await streamAndStop(page);
  await assertStopped(page);
  const status = page.locator(id('status-line'));
  assert.match(await status.textContent() ?? '', /In this browser.*wasm.*(f32|bf16|f16).*thread/);
  const ctx1 = Number(await status.getAttribute('data-context-tokens'));
  assert.ok(ctx1 > 10, `context tokens after the first turn: ${ctx1}`);

  // The second turn continues the same state: the context holds both turns.
  const extra = await answered(page, 'And then?', 24);
  const ctx2 = Number(await status.getAttribute('data-context-tokens'));
  assert.ok(ctx2 > ctx1, `context tokens ${ctx1} → ${ctx2}: the second turn did not continue the first`);
  assert.equal(await answers(page).count(), turns + extra);
  assert.equal(await page.locator(id('error')).count(), 0, await page.locator(id('error')).allTextContents().then(String));

  // New chat starts from an empty state.
  await page.click(id('new-chat'));
  await say(page, 'Hello!', 8);
  await finish(page);
  const ctx3 = Number(await status.getAttribute('data-context-tokens'));
  assert.ok(ctx3 < ctx2, `a new chat did not start from a fresh state (${ctx2} → ${ctx3})`);

  // A finished-looking page to look at: a short conversation, then the screenshot.
  await page.click(id('new-chat'));
  await answered(page, 'Once upon a time, a girl found a tiny dragon in her garden.', 60);
  await answered(page, 'What did the dragon say?', 40);
  mkdirSync(`${repo}test-output`, { recursive: true });
  await page.screenshot({ path: `${repo}test-output/chat-page.png` });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: `${repo}test-output/chat-page-dark.png` });
  await page.setViewportSize({ width: 420, height: 760 });
  await page.screenshot({ path: `${repo}test-output/chat-page-narrow.png` });
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize({ width: 1280, height: 800 });
  assert.deepEqual(pageErrors, []);
});

test('the chat page on a static host: only the in-browser engine, a readable load error, a model from a local file', { skip }, async () => {
  const p = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors: string[] = [];
  p.on('pageerror', (e) => errors.push(e.message));
  try {
    await p.goto(`${site.url}/index.html`);
    await p.waitForSelector('.app.ready');
    assert.equal(await p.inputValue(id('engine-select')), 'browser');
    assert.equal(await p.locator(`${id('engine-select')} option[value="server"]`).isDisabled(), true);
    assert.match(await p.textContent('#engine-note') ?? '', /static files.*runs here, in your browser/);
    assert.equal(await p.locator(`${id('source-select')} option[value="served"]`).isDisabled(), true);
    await p.selectOption(id('backend-select'), 'wasm');

    // A URL that is not there: the error is shown inline, in words.
    await p.selectOption(id('source-select'), 'url');
    await p.fill(id('model-url'), '/no-such-model.pth');
    await say(p, 'Hello', 8);
    await p.waitForSelector(id('error'));
    assert.match(await p.textContent(id('error')) ?? '', /Could not load the model: .*no-such-model\.pth: not found \(HTTP 404\)/);

    // A checkpoint picked from this computer.
    await p.selectOption(id('source-select'), 'file');
    await p.setInputFiles(id('model-file'), DEFAULT_MODEL_PATH);
    await answered(p, 'Once upon a time', 16);
    assert.match(await p.textContent(id('status-line')) ?? '', /In this browser.*wasm/);
    assert.deepEqual(errors, []);
  } finally {
    await p.close();
  }
});
