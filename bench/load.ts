/**
 * Checkpoint load benchmark on a 0.1B-shaped RWKV-7 (12 layers, 768 wide, vocab 65536, FFN 3072, LoRA 64/64/32/128;
 * 382 MB as bf16), a random-weight release-layout .pth in the temp folder (bench/synthetic-pth.ts; built once):
 *
 * 1. Reading, in a fresh process per mode, every tensor opened and read to f32:
 *      keep    - the f32 tensors are kept: peak RSS ~ f32 size + one tensor in flight
 *      stream  - each f32 tensor is dropped after reading: peak RSS shows the file is never held in memory
 * 2. The whole command (the issue-15 figure): `rwkv7 generate --model FILE --max-tokens 1` from start to exit, warm
 *    page cache, for bf16, int8, q8_0 and q4 weights on the wasm backend (and the GGUFs bench/peers.ts writes beside
 *    the file, when present): wall time and peak RSS by `/usr/bin/time -f '%e %M'`
 *    (wall time alone where it is missing), median of --runs (default 5) fresh processes; then the same load
 *    in-process (`loadModel`, no CLI start-up, tokenizer or forward pass) for where the time goes.
 *    Runs the built CLI (dist/cli/main.js: `npm run build` first).
 *
 *   npx tsx bench/load.ts [--runs N] [--model FILE]
 */
import * as fs from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openCheckpoint, toFloat32 } from '../src/formats/index.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { syntheticPth } from './synthetic-pth.js';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : undefined; };
const FILE = opt('model') ?? syntheticPth('0.1b');
const RUNS = Number(opt('runs') ?? 5);
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };

function measure(mode: 'keep' | 'stream'): void {
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  const ck = openCheckpoint(FILE);
  const cfg = configFromCheckpoint(ck);
  const tOpen = performance.now() - t0;
  const kept: Float32Array[] = [];
  let elements = 0;
  for (const ref of ck.tensors.values()) {
    const f = toFloat32(ref);
    elements += f.length;
    if (mode === 'keep') kept.push(f);
  }
  ck.close();
  const total = performance.now() - t0;
  const peak = process.resourceUsage().maxRSS * 1024;
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MB`;
  console.log(`${mode.padEnd(6)} open+validate ${tOpen.toFixed(0)} ms, open + read all ${ck.tensors.size} tensors to f32 ${total.toFixed(0)} ms; ` +
    `RSS before ${mb(rss0)}, peak ${mb(peak)} (f32 data ${mb(elements * 4)}, kept ${mb(kept.reduce((a, f) => a + f.byteLength, 0))}); ` +
    `${cfg.nLayer}L x ${cfg.nEmbd}, ${(elements / 1e6).toFixed(1)} M params`);
}

/** In-process: loadModel on the wasm backend with `dtype`, timed (run in a fresh process). */
async function inProcess(dtype: 'bf16' | 'int8'): Promise<void> {
  const t0 = performance.now();
  // the built module (as the CLI runs it) when there is one
  const built = new URL('../dist/runtime/load.js', import.meta.url);
  const { loadModel } = (fs.existsSync(built) ? await import(built.href) : await import('../src/runtime/load.js')) as typeof import('../src/runtime/load.js');
  const t1 = performance.now();
  const { model } = await loadModel(FILE, { backend: 'wasm', dtype });
  const t2 = performance.now();
  console.log(`  in-process ${dtype.padEnd(4)}: import ${(t1 - t0).toFixed(0)} ms, loadModel ${(t2 - t1).toFixed(0)} ms, ` +
    `peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`);
  await model.backend.dispose();
}

const mode = args[0];
if (mode === 'keep' || mode === 'stream') {
  measure(mode);
} else if (mode === 'in-process') {
  await inProcess(args[1] as 'bf16' | 'int8');
} else {
  console.log(`file: ${FILE}, ${(fs.statSync(FILE).size / 1e6).toFixed(0)} MB`);
  // Fresh processes so peak RSS belongs to the load alone.
  const self = fileURLToPath(import.meta.url);
  for (const m of ['keep', 'stream']) {
    process.stdout.write(execFileSync(process.execPath, ['--import', 'tsx', self, m, '--model', FILE], { encoding: 'utf8' }));
  }
  const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
  if (!fs.existsSync(cli)) {
    console.log('dist/cli/main.js is missing: npm run build, then run again for the generate figures');
  } else {
    const time = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
    console.log(`\nrwkv7 generate --model FILE --max-tokens 1 (wasm; --dtype, or a GGUF's own types), start to exit, median of ${RUNS}${time ? '' : ' (no /usr/bin/time: no RSS)'}:`);
    // the .pth as each storage type, then the GGUFs bench:peers writes beside it (when they are there), as stored
    const stem = FILE.replace(/\.pth$/, '');
    const cases: Array<[string, string, string[]]> = [
      ...(['bf16', 'int8', 'q8_0', 'q4'] as const).map((d): [string, string, string[]] => [d, FILE, ['--dtype', d]]),
      ...['f16', 'q8_0', 'q4_0'].map((t): [string, string, string[]] => [`${t} (.gguf)`, `${stem}.${t}.gguf`, []]).filter(([, f]) => fs.existsSync(f)),
    ];
    for (const [dtype, file, extra] of cases) {
      const cmd = [cli, 'generate', '--model', file, '--max-tokens', '1', '--prompt', 'Hi', '--backend', 'wasm', ...extra, '-q'];
      const wall: number[] = [], rss: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const t0 = performance.now();
        const r = time
          ? spawnSync(time, ['-f', '%e %M', process.execPath, ...cmd], { encoding: 'utf8' })
          : spawnSync(process.execPath, cmd, { encoding: 'utf8' });
        const ms = performance.now() - t0;
        if (r.status !== 0) throw new Error(`generate failed: ${r.stderr}`);
        if (time) {
          const m = /([\d.]+) (\d+)\s*$/.exec(r.stderr.trim());
          if (!m) throw new Error(`unexpected /usr/bin/time output: ${r.stderr}`);
          wall.push(Number(m[1])); rss.push(Number(m[2]) / 1024);
        } else {
          wall.push(ms / 1000);
        }
      }
      console.log(`  ${dtype.padEnd(12)}: ${median(wall).toFixed(2)} s (${wall.map((w) => w.toFixed(2)).join(', ')})` +
        (rss.length ? `, peak RSS ${median(rss).toFixed(0)} MB (max ${Math.max(...rss).toFixed(0)})` : ''));
    }
    for (const dtype of ['bf16', 'int8']) {
      process.stdout.write(execFileSync(process.execPath, ['--import', 'tsx', self, 'in-process', dtype, '--model', FILE], { encoding: 'utf8' }));
    }
  }
}
