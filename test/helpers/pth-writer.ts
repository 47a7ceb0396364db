/**
 * A small writer of PyTorch-style zip checkpoints, for tests and benchmarks (no torch needed).
 *
 * It reproduces what `torch.save(state_dict)` writes: a zip of stored (uncompressed) entries
 * `<top>/data.pkl` (protocol-2 pickle of an OrderedDict of `_rebuild_tensor_v2(...)` calls with
 * persistent-id storages), `<top>/data/<key>`, `<top>/byteorder`, `<top>/version`, data aligned to 64 bytes.
 * It streams: each storage's bytes are produced by a callback and written straight to the file.
 * Options force ZIP64 records (to test archives over 4 GiB without writing 4 GiB) and allow a raw pickle.
 */
import * as fs from 'node:fs';
import type { DType } from '../../src/formats/types.js';

const STORAGE_NAME: Record<DType, string> = {
  BF16: 'BFloat16Storage', F16: 'HalfStorage', F32: 'FloatStorage', F64: 'DoubleStorage', I64: 'LongStorage',
  I32: 'IntStorage', I16: 'ShortStorage', I8: 'CharStorage', U8: 'ByteStorage', BOOL: 'BoolStorage',
};
const ES: Record<DType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export interface PthStorage {
  key: string;
  dtype: DType;
  numel: number;
  /** Produces the storage's bytes (numel x element size) when it is written. */
  data: () => Uint8Array;
}

export interface PthTensor {
  name: string;
  storage: PthStorage;
  shape: number[];
  /** Default: contiguous row-major. */
  stride?: number[];
  /** In elements; default 0. */
  offset?: number;
}

export interface PthWriteOptions {
  /** Archive top folder (torch uses the file's base name, or "archive"). */
  top?: string;
  /** Write ZIP64 extra fields and end records even though nothing needs them. */
  zip64?: boolean;
  /** Use these bytes as data.pkl instead of pickling the tensors. */
  rawPickle?: Uint8Array;
  /** Write a `byteorder` record (newer torch does). */
  byteorder?: 'little' | 'big' | null;
  /** Compression method to claim for storage entries (to test refusal); default 0 = stored. */
  storageMethod?: number;
}

/** Convenience: a tensor with its own storage holding `data`. */
export function tensor(name: string, dtype: DType, shape: number[], data: Uint8Array | (() => Uint8Array), key?: string): PthTensor {
  const numel = shape.reduce((a, b) => a * b, 1);
  return { name, shape, storage: { key: key ?? name, dtype, numel, data: typeof data === 'function' ? data : () => data } };
}

// ---- pickle (protocol 2, as torch writes it) ----

class PickleWriter {
  private parts: number[] = [];
  private memo = new Map<string, number>();
  op(...bytes: number[]): this { this.parts.push(...bytes); return this; }
  u32(n: number): this { return this.op(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff); }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    return this.op(0x58).u32(b.length).op(...b); // BINUNICODE
  }
  int(n: number): this {
    if (n >= 0 && n < 256) return this.op(0x4b, n); // BININT1
    if (n >= 0 && n < 65536) return this.op(0x4d, n & 0xff, n >> 8); // BININT2
    if (n >= -(2 ** 31) && n < 2 ** 31) return this.op(0x4a).u32(n); // BININT
    const b: number[] = []; // LONG1, two's complement little-endian
    let v = BigInt(n);
    for (let i = 0; i < 8; i++) { b.push(Number(v & 0xffn)); v >>= 8n; }
    return this.op(0x8a, 8, ...b);
  }
  global(module: string, name: string): this {
    const key = `${module}\n${name}\n`;
    const m = this.memo.get(key);
    if (m !== undefined) return this.op(0x68, m); // BINGET
    this.op(0x63, ...Buffer.from(key, 'latin1'));
    if (this.memo.size < 256) { this.memo.set(key, this.memo.size); this.op(0x71, this.memo.size - 1); } // BINPUT
    return this;
  }
  tuple(items: number[]): this { this.op(0x28); for (const i of items) this.int(i); return this.op(0x74); }
  bytes(): Uint8Array { return Uint8Array.from(this.parts); }
}

export function pickleStateDict(tensors: PthTensor[]): Uint8Array {
  const w = new PickleWriter();
  w.op(0x80, 2).global('collections', 'OrderedDict').op(0x29, 0x52); // OrderedDict()
  w.op(0x28); // MARK for SETITEMS
  for (const t of tensors) {
    const stride = t.stride ?? contiguousStride(t.shape);
    w.str(t.name).global('torch._utils', '_rebuild_tensor_v2').op(0x28);
    // persistent id: ('storage', torch.XStorage, key, 'cpu', numel)
    w.op(0x28).str('storage').global('torch', STORAGE_NAME[t.storage.dtype]).str(t.storage.key).str('cpu').int(t.storage.numel).op(0x74, 0x51);
    w.int(t.offset ?? 0).tuple(t.shape).tuple(stride).op(0x89); // offset, size, stride, requires_grad=False
    w.global('collections', 'OrderedDict').op(0x29, 0x52); // backward_hooks = OrderedDict()
    w.op(0x74, 0x52); // TUPLE, REDUCE
  }
  w.op(0x75, 0x2e); // SETITEMS, STOP
  return w.bytes();
}

export function contiguousStride(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]!; }
  return s;
}

