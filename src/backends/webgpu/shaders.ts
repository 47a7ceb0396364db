/**
 * WGSL compute kernels of the WebGPU backend, generated as text per variant (weight type, activation, ...).
 *
 * Common conventions
 * - Binding 0 of group 0 is always the op's parameters: a small uniform struct (at most 8 scalars, 32 bytes),
 *   bound with a dynamic offset into one shared parameter buffer (one 256-byte slot per recorded op).
 * - Bindings 1.. are storage buffers, listed in `bindings` as 'r' (read-only) or 'rw'. Activation buffers are
 *   `array<f32>` with row-major [T, n] layout, matching src/backends/kernels.ts; weight matrices are `array<u32>`
 *   or `array<f32>` in the packed layout described in pack.ts.
 * - Large 1-D grids are dispatched as 2-D (x ≤ 65535): the flat workgroup index is `wid.x + wid.y * nwg.x`, and
 *   every kernel ignores the workgroups past its own count. Returns based on the workgroup index are uniform, so
 *   barriers after them are allowed.
 */
import type { Activation, WeightDType } from '../kernels.js';
import { isBlockDType } from '../quant.js';

export type Access = 'r' | 'rw';

export interface KernelSource {
  /** Unique per generated text (the pipeline cache key). */
  key: string;
  code: string;
  /** Storage bindings 1..n. */
  bindings: Access[];
}

/** Elements per invocation-group of the element-wise kernels. */
export const EW_WG = 256;

const FLAT = 'let flat = wid.x + wid.y * nwg.x;';
/**
 * Prologue of the one-workgroup-per-(token, head) kernels: workgroup `flat` is token t, head h; thread li owns channel
 * c of that head (`on` is false for the idle threads of a workgroup wider than N, whose c is clamped), at index i.
 */
const PER_HEAD = `${FLAT}
  if (flat >= P.count) { return; }
  let t = flat / P.H;
  let h = flat % P.H;
  let on = li < P.N;
  let c = h * P.N + min(li, P.N - 1u);
  let i = t * P.C + c;`;
const BUILTINS = '@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32';

function storage(bindings: [string, Access, string][]): string {
  return bindings
    .map(([name, acc, type], i) => `@group(0) @binding(${i + 1}) var<storage, ${acc === 'r' ? 'read' : 'read_write'}> ${name}: ${type};`)
    .join('\n');
}

function kernel(key: string, params: string, bufs: [string, Access, string][], body: string): KernelSource {
  const code = `struct Params { ${params} }
@group(0) @binding(0) var<uniform> P: Params;
${storage(bufs)}
${body}`;
  return { key, code, bindings: bufs.map((b) => b[1]) };
}

/**
 * Workgroup-wide sum over WG threads with a single barrier: every thread stores its partial, then every thread
 * adds up all WG partials itself (broadcast reads of workgroup memory). Barriers are what software rasterisers
 * (SwiftShader) pay for most, and on GPUs WG ≤ 256 shared reads per reduction cost little next to the loads.
 * `name` gives each reduction its own workgroup array, so consecutive reductions need no barrier in between.
 */
function reduceFn(name: string, type: 'f32' | 'vec4f', wg: number): string {
  return `var<workgroup> ${name}_part: array<${type}, ${wg}>;
fn ${name}(v: ${type}, li: u32) -> ${type} {
  ${name}_part[li] = v;
  workgroupBarrier();
  var total = ${type}(0.0);
  for (var i = 0u; i < ${wg}u; i++) { total += ${name}_part[i]; }
  return total;
}`;
}

export function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

// ---------------------------------------------------------------------------------------------------------------
// Element-wise kernels: one invocation per element, EW_WG per workgroup.

/** dst[dstOff + i] = src[srcOff + i], i < len. */
export function copyKernel(): KernelSource {
  return kernel('copy', 'len: u32, dstOff: u32, srcOff: u32,', [['dst', 'rw', 'array<f32>'], ['src', 'r', 'array<f32>']], `
@compute @workgroup_size(${EW_WG}) fn main(${BUILTINS}) {
  ${FLAT}
  let i = flat * ${EW_WG}u + li;
  if (i < P.len) { dst[P.dstOff + i] = src[P.srcOff + i]; }
}`);
}

