/**
 * Case generators: for each kind, a seed input (fuzz/seeds.ts) with one to four structure-aware mutations, plus
 * now and then blind byte damage. `generate(kind, seed, index)` is a pure function of its arguments.
 */
import { DTYPE_BYTES, type DType } from '../src/formats/types.js';
import { stateToBytes, zeroHostState } from '../src/model/state.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { syntheticCheckpoint } from '../src/runtime/synthetic.js';
import {
  Rng, hash, interestingNumber, mutateBytes, mutateField, mutateJson, mutateJsonText, garbleString, randomJson, jsonText,
  concat, utf8, INTERESTING, type Case, type CaseFile, type Kind,
} from './lib.js';
import {
  TINY, CHAT_SHAPE, tinyTensors, flaTensors, stModel, stBytes, pthModel, pickleOps, opsBytes, zipBytes, pthFiles, ggufBytes,
  ggufFields, vocabSeedLines, op, OP, str, glob, STORAGE_TYPE, type StModel, type SeedTensor, type Op, type PthModel,
} from './seeds.js';
import type { GgufTargetType } from '../src/formats/gguf-write.js';

const FLOATS: ReadonlyArray<'F32' | 'BF16' | 'F16'> = ['BF16', 'F32', 'F16'];
const GiB = 2 ** 30;

const seedCache = new Map<string, unknown>();
function cached<T>(key: string, make: () => T): T {
  if (!seedCache.has(key)) seedCache.set(key, make());
  return seedCache.get(key) as T;
}
const tensorsOf = (d: 'F32' | 'BF16' | 'F16'): SeedTensor[] => cached(`t${d}`, () => tinyTensors(d));
const flaOf = (d: 'F32' | 'BF16' | 'F16'): SeedTensor[] => cached(`f${d}`, () => flaTensors(tensorsOf(d)));

/** How many structured mutations a case gets (mostly one or two: deeper cases are mostly refused early). */
const depth = (r: Rng): number => r.weighted([[6, 1], [3, 2], [1, 3], [0.5, 4]]);

// ---- non-finite values and numbers in tensor bytes ----

