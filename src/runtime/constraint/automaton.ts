/**
 * A byte-level pushdown automaton for JSON values of a schema tree (see schema.ts): given the output bytes so
 * far (as a state), it says whether one more byte keeps the output a valid prefix of a value that matches.
 *
 * A state is an immutable stack of frames (a linked list through `parent`), so states can be shared and kept
 * (the token-mask walk keeps one per prefix length). A frame is one value being written (object, key, array,
 * string, number, literal) or the document around the top-level value. A child value's `parent` is the
 * *continuation*: the container already advanced past the child, so finishing a value just returns its parent.
 * Numbers and literals such as enum [1, 12] only end when a byte that cannot continue them arrives: that byte
 * is then handed to the continuation.
 *
 * Whitespace policy: where JSON allows whitespace (between the tokens of objects and arrays, and before the
 * top-level value) a gap may hold spaces and tabs and at most one line feed (no CR), at most `maxWhitespace`
 * bytes in all (default 16: room for a line break and some indentation), so a model cannot loop on whitespace
 * forever or write blank lines; nothing may follow the top-level value (generation ends there).
 * Nesting is limited to MAX_DEPTH levels (it only matters for schemas allowing any value).
 */
import type { LiteralTrie } from './literal-trie.js';
import type { SchemaCompiler, SchemaNode } from './schema.js';
import { LiteralTrie as Trie } from './literal-trie.js';
import { S_NORMAL, STRING_CLOSE, STRING_NEW_CHAR, stringStep, numberStart, numberStep, numberAccepts } from './lexers.js';

export const DEFAULT_MAX_WHITESPACE = 16;
/** Most nested frames (objects, arrays, keys, values) at once. */
export const MAX_DEPTH = 64;

// Frame modes.
const DOC = 0;
const OBJ = 1;
const KEY = 2;
const ARR = 3;
const STR = 4;
const NUM = 5;
const LIT = 6;

// Object phases (Frame.p of an OBJ frame).
const O_OPEN = 0; // after '{'
const O_AFTER_KEY = 1; // before ':'
const O_AFTER_COLON = 2; // before the value
const O_AFTER_VALUE = 3; // before ',' or '}'
const O_AFTER_COMMA = 4; // before the next key

// Array phases.
const A_OPEN = 0; // after '['
const A_AFTER_ITEM = 1; // before ',' or ']'
const A_AFTER_COMMA = 2; // before the next item

const QUOTE = 0x22;

function isWhitespace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x09 || b === 0x0d;
}

/**
 * One frame of a state. Fields by mode:
 *   DOC  p: 0 before the value, 1 after it; w: whitespace so far (see `space`)
 *   OBJ  p: phase; i: index of the next listed property that may be written; t: the property whose value comes
 *        next (-1: an extra one); w: whitespace so far
 *   KEY  (parent: the OBJ frame) i: the object's i; t: node in `trie` (the candidate names; -1: none matches);
 *        p: string-lexer state of an extra name (-1: not an extra name); raw: an extra name's bytes so far
 *   ARR  p: phase; i: items so far (saturated at the bound that matters); w: whitespace so far
 *   STR  p: string-lexer state; i: characters so far (saturated)
 *   NUM  p: number-lexer state
 *   LIT  t: node in `trie`
 */
export class Frame {
  readonly depth: number;
  /** Memoised `JsonAutomaton.key`. */
  keyMemo: string | undefined;

  constructor(
    readonly mode: number,
    readonly node: SchemaNode,
    readonly p: number,
    readonly i: number,
    readonly t: number,
    readonly w: number,
    readonly parent: Frame | null,
    readonly trie: LiteralTrie | null = null,
    readonly raw = '',
  ) {
    this.depth = parent ? parent.depth + 1 : 0;
  }

  withWhitespace(w: number): Frame {
    return new Frame(this.mode, this.node, this.p, this.i, this.t, w, this.parent, this.trie, this.raw);
  }
}

type ObjectNode = Extract<SchemaNode, { kind: 'object' }>;

