/**
 * Seed inputs for the fuzzer, built in memory (nothing downloaded, nothing checked in): a tiny but complete RWKV-7
 * model (2 layers, C = 8, head size 4, vocabulary 16) in every container the loaders read, written by small
 * writers here that also record where each field lies (so mutations can aim at zip headers, pickle opcodes,
 * safetensors header entries, GGUF fields), a World vocabulary excerpt and state files.
 */
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { syntheticCheckpoint, type SyntheticShape } from '../src/runtime/synthetic.js';
import { readAs } from '../src/formats/dtype.js';
import { canonicalToFla } from '../src/formats/layouts.js';
import { DTYPE_BYTES, type DType, type TensorRef } from '../src/formats/types.js';
import { memorySink } from '../src/formats/source.js';
import { writeRwkv7Gguf, type GgufTargetType } from '../src/formats/gguf-write.js';
import { concat, utf8, type Field } from './lib.js';

export const TINY: SyntheticShape = { nLayer: 2, nEmbd: 8, headSize: 4, vocabSize: 16, dimFfn: 16, lora: { decay: 2, a: 2, v: 2, gate: 2 } };
/** The model behind state and chat cases: vocabulary 260 covers every byte token of the World vocabulary. */
export const CHAT_SHAPE: SyntheticShape = { ...TINY, vocabSize: 260 };

export interface SeedTensor { name: string; dtype: DType; shape: number[]; bytes: Uint8Array }

/** The tiny model's canonical tensors, converted to `dtype` (float types). */
export function tinyTensors(dtype: 'F32' | 'BF16' | 'F16', shape: SyntheticShape = TINY, seed = 1): SeedTensor[] {
  const ck = syntheticCheckpoint(shape, seed);
  return [...ck.tensors.values()].map((t) => {
    const { dtype: d, bytes } = readAs(t, dtype);
    return { name: t.name, dtype: d, shape: [...t.shape], bytes };
  });
}

export function canonicalMap(ts: readonly SeedTensor[]): Map<string, TensorRef> {
  return new Map(ts.map((t) => [t.name, { name: t.name, dtype: t.dtype, shape: t.shape, read: () => t.bytes.slice() }]));
}

/** fla/HF names and shapes of the tiny model. */
export function flaTensors(ts: readonly SeedTensor[]): SeedTensor[] {
  return canonicalToFla(canonicalMap(ts)).tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape], bytes: t.read() }));
}

// ---- safetensors ----

export interface StModel {
  /** Header object (tensor entries and __metadata__), mutable before writing. */
  header: Record<string, unknown>;
  data: Uint8Array;
}

export function stModel(ts: readonly SeedTensor[], metadata?: Record<string, string>): StModel {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  for (const t of ts) {
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [off, off + t.bytes.length] };
    off += t.bytes.length;
  }
  return { header, data: concat(ts.map((t) => t.bytes)) };
}

/** The bytes of a safetensors file; `headerText` overrides the JSON, `lenField` the length field. */
export function stBytes(m: StModel, headerText?: Uint8Array, lenField?: bigint): Uint8Array {
  const json = headerText ?? utf8(JSON.stringify(m.header));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, lenField ?? BigInt(json.length), true);
  return concat([len, json, m.data]);
}

// ---- pickle (protocol 2, the way torch.save writes a state dict) ----

/** One pickle opcode and its argument bytes. */
export interface Op { op: number; arg: Uint8Array; note?: string }

const u32le = (n: number): Uint8Array => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n >>> 0, true); return b; };
const i32le = (n: number): Uint8Array => { const b = new Uint8Array(4); new DataView(b.buffer).setInt32(0, n | 0, true); return b; };

export const OP = {
  PROTO: 0x80, GLOBAL: 0x63, BINPUT: 0x71, LONG_BINPUT: 0x72, BINGET: 0x68, LONG_BINGET: 0x6a, EMPTY_TUPLE: 0x29,
  REDUCE: 0x52, MARK: 0x28, BINUNICODE: 0x58, SHORT_BINUNICODE: 0x8c, BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d,
  LONG1: 0x8a, LONG4: 0x8b, TUPLE: 0x74, TUPLE1: 0x85, TUPLE2: 0x86, TUPLE3: 0x87, BINPERSID: 0x51, NEWFALSE: 0x89,
  NEWTRUE: 0x88, SETITEMS: 0x75, SETITEM: 0x73, STOP: 0x2e, EMPTY_DICT: 0x7d, EMPTY_LIST: 0x5d, APPENDS: 0x65,
  APPEND: 0x61, DICT: 0x64, LIST: 0x6c, NONE: 0x4e, BUILD: 0x62, POP: 0x30, POP_MARK: 0x31, DUP: 0x32, MEMOIZE: 0x94,
  BINFLOAT: 0x47, SHORT_BINBYTES: 0x43, BINBYTES: 0x42, STACK_GLOBAL: 0x93, NEWOBJ: 0x81, FRAME: 0x95, BINUNICODE8: 0x8d,
} as const;

