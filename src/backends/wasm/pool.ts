/**
 * A pool of worker threads over one shared WebAssembly.Memory, for splitting a kernel's rows (or heads) between
 * the main thread and N-1 workers.
 *
 * Hand-off protocol, through an Int32 control block in the shared memory (no postMessage per op):
 *   main: write op + args, done = 0, gen += 1 (seq-cst), notify; run share 0; spin, then wait, until done == workers
 *   (the last worker to finish notifies).
 *   worker: spin on gen for a while, then Atomics.wait; on a new gen run its share, done += 1.
 * Every thread computes its own [lo, hi) from (items, align, thread id), so shares never overlap.
 *
 * One protocol for every host: the worker is plain JavaScript defining `start(data, post)` (no file to locate, no
 * TypeScript loader needed, the same source from src/ under tsx, from dist/ and in the browser bundle); the platform
 * layer starts it as a Node worker thread or as a Web Worker from a Blob URL and hands it the module and the memory.
 */
import { platform, type PoolWorker } from '../../platform/index.js';

/** Int32 index of the control block (byte 4096) and its fields. */
export const CTRL = 1024;
const GEN = 0, DONE = 1, OP = 2, ITEMS = 3, ALIGN = 4, PER_ARG = 5, PER_STRIDE = 6, ARGS = 8;
export const MAX_ARGS = 16;

/** Each thread's [lo, hi) of `items` cut in units of `align` (the worker source has a copy). */
export function share(items: number, align: number, id: number, n: number): [number, number] {
  const units = Math.ceil(items / align);
  const per = Math.ceil(units / n);
  return [Math.min(items, id * per * align), Math.min(items, (id + 1) * per * align)];
}

const WORKER_SOURCE = `
function start(data, post) {
const { module, memory, id, n, names, spin } = data;
const ex = new WebAssembly.Instance(module, { env: { memory } }).exports;
const fns = names.map((k) => ex[k]);
const I = new Int32Array(memory.buffer, 0, ${CTRL + 64});
const a = new Array(${MAX_ARGS}).fill(0);
function share(items, align, id, n) {
  const units = Math.ceil(items / align);
  const per = Math.ceil(units / n);
  return [Math.min(items, id * per * align), Math.min(items, (id + 1) * per * align)];
}
let seen = 0;
post('ready');
for (;;) {
  let g = Atomics.load(I, ${CTRL + GEN});
  for (let i = 0; g === seen && i < spin; i++) g = Atomics.load(I, ${CTRL + GEN});
  while (g === seen) { Atomics.wait(I, ${CTRL + GEN}, seen); g = Atomics.load(I, ${CTRL + GEN}); }
  seen = g;
  const op = I[${CTRL + OP}];
  if (op < 0) break;
  const [lo, hi] = share(I[${CTRL + ITEMS}], I[${CTRL + ALIGN}], id, n);
  if (lo < hi) {
    for (let k = 0; k < ${MAX_ARGS}; k++) a[k] = I[${CTRL + ARGS} + k];
    const pa = I[${CTRL + PER_ARG}];
    if (pa >= 0) a[pa] = (a[pa] >>> 0) + id * I[${CTRL + PER_STRIDE}];
    fns[op](lo, hi, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]);
  }
  if (Atomics.add(I, ${CTRL + DONE}, 1) + 1 === n - 1) Atomics.notify(I, ${CTRL + DONE});
}
}
`;

type Kernel = (lo: number, hi: number, ...args: number[]) => void;

export class ThreadPool {
  private readonly I: Int32Array;
  private readonly workers: PoolWorker[] = [];
  private readonly fns: Kernel[];
  /** Whether every worker has started (until then each op runs on the calling thread alone: the same results). */
  private up = false;
  /** Resolves when every worker has started; rejects with the first one's error. */
  ready: Promise<void> = Promise.resolve();

  private constructor(memory: WebAssembly.Memory, exports: WebAssembly.Exports, readonly names: readonly string[], readonly threads: number) {
    this.I = new Int32Array(memory.buffer, 0, CTRL + 64);
    this.fns = names.map((k) => exports[k] as Kernel);
  }

  /**
   * Start `threads - 1` workers (none for 1 thread) and wait until each has instantiated the module, or with
   * `wait` false return at once: ops run on the calling thread alone until `ready` has resolved (a caller with
   * synchronous work to do meanwhile, such as uploading weights, awaits it after that).
   */
  static async create(module: WebAssembly.Module, memory: WebAssembly.Memory, exports: WebAssembly.Exports, names: readonly string[], threads: number, wait = true): Promise<ThreadPool> {
    const pool = new ThreadPool(memory, exports, names, threads);
    if (threads > 1) {
      for (let id = 1; id < threads; id++) {
        pool.workers.push(platform.startWorker(WORKER_SOURCE, { module, memory, id, n: threads, names: [...names], spin: 1 << 13 }));
      }
      pool.ready = Promise.all(pool.workers.map((w) => w.ready)).then(() => { pool.up = true; });
      pool.ready.catch(() => {}); // reported to whoever awaits it
      if (wait) await pool.ready;
    }
    return pool;
  }

  /**
   * Run kernel `op` over `items` split in units of `align` between all threads. `args` follow (lo, hi);
   * if `perArg` ≥ 0, thread i gets `args[perArg] + i * perStride` there (its own scratch).
   */
  run(op: number, items: number, align: number, args: readonly number[], perArg = -1, perStride = 0): void {
    const n = this.workers.length;
    if (n === 0 || !this.up || items <= align) {
      this.fns[op]!(0, items, ...args);
      return;
    }
    const I = this.I;
    I[CTRL + OP] = op; I[CTRL + ITEMS] = items; I[CTRL + ALIGN] = align;
    I[CTRL + PER_ARG] = perArg; I[CTRL + PER_STRIDE] = perStride;
    for (let k = 0; k < args.length; k++) I[CTRL + ARGS + k] = args[k]!;
    Atomics.store(I, CTRL + DONE, 0);
    Atomics.add(I, CTRL + GEN, 1);
    Atomics.notify(I, CTRL + GEN);
    const [lo, hi] = share(items, align, 0, n + 1);
    if (lo < hi) this.fns[op]!(lo, hi, ...args);
    // Spin briefly (the other shares are the same size), then sleep: on a busy machine a descheduled worker
    // must not be waited for by burning the core it needs.
    let d = Atomics.load(I, CTRL + DONE);
    for (let i = 0; d < n && i < 20000; i++) d = Atomics.load(I, CTRL + DONE);
    while (d < n) {
      Atomics.wait(I, CTRL + DONE, d, 1);
      d = Atomics.load(I, CTRL + DONE);
    }
  }

  async dispose(): Promise<void> {
    if (this.workers.length === 0) return;
    const I = this.I;
    I[CTRL + OP] = -1;
    Atomics.add(I, CTRL + GEN, 1);
    Atomics.notify(I, CTRL + GEN);
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
  }
}
