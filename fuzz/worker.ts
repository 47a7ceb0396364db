/**
 * A fuzz worker (a child process of fuzz/run.ts): receives case requests over IPC, builds each case's files in its
 * own scratch folder, runs them through the real loading path and reports the outcome and the case's peak RSS.
 *
 *   checkpoint  loadModel(path, { backend: 'js' }): openCheckpoint + configFromCheckpoint + loadWeights, then one step
 *   vocab       WorldTokenizer.fromFile(path, { vocabSize }), then an encode/decode round trip
 *   state       loadState(path, config) + checkStateFinite (what /load and the browser worker do), then fromHost
 *   chat        the `rwkv7 chat` /load sequence on a live Chat, then one more turn: the chat must go on
 *
 * A thrown UserError/FormatError is a clean refusal; any other exception is "unexpected". Crashes, hangs and memory
 * spikes are seen by the parent (a worker that dies or stops answering).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { UserError } from '../src/errors.js';
import { loadModel } from '../src/runtime/load.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { loadState } from '../src/model/state.js';
import { checkStateFinite } from '../src/model/state-check.js';
import { openSafetensors } from '../src/formats/safetensors.js';
import { Chat, parseSavedChat } from '../src/runtime/chat.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { loadWeights } from '../src/model/weights.js';
import { RWKV7 } from '../src/model/rwkv7.js';
import { JsBackend } from '../src/backends/js/index.js';
import { syntheticCheckpoint } from '../src/runtime/synthetic.js';
import { generate } from './gen.js';
import { CHAT_SHAPE, vocabSeedLines } from './seeds.js';
import type { Case, CaseFile, Kind } from './lib.js';

export type Outcome = 'accepted' | 'clean' | 'unexpected' | 'crash' | 'hang' | 'spike';

export type Request = { id: number; kind: Kind; seed: number; index: number } | { id: number; replay: string };
export type Reply =
  | { id: number; phase: 'start'; dir: string; mutation: string[]; kind: Kind }
  | { id: number; phase: 'done'; outcome: Outcome; message?: string; top?: string; rssKb: number; ms: number };

const scratch = process.env.FUZZ_SCRATCH!;
const caseDir = path.join(scratch, 'case');

/** Writes a case's files (and case.json describing it) into `dir`. */
export function writeCase(c: Case, dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const f of c.files) {
    const p = path.join(dir, f.name);
    if (f.type === 'file') {
      fs.writeFileSync(p, f.bytes);
      if (f.sparse !== undefined) fs.truncateSync(p, f.sparse);
    } else if (f.type === 'dir') fs.mkdirSync(p);
    else if (f.type === 'fifo') execFileSync('mkfifo', [p]);
    else fs.symlinkSync(f.target, p);
  }
  const meta = { ...c, files: c.files.map((f) => (f.type === 'file' ? { name: f.name, type: f.type, length: f.bytes.length, sparse: f.sparse } : f)) };
  fs.writeFileSync(path.join(dir, 'case.json'), JSON.stringify(meta, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? `number:${v}` : v), 1));
}

/** Reads a saved case (a folder with case.json and the regular files' bytes, possibly cut short). */
export function readCase(dir: string): Case {
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'case.json'), 'utf8'), (_k, v) => (typeof v === 'string' && v.startsWith('number:') ? Number(v.slice(7)) : v)) as Case & { files: Array<CaseFile & { length?: number }> };
  const files = meta.files.map((f): CaseFile => {
    if (f.type !== 'file') return f;
    const p = path.join(dir, 'files', f.name);
    return { name: f.name, type: 'file', bytes: fs.existsSync(p) ? new Uint8Array(fs.readFileSync(p)) : new Uint8Array(0), sparse: f.sparse };
  });
  return { ...meta, files };
}

function hwmKb(): number {
  const m = /VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : 0;
}
function resetHwm(): void {
  try { fs.writeFileSync('/proc/self/clear_refs', '5'); } catch { /* not Linux: the peak is then the process's */ }
}

/** The top stack frame inside this project (for dedup), e.g. "readSafetensors (src/formats/safetensors.ts:71)". */
function topFrame(e: unknown): string {
  const stack = e instanceof Error ? e.stack ?? '' : '';
  const root = path.resolve(import.meta.dirname, '..') + path.sep;
  const frames = stack.split('\n').filter((l) => l.trim().startsWith('at '));
  const mine = frames.find((l) => l.includes(root) && !l.includes(`${path.sep}fuzz${path.sep}`)) ?? frames[0] ?? '';
  return `${e instanceof Error ? e.name : typeof e}: ${mine.trim().replace(/^at /, '').replaceAll(root, '').replace(/:\d+\)$/, ')').replace(/file:\/\//, '')}`;
}

// A live chat for the /load cases: a tiny random model whose vocabulary covers every byte token.
let chatSetup: { chat: Chat; config: ReturnType<typeof configFromCheckpoint>; tok: WorldTokenizer } | undefined;
function liveChat(): NonNullable<typeof chatSetup> {
  if (!chatSetup) {
    const ck = syntheticCheckpoint(CHAT_SHAPE, 7);
    const config = configFromCheckpoint(ck);
    const backend = new JsBackend();
    const model = new RWKV7(backend, config, loadWeights(ck, config, backend));
    const lines = vocabSeedLines().slice(0, 256).join('\n') + '\n';
    const tok = WorldTokenizer.fromBuffer(new TextEncoder().encode(lines), 'bytes.txt', { vocabSize: CHAT_SHAPE.vocabSize });
    chatSetup = { chat: new Chat(model, tok, 'You are a fuzz target.'), config, tok };
  }
  return chatSetup;
}

