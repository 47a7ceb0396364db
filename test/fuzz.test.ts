/**
 * The loader fuzzer (fuzz/run.ts, issue 17) as part of the test suite: a short seeded run over every input kind must
 * find no unexpected exception, crash, hang or memory spike, and every regression input saved under fuzz/regressions
 * must now load or be refused cleanly. Both run in worker processes (a hang or a crash cannot take the tests down).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Summary } from '../fuzz/run.js';
import { generate } from '../fuzz/gen.js';
import { KINDS } from '../fuzz/lib.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));

function fuzz(args: string[]): Promise<{ summary: Summary; out: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', 'fuzz/run.ts', '--json', '--quiet', ...args], { cwd: REPO, maxBuffer: 64 << 20, timeout: 600_000 }, (err, stdout, stderr) => {
      const line = stdout.split('\n').find((l) => l.startsWith('JSON '));
      if (!line) { reject(new Error(`fuzzer gave no summary (${err?.message}):\n${stdout}\n${stderr}`)); return; }
      resolve({ summary: JSON.parse(line.slice(5)) as Summary, out: stdout });
    });
  });
}

const bad = (s: Summary): string[] =>
  Object.entries(s.counts).flatMap(([kind, c]) => (['unexpected', 'crash', 'hang', 'spike'] as const).filter((o) => c[o] > 0).map((o) => `${kind}: ${c[o]} ${o}`));

test('fuzz: cases are a pure function of (seed, kind, index)', () => {
  for (const kind of KINDS) {
    for (const i of [0, 7, 123]) {
      const a = generate(kind, 42, i), b = generate(kind, 42, i);
      assert.deepEqual(a, b, `${kind} case ${i}`);
    }
    assert.notDeepEqual(generate(kind, 42, 1).files, generate(kind, 43, 1).files, kind);
  }
});

test('fuzz: a seeded run over every kind finds no unexpected exception, crash, hang or memory spike', { timeout: 600_000 }, async () => {
  const { summary, out } = await fuzz(['--cases', '3500', '--seed', '1', '--jobs', '2', '--no-save']);
  assert.equal(summary.cases, 3500);
  assert.deepEqual(Object.keys(summary.counts).sort(), [...KINDS].sort());
  assert.deepEqual(bad(summary), [], `${out}\n${JSON.stringify(summary.failures, null, 1)}`);
  for (const [kind, c] of Object.entries(summary.counts)) {
    // The mutations are not all fatal: every kind has inputs that still load, and many that are refused.
    assert.ok(c.accepted > 0 && c.clean > 0, `${kind}: ${JSON.stringify(c)}`);
    assert.ok(summary.peakRssMb[kind]! <= 1024, `${kind}: peak RSS ${summary.peakRssMb[kind]} MB`);
  }
});

test('fuzz: every saved regression input now loads or is refused cleanly', { timeout: 600_000 }, async () => {
  const dir = path.join(REPO, 'fuzz/regressions');
  const saved = KINDS.flatMap((k) => (fs.existsSync(path.join(dir, k)) ? fs.readdirSync(path.join(dir, k)) : []));
  const { summary, out } = await fuzz(['--replay', dir, '--jobs', '2']);
  assert.equal(summary.cases, saved.length);
  assert.deepEqual(bad(summary), [], `${out}\n${JSON.stringify(summary.failures, null, 1)}`);
});
