/**
 * Downloading a checkpoint into the model cache (Node): `rwkv7 pull NAME|URL`.
 *
 * The bytes go to `<file>.part`; `<file>.part.json` records the URL and the server's validators (ETag /
 * Last-Modified) and total length. A later pull of the same URL resumes with `Range: bytes=<have>-` (and
 * `If-Range`, so that a file changed on the server restarts from zero instead of being spliced). When the bytes
 * are complete the file is checked (length, SHA-256 when known, checkpoint magic and tensor index) and only then
 * renamed to its final name, so the cache never holds a half or a bad file under a usable name.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { createHash } from 'node:crypto';
import { UserError } from '../errors.js';
import { openCheckpoint } from '../formats/index.js';
import { checkpointMagic } from '../formats/magic.js';
import { configFromCheckpoint } from '../model/config.js';
import {
  catalogueEntry, catalogueUrl, modelsDir, safeFileName, PART_META_SUFFIX, PART_SUFFIX, type CatalogueEntry,
} from './models.js';

export interface PullTarget {
  url: string;
  /** File name in the cache. */
  file: string;
  sha256?: string;
  entry?: CatalogueEntry;
}

/** A catalogue name or an http(s) URL → what to download. */
export function pullTarget(what: string, opts: { sha256?: string; env?: NodeJS.ProcessEnv } = {}): PullTarget {
  const sha256 = opts.sha256?.toLowerCase();
  if (sha256 !== undefined && !/^[0-9a-f]{64}$/.test(sha256)) throw new UserError('--sha256 must be 64 hex digits');
  const entry = catalogueEntry(what);
  if (entry) return { url: catalogueUrl(entry, opts.env), file: entry.file, sha256: sha256 ?? entry.sha256, entry };
  let u: URL;
  try {
    u = new URL(what);
  } catch {
    throw new UserError(`'${what}' is neither a known model name (rwkv7 list shows them) nor a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UserError(`${what}: only http and https URLs can be pulled`);
  const last = decodeURIComponent(u.pathname.split('/').filter(Boolean).pop() ?? '');
  if (!last) throw new UserError(`${what}: the URL names no file`);
  return { url: u.href, file: safeFileName(last), sha256 };
}

export interface PullOptions {
  dir?: string;
  /** Download again even if the file is already cached. */
  force?: boolean;
  /** Extra attempts after a dropped connection (each resumes where the last one stopped). Default 2. */
  retries?: number;
  /** Milliseconds before a retry. Default 1000. */
  retryDelayMs?: number;
  /** Called as bytes arrive: bytes on disk so far, and the total when the server said. `resumedFrom` > 0 on a resume. */
  onProgress?: (done: number, total: number | undefined, resumedFrom: number) => void;
  /** Called when the bytes are complete and the file is being checked. */
  onVerify?: () => void;
  signal?: AbortSignal;
}

export interface PullResult {
  path: string;
  bytes: number;
  /** False when the file was already in the cache. */
  downloaded: boolean;
  /** Bytes that an earlier interrupted pull had already fetched. */
  resumedFrom: number;
  sha256: string;
  verified: boolean;
}

interface PartMeta {
  url: string;
  etag?: string;
  lastModified?: string;
  total?: number;
}

function readMeta(path: string): PartMeta | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path, 'utf8')) as PartMeta;
    return typeof m?.url === 'string' ? m : undefined;
  } catch {
    return undefined;
  }
}

function removeQuiet(...paths: string[]): void {
  for (const p of paths) {
    try { fs.rmSync(p, { force: true }); } catch { /* nothing to remove */ }
  }
}

function fmtBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

/** A fetch failure (no HTTP answer) as a sentence: connection refused, host not found, reset, ... */
function networkReason(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  const code = err?.cause?.code ?? (err as NodeJS.ErrnoException)?.code;
  switch (code) {
    case 'ECONNREFUSED': return 'connection refused';
    case 'ENOTFOUND': case 'EAI_AGAIN': return 'host not found';
    case 'ECONNRESET': case 'UND_ERR_SOCKET': return 'connection reset';
    case 'ETIMEDOUT': case 'UND_ERR_CONNECT_TIMEOUT': return 'connection timed out';
    default: return err?.cause?.message ?? err?.message ?? String(e);
  }
}

class DiskError extends UserError {}
/** A dropped connection or a transfer cut short: worth another (resuming) attempt. */
class TransferError extends UserError {}

/** "bytes 100-199/1000" → {start 100, total 1000}. */
function parseContentRange(v: string | null): { start: number; total?: number } | undefined {
  const m = v ? /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(v.trim()) : null;
  if (!m) return undefined;
  return { start: Number(m[1]), total: m[2] === '*' ? undefined : Number(m[2]) };
}

/** One HTTP request appending to the .part file; resolves when the body has been written in full. */
async function fetchOnce(t: PullTarget, part: string, metaPath: string, opts: PullOptions): Promise<void> {
  let have = 0;
  let meta = readMeta(metaPath);
  if (fs.existsSync(part)) {
    have = fs.statSync(part).size;
    if (!meta || meta.url !== t.url) { have = 0; meta = undefined; }
  }
  if (have > 0 && meta?.total !== undefined && have >= meta.total) return; // complete already
  const headers: Record<string, string> = { 'user-agent': 'rwkv7-ts', 'accept-encoding': 'identity' };
  if (have > 0) {
    headers.range = `bytes=${have}-`;
    const validator = meta?.etag && !meta.etag.startsWith('W/') ? meta.etag : meta?.lastModified;
    if (validator) headers['if-range'] = validator;
  }
  let res: Response;
  try {
    res = await fetch(t.url, { headers, redirect: 'follow', signal: opts.signal });
  } catch (e) {
    if (opts.signal?.aborted) throw new UserError(`download of ${t.file} stopped`);
    const reason = networkReason(e);
    const host = (() => { try { return new URL(t.url).host; } catch { return t.url; } })();
    // Refused / not found: no point retrying.
    if (reason === 'connection refused' || reason === 'host not found') throw new UserError(`cannot download ${t.url}: ${host}: ${reason}`);
    throw new TransferError(`cannot download ${t.url}: ${reason}`);
  }
  if (res.status === 416 && have > 0) {
    // Nothing past what we have: either complete (total matches) or our part is bogus → start over.
    await res.body?.cancel();
    const cr = /\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
    if (cr && Number(cr[1]) === have) {
      fs.writeFileSync(metaPath, JSON.stringify({ ...meta, url: t.url, total: have }));
      return;
    }
    removeQuiet(part, metaPath);
    throw new TransferError(`${t.url}: the server refused to resume (416); starting over`);
  }
  if (res.status === 404) {
    await res.body?.cancel();
    throw new UserError(`cannot download ${t.url}: 404 Not Found (no such file on the server)`);
  }
  if (res.status !== 200 && res.status !== 206) {
    await res.body?.cancel();
    throw new UserError(`cannot download ${t.url}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`);
  }
  let start = 0;
  let total: number | undefined;
  const len = res.headers.get('content-length');
  if (res.status === 206) {
    const cr = parseContentRange(res.headers.get('content-range'));
    if (!cr || cr.start !== have) {
      await res.body?.cancel();
      removeQuiet(part, metaPath);
      throw new TransferError(`${t.url}: the server answered a different range than asked (${res.headers.get('content-range')}); starting over`);
    }
    start = have;
    total = cr.total;
  } else {
    total = len !== null && /^\d+$/.test(len) ? Number(len) : undefined;
  }
  const newMeta: PartMeta = {
    url: t.url,
    etag: res.headers.get('etag') ?? undefined,
    lastModified: res.headers.get('last-modified') ?? undefined,
    total,
  };
  fs.writeFileSync(metaPath, JSON.stringify(newMeta));

  // 200 on a resume (no Range support, or the file changed): the body is the whole file.
  const fd = fs.openSync(part, start > 0 ? 'a' : 'w');
  let done = start;
  opts.onProgress?.(done, total, start);
  try {
    if (!res.body) throw new TransferError(`${t.url}: empty response`);
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        let off = 0;
        while (off < chunk.length) {
          let n: number;
          try {
            n = fs.writeSync(fd, chunk, off, chunk.length - off);
          } catch (e) {
            const code = (e as NodeJS.ErrnoException).code;
            if (code === 'ENOSPC' || code === 'EDQUOT') {
              throw new DiskError(`disk full while writing ${part} (${fmtBytes(done)} written${total ? ` of ${fmtBytes(total)}` : ''}); free some space (or set RWKV7_HOME to another disk) and run the same pull again to resume`);
            }
            throw new DiskError(`cannot write ${part}: ${(e as Error).message}`);
          }
          off += n;
          done += n;
        }
        opts.onProgress?.(done, total, start);
      }
    } catch (e) {
      if (e instanceof UserError) throw e;
      if (opts.signal?.aborted) throw new UserError(`download of ${t.file} stopped after ${fmtBytes(done)}; run the same pull again to resume`);
      throw new TransferError(`download of ${t.url} interrupted after ${fmtBytes(done)}${total ? ` of ${fmtBytes(total)}` : ''} (${networkReason(e)})`);
    }
  } finally {
    fs.closeSync(fd);
  }
  if (total !== undefined && done !== total) {
    throw new TransferError(`download of ${t.url} ended after ${fmtBytes(done)} of ${fmtBytes(total)} (connection closed early)`);
  }
  if (total === undefined) fs.writeFileSync(metaPath, JSON.stringify({ ...newMeta, total: done }));
}

/** SHA-256 of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(path, { highWaterMark: 1 << 22 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Checks that a finished download is a checkpoint this runtime can load (magic bytes, then its tensor index). */
function checkCheckpoint(path: string, shownAs: string): void {
  const fd = fs.openSync(path, 'r');
  const head = Buffer.alloc(16);
  let n: number;
  try { n = fs.readSync(fd, head, 0, 16, 0); } finally { fs.closeSync(fd); }
  if (!checkpointMagic(head.subarray(0, n))) {
    const text = head.subarray(0, n).toString('latin1').replace(/[^\x20-\x7e]/g, '.');
    throw new UserError(`${shownAs}: the downloaded file is not a checkpoint (starts with "${text}": not a .pth zip, safetensors or GGUF file); removed it`);
  }
  let ck;
  try {
    ck = openCheckpoint(path);
  } catch (e) {
    throw new UserError(`${shownAs}: the downloaded file is not a usable checkpoint (${(e as Error).message}); removed it`);
  }
  try {
    configFromCheckpoint(ck);
  } catch (e) {
    throw new UserError(`${shownAs}: the downloaded file is not an RWKV-7 checkpoint (${(e as Error).message}); removed it`);
  } finally {
    ck.close();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Downloads `t` into the cache folder (resuming an interrupted download of the same URL), verifies it and
 * returns where it is. Errors are UserErrors with a sentence for the user; a partial download is kept for the
 * next attempt unless it is known to be bad (checksum mismatch, not a checkpoint), which is removed.
 */
export async function pull(t: PullTarget, opts: PullOptions = {}): Promise<PullResult> {
  const dir = opts.dir ?? modelsDir();
  const dest = nodePath.join(dir, t.file);
  const part = dest + PART_SUFFIX;
  const metaPath = dest + PART_META_SUFFIX;
  if (!opts.force && fs.existsSync(dest)) {
    const bytes = fs.statSync(dest).size;
    return { path: dest, bytes, downloaded: false, resumedFrom: 0, sha256: '', verified: false };
  }
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new UserError(`cannot create the model folder ${dir}: ${(e as Error).message}`);
  }
  if (opts.force) removeQuiet(dest);
  const resumedFrom = fs.existsSync(part) && readMeta(metaPath)?.url === t.url ? fs.statSync(part).size : 0;
  const retries = opts.retries ?? 2;
  for (let attempt = 0; ; attempt++) {
    try {
      await fetchOnce(t, part, metaPath, opts);
      break;
    } catch (e) {
      if (!(e instanceof TransferError) || attempt >= retries || opts.signal?.aborted) {
        if (e instanceof TransferError) {
          throw new UserError(`${e.message}; the part already downloaded is kept: run the same pull again to resume`);
        }
        throw e;
      }
      await sleep(opts.retryDelayMs ?? 1000);
    }
  }
  opts.onVerify?.();
  const bytes = fs.statSync(part).size;
  const sha256 = await sha256File(part);
  if (t.sha256 && sha256 !== t.sha256) {
    removeQuiet(part, metaPath);
    throw new UserError(`${t.file}: checksum mismatch (sha256 ${sha256}, expected ${t.sha256}); the downloaded file was removed`);
  }
  try {
    checkCheckpoint(part, t.file);
  } catch (e) {
    removeQuiet(part, metaPath);
    throw e;
  }
  fs.renameSync(part, dest);
  removeQuiet(metaPath);
  return { path: dest, bytes, downloaded: true, resumedFrom, sha256, verified: t.sha256 !== undefined };
}

export { fmtBytes };
