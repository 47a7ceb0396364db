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
      const text = Buffer.concat(chunks).toString('utf8');
      const head = text.split('\r\n\r\n', 1)[0] ?? '';
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const line of head.split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      let body = text.slice(head.length + 4);
      if (headers['transfer-encoding'] === 'chunked') body = dechunk(body);
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

function dechunk(body: string): string {
  let out = '';
  let rest = body;
  for (;;) {
    const i = rest.indexOf('\r\n');
    if (i < 0) return out;
    const n = parseInt(rest.slice(0, i), 16);
    if (!(n > 0)) return out;
    out += rest.slice(i + 2, i + 2 + n);
    rest = rest.slice(i + 2 + n + 2);
  }
}
