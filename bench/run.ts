/**
 * `npm run bench`: the CPU table — wasm backend, dtype × threads → prefill/decode tok/s and the share of the
 * memory read bandwidth that decode reaches (probed by each wasm backend with its own threads:
 * WasmBackend.probeBandwidth), with the js backend measured in the same session for the ratio. Not a test; takes a
 * few minutes.
 *
 *   npm run bench -- [--synthetic 0.1b] [--prefill 512] [--decode 128] [--runs 3] [--threads 1,2] [--dtypes bf16,int8,q4,q4+a8]
 *
 * `q4+a8`: q4 weights with `--activations q8` (8-bit inputs, integer kernels).
 */
import { availableParallelism } from 'node:os';
import { runBench, type BenchResult } from '../src/cli/bench.js';
import { pairedDecode } from './paired.js';
import type { ActivationMode, WeightDType } from '../src/backends/kernels.js';

const args = process.argv.slice(2);
const opt = (name: string, def: string) => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1]! : def; };
const synthetic = opt('synthetic', '0.1b');
const prefill = Number(opt('prefill', '512'));
const decode = Number(opt('decode', '128'));
const runs = Number(opt('runs', '3'));
const cores = availableParallelism();
const threadList = opt('threads', [...new Set([1, cores])].join(',')).split(',').map(Number);
const dtypes = opt('dtypes', 'f32,bf16,f16,int8,q8_0,q4,q4+a8').split(',');
/** 'q4+a8' → q4 weights, activations q8. */
const parseDType = (d: string): [WeightDType, ActivationMode] => (d.endsWith('+a8') ? [d.slice(0, -3) as WeightDType, 'q8'] : [d as WeightDType, 'full']);
const label = (r: BenchResult) => (r.activations === 'q8' ? `${r.dtype}+a8` : r.dtype);

const rows: BenchResult[] = [];
const line = (r: BenchResult) =>
  `| ${r.backend.padEnd(5)} | ${label(r).padEnd(5)} | ${String(r.threads).padStart(7)} | ${r.prefill_tok_s.toFixed(1).padStart(13)} | ` +
  `${r.decode_tok_s.toFixed(1).padStart(12)} | ${(r.weight_bytes_per_token / 1e6).toFixed(0).padStart(8)} | ${r.decode_gb_s.toFixed(2).padStart(6)} | ` +
  `${r.bandwidth_gb_s !== undefined ? r.bandwidth_gb_s.toFixed(1).padStart(8) : '       -'} | ${r.decode_bw_pct !== undefined ? `${r.decode_bw_pct.toFixed(0).padStart(9)}%` : '         -'} |`;

console.log(`synthetic ${synthetic}: prefill ${prefill} tokens, decode ${decode} tokens, median of ${runs} runs; ${cores} cores`);
console.log('| backend | dtype | threads | prefill tok/s | decode tok/s | MB/token | GB/s | probed GB/s | % of probed |');
console.log('|---|---|---|---|---|---|---|---|---|');
// js backend: the plain reference (bf16 weights, single thread); a shorter run, it is slow.
const js = await runBench({ synthetic, backend: 'js', dtype: 'bf16', prefill: Math.min(prefill, 32), decode: Math.min(decode, 8), runs: 1 });
rows.push(js);
console.log(line(js));
for (const d of dtypes) {
  const [dtype, activations] = parseDType(d);
  for (const threads of threadList) {
    const r = await runBench({ synthetic, backend: 'wasm', dtype, activations, threads, prefill, decode, runs });
    rows.push(r);
    console.log(line(r));
  }
}
const best = rows.filter((r) => r.backend === 'wasm' && r.dtype === 'bf16').sort((a, b) => b.decode_tok_s - a.decode_tok_s)[0];
if (best) {
  console.log(`\nwasm bf16 vs js bf16: decode ×${(best.decode_tok_s / js.decode_tok_s).toFixed(1)}, prefill ×${(best.prefill_tok_s / js.prefill_tok_s).toFixed(1)}`);
}
// 4-bit vs 8-bit decode at each thread count (the issue-14 target: q4 ≥ 1.5× int8 with 2 threads): from the table
// (separate runs), then side by side (both models resident, decode in alternating blocks: bench/paired.ts)
for (const threads of threadList) {
  const at = (d: string) => rows.find((r) => r.backend === 'wasm' && label(r) === d && r.threads === threads);
  const i8 = at('int8');
  for (const d of ['q4', 'q4+a8']) {
    const q4 = at(d);
    if (q4 && i8) console.log(`wasm ${d} vs int8, ${threads} thread(s): decode ×${(q4.decode_tok_s / i8.decode_tok_s).toFixed(2)}, prefill ×${(q4.prefill_tok_s / i8.prefill_tok_s).toFixed(2)}`);
  }
  // side by side: q4+a8 against int8, and f16 against bf16 (the issue-15 target: within 5%)
  for (const [a, b, cb] of [['int8', 'q4+a8', { dtype: 'q4', activations: 'q8' }], ['bf16', 'f16', { dtype: 'f16' }]] as const) {
    if (!at(a) || !at(b)) continue;
    const p = await pairedDecode(synthetic, threads, { dtype: a }, cb);
    console.log(`wasm ${b} vs ${a} side by side, ${threads} thread(s), ${p.rounds} rounds of 16 tokens each: ` +
      `decode ${p.b_tok_s.toFixed(1)} vs ${p.a_tok_s.toFixed(1)} tok/s (×${(p.b_tok_s / p.a_tok_s).toFixed(2)}), median round ×${p.median_ratio.toFixed(2)}`);
  }
}

// The sampler's cost per token at V = 65536 with the default settings, old sort-based vs current (bench/sampler.ts).
await (await import('./sampler.js')).runSamplerBench();
