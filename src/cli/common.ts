/**
 * Options and helpers shared by the commands that run a model (generate, chat, ...): model/backend/dtype/threads
 * flags, sampling flags, model loading with a progress bar, and the throughput summary line.
 */
import { statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import cliProgress from 'cli-progress';
import { loadModel, type LoadedModel } from '../runtime/load.js';
import { DEFAULT_MODEL_PATH } from '../platform/node.js';
import { resolveModelArg } from '../platform/models.js';
import { parseActivationMode, parseBackendName, parseWeightDType, weightsLabel, BACKEND_NAMES, type BackendName } from '../backends/index.js';
import { WEIGHT_DTYPES, type ActivationMode, type Backend, type WeightDType } from '../backends/kernels.js';
import type { SamplingOptions } from '../runtime/sampler.js';
import { readStateFile } from '../model/state-file.js';
import type { HostState } from '../model/state.js';
import type { ModelConfig } from '../model/config.js';
import { FormatError, UserError } from '../errors.js';

/** Show a load progress bar only for models at least this big (and only on a terminal). */
const PROGRESS_MIN_BYTES = 200 * 1024 * 1024;

// ---- value parsers (commander calls them with the flag's text; errors are printed with the usage) ----

export function parseNumber(name: string, min = -Infinity, max = Infinity) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number.`);
    if (n < min || n > max) {
      throw new InvalidArgumentError(max === Infinity ? `${name} must be ≥ ${min}.` : min === -Infinity ? `${name} must be ≤ ${max}.` : `${name} must be between ${min} and ${max}.`);
    }
    return n;
  };
}

export function parseInteger(name: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\s*-?\d+\s*$/.test(v) || !Number.isSafeInteger(n)) throw new InvalidArgumentError(`${name} must be an integer.`);
    if (n < min) throw new InvalidArgumentError(`${name} must be ≥ ${min}.`);
    return n;
  };
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

/** Parses "1,2,3" (and repeated flags) into token ids. */
function collectIds(v: string, prev: number[] | undefined): number[] {
  const ids = v.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    if (!/^\d+$/.test(s)) throw new InvalidArgumentError(`'${s}' is not a token id.`);
    return Number(s);
  });
  return [...(prev ?? []), ...ids];
}

// ---- model options ----

export interface ModelFlags {
  model?: string;
  backend: BackendName;
  dtype?: WeightDType;
  activations?: ActivationMode;
  threads?: number;
}

/** --model, --backend, --dtype, --activations, --threads. */
export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('-m, --model <path>', 'checkpoint (.pth, .safetensors or fla/HF folder) or a name pulled with rwkv7 pull (e.g. g1-0.4b); default: the bundled storyteller model')
    .option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(', ')}`, parseBackendName, 'auto' as BackendName)
    .option('--dtype <type>', `weight storage type: ${WEIGHT_DTYPES.join(', ')} (default: the checkpoint's own, e.g. bf16 for official releases; f32 on the js backend)`, parseWeightDType)
    .option('--activations <mode>', `inputs of 4-bit (q4) matrix products: full, or q8 (rounded to 8 bits per block of 32 as llama.cpp does for Q4_0: about 2× faster 4-bit decode on wasm, slightly less accurate; js and wasm)`, parseActivationMode)
    .option('--threads <n>', 'CPU worker threads for the wasm backend (default: number of cores)', parseInteger('--threads', 1));
}

/** Total size of a file, or of the files directly inside a folder (fla/HF layout). */
function modelBytes(path: string): number {
  try {
    const st = statSync(path);
    if (!st.isDirectory()) return st.size;
    let n = 0;
    for (const f of readdirSync(path)) {
      const s = statSync(join(path, f));
      if (s.isFile()) n += s.size;
    }
    return n;
  } catch {
    return 0;
  }
}

/**
 * Loads the model named by the flags. A progress bar is drawn on stderr while the weights upload when stderr is
 * a terminal and the checkpoint is large; backend notices (e.g. "no GPU adapter") go to stderr on a terminal.
 */
export async function loadModelFromFlags(f: ModelFlags): Promise<LoadedModel & { loadMs: number }> {
  // A --model that is not a path may name a pulled checkpoint (rwkv7 pull / rwkv7 list).
  const model = resolveModelArg(f.model);
  const path = model ?? DEFAULT_MODEL_PATH;
  const tty = process.stderr.isTTY === true;
  const showBar = tty && modelBytes(path) > PROGRESS_MIN_BYTES;
  let bar: cliProgress.SingleBar | undefined;
  const t0 = performance.now();
  try {
    const loaded = await loadModel(model, {
      backend: f.backend,
      dtype: f.dtype,
      activations: f.activations,
      threads: f.threads,
      log: (msg) => { if (tty) process.stderr.write(`rwkv7: ${msg}\n`); },
      onProgress: showBar
        ? (done, total) => {
            if (!bar) {
              bar = new cliProgress.SingleBar(
                { stream: process.stderr, format: 'loading model [{bar}] {percentage}% | {value}/{total} tensors | {duration}s', hideCursor: true, clearOnComplete: true },
                cliProgress.Presets.shades_classic,
              );
              bar.start(total, 0);
            }
            bar.update(done);
          }
        : undefined,
    });
    return { ...loaded, loadMs: performance.now() - t0 };
  } finally {
    bar?.stop();
  }
}

