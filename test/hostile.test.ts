/**
 * Regression tests for the hostile inputs of issue 17: each case was found by fuzzing or built by hand, and each
 * must now be refused (or accepted) cleanly: a FormatError/UserError naming the file and what is wrong, fast, and
 * without allocating out of proportion to the file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FormatError, UserError } from '../src/errors.js';
import { openPth } from '../src/formats/index.js';
import { MAX_LONG_BYTES, unpickle, type PyValue } from '../src/formats/pickle.js';
import { writePth, tensor, pickleStateDict, type PthStorage } from './helpers/pth-writer.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { loadWeights } from '../src/model/weights.js';
import { checkStateFinite } from '../src/model/state-check.js';
import { findNonFinite, findNonFinite16 } from '../src/formats/finite.js';
import { parseSavedChat } from '../src/runtime/chat.js';
import { syntheticCheckpoint, type SyntheticShape } from '../src/runtime/synthetic.js';
import { JsBackend } from '../src/backends/js/index.js';
import type { Checkpoint, TensorRef } from '../src/formats/types.js';
import { saveState, zeroHostState } from '../src/model/state.js';
import { loadModel } from '../src/runtime/load.js';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rwkv7-hostile-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const isFormatError = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof FormatError, `expected FormatError, got ${(e as Error)?.stack}`);
  assert.match(e.message, re);
  return true;
};

/** Pickle bytes from parts (strings are latin1); built with Buffer.concat, so any size works. */
function pkl(...parts: Array<string | number[] | Uint8Array>): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p as Uint8Array)))));
}
const u32le = (n: number) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
const noGlobals = { where: 'test.pkl', findGlobal: () => undefined, persistentLoad: (): PyValue => null };

function pthWithPickle(name: string, pickle: Uint8Array): string {
  const p = path.join(tmp, name);
  writePth(p, [], { rawPickle: pickle });
  return p;
}

// ---- the restricted unpickler ----

test('pickle: a GLOBAL naming a JavaScript prototype member (torch.hasOwnProperty, ...) is refused by name', () => {
  const f32 = new Uint8Array(16);
  const good = Buffer.from(pickleStateDict([tensor('w', 'F32', [4], f32)])).toString('latin1');
  for (const member of ['hasOwnProperty', 'constructor', 'toString', '__proto__', 'valueOf']) {
    // The storage type of a real tensor replaced by the prototype member: it used to resolve and fail much later
    // with "wanted NaN bytes at offset NaN".
    const evil = Buffer.from(good.replace('ctorch\nFloatStorage\n', `ctorch\n${member}\n`), 'latin1');
    const p = path.join(tmp, `proto-${member}.pth`);
    writePth(p, [tensor('w', 'F32', [4], f32)], { rawPickle: evil });
    assert.throws(() => openPth(p), isFormatError(new RegExp(`"torch\\.${member}", which is not allowed`)));
    // and as a torch dtype / bare global
    const bare = pthWithPickle(`proto-bare-${member}.pth`, pkl([0x80, 2], `ctorch\n${member}\n`, [0x2e]));
    assert.throws(() => openPth(bare), isFormatError(new RegExp(`"torch\\.${member}"`)));
  }
  const obj = pthWithPickle('proto-object.pth', pkl([0x80, 2], 'ccollections\n__proto__\n', [0x2e]));
  assert.throws(() => openPth(obj), isFormatError(/"collections\.__proto__"/));
});

test('pickle: APPENDS with 130,000 items does not overflow the call stack', () => {
  const n = 130_000;
  const items = new Uint8Array(2 * n);
  for (let i = 0; i < n; i++) { items[2 * i] = 0x4b; items[2 * i + 1] = i & 0xff; } // BININT1
  const bytes = pkl([0x80, 2, 0x5d, 0x28], items, [0x65, 0x2e]); // EMPTY_LIST MARK ... APPENDS STOP
  const list = unpickle(bytes, noGlobals);
  assert.ok(Array.isArray(list));
  assert.equal(list.length, n);
  assert.equal(list[n - 1], (n - 1) & 0xff);
  // inside a checkpoint it is a clean refusal (not a state dict), not a RangeError
  assert.throws(() => openPth(pthWithPickle('appends.pth', bytes)), isFormatError(/does not hold a state dict/));
});

