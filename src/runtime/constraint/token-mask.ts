/**
 * Token masks: which tokens of the vocabulary may come next, given an automaton state.
 *
 * A token is allowed iff every one of its bytes keeps the output a valid prefix. The vocabulary is walked as a
 * trie in its flattened form: the tokens sorted by their bytes, each with the length of the prefix it shares
 * with the previous one (lcp). The walk keeps the automaton state after each prefix length, so a shared
 * prefix is stepped once, and when a byte fails at depth d every following token that shares more than d bytes
 * is skipped without looking at it (a whole subtree of the trie). The World vocabulary has 65 529 tokens and
 * 116 078 distinct prefixes, so even a state that allows almost everything (inside a string) costs one walk
 * of ~116k automaton steps; structural states (after '{', ',' …) reject most first bytes and cost far less.
 * Inside a string (no constraint but its length) there is a shortcut: which tokens stay inside the string is
 * a property of the vocabulary alone, precomputed once per string-lexer state and length room, so only the
 * 256 tokens holding a quote byte are stepped. Masks are cached by state key (constraint/index.ts), so a
 * repeated state costs a lookup.
 */
import type { WorldTokenizer } from '../../tokenizer/index.js';
import type { Frame, JsonAutomaton } from './automaton.js';
import { STRING_CLOSE, STRING_NEW_CHAR, stringStep } from './lexers.js';

/** Bits of a string-table entry (see TokenIndex.stringTable). */
const ST_CLOSES = 1 << 30;
const ST_CHARS_SHIFT = 8;

/** The vocabulary flattened into a sorted trie walk (built once per tokenizer). */
export class TokenIndex {
  /** Tokens with at least one byte, sorted by their bytes. */
  readonly ids: Int32Array;
  /** lcp[k]: bytes token k shares with token k - 1 (0 for k = 0). */
  readonly lcp: Uint16Array;
  readonly starts: Uint32Array;
  readonly lens: Uint16Array;
  /** The sorted tokens' bytes, concatenated. */
  readonly bytes: Uint8Array;
  readonly maxLen: number;
  readonly vocabSize: number;
  /** rank[id]: the token's position in the sorted order (-1 for a token without bytes). */
  readonly rank: Int32Array;
  private readonly stringTables = new Map<number, Int32Array>();
  private readonly closers = new Map<number, Int32Array>();
  private readonly inner = new Map<number, { bits: Uint32Array; count: number }>();
  private static readonly cache = new WeakMap<WorldTokenizer, TokenIndex>();

  private constructor(tokenizer: WorldTokenizer) {
    this.vocabSize = tokenizer.vocabSize;
    const toks: { id: number; b: Buffer }[] = [];
    let total = 0;
    for (let id = 0; id < tokenizer.vocabSize; id++) {
      const b = tokenizer.tokenBytes(id);
      if (b.length === 0) continue;
      toks.push({ id, b: Buffer.from(b.buffer, b.byteOffset, b.length) });
      total += b.length;
    }
    toks.sort((x, y) => Buffer.compare(x.b, y.b));
    const n = toks.length;
    this.ids = new Int32Array(n);
    this.lcp = new Uint16Array(n);
    this.starts = new Uint32Array(n);
    this.lens = new Uint16Array(n);
    this.bytes = new Uint8Array(total);
    let o = 0;
    let maxLen = 0;
    for (let k = 0; k < n; k++) {
      const { id, b } = toks[k]!;
      this.ids[k] = id;
      this.starts[k] = o;
      this.lens[k] = b.length;
      this.bytes.set(b, o);
      o += b.length;
      maxLen = Math.max(maxLen, b.length);
      if (k > 0) {
        const prev = toks[k - 1]!.b;
        let l = 0;
        while (l < prev.length && l < b.length && prev[l] === b[l]) l++;
        this.lcp[k] = l;
      }
    }
    this.maxLen = maxLen;
    this.rank = new Int32Array(this.vocabSize).fill(-1);
    for (let k = 0; k < n; k++) this.rank[this.ids[k]!] = k;
  }

