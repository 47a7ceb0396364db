import type { Command } from 'commander';
import { checkActivations, createBackend, parseActivationMode, parseBackendName, parseWeightDType, type BackendName } from '../backends/index.js';
import type { ActivationMode, WeightDType } from '../backends/kernels.js';
import { loadModel } from '../runtime/load.js';
import { resolveModelArg } from '../platform/models.js';
import { syntheticModel } from '../runtime/synthetic.js';
import { matrixShapes } from '../runtime/fit.js';
import type { RWKV7 } from '../model/rwkv7.js';
import type { ModelConfig } from '../model/config.js';
import { UserError } from '../errors.js';
import { parseInteger } from './common.js';
import { Sampler, GENERATE_DEFAULTS } from '../runtime/sampler.js';
import { WorldTokenizer } from '../tokenizer/index.js';

export interface BenchOptions {
  model?: string;
  synthetic?: string;
  backend?: BackendName;
  dtype?: WeightDType;
  /** Inputs of q4 products (BackendOptions.activations). */
  activations?: ActivationMode;
  threads?: number;
  prefill?: number;
  decode?: number;
  runs?: number;
  /** Sequences side by side in every forward pass (default 1); rates are then the aggregate over all of them. */
  batch?: number;
  /**
   * Also measure decode with sampling: `rwkv7 generate`'s default sampler (GENERATE_DEFAULTS) run on every step's
   * logits (each sequence's, with a batch), the sampled token fed back. Its steps alternate with the plain ones in
   * blocks (timedDecode), so that both figures see the same host load.
   */
  sample?: boolean;
}

export interface BenchResult {
  backend: string;
  dtype: WeightDType;
  /** Present when not the default `full`: the inputs of q4 products were rounded to 8 bits. */
  activations?: ActivationMode;
  threads: number;
  prefill_tok_s: number;
  decode_tok_s: number;
  weight_bytes_per_token: number;
  decode_gb_s: number;
  /** Present when the batch is larger than 1: prefill_tok_s and decode_tok_s are then summed over the sequences. */
  batch?: number;
  /** wasm: memory read bandwidth probed on this backend instance (its threads), GB/s (WasmBackend.probeBandwidth). */
  bandwidth_gb_s?: number;
  /** wasm: decode_gb_s as a percentage of bandwidth_gb_s. */
  decode_bw_pct?: number;
  /** With `sample`: decode tok/s with the default sampler choosing every token (median over runs, like decode_tok_s). */
  decode_sampled_tok_s?: number;
  /** With `sample`: how much slower sampled decode is than plain decode, in % of decode_tok_s (100 · (1 - sampled / plain)). */
  sampling_overhead_pct?: number;
}

/** The median of a non-empty list. */
export const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };

/** Bytes of weights one decode step reads: what the backend reports, else the matrix sizes × the dtype's width. */
function weightBytes(model: RWKV7, config: ModelConfig, dtype: WeightDType): number {
  const wb = (model.backend as { weightBytes?: number }).weightBytes;
  if (typeof wb === 'number' && wb > 0) return wb;
  const per = { f32: 4, bf16: 2, f16: 2, int8: 1 + 4 / 64, q8_0: 34 / 32, q4: 18 / 32 }[dtype];
  return matrixShapes(config).reduce((s, [r, c]) => s + r * c * per, 0);
}

/** Steps of plain and of sampled decode alternate in blocks of this many (see timedDecode). */
const SAMPLE_BLOCK = 8;

/**
 * Runs `D` plain decode steps and, given `sampledStep`, `D` sampled ones; returns the milliseconds each kind took.
 * Alone, the plain steps run in one timed stretch. With sampled steps the two kinds alternate in blocks of
 * SAMPLE_BLOCK, each block timed, in the order ABBA… (`sampledFirst` swaps it; bench flips it every other run):
 * the two figures then see the same host load — on a shared machine it moves by more than the sampler's share of a
 * step — and drift over the run weighs on both alike. The state runs on through all of them (a step's cost does not
 * depend on the position).
 */
async function timedDecode(D: number, sampledFirst: boolean, plainStep: () => Promise<unknown>, sampledStep?: () => Promise<unknown>): Promise<[number, number]> {
  const time = async (n: number, step: () => Promise<unknown>) => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await step();
    return performance.now() - t0;
  };
  if (!sampledStep) return [await time(D, plainStep), 0];
  let tp = 0, ts = 0;
  for (let done = 0, k = 0; done < D; done += SAMPLE_BLOCK, k++) {
    const n = Math.min(SAMPLE_BLOCK, D - done);
    if ((k % 2 === 1) !== sampledFirst) {
      ts += await time(n, sampledStep);
      tp += await time(n, plainStep);
    } else {
      tp += await time(n, plainStep);
      ts += await time(n, sampledStep);
    }
  }
  return [tp, ts];
}