test('pickle: a 300,000-byte LONG4 integer is refused at once (it used to take ~100 s to decode)', () => {
  const n = 300_000;
  const bytes = pkl([0x80, 2, 0x8b, ...u32le(n)], new Uint8Array(n).fill(0x11), [0x2e]);
  const t0 = performance.now();
  assert.throws(() => unpickle(bytes, noGlobals), isFormatError(/integer of 300000 bytes at offset 2 is too large/));
  assert.throws(() => openPth(pthWithPickle('long4.pth', bytes)), isFormatError(/integer of 300000 bytes/));
  assert.ok(performance.now() - t0 < 2000, `took ${performance.now() - t0} ms`);
  // integers up to the cap still decode, exactly, in two's complement
  const big = new Uint8Array(MAX_LONG_BYTES).fill(0xff);
  assert.equal(unpickle(pkl([0x80, 2, 0x8b, ...u32le(MAX_LONG_BYTES)], big, [0x2e]), noGlobals), -1);
  assert.equal(unpickle(pkl([0x80, 2, 0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x2e]), noGlobals), 1n << 64n);
  assert.equal(unpickle(pkl([0x80, 2, 0x8a, 2, 0x00, 0x80, 0x2e]), noGlobals), -32768);
  assert.equal(unpickle(pkl([0x80, 2, 0x8a, 0, 0x2e]), noGlobals), 0);
});

test('pickle: memory bombs (DUP, memo, dicts, repeated stand-in calls) are refused by the work budget', () => {
  const t0 = performance.now();
  const budget = /more than a tensor state dict can need/;
  // 10 M DUPs of one value: 10 M stack slots from a 10 MB pickle (a 512 MB data.pkl would make 4 GB)
  const dups = pkl([0x80, 2, 0x4e], new Uint8Array(10_000_000).fill(0x32), [0x2e]);
  assert.throws(() => unpickle(dups, noGlobals), isFormatError(budget));
  // 500k empty dicts appended to one list: 125 MB of JS Maps from a 1 MB pickle
  const dicts = new Uint8Array(1_000_000);
  for (let i = 0; i < dicts.length; i += 2) { dicts[i] = 0x7d; dicts[i + 1] = 0x61; } // EMPTY_DICT APPEND
  assert.throws(() => unpickle(pkl([0x80, 2, 0x5d], dicts, [0x2e]), noGlobals), isFormatError(budget));
  // 3 M memo entries (MEMOIZE), and 400k sparse ones (LONG_BINPUT at scattered indices), of one value
  assert.throws(() => unpickle(pkl([0x80, 2, 0x4e], new Uint8Array(3_000_000).fill(0x94), [0x2e]), noGlobals), isFormatError(budget));
  const sparse = new Uint8Array(5 * 400_000);
  for (let i = 0; i < 400_000; i++) sparse.set([0x72, ...u32le(i * 1000 + 7)], 5 * i);
  assert.throws(() => unpickle(pkl([0x80, 2, 0x4e], sparse, [0x2e]), noGlobals), isFormatError(budget));
  // OrderedDict(<a memoized list of 100k items>) called 200k times: 2e10 steps of work without a budget
  const items = new Uint8Array(100_000 * 6);
  for (let i = 0; i < 100_000; i++) items.set([0x4a, ...u32le(i), 0x85], 6 * i); // BININT, TUPLE1
  const calls = new Uint8Array(200_000 * 5);
  for (let i = 0; i < 200_000; i++) calls.set([0x68, 0, 0x68, 1, 0x52], 5 * i); // BINGET fn, BINGET args, REDUCE
  const od = pkl([0x80, 2], 'ccollections\nOrderedDict\n', [0x71, 0, 0x30, 0x5d, 0x28], items, [0x65, 0x85, 0x71, 1, 0x30], calls, [0x2e]);
  assert.throws(() => openPth(pthWithPickle('od-bomb.pth', od)), isFormatError(budget));
  assert.ok(performance.now() - t0 < 10000, `took ${performance.now() - t0} ms`);
  // a real checkpoint is far inside the budget
  const many = Array.from({ length: 1000 }, (_, i) => tensor(`t${i}`, 'F32', [2], new Uint8Array(8)));
  const p = path.join(tmp, 'many.pth');
  writePth(p, many);
  const f = openPth(p);
  assert.equal(f.tensors.size, 1000);
  f.close();
});