  /**
   * What every token does inside a JSON string whose lexer is in state `lex` (escapes allowed), by id: -1 when
   * the token has no bytes or some byte is not allowed before any closing quote; otherwise ST_CLOSES when it
   * contains the closing quote (the rest must be checked against the automaton), else the number of new
   * characters << ST_CHARS_SHIFT | the lexer state after it. Built on first use (one pass over the vocabulary).
   */
  stringTable(lex: number): Int32Array {
    let table = this.stringTables.get(lex);
    if (table) return table;
    table = new Int32Array(this.vocabSize).fill(-1);
    const { ids, starts, lens, bytes } = this;
    for (let k = 0; k < ids.length; k++) {
      let s = lex;
      let chars = 0;
      let v = -1;
      const end = starts[k]! + lens[k]!;
      for (let o = starts[k]!; ; o++) {
        if (o === end) { v = (chars << ST_CHARS_SHIFT) | s; break; }
        const r = stringStep(s, bytes[o]!, true);
        if (r === STRING_CLOSE) { v = ST_CLOSES; break; }
        if (r < 0) break;
        if (r & STRING_NEW_CHAR) chars++;
        s = r & 0xff;
      }
      table[ids[k]!] = v;
    }
    this.stringTables.set(lex, table);
    return table;
  }

  /** The tokens that contain the closing quote of a string whose lexer is in state `lex`. */
  stringClosers(lex: number): Int32Array {
    let list = this.closers.get(lex);
    if (!list) {
      const table = this.stringTable(lex);
      const ids: number[] = [];
      for (let id = 0; id < table.length; id++) if (table[id]! >= 0 && table[id]! & ST_CLOSES) ids.push(id);
      this.closers.set(lex, (list = Int32Array.from(ids)));
    }
    return list;
  }

  /**
   * The tokens that stay inside a string (lexer state `lex`) and add at most `room` characters: a bitmap and
   * its population. It depends on the vocabulary only, so it is shared by every grammar and context.
   */
  stringInner(lex: number, room: number): { bits: Uint32Array; count: number } {
    // No token adds more than maxLen characters: larger rooms are all the same.
    const r = Math.min(room, this.maxLen + 1);
    const key = lex * 1024 + r;
    let m = this.inner.get(key);
    if (!m) {
      const table = this.stringTable(lex);
      const bits = new Uint32Array((this.vocabSize + 31) >>> 5);
      let count = 0;
      for (let id = 0; id < table.length; id++) {
        const v = table[id]!;
        if (v >= 0 && !(v & ST_CLOSES) && v >>> ST_CHARS_SHIFT <= r) {
          bits[id >>> 5]! |= 1 << (id & 31);
          count++;
        }
      }
      this.inner.set(key, (m = { bits, count }));
    }
    return m;
  }

  /** The index of a tokenizer's vocabulary (built on first use, then shared). */
  static of(tokenizer: WorldTokenizer): TokenIndex {
    let index = TokenIndex.cache.get(tokenizer);
    if (!index) TokenIndex.cache.set(tokenizer, (index = new TokenIndex(tokenizer)));
    return index;
  }
}

/** Masks with at most this many tokens also keep their id list (applying them is then a short loop). */
const SPARSE_LIMIT = 4096;

/** The set of allowed tokens of one state: a bitmap, plus the id list when short. */
export class TokenMask {
  constructor(
    /** Bit `id & 31` of word `id >> 5` is set for an allowed token. */
    readonly bits: Uint32Array,
    readonly count: number,
    /** The allowed ids in increasing order, when count ≤ SPARSE_LIMIT. */
    readonly ids: Int32Array | null,
  ) {}

  has(id: number): boolean {
    return ((this.bits[id >>> 5]! >>> (id & 31)) & 1) === 1;
  }

