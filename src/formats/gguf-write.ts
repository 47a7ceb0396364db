/**
 * GGUF writer: the container (any metadata and tensors, streamed) and the `rwkv7` model file llama.cpp's own
 * converter (`convert_hf_to_gguf.py`, Rwkv7Model, gguf-py GGUFWriter) writes from a checkpoint: same tensor names,
 * shapes, order, types, metadata keys (in the same order) and tokenizer. Layout facts: see gguf.ts; the mapping:
 * gguf-rwkv7.ts.
 *
 * Which type each tensor gets, as the converter decides it: 1-D tensors (norms, vectors, w0/a0/v0, k_k, k_a, r_k,
 * lerp_k), time_mix_lerp_fused and the decay LoRA time_mix_w1/w2 are always F32; every other matrix (embedding, head,
 * projections, a/v/g LoRA factors) gets the requested type; Q8_0/Q4_0 fall back to F16 for a tensor whose rows are
 * not a multiple of 32 values.
 */
import { FormatError } from '../errors.js';
import { toFloat32, fromFloat32 } from './dtype.js';
import { GGUF_MAGIC, GGUF_VALUE, GGUF_DEFAULT_ALIGNMENT, type GgufKV, type GgufValue } from './gguf.js';
import { GGML_TYPE, SUPPORTED_TYPES, ggmlBytes, quantizeQ4_0, quantizeQ8_0, type GgmlTypeInfo } from './gguf-quant.js';
import { LERP_ORDER, escapeRwkvToken, type VocabLike } from './gguf-rwkv7.js';
import type { TensorRef } from './types.js';
import type { ByteSink } from './source.js';

/** One tensor to write: `ne` innermost first; `data()` returns exactly `ggmlBytes(type, numel)` bytes. */
export interface GgufTensorSpec {
  readonly name: string;
  readonly ne: readonly number[];
  readonly type: GgmlTypeInfo;
  data(): Uint8Array;
}

const enc = new TextEncoder();

/** Grows a byte buffer for the header. */
class Bytes {
  private buf = new Uint8Array(1 << 16);
  private dv = new DataView(this.buf.buffer);
  len = 0;
  private room(n: number): number {
    if (this.len + n > this.buf.length) {
      const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
      next.set(this.buf.subarray(0, this.len));
      this.buf = next;
      this.dv = new DataView(next.buffer);
    }
    const at = this.len;
    this.len += n;
    return at;
  }
  u8(v: number): void { const a = this.room(1); this.dv.setUint8(a, v); }
  i8(v: number): void { const a = this.room(1); this.dv.setInt8(a, v); }
  u16(v: number): void { const a = this.room(2); this.dv.setUint16(a, v, true); }
  i16(v: number): void { const a = this.room(2); this.dv.setInt16(a, v, true); }
  u32(v: number): void { const a = this.room(4); this.dv.setUint32(a, v, true); }
  i32(v: number): void { const a = this.room(4); this.dv.setInt32(a, v, true); }
  f32(v: number): void { const a = this.room(4); this.dv.setFloat32(a, v, true); }
  f64(v: number): void { const a = this.room(8); this.dv.setFloat64(a, v, true); }
  u64(v: number | bigint): void { const a = this.room(8); this.dv.setBigUint64(a, BigInt(v), true); }
  i64(v: number | bigint): void { const a = this.room(8); this.dv.setBigInt64(a, BigInt(v), true); }
  str(s: string): void {
    const b = enc.encode(s);
    this.u64(b.length);
    this.raw(b);
  }
  raw(b: Uint8Array): void { const a = this.room(b.length); this.buf.set(b, a); }
  bytes(): Uint8Array { return this.buf.subarray(0, this.len); }
}