/** One mix of the token shift: out[t, c] = x[t, c] + (prev[t, c] - x[t, c]) * mix[c], prev[0] = shift, prev[t] = x[t-1]. */
export function shiftLerpKernel(): KernelSource {
  return kernel('shiftLerp', 'T: u32, C: u32,',
    [['outv', 'rw', 'array<f32>'], ['x', 'r', 'array<f32>'], ['shift', 'r', 'array<f32>'], ['mix', 'r', 'array<f32>']], `
@compute @workgroup_size(${EW_WG}) fn main(${BUILTINS}) {
  ${FLAT}
  let i = flat * ${EW_WG}u + li;
  if (i >= P.T * P.C) { return; }
  let c = i % P.C;
  let xi = x[i];
  var prev: f32;
  if (i < P.C) { prev = shift[c]; } else { prev = x[i - P.C]; }
  outv[i] = xi + (prev - xi) * mix[c];
}`);
}

/**
 * In place: w[t, c] = exp(-d) with d = exp(-0.5) * sigmoid(w0[c] + w[t, c]) — or, with `oneMinus`, the
 * complement m = 1 - exp(-d) instead (see WebGpuBackend.decay: the WKV kernel then uses S·w = S - S·m, which
 * keeps the precision that rounding w ∈ (0.54, 1) to f32 would lose). m is computed without cancellation by
 * its Taylor series in Horner form (d ≤ 0.61: the first omitted term is below 3e-9 relative).
 */
export function decayKernel(oneMinus: boolean): KernelSource {
  return kernel(`decay:${oneMinus}`, 'len: u32, C: u32,', [['w', 'rw', 'array<f32>'], ['w0', 'r', 'array<f32>']], `
@compute @workgroup_size(${EW_WG}) fn main(${BUILTINS}) {
  ${FLAT}
  let i = flat * ${EW_WG}u + li;
  if (i >= P.len) { return; }
  let d = 0.6065306597126334 / (1.0 + exp(-(w0[i % P.C] + w[i])));
  ${oneMinus
    ? `var m = 1.0;
  for (var n = 9.0; n >= 1.5; n -= 1.0) { m = 1.0 - d / n * m; }
  w[i] = d * m; // 1 - exp(-d) = d (1 - d/2 (1 - d/3 (1 - ...)))`
    : 'w[i] = exp(-d);'}
}`);
}

/** In place: w = 1 - m (turns a decay kept as its complement back into the decay). */
export function oneMinusKernel(): KernelSource {
  return kernel('oneMinus', 'len: u32,', [['w', 'rw', 'array<f32>']], `
@compute @workgroup_size(${EW_WG}) fn main(${BUILTINS}) {
  ${FLAT}
  let i = flat * ${EW_WG}u + li;
  if (i < P.len) { w[i] = 1.0 - w[i]; }
}`);
}

/** In place: x[i] = x[i] + (target[i] - x[i]) * gate[i]. */
export function lerpKernel(): KernelSource {
  return kernel('lerp', 'len: u32,', [['x', 'rw', 'array<f32>'], ['tgt', 'r', 'array<f32>'], ['gate', 'r', 'array<f32>']], `
@compute @workgroup_size(${EW_WG}) fn main(${BUILTINS}) {
  ${FLAT}
  let i = flat * ${EW_WG}u + li;
  if (i >= P.len) { return; }
  let xi = x[i];
  x[i] = xi + (tgt[i] - xi) * gate[i];
}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Row kernels: one workgroup per row (or per head of a row), reductions in workgroup memory.

/**
 * Layer norm over `groups` groups of g = n / groups values per row; one workgroup per (t, group), WG threads
 * striding over the group. Two passes over global memory (mean, then centred variance, as the reference).
 * `inPlace`: out aliases x (a single read_write binding, since WebGPU forbids aliasing writable bindings).
 */
