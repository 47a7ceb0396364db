/**
 * Positioned reads: the one way format readers get bytes, on every platform.
 *
 * A `ByteSource` is a file-like thing of known size read by offset: a Node file (src/platform/node.ts), an
 * in-memory buffer (here), and in browsers a `Blob`/`File`, a URL read with HTTP Range requests, or an OPFS file
 * (src/platform/browser.ts). Reads are synchronous: in Node they are `fs.readSync`, in browsers the readers run in a
 * dedicated worker, where `FileReaderSync`, synchronous XHR and OPFS sync access handles exist. Readers never hold
 * a whole checkpoint in memory; they read each tensor by offset when it is asked for.
 *
 * A `FileSet` is a folder (Hugging Face / fla layout): files by bare name, never a path outside the folder.
 */
import { FormatError } from '../errors.js';

export interface ByteSource {
  /** The path, URL or file name, for messages. */
  readonly name: string;
  /** Size in bytes. */
  readonly size: number;
  /** Exactly `length` bytes at `offset`, in a fresh buffer. Callers validate the range first (see `readExact`). */
  read(offset: number, length: number): Uint8Array;
  /**
   * Optional: exactly `dst.length` bytes at `offset`, into `dst` (where they are needed: a model's weights go
   * straight into backend memory, with no fresh buffer per tensor). Callers validate the range first (see
   * `readExactInto`); sources without it are read with `read` and copied.
   */
  readInto?(offset: number, dst: Uint8Array): void;
  /** Frees the handle; reads after close fail. Idempotent. */
  close(): void;
}

/** A folder of files opened by bare name (`config.json`, `model-00001-of-00002.safetensors`). */
export interface FileSet {
  /** The folder's path or name, for messages. */
  readonly name: string;
  /** The source of file `file` in this folder, or undefined if there is no such regular file. */
  open(file: string): ByteSource | undefined;
  /** Path of `file` in this folder, for messages. */
  pathOf(file: string): string;
}

/** Reads exactly `length` bytes at `position` of `src`, or throws a FormatError naming the file. */
export function readExact(src: ByteSource, position: number, length: number): Uint8Array {
  if (!Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 || length < 0 ||
      position + length > src.size) {
    throw new FormatError(`${src.name}: truncated or corrupt file (wanted ${length} bytes at offset ${position}, file has ${src.size})`);
  }
  return src.read(position, length);
}

/** Reads exactly `dst.length` bytes at `position` of `src` into `dst`, or throws a FormatError naming the file. */
export function readExactInto(src: ByteSource, position: number, dst: Uint8Array): void {
  const length = dst.length;
  if (!src.readInto) {
    dst.set(readExact(src, position, length));
    return;
  }
  if (!Number.isSafeInteger(position) || position < 0 || position + length > src.size) {
    throw new FormatError(`${src.name}: truncated or corrupt file (wanted ${length} bytes at offset ${position}, file has ${src.size})`);
  }
  src.readInto(position, dst);
}

/** A source over bytes in memory (an `ArrayBuffer`, a `Uint8Array`, a fetched response). Reads copy. */
export function bytesSource(bytes: Uint8Array | ArrayBuffer, name = 'buffer'): ByteSource {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let closed = false;
  return {
    name,
    size: u8.byteLength,
    read(offset, length) {
      if (closed) throw new FormatError(`${name}: file already closed`);
      return u8.slice(offset, offset + length);
    },
    readInto(offset, dst) {
      if (closed) throw new FormatError(`${name}: file already closed`);
      dst.set(u8.subarray(offset, offset + dst.length));
    },
    close() { closed = true; },
  };
}

/** Every byte of a source (for small files: config.json, vocabularies, state files). */
export function readAll(src: ByteSource): Uint8Array {
  return readExact(src, 0, src.size);
}

export function isByteSource(x: unknown): x is ByteSource {
  return typeof x === 'object' && x !== null && typeof (x as ByteSource).read === 'function' &&
    typeof (x as ByteSource).size === 'number';
}

export function isFileSet(x: unknown): x is FileSet {
  return typeof x === 'object' && x !== null && typeof (x as FileSet).open === 'function' &&
    typeof (x as FileSet).pathOf === 'function';
}

/** Where a writer streams a file: written front to back, then closed (or aborted: the partial file is removed). */
export interface ByteSink {
  readonly name: string;
  write(bytes: Uint8Array): void;
  close(): void;
  abort(): void;
}

/** A sink collecting the bytes in memory (`bytes()` after `close()`): files written in a browser, state blobs. */
export function memorySink(name = 'buffer'): ByteSink & { bytes(): Uint8Array } {
  const parts: Uint8Array[] = [];
  let total = 0;
  return {
    name,
    write(b) { parts.push(b.slice()); total += b.byteLength; },
    close() {},
    abort() { parts.length = 0; total = 0; },
    bytes() {
      const out = new Uint8Array(total);
      let o = 0;
      for (const p of parts) { out.set(p, o); o += p.byteLength; }
      return out;
    },
  };
}
