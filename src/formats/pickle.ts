/**
 * A restricted pickle reader (protocols 2 to 5) for PyTorch state dicts.
 *
 * Why our own: Python's pickle is a small stack machine whose GLOBAL + REDUCE opcodes call arbitrary
 * functions (`os.system`, `builtins.eval`, ...). Loading an untrusted checkpoint with a general unpickler is
 * remote code execution. This reader executes nothing: it builds plain JS values, and every GLOBAL is looked
 * up in a caller-supplied allow-list of *native TypeScript* stand-ins; any other global is refused with an
 * error naming it. Only the opcodes a `torch.save`d state dict uses are implemented; any other opcode
 * is refused by name and offset.
 *
 * It is also bounded: a hostile pickle cannot make it use time or memory out of proportion to what a state dict
 * needs. No opcode does more than linear work (no spreading of big arrays into calls, integers capped at
 * MAX_LONG_BYTES), and what it builds is metered: every value pushed, every container and memo entry made costs
 * units, and the pickle is refused once it has spent MAX_UNITS (a real state dict spends about 40 per tensor).
 */
import { FormatError } from '../errors.js';

/** A Python tuple (kept distinct from lists). */
export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

/** A Python dict / OrderedDict, in insertion order. `attrs` holds state set by BUILD (e.g. `_metadata`). */
export class PyDict {
  readonly entries = new Map<string | number | bigint | boolean | null, PyValue>();
  attrs: PyValue = null;
  set(key: PyValue, value: PyValue, where: string): void {
    if (key !== null && typeof key === 'object') throw new FormatError(`${where}: unsupported dict key type in pickle`);
    this.entries.set(key as string | number | bigint | boolean | null, value);
  }
}

/** A native stand-in for an allowed Python global (class or function). Calling it never runs Python. */
export class PyCallable {
  constructor(
    readonly qualifiedName: string,
    readonly call: (args: PyValue[]) => PyValue,
  ) {}
}

/** Opaque value produced by a stand-in (e.g. a torch storage type, a rebuilt tensor). */
export class PyObject {
  constructor(readonly kind: string, readonly value: unknown) {}
}

export type PyValue =
  | null | boolean | number | bigint | string | Uint8Array
  | PyValue[] | PyTuple | PyDict | PyCallable | PyObject;

export interface UnpickleOptions {
  /** Name used in error messages (e.g. "model.pth:archive/data.pkl"). */
  where: string;
  /** Returns the native stand-in for `module.name`, or undefined to refuse it. */
  findGlobal(module: string, name: string): PyCallable | PyObject | undefined;
  /** Resolves a BINPERSID id (for torch: the storage tuple). */
  persistentLoad(pid: PyValue): PyValue;
}

/**
 * Largest LONG1/LONG4 integer accepted, in bytes. State dicts hold sizes, strides and offsets (at most 8 bytes);
 * 256 bytes is everything Python's own pickler writes as LONG1. Bigger ones (a LONG4 can claim 4 GB, and
 * decoding it is quadratic) are refused before they are read.
 */
export const MAX_LONG_BYTES = 256;

/**
 * Work budget of one unpickle, in units of about 8 bytes of memory: each value pushed costs 1, each new tuple or
 * list 6 more, each dict 32 more (a JS Map is ~250 bytes), each memo entry 4 (32 out of sequence: a Map entry,
 * slow to insert, and never written by Python), and each stand-in call the size of
 * its arguments and of its result (dict entries, list or tuple items, string or bytes length / 16).
 * A torch state dict spends about 170 units per tensor (measured on torch.save output), so 2^23 units is about
 * 50,000 tensors' worth (the largest RWKV-7 checkpoints have about 2,000), and bounds what the reader builds to
 * roughly 100 MB whatever the file.
 */
export const MAX_UNITS = 1 << 23;

/** Units of a new tuple or list, a new dict, a memo entry in sequence and out of it (see MAX_UNITS). */
const CONTAINER = 6;
const DICT = 32;
const MEMO_ENTRY = 4;
const MEMO_SPARSE = 32;

const MARK = Symbol('mark');
type StackItem = PyValue | typeof MARK;

