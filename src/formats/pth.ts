/**
 * Reader for PyTorch zip checkpoints (`torch.save`, torch >= 1.6).
 *
 * Layout of the archive: `<top>/data.pkl` (the pickled state dict, where each tensor's storage is a
 * persistent id `('storage', torch.XStorage, key, location, numel)`), `<top>/data/<key>` (raw little-endian
 * storage bytes, stored uncompressed), and optional records `<top>/version`, `<top>/byteorder`, ...
 * The top folder name varies (archive name given to torch.save), so we find it from `data.pkl`.
 *
 * Tensors are read lazily by file offset. Views (storage offset, size, stride) are honoured: contiguous
 * tensors are read directly, strided ones are gathered into a fresh contiguous buffer.
 */
import { FormatError } from '../errors.js';
import { DTYPE_BYTES, type DType, type TensorRef } from './types.js';
import { PyCallable, PyDict, PyObject, PyTuple, unpickle, type PyValue } from './pickle.js';
import { ZipReader, type ZipEntry } from './zip.js';
import { checkTensorSize } from './dtype.js';
import type { ByteSource } from './source.js';
import { platform } from '../platform/index.js';
import type { RawTensorFile } from './raw.js';

/** data.pkl of even a huge model is a few MB; refuse absurd sizes instead of allocating them. */
const MAX_PICKLE_BYTES = 512 * 1024 * 1024;

// Allow-lists are null-prototype maps read by own key only (`ownDType`): a pickle naming `torch.hasOwnProperty`,
// `torch.constructor` or `torch.__proto__` must find nothing, not a member of Object.prototype.
const STORAGE_DTYPES: Record<string, DType> = Object.assign(Object.create(null) as Record<string, DType>, {
  BFloat16Storage: 'BF16', HalfStorage: 'F16', FloatStorage: 'F32', DoubleStorage: 'F64',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL',
});
const TORCH_DTYPES: Record<string, DType> = Object.assign(Object.create(null) as Record<string, DType>, {
  bfloat16: 'BF16', float16: 'F16', half: 'F16', float32: 'F32', float: 'F32', float64: 'F64', double: 'F64',
  int64: 'I64', long: 'I64', int32: 'I32', int: 'I32', int16: 'I16', short: 'I16', int8: 'I8', uint8: 'U8', bool: 'BOOL',
});
/** `table[name]` if `name` is an own key of the allow-list, else undefined. */
function ownDType(table: Record<string, DType>, name: string): DType | undefined {
  return Object.hasOwn(table, name) ? table[name] : undefined;
}

interface StorageInfo { key: string; dtype: DType; numel: number; entry: ZipEntry }
interface TensorSpec { storage: StorageInfo; offset: number; size: number[]; stride: number[] }

function isIntArray(v: PyValue): v is PyTuple {
  return v instanceof PyTuple && v.items.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0);
}

/** Opens a `.pth` file (a path, or any ByteSource; closed with the result); tensors keep their names from the file. */
export function openPth(input: string | ByteSource): RawTensorFile {
  const zip = new ZipReader(typeof input === 'string' ? platform.openPath(input) as ByteSource : input);
  try {
    return readPth(zip.path, zip);
  } catch (e) {
    zip.close();
    throw e;
  }
}

