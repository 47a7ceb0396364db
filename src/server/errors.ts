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
  tooLarge: (limit: number) =>
    new ApiError(413, `Request body too large (limit ${limit} bytes).`, 'invalid_request_error', null, 'request_too_large'),
  queueFull: () =>
    new ApiError(429, 'The server is busy: too many requests are queued. Retry later.', 'rate_limit_error', null, 'queue_full'),
  shuttingDown: () =>
    new ApiError(503, 'The server is shutting down.', 'server_error', null, 'shutting_down'),
  internal: () =>
    new ApiError(500, 'The server had an internal error while processing the request.', 'server_error', null, 'internal_error'),
};
