#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { UserError } from '../errors.js';
import { VERSION } from '../version.js';

const program = new Command();
program
  .name('rwkv7')
  .description('RWKV-7 (Goose) language-model runtime: load, verify, generate, chat and serve.')
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride();

type Register = (program: Command) => void;

/**
 * Each command's module, imported only when that command runs: `rwkv7 generate` loads the generate module and what
 * it uses, not the server, the converter or the downloader (their imports cost about 0.4 s of start-up). The
 * program's own help, `rwkv7 help CMD` and unknown commands register them all (in this order, as listed in --help).
 */
const COMMANDS: ReadonlyArray<readonly [names: readonly string[], load: () => Promise<{ register: Register }>]> = [
  [['info'], () => import('./info.js')],
  [['convert'], () => import('./convert.js')],
  [['tokenize', 'detokenize'], () => import('./tokenize.js')],
  [['verify'], () => import('./verify.js')],
  [['logits'], () => import('./logits.js')],
  [['compare'], () => import('./compare.js')],
  [['ppl'], () => import('./ppl.js')],
  [['generate'], () => import('./generate.js')],
  [['chat'], () => import('./chat.js')],
  [['bench'], () => import('./bench.js')],
  [['serve'], () => import('./serve.js')],
  [['pull'], () => import('./pull.js')],
  [['list'], () => import('./list.js')],
];

/** The commands to register for `argv`: the one it names first (argv[2]), or all of them. */
async function registerCommands(argv: readonly string[]): Promise<void> {
  const named = COMMANDS.find(([names]) => names.includes(argv[2] ?? ''));
  const modules = await Promise.all((named ? [named] : COMMANDS).map(([, load]) => load()));
  for (const m of modules) m.register(program);
}

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
registerCommands(process.argv).then(() => program.parseAsync(process.argv)).catch(fail);
