import { weightsLabel } from '../backends/index.js';
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { addModelOptions, loadModelFromFlags, parseInteger, type ModelFlags } from './common.js';
import { perplexity } from '../runtime/metrics.js';
import { WorldTokenizer } from '../tokenizer/index.js';
import { UserError } from '../errors.js';

interface Flags extends ModelFlags {
  file: string;
  maxTokens?: number;
  vocab?: string;
  json?: boolean;
}

export function register(program: Command): void {
  const cmd = program
    .command('ppl')
    .description('perplexity of a text file: mean negative log-likelihood of tokens 1..N given the preceding ones, from the zero state, no token prepended')
    .requiredOption('-f, --file <path>', 'UTF-8 text file')
    .option('--max-tokens <n>', 'score the first N+1 tokens of the file (default: all)', parseInteger('--max-tokens', 1))
    .option('--vocab <path>', 'tokenizer vocabulary (default: the bundled World vocabulary)')
    .option('--json', 'print {"tokens", "mean_nll", "perplexity"}');
  addModelOptions(cmd);
  cmd.addHelpText('after', '\nExample:\n  rwkv7 ppl --file passage.txt --max-tokens 1024 --json\n');
  cmd.action(async (f: Flags) => {
    let text: string;
    try {
      text = readFileSync(f.file, 'utf8');
    } catch (e) {
      throw new UserError(`cannot read ${f.file}: ${(e as Error).message}`);
    }
    const tok = f.vocab ? WorldTokenizer.fromFile(f.vocab) : WorldTokenizer.default();
    let ids = tok.encode(text);
    if (f.maxTokens !== undefined) ids = ids.slice(0, f.maxTokens + 1);
    if (ids.length < 2) throw new UserError(`${f.file}: needs at least 2 tokens, has ${ids.length}`);
    const loaded = await loadModelFromFlags(f);
    try {
      const t0 = performance.now();
      const r = await perplexity(loaded.model, ids);
      const s = (performance.now() - t0) / 1000;
      if (f.json) process.stdout.write(JSON.stringify(r) + '\n');
      else process.stdout.write(`tokens ${r.tokens} | mean NLL ${r.mean_nll.toFixed(9)} | perplexity ${r.perplexity.toFixed(4)} | ${(r.tokens / s).toFixed(1)} tok/s (${loaded.model.backend.name}, ${weightsLabel(loaded.model.backend)})\n`);
    } finally {
      await loaded.model.backend.dispose();
    }
  });
}