function writeValue(out: Bytes, type: number, v: GgufValue, key: string): void {
  const bad = (): FormatError => new FormatError(`gguf writer: metadata ${key}: value ${String(v)} does not fit type ${type}`);
  if (type === GGUF_VALUE.ARRAY) {
    if (typeof v !== 'object') throw bad();
    out.u32(v.itemType);
    out.u64(v.items.length);
    for (const item of v.items) writeValue(out, v.itemType, item, key);
    return;
  }
  if (type === GGUF_VALUE.STRING) { if (typeof v !== 'string') throw bad(); out.str(v); return; }
  if (type === GGUF_VALUE.BOOL) { if (typeof v !== 'boolean') throw bad(); out.u8(v ? 1 : 0); return; }
  if (type === GGUF_VALUE.UINT64) { if (typeof v !== 'number' && typeof v !== 'bigint') throw bad(); out.u64(v); return; }
  if (type === GGUF_VALUE.INT64) { if (typeof v !== 'number' && typeof v !== 'bigint') throw bad(); out.i64(v); return; }
  if (typeof v !== 'number') throw bad();
  switch (type) {
    case GGUF_VALUE.UINT8: out.u8(v); break;
    case GGUF_VALUE.INT8: out.i8(v); break;
    case GGUF_VALUE.UINT16: out.u16(v); break;
    case GGUF_VALUE.INT16: out.i16(v); break;
    case GGUF_VALUE.UINT32: out.u32(v); break;
    case GGUF_VALUE.INT32: out.i32(v); break;
    case GGUF_VALUE.FLOAT32: out.f32(v); break;
    case GGUF_VALUE.FLOAT64: out.f64(v); break;
    default: throw bad();
  }
}

const pad = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * Writes a GGUF v3 container through `write` (called with consecutive chunks): header, metadata in the given order,
 * tensor infos, then each tensor's data padded to the alignment (as gguf-py's GGUFWriter). Tensors are produced one
 * at a time, so only one is in memory. Returns the total size.
 */
export function writeGguf(write: (chunk: Uint8Array) => void, metadata: ReadonlyArray<readonly [string, GgufKV]>, tensors: readonly GgufTensorSpec[], alignment = GGUF_DEFAULT_ALIGNMENT): number {
  const h = new Bytes();
  h.u32(GGUF_MAGIC);
  h.u32(3);
  h.u64(tensors.length);
  h.u64(metadata.length);
  for (const [key, kv] of metadata) {
    h.str(key);
    h.u32(kv.type);
    writeValue(h, kv.type, kv.value, key);
  }
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const numel = t.ne.reduce((a, b) => a * b, 1);
    const nbytes = ggmlBytes(t.type, numel);
    h.str(t.name);
    h.u32(t.ne.length);
    for (const d of t.ne) h.u64(d);
    h.u32(t.type.id);
    h.u64(offset);
    sizes.push(nbytes);
    offset += pad(nbytes, alignment);
  }
  const headerLen = pad(h.len, alignment);
  h.raw(new Uint8Array(headerLen - h.len));
  write(h.bytes());
  let total = headerLen;
  tensors.forEach((t, i) => {
    const b = t.data();
    if (b.length !== sizes[i]) throw new Error(`gguf writer: tensor ${t.name} produced ${b.length} bytes, expected ${sizes[i]}`);
    write(b);
    const p = pad(b.length, alignment) - b.length;
    if (p) write(new Uint8Array(p));
    total += b.length + p;
  });
  return total;
}

/** Output types of `rwkv7 convert ... .gguf --dtype`. */
export type GgufTargetType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';

const TARGET: Record<GgufTargetType, { type: GgmlTypeInfo; fileType: number }> = {
  // general.file_type values are llama.cpp's LlamaFileType (ALL_F32, MOSTLY_F16, MOSTLY_Q4_0, MOSTLY_Q8_0, MOSTLY_BF16).
  f32: { type: SUPPORTED_TYPES.get(GGML_TYPE.F32)!, fileType: 0 },
  f16: { type: SUPPORTED_TYPES.get(GGML_TYPE.F16)!, fileType: 1 },
  q4_0: { type: SUPPORTED_TYPES.get(GGML_TYPE.Q4_0)!, fileType: 2 },
  q8_0: { type: SUPPORTED_TYPES.get(GGML_TYPE.Q8_0)!, fileType: 7 },
  bf16: { type: SUPPORTED_TYPES.get(GGML_TYPE.BF16)!, fileType: 32 },
};
const F32 = TARGET.f32.type, F16 = TARGET.f16.type;

/** f32 values encoded as `type`. */
export function encodeAs(type: GgmlTypeInfo, x: Float32Array): Uint8Array {
  switch (type.name) {
    case 'F32': return fromFloat32(x, 'F32');
    case 'F16': return fromFloat32(x, 'F16');
    case 'BF16': return fromFloat32(x, 'BF16');
    case 'Q8_0': return quantizeQ8_0(x);
    case 'Q4_0': return quantizeQ4_0(x);
    default: throw new Error(`gguf writer: cannot encode ${type.name}`);
  }
}

