/**
 * Checkpoint entry point: opens a `.pth`, a `.safetensors` file (BlinkDL or fla layout) or a folder in the
 * fla / Hugging Face layout (`config.json` + `model.safetensors`, or shards listed in
 * `model.safetensors.index.json`), and exposes its tensors under canonical BlinkDL names, lazily.
 */
import { FormatError, UserError } from '../errors.js';
import type { Checkpoint, FileFormat, Layout, TensorRef } from './types.js';
import type { RawTensorFile } from './raw.js';
import { openPth } from './pth.js';
import { openSafetensors } from './safetensors.js';
import { openGguf, type GgufCheckpointFile, type GgufFile } from './gguf.js';
import { detectLayout, flaToCanonical } from './layouts.js';
import { isByteSource, readAll, readExact, type ByteSource, type FileSet } from './source.js';
import { platform } from '../platform/index.js';
import { checkpointMagic } from './magic.js';

export type { Checkpoint, TensorRef, DType, Layout, FileFormat } from './types.js';
export type { RawTensorFile } from './raw.js';
export { DTYPE_BYTES } from './types.js';
export { openSafetensors, writeSafetensors, type TensorSource, type WriteOptions } from './safetensors.js';
export { openPth } from './pth.js';
export { bytesSource, memorySink, readExact, readExactInto, readAll, isByteSource, isFileSet, type ByteSource, type ByteSink, type FileSet } from './source.js';
export { toFloat32, bytesToFloat32, fromFloat32, readAs, f32BitsToBf16, f32BitsToF16 } from './dtype.js';
export { detectLayout, flaToCanonical, canonicalToFla } from './layouts.js';

/** A Checkpoint with the extra facts the readers know. */
export interface OpenedCheckpoint extends Checkpoint {
  /** safetensors `__metadata__` (merged over shards; empty for .pth). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Parsed `config.json` of a fla/HF folder, if any. */
  readonly hfConfig?: Readonly<Record<string, unknown>>;
  /** The files actually opened. */
  readonly files: readonly string[];
  /** A GGUF file's own header, metadata and tensor table. */
  readonly gguf?: GgufFile;
}

/** The format of a checkpoint file, from its first bytes (and, for a clear error, its name). */
function sniff(src: ByteSource): FileFormat {
  const head = readExact(src, 0, Math.min(8, src.size));
  const n = head.length;
  const path = src.name;
  const magic = checkpointMagic(head);
  if (magic === 'pth' || magic === 'gguf') return magic;
  if (n >= 2 && head[0] === 0x80 && head[1]! <= 5) {
    throw new FormatError(`${path}: legacy (pre-1.6, non-zip) PyTorch checkpoint; re-save it with torch >= 1.6 (torch.save) or convert it to safetensors`);
  }
  if (path.endsWith('.pth') || path.endsWith('.pt') || path.endsWith('.bin')) {
    throw new FormatError(`${path}: not a PyTorch zip checkpoint (wrong magic bytes)`);
  }
  return 'safetensors';
}

/** Opens a raw tensor file of a format `sniff` named. */
function openRaw(src: ByteSource, format: FileFormat): RawTensorFile {
  switch (format) {
    case 'pth': return openPth(src);
    case 'safetensors': return openSafetensors(src);
    case 'gguf': return openGguf(src);
  }
}

function readJson(src: ByteSource): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readAll(src)));
  } catch (e) {
    throw new FormatError(`${src.name}: not valid JSON (${(e as Error).message})`);
  } finally {
    src.close();
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new FormatError(`${src.name}: expected a JSON object`);
  return v as Record<string, unknown>;
}

/** config.json and model.safetensors.index.json are small: a larger one is not a real model folder's. */
const MAX_JSON_BYTES = 64 * 1024 * 1024;

function openJson(dir: FileSet, file: string): Record<string, unknown> | undefined {
  const src = dir.open(file);
  if (!src) return undefined;
  if (src.size > MAX_JSON_BYTES) {
    src.close();
    throw new FormatError(`${src.name}: ${src.size} bytes is too large for a ${file}`);
  }
  return readJson(src);
}

