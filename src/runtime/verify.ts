/**
 * Verification against golden outputs of the official reference code (format: ../shared/README.md).
 *
 * Deviation metric, as upstream's rwkv_v7_numpy.py prints it: for each step, `max|ours − ref| / std(ref)` over
 * the vocabulary; a group's deviation is the maximum over its steps. State error: for each of att_x, ffn_x and
 * wkv, `max|ours − ref| / max|ref|`; a group's state error is the largest of the three.
 */
import type { ByteSource } from '../formats/source.js';
import { openSafetensors } from '../formats/safetensors.js';
import { bytesToFloat32 } from '../formats/dtype.js';
import type { RWKV7 } from '../model/rwkv7.js';
import { FormatError } from '../errors.js';

export type VerifyMode = 'rnn' | 'seq';

export interface GroupResult {
  name: string;
  mode: VerifyMode;
  steps: number;
  max_deviation: number;
  state_max_rel_error: number | null;
}

export interface VerifyReport {
  max_deviation: number;
  max_state_rel_error: number | null;
  groups: GroupResult[];
}

interface Group {
  name: string;
  tokens: Int32Array;
  logits: Float32Array;
  state?: { attX: Float32Array; ffnX: Float32Array; wkv: Float32Array };
}

/** Population standard deviation (numpy's default), in float64. */
export function std(x: ArrayLike<number>, offset = 0, length = x.length - offset): number {
  let mean = 0;
  for (let i = 0; i < length; i++) mean += x[offset + i]!;
  mean /= length;
  let v = 0;
  for (let i = 0; i < length; i++) v += (x[offset + i]! - mean) ** 2;
  return Math.sqrt(v / length);
}

/** `max|a − ref| / std(ref)` over `length` values. */
export function deviation(a: ArrayLike<number>, ref: ArrayLike<number>, aOffset = 0, refOffset = 0, length = ref.length - refOffset): number {
  let m = 0;
  for (let i = 0; i < length; i++) m = Math.max(m, Math.abs(a[aOffset + i]! - ref[refOffset + i]!));
  return m / std(ref, refOffset, length);
}

function maxRelError(a: Float32Array, ref: Float32Array): number {
  let m = 0, scale = 0;
  for (let i = 0; i < ref.length; i++) {
    m = Math.max(m, Math.abs(a[i]! - ref[i]!));
    scale = Math.max(scale, Math.abs(ref[i]!));
  }
  return scale === 0 ? m : m / scale;
}

/** Read every group `X` that has `X.tokens` (I32) and `X.logits` (F32 [T, V]). */
export function readGoldenGroups(input: string | ByteSource, vocabSize: number): Group[] {
  const st = openSafetensors(input);
  const path = st.path;
  try {
    const groups: Group[] = [];
    for (const [name, t] of st.tensors) {
      if (!name.endsWith('.tokens')) continue;
      const g = name.slice(0, -'.tokens'.length);
      const lg = st.tensors.get(`${g}.logits`);
      if (!lg) continue;
      if (t.dtype !== 'I32') throw new FormatError(`${path}: '${name}' is ${t.dtype}, expected I32`);
      const b = t.read();
      const tokens = new Int32Array(b.slice().buffer);
      if (lg.dtype !== 'F32' || lg.shape.length !== 2 || lg.shape[0] !== tokens.length || lg.shape[1] !== vocabSize) {
        throw new FormatError(`${path}: '${g}.logits' is ${lg.dtype} [${lg.shape.join(', ')}], expected F32 [${tokens.length}, ${vocabSize}] (does the golden file belong to this model?)`);
      }
      const group: Group = { name: g, tokens, logits: bytesToFloat32('F32', lg.read()) };
      const ax = st.tensors.get(`${g}.state.att_x`), fx = st.tensors.get(`${g}.state.ffn_x`), wk = st.tensors.get(`${g}.state.wkv`);
      if (ax && fx && wk) group.state = { attX: bytesToFloat32('F32', ax.read()), ffnX: bytesToFloat32('F32', fx.read()), wkv: bytesToFloat32('F32', wk.read()) };
      groups.push(group);
    }
    if (groups.length === 0) throw new FormatError(`${path}: no golden groups (tensors 'X.tokens' + 'X.logits') found`);
    return groups;
  } finally {
    st.close();
  }
}

/**
 * Run every golden group's tokens through `model` from the zero state (token by token and/or as one sequence) and
 * compare logits and final states with the golden file's — or, with `reference`, with that model's outputs for the
 * same tokens (e.g. the js backend with the same weight dtype: the quantized model itself, without fast kernels).
 */
export async function verifyGolden(model: RWKV7, goldenPath: string | ByteSource, modes: VerifyMode[] = ['rnn', 'seq'], reference?: RWKV7): Promise<VerifyReport> {
  const V = model.config.vocabSize;
  const groups = readGoldenGroups(goldenPath, V);
  if (reference) {
    const refState = reference.newState();
    for (const g of groups) {
      refState.reset();
      g.logits = await reference.forward(g.tokens, refState, { allLogits: true });
      const h = await refState.toHost();
      g.state = { attX: h.attX, ffnX: h.ffnX, wkv: h.wkv };
    }
    refState.free();
  }
  const results: GroupResult[] = [];
  const state = model.newState();
  for (const g of groups) {
    for (const mode of modes) {
      state.reset();
      let dev = 0;
      if (mode === 'rnn') {
        for (let t = 0; t < g.tokens.length; t++) {
          const logits = await model.forward([g.tokens[t]!], state);
          dev = Math.max(dev, deviation(logits, g.logits, 0, t * V, V));
        }
      } else {
        const logits = await model.forward(g.tokens, state, { allLogits: true });
        for (let t = 0; t < g.tokens.length; t++) dev = Math.max(dev, deviation(logits, g.logits, t * V, t * V, V));
      }
      let stateErr: number | null = null;
      if (g.state) {
        const h = await state.toHost();
        stateErr = Math.max(maxRelError(h.attX, g.state.attX), maxRelError(h.ffnX, g.state.ffnX), maxRelError(h.wkv, g.state.wkv));
      }
      results.push({ name: g.name, mode, steps: g.tokens.length, max_deviation: dev, state_max_rel_error: stateErr });
    }
  }
  state.free();
  const stateErrs = results.map((r) => r.state_max_rel_error).filter((x): x is number => x !== null);
  return {
    max_deviation: Math.max(...results.map((r) => r.max_deviation)),
    max_state_rel_error: stateErrs.length ? Math.max(...stateErrs) : null,
    groups: results,
  };
}
