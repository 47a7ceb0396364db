/**
 * OpenAI-style API errors: every failure reaches the client as
 *   {"error": {"message": "...", "type": "...", "param": "..." | null, "code": "..." | null}}
 * with a matching HTTP status. Never a stack trace.
 */

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400: a field is missing, of the wrong type or out of range. */
export function invalid(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

export const errors = {
  unauthorized: () =>
    new ApiError(401, 'Incorrect or missing API key: send it as "Authorization: Bearer <key>".', 'invalid_request_error', null, 'invalid_api_key'),
  notFound: (method: string, url: string) =>
    new ApiError(404, `Unknown route: ${method} ${url}`, 'invalid_request_error', null, 'unknown_url'),
  methodNotAllowed: (method: string, url: string, allow: string[]) =>
    new ApiError(405, `Method ${method} is not allowed on ${url} (allowed: ${allow.join(', ')})`, 'invalid_request_error', null, 'method_not_allowed'),
  badRequest: (message: string, code: string) => new ApiError(400, message, 'invalid_request_error', null, code),
  timeout: () =>
    new ApiError(408, 'The request was not received in time.', 'invalid_request_error', null, 'request_timeout'),
  uriTooLong: (limit: number) =>
    new ApiError(414, `The request URL is too long (limit ${limit} bytes).`, 'invalid_request_error', null, 'uri_too_long'),
  headersTooLarge: () =>
    new ApiError(431, 'The request headers are too large.', 'invalid_request_error', null, 'headers_too_large'),
  tooManyConnections: () =>
    new ApiError(503, 'Too many open connections from this address: close some and retry.', 'server_error', null, 'too_many_connections'),
  tooLarge: (limit: number) =>
    new ApiError(413, `Request body too large (limit ${limit} bytes).`, 'invalid_request_error', null, 'request_too_large'),
  queueFull: () =>
    new ApiError(429, 'The server is busy: too many requests are queued. Retry later.', 'rate_limit_error', null, 'queue_full'),
  shuttingDown: () =>
    new ApiError(503, 'The server is shutting down.', 'server_error', null, 'shutting_down'),
  internal: () =>
    new ApiError(500, 'The server had an internal error while processing the request.', 'server_error', null, 'internal_error'),
};

/**
 * A complete HTTP/1.1 response carrying `err`'s body, closing the connection: for the places where no
 * request/response pair exists (malformed requests, timeouts, refused connections), written to the socket.
 */
export function rawResponse(err: ApiError): string {
  const body = JSON.stringify(err.body());
  return `HTTP/1.1 ${err.status} ${STATUS_TEXT[err.status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request', 405: 'Method Not Allowed', 408: 'Request Timeout', 413: 'Payload Too Large', 414: 'URI Too Long',
  431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 503: 'Service Unavailable',
};
