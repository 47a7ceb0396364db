/**
 * `npm run bench:peers`: this runtime (wasm backend) and llama.cpp (through node-llama-cpp, CPU build) side by side on
 * the same checkpoint: load time, prefill and decode tokens/s at each thread count, by weight precision —
 *   16-bit: ours bf16 (the .pth) and f16 (the F16 GGUF) vs llama.cpp F16
 *    8-bit: ours int8 (the .pth, quantized at load) and q8_0 (the Q8_0 GGUF) vs llama.cpp Q8_0
 *    4-bit: ours q4 (the Q4_0 GGUF; also q4+a8, with 8-bit activations as llama.cpp computes it) vs llama.cpp Q4_0
 * with each decode's weight stream (GB/s) as a share of the memory bandwidth ours probes with the same threads
 * (WasmBackend.probeBandwidth). The GGUFs are written by our own converter (`rwkv7 convert IN OUT.gguf --dtype
 * f16|q8_0|q4_0`), so this also checks that llama.cpp loads them (architecture rwkv7) and, per precision, how many
 * greedy tokens the two runtimes agree on from the same prompt.
 *
 * Every measurement is a fresh process (load includes nothing cached but the page cache): median of --runs.
 * node-llama-cpp (pinned, below) is installed on demand into a cache folder, outside the project: not a
 * dependency, not in CI. Not a test; takes a while (about 15 minutes for the default 0.1B on 2 cores).
 *
 *   npm run bench:peers -- [--model FILE] [--runs 3] [--threads 1,2] [--prefill 512] [--decode 128]
 *                          [--cache DIR] [--work DIR] [--json]
 *
 * Default model: a random-weight 0.1B-shape release .pth in the temp folder (bench/synthetic-pth.ts).
 * Cache: $RWKV7_PEERS_CACHE, else ~/.cache/rwkv7-ts/peers. GGUFs: --work (default: the temp folder), kept for reuse.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { WeightDType } from '../src/backends/kernels.js';

const PEER = 'node-llama-cpp';
const PEER_VERSION = '3.21.1';

const self = fileURLToPath(import.meta.url);
const args = process.argv.slice(2);
const opt = (name: string, def?: string): string | undefined => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : def; };
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length ? (s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2) : NaN; };

/** One measured configuration, as a worker process gets it. */
interface Job {
  runtime: 'rwkv7-ts' | 'llama.cpp';
  /** Our weight dtype, or the GGUF's type for llama.cpp. */
  dtype: string;
  file: string;
  threads: number;
  prefill: number;
  decode: number;
  /** Also decode this many greedy tokens after the timing (the agreement check). */
  greedy: number;
  cache: string;
}

interface Measurement {
  load_s: number;
  prefill_tok_s: number;
  decode_tok_s: number;
  /** Weight bytes one decode step streams. */
  weight_bytes: number;
  /** Ours: the probed memory bandwidth of this process's backend, bytes/s. */
  bandwidth?: number;
  greedy?: number[];
  /** llama.cpp: what it says the model is. */
  architecture?: string;
  description?: string;
}

/** The fixed token streams both runtimes get: a prompt of `n` pseudo-random ids of the 65536-token vocabulary. */
function tokens(n: number, seed: number, vocab = 65536): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return 1 + (s % (vocab - 1)); });
}

// ---------------------------------------------------------------------------------------------------------------
// workers

async function oursWorker(job: Job): Promise<Measurement> {
  const { loadModel } = await import('../src/runtime/load.js');
  const t0 = performance.now();
  // 'q4+a8': q4 weights with 8-bit activations (--activations q8, llama.cpp's own Q4_0 arithmetic)
  const a8 = job.dtype.endsWith('+a8');
  const dtype = (a8 ? job.dtype.slice(0, -3) : job.dtype) as WeightDType;
  const { model, config } = await loadModel(job.file, { backend: 'wasm', dtype, activations: a8 ? 'q8' : 'full', threads: job.threads });
  const load = (performance.now() - t0) / 1000;
  try {
    const V = config.vocabSize;
    const prompt = tokens(job.prefill, 1, V), next = tokens(job.decode, 2, V);
    const state = model.newState();
    await model.forward(prompt.slice(0, 8), state); // warm-up (JIT, wasm tier-up, first touch)
    await model.forward([next[0]!], state);
    state.reset();
    let t = performance.now();
    await model.forward(prompt, state);
    const prefill = job.prefill / ((performance.now() - t) / 1000);
    t = performance.now();
    for (let i = 0; i < job.decode; i++) await model.forward([next[i]!], state);
    const decode = job.decode / ((performance.now() - t) / 1000);
    let greedy: number[] | undefined;
    if (job.greedy) {
      state.reset();
      let logits = await model.forward(tokens(32, 3, V), state);
      greedy = [];
      for (let i = 0; i < job.greedy; i++) {
        let best = 0;
        for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[best]!) best = j;
        greedy.push(best);
        logits = await model.forward([best], state);
      }
    }
    state.free();
    const be = model.backend as { weightBytes?: number; probeBandwidth?: () => number };
    return {
      load_s: load, prefill_tok_s: prefill, decode_tok_s: decode, weight_bytes: be.weightBytes ?? 0,
      bandwidth: be.probeBandwidth?.call(model.backend), greedy,
    };
  } finally {
    await model.backend.dispose();
  }
}