/** Per-object-node tables, built on first use. */
class ObjectInfo {
  /** nextRequired[i]: the first required property at index ≥ i (props.length if none). */
  readonly nextRequired: Int32Array;
  /** The listed names' JSON content (latin1 of the UTF-8 bytes), which an extra name must differ from. */
  readonly names: Set<string>;
  private readonly tries: (LiteralTrie | null | undefined)[] = [];

  constructor(readonly node: ObjectNode) {
    const n = node.props.length;
    this.nextRequired = new Int32Array(n + 1).fill(n);
    for (let k = n - 1; k >= 0; k--) this.nextRequired[k] = node.props[k]!.required ? k : this.nextRequired[k + 1]!;
    this.names = new Set(node.props.map((p) => String.fromCharCode(...p.keyBytes)));
  }

  /** No required property is left from index i on. */
  canClose(i: number): boolean {
    return this.nextRequired[i] === this.node.props.length;
  }

  /** Another key can be written at index i. */
  canContinue(i: number): boolean {
    return i < this.node.props.length || this.node.additional !== null;
  }

  /** Extra (unlisted) names can be written at index i. */
  extras(i: number): boolean {
    return this.node.additional !== null && this.canClose(i);
  }

  /** Trie of the names that may come at index i: props[i .. first required one], or null if none. */
  candidates(i: number): LiteralTrie | null {
    let trie = this.tries[i];
    if (trie === undefined) {
      const n = this.node.props.length;
      const last = Math.min(this.nextRequired[i]!, n - 1);
      trie = i < n ? new Trie(this.node.props.slice(i, last + 1).map((p) => p.keyBytes)) : null;
      this.tries[i] = trie;
    }
    return trie;
  }
}

export interface AutomatonOptions {
  /** Most whitespace bytes in one gap (default 16; 0 = compact output). */
  maxWhitespace?: number;
}

export class JsonAutomaton {
  readonly maxWhitespace: number;
  private readonly objects = new Map<SchemaNode, ObjectInfo>();

  constructor(
    readonly root: SchemaNode,
    private readonly compiler: SchemaCompiler,
    opts: AutomatonOptions = {},
  ) {
    this.maxWhitespace = opts.maxWhitespace ?? DEFAULT_MAX_WHITESPACE;
  }

  /** The state before any output. */
  start(): Frame {
    return new Frame(DOC, this.root, 0, 0, 0, 0, null);
  }

  /** The state after one more byte, or null when the byte cannot continue a valid output. */
  step(f: Frame, b: number): Frame | null {
    switch (f.mode) {
      case DOC:
        if (f.p === 1) return null;
        if (isWhitespace(b)) return this.space(f, b);
        return this.begin(f.node, b, new Frame(DOC, f.node, 1, 0, 0, 0, null));
      case OBJ:
        return this.objectStep(f, b);
      case KEY:
        return this.keyStep(f, b);
      case ARR:
        return this.arrayStep(f, b);
      case STR: {
        const node = f.node as Extract<SchemaNode, { kind: 'string' }>;
        const r = stringStep(f.p, b, true);
        if (r === STRING_CLOSE) return f.i >= node.minLength ? f.parent : null;
        if (r < 0) return null;
        let i = f.i;
        if (r & STRING_NEW_CHAR) {
          if (i >= node.maxLength) return null;
          // Count only as far as a bound can still be affected (keeps states, and mask-cache keys, few).
          i = Math.min(i + 1, Number.isFinite(node.maxLength) ? node.maxLength : node.minLength);
        }
        const s = r & 0xff;
        if (s === f.p && i === f.i) return f; // the common case: no allocation
        return new Frame(STR, node, s, i, 0, 0, f.parent);
      }
      case NUM: {
        const node = f.node as Extract<SchemaNode, { kind: 'number' }>;
        const s = numberStep(f.p, b, node.integer);
        if (s >= 0) return new Frame(NUM, node, s, 0, 0, 0, f.parent);
        return numberAccepts(f.p) ? this.step(f.parent!, b) : null;
      }
      case LIT: {
        const c = f.trie!.child(f.t, b);
        if (c >= 0) return new Frame(LIT, f.node, 0, 0, c, 0, f.parent, f.trie);
        return f.trie!.end(f.t) >= 0 ? this.step(f.parent!, b) : null;
      }
      default:
        return null;
    }
  }

