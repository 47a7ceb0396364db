/**
 * The page's side of the model worker: `RemoteModel` and `RemoteChat` send requests to src/browser/worker.ts and
 * resolve with its answers; generation streams text through `onText`, and an AbortSignal stops it.
 */
import { UserError } from '../errors.js';
import type { VerifyMode, VerifyReport } from '../runtime/verify.js';
import type { PerplexityReport } from '../runtime/metrics.js';
import type { SamplingOptions } from '../runtime/sampler.js';
import type { ModelConfig } from '../model/config.js';
import type { GenerateReply, LoadRequest, LoadedInfo, Op, Reply, WorkerEvent } from './protocol.js';
import type { DownloadProgress, SourceInput } from './sources.js';

/** The name the model worker is started with (src/browser/index.ts starts serving when it sees it). */
export const MODEL_WORKER_NAME = 'rwkv7-model';

export interface BrowserLoadOptions extends Omit<LoadRequest, 'source'> {
  /** Download progress of a model loaded by URL (bytes done / total). */
  onProgress?: DownloadProgress;
  /** One-line notices (fallbacks: no GPU adapter, no cross-origin isolation, ...). */
  log?: (msg: string) => void;
  /** The worker script (default: this bundle itself, `import.meta.url`). */
  workerUrl?: string | URL;
}

export interface RemoteGenerateOptions {
  maxTokens: number;
  sampling?: Partial<SamplingOptions>;
  stop?: string[];
  onText?: (text: string) => void;
  signal?: AbortSignal;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  onEvent?(e: WorkerEvent): void;
}

/** A request/answer channel over one worker. */
class Channel {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  constructor(readonly worker: Worker) {
    worker.onmessage = (e: MessageEvent) => {
      const m = e.data as Reply | WorkerEvent;
      const p = this.pending.get(m.id);
      if (!p) return;
      if ('event' in m) { p.onEvent?.(m); return; }
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(Object.assign(m.error.name === 'UserError' || m.error.name === 'FormatError' ? new UserError(m.error.message) : new Error(m.error.message), { name: m.error.name }));
    };
    worker.onerror = (e) => {
      const err = new Error(`the model worker failed: ${e.message || 'could not start it (is the bundle served as JavaScript?)'}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }

  call<T>(op: Op, onEvent?: (e: WorkerEvent) => void, signal?: AbortSignal): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, onEvent });
      if (signal) {
        const abort = (): void => this.worker.postMessage({ abort: id });
        if (signal.aborted) queueMicrotask(abort);
        else signal.addEventListener('abort', abort, { once: true });
      }
      this.worker.postMessage({ id, ...op });
    });
  }
}

/** Resolves relative URLs against the page (the worker would resolve them against the bundle). */
function resolveInput(source: SourceInput): SourceInput {
  if (typeof source === 'string' || source instanceof URL) {
    const base = (globalThis as { document?: { baseURI: string } }).document?.baseURI ?? (globalThis as unknown as { location: { href: string } }).location.href;
    return new URL(String(source), base).href;
  }
  return source;
}

const textEvents = (onText?: (t: string) => void) => (e: WorkerEvent): void => {
  if (e.event === 'text') onText?.(e.text);
};

export class RemoteModel {
  private constructor(private readonly ch: Channel, readonly info: LoadedInfo) {}

  get config(): ModelConfig { return this.info.config; }

  /** Starts a model worker and loads `source` in it. */
  static async load(source: SourceInput, opts: BrowserLoadOptions = {}): Promise<RemoteModel> {
    const url = opts.workerUrl ?? new URL(import.meta.url);
    const worker = new Worker(url, { type: 'module', name: MODEL_WORKER_NAME });
    const ch = new Channel(worker);
    const { onProgress, log, workerUrl: _w, ...rest } = opts;
    try {
      const info = await ch.call<LoadedInfo>(
        { op: 'load', args: { ...rest, source: resolveInput(source) } },
        (e) => {
          if (e.event === 'progress') onProgress?.(e.done, e.total);
          else if (e.event === 'notice') log?.(e.text);
        },
      );
      return new RemoteModel(ch, info);
    } catch (e) {
      worker.terminate();
      throw e;
    }
  }

  /** Compares the model with a golden reference file (URL, Blob or bytes): the same report as in Node. */
  verifyGolden(golden: SourceInput, modes?: VerifyMode[]): Promise<VerifyReport> {
    return this.ch.call({ op: 'verifyGolden', args: { source: resolveInput(golden), modes } });
  }

  /** Continues `prompt` from a fresh state. */
  generate(prompt: string, opts: RemoteGenerateOptions): Promise<GenerateReply> {
    return this.ch.call({ op: 'generate', args: { prompt, maxTokens: opts.maxTokens, sampling: opts.sampling, stop: opts.stop } },
      textEvents(opts.onText), opts.signal);
  }

  perplexity(text: string): Promise<PerplexityReport> {
    return this.ch.call({ op: 'perplexity', args: { text } });
  }

  /** A conversation whose state lives in the worker. */
  async chat(system?: string): Promise<RemoteChat> {
    return new RemoteChat(this.ch, await this.ch.call<number>({ op: 'chatNew', args: { system } }));
  }

  /** Frees the model and stops the worker. */
  async dispose(): Promise<void> {
    await this.ch.call({ op: 'dispose', args: {} }).catch(() => undefined);
    this.ch.worker.terminate();
  }
}

export interface ChatTurnReply extends GenerateReply { contextTokens: number }

export class RemoteChat {
  constructor(private readonly ch: Channel, readonly id: number) {}

  /** One turn: the answer streams through `onText`; the state keeps the conversation for the next turn. */
  turn(message: string, opts: RemoteGenerateOptions): Promise<ChatTurnReply> {
    return this.ch.call({ op: 'chatTurn', args: { chat: this.id, message, maxTokens: opts.maxTokens, sampling: opts.sampling } },
      textEvents(opts.onText), opts.signal);
  }

  reset(): Promise<void> { return this.ch.call({ op: 'chatReset', args: { chat: this.id } }); }
  /** The conversation's state as a state file's bytes (the format of `rwkv7 chat`'s /save). */
  save(): Promise<Uint8Array> { return this.ch.call({ op: 'chatSave', args: { chat: this.id } }); }
  load(bytes: Uint8Array): Promise<void> { return this.ch.call({ op: 'chatLoad', args: { chat: this.id, bytes } }); }
  free(): Promise<void> { return this.ch.call({ op: 'chatFree', args: { chat: this.id } }); }
}
