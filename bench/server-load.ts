/**
 * `npm run bench:server`: throughput and latency of the HTTP server under concurrent streaming clients (continuous
 * batching, src/server/batcher.ts). For each model it starts `rwkv7 serve` as a child process (its own event loop
 * and CPU time; loopback only; wasm backend, bf16, 2 threads by default), warms it up, then for 1, 4, 8 and 16
 * concurrent clients sends each one streaming /v1/completions request (64 tokens, a prompt and a fixed seed of its
 * own) and prints:
 *
 *   tok/s     aggregate completion tokens per second (all clients' tokens / wall time of the round)
 *   TTFT      time to first token: request sent → first text chunk, p50 / p95 over the clients
 *   ITL       inter-token latency: the gaps between a client's successive text chunks, p50 / p95 over all gaps
 *
 * Models: `synthetic:0.1b` (random weights of the 0.1B shape: `rwkv7 serve --synthetic 0.1b`; its text is noise
 * but its cost is real) and `bundled` (the storyteller model, L6-D192). Not a test: nothing is asserted.
 *
 *   npm run bench:server [-- --models synthetic:0.1b,bundled] [--clients 1,4,8,16] [--tokens 64]
 *                        [--max-batch 16] [--batch-tokens 64] [--backend wasm] [--dtype bf16] [--threads 2]
 *
 * `--max-batch 16,1` runs every model twice, the second time with one sequence per forward pass (no batching: the
 * requests' tokens take turns), to show what batching gains. On a shared machine wrap it so that benchmarks never
 * overlap: `flock /tmp/bench.lock npm run bench:server`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string): string => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
const ints = (s: string) => list(s).map((x) => {
  const n = Number(x);
  if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive integer: ${x}`);
  return n;
});

const MODELS = list(flag('--models', 'synthetic:0.1b,bundled'));
const CLIENTS = ints(flag('--clients', '1,4,8,16'));
const TOKENS = ints(flag('--tokens', '64'))[0]!;
const MAX_BATCH = ints(flag('--max-batch', '16'));
const BATCH_TOKENS = flag('--batch-tokens', '');
const BACKEND = flag('--backend', 'wasm');
const DTYPE = flag('--dtype', 'bf16');
const THREADS = flag('--threads', '2');
const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

interface Server { url: string; child: ChildProcess }

/** Starts `rwkv7 serve` (through tsx, from the sources) on a free loopback port; resolves once it listens. */
function serve(model: string, maxBatch: number): Promise<Server> {
  const which = model === 'bundled' ? [] : model.startsWith('synthetic:') ? ['--synthetic', model.slice(10)] : ['--model', model];
  const concurrency = String(Math.max(...CLIENTS));
  const argv = [
    '--import', 'tsx', CLI, 'serve', ...which, '--backend', BACKEND, '--dtype', DTYPE, '--threads', THREADS,
    '--host', '127.0.0.1', '--port', '0', '--quiet', '--max-concurrency', concurrency, '--max-batch', String(maxBatch),
    ...(BATCH_TOKENS ? ['--batch-tokens', BATCH_TOKENS] : []), '--max-connections-per-ip', '0',
  ];
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`serve did not start in 180 s:\n${err}`)); }, 180_000);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      err += d;
      const m = / on (http:\/\/[^\s/]+)\/v1/.exec(err);
      if (m) { clearTimeout(timer); resolve({ url: m[1]!, child }); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`serve exited (${code}):\n${err}`)); });
  });
}

async function stop(s: Server): Promise<void> {
  s.child.removeAllListeners('exit');
  const gone = new Promise<void>((r) => s.child.once('exit', () => r()));
  s.child.kill('SIGTERM');
  const t = setTimeout(() => s.child.kill('SIGKILL'), 15_000);
  await gone;
  clearTimeout(t);
}

interface ClientResult { ttft: number; gaps: number[]; tokens: number }

/** One streaming completion; times every text chunk. */
async function client(url: string, i: number, maxTokens: number): Promise<ClientResult> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      prompt: `Story number ${i + 1}. Once upon a time, in a village by the river, there lived`, max_tokens: maxTokens,
      seed: 1000 + i, temperature: 1, top_p: 0.9, stream: true, stream_options: { include_usage: true },
    }),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let last = 0;
  let ttft = NaN;
  let tokens = 0;
  const gaps: number[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let k: number;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!ev.startsWith('data: {')) continue;
      const j = JSON.parse(ev.slice(6)) as { choices: { text: string }[]; usage?: { completion_tokens: number } | null };
      if (j.usage) tokens = j.usage.completion_tokens;
      if (!j.choices[0]?.text) continue;
      const now = performance.now();
      if (Number.isNaN(ttft)) ttft = now - t0;
      else gaps.push(now - last);
      last = now;
    }
  }
  return { ttft, gaps, tokens };
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}

const ms = (x: number) => (Number.isNaN(x) ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(1));

async function main(): Promise<void> {
  console.log(`# rwkv7 serve load: ${BACKEND}, ${DTYPE}, ${THREADS} threads; ${TOKENS} tokens per client; node ${process.version}`);
  console.log('model            max-batch clients   tok/s   TTFT p50/p95 ms   ITL p50/p95 ms   wall s');
  for (const model of MODELS) {
    for (const maxBatch of MAX_BATCH) {
      const s = await serve(model, maxBatch);
      try {
        await client(s.url, 999, 8); // warm-up: JIT, the pacer's first measurements
        for (const n of CLIENTS) {
          const t0 = performance.now();
          const rs = await Promise.all(Array.from({ length: n }, (_, i) => client(s.url, i, TOKENS)));
          const wall = (performance.now() - t0) / 1000;
          const tokens = rs.reduce((a, r) => a + r.tokens, 0);
          const ttft = rs.map((r) => r.ttft);
          const gaps = rs.flatMap((r) => r.gaps);
          console.log(
            `${model.padEnd(16)} ${String(maxBatch).padStart(9)} ${String(n).padStart(7)} ${(tokens / wall).toFixed(1).padStart(7)}` +
            `   ${`${ms(pct(ttft, 0.5))} / ${ms(pct(ttft, 0.95))}`.padStart(15)}   ${`${ms(pct(gaps, 0.5))} / ${ms(pct(gaps, 0.95))}`.padStart(14)}` +
            `   ${wall.toFixed(1).padStart(6)}`,
          );
        }
      } finally {
        await stop(s);
      }
    }
  }
}

main().catch((e: unknown) => {
  console.error((e as Error).stack ?? String(e));
  process.exit(1);
});