  /** Whether the output so far is a complete value (it may still be continued, e.g. a number). */
  complete(f: Frame): boolean {
    for (let g: Frame | null = f; g; g = g.parent) {
      if (g.mode === DOC) return g.p === 1;
      if (g.mode === NUM && numberAccepts(g.p)) continue;
      if (g.mode === LIT && g.trie!.end(g.t) >= 0) continue;
      return false;
    }
    return false;
  }

  /**
   * The string-lexer state when the state is inside a string with no constraint on its content other than its
   * length (a string value, or a name in an object that takes any names), else -1. The token mask decides such
   * states from a per-vocabulary table (token-mask.ts) instead of stepping every token.
   */
  freeString(f: Frame): number {
    if (f.mode === STR) return f.p;
    if (f.mode === KEY && f.t < 0 && f.p >= 0 && this.info(f.node as ObjectNode).names.size === 0) return f.p;
    return -1;
  }

  /** How many more characters the string of a `freeString` state may take. */
  stringRoom(f: Frame): number {
    if (f.mode !== STR) return Infinity;
    return (f.node as Extract<SchemaNode, { kind: 'string' }>).maxLength - f.i;
  }

  /** A string that identifies the state (equal keys: the same bytes are allowed from both states). */
  key(f: Frame): string {
    if (f.keyMemo === undefined) {
      const own = `${f.mode},${f.node.id},${f.p},${f.i},${f.t},${f.w}${f.raw ? JSON.stringify(f.raw) : ''}`;
      f.keyMemo = f.parent ? `${own}/${this.key(f.parent)}` : own;
    }
    return f.keyMemo;
  }

  /** The first byte `b` of a value of `node`, which returns to `cont` when finished. */
  private begin(node: SchemaNode, b: number, cont: Frame): Frame | null {
    if (cont.depth >= MAX_DEPTH) return null;
    switch (node.kind) {
      case 'any': {
        const c = this.compiler;
        const sub = b === 0x7b ? c.anyObject : b === 0x5b ? c.anyArray : b === QUOTE ? c.anyString
          : b === 0x2d || (b >= 0x30 && b <= 0x39) ? c.anyNumber : c.anyLiteral;
        return this.begin(sub, b, cont);
      }
      case 'object':
        return b === 0x7b ? new Frame(OBJ, node, O_OPEN, 0, -1, 0, cont) : null;
      case 'array':
        return b === 0x5b ? new Frame(ARR, node, A_OPEN, 0, 0, 0, cont) : null;
      case 'string':
        return b === QUOTE ? new Frame(STR, node, S_NORMAL, 0, 0, 0, cont) : null;
      case 'number': {
        const s = numberStart(b);
        return s >= 0 ? new Frame(NUM, node, s, 0, 0, 0, cont) : null;
      }
      case 'literal': {
        const c = node.trie.child(0, b);
        return c >= 0 ? new Frame(LIT, node, 0, 0, c, 0, cont, node.trie) : null;
      }
      case 'union': {
        const o = node.pick[b];
        return o ? this.begin(o, b, cont) : null;
      }
    }
  }

  /** One whitespace byte in a gap (see the policy at the top); w = bytes so far | (a line break seen) << 8. */
  private space(f: Frame, b: number): Frame | null {
    const n = f.w & 0xff;
    const lineBreak = f.w >> 8;
    if (n >= this.maxWhitespace || b === 0x0d) return null;
    if (b === 0x0a) return lineBreak ? null : f.withWhitespace((1 << 8) | (n + 1));
    return f.withWhitespace((lineBreak << 8) | (n + 1));
  }

  private info(node: ObjectNode): ObjectInfo {
    let info = this.objects.get(node);
    if (!info) this.objects.set(node, (info = new ObjectInfo(node)));
    return info;
  }

