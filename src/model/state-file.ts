/**
 * Initial states read from files: our own state files (`saveState`: safetensors with `state.att_x`, `state.ffn_x`,
 * `state.wkv`) and official state-tuned files (RWKV-PEFT / RWKV-LM state tuning: a `.pth`, or a safetensors
 * conversion of one, holding `blocks.N.att.time_state` [H, N, N] per layer and nothing else the model needs).
 *
 * Orientation of `time_state`: for RWKV-7 it is the WKV matrix exactly as the recurrence holds it, S[h][i][j] with
 * i the value index and j the key index, which is our `state.wkv` layout, so it is copied without a transpose.
 * (RWKV-PEFT's state-tuning kernels load it as state[row = value][col = key]; its fla path transposes it only
 * because fla's `initial_state` is [K, V]. The `.transpose(1, 2)` seen in older loaders is for RWKV-6 files.)
 * A state-tuned file holds no token-shift vectors: att_x and ffn_x start at zero, as in the official loaders.
 *
 * Platform-neutral: the input is a path (opened through the platform), a ByteSource or the file's bytes.
 */
import type { ModelConfig } from './config.js';
import type { HostState } from './state.js';
import { checkStateFinite } from './state-check.js';
import { openPth } from '../formats/pth.js';
import { openSafetensors } from '../formats/safetensors.js';
import { checkpointMagic } from '../formats/magic.js';
import { bytesSource, isByteSource, readExact, type ByteSource } from '../formats/source.js';
import type { RawTensorFile } from '../formats/raw.js';
import { bytesToFloat32 } from '../formats/dtype.js';
import { platform } from '../platform/index.js';
import { FormatError } from '../errors.js';

/** Which kind of file a state came from. */
export type StateFileKind = 'rwkv7-state' | 'time_state';

/** An initial state read from a file, with what a server needs to list it and key its caches. */
export interface InitialState {
  /** Short name (the file name without folder and extension): what a request selects it by. */
  name: string;
  /** The path (or source name) it was read from. */
  path: string;
  kind: StateFileKind;
  host: HostState;
  /** A hash of the state's values (hex): equal files give equal fingerprints; use it in cache keys. */
  fingerprint: string;
}

const TIME_STATE = /^blocks\.(\d+)\.att\.time_state$/;

function openSource(input: string | ByteSource | Uint8Array): ByteSource {
  if (input instanceof Uint8Array) return bytesSource(input, 'state');
  if (typeof input !== 'string') return input;
  const opened = platform.openPath(input);
  if (!isByteSource(opened)) throw new FormatError(`${input}: a state file must be a file, not a folder`);
  return opened;
}

/** Opens a .pth (a zip) or safetensors file. */
function openTensorFile(src: ByteSource): RawTensorFile {
  let zip = false;
  try {
    zip = checkpointMagic(readExact(src, 0, Math.min(2, src.size))) === 'pth';
  } catch (e) {
    src.close();
    throw e;
  }
  return zip ? openPth(src) : openSafetensors(src);
}

/** Our layout (`saveState`), with the same checks as `loadState`. */
function readOwnState(f: RawTensorFile, c: ModelConfig): HostState {
  const { nLayer: L, nEmbd: C, nHead: H, headSize: N } = c;
  const get = (name: string, shape: number[]): Float32Array => {
    const t = f.tensors.get(name);
    if (!t) throw new FormatError(`${f.path}: not a state file (tensor '${name}' missing)`);
    if (t.dtype !== 'F32' || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new FormatError(`${f.path}: tensor '${name}' is ${t.dtype} [${t.shape.join(', ')}], expected F32 [${shape.join(', ')}] for this model (${L} layers, ${H} heads × ${N})`);
    }
    return bytesToFloat32('F32', t.read());
  };
  return { attX: get('state.att_x', [L, C]), ffnX: get('state.ffn_x', [L, C]), wkv: get('state.wkv', [L, H, N, N]) };
}

