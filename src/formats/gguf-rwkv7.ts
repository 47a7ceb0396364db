/**
 * llama.cpp's `rwkv7` GGUF architecture <-> the canonical (BlinkDL) tensors, both directions.
 *
 * Mapping facts (llama.cpp `convert_hf_to_gguf.py` Rwkv7Model, gguf-py `tensor_mapping.py`; checked against
 * ../shared/fixtures/gguf tensor by tensor). GGUF lists dimensions innermost first; shapes below are row-major.
 *
 *   token_embd.weight [V,C]                      emb.weight
 *   token_embd_norm.{weight,bias} [C]            blocks.0.ln0.*
 *   output_norm.{weight,bias}, output.weight     ln_out.*, head.weight
 *   blk.N.attn_norm.*, blk.N.attn_norm_2.*       blocks.N.ln1.*, blocks.N.ln2.*
 *   blk.N.time_mix_lerp_fused.weight [6,1,1,C]   att.x_r, x_w, x_k, x_v, x_a, x_g (stacked in that order)
 *   blk.N.time_mix_{w,a,v}0.weight [C]           att.{w,a,v}0 [1,1,C]
 *   blk.N.time_mix_{w,a,v,g}1.weight [r,C]       att.{w,a,v,g}1 [C,r]  (nn.Linear orientation: transposed)
 *   blk.N.time_mix_{w,a,v,g}2.weight [C,r]       att.{w,a,v,g}2 [r,C]  (transposed)
 *   blk.N.time_mix_k_k / k_a .weight [C]         att.k_k, att.k_a [1,1,C]
 *   blk.N.time_mix_r_k.weight [C]                att.r_k [H,N]  (flattened; N = rwkv7.wkv.head_size)
 *   blk.N.time_mix_{receptance,key,value,output}.weight        att.{receptance,key,value,output}.weight
 *   blk.N.time_mix_ln.{weight,bias}              att.ln_x.*
 *   blk.N.channel_mix_lerp_k.weight [C]          ffn.x_k [1,1,C]
 *   blk.N.channel_mix_{key,value}.weight         ffn.{key,value}.weight
 *
 * Layer 0 has no value residual, but llama.cpp's loader wants time_mix_v0/v1/v2 there: the converter writes copies
 * of the a-LoRA. They are unused and dropped when reading; the writer recreates them.
 */
import { FormatError } from '../errors.js';
import { readExact, readExactInto } from './source.js';
import { transposeBytes } from './layouts.js';
import { dequantize, type GgmlTypeInfo } from './gguf-quant.js';
import type { GgufFile, GgufTensorInfo, GgufKV } from './gguf.js';
import type { DType, TensorRef } from './types.js';

/** How a GGUF tensor relates to its canonical twin. */
export type Relation = 'same' | 'vector' | 'transpose' | 'r_k' | 'lerp';

