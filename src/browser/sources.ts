/**
 * Byte sources for browsers (see src/formats/source.ts): Blobs/Files, URLs read with HTTP Range requests, and OPFS
 * files, plus the download-once cache that stores a model fetched by URL in the origin private file system.
 *
 * The readers are synchronous, so these sources are meant for the model worker (src/browser/worker.ts): a dedicated
 * worker has `FileReaderSync`, synchronous XHR and OPFS sync access handles; a page's main thread has none of them.
 */
import { FormatError, UserError } from '../errors.js';
import { bytesSource, type ByteSource, type FileSet } from '../formats/source.js';
import { checkpointMagic } from '../formats/magic.js';

/** What a page may pass as a model or golden file; an array of Files is a Hugging Face folder (a directory picker's files). */
export type SourceInput = string | URL | Blob | ArrayBuffer | Uint8Array | File[];

/** Bytes done / total (total 0 when the server did not say). */
export type DownloadProgress = (done: number, total: number) => void;

function needWorker(what: string): never {
  throw new UserError(`${what} can only be read synchronously inside a worker (load models through loadModel, which runs in one)`);
}

/** A Blob or File, read slice by slice with FileReaderSync. */
export function blobSource(blob: Blob, name = (blob as File).name || 'blob'): ByteSource {
  const G = globalThis as unknown as { FileReaderSync?: new () => { readAsArrayBuffer(b: Blob): ArrayBuffer } };
  if (!G.FileReaderSync) needWorker(name);
  const reader = new G.FileReaderSync!();
  let closed = false;
  return {
    name,
    size: blob.size,
    read(offset, length) {
      if (closed) throw new FormatError(`${name}: file already closed`);
      return new Uint8Array(reader.readAsArrayBuffer(blob.slice(offset, offset + length)));
    },
    close() { closed = true; },
  };
}

/** Turns a failed fetch into a message a person can act on (a CORS refusal and a network error look alike). */
function fetchFailed(url: string, e: unknown): UserError {
  return new UserError(`${url}: could not be fetched (${(e as Error).message}): the server is unreachable, or refused cross-origin access (it must send Access-Control-Allow-Origin for this page)`);
}

function httpError(url: string, status: number, statusText: string): UserError {
  if (status === 404) return new UserError(`${url}: not found (HTTP 404)`);
  return new UserError(`${url}: HTTP ${status} ${statusText}`.trimEnd());
}

/** A synchronous GET (worker only), optionally of a byte range. */
function syncGet(url: string, range?: [number, number]): { status: number; statusText: string; body: Uint8Array; header(n: string): string | null } {
  const xhr = new XMLHttpRequest();
  xhr.open('GET', url, false);
  xhr.responseType = 'arraybuffer';
  if (range) xhr.setRequestHeader('Range', `bytes=${range[0]}-${range[1]}`);
  try {
    xhr.send();
  } catch (e) {
    throw fetchFailed(url, e);
  }
  return {
    status: xhr.status, statusText: xhr.statusText,
    body: new Uint8Array(xhr.response as ArrayBuffer),
    header: (n) => xhr.getResponseHeader(n),
  };
}

/**
 * A URL read lazily with HTTP Range requests, one request per read (one per tensor). The size comes from the first
 * range response's Content-Range. Servers without Range support are refused: use `fetchSource` for those.
 */
export function urlRangeSource(url: string): ByteSource {
  if (typeof XMLHttpRequest === 'undefined' || typeof (globalThis as { document?: unknown }).document !== 'undefined') needWorker(url);
  const probe = syncGet(url, [0, 0]);
  if (probe.status !== 206) {
    if (probe.status >= 400) throw httpError(url, probe.status, probe.statusText);
    throw new UserError(`${url}: the server does not answer HTTP Range requests (status ${probe.status})`);
  }
  const m = /\/(\d+)\s*$/.exec(probe.header('Content-Range') ?? '');
  if (!m) throw new UserError(`${url}: Range response without a readable Content-Range total (cross-origin servers must expose it)`);
  const size = Number(m[1]);
  let closed = false;
  return {
    name: url,
    size,
    read(offset, length) {
      if (closed) throw new FormatError(`${url}: file already closed`);
      if (length === 0) return new Uint8Array(0);
      const r = syncGet(url, [offset, offset + length - 1]);
      if (r.status !== 206 || r.body.length !== length) {
        throw new FormatError(`${url}: range ${offset}+${length} answered with status ${r.status} and ${r.body.length} bytes`);
      }
      return r.body;
    },
    close() { closed = true; },
  };
}