/** The official layout: one `blocks.N.att.time_state` [H, N, N] per layer, checked against the model. */
function readTimeState(f: RawTensorFile, c: ModelConfig): HostState {
  const { nLayer: L, nEmbd: C, nHead: H, headSize: N } = c;
  const layers = new Map<number, string>();
  for (const name of f.tensors.keys()) {
    const m = TIME_STATE.exec(name);
    if (m) layers.set(Number(m[1]), name);
  }
  const model = `the model has ${L} layers of ${H} heads × ${N} (time_state [${H}, ${N}, ${N}] per layer)`;
  if (layers.size !== L || ![...layers.keys()].every((i) => i < L)) {
    const max = Math.max(...layers.keys());
    throw new FormatError(`${f.path}: state file has time_state for ${layers.size} layer(s) (blocks 0..${max}); ${model}`);
  }
  const per = H * N * N;
  const wkv = new Float32Array(L * per);
  for (let i = 0; i < L; i++) {
    const t = f.tensors.get(layers.get(i)!)!;
    const s = t.shape;
    if (s.length !== 3 || s[0] !== H || s[1] !== N || s[2] !== N) {
      throw new FormatError(`${f.path}: ${t.name} is [${s.join(', ')}]; ${model}`);
    }
    if (t.dtype !== 'F32' && t.dtype !== 'BF16' && t.dtype !== 'F16' && t.dtype !== 'F64') {
      throw new FormatError(`${f.path}: ${t.name} has type ${t.dtype}, expected a float type`);
    }
    wkv.set(bytesToFloat32(t.dtype, t.read()), i * per);
  }
  return { attX: new Float32Array(L * C), ffnX: new Float32Array(L * C), wkv };
}

/**
 * Reads an initial state for a model from a state file of either kind, checking its shapes against the model
 * (layer count, head count, head size, embedding size) and that every value is finite. Throws a FormatError
 * naming the file and what does not fit.
 */
export function readStateFile(input: string | ByteSource | Uint8Array, c: ModelConfig): { host: HostState; kind: StateFileKind } {
  const f = openTensorFile(openSource(input));
  let out: { host: HostState; kind: StateFileKind };
  try {
    if (f.tensors.has('state.wkv')) {
      out = { host: readOwnState(f, c), kind: 'rwkv7-state' };
    } else if ([...f.tensors.keys()].some((k) => TIME_STATE.test(k))) {
      out = { host: readTimeState(f, c), kind: 'time_state' };
    } else {
      const found = [...f.tensors.keys()].slice(0, 4).join(', ');
      throw new FormatError(`${f.path}: not a state file (neither state.wkv nor blocks.N.att.time_state tensors; found ${found || 'no tensors'})`);
    }
  } finally {
    f.close();
  }
  checkStateFinite(f.path, out.host);
  return out;
}

/** A 64-bit FNV-1a hash (two 32-bit lanes) of a state's values, as hex. */
export function stateFingerprint(host: HostState): string {
  let a = 0x811c9dc5, b = 0x050c5d1f;
  for (const arr of [host.attX, host.ffnX, host.wkv]) {
    const u8 = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
    for (let i = 0; i < u8.length; i++) {
      a = Math.imul(a ^ u8[i]!, 0x01000193);
      b = Math.imul(b ^ u8[i]!, 0x01000193) ^ (a >>> 15);
    }
  }
  return (a >>> 0).toString(16).padStart(8, '0') + (b >>> 0).toString(16).padStart(8, '0');
}

/** "dir/My State.pth" → "My State". */
export function stateNameOf(path: string): string {
  const base = path.split(/[/\\]/).pop() ?? path;
  return base.replace(/\.(pth|pt|safetensors|st)$/i, '') || base;
}

/** Reads a state file into an `InitialState` (name: `name`, default the file's base name without extension). */
export function loadInitialState(input: string | ByteSource | Uint8Array, c: ModelConfig, name?: string): InitialState {
  const path = typeof input === 'string' ? input : input instanceof Uint8Array ? 'state' : input.name;
  const { host, kind } = readStateFile(input, c);
  return { name: name ?? stateNameOf(path), path, kind, host, fingerprint: stateFingerprint(host) };
}
