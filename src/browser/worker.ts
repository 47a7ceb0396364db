/**
 * The model worker: a dedicated Web Worker that owns the model (so the wasm pool may block in `Atomics.wait`, and
 * synchronous reads of Blobs, URLs and OPFS files are allowed). It answers the requests of src/browser/client.ts.
 */
import { loadModel, type LoadedModel } from '../runtime/load.js';
import { verifyGolden } from '../runtime/verify.js';
import { Session } from '../runtime/generate.js';
import { Chat, CHAT_STOP } from '../runtime/chat.js';
import { GENERATE_DEFAULTS, CHAT_DEFAULTS, type SamplingOptions } from '../runtime/sampler.js';
import { perplexity } from '../runtime/metrics.js';
import { WorldTokenizer } from '../tokenizer/world.js';
import { loadState, stateToBytes } from '../model/state.js';
import { UserError } from '../errors.js';
import { isByteSource } from '../formats/source.js';
import { setAssetBase } from '../platform/browser.js';
import { cachedUrlSource, openInput } from './sources.js';
import type { AbortMessage, GenerateReply, LoadedInfo, Reply, Request, WorkerEvent } from './protocol.js';
import type { GenerateResult } from '../runtime/generate.js';

interface Scope {
  postMessage(m: unknown, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent) => void) | null;
}

function replyOf(r: GenerateResult): GenerateReply {
  return {
    text: r.text, tokens: r.tokens, promptTokens: r.promptTokens, completionTokens: r.completionTokens,
    finishReason: r.finishReason, prefillTokS: r.prefillTokS, decodeTokS: r.decodeTokS, seed: r.seed,
  };
}

/** Starts answering requests on `scope` (the worker's global). */
export function serveModel(scope: Scope): void {
  let loaded: LoadedModel | undefined;
  let tokenizer: WorldTokenizer | undefined;
  const chats = new Map<number, Chat>();
  let nextChat = 1;
  const aborts = new Map<number, AbortController>();
  const post = (m: Reply | WorkerEvent): void => scope.postMessage(m);

  const need = (): LoadedModel => {
    if (!loaded) throw new UserError('no model loaded');
    return loaded;
  };
  const chatOf = (id: number): Chat => {
    const c = chats.get(id);
    if (!c) throw new UserError(`no chat ${id}`);
    return c;
  };
  const sampling = (base: SamplingOptions, s?: Partial<SamplingOptions>): SamplingOptions => ({ ...base, ...s });

  async function handle(req: Request): Promise<unknown> {
    const signalFor = (): AbortSignal => {
      const c = new AbortController();
      aborts.set(req.id, c);
      return c.signal;
    };
    switch (req.op) {
      case 'load': {
        const a = req.args;
        if (a.assetBase) setAssetBase(a.assetBase);
        const t0 = performance.now();
        const notices: string[] = [];
        const log = (text: string): void => { notices.push(text); post({ id: req.id, event: 'notice', text }); };
        let cached = false;
        let source;
        const onProgress = (done: number, total: number): void => post({ id: req.id, event: 'progress', done, total });
        if (typeof a.source === 'string' && a.cache !== false) {
          const d = await cachedUrlSource(a.source, onProgress);
          source = d.source;
          cached = d.cached;
        } else {
          source = await openInput(a.source, { onProgress });
        }
        if (loaded) await loaded.model.backend.dispose();
        loaded = await loadModel(source, { backend: a.backend ?? 'auto', dtype: a.dtype, threads: a.threads, log });
        tokenizer = await WorldTokenizer.load();
        const b = loaded.model.backend as { name: string; weightDType: string; threads?: number };
        const info: LoadedInfo = {
          config: loaded.config, backend: b.name, dtype: b.weightDType, threads: b.threads ?? 1, cached,
          loadMs: performance.now() - t0, notices,
        };
        return info;
      }
      case 'verifyGolden': {
        const src = await openInput(req.args.source);
        if (!isByteSource(src)) throw new UserError('a golden reference is one file, not a folder');
        return verifyGolden(need().model, src, req.args.modes);
      }
      case 'generate': {
        const m = need();
        const session = new Session(m.model, tokenizer!);
        try {
          const r = await session.generate(req.args.prompt, {
            maxTokens: req.args.maxTokens, sampling: sampling(GENERATE_DEFAULTS, req.args.sampling), stop: req.args.stop,
            signal: signalFor(), onText: (text) => post({ id: req.id, event: 'text', text }),
          });
          return replyOf(r);
        } finally {
          session.state.free();
        }
      }
      case 'perplexity':
        return perplexity(need().model, tokenizer!.encode(req.args.text));
      case 'chatNew': {
        const id = nextChat++;
        chats.set(id, new Chat(need().model, tokenizer!, req.args.system));
        return id;
      }
      case 'chatTurn': {
        const chat = chatOf(req.args.chat);
        const r = await chat.turn(req.args.message, {
          maxTokens: req.args.maxTokens, sampling: sampling(CHAT_DEFAULTS, req.args.sampling), stop: CHAT_STOP,
          signal: signalFor(), onText: (text) => post({ id: req.id, event: 'text', text }),
        });
        return { ...replyOf(r), contextTokens: chat.session.stats.contextTokens };
      }
      case 'chatReset':
        chatOf(req.args.chat).reset();
        return null;
      case 'chatSave': {
        const chat = chatOf(req.args.chat);
        const host = await chat.session.state.toHost();
        return stateToBytes(host, need().config, { chat: JSON.stringify(chat.history) });
      }
      case 'chatLoad': {
        const chat = chatOf(req.args.chat);
        const host = loadState(req.args.bytes, need().config);
        chat.session.state.fromHost(host);
        chat.restore({ system: chat.history.system, turns: [] }, 0, true);
        return null;
      }
      case 'chatFree': {
        chats.get(req.args.chat)?.session.state.free();
        chats.delete(req.args.chat);
        return null;
      }
      case 'dispose':
        for (const c of chats.values()) c.session.state.free();
        chats.clear();
        if (loaded) await loaded.model.backend.dispose();
        loaded = undefined;
        return null;
    }
  }

  // Requests run one at a time, in order (the model is one), except aborts, which act at once.
  let queue: Promise<void> = Promise.resolve();
  scope.onmessage = (e: MessageEvent) => {
    const msg = e.data as Request | AbortMessage;
    if ('abort' in msg) {
      aborts.get(msg.abort)?.abort();
      return;
    }
    queue = queue.then(async () => {
      try {
        const value = await handle(msg);
        post({ id: msg.id, ok: true, value });
      } catch (err) {
        const e2 = err as Error;
        post({ id: msg.id, ok: false, error: { name: e2?.name ?? 'Error', message: e2?.message ?? String(err) } });
      } finally {
        aborts.delete(msg.id);
      }
    });
  };
}