/** Prefill and decode throughput (median over runs) of one backend/dtype/threads configuration. */
export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const dtype = o.dtype ?? 'f32';
  const backendName = o.backend ?? 'auto';
  const P = o.prefill ?? 512, D = o.decode ?? 128, R = Math.max(1, o.runs ?? 3);
  let model: RWKV7, config: ModelConfig;
  checkActivations(dtype, o.activations);
  if (o.synthetic) {
    const backend = await createBackend(backendName, { dtype, activations: o.activations, threads: o.threads });
    ({ model, config } = syntheticModel(o.synthetic, backend));
  } else {
    ({ model, config } = await loadModel(resolveModelArg(o.model), { backend: backendName, dtype, activations: o.activations, threads: o.threads }));
  }
  try {
    const V = config.vocabSize;
    let seed = 12345;
    const tok = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % V; };
    const prompt = Array.from({ length: P }, tok);
    const state = model.newState();
    await model.forward(P > 0 ? prompt.slice(0, Math.min(P, 8)) : [tok()], state); // warm-up (JIT, first-touch)
    const warm = await model.forward([tok()], state);
    const pre: number[] = [], dec: number[] = [], sdec: number[] = [];
    const B = Math.max(1, o.batch ?? 1);
    // With `sample`: the default generate sampler, a fresh one per sequence and run (its seed fixed, so runs repeat),
    // built outside the timed steps, warmed up once (its buffers, its kernel). See decodeRun for the timing.
    const tokenizer = o.sample ? WorldTokenizer.default() : undefined;
    const samplers = (r: number) => Array.from({ length: B }, (_, i) => new Sampler({ ...GENERATE_DEFAULTS, seed: 1 + r * B + i }, tokenizer!));
    if (o.sample) samplers(-1)[0]!.sample(warm);
    const decodeRun = async (r: number, plainStep: () => Promise<unknown>, sampledStep: (() => Promise<unknown>) | undefined) => {
      const [tp, ts] = await timedDecode(D, r % 2 === 1, plainStep, sampledStep);
      dec.push((B * D) / (tp / 1000));
      if (sampledStep) sdec.push((B * D) / (ts / 1000));
    };
    if (B > 1) {
      // B sequences in every pass: B prompts prefilled together, then B tokens per decode step.
      const states = Array.from({ length: B }, () => model.newState());
      const prompts = states.map(() => Array.from({ length: P }, tok));
      let logits: Float32Array[] = states.map(() => warm); // (until a pass gives each sequence its own)
      for (let r = 0; r < R; r++) {
        for (const s of states) s.reset();
        const t0 = performance.now();
        if (P > 0) logits = await model.forwardBatch(states.map((st, i) => ({ tokens: prompts[i]!, state: st })));
        pre.push((B * P) / ((performance.now() - t0) / 1000));
        const ss = o.sample ? samplers(r) : [];
        await decodeRun(
          r,
          async () => { logits = await model.forwardBatch(states.map((st) => ({ tokens: [tok()], state: st }))); },
          o.sample ? async () => { logits = await model.forwardBatch(states.map((st, j) => ({ tokens: [ss[j]!.sample(logits[j]!)], state: st }))); } : undefined,
        );
      }
      for (const s of states) s.free();
    }
    let logits = warm;
    for (let r = 0; r < (B > 1 ? 0 : R); r++) {
      state.reset();
      const t0 = performance.now();
      if (P > 0) logits = await model.forward(prompt, state);
      pre.push(P / ((performance.now() - t0) / 1000));
      const s = o.sample ? samplers(r)[0]! : undefined;
      await decodeRun(
        r,
        async () => { logits = await model.forward([tok()], state); },
        s ? async () => { logits = await model.forward([s.sample(logits)], state); } : undefined,
      );
    }
    state.free();
    const wb = weightBytes(model, config, dtype);
    const decode = median(dec);
    const sampledDecode = o.sample ? median(sdec) : undefined;
    const decodeGbS = (wb * decode) / B / 1e9;
    // The memory bandwidth this backend's threads get (wasm only; once per instance, after the timed runs).
    const probe = (model.backend as { probeBandwidth?: () => number }).probeBandwidth;
    const bw = typeof probe === 'function' ? probe.call(model.backend) / 1e9 : undefined;
    return {
      backend: model.backend.name,
      dtype,
      ...(o.activations && o.activations !== 'full' ? { activations: o.activations } : {}),
      threads: (model.backend as { threads?: number }).threads ?? 1,
      prefill_tok_s: P > 0 ? median(pre) : 0,
      decode_tok_s: decode,
      weight_bytes_per_token: wb,
      // Weights are read once per pass: B tokens per pass share one read.
      decode_gb_s: decodeGbS,
      ...(B > 1 ? { batch: B } : {}),
      ...(bw ? { bandwidth_gb_s: bw, decode_bw_pct: (100 * decodeGbS) / bw } : {}),
      ...(sampledDecode !== undefined ? { decode_sampled_tok_s: sampledDecode, sampling_overhead_pct: 100 * (1 - sampledDecode / decode) } : {}),
    };
  } finally {
    await model.backend.dispose();
  }
}