/** The slice of node-llama-cpp's API used here (3.x). */
interface LlamaApi {
  getLlama(o: Record<string, unknown>): Promise<{
    loadModel(o: Record<string, unknown>): Promise<{
      fileInfo: { metadata: { general?: { architecture?: string } } };
      typeDescription: string;
      createContext(o: Record<string, unknown>): Promise<{
        getSequence(): {
          evaluateWithoutGeneratingNewTokens(t: number[]): Promise<void>;
          evaluate(t: number[], o?: Record<string, unknown>): AsyncGenerator<number, void, void | number | number[]>;
          clearHistory(): Promise<void>;
        };
        dispose(): Promise<void>;
      }>;
      dispose(): Promise<void>;
    }>;
    dispose(): Promise<void>;
  }>;
}

async function llamaWorker(job: Job): Promise<Measurement> {
  const entry = nodePath.join(job.cache, 'node_modules', PEER, 'dist', 'index.js');
  const api = (await import(pathToFileURL(entry).href)) as LlamaApi;
  const llama = await api.getLlama({ gpu: false, build: 'never', logLevel: 'error', maxThreads: job.threads });
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath: job.file, gpuLayers: 0 });
  const ctx = await model.createContext({
    contextSize: job.prefill + job.decode + job.greedy + 64, batchSize: job.prefill, sequences: 1,
    threads: { ideal: job.threads, min: job.threads },
  });
  const load = (performance.now() - t0) / 1000;
  try {
    const seq = ctx.getSequence();
    const prompt = tokens(job.prefill, 1), next = tokens(job.decode, 2);
    await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, 8)); // warm-up (first touch of the mmapped weights)
    await seq.clearHistory();
    let t = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(prompt);
    const prefill = job.prefill / ((performance.now() - t) / 1000);
    // decode: one token in, one out (the logits of every step are computed, as ours are), greedy
    const generate = async (first: number, n: number): Promise<number[]> => {
      const out: number[] = [];
      let tok = first;
      while (out.length < n) {
        let got = false;
        for await (const g of seq.evaluate([tok], { temperature: 0, yieldEogToken: true })) {
          out.push(g); got = true;
          if (out.length >= n) break;
        }
        if (!got) throw new Error('llama.cpp generated nothing');
        tok = out[out.length - 1]!;
      }
      return out;
    };
    t = performance.now();
    await generate(next[0]!, job.decode);
    const decode = job.decode / ((performance.now() - t) / 1000);
    let greedy: number[] | undefined;
    if (job.greedy) {
      await seq.clearHistory();
      const p = tokens(32, 3);
      await seq.evaluateWithoutGeneratingNewTokens(p.slice(0, -1));
      greedy = await generate(p[p.length - 1]!, job.greedy);
    }
    return {
      load_s: load, prefill_tok_s: prefill, decode_tok_s: decode, weight_bytes: await ggufStreamBytes(job.file), greedy,
      architecture: model.fileInfo.metadata.general?.architecture, description: model.typeDescription,
    };
  } finally {
    await ctx.dispose();
    await model.dispose();
    await llama.dispose();
  }
}

/** Bytes of a GGUF's tensors one decode step reads: all but the embedding (one row of it is looked up). */
async function ggufStreamBytes(file: string): Promise<number> {
  const { parseGguf } = await import('../src/formats/gguf.js');
  const { fileSource } = await import('../src/platform/node.js');
  const src = fileSource(file);
  try {
    return parseGguf(src).tensors.filter((t) => t.name !== 'token_embd.weight').reduce((a, t) => a + t.nbytes, 0);
  } finally {
    src.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// the run

/** node-llama-cpp in `cache`, installed (pinned, CPU build only) when it is not there yet. */
function ensurePeer(cache: string): void {
  const pkg = nodePath.join(cache, 'node_modules', PEER, 'package.json');
  if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { version: string }).version === PEER_VERSION) return;
  fs.mkdirSync(cache, { recursive: true });
  // The CPU prebuilt binary of this platform only (the optional CUDA/Vulkan ones are hundreds of MB), no install
  // scripts (with a prebuilt binary there is nothing to build).
  const platformPkg = `@node-llama-cpp/${process.platform === 'darwin' ? (process.arch === 'arm64' ? 'mac-arm64-metal' : 'mac-x64') : process.platform === 'win32' ? `win-${process.arch}` : `linux-${process.arch}`}@${PEER_VERSION}`;
  const cmd = ['i', '--prefix', cache, '-E', '--omit=optional', '--ignore-scripts', '--no-audit', '--no-fund', `${PEER}@${PEER_VERSION}`, platformPkg];
  console.error(`installing ${PEER}@${PEER_VERSION} into ${cache}: npm ${cmd.join(' ')}`);
  const r = spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', cmd, { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`npm install of ${PEER}@${PEER_VERSION} failed (status ${r.status})`);
}

