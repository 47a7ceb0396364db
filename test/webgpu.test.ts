/**
 * WebGPU backend: kernels against the js reference backend on random data, and the golden files end to end.
 * Without a GPU this runs on SwiftShader (.ci/setup-swiftshader.sh; exports VK_ICD_FILENAMES/LD_LIBRARY_PATH).
 * No adapter: skipped locally, a failure under CI.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Backend, Buf, HostMatrix, WeightDType } from '../src/backends/kernels.js';
import { JsBackend } from '../src/backends/js/index.js';
import { dequantizeBlocks, matrixBlocks } from '../src/backends/quant.js';
import { createWebGpuBackend, GPU_TUNING, type Tuning } from '../src/backends/webgpu/index.js';
import { numberToBf16 as f32ToBf16, numberToF16 as f32ToF16 } from '../src/formats/dtype.js';
import { loadModel } from '../src/runtime/load.js';
import { verifyGolden, type VerifyMode } from '../src/runtime/verify.js';

const shared = fileURLToPath(new URL('../../shared/', import.meta.url));
const repo = fileURLToPath(new URL('../', import.meta.url));

let reason: string | undefined;
try {
  const b = await createWebGpuBackend({ dtype: 'f32' });
  await b.dispose();
} catch (e) {
  reason = (e as Error).message;
}
if (reason && process.env.CI) {
  test('webgpu adapter available under CI', () => assert.fail(`no WebGPU adapter under CI: ${reason} (did .ci/setup-swiftshader.sh run?)`));
}
const skip = reason ? `no WebGPU adapter (${reason}); run: eval "$(.ci/setup-swiftshader.sh)"` : false;
if (skip && !process.env.CI) console.log(`# webgpu tests skipped: ${skip}`);

// ---- helpers ----

let seed = 12345;
function rand(): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 2 ** 32;
}
function rnd(n: number, lo = -1, hi = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rand();
  return a;
}
function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}
function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const v of a) m = Math.max(m, Math.abs(v));
  return m;
}

/** Runs the same ops on the webgpu and js backends from the same host data and compares chosen outputs. */
class Pair {
  constructor(readonly g: Backend, readonly j: Backend) {}
  buf(data: Float32Array): [Buf, Buf] {
    const a = this.g.buffer(data.length), b = this.j.buffer(data.length);
    this.g.write(a, data);
    this.j.write(b, data);
    return [a, b];
  }
  async expectClose(bufs: [Buf, Buf], tol: number, what: string): Promise<void> {
    const [x, y] = [await this.g.read(bufs[0]), await this.j.read(bufs[1])];
    const d = maxAbsDiff(x, y) / Math.max(1, maxAbs(y));
    assert.ok(d <= tol, `${what}: max deviation ${d} > ${tol}`);
  }
}

/** Same matrix for both backends: js gets the dequantized values where it cannot store the type itself. */
function matrixPair(dtype: WeightDType, rows: number, cols: number): [HostMatrix, HostMatrix] {
  const f = rnd(rows * cols);
  switch (dtype) {
    case 'f32': {
      const m: HostMatrix = { name: 'w', rows, cols, dtype: 'F32', data: f };
      return [m, m];
    }
    case 'bf16': {
      const m: HostMatrix = { name: 'w', rows, cols, dtype: 'BF16', data: Uint16Array.from(f, f32ToBf16) };
      return [m, m];
    }
    case 'f16': {
      // js widens F16 host matrices exactly to f32
      const m: HostMatrix = { name: 'w', rows, cols, dtype: 'F16', data: Uint16Array.from(f, f32ToF16) };
      return [m, m];
    }
    case 'int8': {
      const d = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) {
        let max = 0;
        for (let c = 0; c < cols; c++) max = Math.max(max, Math.abs(f[r * cols + c]!));
        const s = max / 127;
        for (let c = 0; c < cols; c++) d[r * cols + c] = Math.round(f[r * cols + c]! / s) * s;
      }
      return [{ name: 'w', rows, cols, dtype: 'F32', data: f }, { name: 'w', rows, cols, dtype: 'F32', data: d }];
    }
    case 'q4':
    case 'q8_0': {
      // the ggml blocks every backend stores (src/backends/quant.ts), dequantized exactly for js
      const m: HostMatrix = { name: 'w', rows, cols, dtype: 'F32', data: f };
      return [m, { name: 'w', rows, cols, dtype: 'F32', data: dequantizeBlocks(matrixBlocks(m, dtype), dtype, rows, cols) }];
    }
  }
}

async function withPair(dtype: WeightDType, fn: (p: Pair) => Promise<void>, tuning?: Tuning, maxBindingBytes?: number): Promise<void> {
  const g = await createWebGpuBackend({ dtype }, { tuning, maxBindingBytes });
  try {
    await fn(new Pair(g, new JsBackend('f32')));
  } finally {
    await g.dispose();
  }
}

// ---- kernels ----

