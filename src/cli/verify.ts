import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import { addModelOptions, loadModelFromFlags, parseNumber, type ModelFlags } from './common.js';
import { verifyGolden, type VerifyMode } from '../runtime/verify.js';
import { loadModel } from '../runtime/load.js';
import { UserError } from '../errors.js';

interface Flags extends ModelFlags {
  golden: string;
  mode: 'rnn' | 'seq' | 'both';
  against: 'golden' | 'js';
  tolerance?: number;
  json?: boolean;
}

/**
 * Default tolerance (max|Δ|/std of the logits; the two official implementations differ by ~2e-6): the js backend
 * (float64 arithmetic) must hold 1e-5, the fast f32 backends 5e-5, and lower-precision weights their own bounds.
 */
export function defaultTolerance(backend: string, dtype: string): number {
  if (dtype === 'int8') return 5e-2;
  if (dtype === 'f16') return 5e-3;
  if (dtype === 'bf16' && backend === 'webgpu') return 5e-3;
  return backend === 'js' ? 1e-5 : 5e-5;
}

function parseAgainst(v: string): Flags['against'] {
  if (v === 'golden' || v === 'js') return v;
  throw new InvalidArgumentError('--against must be golden or js.');
}

function parseMode(v: string): Flags['mode'] {
  if (v === 'rnn' || v === 'seq' || v === 'both') return v;
  throw new InvalidArgumentError('--mode must be rnn, seq or both.');
}

export function register(program: Command): void {
  const cmd = program
    .command('verify')
    .description('run the golden token sequences from the zero state and compare logits and final states with the official reference')
    .requiredOption('-g, --golden <file>', 'golden safetensors file (groups X.tokens, X.logits, X.state.*)')
    .option('--mode <mode>', 'rnn (token by token), seq (whole sequence) or both', parseMode, 'both')
    .option('--tolerance <x>', 'fail above this max|ours - ref| / std(ref) (default: f32/bf16 1e-5 on js, 5e-5 on wasm/webgpu; f16 5e-3 (and bf16 on webgpu); int8 5e-2)', parseNumber('--tolerance', 0))
    .option('--against <ref>', 'golden: the golden file\'s outputs (the float64 reference of the original weights); js: this model run by the js backend with the same weight dtype (checks the fast kernels of a lower-precision dtype apart from its quantization error)', parseAgainst, 'golden')
    .option('--json', 'print a JSON report');
  addModelOptions(cmd);
  cmd.addHelpText('after', [
    '',
    'Examples:',
    '  rwkv7 verify --model tiny.pth --golden tiny.golden.safetensors --backend js --mode both',
    '  rwkv7 verify --model tiny.pth --golden tiny.golden.safetensors --backend wasm --dtype int8 --against js',
    '',
  ].join('\n'));
  cmd.action(async (f: Flags) => {
    if (!existsSync(f.golden)) throw new UserError(`golden file not found: ${f.golden}`);
    const loaded = await loadModelFromFlags(f);
    const tol = f.tolerance ?? defaultTolerance(loaded.model.backend.name, loaded.model.backend.weightDType);
    const modes: VerifyMode[] = f.mode === 'both' ? ['rnn', 'seq'] : [f.mode];
    const dtype = loaded.model.backend.weightDType;
    // the reference rounds the same inputs to 8 bits when the model does (--activations q8)
    const activations = loaded.model.backend.activations ?? 'full';
    const reference = f.against === 'js' ? await loadModel(loaded.path, { backend: 'js', dtype, activations }) : undefined;
    const against = reference ? `the js backend with ${dtype} weights${activations === 'q8' ? ', activations q8' : ''}` : 'the golden outputs';
    try {
      const report = await verifyGolden(loaded.model, f.golden, modes, reference?.model);
      const stateErr = report.max_state_rel_error;
      const pass = report.max_deviation <= tol && (stateErr === null || stateErr <= tol);
      if (f.json) {
        process.stdout.write(JSON.stringify({ model: loaded.path, golden: f.golden, against: f.against, backend: loaded.model.backend.name, dtype, tolerance: tol, pass, ...report }, null, 2) + '\n');
      } else {
        process.stdout.write(`model ${loaded.path} | backend ${loaded.model.backend.name} | dtype ${dtype} | against ${against}\n`);
        process.stdout.write(`${'group'.padEnd(12)} ${'mode'.padEnd(4)} ${'steps'.padStart(5)}  ${'max_deviation'.padStart(13)}  ${'state_rel_err'.padStart(13)}\n`);
        for (const g of report.groups) {
          const se = g.state_max_rel_error === null ? '-' : g.state_max_rel_error.toExponential(3);
          process.stdout.write(`${g.name.padEnd(12)} ${g.mode.padEnd(4)} ${String(g.steps).padStart(5)}  ${g.max_deviation.toExponential(3).padStart(13)}  ${se.padStart(13)}\n`);
        }
        process.stdout.write(`${pass ? 'PASS' : 'FAIL'}: max deviation ${report.max_deviation.toExponential(3)}${stateErr === null ? '' : `, max state error ${stateErr.toExponential(3)}`} (tolerance ${tol})\n`);
        if (!pass && dtype === 'int8' && !reference) {
          process.stdout.write(
            'note: 8-bit weights alone move these logits by more than 5e-2 (on random-weight models up to ~0.6; see the README\'s\n' +
            '      accuracy table). --against js checks the int8 kernels against the int8 model; rwkv7 ppl measures the cost on text.\n',
          );
        }
      }
      if (!pass) process.exitCode = 1;
    } finally {
      await loaded.model.backend.dispose();
      await reference?.model.backend.dispose();
    }
  });
}

