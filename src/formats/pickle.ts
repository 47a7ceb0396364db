/**
 * A restricted pickle reader (protocols 2 to 5) for PyTorch state dicts.
 *
 * Why our own: Python's pickle is a small stack machine whose GLOBAL + REDUCE opcodes call arbitrary
 * functions (`os.system`, `builtins.eval`, ...). Loading an untrusted checkpoint with a general unpickler is
 * remote code execution. This reader executes nothing: it builds plain JS values, and every GLOBAL is looked
 * up in a caller-supplied allow-list of *native TypeScript* stand-ins; any other global is refused with an
 * error naming it. Only the opcodes a `torch.save`d state dict uses are implemented; any other opcode
 * is refused by name and offset.
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

const MARK = Symbol('mark');
type StackItem = PyValue | typeof MARK;

/** Runs the restricted pickle machine over `data` and returns the top-level object. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions): PyValue {
  const where = opts.where;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const stack: StackItem[] = [];
  const memo = new Map<number, PyValue>();
  let pos = 0;

  const fail = (msg: string): never => { throw new FormatError(`${where}: ${msg}`); };
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
    if (stack.length === 0) fail(`stack underflow at offset ${pos - 1}`);
    const v = stack.pop()!;
    if (v === MARK) fail(`unexpected MARK at offset ${pos - 1}`);
    return v as PyValue;
  };
  const top = (): PyValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) fail(`stack underflow at offset ${pos - 1}`);
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
    return fail(`MARK not found at offset ${pos - 1}`);
  };
  const global = (module: string, name: string): PyCallable | PyObject => {
    const g = opts.findGlobal(module, name);
    if (!g) fail(`refusing to load: the pickle references the global "${module}.${name}", which is not allowed in a tensor state dict (nothing was executed)`);
    return g!;
  };
  const call = (fn: PyValue, args: PyValue): PyValue => {
    if (!(fn instanceof PyCallable)) fail(`REDUCE on a non-callable value at offset ${pos - 1}`);
    if (!(args instanceof PyTuple)) fail(`REDUCE with non-tuple arguments at offset ${pos - 1}`);
    return (fn as PyCallable).call((args as PyTuple).items);
  };
  const long = (b: Uint8Array): number | bigint => {
    // Two's-complement little-endian integer of any length.
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b.length > 0 && b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const setItems = (d: PyValue, items: PyValue[]): void => {
    if (!(d instanceof PyDict)) fail(`SETITEM(S) on a non-dict at offset ${pos - 1}`);
    if (items.length % 2) fail(`odd number of items for SETITEMS at offset ${pos - 1}`);
    for (let i = 0; i < items.length; i += 2) (d as PyDict).set(items[i]!, items[i + 1]!, where);
  };

  for (;;) {
    const opAt = pos;
    const op = u8();
    switch (op) {
      case 0x80: { const proto = u8(); if (proto > 5) fail(`unsupported pickle protocol ${proto}`); break; } // PROTO
      case 0x95: u64(); break; // FRAME (framing is only a buffering hint)
      case 0x2e: { // STOP
        const result = pop();
        return result;
      }
      case 0x28: stack.push(MARK); break; // MARK
      case 0x29: stack.push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x74: stack.push(new PyTuple(popMark())); break; // TUPLE
      case 0x85: { const a = pop(); stack.push(new PyTuple([a])); break; } // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); stack.push(new PyTuple([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push(new PyTuple([a, b, c])); break; } // TUPLE3
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x6c: stack.push(popMark()); break; // LIST
      case 0x61: { const v = pop(); const l = top(); if (!Array.isArray(l)) fail('APPEND to a non-list'); (l as PyValue[]).push(v); break; } // APPEND
      case 0x65: { const items = popMark(); const l = top(); if (!Array.isArray(l)) fail('APPENDS to a non-list'); (l as PyValue[]).push(...items); break; } // APPENDS
      case 0x7d: stack.push(new PyDict()); break; // EMPTY_DICT
      case 0x64: { const d = new PyDict(); setItems(d, popMark()); stack.push(d); break; } // DICT
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const items = popMark(); setItems(top(), items); break; } // SETITEMS
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const idx = op === 0x68 ? u8() : u32();
        if (!memo.has(idx)) fail(`memo index ${idx} not defined (offset ${opAt})`);
        stack.push(memo.get(idx)!);
        break;
      }
      case 0x4a: stack.push(view.getInt32(need(4), true)); break; // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: stack.push(long(bytes(u8()))); break; // LONG1
      case 0x8b: { const n = u32(); stack.push(long(bytes(n))); break; } // LONG4
      case 0x47: stack.push(view.getFloat64(need(8), false)); break; // BINFLOAT (big-endian)
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x8c: stack.push(text(u8())); break; // SHORT_BINUNICODE
      case 0x58: stack.push(text(u32())); break; // BINUNICODE
      case 0x8d: stack.push(text(u64())); break; // BINUNICODE8
      case 0x43: stack.push(bytes(u8())); break; // SHORT_BINBYTES
      case 0x42: stack.push(bytes(u32())); break; // BINBYTES
      case 0x8e: case 0x96: stack.push(bytes(u64())); break; // BINBYTES8, BYTEARRAY8
      case 0x63: { const module = line(); const name = line(); stack.push(global(module, name)); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop(); const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL with non-string names');
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x52: { const args = pop(); const fn = pop(); stack.push(call(fn, args)); break; } // REDUCE
      case 0x81: { const args = pop(); const cls = pop(); stack.push(call(cls, args)); break; } // NEWOBJ
      case 0x62: { // BUILD: set state on the object below; we only keep it for dicts (OrderedDict._metadata)
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) obj.attrs = state;
        else if (!(obj instanceof PyObject)) fail(`BUILD on an unsupported object at offset ${opAt}`);
        break;
      }
      case 0x51: stack.push(opts.persistentLoad(pop())); break; // BINPERSID
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')} at offset ${opAt} (only what a tensor state dict needs is allowed)`);
    }
  }
}
