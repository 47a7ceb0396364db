// The RWKV-7 forward pass (js backend) against the official reference's golden outputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/runtime/load.js';
import { verifyGolden, deviation } from '../src/runtime/verify.js';
import { saveState, loadState } from '../src/model/state.js';
import { UserError } from '../src/errors.js';
import { INT8_GROUP, quantizeRowInt8 } from '../src/backends/quant.js';
import { JsBackend } from '../src/backends/js/index.js';
import { f16ToNumber, numberToF16 } from '../src/formats/dtype.js';

const shared = (p: string) => fileURLToPath(new URL(`../../shared/${p}`, import.meta.url));
// The spec bound is 1e-5; the js backend computes in float64 and holds 1e-6, which catches regressions early.
const TOL = 1e-6;

const cases: [string, string][] = [
  ['fixtures/models/tiny-l2-d128.pth', 'fixtures/golden/tiny-l2-d128.golden.safetensors'],
  ['fixtures/models/tiny-l2-d96-h32.pth', 'fixtures/golden/tiny-l2-d96-h32.golden.safetensors'],
  ['fixtures/models/tiny-l3-d256.pth', 'fixtures/golden/tiny-l3-d256.golden.safetensors'],
  ['fixtures/models/tiny-l3-d256-fla', 'fixtures/golden/tiny-l3-d256.golden.safetensors'],
  ['models/rwkv7-storyteller-L6-D192.pth', 'fixtures/golden/storyteller.text.safetensors'],
];

for (const [model, golden] of cases) {
  test(`js f32 matches the reference: ${model}`, async () => {
    const { model: m } = await loadModel(shared(model), { backend: 'js' });
    const report = await verifyGolden(m, shared(golden), ['rnn', 'seq']);
    for (const g of report.groups) {
      assert.ok(g.max_deviation <= TOL, `${g.name}/${g.mode}: deviation ${g.max_deviation}`);
      assert.ok(g.state_max_rel_error !== null && g.state_max_rel_error <= TOL, `${g.name}/${g.mode}: state error ${g.state_max_rel_error}`);
    }
    assert.ok(report.groups.length >= 2);
  });
}

for (const dtype of ['bf16', 'f16'] as const) {
  test(`js with ${dtype} weight storage is as exact as f32 (these bf16 checkpoints are exact in ${dtype})`, async () => {
    const { model } = await loadModel(shared('models/rwkv7-storyteller-L6-D192.pth'), { backend: 'js', dtype });
    assert.equal(model.backend.weightDType, dtype);
    const report = await verifyGolden(model, shared('fixtures/golden/storyteller.text.safetensors'), ['seq']);
    assert.ok(report.max_deviation <= TOL, `deviation ${report.max_deviation}`);
  });
}

test('sequence mode equals RNN mode, and continuing from a saved state equals one run', async () => {
  const { model, config } = await loadModel(shared('fixtures/models/tiny-l2-d96-h32.pth'), { backend: 'js' });
  const tokens = Array.from({ length: 45 }, (_, i) => (i * 37 + 11) % config.vocabSize);
  const V = config.vocabSize;

  const rnn = model.newState();
  const rnnLogits: Float32Array[] = [];
  for (const t of tokens) rnnLogits.push(await model.forward([t], rnn));
  const seq = model.newState();
  const all = await model.forward(tokens, seq, { allLogits: true });
  for (let t = 0; t < tokens.length; t++) assert.ok(deviation(all, rnnLogits[t]!, t * V, 0, V) < 1e-6, `step ${t}`);

  // Run 20 tokens, save the state to a file, load it into a fresh state, run the rest.
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-state-'));
  try {
    const first = model.newState();
    await model.forward(tokens.slice(0, 20), first);
    const file = join(dir, 'state.safetensors');
    saveState(file, await first.toHost(), config);
    const resumed = model.newState();
    resumed.fromHost(loadState(file, config));
    assert.deepEqual(await resumed.toHost(), await first.toHost());
    const rest = await model.forward(tokens.slice(20), resumed);
    assert.ok(deviation(rest, rnnLogits[tokens.length - 1]!) < 1e-6);
    // clone() is independent of the original
    const c = resumed.clone();
    await model.forward([1], c);
    assert.notDeepEqual((await c.toHost()).wkv, (await resumed.toHost()).wkv);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a token id outside the vocabulary is a clear error', async () => {
  const { model, config } = await loadModel(shared('fixtures/models/tiny-l2-d128.pth'), { backend: 'js' });
  const s = model.newState();
  await assert.rejects(model.forward([config.vocabSize], s), (e: unknown) => e instanceof UserError && /out of range/.test(e.message) && e.message.includes(String(config.vocabSize)));
  await assert.rejects(model.forward([-1], s), UserError);
});

test('a state file for another model is refused', async () => {
  const a = await loadModel(shared('fixtures/models/tiny-l2-d128.pth'), { backend: 'js' });
  const b = await loadModel(shared('fixtures/models/tiny-l2-d96-h32.pth'), { backend: 'js' });
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-state-'));
  try {
    const file = join(dir, 's.safetensors');
    saveState(file, await a.model.newState().toHost(), a.config);
    assert.throws(() => loadState(file, b.config), /expected F32/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('int8 quantization: a scale per row and 64 columns, |w − q·s| ≤ s/2, zero groups stay zero; the js backend uses it', () => {
  const row = new Float64Array(3 * INT8_GROUP);
  for (let c = 0; c < INT8_GROUP; c++) row[c] = Math.sin(c * 1.7) * 2;
  row[5] = -2.54; // the group's largest magnitude: scale 0.02, q = -127
  for (let c = 2 * INT8_GROUP; c < 3 * INT8_GROUP; c++) row[c] = (c % 7) * 1e-3;
  const q = new Int8Array(row.length), scales = new Float32Array(3);
  quantizeRowInt8(row, q, 0, scales, 0);
  assert.equal(scales[0], Math.fround(2.54 / 127));
  assert.equal(q[5], -127);
  assert.equal(scales[1], 0);
  assert.ok(q.subarray(INT8_GROUP, 2 * INT8_GROUP).every((v) => v === 0));
  assert.equal(scales[2], Math.fround(6e-3 / 127));
  for (let c = 0; c < row.length; c++) {
    const s = scales[Math.floor(c / INT8_GROUP)]!;
    assert.ok(Math.abs(row[c]! - q[c]! * s) <= s / 2 + 1e-12, `column ${c}`);
  }

  const data = Float32Array.from(row);
  const m = (name: string) => ({ name, rows: 1, cols: row.length, dtype: 'F32' as const, data });
  const int8 = new JsBackend('int8');
  const key = int8.matrix(m('blocks.0.att.key.weight')) as unknown as { data: Float32Array };
  for (let c = 0; c < row.length; c++) assert.equal(key.data[c], Math.fround(q[c]! * scales[Math.floor(c / INT8_GROUP)]!));
  const lora = int8.matrix(m('blocks.0.att.w1')) as unknown as { data: Uint16Array };
  assert.ok(lora.data instanceof Uint16Array, 'LoRA factors stay bf16');
  const f16 = new JsBackend('f16').matrix(m('head.weight')) as unknown as { data: Float32Array };
  for (let c = 0; c < row.length; c++) assert.equal(f16.data[c], f16ToNumber(numberToF16(data[c]!)));
});
