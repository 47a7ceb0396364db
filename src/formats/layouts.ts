/**
 * Tensor naming layouts and the lazy adapters between them.
 *
 * Canonical (in-memory) naming is BlinkDL's release layout. The flash-linear-attention / Hugging Face
 * `rwkv7` layout stores the same weights under other names; derived from the fixture pair
 * (tiny-l3-d256.pth vs tiny-l3-d256-fla/, compared bit for bit):
 *
 *   model.embeddings.weight                  emb.weight
 *   model.layers.N.pre_norm.{weight,bias}    blocks.N.ln0.*            (layer 0 only)
 *   model.layers.N.attn_norm.*               blocks.N.ln1.*
 *   model.layers.N.ffn_norm.*                blocks.N.ln2.*
 *   attn.x_{r,w,k,v,a,g} [1,1,C]             att.x_* [1,1,C]
 *   attn.{w,a,v}_lora.lora.0.weight [r,C]    att.{w,a,v}1 [C,r]        transposed
 *   attn.{w,a,v}_lora.lora.2.weight [C,r]    att.{w,a,v}2 [r,C]        transposed
 *   attn.{w,a,v}_lora.lora.2.bias [C]        att.{w,a,v}0 [1,1,C]      reshaped
 *   attn.g_lora.lora.0.weight [r,C]          att.g1 [C,r]              transposed
 *   attn.g_lora.lora.2.weight [C,r]          att.g2 [r,C]              transposed
 *   attn.k_k, attn.k_a [C]                   att.k_k, att.k_a [1,1,C]  reshaped
 *   attn.r_k [H,N]                           att.r_k [H,N]
 *   attn.{r,k,v,o}_proj.weight               att.{receptance,key,value,output}.weight
 *   attn.g_norm.*                            att.ln_x.*
 *   ffn.x_k [C]                              ffn.x_k [1,1,C]           reshaped
 *   ffn.{key,value}.weight                   ffn.{key,value}.weight
 *   model.norm.*                             ln_out.*
 *   lm_head.weight                           head.weight
 *
 * fla has no v LoRA in layer 0 (BlinkDL files may carry an unused blocks.0.att.v0/v1/v2; they are dropped
 * when writing fla). The `model.` prefix is optional when reading (a bare RWKV7Model state dict).
 */
import { FormatError } from '../errors.js';
import { DTYPE_BYTES, type Layout, type TensorRef } from './types.js';

/** How a fla tensor relates to its canonical twin. */
type Kind = 'same' | 'transpose' | 'vector';

/** Per-layer pairs: fla suffix (after `layers.N.`), canonical suffix (after `blocks.N.`), relation. */
const LAYER_MAP: ReadonlyArray<readonly [string, string, Kind]> = [
  ['pre_norm.weight', 'ln0.weight', 'same'], ['pre_norm.bias', 'ln0.bias', 'same'],
  ['attn_norm.weight', 'ln1.weight', 'same'], ['attn_norm.bias', 'ln1.bias', 'same'],
  ['ffn_norm.weight', 'ln2.weight', 'same'], ['ffn_norm.bias', 'ln2.bias', 'same'],
  ...(['r', 'w', 'k', 'v', 'a', 'g'] as const).map((x) => [`attn.x_${x}`, `att.x_${x}`, 'vector'] as const),
  ...(['w', 'a', 'v'] as const).flatMap((x) => [
    [`attn.${x}_lora.lora.2.bias`, `att.${x}0`, 'vector'],
    [`attn.${x}_lora.lora.0.weight`, `att.${x}1`, 'transpose'],
    [`attn.${x}_lora.lora.2.weight`, `att.${x}2`, 'transpose'],
  ] as const),
  ['attn.g_lora.lora.0.weight', 'att.g1', 'transpose'], ['attn.g_lora.lora.2.weight', 'att.g2', 'transpose'],
  ['attn.k_k', 'att.k_k', 'vector'], ['attn.k_a', 'att.k_a', 'vector'], ['attn.r_k', 'att.r_k', 'same'],
  ['attn.r_proj.weight', 'att.receptance.weight', 'same'], ['attn.k_proj.weight', 'att.key.weight', 'same'],
  ['attn.v_proj.weight', 'att.value.weight', 'same'], ['attn.o_proj.weight', 'att.output.weight', 'same'],
  ['attn.g_norm.weight', 'att.ln_x.weight', 'same'], ['attn.g_norm.bias', 'att.ln_x.bias', 'same'],
  ['ffn.x_k', 'ffn.x_k', 'vector'], ['ffn.key.weight', 'ffn.key.weight', 'same'], ['ffn.value.weight', 'ffn.value.weight', 'same'],
];
const GLOBAL_MAP: ReadonlyArray<readonly [string, string]> = [
  ['model.embeddings.weight', 'emb.weight'], ['model.norm.weight', 'ln_out.weight'],
  ['model.norm.bias', 'ln_out.bias'], ['lm_head.weight', 'head.weight'],
];
/** fla shapes of the `vector` tensors (the rest are [C] in fla and [1,1,C] canonically). */
const FLA_VECTOR_3D = /^attn\.x_[rwkvag]$/;

const flaToCanonSuffix = new Map(LAYER_MAP.map(([f, c, k]) => [f, [c, k] as const]));
const canonToFlaSuffix = new Map(LAYER_MAP.map(([f, c, k]) => [c, [f, k] as const]));