  private objectStep(f: Frame, b: number): Frame | null {
    const node = f.node as ObjectNode;
    const info = this.info(node);
    if (isWhitespace(b)) return this.space(f, b);
    switch (f.p) {
      case O_OPEN:
      case O_AFTER_COMMA:
        if (b === QUOTE && info.canContinue(f.i)) {
          // The key frame sits on the object frame (whitespace count reset: it no longer matters).
          const obj = f.w === 0 ? f : f.withWhitespace(0);
          const trie = info.candidates(f.i);
          return new Frame(KEY, node, info.extras(f.i) ? S_NORMAL : -1, f.i, trie ? 0 : -1, 0, obj, trie);
        }
        if (b === 0x7d && f.p === O_OPEN && info.canClose(f.i)) return f.parent;
        return null;
      case O_AFTER_KEY:
        return b === 0x3a ? new Frame(OBJ, node, O_AFTER_COLON, f.i, f.t, 0, f.parent) : null;
      case O_AFTER_COLON: {
        const value = f.t >= 0 ? node.props[f.t]!.value : node.additional!;
        return this.begin(value, b, new Frame(OBJ, node, O_AFTER_VALUE, f.i, -1, 0, f.parent));
      }
      case O_AFTER_VALUE:
        if (b === 0x2c && info.canContinue(f.i)) return new Frame(OBJ, node, O_AFTER_COMMA, f.i, -1, 0, f.parent);
        if (b === 0x7d && info.canClose(f.i)) return f.parent;
        return null;
      default:
        return null;
    }
  }

  private keyStep(f: Frame, b: number): Frame | null {
    const node = f.node as ObjectNode;
    const info = this.info(node);
    const obj = f.parent!;
    if (b === QUOTE) {
      // A listed name is complete: its content never ends inside an escape, so this quote closes it.
      const end = f.t >= 0 ? f.trie!.end(f.t) : -1;
      if (end >= 0) {
        const j = f.i + end;
        return new Frame(OBJ, node, O_AFTER_KEY, j + 1, j, 0, obj.parent);
      }
      if (f.p === S_NORMAL) {
        // An extra name (listed names are skipped from now on).
        if (info.names.has(f.raw)) return null;
        return new Frame(OBJ, node, O_AFTER_KEY, node.props.length, -1, 0, obj.parent);
      }
      // Otherwise the quote is escaped: go on.
    }
    const t = f.t >= 0 ? f.trie!.child(f.t, b) : -1;
    let p = -1;
    // Extra names are written without escapes when they must be compared with listed names.
    const collect = info.names.size > 0;
    if (f.p >= 0) {
      const r = stringStep(f.p, b, !collect);
      if (r >= 0) p = r & 0xff;
    }
    if (t < 0 && p < 0) return null;
    const raw = collect && p >= 0 ? f.raw + String.fromCharCode(b) : '';
    return new Frame(KEY, node, p, f.i, t, 0, obj, f.trie, raw);
  }

  private arrayStep(f: Frame, b: number): Frame | null {
    const node = f.node as Extract<SchemaNode, { kind: 'array' }>;
    if (isWhitespace(b)) return this.space(f, b);
    // Items are counted only as far as a bound can still be affected.
    const cap = Number.isFinite(node.maxItems) ? node.maxItems : node.minItems;
    switch (f.p) {
      case A_OPEN:
        if (b === 0x5d) return node.minItems === 0 ? f.parent : null;
        if (node.maxItems === 0) return null;
        return this.begin(node.items, b, new Frame(ARR, node, A_AFTER_ITEM, Math.min(1, cap), 0, 0, f.parent));
      case A_AFTER_ITEM:
        if (b === 0x2c) return f.i < node.maxItems ? new Frame(ARR, node, A_AFTER_COMMA, f.i, 0, 0, f.parent) : null;
        if (b === 0x5d) return f.i >= node.minItems ? f.parent : null;
        return null;
      case A_AFTER_COMMA:
        return this.begin(node.items, b, new Frame(ARR, node, A_AFTER_ITEM, Math.min(f.i + 1, cap), 0, 0, f.parent));
      default:
        return null;
    }
  }
}