export function layerNormKernel(wg: number, inPlace: boolean): KernelSource {
  const bufs: [string, Access, string][] = inPlace
    ? [['x', 'rw', 'array<f32>'], ['w', 'r', 'array<f32>'], ['b', 'r', 'array<f32>']]
    : [['outv', 'rw', 'array<f32>'], ['x', 'r', 'array<f32>'], ['w', 'r', 'array<f32>'], ['b', 'r', 'array<f32>']];
  const out = inPlace ? 'x' : 'outv';
  return kernel(`layerNorm:${wg}:${inPlace}`, 'n: u32, g: u32, groups: u32, count: u32, eps: f32,', bufs, `
${reduceFn('sumMean', 'f32', wg)}
${reduceFn('sumVar', 'f32', wg)}
@compute @workgroup_size(${wg}) fn main(${BUILTINS}) {
  ${FLAT}
  if (flat >= P.count) { return; }
  let t = flat / P.groups;
  let h = flat % P.groups;
  let base = t * P.n + h * P.g; // this group's first value in x / out
  let wb = h * P.g;             // ... and in w / b
  var s = 0.0;
  for (var i = li; i < P.g; i += ${wg}u) { s += x[base + i]; }
  let mean = sumMean(s, li) / f32(P.g);
  var v = 0.0;
  for (var i = li; i < P.g; i += ${wg}u) { let d = x[base + i] - mean; v += d * d; }
  let inv = 1.0 / sqrt(sumVar(v, li) / f32(P.g) + P.eps);
  for (var i = li; i < P.g; i += ${wg}u) { ${out}[base + i] = (x[base + i] - mean) * inv * w[wb + i] + b[wb + i]; }
}`);
}

/**
 * Key preparation, one workgroup of WG ≥ N threads per (t, head); thread j owns key index j:
 * kk = normalize(k * kK) over the head, then in place k = k * (1 + (a - 1) * kA).
 */
export function keyPrepKernel(wg: number): KernelSource {
  return kernel(`keyPrep:${wg}`, 'C: u32, N: u32, H: u32, count: u32,',
    [['kk', 'rw', 'array<f32>'], ['k', 'rw', 'array<f32>'], ['a', 'r', 'array<f32>'], ['kK', 'r', 'array<f32>'], ['kA', 'r', 'array<f32>']], `
${reduceFn('reduce', 'f32', wg)}
@compute @workgroup_size(${wg}) fn main(${BUILTINS}) {
  ${PER_HEAD}
  var v = 0.0;
  if (on) { v = k[i] * kK[c]; }
  let inv = 1.0 / max(sqrt(reduce(v * v, li)), 1e-12);
  if (on) {
    kk[i] = v * inv;
    k[i] = k[i] * (1.0 + (a[i] - 1.0) * kA[c]);
  }
}`);
}

/** Bonus and gate, one workgroup per (t, head): y = (y + (Σ_j r·k·rK) · v) · g. */
export function bonusGateKernel(wg: number): KernelSource {
  return kernel(`bonusGate:${wg}`, 'C: u32, N: u32, H: u32, count: u32,',
    [['y', 'rw', 'array<f32>'], ['r', 'r', 'array<f32>'], ['k', 'r', 'array<f32>'], ['v', 'r', 'array<f32>'], ['rK', 'r', 'array<f32>'], ['g', 'r', 'array<f32>']], `
${reduceFn('reduce', 'f32', wg)}
@compute @workgroup_size(${wg}) fn main(${BUILTINS}) {
  ${PER_HEAD}
  var p = 0.0;
  if (on) { p = r[i] * k[i] * rK[c]; }
  let bonus = reduce(p, li);
  if (on) { y[i] = (y[i] + bonus * v[i]) * g[i]; }
}`);
}

/**
 * The WKV-7 recurrence: one workgroup per head with N threads; thread i keeps row i of the head's state
 * (S[h][i][0..N), i the value index) in registers for all T tokens, so S is read and written once per dispatch.
 * Per token the head's r, w, k, kk, a slices (N values each) are staged in workgroup memory.
 * S: [H, N, N]; r, w, k, v, kk, a, y: [T, C] with C = H * N. With `oneMinus`, the w buffer holds m = 1 - w.
 */
