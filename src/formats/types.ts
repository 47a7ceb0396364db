/**
 * The contract between checkpoint readers (pth, safetensors, layouts) and the rest of the system.
 *
 * Every reader exposes tensors lazily: nothing is read until `read()` is called, and `read()` reads
 * only that tensor's bytes from the file (by offset), so multi-GB checkpoints can be inspected and streamed.
 */

/** Element types, named as in the safetensors spec. */
export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

export interface TensorRef {
  /** Name of the tensor in the checkpoint's canonical (BlinkDL) naming once a layout adapter applied. */
  readonly name: string;
  readonly dtype: DType;
  /** Row-major shape. */
  readonly shape: readonly number[];
  /** Contiguous row-major little-endian bytes of the tensor (a fresh buffer, read from the file on demand). */
  read(): Uint8Array;
  /**
   * Optional (contiguous tensors of files read by offset): bytes [start, start + dst.length) of what `read()` returns,
   * into `dst`, with no buffer of its own. Used to put weights straight where a backend keeps them.
   */
  readInto?(dst: Uint8Array, start?: number): void;
}

export type FileFormat = 'pth' | 'safetensors' | 'gguf';
export type Layout = 'blinkdl' | 'fla';

export interface Checkpoint {
  /** The path the user gave (file or folder). */
  readonly path: string;
  readonly format: FileFormat;
  readonly layout: Layout;
  /**
   * Tensors under canonical BlinkDL names and shapes (`emb.weight`, `blocks.0.att.x_r` [1,1,C],
   * `blocks.0.att.w1` [C,r], `blocks.0.att.r_k` [H,N], ...), whatever the file's own layout.
   */
  readonly tensors: ReadonlyMap<string, TensorRef>;
  /** Free file handles. */
  close(): void;
}