test('pickle: stack underflow, a missing MARK and undefined memo indices are clean errors naming the offset', () => {
  const cases: Array<[Uint8Array, RegExp]> = [
    [pkl([0x80, 2, 0x87]), /stack underflow at offset 2/], // TUPLE3 on an empty stack
    [pkl([0x80, 2, 0x28, 0x86]), /unexpected MARK at offset 3/], // TUPLE2 through a MARK
    [pkl([0x80, 2, 0x5d, 0x65]), /MARK not found at offset 3/], // APPENDS without MARK
    [pkl([0x80, 2, 0x6a, 0xff, 0xff, 0xff, 0xff]), /memo index 4294967295 not defined \(offset 2\)/],
    [pkl([0x80, 2, 0x28, 0x71, 0]), /stack underflow at offset 3/], // BINPUT of a MARK
    [pkl([0x80, 2, 0x4e, 0x61]), /stack underflow at offset 3/], // APPEND with nothing below
    [pkl([0x80, 2, 0x4e, 0x4e, 0x61]), /APPEND to a non-list at offset 4/],
    [pkl([0x80, 2, 0x7d, 0x4e, 0x73]), /stack underflow at offset 4/], // SETITEM missing its key
    [pkl([0x80, 2, 0x2e]), /stack underflow at offset 2/], // STOP on an empty stack
  ];
  for (const [bytes, re] of cases) assert.throws(() => unpickle(bytes, noGlobals), isFormatError(re));
});

test('pickle: the memo keeps dense and sparse indices apart correctly', () => {
  // NONE MEMOIZE(0) TRUE LONG_BINPUT 5 FALSE BINPUT 1 ... then MEMOIZE takes index len(memo) = 3
  const bytes = pkl([0x80, 4, 0x4e, 0x94, 0x88, 0x72, ...u32le(5), 0x89, 0x71, 1, 0x4b, 9, 0x94, 0x30, 0x30, 0x30, 0x30],
    [0x28, 0x68, 0, 0x68, 1, 0x68, 3, 0x6a, ...u32le(5), 0x6c, 0x2e]); // MARK BINGET 0,1,3 LONG_BINGET 5 LIST STOP
  assert.deepEqual(unpickle(bytes, noGlobals), [null, false, 9, true]);
  assert.throws(() => unpickle(pkl([0x80, 2, 0x4e, 0x71, 3, 0x68, 2]), noGlobals), isFormatError(/memo index 2 not defined/));
});

// ---- .pth storages ----

test('pth: one storage key declared with two storage types (or sizes) is refused', () => {
  const bytes = new Uint8Array(16);
  const a: PthStorage = { key: '0', dtype: 'F32', numel: 4, data: () => bytes };
  const b: PthStorage = { key: '0', dtype: 'BF16', numel: 8, data: () => bytes }; // same key, same 16 bytes
  const p = path.join(tmp, 'two-types.pth');
  writePth(p, [{ name: 'x', storage: a, shape: [4] }, { name: 'y', storage: b, shape: [8] }]);
  assert.throws(() => openPth(p), isFormatError(/storage archive\/data\/0 is declared as 4 F32 elements and again as 8 BF16 elements/));
  const c: PthStorage = { key: '0', dtype: 'F32', numel: 2, data: () => bytes };
  const p2 = path.join(tmp, 'two-sizes.pth');
  writePth(p2, [{ name: 'x', storage: a, shape: [4] }, { name: 'y', storage: c, shape: [2] }]);
  assert.throws(() => openPth(p2), isFormatError(/declared as 4 F32 elements and again as 2 F32 elements/));
});

test('pth: 300 layers aliasing one storage are refused; tied weights and disjoint views are accepted', () => {
  const C = 256;
  const shared: PthStorage = { key: 'w', dtype: 'F32', numel: C * C, data: () => new Uint8Array(C * C * 4) };
  const layers = Array.from({ length: 300 }, (_, i) => ({ name: `blocks.${i}.att.key.weight`, storage: shared, shape: [C, C] }));
  const p = path.join(tmp, 'alias.pth');
  writePth(p, layers);
  assert.throws(() => openPth(p), isFormatError(/alias their storages 300\.0 times over \(78643200 bytes of tensors in 262144 bytes of distinct storage; e\.g\. blocks\.1\.att\.key\.weight shares storage archive\/data\/w with blocks\.0\.att\.key\.weight\); at most 2x \(tied weights\) plus 16 MiB/));

  // tied embeddings (head.weight = emb.weight) and a fused qkv storage split into three disjoint views load fine
  const emb: PthStorage = { key: 'emb', dtype: 'F32', numel: 8 * C, data: () => new Uint8Array(8 * C * 4) };
  const qkv: PthStorage = { key: 'qkv', dtype: 'F32', numel: 3 * C, data: () => new Uint8Array(3 * C * 4) };
  const ok = path.join(tmp, 'tied.pth');
  writePth(ok, [
    { name: 'emb.weight', storage: emb, shape: [8, C] }, { name: 'head.weight', storage: emb, shape: [8, C] },
    { name: 'q', storage: qkv, shape: [C] }, { name: 'k', storage: qkv, shape: [C], offset: C }, { name: 'v', storage: qkv, shape: [C], offset: 2 * C },
  ]);
  const f = openPth(ok);
  assert.equal(f.tensors.size, 5);
  assert.equal(f.tensors.get('v')!.read().length, C * 4);
  f.close();
});