/** Writes NaN / ±Infinity / huge values into float tensor bytes of `dtype`. */
function poisonFloats(r: Rng, bytes: Uint8Array, dtype: DType): string {
  const es = DTYPE_BYTES[dtype];
  if (bytes.length < es) return 'poison-none';
  const n = Math.floor(bytes.length / es);
  const i = r.int(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const v = r.pick([NaN, Infinity, -Infinity, 3.4e38, 1e-45, -0]);
  if (dtype === 'F32') dv.setFloat32(i * 4, v, true);
  else if (dtype === 'F64') dv.setFloat64(i * 8, v, true);
  else if (dtype === 'BF16') dv.setUint16(i * 2, Number.isNaN(v) ? 0x7fc1 : v === Infinity ? 0x7f80 : v === -Infinity ? 0xff80 : 0x7f7f, true);
  else if (dtype === 'F16') dv.setUint16(i * 2, Number.isNaN(v) ? 0x7e01 : v === Infinity ? 0x7c00 : v === -Infinity ? 0xfc00 : 0x7bff, true);
  else bytes[i * es] = 0xff;
  return `poison ${v} at element ${i}`;
}

// ---- safetensors header mutations (shared by safetensors, folder shards, state and chat files) ----

function tensorNames(m: StModel): string[] {
  return Object.keys(m.header).filter((k) => k !== '__metadata__');
}

/** One mutation of a safetensors model aimed at a header entry, the metadata or the data; may set a sparse size. */
function mutateSt(r: Rng, m: StModel, ctx: { sparse?: number }): string {
  // An earlier mutation may have replaced the whole header by another JSON value: mutate that as JSON only.
  if (m.header === null || typeof m.header !== 'object' || Array.isArray(m.header)) {
    const x = mutateJson(r, m.header);
    m.header = x.value as Record<string, unknown>;
    return `json ${x.what}`;
  }
  const names = tensorNames(m);
  const name = r.pick(names.length ? names : ['x']);
  const e = m.header[name] as Record<string, unknown> | undefined;
  const entry = (e && typeof e === 'object' && !Array.isArray(e) ? e : undefined);
  const offs = Array.isArray(entry?.data_offsets) ? (entry!.data_offsets as number[]) : undefined;
  switch (r.int(15)) {
    case 0: m.header[name] = r.pick<unknown>([[], null, 1, 'x', true, {}, [1, 2, 3], { dtype: 'F32' }]); return `entry ${name} not an object`;
    case 1: { // garbled keys inside an entry, or of the entry itself
      if (entry && r.chance(0.5)) {
        const k = r.pick(Object.keys(entry).length ? Object.keys(entry) : ['dtype']);
        const v = entry[k]; delete entry[k]; entry[garbleString(r, k)] = v; return `entry ${name} key ${k} garbled`;
      }
      const v = m.header[name]; delete m.header[name]; m.header[garbleString(r, name)] = v; return `tensor name ${name} garbled`;
    }
    case 2: if (entry) entry.dtype = r.pick<unknown>(['F64', 'I64', 'I32', 'BOOL', 'U8', 'I8', 'F8_E4M3', 'bf16', '', 7, null, 'BF16', 'F32', '__proto__', 'toString']); return `dtype ${name}`;
    case 3: if (entry && Array.isArray(entry.shape)) {
      const s = [...(entry.shape as unknown[])];
      const i = r.int(s.length + 1);
      const how = r.int(4);
      if (how === 0) s[Math.min(i, Math.max(s.length - 1, 0))] = interestingNumber(r, Number(s[i] ?? 1));
      else if (how === 1) s.splice(i, 0, r.pick([1, 0, 2, -1, 'x', null, [2]]));
      else if (how === 2) s.splice(i, 1);
      else s.reverse();
      entry.shape = s;
    } return `shape ${name}`;
    case 4: if (entry && offs) {
      const o = [...offs];
      const how = r.int(6);
      if (how === 0) o[r.int(2)] = interestingNumber(r, o[0]);
      else if (how === 1) o.reverse();
      else if (how === 2) o.push(o[1]!);
      else if (how === 3) { const d = r.range(-8, 8); o[0]! += d; o[1]! += d; }
      else if (how === 4) entry.data_offsets = [String(o[0]), o[1]];
      else entry.data_offsets = { 0: o[0], 1: o[1] };
      if (how < 4) entry.data_offsets = o;
    } return `offsets ${name}`;
    case 5: { // overlap two entries, with a zero-length entry placed between them
      const other = r.pick(names);
      const oe = m.header[other] as Record<string, unknown> | undefined;
      if (entry && oe && offs && Array.isArray(oe.data_offsets)) {
        const [b] = oe.data_offsets as number[];
        const len = offs[1]! - offs[0]!;
        entry.data_offsets = [b! + r.int(4) * 2, b! + r.int(4) * 2 + len];
        m.header[`${name}.zero`] = { dtype: 'F32', shape: [0], data_offsets: [b! + 2, b! + 2] };
      }
      return `overlap ${name} with ${other} (+ zero-length)`;
    }
    case 6: { // a tensor the runtime cannot hold: 5 GiB, 2.5 GiB, just over the limit, in a sparse file
      const bytes = r.pick([5 * GiB, 2.5 * GiB, 2 ** 29 * 2 + 2, 4 * GiB, 2 ** 31]);
      const dt = r.pick(['BF16', 'F32', 'F16']);
      const es = dt === 'F32' ? 4 : 2;
      const numel = Math.floor(bytes / es);
      const c1 = entry && Array.isArray(entry.shape) ? (entry.shape as unknown[])[1] : undefined;
      const cols = typeof c1 === 'number' && Number.isSafeInteger(c1) && c1 > 0 && c1 < 4096 ? c1 : 8;
      const rows = Math.floor(numel / cols);
      const begin = m.data.length;
      m.header[r.chance(0.5) ? name : 'lm_head.weight'] = { dtype: dt, shape: [rows, cols], data_offsets: [begin, begin + rows * cols * es] };
      ctx.sparse = rows * cols * es;
      return `huge ${dt} [${rows}, ${cols}] (${(rows * cols * es / GiB).toFixed(2)} GiB, sparse)`;
    }
    case 7: { // __metadata__ of the wrong shape
      m.header.__metadata__ = r.pick<unknown>([[], null, 'x', { a: 1 }, { a: { b: 'c' } }, { format: 'pt' }, { ['__proto__']: 'x' }, { a: 'z'.repeat(100000) }]);
      return 'metadata';
    }
    case 8: { const r2 = mutateJson(r, m.header); m.header = r2.value as Record<string, unknown>; return `json ${r2.what}`; }
    case 9: { // a tensor's data poisoned
      if (entry && offs && typeof entry.dtype === 'string' && entry.dtype in DTYPE_BYTES) {
        const sub = m.data.subarray(offs[0], offs[1]);
        return `${name}: ${poisonFloats(r, sub, entry.dtype as DType)}`;
      }
      return 'poison-none';
    }
    case 10: { const cut = r.int(m.data.length + 1); m.data = m.data.slice(0, cut); return `data truncated to ${cut}`; }
    case 11: { // an extra entry: a duplicate of another tensor's bytes under a new name, or one past the end
      if (entry) m.header[r.pick([`${name}2`, 'blocks.99999.att.x_r', 'blocks.1e3.att.x_r', 'blocks.-1.x', '', ' '])] = structuredClone(entry);
      return `extra entry like ${name}`;
    }
    case 12: { // a shape whose product overflows, with offsets that agree modulo 2^32 or 2^53
      if (entry) { entry.shape = r.pick([[65536, 65536, 65536, 65536], [2 ** 26, 2 ** 27], [2 ** 53, 1], [3, 2 ** 52], [0, 2 ** 60]]); }
      return `overflow shape ${name}`;
    }
    case 13: {
      if (r.chance(0.5)) { delete m.header[name]; return `remove ${name}`; }
      // A vocabulary so large that the embedding and the head (consistent with each other and with the model) are
      // each 2.5 or 5 GiB of BF16 or more, in a sparse file: only their size can refuse them.
      const emb = names.find((k) => /(^|\.)emb(eddings)?\.weight$/.test(k));
      const head = names.find((k) => /(^|\.)(lm_)?head\.weight$/.test(k));
      const ee = emb ? (m.header[emb] as Record<string, unknown>) : undefined;
      if (!emb || !head || !ee || !Array.isArray(ee.shape)) return 'huge vocabulary (no embedding)';
      const c1 = Number((ee.shape as unknown[])[1]);
      const cols = Number.isSafeInteger(c1) && c1 > 0 && c1 < 4096 ? c1 : 8;
      const dt = r.pick(['BF16', 'F16', 'F32']);
      const es = dt === 'F32' ? 4 : 2;
      // just over the bound (2^29 elements: 2 GiB as f32), or the 2.5 GiB and 5 GiB BF16 tensors
      const rows = Math.ceil(r.pick([2 ** 29 + 8, 1.25 * 2 ** 30, 2.5 * 2 ** 30]) / cols);
      const len = rows * cols * es;
      const begin = m.data.length;
      m.header[emb] = { dtype: dt, shape: [rows, cols], data_offsets: [begin, begin + len] };
      m.header[head] = { dtype: dt, shape: [rows, cols], data_offsets: [begin + len, begin + 2 * len] };
      ctx.sparse = 2 * len;
      return `huge vocabulary ${rows} x ${cols} ${dt} (sparse)`;
    }
    default: { // many entries (a header with a million tensors would be big: a few thousand)
      const n = r.pick([100, 5000]);
      for (let i = 0; i < n; i++) m.header[`blocks.${i + 2}.att.x_r`] = entry ? structuredClone(entry) : { dtype: 'F32', shape: [8], data_offsets: [0, 32] };
      return `${n} aliasing entries`;
    }
  }
}

/** A safetensors file from a model with `n` mutations, then maybe text-level damage to the header or length field. */
function stFile(r: Rng, m: StModel, n: number, what: string[], sparseOut: { sparse?: number }): Uint8Array {
  for (let i = 0; i < n; i++) what.push(mutateSt(r, m, sparseOut));
  const roll = r.int(10);
  if (roll === 0) {
    const t = mutateJsonText(r, jsonText(m.header));
    what.push(t.what);
    return stBytes(m, t.bytes);
  }
  if (roll === 1) {
    const text = utf8(jsonText(m.header));
    const len = r.pick([0n, 1n, 7n, BigInt(text.length - 1), BigInt(text.length + 1), 100n * 1024n * 1024n + 1n, 1n << 32n, 1n << 63n, (1n << 64n) - 1n]);
    what.push(`length field ${len}`);
    return stBytes(m, text, len);
  }
  const bytes = stBytes(m, utf8(jsonText(m.header)));
  if (roll === 2) { const b = mutateBytes(r, bytes); what.push(b.what); return b.bytes; }
  return bytes;
}

function fileCase(kind: Kind, target: Case['target'], name: string, bytes: Uint8Array, what: string[], sparse?: number): Case {
  const f: CaseFile = { name, type: 'file', bytes };
  if (sparse !== undefined) f.sparse = bytes.length + sparse;
  return { kind, target, entry: name, files: [f], mutation: what };
}

// ---- .pth ----

/** A pickle integer of any size (BININT where it fits, LONG1 beyond), or a float for non-integers. */
function anyInt(n: number): Op {
  if (!Number.isFinite(n) || !Number.isInteger(n)) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, n, false);
    return op(OP.BINFLOAT, b);
  }
  if (n >= -(2 ** 31) && n < 2 ** 31) { const b = new Uint8Array(4); new DataView(b.buffer).setInt32(0, n, true); return op(OP.BININT, b, 'int'); }
  let v = BigInt(n);
  const bytes: number[] = [];
  for (let i = 0; i < 9; i++) { bytes.push(Number(v & 0xffn)); v >>= 8n; }
  return op(OP.LONG1, [9, ...bytes], 'int');
}