const NO_ARG = new Uint8Array(0);
/** Small arguments are carved from shared slabs: one ArrayBuffer per op would make 300k-op pickles slow to build. */
let slab = new Uint8Array(1 << 16);
let slabAt = 0;
function argBytes(a: readonly number[]): Uint8Array {
  if (a.length === 0) return NO_ARG;
  if (slabAt + a.length > slab.length) { slab = new Uint8Array(1 << 16); slabAt = 0; }
  const out = slab.subarray(slabAt, slabAt + a.length);
  out.set(a);
  slabAt += a.length;
  return out;
}
export const op = (o: number, arg: Uint8Array | number[] = [], note?: string): Op => ({ op: o, arg: arg instanceof Uint8Array ? arg : argBytes(arg), note });
export const str = (s: string): Op => { const b = utf8(s); return op(OP.BINUNICODE, concat([u32le(b.length), b]), 'str'); };
export const int = (n: number): Op => (n >= 0 && n < 256 ? op(OP.BININT1, [n], 'int') : n >= 0 && n < 65536 ? op(OP.BININT2, [n & 0xff, n >> 8], 'int') : op(OP.BININT, i32le(n), 'int'));
export const glob = (module: string, name: string): Op => op(OP.GLOBAL, utf8(`${module}\n${name}\n`), 'global');

export const STORAGE_TYPE: Record<DType, string> = {
  BF16: 'BFloat16Storage', F16: 'HalfStorage', F32: 'FloatStorage', F64: 'DoubleStorage', I64: 'LongStorage',
  I32: 'IntStorage', I16: 'ShortStorage', I8: 'CharStorage', U8: 'ByteStorage', BOOL: 'BoolStorage',
};

/** A .pth before serialisation: storages and the tensors viewing them. */
export interface PthModel {
  storages: Array<{ key: string; dtype: DType; numel: number; bytes: Uint8Array }>;
  tensors: Array<{ name: string; storage: number; shape: number[]; stride: number[]; offset: number }>;
  top: string;
}

export function pthModel(ts: readonly SeedTensor[], opts: { fuse?: boolean; transposeOne?: boolean } = {}): PthModel {
  const m: PthModel = { storages: [], tensors: [], top: 'archive' };
  const contiguous = (shape: number[]): number[] => { const s: number[] = []; let e = 1; for (let i = shape.length - 1; i >= 0; i--) { s[i] = e; e *= shape[i]!; } return s; };
  for (let i = 0; i < ts.length; i++) {
    const t = ts[i]!;
    const es = DTYPE_BYTES[t.dtype];
    const numel = t.bytes.length / es;
    const next = ts[i + 1];
    // ln weight + bias in one storage, the bias a view at an offset (as a fused parameter would be).
    if (opts.fuse && next && t.name.endsWith('.weight') && next.name === t.name.replace(/weight$/, 'bias') && t.shape.length === 1) {
      m.storages.push({ key: String(m.storages.length), dtype: t.dtype, numel: 2 * numel, bytes: concat([t.bytes, next.bytes]) });
      m.tensors.push({ name: t.name, storage: m.storages.length - 1, shape: [...t.shape], stride: [1], offset: 0 });
      m.tensors.push({ name: next.name, storage: m.storages.length - 1, shape: [...next.shape], stride: [1], offset: numel });
      i++;
      continue;
    }
    // One LoRA factor stored transposed (a strided view).
    if (opts.transposeOne && t.shape.length === 2 && /att\.w1$/.test(t.name)) {
      const [rows, cols] = t.shape as [number, number];
      const tb = new Uint8Array(t.bytes.length);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) tb.set(t.bytes.subarray((r * cols + c) * es, (r * cols + c + 1) * es), (c * rows + r) * es);
      m.storages.push({ key: String(m.storages.length), dtype: t.dtype, numel, bytes: tb });
      m.tensors.push({ name: t.name, storage: m.storages.length - 1, shape: [rows, cols], stride: [1, rows], offset: 0 });
      continue;
    }
    m.storages.push({ key: String(m.storages.length), dtype: t.dtype, numel, bytes: t.bytes });
    m.tensors.push({ name: t.name, storage: m.storages.length - 1, shape: [...t.shape], stride: contiguous(t.shape), offset: 0 });
  }
  return m;
}

