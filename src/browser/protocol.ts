/**
 * Messages between a page (src/browser/client.ts) and the model worker (src/browser/worker.ts).
 *
 * Every request has an id; the worker answers it once with a result or an error, and may send events for it
 * before that (download progress, streamed text, notices). `abort` ends the generation of request `target`.
 */
import type { SourceInput } from './sources.js';
import type { BackendName } from '../backends/index.js';
import type { WeightDType } from '../backends/kernels.js';
import type { SamplingOptions } from '../runtime/sampler.js';
import type { VerifyMode } from '../runtime/verify.js';

export interface LoadRequest {
  source: SourceInput;
  backend?: BackendName;
  dtype?: WeightDType;
  threads?: number;
  /** Cache a model loaded by URL in OPFS (default true). */
  cache?: boolean;
  /** Where the library's .wasm and vocabulary files are (default: beside the bundle). */
  assetBase?: string;
}

export interface GenerateRequest {
  prompt: string;
  maxTokens: number;
  sampling?: Partial<SamplingOptions>;
  stop?: string[];
}

export interface ChatTurnRequest {
  chat: number;
  message: string;
  maxTokens: number;
  sampling?: Partial<SamplingOptions>;
}

export type Op =
  | { op: 'load'; args: LoadRequest }
  | { op: 'verifyGolden'; args: { source: SourceInput; modes?: VerifyMode[] } }
  | { op: 'generate'; args: GenerateRequest }
  | { op: 'perplexity'; args: { text: string } }
  | { op: 'chatNew'; args: { system?: string } }
  | { op: 'chatTurn'; args: ChatTurnRequest }
  | { op: 'chatReset'; args: { chat: number } }
  | { op: 'chatSave'; args: { chat: number } }
  | { op: 'chatLoad'; args: { chat: number; bytes: Uint8Array } }
  | { op: 'chatFree'; args: { chat: number } }
  | { op: 'dispose'; args: Record<string, never> };

export type Request = Op & { id: number };

export interface AbortMessage { abort: number }

export type WorkerEvent =
  | { id: number; event: 'progress'; done: number; total: number }
  | { id: number; event: 'text'; text: string }
  | { id: number; event: 'notice'; text: string };

export type Reply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { name: string; message: string } };

/** What `load` answers: the model's facts, for the page. */
export interface LoadedInfo {
  config: import('../model/config.js').ModelConfig;
  backend: string;
  dtype: string;
  threads: number;
  /** Whether a URL model came from the OPFS cache. */
  cached: boolean;
  loadMs: number;
  notices: string[];
}

/** Generation results as the page sees them. */
export interface GenerateReply {
  text: string;
  tokens: number[];
  promptTokens: number;
  completionTokens: number;
  finishReason: string;
  prefillTokS: number;
  decodeTokS: number;
  seed: number;
}
