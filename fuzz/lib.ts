/**
 * Fuzzer building blocks: a seeded random stream, "interesting" numbers, byte-level and JSON-level mutations, and
 * the shape of a case (a set of files plus how to load them).
 *
 * Everything here is deterministic given the seed: a case is a pure function of (seed, kind, index).
 */

export const KINDS = ['pth', 'safetensors', 'folder', 'gguf', 'vocab', 'state', 'chat'] as const;
export type Kind = (typeof KINDS)[number];

/** What the worker does with a case. */
export type Target = 'checkpoint' | 'vocab' | 'state' | 'chat';

/** One file of a case. Regular files have bytes; the others exercise the "only regular files" rule. */
export type CaseFile =
  | { name: string; type: 'file'; bytes: Uint8Array; /** extend (sparse) to this size after writing */ sparse?: number }
  | { name: string; type: 'fifo' }
  | { name: string; type: 'dir' }
  | { name: string; type: 'symlink'; target: string };

export interface Case {
  kind: Kind;
  target: Target;
  /** What to open, relative to the case folder ('.' = the folder itself). */
  entry: string;
  files: CaseFile[];
  /** WorldTokenizer option (vocab cases); non-finite values are allowed here. */
  vocabSize?: number;
  /** The mutations applied, for the report and for dedup of hangs/spikes. */
  mutation: string[];
}

/** Deterministic 32-bit hash of strings/numbers (FNV-1a then a murmur finaliser). */
export function hash(...parts: Array<string | number>): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    const s = String(p);
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193); }
    h ^= 0xff; h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b); h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35); h ^= h >>> 16;
  return h >>> 0;
}

/** mulberry32: small, fast, good enough for fuzzing. */
export class Rng {
  private s: number;
  constructor(seed: number) { this.s = seed >>> 0; }
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0);
  }
  /** Uniform in [0, 1). */
  float(): number { return this.u32() / 4294967296; }
  /** Integer in [0, n). */
  int(n: number): number { return n <= 0 ? 0 : Math.floor(this.float() * n); }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number { return lo + this.int(hi - lo + 1); }
  chance(p: number): boolean { return this.float() < p; }
  pick<T>(a: readonly T[]): T { return a[this.int(a.length)]!; }
  /** Picks by weight: [[weight, value], ...]. */
  weighted<T>(a: ReadonlyArray<readonly [number, T]>): T {
    let total = 0;
    for (const [w] of a) total += w;
    let r = this.float() * total;
    for (const [w, v] of a) { r -= w; if (r < 0) return v; }
    return a[a.length - 1]![1];
  }
}

/** Numbers that break size and offset arithmetic. */
export const INTERESTING: readonly number[] = [
  0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 511, 512, 1023, 1024, 4095, 4096, 65535, 65536,
  0x7fffffff, 0x80000000, 0xffffffff, 2 ** 32, 2 ** 32 + 1, 2 ** 40, 2 ** 48, 2 ** 52, 2 ** 53 - 1, 2 ** 53,
  2 ** 53 + 2, 2 ** 62, 2 ** 63, 2 ** 64, 1e300, 536870912, 536870913, 1073741824, 2147483648 + 1,
];

/** An interesting number near `base` (a real size/offset) or from the table, sometimes negative or fractional. */
export function interestingNumber(r: Rng, base?: number): number {
  const choice = r.int(10);
  if (base !== undefined && choice < 4) {
    return r.pick([base + 1, base - 1, base * 2, Math.floor(base / 2), base + r.range(-8, 8), base * 4096, -base, base + 0.5]);
  }
  if (choice === 4) return -r.pick(INTERESTING);
  if (choice === 5) return r.pick(INTERESTING) + 0.5;
  if (choice === 6) return r.pick([NaN, Infinity, -Infinity, -0]);
  return r.pick(INTERESTING);
}

/** An interesting unsigned value for a field of `bytes` bytes (1, 2, 4 or 8). */
export function interestingUnsigned(r: Rng, bytes: number, current: bigint): bigint {
  const max = (1n << BigInt(8 * bytes)) - 1n;
  const cands: bigint[] = [0n, 1n, max, max - 1n, max >> 1n, (max >> 1n) + 1n, current + 1n, current - 1n, current * 2n,
    current + BigInt(r.range(-64, 64)), BigInt(r.pick(INTERESTING.filter((x) => Number.isSafeInteger(x))))];
  if (bytes >= 4) cands.push(0x7fffffffn, 0x80000000n, 0xfffffffen, 0x100000000n);
  if (bytes === 8) cands.push(1n << 53n, (1n << 53n) + 1n, 1n << 62n, 1n << 63n);
  const v = r.pick(cands);
  return ((v % (max + 1n)) + (max + 1n)) % (max + 1n);
}