function mutatePthModel(r: Rng, m: PthModel): string {
  const t = r.pick(m.tensors);
  const s = m.storages[t.storage]!;
  switch (r.int(13)) {
    case 0: { const i = r.int(Math.max(1, t.shape.length)); t.shape[i] = interestingNumber(r, t.shape[i] ?? 1); return `${t.name} shape[${i}]=${t.shape[i]}`; }
    case 1: { const i = r.int(Math.max(1, t.stride.length)); t.stride[i] = r.chance(0.5) ? 0 : interestingNumber(r, t.stride[i] ?? 1); return `${t.name} stride[${i}]=${t.stride[i]}`; }
    case 2: t.offset = interestingNumber(r, s.numel); return `${t.name} offset=${t.offset}`;
    case 3: s.numel = interestingNumber(r, s.numel); return `storage ${s.key} numel=${s.numel}`;
    case 4: s.dtype = r.pick(Object.keys(STORAGE_TYPE) as DType[]); return `storage ${s.key} dtype=${s.dtype}`;
    case 5: { // one key used twice, with another type or size
      const o = r.pick(m.storages);
      s.key = o.key; if (r.chance(0.5)) s.dtype = r.pick(['F64', 'I8', 'BF16', 'F32'] as DType[]);
      return `storage key ${o.key} reused`;
    }
    case 6: t.name = r.pick([garbleString(r, t.name), t.name.replace(/blocks\.\d+/, `blocks.${r.pick([2, 99999, 2 ** 53, 1e21])}`), t.name.replace(/blocks\.(\d+)/, 'blocks.0$1'), '', m.tensors[0]!.name]); return `rename ${t.name}`;
    case 7: m.tensors.splice(m.tensors.indexOf(t), 1); return `drop ${t.name}`;
    case 8: { // layers aliasing layer 1's storages (the memory amplifier)
      const n = r.pick([3, 20, 300]);
      const layer1 = m.tensors.filter((x) => x.name.startsWith('blocks.1.'));
      for (let l = 2; l < 2 + n; l++) for (const x of layer1) m.tensors.push({ ...x, name: x.name.replace('blocks.1.', `blocks.${l}.`) });
      return `${n} layers aliasing blocks.1`;
    }
    case 9: return `${t.name}: ${poisonFloats(r, s.bytes, s.dtype)}`;
    case 10: { s.key = r.pick(['../x', '/etc/passwd', '', 'a\u0000b', 'é', '0/../../1', 'data.pkl']); return `storage key ${JSON.stringify(s.key)}`; }
    case 11: { s.bytes = s.bytes.slice(0, r.int(s.bytes.length)); return `storage ${s.key} truncated`; }
    default: { m.top = r.pick(['', 'a/b', 'archive\u0000', 'x'.repeat(300), 'ü']); return `top folder ${JSON.stringify(m.top)}`; }
  }
}

