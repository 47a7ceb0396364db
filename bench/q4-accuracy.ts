/**
 * Q4_0 (symmetric: w = (q - 8)·d, 18 bytes per 32 values; what `--dtype q4` stores) against a per-block-offset
 * scheme of ggml's Q4_1 kind (w = q·d + m, d = (max - min)/15, m = min, both f16: 20 bytes per 32 values) on the
 * storyteller model: perplexity of the storyteller passage (first 1024 tokens) and the golden deviation, computed
 * by the js backend (float64, so the weights are the only error). LoRA factors stay bf16 in both, as q4 keeps them.
 * Not a test.
 *
 *   npx tsx bench/q4-accuracy.ts
 */
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { JsBackend } from '../src/backends/js/index.js';
import { hostMatrixReader } from '../src/backends/host-matrix.js';
import { dequantizeBlocks, matrixBlocks, storageDType } from '../src/backends/quant.js';
import type { HostMatrix, Mat } from '../src/backends/kernels.js';
import { f16ToNumber, numberToF16 } from '../src/formats/dtype.js';
import { openCheckpoint } from '../src/formats/index.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { loadWeights } from '../src/model/weights.js';
import { RWKV7 } from '../src/model/rwkv7.js';
import { perplexity } from '../src/runtime/metrics.js';
import { verifyGolden } from '../src/runtime/verify.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';

const shared = (p: string) => fileURLToPath(new URL(`../../shared/${p}`, import.meta.url));
const PTH = shared('models/rwkv7-storyteller-L6-D192.pth');
const GOLDEN = shared('fixtures/golden/storyteller.text.safetensors');
const PASSAGE = shared('fixtures/golden/storyteller.text.passage.txt');

type Dequant = (m: HostMatrix) => Float32Array;

const q4_0: Dequant = (m) => dequantizeBlocks(matrixBlocks(m, 'q4'), 'q4', m.rows, m.cols);

/** Q4_1-like: per block of 32, d = (max - min) / 15 and m = min as f16, q = round((x - m) / d) in 0..15. */
const q4_1: Dequant = (m) => {
  const get = hostMatrixReader(m);
  const out = new Float32Array(m.rows * m.cols);
  for (let r = 0; r < m.rows; r++) {
    for (let c0 = 0; c0 < m.cols; c0 += 32) {
      const c1 = Math.min(m.cols, c0 + 32);
      let lo = Infinity, hi = -Infinity;
      for (let c = c0; c < c1; c++) { const v = get(r * m.cols + c); lo = Math.min(lo, v); hi = Math.max(hi, v); }
      const d = f16ToNumber(numberToF16((hi - lo) / 15)), mn = f16ToNumber(numberToF16(lo));
      for (let c = c0; c < c1; c++) {
        const q = d ? Math.max(0, Math.min(15, Math.round((get(r * m.cols + c) - mn) / d))) : 0;
        out[r * m.cols + c] = Math.fround(q * d + mn);
      }
    }
  }
  return out;
};

class Dequantized extends JsBackend {
  constructor(private readonly deq?: Dequant) {
    super('f32');
  }
  override matrix(m: HostMatrix): Mat {
    if (!this.deq || storageDType('q4', m.name) !== 'q4') return super.matrix(m);
    return super.matrix({ name: m.name, rows: m.rows, cols: m.cols, dtype: 'F32', data: this.deq(m) });
  }
}

const tok = WorldTokenizer.default();
const ids = Int32Array.from(tok.encode(readFileSync(PASSAGE, 'utf8')).slice(0, 1025));
console.log('| weights | bytes / 32 values | perplexity (1024 tokens) | golden max deviation (seq) |');
console.log('|---|---|---|---|');
for (const [label, bytes, deq] of [['bf16', 64, undefined], ['Q4_0 (q4)', 18, q4_0], ['Q4_1-like (offset)', 20, q4_1]] as const) {
  const ck = openCheckpoint(PTH);
  const config = configFromCheckpoint(ck);
  const b = new Dequantized(deq);
  const model = new RWKV7(b, config, loadWeights(ck, config, b));
  ck.close();
  const { perplexity: ppl } = await perplexity(model, ids);
  const g = await verifyGolden(model, GOLDEN, ['seq']);
  console.log(`| ${label} | ${bytes} | ${ppl.toFixed(4)} | ${g.max_deviation.toExponential(2)} |`);
}