export function readUint(b: Uint8Array, at: number, bytes: number): bigint {
  let v = 0n;
  for (let i = bytes - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[at + i] ?? 0);
  return v;
}

export function writeUint(b: Uint8Array, at: number, bytes: number, v: bigint): void {
  for (let i = 0; i < bytes; i++) { if (at + i < b.length) b[at + i] = Number((v >> BigInt(8 * i)) & 0xffn); }
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

const enc = new TextEncoder();
export const utf8 = (s: string): Uint8Array => enc.encode(s);

/** A known numeric field of a binary file: where it is and how wide. */
export interface Field { at: number; bytes: number; what: string }

/** Sets one known field to an interesting value. */
export function mutateField(r: Rng, b: Uint8Array, f: Field): string {
  const v = interestingUnsigned(r, f.bytes, readUint(b, f.at, f.bytes));
  writeUint(b, f.at, f.bytes, v);
  return `${f.what}=${v}`;
}

/** Random byte-level damage (structure-blind): flips, overwrites, inserts, deletes, duplicates, truncation. */
export function mutateBytes(r: Rng, input: Uint8Array, region?: { start: number; end: number }): { bytes: Uint8Array; what: string } {
  let b: Uint8Array = input.slice();
  const lo = region?.start ?? 0;
  const hi = Math.max(lo + 1, Math.min(region?.end ?? b.length, b.length));
  const at = (): number => r.range(lo, hi - 1);
  const op = r.int(9);
  switch (op) {
    case 0: { const p = at(); b[p]! ^= 1 << r.int(8); return { bytes: b, what: `bitflip@${p}` }; }
    case 1: { const p = at(); b[p] = r.pick([0, 0xff, 0x7f, 0x80, r.int(256)]); return { bytes: b, what: `byte@${p}` }; }
    case 2: { const p = at(); const n = r.pick([2, 4, 8]); writeUint(b, p, n, interestingUnsigned(r, n, readUint(b, p, n))); return { bytes: b, what: `int${n * 8}@${p}` }; }
    case 3: { const p = at(); const ins = new Uint8Array(r.range(1, 16)).map(() => r.int(256)); b = concat([b.subarray(0, p), ins, b.subarray(p)]); return { bytes: b, what: `insert${ins.length}@${p}` }; }
    case 4: { const p = at(); const n = r.range(1, 64); b = concat([b.subarray(0, p), b.subarray(Math.min(b.length, p + n))]); return { bytes: b, what: `delete${n}@${p}` }; }
    case 5: { const p = at(); const n = r.range(1, 256); const piece = b.slice(p, p + n); b = concat([b.subarray(0, p), piece, piece, b.subarray(p + piece.length)]); return { bytes: b, what: `dup${n}@${p}` }; }
    case 6: { const p = r.int(b.length + 1); return { bytes: b.slice(0, p), what: `truncate@${p}` }; }
    case 7: { const n = r.range(1, 64); const p = at(); for (let i = 0; i < n && p + i < b.length; i++) b[p + i] = r.int(256); return { bytes: b, what: `garble${n}@${p}` }; }
    default: { const tail = new Uint8Array(r.pick([1, 7, 100, 4096])).map(() => r.int(256)); return { bytes: concat([b, tail]), what: `append${tail.length}` }; }
  }
}

// ---- JSON values ----

/** A random JSON value of a surprising type. */
export function randomJson(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 2 ? 6 : 9)) {
    case 0: return null;
    case 1: return r.chance(0.5);
    case 2: return interestingNumber(r);
    case 3: return r.pick(['', 'x', 'F32', 'BF16', '__proto__', '../x', 'a\u0000b', '\ud800', 'é'.repeat(r.range(1, 40)), String(r.u32())]);
    case 4: return r.int(3) - 1;
    case 5: return r.pick([[], {}, [0], [1, 2]]);
    case 6: return Array.from({ length: r.range(0, 4) }, () => randomJson(r, depth + 1));
    case 7: { const o: Record<string, unknown> = {}; for (let i = r.range(0, 3); i > 0; i--) o[r.pick(['a', 'dtype', 'shape', 'turns', '__proto__', 'constructor', String(i)])] = randomJson(r, depth + 1); return o; }
    default: return 'z'.repeat(r.pick([1000, 70000]));
  }
}

/** JSON text of `v`; infinities become 1e999 / -1e999 (which JSON.parse reads back as infinities), NaN null. */
export function jsonText(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isFinite(x) ? (Number.isNaN(x) ? null : x > 0 ? '\u0001INF' : '\u0001NINF') : x))
    .replace(/"\\u0001INF"/g, '1e999').replace(/"\\u0001NINF"/g, '-1e999');
}