  /** Writes `src` to `dst` with every disallowed token's logit set to -Infinity (dst may be src). */
  apply(src: Float32Array, dst: Float32Array): void {
    const n = Math.min(src.length, dst.length);
    if (this.ids) {
      if (dst === src) {
        const keep = new Float32Array(this.ids.length);
        for (let k = 0; k < this.ids.length; k++) keep[k] = src[this.ids[k]!]!;
        dst.fill(-Infinity);
        for (let k = 0; k < this.ids.length; k++) if (this.ids[k]! < n) dst[this.ids[k]!] = keep[k]!;
      } else {
        dst.fill(-Infinity);
        for (let k = 0; k < this.ids.length; k++) {
          const id = this.ids[k]!;
          if (id < n) dst[id] = src[id]!;
        }
      }
      return;
    }
    const bits = this.bits;
    for (let base = 0; base < n; base += 32) {
      const word = bits[base >>> 5]! | 0;
      const end = Math.min(base + 32, n);
      if (word === -1) {
        if (dst !== src) for (let id = base; id < end; id++) dst[id] = src[id]!;
      } else if (word === 0) {
        for (let id = base; id < end; id++) dst[id] = -Infinity;
      } else {
        for (let id = base; id < end; id++) dst[id] = (word >>> (id - base)) & 1 ? src[id]! : -Infinity;
      }
    }
    for (let id = n; id < dst.length; id++) dst[id] = -Infinity;
  }
}

/**
 * The tokens allowed from `state`: every token whose bytes all step the automaton, plus the end-of-text token
 * `eosId` when the output is complete. `generic` turns off the string-table shortcut (for tests: both agree).
 */
export function computeMask(index: TokenIndex, automaton: JsonAutomaton, state: Frame, eosId: number, generic = false): TokenMask {
  const { ids, lcp, starts, lens, bytes } = index;
  const n = ids.length;
  const bits = new Uint32Array((index.vocabSize + 31) >>> 5);
  let count = 0;
  const set = (id: number) => {
    bits[id >>> 5]! |= 1 << (id & 31);
    count++;
  };
  if (automaton.complete(state) && eosId >= 0 && eosId < index.vocabSize) set(eosId);
  const lex = generic ? -1 : automaton.freeString(state);
  if (lex >= 0) {
    // Inside a string (the common permissive case): the tokens that stay inside it come from a precomputed,
    // context-free bitmap; only the few that contain the closing quote are stepped through the automaton.
    const inner = index.stringInner(lex, automaton.stringRoom(state));
    // (A string in progress is never a complete value, so the end-of-text bit was not set above.)
    bits.set(inner.bits);
    count = inner.count;
    for (const id of index.stringClosers(lex)) {
      const k = index.rank[id]!;
      let f: Frame | null = state;
      for (let o = starts[k]!, end = o + lens[k]!; o < end && f; o++) f = automaton.step(f, bytes[o]!);
      if (f) set(id);
    }
    return finish(bits, count);
  }
  // states[d]: the state after the first d bytes of the current token (valid up to the current depth).
  const states = new Array<Frame | null>(index.maxLen + 1).fill(null);
  states[0] = state;
  let k = 0;
  while (k < n) {
    let d = lcp[k]!;
    const start = starts[k]!;
    const len = lens[k]!;
    let f = states[d]!;
    while (d < len) {
      const next = automaton.step(f, bytes[start + d]!);
      if (next === null) break;
      f = next;
      states[++d] = f;
    }
    k++;
    if (d === len) {
      set(ids[k - 1]!);
    } else {
      // Byte d failed: skip every following token that shares it (the rest of this trie subtree).
      while (k < n && lcp[k]! > d) k++;
    }
  }
  return finish(bits, count);
}

/** The mask of a bitmap (with its id list when short). */
function finish(bits: Uint32Array, count: number): TokenMask {
  let list: Int32Array | null = null;
  if (count <= SPARSE_LIMIT) {
    list = new Int32Array(count);
    let o = 0;
    for (let w = 0; w < bits.length; w++) {
      let word = bits[w]!;
      while (word !== 0) {
        const bit = 31 - Math.clz32(word & -word);
        list[o++] = (w << 5) | bit;
        word &= word - 1;
      }
    }
  }
  return new TokenMask(bits, count, list);
}