// ---- initial state ----

/** --state FILE (generate, chat). */
export function addStateOption(cmd: Command): Command {
  return cmd.option('--state <file>', 'start from this initial state: an official state-tuned .pth (blocks.N.att.time_state) or a state file saved by rwkv7 (chat /save)');
}

/** The initial state of `--state FILE` for the loaded model (undefined without the flag); a bad file is a UserError. */
export function initialStateFromFlag(file: string | undefined, config: ModelConfig): HostState | undefined {
  if (file === undefined) return undefined;
  try {
    return readStateFile(file, config).host;
  } catch (e) {
    if (e instanceof FormatError) throw new UserError(`--state ${e.message}`);
    throw e;
  }
}

// ---- sampling options ----

/** The sampling options as commander parses them (`--ban` is the options' `banTokens`). */
export type SamplingFlags = Omit<SamplingOptions, 'banTokens'> & { ban?: number[] };

/** --temperature, --top-p, --top-k, --presence-penalty, --frequency-penalty, --penalty-decay, --seed, --ban. */
export function addSamplingOptions(cmd: Command, d: SamplingOptions): Command {
  return cmd
    .option('--temperature <t>', 'sampling temperature; 0 = greedy (argmax; the penalties then default to 0)', parseNumber('--temperature', 0), d.temperature)
    .option('--top-p <p>', 'nucleus sampling: keep the most probable tokens up to this cumulative probability (1 = off)', parseNumber('--top-p', 0, 1), d.topP)
    .option('--top-k <k>', 'keep only the k most probable tokens (0 = off)', parseInteger('--top-k', 0), d.topK)
    .option('--presence-penalty <x>', 'subtracted from the logit of every token already generated', parseNumber('--presence-penalty'), d.presencePenalty)
    .option('--frequency-penalty <x>', 'subtracted per (decayed) occurrence of a generated token', parseNumber('--frequency-penalty'), d.frequencyPenalty)
    .option('--penalty-decay <x>', 'occurrence counts are multiplied by this after every token', parseNumber('--penalty-decay', 0, 1), d.penaltyDecay)
    .option('--seed <n>', 'random seed: the same seed gives the same output (default: random)', parseInteger('--seed', 0))
    .option('--ban <ids>', 'token ids never to sample (comma-separated; repeatable)', collectIds);
}

/**
 * The sampling options of the flags. With `--temperature 0` (greedy decoding) the repetition penalties default
 * to 0, so that the output is the model's own greedy continuation (comparable token for token with reference
 * logits); penalties given explicitly on the command line still apply.
 */
export function samplingFromFlags(f: SamplingFlags, cmd?: Command): SamplingOptions {
  const greedyDefault = (key: 'presencePenalty' | 'frequencyPenalty'): number =>
    f.temperature === 0 && cmd !== undefined && cmd.getOptionValueSource(key) === 'default' ? 0 : f[key];
  return {
    temperature: f.temperature,
    topP: f.topP,
    topK: f.topK,
    presencePenalty: greedyDefault('presencePenalty'),
    frequencyPenalty: greedyDefault('frequencyPenalty'),
    penaltyDecay: f.penaltyDecay,
    seed: f.seed,
    banTokens: f.ban,
  };
}

export { collect, resolveModelArg };

// ---- summary ----

function fmtRate(x: number): string {
  return x > 0 ? x.toFixed(x >= 100 ? 0 : 1) : '-';
}

/** "model ... | backend js | dtype f32 | prefill 123.4 tok/s (10 tokens) | decode 45.6 tok/s (32 tokens)". */
export function statsLine(
  loaded: { path: string; model: { backend: Pick<Backend, 'name' | 'weightDType' | 'activations'> } },
  s: { promptTokens: number; completionTokens: number; prefillTokS: number; decodeTokS: number },
): string {
  return [
    `model ${loaded.path}`,
    `backend ${loaded.model.backend.name}`,
    `dtype ${weightsLabel(loaded.model.backend)}`,
    `prefill ${fmtRate(s.prefillTokS)} tok/s (${s.promptTokens} tokens)`,
    `decode ${fmtRate(s.decodeTokS)} tok/s (${s.completionTokens} tokens)`,
  ].join(' | ');
}
