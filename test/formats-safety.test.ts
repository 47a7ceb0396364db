/**
 * Hostile and broken inputs: every one must fail with a clear FormatError, run nothing, and allocate
 * nothing huge.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FormatError } from '../src/errors.js';
import { openCheckpoint, openPth, openSafetensors } from '../src/formats/index.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { writeSafetensors } from '../src/formats/safetensors.js';
import { writePth, tensor, pickleStateDict } from './helpers/pth-writer.js';

const SHARED = fileURLToPath(new URL('../../shared/', import.meta.url));
const TINY = path.join(SHARED, 'fixtures/models/tiny-l2-d128.pth');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rwkv7-safety-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const isFormatError = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof FormatError, `expected FormatError, got ${(e as Error)?.stack}`);
  assert.match(e.message, re);
  return true;
};

/** Builds pickle bytes from opcodes; strings are latin1. */
function pkl(...parts: Array<string | number[]>): Uint8Array {
  const out: number[] = [];
  for (const p of parts) out.push(...(typeof p === 'string' ? Buffer.from(p, 'latin1') : p));
  return Uint8Array.from(out);
}
const binunicode = (s: string) => { const b = Buffer.from(s); return [0x58, b.length & 0xff, (b.length >> 8) & 0xff, 0, 0, ...b]; };

test('a malicious pickle (GLOBAL os system + REDUCE) is refused and runs nothing', () => {
  const marker = path.join(tmp, 'pwned');
  const evil = pkl([0x80, 2], 'cos\nsystem\n', binunicode(`touch ${marker}`), [0x85, 0x52, 0x2e]);
  const p = path.join(tmp, 'evil.pth');
  writePth(p, [], { rawPickle: evil });
  assert.throws(() => openPth(p), isFormatError(/"os\.system".*not allowed.*nothing was executed/));
  assert.throws(() => openCheckpoint(p), isFormatError(/os\.system/));
  assert.equal(fs.existsSync(marker), false);

  // The same via STACK_GLOBAL (protocol 4) and builtins.eval.
  const evil2 = pkl([0x80, 4], [0x8c, 8], 'builtins', [0x8c, 4], 'eval', [0x93], [0x8c, 4], '1+1', [0x85, 0x52, 0x2e]);
  const p2 = path.join(tmp, 'evil2.pth');
  writePth(p2, [], { rawPickle: evil2 });
  assert.throws(() => openPth(p2), isFormatError(/"builtins\.eval"/));

  // A global hidden inside a tensor rebuild call is refused too.
  const evil3 = pkl([0x80, 2], 'ctorch._utils\n_rebuild_tensor_v2\n', [0x28], 'csubprocess\nPopen\n', [0x74, 0x52, 0x2e]);
  const p3 = path.join(tmp, 'evil3.pth');
  writePth(p3, [], { rawPickle: evil3 });
  assert.throws(() => openPth(p3), isFormatError(/"subprocess\.Popen"/));
});

test('unsupported opcodes and lying lengths in the pickle are refused without allocation', () => {
  const cases: Array<[Uint8Array, RegExp]> = [
    [pkl([0x80, 2], [0x58, 0xf0, 0xff, 0xff, 0xff], 'abc'), /truncated pickle/], // BINUNICODE claiming 4 GB
    [pkl([0x80, 2], [0x8d, 0, 0, 0, 0, 0, 0, 0, 0x40]), /exceeds the pickle size/], // BINUNICODE8 huge
    [pkl([0x80, 2], 'i', 'os\nsystem\n'), /unsupported pickle opcode 0x69/], // INST
    [pkl([0x80, 2], [0x68, 7]), /memo index 7/],
    [pkl([0x80, 2], [0x52]), /stack underflow/],
    [pkl([0x80, 2], [0x4e]), /truncated pickle/], // no STOP
  ];
  cases.forEach(([bytes, re], i) => {
    const p = path.join(tmp, `bad-pickle-${i}.pth`);
    writePth(p, [], { rawPickle: bytes });
    assert.throws(() => openPth(p), isFormatError(re));
  });
});

test('broken .pth files: truncated, wrong magic, compressed, missing storage, out-of-bounds view, big-endian', () => {
  const whole = fs.readFileSync(TINY);
  const cut = path.join(tmp, 'cut.pth');
  fs.writeFileSync(cut, whole.subarray(0, Math.floor(whole.length / 2)));
  assert.throws(() => openCheckpoint(cut), isFormatError(/not a zip archive|truncated/));
  const cutEnd = path.join(tmp, 'cut-end.pth'); // keeps the EOCD, loses the middle: offsets point past the end
  fs.writeFileSync(cutEnd, Buffer.concat([whole.subarray(0, 1000), whole.subarray(whole.length - 9000)]));
  assert.throws(() => openCheckpoint(cutEnd), isFormatError(/truncated|corrupt|not a zip/));

  const magic = path.join(tmp, 'magic.pth');
  fs.writeFileSync(magic, Buffer.from('GIF89a...not a checkpoint'));
  assert.throws(() => openCheckpoint(magic), isFormatError(/wrong magic/));
  const legacy = path.join(tmp, 'legacy.pth');
  fs.writeFileSync(legacy, Buffer.from([0x80, 0x02, 0x8a, 0x0a]));
  assert.throws(() => openCheckpoint(legacy), isFormatError(/legacy/));
  const empty = path.join(tmp, 'empty.pth');
  fs.writeFileSync(empty, '');
  assert.throws(() => openPth(empty), isFormatError(/not a zip archive/));

  const f32 = new Uint8Array(16);
  const comp = path.join(tmp, 'compressed.pth');
  writePth(comp, [tensor('a', 'F32', [4], f32)], { storageMethod: 8 });
  assert.throws(() => openPth(comp), isFormatError(/compressed/));

  // A pickle that references a storage that is not in the archive.
  const missing = path.join(tmp, 'missing.pth');
  const t = tensor('a', 'F32', [4], f32);
  writePth(missing, [t], { rawPickle: pickleStateDict([{ name: 'b', shape: [4], storage: { ...t.storage, key: 'nope' } }]) });
  assert.throws(() => openPth(missing), isFormatError(/data\/nope .*missing/));

  const oob = path.join(tmp, 'oob.pth');
  writePth(oob, [{ name: 'a', shape: [4], offset: 2, storage: t.storage }]);
  assert.throws(() => openPth(oob), isFormatError(/reaches element 5 of a 4-element storage/));
  const expand = path.join(tmp, 'expand.pth');
  writePth(expand, [{ name: 'a', shape: [1000000000], stride: [0], storage: t.storage }]);
  assert.throws(() => openPth(expand), isFormatError(/more elements than its storage/));

  const big = path.join(tmp, 'big-endian.pth');
  writePth(big, [t], { byteorder: 'big' });
  assert.throws(() => openPth(big), isFormatError(/big-endian/));
});

