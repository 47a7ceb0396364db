// Compiles wasm/kernels.ts (AssemblyScript) into dist/wasm/: plain SIMD128 and relaxed SIMD, each with a shared memory
// (for the thread pool) and without (`-single`: browser pages that are not cross-origin isolated cannot share memory).
// Run by `npm run build:wasm` (part of `npm run build`, which `npm install` runs through `prepare`).
import asc from 'assemblyscript/asc';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = `${root}dist/wasm/`;
mkdirSync(out, { recursive: true });
const common = [
  `${root}wasm/kernels.ts`,
  '--runtime', 'stub', // no GC, no allocator: the host manages all memory
  '--importMemory', '--initialMemory', '2', '--maximumMemory', '65536',
  '--enable', 'simd', '--enable', 'threads',
  '-O3', '--noAssert',
];
const SHARED = ['--sharedMemory'];
const RELAXED = ['--enable', 'relaxed-simd'];
const builds = [
  ['rwkv7.wasm', SHARED], ['rwkv7-relaxed.wasm', [...SHARED, ...RELAXED]],
  ['rwkv7-single.wasm', []], ['rwkv7-single-relaxed.wasm', RELAXED],
];
for (const [name, extra] of builds) {
  const { error, stderr } = await asc.main([...common, ...extra, '-o', out + name]);
  if (error) {
    process.stderr.write(stderr.toString());
    process.stderr.write(`build:wasm: ${name}: ${error.message}\n`);
    process.exit(1);
  }
}
console.log(`build:wasm: wrote ${builds.map(([n]) => n).join(', ')} to ${out}`);

// The sampler's kernels (wasm/exp.ts): a separate small module, embedded in src/runtime/exp-wasm.ts (see build-exp.mjs).
await (await import('./build-exp.mjs')).writeExpKernel();