/** The whole response in memory (small files: golden references, state files, vocabularies). */
export async function fetchSource(url: string): Promise<ByteSource> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw fetchFailed(url, e);
  }
  if (!res.ok) throw httpError(url, res.status, res.statusText);
  return bytesSource(await res.arrayBuffer(), url);
}

interface SyncHandle {
  read(buf: Uint8Array, opts: { at: number }): number;
  write(buf: Uint8Array, opts: { at: number }): number;
  getSize(): number;
  truncate(n: number): void;
  flush(): void;
  close(): void;
}
interface OpfsFile { createSyncAccessHandle(): Promise<SyncHandle>; getFile(): Promise<File> }
interface OpfsDir {
  getDirectoryHandle(n: string, o?: { create?: boolean }): Promise<OpfsDir>;
  getFileHandle(n: string, o?: { create?: boolean }): Promise<OpfsFile>;
  removeEntry(n: string): Promise<void>;
}

/** An OPFS file open for synchronous reads (dedicated workers only). The handle is exclusive until closed. */
export async function opfsSource(file: OpfsFile, name: string): Promise<ByteSource> {
  const h = await file.createSyncAccessHandle();
  let closed = false;
  return {
    name,
    size: h.getSize(),
    read(offset, length) {
      if (closed) throw new FormatError(`${name}: file already closed`);
      const buf = new Uint8Array(length);
      const n = h.read(buf, { at: offset });
      if (n !== length) throw new FormatError(`${name}: short read at ${offset} (${n} of ${length} bytes)`);
      return buf;
    },
    close() { if (!closed) { closed = true; h.close(); } },
  };
}

async function opfsRoot(): Promise<OpfsDir | undefined> {
  const storage = (globalThis as unknown as { navigator?: { storage?: { getDirectory?: () => Promise<OpfsDir> } } }).navigator?.storage;
  if (!storage?.getDirectory) return undefined;
  try {
    return await (await storage.getDirectory()).getDirectoryHandle('rwkv7-cache', { create: true });
  } catch {
    return undefined; // private windows and some embedders refuse OPFS
  }
}