const EVIL_GLOBALS: ReadonlyArray<readonly [string, string]> = [
  ['os', 'system'], ['builtins', 'eval'], ['__builtin__', 'getattr'], ['torch', 'hasOwnProperty'], ['torch', '__proto__'],
  ['torch', 'constructor'], ['collections', 'toString'], ['torch._utils', '_rebuild_qtensor'], ['torch', 'Tensor'], ['numpy.core.multiarray', '_reconstruct'],
  ['torch._utils', '_rebuild_parameter'], ['torch', 'bfloat16'], ['torch', 'device'], ['_codecs', 'encode'], ['torch', 'Size'],
];

function mutateOps(r: Rng, ops: Op[]): string {
  const i = r.int(ops.length);
  const o = ops[i]!;
  switch (r.int(12)) {
    case 0: { // memo indices
      const memo = ops.map((x, k) => [x, k] as const).filter(([x]) => x.note === 'memo');
      const [x] = memo.length ? r.pick(memo) : [o];
      if (r.chance(0.5)) { x.arg = Uint8Array.of(r.int(256)); return `memo index ${x.arg[0]}`; }
      x.op = x.op === OP.BINPUT ? OP.LONG_BINPUT : OP.LONG_BINGET;
      x.arg = Uint8Array.from(new Uint8Array(new Uint32Array([r.pick([0xffffffff, 0x7fffffff, 100000, 1 << 24, r.u32()])]).buffer));
      return 'long memo index';
    }
    case 1: { // string length fields that lie
      const strs = ops.filter((x) => x.note === 'str');
      const x = strs.length ? r.pick(strs) : o;
      if (x.arg.length >= 4) { const dv = new DataView(x.arg.buffer, x.arg.byteOffset); dv.setUint32(0, r.pick([0, 1, 0xffffffff, 0x7fffffff, dv.getUint32(0, true) + 1, dv.getUint32(0, true) + 1000]), true); }
      return 'string length';
    }
    case 2: { const ints = ops.filter((x) => x.note === 'int'); const x = ints.length ? r.pick(ints) : o; const n = anyInt(interestingNumber(r)); x.op = n.op; x.arg = n.arg; return 'int value'; }
    case 3: o.op = r.chance(0.7) ? r.pick(Object.values(OP)) : r.int(256); return `opcode@${i}=0x${o.op.toString(16)}`;
    case 4: ops.splice(i, 1); return `delete op ${i}`;
    case 5: ops.splice(i, 0, { ...o }); return `dup op ${i}`;
    case 6: if (i + 1 < ops.length) [ops[i], ops[i + 1]] = [ops[i + 1]!, ops[i]!]; return `swap op ${i}`;
    case 7: { const [mod, name] = r.pick(EVIL_GLOBALS); const gs = ops.filter((x) => x.note === 'global'); const x = gs.length ? r.pick(gs) : o; x.arg = utf8(`${mod}\n${name}\n`); return `global ${mod}.${name}`; }
    case 8: { // a bomb: many items, deep nesting, a big integer, a huge string claim
      const kind = r.int(5);
      let seq: Op[];
      if (kind === 0) { const n = r.pick([1000, 130_000]); seq = [op(OP.EMPTY_LIST), op(OP.MARK), ...Array.from({ length: n }, () => op(OP.NONE)), op(OP.APPENDS)]; }
      else if (kind === 1) { const n = r.pick([1000, 100_000]); seq = [...Array.from({ length: n }, () => op(OP.EMPTY_LIST))]; }
      else if (kind === 2) { const n = r.pick([257, 70_000, 300_000]); const b = new Uint8Array(4 + n).fill(0xab); new DataView(b.buffer).setUint32(0, n, true); seq = [op(OP.LONG4, b)]; }
      else if (kind === 3) { seq = [op(OP.BINUNICODE, Uint8Array.of(0xff, 0xff, 0xff, 0x7f))]; }
      else { const n = r.pick([10_000, 200_000]); seq = Array.from({ length: n }, () => op(OP.MARK)); }
      const tail = ops.splice(i); // (no spread into a call: seq may have 300,000 ops)
      for (const x of seq) ops.push(x);
      for (const x of tail) ops.push(x);
      return `bomb ${kind} at op ${i}`;
    }
    case 9: ops.length = r.int(ops.length); return `truncate ops at ${ops.length}`;
    case 10: { // a persistent id of the wrong shape
      const p = ops.findIndex((x) => x.note === 'persid');
      if (p > 0) ops.splice(p, 0, op(OP.POP), r.pick([str('storage'), op(OP.NONE), op(OP.EMPTY_TUPLE), op(OP.EMPTY_DICT)]));
      return 'persistent id replaced';
    }
    default: { const x = ops.filter((y) => y.note === 'str'); if (x.length) { const s = r.pick(x); const t = utf8(garbleString(r, new TextDecoder().decode(s.arg.subarray(4)))); const b = new Uint8Array(4 + t.length); new DataView(b.buffer).setUint32(0, t.length, true); b.set(t, 4); s.arg = b; } return 'string garbled'; }
  }
}