/** Per-layer GGUF suffix (after `blk.N.`) -> canonical suffix (after `blocks.N.`), relation. */
export const RWKV7_LAYER_MAP: ReadonlyArray<readonly [string, string, Relation]> = [
  ['attn_norm.weight', 'ln1.weight', 'same'], ['attn_norm.bias', 'ln1.bias', 'same'],
  ['attn_norm_2.weight', 'ln2.weight', 'same'], ['attn_norm_2.bias', 'ln2.bias', 'same'],
  ['time_mix_lerp_fused.weight', 'att.x_*', 'lerp'],
  ...(['w', 'a', 'v'] as const).map((x) => [`time_mix_${x}0.weight`, `att.${x}0`, 'vector'] as const),
  ...(['w', 'a', 'v', 'g'] as const).flatMap((x) => [
    [`time_mix_${x}1.weight`, `att.${x}1`, 'transpose'],
    [`time_mix_${x}2.weight`, `att.${x}2`, 'transpose'],
  ] as const),
  ['time_mix_k_k.weight', 'att.k_k', 'vector'], ['time_mix_k_a.weight', 'att.k_a', 'vector'],
  ['time_mix_r_k.weight', 'att.r_k', 'r_k'],
  ['time_mix_receptance.weight', 'att.receptance.weight', 'same'], ['time_mix_key.weight', 'att.key.weight', 'same'],
  ['time_mix_value.weight', 'att.value.weight', 'same'], ['time_mix_output.weight', 'att.output.weight', 'same'],
  ['time_mix_ln.weight', 'att.ln_x.weight', 'same'], ['time_mix_ln.bias', 'att.ln_x.bias', 'same'],
  ['channel_mix_lerp_k.weight', 'ffn.x_k', 'vector'],
  ['channel_mix_key.weight', 'ffn.key.weight', 'same'], ['channel_mix_value.weight', 'ffn.value.weight', 'same'],
];
export const RWKV7_GLOBAL_MAP: ReadonlyArray<readonly [string, string]> = [
  ['token_embd.weight', 'emb.weight'], ['output.weight', 'head.weight'],
  ['output_norm.weight', 'ln_out.weight'], ['output_norm.bias', 'ln_out.bias'],
  ['token_embd_norm.weight', 'blocks.0.ln0.weight'], ['token_embd_norm.bias', 'blocks.0.ln0.bias'],
];
/** The order of the six token-shift mixes inside time_mix_lerp_fused. */
export const LERP_ORDER = ['r', 'w', 'k', 'v', 'a', 'g'] as const;

const layerMap = new Map(RWKV7_LAYER_MAP.map(([g, c, r]) => [g, [c, r] as const]));

/** A canonical tensor read from a GGUF, with access to the file's own (possibly quantized) bytes. */
export interface GgufTensorRef extends TensorRef {
  /** The file's tensor behind this one; absent for the x_* slices of time_mix_lerp_fused. */
  readonly ggml?: {
    readonly name: string;
    readonly type: GgmlTypeInfo;
    /** Row-major shape in the file (for `transposed` tensors: the canonical shape swapped). */
    readonly fileShape: readonly number[];
    /** The stored matrix is the transpose of the canonical one (LoRA factors). */
    readonly transposed: boolean;
    /** The tensor's bytes exactly as stored: ggml blocks for quantized types, no re-rounding. */
    readRaw(): Uint8Array;
  };
}

/** The hyperparameters the tensors give, for the cross-check against `rwkv7.*` metadata. */
export interface Rwkv7Shape {
  nEmbd: number; nLayer: number; vocabSize: number; headSize: number; dimFfn: number;
  lora: { decay: number; a: number; v: number; gate: number };
}

function metaNumber(g: GgufFile, key: string): number | undefined {
  const kv = g.metadata.get(key);
  if (!kv) return undefined;
  if (typeof kv.value !== 'number' || !Number.isInteger(kv.value)) {
    throw new FormatError(`${g.src.name}: metadata ${key} should be an integer, got ${typeof kv.value === 'object' ? 'an array' : JSON.stringify(String(kv.value))}`);
  }
  return kv.value;
}

/** The tensor's values as f32 bytes, or its own bytes for plain float types. */
function decoded(g: GgufFile, t: GgufTensorInfo): { dtype: DType; bytes: Uint8Array } {
  const raw = readExact(g.src, t.fileOffset, t.nbytes);
  const n = t.type.name;
  if (n === 'F32' || n === 'F16' || n === 'BF16') return { dtype: n, bytes: raw };
  const f = dequantize(t.type, raw, t.numel);
  return { dtype: 'F32', bytes: new Uint8Array(f.buffer) };
}

function plainDType(t: GgufTensorInfo): DType {
  const n = t.type.name;
  return n === 'F32' || n === 'F16' || n === 'BF16' ? n : 'F32';
}

const ES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };

/**
 * Maps an `rwkv7` GGUF's tensors to canonical names and shapes (lazily: nothing is read), after checking the
 * architecture, every tensor's name and shape, and the `rwkv7.*` hyperparameters against the shapes.
 */