/** A turn after /load failed: always unexpected, even when the cause is a UserError. */
class ChatBroken extends Error {
  constructor(message: string, readonly inner: unknown) { super(message); this.name = 'ChatBroken'; if (inner instanceof Error) this.stack = `${this.name}: ${message}\n${inner.stack?.split('\n').slice(1).join('\n')}`; }
}

const SAMPLE = 'Hello, world! 你好 \u{1F600} \r\n\t\u0000 ÿ';

async function runCase(c: Case, dir: string): Promise<void> {
  const p = c.entry === '.' ? dir : path.join(dir, c.entry);
  switch (c.target) {
    case 'checkpoint': {
      const loaded = await loadModel(p, { backend: 'js' });
      const st = loaded.model.newState();
      const logits = await loaded.model.forward([1, 2], st);
      if (logits.length !== loaded.config.vocabSize) throw new Error(`accepted model gives ${logits.length} logits for a vocabulary of ${loaded.config.vocabSize}`);
      st.free?.();
      return;
    }
    case 'vocab': {
      const tok = WorldTokenizer.fromFile(p, c.vocabSize === undefined ? {} : { vocabSize: c.vocabSize });
      const ids = tok.encode(SAMPLE);
      tok.decode(ids);
      for (let id = 0; id < Math.min(tok.vocabSize, 300); id++) tok.decode([id]);
      return;
    }
    case 'state': {
      const { config, chat } = liveChat();
      const host = loadState(p, config);
      checkStateFinite(p, host);
      chat.session.state.fromHost(host);
      chat.session.reset();
      return;
    }
    case 'chat': {
      const { config, chat } = liveChat();
      chat.reset();
      // The /load command of src/cli/chat.ts, step by step.
      try {
        const host = loadState(p, config);
        checkStateFinite(p, host);
        const st = openSafetensors(p);
        let meta: unknown;
        try { meta = Object.hasOwn(st.metadata, 'rwkv7.chat') ? st.metadata['rwkv7.chat'] : undefined; } finally { st.close(); }
        if (meta !== undefined && typeof meta !== 'string') throw new UserError(`${p}: metadata rwkv7.chat is not a string`);
        const m = meta !== undefined ? parseSavedChat(meta, p) : undefined;
        chat.session.state.fromHost(host);
        if (m) {
          chat.restore(m.history, m.contextTokens ?? 0, m.started);
          if (m.think !== undefined) chat.think = m.think;
        } else chat.restore({ system: chat.history.system, turns: [] }, 0, true);
      } finally {
        // Loaded or refused, the chat goes on: one more turn must work.
        try {
          await chat.turn('and then?', { maxTokens: 2, sampling: { temperature: 1, topP: 0.9, topK: 0, presencePenalty: 0, frequencyPenalty: 0, penaltyDecay: 1, seed: 1 } });
        } catch (e) {
          // Whatever it is, an error here means the conversation could not go on after /load.
          throw new ChatBroken(`the chat did not go on after /load: ${(e as Error).message}`, e);
        }
      }
      return;
    }
  }
}

async function handle(req: Request): Promise<void> {
  let c: Case;
  try {
    c = 'replay' in req ? readCase(req.replay) : generate(req.kind, req.seed, req.index);
    writeCase(c, caseDir);
  } catch (e) {
    // A bug of the fuzzer itself, not of the loaders: reported as unexpected, with a "harness" frame.
    process.send!({ id: req.id, phase: 'done', outcome: 'unexpected', message: `fuzz harness: ${(e as Error).message}`, top: `harness ${topFrame(e)} ${(e as Error).stack?.split('\n')[1]?.trim()}`, rssKb: hwmKb(), ms: 0 } satisfies Reply);
    return;
  }
  process.send!({ id: req.id, phase: 'start', dir: caseDir, mutation: c.mutation, kind: c.kind } satisfies Reply);
  resetHwm();
  const t0 = performance.now();
  let outcome: Outcome = 'accepted';
  let message: string | undefined, top: string | undefined;
  try {
    await runCase(c, caseDir);
  } catch (e) {
    outcome = e instanceof UserError ? 'clean' : 'unexpected';
    message = e instanceof Error ? e.message.slice(0, 500) : String(e);
    if (outcome === 'unexpected') top = topFrame(e);
  }
  const ms = performance.now() - t0;
  process.send!({ id: req.id, phase: 'done', outcome, message, top, rssKb: hwmKb(), ms } satisfies Reply);
}

if (process.send) {
  process.on('disconnect', () => process.exit(0)); // the runner is gone
  let chain = Promise.resolve();
  process.on('message', (req: Request) => { chain = chain.then(() => handle(req)); });
  process.send({ id: -1, phase: 'done', outcome: 'accepted', rssKb: hwmKb(), ms: 0 } satisfies Reply); // ready
}
