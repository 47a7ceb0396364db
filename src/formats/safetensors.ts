/**
 * safetensors reader and writer.
 *
 * File layout: an 8-byte little-endian u64 N, N bytes of JSON header
 * (`{"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`),
 * then the data; offsets are relative to the start of the data.
 *
 * Written here rather than taken from a library because the reader is the trust boundary for untrusted
 * files: every number in the header is validated against the real file size before anything is
 * allocated (header size, dtype, shape x dtype == byte span, offsets in bounds, no overlaps), and tensors
 * are read lazily by offset so multi-GB files never sit in memory. The writer streams tensor by tensor.
 */
import { FormatError } from '../errors.js';
import { DTYPE_BYTES, type DType, type TensorRef } from './types.js';
import { checkTensorSize } from './dtype.js';
import { readExact, readExactInto, type ByteSink, type ByteSource } from './source.js';
import type { RawTensorFile } from './raw.js';
import { platform } from '../platform/index.js';

/** Same bound as the reference implementation: a larger header is an attack or corruption. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** JSON type of a header value, for messages: "an array", "null", "a number", ... */
function jsonType(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/**
 * Opens a safetensors file (a path, or any ByteSource: it is closed with the result); tensors keep their names from
 * the file (no layout mapping).
 */
export function openSafetensors(input: string | ByteSource): RawTensorFile {
  const src = typeof input === 'string' ? openFile(input) : input;
  try {
    return readSafetensors(src);
  } catch (e) {
    src.close();
    throw e;
  }
}

function openFile(path: string): ByteSource {
  const s = platform.openPath(path);
  if (!('read' in s)) throw new FormatError(`${path}: is a folder, expected a .safetensors file`);
  return s;
}

function readSafetensors(src: ByteSource): RawTensorFile {
  const path = src.name;
  const fileSize = src.size;
  if (fileSize < 8) throw new FormatError(`${path}: not a safetensors file (only ${fileSize} bytes)`);
  const lenBytes = readExact(src, 0, 8);
  const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (headerLen > BigInt(fileSize - 8)) {
    throw new FormatError(`${path}: safetensors header claims ${headerLen} bytes but the file holds only ${fileSize - 8} after the length field (truncated or not a safetensors file)`);
  }
  if (headerLen > BigInt(MAX_HEADER_BYTES)) throw new FormatError(`${path}: safetensors header too large (${headerLen} bytes)`);
  const n = Number(headerLen);
  const headerBytes = readExact(src, 8, n);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw new FormatError(`${path}: safetensors header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new FormatError(`${path}: safetensors header is not a JSON object`);
  }
  const dataStart = 8 + n;
  const dataSize = fileSize - dataStart;

  const metadata: Record<string, string> = {};
  const spans: Array<{ name: string; begin: number; end: number }> = [];
  const tensors = new Map<string, TensorRef>();
  let closed = false;
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new FormatError(`${path}: __metadata__ must be an object of strings`);
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') throw new FormatError(`${path}: __metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const bad = (what: string): never => { throw new FormatError(`${path}: tensor ${name}: ${what}`); };
    // Every field checked by name, saying what it is and what was expected (a garbled header must not end in
    // "unsupported dtype undefined").
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      bad(`header entry is ${jsonType(raw)}, expected an object {"dtype", "shape", "data_offsets"}`);
    }
    const entry = raw as Record<string, unknown>;
    const field = (key: string): unknown => {
      if (!Object.hasOwn(entry, key)) {
        const keys = Object.keys(entry).slice(0, 6).map((k) => JSON.stringify(k.length > 40 ? `${k.slice(0, 40)}...` : k));
        bad(`header entry has no "${key}" field (it has ${keys.length ? keys.join(', ') : 'no fields'}; expected "dtype", "shape", "data_offsets")`);
      }
      return entry[key];
    };
    const dtype = field('dtype'), shape = field('shape'), offsets = field('data_offsets');
    if (!isDType(dtype)) bad(`unsupported dtype ${typeof dtype === 'string' ? JSON.stringify(dtype.slice(0, 40)) : jsonType(dtype)} (expected one of ${Object.keys(DTYPE_BYTES).join(', ')})`);
    if (!Array.isArray(shape)) bad(`invalid shape: shape is ${jsonType(shape)}, expected an array of non-negative integers`);
    const badDim = (shape as unknown[]).findIndex((d) => !(typeof d === 'number' && Number.isSafeInteger(d) && d >= 0));
    if (badDim >= 0) bad(`invalid shape: shape[${badDim}] is ${JSON.stringify((shape as unknown[])[badDim]) ?? jsonType((shape as unknown[])[badDim])}, expected a non-negative integer`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)) {
      bad(`invalid data_offsets: data_offsets is ${Array.isArray(offsets) ? JSON.stringify(offsets).slice(0, 80) : jsonType(offsets)}, expected [begin, end] (two non-negative integers)`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > dataSize) bad(`data_offsets [${begin}, ${end}] outside the data section (${dataSize} bytes)`);
    const es = DTYPE_BYTES[dtype as DType];
    const numel = checkTensorSize(path, name, shape as number[], dtype as string, es);
    const bytes = numel * es;
    if (bytes !== end - begin) bad(`shape [${shape}] x ${dtype} needs ${bytes} bytes but data_offsets span ${end - begin}`);
    spans.push({ name, begin, end });
    const at = dataStart + begin;
    tensors.set(name, {
      name, dtype: dtype as DType, shape: [...(shape as number[])],
      read: () => {
        if (closed) throw new FormatError(`${path}: file already closed (reading ${name})`);
        return readExact(src, at, end - begin);
      },
      readInto: (dst: Uint8Array, start = 0) => {
        if (closed) throw new FormatError(`${path}: file already closed (reading ${name})`);
        if (start < 0 || start + dst.length > end - begin) throw new FormatError(`${path}: read of ${dst.length} bytes at ${start} is outside tensor ${name} (${end - begin} bytes)`);
        readExactInto(src, at + start, dst);
      },
    });
  }
  // Tensors may not share bytes. Empty tensors hold none (and must not hide an overlap between their neighbours):
  // each tensor is compared with the furthest-reaching one before it.
  const filled = spans.filter((s) => s.end > s.begin).sort((a, b) => a.begin - b.begin || a.end - b.end);
  let reach: { name: string; begin: number; end: number } | undefined;
  for (const cur of filled) {
    if (reach && cur.begin < reach.end) {
      throw new FormatError(`${path}: tensors ${reach.name} [${reach.begin}, ${reach.end}) and ${cur.name} [${cur.begin}, ${cur.end}) overlap`);
    }
    if (!reach || cur.end > reach.end) reach = cur;
  }
  return {
    path, tensors, metadata,
    close: () => { if (!closed) { closed = true; src.close(); } },
  };
}