export function rwkv7ToCanonical(g: GgufFile): { tensors: Map<string, GgufTensorRef>; shape: Rwkv7Shape } {
  const file = g.src.name;
  const arch = g.metadata.get('general.architecture')?.value;
  if (typeof arch !== 'string') throw new FormatError(`${file}: GGUF has no general.architecture string`);
  if (arch !== 'rwkv7') {
    const older = /^rwkv[456]$/.test(arch) ? ` (an older RWKV generation; this runtime runs RWKV-7 only)` : '';
    throw new FormatError(`${file}: GGUF architecture is "${arch}"${older}; only "rwkv7" is supported`);
  }
  const byName = new Map(g.tensors.map((t) => [t.name, t]));
  const req = (name: string): GgufTensorInfo => {
    const t = byName.get(name);
    if (!t) throw new FormatError(`${file}: rwkv7 GGUF is missing tensor ${name}`);
    return t;
  };
  const emb = req('token_embd.weight');
  if (emb.ne.length !== 2) throw new FormatError(`${file}: token_embd.weight has ne [${emb.ne}], expected [n_embd, n_vocab]`);
  const [C, V] = emb.ne as [number, number];
  const layers = new Set<number>();
  for (const t of g.tensors) {
    const m = /^blk\.(\d+)\./.exec(t.name);
    if (m) layers.add(Number(m[1]));
  }
  const nLayer = layers.size;
  for (let i = 0; i < nLayer; i++) if (!layers.has(i)) throw new FormatError(`${file}: layer blk.${i}.* is missing (layers must be numbered 0..${nLayer - 1})`);
  const headSize = metaNumber(g, 'rwkv7.wkv.head_size');
  if (headSize === undefined) throw new FormatError(`${file}: metadata rwkv7.wkv.head_size is missing (needed to unflatten time_mix_r_k)`);
  if (headSize <= 0 || C % headSize) throw new FormatError(`${file}: rwkv7.wkv.head_size ${headSize} does not divide n_embd ${C}`);
  const rank = (name: string): number => {
    const t = req(name);
    if (t.ne.length !== 2 || t.ne[0] !== C) throw new FormatError(`${file}: ${name} has ne [${t.ne}], expected [${C}, rank]`);
    return t.ne[1]!;
  };
  const ffnKey = req('blk.0.channel_mix_key.weight');
  const shape: Rwkv7Shape = {
    nEmbd: C, nLayer, vocabSize: V, headSize, dimFfn: ffnKey.ne[1] ?? 0,
    lora: {
      decay: rank('blk.0.time_mix_w1.weight'), a: rank('blk.0.time_mix_a1.weight'),
      v: nLayer > 1 ? rank('blk.1.time_mix_v1.weight') : 0, gate: rank('blk.0.time_mix_g1.weight'),
    },
  };
  const checks: Array<[string, number]> = [
    ['rwkv7.embedding_length', C], ['rwkv7.block_count', nLayer], ['rwkv7.feed_forward_length', shape.dimFfn],
    ['rwkv7.attention.decay_lora_rank', shape.lora.decay], ['rwkv7.attention.iclr_lora_rank', shape.lora.a],
    ['rwkv7.attention.gate_lora_rank', shape.lora.gate],
    ...(nLayer > 1 ? [['rwkv7.attention.value_residual_mix_lora_rank', shape.lora.v] as [string, number]] : []),
  ];
  for (const [key, actual] of checks) {
    const v = metaNumber(g, key);
    if (v !== undefined && v !== actual) throw new FormatError(`${file}: metadata ${key} = ${v}, but the tensor shapes give ${actual}`);
  }

  const out = new Map<string, GgufTensorRef>();
  const put = (ref: GgufTensorRef): void => {
    if (out.has(ref.name)) throw new FormatError(`${file}: two GGUF tensors map to ${ref.name}`);
    out.set(ref.name, ref);
  };
  for (const t of g.tensors) {
    const global = RWKV7_GLOBAL_MAP.find(([n]) => n === t.name);
    let canon: string, rel: Relation;
    if (global) {
      canon = global[1];
      rel = 'same';
    } else {
      const m = /^blk\.(\d+)\.(.+)$/.exec(t.name);
      const entry = m ? layerMap.get(m[2]!) : undefined;
      if (!m || !entry) throw new FormatError(`${file}: unrecognised tensor ${t.name} for the rwkv7 architecture`);
      // Layer 0's value-residual LoRA is a placeholder llama.cpp wants (copies of the a-LoRA): unused, dropped.
      if (m[1] === '0' && /^time_mix_v[012]\.weight$/.test(m[2]!)) continue;
      canon = `blocks.${m[1]}.${entry[0]}`;
      rel = entry[1];
    }
    const raw = (): Uint8Array => readExact(g.src, t.fileOffset, t.nbytes);
    const dtype = plainDType(t);
    const wrongShape = (want: string): FormatError =>
      new FormatError(`${file}: tensor ${t.name} has ne [${t.ne}], expected ${want}`);
    switch (rel) {
      case 'lerp': {
        // ne [C, 1, 1, 6]: six vectors of C values, one after another.
        if (t.numel !== 6 * C || t.ne[0] !== C || t.ne[t.ne.length - 1] !== 6) throw wrongShape(`[${C}, 1, 1, 6]`);
        LERP_ORDER.forEach((x, i) => put({
          name: canon.replace('x_*', `x_${x}`), dtype, shape: [1, 1, C],
          read: () => {
            const d = decoded(g, t);
            const es = ES[d.dtype]!;
            return d.bytes.slice(i * C * es, (i + 1) * C * es);
          },
        }));
        continue;
      }
      case 'vector':
        if (t.numel !== C || t.ne[0] !== C) throw wrongShape(`[${C}]`);
        break;
      case 'r_k':
        if (t.numel !== C || t.ne[0] !== C) throw wrongShape(`[${C}] (n_head x head_size flattened)`);
        break;
      case 'transpose':
        if (t.ne.length !== 2) throw wrongShape('a 2-D LoRA factor');
        break;
      case 'same':
        break;
    }
    const canonShape = rel === 'vector' ? [1, 1, C] : rel === 'r_k' ? [C / headSize, headSize]
      : rel === 'transpose' ? [t.shape[1]!, t.shape[0]!] : [...t.shape];
    const transposed = rel === 'transpose';
    // a float tensor stored as the canonical one is read by offset (TensorRef.readInto: no copy of it in memory)
    const plain = !transposed && dtype === t.type.name;
    put({
      name: canon, dtype, shape: canonShape,
      read: () => {
        const d = decoded(g, t);
        return transposed ? transposeBytes(d.bytes, t.shape[0]!, t.shape[1]!, ES[d.dtype]!) : d.bytes;
      },
      ...(plain ? {
        readInto: (dst: Uint8Array, start = 0) => {
          if (!Number.isSafeInteger(start) || start < 0 || start + dst.length > t.nbytes) throw new RangeError(`readInto: bytes [${start}, ${start + dst.length}) of ${t.name} (${t.nbytes} bytes)`);
          readExactInto(g.src, t.fileOffset + start, dst);
        },
      } : {}),
      ggml: { name: t.name, type: t.type, fileShape: t.shape, transposed, readRaw: raw },
    });
  }
  return { tensors: out, shape };
}

