/**
 * `rwkv7 generate`: continue a prompt, streaming the text to stdout (or one JSON object with --json).
 */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { WorldTokenizer } from '../tokenizer/index.js';
import { GENERATE_DEFAULTS } from '../runtime/sampler.js';
import { generate } from '../runtime/generate.js';
import { UserError } from '../errors.js';
import { JsonGrammar } from '../runtime/constraint/index.js';
import {
  addModelOptions, addSamplingOptions, loadModelFromFlags, samplingFromFlags, statsLine, parseInteger, collect,
  addStateOption, initialStateFromFlag, type ModelFlags, type SamplingFlags,
} from './common.js';

interface GenerateFlags extends ModelFlags, SamplingFlags {
  prompt?: string;
  maxTokens: number;
  stop?: string[];
  json?: boolean;
  quiet?: boolean;
  jsonSchema?: string;
  maxWhitespace?: number;
  state?: string;
}

/**
 * The grammar of `--json-schema FILE`: the file holds a JSON Schema (the supported subset: see
 * src/runtime/constraint/schema.ts), or `object` instead of a file name asks for any JSON object.
 */
export function grammarFromFlag(file: string, maxWhitespace?: number): JsonGrammar {
  if (file === 'object') return JsonGrammar.anyObject({ maxWhitespace });
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read --json-schema ${file}: ${(e as Error).message}`);
  }
  let schema: unknown;
  try {
    schema = JSON.parse(text);
  } catch (e) {
    throw new UserError(`--json-schema ${file} is not JSON: ${(e as Error).message}`);
  }
  try {
    return JsonGrammar.fromSchema(schema, { maxWhitespace });
  } catch (e) {
    if (e instanceof UserError) throw new UserError(`--json-schema ${file}: ${e.message}`);
    throw e;
  }
}

/** Turns the escapes \n, \r, \t and \\ in a --stop value into the characters (so `--stop '\n\n'` works). */
export function unescapeStop(s: string): string {
  return s.replace(/\\([nrt\\])/g, (_, c: string) => ({ n: '\n', r: '\r', t: '\t', '\\': '\\' })[c]!);
}

export function register(program: Command): void {
  const cmd = program
    .command('generate')
    .description('generate a continuation of a prompt, streamed to stdout')
    .requiredOption('-p, --prompt <text>', 'the prompt')
    .option('-n, --max-tokens <n>', 'most tokens to generate', parseInteger('--max-tokens', 0), 200)
    .option('--stop <text>', 'stop before this string (repeatable; \\n, \\t, \\\\ are unescaped)', collect)
    .option('--json', 'print one JSON object (text, tokens, finish reason, speeds) instead of streaming')
    .option('--json-schema <file>', "constrain the output to JSON matching this JSON Schema file ('object': any JSON object)")
    .option('--max-whitespace <n>', 'with --json-schema: most whitespace bytes between JSON tokens (0 = compact)', parseInteger('--max-whitespace', 0));
  addModelOptions(cmd);
  addStateOption(cmd);
  addSamplingOptions(cmd, GENERATE_DEFAULTS);
  cmd
    .option('-q, --quiet', 'no summary line on stderr')
    .addHelpText('after', `
Sampling defaults are the official rwkv package's (PIPELINE_ARGS): temperature ${GENERATE_DEFAULTS.temperature}, top-p ${GENERATE_DEFAULTS.topP},
top-k ${GENERATE_DEFAULTS.topK} (off), presence penalty ${GENERATE_DEFAULTS.presencePenalty}, frequency penalty ${GENERATE_DEFAULTS.frequencyPenalty}, penalty decay ${GENERATE_DEFAULTS.penaltyDecay}.
Generation also stops at token 0 (end of document).

Examples:
  rwkv7 generate --prompt "Once upon a time" --max-tokens 64
  rwkv7 generate --prompt "Once upon a time" --temperature 0 --json
  rwkv7 generate -m rwkv7-g1-0.1b.pth -p "User: hi\\n\\nAssistant:" --stop '\\n\\n' --seed 42
  rwkv7 generate -p "A character, as JSON: " --json-schema person.schema.json --max-tokens 300
  rwkv7 generate -m g1-0.4b --state my-style.pth -p "User: hi\\n\\nAssistant:"

With --json-schema, tokens that cannot continue valid JSON are masked before sampling, and generation ends when
the value is complete (supported JSON Schema: type, properties, required, additionalProperties, items,
minItems/maxItems, minLength/maxLength, enum, const; other keywords are refused).`)
    .action(async (f: GenerateFlags, cmd: Command) => {
      if (f.prompt === undefined || f.prompt.length === 0) throw new UserError('--prompt must not be empty');
      if (f.maxWhitespace !== undefined && f.jsonSchema === undefined) throw new UserError('--max-whitespace needs --json-schema');
      // Compile the schema before loading the model: a refused schema fails fast.
      const grammar = f.jsonSchema === undefined ? undefined : grammarFromFlag(f.jsonSchema, f.maxWhitespace);
      const loading = loadModelFromFlags(f);
      loading.catch(() => {}); // awaited below (this only keeps a failure from counting as unhandled meanwhile)
      // The tokenizer is built while the backend starts (its kernels compile in the background).
      const tokenizer = WorldTokenizer.default();
      const loaded = await loading;
      const promptIds = tokenizer.encode(f.prompt);
      if (promptIds.length === 0) throw new UserError('the prompt encodes to no tokens');
      const state = loaded.model.newState();
      const initial = initialStateFromFlag(f.state, loaded.config);
      if (initial) state.fromHost(initial);
      const ac = new AbortController();
      // Ctrl-C ends the generation cleanly (the summary is still printed); a second one quits at once.
      const onSigint = () => {
        if (ac.signal.aborted) process.exit(130);
        ac.abort();
      };
      process.on('SIGINT', onSigint);
      const r = await generate(loaded.model, tokenizer, state, promptIds, {
        maxTokens: f.maxTokens,
        sampling: samplingFromFlags(f, cmd),
        stop: f.stop?.map(unescapeStop),
        signal: ac.signal,
        onText: f.json ? undefined : (s) => process.stdout.write(s),
        constraint: grammar?.constraint(tokenizer),
      });
      process.off('SIGINT', onSigint);
      if (f.json) {
        process.stdout.write(`${JSON.stringify({
          text: r.text,
          prompt_tokens: r.promptTokens,
          completion_tokens: r.completionTokens,
          tokens: r.tokens,
          finish_reason: r.finishReason,
          prefill_tok_s: r.prefillTokS,
          decode_tok_s: r.decodeTokS,
          seed: r.seed,
        })}\n`);
      } else {
        process.stdout.write('\n');
      }
      if (!f.quiet) process.stderr.write(`${statsLine(loaded, r)}\n`);
    });
}
