#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { UserError } from '../errors.js';
import { register as info } from './info.js';
import { register as convert } from './convert.js';
import { register as tokenize } from './tokenize.js';
import { register as verify } from './verify.js';
import { register as logits } from './logits.js';
import { register as compare } from './compare.js';
import { register as ppl } from './ppl.js';
import { register as generate } from './generate.js';
import { register as chat } from './chat.js';
import { register as bench } from './bench.js';
import { register as serve } from './serve.js';
import { register as pull } from './pull.js';
import { register as list } from './list.js';
import { VERSION } from '../version.js';

const program = new Command();
program
  .name('rwkv7')
  .description('RWKV-7 (Goose) language-model runtime: load, verify, generate, chat and serve.')
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride();

for (const reg of [info, convert, tokenize, verify, logits, compare, ppl, generate, chat, bench, serve, pull, list]) reg(program);

function fail(err: unknown): never {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  if (err instanceof UserError) {
    process.stderr.write(`rwkv7: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  const e = err as Error;
  if (e && (e as NodeJS.ErrnoException).code === 'ENOENT') {
    process.stderr.write(`rwkv7: ${e.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`rwkv7: internal error: ${e?.message ?? String(err)}\n`);
  if (process.env.RWKV7_DEBUG) process.stderr.write(`${e?.stack}\n`);
  else process.stderr.write('(set RWKV7_DEBUG=1 for a stack trace)\n');
  process.exit(70);
}

process.on('unhandledRejection', fail);
program.parseAsync(process.argv).catch(fail);