describe('webgpu kernels vs js', { skip }, () => {
  for (const dtype of ['f32', 'f16', 'bf16', 'int8', 'q4', 'q8_0'] as const) {
    for (const tuning of ['default', 'gpu'] as const) {
      test(`matmul ${dtype} (${tuning} kernels): T = 1, 3, 5, 19; ragged cols; bias, activations, accumulate`, async () => {
        await withPair(dtype, async (p) => {
          for (const [rows, cols] of [[70, 45], [33, 64]] as const) {
            const [hg, hj] = matrixPair(dtype, rows, cols);
            const Wg = p.g.matrix(hg), Wj = p.j.matrix(hj);
            for (const T of [1, 3, 5, 19]) {
              const x = p.buf(rnd(T * cols));
              const bias = p.buf(rnd(rows));
              const variants = [{}, { act: 'tanh', bias: true }, { act: 'sigmoid' }, { act: 'relu2', bias: true }, { accumulate: true }] as const;
              for (const opts of variants) {
                const out = p.buf(rnd(T * rows));
                const withBias = 'bias' in opts;
                const { act, accumulate } = { act: undefined, accumulate: undefined, ...opts };
                p.g.matmul(out[0], x[0], Wg, T, { act, accumulate, bias: withBias ? bias[0] : undefined });
                p.j.matmul(out[1], x[1], Wj, T, { act, accumulate, bias: withBias ? bias[1] : undefined });
                await p.expectClose(out, 2e-5, `${rows}x${cols} T=${T} ${JSON.stringify(opts)}`);
              }
            }
          }
        }, tuning === 'gpu' ? GPU_TUNING : undefined);
      });
    }
  }

  test('matmul split by rows (matrix over the binding limit)', async () => {
    await withPair('bf16', async (p) => {
      const [hg, hj] = matrixPair('bf16', 300, 50); // 100 bytes a row, parts of 64 rows at 6.4 kB
      const Wg = p.g.matrix(hg), Wj = p.j.matrix(hj);
      for (const T of [1, 4, 9]) {
        const x = p.buf(rnd(T * 50));
        const out = p.buf(new Float32Array(T * 300));
        p.g.matmul(out[0], x[0], Wg, T);
        p.j.matmul(out[1], x[1], Wj, T);
        await p.expectClose(out, 2e-5, `split T=${T}`);
      }
    }, GPU_TUNING, 6400);
  });

  test('layerNorm, groupNorm (in place), shiftLerp, decay, lerp, keyPrep, wkv, bonusGate, copy', async () => {
    await withPair('f32', async (p) => {
      for (const [T, H, N] of [[1, 2, 64], [5, 3, 32], [9, 2, 64]] as const) {
        const C = H * N;
        const x = p.buf(rnd(T * C, -2, 2)), w = p.buf(rnd(C)), b = p.buf(rnd(C));
        const out = p.buf(new Float32Array(T * C));
        p.g.layerNorm(out[0], x[0], w[0], b[0], T, C, 1, 1e-5);
        p.j.layerNorm(out[1], x[1], w[1], b[1], T, C, 1, 1e-5);
        await p.expectClose(out, 1e-5, 'layerNorm');
        p.g.layerNorm(x[0], x[0], w[0], b[0], T, C, H, 64e-5);
        p.j.layerNorm(x[1], x[1], w[1], b[1], T, C, H, 64e-5);
        await p.expectClose(x, 1e-5, 'groupNorm in place');

        const shift = p.buf(rnd(C));
        const mixes = [p.buf(rnd(C, 0, 1)), p.buf(rnd(C, 0, 1))];
        const outs = [p.buf(new Float32Array(T * C)), p.buf(new Float32Array(T * C))];
        p.g.shiftLerp(outs.map((o) => o[0]), x[0], shift[0], mixes.map((m) => m[0]), T, C);
        p.j.shiftLerp(outs.map((o) => o[1]), x[1], shift[1], mixes.map((m) => m[1]), T, C);
        for (const o of outs) await p.expectClose(o, 1e-6, 'shiftLerp');
        await p.expectClose(shift, 1e-6, 'shiftLerp shift');

        const dw = p.buf(rnd(T * C, -3, 3)), w0 = p.buf(rnd(C, -3, 3));
        p.g.decay(dw[0], w0[0], T, C);
        p.j.decay(dw[1], w0[1], T, C);
        await p.expectClose(dw, 1e-6, 'decay');

        const lx = p.buf(rnd(T * C)), lt = p.buf(rnd(T * C)), lg = p.buf(rnd(T * C, 0, 1));
        p.g.lerpInPlace(lx[0], lt[0], lg[0], T * C);
        p.j.lerpInPlace(lx[1], lt[1], lg[1], T * C);
        await p.expectClose(lx, 1e-6, 'lerpInPlace');

        const k = p.buf(rnd(T * C)), a = p.buf(rnd(T * C, 0, 1)), kK = p.buf(rnd(C)), kA = p.buf(rnd(C));
        const kk = p.buf(new Float32Array(T * C));
        p.g.keyPrep(kk[0], k[0], a[0], kK[0], kA[0], T, C, N);
        p.j.keyPrep(kk[1], k[1], a[1], kK[1], kA[1], T, C, N);
        await p.expectClose(kk, 1e-6, 'keyPrep kk');
        await p.expectClose(k, 1e-6, 'keyPrep k');

        // wkv twice: with a decay fresh from `decay` (kept as 1 - w inside the backend) and with a plain w
        const S = p.buf(rnd(H * N * N, -0.5, 0.5)), r = p.buf(rnd(T * C)), v = p.buf(rnd(T * C));
        const y = p.buf(new Float32Array(T * C));
        const wr = p.buf(rnd(T * C, -3, 3));
        p.g.decay(wr[0], w0[0], T, C);
        p.j.decay(wr[1], w0[1], T, C);
        for (const wb of [wr, dw]) {
          p.g.wkv(S[0], r[0], wb[0], k[0], v[0], kk[0], a[0], y[0], T, C, N);
          p.j.wkv(S[1], r[1], wb[1], k[1], v[1], kk[1], a[1], y[1], T, C, N);
          await p.expectClose(y, 1e-5, 'wkv y');
          await p.expectClose(S, 1e-5, 'wkv S');
        }
        await p.expectClose(wr, 1e-6, 'decay after wkv');

        const rK = p.buf(rnd(C)), g = p.buf(rnd(T * C));
        p.g.bonusGate(y[0], r[0], k[0], v[0], rK[0], g[0], T, C, N);
        p.j.bonusGate(y[1], r[1], k[1], v[1], rK[1], g[1], T, C, N);
        await p.expectClose(y, 1e-5, 'bonusGate');

        p.g.copy(out[0], y[0], C - 3, 3, 2);
        p.j.copy(out[1], y[1], C - 3, 3, 2);
        p.g.copy(out[0], out[0], 10, 0, 5);
        p.j.copy(out[1], out[1], 10, 0, 5);
        await p.expectClose(out, 1e-6, 'copy');
        const part = await p.g.read(out[0], 4, 7);
        assert.deepEqual(part, (await p.g.read(out[0])).subarray(4, 11));
      }
    });
  });
});