function genPth(r: Rng): Case {
  const dtype = r.pick(FLOATS);
  const m = pthModel(tensorsOf(dtype), { fuse: r.chance(0.3), transposeOne: r.chance(0.3) });
  // deep copies: the seed tensors are cached
  m.storages = m.storages.map((s) => ({ ...s, bytes: s.bytes.slice() }));
  m.tensors = m.tensors.map((t) => ({ ...t, shape: [...t.shape], stride: [...t.stride] }));
  const what: string[] = [`pth ${dtype}`];
  const layers = r.weighted([[4, 'model'], [4, 'pickle'], [3, 'zip'], [1, 'bytes'], [1, 'none']] as const);
  const n = depth(r);
  if (layers === 'model') for (let i = 0; i < n; i++) what.push(mutatePthModel(r, m));
  const ops = pickleOps(m);
  // a fresh copy of every op, so mutations never leak into another case
  const own = ops.map((o) => ({ ...o }));
  if (layers === 'pickle') for (let i = 0; i < n; i++) what.push(mutateOps(r, own));
  const zip64 = r.chance(0.2);
  let files = pthFiles(m, opsBytes(own));
  if (layers === 'zip' && r.chance(0.25)) {
    const how = r.int(4);
    if (how === 0) files = files.filter((f) => !f.name.endsWith('data.pkl')); // no pickle
    else if (how === 1) files.push({ name: 'other/data.pkl', bytes: files[0]!.bytes }); // two pickles
    else if (how === 2) files.splice(2, 1); // a storage missing
    else files = files.map((f) => (f.name.endsWith('byteorder') ? { ...f, bytes: utf8(r.pick(['big', 'LITTLE', '', 'x'.repeat(20)])) } : f));
    what.push(`zip members ${how}`);
  }
  const z = zipBytes(files, { zip64 });
  let bytes = z.bytes;
  if (layers === 'zip') for (let i = 0; i < n; i++) what.push(mutateField(r, bytes, r.pick(z.fields)));
  if (layers === 'bytes' || r.chance(0.05)) { const b = mutateBytes(r, bytes); bytes = b.bytes; what.push(b.what); }
  return fileCase('pth', 'checkpoint', r.pick(['model.pth', 'model.pt', 'weights.bin']), bytes, what);
}

// ---- safetensors (one file, BlinkDL or fla names) ----

function genSafetensors(r: Rng): Case {
  const dtype = r.pick(FLOATS);
  const fla = r.chance(0.4);
  const m = stModel((fla ? flaOf(dtype) : tensorsOf(dtype)), r.chance(0.5) ? { format: 'pt' } : undefined);
  m.data = m.data.slice();
  const what = [`safetensors ${dtype}${fla ? ' fla' : ''}`];
  const sp: { sparse?: number } = {};
  const bytes = stFile(r, m, depth(r), what, sp);
  return fileCase('safetensors', 'checkpoint', 'model.safetensors', bytes, what, sp.sparse);
}

// ---- fla / HF folders ----

function hfConfig(): Record<string, unknown> {
  return {
    architectures: ['RWKV7ForCausalLM'], model_type: 'rwkv7', hidden_size: TINY.nEmbd, num_hidden_layers: TINY.nLayer,
    vocab_size: TINY.vocabSize, head_dim: TINY.headSize, intermediate_size: TINY.dimFfn, decay_low_rank_dim: 2,
    a_low_rank_dim: 2, v_low_rank_dim: 2, gate_low_rank_dim: 2, tie_word_embeddings: false, torch_dtype: 'bfloat16',
  };
}

