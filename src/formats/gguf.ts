/**
 * GGUF reader (llama.cpp's model format, versions 2 and 3).
 *
 * Layout (ggml docs/gguf.md), all little-endian:
 *   u32 magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count
 *   metadata_kv_count x { string key | u32 value_type | value }
 *   tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
 *   padding to `general.alignment` (u32, default 32), then the tensor data; each tensor's offset is relative to
 *   the start of the data and a multiple of the alignment.
 * A string is a u64 byte length and that many UTF-8 bytes (no terminator). Value types: 0 u8, 1 i8, 2 u16, 3 i16,
 * 4 u32, 5 i32, 6 f32, 7 bool (one byte), 8 string, 9 array (u32 element type, u64 count, elements), 10 u64,
 * 11 i64, 12 f64. Dimensions are listed innermost first: ne[0] is the number of columns, so the row-major shape
 * is ne reversed. Version 1 (u32 counts) is long obsolete and refused.
 *
 * A GGUF is untrusted input. Every count, length, offset and dimension is checked against the bytes actually left
 * in the file before anything is allocated or read, so a lying header gives a FormatError naming the file and the
 * field, never a huge allocation. The header is read through a small sliding window of the ByteSource; tensor data
 * is read only when a tensor is asked for.
 *
 * This module parses the container; `gguf-rwkv7.ts` maps the `rwkv7` architecture to the canonical tensors.
 */
import { FormatError } from '../errors.js';
import { readExact, type ByteSource } from './source.js';
import { checkTensorSize } from './dtype.js';
import { SUPPORTED_TYPES, ggmlTypeName, ggmlBytes, type GgmlTypeInfo } from './gguf-quant.js';
import { rwkv7ToCanonical, type GgufTensorRef, type Rwkv7Shape } from './gguf-rwkv7.js';
import type { RawTensorFile } from './raw.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS. */
const MAX_DIMS = 4;
/** Arrays of arrays are legal; deeper nesting than this is corruption or an attack. */
const MAX_ARRAY_DEPTH = 8;
/**
 * Bounds beyond what the file size already implies, so a header that points its counts at gigabytes of tensor data
 * cannot make the parser build gigabytes of JS values: real files have ~10^3 tensors and KV pairs, vocabularies of
 * ~10^5-10^6 entries and strings of at most a few MB (a tokenizer JSON).
 */
const MAX_COUNT = 1 << 20;
const MAX_ARRAY_ITEMS = 1 << 24;
const MAX_STRING_BYTES = 64 << 20;
/** Sliding-window size for header reads. */
const WINDOW = 1 << 20;

/** GGUF metadata value types. */
export const GGUF_VALUE = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9,
  UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;
const VALUE_NAMES = Object.fromEntries(Object.entries(GGUF_VALUE).map(([k, v]) => [v, k.toLowerCase()])) as Record<number, string>;
/** Encoded size of each fixed-size value type. */
const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** A metadata value: numbers (u64/i64 as bigint only when beyond 2^53), booleans, strings, arrays. */
export type GgufValue = number | bigint | boolean | string | GgufArray;
export interface GgufArray {
  readonly itemType: number;
  readonly items: readonly GgufValue[];
}
/** One typed metadata entry (the type is kept so a writer can reproduce it). */
export interface GgufKV {
  readonly type: number;
  readonly value: GgufValue;
}

/** A tensor as the GGUF header describes it. */
export interface GgufTensorInfo {
  readonly name: string;
  readonly type: GgmlTypeInfo;
  /** Dimensions innermost first, as in the file. */
  readonly ne: readonly number[];
  /** Row-major shape (ne reversed). */
  readonly shape: readonly number[];
  readonly numel: number;
  /** Absolute offset of the tensor's bytes in the file. */
  readonly fileOffset: number;
  readonly nbytes: number;
}

export interface GgufFile {
  readonly src: ByteSource;
  readonly version: number;
  readonly alignment: number;
  readonly metadata: ReadonlyMap<string, GgufKV>;
  /** In file order. */
  readonly tensors: readonly GgufTensorInfo[];
  /** Absolute offset of the tensor data section. */
  readonly dataOffset: number;
}

/** Reads the header of a GGUF source sequentially through a window, checking every length against the file. */
class Cursor {
  pos = 0;
  private buf: Uint8Array = new Uint8Array(0);
  private bufStart = 0;
  private dv = new DataView(this.buf.buffer);

