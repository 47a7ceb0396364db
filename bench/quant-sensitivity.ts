/**
 * How far weight quantization alone moves the logits from the golden outputs: each golden model is run by the js
 * backend (float64 arithmetic, so the only error is the weights') with its Linear weights quantized symmetrically
 * to B bits with one scale per row and G columns (the LoRA factors kept, as the int8 format keeps them), and by
 * the official `rwkv` package's int8 scheme ("fp16i8": per-row and per-column min/range, uint8) for comparison.
 * Prints max over steps of max|Δ|/std(ref), sequence mode, per golden file. Not a test; takes about a minute.
 *
 *   npx tsx bench/quant-sensitivity.ts
 */
import { fileURLToPath } from 'node:url';
import { JsBackend } from '../src/backends/js/index.js';
import { hostMatrixReader } from '../src/backends/host-matrix.js';
import { storageDType } from '../src/backends/quant.js';
import type { HostMatrix, Mat } from '../src/backends/kernels.js';
import { openCheckpoint } from '../src/formats/index.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { loadWeights } from '../src/model/weights.js';
import { RWKV7 } from '../src/model/rwkv7.js';
import { verifyGolden } from '../src/runtime/verify.js';

const shared = (p: string) => fileURLToPath(new URL(`../../shared/${p}`, import.meta.url));
const FILES: Array<[string, string, string]> = [
  ['tiny-l2-d128', 'fixtures/models/tiny-l2-d128.pth', 'fixtures/golden/tiny-l2-d128.golden.safetensors'],
  ['tiny-l2-d96-h32', 'fixtures/models/tiny-l2-d96-h32.pth', 'fixtures/golden/tiny-l2-d96-h32.golden.safetensors'],
  ['tiny-l3-d256', 'fixtures/models/tiny-l3-d256.pth', 'fixtures/golden/tiny-l3-d256.golden.safetensors'],
  ['storyteller', 'models/rwkv7-storyteller-L6-D192.pth', 'fixtures/golden/storyteller.text.safetensors'],
];

type Quantizer = (w: Float64Array, rows: number, cols: number) => void;

/** Symmetric round-to-nearest, `bits` bits, one scale (max|w| / (2^(bits-1) − 1)) per row and `group` columns. */
function symmetric(bits: number, group: number): Quantizer {
  const qmax = 2 ** (bits - 1) - 1;
  return (w, rows, cols) => {
    for (let r = 0; r < rows; r++) {
      for (let g0 = 0; g0 < cols; g0 += group) {
        const b = r * cols, g1 = Math.min(cols, g0 + group);
        let mx = 0;
        for (let c = g0; c < g1; c++) mx = Math.max(mx, Math.abs(w[b + c]!));
        if (mx === 0) continue;
        const s = Math.fround(mx / qmax);
        for (let c = g0; c < g1; c++) w[b + c] = Math.max(-qmax, Math.min(qmax, Math.round(w[b + c]! / s))) * s;
      }
    }
  };
}

/**
 * The `rwkv` pip package's fp16i8, on its [in, out] matrix A = Wᵀ: subtract per-row and per-column minima (order
 * by shape, as the package does), divide by per-column then per-row maxima, store floor(256·a) clipped to 0..255;
 * A ≈ (q + 0.5)/256 · ry · rx + my + mx.
 */
const upstreamInt8: Quantizer = (w, rows, cols) => {
  const I = cols, O = rows;
  const a = (i: number, o: number) => o * I + i; // A[i][o] = W[o][i]
  const my = new Float64Array(I), mx = new Float64Array(O), rx = new Float64Array(O), ry = new Float64Array(I);
  const rowMin = () => { for (let i = 0; i < I; i++) { let m = Infinity; for (let o = 0; o < O; o++) m = Math.min(m, w[a(i, o)]!); my[i] = m; for (let o = 0; o < O; o++) w[a(i, o)]! -= m; } };
  const colMin = () => { for (let o = 0; o < O; o++) { let m = Infinity; for (let i = 0; i < I; i++) m = Math.min(m, w[a(i, o)]!); mx[o] = m; for (let i = 0; i < I; i++) w[a(i, o)]! -= m; } };
  if (I > O) { rowMin(); colMin(); } else { colMin(); rowMin(); }
  for (let o = 0; o < O; o++) { let m = 0; for (let i = 0; i < I; i++) m = Math.max(m, w[a(i, o)]!); rx[o] = m || 1; for (let i = 0; i < I; i++) w[a(i, o)]! /= rx[o]!; }
  for (let i = 0; i < I; i++) { let m = 0; for (let o = 0; o < O; o++) m = Math.max(m, w[a(i, o)]!); ry[i] = m || 1; for (let o = 0; o < O; o++) w[a(i, o)]! /= ry[i]!; }
  for (let i = 0; i < I; i++) {
    for (let o = 0; o < O; o++) {
      const q = Math.max(0, Math.min(255, Math.floor(w[a(i, o)]! * 256)));
      w[a(i, o)] = ((q + 0.5) / 256) * ry[i]! * rx[o]! + my[i]! + mx[o]!;
    }
  }
};

/** The js backend with every int8-eligible matrix passed through `quantize` first (held as f32). */
class QuantizedJsBackend extends JsBackend {
  constructor(private readonly quantize: Quantizer) {
    super('f32');
  }
  override matrix(m: HostMatrix): Mat {
    if (storageDType('int8', m.name) !== 'int8') return super.matrix(m);
    const get = hostMatrixReader(m);
    const w = Float64Array.from({ length: m.rows * m.cols }, (_, i) => get(i));
    this.quantize(w, m.rows, m.cols);
    return super.matrix({ ...m, dtype: 'F32', data: Float32Array.from(w) });
  }
}

const configs: Array<[string, Quantizer]> = [
  ['int8, group 64 (this project)', symmetric(8, 64)],
  ['int8, group 32', symmetric(8, 32)],
  ['int8, group 16', symmetric(8, 16)],
  ['int8, rwkv pip fp16i8', upstreamInt8],
  ['10-bit, group 64', symmetric(10, 64)],
  ['12-bit, group 64', symmetric(12, 64)],
];

console.log(`| weights | ${FILES.map(([n]) => n).join(' | ')} |`);
console.log(`|---|${FILES.map(() => '---').join('|')}|`);
for (const [label, quantize] of configs) {
  const cells: string[] = [];
  for (const [, model, golden] of FILES) {
    const ck = openCheckpoint(shared(model));
    const config = configFromCheckpoint(ck);
    const backend = new QuantizedJsBackend(quantize);
    const rwkv = new RWKV7(backend, config, loadWeights(ck, config, backend));
    ck.close();
    const r = await verifyGolden(rwkv, shared(golden), ['seq']);
    cells.push(r.max_deviation.toExponential(2));
  }
  console.log(`| ${label} | ${cells.join(' | ')} |`);
}