function readPth(path: string, zip: ZipReader): RawTensorFile {
  // Find `<top>/data.pkl` (the top folder name is whatever torch.save was given).
  const pkls = [...zip.entries.keys()].filter((n) => n === 'data.pkl' || /^[^/]+\/data\.pkl$/.test(n));
  if (pkls.length !== 1) {
    throw new FormatError(`${path}: not a PyTorch checkpoint (expected one <folder>/data.pkl in the zip, found ${pkls.length})`);
  }
  const prefix = pkls[0]!.slice(0, -'data.pkl'.length);
  const byteorder = zip.entries.get(`${prefix}byteorder`);
  if (byteorder && byteorder.size < 16) {
    const order = new TextDecoder().decode(zip.readEntry(byteorder)).trim();
    if (order !== 'little') throw new FormatError(`${path}: ${order}-endian checkpoints are not supported (only little-endian)`);
  }
  const pklEntry = zip.entries.get(pkls[0]!)!;
  if (pklEntry.size > MAX_PICKLE_BYTES) throw new FormatError(`${path}: data.pkl is implausibly large (${pklEntry.size} bytes)`);
  const where = `${path}:${pklEntry.name}`;

  const storages = new Map<string, StorageInfo>();
  const persistentLoad = (pid: PyValue): PyValue => {
    if (!(pid instanceof PyTuple) || pid.items[0] !== 'storage' || pid.items.length < 5) {
      throw new FormatError(`${where}: unsupported persistent id (expected ('storage', type, key, location, numel))`);
    }
    const [, type, key, , numel] = pid.items;
    if (!(type instanceof PyObject) || type.kind !== 'storage_type') throw new FormatError(`${where}: persistent id without a storage type`);
    if (typeof key !== 'string' || typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) {
      throw new FormatError(`${where}: malformed storage id`);
    }
    const dtype = type.value as DType;
    let info = storages.get(key);
    if (!info) {
      const entry = zip.entries.get(`${prefix}data/${key}`);
      if (!entry) throw new FormatError(`${path}: storage ${prefix}data/${key} referenced by data.pkl is missing from the archive`);
      if (entry.method !== 0) {
        throw new FormatError(`${path}: storage ${entry.name} is compressed (zip method ${entry.method}); torch.save writes stored entries, compressed ones are not supported`);
      }
      if (entry.size < numel * DTYPE_BYTES[dtype]) {
        throw new FormatError(`${path}: storage ${entry.name} holds ${entry.size} bytes, but ${numel} ${dtype} elements need ${numel * DTYPE_BYTES[dtype]}`);
      }
      info = { key, dtype, numel, entry };
      storages.set(key, info);
    } else if (info.dtype !== dtype || info.numel !== numel) {
      // torch.save refuses to write one storage viewed as two types, and always writes its real size.
      throw new FormatError(`${path}: storage ${prefix}data/${key} is declared as ${info.numel} ${info.dtype} elements and again as ${numel} ${dtype} elements; one storage has one type and size`);
    }
    return new PyObject('storage', info);
  };

  const rebuildTensor = (args: PyValue[]): PyValue => {
    const [storage, offset, size, stride] = args;
    if (!(storage instanceof PyObject) || storage.kind !== 'storage' || typeof offset !== 'number' ||
        !Number.isSafeInteger(offset) || offset < 0 || !isIntArray(size as PyValue) || !isIntArray(stride as PyValue)) {
      throw new FormatError(`${where}: malformed _rebuild_tensor arguments`);
    }
    const spec: TensorSpec = {
      storage: storage.value as StorageInfo, offset,
      size: (size as PyTuple).items as number[], stride: (stride as PyTuple).items as number[],
    };
    if (spec.size.length !== spec.stride.length) throw new FormatError(`${where}: tensor size and stride ranks differ`);
    return new PyObject('tensor', spec);
  };
  const identityTensor = (args: PyValue[]): PyValue => {
    if (!(args[0] instanceof PyObject) || args[0].kind !== 'tensor') throw new FormatError(`${where}: _rebuild_parameter without a tensor`);
    return args[0];
  };
  const opaque = (kind: string) => new PyCallable(kind, () => new PyObject(kind, null));

  // The allow-list: every global a tensor state dict may reference, each mapped to a native stand-in.
  const findGlobal = (module: string, name: string): PyCallable | PyObject | undefined => {
    const q = `${module}.${name}`;
    if (q === 'collections.OrderedDict') {
      return new PyCallable(q, (args) => {
        const d = new PyDict();
        const init = args[0];
        if (Array.isArray(init)) for (const kv of init) if (kv instanceof PyTuple && kv.items.length === 2) d.set(kv.items[0]!, kv.items[1]!, where);
        return d;
      });
    }
    if (q === 'torch._utils._rebuild_tensor_v2' || q === 'torch._utils._rebuild_tensor') return new PyCallable(q, rebuildTensor);
    if (q === 'torch._utils._rebuild_parameter' || q === 'torch._utils._rebuild_parameter_with_state') return new PyCallable(q, identityTensor);
    const storageType = module === 'torch' ? ownDType(STORAGE_DTYPES, name) : undefined;
    if (storageType) return new PyObject('storage_type', storageType);
    const dtype = module === 'torch' ? ownDType(TORCH_DTYPES, name) : undefined;
    if (dtype) return new PyObject('dtype', dtype);
    if (q === 'torch.serialization._get_layout') return opaque('layout');
    if (q === 'torch.device') return opaque('device');
    if (q === '_codecs.encode') {
      // Protocol 2 pickles bytes as _codecs.encode(str, 'latin1'): rebuild them natively.
      return new PyCallable(q, (args) => {
        const s = args[0];
        if (typeof s !== 'string') throw new FormatError(`${where}: _codecs.encode without a string`);
        return Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);
      });
    }
    return undefined;
  };

  const root = unpickle(zip.readEntry(pklEntry), { where, findGlobal, persistentLoad });
  let dict = root;
  // Training checkpoints sometimes wrap the weights: {'state_dict': {...}} or {'model': {...}}.
  if (dict instanceof PyDict && ![...dict.entries.values()].some((v) => v instanceof PyObject && v.kind === 'tensor')) {
    const inner = dict.entries.get('state_dict') ?? dict.entries.get('model');
    if (inner instanceof PyDict) dict = inner;
  }
  if (!(dict instanceof PyDict)) throw new FormatError(`${where}: the pickle does not hold a state dict (a dict of tensors)`);

  const tensors = new Map<string, TensorRef>();
  // Storage sharing policy. Every tensor is read into its own buffer, so tensors viewing one storage cost memory
  // once each: 300 layers aliasing layer 0's storages turn a 10 MB file into a 1.2 GB model. Real checkpoints do
  // not share storages, except for tied weights (e.g. head.weight = emb.weight) and views that split one storage
  // into disjoint parts (fused qkv), which at most double what the file holds. So each distinct storage counts once,
  // and the tensors together may be at most MAX_SHARING times the bytes of the storages they view (and of the
  // file itself, in case zip entries overlap), plus SHARING_SLACK for small files that view one storage many ways;
  // beyond that the checkpoint is refused, naming a shared storage.
  const MAX_SHARING = 2;
  const SHARING_SLACK = 16 * 1024 * 1024;
  const firstUser = new Map<StorageInfo, string>();
  let tensorBytes = 0;
  let storageBytes = 0;
  let shared: string | undefined;
  for (const [name, value] of dict.entries) {
    if (typeof name !== 'string' || !(value instanceof PyObject) || value.kind !== 'tensor') continue;
    const spec = value.value as TensorSpec;
    const ref = makeTensorRef(path, zip, name, spec);
    tensors.set(name, ref);
    const es = DTYPE_BYTES[spec.storage.dtype];
    tensorBytes += ref.shape.reduce((a, b) => a * b, 1) * es;
    const first = firstUser.get(spec.storage);
    if (first === undefined) {
      firstUser.set(spec.storage, name);
      storageBytes += spec.storage.numel * es;
    } else {
      shared ??= `${name} shares storage ${prefix}data/${spec.storage.key} with ${first}`;
    }
  }
  if (tensors.size === 0) throw new FormatError(`${path}: no tensors found in the checkpoint`);
  const held = Math.min(storageBytes, zip.fileSize);
  if (tensorBytes > MAX_SHARING * held + SHARING_SLACK) {
    throw new FormatError(`${path}: the tensors alias their storages ${(tensorBytes / Math.max(held, 1)).toFixed(1)} times over (${tensorBytes} bytes of tensors in ${held} bytes of distinct storage${shared ? `; e.g. ${shared}` : ''}); at most ${MAX_SHARING}x (tied weights) plus ${SHARING_SLACK / 1048576} MiB is accepted, so a small file cannot load as a huge model`);
  }
  return { path, tensors, metadata: {}, close: () => zip.close() };
}