const SHARD_NAMES: readonly string[] = ['', '.', '..', '../model.safetensors', '/etc/passwd', 'a\u0000b', 'x'.repeat(300), 'config.json',
  'model.safetensors.index.json', 'sub/model.safetensors', 'C:\\x', 'missing.safetensors', ' ', 'model-00001-of-00002.safetensors '];

function genFolder(r: Rng): Case {
  const dtype = r.pick(FLOATS);
  const ts = flaOf(dtype);
  const what = [`folder ${dtype}`];
  const sharded = r.chance(0.5);
  const files: CaseFile[] = [];
  const cfg = hfConfig();
  let cfgText = JSON.stringify(cfg);
  const target = r.weighted([[3, 'config'], [4, 'shard'], [sharded ? 4 : 0, 'index'], [2, 'fs'], [1, 'tied']] as const);
  const n = depth(r);
  if (target === 'config') {
    let v: unknown = cfg;
    for (let i = 0; i < n; i++) { const x = mutateJson(r, v); v = x.value; what.push(`config ${x.what}`); }
    cfgText = jsonText(v);
    if (r.chance(0.2)) { const t = mutateJsonText(r, cfgText); files.push({ name: 'config.json', type: 'file', bytes: t.bytes }); what.push(t.what); }
  }
  if (target === 'tied') { cfg.tie_word_embeddings = r.pick<unknown>([true, 'true', 1, null]); cfgText = JSON.stringify(cfg); what.push('tie_word_embeddings'); }
  if (!files.some((f) => f.name === 'config.json') && !(target === 'fs' && r.chance(0.1))) files.push({ name: 'config.json', type: 'file', bytes: utf8(cfgText) });
  let sparse: number | undefined;
  const shardModels: Array<{ name: string; m: StModel }> = [];
  let pool = target === 'tied' ? ts.filter((t) => t.name !== 'lm_head.weight') : ts;
  if (sharded) {
    const cut = r.range(1, pool.length - 1);
    shardModels.push({ name: 'model-00001-of-00002.safetensors', m: stModel(pool.slice(0, cut)) }, { name: 'model-00002-of-00002.safetensors', m: stModel(pool.slice(cut)) });
  } else {
    shardModels.push({ name: 'model.safetensors', m: stModel(pool) });
  }
  pool = [];
  const index: Record<string, unknown> = { metadata: { total_size: 0 }, weight_map: {} as Record<string, unknown> };
  for (const s of shardModels) for (const k of tensorNames(s.m)) (index.weight_map as Record<string, unknown>)[k] = s.name;
  let indexText = JSON.stringify(index);
  if (target === 'index') {
    let v: unknown = index;
    for (let i = 0; i < n; i++) {
      if (r.chance(0.5)) {
        const map = (v as { weight_map?: unknown }).weight_map;
        if (map && typeof map === 'object' && !Array.isArray(map)) {
          const keys = Object.keys(map);
          const k = r.pick(keys.length ? keys : ['x']);
          (map as Record<string, unknown>)[r.chance(0.8) ? k : garbleString(r, k)] = r.chance(0.85) ? r.pick(SHARD_NAMES) : randomJson(r);
          what.push(`index shard of ${k}`);
          continue;
        }
      }
      const x = mutateJson(r, v); v = x.value; what.push(`index ${x.what}`);
    }
    indexText = jsonText(v);
  }
  for (const s of shardModels) {
    s.m.data = s.m.data.slice();
    const sp: { sparse?: number } = {};
    const bytes = target === 'shard' && (s === shardModels[0] || r.chance(0.3)) ? stFile(r, s.m, n, what, sp) : stBytes(s.m);
    files.push({ name: s.name, type: 'file', bytes, ...(sp.sparse !== undefined ? { sparse: bytes.length + sp.sparse } : {}) });
    sparse ??= sp.sparse;
  }
  if (sharded) files.push({ name: 'model.safetensors.index.json', type: 'file', bytes: utf8(indexText) });
  if (target === 'fs') {
    // A special file where a regular one belongs: a FIFO (reading it would block), a folder, a symlink to a device.
    const victim = r.pick(files.filter((f) => f.type === 'file'));
    const kind = r.int(5);
    const i = files.indexOf(victim);
    if (kind === 0) files[i] = { name: victim.name, type: 'fifo' };
    else if (kind === 1) files[i] = { name: victim.name, type: 'dir' };
    else if (kind === 2) files[i] = { name: victim.name, type: 'symlink', target: r.pick(['/dev/zero', '/dev/null', '/proc/self/status', '/nonexistent', '.', '/dev/stdin']) };
    else if (kind === 3) files[i] = { name: victim.name, type: 'symlink', target: victim.name }; // a loop
    else files.splice(i, 1);
    what.push(`${victim.name} is a ${['fifo', 'folder', 'symlink', 'symlink loop', 'missing file'][kind]}`);
  }
  if (files.length === 0) files.push({ name: 'README.md', type: 'file', bytes: utf8('empty') });
  return { kind: 'folder', target: 'checkpoint', entry: '.', files, mutation: what };
}

