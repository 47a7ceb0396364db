// Builds the browser bundle: dist/browser/rwkv7.js (one ESM file; the model worker is the same file; tsc does not emit
// src/browser, see tsconfig.json) with the .wasm
// kernels and the vocabulary beside it, and the static chat site dist/web/ (the page plus a copy of the bundle).
// The core imports src/platform/index.ts (Node); here it is swapped for src/platform/browser-index.ts, and the build
// fails if any Node built-in is still reachable. Run by `npm run build` (after build:wasm).
import * as esbuild from 'esbuild';
import { cpSync, mkdirSync, existsSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { builtinModules } from 'node:module';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = `${root}dist/browser/`;
const web = `${root}dist/web/`;

/** Swap the platform module; refuse Node built-ins with the importer named. */
export const browserPlatform = {
  name: 'rwkv7-browser-platform',
  setup(build) {
    build.onResolve({ filter: /platform\/index\.js$/ }, (args) => ({ path: `${args.resolveDir}/${args.path.replace(/index\.js$/, 'browser-index.ts')}` }));
    const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
    build.onResolve({ filter: /.*/ }, (args) => {
      if (args.path.startsWith('node:') || builtins.has(args.path) || args.path === 'webgpu' || args.path === 'fastify') {
        return { errors: [{ text: `${args.path} is not available in browsers (imported by ${args.importer.replace(root, '')})` }] };
      }
      return undefined;
    });
  },
};

/** Builds the bundle; returns esbuild's metafile (the test checks which inputs it holds). */
export async function buildBrowser({ outdir = out, minify = true } = {}) {
  mkdirSync(outdir, { recursive: true });
  const result = await esbuild.build({
    entryPoints: { rwkv7: `${root}src/browser/index.ts` },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outdir,
    minify,
    sourcemap: true,
    metafile: true,
    logLevel: 'silent',
    plugins: [browserPlatform],
  });
  for (const f of ['rwkv7.wasm', 'rwkv7-relaxed.wasm', 'rwkv7-single.wasm', 'rwkv7-single-relaxed.wasm']) {
    cpSync(`${root}dist/wasm/${f}`, `${outdir}${f}`);
  }
  cpSync(`${root}assets/rwkv_vocab_v20230424.txt`, `${outdir}rwkv_vocab_v20230424.txt`);
  return result.metafile;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    const meta = await buildBrowser();
    const bytes = meta.outputs['dist/browser/rwkv7.js']?.bytes ?? Object.values(meta.outputs).find((o) => o.entryPoint)?.bytes;
    // The static chat site: the page and a copy of the library beside it.
    if (existsSync(`${root}web/index.html`)) {
      rmSync(web, { recursive: true, force: true });
      cpSync(`${root}web/`, web, { recursive: true });
      cpSync(out, `${web}lib/`, { recursive: true });
    }
    console.log(`build:browser: wrote dist/browser/rwkv7.js (${(bytes / 1024).toFixed(0)} KiB) and its .wasm/vocabulary files${existsSync(web) ? ', and dist/web/' : ''}`);
  } catch (e) {
    for (const err of e.errors ?? [e]) console.error(`build:browser: ${err.text ?? err.message}`);
    process.exit(1);
  }
}