/** Opens an HF/fla folder: single `model.safetensors` or shards from `model.safetensors.index.json`. */
function openFolder(dir: FileSet): { raw: RawTensorFile; files: string[]; hfConfig?: Record<string, unknown> } {
  const hfConfig = openJson(dir, 'config.json');
  const indexPath = dir.pathOf('model.safetensors.index.json');
  const index = openJson(dir, 'model.safetensors.index.json');
  if (index) {
    const map = index.weight_map;
    if (map === null || typeof map !== 'object' || Array.isArray(map)) throw new FormatError(`${indexPath}: missing "weight_map" object`);
    const shards = new Map<string, RawTensorFile>();
    const tensors = new Map<string, TensorRef>();
    const metadata: Record<string, string> = {};
    const closeAll = (): void => { for (const s of shards.values()) s.close(); };
    try {
      for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
        if (typeof file !== 'string' || file === '' || file === '.' || file === '..' || /[/\\\0]/.test(file)) {
          throw new FormatError(`${indexPath}: weight_map entry ${JSON.stringify(name)}: shard ${JSON.stringify(file)} is not a file name inside the model folder`);
        }
        let shard = shards.get(file);
        if (!shard) {
          const src = dir.open(file);
          if (!src) throw new FormatError(`${indexPath}: weight_map puts ${name} in ${file}, which is not in the folder`);
          shard = openSafetensors(src);
          shards.set(file, shard);
          Object.assign(metadata, shard.metadata);
        }
        const ref = shard.tensors.get(name);
        if (!ref) throw new FormatError(`${indexPath}: weight_map puts ${name} in ${file}, but that shard has no such tensor`);
        tensors.set(name, ref);
      }
    } catch (e) {
      closeAll();
      throw e;
    }
    return { raw: { path: dir.name, tensors, metadata, close: closeAll }, files: [...shards.keys()].map((f) => dir.pathOf(f)), hfConfig };
  }
  const single = dir.open('model.safetensors');
  if (single) return { raw: openSafetensors(single), files: [single.name], hfConfig };
  throw new UserError(`${dir.name}: folder has neither model.safetensors nor model.safetensors.index.json`);
}

/**
 * Opens a checkpoint: a path (file or folder; Node), a ByteSource (one file, on any platform; closed with the
 * checkpoint) or a FileSet (a folder). Tensors come out under canonical BlinkDL names and shapes.
 */
export function openCheckpoint(input: string | ByteSource | FileSet): OpenedCheckpoint {
  const opened = typeof input === 'string' ? platform.openPath(input) : input;
  const path = opened.name;
  let raw: RawTensorFile;
  let format: FileFormat;
  let files: string[];
  let hfConfig: Record<string, unknown> | undefined;
  if (!isByteSource(opened)) {
    ({ raw, files, hfConfig } = openFolder(opened));
    format = 'safetensors';
  } else {
    try {
      format = sniff(opened);
    } catch (e) {
      opened.close();
      throw e;
    }
    raw = openRaw(opened, format);
    files = [path];
  }
  try {
    const layout: Layout | undefined = detectLayout(raw.tensors.keys());
    if (!layout) {
      const found = [...raw.tensors.keys()].slice(0, 5).join(', ');
      throw new FormatError(`${path}: not an RWKV checkpoint (no emb.weight/blocks.N.* or model.layers.N.* tensors; found ${found || 'no tensors'})`);
    }
    const tensors = layout === 'fla' ? flaToCanonical(raw.tensors, path) : new Map(raw.tensors);
    // HF models with tied embeddings store no lm_head: the head is the embedding matrix.
    const emb = tensors.get('emb.weight');
    if (layout === 'fla' && hfConfig?.tie_word_embeddings === true && emb && !tensors.has('head.weight')) {
      tensors.set('head.weight', { ...emb, name: 'head.weight', read: () => emb.read() });
    }
    const gguf = (raw as Partial<GgufCheckpointFile>).gguf;
    return { path, format, layout, tensors, metadata: raw.metadata, hfConfig, files, gguf, close: () => raw.close() };
  } catch (e) {
    raw.close();
    throw e;
  }
}
