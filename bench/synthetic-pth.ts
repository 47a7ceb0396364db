/**
 * A random-weight checkpoint of a real RWKV-7 shape written as an official-release `.pth` (torch zip, bf16, release key
 * order, layer 0's unused v0/v1/v2 included), for the load and peer benchmarks: the values are
 * src/runtime/synthetic.ts's (scaled like trained weights, so activations stay O(1)), the file is what loading a
 * real 0.1B release reads. Built once into the temp folder (0.1B: 382 MB); never committed.
 *
 *   npx tsx bench/synthetic-pth.ts [0.1b|0.4b|1.5b] [OUT]     (prints the path)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { fileURLToPath } from 'node:url';
import { SYNTHETIC_SHAPES, syntheticCheckpoint } from '../src/runtime/synthetic.js';
import { writePth, tensor, type PthTensor } from '../test/helpers/pth-writer.js';
import type { TensorRef } from '../src/formats/types.js';

/** The key order of an official x070 release (module definition order of RWKV-LM's RWKV-7). */
function releaseOrder(nLayer: number): string[] {
  const names = ['emb.weight'];
  for (let i = 0; i < nLayer; i++) {
    const b = `blocks.${i}.`;
    names.push(`${b}ln1.weight`, `${b}ln1.bias`, `${b}ln2.weight`, `${b}ln2.bias`);
    if (i === 0) names.push(`${b}ln0.weight`, `${b}ln0.bias`);
    for (const x of ['x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g', 'w0', 'w1', 'w2', 'a0', 'a1', 'a2', 'v0', 'v1', 'v2', 'g1', 'g2', 'k_k', 'k_a', 'r_k']) {
      names.push(`${b}att.${x}`);
    }
    for (const p of ['receptance', 'key', 'value', 'output']) names.push(`${b}att.${p}.weight`);
    names.push(`${b}att.ln_x.weight`, `${b}att.ln_x.bias`, `${b}ffn.x_k`, `${b}ffn.key.weight`, `${b}ffn.value.weight`);
  }
  names.push('ln_out.weight', 'ln_out.bias', 'head.weight');
  return names;
}

/** Write the `size` synthetic model to `file` as a release-layout .pth. */
export function writeSyntheticPth(file: string, size = '0.1b'): void {
  const shape = SYNTHETIC_SHAPES[size];
  if (!shape) throw new Error(`unknown size ${size} (${Object.keys(SYNTHETIC_SHAPES).join(', ')})`);
  const ck = syntheticCheckpoint(shape);
  const refs = new Map<string, TensorRef>(ck.tensors);
  // Releases carry v0/v1/v2 in layer 0 too (unused there): same shapes as layer 1's
  for (const x of ['v0', 'v1', 'v2']) {
    const r = ck.tensors.get(`blocks.1.att.${x}`)!;
    refs.set(`blocks.0.att.${x}`, { ...r, name: `blocks.0.att.${x}` });
  }
  const t: PthTensor[] = [];
  for (const name of releaseOrder(shape.nLayer)) {
    const r = refs.get(name);
    if (!r) throw new Error(`synthetic checkpoint lacks ${name}`);
    t.push(tensor(name, 'BF16', [...r.shape], () => r.read(), String(t.length)));
  }
  if (t.length !== refs.size) throw new Error(`release order covers ${t.length} of ${refs.size} tensors`);
  const tmp = `${file}.tmp-${process.pid}`;
  writePth(tmp, t, { top: nodePath.basename(file).replace(/\.pth$/, '') });
  fs.renameSync(tmp, file);
}

/** The path of the `size` synthetic .pth in `dir` (default: the temp folder), written first if it is not there. */
export function syntheticPth(size = '0.1b', dir = os.tmpdir()): string {
  const file = nodePath.join(dir, `rwkv7-synthetic-${size}.pth`);
  if (!fs.existsSync(file)) writeSyntheticPth(file, size);
  return file;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === nodePath.resolve(process.argv[1])) {
  const size = process.argv[2] ?? '0.1b';
  const out = process.argv[3];
  if (out) writeSyntheticPth(out, size);
  console.log(out ?? syntheticPth(size));
}
