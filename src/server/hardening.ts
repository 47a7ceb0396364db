/**
 * The server's defences against hostile or broken clients, set deliberately rather than left to framework
 * defaults:
 *
 * - timeouts: headers must arrive within `headersTimeout` and the whole request within `requestTimeout`
 *   (checked every ≤ 1 s, so a slowloris connection is closed within about a second of its limit, not after
 *   Node's 30 s check interval); a socket idle for `connectionTimeout` is closed (suspended while the model
 *   works on one of its requests, see index.ts); idle keep-alive sockets close after `keepAliveTimeout`;
 * - a global and a per-address cap on open connections: beyond it a new connection gets one 503 error
 *   response and is closed (behind a reverse proxy every client shares the proxy's address: raise or disable
 *   the per-address cap there);
 * - request bodies: at most `bodyLimit` bytes (413, and the connection is closed rather than reading the rest),
 *   valid UTF-8, valid JSON;
 * - URLs longer than `maxUrlBytes` are 414; unknown routes 404; a known route with another method 405;
 * - every error the framework or Node's HTTP parser produces (malformed request, bad percent-encoding, header
 *   overflow, timeouts) is an OpenAI error object, like the API's own errors, never a stack trace or a path.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { isUtf8 } from 'node:buffer';
import type { Server } from 'node:http';
import type { FastifyError, FastifyHttpOptions, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError, errors, rawResponse } from './errors.js';

export interface NetLimits {
  /** ms a socket may stay idle (no bytes either way) before it is closed (default 60 s). */
  connectionTimeout: number;
  /** ms to receive a whole request, headers and body (default 30 s). */
  requestTimeout: number;
  /** ms to receive the request headers (default 10 s; slowloris). */
  headersTimeout: number;
  /** ms an idle keep-alive connection is kept open between requests (default 5 s). */
  keepAliveTimeout: number;
  /** Open connections in all (default 512; 0 = no cap). */
  maxConnections: number;
  /** Open connections from one client address (default 64; 0 = no cap). */
  maxConnectionsPerIp: number;
  /** Longest request URL in bytes (default 8192; longer → 414). */
  maxUrlBytes: number;
}

export const NET_DEFAULTS: NetLimits = {
  connectionTimeout: 60_000,
  requestTimeout: 30_000,
  headersTimeout: 10_000,
  keepAliveTimeout: 5_000,
  maxConnections: 512,
  maxConnectionsPerIp: 64,
  maxUrlBytes: 8192,
};

/** Checks the limits (the NetLimits fields of `opts`; other fields are ignored); returns them complete. */
export function netLimits(opts: Partial<NetLimits>): NetLimits {
  const l = { ...NET_DEFAULTS };
  for (const k of Object.keys(NET_DEFAULTS) as (keyof NetLimits)[]) {
    const v = opts[k];
    if (v === undefined) continue;
    if (!(Number.isSafeInteger(v) && v >= 0)) throw new RangeError(`${k} must be an integer ≥ 0 (got ${v})`);
    l[k] = v;
  }
  for (const k of ['requestTimeout', 'headersTimeout', 'keepAliveTimeout', 'maxUrlBytes'] as const) {
    if (l[k] === 0) throw new RangeError(`${k} must be ≥ 1`);
  }
  if (l.headersTimeout > l.requestTimeout) throw new RangeError('headersTimeout must not exceed requestTimeout');
  return l;
}

/** Fastify constructor options for these limits. */
export function fastifyOptions(l: NetLimits, bodyLimit: number): FastifyHttpOptions<Server> {
  return {
    logger: false,
    bodyLimit,
    connectionTimeout: l.connectionTimeout,
    keepAliveTimeout: l.keepAliveTimeout,
    requestTimeout: l.requestTimeout,
    http: {
      headersTimeout: l.headersTimeout,
      requestTimeout: l.requestTimeout,
      keepAliveTimeout: l.keepAliveTimeout,
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(l.headersTimeout / 4))),
      // A request without Host reaches the routes (and their error shape) instead of Node's bare 400.
      requireHostHeader: false,
    },
    // Requests arriving while the server closes reach the routes, which answer 503 in the OpenAI shape.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    clientErrorHandler: onClientError,
    frameworkErrors: onFrameworkError,
  };
}

/** Malformed requests, header overflow and timeouts, from Node's HTTP parser: one error response, then close. */
function onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  let api: ApiError;
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') api = errors.timeout();
  else if (err.code === 'HPE_HEADER_OVERFLOW') api = errors.headersTooLarge();
  else {
    const code = typeof err.code === 'string' && /^HPE_[A-Z_]+$/.test(err.code) ? err.code : undefined;
    api = errors.badRequest(`Malformed HTTP request${code ? ` (${PARSER_ERRORS[code] ?? code})` : ''}.`, 'malformed_request');
  }
  // Not in the middle of a response already on this socket (a pipelined request after a stream, say).
  const current = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (socket.writable && !current?.headersSent) socket.write(rawResponse(api));
  socket.destroy();
}

