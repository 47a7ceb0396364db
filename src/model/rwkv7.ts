/**
 * RWKV-7 ("Goose", x070) inference, written to be read line by line against the official reference
 * (RWKV-LM `RWKV-v7/rwkv_v7_numpy.py` and the `rwkv` pip package's `RWKV_x070`):
 *
 *   x = layer_norm(emb[token], ln0)
 *   for each layer:
 *     x = x + time_mixing(layer_norm(x, ln1))
 *     x = x + channel_mixing(layer_norm(x, ln2))
 *   logits = head @ layer_norm(x, ln_out)
 *
 * All arithmetic goes through the kernel interface (src/backends/kernels.ts); this file only fixes the order.
 * Every function processes T tokens at once (T = 1 is RNN mode; T > 1 is sequence mode), which gives the same
 * numbers because each op is the same per-token computation and the WKV scan runs token by token.
 *
 * Batching: one pass may hold the new tokens of several sequences, each with its own state, as consecutive row
 * segments. Every per-token op (layer norms, matrix products, decay, gates) runs over all rows at once, so each
 * weight matrix is read once per pass; only the two ops that carry state — token shift and the WKV scan — run per
 * sequence (`perSequence`), on that sequence's rows and state. `forward` is the one-sequence case.
 */
import type { Backend, Buf } from '../backends/kernels.js';
import type { ModelConfig } from './config.js';
import type { ModelWeights, LayerWeights } from './weights.js';
import { State } from './state.js';
import { UserError } from '../errors.js';

const LN_EPS = 1e-5;
const GROUP_NORM_EPS = 64e-5;

/** Scratch activations for up to `rows` tokens, allocated once per model and reused. */
class Scratch {
  readonly x: Buf; // the residual stream [T, C]
  readonly xx: Buf; // layer-normed input of the current block [T, C]
  readonly xr: Buf; readonly xw: Buf; readonly xk: Buf; readonly xv: Buf; readonly xa: Buf; readonly xg: Buf;
  readonly r: Buf; readonly w: Buf; readonly k: Buf; readonly v: Buf; readonly a: Buf; readonly g: Buf;
  readonly kk: Buf; readonly vGate: Buf; readonly vFirst: Buf; readonly y: Buf;
  readonly loraW: Buf; readonly loraA: Buf; readonly loraV: Buf; readonly loraG: Buf;
  readonly ffnK: Buf; // [T, F]

  constructor(b: Backend, readonly rows: number, c: ModelConfig) {
    const C = rows * c.nEmbd;
    const buf = (n: number) => b.buffer(n);
    this.x = buf(C); this.xx = buf(C);
    this.xr = buf(C); this.xw = buf(C); this.xk = buf(C); this.xv = buf(C); this.xa = buf(C); this.xg = buf(C);
    this.r = buf(C); this.w = buf(C); this.k = buf(C); this.v = buf(C); this.a = buf(C); this.g = buf(C);
    this.kk = buf(C); this.vGate = buf(C); this.vFirst = buf(C); this.y = buf(C);
    this.loraW = buf(rows * c.lora.decay); this.loraA = buf(rows * c.lora.a);
    this.loraV = buf(rows * c.lora.v); this.loraG = buf(rows * c.lora.gate);
    this.ffnK = buf(rows * c.dimFfn);
  }
}

export interface ForwardOptions {
  /** Return the logits after every token ([T, V] row-major) instead of only after the last one ([V]). */
  allLogits?: boolean;
}

/** One sequence of a batched pass: its new tokens (at least one) and its state, updated in place. */
export interface BatchItem {
  tokens: ArrayLike<number>;
  state: State;
}

/** Rows [start, start + length) of a pass are the next tokens of one sequence. */
interface Segment {
  start: number;
  length: number;
  state: State;
}

/**
 * Rows of one sequence moved to row 0 for a stateful op (which reads and writes rows from the start of its buffers):
 * at most 7 buffers at a time (token shift: 1 input and 6 outputs; WKV: 6 inputs and 1 output).
 */
class SegmentScratch {
  readonly bufs: Buf[];

  constructor(b: Backend, rows: number, c: ModelConfig) {
    this.bufs = Array.from({ length: 7 }, () => b.buffer(rows * c.nEmbd));
  }
}