/** "3.2% slower than plain decode" / "1.0% faster …" (a negative overhead is noise). */
const fmtOverhead = (pct: number) => `${Math.abs(pct).toFixed(1)}% ${pct >= 0 ? 'slower' : 'faster'} than plain decode`;

/** Registers `rwkv7 bench`. */
export function register(program: Command): void {
  program
    .command('bench')
    .description('measure prefill and decode speed (tokens/s, weight bytes read per token, implied GB/s and, on wasm, its share of the probed memory bandwidth)')
    .option('--model <path>', 'model checkpoint (default: the bundled model)')
    .option('--synthetic <size>', 'random weights of a real shape instead of a file: 0.1b, 0.4b or 1.5b')
    .option('--backend <name>', 'auto, js, wasm or webgpu', 'auto')
    .option('--dtype <type>', 'weight storage: f32, bf16, f16, int8, q8_0 or q4', 'bf16')
    .option('--activations <mode>', 'inputs of q4 products: full, or q8 (rounded to 8 bits, integer kernels; js and wasm)', 'full')
    .option('--threads <n>', 'CPU threads for the wasm backend (default: all cores)', parseInteger('--threads', 1))
    .option('--prefill <n>', 'prompt tokens for the prefill measurement', parseInteger('--prefill'), 512)
    .option('--decode <n>', 'tokens for the decode measurement', parseInteger('--decode'), 128)
    .option('--runs <n>', 'repetitions (the median is reported)', parseInteger('--runs', 1), 3)
    .option('--batch <n>', 'sequences side by side in each forward pass (rates are the aggregate over all of them)', parseInteger('--batch', 1), 1)
    .option('--sample', "also measure decode with sampling: generate's default sampler picks every token (each sequence's, with --batch)")
    .option('--json', 'print one JSON object')
    .action(async (o: { model?: string; synthetic?: string; backend: string; dtype: string; activations: string; threads?: number; prefill: number; decode: number; runs: number; batch: number; sample?: boolean; json?: boolean }) => {
      if (o.model && o.synthetic) throw new UserError('give either --model or --synthetic, not both');
      if (o.prefill === 0 && o.decode === 0) throw new UserError('nothing to measure: --prefill and --decode are both 0');
      if (o.sample && o.decode === 0) throw new UserError('--sample measures decode: give --decode ≥ 1');
      const r = await runBench({
        model: o.model, synthetic: o.synthetic, backend: parseBackendName(o.backend), dtype: parseWeightDType(o.dtype), activations: parseActivationMode(o.activations),
        threads: o.threads, prefill: o.prefill, decode: o.decode, runs: o.runs, batch: o.batch, sample: o.sample,
      });
      if (o.json) {
        process.stdout.write(JSON.stringify(r) + '\n');
        return;
      }
      const what = o.synthetic ? `synthetic ${o.synthetic}` : (o.model ?? 'bundled model');
      const bw = r.bandwidth_gb_s !== undefined ? r : undefined;
      process.stdout.write(
        `${what}: backend ${r.backend}, dtype ${r.dtype}${r.activations ? `, activations ${r.activations}` : ''}, ${r.threads} thread(s)${r.batch ? `, batch ${r.batch} (aggregate rates)` : ''}\n` +
        (o.prefill > 0 ? `  prefill ${r.prefill_tok_s.toFixed(1)} tok/s (${o.prefill} tokens)\n` : '') +
        (o.decode > 0 ? `  decode  ${r.decode_tok_s.toFixed(1)} tok/s (${o.decode} tokens)${bw ? `: ${bw.decode_bw_pct!.toFixed(0)}% of the memory bandwidth` : ''}\n` : '') +
        (r.decode_sampled_tok_s !== undefined ? `  decode with sampling ${r.decode_sampled_tok_s.toFixed(1)} tok/s (${o.decode} tokens, generate's default sampler): ${fmtOverhead(r.sampling_overhead_pct!)}\n` : '') +
        `  weights read per token ${(r.weight_bytes_per_token / 1e6).toFixed(1)} MB` +
        (o.decode > 0 ? ` → ${r.decode_gb_s.toFixed(2)} GB/s` + (bw ? ` of ${bw.bandwidth_gb_s!.toFixed(1)} GB/s probed with ${r.threads} thread(s) (${bw.decode_bw_pct!.toFixed(0)}%)` : '') : '') + '\n',
      );
    });
}
