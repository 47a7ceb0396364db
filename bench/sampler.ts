/**
 * Sampler benchmark: milliseconds per token of `Sampler.sample` — what `generate` calls per token: bans, penalties,
 * the sampling itself and the repetition-penalty bookkeeping — with the default settings (GENERATE_DEFAULTS and
 * CHAT_DEFAULTS) at V = 65536, for flat and peaked logit vectors. Medians over many calls, for the kernel in use
 * (the wasm SIMD softmax, see src/runtime/fast-exp.ts), for the same sampler on plain Math.exp, and for the previous
 * sort-based implementation (kept here as `referenceSamplingDistribution` / `ReferenceSampler`, which the tests also
 * use as the oracle).
 *
 *   npx tsx bench/sampler.ts [--calls 400] [--ref-calls 10]
 *
 * Also run by `npm run bench` (bench/run.ts). The CPU-time column is the steadier one when other processes share
 * the cores; the last lines time the float64 softmax alone (max, V exponentials and their sum).
 */
import { pathToFileURL } from 'node:url';
import {
  Sampler, Rng, GENERATE_DEFAULTS, CHAT_DEFAULTS, argmax, type SamplingOptions,
} from '../src/runtime/sampler.js';
import { forceExpKind, samplerKernel, expKind } from '../src/runtime/fast-exp.js';
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

/** The repetition-penalty bookkeeping as first written (a Map of decayed counts), for the reference sampler. */
export class ReferencePenaltyTracker {
  readonly counts = new Map<number, number>();
  constructor(private readonly presence: number, private readonly frequency: number, private readonly decay: number) {}
  apply(logits: Float32Array | Float64Array): void {
    for (const [t, c] of this.counts) {
      if (t < logits.length) logits[t] = logits[t]! - (this.presence + c * this.frequency);
    }
  }
  record(token: number, weight: number): void {
    for (const [t, c] of this.counts) this.counts.set(t, c * this.decay);
    this.counts.set(token, (this.counts.get(token) ?? 0) + weight);
  }
}

/** The previous `Sampler` (bans, penalties, greedy or reference distribution + one random number), for comparison. */
export class ReferenceSampler {
  private readonly rng: Rng;
  private readonly penalties: ReferencePenaltyTracker;
  constructor(private readonly opts: SamplingOptions, seed: number, private readonly weightOf: (token: number) => number) {
    this.rng = new Rng(seed);
    this.penalties = new ReferencePenaltyTracker(opts.presencePenalty, opts.frequencyPenalty, opts.penaltyDecay);
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
  const calls = opt('calls', 400);
  const refCalls = opt('ref-calls', 10);
  const V = 65536;
  const tok = WorldTokenizer.default();
  const rng = new Rng(1);
  // Penalties use the decoded text only to choose the weight; the reference sampler weighs every token 1.
  const weightOf = () => 1;
  const kind = expKind();
  console.log(`\nsampler: ms per token (Sampler.sample: bans, penalties, sampling, bookkeeping) at V = ${V}, median of ${calls} calls`);
  console.log(`(softmax kernel: ${kind}; the same sampler on Math.exp: ${calls >> 1} calls; the old sort-based sampler: ${refCalls} calls)`);
  console.log(`| settings | logits | ${kind} ms (wall / cpu) | Math.exp ms (wall / cpu) | old sort-based ms (wall / cpu) |`);
  console.log('|---|---|---|---|---|');
  const fmt = (t: { wall: number; cpu: number }, d: number) => `${t.wall.toFixed(d)} / ${t.cpu.toFixed(d)}`;
  // 32 different vectors per shape, so that the repetition penalties (part of the defaults) spread over many tokens
  // and do not flatten a peaked distribution by penalising its one dominant token call after call. The kernel in
  // use is timed first for every case (a process samples with one kernel: mixing them would make the JIT's call
  // sites polymorphic).
  const cases = (['generate', 'chat'] as const).flatMap((name) => (['flat', 'gaussian', 'dominant'] as const).map((shape) => ({
    name, shape, defaults: name === 'generate' ? GENERATE_DEFAULTS : CHAT_DEFAULTS,
    inputs: Array.from({ length: 32 }, () => makeLogits(shape, V, rng)),
  })));
  const tFast = cases.map((c) => { const s = new Sampler({ ...c.defaults, seed: 7 }, tok); return timeSampler((l) => s.sample(l), c.inputs, calls); });
  forceExpKind('math');
  const tMath = cases.map((c) => { const s = new Sampler({ ...c.defaults, seed: 7 }, tok); return timeSampler((l) => s.sample(l), c.inputs, calls >> 1); });
  forceExpKind(undefined);
  const tOld = cases.map((c) => { const r = new ReferenceSampler(c.defaults, 7, weightOf); return timeSampler((l) => r.sample(l), c.inputs, refCalls, 1); });
  cases.forEach((c, i) => console.log(`| ${c.name} | ${c.shape} | ${fmt(tFast[i]!, 3)} | ${fmt(tMath[i]!, 3)} | ${fmt(tOld[i]!, 1)} |`));
  // The softmax alone: V calls of Math.exp (what the exact reproduction of the package's arithmetic requires), and
  // the kernel in use (the same bits).
  const x = makeLogits('flat', V, rng);
  const p = new Float64Array(V);
  const soft = () => {
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (x[i]! > max) max = x[i]!;
    let sum = 0;
    for (let i = 0; i < V; i++) { const e = Math.exp(x[i]! - max); p[i] = e; sum += e; }
    return sum;
  };
  const k = samplerKernel(V);
  const softKernel = () => {
    k.x.set(x);
    return k.expSum(k.max());
  };
  console.log(`softmax numerators alone (max, ${V} exponentials, their sum), ms (wall / cpu): Math.exp ${fmt(timeSampler(soft, [x], calls), 3)}, ${kind} kernel ${fmt(timeSampler(softKernel, [x], calls), 3)}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await runSamplerBench(process.argv.slice(2));