export class RWKV7 {
  private scratch?: Scratch;
  private segScratch?: SegmentScratch;
  private logitsBuf?: Buf;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
  ) {}

  /** A fresh zero state for this model. */
  newState(): State {
    return new State(this.backend, this.config);
  }

  /**
   * Run `tokens` from `state` (updated in place) and return the logits after the last token
   * (or after every token with `allLogits`). RNN mode is `forward([token], state)`.
   */
  async forward(tokens: ArrayLike<number>, state: State, opts: ForwardOptions = {}): Promise<Float32Array> {
    if (!opts.allLogits) return (await this.forwardBatch([{ tokens, state }]))[0]!;
    const { vocabSize: V } = this.config;
    this.checkTokens(tokens);
    const all = new Float32Array(tokens.length * V);
    const chunk = this.backend.maxChunk;
    for (let start = 0; start < tokens.length; start += chunk) {
      const T = Math.min(chunk, tokens.length - start);
      const s = this.scratchFor();
      this.embed(s.x, Array.from({ length: T }, (_, i) => tokens[start + i]!));
      const segs = [{ start: 0, length: T, state }];
      for (let i = 0; i < this.config.nLayer; i++) this.block(i, s, segs, T);
      all.set(await this.headAll(s, T), start * V);
    }
    return all;
  }

  /**
   * Run several sequences side by side — each `items[i].tokens` from its own `items[i].state` (updated in place) — and
   * return each one's logits after its last token. Passes hold at most `backend.maxChunk` rows in all: decode steps of
   * one token and prefill chunks mix freely. A sequence's results equal running it alone with `forward` (exactly on
   * backends whose matrix products are row-independent, as js; within their f32 bound elsewhere).
   */
  async forwardBatch(items: readonly BatchItem[]): Promise<Float32Array[]> {
    if (items.length === 0) return [];
    for (const it of items) this.checkTokens(it.tokens);
    if (items.length > 1 && new Set(items.map((it) => it.state)).size !== items.length) throw new UserError('forwardBatch: two sequences share one state');
    const chunk = this.backend.maxChunk;
    const done = items.map(() => 0); // tokens of each item already processed
    const out: Float32Array[] = new Array(items.length);
    while (done.some((d, i) => d < items[i]!.tokens.length)) {
      // Fill one pass: each unfinished sequence in order contributes its next tokens, up to the row budget.
      const segs: (Segment & { item: number })[] = [];
      const ids: number[] = [];
      for (let i = 0; i < items.length && ids.length < chunk; i++) {
        const toks = items[i]!.tokens;
        const n = Math.min(toks.length - done[i]!, chunk - ids.length);
        if (n <= 0) continue;
        segs.push({ start: ids.length, length: n, state: items[i]!.state, item: i });
        for (let t = 0; t < n; t++) ids.push(toks[done[i]! + t]!);
        done[i]! += n;
      }
      const T = ids.length;
      const s = this.scratchFor();
      this.embed(s.x, ids);
      for (let i = 0; i < this.config.nLayer; i++) this.block(i, s, segs, T);
      const finished = segs.filter((g) => done[g.item] === items[g.item]!.tokens.length);
      if (finished.length > 0) {
        const logits = await this.head(s, T, finished.map((g) => g.start + g.length - 1));
        const V = this.config.vocabSize;
        // The backend's fresh array, one view of it per sequence (no copy; a view covers its own row only).
        finished.forEach((g, j) => { out[g.item] = finished.length === 1 ? logits : logits.subarray(j * V, (j + 1) * V); });
      }
    }
    return out;
  }

  private checkTokens(tokens: ArrayLike<number>): void {
    const { vocabSize: V } = this.config;
    if (tokens.length === 0) throw new UserError('forward: no tokens to process');
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!;
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new UserError(`token id ${t} (at position ${i}) is out of range: this model's vocabulary has ${V} tokens (0..${V - 1})`);
      }
    }
  }

  /** x = layer_norm(emb[token], ln0), computed on the host in float64 (a C-sized row per token). */
  private embed(x: Buf, ids: number[]): void {
    const { nEmbd: C } = this.config;
    const { emb, ln0w, ln0b } = this.weights;
    const rows = new Float64Array(ids.length * C);
    const e = new Float64Array(C);
    ids.forEach((id, t) => {
      emb.row(id, e);
      let mean = 0;
      for (let i = 0; i < C; i++) mean += e[i]!;
      mean /= C;
      let v = 0;
      for (let i = 0; i < C; i++) v += (e[i]! - mean) ** 2;
      const inv = 1 / Math.sqrt(v / C + LN_EPS);
      for (let i = 0; i < C; i++) rows[t * C + i] = (e[i]! - mean) * inv * ln0w[i]! + ln0b[i]!;
    });
    this.backend.write(x, rows);
  }

  private block(i: number, s: Scratch, segs: readonly Segment[], T: number): void {
    const L = this.weights.layers[i]!;
    const { nEmbd: C } = this.config;
    const b = this.backend;
    // x = x + time_mixing(layer_norm(x, ln1))
    b.layerNorm(s.xx, s.x, L.ln1w, L.ln1b, T, C, 1, LN_EPS);
    this.timeMixing(i, L, s, segs, T);
    // x = x + channel_mixing(layer_norm(x, ln2))
    b.layerNorm(s.xx, s.x, L.ln2w, L.ln2b, T, C, 1, LN_EPS);
    this.channelMixing(i, L, s, segs, T);
  }

  private timeMixing(layer: number, L: LayerWeights, s: Scratch, segs: readonly Segment[], T: number): void {
    const b = this.backend;
    const { nEmbd: C, headSize: N, nHead: H } = this.config;
    const A = L.att;

    // xr, xw, xk, xv, xa, xg = [x + m * (last_x - x) for m in (mr, mw, mk, mv, ma, mg)]  (last_x: each sequence's own)
    const mixed = [s.xr, s.xw, s.xk, s.xv, s.xa, s.xg];
    this.perSequence(segs, [s.xx], mixed, ([xx], outs, n, state) =>
      b.shiftLerp(outs, xx!, state.attX[layer]!, [A.x_r, A.x_w, A.x_k, A.x_v, A.x_a, A.x_g], n, C));

    // r = Wr @ xr
    b.matmul(s.r, s.xr, A.receptance, T);
    // w = exp(-sigmoid(tanh(xw @ w1) @ w2 + w0) / sqrt(e))
    b.matmul(s.loraW, s.xw, A.w1, T, { act: 'tanh' });
    b.matmul(s.w, s.loraW, A.w2, T);
    b.decay(s.w, A.w0, T, C);
    // k = Wk @ xk; v = Wv @ xv
    b.matmul(s.k, s.xk, A.key, T);
    b.matmul(s.v, s.xv, A.value, T);
    // layer 0: v_first = v; later layers: v += (v_first - v) * sigmoid(xv @ v1 @ v2 + v0)
    if (layer === 0) {
      b.copy(s.vFirst, s.v, T * C);
    } else {
      b.matmul(s.loraV, s.xv, A.v1!, T);
      b.matmul(s.vGate, s.loraV, A.v2!, T, { bias: A.v0!, act: 'sigmoid' });
      b.lerpInPlace(s.v, s.vFirst, s.vGate, T * C);
    }
    // a = sigmoid(xa @ a1 @ a2 + a0)
    b.matmul(s.loraA, s.xa, A.a1, T);
    b.matmul(s.a, s.loraA, A.a2, T, { bias: A.a0, act: 'sigmoid' });
    // g = sigmoid(xg @ g1) @ g2
    b.matmul(s.loraG, s.xg, A.g1, T, { act: 'sigmoid' });
    b.matmul(s.g, s.loraG, A.g2, T);
    // kk = normalize_per_head(k * k_k); k += k * (a - 1) * k_a
    b.keyPrep(s.kk, s.k, s.a, A.k_k, A.k_a, T, C, N);
    // S = S * w^T - S @ kk * (kk * a)^T + v * k^T;  y = S @ r  (S: each sequence's own)
    if (b.wkvSegments) {
      b.wkvSegments(segs.map((g) => ({ state: g.state.wkv[layer]!, start: g.start, length: g.length })), s.r, s.w, s.k, s.v, s.kk, s.a, s.y, C, N);
    } else {
      this.perSequence(segs, [s.r, s.w, s.k, s.v, s.kk, s.a], [s.y], ([r, w, k, v, kk, a], [y], n, state) =>
        b.wkv(state.wkv[layer]!, r!, w!, k!, v!, kk!, a!, y!, n, C, N));
    }
    // y = group_norm(y, ln_x) + ((r * k * r_k).sum(per head) * v);  x += Wo @ (y * g)
    b.layerNorm(s.y, s.y, A.ln_x_w, A.ln_x_b, T, C, H, GROUP_NORM_EPS);
    b.bonusGate(s.y, s.r, s.k, s.v, A.r_k, s.g, T, C, N);
    b.matmul(s.x, s.y, A.output, T, { accumulate: true });
  }

  private channelMixing(layer: number, L: LayerWeights, s: Scratch, segs: readonly Segment[], T: number): void {
    const b = this.backend;
    const { nEmbd: C } = this.config;
    // k = Wk @ (x + mix * (last_x - x)); k = relu(k) ** 2;  x += Wv @ k
    this.perSequence(segs, [s.xx], [s.xk], ([xx], outs, n, state) => b.shiftLerp(outs, xx!, state.ffnX[layer]!, [L.ffn.x_k], n, C));
    b.matmul(s.ffnK, s.xk, L.ffn.key, T, { act: 'relu2' });
    b.matmul(s.x, s.ffnK, L.ffn.value, T, { accumulate: true });
  }

  /**
   * Runs a stateful op once per sequence on its own rows: `op(ins, outs, rows, state)` reads and writes rows from 0 of
   * its buffers. The first segment starts at row 0 and works in place; the others go through SegmentScratch (their
   * input rows copied to row 0, the outputs copied back).
   */
  private perSequence(
    segs: readonly Segment[], ins: readonly Buf[], outs: readonly Buf[],
    op: (ins: Buf[], outs: Buf[], rows: number, state: State) => void,
  ): void {
    const b = this.backend;
    const C = this.config.nEmbd;
    for (const g of segs) {
      if (g.start === 0) {
        op([...ins], [...outs], g.length, g.state);
        continue;
      }
      const sc = this.segmentScratchFor();
      const n = g.length * C, at = g.start * C;
      const tmpIn = sc.bufs.slice(0, ins.length);
      const tmpOut = sc.bufs.slice(ins.length, ins.length + outs.length);
      ins.forEach((buf, i) => b.copy(tmpIn[i]!, buf, n, 0, at));
      op(tmpIn, tmpOut, g.length, g.state);
      outs.forEach((buf, i) => b.copy(buf, tmpOut[i]!, n, at, 0));
    }
  }

  /** logits = head @ layer_norm(x, ln_out) at the given rows of the T tokens ([rows.length, V]). */
  private async head(s: Scratch, T: number, rows: readonly number[]): Promise<Float32Array> {
    const b = this.backend;
    const { nEmbd: C, vocabSize: V } = this.config;
    const W = this.weights;
    b.layerNorm(s.xx, s.x, W.lnOutW, W.lnOutB, T, C, 1, LN_EPS);
    // Gather the rows wanted into the first rows of xr (unless they already are the first rows of xx).
    const inPlace = rows.every((r, j) => r === j);
    if (!inPlace) rows.forEach((r, j) => b.copy(s.xr, s.xx, C, j * C, r * C));
    return this.logits(inPlace ? s.xx : s.xr, rows.length);
  }

  /** logits after every one of the T tokens ([T, V]). */
  private async headAll(s: Scratch, T: number): Promise<Float32Array> {
    const W = this.weights;
    this.backend.layerNorm(s.xx, s.x, W.lnOutW, W.lnOutB, T, this.config.nEmbd, 1, LN_EPS);
    return this.logits(s.xx, T);
  }

  private async logits(x: Buf, rows: number): Promise<Float32Array> {
    const b = this.backend;
    const need = rows * this.config.vocabSize;
    if (!this.logitsBuf || this.logitsBuf.length < need) {
      if (this.logitsBuf) b.free(this.logitsBuf);
      this.logitsBuf = b.buffer(need);
    }
    b.matmul(this.logitsBuf, x, this.weights.head, rows);
    return b.read(this.logitsBuf, 0, need);
  }

  private segmentScratchFor(): SegmentScratch {
    this.segScratch ??= new SegmentScratch(this.backend, this.backend.maxChunk, this.config);
    return this.segScratch;
  }

  /** Buffers for one chunk of up to `maxChunk` tokens, allocated on first use; ops use only the first T rows. */
  private scratchFor(): Scratch {
    this.scratch ??= new Scratch(this.backend, this.backend.maxChunk, this.config);
    return this.scratch;
  }
}