/** Paths of every value in a JSON tree (as key lists). */
export function jsonPaths(v: unknown, prefix: Array<string | number> = [], out: Array<Array<string | number>> = [], limit = 2000): Array<Array<string | number>> {
  if (out.length >= limit) return out;
  out.push(prefix);
  if (Array.isArray(v)) v.forEach((x, i) => jsonPaths(x, [...prefix, i], out, limit));
  else if (v && typeof v === 'object') for (const k of Object.keys(v)) jsonPaths((v as Record<string, unknown>)[k], [...prefix, k], out, limit);
  return out;
}

/** A structural JSON mutation at a random place: change the value's type, delete/duplicate/rename a key, nest. */
export function mutateJson(r: Rng, root: unknown): { value: unknown; what: string } {
  const v = structuredClone(root);
  const paths = jsonPaths(v);
  const p = r.pick(paths);
  if (p.length === 0) return { value: r.chance(0.5) ? randomJson(r) : [v], what: 'root' };
  const parent = p.slice(0, -1).reduce<unknown>((o, k) => (o as Record<string | number, unknown>)[k], v) as Record<string | number, unknown>;
  const key = p[p.length - 1]!;
  const where = p.join('.');
  const cur = parent[key];
  switch (r.int(7)) {
    case 0: parent[key] = randomJson(r); return { value: v, what: `set ${where}` };
    case 1:
      if (Array.isArray(parent)) parent.splice(key as number, 1); else delete parent[key];
      return { value: v, what: `delete ${where}` };
    case 2:
      if (typeof cur === 'number') { parent[key] = interestingNumber(r, cur); return { value: v, what: `number ${where}` }; }
      if (typeof cur === 'string') { parent[key] = garbleString(r, cur); return { value: v, what: `string ${where}` }; }
      parent[key] = randomJson(r); return { value: v, what: `set ${where}` };
    case 3:
      if (!Array.isArray(parent)) {
        const nk = r.chance(0.5) ? garbleString(r, String(key)) : r.pick(['__proto__', 'constructor', 'hasOwnProperty', '', String(key) + ' ']);
        delete parent[key];
        parent[nk] = cur;
        return { value: v, what: `rename ${where}` };
      }
      parent.push(structuredClone(cur)); return { value: v, what: `dup ${where}` };
    case 4: parent[key] = [cur]; return { value: v, what: `wrap ${where}` };
    case 5: if (Array.isArray(cur)) { parent[key] = cur.length ? cur.slice(0, r.int(cur.length)) : [1]; return { value: v, what: `shorten ${where}` }; }
      parent[key] = { value: cur }; return { value: v, what: `box ${where}` };
    default: parent[key] = String(cur); return { value: v, what: `stringify ${where}` };
  }
}

/** A few characters changed (bit flips, control characters, surrogates, separators). */
export function garbleString(r: Rng, s: string): string {
  const chars = [...s];
  const n = r.range(1, 3);
  for (let i = 0; i < n; i++) {
    const p = r.int(chars.length + 1);
    const op = r.int(4);
    if (op === 0 && chars.length) chars[Math.min(p, chars.length - 1)] = String.fromCharCode((chars[Math.min(p, chars.length - 1)]!.charCodeAt(0) ^ (1 << r.int(7))));
    else if (op === 1) chars.splice(p, 0, r.pick(['\u0000', '/', '\\', '..', '\ud800', '\n', '"', '.', ' ', '\u202e']));
    else if (op === 2 && chars.length) chars.splice(p, 1);
    else chars.splice(p, 0, String.fromCharCode(r.int(0x3000)));
  }
  return chars.join('');
}

/** Textual damage to JSON (after serialising): truncation, deep nesting, duplicate keys, invalid UTF-8. */
export function mutateJsonText(r: Rng, text: string): { bytes: Uint8Array; what: string } {
  switch (r.int(6)) {
    case 0: return { bytes: utf8(text.slice(0, r.int(text.length))), what: 'json-truncate' };
    case 1: { const d = r.pick([100, 10_000, 200_000]); return { bytes: utf8('['.repeat(d) + ']'.repeat(d)), what: `json-nest${d}` }; }
    case 2: { // a duplicate key: the first entry again at the end
      const m = /^\{("(?:[^"\\]|\\.)*":)/.exec(text);
      if (m && text.length > 2) return { bytes: utf8(text.slice(0, -1) + ',' + m[1] + '{}' + '}'), what: 'json-dupkey' };
      return { bytes: utf8(text + '}'), what: 'json-extra' };
    }
    case 3: { const b = utf8(text); if (b.length) b[r.int(b.length)] = r.pick([0xff, 0xc0, 0x80, 0xed]); return { bytes: b, what: 'json-badutf8' }; }
    case 4: return { bytes: utf8(text.replace(/\d+/, (d) => d + '0'.repeat(r.pick([1, 20, 400])))), what: 'json-bignum' };
    default: return mutateBytes(r, utf8(text));
  }
}