/** Python `repr(bytes)[2:-1]`-escaped token text (how the converter stores RWKV World tokens) -> the bytes. */
export function unescapeRwkvToken(s: string): Uint8Array | undefined {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7e || c < 0x20) return undefined; // repr(bytes) is printable ASCII only
    if (c !== 0x5c) { out.push(c); continue; }
    const e = s[++i];
    switch (e) {
      case '\\': out.push(0x5c); break;
      case "'": out.push(0x27); break;
      case '"': out.push(0x22); break;
      case 'n': out.push(0x0a); break;
      case 'r': out.push(0x0d); break;
      case 't': out.push(0x09); break;
      case 'x': {
        const h = s.slice(i + 1, i + 3);
        if (!/^[0-9a-fA-F]{2}$/.test(h)) return undefined;
        out.push(parseInt(h, 16));
        i += 2;
        break;
      }
      default: return undefined;
    }
  }
  return Uint8Array.from(out);
}

/** Python `repr(bytes)[2:-1]` of a token's bytes (the inverse of `unescapeRwkvToken`). */
export function escapeRwkvToken(b: Uint8Array): string {
  // repr picks single quotes unless the bytes contain ' and no ": then double quotes, and ' is not escaped.
  const dq = b.includes(0x27) && !b.includes(0x22);
  let s = '';
  for (const c of b) {
    if (c === 0x5c) s += '\\\\';
    else if (c === 0x27 && !dq) s += "\\'";
    else if (c === 0x09) s += '\\t';
    else if (c === 0x0a) s += '\\n';
    else if (c === 0x0d) s += '\\r';
    else if (c < 0x20 || c >= 0x7f) s += `\\x${c.toString(16).padStart(2, '0')}`;
    else s += String.fromCharCode(c);
  }
  return s;
}

