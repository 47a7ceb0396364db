/**
 * Loader for the RWKV World vocabulary format (`rwkv_vocab_v20230424.txt`).
 *
 * Each line is `ID REPR LEN`:
 *   - ID   a decimal token id,
 *   - REPR a Python `str` literal ('abc', "it's", '\u00e9') or `bytes` literal (b'\x80'),
 *   - LEN  the token's length in bytes (UTF-8 bytes for a `str`).
 *
 * The official tokenizer `eval()`s REPR; here we parse the literal ourselves, working directly
 * on the file's bytes: the file is UTF-8, so a non-ASCII character inside a `str` literal is
 * already stored as exactly the UTF-8 bytes the token consists of and is copied verbatim
 * (after checking that it is well-formed UTF-8). Escapes are decoded with Python's rules.
 * Any deviation from the format is a FormatError naming the file and the line.
 */
import { FormatError } from '../errors.js';

/** Token ids above this are rejected: they would make the id-indexed tables absurdly large. */
const MAX_TOKEN_ID = 1 << 24;

/** A parsed vocabulary: the bytes of every token, indexed by id. */
export interface Vocab {
  /** One more than the largest id in the file. */
  readonly size: number;
  /** The bytes of all tokens, concatenated in id order. */
  readonly data: Uint8Array;
  /** Token `id` is `data[offsets[id] .. offsets[id + 1])`; ids missing from the file have no bytes. */
  readonly offsets: Uint32Array;
  /** Whether `id` appears in the file (ids absent from the file, e.g. 0, are still valid but decode to nothing). */
  readonly present: Uint8Array;
}

const BACKSLASH = 0x5c;
const SPACE = 0x20;
const NEWLINE = 0x0a;
const CR = 0x0d;

/** Simple one-character escapes shared by `str` and `bytes` literals. */
const SIMPLE_ESCAPES: Record<number, number> = {
  0x5c: 0x5c, // \\
  0x27: 0x27, // \'
  0x22: 0x22, // \"
  0x61: 0x07, // \a
  0x62: 0x08, // \b
  0x66: 0x0c, // \f
  0x6e: 0x0a, // \n
  0x72: 0x0d, // \r
  0x74: 0x09, // \t
  0x76: 0x0b, // \v
};

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/**
 * Length of the well-formed UTF-8 sequence starting at `buf[i]` (whose lead byte is >= 0x80),
 * or -1 if it is not well-formed (bad lead byte, bad continuation, overlong, surrogate, > U+10FFFF).
 */
function utf8SequenceLength(buf: Uint8Array, i: number, end: number): number {
  const b0 = buf[i]!;
  let need: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (b0 >= 0xc2 && b0 <= 0xdf) need = 1;
  else if (b0 >= 0xe0 && b0 <= 0xef) {
    need = 2;
    if (b0 === 0xe0) lo = 0xa0; // no overlongs
    if (b0 === 0xed) hi = 0x9f; // no surrogates
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    need = 3;
    if (b0 === 0xf0) lo = 0x90; // no overlongs
    if (b0 === 0xf4) hi = 0x8f; // nothing above U+10FFFF
  } else return -1;
  if (i + need >= end) return -1; // truncated sequence
  for (let k = 1; k <= need; k++) {
    const b = buf[i + k]!;
    if (k === 1 ? b < lo || b > hi : b < 0x80 || b > 0xbf) return -1;
  }
  return need + 1;
}

/** Appends the UTF-8 encoding of code point `cp` (not a surrogate, <= U+10FFFF) at `out[o]`; returns the new offset. */
function writeUtf8(out: Uint8Array, o: number, cp: number): number {
  if (cp < 0x80) {
    out[o++] = cp;
  } else if (cp < 0x800) {
    out[o++] = 0xc0 | (cp >> 6);
    out[o++] = 0x80 | (cp & 0x3f);
  } else if (cp < 0x10000) {
    out[o++] = 0xe0 | (cp >> 12);
    out[o++] = 0x80 | ((cp >> 6) & 0x3f);
    out[o++] = 0x80 | (cp & 0x3f);
  } else {
    out[o++] = 0xf0 | (cp >> 18);
    out[o++] = 0x80 | ((cp >> 12) & 0x3f);
    out[o++] = 0x80 | ((cp >> 6) & 0x3f);
    out[o++] = 0x80 | (cp & 0x3f);
  }
  return o;
}

/** Thrown inside the line parser; turned into a FormatError with file and line by the caller. */
class LineError extends Error {}

/**
 * Parses the Python literal starting at `buf[pos]` (and ending before `end`), writing the token's
 * bytes to `out` from `outPos`. Returns [position after the closing quote, new output position].
 * Note: every escape produces no more bytes than its source text, so `out` never needs more room
 * than the literal's own length.
 */
