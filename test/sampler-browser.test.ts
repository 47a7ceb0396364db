// The sampler in a real browser (Debian's Chromium through playwright-core, as test/browser.test.ts): the page
// compiles the embedded wasm kernel synchronously and runs its self-check against the page's own Math.exp. Where
// that Math.exp is fdlibm's, as in Node, the wasm exponentials are used and sampling is bit for bit Node's; where it
// is not (Chromium 156's differs on ≈ 600 of the self-check's ≈ 7,000 arguments), the self-check refuses them and
// the sampler uses Math.exp, with the loops still in wasm. Either way the page's sampling must equal its own
// Math.exp reference (the 'math' kernel with the loops in JS). Skips without Chromium (fails under CI=true).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startStaticServer, type StaticServer } from './helpers/static-server.js';
import { samplingDistribution, Rng } from '../src/runtime/sampler.js';
import { expKind, expKindAvailable, forceExpKind } from '../src/runtime/fast-exp.js';

const repo = fileURLToPath(new URL('../', import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM}`;
if (skip && process.env.CI) test('chromium available under CI', () => assert.fail(skip));

/** The same computation in Node and in the page: distributions of seeded logit vectors, then seeded draws. */
const WORK = `(lib, shapes, force) => {
  if (force) lib.forceExpKind('math', 'js');
  const out = { kind: lib.expKind(), wasmOk: lib.expKindAvailable('wasm'), dists: [], draws: [] };
  const rng = new lib.Rng(99);
  for (const [V, scale, topP, t] of shapes) {
    const logits = Float64Array.from({ length: V }, () => scale * rng.next());
    logits[Math.floor(rng.next() * V)] = scale + 1;
    const d = lib.samplingDistribution(logits, t, topP, 0);
    out.dists.push({ ids: d.ids, probs: d.probs });
    const r = new lib.Rng(V);
    let acc = 0;
    const u = r.next();
    let tok = d.ids[d.ids.length - 1];
    for (let i = 0; i < d.ids.length; i++) { acc += d.probs[i]; if (u < acc) { tok = d.ids[i]; break; } }
    out.draws.push(tok);
  }
  if (force) lib.forceExpKind(undefined);
  return out;
}`;
const SHAPES: Array<[number, number, number, number]> = [
  [65536, 1, 0.85, 1], [65536, 1, 0.5, 1], [65536, 12, 0.85, 1], [65536, 30, 0.95, 0.7], [4096, 3, 1, 1], [300, 5, 0.85, 1.3],
];

let browser: Browser;
let server: StaticServer;
let page: Page;

before(async () => {
  if (skip) return;
  const built = await esbuild.build({
    stdin: {
      contents: "import { samplingDistribution, Rng } from './src/runtime/sampler.ts'; import { expKind, expKindAvailable, forceExpKind } from './src/runtime/fast-exp.ts'; globalThis.samplerLib = { samplingDistribution, Rng, expKind, expKindAvailable, forceExpKind };",
      resolveDir: repo, loader: 'ts',
    },
    bundle: true, format: 'iife', platform: 'browser', target: 'es2022', write: false, logLevel: 'silent',
  });
  const js = built.outputFiles[0]!.text;
  server = await startStaticServer({}, { pages: { '/': '<!doctype html><meta charset="utf-8"><title>sampler</title>' } });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage();
  await page.goto(`${server.url}/`);
  await page.addScriptTag({ content: js });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

type Result = { kind: string; wasmOk: boolean; dists: { ids: number[]; probs: number[] }[]; draws: number[] };
const run = (force: boolean) => page.evaluate(`(${WORK})(globalThis.samplerLib, ${JSON.stringify(SHAPES)}, ${force})`) as Promise<Result>;

test('in Chromium the sampler uses the wasm exponentials where Math.exp is fdlibm\'s, and gives Math.exp\'s bits either way', { skip }, async () => {
  const auto = await run(false);
  const reference = await run(true);
  console.log(`Chromium: ${auto.wasmOk ? 'Math.exp is fdlibm\'s: wasm exponentials' : 'Math.exp is not fdlibm\'s: the self-check refuses the wasm exponentials, Math.exp is used'} (kernel ${auto.kind})`);
  assert.equal(auto.kind, auto.wasmOk ? 'wasm' : 'math');
  assert.equal(reference.kind, 'math');
  reference.dists.forEach((d, i) => {
    assert.deepStrictEqual(auto.dists[i]!.ids, d.ids, `shape ${i}: ids`);
    assert.deepStrictEqual(auto.dists[i]!.probs, d.probs, `shape ${i}: probs`);
  });
  assert.deepStrictEqual(auto.draws, reference.draws);
  if (auto.wasmOk) {
    // the same exponentials as Node's: the same bits as in Node
    const inNode = (new Function(`return ${WORK}`)() as (lib: unknown, shapes: unknown, force: boolean) => Result)(
      { samplingDistribution, Rng, expKind, expKindAvailable, forceExpKind }, SHAPES, false);
    assert.deepStrictEqual(auto.dists, inNode.dists);
    assert.deepStrictEqual(auto.draws, inNode.draws);
  }
});