/** A file name for a URL: a readable tail plus a hash (FNV-1a 64 over the URL). */
function cacheKey(url: string): string {
  let h = 0xcbf29ce484222325n;
  for (const c of new TextEncoder().encode(url)) h = BigInt.asUintN(64, (h ^ BigInt(c)) * 0x100000001b3n);
  const tail = (url.split(/[?#]/)[0]!.split('/').pop() || 'model').replace(/[^\w.-]/g, '_').slice(-60);
  return `${h.toString(16).padStart(16, '0')}-${tail}`;
}

function isQuotaError(e: unknown): boolean {
  return (e as { name?: string })?.name === 'QuotaExceededError';
}

export interface CachedDownload {
  source: ByteSource;
  /** Whether the file came from the cache (no download). */
  cached: boolean;
}

/**
 * The model at `url`, downloaded once into OPFS and read lazily from there (no second copy in memory). A second
 * call — or a second visit — finds the complete file and downloads nothing. Without OPFS, the file is read with Range
 * requests when the server supports them, else downloaded into memory.
 */
export async function cachedUrlSource(url: string, onProgress?: DownloadProgress): Promise<CachedDownload> {
  const dir = await opfsRoot();
  if (!dir) {
    try {
      return { source: urlRangeSource(url), cached: false };
    } catch (e) {
      if (e instanceof UserError && /Range/.test(e.message)) return { source: await fetchSource(url), cached: false };
      throw e;
    }
  }
  const key = cacheKey(url);
  const doneMark = `${key}.complete`;
  const fileHandle = await dir.getFileHandle(key, { create: true });
  let complete = false;
  try {
    await dir.getFileHandle(doneMark);
    complete = true;
  } catch { /* not downloaded yet */ }
  if (complete) return { source: await opfsSource(fileHandle, url), cached: true };

  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw fetchFailed(url, e);
  }
  if (!res.ok || !res.body) throw httpError(url, res.status, res.statusText);
  const type = res.headers.get('Content-Type') ?? '';
  if (/^text\/html/i.test(type)) throw new UserError(`${url}: the server answered with a web page (${type}), not a checkpoint`);
  const total = Number(res.headers.get('Content-Length') ?? 0) || 0;
  const h = await fileHandle.createSyncAccessHandle();
  let done = 0;
  try {
    h.truncate(0);
    const reader = res.body.getReader();
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      if (done === 0 && value.length >= 9 && !checkpointMagic(value)) {
        await reader.cancel();
        throw new UserError(`${url}: the response is not a checkpoint (.pth, .safetensors or .gguf: its first bytes do not match)`);
      }
      h.write(value, { at: done });
      done += value.length;
      onProgress?.(done, total);
    }
    if (total && done !== total) throw new UserError(`${url}: the download ended after ${done} of ${total} bytes`);
    h.flush();
  } catch (e) {
    h.close();
    await dir.removeEntry(key).catch(() => undefined);
    if (isQuotaError(e)) {
      throw new UserError(`${url}: not enough browser storage to cache the model (${(total || done) / 2 ** 20 | 0} MiB needed; free some site data, or load the file from disk)`);
    }
    throw e;
  }
  h.close();
  await dir.getFileHandle(doneMark, { create: true });
  return { source: await opfsSource(fileHandle, url), cached: false };
}

/** Deletes every cached model of this origin. */
export async function clearModelCache(): Promise<void> {
  const storage = (globalThis as unknown as { navigator?: { storage?: { getDirectory?: () => Promise<OpfsDir> } } }).navigator?.storage;
  if (!storage?.getDirectory) return;
  const root = await storage.getDirectory();
  await (root as unknown as { removeEntry(n: string, o: { recursive: boolean }): Promise<void> }).removeEntry('rwkv7-cache', { recursive: true }).catch(() => undefined);
}

/**
 * The files of a folder the user picked (`<input type=file webkitdirectory>`, or dropped files) as a FileSet: files by
 * their bare name (the last path component), so `config.json`, `model.safetensors` and shards are found.
 */
export function fileListSet(files: readonly File[], name = 'folder'): FileSet {
  const byName = new Map<string, File>();
  for (const f of files) byName.set((f.webkitRelativePath || f.name).split('/').pop()!, f);
  return {
    name,
    pathOf: (file) => `${name}/${file}`,
    open: (file) => {
      const f = byName.get(file);
      return f ? blobSource(f, `${name}/${file}`) : undefined;
    },
  };
}

/** Any page input as a ByteSource or FileSet (inside the worker). `url` inputs are cached when `cache` is set. */
export async function openInput(input: SourceInput, opts: { cache?: boolean; onProgress?: DownloadProgress; name?: string } = {}): Promise<ByteSource | FileSet> {
  if (Array.isArray(input)) return fileListSet(input);
  if (input instanceof ArrayBuffer || input instanceof Uint8Array) return bytesSource(input, opts.name ?? 'buffer');
  if (typeof Blob !== 'undefined' && input instanceof Blob) return blobSource(input, opts.name);
  const url = new URL(String(input), (globalThis as { location?: { href: string } }).location?.href).href;
  if (opts.cache) return (await cachedUrlSource(url, opts.onProgress)).source;
  return fetchSource(url);
}
