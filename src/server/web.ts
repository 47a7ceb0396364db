/**
 * The chat web page of `rwkv7 serve`: `/` is the page (dist/web/), `/lib/` the browser bundle (dist/browser/), and
 * `/model` the served checkpoint itself with HTTP Range support, so the page's in-browser engine can load the very
 * model the server runs (downloaded once into the browser's OPFS cache). `/model.json` describes it.
 *
 * Every response carries COOP/COEP, so the page is cross-origin isolated and its wasm threads work. Static files go
 * through @fastify/static (Range, ETag, conditional requests). With an API key set, `/model` is not served (the
 * key protects the model too); the page then offers only the server engine or a model of the user's own.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';
import { ApiError } from './errors.js';

/** dist/web and dist/browser: this file is <root>/src/server/web.ts or <root>/dist/server/web.js. */
const ROOT = new URL('../../', import.meta.url);
export const WEB_DIR = fileURLToPath(new URL('dist/web/', ROOT));
export const LIB_DIR = fileURLToPath(new URL('dist/browser/', ROOT));

/** Paths of the page and its files: served without the API key. */
export function isWebPath(url: string): boolean {
  const p = url.split('?')[0]!;
  return p === '/' || p === '/index.html' || p === '/app.js' || p === '/style.css' || p === '/favicon.svg' || p.startsWith('/lib/');
}

export interface WebOptions {
  /** The checkpoint the server runs (served at /model when it is one file and no API key is set). */
  modelPath: string;
  modelName: string;
  /** Whether an API key protects the server (then /model is not served). */
  protected: boolean;
  webDir?: string;
  libDir?: string;
}

export async function registerWeb(app: FastifyInstance, o: WebOptions): Promise<void> {
  const webDir = o.webDir ?? WEB_DIR;
  const libDir = o.libDir ?? LIB_DIR;
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('Cross-Origin-Opener-Policy', 'same-origin');
    reply.header('Cross-Origin-Embedder-Policy', 'require-corp');
    reply.header('Cross-Origin-Resource-Policy', 'same-origin');
    return payload;
  });
  const missing = (what: string) => new ApiError(404, `${what} is not built here: run 'npm run build'`, 'invalid_request_error', null, 'not_found');
  if (existsSync(libDir)) {
    await app.register(fastifyStatic, { root: libDir, prefix: '/lib/', decorateReply: false, index: false, wildcard: true });
  } else {
    app.get('/lib/*', async () => { throw missing('the browser bundle (dist/browser)'); });
  }
  if (existsSync(webDir)) {
    // The page's own files, one route each (the API under /v1 and /health stays the server's).
    await app.register(fastifyStatic, { root: webDir, prefix: '/', decorateReply: false, wildcard: false, index: 'index.html', allowedPath: (p) => isWebPath(p) });
  } else {
    app.get('/', async () => { throw missing('the chat page (dist/web)'); });
  }

  const file = existsSync(o.modelPath) && statSync(o.modelPath).isFile() ? o.modelPath : undefined;
  const servable = !!file && !o.protected;
  app.get('/model.json', async () => ({
    name: o.modelName,
    file: file ? basename(file) : null,
    size: file ? statSync(file).size : null,
    url: servable ? '/model' : null,
    why: servable ? null : o.protected ? 'the server has an API key: its model is not served to browsers' : 'the model is a folder, not one file',
  }));
  if (servable) {
    await app.register(async (scope) => {
      await scope.register(fastifyStatic, { root: dirname(file), serve: false, decorateReply: true });
      scope.get('/model', (_req, reply) => reply.header('Cache-Control', 'no-cache').sendFile(basename(file)));
    });
  }
}