// ---- zip ----

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(b: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

interface Written { name: Buffer; offset: number; size: number; crc: number; method: number }

/** Writes a torch-style .pth zip. Storages are written once each, in first-use order. */
export function writePth(path: string, tensors: PthTensor[], opts: PthWriteOptions = {}): void {
  const top = opts.top ?? 'archive';
  const fd = fs.openSync(path, 'w');
  let pos = 0;
  const out = (b: Uint8Array): void => { let d = 0; while (d < b.length) d += fs.writeSync(fd, b, d, b.length - d, pos + d); pos += b.length; };
  const written: Written[] = [];
  const zip64 = !!opts.zip64;

  const addEntry = (name: string, data: Uint8Array, method = 0): void => {
    const nameBuf = Buffer.from(`${top}/${name}`, 'utf8');
    const offset = pos;
    const z64 = zip64 ? 20 : 0;
    // Pad the extra field (id 0x4246 "FB", as torch does) so the data starts 64-byte aligned.
    const base = offset + 30 + nameBuf.length + z64 + 4;
    const pad = (64 - (base % 64)) % 64;
    const extra = Buffer.alloc(z64 + 4 + pad);
    if (zip64) {
      extra.writeUInt16LE(1, 0); extra.writeUInt16LE(16, 2);
      extra.writeBigUInt64LE(BigInt(data.length), 4); extra.writeBigUInt64LE(BigInt(data.length), 12);
    }
    extra.writeUInt16LE(0x4246, z64); extra.writeUInt16LE(pad, z64 + 2);
    const crc = crc32(data);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(0x04034b50, 0); h.writeUInt16LE(zip64 ? 45 : 20, 4); h.writeUInt16LE(0, 6); h.writeUInt16LE(method, 8);
    h.writeUInt32LE(0, 10); h.writeUInt32LE(crc, 14);
    h.writeUInt32LE(zip64 ? 0xffffffff : data.length, 18); h.writeUInt32LE(zip64 ? 0xffffffff : data.length, 22);
    h.writeUInt16LE(nameBuf.length, 26); h.writeUInt16LE(extra.length, 28);
    out(h); out(nameBuf); out(extra); out(data);
    written.push({ name: nameBuf, offset, size: data.length, crc, method });
  };

  try {
    addEntry('data.pkl', opts.rawPickle ?? pickleStateDict(tensors));
    if (opts.byteorder !== null) addEntry('byteorder', Buffer.from(opts.byteorder ?? 'little'));
    const seen = new Set<string>();
    for (const t of tensors) {
      if (seen.has(t.storage.key)) continue;
      seen.add(t.storage.key);
      const data = t.storage.data();
      if (data.length !== t.storage.numel * ES[t.storage.dtype]) throw new Error(`storage ${t.storage.key}: wrong byte length`);
      addEntry(`data/${t.storage.key}`, data, opts.storageMethod ?? 0);
    }
    addEntry('version', Buffer.from('3\n'));

    const cdStart = pos;
    for (const w of written) {
      const extra = zip64 ? Buffer.alloc(28) : Buffer.alloc(0);
      if (zip64) {
        extra.writeUInt16LE(1, 0); extra.writeUInt16LE(24, 2);
        extra.writeBigUInt64LE(BigInt(w.size), 4); extra.writeBigUInt64LE(BigInt(w.size), 12); extra.writeBigUInt64LE(BigInt(w.offset), 20);
      }
      const c = Buffer.alloc(46);
      c.writeUInt32LE(0x02014b50, 0); c.writeUInt16LE(zip64 ? 45 : 20, 4); c.writeUInt16LE(zip64 ? 45 : 20, 6);
      c.writeUInt16LE(0, 8); c.writeUInt16LE(w.method, 10); c.writeUInt32LE(0, 12); c.writeUInt32LE(w.crc, 16);
      c.writeUInt32LE(zip64 ? 0xffffffff : w.size, 20); c.writeUInt32LE(zip64 ? 0xffffffff : w.size, 24);
      c.writeUInt16LE(w.name.length, 28); c.writeUInt16LE(extra.length, 30);
      c.writeUInt32LE(zip64 ? 0xffffffff : w.offset, 42);
      out(c); out(w.name); out(extra);
    }
    const cdSize = pos - cdStart;
    if (zip64) {
      const rec = Buffer.alloc(56);
      const recPos = pos;
      rec.writeUInt32LE(0x06064b50, 0); rec.writeBigUInt64LE(44n, 4); rec.writeUInt16LE(45, 12); rec.writeUInt16LE(45, 14);
      rec.writeBigUInt64LE(BigInt(written.length), 24); rec.writeBigUInt64LE(BigInt(written.length), 32);
      rec.writeBigUInt64LE(BigInt(cdSize), 40); rec.writeBigUInt64LE(BigInt(cdStart), 48);
      out(rec);
      const loc = Buffer.alloc(20);
      loc.writeUInt32LE(0x07064b50, 0); loc.writeBigUInt64LE(BigInt(recPos), 8); loc.writeUInt32LE(1, 16);
      out(loc);
    }
    const e = Buffer.alloc(22);
    e.writeUInt32LE(0x06054b50, 0);
    e.writeUInt16LE(zip64 ? 0xffff : written.length, 8); e.writeUInt16LE(zip64 ? 0xffff : written.length, 10);
    e.writeUInt32LE(zip64 ? 0xffffffff : cdSize, 12); e.writeUInt32LE(zip64 ? 0xffffffff : cdStart, 16);
    out(e);
  } finally {
    fs.closeSync(fd);
  }
}
