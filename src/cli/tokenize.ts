import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { UserError } from '../errors.js';
import { WorldTokenizer } from '../tokenizer/index.js';

/** The bundled World tokenizer (ids 0..65535), or one from `--vocab` (ids up to its largest id). */
function loadTokenizer(vocab: string | undefined): WorldTokenizer {
  return vocab === undefined ? WorldTokenizer.default() : WorldTokenizer.fromFile(vocab);
}

/** Writes to stdout, waiting when the pipe is full. */
async function write(chunk: string | Uint8Array): Promise<void> {
  if (!process.stdout.write(chunk)) await new Promise<void>((resolve) => process.stdout.once('drain', resolve));
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The bytes to encode from one JSONL record: `{"text": ...}` or `{"bytes_b64": ...}`. */
function recordBytes(line: string, where: string): Uint8Array | string {
  let rec: unknown;
  try {
    rec = JSON.parse(line);
  } catch (err) {
    throw new UserError(`${where}: invalid JSON: ${(err as Error).message}`);
  }
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) {
    throw new UserError(`${where}: expected an object {"text": ...} or {"bytes_b64": ...}`);
  }
  const r = rec as Record<string, unknown>;
  const hasText = 'text' in r;
  const hasBytes = 'bytes_b64' in r;
  if (hasText === hasBytes) throw new UserError(`${where}: expected exactly one of "text" and "bytes_b64"`);
  if (hasText) {
    if (typeof r.text !== 'string') throw new UserError(`${where}: "text" must be a string`);
    return r.text;
  }
  if (typeof r.bytes_b64 !== 'string' || !BASE64.test(r.bytes_b64)) {
    throw new UserError(`${where}: "bytes_b64" must be a base64 string`);
  }
  return Buffer.from(r.bytes_b64, 'base64');
}

async function tokenizeJsonl(tk: WorldTokenizer, file: string): Promise<void> {
  const name = file === '-' ? '<stdin>' : file;
  const input = file === '-' ? process.stdin : createReadStream(file);
  const lines = createInterface({ input, crlfDelay: Infinity });
  let lineNo = 0;
  let pending = '';
  try {
    for await (const line of lines) {
      lineNo++;
      if (line.trim() === '') continue; // blank lines are not records
      const src = recordBytes(line, `${name}:${lineNo}`);
      const ids = typeof src === 'string' ? tk.encode(src) : tk.encodeBytes(src);
      pending += `{"ids":[${ids.join(',')}]}\n`;
      if (pending.length > 1 << 16) {
        await write(pending);
        pending = '';
      }
    }
  } finally {
    // On a bad line, the results for the lines before it are still written.
    if (pending) await write(pending);
  }
}

/** Token ids from arguments: each may hold several ids separated by spaces or commas (JSON arrays work too). */
function parseIds(args: string[]): number[] {
  const ids: number[] = [];
  for (const arg of args) {
    for (const part of arg.split(/[\s,[\]]+/)) {
      if (part === '') continue;
      if (!/^\d+$/.test(part)) throw new UserError(`invalid token id '${part}': expected a non-negative integer`);
      ids.push(Number(part));
    }
  }
  return ids;
}

/** Registers `rwkv7 tokenize` and `rwkv7 detokenize`. */
export function register(program: Command): void {
  program
    .command('tokenize')
    .description('encode text into RWKV World token ids (reads stdin when no text is given)')
    .argument('[text...]', 'text to encode (several arguments are joined with spaces)')
    .option('--json', 'print a JSON array instead of space-separated ids')
    .option('--jsonl <file>', 'encode each line {"text": ...} or {"bytes_b64": ...} of FILE ("-" for stdin) to a line {"ids": [...]}')
    .option('--vocab <path>', 'vocabulary file in the World format (default: the bundled rwkv_vocab_v20230424.txt)')
    .action(async (words: string[], opts: { json?: boolean; jsonl?: string; vocab?: string }) => {
      const tk = loadTokenizer(opts.vocab);
      if (opts.jsonl !== undefined) {
        if (words.length > 0) throw new UserError('tokenize: give either text or --jsonl, not both');
        await tokenizeJsonl(tk, opts.jsonl);
        return;
      }
      const ids = words.length > 0 ? tk.encode(words.join(' ')) : tk.encodeBytes(readFileSync(0));
      await write(opts.json ? `${JSON.stringify(ids)}\n` : `${ids.join(' ')}\n`);
    });

  program
    .command('detokenize')
    .description('decode RWKV World token ids into text')
    .argument('<ids...>', 'token ids (separated by spaces or commas)')
    .option('--raw', 'write the exact bytes of the tokens (even invalid UTF-8), without a trailing newline')
    .option('--vocab <path>', 'vocabulary file in the World format (default: the bundled rwkv_vocab_v20230424.txt)')
    .action(async (args: string[], opts: { raw?: boolean; vocab?: string }) => {
      const tk = loadTokenizer(opts.vocab);
      const ids = parseIds(args);
      if (opts.raw) await write(tk.decodeBytes(ids));
      else await write(`${tk.decode(ids)}\n`);
    });
}