/** The pickle ops of a state dict, as torch writes it (memoised globals reused with BINGET). */
export function pickleOps(m: PthModel): Op[] {
  const ops: Op[] = [op(OP.PROTO, [2])];
  let memo = 0;
  const u32 = (n: number): Uint8Array => u32le(n);
  const put = (): Op => { const i = memo++; return i < 256 ? op(OP.BINPUT, [i], 'memo') : op(OP.LONG_BINPUT, u32(i), 'memo'); };
  const globals = new Map<string, number>();
  const g = (module: string, name: string): void => {
    const k = `${module}.${name}`;
    const at = globals.get(k);
    if (at !== undefined) { ops.push(at < 256 ? op(OP.BINGET, [at], 'memo') : op(OP.LONG_BINGET, u32(at), 'memo')); return; }
    ops.push(glob(module, name));
    globals.set(k, memo);
    ops.push(put());
  };
  const tuple = (items: number[]): void => {
    if (items.length === 0) { ops.push(op(OP.EMPTY_TUPLE)); return; }
    if (items.length <= 3) { for (const x of items) ops.push(int(x)); ops.push(op([OP.TUPLE1, OP.TUPLE2, OP.TUPLE3][items.length - 1]!)); return; }
    ops.push(op(OP.MARK)); for (const x of items) ops.push(int(x)); ops.push(op(OP.TUPLE));
  };
  g('collections', 'OrderedDict');
  ops.push(op(OP.EMPTY_TUPLE), op(OP.REDUCE), put(), op(OP.MARK));
  for (const t of m.tensors) {
    const s = m.storages[t.storage]!;
    ops.push(str(t.name), put());
    g('torch._utils', '_rebuild_tensor_v2');
    ops.push(op(OP.MARK), op(OP.MARK), str('storage'), put());
    g('torch', STORAGE_TYPE[s.dtype]);
    ops.push(str(s.key), put(), str('cpu'), put(), int(s.numel), op(OP.TUPLE), put(), op(OP.BINPERSID, [], 'persid'));
    ops.push(int(t.offset));
    tuple(t.shape); ops.push(put());
    tuple(t.stride); ops.push(put());
    ops.push(op(OP.NEWFALSE));
    g('collections', 'OrderedDict');
    ops.push(op(OP.EMPTY_TUPLE), op(OP.REDUCE), put(), op(OP.TUPLE), put(), op(OP.REDUCE), put());
  }
  ops.push(op(OP.SETITEMS), op(OP.STOP));
  return ops;
}

export function opsBytes(ops: readonly Op[]): Uint8Array {
  let n = 0;
  for (const o of ops) n += 1 + o.arg.length;
  const out = new Uint8Array(n);
  let p = 0;
  for (const o of ops) { out[p++] = o.op; out.set(o.arg, p); p += o.arg.length; }
  return out;
}

// ---- zip (stored entries, 64-byte aligned data, as torch writes) ----

export interface ZipFile { bytes: Uint8Array; fields: Field[]; entries: Array<{ name: string; dataAt: number; size: number }> }

