import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { UserError } from '../errors.js';
import { openCheckpoint, writeSafetensors, canonicalToFla, readAs, DTYPE_BYTES } from '../formats/index.js';
import type { TensorSource } from '../formats/safetensors.js';
import type { DType, Layout, TensorRef } from '../formats/types.js';
import { configFromCheckpoint, type ModelConfig } from '../model/config.js';
import { writeRwkv7Gguf, type GgufTargetType } from '../formats/gguf-write.js';
import { fileSink } from '../platform/node.js';
import { WorldTokenizer } from '../tokenizer/index.js';

export type TargetDType = 'f32' | 'f16' | 'bf16';
/** What --dtype accepts for .gguf output (the ggml block types only there). */
const GGUF_TYPES: readonly string[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'];

export interface ConvertOptions {
  layout?: Layout;
  /** Convert float tensors to this type (round to nearest even); default: keep each tensor's type. */
  dtype?: TargetDType;
  /** blinkdl layout only: also write a config.json (hyperparameters) here. */
  configPath?: string;
  /** Progress callback: bytes written so far and the total. */
  onProgress?(done: number, total: number): void;
}

export interface ConvertResult {
  /** Files written. */
  files: string[];
  /** Canonical tensors with no place in the target layout (fla has no layer-0 v0/v1/v2). */
  dropped: string[];
  config: ModelConfig;
}

const TARGET: Record<TargetDType, 'F32' | 'F16' | 'BF16'> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };
const TORCH_NAME: Partial<Record<DType, string>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16', F64: 'float64' };

/** The fla / Hugging Face config.json for a model (same keys as fla's RWKV7Config). */
export function flaConfigJson(c: ModelConfig, dtype: DType): Record<string, unknown> {
  return {
    architectures: ['RWKV7ForCausalLM'],
    model_type: 'rwkv7',
    vocab_size: c.vocabSize,
    hidden_size: c.nEmbd,
    num_hidden_layers: c.nLayer,
    head_dim: c.headSize,
    num_heads: c.nHead,
    hidden_ratio: c.dimFfn / c.nEmbd,
    intermediate_size: c.dimFfn,
    decay_low_rank_dim: c.lora.decay,
    a_low_rank_dim: c.lora.a,
    v_low_rank_dim: c.lora.v,
    gate_low_rank_dim: c.lora.gate,
    norm_eps: 1e-5,
    norm_first: true,
    tie_word_embeddings: false,
    torch_dtype: TORCH_NAME[dtype] ?? 'float32',
  };
}

/** The same hyperparameters in the naming of the fixtures' *.json (for --layout blinkdl --config). */
export function blinkdlConfigJson(c: ModelConfig, dtype: DType): Record<string, unknown> {
  return {
    n_layer: c.nLayer, n_embd: c.nEmbd, head_size: c.headSize, vocab_size: c.vocabSize,
    lora: { ...c.lora }, dim_ffn: c.dimFfn, dtype: dtype.toLowerCase(),
  };
}

export interface GgufConvertOptions {
  /** Tensor type of the matrices (default: the checkpoint's own float type, as llama.cpp's `--outtype auto`). */
  dtype?: GgufTargetType;
  /** general.name (default: the input's file name without extension, as the converter names it by folder). */
  name?: string;
  onProgress?(done: number, total: number): void;
}

/**
 * Converts a checkpoint to a llama.cpp `rwkv7` GGUF: what llama.cpp's converter writes (names, shapes, order,
 * types, metadata, World tokenizer), streaming tensor by tensor.
 */
export function convertToGguf(input: string, output: string, opts: GgufConvertOptions = {}): ConvertResult {
  if (nodePath.resolve(input) === nodePath.resolve(output)) throw new UserError('convert: output must differ from input');
  const ck = openCheckpoint(input);
  try {
    const config = configFromCheckpoint(ck);
    const head = ck.tensors.get('head.weight')?.dtype;
    const type: GgufTargetType = opts.dtype ?? (head === 'BF16' ? 'bf16' : head === 'F16' ? 'f16' : 'f32');
    const name = opts.name ?? nodePath.basename(input).replace(/\.(pth|pt|bin|safetensors|gguf)$/, '');
    const total = [...ck.tensors.values()].reduce((a, t) => a + t.shape.reduce((p, q) => p * q, 1), 0);
    let done = 0;
    writeRwkv7Gguf(fileSink(output), ck.tensors, config, {
      type, name, vocab: WorldTokenizer.default(),
      onTensor: (_, bytes) => { done += bytes; opts.onProgress?.(done, total); },
    });
    // Layer 0's own v0/v1/v2 (unused) are not written: llama.cpp's placeholders there are copies of the a-LoRA.
    const dropped = ['blocks.0.att.v0', 'blocks.0.att.v1', 'blocks.0.att.v2'].filter((n) => ck.tensors.has(n));
    return { files: [output], dropped, config };
  } finally {
    ck.close();
  }
}

/**
 * Converts a checkpoint to safetensors in the BlinkDL (one file) or fla/HF (folder) layout, streaming
 * tensor by tensor: only one tensor is in memory at a time.
 */
