/**
 * The browser platform: shipped files fetched beside the bundle (`import.meta.url`), pool threads as Web Workers from a
 * Blob URL, WebGPU from `navigator.gpu`. Checkpoints come from URLs, Blobs/Files, ArrayBuffers or OPFS
 * (./browser-sources.ts), never from paths.
 */
import { UserError } from '../errors.js';
import type { AssetName, Platform, PoolWorker } from './types.js';

/** Shipped files, beside rwkv7.js in dist/browser/. */
const ASSET_FILES: Record<AssetName, string> = {
  'rwkv7.wasm': 'rwkv7.wasm',
  'rwkv7-relaxed.wasm': 'rwkv7-relaxed.wasm',
  'rwkv7-single.wasm': 'rwkv7-single.wasm',
  'rwkv7-single-relaxed.wasm': 'rwkv7-single-relaxed.wasm',
  vocab: 'rwkv_vocab_v20230424.txt',
};

/** Where the shipped files are: beside the bundle, or where `setAssetBase` says (a bundler that moved them). */
let assetBase: string | URL = new URL('./', import.meta.url);

/** Tells the library where its .wasm and vocabulary files are served when they are not beside the bundle. */
export function setAssetBase(base: string | URL): void {
  assetBase = base;
}

/** Bootstrap appended to the pool's worker source: the first message is `start`'s data. */
const WEB_WORKER_BOOT = `
self.onmessage = (e) => { self.onmessage = null; start(e.data, (m) => self.postMessage(m)); };
`;

const noFiles = (what: string): never => {
  throw new UserError(`${what}: file paths need Node; in a browser pass a URL, a Blob/File, an ArrayBuffer or an OPFS file`);
};

interface G { crossOriginIsolated?: boolean; navigator?: { hardwareConcurrency?: number; gpu?: GPU } }
const g = globalThis as unknown as G;

export const browserPlatform: Platform = {
  kind: 'browser',
  openPath: (path) => noFiles(path),
  defaultModelPath: () => noFiles('the bundled model'),
  createFile: (path) => noFiles(path),
  async asset(name) {
    const url = new URL(ASSET_FILES[name], assetBase);
    let res: Response;
    try {
      res = await fetch(url);
    } catch (e) {
      throw new UserError(`${url}: could not fetch the library's ${name} file (${(e as Error).message})`);
    }
    if (!res.ok) throw new UserError(`${url}: HTTP ${res.status} fetching the library's ${name} file (serve it beside rwkv7.js)`);
    return res.arrayBuffer();
  },
  assetSync: () => undefined,
  startWorker(source, data): PoolWorker {
    const url = URL.createObjectURL(new Blob([source + WEB_WORKER_BOOT], { type: 'text/javascript' }));
    const w = new Worker(url);
    URL.revokeObjectURL(url);
    const ready = new Promise<void>((resolve, reject) => {
      w.onmessage = () => { w.onmessage = null; resolve(); };
      w.onerror = (e) => reject(new Error(`wasm pool worker failed to start: ${e.message}`));
    });
    w.postMessage(data);
    return { ready, terminate: async () => w.terminate() };
  },
  sharedMemory: () => g.crossOriginIsolated === true ? true
    : 'the page is not cross-origin isolated (serve it with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp for threads)',
  cpuCount: () => g.navigator?.hardwareConcurrency ?? 1,
  env: () => undefined,
  async enableRelaxedSimd() { /* browsers that have it have it on */ },
  async gpu() {
    return g.navigator?.gpu ?? 'this browser has no WebGPU (navigator.gpu is missing)';
  },
  async gpuPrecheck() { return undefined; },
  yieldToEventLoop() {
    // A MessageChannel round trip: a macrotask without setTimeout's 4 ms clamp.
    return new Promise((resolve) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => { ch.port1.close(); resolve(); };
      ch.port2.postMessage(null);
    });
  },
};