function parseLiteral(buf: Uint8Array, pos: number, end: number, out: Uint8Array, outPos: number): [number, number] {
  let isBytes = false;
  let c = buf[pos];
  if (c === 0x62 || c === 0x42) {
    // b'...' / B'...'
    isBytes = true;
    c = buf[++pos];
  }
  if (c !== 0x27 && c !== 0x22) {
    throw new LineError("expected a Python string literal ('...', \"...\" or b'...')");
  }
  const quote = c;
  pos++;
  if (pos + 1 < end && buf[pos] === quote && buf[pos + 1] === quote) {
    throw new LineError('triple-quoted literals are not supported');
  }
  let o = outPos;
  for (;;) {
    if (pos >= end) throw new LineError('unterminated string literal');
    c = buf[pos]!;
    if (c === quote) return [pos + 1, o];
    if (c !== BACKSLASH) {
      if (c < 0x80) {
        out[o++] = c;
        pos++;
      } else {
        if (isBytes) throw new LineError('bytes literal contains a non-ASCII character');
        const n = utf8SequenceLength(buf, pos, end);
        if (n < 0) throw new LineError('invalid UTF-8 in string literal');
        for (let k = 0; k < n; k++) out[o++] = buf[pos + k]!;
        pos += n;
      }
      continue;
    }
    // Escape sequence.
    if (pos + 1 >= end) throw new LineError('unterminated string literal');
    const e = buf[pos + 1]!;
    const simple = SIMPLE_ESCAPES[e];
    if (simple !== undefined) {
      out[o++] = simple;
      pos += 2;
      continue;
    }
    if (e >= 0x30 && e <= 0x37) {
      // Octal escape: up to three digits.
      let v = 0;
      let k = 1;
      while (k <= 3 && pos + k < end && buf[pos + k]! >= 0x30 && buf[pos + k]! <= 0x37) {
        v = v * 8 + (buf[pos + k]! - 0x30);
        k++;
      }
      if (isBytes) {
        if (v > 0xff) throw new LineError(`octal escape out of range for bytes: \\${v.toString(8)}`);
        out[o++] = v;
      } else {
        o = writeUtf8(out, o, v);
      }
      pos += k;
      continue;
    }
    let digits = 0;
    if (e === 0x78) digits = 2; // \xhh
    else if (!isBytes && e === 0x75) digits = 4; // \uXXXX
    else if (!isBytes && e === 0x55) digits = 8; // \UXXXXXXXX
    if (digits > 0) {
      let v = 0;
      for (let k = 0; k < digits; k++) {
        const h = pos + 2 + k < end ? hexValue(buf[pos + 2 + k]!) : -1;
        if (h < 0) throw new LineError(`truncated \\${String.fromCharCode(e)} escape`);
        v = v * 16 + h;
      }
      if (isBytes) {
        out[o++] = v;
      } else {
        if (v > 0x10ffff) throw new LineError(`escape \\U${v.toString(16)} is beyond U+10FFFF`);
        if (v >= 0xd800 && v <= 0xdfff) {
          throw new LineError(`escape for lone surrogate U+${v.toString(16).toUpperCase()} has no UTF-8 encoding`);
        }
        o = writeUtf8(out, o, v);
      }
      pos += 2 + digits;
      continue;
    }
    if (!isBytes && e === 0x4e) throw new LineError('\\N{...} escapes are not supported');
    // Python keeps unrecognised escapes as-is: the backslash and the character both stay.
    out[o++] = BACKSLASH;
    pos++;
  }
}

/** Whether `bytes` are valid UTF-8 (the platform-neutral stand-in for Node's buffer.isUtf8). */
function isUtf8(bytes: Uint8Array): boolean {
  try {
    utf8Fatal.decode(bytes);
    return true;
  } catch {
    return false;
  }
}
const utf8Fatal = new TextDecoder('utf-8', { fatal: true });

/**
 * Parses a vocabulary file's contents. `name` is used in error messages (normally the file path).
 */
