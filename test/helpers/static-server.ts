/**
 * A small static file server for the browser tests: files under named roots (`/lib/` → dist/browser, `/shared/` →
 * ../shared, ...), HTTP Range requests, and optionally the COOP/COEP headers that make a page cross-origin isolated.
 * Loopback only.
 */
import * as http from 'node:http';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.txt': 'text/plain; charset=utf-8', '.map': 'application/json',
};

export interface StaticServer {
  url: string;
  /** Requests served, by path (to check that a cached model is not downloaded again). */
  hits: Map<string, number>;
  close(): Promise<void>;
}

export async function startStaticServer(roots: Record<string, string>, opts: { isolated?: boolean; pages?: Record<string, string> } = {}): Promise<StaticServer> {
  const hits = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const p = decodeURIComponent(url.pathname);
    hits.set(p, (hits.get(p) ?? 0) + 1);
    if (opts.isolated !== false) {
      res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
      res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
    }
    res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
    if (opts.pages?.[p] !== undefined) {
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(opts.pages[p]);
      return;
    }
    const prefix = Object.keys(roots).find((r) => p.startsWith(r));
    const file = prefix ? path.join(roots[prefix]!, p.slice(prefix.length)) : undefined;
    if (!file || file.includes('..') || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.statusCode = 404;
      res.end('not found');
      return;
    }
    const size = fs.statSync(file).size;
    res.setHeader('Content-Type', TYPES[path.extname(file)] ?? 'application/octet-stream');
    res.setHeader('Accept-Ranges', 'bytes');
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start > end || start >= size) {
        res.statusCode = 416;
        res.setHeader('Content-Range', `bytes */${size}`);
        res.end();
        return;
      }
      res.statusCode = 206;
      res.setHeader('Content-Range', `bytes ${start}-${end}/${size}`);
      res.setHeader('Content-Length', end - start + 1);
      fs.createReadStream(file, { start, end }).pipe(res);
      return;
    }
    res.setHeader('Content-Length', size);
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
