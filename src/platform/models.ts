/**
 * The model cache (Node): where `rwkv7 pull` puts checkpoints, the catalogue of official RWKV-7 G1 checkpoints it
 * knows by name, and the resolution of a `--model` value that is not a path (a catalogue name or a cached file).
 *
 * Folder: `$RWKV7_HOME` if set, else the platform's cache folder: `$XDG_CACHE_HOME/rwkv7` or `~/.cache/rwkv7`
 * (Linux and others), `~/Library/Caches/rwkv7` (macOS), `%LOCALAPPDATA%\rwkv7` (Windows). Checkpoints are stored
 * under their own file names; a download in progress is `<file>.part` (with `<file>.part.json` for resuming).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { UserError } from '../errors.js';

/** Where the official checkpoints live (a Hugging Face mirror can be set with `HF_ENDPOINT`, as huggingface_hub does). */
export const HF_REPO = 'BlinkDL/rwkv7-g1';

export interface CatalogueEntry {
  /** What `pull` and `--model` accept, e.g. "g1-0.4b". */
  name: string;
  /** Other accepted names (e.g. the generation-specific "g1d-0.4b"). */
  aliases: string[];
  /** File name in the Hugging Face repository (and in the cache). */
  file: string;
  params: string;
  /** Size in bytes, when known (shown by `list`; the download itself trusts the server's length). */
  bytes?: number;
  /** SHA-256 of the file, when known: verified after download. */
  sha256?: string;
}

/**
 * The catalogue. File names are the ones published in huggingface.co/BlinkDL/rwkv7-g1 (checked against public
 * download links to `…/BlinkDL/rwkv7-g1/resolve/main/<file>`); the size names point at the newest of them.
 */
export const CATALOGUE: readonly CatalogueEntry[] = [
  { name: 'g1-0.1b', aliases: ['g1d-0.1b'], file: 'rwkv7-g1d-0.1b-20260129-ctx8192.pth', params: '0.1B' },
  { name: 'g1-0.4b', aliases: ['g1d-0.4b'], file: 'rwkv7-g1d-0.4b-20260210-ctx8192.pth', params: '0.4B', bytes: 901775360 },
  { name: 'g1-1.5b', aliases: ['g1d-1.5b'], file: 'rwkv7-g1d-1.5b-20260212-ctx8192.pth', params: '1.5B' },
  { name: 'g1-2.9b', aliases: [], file: 'rwkv7-g1-2.9b-20250519-ctx4096.pth', params: '2.9B' },
  { name: 'g1a-0.1b', aliases: [], file: 'rwkv7-g1a-0.1b-20250728-ctx4096.pth', params: '0.1B' },
  { name: 'g1a-0.4b', aliases: [], file: 'rwkv7-g1a-0.4b-20250905-ctx4096.pth', params: '0.4B' },
];

/** The catalogue entry for a name or alias (case-insensitive), or undefined. */
export function catalogueEntry(name: string): CatalogueEntry | undefined {
  const n = name.toLowerCase();
  return CATALOGUE.find((e) => e.name === n || e.aliases.includes(n));
}

/** The download URL of a catalogue entry (`HF_ENDPOINT` overrides https://huggingface.co). */
export function catalogueUrl(e: CatalogueEntry, env: NodeJS.ProcessEnv = process.env): string {
  const base = (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, '');
  return `${base}/${HF_REPO}/resolve/main/${encodeURIComponent(e.file)}`;
}

/** The cache folder (not created). */
export function modelsDir(env: NodeJS.ProcessEnv = process.env, plat: NodeJS.Platform = process.platform): string {
  if (env.RWKV7_HOME) return nodePath.resolve(env.RWKV7_HOME);
  const home = env.HOME || env.USERPROFILE || os.homedir();
  if (plat === 'win32') return nodePath.join(env.LOCALAPPDATA || nodePath.join(home, 'AppData', 'Local'), 'rwkv7');
  if (plat === 'darwin') return nodePath.join(home, 'Library', 'Caches', 'rwkv7');
  return nodePath.join(env.XDG_CACHE_HOME || nodePath.join(home, '.cache'), 'rwkv7');
}

/** Suffixes of the bookkeeping files of an unfinished download. */
export const PART_SUFFIX = '.part';
export const PART_META_SUFFIX = '.part.json';

export interface CachedModel {
  /** The file name (also accepted by `--model`, with or without its extension). */
  file: string;
  path: string;
  bytes: number;
  /** The catalogue name, if it is a catalogue file. */
  name?: string;
}

/** The finished checkpoints in the cache folder, by file name. */
export function listCached(dir = modelsDir()): CachedModel[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const out: CachedModel[] = [];
  for (const file of names.sort()) {
    if (file.endsWith(PART_SUFFIX) || file.endsWith(PART_META_SUFFIX) || file.startsWith('.')) continue;
    const path = nodePath.join(dir, file);
    let st: fs.Stats;
    try { st = fs.statSync(path); } catch { continue; }
    if (!st.isFile()) continue;
    out.push({ file, path, bytes: st.size, name: CATALOGUE.find((e) => e.file === file)?.name });
  }
  return out;
}

/** A file name safe to create inside the cache folder (no separators, no dot names). */
export function safeFileName(name: string): string {
  const clean = name.replace(/[/\\\0:*?"<>|]/g, '_').replace(/^\.+/, '');
  if (!clean) throw new UserError(`cannot make a file name from ${JSON.stringify(name)}`);
  return clean;
}

/**
 * What a `--model` value names: an existing path is itself; otherwise a catalogue name (the cached file, or an
 * error saying to pull it) or a cached file name (with or without extension). Anything else is returned as given
 * (the loader then reports it as missing). `undefined` stays undefined (the bundled model).
 */
export function resolveModelArg(value: string | undefined, dir = modelsDir()): string | undefined {
  if (value === undefined || value === '' || fs.existsSync(value)) return value;
  const entry = catalogueEntry(value);
  if (entry) {
    const p = nodePath.join(dir, entry.file);
    if (fs.existsSync(p)) return p;
    throw new UserError(`model '${value}' (${entry.file}) is not downloaded yet: run 'rwkv7 pull ${entry.name}' first`);
  }
  // A bare name only (no folder part): a file in the cache.
  if (/[/\\]/.test(value)) return value;
  for (const m of listCached(dir)) {
    if (m.file === value || m.file.replace(/\.[^.]+$/, '') === value) return m.path;
  }
  return value;
}