export function parseVocab(bytes: Uint8Array, name: string): Vocab {
  // Uint8Array's native indexOf serves the fast path below.
  const buf = bytes;
  // Every token is no longer than its literal, so the file size bounds the total token bytes.
  const data = new Uint8Array(buf.length);
  // Fast path: when the whole file is valid UTF-8, a `str` literal without backslashes is just
  // its bytes between the quotes (found with the native indexOf). Everything else goes through parseLiteral.
  const fileIsUtf8 = isUtf8(buf);
  let nextBackslash = -1; // the next backslash at or after the current literal (buf.length: none)

  let dataLen = 0;
  // Per line, in file order: id, start and end of its bytes in `data`, line number.
  let ids = new Int32Array(1 << 16);
  let starts = new Uint32Array(1 << 16);
  let count = 0;
  let maxId = -1;

  let lineNo = 0;
  let pos = 0;
  const n = buf.length;
  while (pos < n) {
    lineNo++;
    let eol = buf.indexOf(NEWLINE, pos);
    if (eol < 0) eol = n;
    let end = eol;
    if (end > pos && buf[end - 1] === CR) end--;
    try {
      if (end === pos) throw new LineError('empty line');
      // ID
      let p = pos;
      let id = 0;
      while (p < end && isDigit(buf[p]!)) {
        id = id * 10 + (buf[p]! - 0x30);
        if (id > MAX_TOKEN_ID) throw new LineError(`token id is larger than ${MAX_TOKEN_ID}`);
        p++;
      }
      if (p === pos) throw new LineError('expected a token id at the start of the line');
      if (buf[p] !== SPACE || p >= end) throw new LineError('expected a space after the token id');
      p++;
      // REPR
      const tokenStart = dataLen;
      const quote = buf[p]!;
      let plain = false;
      if (fileIsUtf8 && (quote === 0x27 || quote === 0x22)) {
        if (nextBackslash < p) {
          const found = buf.indexOf(BACKSLASH, p);
          nextBackslash = found < 0 ? buf.length : found;
        }
        const close = buf.indexOf(quote, p + 1);
        if (close > p + 1 && close < end && nextBackslash > close) {
          // (A byte loop: tokens are short, and Buffer.copy has a high per-call cost.)
          for (let q = p + 1; q < close; q++) data[dataLen++] = buf[q]!;
          p = close + 1;
          plain = true;
        }
      }
      if (!plain) [p, dataLen] = parseLiteral(buf, p, end, data, dataLen);
      const tokenLen = dataLen - tokenStart;
      // LEN
      if (p >= end || buf[p] !== SPACE) throw new LineError('expected a space and the byte length after the literal');
      p++;
      let declared = 0;
      const lenStart = p;
      while (p < end && isDigit(buf[p]!)) {
        declared = declared * 10 + (buf[p]! - 0x30);
        p++;
      }
      if (p === lenStart || p !== end) throw new LineError('expected the byte length (a number) at the end of the line');
      if (declared !== tokenLen) {
        throw new LineError(`the length field says ${declared} bytes but the literal is ${tokenLen} bytes`);
      }
      if (tokenLen === 0) throw new LineError('empty token');
      if (count === ids.length) {
        const grownIds = new Int32Array(count * 2);
        grownIds.set(ids);
        ids = grownIds;
        const grownStarts = new Uint32Array(count * 2);
        grownStarts.set(starts);
        starts = grownStarts;
      }
      ids[count] = id;
      starts[count] = tokenStart;
      count++;
      if (id > maxId) maxId = id;
    } catch (err) {
      if (err instanceof LineError) throw new FormatError(`${name}:${lineNo}: malformed vocabulary line: ${err.message}`);
      throw err;
    }
    pos = eol + 1;
  }
  if (count === 0) throw new FormatError(`${name}: the vocabulary file is empty`);

  const size = maxId + 1;
  const present = new Uint8Array(size);
  const offsets = new Uint32Array(size + 1);
  let inOrder = true;
  for (let k = 1; k < count && inOrder; k++) inOrder = ids[k]! > ids[k - 1]!;
  if (inOrder) {
    // The official file lists ids in increasing order: the bytes are already where they belong.
    let k = 0;
    for (let id = 0; id < size; id++) {
      if (ids[k] === id) {
        offsets[id] = starts[k]!;
        present[id] = 1;
        k++;
      } else {
        offsets[id] = k < count ? starts[k]! : dataLen; // an id missing from the file: no bytes
      }
    }
    offsets[size] = dataLen;
    return { size, data: new Uint8Array(data.buffer, data.byteOffset, dataLen), offsets, present };
  }

  // Otherwise reorder the tokens by id.
  const lineOfId = new Int32Array(size).fill(-1);
  for (let k = 0; k < count; k++) {
    const id = ids[k]!;
    if (lineOfId[id]! >= 0) {
      // Lines are never skipped, so the k-th token is on line k + 1.
      throw new FormatError(`${name}:${k + 1}: duplicate token id ${id} (first defined on line ${lineOfId[id]! + 1})`);
    }
    lineOfId[id] = k;
  }
  const sorted = new Uint8Array(dataLen);
  let o = 0;
  for (let id = 0; id < size; id++) {
    offsets[id] = o;
    const k = lineOfId[id]!;
    if (k < 0) continue;
    present[id] = 1;
    const s = starts[k]!;
    const e = k + 1 < count ? starts[k + 1]! : dataLen;
    sorted.set(data.subarray(s, e), o);
    o += e - s;
  }
  offsets[size] = o;
  return { size, data: sorted, offsets, present };
}
