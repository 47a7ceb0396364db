/**
 * Sampler benchmark: milliseconds per token of `Sampler.sample` with the default settings (GENERATE_DEFAULTS and
 * CHAT_DEFAULTS) at V = 65536, for flat and peaked logit vectors, against the previous sort-based implementation
 * (kept here as `referenceSamplingDistribution`, which the tests also use as the oracle). Medians over many calls.
 *
 *   npx tsx bench/sampler.ts [--calls 200] [--ref-calls 20]
 *
 * Also run by `npm run bench` (bench/run.ts). The CPU-time column is the steadier one when other processes share
 * the cores; the last line times the float64 softmax alone (V calls of Math.exp), which the exact reproduction of
 * the package's arithmetic requires and which therefore bounds the sampler from below.
 */
import { pathToFileURL } from 'node:url';
import {
  Sampler, Rng, PenaltyTracker, GENERATE_DEFAULTS, CHAT_DEFAULTS, argmax, type SamplingOptions,
} from '../src/runtime/sampler.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { UserError } from '../src/errors.js';

/**
 * The sampling distribution exactly as computed before the O(V) rewrite: softmax in float64, candidates sorted with
 * a comparator (probability descending, id ascending), top-p cutoff by the cumulative sum in that order, top-k,
 * ** (1/temperature), renormalised.
 */
export function referenceSamplingDistribution(logits: ArrayLike<number>, temperature: number, topP: number, topK: number): { ids: number[]; probs: number[] } {
  const V = logits.length;
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i]! > max) max = logits[i]!;
  if (max === -Infinity) throw new UserError('cannot sample: every token is banned');
  const p = new Float64Array(V);
  let sum = 0;
  for (let i = 0; i < V; i++) {
    const e = Math.exp(logits[i]! - max);
    p[i] = e;
    sum += e;
  }
  for (let i = 0; i < V; i++) p[i]! /= sum;
  const eps = topP < 1 ? (1 - topP) / V : 0;
  const cand: number[] = [];
  for (let i = 0; i < V; i++) if (p[i]! > 0 && p[i]! >= eps) cand.push(i);
  cand.sort((a, b) => p[b]! - p[a]! || a - b);
  let cutoff = 0;
  if (topP < 1) {
    let cum = 0;
    for (const id of cand) {
      cum += p[id]!;
      if (cum >= topP) { cutoff = p[id]!; break; }
    }
  }
  let kept = cand.filter((id) => p[id]! >= cutoff);
  if (topK > 0 && kept.length > topK) kept = kept.slice(0, topK);
  const probs = kept.map((id) => (temperature === 1 ? p[id]! : p[id]! ** (1 / temperature)));
  let total = 0;
  for (const q of probs) total += q;
  if (!(total > 0) || !Number.isFinite(total)) return { ids: [kept[0]!], probs: [1] };
  return { ids: kept, probs: probs.map((q) => q / total) };
}

/** The previous `Sampler` (bans, penalties, greedy or reference distribution + one random number), for comparison. */
export class ReferenceSampler {
  private readonly rng: Rng;
  private readonly penalties: PenaltyTracker;
  constructor(private readonly opts: SamplingOptions, seed: number, private readonly weightOf: (token: number) => number) {
    this.rng = new Rng(seed);
    this.penalties = new PenaltyTracker(opts.presencePenalty, opts.frequencyPenalty, opts.penaltyDecay);
  }
  sample(logits: Float32Array): number {
    const x = new Float64Array(logits);
    for (const t of this.opts.banTokens ?? []) if (t < x.length) x[t] = -Infinity;
    this.penalties.apply(x);
    let token: number;
    if (this.opts.temperature === 0) token = argmax(x);
    else {
      const { ids, probs } = referenceSamplingDistribution(x, this.opts.temperature, this.opts.topP, this.opts.topK);
      const u = this.rng.next();
      let acc = 0;
      token = ids[ids.length - 1]!;
      for (let i = 0; i < ids.length; i++) {
        acc += probs[i]!;
        if (u < acc) { token = ids[i]!; break; }
      }
    }
    this.penalties.record(token, this.weightOf(token));
    return token;
  }
}

