// Initial states from files: official state-tuned .pth files (blocks.N.att.time_state [H, N, N]) and our own
// state files; Session/Chat starting from (and resetting to) them; `--state` in generate and chat; shape checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writePth, tensor } from './helpers/pth-writer.js';
import { readStateFile, loadInitialState, stateFingerprint, stateNameOf } from '../src/model/state-file.js';
import { saveState, zeroHostState, type HostState } from '../src/model/state.js';
import { loadModel } from '../src/runtime/load.js';
import { generate, Session } from '../src/runtime/generate.js';
import { Chat } from '../src/runtime/chat.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { FormatError } from '../src/errors.js';
import type { SamplingOptions } from '../src/runtime/sampler.js';
import { StateCache } from '../src/runtime/state-cache.js';
import type { ModelConfig } from '../src/model/config.js';

const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const storyteller = fileURLToPath(new URL('../assets/rwkv7-storyteller-L6-D192.pth', import.meta.url));
const tok = WorldTokenizer.default();
const greedy: SamplingOptions = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0, penaltyDecay: 1 };
const PROMPT = 'Once upon a time';

function rwkv7(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['--import', 'tsx', main, ...args], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

/** Deterministic pseudo-random values in [-scale, scale) (not symmetric in i, j: a transpose would show). */
function randomValues(n: number, seed: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = ((x / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

const f32Bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** f32 → bf16 bits (round to nearest even), and the f32 those bits stand for. */
function toBf16(a: Float32Array): { bytes: Uint8Array; values: Float32Array } {
  const u32 = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const out = new Uint16Array(a.length);
  const back = new Uint32Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const u = u32[i]!;
    out[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    back[i] = out[i]! << 16;
  }
  return { bytes: new Uint8Array(out.buffer), values: new Float32Array(back.buffer) };
}

/** Writes an official-layout state-tuned file: one blocks.N.att.time_state [H, N, N] per layer. */
function writeTimeState(path: string, L: number, H: number, N: number, wkv: Float32Array, dtype: 'F32' | 'BF16' = 'F32'): void {
  const per = H * N * N;
  const tensors = [];
  for (let i = 0; i < L; i++) {
    const part = wkv.slice(i * per, (i + 1) * per);
    const data = dtype === 'F32' ? f32Bytes(part) : toBf16(part).bytes;
    tensors.push(tensor(`blocks.${i}.att.time_state`, dtype, [H, N, N], data));
  }
  writePth(path, tensors);
}

function wkvSize(c: ModelConfig): number {
  return c.nLayer * c.nHead * c.headSize * c.headSize;
}

async function greedyTokens(model: Awaited<ReturnType<typeof loadModel>>['model'], host: HostState | undefined, n = 24): Promise<number[]> {
  const state = model.newState();
  if (host) state.fromHost(host);
  const r = await generate(model, tok, state, tok.encode(PROMPT), { maxTokens: n, sampling: greedy, stopTokens: [] });
  state.free();
  return r.tokens;
}

test('an official state-tuned .pth changes the output exactly as the same state loaded by hand (library and CLI)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-state-'));
  try {
    const { model, config } = await loadModel(storyteller, { backend: 'js' });
    const { nLayer: L, nHead: H, headSize: N } = config;
    const wkv = randomValues(wkvSize(config), 7, 0.8);
    const file = join(dir, 'tuned.pth');
    writeTimeState(file, L, H, N, wkv);

    // The reader: wkv copied as S[h][i][j] (no transpose), token shifts zero.
    const { host, kind } = readStateFile(file, config);
    assert.equal(kind, 'time_state');
    assert.deepEqual(host.wkv, wkv);
    assert.ok(host.attX.every((v) => v === 0) && host.ffnX.every((v) => v === 0));

    // By hand: State.fromHost with the same numbers.
    const byHand: HostState = { ...zeroHostState(config), wkv: wkv.slice() };
    const zero = await greedyTokens(model, undefined);
    const fromFile = await greedyTokens(model, host);
    const manual = await greedyTokens(model, byHand);
    assert.deepEqual(fromFile, manual);
    assert.notDeepEqual(fromFile, zero, 'the state changes the output');
    // A transposed state would give other output (so the orientation matters and the test would see a transpose).
    const t = new Float32Array(wkv.length);
    for (let b = 0; b < L * H; b++) for (let i = 0; i < N; i++) for (let j = 0; j < N; j++) t[b * N * N + i * N + j] = wkv[b * N * N + j * N + i]!;
    assert.notDeepEqual(await greedyTokens(model, { ...zeroHostState(config), wkv: t }), manual);

    // Session and Chat start from it, and reset() returns to it (not to zero).
    const s = new Session(model, tok, undefined, host);
    assert.deepEqual((await s.state.toHost()).wkv, wkv);
    await s.generate(PROMPT, { maxTokens: 4, sampling: greedy });
    assert.notDeepEqual((await s.state.toHost()).wkv, wkv);
    s.reset();
    assert.deepEqual((await s.state.toHost()).wkv, wkv);
    const chat = new Chat(model, tok, undefined, { initialState: host });
    await chat.turn('Tell me a story.', { maxTokens: 4, sampling: greedy });
    chat.reset();
    assert.deepEqual(await chat.session.state.toHost(), host);
    const plain = new Chat(model, tok);
    await plain.turn('Tell me a story.', { maxTokens: 4, sampling: greedy });
    plain.reset();
    assert.ok((await plain.session.state.toHost()).wkv.every((v) => v === 0));

    // The CLI: generate --state gives the same tokens as the library by hand.
    const r = await rwkv7(['generate', '--model', storyteller, '--backend', 'js', '--state', file, '--prompt', PROMPT,
      '--temperature', '0', '--max-tokens', '24', '--json', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { tokens: number[] };
    // The CLI stops at token 0 (end of document); compare the common part.
    assert.deepEqual(j.tokens, manual.slice(0, j.tokens.length));
    assert.ok(j.tokens.length > 0);

    // chat --state: the first answer is the one the library gives from the same state.
    const libChat = new Chat(model, tok, undefined, { initialState: host });
    const expect = await libChat.turn('Hello', { maxTokens: 8, sampling: greedy });
    const c = await rwkv7(['chat', '--model', storyteller, '--backend', 'js', '--state', file, '--temperature', '0', '--max-tokens', '8'], 'Hello\n/quit\n');
    assert.equal(c.code, 0, c.stderr);
    assert.ok(c.stdout.includes(`Assistant:${expect.text}`), `${JSON.stringify(c.stdout)} vs ${JSON.stringify(expect.text)}`);
    await model.backend.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('state files: bf16 time_state, our own saveState files, names and fingerprints', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-state-'));
  try {
    const { model, config } = await loadModel(storyteller, { backend: 'js' });
    const { nLayer: L, nHead: H, headSize: N } = config;
    const wkv = randomValues(wkvSize(config), 11, 0.5);
    const bf = join(dir, 'tuned-bf16.pth');
    writeTimeState(bf, L, H, N, wkv, 'BF16');
    const got = readStateFile(bf, config);
    assert.deepEqual(got.host.wkv, toBf16(wkv).values);

    // Our own format (e.g. chat /save), through the same reader.
    const own: HostState = { attX: randomValues(L * config.nEmbd, 1, 1), ffnX: randomValues(L * config.nEmbd, 2, 1), wkv };
    const ownPath = join(dir, 'own.safetensors');
    saveState(ownPath, own, config);
    const r = readStateFile(ownPath, config);
    assert.equal(r.kind, 'rwkv7-state');
    assert.deepEqual(r.host, own);

    const init = loadInitialState(bf, config);
    assert.equal(init.name, 'tuned-bf16');
    assert.equal(init.kind, 'time_state');
    assert.equal(init.fingerprint, stateFingerprint(got.host));
    assert.notEqual(init.fingerprint, stateFingerprint(own));
    assert.equal(stateNameOf('a/b\\c.d.safetensors'), 'c.d');

    // The prefix cache keeps sequences from different initial states apart (origin = the state's fingerprint).
    const cache = new StateCache(1 << 24);
    const ids = tok.encode(PROMPT);
    const st = model.newState();
    st.fromHost(init.host);
    const logits = await model.forward(ids, st);
    assert.ok(cache.insert(ids, st, logits, init.fingerprint));
    assert.ok(cache.has(ids, init.fingerprint));
    assert.ok(!cache.has(ids));
    const miss = cache.lookup([...ids, 11], () => model.newState());
    assert.equal(miss.length, 0);
    const hit = cache.lookup([...ids, 11], () => model.newState(), init.fingerprint);
    assert.equal(hit.length, ids.length);
    assert.deepEqual(await hit.state.toHost(), await st.toHost());
    for (const x of [miss.state, hit.state, st]) x.free();
    cache.clear();
    await model.backend.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a state that does not fit the model is refused with a clear error (library and CLI, no stack trace)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-state-'));
  try {
    const { model, config } = await loadModel(storyteller, { backend: 'js' });
    const { nLayer: L, nHead: H, headSize: N } = config;
    await model.backend.dispose();
    const cases: Array<[string, () => void, RegExp]> = [
      ['layers.pth', () => writeTimeState(join(dir, 'layers.pth'), L - 1, H, N, new Float32Array((L - 1) * H * N * N)), /time_state for 5 layer\(s\).*the model has 6 layers of 3 heads × 64/],
      ['heads.pth', () => writeTimeState(join(dir, 'heads.pth'), L, H + 1, N, new Float32Array(L * (H + 1) * N * N)), /blocks\.0\.att\.time_state is \[4, 64, 64\]; the model has 6 layers of 3 heads × 64/],
      ['size.pth', () => writeTimeState(join(dir, 'size.pth'), L, H * 2, N / 2, new Float32Array(L * H * 2 * (N / 2) ** 2)), /is \[6, 32, 32\]/],
      ['nan.pth', () => { const w = new Float32Array(L * H * N * N); w[5] = NaN; writeTimeState(join(dir, 'nan.pth'), L, H, N, w); }, /holds NaN|NaN/],
    ];
    for (const [name, make, re] of cases) {
      make();
      assert.throws(() => readStateFile(join(dir, name), config), (e: unknown) => e instanceof FormatError && re.test((e as Error).message), name);
    }
    // A model checkpoint is not a state file.
    assert.throws(() => readStateFile(storyteller, config), /not a state file \(neither state\.wkv nor blocks\.N\.att\.time_state/);
    writeFileSync(join(dir, 'junk.pth'), 'hello');
    assert.throws(() => readStateFile(join(dir, 'junk.pth'), config), FormatError);

    const r = await rwkv7(['generate', '--model', storyteller, '--backend', 'js', '--state', join(dir, 'heads.pth'), '--prompt', 'Hi', '--max-tokens', '2']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^rwkv7: --state .*heads\.pth: blocks\.0\.att\.time_state is \[4, 64, 64\]; the model has 6 layers/);
    assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