/** The hyperparameters the writer needs (a subset of ModelConfig). */
export interface Rwkv7GgufConfig {
  nLayer: number; nEmbd: number; headSize: number; vocabSize: number; dimFfn: number;
  lora: { decay: number; a: number; v: number; gate: number };
}

export interface Rwkv7GgufOptions {
  type: GgufTargetType;
  /** general.name (the converter uses the model's folder name). */
  name: string;
  /** The World vocabulary, for tokenizer.ggml.tokens (cut to the model's vocabulary size). */
  vocab: VocabLike;
}

/**
 * The RWKV World chat template llama.cpp's converter stores with RWKV-7 models (`tokenizer.chat_template`);
 * kept verbatim (data, not code run here) so llama.cpp-based tools format chats the same way.
 */
export const RWKV_WORLD_CHAT_TEMPLATE = [
  "{%- if not add_generation_prompt is defined -%}", "    {%- set add_generation_prompt = true -%}", "{%- endif -%}",
  "{%- set ns = namespace(system_prompt='') -%}", "{%- for message in messages -%}",
  "    {%- if message['role'] == 'system' -%}", "        {%- set ns.system_prompt = message['content'] -%}",
  "    {%- endif -%}", "{%- endfor -%}", "{{bos_token}}", "{%- if ns.system_prompt != '' -%}",
  "{{- 'System: ' + ns.system_prompt + '\\n\\n' -}}", "{%- endif -%}", "{%- for message in messages -%}",
  "    {%- if message['role'] == 'user' -%}", "        {{- 'User: ' + message['content']|trim + '\\n\\n' -}}",
  "    {%- endif -%}", "    {%- if message['role'] == 'assistant' and message['content'] is  not none -%}",
  "        {%- set content = message['content'] -%}", "        {%- if '</think>' in content -%}",
  "            {%- set content = content.split('</think>')[-1] -%}", "        {%- endif -%}",
  "        {{- 'Assistant: ' + content|trim + '\\n\\n' -}}", "    {%- endif -%}", "{%- endfor -%}",
  "{%- if add_generation_prompt -%}", "    {{- 'Assistant:' -}}",
  "    {%- if enable_thinking is defined and enable_thinking is false %}", "        {{- ' <think>\\n</think>' }}",
  "    {%- endif %}", "    {%- if enable_thinking is defined and enable_thinking is true %}", "        {{- ' <think>' }}",
  "    {%- endif %}", "{%- endif -%}",
].join('\n');

/** gguf-py's `model_weight_count_rounded_notation`: "28M", "737K", "1.5B" (at least two significant digits). */
export function sizeLabel(params: number): string {
  const [scaled, suffix] = params > 1e12 ? [params * 1e-12, 'T'] : params > 1e9 ? [params * 1e-9, 'B'] : params > 1e6 ? [params * 1e-6, 'M'] : [params * 1e-3, 'K'];
  const digits = String(Math.round(scaled)).replace(/^0+/, '').length;
  return `${scaled.toFixed(Math.max(2 - digits, 0))}${suffix}`;
}

/** Per-layer tensor order of the converter (it walks the fla tensors in sorted-name order). */
const LAYER_ORDER = [
  'a1', 'a0', 'a2', 'g1', 'g2', 'time_mix_ln.bias', 'time_mix_ln.weight', 'k_a', 'k_k', 'key', 'output', 'r_k',
  'receptance', 'v1', 'v0', 'v2', 'value', 'w1', 'w0', 'w2', 'time_mix_lerp_fused', 'attn_norm.bias',
  'attn_norm.weight', 'channel_mix_key', 'channel_mix_value', 'channel_mix_lerp_k', 'attn_norm_2.bias',
  'attn_norm_2.weight',
] as const;

/**
 * The tensors and metadata of the rwkv7 GGUF llama.cpp's converter writes for a model with canonical tensors
 * `canon` (validated by configFromCheckpoint) and hyperparameters `c`. Nothing is read until a tensor's data()
 * is called.
 */