/** Guesses the layout from tensor names. */
export function detectLayout(names: Iterable<string>): Layout | undefined {
  let bl = 0, fla = 0;
  for (const n of names) {
    if (n === 'emb.weight' || n.startsWith('blocks.')) bl++;
    else if (/^(model\.)?(layers\.\d+\.|embeddings\.weight$)/.test(n) || n === 'lm_head.weight') fla++;
  }
  if (bl === 0 && fla === 0) return undefined;
  return bl >= fla ? 'blinkdl' : 'fla';
}

/** Transposes a row-major [rows, cols] matrix of `es`-byte elements. */
export function transposeBytes(src: Uint8Array, rows: number, cols: number, es: number): Uint8Array {
  const s = src.byteOffset % es === 0 ? src : src.slice();
  const n = rows * cols;
  const out = new Uint8Array(src.length);
  const go = <T extends { [i: number]: number | bigint }>(a: T, b: T): Uint8Array => {
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) b[c * rows + r] = a[r * cols + c]!;
    return out;
  };
  switch (es) {
    case 1: return go(s, out);
    case 2: return go(new Uint16Array(s.buffer, s.byteOffset, n), new Uint16Array(out.buffer));
    case 4: return go(new Uint32Array(s.buffer, s.byteOffset, n), new Uint32Array(out.buffer));
    case 8: return go(new BigUint64Array(s.buffer, s.byteOffset, n), new BigUint64Array(out.buffer));
    default: throw new Error(`unsupported element size ${es}`);
  }
}

/** A view of `ref` under another name and shape; `transpose` swaps a 2-D tensor's axes when read. */
function adapt(ref: TensorRef, name: string, shape: number[], transpose: boolean): TensorRef {
  if (!transpose) {
    const into = ref.readInto;
    return into ? { name, dtype: ref.dtype, shape, read: () => ref.read(), readInto: (dst, start) => into.call(ref, dst, start) } : { name, dtype: ref.dtype, shape, read: () => ref.read() };
  }
  const [rows, cols] = ref.shape as [number, number];
  return { name, dtype: ref.dtype, shape, read: () => transposeBytes(ref.read(), rows, cols, DTYPE_BYTES[ref.dtype]) };
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Maps fla/HF tensors to canonical names and shapes (lazily: nothing is read). */
export function flaToCanonical(raw: ReadonlyMap<string, TensorRef>, path: string): Map<string, TensorRef> {
  const out = new Map<string, TensorRef>();
  for (const [name, ref] of raw) {
    const bare = name.startsWith('model.') ? name.slice(6) : name;
    const global = GLOBAL_MAP.find(([f]) => f === name || f === `model.${bare}`);
    let canon: string, kind: Kind;
    if (global) {
      canon = global[1];
      kind = 'same';
    } else {
      const m = /^layers\.(\d+)\.(.+)$/.exec(bare);
      const entry = m ? flaToCanonSuffix.get(m[2]!) : undefined;
      if (!m || !entry) throw new FormatError(`${path}: unrecognised tensor ${name} for the fla/HF rwkv7 layout`);
      canon = `blocks.${m[1]}.${entry[0]}`;
      kind = entry[1];
    }
    let shape: number[];
    if (kind === 'transpose') {
      if (ref.shape.length !== 2) throw new FormatError(`${path}: tensor ${name} should be 2-D, has shape [${ref.shape}]`);
      shape = [ref.shape[1]!, ref.shape[0]!];
    } else if (kind === 'vector') {
      shape = [1, 1, numel(ref.shape)];
    } else {
      shape = [...ref.shape];
    }
    if (out.has(canon)) throw new FormatError(`${path}: tensors map to ${canon} twice`);
    out.set(canon, adapt(ref, canon, shape, kind === 'transpose'));
  }
  return out;
}

/**
 * Maps canonical tensors to fla/HF names and shapes for writing. Returns the tensors and the names that
 * have no fla counterpart and were left out (the unused layer-0 v0/v1/v2).
 */
export function canonicalToFla(canon: ReadonlyMap<string, TensorRef>): { tensors: TensorRef[]; dropped: string[] } {
  const tensors: TensorRef[] = [];
  const dropped: string[] = [];
  for (const [name, ref] of canon) {
    const global = GLOBAL_MAP.find(([, c]) => c === name);
    if (global) {
      tensors.push(adapt(ref, global[0], [...ref.shape], false));
      continue;
    }
    const m = /^blocks\.(\d+)\.(.+)$/.exec(name);
    const entry = m ? canonToFlaSuffix.get(m[2]!) : undefined;
    if (!m || !entry || (m[1] === '0' && /^att\.v[012]$/.test(m[2]!))) {
      dropped.push(name);
      continue;
    }
    const [suffix, kind] = entry;
    let shape: number[];
    if (kind === 'transpose') shape = [ref.shape[1]!, ref.shape[0]!];
    else if (kind === 'vector') shape = FLA_VECTOR_3D.test(suffix) ? [1, 1, numel(ref.shape)] : [numel(ref.shape)];
    else shape = [...ref.shape];
    tensors.push(adapt(ref, `model.layers.${m[1]}.${suffix}`, shape, kind === 'transpose'));
  }
  return { tensors, dropped };
}
