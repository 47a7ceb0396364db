/**
 * Checkpoint entry point: opens a `.pth`, a `.safetensors` file (BlinkDL or fla layout) or a folder in the
 * fla / Hugging Face layout (`config.json` + `model.safetensors`, or shards listed in
 * `model.safetensors.index.json`), and exposes its tensors under canonical BlinkDL names, lazily.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { FormatError, UserError } from '../errors.js';
import type { Checkpoint, FileFormat, Layout, TensorRef } from './types.js';
import type { RawTensorFile } from './raw.js';
import { openPth } from './pth.js';
import { openSafetensors } from './safetensors.js';
import { detectLayout, flaToCanonical } from './layouts.js';

export type { Checkpoint, TensorRef, DType, Layout, FileFormat } from './types.js';
export type { RawTensorFile } from './raw.js';
export { DTYPE_BYTES } from './types.js';
export { openSafetensors, writeSafetensors, type TensorSource, type WriteOptions } from './safetensors.js';
export { openPth } from './pth.js';
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
}

const ZIP_MAGIC = [0x50, 0x4b]; // "PK"

function sniff(path: string): FileFormat {
  const fd = fs.openSync(path, 'r');
  try {
    const head = new Uint8Array(8);
    const n = fs.readSync(fd, head, 0, 8, 0);
    if (n >= 2 && head[0] === ZIP_MAGIC[0] && head[1] === ZIP_MAGIC[1]) return 'pth';
    if (n >= 2 && head[0] === 0x80 && head[1]! <= 5) {
      throw new FormatError(`${path}: legacy (pre-1.6, non-zip) PyTorch checkpoint; re-save it with torch >= 1.6 (torch.save) or convert it to safetensors`);
    }
    if (path.endsWith('.pth') || path.endsWith('.pt') || path.endsWith('.bin')) {
      throw new FormatError(`${path}: not a PyTorch zip checkpoint (wrong magic bytes)`);
    }
    return 'safetensors';
  } finally {
    fs.closeSync(fd);
  }
}

function readJson(path: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(path, 'utf8'));
  } catch (e) {
    throw new FormatError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new FormatError(`${path}: expected a JSON object`);
  return v as Record<string, unknown>;
}

/** Opens an HF/fla folder: single `model.safetensors` or shards from `model.safetensors.index.json`. */
function openFolder(dir: string): { raw: RawTensorFile; files: string[]; hfConfig?: Record<string, unknown> } {
  const cfgPath = nodePath.join(dir, 'config.json');
  const hfConfig = fs.existsSync(cfgPath) ? readJson(cfgPath) : undefined;
  const indexPath = nodePath.join(dir, 'model.safetensors.index.json');
  if (fs.existsSync(indexPath)) {
    const index = readJson(indexPath);
    const map = index.weight_map;
    if (map === null || typeof map !== 'object' || Array.isArray(map)) throw new FormatError(`${indexPath}: missing "weight_map" object`);
    const shards = new Map<string, RawTensorFile>();
    const tensors = new Map<string, TensorRef>();
    const metadata: Record<string, string> = {};
    const closeAll = (): void => { for (const s of shards.values()) s.close(); };
    try {
      for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
        if (typeof file !== 'string' || file.includes('/') || file.includes('\\') || file.startsWith('..')) {
          throw new FormatError(`${indexPath}: bad shard file name for ${name}: ${JSON.stringify(file)}`);
        }
        let shard = shards.get(file);
        if (!shard) {
          shard = openSafetensors(nodePath.join(dir, file));
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
    return { raw: { path: dir, tensors, metadata, close: closeAll }, files: [...shards.keys()].map((f) => nodePath.join(dir, f)), hfConfig };
  }
  const single = nodePath.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return { raw: openSafetensors(single), files: [single], hfConfig };
  throw new UserError(`${dir}: folder has neither model.safetensors nor model.safetensors.index.json`);
}

/** Opens a checkpoint file or folder; tensors come out under canonical BlinkDL names and shapes. */
export function openCheckpoint(path: string): OpenedCheckpoint {
  if (!fs.existsSync(path)) throw new UserError(`${path}: no such file or folder`);
  let raw: RawTensorFile;
  let format: FileFormat;
  let files: string[];
  let hfConfig: Record<string, unknown> | undefined;
  if (fs.statSync(path).isDirectory()) {
    ({ raw, files, hfConfig } = openFolder(path));
    format = 'safetensors';
  } else {
    format = sniff(path);
    raw = format === 'pth' ? openPth(path) : openSafetensors(path);
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
    return { path, format, layout, tensors, metadata: raw.metadata, hfConfig, files, close: () => raw.close() };
  } catch (e) {
    raw.close();
    throw e;
  }
}