export function rwkv7GgufContents(canon: ReadonlyMap<string, TensorRef>, c: Rwkv7GgufConfig, opts: Rwkv7GgufOptions): { metadata: Array<[string, GgufKV]>; tensors: GgufTensorSpec[] } {
  const target = TARGET[opts.type];
  const C = c.nEmbd;
  const get = (name: string): TensorRef => {
    const t = canon.get(name);
    if (!t) throw new FormatError(`gguf writer: the model has no tensor ${name}`);
    return t;
  };
  const matrixType = (ne0: number): GgmlTypeInfo =>
    target.type.blockSize > 1 && ne0 % target.type.blockSize ? F16 : target.type;
  const tensors: GgufTensorSpec[] = [];
  /** A tensor whose f32 values are `values()` in GGUF order (row-major of the reversed ne). */
  const add = (name: string, ne: number[], type: GgmlTypeInfo, values: () => Float32Array): void => {
    tensors.push({ name, ne, type, data: () => encodeAs(type, values()) });
  };
  const vec = (gname: string, cname: string): void => add(gname, [C], F32, () => toFloat32(get(cname)));
  const mat = (gname: string, cname: string): void => {
    const t = get(cname);
    const [rows, cols] = t.shape as [number, number];
    add(gname, [cols, rows], matrixType(cols), () => toFloat32(t));
  };
  /** A LoRA factor stored transposed (nn.Linear orientation). */
  const lora = (gname: string, cname: string, type?: GgmlTypeInfo): void => {
    const t = get(cname);
    const [rows, cols] = t.shape as [number, number];
    add(gname, [rows, cols], type ?? matrixType(rows), () => {
      const x = toFloat32(t), y = new Float32Array(x.length);
      for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) y[k * rows + r] = x[r * cols + k]!;
      return y;
    });
  };

  mat('output.weight', 'head.weight');
  mat('token_embd.weight', 'emb.weight');
  // Layers in the order their fla names sort as strings ("layers.1.", "layers.10.", "layers.2.").
  const layers = Array.from({ length: c.nLayer }, (_, i) => i).sort((a, b) => (`${a}.` < `${b}.` ? -1 : 1));
  for (const i of layers) {
    const b = `blocks.${i}.`, g = `blk.${i}.`;
    for (const item of LAYER_ORDER) {
      const m = /^([wavg])([012])$/.exec(item);
      if (m) {
        // Layer 0 has no value residual; llama.cpp wants v0/v1/v2 anyway: the converter writes the a-LoRA, each
        // copy just before its a-twin.
        const [x, k] = [m[1]!, m[2]!];
        if (x === 'v' && i === 0) continue;
        const emit = (gx: string, cx: string): void => {
          const gn = `${g}time_mix_${gx}${k}.weight`, cn = `${b}att.${cx}${k}`;
          if (k === '0') vec(gn, cn);
          else lora(gn, cn, x === 'w' ? F32 : undefined);
        };
        if (x === 'a' && i === 0) emit('v', 'a');
        emit(x, x);
        continue;
      }
      switch (item) {
        case 'time_mix_ln.bias': case 'time_mix_ln.weight': vec(`${g}${item}`, `${b}att.ln_x.${item.split('.')[1]}`); break;
        case 'k_a': case 'k_k': case 'r_k': vec(`${g}time_mix_${item}.weight`, `${b}att.${item}`); break;
        case 'key': case 'output': case 'receptance': case 'value':
          mat(`${g}time_mix_${item}.weight`, `${b}att.${item}.weight`); break;
        case 'time_mix_lerp_fused':
          add(`${g}time_mix_lerp_fused.weight`, [C, 1, 1, 6], F32, () => {
            const y = new Float32Array(6 * C);
            LERP_ORDER.forEach((x, j) => y.set(toFloat32(get(`${b}att.x_${x}`)), j * C));
            return y;
          });
          break;
        case 'attn_norm.bias': case 'attn_norm.weight': vec(`${g}${item}`, `${b}ln1.${item.split('.')[1]}`); break;
        case 'attn_norm_2.bias': case 'attn_norm_2.weight': vec(`${g}${item}`, `${b}ln2.${item.split('.')[1]}`); break;
        case 'channel_mix_key': mat(`${g}channel_mix_key.weight`, `${b}ffn.key.weight`); break;
        case 'channel_mix_value': mat(`${g}channel_mix_value.weight`, `${b}ffn.value.weight`); break;
        case 'channel_mix_lerp_k': vec(`${g}channel_mix_lerp_k.weight`, `${b}ffn.x_k`); break;
      }
    }
    if (i === 0) {
      vec('token_embd_norm.bias', 'blocks.0.ln0.bias');
      vec('token_embd_norm.weight', 'blocks.0.ln0.weight');
    }
  }
  vec('output_norm.bias', 'ln_out.bias');
  vec('output_norm.weight', 'ln_out.weight');

  const u32 = (value: number): GgufKV => ({ type: GGUF_VALUE.UINT32, value });
  const str = (value: string): GgufKV => ({ type: GGUF_VALUE.STRING, value });
  // general.size_label counts every value written, layer 0's placeholder v-LoRA included (as in llama.cpp's files).
  const params = tensors.reduce((a, t) => a + t.ne.reduce((p, d) => p * d, 1), 0);
  const { tokens, types } = rwkvTokens(opts.vocab, c.vocabSize);
  const metadata: Array<[string, GgufKV]> = [
    ['general.architecture', str('rwkv7')],
    ['rwkv7.context_length', u32(1048576)],
    ['rwkv7.embedding_length', u32(C)],
    ['rwkv7.block_count', u32(c.nLayer)],
    ['rwkv7.attention.layer_norm_epsilon', { type: GGUF_VALUE.FLOAT32, value: 1e-5 }],
    ['rwkv7.wkv.head_size', u32(c.headSize)],
    ['rwkv7.attention.decay_lora_rank', u32(c.lora.decay)],
    ['rwkv7.attention.iclr_lora_rank', u32(c.lora.a)],
    ['rwkv7.attention.value_residual_mix_lora_rank', u32(c.lora.v)],
    ['rwkv7.attention.gate_lora_rank', u32(c.lora.gate)],
    ['rwkv7.feed_forward_length', u32(c.dimFfn)],
    ['general.file_type', u32(target.fileType)],
    ['rwkv7.attention.head_count', u32(0)],
    ['general.quantization_version', u32(2)],
    ['general.type', str('model')],
    ['general.name', str(opts.name)],
    ['general.size_label', str(sizeLabel(params))],
    ['tokenizer.ggml.model', str('rwkv')],
    ['tokenizer.ggml.tokens', { type: GGUF_VALUE.ARRAY, value: { itemType: GGUF_VALUE.STRING, items: tokens } }],
    ['tokenizer.ggml.token_type', { type: GGUF_VALUE.ARRAY, value: { itemType: GGUF_VALUE.INT32, items: types } }],
    ['tokenizer.ggml.bos_token_id', u32(0)],
    ['tokenizer.ggml.eos_token_id', u32(0)],
    ['tokenizer.ggml.eot_token_id', u32(261)], // "\n\n" in the World vocabulary
    ['tokenizer.chat_template', str(RWKV_WORLD_CHAT_TEMPLATE)],
  ];
  return { metadata, tensors };
}