const PARSER_ERRORS: Record<string, string> = {
  HPE_INVALID_METHOD: 'unknown method',
  HPE_INVALID_URL: 'invalid URL',
  HPE_INVALID_VERSION: 'invalid HTTP version',
  HPE_INVALID_HEADER_TOKEN: 'invalid header',
  HPE_INVALID_CONTENT_LENGTH: 'invalid Content-Length',
  HPE_UNEXPECTED_CONTENT_LENGTH: 'Content-Length together with Transfer-Encoding',
  HPE_INVALID_TRANSFER_ENCODING: 'invalid Transfer-Encoding',
  HPE_INVALID_CHUNK_SIZE: 'invalid chunk size',
  HPE_INVALID_CONSTANT: 'not HTTP',
};

/** Fastify's own routing errors: bad percent-encoding in the URL, a route parameter that is too long. */
function onFrameworkError(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  const api = err.code === 'FST_ERR_MAX_PARAM_LENGTH'
    ? errors.uriTooLong(100)
    : errors.badRequest(err.code === 'FST_ERR_BAD_URL' ? 'The request URL is not valid (bad percent-encoding).' : 'Bad request.', 'invalid_url');
  void reply.code(api.status).type('application/json').send(api.body());
}

export interface ConnectionStats {
  open: number;
  refused: number;
}

/**
 * Caps open connections (globally and per client address). Registers an onRequest hook that drops requests
 * arriving on a refused connection; call it before any other hook.
 */
export function limitConnections(app: FastifyInstance, l: NetLimits, log: (line: string) => void): () => ConnectionStats {
  const perIp = new Map<string, number>();
  const refused = new WeakSet<object>();
  let open = 0;
  let refusedCount = 0;
  app.server.on('connection', (socket: Socket) => {
    const ip = socket.remoteAddress ?? 'unknown';
    const n = perIp.get(ip) ?? 0;
    if ((l.maxConnections > 0 && open >= l.maxConnections) || (l.maxConnectionsPerIp > 0 && n >= l.maxConnectionsPerIp)) {
      refused.add(socket);
      if (refusedCount++ % 100 === 0) log(`refused a connection from ${ip}: ${open} open, ${n} from that address (${refusedCount} refused so far)`);
      socket.on('error', () => {});
      socket.end(rawResponse(errors.tooManyConnections()));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    open++;
    perIp.set(ip, n + 1);
    socket.once('close', () => {
      open--;
      const m = (perIp.get(ip) ?? 1) - 1;
      if (m > 0) perIp.set(ip, m);
      else perIp.delete(ip);
    });
  });
  app.addHook('onRequest', async (req, reply) => {
    if (refused.has(req.raw.socket)) {
      req.raw.socket.destroy();
      return reply.hijack();
    }
    if (Buffer.byteLength(req.url) > l.maxUrlBytes) {
      void reply.header('connection', 'close');
      throw errors.uriTooLong(l.maxUrlBytes);
    }
  });
  return () => ({ open, refused: refusedCount });
}

/** The JSON body parser: fastify's (prototype-poisoning checks included), after a UTF-8 check. */
export function installJsonParser(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const buf = body as Buffer;
    if (!isUtf8(buf)) {
      done(errors.badRequest('The request body is not valid UTF-8.', 'invalid_encoding'), undefined);
      return;
    }
    parse(req, buf.toString('utf8'), done);
  });
}

/** 404 for unknown paths, 405 (with an Allow header) for a known path asked with another method. */
export function notFoundHandler(app: FastifyInstance) {
  const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];
  return (req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split('?')[0]!.slice(0, 200);
    let allow: string[] = [];
    try {
      allow = METHODS.filter((m) => m !== req.method && app.findRoute({ method: m, url: path }) !== null);
    } catch {
      allow = [];
    }
    const api = allow.length > 0 ? errors.methodNotAllowed(req.method, path, allow) : errors.notFound(req.method, path);
    if (allow.length > 0) void reply.header('allow', allow.join(', '));
    void reply.code(api.status).type('application/json').send(api.body());
  };
}

/**
 * A last check on what an error message may reveal: no stack frames, no absolute path of this machine.
 * Fastify's and Node's request-error messages describe the request only; this guards against surprises.
 */
export function safeMessage(message: string): string {
  const cwd = process.cwd();
  if (/\n\s+at\s/.test(message) || (cwd.length > 1 && message.includes(cwd)) || /(?:^|[\s'"(])\/(?:home|root|usr|tmp|work|var|opt)\//.test(message)) {
    return 'Bad request.';
  }
  return message.length > 500 ? `${message.slice(0, 500)}…` : message;
}
