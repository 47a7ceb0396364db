/**
 * A minimal, read-only ZIP reader for PyTorch checkpoints (`torch.save` since torch 1.6 writes a zip).
 *
 * Why our own reader instead of a library: checkpoints are untrusted, multi-GB files. We need exactly
 * three things a general zip library does not guarantee together: (1) never reading the whole file into
 * memory (a 26 GB checkpoint must be inspectable), (2) every size read from the file checked against the
 * real file size before anything is allocated, and (3) direct file offsets of stored (uncompressed)
 * entries so tensors can be read lazily by offset (through a ByteSource, on any platform). torch writes its entries uncompressed
 * ("stored"), so we refuse compressed entries instead of carrying a decompressor.
 *
 * Supported: the central directory (found via the end-of-central-directory record), ZIP64 records and
 * extra fields (archives and entries over 4 GiB), stored entries. Not supported: compression, encryption,
 * multi-disk archives.
 */
import { FormatError } from '../errors.js';
import { readExact, readExactInto, type ByteSource } from './source.js';

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;
/** A central directory larger than this is not a checkpoint we want to parse in memory. */
const MAX_CENTRAL_DIRECTORY = 256 * 1024 * 1024;

export interface ZipEntry {
  readonly name: string;
  /** 0 = stored. Anything else is refused when the entry is read. */
  readonly method: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly localHeaderOffset: number;
}

/** Reads a little-endian u64 as a JS number, refusing values beyond 2^53. */
function u64(view: DataView, off: number, what: string, path: string): number {
  const v = view.getBigUint64(off, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`${path}: ${what} is too large (${v})`);
  return Number(v);
}

export class ZipReader {
  readonly path: string;
  readonly fileSize: number;
  readonly entries: ReadonlyMap<string, ZipEntry>;
  private closed = false;
  private dataOffsets = new Map<string, number>();

  /** Reads the archive's directory from `src`; the reader owns `src` from now on (closing it on error too). */
  constructor(private readonly src: ByteSource) {
    this.path = src.name;
    this.fileSize = src.size;
    try {
      this.entries = this.readCentralDirectory();
    } catch (e) {
      src.close();
      throw e;
    }
  }

  close(): void {
    if (!this.closed) this.src.close();
    this.closed = true;
  }

  private read(position: number, length: number): Uint8Array {
    if (this.closed) throw new FormatError(`${this.path}: file already closed`);
    return readExact(this.src, position, length);
  }

