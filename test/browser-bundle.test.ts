/**
 * The browser bundle: it builds, holds the platform-neutral core and the browser platform only (no Node built-in,
 * no Node platform, CLI or server), and the build refuses a Node built-in with the importer named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as esbuild from 'esbuild';

const { buildBrowser, browserPlatform } = await import('../scripts/build-browser.mjs' as string) as {
  buildBrowser(o?: { outdir?: string; minify?: boolean }): Promise<{ inputs: Record<string, unknown>; outputs: Record<string, { bytes: number }> }>;
  browserPlatform: esbuild.Plugin;
};

test('the browser bundle builds from the sources with no Node built-in, Node platform, CLI or server in it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-bundle-'));
  try {
    const meta = await buildBrowser({ outdir: dir + '/' });
    const inputs = Object.keys(meta.inputs);
    assert.ok(inputs.some((f) => f.endsWith('src/browser/index.ts')));
    assert.ok(inputs.some((f) => f.endsWith('src/platform/browser.ts')));
    const forbidden = inputs.filter((f) => /^node:|src\/platform\/node\.ts|src\/cli\/|src\/server\/|node_modules\/(webgpu|fastify)\//.test(f));
    assert.deepEqual(forbidden, []);
    for (const f of ['rwkv7.js', 'rwkv7.wasm', 'rwkv7-relaxed.wasm', 'rwkv7-single.wasm', 'rwkv7-single-relaxed.wasm', 'rwkv_vocab_v20230424.txt']) {
      assert.ok(existsSync(join(dir, f)), `${f} is not beside the bundle`);
    }
    assert.ok(statSync(join(dir, 'rwkv7.js')).size < 512 * 1024, 'the bundle grew past 512 KiB');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the browser build refuses a Node built-in and names the importer', async () => {
  await assert.rejects(
    esbuild.build({
      stdin: { contents: "import '../src/platform/node.js';", resolveDir: new URL('.', import.meta.url).pathname, loader: 'ts' },
      bundle: true, write: false, platform: 'browser', format: 'esm', logLevel: 'silent', plugins: [browserPlatform],
    }),
    (e: { errors: { text: string }[] }) => e.errors.some((x) => /node:fs is not available in browsers \(imported by .*src\/platform\/node\.ts\)/.test(x.text)),
  );
});
