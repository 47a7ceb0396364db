/**
 * Synthetic models: random bf16 weights with the real shapes of the released RWKV-7 sizes, built in memory as a
 * `Checkpoint` (canonical BlinkDL names), for benchmarks that need no multi-GB download.
 *
 * Values are scaled like trained weights (Linear ~ U(±1/√in), LoRA small, mixes in [0, 1], layer norms ≈ 1) so that
 * activations stay O(1) and no subnormal or overflow slow path is hit; the outputs are meaningless.
 */
import type { Checkpoint, DType, TensorRef } from '../formats/types.js';
import { configFromCheckpoint, type ModelConfig } from '../model/config.js';
import { loadWeights } from '../model/weights.js';
import { RWKV7 } from '../model/rwkv7.js';
import type { Backend } from '../backends/kernels.js';
import { UserError } from '../errors.js';
import { assertModelFits } from './fit.js';

export interface SyntheticShape {
  nLayer: number; nEmbd: number; headSize: number; vocabSize: number; dimFfn: number;
  lora: { decay: number; a: number; v: number; gate: number };
}

export const SYNTHETIC_SHAPES: Record<string, SyntheticShape> = {
  '0.1b': { nLayer: 12, nEmbd: 768, headSize: 64, vocabSize: 65536, dimFfn: 3072, lora: { decay: 64, a: 64, v: 32, gate: 128 } },
  '0.4b': { nLayer: 24, nEmbd: 1024, headSize: 64, vocabSize: 65536, dimFfn: 4096, lora: { decay: 64, a: 64, v: 32, gate: 128 } },
  '1.5b': { nLayer: 24, nEmbd: 2048, headSize: 64, vocabSize: 65536, dimFfn: 8192, lora: { decay: 96, a: 96, v: 64, gate: 256 } },
};

/** Deterministic xorshift32 in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

function bf16(x: number): number {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0]! >>> 16;
}

/**
 * A tensor of uniform values in [lo, hi) as bf16. Big tensors repeat a 64Ki-value random block at a
 * tensor-dependent offset (cheap to build; the kernels' speed does not depend on the values).
 */
function tensor(name: string, shape: number[], lo: number, hi: number, seed: number): TensorRef {
  const n = shape.reduce((a, b) => a * b, 1);
  return {
    name, dtype: 'BF16' as DType, shape,
    read(): Uint8Array {
      const r = rng(seed);
      const block = new Uint16Array(Math.min(n, 65536 + 7));
      for (let i = 0; i < block.length; i++) block[i] = bf16(lo + (hi - lo) * r());
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i += 65536) {
        const off = (i / 65536 * 7919) % 7;
        out.set(block.subarray(off, off + Math.min(65536, n - i)), i);
      }
      return new Uint8Array(out.buffer);
    },
  };
}

/** A Checkpoint of random weights with the given shape. */
export function syntheticCheckpoint(s: SyntheticShape, seed = 1): Checkpoint {
  const C = s.nEmbd, F = s.dimFfn, H = C / s.headSize;
  const t = new Map<string, TensorRef>();
  let k = seed * 1000;
  const add = (name: string, shape: number[], lo: number, hi: number) => t.set(name, tensor(name, shape, lo, hi, ++k));
  const lin = (name: string, out: number, inp: number) => { const a = 1 / Math.sqrt(inp); add(name, [out, inp], -a, a); };
  add('emb.weight', [s.vocabSize, C], -1, 1);
  for (let i = 0; i < s.nLayer; i++) {
    const b = `blocks.${i}.`;
    if (i === 0) { add(b + 'ln0.weight', [C], 0.9, 1.1); add(b + 'ln0.bias', [C], -0.1, 0.1); }
    for (const ln of ['ln1', 'ln2', 'att.ln_x']) { add(`${b}${ln}.weight`, [C], 0.9, 1.1); add(`${b}${ln}.bias`, [C], -0.1, 0.1); }
    for (const v of ['x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g']) add(`${b}att.${v}`, [1, 1, C], 0, 1);
    add(b + 'att.w0', [1, 1, C], -2, 0); add(b + 'att.a0', [1, 1, C], -1, 1);
    add(b + 'att.k_k', [1, 1, C], 0.5, 1); add(b + 'att.k_a', [1, 1, C], 0.5, 1);
    add(b + 'att.r_k', [H, s.headSize], -0.5, 0.5);
    const loras: Array<[string, number]> = [['w', s.lora.decay], ['a', s.lora.a], ['g', s.lora.gate]];
    if (i > 0) { loras.push(['v', s.lora.v]); add(b + 'att.v0', [1, 1, C], -1, 1); }
    for (const [x, r] of loras) { add(`${b}att.${x}1`, [C, r], -0.05, 0.05); add(`${b}att.${x}2`, [r, C], -0.05, 0.05); }
    for (const m of ['receptance', 'key', 'value', 'output']) lin(`${b}att.${m}.weight`, C, C);
    add(b + 'ffn.x_k', [1, 1, C], 0, 1);
    lin(b + 'ffn.key.weight', F, C);
    lin(b + 'ffn.value.weight', C, F);
  }
  add('ln_out.weight', [C], 0.9, 1.1); add('ln_out.bias', [C], -0.1, 0.1);
  lin('head.weight', s.vocabSize, C);
  return { path: `synthetic:${s.nLayer}x${C}`, format: 'pth', layout: 'blinkdl', tensors: t, close() {} };
}

/** Build a random-weight model of a named size ('0.1b', '0.4b', '1.5b') on `backend`. */
export function syntheticModel(size: string, backend: Backend): { model: RWKV7; config: ModelConfig } {
  const shape = SYNTHETIC_SHAPES[size.toLowerCase()];
  if (!shape) throw new UserError(`unknown synthetic size '${size}' (expected one of: ${Object.keys(SYNTHETIC_SHAPES).join(', ')})`);
  const ck = syntheticCheckpoint(shape);
  const config = configFromCheckpoint(ck);
  assertModelFits(config, backend, `synthetic ${size}`);
  const weights = loadWeights(ck, config, backend);
  return { model: new RWKV7(backend, config, weights), config };
}