  constructor(readonly src: ByteSource) {}

  get remaining(): number { return this.src.size - this.pos; }

  /** Makes [pos, pos + n) readable (may replace the window: read `buf`/`dv` only after calling), or fails naming `what`. */
  private need(n: number, what: string): number {
    if (n > this.remaining) {
      throw new FormatError(`${this.src.name}: truncated or corrupt GGUF header: ${what} needs ${n} bytes at offset ${this.pos}, the file has ${this.remaining} left`);
    }
    if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.buf.length) {
      const len = Math.min(Math.max(n, WINDOW), this.src.size - this.pos);
      this.buf = readExact(this.src, this.pos, len);
      this.bufStart = this.pos;
      this.dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    }
    const at = this.pos - this.bufStart;
    this.pos += n;
    return at;
  }

  u8(what: string): number { const at = this.need(1, what); return this.buf[at]!; }
  i8(what: string): number { const at = this.need(1, what); return this.dv.getInt8(at); }
  u16(what: string): number { const at = this.need(2, what); return this.dv.getUint16(at, true); }
  i16(what: string): number { const at = this.need(2, what); return this.dv.getInt16(at, true); }
  u32(what: string): number { const at = this.need(4, what); return this.dv.getUint32(at, true); }
  i32(what: string): number { const at = this.need(4, what); return this.dv.getInt32(at, true); }
  f32(what: string): number { const at = this.need(4, what); return this.dv.getFloat32(at, true); }
  f64(what: string): number { const at = this.need(8, what); return this.dv.getFloat64(at, true); }
  u64(what: string): bigint { const at = this.need(8, what); return this.dv.getBigUint64(at, true); }
  i64(what: string): bigint { const at = this.need(8, what); return this.dv.getBigInt64(at, true); }

  /** A u64 that must be a count/length/offset that fits in the rest of the file: returned as a number. */
  size(what: string, unitBytes = 1, bound = this.remaining, cap = Number.MAX_SAFE_INTEGER): number {
    const at = this.pos;
    const v = this.u64(what);
    const most = BigInt(Math.floor(bound / Math.max(1, unitBytes)));
    if (v > most) {
      throw new FormatError(`${this.src.name}: corrupt GGUF header: ${what} is ${v} (at offset ${at}), but the file has room for at most ${most}`);
    }
    if (v > BigInt(cap)) throw new FormatError(`${this.src.name}: GGUF header: ${what} is ${v} (at offset ${at}), more than the ${cap} this reader accepts`);
    return Number(v);
  }

  str(what: string): string {
    const n = this.size(`length of ${what}`, 1, this.remaining, MAX_STRING_BYTES);
    const at = this.need(n, what);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(this.buf.subarray(at, at + n));
    } catch {
      throw new FormatError(`${this.src.name}: corrupt GGUF header: ${what} (at offset ${this.pos - n}) is not valid UTF-8`);
    }
  }
}