export function zipBytes(files: ReadonlyArray<{ name: string; bytes: Uint8Array }>, opts: { zip64?: boolean } = {}): ZipFile {
  const parts: Uint8Array[] = [];
  const fields: Field[] = [];
  const central: Uint8Array[] = [];
  const entries: ZipFile['entries'] = [];
  let pos = 0;
  const cdFieldsRel: Array<Field & { rel: number }> = [];
  let cdLen = 0;
  for (const f of files) {
    const name = utf8(f.name);
    const headerLen = 30 + name.length;
    const pad = (64 - ((pos + headerLen + 4) % 64)) % 64;
    const extra = new Uint8Array(pad + 4);
    new DataView(extra.buffer).setUint16(0, 0x4246, true); // "FB" padding record, as torch
    new DataView(extra.buffer).setUint16(2, pad, true);
    const lh = new Uint8Array(30);
    const lv = new DataView(lh.buffer);
    lv.setUint32(0, 0x04034b50, true); lv.setUint16(4, 20, true); lv.setUint16(8, 0, true);
    lv.setUint32(18, f.bytes.length, true); lv.setUint32(22, f.bytes.length, true);
    lv.setUint16(26, name.length, true); lv.setUint16(28, extra.length, true);
    fields.push({ at: pos, bytes: 4, what: `local sig ${f.name}` }, { at: pos + 8, bytes: 2, what: `local method ${f.name}` },
      { at: pos + 26, bytes: 2, what: `local name length ${f.name}` }, { at: pos + 28, bytes: 2, what: `local extra length ${f.name}` });
    const localAt = pos;
    parts.push(lh, name, extra, f.bytes);
    pos += 30 + name.length + extra.length;
    entries.push({ name: f.name, dataAt: pos, size: f.bytes.length });
    pos += f.bytes.length;
    const z64 = opts.zip64 === true;
    const cextra = z64 ? new Uint8Array(4 + 24) : new Uint8Array(0);
    if (z64) {
      const xv = new DataView(cextra.buffer);
      xv.setUint16(0, 1, true); xv.setUint16(2, 24, true);
      xv.setBigUint64(4, BigInt(f.bytes.length), true); xv.setBigUint64(12, BigInt(f.bytes.length), true); xv.setBigUint64(20, BigInt(localAt), true);
    }
    const ch = new Uint8Array(46);
    const cv = new DataView(ch.buffer);
    cv.setUint32(0, 0x02014b50, true); cv.setUint16(4, 20, true); cv.setUint16(6, 20, true);
    cv.setUint32(20, z64 ? 0xffffffff : f.bytes.length, true); cv.setUint32(24, z64 ? 0xffffffff : f.bytes.length, true);
    cv.setUint16(28, name.length, true); cv.setUint16(30, cextra.length, true); cv.setUint32(42, z64 ? 0xffffffff : localAt, true);
    for (const [off, n, what] of [[8, 2, 'flags'], [10, 2, 'method'], [20, 4, 'compressed size'], [24, 4, 'size'], [28, 2, 'name length'],
      [30, 2, 'extra length'], [32, 2, 'comment length'], [42, 4, 'local header offset']] as const) {
      cdFieldsRel.push({ rel: cdLen + off, at: 0, bytes: n, what: `central ${what} ${f.name}` });
    }
    if (z64) for (const [off, what] of [[4, 'zip64 size'], [12, 'zip64 compressed size'], [20, 'zip64 offset']] as const) cdFieldsRel.push({ rel: cdLen + 46 + name.length + off, at: 0, bytes: 8, what: `central ${what} ${f.name}` });
    central.push(ch, name, cextra);
    cdLen += 46 + name.length + cextra.length;
  }
  const cdAt = pos;
  for (const f of cdFieldsRel) fields.push({ at: cdAt + f.rel, bytes: f.bytes, what: f.what });
  parts.push(...central);
  pos += cdLen;
  if (opts.zip64) {
    const rec = new Uint8Array(56);
    const rv = new DataView(rec.buffer);
    rv.setUint32(0, 0x06064b50, true); rv.setBigUint64(4, 44n, true); rv.setBigUint64(24, BigInt(files.length), true);
    rv.setBigUint64(32, BigInt(files.length), true); rv.setBigUint64(40, BigInt(cdLen), true); rv.setBigUint64(48, BigInt(cdAt), true);
    fields.push({ at: pos + 32, bytes: 8, what: 'zip64 count' }, { at: pos + 40, bytes: 8, what: 'zip64 cd size' }, { at: pos + 48, bytes: 8, what: 'zip64 cd offset' });
    const loc = new Uint8Array(20);
    const lv = new DataView(loc.buffer);
    lv.setUint32(0, 0x07064b50, true); lv.setBigUint64(8, BigInt(pos), true); lv.setUint32(16, 1, true);
    fields.push({ at: pos + 56 + 8, bytes: 8, what: 'zip64 locator offset' });
    parts.push(rec, loc);
    pos += 76;
  }
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, opts.zip64 ? 0xffff : files.length, true); ev.setUint16(10, opts.zip64 ? 0xffff : files.length, true);
  ev.setUint32(12, opts.zip64 ? 0xffffffff : cdLen, true); ev.setUint32(16, opts.zip64 ? 0xffffffff : cdAt, true);
  for (const [off, n, what] of [[4, 2, 'eocd disk'], [6, 2, 'eocd cd disk'], [10, 2, 'eocd count'], [12, 4, 'eocd cd size'], [16, 4, 'eocd cd offset'], [20, 2, 'eocd comment length']] as const) {
    fields.push({ at: pos + off, bytes: n, what });
  }
  parts.push(eocd);
  return { bytes: concat(parts), fields, entries };
}

