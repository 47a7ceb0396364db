// The model tools on the command line: verify, ppl, logits, compare.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const shared = (p: string) => fileURLToPath(new URL(`../../shared/${p}`, import.meta.url));
const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

function rwkv7(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', main, ...args], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

test('verify --json passes on the fla copy against the .pth golden file', async () => {
  const r = await rwkv7('verify', '--model', shared('fixtures/models/tiny-l3-d256-fla'), '--golden', shared('fixtures/golden/tiny-l3-d256.golden.safetensors'), '--backend', 'js', '--json');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.pass, true);
  assert.ok(j.max_deviation <= 1e-5);
  assert.equal(j.groups.length, 10);
  for (const g of j.groups) {
    assert.ok(['rnn', 'seq'].includes(g.mode));
    for (const k of ['name', 'steps', 'max_deviation', 'state_max_rel_error']) assert.ok(k in g, k);
  }
});

test('verify --dtype int8: fails against the golden outputs with an explanation, passes --against js', async () => {
  const args = ['verify', '--model', shared('fixtures/models/tiny-l2-d128.pth'), '--golden', shared('fixtures/golden/tiny-l2-d128.golden.safetensors'), '--backend', 'wasm', '--dtype', 'int8'];
  const golden = await rwkv7(...args);
  assert.equal(golden.code, 1, golden.stderr);
  assert.match(golden.stdout, /against the golden outputs/);
  assert.match(golden.stdout, /FAIL: max deviation .*\(tolerance 0\.05\)\nnote: 8-bit weights alone/);
  const js = await rwkv7(...args, '--against', 'js', '--json');
  assert.equal(js.code, 0, js.stderr);
  const j = JSON.parse(js.stdout);
  assert.equal(j.against, 'js');
  assert.equal(j.pass, true);
  assert.ok(j.max_deviation > 0 && j.max_deviation <= 2e-2, String(j.max_deviation));
  const bad = await rwkv7(...args, '--against', 'numpy');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--against must be golden or js/);
});

test('verify --against js with --activations q8: the js reference rounds the same inputs to 8 bits', async () => {
  const q = 'fixtures/gguf/storyteller-L6-D192-q4_0';
  // js against js: the same arithmetic on both sides, so nothing differs (a reference on full activations differed)
  const r = await rwkv7('verify', '--model', shared(`${q}.gguf`), '--golden', shared(`${q}.golden.safetensors`), '--backend', 'js',
    '--dtype', 'q4', '--activations', 'q8', '--against', 'js', '--mode', 'seq');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /against the js backend with q4 weights, activations q8/);
  assert.match(r.stdout, /PASS: max deviation 0\.000e\+0, max state error 0\.000e\+0/);
});

test('verify exits 1 when over tolerance, and names a mismatched golden file', async () => {
  const over = await rwkv7('verify', '--model', shared('fixtures/models/tiny-l2-d128.pth'), '--golden', shared('fixtures/golden/tiny-l2-d128.golden.safetensors'), '--backend', 'js', '--mode', 'seq', '--tolerance', '1e-12');
  assert.equal(over.code, 1);
  assert.match(over.stdout, /FAIL/);
  const wrong = await rwkv7('verify', '--model', shared('fixtures/models/tiny-l2-d128.pth'), '--golden', shared('fixtures/golden/tiny-l3-d256.golden.safetensors'), '--backend', 'js');
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /expected F32 \[1, 1000\]/);
  assert.doesNotMatch(wrong.stderr, /at .*\.ts:\d+/); // no stack trace
});

test('ppl on the storyteller passage gives the reference mean NLL', async () => {
  const ref = JSON.parse(readFileSync(shared('fixtures/golden/storyteller.text.json'), 'utf8'));
  const r = await rwkv7('ppl', '--model', shared('models/rwkv7-storyteller-L6-D192.pth'), '--file', shared('fixtures/golden/storyteller.text.passage.txt'), '--max-tokens', '1024', '--json');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.tokens, 1024);
  assert.ok(Math.abs(j.mean_nll - ref.mean_nll) / ref.mean_nll <= 1e-4, `mean NLL ${j.mean_nll} vs ${ref.mean_nll}`);
  assert.ok(Math.abs(j.perplexity - ref.perplexity) / ref.perplexity <= 1e-3);
});

