// `rwkv7 bench` (src/cli/bench.ts): the result's fields, and --sample's sampled decode figures. No timing is checked
// (the figures are only finite and positive); a tiny model keeps it fast.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runBench } from '../src/cli/bench.js';

const tiny = fileURLToPath(new URL('../../shared/fixtures/models/tiny-l2-d128.pth', import.meta.url));
const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const small = { model: tiny, backend: 'js', dtype: 'f32', prefill: 4, decode: 6, runs: 2 } as const;
const positive = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x > 0;

test('bench: the plain fields, and no sampled ones without --sample', async () => {
  const r = await runBench(small);
  for (const k of ['prefill_tok_s', 'decode_tok_s', 'weight_bytes_per_token', 'decode_gb_s'] as const) assert.ok(positive(r[k]), k);
  assert.equal(r.backend, 'js');
  assert.ok(!('decode_sampled_tok_s' in r) && !('sampling_overhead_pct' in r));
  assert.ok(!('batch' in r));
});

test('bench --prefill 0: decode only (prefill reported as 0)', async () => {
  const r = await runBench({ ...small, prefill: 0 });
  assert.equal(r.prefill_tok_s, 0);
  assert.ok(positive(r.decode_tok_s));
});

test('bench --sample: decode with the default sampler, alone and with a batch', async () => {
  for (const batch of [1, 3]) {
    const r = await runBench({ ...small, batch, sample: true });
    assert.ok(positive(r.decode_tok_s));
    assert.ok(positive(r.decode_sampled_tok_s), `batch ${batch}`);
    assert.ok(Number.isFinite(r.sampling_overhead_pct));
    assert.ok(Math.abs(r.sampling_overhead_pct! - 100 * (1 - r.decode_sampled_tok_s! / r.decode_tok_s)) < 1e-9);
    assert.equal(r.batch, batch > 1 ? batch : undefined);
  }
});

test('rwkv7 bench --sample: the text line and the JSON fields', async () => {
  const run = (...args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', main, 'bench', '--model', tiny, '--backend', 'js', '--prefill', '2', '--decode', '4', '--runs', '1', '--sample', ...args],
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
  const text = await run();
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /\n {2}decode {2}[\d.]+ tok\/s \(4 tokens\)\n {2}decode with sampling [\d.]+ tok\/s \(4 tokens, generate's default sampler\): [\d.]+% (slower|faster) than plain decode\n/);
  const json = await run('--json');
  assert.equal(json.code, 0, json.stderr);
  const j = JSON.parse(json.stdout) as Record<string, unknown>;
  assert.ok(positive(j.decode_tok_s) && positive(j.decode_sampled_tok_s) && typeof j.sampling_overhead_pct === 'number');
});

test('rwkv7 bench: a count flag out of range (or nothing to measure) is refused by name, before any model loads', async () => {
  for (const [args, want] of [[['--batch', '0'], /--batch must be ≥ 1/], [['--threads', '0'], /--threads must be ≥ 1/], [['--runs', 'x'], /--runs must be an integer/], [['--prefill', '0', '--decode', '0'], /nothing to measure: --prefill and --decode are both 0/]] as const) {
    const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', main, 'bench', '--model', tiny, ...args],
        (err, _stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr }));
    });
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, want);
    assert.doesNotMatch(r.stderr, /\n\s+at /); // no stack trace
  }
});
