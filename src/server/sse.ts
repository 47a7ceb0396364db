/**
 * Server-Sent Events framing for the streaming endpoints, written straight to the Node response (the route
 * hijacks the reply from fastify once the stream starts).
 *
 * Each event is one `data: <json>\n\n` block (JSON.stringify never emits a raw newline, so one data line
 * suffices); the stream ends with `data: [DONE]\n\n`, as OpenAI's does. Writes after the client has gone are
 * dropped silently.
 */
import type { ServerResponse } from 'node:http';

export const SSE_DONE = 'data: [DONE]\n\n';

/** One SSE event carrying a JSON payload. */
export function sseEvent(payload: unknown): string {
  return `data: ${JSON.stringify(payload)}\n\n`;
}

export class SseWriter {
  constructor(private readonly res: ServerResponse) {}

  /**
   * Sends the status line and headers (200, text/event-stream, no caching, plus `extra`). No `connection`
   * header of its own: Node's (keep-alive, or close when the client asked for it — then the socket is closed
   * once the stream has ended).
   */
  open(extra: Record<string, string | number>): void {
    this.res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no', // tell reverse proxies not to buffer the stream
      ...Object.fromEntries(Object.entries(extra).map(([k, v]) => [k, String(v)])),
    });
    this.res.flushHeaders();
  }

  get closed(): boolean {
    return this.res.destroyed || this.res.writableEnded;
  }

  send(payload: unknown): void {
    if (!this.closed) this.res.write(sseEvent(payload));
  }

  /** Ends the stream with `data: [DONE]`. */
  done(): void {
    if (!this.closed) this.res.end(SSE_DONE);
  }

  /** Ends the stream without [DONE] (after an error event). */
  end(): void {
    if (!this.closed) this.res.end();
  }
}
