/**
 * The Node.js platform: files through node:fs, pool threads through node:worker_threads, WebGPU through Dawn
 * (the `webgpu` npm package, loaded only when asked for).
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import * as os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { FormatError, UserError } from '../errors.js';
import type { ByteSink, ByteSource, FileSet } from '../formats/source.js';
import type { AssetName, Platform, PoolWorker } from './types.js';

/** This file is <root>/src/platform/node.ts (tsx) or <root>/dist/platform/node.js: the package root is two up. */
const ROOT = new URL('../../', import.meta.url);

const ASSET_PATHS: Record<AssetName, string> = {
  'rwkv7.wasm': 'dist/wasm/rwkv7.wasm',
  'rwkv7-relaxed.wasm': 'dist/wasm/rwkv7-relaxed.wasm',
  'rwkv7-single.wasm': 'dist/wasm/rwkv7-single.wasm',
  'rwkv7-single-relaxed.wasm': 'dist/wasm/rwkv7-single-relaxed.wasm',
  vocab: 'assets/rwkv_vocab_v20230424.txt',
};

/** Path of a shipped file. */
export function assetPath(name: AssetName): string {
  return fileURLToPath(new URL(ASSET_PATHS[name], ROOT));
}

/** The small real model shipped inside the package. */
export const DEFAULT_MODEL_PATH = fileURLToPath(new URL('assets/rwkv7-storyteller-L6-D192.pth', ROOT));

function missingAsset(name: AssetName): UserError {
  const hint = name.endsWith('.wasm') ? ": run 'npm run build:wasm'" : '';
  return new UserError(`${assetPath(name)}: shipped file not found${hint}`);
}

/**
 * A regular file read with positioned reads. Anything else (a FIFO, a device, a socket) is refused before it is
 * opened: reading one could block forever.
 */
export function fileSource(path: string): ByteSource {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch {
    throw new UserError(`${path}: no such file`);
  }
  if (!st.isFile()) throw new UserError(`${path}: not a regular file`);
  const fd = fs.openSync(path, 'r');
  const size = fs.fstatSync(fd).size;
  let closed = false;
  return {
    name: path,
    size,
    read(offset, length) {
      if (closed) throw new FormatError(`${path}: file already closed`);
      const buf = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = fs.readSync(fd, buf, done, length - done, offset + done);
        if (n <= 0) throw new FormatError(`${path}: unexpected end of file at offset ${offset + done}`);
        done += n;
      }
      return buf;
    },
    readInto(offset, dst) {
      if (closed) throw new FormatError(`${path}: file already closed`);
      const length = dst.length;
      let done = 0;
      while (done < length) {
        const n = fs.readSync(fd, dst, done, length - done, offset + done);
        if (n <= 0) throw new FormatError(`${path}: unexpected end of file at offset ${offset + done}`);
        done += n;
      }
    },
    close() {
      if (!closed) { closed = true; fs.closeSync(fd); }
    },
  };
}

/**
 * A folder whose files are opened by bare name only: no separators, no '.', '..', empty names or NUL bytes, so a
 * name taken from an untrusted index file can never reach outside the folder.
 */
export function folderFileSet(dir: string): FileSet {
  const check = (file: string): void => {
    if (typeof file !== 'string' || file === '' || file === '.' || file === '..' || /[/\\\0]/.test(file)) {
      throw new FormatError(`${dir}: file name ${JSON.stringify(file)} is not a plain file name inside the folder`);
    }
  };
  return {
    name: dir,
    pathOf: (file) => nodePath.join(dir, file),
    open(file) {
      check(file);
      const p = nodePath.join(dir, file);
      let st: fs.Stats;
      try {
        st = fs.statSync(p);
      } catch {
        return undefined;
      }
      if (!st.isFile()) throw new FormatError(`${p}: not a regular file`);
      return fileSource(p);
    },
  };
}

/** A file written front to back; `abort()` closes and removes it. */
export function fileSink(path: string): ByteSink {
  const fd = fs.openSync(path, 'w');
  let open = true;
  const close = (): void => { if (open) { open = false; fs.closeSync(fd); } };
  return {
    name: path,
    write(b) {
      let done = 0;
      while (done < b.length) done += fs.writeSync(fd, b, done, b.length - done);
    },
    close,
    abort() {
      close();
      try { fs.unlinkSync(path); } catch { /* already gone */ }
    },
  };
}

/** Bootstrap appended to the pool's worker source: worker_threads hands `start` its data and a poster. */
const NODE_WORKER_BOOT = `
const { workerData, parentPort } = require('node:worker_threads');
start(workerData, (m) => parentPort.postMessage(m));
`;

let dawnGpu: Promise<GPU | string> | undefined;

export const nodePlatform: Platform = {
  kind: 'node',
  openPath(path) {
    let st: fs.Stats;
    try {
      st = fs.statSync(path);
    } catch {
      throw new UserError(`${path}: no such file or folder`);
    }
    if (st.isDirectory()) return folderFileSet(path);
    return fileSource(path);
  },
  defaultModelPath: () => DEFAULT_MODEL_PATH,
  createFile: fileSink,
  async asset(name) {
    try {
      const b = await fs.promises.readFile(assetPath(name));
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
    } catch {
      throw missingAsset(name);
    }
  },
  assetSync(name) {
    try {
      return fs.readFileSync(assetPath(name));
    } catch {
      throw missingAsset(name);
    }
  },
  startWorker(source, data): PoolWorker {
    const w = new Worker(source + NODE_WORKER_BOOT, {
      eval: true,
      execArgv: [], // plain JS: no need for the tsx loader the parent may run under
      workerData: data,
    });
    w.unref(); // a forgotten dispose() must not keep the process alive
    const ready = new Promise<void>((resolve, reject) => {
      w.once('message', () => resolve());
      w.once('error', reject);
    });
    return { ready, terminate: () => w.terminate() };
  },
  sharedMemory: () => true,
  cpuCount: () => os.availableParallelism?.() ?? os.cpus().length,
  env: (name) => process.env[name],
  async enableRelaxedSimd() {
    try {
      const v8 = await import('node:v8');
      v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
    } catch { /* not available */ }
  },
  gpu() {
    dawnGpu ??= (async () => {
      try {
        const dawn = await import('webgpu');
        return dawn.create([]);
      } catch (e) {
        return `the WebGPU runtime (npm package 'webgpu') could not be loaded: ${(e as Error).message.split('\n')[0]}`;
      }
    })();
    return dawnGpu;
  },
  async gpuPrecheck() {
    return vulkanLoaderMissing() ? 'no Vulkan loader (libvulkan.so.1) for WebGPU' : undefined;
  },
  yieldToEventLoop: () => new Promise((resolve) => setImmediate(resolve)),
};

/**
 * On Linux, Dawn reaches GPUs through the Vulkan loader; where `libvulkan.so.1` is absent it prints loader warnings
 * to stderr before reporting no adapter. `auto` checks for the loader first (the dynamic linker's cache and
 * LD_LIBRARY_PATH) so that a CPU-only machine gets one clean notice instead.
 */
function vulkanLoaderMissing(): boolean {
  if (process.platform !== 'linux') return false;
  const lib = 'libvulkan.so.1';
  if ((process.env.LD_LIBRARY_PATH ?? '').split(':').some((d) => d && fs.existsSync(nodePath.join(d, lib)))) return false;
  try {
    if (fs.readFileSync('/etc/ld.so.cache').includes(lib)) return false;
  } catch {
    return false; // no cache to consult: let Dawn look for itself
  }
  return !['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib64', '/lib']
    .some((d) => fs.existsSync(nodePath.join(d, lib)));
}