export function wkvKernel(N: number, oneMinus: boolean): KernelSource {
  const decayed = oneMinus ? 's[j] - s[j] * sw[j]' : 's[j] * sw[j]';
  return kernel(`wkv:${N}:${oneMinus}`, 'T: u32, C: u32,',
    [['S', 'rw', 'array<f32>'], ['r', 'r', 'array<f32>'], ['w', 'r', 'array<f32>'], ['k', 'r', 'array<f32>'],
     ['v', 'r', 'array<f32>'], ['kk', 'r', 'array<f32>'], ['a', 'r', 'array<f32>'], ['y', 'rw', 'array<f32>']], `
const N = ${N}u;
var<workgroup> sr: array<f32, ${N}>;
var<workgroup> sw: array<f32, ${N}>;
var<workgroup> sk: array<f32, ${N}>;
var<workgroup> skk: array<f32, ${N}>;
var<workgroup> sa: array<f32, ${N}>;
@compute @workgroup_size(${N}) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) i: u32) {
  let h = wid.x;
  let row = (h * N + i) * N; // S[h][i][0]
  var s: array<f32, ${N}>;
  for (var j = 0u; j < N; j++) { s[j] = S[row + j]; }
  for (var t = 0u; t < P.T; t++) {
    let x = t * P.C + h * N; // this head's slice of token t
    sr[i] = r[x + i]; sw[i] = w[x + i]; sk[i] = k[x + i]; skk[i] = kk[x + i]; sa[i] = a[x + i];
    let vi = v[x + i];
    workgroupBarrier();
    var dot = 0.0; // sa_i = Σ_j S[i][j] · (-kk[j])
    for (var j = 0u; j < N; j++) { dot -= s[j] * skk[j]; }
    var yi = 0.0;
    for (var j = 0u; j < N; j++) {
      let sij = ${decayed} + dot * skk[j] * sa[j] + vi * sk[j];
      s[j] = sij;
      yi += sij * sr[j];
    }
    y[x + i] = yi;
    workgroupBarrier(); // the slices are overwritten by the next token
  }
  for (var j = 0u; j < N; j++) { S[row + j] = s[j]; }
}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Matrix multiplication: out[t, rowOff + r] = act(W[r] · x[t] + bias[rowOff + r]) for one part of a matrix
// (rows rowOff .. rowOff + rows of a matrix with outRows rows; see WebGpuBackend.matmul for the row split).
// Params: T tokens, cols (= x row length), stride (u32 words per weight row), rows (of this part),
// rowOff, outRows (row length of out).

export interface MatmulVariant {
  dtype: WeightDType;
  act: Activation;
  bias: boolean;
  accumulate: boolean;
}

const MM_PARAMS = 'T: u32, cols: u32, stride: u32, rows: u32, rowOff: u32, outRows: u32,';

function matmulBindings(v: MatmulVariant): [string, Access, string][] {
  const b: [string, Access, string][] = [
    ['outv', 'rw', 'array<f32>'],
    ['x', 'r', 'array<f32>'],
    ['W', 'r', v.dtype === 'f32' ? 'array<f32>' : 'array<u32>'],
  ];
  if (v.dtype === 'int8') b.push(['scale', 'r', 'array<f32>']); // per row of this part
  if (isBlockDType(v.dtype)) b.push(['scale', 'r', 'array<u32>']); // f16 pairs of block scales, per row of this part
  if (v.bias) b.push(['bias', 'r', 'array<f32>']); // per row of the whole matrix
  return b;
}

/** WGSL for finishing one output value `s` of local row `r` at out index `o`. */
function finish(v: MatmulVariant, s: string, r: string, o: string): string {
  const scaled = v.dtype === 'int8' ? `${s} * scale[${r}]` : s;
  if (v.accumulate) return `outv[${o}] = outv[${o}] + ${scaled};`;
  const z = v.bias ? `${scaled} + bias[P.rowOff + ${r}]` : scaled;
  switch (v.act) {
    case 'none': return `outv[${o}] = ${z};`;
    // tanh: clamped, as some implementations return NaN for large |x| (tanh(±15) is ±1 in f32)
    case 'tanh': return `outv[${o}] = tanh(clamp(${z}, -15.0, 15.0));`;
    case 'sigmoid': return `outv[${o}] = 1.0 / (1.0 + exp(-(${z})));`;
    case 'relu2': return `{ let q = max(${z}, 0.0); outv[${o}] = q * q; }`;
  }
}

function variantKey(v: MatmulVariant): string {
  return `${v.dtype}:${v.act}:${v.bias ? 'b' : ''}:${v.accumulate ? 'acc' : ''}`;
}

/** WGSL helper of the q4/q8_0 kernels: block (row, col / 32)'s scale d (rows local to the part). */
const BLOCK_SCALE = `fn bscale(row: u32, col: u32) -> f32 {
  let d = unpack2x16float(scale[row * ((P.cols + 63u) / 64u) + (col >> 6u)]);
  return select(d.x, d.y, (col & 32u) != 0u);
}`;

/** One weight W[row][col] (row local to the part) as f32, without the int8 scale (with the q4/q8_0 block scale). */
function weightAt(dtype: WeightDType, row: string, col: string): string {
  switch (dtype) {
    case 'q4': return `(f32((W[${row} * P.stride + (${col} >> 3u)] >> (4u * (${col} & 7u))) & 15u) - 8.0) * bscale(${row}, ${col})`;
    case 'q8_0': return `${weightAt('int8', row, col)} * bscale(${row}, ${col})`;
    case 'f32': return `W[${row} * P.stride + ${col}]`;
    case 'f16': return `unpack2x16float(W[${row} * P.stride + (${col} >> 1u)] >> (16u * (${col} & 1u))).x`;
    case 'bf16': return `bitcast<f32>((W[${row} * P.stride + (${col} >> 1u)] >> (16u * (${col} & 1u))) << 16u)`;
    case 'int8': return `f32(bitcast<i32>(W[${row} * P.stride + (${col} >> 2u)] << (24u - 8u * (${col} & 3u))) >> 24u)`;
  }
}

/** WGSL statements decoding the word `word` into `vals` (a vecK<f32> or f32, K = values per word). */
function decodeWord(dtype: WeightDType): string {
  switch (dtype) {
    case 'f32': return 'let vals = word;';
    case 'f16': return 'let vals = unpack2x16float(word);';
    case 'bf16': return 'let vals = vec2f(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));';
    case 'int8': return `let wi = bitcast<i32>(word);
      let vals = vec4f(f32((wi << 24u) >> 24u), f32((wi << 16u) >> 24u), f32((wi << 8u) >> 24u), f32(wi >> 24u));`;
    case 'q8_0': return `${decodeWord('int8')}
      let valsd = vals * bscale(r, c0);`;
    case 'q4': return `let d = bscale(r, c0);
      let va = (vec4f(f32(word & 15u), f32((word >> 4u) & 15u), f32((word >> 8u) & 15u), f32((word >> 12u) & 15u)) - 8.0) * d;
      let vb = (vec4f(f32((word >> 16u) & 15u), f32((word >> 20u) & 15u), f32((word >> 24u) & 15u), f32(word >> 28u)) - 8.0) * d;`;
  }
}

/** The K decoded values of a word (decodeWord's names), in column order. */
function wordValues(dtype: WeightDType): string[] {
  const xyzw = ['.x', '.y', '.z', '.w'];
  switch (dtype) {
    case 'f32': return ['vals'];
    case 'f16': case 'bf16': return xyzw.slice(0, 2).map((l) => `vals${l}`);
    case 'int8': return xyzw.map((l) => `vals${l}`);
    case 'q8_0': return xyzw.map((l) => `valsd${l}`);
    case 'q4': return [...xyzw.map((l) => `va${l}`), ...xyzw.map((l) => `vb${l}`)];
  }
}

/** Mat-vec geometry: threads per output row (1 = no reduction), rows per workgroup. */
export interface MatvecShape {
  lanes: number;
  rows: number;
}

/**
 * Mat-vec kernel for few tokens. A workgroup of `lanes` x `rows` threads computes `rows` output rows; the lanes
 * of a row stride over its packed words (coalesced), each word decoded once and multiplied with the matching x
 * values of up to TT tokens (TT = 1 for the RNN step, 4 otherwise, looping over groups of 4 tokens).
 * With lanes > 1 each lane's partial goes to workgroup memory (part[row * lanes + lane]) and, after one barrier,
 * lane 0 of each row adds up its row's partials. GPUs use 32 lanes (a warp per row); software adapters use
 * 1 lane (a thread per row, no barrier: barriers are what CPU implementations pay for most).
 * `ragged`: cols is not a multiple of the values per word (the last word's padding columns are skipped).
 */
export function matvecKernel(v: MatmulVariant, tt: 1 | 4, ragged: boolean, shape: MatvecShape): KernelSource {
  const { rows: ROWS, lanes: LANES } = shape;
  const vals = wordValues(v.dtype);
  const K = vals.length;
  const accT = tt === 1 ? 'f32' : 'vec4f';
  // x values of column `col` for the TT tokens of this group
  const xAt = (col: string) => tt === 1
    ? `x[b0 + ${col}]`
    : `vec4f(x[b0 + ${col}], x[b1 + ${col}], x[b2 + ${col}], x[b3 + ${col}])`;
  const terms = vals.map((val, e) => {
    const col = K === 1 ? 'c0' : `c0 + ${e}u`;
    const t = `acc += ${val} * ${xAt(col)};`;
    return ragged && e > 0 ? `if (${col} < P.cols) { ${t} }` : t;
  }).join('\n      ');
  const writes = tt === 1
    ? `${finish(v, 'total', 'r', 't0 * P.outRows + P.rowOff + r')}`
    : `for (var e = 0u; e < 4u; e++) {
          if (t0 + e < P.T) {
            let tot = total[e];
            ${finish(v, 'tot', 'r', '(t0 + e) * P.outRows + P.rowOff + r')}
          }
        }`;
  const reduce = LANES === 1
    ? `if (r < P.rows) {
      let total = acc;
      ${writes}
    }`
    : `part[li] = acc;
    workgroupBarrier();
    if (lane == 0u && r < P.rows) {
      var total = ${accT}(0.0);
      for (var i = 0u; i < ${LANES}u; i++) { total += part[lid.y * ${LANES}u + i]; }
      ${writes}
    }
    ${tt === 1 ? '' : 'workgroupBarrier(); // part is rewritten by the next token group'}`;
  return kernel(`matvec:${variantKey(v)}:${tt}:${ragged}:${LANES}x${ROWS}`, MM_PARAMS, matmulBindings(v), `
${isBlockDType(v.dtype) ? BLOCK_SCALE : ''}
${LANES === 1 ? '' : `var<workgroup> part: array<${accT}, ${ROWS * LANES}>;`}
@compute @workgroup_size(${LANES}, ${ROWS}) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
    @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) li: u32) {
  ${FLAT}
  if (flat * ${ROWS}u >= P.rows) { return; }
  let lane = lid.x;
  let r = flat * ${ROWS}u + lid.y; // local row of this part
  let nw = select(0u, P.stride, r < P.rows); // rows past the end load nothing
  let wrow = r * P.stride;
  for (var t0 = 0u; t0 < P.T; t0 += ${tt}u) {
    // row starts in x of the TT tokens (tokens past T re-read the last one; their results are dropped)
    let b0 = t0 * P.cols;
    let b1 = min(t0 + 1u, P.T - 1u) * P.cols;
    let b2 = min(t0 + 2u, P.T - 1u) * P.cols;
    let b3 = min(t0 + 3u, P.T - 1u) * P.cols;
    // two-level sum for accuracy on long rows: blocks of 4 words, then the blocks with Kahan compensation
    var total_ = ${accT}(0.0);
    var comp = ${accT}(0.0);
    for (var mb = lane; mb < nw; mb += ${4 * LANES}u) {
      var acc = ${accT}(0.0);
      for (var m = mb; m < min(mb + ${4 * LANES}u, nw); m += ${LANES}u) {
        let word = W[wrow + m];
        let c0 = m * ${K}u;
        ${decodeWord(v.dtype)}
        ${terms}
      }
      // Kahan: total_ += acc with the lost low bits carried in comp
      let yk = acc - comp;
      let tk = total_ + yk;
      comp = (tk - total_) - yk;
      total_ = tk;
    }
    let acc = total_;
    ${reduce}
  }
}`);
}

/** Tile sizes of the mat-mat kernel: rows x tokens per workgroup, and the k step. */
export const GEMM = { BR: 64, BT: 32, BK: 16 } as const;

/**
 * Tiled mat-mat kernel for a chunk of tokens: a 16x16 workgroup computes a 64-row x 32-token tile of out; per
 * k step of 16 it stages W[64 rows][16 cols] (decoded to f32) and x[32 tokens][16 cols] in workgroup memory
 * (stored k-major: Ws[k][row], Xs[k][token]), then each thread accumulates 4 rows (lid.x + 16·i) x 2 tokens
 * (lid.y + 16·j) in registers. Out-of-range rows, tokens and columns are zero-filled.
 */
export function gemmKernel(v: MatmulVariant): KernelSource {
  const { BR, BT, BK } = GEMM;
  return kernel(`gemm:${variantKey(v)}`, MM_PARAMS, matmulBindings(v), `
