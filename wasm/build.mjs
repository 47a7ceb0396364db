// Compiles wasm/kernels.ts (AssemblyScript) twice — plain SIMD128 and relaxed SIMD — into dist/wasm/.
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
  '--importMemory', '--sharedMemory', '--initialMemory', '2', '--maximumMemory', '65536',
  '--enable', 'simd', '--enable', 'threads',
  '-O3', '--noAssert',
];
for (const [name, extra] of [['rwkv7.wasm', []], ['rwkv7-relaxed.wasm', ['--enable', 'relaxed-simd']]]) {
  const { error, stderr } = await asc.main([...common, ...extra, '-o', out + name]);
  if (error) {
    process.stderr.write(stderr.toString());
    process.stderr.write(`build:wasm: ${name}: ${error.message}\n`);
    process.exit(1);
  }
}
console.log(`build:wasm: wrote ${out}rwkv7.wasm and rwkv7-relaxed.wasm`);
