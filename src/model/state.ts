/**
 * The recurrent state of an RWKV-7 model: per layer, the token-shift vectors of time-mix and channel-mix
 * (C values each: the layer-normed input of the previous token) and the WKV matrix [H, N, N] (S[h][i][j], i the
 * value index, j the key index). A fixed size whatever the context length.
 *
 * The state lives in backend buffers; `toHost`/`fromHost` move it to and from plain Float32Arrays, and
 * `saveState`/`loadState` store it as a safetensors file with the same tensor names as the golden fixtures
 * (`state.att_x` [L, C], `state.ffn_x` [L, C], `state.wkv` [L, H, N, N]).
 */
import type { Backend, Buf } from '../backends/kernels.js';
import type { ModelConfig } from './config.js';
import { openSafetensors, writeSafetensors } from '../formats/safetensors.js';
import { bytesSource, memorySink, type ByteSink, type ByteSource } from '../formats/source.js';
import { FormatError } from '../errors.js';
import { bytesToFloat32 } from '../formats/dtype.js';

export interface HostState {
  /** [L, C] */
  attX: Float32Array;
  /** [L, C] */
  ffnX: Float32Array;
  /** [L, H, N, N] */
  wkv: Float32Array;
}

export class State {
  readonly attX: Buf[] = [];
  readonly ffnX: Buf[] = [];
  readonly wkv: Buf[] = [];

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
  ) {
    const { nLayer, nEmbd, nHead, headSize } = config;
    for (let i = 0; i < nLayer; i++) {
      this.attX.push(backend.buffer(nEmbd));
      this.ffnX.push(backend.buffer(nEmbd));
      this.wkv.push(backend.buffer(nHead * headSize * headSize));
    }
  }

  /** Set every value back to zero (the state before any token). */
  reset(): void {
    this.fromHost(zeroHostState(this.config));
  }

  /** Make this state equal to `other` (same model and backend). */
  copyFrom(other: State): void {
    for (let i = 0; i < this.config.nLayer; i++) {
      this.backend.copy(this.attX[i]!, other.attX[i]!, this.attX[i]!.length);
      this.backend.copy(this.ffnX[i]!, other.ffnX[i]!, this.ffnX[i]!.length);
      this.backend.copy(this.wkv[i]!, other.wkv[i]!, this.wkv[i]!.length);
    }
  }

  clone(): State {
    const s = new State(this.backend, this.config);
    s.copyFrom(this);
    return s;
  }

  async toHost(): Promise<HostState> {
    const { nLayer, nEmbd } = this.config;
    const per = this.wkv[0]!.length;
    const host: HostState = {
      attX: new Float32Array(nLayer * nEmbd),
      ffnX: new Float32Array(nLayer * nEmbd),
      wkv: new Float32Array(nLayer * per),
    };
    for (let i = 0; i < nLayer; i++) {
      host.attX.set(await this.backend.read(this.attX[i]!), i * nEmbd);
      host.ffnX.set(await this.backend.read(this.ffnX[i]!), i * nEmbd);
      host.wkv.set(await this.backend.read(this.wkv[i]!), i * per);
    }
    return host;
  }

  fromHost(host: HostState): void {
    const { nLayer, nEmbd } = this.config;
    const per = this.wkv[0]!.length;
    if (host.attX.length !== nLayer * nEmbd || host.ffnX.length !== nLayer * nEmbd || host.wkv.length !== nLayer * per) {
      throw new FormatError(`state does not fit this model (expected att_x/ffn_x [${nLayer}, ${nEmbd}] and wkv [${nLayer}, ${this.config.nHead}, ${this.config.headSize}, ${this.config.headSize}])`);
    }
    for (let i = 0; i < nLayer; i++) {
      this.backend.write(this.attX[i]!, host.attX.subarray(i * nEmbd, (i + 1) * nEmbd));
      this.backend.write(this.ffnX[i]!, host.ffnX.subarray(i * nEmbd, (i + 1) * nEmbd));
      this.backend.write(this.wkv[i]!, host.wkv.subarray(i * per, (i + 1) * per));
    }
  }

  free(): void {
    for (const b of [...this.attX, ...this.ffnX, ...this.wkv]) this.backend.free(b);
  }
}

export function zeroHostState(c: ModelConfig): HostState {
  return {
    attX: new Float32Array(c.nLayer * c.nEmbd),
    ffnX: new Float32Array(c.nLayer * c.nEmbd),
    wkv: new Float32Array(c.nLayer * c.nHead * c.headSize * c.headSize),
  };
}

/**
 * Write a state as a safetensors file (F32 tensors `state.att_x`, `state.ffn_x`, `state.wkv`) to a path (Node) or a
 * ByteSink. In a browser, `stateToBytes` gives the file's bytes.
 */
export function saveState(target: string | ByteSink, host: HostState, c: ModelConfig, metadata: Record<string, string> = {}): void {
  const { nLayer: L, nEmbd: C, nHead: H, headSize: N } = c;
  const f32 = (name: string, shape: number[], data: Float32Array) => ({
    name, dtype: 'F32' as const, shape,
    read: () => new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  });
  writeSafetensors(
    target,
    [f32('state.att_x', [L, C], host.attX), f32('state.ffn_x', [L, C], host.ffnX), f32('state.wkv', [L, H, N, N], host.wkv)],
    { metadata: { format: 'rwkv7-state', ...metadata } },
  );
}

/** The bytes of the state file `saveState` writes. */
export function stateToBytes(host: HostState, c: ModelConfig, metadata: Record<string, string> = {}): Uint8Array {
  const sink = memorySink('state');
  saveState(sink, host, c, metadata);
  return sink.bytes();
}

/** Read a state file written by `saveState` (a path, a ByteSource or the file's bytes), checking that it fits the model. */
export function loadState(input: string | ByteSource | Uint8Array, c: ModelConfig): HostState {
  const st = openSafetensors(input instanceof Uint8Array ? bytesSource(input, 'state') : input);
  const path = st.path;
  try {
    const { nLayer: L, nEmbd: C, nHead: H, headSize: N } = c;
    const get = (name: string, shape: number[]): Float32Array => {
      const t = st.tensors.get(name);
      if (!t) throw new FormatError(`${path}: not a state file (tensor '${name}' missing)`);
      if (t.dtype !== 'F32' || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new FormatError(`${path}: tensor '${name}' is ${t.dtype} [${t.shape.join(', ')}], expected F32 [${shape.join(', ')}] for this model`);
      }
      return bytesToFloat32('F32', t.read());
    };
    return {
      attX: get('state.att_x', [L, C]),
      ffnX: get('state.ffn_x', [L, C]),
      wkv: get('state.wkv', [L, H, N, N]),
    };
  } finally {
    st.close();
  }
}