${isBlockDType(v.dtype) ? BLOCK_SCALE : ''}
var<workgroup> Ws: array<array<f32, ${BR}>, ${BK}>;
var<workgroup> Xs: array<array<f32, ${BT}>, ${BK}>;
@compute @workgroup_size(16, 16) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
    @builtin(local_invocation_index) li: u32) {
  let r0 = wid.x * ${BR}u;
  let t0 = wid.y * ${BT}u;
  var acc0 = vec4f(0.0); // token lid.y,      rows lid.x + 16·(0..3)
  var acc1 = vec4f(0.0); // token lid.y + 16, rows lid.x + 16·(0..3)
  for (var k0 = 0u; k0 < P.cols; k0 += ${BK}u) {
    for (var e = 0u; e < ${(BR * BK) / 256}u; e++) {
      let idx = li + 256u * e;
      let kk = idx % ${BK}u;
      let rr = idx / ${BK}u;
      let row = r0 + rr;
      let col = k0 + kk;
      var w = 0.0;
      if (row < P.rows && col < P.cols) { w = ${weightAt(v.dtype, 'row', 'col')}; }
      Ws[kk][rr] = w;
    }
    for (var e = 0u; e < ${(BT * BK) / 256}u; e++) {
      let idx = li + 256u * e;
      let kk = idx % ${BK}u;
      let tt = idx / ${BK}u;
      let t = t0 + tt;
      let col = k0 + kk;
      var xv = 0.0;
      if (t < P.T && col < P.cols) { xv = x[t * P.cols + col]; }
      Xs[kk][tt] = xv;
    }
    workgroupBarrier();
    var blk0 = vec4f(0.0); // two-level sum: this k step, then the k steps (accuracy on long rows)
    var blk1 = vec4f(0.0);
    for (var kk = 0u; kk < ${BK}u; kk++) {
      let a = vec4f(Ws[kk][lid.x], Ws[kk][lid.x + 16u], Ws[kk][lid.x + 32u], Ws[kk][lid.x + 48u]);
      blk0 += a * Xs[kk][lid.y];
      blk1 += a * Xs[kk][lid.y + 16u];
    }
    acc0 += blk0;
    acc1 += blk1;
    workgroupBarrier();
  }
  for (var j = 0u; j < 2u; j++) {
    let t = t0 + lid.y + 16u * j;
    if (t >= P.T) { continue; }
    var accj = acc0;
    if (j == 1u) { accj = acc1; }
    for (var i = 0u; i < 4u; i++) {
      let r = r0 + lid.x + 16u * i;
      if (r < P.rows) {
        let s = accj[i];
        ${finish(v, 's', 'r', 't * P.outRows + P.rowOff + r')}
      }
    }
  }
}`);
}
