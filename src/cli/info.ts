import type { Command } from 'commander';
import { openCheckpoint } from '../formats/index.js';
import { configFromCheckpoint, parameterCount, type ModelConfig } from '../model/config.js';
import { openGguf, formatGgufValue } from '../formats/gguf.js';
import { checkGgufVocab } from '../formats/gguf-rwkv7.js';
import { fileSource } from '../platform/node.js';
import { resolveModelArg } from '../platform/models.js';
import { WorldTokenizer } from '../tokenizer/index.js';

/** What a GGUF adds to `rwkv7 info`. */
export interface GgufInfo {
  version: number;
  /** general.name, general.file_type, general.quantization_version, ... (scalars only). */
  metadata: Record<string, string>;
  /** Tensor group -> "Q4_0 x 36, F32 x 12" (the file's own types, before dequantization). */
  types: Record<string, string>;
  /** The GGUF tokenizer against the RWKV World vocabulary. */
  tokenizer: string;
}

/** Tensor groups for the per-group type summary, by llama.cpp tensor name. */
const GROUPS: ReadonlyArray<readonly [string, RegExp]> = [
  ['embedding', /^token_embd\.weight$/],
  ['head', /^output\.weight$/],
  ['attention matrices', /\.time_mix_(receptance|key|value|output)\.weight$/],
  ['ffn matrices', /\.channel_mix_(key|value)\.weight$/],
  ['lora', /\.time_mix_[wavg][12]\.weight$/],
  ['vectors and norms', /./],
];

function describeGguf(path: string): GgufInfo {
  const g = openGguf(fileSource(path));
  try {
    const counts = new Map<string, Map<string, number>>(GROUPS.map(([name]) => [name, new Map()]));
    for (const t of g.gguf.tensors) {
      const group = GROUPS.find(([, re]) => re.test(t.name))![0];
      const m = counts.get(group)!;
      m.set(t.type.name, (m.get(t.type.name) ?? 0) + 1);
    }
    const types: Record<string, string> = {};
    for (const [group, m] of counts) if (m.size) types[group] = [...m].map(([ty, n]) => `${ty} x ${n}`).join(', ');
    const metadata: Record<string, string> = {};
    for (const [k, kv] of g.ggufMetadata) {
      if (k.startsWith('general.') || (k.startsWith('tokenizer.') && k !== 'tokenizer.chat_template')) metadata[k] = formatGgufValue(kv.value);
    }
    const vocab = checkGgufVocab(g.gguf, WorldTokenizer.default());
    return { version: g.gguf.version, metadata, types, tokenizer: vocab.message.slice(path.length + 2) };
  } finally {
    g.close();
  }
}

/** What `rwkv7 info` reports (the --json shape). */
export interface ModelInfo {
  path: string;
  format: string;
  layout: string;
  n_layer: number;
  n_embd: number;
  head_size: number;
  n_head: number;
  vocab_size: number;
  dim_ffn: number;
  lora: { decay: number; a: number; v: number; gate: number };
  /** Lower-case element type ("bf16"), or "mixed (bf16 x N, f32 x M)". */
  dtype: string;
  parameters: number;
  tensors: number;
  /** GGUF files only. */
  gguf?: GgufInfo;
}

/** Opens a checkpoint, derives and validates its hyperparameters, and summarises it. */
export function describeModel(path: string): ModelInfo {
  const ck = openCheckpoint(path);
  try {
    const c: ModelConfig = configFromCheckpoint(ck);
    const counts = new Map<string, number>();
    for (const t of ck.tensors.values()) counts.set(t.dtype.toLowerCase(), (counts.get(t.dtype.toLowerCase()) ?? 0) + 1);
    const dtype = counts.size === 1 ? [...counts.keys()][0]! : `mixed (${[...counts].map(([d, n]) => `${d} x ${n}`).join(', ')})`;
    return {
      path, format: ck.format, layout: ck.layout,
      n_layer: c.nLayer, n_embd: c.nEmbd, head_size: c.headSize, n_head: c.nHead, vocab_size: c.vocabSize,
      dim_ffn: c.dimFfn, lora: { ...c.lora }, dtype, parameters: parameterCount(ck), tensors: ck.tensors.size,
      ...(ck.format === 'gguf' ? { gguf: describeGguf(path) } : {}),
    };
  } finally {
    ck.close();
  }
}

function humanCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} K`;
  return String(n);
}

export function formatInfo(i: ModelInfo): string {
  const rows: Array<[string, string]> = [
    ['model', i.path],
    ['format', i.gguf ? 'gguf (llama.cpp rwkv7)' : `${i.format} (${i.layout} layout)`],
    ['n_layer', String(i.n_layer)],
    ['n_embd', String(i.n_embd)],
    ['head_size', String(i.head_size)],
    ['n_head', String(i.n_head)],
    ['vocab_size', String(i.vocab_size)],
    ['dim_ffn', String(i.dim_ffn)],
    ['lora', `decay ${i.lora.decay}, a ${i.lora.a}, v ${i.lora.v}, gate ${i.lora.gate}`],
    ['dtype', i.dtype],
    ['parameters', `${i.parameters} (${humanCount(i.parameters)}) in ${i.tensors} tensors`],
  ];
  if (i.gguf) {
    // The canonical tensors of a quantized GGUF are dequantized to f32 when loaded; show the file's own types.
    rows.push(['gguf', `version ${i.gguf.version}, ${i.gguf.metadata['general.name'] ?? 'unnamed'}, file_type ${i.gguf.metadata['general.file_type'] ?? '?'}`]);
    for (const [group, types] of Object.entries(i.gguf.types)) rows.push(['  types', `${group}: ${types}`]);
    rows.push(['tokenizer', i.gguf.tokenizer]);
  }
  return rows.map(([k, v]) => `${k.padEnd(11)} ${v}`).join('\n') + '\n';
}

/** Registers `rwkv7 info`. */
export function register(program: Command): void {
  program
    .command('info')
    .description('show a checkpoint\'s format, layout and hyperparameters (.pth, .safetensors, .gguf or fla/HF folder)')
    .argument('<model>', 'checkpoint file or folder, or a name pulled with rwkv7 pull')
    .option('--json', 'print JSON')
    .action((model: string, opts: { json?: boolean }) => {
      const info = describeModel(resolveModelArg(model) ?? model);
      process.stdout.write(opts.json ? `${JSON.stringify(info, null, 2)}\n` : formatInfo(info));
    });
}
