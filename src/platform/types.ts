/// <reference types="@webgpu/types" />
/**
 * The platform layer's contract: everything the core needs from its host that differs between Node and browsers.
 *
 * Only src/platform/ knows which host it runs on. The core imports `platform` from ./index.js, which is the Node
 * implementation (./node.ts); the browser bundle swaps that module for ./browser-index.ts at build time
 * (scripts/build-browser.mjs), so no Node built-in is reachable from it.
 */
import type { ByteSink, ByteSource, FileSet } from '../formats/source.js';

/** Files the package ships that the core loads at run time. */
export type AssetName = 'rwkv7.wasm' | 'rwkv7-relaxed.wasm' | 'rwkv7-single.wasm' | 'rwkv7-single-relaxed.wasm' | 'vocab';

/** A thread of the wasm pool, started from plain JavaScript source. */
export interface PoolWorker {
  /** Resolves on the worker's first message ('ready'), rejects on its first error. */
  readonly ready: Promise<void>;
  terminate(): Promise<unknown>;
}

export interface Platform {
  readonly kind: 'node' | 'browser';
  /** A local path: a regular file as a ByteSource, a folder as a FileSet (UserError if neither). */
  openPath(path: string): ByteSource | FileSet;
  /** Path of the model shipped with the package (Node); UserError where there is none (pass a source instead). */
  defaultModelPath(): string;
  /** A new file at `path` (replacing one that is there) to stream into; UserError where files cannot be written. */
  createFile(path: string): ByteSink;
  /** Bytes of a shipped file. */
  asset(name: AssetName): Promise<ArrayBuffer>;
  /** The same, synchronously, where the host can (Node); undefined elsewhere. */
  assetSync(name: AssetName): Uint8Array | undefined;
  /**
   * Starts a pool thread running `source`, which defines `function start(data, post)`; the platform calls it with
   * `data` (structured-cloned: a WebAssembly.Module and a shared Memory among it) and a function posting a message.
   */
  startWorker(source: string, data: unknown): PoolWorker;
  /** Whether threads can share a WebAssembly.Memory here (browsers: only on cross-origin isolated pages). */
  sharedMemory(): true | string;
  /** Logical CPUs. */
  cpuCount(): number;
  /** An environment variable (Node), undefined in browsers. */
  env(name: string): string | undefined;
  /** Try to enable relaxed SIMD in the engine (Node 20 needs a V8 flag); no-op where it is on or unavailable. */
  enableRelaxedSimd(): Promise<void>;
  /** The WebGPU entry point (navigator.gpu, or Dawn in Node), or why there is none. */
  gpu(): Promise<GPU | string>;
  /** A reason WebGPU cannot work here known before asking for an adapter (e.g. no Vulkan loader), else undefined. */
  gpuPrecheck(): Promise<string | undefined>;
  /** Lets pending events run (between tokens of a CPU-bound loop). */
  yieldToEventLoop(): Promise<void>;
}