// ---- GGUF ----

function genGguf(r: Rng): Case {
  const type = r.pick<GgufTargetType>(['f32', 'f16', 'bf16', 'q8_0', 'q4_0']);
  const seed = cached(`gguf${type}`, () => { const b = ggufBytes(type, tensorsOf('F32')); return { b, fields: ggufFields(b) }; });
  let bytes: Uint8Array = seed.b.slice();
  const what = [`gguf ${type}`];
  const n = depth(r);
  let sparse: number | undefined;
  const how = r.weighted([[6, 'field'], [2, 'bytes'], [1, 'poison'], [1, 'sparse']] as const);
  for (let i = 0; i < n; i++) {
    if (how === 'field') what.push(mutateField(r, bytes, r.pick(seed.fields)));
    else if (how === 'bytes') { const b = mutateBytes(r, bytes); bytes = b.bytes; what.push(b.what); }
    else if (how === 'poison') {
      const at = r.range(Math.floor(bytes.length / 2), bytes.length - 4);
      new DataView(bytes.buffer).setUint32(at - (at % 4), r.pick([0x7fc00000, 0x7f800000, 0xff800000, 0x7e007e00, 0x7c007c00]), true);
      what.push(`poison @${at}`);
    } else {
      // A dimension claiming a huge tensor, with the file extended (sparsely) so that it "fits".
      const dims = seed.fields.filter((f) => f.what.startsWith('ne['));
      const f = r.pick(dims);
      const v = BigInt(r.pick([2 ** 31, 2 ** 32, 5 * 2 ** 30, 2 ** 29 + 1, 2 ** 28 * 3]));
      new DataView(bytes.buffer).setBigUint64(f.at, v, true);
      sparse = r.pick([3, 6, 12]) * GiB;
      what.push(`${f.what}=${v} sparse`);
      break;
    }
  }
  return fileCase('gguf', 'checkpoint', 'model.gguf', bytes, what, sparse);
}

// ---- vocabularies ----