function runJob(job: Job): Measurement {
  const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--worker', JSON.stringify(job)], { encoding: 'utf8', timeout: 30 * 60 * 1000, maxBuffer: 1 << 24 });
  const line = r.stdout?.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !line.startsWith('{')) {
    throw new Error(`${job.runtime} ${job.dtype} ${job.threads} thread(s) failed (status ${r.status}):\n${r.stderr}${r.stdout}`);
  }
  return JSON.parse(line) as Measurement;
}

async function main(): Promise<void> {
  const runs = Number(opt('runs', '3'));
  const threadList = (opt('threads', [...new Set([1, Math.min(2, os.availableParallelism())])].join(',')) ?? '1').split(',').map(Number);
  const prefill = Number(opt('prefill', '512')), decode = Number(opt('decode', '128'));
  const cache = nodePath.resolve(opt('cache', process.env.RWKV7_PEERS_CACHE ?? nodePath.join(os.homedir(), '.cache', 'rwkv7-ts', 'peers'))!);
  const work = nodePath.resolve(opt('work', os.tmpdir())!);
  fs.mkdirSync(work, { recursive: true });
  const GREEDY = 16;

  const { syntheticPth } = await import('./synthetic-pth.js');
  const { convertToGguf } = await import('../src/cli/convert.js');
  const model = nodePath.resolve(opt('model') ?? syntheticPth('0.1b'));
  ensurePeer(cache);

  // our converter's GGUFs of the same checkpoint (kept beside each other, rebuilt when older than the model)
  const base = nodePath.basename(model).replace(/\.(pth|safetensors|gguf)$/, '');
  const gguf: Record<'f16' | 'q8_0' | 'q4_0', string> = { f16: '', q8_0: '', q4_0: '' };
  for (const t of ['f16', 'q8_0', 'q4_0'] as const) {
    const out = nodePath.join(work, `${base}.${t}.gguf`);
    if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(model).mtimeMs) {
      const t0 = performance.now();
      convertToGguf(model, out, { dtype: t });
      console.error(`rwkv7 convert ${model} ${out} --dtype ${t}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
    gguf[t] = out;
  }

  type Row = { bits: string; runtime: Job['runtime']; dtype: string; file: string };
  const rows: Row[] = [
    { bits: '16-bit', runtime: 'rwkv7-ts', dtype: 'bf16', file: model },
    { bits: '16-bit', runtime: 'rwkv7-ts', dtype: 'f16', file: gguf.f16 },
    { bits: '16-bit', runtime: 'llama.cpp', dtype: 'F16', file: gguf.f16 },
    { bits: '8-bit', runtime: 'rwkv7-ts', dtype: 'int8', file: model },
    { bits: '8-bit', runtime: 'rwkv7-ts', dtype: 'q8_0', file: gguf.q8_0 },
    { bits: '8-bit', runtime: 'llama.cpp', dtype: 'Q8_0', file: gguf.q8_0 },
    { bits: '4-bit', runtime: 'rwkv7-ts', dtype: 'q4', file: gguf.q4_0 },
    { bits: '4-bit', runtime: 'rwkv7-ts', dtype: 'q4+a8', file: gguf.q4_0 },
    { bits: '4-bit', runtime: 'llama.cpp', dtype: 'Q4_0', file: gguf.q4_0 },
  ];
  const results = new Map<string, Measurement[]>();
  const key = (r: Row, threads: number) => `${r.runtime}/${r.dtype}/${threads}`;
  console.error(`model ${model}; prefill ${prefill}, decode ${decode} tokens; threads ${threadList.join(', ')}; ${runs} run(s), a fresh process each`);
  // repetitions outermost, so drift on a shared machine spreads over every row alike
  for (let rep = 0; rep < runs; rep++) {
    for (const threads of threadList) {
      for (const r of rows) {
        const job: Job = { runtime: r.runtime, dtype: r.dtype, file: r.file, threads, prefill, decode, cache, greedy: rep === 0 && threads === threadList[0] ? GREEDY : 0 };
        const m = runJob(job);
        (results.get(key(r, threads)) ?? results.set(key(r, threads), []).get(key(r, threads))!).push(m);
        console.error(`  run ${rep + 1}/${runs}: ${r.runtime} ${r.dtype} ${threads}T: load ${m.load_s.toFixed(2)} s, prefill ${m.prefill_tok_s.toFixed(1)}, decode ${m.decode_tok_s.toFixed(1)} tok/s`);
      }
    }
  }

  // the table
  const bw = new Map<number, number>(); // probed bytes/s by threads (ours, median)
  for (const threads of threadList) {
    const probes = rows.filter((r) => r.runtime === 'rwkv7-ts').flatMap((r) => results.get(key(r, threads))!.map((m) => m.bandwidth ?? NaN)).filter(Number.isFinite);
    bw.set(threads, median(probes));
  }
  const table: Array<Record<string, unknown>> = [];
  const lines = [
    `| precision | runtime | weights | threads | load s | prefill tok/s | decode tok/s | MB/token | decode GB/s | % of probed |`,
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const threads of threadList) {
    for (const r of rows) {
      const ms = results.get(key(r, threads))!;
      const load = median(ms.map((m) => m.load_s)), pre = median(ms.map((m) => m.prefill_tok_s)), dec = median(ms.map((m) => m.decode_tok_s));
      const wb = ms[0]!.weight_bytes, gbs = (wb * dec) / 1e9, pct = (100 * wb * dec) / bw.get(threads)!;
      table.push({ precision: r.bits, runtime: r.runtime, dtype: r.dtype, file: nodePath.basename(r.file), threads, load_s: load, prefill_tok_s: pre, decode_tok_s: dec, weight_bytes: wb, decode_gb_s: gbs, decode_bw_pct: pct, runs: ms.length });
      lines.push(`| ${r.bits} | ${r.runtime} | ${r.dtype} (${nodePath.extname(r.file).slice(1)}) | ${threads} | ${load.toFixed(2)} | ${pre.toFixed(1)} | ${dec.toFixed(1)} | ${(wb / 1e6).toFixed(0)} | ${gbs.toFixed(2)} | ${pct.toFixed(0)}% |`);
    }
  }
  // llama.cpp on our GGUFs, and the greedy agreement per precision
  const notes: string[] = [];
  for (const r of rows.filter((x) => x.runtime === 'llama.cpp')) {
    const m = results.get(key(r, threadList[0]!))![0]!;
    notes.push(`llama.cpp loaded ${nodePath.basename(r.file)}: architecture ${m.architecture}, ${m.description}`);
  }
  const greedyOf = (runtime: string, dtype: string) => results.get(`${runtime}/${dtype}/${threadList[0]}`)?.[0]?.greedy ?? [];
  for (const [ours, theirs] of [['f16', 'F16'], ['q8_0', 'Q8_0'], ['q4', 'Q4_0'], ['q4+a8', 'Q4_0']] as const) {
    const a = greedyOf('rwkv7-ts', ours), b = greedyOf('llama.cpp', theirs);
    let same = 0;
    while (same < Math.min(a.length, b.length) && a[same] === b[same]) same++;
    notes.push(`greedy tokens from the same 32-token prompt, ours ${ours} vs llama.cpp ${theirs} (same GGUF): first ${same} of ${GREEDY} agree`);
  }
  const bwLine = threadList.map((t) => `${t} thread(s) ${(bw.get(t)! / 1e9).toFixed(1)} GB/s`).join(', ');
  if (args.includes('--json')) {
    process.stdout.write(JSON.stringify({ model, prefill, decode, runs, peer: `${PEER}@${PEER_VERSION}`, bandwidth_gb_s: Object.fromEntries([...bw].map(([t, b]) => [t, b / 1e9])), rows: table, notes }) + '\n');
    return;
  }
  console.log(`${nodePath.basename(model)}: prefill ${prefill} tokens, decode ${decode} tokens, median of ${runs} fresh processes; ` +
    `${PEER}@${PEER_VERSION} (CPU); memory read bandwidth probed by ours: ${bwLine}\n`);
  console.log(lines.join('\n'));
  console.log('');
  for (const n of notes) console.log(n);
  console.log('load: ours = loadModel (read, convert/quantize, upload to wasm memory); llama.cpp = loadModel + createContext (mmap: weights are paged in at first use, in its warm-up)');
}

const wi = args.indexOf('--worker');
if (wi >= 0) {
  const job = JSON.parse(args[wi + 1]!) as Job;
  const m = job.runtime === 'llama.cpp' ? await llamaWorker(job) : await oursWorker(job);
  process.stdout.write(JSON.stringify(m) + '\n');
  process.exit(0);
} else {
  await main();
}