  private readCentralDirectory(): Map<string, ZipEntry> {
    const path = this.path;
    if (this.fileSize < EOCD_SIZE) throw new FormatError(`${path}: not a zip archive (file too small: ${this.fileSize} bytes)`);
    // The EOCD record sits at the end, followed by a comment of up to 65535 bytes: scan backwards.
    const tailLen = Math.min(this.fileSize, EOCD_SIZE + MAX_COMMENT);
    const tailStart = this.fileSize - tailLen;
    const tail = this.read(tailStart, tailLen);
    const tv = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
    let eocd = -1;
    for (let i = tailLen - EOCD_SIZE; i >= 0; i--) {
      if (tv.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + tv.getUint16(i + 20, true) <= tailLen) { eocd = i; break; }
    }
    if (eocd < 0) throw new FormatError(`${path}: not a zip archive (no end-of-central-directory record; truncated, or not a torch>=1.6 checkpoint)`);
    if (tv.getUint16(eocd + 4, true) !== 0 || tv.getUint16(eocd + 6, true) !== 0) {
      throw new FormatError(`${path}: multi-disk zip archives are not supported`);
    }
    let count = tv.getUint16(eocd + 10, true);
    let cdSize = tv.getUint32(eocd + 12, true);
    let cdOffset = tv.getUint32(eocd + 16, true);

    // ZIP64: a locator 20 bytes before the EOCD points to the ZIP64 EOCD record with 64-bit fields.
    const locPos = tailStart + eocd - 20;
    if (locPos >= 0) {
      const loc = this.read(locPos, 20);
      const lv = new DataView(loc.buffer);
      if (lv.getUint32(0, true) === SIG_ZIP64_LOCATOR) {
        const recPos = u64(lv, 8, 'ZIP64 record offset', path);
        const rec = this.read(recPos, 56);
        const rv = new DataView(rec.buffer);
        if (rv.getUint32(0, true) !== SIG_ZIP64_EOCD) throw new FormatError(`${path}: corrupt ZIP64 end-of-central-directory record`);
        count = u64(rv, 32, 'entry count', path);
        cdSize = u64(rv, 40, 'central directory size', path);
        cdOffset = u64(rv, 48, 'central directory offset', path);
      }
    }
    if (cdOffset + cdSize > this.fileSize) throw new FormatError(`${path}: truncated zip (central directory at ${cdOffset}+${cdSize} beyond file size ${this.fileSize})`);
    if (cdSize > MAX_CENTRAL_DIRECTORY) throw new FormatError(`${path}: zip central directory too large (${cdSize} bytes)`);
    // Each central record is at least 46 bytes, so a count beyond this is a lie.
    if (count > cdSize / 46) throw new FormatError(`${path}: corrupt zip (${count} entries cannot fit in ${cdSize} bytes)`);

    const cd = this.read(cdOffset, cdSize);
    const cv = new DataView(cd.buffer);
    const entries = new Map<string, ZipEntry>();
    const decoder = new TextDecoder('utf-8', { fatal: false });
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cdSize || cv.getUint32(p, true) !== SIG_CENTRAL) throw new FormatError(`${path}: corrupt zip central directory (entry ${i})`);
      const flags = cv.getUint16(p + 8, true);
      const method = cv.getUint16(p + 10, true);
      let compressedSize = cv.getUint32(p + 20, true);
      let size = cv.getUint32(p + 24, true);
      const nameLen = cv.getUint16(p + 28, true);
      const extraLen = cv.getUint16(p + 30, true);
      const commentLen = cv.getUint16(p + 32, true);
      let localHeaderOffset = cv.getUint32(p + 42, true);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > cdSize) throw new FormatError(`${path}: corrupt zip central directory (entry ${i} overruns it)`);
      const name = decoder.decode(cd.subarray(p + 46, p + 46 + nameLen));
      if (flags & 1) throw new FormatError(`${path}: entry ${name} is encrypted`);
      // ZIP64 extended information (header id 1): only the fields saturated at 0xFFFFFFFF are present, in this order.
      let x = p + 46 + nameLen;
      const xEnd = x + extraLen;
      while (x + 4 <= xEnd) {
        const id = cv.getUint16(x, true);
        const len = cv.getUint16(x + 2, true);
        if (x + 4 + len > xEnd) break;
        if (id === 1) {
          let q = x + 4;
          const take = (what: string): number => {
            if (q + 8 > x + 4 + len) throw new FormatError(`${path}: corrupt ZIP64 extra field in ${name}`);
            const v = u64(cv, q, what, path);
            q += 8;
            return v;
          };
          if (size === 0xffffffff) size = take('entry size');
          if (compressedSize === 0xffffffff) compressedSize = take('entry compressed size');
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = take('entry offset');
        }
        x += 4 + len;
      }
      if (localHeaderOffset + 30 + compressedSize > this.fileSize) {
        throw new FormatError(`${path}: truncated zip (entry ${name} extends beyond the end of the file)`);
      }
      entries.set(name, { name, method, compressedSize, size, localHeaderOffset });
      p = end;
    }
    return entries;
  }

  /** File offset of an entry's data (reads and checks its local header once). */
  dataOffset(entry: ZipEntry): number {
    const cached = this.dataOffsets.get(entry.name);
    if (cached !== undefined) return cached;
    if (entry.method !== 0) {
      throw new FormatError(`${this.path}: zip entry ${entry.name} is compressed (method ${entry.method}); only stored entries are supported, as torch.save writes them`);
    }
    const h = this.read(entry.localHeaderOffset, 30);
    const hv = new DataView(h.buffer);
    if (hv.getUint32(0, true) !== SIG_LOCAL) throw new FormatError(`${this.path}: corrupt zip (bad local header for ${entry.name})`);
    const off = entry.localHeaderOffset + 30 + hv.getUint16(26, true) + hv.getUint16(28, true);
    if (off + entry.size > this.fileSize) throw new FormatError(`${this.path}: truncated zip (entry ${entry.name} extends beyond the end of the file)`);
    this.dataOffsets.set(entry.name, off);
    return off;
  }

  /** Reads `length` bytes of a stored entry starting at `start` within the entry. */
  readEntry(entry: ZipEntry, start = 0, length = entry.size - start): Uint8Array {
    if (start < 0 || length < 0 || start + length > entry.size) {
      throw new FormatError(`${this.path}: read of ${length} bytes at ${start} is outside entry ${entry.name} (${entry.size} bytes)`);
    }
    return this.read(this.dataOffset(entry) + start, length);
  }

  /** Reads `dst.length` bytes of a stored entry starting at `start` within the entry into `dst`. */
  readEntryInto(entry: ZipEntry, start: number, dst: Uint8Array): void {
    if (start < 0 || start + dst.length > entry.size) {
      throw new FormatError(`${this.path}: read of ${dst.length} bytes at ${start} is outside entry ${entry.name} (${entry.size} bytes)`);
    }
    const at = this.dataOffset(entry) + start;
    if (this.closed) throw new FormatError(`${this.path}: file already closed`);
    readExactInto(this.src, at, dst);
  }
}
