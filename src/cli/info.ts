import type { Command } from 'commander';
import { openCheckpoint } from '../formats/index.js';
import { configFromCheckpoint, parameterCount, type ModelConfig } from '../model/config.js';

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
    ['format', `${i.format} (${i.layout} layout)`],
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
  return rows.map(([k, v]) => `${k.padEnd(11)} ${v}`).join('\n') + '\n';
}

/** Registers `rwkv7 info`. */
export function register(program: Command): void {
  program
    .command('info')
    .description('show a checkpoint\'s format, layout and hyperparameters (.pth, .safetensors or fla/HF folder)')
    .argument('<model>', 'checkpoint file or folder')
    .option('--json', 'print JSON')
    .action((model: string, opts: { json?: boolean }) => {
      const info = describeModel(model);
      process.stdout.write(opts.json ? `${JSON.stringify(info, null, 2)}\n` : formatInfo(info));
    });
}