/** tokenizer.ggml.tokens / token_type for `n` ids: "<s>" (control), World tokens (normal), "[PAD<id>]" (unused). */
export function rwkvTokens(vocab: VocabLike, n: number): { tokens: string[]; types: number[] } {
  const tokens: string[] = ['<s>'], types: number[] = [3];
  for (let id = 1; id < n; id++) {
    const b = id < vocab.vocabSize ? vocab.tokenBytes(id) : new Uint8Array(0);
    if (b.length) { tokens.push(escapeRwkvToken(b)); types.push(1); }
    else { tokens.push(`[PAD${id}]`); types.push(5); }
  }
  return { tokens, types };
}

/**
 * Writes the rwkv7 GGUF of a model (canonical tensors, validated hyperparameters) to `sink`, tensor by tensor.
 * `onTensor` is called after each tensor with its name and stored bytes. The sink is closed, or aborted on error.
 */
export function writeRwkv7Gguf(sink: ByteSink, canon: ReadonlyMap<string, TensorRef>, c: Rwkv7GgufConfig, opts: Rwkv7GgufOptions & { onTensor?(name: string, bytes: number): void }): number {
  const { metadata, tensors } = rwkv7GgufContents(canon, c, opts);
  const wrapped = tensors.map((t) => ({ ...t, data: () => { const b = t.data(); opts.onTensor?.(t.name, b.length); return b; } }));
  try {
    const n = writeGguf((b) => sink.write(b), metadata, wrapped);
    sink.close();
    return n;
  } catch (e) {
    sink.abort();
    throw e;
  }
}