test('logits writes the dump, and compare reads it back', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-logits-'));
  try {
    const a = join(dir, 'a'), b = join(dir, 'b');
    const ra = await rwkv7('logits', '--text', 'Once upon a time', '--out', a, '--backend', 'js');
    assert.equal(ra.code, 0, ra.stderr);
    const summary = JSON.parse(readFileSync(join(a, 'final_logits.json'), 'utf8'));
    const rb = await rwkv7('logits', '--tokens', summary.tokens.join(','), '--out', b, '--backend', 'js');
    assert.equal(rb.code, 0, rb.stderr);
    assert.equal(summary.context, 'Once upon a time');
    assert.equal(summary.top.length, 10);
    const logits = readFileSync(join(a, 'final_logits.bin'));
    assert.equal(logits.length, 65536 * 4);
    let sum = 0;
    const probs = readFileSync(join(a, 'final_probs.bin'));
    for (let i = 0; i < 65536; i++) sum += probs.readFloatLE(i * 4);
    assert.ok(Math.abs(sum - 1) < 1e-4);
    // The same context as text and as ids gives identical dumps.
    const same = await rwkv7('compare', join(a, 'final_logits.bin'), join(b, 'final_logits.bin'), '--json');
    assert.equal(same.code, 0, same.stderr);
    const s = JSON.parse(same.stdout);
    assert.equal(s.l1, 0);
    assert.equal(s.kl_a_b, 0);
    assert.equal(s.top1_agree, true);
    assert.equal(s.top10_overlap, 1);
    // A perturbed copy: nonzero distances, top-1 still agrees.
    const bumped = Buffer.from(logits);
    bumped.writeFloatLE(bumped.readFloatLE(4) + 0.5, 4);
    writeFileSync(join(dir, 'bumped.bin'), bumped);
    const diff = JSON.parse((await rwkv7('compare', join(a, 'final_logits.bin'), join(dir, 'bumped.bin'), '--json')).stdout);
    assert.ok(diff.l1 > 0 && diff.kl_a_b > 0 && diff.kl_b_a > 0);
    // Mismatched sizes are a clear error.
    writeFileSync(join(dir, 'short.bin'), Buffer.alloc(8));
    const bad = await rwkv7('compare', join(a, 'final_logits.bin'), join(dir, 'short.bin'));
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /65536 values but .* has 2/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ppl --activations q8 on the Q4_0 fixture: labelled, and within 0.5% of the full-precision q4 perplexity; refused with bf16', async () => {
  const args = ['ppl', '--model', shared('fixtures/gguf/storyteller-L6-D192-q4_0.gguf'), '--file', shared('fixtures/golden/storyteller.text.passage.txt'), '--max-tokens', '1024', '--backend', 'wasm', '--threads', '1'];
  const full = await rwkv7(...args);
  const q8 = await rwkv7(...args, '--activations', 'q8');
  assert.equal(full.code, 0, full.stderr);
  assert.equal(q8.code, 0, q8.stderr);
  assert.match(q8.stdout, /\(wasm, q4, activations q8\)/);
  const ppl = (s: string) => Number(/perplexity ([\d.]+)/.exec(s)![1]);
  // measured: 45.589 full, 45.626 q8 (bf16 of the .pth: 44.627)
  assert.ok(Math.abs(ppl(q8.stdout) / ppl(full.stdout) - 1) <= 0.005, `${ppl(q8.stdout)} against ${ppl(full.stdout)}`);
  const bad = await rwkv7(...args, '--activations', 'q8', '--dtype', 'bf16');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--activations q8 rounds the inputs of 4-bit products: it needs --dtype q4 \(or a Q4_0 GGUF\), not bf16/);
  assert.doesNotMatch(bad.stderr, /\n\s+at /); // no stack trace
});
