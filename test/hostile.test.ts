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
  const C = 64;
  const shared: PthStorage = { key: 'w', dtype: 'F32', numel: C * C, data: () => new Uint8Array(C * C * 4) };
  const layers = Array.from({ length: 300 }, (_, i) => ({ name: `blocks.${i}.att.key.weight`, storage: shared, shape: [C, C] }));
  const p = path.join(tmp, 'alias.pth');
  writePth(p, layers);
  assert.throws(() => openPth(p), isFormatError(/alias their storages 300\.0 times over \(4915200 bytes of tensors in 16384 bytes of distinct storage; e\.g\. blocks\.1\.att\.key\.weight shares storage archive\/data\/w with blocks\.0\.att\.key\.weight\); at most 2x/));

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
