import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { addModelOptions, loadModelFromFlags, parseInteger, type ModelFlags } from './common.js';
import { softmax64, topK } from '../runtime/metrics.js';
import { WorldTokenizer } from '../tokenizer/index.js';
import { UserError } from '../errors.js';

interface Flags extends ModelFlags {
  text?: string;
  tokens?: number[];
  out: string;
  top: number;
}

function parseIds(v: string): number[] {
  const parts = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) throw new InvalidArgumentError('expected token ids like 1,2,3.');
  return parts.map((s) => {
    if (!/^\d+$/.test(s)) throw new InvalidArgumentError(`'${s}' is not a token id.`);
    return Number(s);
  });
}

const f32Bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

export function register(program: Command): void {
  const cmd = program
    .command('logits')
    .description('run a context from the zero state and dump the final logits/probabilities (raw little-endian f32) and a readable JSON summary')
    .option('--text <text>', 'context text (tokenized with the World tokenizer)')
    .option('--tokens <ids>', 'context as token ids, e.g. 1,2,3', parseIds)
    .requiredOption('-o, --out <dir>', 'output folder (final_logits.bin, final_probs.bin, final_logits.json)')
    .option('--top <k>', 'how many top tokens to list in the JSON', parseInteger('--top', 1), 10);
  addModelOptions(cmd);
  cmd.addHelpText('after', '\nExample:\n  rwkv7 logits --text "Once upon a time" --out dump/\n  rwkv7 compare dump/final_logits.bin other/final_logits.bin\n');
  cmd.action(async (f: Flags) => {
    if ((f.text === undefined) === (f.tokens === undefined)) throw new UserError('logits: give exactly one of --text or --tokens');
    const tok = WorldTokenizer.default();
    const ids = f.tokens ?? tok.encode(f.text!);
    if (ids.length === 0) throw new UserError('logits: the context is empty');
    const loaded = await loadModelFromFlags(f);
    try {
      const state = loaded.model.newState();
      const logits = await loaded.model.forward(ids, state);
      const probs = softmax64(logits); // float64 softmax, stored as f32
      const p32 = Float32Array.from(probs);
      mkdirSync(f.out, { recursive: true });
      writeFileSync(join(f.out, 'final_logits.bin'), f32Bytes(logits));
      writeFileSync(join(f.out, 'final_probs.bin'), f32Bytes(p32));
      let entropy = 0, mean = 0;
      for (const p of probs) if (p > 0) entropy -= p * Math.log(p);
      for (const x of logits) mean += x;
      mean /= logits.length;
      let v = 0;
      for (const x of logits) v += (x - mean) ** 2;
      const decodable = (id: number) => id < tok.vocabSize;
      const summary = {
        model: loaded.path,
        backend: loaded.model.backend.name,
        dtype: loaded.model.backend.weightDType,
        context: f.text ?? (ids.every(decodable) ? tok.decode(ids) : null),
        tokens: ids,
        vocab_size: logits.length,
        top: topK(logits, f.top).map((id) => ({ id, token: decodable(id) ? tok.decode([id]) : null, logit: logits[id], prob: probs[id] })),
        metrics: { entropy_nats: entropy, logit_mean: mean, logit_std: Math.sqrt(v / logits.length), max_prob: Math.max(...probs) },
        files: { logits: 'final_logits.bin', probs: 'final_probs.bin', format: 'raw little-endian float32, one value per token id' },
      };
      writeFileSync(join(f.out, 'final_logits.json'), JSON.stringify(summary, null, 2) + '\n');
      process.stdout.write(`wrote ${join(f.out, 'final_logits.bin')}, final_probs.bin, final_logits.json (${ids.length} context tokens, top-1 id ${summary.top[0]!.id})\n`);
    } finally {
      await loaded.model.backend.dispose();
    }
  });
}