/** Writes a safetensors file from a header object and a data length. */
function rawSafetensors(name: string, header: unknown, dataLen: number, claimedLen?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(claimedLen ?? BigInt(json.length));
  const p = path.join(tmp, name);
  fs.writeFileSync(p, Buffer.concat([len, json, Buffer.alloc(dataLen)]));
  return p;
}

test('broken safetensors files give clear errors', () => {
  const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  assert.equal(openSafetensors(rawSafetensors('ok.safetensors', ok, 8)).tensors.get('a')!.read().length, 8);
  const cases: Array<[unknown, number, RegExp, bigint?]> = [
    [ok, 8, /header claims 18446744073709551615 bytes but the file holds only/, 0xffffffffffffffffn],
    [ok, 8, /header claims 1000 bytes/, 1000n],
    ['{not json', 0, /not valid UTF-8 JSON/],
    ['[1,2]', 0, /not a JSON object/],
    [{ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12, /tensors a \[0, 8\) and b \[4, 12\) overlap/],
    [{ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8, /needs 12 bytes but data_offsets span 8/],
    [{ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 4, /outside the data section/],
    [{ a: { dtype: 'Q4', shape: [2], data_offsets: [0, 8] } }, 8, /unsupported dtype "Q4"/],
    [{ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, 8, /invalid shape/],
    [{ a: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, 8, /outside the data section/],
    [{ __metadata__: { n: 1 } }, 0, /__metadata__.n is not a string/],
  ];
  cases.forEach(([header, dataLen, re, claimed], i) => {
    const p = rawSafetensors(`bad-${i}.safetensors`, header, dataLen, claimed);
    assert.throws(() => openSafetensors(p), isFormatError(re), `case ${i}`);
  });
  const tiny = path.join(tmp, 'tiny.safetensors');
  fs.writeFileSync(tiny, Buffer.from([1, 2, 3]));
  assert.throws(() => openCheckpoint(tiny), isFormatError(/not a safetensors file/));
});

test('non-RWKV-7 checkpoints are refused with what was found', () => {
  const v = (shape: number[]) => new Uint8Array(shape.reduce((a, b) => a * b, 1) * 2);
  const rwkv6 = path.join(tmp, 'rwkv6.pth');
  writePth(rwkv6, [tensor('emb.weight', 'BF16', [10, 8], v([10, 8])), tensor('blocks.0.att.time_maa_x', 'BF16', [1, 1, 8], v([1, 1, 8]))]);
  const ck6 = openCheckpoint(rwkv6);
  assert.throws(() => configFromCheckpoint(ck6), isFormatError(/rwkv6\.pth: not an RWKV-7 checkpoint: found blocks\.0\.att\.time_maa_x.*RWKV-6/));
  ck6.close();
  const rwkv4 = path.join(tmp, 'rwkv4.pth');
  writePth(rwkv4, [tensor('emb.weight', 'BF16', [10, 8], v([10, 8])), tensor('blocks.0.att.time_first', 'BF16', [8], v([8]))]);
  const ck4 = openCheckpoint(rwkv4);
  assert.throws(() => configFromCheckpoint(ck4), isFormatError(/RWKV-4/));
  ck4.close();
  const other = path.join(tmp, 'other.pth');
  writePth(other, [tensor('conv1.weight', 'F32', [2], new Uint8Array(8))]);
  assert.throws(() => openCheckpoint(other), isFormatError(/not an RWKV checkpoint.*found conv1\.weight/));
  const partial = path.join(tmp, 'partial.pth');
  writePth(partial, [tensor('emb.weight', 'BF16', [10, 8], v([10, 8])), tensor('blocks.0.att.x_r', 'BF16', [1, 1, 8], v([1, 1, 8]))]);
  const ckp = openCheckpoint(partial);
  assert.throws(() => configFromCheckpoint(ckp), isFormatError(/partial\.pth: .*tensor blocks\.0\.att\.r_k is missing/));
  ckp.close();
});

test('a wrong shape is reported with the tensor and the expected shape', () => {
  // Start from a real fixture, re-save it as safetensors with one tensor reshaped.
  const ck = openCheckpoint(TINY);
  const p = path.join(tmp, 'wrong-shape.safetensors');
  writeSafetensors(p, [...ck.tensors.values()].map((t) => t.name === 'blocks.1.att.a2' ? { ...t, shape: [t.shape[1]!, t.shape[0]!], read: t.read } : t));
  ck.close();
  const bad = openCheckpoint(p);
  assert.throws(() => configFromCheckpoint(bad), isFormatError(/tensor blocks\.1\.att\.a2 has shape \[128,32\], expected \[32, 128\]/));
  bad.close();
});
