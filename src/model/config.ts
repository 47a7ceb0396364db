/**
 * RWKV-7 hyperparameters, derived from tensor shapes only (never from file names or formulas), and a
 * full validation that every tensor the model needs exists with the expected shape.
 */
import { FormatError } from '../errors.js';
import type { Checkpoint, TensorRef } from '../formats/types.js';

export interface ModelConfig {
  nLayer: number;
  nEmbd: number;
  headSize: number;
  nHead: number;
  vocabSize: number;
  dimFfn: number;
  /** LoRA ranks: decay (w1), in-context learning rate (a1), value residual (v1), gate (g1). */
  lora: { decay: number; a: number; v: number; gate: number };
}

/** Tensor-name fingerprints of older RWKV generations, for a helpful refusal. */
const OLDER_GENERATIONS: ReadonlyArray<readonly [RegExp, string]> = [
  [/\.att\.time_maa_|\.att\.time_decay_w1$/, 'RWKV-6'],
  [/\.att\.time_faaaa$/, 'RWKV-5'],
  [/\.att\.time_first$/, 'RWKV-4'],
  [/\.att\.time_mix_k$|\.att\.time_decay$/, 'RWKV-4/5'],
];

/** Whether a shape is a per-channel vector of width c: canonical [1,1,C], also accepted as [C]. */
function isVector(shape: readonly number[], c: number): boolean {
  return shape[shape.length - 1] === c && shape.every((d, i) => i === shape.length - 1 || d === 1) && shape.length <= 3;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/** Derives the hyperparameters from tensor shapes and validates the whole checkpoint. */
export function configFromCheckpoint(ck: Checkpoint): ModelConfig {
  const path = ck.path;
  const t = ck.tensors;
  const names = [...t.keys()];

  for (const [re, gen] of OLDER_GENERATIONS) {
    const hit = names.find((n) => re.test(n));
    if (hit) throw new FormatError(`${path}: not an RWKV-7 checkpoint: found ${hit}, which marks an ${gen} model (RWKV-7 has blocks.N.att.x_r, att.w1, att.r_k, ...)`);
  }
  const get = (name: string): TensorRef => {
    const ref = t.get(name);
    if (!ref) {
      throw new FormatError(`${path}: not a complete RWKV-7 checkpoint: tensor ${name} is missing (found ${names.length} tensors, e.g. ${names.slice(0, 4).join(', ')})`);
    }
    return ref;
  };
  const dims = (name: string, rank: number): number[] => {
    const s = get(name).shape;
    if (s.length !== rank || s.some((d) => d <= 0)) throw new FormatError(`${path}: tensor ${name} has shape [${s}], expected a non-empty ${rank}-D tensor`);
    return [...s];
  };

  const [vocabSize, nEmbd] = dims('emb.weight', 2) as [number, number];
  // Layer ids come from tensor names (untrusted, possibly 100,000s of them): no spreading them into calls.
  const layerIds = new Set<number>();
  let maxId = -1;
  let maxName = '';
  for (const n of names) {
    const m = /^blocks\.(\d+)\./.exec(n);
    if (!m) continue;
    const id = Number(m[1]);
    if (!Number.isSafeInteger(id) || String(id) !== m[1]) {
      throw new FormatError(`${path}: tensor ${n.length > 120 ? `${n.slice(0, 120)}...` : n} has a malformed layer index (expected blocks.N. with N a plain decimal number)`);
    }
    layerIds.add(id);
    if (id > maxId) { maxId = id; maxName = n; }
  }
  const nLayer = layerIds.size;
  if (nLayer === 0) throw new FormatError(`${path}: no blocks.N.* tensors: not an RWKV-7 checkpoint`);
  if (maxId !== nLayer - 1) {
    let gap = 0;
    while (layerIds.has(gap)) gap++;
    throw new FormatError(`${path}: layer indices are not contiguous: blocks.${gap}.* is missing but ${maxName} exists (expected blocks.0 to blocks.${nLayer - 1} for ${nLayer} layers)`);
  }
  const [nHead, headSize] = dims('blocks.0.att.r_k', 2) as [number, number];
  if (nHead * headSize !== nEmbd) {
    throw new FormatError(`${path}: blocks.0.att.r_k is [${nHead}, ${headSize}] but n_embd is ${nEmbd} (expected n_head x head_size = n_embd)`);
  }
  const dimFfn = dims('blocks.0.ffn.key.weight', 2)[0]!;
  const rank = (name: string): number => dims(name, 2)[1]!;
  const vSource = nLayer > 1 ? 'blocks.1.att.v1' : t.has('blocks.0.att.v1') ? 'blocks.0.att.v1' : undefined;
  const lora = {
    decay: rank('blocks.0.att.w1'),
    a: rank('blocks.0.att.a1'),
    v: vSource ? rank(vSource) : 0,
    gate: rank('blocks.0.att.g1'),
  };
  const cfg: ModelConfig = { nLayer, nEmbd, headSize, nHead, vocabSize, dimFfn, lora };

  // Every tensor the model reads, with its expected shape ('vec' = per-channel vector of width C).
  const C = nEmbd;
  type Want = readonly number[] | 'vec';
  const expect = (name: string, want: Want): void => {
    const ref = get(name);
    const ok = want === 'vec' ? isVector(ref.shape, C) : ref.shape.length === want.length && ref.shape.every((d, i) => d === want[i]);
    if (!ok) throw new FormatError(`${path}: tensor ${name} has shape [${ref.shape}], expected [${want === 'vec' ? `1, 1, ${C}` : want.join(', ')}]`);
    if (!FLOAT_DTYPES.has(ref.dtype)) throw new FormatError(`${path}: tensor ${name} has dtype ${ref.dtype}, expected a float type`);
  };
  expect('emb.weight', [vocabSize, C]);
  expect('ln_out.weight', [C]);
  expect('ln_out.bias', [C]);
  expect('head.weight', [vocabSize, C]);
  for (let i = 0; i < nLayer; i++) {
    const b = `blocks.${i}.`;
    if (i === 0) { expect(`${b}ln0.weight`, [C]); expect(`${b}ln0.bias`, [C]); }
    for (const ln of ['ln1', 'ln2', 'att.ln_x']) { expect(`${b}${ln}.weight`, [C]); expect(`${b}${ln}.bias`, [C]); }
    for (const v of ['x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g', 'w0', 'a0', 'k_k', 'k_a']) expect(`${b}att.${v}`, 'vec');
    const loras: Array<[string, number]> = [['w', lora.decay], ['a', lora.a], ['g', lora.gate]];
    // Layer 0 has no value residual; its v0/v1/v2, when present, are unused but must still be sane.
    if (i > 0 || t.has(`${b}att.v1`)) { loras.push(['v', lora.v]); expect(`${b}att.v0`, 'vec'); }
    for (const [x, r] of loras) { expect(`${b}att.${x}1`, [C, r]); expect(`${b}att.${x}2`, [r, C]); }
    expect(`${b}att.r_k`, [nHead, headSize]);
    for (const p of ['receptance', 'key', 'value', 'output']) expect(`${b}att.${p}.weight`, [C, C]);
    expect(`${b}ffn.x_k`, 'vec');
    expect(`${b}ffn.key.weight`, [dimFfn, C]);
    expect(`${b}ffn.value.weight`, [C, dimFfn]);
  }

  // A fla/HF folder's config.json must agree with the tensors.
  const hf = (ck as { hfConfig?: Record<string, unknown> }).hfConfig;
  if (hf) {
    const checks: Array<[string, number]> = [
      ['hidden_size', nEmbd], ['num_hidden_layers', nLayer], ['vocab_size', vocabSize], ['head_dim', headSize],
      ['intermediate_size', dimFfn], ['decay_low_rank_dim', lora.decay], ['a_low_rank_dim', lora.a],
      ['v_low_rank_dim', lora.v], ['gate_low_rank_dim', lora.gate],
    ];
    for (const [key, actual] of checks) {
      const v = hf[key];
      if (typeof v === 'number' && v !== actual) {
        throw new FormatError(`${path}: config.json says ${key} = ${v}, but the tensors give ${actual}`);
      }
    }
  }
  return cfg;
}

/** Total number of elements over all tensors of a checkpoint. */
export function parameterCount(ck: Checkpoint): number {
  let n = 0;
  for (const ref of ck.tensors.values()) n += ref.shape.reduce((a, b) => a * b, 1);
  return n;
}
