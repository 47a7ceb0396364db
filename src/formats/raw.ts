import type { TensorRef } from './types.js';

/** One opened tensor file (or set of shards) with the tensors under the names the file itself uses. */
export interface RawTensorFile {
  readonly path: string;
  /** Tensors in file order, under their original names (no layout mapping). */
  readonly tensors: ReadonlyMap<string, TensorRef>;
  /** safetensors `__metadata__` (empty for .pth). */
  readonly metadata: Readonly<Record<string, string>>;
  close(): void;
}