/** Runs the restricted pickle machine over `data` and returns the top-level object. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions): PyValue {
  const where = opts.where;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const stack: StackItem[] = [];
  // The memo: indices are dense and sequential in what Python writes (kept in an array, fast); any others in a Map.
  const memoDense: PyValue[] = [];
  const memoSparse = new Map<number, PyValue>();
  let pos = 0;
  let opAt = 0;
  let units = 0;

  const fail = (msg: string): never => { throw new FormatError(`${where}: ${msg}`); };
  /** Charges `n` units of work; refuses the pickle once the budget is spent. */
  const spend = (n: number): void => {
    units += n;
    if (units > MAX_UNITS) {
      fail(`the pickle builds more than a tensor state dict can need (over ${MAX_UNITS} values, stack or memo entries by offset ${opAt}); refusing it`);
    }
  };
  const push = (v: StackItem): void => { spend(1); stack.push(v); };
  /** Charges for a value built by an allowed stand-in (proportional to its size). */
  const charge = (v: PyValue): PyValue => {
    if (v instanceof PyDict) spend(DICT + 2 * v.entries.size);
    else if (Array.isArray(v)) spend(CONTAINER + v.length);
    else if (v instanceof PyTuple) spend(CONTAINER + v.items.length);
    else if (v instanceof Uint8Array) spend(1 + (v.length >>> 4));
    else if (typeof v === 'string') spend(1 + (v.length >>> 4));
    return v;
  };
  const memoize = (idx: number, v: PyValue): void => {
    if (idx < memoDense.length) { spend(MEMO_ENTRY); memoDense[idx] = v; }
    else if (idx === memoDense.length) { spend(MEMO_ENTRY); memoSparse.delete(idx); memoDense.push(v); }
    else { spend(MEMO_SPARSE); memoSparse.set(idx, v); }
  };
  const need = (n: number): number => {
    if (n < 0 || pos + n > data.length) fail(`truncated pickle (wanted ${n} bytes at offset ${pos}, have ${data.length - pos})`);
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = (): number => data[need(1)]!;
  const u16 = (): number => view.getUint16(need(2), true);
  const u32 = (): number => view.getUint32(need(4), true);
  const u64 = (): number => {
    const v = view.getBigUint64(need(8), true);
    if (v > BigInt(data.length)) fail(`length ${v} exceeds the pickle size`);
    return Number(v);
  };
  const bytes = (n: number): Uint8Array => { const at = need(n); return data.slice(at, at + n); };
  const text = (n: number): string => {
    const at = need(n);
    try { return utf8.decode(data.subarray(at, at + n)); } catch { return fail(`invalid UTF-8 string at offset ${at}`); }
  };
  const line = (): string => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail('truncated pickle (unterminated GLOBAL)');
    const s = new TextDecoder('latin1').decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): PyValue => {
    if (stack.length === 0) fail(`stack underflow at offset ${opAt}`);
    const v = stack.pop()!;
    if (v === MARK) fail(`unexpected MARK at offset ${opAt}`);
    return v as PyValue;
  };
  const top = (): PyValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) fail(`stack underflow at offset ${opAt}`);
    return v as PyValue;
  };
  /** Pops everything down to the last MARK (and the MARK). */
  const popMark = (): PyValue[] => {
    for (let i = stack.length - 1; i >= 0; i--) {
      if (stack[i] === MARK) {
        const items = stack.splice(i) as PyValue[];
        items.shift();
        return items;
      }
    }
    return fail(`MARK not found at offset ${opAt}`);
  };
  const global = (module: string, name: string): PyCallable | PyObject => {
    const g = opts.findGlobal(module, name);
    if (!(g instanceof PyCallable) && !(g instanceof PyObject)) {
      const q = `${module}.${name}`;
      const shown = q.length > 200 ? `${q.slice(0, 200)}...` : q;
      fail(`refusing to load: the pickle references the global "${shown}", which is not allowed in a tensor state dict (nothing was executed)`);
    }
    return g!;
  };
  const call = (fn: PyValue, args: PyValue): PyValue => {
    if (!(fn instanceof PyCallable)) fail(`REDUCE on a non-callable value at offset ${opAt}`);
    if (!(args instanceof PyTuple)) fail(`REDUCE with non-tuple arguments at offset ${opAt}`);
    // A stand-in's work is proportional to its arguments and its result: charge both, so that calling one over and
    // over on a big memoized argument cannot turn a small pickle into quadratic work.
    for (const a of (args as PyTuple).items) charge(a);
    return charge((fn as PyCallable).call((args as PyTuple).items));
  };
  /** A LONG1/LONG4 integer of `n` bytes: two's-complement little-endian, at most MAX_LONG_BYTES. */
  const long = (n: number): number | bigint => {
    if (n > MAX_LONG_BYTES) {
      fail(`integer of ${n} bytes at offset ${opAt} is too large (at most ${MAX_LONG_BYTES} bytes are accepted; a state dict needs 8)`);
    }
    const at = need(n);
    if (n === 0) return 0;
    // Linear: one hex string, one BigInt (shifting a BigInt byte by byte would be quadratic).
    let hex = '';
    for (let i = at + n - 1; i >= at; i--) hex += data[i]!.toString(16).padStart(2, '0');
    let v = BigInt(`0x${hex}`);
    if (data[at + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const setItems = (d: PyValue, items: PyValue[]): void => {
    if (!(d instanceof PyDict)) fail(`SETITEM(S) on a non-dict at offset ${opAt}`);
    if (items.length % 2) fail(`odd number of items for SETITEMS at offset ${opAt}`);
    for (let i = 0; i < items.length; i += 2) (d as PyDict).set(items[i]!, items[i + 1]!, where);
  };

  for (;;) {
    opAt = pos;
    const op = u8();
    switch (op) {
      case 0x80: { const proto = u8(); if (proto > 5) fail(`unsupported pickle protocol ${proto}`); break; } // PROTO
      case 0x95: u64(); break; // FRAME (framing is only a buffering hint)
      case 0x2e: { // STOP
        const result = pop();
        return result;
      }
      case 0x28: push(MARK); break; // MARK
      case 0x29: spend(CONTAINER); push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x74: { const items = popMark(); spend(CONTAINER); push(new PyTuple(items)); break; } // TUPLE
      case 0x85: { const a = pop(); spend(CONTAINER); push(new PyTuple([a])); break; } // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); spend(CONTAINER); push(new PyTuple([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); spend(CONTAINER); push(new PyTuple([a, b, c])); break; } // TUPLE3
      case 0x5d: spend(CONTAINER); push([]); break; // EMPTY_LIST
      case 0x6c: { const items = popMark(); spend(CONTAINER); push(items); break; } // LIST
      case 0x61: { const v = pop(); const l = top(); if (!Array.isArray(l)) fail(`APPEND to a non-list at offset ${opAt}`); spend(1); (l as PyValue[]).push(v); break; } // APPEND
      case 0x65: { // APPENDS: one push per item (spreading a huge array into push(...) overflows the call stack)
        const items = popMark();
        const l = top();
        if (!Array.isArray(l)) fail(`APPENDS to a non-list at offset ${opAt}`);
        spend(items.length);
        for (const v of items) (l as PyValue[]).push(v);
        break;
      }
      case 0x7d: spend(DICT); push(new PyDict()); break; // EMPTY_DICT
      case 0x64: { const items = popMark(); const d = new PyDict(); spend(DICT + items.length); setItems(d, items); push(d); break; } // DICT
      case 0x73: { const v = pop(); const k = pop(); spend(1); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const items = popMark(); spend(items.length); setItems(top(), items); break; } // SETITEMS
      case 0x71: memoize(u8(), top()); break; // BINPUT
      case 0x72: memoize(u32(), top()); break; // LONG_BINPUT
      case 0x94: memoize(memoDense.length + memoSparse.size, top()); break; // MEMOIZE (index = len(memo))
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const idx = op === 0x68 ? u8() : u32();
        const v = idx < memoDense.length ? memoDense[idx] : memoSparse.get(idx);
        if (v === undefined) fail(`memo index ${idx} not defined (offset ${opAt})`);
        push(v!);
        break;
      }
      case 0x4a: push(view.getInt32(need(4), true)); break; // BININT
      case 0x4b: push(u8()); break; // BININT1
      case 0x4d: push(u16()); break; // BININT2
      case 0x8a: push(long(u8())); break; // LONG1
      case 0x8b: push(long(u32())); break; // LONG4
      case 0x47: push(view.getFloat64(need(8), false)); break; // BINFLOAT (big-endian)
      case 0x4e: push(null); break; // NONE
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x8c: push(text(u8())); break; // SHORT_BINUNICODE
      case 0x58: push(text(u32())); break; // BINUNICODE
      case 0x8d: push(text(u64())); break; // BINUNICODE8
      case 0x43: push(bytes(u8())); break; // SHORT_BINBYTES
      case 0x42: push(bytes(u32())); break; // BINBYTES
      case 0x8e: case 0x96: push(bytes(u64())); break; // BINBYTES8, BYTEARRAY8
      case 0x63: { const module = line(); const name = line(); push(global(module, name)); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop(); const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail(`STACK_GLOBAL with non-string names at offset ${opAt}`);
        push(global(module as string, name as string));
        break;
      }
      case 0x52: { const args = pop(); const fn = pop(); push(call(fn, args)); break; } // REDUCE
      case 0x81: { const args = pop(); const cls = pop(); push(call(cls, args)); break; } // NEWOBJ
      case 0x62: { // BUILD: set state on the object below; we only keep it for dicts (OrderedDict._metadata)
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) obj.attrs = state;
        else if (!(obj instanceof PyObject)) fail(`BUILD on an unsupported object at offset ${opAt}`);
        break;
      }
      case 0x51: push(charge(opts.persistentLoad(pop()))); break; // BINPERSID
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: push(top()); break; // DUP
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')} at offset ${opAt} (only what a tensor state dict needs is allowed)`);
    }
  }
}