/** Logit vectors of the shapes the benchmark (and the tests) use. */
export function makeLogits(kind: 'flat' | 'gaussian' | 'dominant', V: number, rng: Rng): Float32Array {
  const x = new Float32Array(V);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  for (let i = 0; i < V; i++) {
    if (kind === 'flat') x[i] = rng.next(); // random small logits: nearly every token is in the nucleus
    else if (kind === 'gaussian') x[i] = 3 * gauss(); // real-model-like: a heavy head, a long tail
    else x[i] = rng.next();
  }
  if (kind === 'dominant') x[Math.floor(rng.next() * V)] = 20; // one token holds almost all the mass
  return x;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/**
 * ms per `sample` call, median over batches of `batch` calls (each call on the next of a few pre-built logit
 * vectors): wall-clock time, and the process's CPU time (less disturbed when other processes share the cores).
 */
function timeSampler(sample: (logits: Float32Array) => number, inputs: Float32Array[], calls: number, batch = 5): { wall: number; cpu: number } {
  for (let i = 0; i < Math.min(10, calls); i++) sample(inputs[i % inputs.length]!); // warm-up (JIT)
  const wall: number[] = [], cpu: number[] = [];
  for (let i = 0; i < calls; i += batch) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let k = 0; k < batch; k++) sample(inputs[(i + k) % inputs.length]!);
    wall.push((performance.now() - t0) / batch);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000 / batch);
  }
  return { wall: median(wall), cpu: median(cpu) };
}

export async function runSamplerBench(argv: string[] = []): Promise<void> {
  const opt = (name: string, def: number) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? Number(argv[i + 1]) : def; };
  const calls = opt('calls', 200);
  const refCalls = opt('ref-calls', 20);
  const V = 65536;
  const tok = WorldTokenizer.default();
  const rng = new Rng(1);
  // Penalties use the decoded text only to choose the weight; the benchmark weighs every token 1.
  const weightOf = () => 1;
  console.log(`\nsampler: ms per token at V = ${V}, median of ${calls} calls (old sort-based: ${refCalls} calls)`);
  console.log('| settings | logits | old ms (wall / cpu) | new ms (wall / cpu) | speed-up (cpu) |');
  console.log('|---|---|---|---|---|');
  const fmt = (t: { wall: number; cpu: number }, d: number) => `${t.wall.toFixed(d)} / ${t.cpu.toFixed(d)}`;
  for (const [name, defaults] of [['generate', GENERATE_DEFAULTS], ['chat', CHAT_DEFAULTS]] as const) {
    for (const kind of ['flat', 'gaussian', 'dominant'] as const) {
      // 32 different vectors, so that the repetition penalties (part of the defaults) spread over many tokens and
      // do not flatten a peaked distribution by penalising its one dominant token call after call.
      const inputs = Array.from({ length: 32 }, () => makeLogits(kind, V, rng));
      const fresh = new Sampler({ ...defaults, seed: 7 }, tok);
      const ref = new ReferenceSampler(defaults, 7, weightOf);
      const tNew = timeSampler((l) => fresh.sample(l), inputs, calls);
      const tOld = timeSampler((l) => ref.sample(l), inputs, refCalls, 1);
      console.log(`| ${name} | ${kind} | ${fmt(tOld, 1)} | ${fmt(tNew, 3)} | ×${(tOld.cpu / tNew.cpu).toFixed(1)} |`);
    }
  }
  // The floor: the float64 softmax alone (V calls of Math.exp), which both versions compute identically.
  const x = makeLogits('flat', V, rng);
  const p = new Float64Array(V);
  const soft = () => {
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (x[i]! > max) max = x[i]!;
    let sum = 0;
    for (let i = 0; i < V; i++) { const e = Math.exp(x[i]! - max); p[i] = e; sum += e; }
    for (let i = 0; i < V; i++) p[i]! /= sum;
    return 0;
  };
  console.log(`softmax alone (max, ${V} × Math.exp, divide), ms (wall / cpu): ${fmt(timeSampler(soft, [x], calls), 3)}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await runSamplerBench(process.argv.slice(2));