/** What a World-vocabulary source must offer (the WorldTokenizer does). */
export interface VocabLike {
  readonly vocabSize: number;
  tokenBytes(id: number): Uint8Array;
}

export interface GgufVocabCheck {
  /** `world`: the full World vocabulary; `world-prefix`: its first n tokens (cut tiny models); `none`: no tokenizer. */
  status: 'world' | 'world-prefix' | 'different' | 'none';
  tokens: number;
  /** For `different`: the first id whose bytes differ, with both sides. */
  mismatch?: { id: number; gguf: string; world: string };
  message: string;
}

/** Compares a GGUF's `tokenizer.ggml.*` (model "rwkv") with the World vocabulary, token by token, as bytes. */
export function checkGgufVocab(g: GgufFile, world: VocabLike): GgufVocabCheck {
  const file = g.src.name;
  const model = g.metadata.get('tokenizer.ggml.model')?.value;
  const toks: GgufKV | undefined = g.metadata.get('tokenizer.ggml.tokens');
  if (model === undefined && !toks) return { status: 'none', tokens: 0, message: `${file}: no tokenizer in the GGUF` };
  const list = toks?.value;
  if (model !== 'rwkv' || typeof list !== 'object' || list === null || typeof list === 'bigint') {
    return { status: 'different', tokens: 0, message: `${file}: GGUF tokenizer is ${JSON.stringify(String(model))}, not the RWKV World tokenizer ("rwkv")` };
  }
  const items = list.items;
  const show = (b: Uint8Array): string => JSON.stringify(escapeRwkvToken(b));
  for (let id = 0; id < items.length; id++) {
    const s = items[id];
    if (typeof s !== 'string') return { status: 'different', tokens: items.length, message: `${file}: tokenizer.ggml.tokens[${id}] is not a string` };
    const want = id < world.vocabSize ? world.tokenBytes(id) : undefined;
    // Id 0 is "<s>" (World has no bytes for it); ids the World file does not define are "[PAD<id>]".
    if (want !== undefined && want.length === 0 && (s === '<s>' || s === `[PAD${id}]`)) continue;
    const got = unescapeRwkvToken(s);
    const same = got !== undefined && want !== undefined && got.length === want.length && got.every((v, k) => v === want[k]);
    if (!same) {
      const mismatch = { id, gguf: JSON.stringify(s), world: want ? show(want) : '(no such id)' };
      return {
        status: 'different', tokens: items.length, mismatch,
        message: `${file}: GGUF vocabulary differs from the RWKV World vocabulary at token ${id}: GGUF has ${mismatch.gguf}, World has ${mismatch.world}`,
      };
    }
  }
  const full = items.length === world.vocabSize;
  return {
    status: full ? 'world' : 'world-prefix', tokens: items.length,
    message: full ? `${file}: tokenizer is the RWKV World vocabulary (${items.length} tokens)` : `${file}: tokenizer is the first ${items.length} tokens of the RWKV World vocabulary`,
  };
}
