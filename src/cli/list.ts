/**
 * `rwkv7 list`: the checkpoints in the model cache (name, size, path) and the catalogue `rwkv7 pull` knows.
 */
import type { Command } from 'commander';
import { CATALOGUE, listCached, modelsDir } from '../platform/models.js';
import { fmtBytes } from '../platform/download.js';

export function register(program: Command): void {
  program
    .command('list')
    .description('list the downloaded checkpoints (rwkv7 pull) and the catalogue of official ones')
    .option('--json', 'print JSON')
    .action((f: { json?: boolean }) => {
      const dir = modelsDir();
      const cached = listCached(dir);
      const have = new Set(cached.map((c) => c.file));
      if (f.json) {
        process.stdout.write(`${JSON.stringify({
          dir,
          cached: cached.map((c) => ({ name: c.name ?? null, file: c.file, bytes: c.bytes, path: c.path })),
          catalogue: CATALOGUE.map((e) => ({ name: e.name, aliases: e.aliases, file: e.file, params: e.params, bytes: e.bytes ?? null, downloaded: have.has(e.file) })),
        }, null, 2)}\n`);
        return;
      }
      let out = `downloaded (${dir}):\n`;
      if (cached.length === 0) out += '  (none yet: rwkv7 pull NAME)\n';
      const w = Math.max(4, ...cached.map((c) => (c.name ?? c.file).length));
      for (const c of cached) out += `  ${(c.name ?? c.file).padEnd(w)}  ${fmtBytes(c.bytes).padStart(10)}  ${c.path}\n`;
      out += '\ncatalogue (rwkv7 pull NAME):\n';
      const wn = Math.max(...CATALOGUE.map((e) => e.name.length));
      for (const e of CATALOGUE) {
        const size = e.bytes ? fmtBytes(e.bytes) : '';
        out += `  ${e.name.padEnd(wn)}  ${e.params.padEnd(5)} ${size.padStart(10)}  ${e.file}${have.has(e.file) ? '  (downloaded)' : ''}\n`;
      }
      process.stdout.write(out);
    });
}