// ---- golden files ----

interface Golden { model: string; golden: string }
const tiny = (n: string): Golden => ({ model: `fixtures/models/${n}.pth`, golden: `fixtures/golden/${n}.golden.safetensors` });
const GOLDEN: Golden[] = [
  tiny('tiny-l2-d128'), tiny('tiny-l2-d96-h32'), tiny('tiny-l3-d256'),
  { model: 'models/rwkv7-storyteller-L6-D192.pth', golden: 'fixtures/golden/storyteller.text.safetensors' },
];

async function checkGolden(g: Golden, dtype: WeightDType, modes: VerifyMode[], tol: number): Promise<void> {
  const { model } = await loadModel(shared + g.model, { backend: 'webgpu', dtype });
  try {
    const r = await verifyGolden(model, shared + g.golden, modes);
    for (const gr of r.groups) assert.ok(gr.max_deviation <= tol, `${g.golden} ${gr.name} ${gr.mode} ${dtype}: deviation ${gr.max_deviation} > ${tol}`);
  } finally {
    await model.backend.dispose();
  }
}

describe('webgpu golden', { skip }, () => {
  before(() => { process.env.RWKV7_WEBGPU_ALLOW_SOFTWARE = '1'; });
  after(() => { delete process.env.RWKV7_WEBGPU_ALLOW_SOFTWARE; });
  for (const g of GOLDEN) {
    test(`f32 ${g.golden} (rnn, seq) ≤ 5e-5`, () => checkGolden(g, 'f32', ['rnn', 'seq'], 5e-5));
  }
  // 16-bit weights: every golden file in sequence mode, and both modes on the head-size-32 model (SwiftShader is slow).
  for (const dtype of ['f16', 'bf16'] as const) {
    for (const g of GOLDEN) {
      const modes: VerifyMode[] = g === GOLDEN[1] ? ['rnn', 'seq'] : ['seq'];
      test(`${dtype} ${g.golden} (${modes.join(', ')}) ≤ 5e-3`, () => checkGolden(g, dtype, modes, 5e-3));
    }
  }
});

// ---- no adapter ----

test('forced webgpu without an adapter: a clear error, exit 1; auto falls back to wasm', () => {
  const script = `
    import { createBackend } from './src/backends/index.ts';
    import { UserError } from './src/errors.ts';
    const b = await createBackend('auto', { log: (m) => console.log('notice: ' + m) });
    console.log('auto -> ' + b.name);
    await b.dispose();
    try { await createBackend('webgpu'); console.log('unexpected adapter'); }
    catch (e) { if (e instanceof UserError) { console.error('rwkv7: ' + e.message); process.exit(e.exitCode); } throw e; }
  `;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: repo,
    env: { ...process.env, VK_ICD_FILENAMES: '/nonexistent.json', RWKV7_WEBGPU_ALLOW_SOFTWARE: '' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 1, `exit status ${r.status}\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /notice: .*(no WebGPU adapter|software|no Vulkan loader).*using the wasm CPU backend/);
  assert.match(r.stdout, /auto -> (wasm|js)/);
  assert.match(r.stderr, /rwkv7: --backend webgpu: no WebGPU adapter found/);
});
