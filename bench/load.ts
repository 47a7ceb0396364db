/**
 * Checkpoint load benchmark: a 0.1B-shaped RWKV-7 (12 layers, 768 wide, vocab 65536, FFN 3072,
 * LoRA 64/64/32/128; 382 MB as bf16) written as a torch-style .pth to /tmp, then, in a fresh process per
 * mode, opened and every tensor read to f32:
 *   keep    - the f32 tensors are kept (what a model load does): peak RSS ~ f32 size + one tensor in flight
 *   stream  - each f32 tensor is dropped after reading: peak RSS shows the file is never held in memory
 *
 *   npx tsx bench/load.ts            (builds /tmp/rwkv7-bench-0.1b.pth once, then measures both modes)
 */
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openCheckpoint, toFloat32 } from '../src/formats/index.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { writePth, tensor, type PthTensor } from '../test/helpers/pth-writer.js';

const FILE = '/tmp/rwkv7-bench-0.1b.pth';

function build(): void {
  const L = 12, C = 768, V = 65536, F = 3072, H = 12, N = 64;
  const R = { w: 64, a: 64, v: 32, g: 128 };
  let seed = 12345;
  // Random small bf16 values (sign, exponent ~2^-8..2^-1, random mantissa), generated per tensor on write.
  const bf16 = (n: number) => () => {
    const u = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      u[i] = (seed >>> 16 & 0x8000) | ((0x77 + (seed >>> 8 & 7)) << 7) | (seed & 0x7f);
    }
    return new Uint8Array(u.buffer);
  };
  const t: PthTensor[] = [];
  const add = (name: string, shape: number[]) => t.push(tensor(name, 'BF16', shape, bf16(shape.reduce((a, b) => a * b, 1)), String(t.length)));
  add('emb.weight', [V, C]);
  for (let i = 0; i < L; i++) {
    const b = `blocks.${i}.`;
    if (i === 0) { add(`${b}ln0.weight`, [C]); add(`${b}ln0.bias`, [C]); }
    add(`${b}ln1.weight`, [C]); add(`${b}ln1.bias`, [C]); add(`${b}ln2.weight`, [C]); add(`${b}ln2.bias`, [C]);
    for (const x of ['x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g', 'w0']) add(`${b}att.${x}`, [1, 1, C]);
    add(`${b}att.w1`, [C, R.w]); add(`${b}att.w2`, [R.w, C]);
    add(`${b}att.a0`, [1, 1, C]); add(`${b}att.a1`, [C, R.a]); add(`${b}att.a2`, [R.a, C]);
    if (i > 0) { add(`${b}att.v0`, [1, 1, C]); add(`${b}att.v1`, [C, R.v]); add(`${b}att.v2`, [R.v, C]); }
    add(`${b}att.g1`, [C, R.g]); add(`${b}att.g2`, [R.g, C]);
    add(`${b}att.k_k`, [1, 1, C]); add(`${b}att.k_a`, [1, 1, C]); add(`${b}att.r_k`, [H, N]);
    for (const p of ['receptance', 'key', 'value', 'output']) add(`${b}att.${p}.weight`, [C, C]);
    add(`${b}att.ln_x.weight`, [C]); add(`${b}att.ln_x.bias`, [C]);
    add(`${b}ffn.x_k`, [1, 1, C]); add(`${b}ffn.key.weight`, [F, C]); add(`${b}ffn.value.weight`, [C, F]);
  }
  add('ln_out.weight', [C]); add('ln_out.bias', [C]); add('head.weight', [V, C]);
  writePth(FILE, t, { top: 'rwkv7-bench-0.1b' });
}

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

const mode = process.argv[2];
if (mode === 'keep' || mode === 'stream') {
  measure(mode);
} else {
  if (!fs.existsSync(FILE)) {
    const t0 = performance.now();
    build();
    console.log(`wrote ${FILE} (${(fs.statSync(FILE).size / 2 ** 20).toFixed(0)} MB) in ${(performance.now() - t0).toFixed(0)} ms`);
  }
  console.log(`file: ${FILE}, ${(fs.statSync(FILE).size / 1e6).toFixed(0)} MB`);
  // Fresh processes so peak RSS belongs to the load alone.
  const self = fileURLToPath(import.meta.url);
  for (const m of ['keep', 'stream']) {
    process.stdout.write(execFileSync(process.execPath, ['--import', 'tsx', self, m], { encoding: 'utf8' }));
  }
}