/** What the writer needs of a tensor: TensorRef satisfies it; `read()` is called once, in order. */
export interface TensorSource {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  read(): Uint8Array;
}

export interface WriteOptions {
  metadata?: Record<string, string>;
  /** Called after each tensor is written, with its byte count (for progress bars). */
  onTensor?(name: string, bytes: number): void;
}

/**
 * Writes tensors to a safetensors file (a path, or any ByteSink), streaming: the header first (sizes come from
 * dtype x shape), then each tensor's bytes as `read()` returns them, so only one tensor is in memory at a time.
 * On failure the partial file is removed.
 */
export function writeSafetensors(target: string | ByteSink, tensors: Iterable<TensorSource>, opts: WriteOptions = {}): void {
  const path = typeof target === 'string' ? target : target.name;
  const list = [...tensors];
  const header: Record<string, unknown> = {};
  if (opts.metadata && Object.keys(opts.metadata).length) header.__metadata__ = opts.metadata;
  let offset = 0;
  for (const t of list) {
    if (t.name === '__metadata__' || Object.prototype.hasOwnProperty.call(header, t.name)) {
      throw new FormatError(`cannot write ${path}: duplicate or reserved tensor name ${t.name}`);
    }
    const bytes = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const text = new TextEncoder().encode(JSON.stringify(header));
  // Pad the header with spaces so the data starts 8-byte aligned.
  const json = new Uint8Array(Math.ceil(text.length / 8) * 8).fill(0x20);
  json.set(text);
  const lenField = new Uint8Array(8);
  new DataView(lenField.buffer).setBigUint64(0, BigInt(json.length), true);

  const sink = typeof target === 'string' ? platform.createFile(target) : target;
  try {
    sink.write(lenField);
    sink.write(json);
    for (const t of list) {
      const data = t.read();
      const want = (header[t.name] as { data_offsets: number[] }).data_offsets;
      if (data.length !== want[1]! - want[0]!) {
        throw new FormatError(`cannot write ${path}: tensor ${t.name} produced ${data.length} bytes, expected ${want[1]! - want[0]!}`);
      }
      sink.write(data);
      opts.onTensor?.(t.name, data.length);
    }
    sink.close();
  } catch (e) {
    sink.abort();
    throw e;
  }
}
