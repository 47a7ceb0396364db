/**
 * rwkv7-ts in web browsers (`dist/browser/rwkv7.js`, built by scripts/build-browser.mjs): the same API as in Node,
 * with sources (a URL, a Blob/File, an ArrayBuffer) instead of paths. The model runs in a dedicated worker started
 * from this same file; the page holds a `RemoteModel` with the same method names.
 *
 *   const { loadModel, verifyGolden } = await import('./rwkv7.js');
 *   const { model, config } = await loadModel('model.pth', { backend: 'wasm', threads: 2 });
 *   const report = await verifyGolden(model, 'model.golden.safetensors');
 */
import { RemoteModel, RemoteChat, MODEL_WORKER_NAME, type BrowserLoadOptions, type RemoteGenerateOptions } from './client.js';
import { serveModel } from './worker.js';
import type { SourceInput } from './sources.js';
import type { VerifyMode, VerifyReport } from '../runtime/verify.js';
import type { ModelConfig } from '../model/config.js';

export { RemoteModel, RemoteChat, type BrowserLoadOptions, type RemoteGenerateOptions, type ChatTurnReply } from './client.js';
export type { LoadedInfo, GenerateReply } from './protocol.js';
export { clearModelCache, type SourceInput, type DownloadProgress } from './sources.js';
export { setAssetBase } from '../platform/browser.js';
export { UserError, FormatError } from '../errors.js';
export { WorldTokenizer } from '../tokenizer/world.js';
export { Sampler, GENERATE_DEFAULTS, CHAT_DEFAULTS, samplingDistribution, argmax } from '../runtime/sampler.js';
export type { SamplingOptions } from '../runtime/sampler.js';
export { stateToBytes, stateToBytes as saveState, loadState, zeroHostState } from '../model/state.js';
export type { HostState } from '../model/state.js';
export type { ModelConfig } from '../model/config.js';
export type { VerifyReport, VerifyMode, GroupResult } from '../runtime/verify.js';
export type { PerplexityReport } from '../runtime/metrics.js';
export { VERSION } from '../version.js';

/** Loads a model in a new model worker: `{ model, config }` as in Node. */
export async function loadModel(source: SourceInput, opts: BrowserLoadOptions = {}): Promise<{ model: RemoteModel; config: ModelConfig }> {
  const model = await RemoteModel.load(source, opts);
  return { model, config: model.config };
}

/** The model's logits and states against a golden reference file (same report as `verifyGolden` in Node). */
export function verifyGolden(model: RemoteModel, golden: SourceInput, modes?: VerifyMode[]): Promise<VerifyReport> {
  return model.verifyGolden(golden, modes);
}

/** Continues `prompt` (a fresh state each call). */
export function generate(model: RemoteModel, prompt: string, opts: RemoteGenerateOptions) {
  return model.generate(prompt, opts);
}

/** Perplexity of a text under the model. */
export function perplexity(model: RemoteModel, text: string) {
  return model.perplexity(text);
}

/** A multi-turn conversation (RWKV's state carries it: each turn processes only the new message). */
export class Chat {
  private remote?: Promise<RemoteChat>;
  constructor(readonly model: RemoteModel, readonly system?: string) {}
  private get r(): Promise<RemoteChat> { return (this.remote ??= this.model.chat(this.system)); }
  async turn(message: string, opts: RemoteGenerateOptions) { return (await this.r).turn(message, opts); }
  async reset() { return (await this.r).reset(); }
  async save() { return (await this.r).save(); }
  async load(bytes: Uint8Array) { return (await this.r).load(bytes); }
}

// Started as the model worker (by RemoteModel.load): serve requests.
const scope = globalThis as unknown as { name?: string; WorkerGlobalScope?: unknown; postMessage(m: unknown): void; onmessage: unknown };
if (typeof scope.WorkerGlobalScope !== 'undefined' && scope.name === MODEL_WORKER_NAME) {
  serveModel(scope as Parameters<typeof serveModel>[0]);
}
