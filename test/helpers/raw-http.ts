/**
 * A raw loopback HTTP client for the abuse tests and the soak script (bench/soak.ts): writes bytes to a fresh socket
 * exactly as given (malformed requests included) and collects the reply until the server closes the socket or
 * `ms` pass. Loopback only.
 */
import { connect, type Socket } from 'node:net';

export interface RawResult {
  /** 0 when no status line came back. */
  status: number;
  headers: Record<string, string>;
  /** The body, de-chunked when the reply was chunked. */
  body: string;
  /** Everything received. */
  raw: string;
  /** Whether the server closed the connection (rather than the timeout ending it). */
  closed: boolean;
  ms: number;
}

/** Sends `data` to 127.0.0.1:`port`; `onSocket` may keep writing (bounded by the caller). */
export function raw(port: number, data: string | Buffer, ms = 3000, onSocket?: (s: Socket) => void): Promise<RawResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const s = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const text = all.toString('utf8');
      // The head ends at the first blank line, found in the bytes (the body is cut from them, not from `text`).
      const sep = all.indexOf('\r\n\r\n');
      const head = (sep < 0 ? all : all.subarray(0, sep)).toString('utf8');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const line of head.split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      const rest = sep < 0 ? all.subarray(all.length) : all.subarray(sep + 4);
      const body = (headers['transfer-encoding'] === 'chunked' ? dechunk(rest) : rest).toString('utf8');
      s.destroy();
      resolve({ status, headers, body, raw: text, closed, ms: performance.now() - t0 });
    };
    const timer = setTimeout(finish, ms);
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => { closed = true; finish(); });
    s.on('connect', () => {
      if (data.length > 0) s.write(data);
      onSocket?.(s);
    });
  });
}

/**
 * The payload of a chunked body, as far as it is complete. Chunk sizes count bytes, so this works on the bytes
 * (on a decoded string, a multi-byte character in a chunk would shift every later chunk boundary).
 */
function dechunk(body: Buffer): Buffer {
  const out: Buffer[] = [];
  let rest = body;
  for (;;) {
    const i = rest.indexOf('\r\n');
    if (i < 0) break;
    const n = parseInt(rest.subarray(0, i).toString('latin1'), 16);
    if (!(n > 0)) break;
    out.push(rest.subarray(i + 2, i + 2 + n));
    rest = rest.subarray(i + 2 + n + 2);
  }
  return Buffer.concat(out);
}