/** u64/i64 as a number when exactly representable, else a bigint. */
function big(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function readValue(c: Cursor, type: number, what: string, depth: number): GgufValue {
  switch (type) {
    case GGUF_VALUE.UINT8: return c.u8(what);
    case GGUF_VALUE.INT8: return c.i8(what);
    case GGUF_VALUE.UINT16: return c.u16(what);
    case GGUF_VALUE.INT16: return c.i16(what);
    case GGUF_VALUE.UINT32: return c.u32(what);
    case GGUF_VALUE.INT32: return c.i32(what);
    case GGUF_VALUE.FLOAT32: return c.f32(what);
    case GGUF_VALUE.FLOAT64: return c.f64(what);
    case GGUF_VALUE.UINT64: return big(c.u64(what));
    case GGUF_VALUE.INT64: return big(c.i64(what));
    case GGUF_VALUE.BOOL: {
      const b = c.u8(what);
      if (b > 1) throw new FormatError(`${c.src.name}: corrupt GGUF header: ${what} is a bool with byte value ${b} (expected 0 or 1)`);
      return b === 1;
    }
    case GGUF_VALUE.STRING: return c.str(what);
    case GGUF_VALUE.ARRAY: {
      if (depth >= MAX_ARRAY_DEPTH) throw new FormatError(`${c.src.name}: corrupt GGUF header: ${what} nests arrays deeper than ${MAX_ARRAY_DEPTH} levels`);
      const itemType = c.u32(`element type of ${what}`);
      if (!(itemType in VALUE_NAMES)) throw new FormatError(`${c.src.name}: corrupt GGUF header: ${what} has unknown element type ${itemType}`);
      // Every element takes at least this many bytes (a string its 8-byte length, an array its 12-byte head).
      const minBytes = SCALAR_BYTES[itemType] ?? (itemType === GGUF_VALUE.STRING ? 8 : 12);
      const n = c.size(`element count of ${what}`, minBytes, c.remaining, MAX_ARRAY_ITEMS);
      const items: GgufValue[] = [];
      for (let i = 0; i < n; i++) items.push(readValue(c, itemType, `${what}[${i}]`, depth + 1));
      return { itemType, items };
    }
    default:
      throw new FormatError(`${c.src.name}: corrupt GGUF header: ${what} has unknown value type ${type}`);
  }
}

/** Parses and validates a GGUF header; reads no tensor data. */
export function parseGguf(src: ByteSource): GgufFile {
  const name = src.name;
  const c = new Cursor(src);
  if (src.size < 24) throw new FormatError(`${name}: not a GGUF file (only ${src.size} bytes; the header alone is 24)`);
  const magic = c.u32('magic');
  if (magic !== GGUF_MAGIC) throw new FormatError(`${name}: not a GGUF file (magic bytes are not "GGUF")`);
  const version = c.u32('version');
  if (version === 1) throw new FormatError(`${name}: GGUF version 1 is obsolete and not supported (re-convert the model with a current llama.cpp)`);
  if (version !== 2 && version !== 3) throw new FormatError(`${name}: unsupported GGUF version ${version} (supported: 2, 3)`);
  // Each tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes; each KV pair at
  // least 8 (key length) + 4 (type) + 1 (smallest value).
  const nTensors = c.size('tensor_count', 24, c.remaining, MAX_COUNT);
  const nKV = c.size('metadata_kv_count', 13, c.remaining, MAX_COUNT);

  const metadata = new Map<string, GgufKV>();
  for (let i = 0; i < nKV; i++) {
    const key = c.str(`metadata key #${i}`);
    if (metadata.has(key)) throw new FormatError(`${name}: corrupt GGUF header: metadata key ${JSON.stringify(key)} appears twice`);
    const type = c.u32(`value type of metadata ${key}`);
    metadata.set(key, { type, value: readValue(c, type, `metadata ${key}`, 0) });
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al) {
    if (al.type !== GGUF_VALUE.UINT32 || typeof al.value !== 'number' || al.value === 0 || (al.value & (al.value - 1)) !== 0) {
      throw new FormatError(`${name}: general.alignment must be a u32 power of two, got ${VALUE_NAMES[al.type]} ${String(al.value)}`);
    }
    alignment = al.value;
  }

  interface Pending { name: string; type: GgmlTypeInfo; ne: number[]; numel: number; nbytes: number; offset: number }
  const pending: Pending[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const tname = c.str(`name of tensor #${i}`);
    if (seen.has(tname)) throw new FormatError(`${name}: corrupt GGUF header: tensor ${tname} appears twice`);
    seen.add(tname);
    const nDims = c.u32(`n_dims of tensor ${tname}`);
    if (nDims < 1 || nDims > MAX_DIMS) throw new FormatError(`${name}: tensor ${tname} has ${nDims} dimensions (ggml allows 1 to ${MAX_DIMS})`);
    const ne: number[] = [];
    let numel = 1;
    for (let d = 0; d < nDims; d++) {
      // No tensor can have more elements than the file has bits (the densest type stores ~1.6 bits per value).
      const v = c.size(`ne[${d}] of tensor ${tname}`, 1, src.size * 8);
      if (v === 0) throw new FormatError(`${name}: tensor ${tname} has an empty dimension ne[${d}] = 0`);
      numel *= v;
      if (numel > src.size * 8) throw new FormatError(`${name}: tensor ${tname} claims ${ne.concat(v).join(' x ')}... elements, more than a file of ${src.size} bytes can hold`);
      ne.push(v);
    }
    const typeId = c.u32(`type of tensor ${tname}`);
    const type = SUPPORTED_TYPES.get(typeId);
    if (!type) {
      throw new FormatError(`${name}: tensor ${tname} has ggml type ${ggmlTypeName(typeId)}, which this runtime does not read (supported: ${[...SUPPORTED_TYPES.values()].map((t) => t.name).join(', ')})`);
    }
    // The runtime's tensor size bound (see MAX_TENSOR_BYTES), before anything is read or dequantized.
    checkTensorSize(name, tname, [...ne].reverse(), type.name, type.typeSize / type.blockSize);
    if (ne[0]! % type.blockSize) {
      throw new FormatError(`${name}: tensor ${tname} is ${type.name} with rows of ${ne[0]} values, not a multiple of its block size ${type.blockSize}`);
    }
    const offset = c.size(`data offset of tensor ${tname}`);
    if (offset % alignment) throw new FormatError(`${name}: tensor ${tname} data offset ${offset} is not a multiple of the alignment ${alignment}`);
    pending.push({ name: tname, type, ne, numel, nbytes: ggmlBytes(type, numel), offset });
  }

  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const dataSize = src.size - dataOffset;
  const tensors: GgufTensorInfo[] = pending.map((p) => {
    if (p.offset + p.nbytes > dataSize) {
      throw new FormatError(`${name}: tensor ${p.name} (${p.type.name} [${p.ne.join(', ')}], ${p.nbytes} bytes at data offset ${p.offset}) runs past the end of the file (data section holds ${Math.max(0, dataSize)} bytes)`);
    }
    return {
      name: p.name, type: p.type, ne: p.ne, shape: [...p.ne].reverse(), numel: p.numel,
      fileOffset: dataOffset + p.offset, nbytes: p.nbytes,
    };
  });
  // Tensors must not share bytes (a file where they overlap was not written by a GGUF writer).
  const byOffset = [...tensors].sort((a, b) => a.fileOffset - b.fileOffset);
  for (let i = 1; i < byOffset.length; i++) {
    const a = byOffset[i - 1]!, b = byOffset[i]!;
    if (a.fileOffset + a.nbytes > b.fileOffset) throw new FormatError(`${name}: tensors ${a.name} and ${b.name} overlap in the data section`);
  }
  return { src, version, alignment, metadata, tensors, dataOffset };
}

/** The raw bytes of a tensor, exactly as stored (quantized blocks included). */
export function readTensorBytes(g: GgufFile, t: GgufTensorInfo): Uint8Array {
  return readExact(g.src, t.fileOffset, t.nbytes);
}

/** Human-readable name of a metadata value type. */
export function ggufValueTypeName(type: number): string {
  return VALUE_NAMES[type] ?? `type ${type}`;
}

/** A metadata value as a string for display (arrays summarised). */
export function formatGgufValue(v: GgufValue): string {
  if (typeof v === 'object') return `[${ggufValueTypeName(v.itemType)} x ${v.items.length}]`;
  return String(v);
}

/** An opened rwkv7 GGUF: canonical tensors plus everything the file says about itself. */
export interface GgufCheckpointFile extends RawTensorFile {
  /** Canonical BlinkDL names and shapes (`emb.weight`, `blocks.0.att.x_r` [1,1,C], `blocks.0.att.r_k` [H,N]). */
  readonly tensors: ReadonlyMap<string, GgufTensorRef>;
  /** Every metadata entry, typed. */
  readonly ggufMetadata: ReadonlyMap<string, GgufKV>;
  /** The parsed container (version, alignment, the file's own tensor list). */
  readonly gguf: GgufFile;
  /** Hyperparameters from the tensor shapes (already checked against the rwkv7.* metadata). */
  readonly rwkv7: Rwkv7Shape;
}

/**
 * Opens a GGUF of the llama.cpp `rwkv7` architecture. Tensors come out under canonical names and shapes; plain
 * float tensors keep their type (F32/F16/BF16), quantized ones are dequantized exactly to F32 when read (their
 * blocks stay available through `ggml.readRaw()`). `metadata` holds the scalar metadata as strings.
 * The source is closed on error and by `close()`.
 */
export function openGguf(src: ByteSource): GgufCheckpointFile {
  try {
    const gguf = parseGguf(src);
    const { tensors, shape } = rwkv7ToCanonical(gguf);
    const metadata: Record<string, string> = {};
    for (const [k, kv] of gguf.metadata) if (typeof kv.value !== 'object') metadata[k] = String(kv.value);
    return { path: src.name, tensors, metadata, ggufMetadata: gguf.metadata, gguf, rwkv7: shape, close: () => src.close() };
  } catch (e) {
    src.close();
    throw e;
  }
}
