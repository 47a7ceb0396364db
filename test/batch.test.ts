/**
 * Batched forward passes: sequences of different lengths run side by side (decode steps and prefill chunks mixed)
 * give what each gives alone — bit for bit on js, within the f32 bound on wasm and webgpu — on the golden files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/runtime/load.js';
import { readGoldenGroups, deviation } from '../src/runtime/verify.js';
import type { RWKV7 } from '../src/model/rwkv7.js';
import type { BackendName } from '../src/backends/index.js';
import { createWebGpuBackend } from '../src/backends/webgpu/index.js';

const shared = fileURLToPath(new URL('../../shared/', import.meta.url));

/**
 * Feeds the golden groups' tokens through `model` in batches: every sequence advances by a step size of its own
 * each pass (1 = decode; larger = prefill chunks), all sequences in one forwardBatch call. Returns, per group, the
 * logits after every step (the positions where a step ended) and the final host state.
 */
async function runBatched(model: RWKV7, groups: { tokens: Int32Array }[], steps: number[]) {
  const states = groups.map(() => model.newState());
  const pos = groups.map(() => 0);
  const ends: number[][] = groups.map(() => []);
  const logits: Float32Array[][] = groups.map(() => []);
  for (;;) {
    const active = groups.map((g, i) => i).filter((i) => pos[i]! < groups[i]!.tokens.length);
    if (active.length === 0) break;
    const items = active.map((i) => {
      const n = Math.min(steps[i % steps.length]!, groups[i]!.tokens.length - pos[i]!);
      return { i, tokens: Array.from(groups[i]!.tokens.subarray(pos[i]!, pos[i]! + n)), state: states[i]! };
    });
    const out = await model.forwardBatch(items);
    items.forEach((it, j) => {
      pos[it.i]! += it.tokens.length;
      ends[it.i]!.push(pos[it.i]! - 1);
      logits[it.i]!.push(out[j]!);
    });
  }
  return { ends, logits, states: await Promise.all(states.map((s) => s.toHost())) };
}

async function runAlone(model: RWKV7, tokens: Int32Array, ends: number[]) {
  const state = model.newState();
  const out: Float32Array[] = [];
  let p = 0;
  for (const e of ends) {
    out.push(await model.forward(Array.from(tokens.subarray(p, e + 1)), state));
    p = e + 1;
  }
  return { logits: out, state: await state.toHost() };
}

const CASES: [string, string, string][] = [
  ['tiny-l2-d96-h32', `${shared}fixtures/models/tiny-l2-d96-h32.pth`, `${shared}fixtures/golden/tiny-l2-d96-h32.golden.safetensors`],
  ['tiny-l3-d256', `${shared}fixtures/models/tiny-l3-d256.pth`, `${shared}fixtures/golden/tiny-l3-d256.golden.safetensors`],
];

// WebGPU runs on SwiftShader without a GPU (.ci/setup-swiftshader.sh): skipped locally without an adapter, required in CI.
let gpuMissing: string | false = false;
try {
  await (await createWebGpuBackend({ dtype: 'f32' })).dispose();
} catch (e) {
  gpuMissing = `no WebGPU adapter (${(e as Error).message})`;
}
if (gpuMissing && process.env.CI) test('webgpu adapter for the batch tests under CI', () => assert.fail(gpuMissing as string));

for (const backend of ['js', 'wasm', 'webgpu'] as BackendName[]) {
  for (const [name, modelPath, golden] of CASES) {
    // SwiftShader is slow: on webgpu, the smallest model, and no one-token steps over the 300-token sequence.
    if (backend === 'webgpu' && name !== CASES[0]![0]) continue;
    const skip = backend === 'webgpu' && gpuMissing;
    const steps = backend === 'webgpu' ? [2, 3, 7, 64, 5] : [1, 3, 7, 64, 1];
    test(`batched = alone on ${backend}: ${name}, five sequences of 1-300 tokens, steps of ${steps.join(', ')}`, { skip }, async () => {
      const { model, config } = await loadModel(modelPath, { backend, dtype: 'f32', threads: 2 });
      try {
        const groups = readGoldenGroups(golden, config.vocabSize);
        const b = await runBatched(model, groups, steps);
        let worst = 0;
        for (let i = 0; i < groups.length; i++) {
          const a = await runAlone(model, groups[i]!.tokens, b.ends[i]!);
          for (let k = 0; k < a.logits.length; k++) {
            if (backend === 'js') assert.deepEqual(b.logits[i]![k], a.logits[k], `${groups[i]!.name} step ${k}`);
            else worst = Math.max(worst, deviation(b.logits[i]![k]!, a.logits[k]!));
          }
          if (backend === 'js') assert.deepEqual(b.states[i], a.state);
          // And both against the golden reference at the step ends.
          const g = groups[i]!;
          const last = b.ends[i]!.at(-1)!;
          const dev = deviation(b.logits[i]!.at(-1)!, g.logits, 0, last * config.vocabSize, config.vocabSize);
          assert.ok(dev <= 5e-5, `${g.name}: ${dev} against golden`);
        }
        assert.ok(worst <= 5e-5, `batched vs alone: ${worst}`);
      } finally {
        await model.backend.dispose();
      }
    });
  }
}