const REPR_DAMAGE: ReadonlyArray<(s: string) => string> = [
  (s) => s.replace(/'$/, ''), (s) => s.replace(/^'/, '"'), (s) => `b${s}`, (s) => `r${s}`, (s) => `u${s}`, (s) => `f${s}`,
  (s) => s.replace(/'$/, "\\'"), (s) => s.replace(/^'/, "'\\x"), (s) => s.replace(/^'/, "'\\u12"), (s) => s.replace(/^'/, "'\\U0011ffff"),
  (s) => s.replace(/^'/, "'\\N{LATIN SMALL LETTER A}"), (s) => s.replace(/^'/, "'\\777"), (s) => s.replace(/^'/, "'\\ud800"),
  (s) => s.replace(/^'/, "'\\"), (s) => `${s} `, (s) => s + s, () => "''", () => "b''", () => `'${'a'.repeat(70000)}'`, (s) => s.replace(/^'/, "'\\\n"),
];

function genVocab(r: Rng): Case {
  const lines = [...vocabSeedLines()];
  const what = ['vocab'];
  const n = depth(r);
  let bytes: Uint8Array | undefined;
  for (let k = 0; k < n; k++) {
    const i = r.int(lines.length);
    const line = lines[i]!;
    const m = /^(\d+) (.*) (\d+)$/.exec(line);
    const [id, repr, len] = m ? [m[1]!, m[2]!, m[3]!] : ['1', "'a'", '1'];
    switch (r.int(10)) {
      case 0: lines[i] = `${r.pick([String(interestingNumber(r, Number(id))), lines[r.int(lines.length)]!.split(' ')[0], '', '-1', '0', '1e3', '0x10', ' 5', '16777217'])} ${repr} ${len}`; what.push(`id line ${i + 1}`); break;
      case 1: lines[i] = `${id} ${repr} ${r.pick([String(interestingNumber(r, Number(len))), '', '-1', 'x', '1 1'])}`; what.push(`len line ${i + 1}`); break;
      case 2: lines[i] = `${id} ${r.pick(REPR_DAMAGE)(repr)} ${len}`; what.push(`repr line ${i + 1}`); break;
      case 3: lines.splice(i, 1); what.push(`delete line ${i + 1}`); break;
      case 4: lines.splice(i, 0, line); what.push(`dup line ${i + 1}`); break;
      case 5: lines[i] = r.pick(['', ' ', '\r', line + '\r', `${id}  ${repr} ${len}`, `${id}\t${repr}\t${len}`, line.replace(/ /g, '')]); what.push(`whitespace line ${i + 1}`); break;
      case 6: lines.push(`${r.pick([65529, 65535, 65536, 2 ** 24, 2 ** 24 + 1, 4_000_000, 2 ** 31])} 'zz' 2`); what.push('high id'); break;
      case 7: lines[i] = garbleString(r, line); what.push(`garble line ${i + 1}`); break;
      case 8: { const b = mutateBytes(r, utf8(lines.join('\n') + '\n')); bytes = b.bytes; what.push(b.what); break; }
      default: lines.push(...Array.from({ length: r.pick([2, 100, 20000]) }, (_, j) => `${70000 + j} '${'q'.repeat(1 + (j % 50))}' ${1 + (j % 50)}`)); what.push('many lines'); break;
    }
  }
  if (!bytes) bytes = utf8(lines.join(r.chance(0.1) ? '\r\n' : '\n') + (r.chance(0.9) ? '\n' : ''));
  const c = fileCase('vocab', 'vocab', 'vocab.txt', bytes, what);
  if (r.chance(0.25)) {
    c.vocabSize = r.pick([257, 65536, 1, 0, -1, 1.5, NaN, Infinity, 2 ** 32, 2 ** 24, 2 ** 24 + 1, 16, 100, 1e300, -0]);
    what.push(`vocabSize ${c.vocabSize}`);
  }
  return c;
}

// ---- state files and chat /load files ----

const chatConfig = (): ReturnType<typeof configFromCheckpoint> => cached('chatcfg', () => configFromCheckpoint(syntheticCheckpoint(CHAT_SHAPE)));

function stateModel(r: Rng, metadata: Record<string, string>): StModel {
  const cfg = chatConfig();
  const host = zeroHostState(cfg);
  for (const a of [host.attX, host.ffnX, host.wkv]) for (let i = 0; i < a.length; i++) a[i] = (r.float() - 0.5) * 2;
  const bytes = stateToBytes(host, cfg, metadata);
  // back to a model, to mutate the header as an object
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
  return { header, data: bytes.slice(8 + n) };
}

function genState(r: Rng): Case {
  const m = stateModel(r, {});
  const what = ['state'];
  const sp: { sparse?: number } = {};
  const bytes = stFile(r, m, depth(r), what, sp);
  return fileCase('state', 'state', 'state.safetensors', bytes, what, sp.sparse);
}

function savedChat(r: Rng): Record<string, unknown> {
  const turns = Array.from({ length: r.int(4) }, (_, i) => ({ user: `hello ${i}`, assistant: `hi ${i}`, think: r.chance(0.2) }));
  const h: Record<string, unknown> = { turns };
  if (r.chance(0.6)) h.system = 'You are a helpful assistant.';
  return { history: h, think: r.chance(0.3), started: r.chance(0.8), contextTokens: r.int(500), model: 'fuzz.pth' };
}

function genChat(r: Rng): Case {
  let chat: unknown = savedChat(r);
  const what = ['chat'];
  const n = depth(r);
  const how = r.weighted([[8, 'json'], [1, 'text'], [1, 'state']] as const);
  let text: string;
  if (how === 'json') {
    for (let i = 0; i < n; i++) {
      // aim at the known fields most of the time
      if (r.chance(0.6)) {
        const c = (chat && typeof chat === 'object' ? chat : {}) as Record<string, unknown>;
        const field = r.pick(['history', 'think', 'started', 'contextTokens', 'model', 'history.system', 'history.turns', 'history.turns.0', 'history.turns.0.user', 'history.turns.0.think']);
        const path = field.split('.');
        let o: Record<string, unknown> = c;
        for (const p of path.slice(0, -1)) { const nx = o[p]; if (nx && typeof nx === 'object') o = nx as Record<string, unknown>; }
        o[path[path.length - 1]!] = r.pick<unknown>([null, 1, -1, 1.5, 'x', [], {}, { turns: [null] }, [null], true, 2 ** 53, 1e999, 'z'.repeat(100000), undefined]);
        chat = c;
        what.push(`field ${field}`);
      } else { const x = mutateJson(r, chat); chat = x.value; what.push(`json ${x.what}`); }
    }
    // A restored chat not yet started feeds its system prompt on the next turn: a 100,000-character one is a long
    // (legitimate) prefill, not a loader bug, so keep it short enough for the per-case timeout.
    const h = (chat as { history?: { system?: unknown } } | null)?.history;
    if (h && typeof h === 'object' && typeof h.system === 'string' && h.system.length > 2000) h.system = h.system.slice(0, 2000);
    text = jsonText(chat);
  } else {
    text = new TextDecoder().decode(mutateJsonText(r, jsonText(chat)).bytes);
    what.push('text damage');
  }
  const m = stateModel(r, { 'rwkv7.chat': text });
  if (how === 'state') for (let i = 0; i < n; i++) what.push(mutateSt(r, m, {}));
  if (r.chance(0.05)) { m.header.__metadata__ = { 'rwkv7.chat': r.pick<unknown>([1, null, [], {}, true]) }; what.push('chat metadata not a string'); }
  return fileCase('chat', 'chat', 'chat.state', stBytes(m, utf8(jsonText(m.header))), what);
}

const GENERATORS: Record<Kind, (r: Rng) => Case> = {
  pth: genPth, safetensors: genSafetensors, folder: genFolder, gguf: genGguf, vocab: genVocab, state: genState, chat: genChat,
};

/** Case `index` of `kind` for run seed `seed`. */
export function generate(kind: Kind, seed: number, index: number): Case {
  const r = new Rng(hash(seed, kind, index));
  return GENERATORS[kind](r);
}

export { INTERESTING, concat };