function makeTensorRef(path: string, zip: ZipReader, name: string, spec: TensorSpec): TensorRef {
  const { storage, offset, size, stride } = spec;
  const es = DTYPE_BYTES[storage.dtype];
  let numel = 1;
  for (const d of size) numel *= d;
  // Highest storage element the view touches; it must lie inside the storage.
  let maxIndex = offset;
  for (let i = 0; i < size.length; i++) if (size[i]! > 0) maxIndex += (size[i]! - 1) * stride[i]!;
  if (numel > 0 && maxIndex >= storage.numel) {
    throw new FormatError(`${path}: tensor ${name} [${size}] (offset ${offset}, stride [${stride}]) reaches element ${maxIndex} of a ${storage.numel}-element storage`);
  }
  if (numel > storage.numel) {
    throw new FormatError(`${path}: tensor ${name} [${size}] has more elements than its storage (${storage.numel}); expanded/overlapping views are not supported`);
  }
  // Exact element count (the product above may be rounded), refused by name and size before anything is read when
  // the runtime could not hold it.
  numel = checkTensorSize(path, name, size, storage.dtype, es);
  // Row-major contiguity (dims of size 1 may have any stride).
  let contiguous = true;
  let expect = 1;
  for (let i = size.length - 1; i >= 0; i--) {
    if (size[i]! !== 1 && stride[i]! !== expect) contiguous = false;
    expect *= size[i]!;
  }
  const read = (): Uint8Array => {
    if (numel === 0) return new Uint8Array(0);
    if (contiguous) return zip.readEntry(storage.entry, offset * es, numel * es);
    // Strided view: read the span it covers, then gather element by element into row-major order.
    const span = zip.readEntry(storage.entry, offset * es, (maxIndex - offset + 1) * es);
    const out = new Uint8Array(numel * es);
    const idx = new Array<number>(size.length).fill(0);
    let src = 0;
    for (let o = 0; o < numel; o++) {
      out.set(span.subarray(src * es, src * es + es), o * es);
      for (let d = size.length - 1; d >= 0; d--) {
        idx[d]!++;
        src += stride[d]!;
        if (idx[d]! < size[d]!) break;
        src -= idx[d]! * stride[d]!;
        idx[d] = 0;
      }
    }
    return out;
  };
  if (!contiguous || numel === 0) return { name, dtype: storage.dtype, shape: [...size], read };
  const bytes = numel * es;
  const readInto = (dst: Uint8Array, start = 0): void => {
    if (start < 0 || start + dst.length > bytes) throw new FormatError(`${path}: read of ${dst.length} bytes at ${start} is outside tensor ${name} (${bytes} bytes)`);
    zip.readEntryInto(storage.entry, offset * es + start, dst);
  };
  return { name, dtype: storage.dtype, shape: [...size], read, readInto };
}