// ---- model config ----

/** A checkpoint of shape-only tensors (read() is never called by configFromCheckpoint). */
function shapesCheckpoint(names: string[]): Checkpoint {
  const tensors = new Map<string, TensorRef>();
  for (const name of names) tensors.set(name, { name, dtype: 'F32', shape: name === 'emb.weight' ? [16, 8] : [8], read: () => new Uint8Array(0) });
  return { path: 'hostile.pth', format: 'pth', layout: 'blinkdl', tensors, close() {} };
}

test('config: 125k layer ids with a gap are a clear error (no Math.max(...ids) stack overflow)', () => {
  const names = ['emb.weight'];
  for (let i = 0; i <= 125_000; i++) if (i !== 777) names.push(`blocks.${i}.ln1.weight`);
  assert.throws(() => configFromCheckpoint(shapesCheckpoint(names)),
    isFormatError(/^hostile\.pth: layer indices are not contiguous: blocks\.777\.\* is missing but blocks\.125000\.ln1\.weight exists \(expected blocks\.0 to blocks\.124999 for 125000 layers\)/));
  // a single far-away layer id, and non-canonical ones
  assert.throws(() => configFromCheckpoint(shapesCheckpoint(['emb.weight', 'blocks.0.ln1.weight', 'blocks.99999999999.ln1.weight'])),
    isFormatError(/blocks\.1\.\* is missing but blocks\.99999999999\.ln1\.weight exists/));
  assert.throws(() => configFromCheckpoint(shapesCheckpoint(['emb.weight', 'blocks.0.ln1.weight', 'blocks.01.ln1.weight'])),
    isFormatError(/tensor blocks\.01\.ln1\.weight has a malformed layer index/));
  assert.throws(() => configFromCheckpoint(shapesCheckpoint(['emb.weight', `blocks.${'9'.repeat(400)}.x`])),
    isFormatError(/has a malformed layer index/));
});

// ---- non-finite weights ----

const TINY_SHAPE: SyntheticShape = { nLayer: 2, nEmbd: 64, headSize: 32, vocabSize: 32, dimFfn: 64, lora: { decay: 8, a: 8, v: 8, gate: 8 } };

/** The synthetic checkpoint with element `at` of tensor `name` replaced by `value` (in the tensor's own dtype). */
function poisoned(name: string, value: number, at = 3, dtype: 'BF16' | 'F32' = 'BF16'): Checkpoint {
  const ck = syntheticCheckpoint(TINY_SHAPE);
  const tensors = new Map(ck.tensors);
  for (const [n, ref] of ck.tensors) {
    const poison = n === name;
    if (dtype === 'BF16' && !poison) continue;
    tensors.set(n, {
      name: n, dtype, shape: ref.shape,
      read: () => {
        const u16 = new Uint16Array(ref.read().slice().buffer);
        const f32 = new Float32Array(u16.length);
        const bits = new Uint32Array(f32.buffer);
        for (let i = 0; i < u16.length; i++) bits[i] = u16[i]! << 16;
        if (poison) f32[at] = value;
        if (dtype === 'F32') return new Uint8Array(f32.buffer);
        for (let i = 0; i < u16.length; i++) u16[i] = bits[i]! >>> 16;
        return new Uint8Array(u16.buffer);
      },
    });
  }
  return { ...ck, path: 'poisoned.pth', tensors };
}