/** The zip member list of a .pth: data.pkl, the storages, version and byteorder records. */
export function pthFiles(m: PthModel, pickle: Uint8Array): Array<{ name: string; bytes: Uint8Array }> {
  return [
    { name: `${m.top}/data.pkl`, bytes: pickle },
    { name: `${m.top}/byteorder`, bytes: utf8('little') },
    ...m.storages.map((s) => ({ name: `${m.top}/data/${s.key}`, bytes: s.bytes })),
    { name: `${m.top}/version`, bytes: utf8('3\n') },
  ];
}

// ---- GGUF ----

/** A vocabulary for GGUF seeds: token id i is the single byte i. */
const byteVocab = { vocabSize: 16, tokenBytes: (id: number) => Uint8Array.of(id) };

export function ggufBytes(type: GgufTargetType, ts: readonly SeedTensor[]): Uint8Array {
  const sink = memorySink('seed.gguf');
  writeRwkv7Gguf(sink, canonicalMap(ts), TINY, { type, name: 'fuzz', vocab: byteVocab });
  return sink.bytes();
}

/**
 * Walks a GGUF header and lists its numeric fields (counts, lengths, types, dims, offsets), so that mutations hit
 * them. Stops quietly at anything it cannot follow.
 */
export function ggufFields(b: Uint8Array): Field[] {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const fields: Field[] = [{ at: 4, bytes: 4, what: 'version' }, { at: 8, bytes: 8, what: 'tensor_count' }, { at: 16, bytes: 8, what: 'kv_count' }];
  let p = 24;
  const SCALAR = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];
  const strAt = (what: string): void => { fields.push({ at: p, bytes: 8, what: `${what} length` }); p += 8 + Number(dv.getBigUint64(p, true)); };
  const value = (type: number, what: string, depth: number): void => {
    if (p > b.length - 8 || depth > 2) throw new Error('stop');
    if (type === 8) { strAt(what); return; }
    if (type === 9) {
      fields.push({ at: p, bytes: 4, what: `${what} item type` });
      const it = dv.getUint32(p, true); p += 4;
      fields.push({ at: p, bytes: 8, what: `${what} count` });
      const n = Number(dv.getBigUint64(p, true)); p += 8;
      for (let i = 0; i < n; i++) value(it, `${what}[${i}]`, depth + 1);
      return;
    }
    const s = SCALAR[type];
    if (!s) throw new Error('stop');
    fields.push({ at: p, bytes: s, what });
    p += s;
  };
  try {
    const nT = Number(dv.getBigUint64(8, true)), nKV = Number(dv.getBigUint64(16, true));
    for (let i = 0; i < nKV; i++) {
      strAt(`key #${i}`);
      fields.push({ at: p, bytes: 4, what: `type of kv #${i}` });
      const t = dv.getUint32(p, true); p += 4;
      value(t, `kv #${i}`, 0);
    }
    for (let i = 0; i < nT; i++) {
      strAt(`name of tensor #${i}`);
      fields.push({ at: p, bytes: 4, what: `n_dims of tensor #${i}` });
      const nd = dv.getUint32(p, true); p += 4;
      for (let d = 0; d < nd; d++) { fields.push({ at: p, bytes: 8, what: `ne[${d}] of tensor #${i}` }); p += 8; }
      fields.push({ at: p, bytes: 4, what: `type of tensor #${i}` }, { at: p + 4, bytes: 8, what: `offset of tensor #${i}` });
      p += 12;
    }
  } catch { /* a field list up to where the walk stopped */ }
  return fields.filter((f) => f.at + f.bytes <= b.length);
}

// ---- vocabulary ----

let vocabLines: string[] | undefined;
/** Lines of the bundled World vocabulary: the 256 byte tokens and a spread of longer ones (str and bytes literals). */
export function vocabSeedLines(): string[] {
  if (!vocabLines) {
    const all = fs.readFileSync(fileURLToPath(new URL('../assets/rwkv_vocab_v20230424.txt', import.meta.url)), 'utf8').split('\n').filter((l) => l);
    vocabLines = [...all.slice(0, 256), ...all.filter((_, i) => i >= 256 && i % 331 === 0)];
  }
  return vocabLines;
}
