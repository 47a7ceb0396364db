// `rwkv7 pull` and `rwkv7 list` against a loopback HTTP server (nothing leaves the machine): a download with a
// progress of bytes into $RWKV7_HOME, resume after a dropped connection (HTTP Range, byte-identical result), 404,
// connection refused, checksum mismatch, a file that is not a checkpoint, catalogue names through HF_ENDPOINT,
// and the pulled name working as --model.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as http from 'node:http';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { modelsDir, resolveModelArg, catalogueEntry, catalogueUrl, CATALOGUE } from '../src/platform/models.js';
import { pull, pullTarget } from '../src/platform/download.js';

const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const fixture = fileURLToPath(new URL('../../shared/fixtures/models/tiny-l2-d128.pth', import.meta.url));
const BYTES = readFileSync(fixture);
const SHA = createHash('sha256').update(BYTES).digest('hex');
const ETAG = '"tiny-v1"';

interface Hit { path: string; range?: string; ifRange?: string }
const hits: Hit[] = [];
/** Paths whose next plain (non-Range) request is cut off halfway. */
const dropNext = new Set<string>();
let server: http.Server;
let base = '';

/** Serves BYTES (with Range/If-Range) under any path ending in .pth, except the special routes. */
function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  const range = req.headers.range;
  const ifRange = req.headers['if-range'] as string | undefined;
  hits.push({ path, range, ifRange });
  if (path.startsWith('/missing/')) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('Entry not found');
    return;
  }
  if (path.startsWith('/html/')) {
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><html><body>Please log in</body></html>');
    return;
  }
  if (path.startsWith('/redirect/')) {
    res.writeHead(302, { location: path.replace('/redirect/', '/files/') }).end();
    return;
  }
  const size = BYTES.length;
  const m = range && (!ifRange || ifRange === ETAG) ? /^bytes=(\d+)-$/.exec(range) : null;
  if (m) {
    const start = Number(m[1]);
    if (start >= size) {
      res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
      return;
    }
    res.writeHead(206, { 'content-length': String(size - start), 'content-range': `bytes ${start}-${size - 1}/${size}`, etag: ETAG, 'accept-ranges': 'bytes' });
    res.end(BYTES.subarray(start));
    return;
  }
  res.writeHead(200, { 'content-length': String(size), etag: ETAG, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' });
  if (dropNext.has(path)) {
    dropNext.delete(path);
    // Half the file, then the connection dies.
    res.write(BYTES.subarray(0, Math.floor(size / 2)), () => setTimeout(() => res.socket?.destroy(), 20));
    return;
  }
  res.end(BYTES);
}

before(async () => {
  server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

function rwkv7(home: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // HF_ENDPOINT points the catalogue at the loopback server; no proxy may take the requests elsewhere.
  const env = { ...process.env, RWKV7_HOME: home, HF_ENDPOINT: base, NO_PROXY: '*', HTTP_PROXY: '', HTTPS_PROXY: '', http_proxy: '', https_proxy: '' };
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', main, ...args], { env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

const noStack = (s: string) => assert.doesNotMatch(s, /at .*\.ts:\d+|internal error/);

test('pull a URL into $RWKV7_HOME (through a redirect, sha256 verified); the file name then works as --model and list shows it', async () => {
  const home = mkdtempSync(join(tmpdir(), 'rwkv7-home-'));
  try {
    const r = await rwkv7(home, 'pull', `${base}/redirect/tiny-l2-d128.pth`, '--sha256', SHA);
    assert.equal(r.code, 0, r.stderr);
    const dest = join(home, 'tiny-l2-d128.pth');
    assert.equal(r.stdout.trim(), dest);
    assert.match(r.stderr, /\(verified\)/);
    assert.ok(readFileSync(dest).equals(BYTES));
    assert.deepEqual(readdirSync(home), ['tiny-l2-d128.pth'], 'no .part left behind');

    // Already there: no second download.
    const n = hits.length;
    const again = await rwkv7(home, 'pull', `${base}/redirect/tiny-l2-d128.pth`);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /already downloaded/);
    assert.equal(hits.length, n);

    for (const name of ['tiny-l2-d128.pth', 'tiny-l2-d128']) {
      const info = await rwkv7(home, 'info', name, '--json');
      assert.equal(info.code, 0, info.stderr);
      const j = JSON.parse(info.stdout);
      assert.equal(j.path, dest);
      assert.equal(j.n_layer, 2);
    }
    const list = await rwkv7(home, 'list');
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`tiny-l2-d128\\.pth +1\\.4 MiB +${dest.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    assert.match(list.stdout, /catalogue \(rwkv7 pull NAME\):\n {2}g1-0\.1b/);
    const lj = JSON.parse((await rwkv7(home, 'list', '--json')).stdout);
    assert.equal(lj.dir, home);
    assert.deepEqual(lj.cached.map((c: { file: string; bytes: number }) => [c.file, c.bytes]), [['tiny-l2-d128.pth', BYTES.length]]);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('a dropped connection leaves a .part; the next pull resumes it with a Range request, byte-identical', async () => {
  const home = mkdtempSync(join(tmpdir(), 'rwkv7-home-'));
  try {
    const url = `${base}/files/drop/tiny-l2-d128.pth`;
    dropNext.add('/files/drop/tiny-l2-d128.pth');
    const first = await rwkv7(home, 'pull', url, '--retries', '0');
    assert.equal(first.code, 1);
    assert.match(first.stderr, /^rwkv7: download of .* interrupted after .* of 1\.4 MiB .*run the same pull again to resume/m);
    noStack(first.stderr);
    const part = join(home, 'tiny-l2-d128.pth.part');
    const half = Math.floor(BYTES.length / 2);
    assert.equal(readFileSync(part).length, half);
    assert.ok(!existsSync(join(home, 'tiny-l2-d128.pth')));
    // Not usable as --model while incomplete.
    const early = await rwkv7(home, 'info', 'tiny-l2-d128.pth');
    assert.notEqual(early.code, 0);

    const from = hits.length;
    const second = await rwkv7(home, 'pull', url);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /resumed after 721\.0 KiB/);
    const reqs = hits.slice(from);
    assert.equal(reqs.length, 1);
    assert.equal(reqs[0]!.range, `bytes=${half}-`);
    assert.equal(reqs[0]!.ifRange, ETAG);
    assert.ok(readFileSync(join(home, 'tiny-l2-d128.pth')).equals(BYTES), 'byte-identical');
    assert.deepEqual(readdirSync(home), ['tiny-l2-d128.pth']);

    // With retries (the default), one pull gets over a drop by itself.
    rmSync(join(home, 'tiny-l2-d128.pth'));
    dropNext.add('/files/drop/tiny-l2-d128.pth');
    const from2 = hits.length;
    const auto = await rwkv7(home, 'pull', url);
    assert.equal(auto.code, 0, auto.stderr);
    assert.deepEqual(hits.slice(from2).map((h) => h.range), [undefined, `bytes=${half}-`]);
    assert.ok(readFileSync(join(home, 'tiny-l2-d128.pth')).equals(BYTES));
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('clear errors: 404, connection refused, checksum mismatch, not a checkpoint (bad files removed)', async () => {
  const home = mkdtempSync(join(tmpdir(), 'rwkv7-home-'));
  try {
    const nf = await rwkv7(home, 'pull', `${base}/missing/nothing.pth`);
    assert.equal(nf.code, 1);
    assert.match(nf.stderr, /^rwkv7: cannot download http:\/\/127\.0\.0\.1:\d+\/missing\/nothing\.pth: 404 Not Found/m);
    noStack(nf.stderr);

    // A port nothing listens on.
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const refused = await rwkv7(home, 'pull', `http://127.0.0.1:${port}/x.pth`);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`^rwkv7: cannot download .*: 127\\.0\\.0\\.1:${port}: connection refused`, 'm'));
    noStack(refused.stderr);

    const bad = await rwkv7(home, 'pull', `${base}/files/tiny-l2-d128.pth`, '--sha256', '0'.repeat(64));
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, new RegExp(`checksum mismatch \\(sha256 ${SHA}, expected 0{64}\\); the downloaded file was removed`));
    noStack(bad.stderr);

    const html = await rwkv7(home, 'pull', `${base}/html/model.pth`);
    assert.equal(html.code, 1);
    assert.match(html.stderr, /model\.pth: the downloaded file is not a checkpoint \(starts with "<!doctype html><": not a \.pth zip, safetensors or GGUF file\); removed it/);
    noStack(html.stderr);

    const junk = await rwkv7(home, 'pull', 'not-a-model');
    assert.equal(junk.code, 1);
    assert.match(junk.stderr, /'not-a-model' is neither a known model name/);
    const shaBad = await rwkv7(home, 'pull', `${base}/files/tiny-l2-d128.pth`, '--sha256', 'xyz');
    assert.match(shaBad.stderr, /--sha256 must be 64 hex digits/);

    assert.deepEqual(readdirSync(home), [], 'nothing left behind');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('disk full while writing: a clear error (Linux: the .part is a link to /dev/full)', { skip: process.platform !== 'linux' || !existsSync('/dev/full') }, async () => {
  const home = mkdtempSync(join(tmpdir(), 'rwkv7-home-'));
  try {
    symlinkSync('/dev/full', join(home, 'tiny-l2-d128.pth.part'));
    const r = await rwkv7(home, 'pull', `${base}/files/tiny-l2-d128.pth`);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^rwkv7: disk full while writing .*tiny-l2-d128\.pth\.part \(0 B written of 1\.4 MiB\); free some space/m);
    noStack(r.stderr);
    assert.ok(!existsSync(join(home, 'tiny-l2-d128.pth')));
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('catalogue names: not yet pulled → says to pull; pulled through HF_ENDPOINT → works as --model', async () => {
  const home = mkdtempSync(join(tmpdir(), 'rwkv7-home-'));
  try {
    const e = catalogueEntry('g1-0.1b')!;
    const missing = await rwkv7(home, 'generate', '--model', 'g1-0.1b', '--prompt', 'Hi', '--max-tokens', '1');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, new RegExp(`^rwkv7: model 'g1-0\\.1b' \\(${e.file.replace(/\./g, '\\.')}\\) is not downloaded yet: run 'rwkv7 pull g1-0\\.1b' first`, 'm'));
    noStack(missing.stderr);

    // The fixture stands in for the real file (served under the catalogue's Hugging Face path).
    const from = hits.length;
    const r = await rwkv7(home, 'pull', 'G1D-0.1B');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(hits.slice(from).map((h) => h.path), [`/BlinkDL/rwkv7-g1/resolve/main/${e.file}`]);
    assert.match(r.stderr, /use it with --model g1-0\.1b/);
    const info = await rwkv7(home, 'info', 'g1-0.1b', '--json');
    assert.equal(info.code, 0, info.stderr);
    assert.equal(JSON.parse(info.stdout).path, join(home, e.file));
    const list = await rwkv7(home, 'list');
    assert.match(list.stdout, new RegExp(`downloaded \\(.*\\):\\n {2}g1-0\\.1b +1\\.4 MiB`));
    assert.match(list.stdout, new RegExp(`g1-0\\.1b +0\\.1B +${e.file.replace(/\./g, '\\.')} +\\(downloaded\\)`));
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('library: cache folder per platform, name resolution, URL targets', () => {
  assert.equal(modelsDir({ RWKV7_HOME: '/x/models' }, 'linux'), '/x/models');
  assert.equal(modelsDir({ HOME: '/home/u' }, 'linux'), '/home/u/.cache/rwkv7');
  assert.equal(modelsDir({ HOME: '/home/u', XDG_CACHE_HOME: '/c' }, 'linux'), '/c/rwkv7');
  assert.equal(modelsDir({ HOME: '/Users/u' }, 'darwin'), '/Users/u/Library/Caches/rwkv7');
  assert.match(modelsDir({ HOME: 'C:\\Users\\u', LOCALAPPDATA: 'C:\\Users\\u\\AppData\\Local' }, 'win32'), /AppData.Local.rwkv7$/);
  assert.equal(catalogueUrl(catalogueEntry('g1-0.4b')!, {}), 'https://huggingface.co/BlinkDL/rwkv7-g1/resolve/main/rwkv7-g1d-0.4b-20260210-ctx8192.pth');
  assert.equal(new Set(CATALOGUE.flatMap((c) => [c.name, ...c.aliases])).size, CATALOGUE.reduce((n, c) => n + 1 + c.aliases.length, 0));

  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-home-'));
  try {
    assert.equal(resolveModelArg(undefined, dir), undefined);
    assert.equal(resolveModelArg(fixture, dir), fixture);
    assert.equal(resolveModelArg('no/such/file.pth', dir), 'no/such/file.pth');
    assert.equal(resolveModelArg('unknown', dir), 'unknown');
    assert.throws(() => resolveModelArg('g1-2.9b', dir), /run 'rwkv7 pull g1-2\.9b' first/);
    writeFileSync(join(dir, 'mine.safetensors'), 'x');
    writeFileSync(join(dir, 'half.pth.part'), 'x');
    assert.equal(resolveModelArg('mine', dir), join(dir, 'mine.safetensors'));
    assert.equal(resolveModelArg('half.pth', dir), 'half.pth');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const t = pullTarget('https://h.example/a/b/My%20Model.pth?download=true');
  assert.equal(t.file, 'My Model.pth');
  assert.throws(() => pullTarget('ftp://h/x.pth'), /only http and https/);
  assert.throws(() => pullTarget('https://h.example/'), /names no file/);
});

test('library: pull reports progress as bytes arrive, then the file is checked', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-home-'));
  try {
    const seen: Array<[number, number | undefined]> = [];
    let verified = false;
    const r = await pull(pullTarget(`${base}/files/lib/tiny-l2-d128.pth`, { sha256: SHA.toUpperCase() }), {
      dir, onProgress: (done, total) => seen.push([done, total]), onVerify: () => { verified = true; },
    });
    assert.equal(r.path, join(dir, 'tiny-l2-d128.pth'));
    assert.ok(r.downloaded && r.verified && verified);
    assert.equal(r.sha256, SHA);
    assert.deepEqual(seen[0], [0, BYTES.length]);
    assert.deepEqual(seen.at(-1), [BYTES.length, BYTES.length]);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]![0] >= seen[i - 1]![0]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