export function convertCheckpoint(input: string, output: string, opts: ConvertOptions = {}): ConvertResult {
  const layout = opts.layout ?? 'blinkdl';
  if (nodePath.resolve(input) === nodePath.resolve(output)) throw new UserError('convert: output must differ from input');
  const ck = openCheckpoint(input);
  try {
    const config = configFromCheckpoint(ck);
    const target = opts.dtype ? TARGET[opts.dtype] : undefined;
    // Canonical tensors, retyped lazily when a target dtype is given.
    const retyped = new Map<string, TensorRef>();
    for (const [name, ref] of ck.tensors) {
      const isFloat = ref.dtype === 'F32' || ref.dtype === 'F16' || ref.dtype === 'BF16' || ref.dtype === 'F64';
      if (!target || !isFloat || ref.dtype === target) retyped.set(name, ref);
      else retyped.set(name, { name, dtype: target, shape: ref.shape, read: () => readAs(ref, target).bytes });
    }
    let sources: TensorSource[];
    let dropped: string[] = [];
    if (layout === 'fla') ({ tensors: sources, dropped } = canonicalToFla(retyped));
    else sources = [...retyped.values()];

    const dtypes = new Set(sources.map((s) => s.dtype));
    const mainDtype: DType = dtypes.size === 1 ? [...dtypes][0]! : (target ?? 'F32');
    const total = sources.reduce((a, s) => a + s.shape.reduce((p, q) => p * q, 1) * DTYPE_BYTES[s.dtype], 0);
    let done = 0;
    const onTensor = (_: string, bytes: number): void => { done += bytes; opts.onProgress?.(done, total); };
    const files: string[] = [];
    if (layout === 'fla') {
      if (fs.existsSync(output) && !fs.statSync(output).isDirectory()) throw new UserError(`${output}: exists and is not a folder (fla output is a folder)`);
      fs.mkdirSync(output, { recursive: true });
      const model = nodePath.join(output, 'model.safetensors');
      writeSafetensors(model, sources, { metadata: { format: 'pt' }, onTensor });
      const cfgFile = nodePath.join(output, 'config.json');
      fs.writeFileSync(cfgFile, `${JSON.stringify(flaConfigJson(config, mainDtype), null, 2)}\n`);
      files.push(model, cfgFile);
    } else {
      writeSafetensors(output, sources, { metadata: { format: 'pt' }, onTensor });
      files.push(output);
      if (opts.configPath) {
        fs.writeFileSync(opts.configPath, `${JSON.stringify(blinkdlConfigJson(config, mainDtype), null, 2)}\n`);
        files.push(opts.configPath);
      }
    }
    return { files, dropped, config };
  } finally {
    ck.close();
  }
}

/** Registers `rwkv7 convert`. */
export function register(program: Command): void {
  program
    .command('convert')
    .description('convert a checkpoint (.pth, .safetensors, .gguf or fla/HF folder) to safetensors (BlinkDL or fla layout) or to a llama.cpp GGUF (OUT ending in .gguf)')
    .argument('<in>', 'input checkpoint file or folder')
    .argument('<out>', 'output .safetensors file (blinkdl), folder (fla), or .gguf file (llama.cpp rwkv7)')
    .option('--layout <layout>', 'output layout: blinkdl | fla', 'blinkdl')
    .option('--dtype <dtype>', 'convert float tensors: f32 | f16 | bf16, and for .gguf output also q8_0 | q4_0 (default: keep)')
    .option('--name <name>', '.gguf output: general.name (default: the input file name)')
    .option('--config <path>', 'blinkdl layout: also write the hyperparameters as JSON here')
    .action((input: string, output: string, o: { layout: string; dtype?: string; config?: string; name?: string }) => {
      if (output.toLowerCase().endsWith('.gguf')) {
        if (o.dtype !== undefined && !GGUF_TYPES.includes(o.dtype)) throw new UserError(`convert: --dtype for .gguf output must be one of ${GGUF_TYPES.join(', ')}, not ${o.dtype}`);
        if (o.config) throw new UserError('convert: --config is for safetensors output (a GGUF carries its hyperparameters)');
        if (o.layout !== 'blinkdl') throw new UserError('convert: --layout does not apply to .gguf output (llama.cpp has one rwkv7 layout)');
        const r = convertToGguf(input, output, { dtype: o.dtype as GgufTargetType | undefined, name: o.name });
        if (r.dropped.length) process.stderr.write(`note: left out (unused by the model; llama.cpp's layer-0 placeholders are written instead): ${r.dropped.join(', ')}\n`);
        process.stderr.write(`wrote ${r.files.join(', ')}\n`);
        return;
      }
      if (o.name !== undefined) throw new UserError('convert: --name is for .gguf output');
      if (o.dtype === 'q8_0' || o.dtype === 'q4_0') throw new UserError(`convert: --dtype ${o.dtype} is for .gguf output (safetensors holds f32, f16 or bf16)`);
      if (o.layout !== 'blinkdl' && o.layout !== 'fla') throw new UserError(`convert: --layout must be blinkdl or fla, not ${o.layout}`);
      if (o.dtype !== undefined && !(o.dtype in TARGET)) throw new UserError(`convert: --dtype must be f32, f16 or bf16, not ${o.dtype}`);
      if (o.config && o.layout === 'fla') throw new UserError('convert: --config is for --layout blinkdl (fla always writes config.json)');
      let bar: cliProgress.SingleBar | undefined;
      const result = convertCheckpoint(input, output, {
        layout: o.layout, dtype: o.dtype as TargetDType | undefined, configPath: o.config,
        onProgress: (done, total) => {
          // A bar only for large models, and only on a terminal.
          if (!process.stderr.isTTY || total < 64 * 1024 * 1024) return;
          if (!bar) {
            bar = new cliProgress.SingleBar({ stream: process.stderr, format: 'converting [{bar}] {percentage}% | {value}/{total} MB' }, cliProgress.Presets.shades_classic);
            bar.start(Math.ceil(total / 2 ** 20), 0);
          }
          bar.update(Math.floor(done / 2 ** 20));
        },
      });
      bar?.stop();
      if (result.dropped.length) process.stderr.write(`note: left out (no place in the ${o.layout} layout, unused by the model): ${result.dropped.join(', ')}\n`);
      process.stderr.write(`wrote ${result.files.join(', ')}\n`);
    });
}
