/**
 * `rwkv7 pull NAME|URL`: download a checkpoint into the model cache (resuming an interrupted download), after
 * which its name works as `--model`.
 */
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { pull, pullTarget, fmtBytes } from '../platform/download.js';
import { modelsDir } from '../platform/models.js';
import { parseInteger } from './common.js';

interface PullFlags {
  sha256?: string;
  force?: boolean;
  retries: number;
  quiet?: boolean;
}

export function register(program: Command): void {
  program
    .command('pull')
    .description('download an official RWKV-7 checkpoint by name (rwkv7 list shows them) or any checkpoint URL into the model cache')
    .argument('<name-or-url>', 'a catalogue name such as g1-0.4b, or an http(s) URL of a .pth/.safetensors/.gguf file')
    .option('--sha256 <hex>', 'expected SHA-256 of the file (checked after the download; a mismatch removes it)')
    .option('--force', 'download again even if the file is already cached')
    .option('--retries <n>', 'attempts to resume after a dropped connection before giving up', parseInteger('--retries', 0), 2)
    .option('-q, --quiet', 'no progress bar')
    .addHelpText('after', `
The cache folder is $RWKV7_HOME, else $XDG_CACHE_HOME/rwkv7 or ~/.cache/rwkv7 (Linux), ~/Library/Caches/rwkv7
(macOS), %LOCALAPPDATA%\\rwkv7 (Windows). Now: ${modelsDir()}
An interrupted download is kept as <file>.part and resumed by the next pull of the same name or URL (HTTP Range).
Catalogue files come from https://huggingface.co/BlinkDL/rwkv7-g1 (set HF_ENDPOINT to use a mirror).

Examples:
  rwkv7 pull g1-0.4b
  rwkv7 generate --model g1-0.4b -p "User: hi\\n\\nAssistant:"
  rwkv7 pull https://example.org/models/my-model.pth --sha256 <64 hex digits>`)
    .action(async (what: string, f: PullFlags) => {
      const target = pullTarget(what, { sha256: f.sha256 });
      const tty = process.stderr.isTTY === true && !f.quiet;
      let bar: cliProgress.SingleBar | undefined;
      let barTotal = 0;
      const ac = new AbortController();
      const onSigint = () => { if (ac.signal.aborted) process.exit(130); ac.abort(); };
      process.on('SIGINT', onSigint);
      if (!f.quiet) process.stderr.write(`pulling ${target.file}\n  from ${target.url}\n`);
      try {
        const r = await pull(target, {
          force: f.force,
          retries: f.retries,
          signal: ac.signal,
          onProgress: tty
            ? (done, total) => {
                const t = total ?? 0;
                if (!bar || (t && t !== barTotal)) {
                  bar?.stop();
                  barTotal = t;
                  bar = new cliProgress.SingleBar({
                    stream: process.stderr, hideCursor: true, clearOnComplete: true,
                    format: '  [{bar}] {percentage}% | {have} / {size} | eta {eta_formatted}',
                  }, cliProgress.Presets.shades_classic);
                  bar.start(t || Math.max(1, done), done, { have: fmtBytes(done), size: t ? fmtBytes(t) : '?' });
                }
                if (!t) bar.setTotal(Math.max(1, done));
                bar.update(done, { have: fmtBytes(done) });
              }
            : undefined,
          onVerify: () => { bar?.stop(); bar = undefined; if (!f.quiet) process.stderr.write('  checking the file\n'); },
        });
        bar?.stop();
        if (!r.downloaded) {
          process.stderr.write(`already downloaded (${fmtBytes(r.bytes)}); --force downloads it again\n`);
        } else if (!f.quiet) {
          const resumed = r.resumedFrom > 0 ? `, resumed after ${fmtBytes(r.resumedFrom)}` : '';
          process.stderr.write(`  ${fmtBytes(r.bytes)}${resumed}, sha256 ${r.sha256}${r.verified ? ' (verified)' : ''}\n`);
        }
        const name = target.entry?.name ?? target.file;
        process.stdout.write(`${r.path}\n`);
        if (!f.quiet) process.stderr.write(`use it with --model ${name}\n`);
      } finally {
        bar?.stop();
        process.off('SIGINT', onSigint);
      }
    });
}