test('weights: NaN/Inf weights are refused by tensor name unless allowNonFinite is set', () => {
  const cases: Array<[string, number, 'BF16' | 'F32', RegExp]> = [
    ['blocks.1.att.key.weight', NaN, 'BF16', /^poisoned\.pth: tensor blocks\.1\.att\.key\.weight holds 1 non-finite value \(the first, NaN, at element 3\)/],
    ['blocks.0.att.w1', -Infinity, 'BF16', /tensor blocks\.0\.att\.w1 holds 1 non-finite value \(the first, -Infinity/], // LoRA (transposed)
    ['blocks.0.att.x_r', Infinity, 'BF16', /tensor blocks\.0\.att\.x_r holds 1 non-finite value \(the first, Infinity/], // vector
    ['emb.weight', NaN, 'BF16', /tensor emb\.weight holds 1 non-finite/], // host embedding (bf16)
    ['emb.weight', NaN, 'F32', /tensor emb\.weight holds 1 non-finite/], // host embedding (f32)
    ['blocks.0.ln0.weight', NaN, 'BF16', /tensor blocks\.0\.ln0\.weight holds/], // host f64 vector
    ['head.weight', Infinity, 'F32', /tensor head\.weight holds 1 non-finite/],
  ];
  for (const [name, value, dtype, re] of cases) {
    const ck = poisoned(name, value, 3, dtype);
    const config = configFromCheckpoint(ck);
    assert.throws(() => loadWeights(ck, config, new JsBackend()), isFormatError(re), `${name} ${dtype}`);
    assert.ok(loadWeights(ck, config, new JsBackend(), { allowNonFinite: true }).layers.length === 2);
  }
  // the clean checkpoint loads; the progress-callback form still works
  const ck = syntheticCheckpoint(TINY_SHAPE);
  let ticks = 0;
  loadWeights(ck, configFromCheckpoint(ck), new JsBackend(), () => ticks++);
  assert.ok(ticks > 0);
});

test('finite scans: counts, first index and kind, for f32 and raw bf16/f16 bits', () => {
  assert.equal(findNonFinite(new Float32Array([1, 2, 3])), undefined);
  assert.deepEqual(findNonFinite(new Float32Array([1, -Infinity, NaN, 3, Infinity])), { count: 3, first: 1, value: -Infinity });
  assert.deepEqual(findNonFinite(new Float64Array([0, NaN])), { count: 1, first: 1, value: NaN });
  assert.equal(findNonFinite16(Uint16Array.of(0x3f80, 0x7f7f), 'BF16'), undefined); // 1.0, max finite bf16
  assert.deepEqual(findNonFinite16(Uint16Array.of(0x3f80, 0xff80, 0x7fc0), 'BF16'), { count: 2, first: 1, value: -Infinity });
  assert.deepEqual(findNonFinite16(Uint16Array.of(0x7bff, 0x7e00), 'F16'), { count: 1, first: 1, value: NaN }); // max f16, NaN
});

// ---- saved state and conversation (/load) ----

test('state: a state holding -Infinity or NaN is refused with the tensor named', () => {
  const c = configFromCheckpoint(syntheticCheckpoint(TINY_SHAPE));
  const host = zeroHostState(c);
  checkStateFinite('s.safetensors', host);
  host.wkv[10] = -Infinity;
  host.wkv[20] = NaN;
  assert.throws(() => checkStateFinite('s.safetensors', host),
    isFormatError(/^s\.safetensors: state tensor state\.wkv holds 2 non-finite values \(the first, -Infinity, at element 10\)/));
  const h2 = zeroHostState(c);
  h2.ffnX[0] = NaN;
  assert.throws(() => checkStateFinite('s.safetensors', h2), isFormatError(/state tensor state\.ffn_x holds 1 non-finite value/));
});

test('saved conversation: every malformed field is refused by name; good ones are copied clean', () => {
  const isUserError = (re: RegExp) => (e: unknown) => {
    assert.ok(e instanceof UserError, `expected UserError, got ${(e as Error)?.stack}`);
    assert.match(e.message, re);
    return true;
  };
  const bad: Array<[string, RegExp]> = [
    ['null', /^c\.st: saved conversation field \(top level\) is null, expected an object/],
    ['42', /field \(top level\) is a number/],
    ['{"history":null}', /field history is null, expected an object \{system\?, turns\}/],
    ['{"history":3}', /field history is a number/],
    ['{"history":[]}', /field history is an array/],
    ['{"history":{}}', /field history\.turns is missing, expected an array of turns/],
    ['{"history":{"turns":{}}}', /field history\.turns is an object, expected an array/],
    ['{"history":{"turns":[null]}}', /field history\.turns\[0\] is null, expected an object \{user, assistant, think\}/],
    ['{"history":{"turns":[{"user":"a","assistant":"b","think":false},{"user":1,"assistant":"b"}]}}', /field history\.turns\[1\]\.user is a number, expected a string/],
    ['{"history":{"turns":[{"user":"a"}]}}', /field history\.turns\[0\]\.assistant is missing, expected a string/],
    ['{"history":{"turns":[{"user":"a","assistant":"b","think":"yes"}]}}', /history\.turns\[0\]\.think is a string, expected a boolean/],
    ['{"history":{"system":7,"turns":[]}}', /field history\.system is a number, expected a string/],
    ['{"history":{"turns":[]},"think":1}', /field think is a number, expected a boolean/],
    ['{"history":{"turns":[]},"started":"true"}', /field started is a string, expected a boolean/],
    ['{"history":{"turns":[]},"contextTokens":-1}', /field contextTokens is a number, expected a non-negative integer/],
    ['{"history":{"turns":[]},"contextTokens":1.5}', /contextTokens is a number, expected a non-negative integer/],
    ['{"history":{"turns":[]},"model":{}}', /field model is an object, expected a string/],
    ['{"history":', /^c\.st: the saved conversation \(metadata rwkv7\.chat\) is not valid JSON/],
  ];
  for (const [json, re] of bad) assert.throws(() => parseSavedChat(json, 'c.st'), isUserError(re), json);

  // missing system (no system prompt), missing think, extra fields and a __proto__ key are fine
  const ok = parseSavedChat('{"history":{"turns":[{"user":"hi","assistant":" yo","__proto__":{"x":1}}],"extra":1},"started":true,"contextTokens":12}', 'c.st');
  assert.deepEqual(ok, { history: { turns: [{ user: 'hi', assistant: ' yo', think: false }] }, started: true, contextTokens: 12 });
  assert.equal(Object.getPrototypeOf(ok.history.turns[0]), Object.prototype);
});

test('rwkv7 chat: /load of malformed conversations and non-finite states is refused, and the chat goes on', { timeout: 120000 }, async () => {
  const { config } = await loadModel(undefined, { backend: 'js' });
  const files: string[] = [];
  const save = (name: string, meta: string | undefined, poison = false): string => {
    const host = zeroHostState(config);
    if (poison) host.wkv[5] = -Infinity;
    const f = path.join(tmp, name);
    saveState(f, host, config, meta === undefined ? {} : { 'rwkv7.chat': meta });
    files.push(f);
    return f;
  };
  const cases = [
    save('null-history.safetensors', '{"history":null}'),
    save('number-history.safetensors', '{"history":5}'),
    save('null-turn.safetensors', '{"history":{"turns":[null]}}'),
    save('no-history.safetensors', '{}'),
    save('bad-user.safetensors', '{"history":{"turns":[{"user":1,"assistant":"x","think":false}]}}'),
    save('inf-state.safetensors', undefined, true),
  ];
  const good = save('good.safetensors', '{"history":{"turns":[{"user":"Hi","assistant":" Hello","think":false}]},"started":true,"contextTokens":9}');
  const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
  const input = [...cases.map((f) => `/load ${f}`), 'Hello', `/load ${good}`, 'More', '/quit', ''].join('\n');
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const p = execFile(process.execPath, ['--import', 'tsx', main, 'chat', '--backend', 'js', '--max-tokens', '3'], (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
    p.stdin!.end(input);
  });
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /TypeError|at .*\.ts:\d+/);
  const expect = [
    /cannot load \S*null-history\.safetensors: \S+: saved conversation field history is null/,
    /cannot load \S*number-history\.safetensors: \S+: saved conversation field history is a number/,
    /cannot load \S*null-turn\.safetensors: \S+: saved conversation field history\.turns\[0\] is null/,
    /cannot load \S*no-history\.safetensors: \S+: saved conversation field history is missing/,
    /cannot load \S*bad-user\.safetensors: \S+: saved conversation field history\.turns\[0\]\.user is a number/,
    /cannot load \S*inf-state\.safetensors: \S+: state tensor state\.wkv holds 1 non-finite value \(the first, -Infinity, at element 5\)/,
    /\(loaded 1 turn\(s\) from \S*good\.safetensors\)/,
  ];
  for (const re of expect) assert.match(r.stderr, re);
  assert.equal(r.stdout.match(/Assistant:/g)?.length, 2, r.stdout);
});

// ---- found by the fuzzer (fuzz/run.ts) and the rest of issue 17's safetensors list ----

import { execFileSync } from 'node:child_process';
import { openCheckpoint, openSafetensors, toFloat32 } from '../src/formats/index.js';
import { checkTensorSize, MAX_TENSOR_BYTES } from '../src/formats/dtype.js';

/** A safetensors file from a header object and `dataLen` zero bytes of data (extended sparsely to `sparseTo`). */
function stFile(name: string, header: unknown, dataLen: number, sparseTo?: number): string {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const p = path.join(tmp, name);
  fs.writeFileSync(p, Buffer.concat([len, json, Buffer.alloc(dataLen)]));
  if (sparseTo !== undefined) fs.truncateSync(p, 8 + json.length + sparseTo);
  return p;
}

test('safetensors: a header entry that is not an object, or has garbled keys, says what is wrong with that entry', () => {
  const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
  const cases: Array<[unknown, RegExp]> = [
    [[], /tensor lm_head\.weight: header entry is an array, expected an object \{"dtype", "shape", "data_offsets"\}/],
    [null, /tensor lm_head\.weight: header entry is null, expected an object/],
    [7, /tensor lm_head\.weight: header entry is a number, expected an object/],
    [{ dtyqe: 'F32', shape: [2], data_offsets: [0, 8] }, /tensor lm_head\.weight: header entry has no "dtype" field \(it has "dtyqe", "shape", "data_offsets"; expected/],
    [{ dtype: 'F32', sha\u0070e2: [2], data_offsets: [0, 8] }, /header entry has no "shape" field/],
    [{ dtype: 'F32', shape: [2] }, /header entry has no "data_offsets" field \(it has "dtype", "shape"/],
    [{ ...ok, dtype: 5 }, /unsupported dtype a number \(expected one of F64/],
    [{ ...ok, dtype: '__proto__' }, /unsupported dtype "__proto__"/],
    [{ ...ok, shape: 'x' }, /invalid shape: shape is a string, expected an array of non-negative integers/],
    [{ ...ok, shape: [2, null] }, /invalid shape: shape\[1\] is null, expected a non-negative integer/],
    [{ ...ok, shape: [1.5] }, /invalid shape: shape\[0\] is 1\.5/],
    [{ ...ok, data_offsets: { 0: 0, 1: 8 } }, /invalid data_offsets: data_offsets is an object, expected \[begin, end\]/],
    [{ ...ok, data_offsets: [0, '8'] }, /invalid data_offsets: data_offsets is \[0,"8"\]/],
  ];
  cases.forEach(([entry, re], i) => {
    const p = stFile(`entry-${i}.safetensors`, { 'lm_head.weight': entry }, 8);
    assert.throws(() => openSafetensors(p), isFormatError(re), `case ${i}`);
  });
});

test('safetensors: a zero-length tensor placed between two overlapping entries does not hide the overlap', () => {
  const header = {
    a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
    z: { dtype: 'F32', shape: [0], data_offsets: [8, 8] },
    b: { dtype: 'F32', shape: [4], data_offsets: [4, 20] },
  };
  assert.throws(() => openSafetensors(stFile('zero-between.safetensors', header, 20)), isFormatError(/tensors a \[0, 16\) and b \[4, 20\) overlap/));
  // a long tensor overlapping one that is not its neighbour once sorted
  const far = {
    a: { dtype: 'F32', shape: [8], data_offsets: [0, 32] },
    b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
    c: { dtype: 'F32', shape: [1], data_offsets: [12, 16] },
  };
  assert.throws(() => openSafetensors(stFile('far.safetensors', far, 32)), isFormatError(/tensors a \[0, 32\) and b \[4, 8\) overlap/));
  // zero-length tensors anywhere, even at the same offset as others, are fine
  const fine = {
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    e1: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
    e2: { dtype: 'BF16', shape: [0, 3], data_offsets: [8, 8] },
    b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
  };
  assert.equal(openSafetensors(stFile('fine.safetensors', fine, 16)).tensors.size, 4);
});

test('safetensors: a 5 GiB or 2.5 GiB BF16 tensor (in a sparse file) is refused by name and size before anything is allocated', () => {
  const rss0 = process.memoryUsage().rss;
  for (const [gib, rows] of [[5, 335_544_320], [2.5, 167_772_160]] as const) {
    // The tiny model's tensors would not matter: the size check comes first, from the header alone.
    const bytes = rows * 8 * 2;
    const p = stFile(`huge-${gib}.safetensors`, { 'lm_head.weight': { dtype: 'BF16', shape: [rows, 8], data_offsets: [0, bytes] } }, 0, bytes);
    assert.equal(fs.statSync(p).size > bytes, true);
    const t0 = performance.now();
    assert.throws(() => openCheckpoint(p), isFormatError(new RegExp(`tensor lm_head\\.weight \\[${rows}, 8\\] BF16 has ${rows * 8} elements \\(${gib.toPrecision(3)} GiB in the file, ${(gib * 2).toPrecision(3)} GiB as f32\\): too large for this runtime`)));
    assert.ok(performance.now() - t0 < 1000);
  }
  // just over the bound (2^29 elements) is refused; just under it is accepted by the reader
  const over = 2 ** 26 + 1;
  const pOver = stFile('over.safetensors', { w: { dtype: 'BF16', shape: [over, 8], data_offsets: [0, over * 16] } }, 0, over * 16);
  assert.throws(() => openSafetensors(pOver), isFormatError(/tensor w \[67108865, 8\] BF16 has 536870920 elements/));
  const under = 2 ** 26 - 1;
  const pUnder = stFile('under.safetensors', { w: { dtype: 'BF16', shape: [under, 8], data_offsets: [0, under * 16] } }, 0, under * 16);
  assert.deepEqual(openSafetensors(pUnder).tensors.get('w')!.shape, [under, 8]);
  assert.ok(process.memoryUsage().rss - rss0 < 200 * 2 ** 20);
  for (const f of [pOver, pUnder]) fs.rmSync(f);
});

test('tensor size bound: shapes whose bytes or f32 form reach 2 GiB are refused, exactly, also past 2^53', () => {
  assert.equal(MAX_TENSOR_BYTES, 2 ** 31);
  assert.equal(checkTensorSize('f', 't', [2 ** 29 - 1], 'BF16', 2), 2 ** 29 - 1);
  assert.throws(() => checkTensorSize('f', 't', [2 ** 29], 'BF16', 2), isFormatError(/f: tensor t \[536870912\] BF16 has 536870912 elements \(1\.00 GiB in the file, 2\.00 GiB as f32\)/));
  assert.throws(() => checkTensorSize('f', 't', [2 ** 28], 'F64', 8), isFormatError(/F64 has 268435456 elements \(2\.00 GiB in the file/));
  assert.equal(checkTensorSize('f', 't', [2 ** 28 - 1], 'I64', 8), 2 ** 28 - 1);
  // a product beyond 2^53 is not rounded into something that looks fine
  assert.throws(() => checkTensorSize('f', 't', [2 ** 40, 2 ** 40, 0 + 1], 'F32', 4), isFormatError(/has 1208925819614629174706176 elements/));
  assert.equal(checkTensorSize('f', 't', [0, 2 ** 52, 2 ** 52], 'F32', 4), 0);
  // toFloat32 checks before reading (read() would allocate 8 GiB)
  const ref: TensorRef = { name: 'emb.weight', dtype: 'F32', shape: [2 ** 28, 8], read: () => { throw new Error('read() was called'); } };
  assert.throws(() => toFloat32(ref), isFormatError(/tensor emb\.weight \[268435456, 8\] F32 has 2147483648 elements/));
});

test('a FIFO (or another special file) named model.safetensors, config.json or a shard is refused at once, never read', () => {
  const mk = (dir: string, files: Record<string, 'fifo' | Buffer>): string => {
    const d = path.join(tmp, dir);
    fs.mkdirSync(d, { recursive: true });
    for (const [name, what] of Object.entries(files)) {
      if (what === 'fifo') execFileSync('mkfifo', [path.join(d, name)]);
      else fs.writeFileSync(path.join(d, name), what);
    }
    return d;
  };
  const t0 = performance.now();
  const st = Buffer.from(fs.readFileSync(stFile('plain.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 8)));
  const a = mk('fifo-model', { 'model.safetensors': 'fifo', 'config.json': Buffer.from('{}') });
  assert.throws(() => openCheckpoint(a), isFormatError(/model\.safetensors: not a regular file/));
  const b = mk('fifo-config', { 'config.json': 'fifo', 'model.safetensors': st });
  assert.throws(() => openCheckpoint(b), isFormatError(/config\.json: not a regular file/));
  const c = mk('fifo-shard', {
    'model.safetensors.index.json': Buffer.from(JSON.stringify({ weight_map: { w: 'model-00001-of-00001.safetensors' } })),
    'model-00001-of-00001.safetensors': 'fifo',
  });
  assert.throws(() => openCheckpoint(c), isFormatError(/model-00001-of-00001\.safetensors: not a regular file/));
  const d = mk('fifo-index', { 'model.safetensors.index.json': 'fifo', 'model.safetensors': st });
  assert.throws(() => openCheckpoint(d), isFormatError(/model\.safetensors\.index\.json: not a regular file/));
  // a FIFO given directly as the checkpoint (or a vocabulary, a state file)
  const e = path.join(mk('fifo-file', { 'model.safetensors': 'fifo' }), 'model.safetensors');
  assert.throws(() => openCheckpoint(e), (err: unknown) => err instanceof UserError && /not a regular file/.test(err.message));
  // a symlink to a device is not a regular file either
  const f = path.join(tmp, 'fifo-file', 'zero.safetensors');
  fs.symlinkSync('/dev/zero', f);
  assert.throws(() => openCheckpoint(f), (err: unknown) => err instanceof UserError && /not a regular file/.test(err.message));
  assert.ok(performance.now() - t0 < 5000);
});
