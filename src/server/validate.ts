/**
 * Parsing and validation of the OpenAI request bodies (`/v1/completions`, `/v1/chat/completions`) into one
 * normalized generation request. Every field is checked for type and range; a bad one is a 400 naming the
 * field (`param`). Unknown fields are ignored (clients send many optional extras); features this server does
 * not implement (echo, best_of, suffix, tools, logit_bias, ...) are refused explicitly rather than silently
 * ignored. `n` (choices per request) is accepted up to the server's `maxN`.
 *
 * Sampling defaults: fields the client leaves out take the runtime's defaults for the mode (GENERATE_DEFAULTS
 * for completions, CHAT_DEFAULTS for chat — the official RWKV settings), not OpenAI's; a client that sends
 * `temperature`, `top_p`, ... gets exactly those.
 */
import { MAX_TOP_LOGPROBS } from '../runtime/logprobs.js';
import { CHAT_DEFAULTS, GENERATE_DEFAULTS, type SamplingOptions } from '../runtime/sampler.js';
import { cleanMessage, systemBlock } from '../runtime/chat.js';
import { invalid } from './errors.js';

export type Endpoint = 'completion' | 'chat';

export interface Limits {
  /** Largest max_tokens honoured; larger requests are clamped to it. */
  maxTokensCap: number;
  /** Vocabulary size (token-id prompts are checked against it). */
  vocabSize: number;
  /** Largest `n` (choices per request) accepted (default 1). */
  maxN?: number;
}

export interface GenRequest {
  endpoint: Endpoint;
  /** Prompt text (chat: the rendered G1 template), or token ids (completions only). */
  prompt: string | number[];
  /** Choices to generate (OpenAI's `n`, 1 ≤ n ≤ maxN). */
  n: number;
  maxTokens: number;
  sampling: SamplingOptions;
  /** The client's stop strings (chat adds the template's own). */
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  /** Per-token logprobs and this many alternatives (0-20), or undefined for none. */
  logprobs?: { top: number };
  /** `response_format` as sent (turned into a token constraint by the server; json_object / json_schema / text). */
  responseFormat?: unknown;
  /** Extension: the name of an initial state loaded with `rwkv7 serve --state` (e.g. a state-tuned role). */
  state?: string;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
/** A field that is absent or JSON null counts as not given. */
const given = (body: Json, k: string): boolean => body[k] !== undefined && body[k] !== null;

function num(body: Json, k: string, min: number, max: number): number | undefined {
  if (!given(body, k)) return undefined;
  const v = body[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(`'${k}' must be a number`, k, 'invalid_type');
  if (v < min || v > max) throw invalid(`'${k}' must be between ${min} and ${max} (got ${v})`, k, 'invalid_value');
  return v;
}

function int(body: Json, k: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (!given(body, k)) return undefined;
  const v = body[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw invalid(`'${k}' must be an integer`, k, 'invalid_type');
  if (v < min || v > max) throw invalid(`'${k}' must be between ${min} and ${max} (got ${v})`, k, 'invalid_value');
  return v;
}

function bool(body: Json, k: string): boolean | undefined {
  if (!given(body, k)) return undefined;
  if (typeof body[k] !== 'boolean') throw invalid(`'${k}' must be a boolean`, k, 'invalid_type');
  return body[k] as boolean;
}

function parseStop(body: Json): string[] {
  if (!given(body, 'stop')) return [];
  const v = body.stop;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string')) {
    throw invalid("'stop' must be a string or an array of strings", 'stop', 'invalid_type');
  }
  if (list.length > 16) throw invalid("'stop' may hold at most 16 strings", 'stop', 'invalid_value');
  if (list.some((s) => s.length === 0 || s.length > 256)) {
    throw invalid("every 'stop' string must be 1 to 256 characters long", 'stop', 'invalid_value');
  }
  return list as string[];
}

/** Refuses fields that ask for something this server does not do. */
function refuseUnsupported(body: Json, endpoint: Endpoint): void {
  const unsupported = (k: string, why = `'${k}' is not supported by this server`) => invalid(why, k, 'unsupported_parameter');
  const truthy = (k: string) => given(body, k) && body[k] !== false && body[k] !== 0;
  if (given(body, 'logit_bias') && !(isObject(body.logit_bias) && Object.keys(body.logit_bias).length === 0)) throw unsupported('logit_bias');
  if (endpoint === 'completion') {
    if (truthy('echo')) throw unsupported('echo');
    if (given(body, 'best_of') && body.best_of !== 1) throw unsupported('best_of', "only 'best_of' = 1 is supported");
    if (given(body, 'suffix') && body.suffix !== '') throw unsupported('suffix');
  } else {
    for (const k of ['tools', 'functions']) {
      if (given(body, k) && !(Array.isArray(body[k]) && (body[k] as unknown[]).length === 0)) throw unsupported(k);
    }
  }
}

/** `n`: an integer from 1 to the server's cap (the choices of a request decode as one batch). */
function parseN(body: Json, maxN: number): number {
  if (!given(body, 'n')) return 1;
  const v = body.n;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw invalid("'n' must be an integer", 'n', 'invalid_type');
  if (v < 1 || v > maxN) {
    throw invalid(`'n' must be between 1 and ${maxN} on this server (got ${v})`, 'n', v > maxN ? 'unsupported_value' : 'invalid_value');
  }
  return v;
}

/**
 * logprobs as each endpoint spells it: chat `logprobs: true` + `top_logprobs: 0..20`; completions `logprobs: N`
 * (the number of alternatives, 0..20; OpenAI's legacy limit is 5, ours llama-server's 20).
 */
function parseLogprobs(body: Json, endpoint: Endpoint): { top: number } | undefined {
  if (endpoint === 'chat') {
    const on = bool(body, 'logprobs') ?? false;
    const top = int(body, 'top_logprobs', 0, MAX_TOP_LOGPROBS);
    if (top !== undefined && !on) throw invalid("'top_logprobs' needs 'logprobs': true", 'top_logprobs', 'invalid_value');
    return on ? { top: top ?? 0 } : undefined;
  }
  if (typeof body.logprobs === 'boolean') throw invalid("'logprobs' must be an integer (the number of alternatives) for completions", 'logprobs', 'invalid_type');
  const n = int(body, 'logprobs', 0, MAX_TOP_LOGPROBS);
  return n === undefined ? undefined : { top: n };
}

function parseResponseFormat(body: Json): unknown {
  if (!given(body, 'response_format')) return undefined;
  const rf = body.response_format;
  if (!isObject(rf) || typeof rf.type !== 'string') {
    throw invalid("'response_format' must be an object with a 'type' (text, json_object or json_schema)", 'response_format', 'invalid_type');
  }
  if (!['text', 'json_object', 'json_schema'].includes(rf.type)) {
    throw invalid(`'response_format.type' must be text, json_object or json_schema (got ${JSON.stringify(rf.type).slice(0, 40)})`, 'response_format.type', 'invalid_value');
  }
  return rf.type === 'text' ? undefined : rf;
}

/** The text of a message's `content`: a string, or an array of `{type: "text", text}` parts. */
function contentText(content: unknown, param: string, allowNull: boolean): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) {
    if (allowNull) return '';
    throw invalid(`'${param}' is required`, param, 'missing_required_parameter');
  }
  if (Array.isArray(content)) {
    return content.map((part, j) => {
      if (!isObject(part) || part.type !== 'text' || typeof part.text !== 'string') {
        throw invalid(`'${param}[${j}]' must be a text part ({"type": "text", "text": "..."}); other content types are not supported`, `${param}[${j}]`, 'invalid_type');
      }
      return part.text;
    }).join('\n');
  }
  throw invalid(`'${param}' must be a string or an array of text parts`, param, 'invalid_type');
}

/**
 * Renders chat messages with the RWKV-7 G1 template (see src/runtime/chat.ts):
 *   System: ...\n\nUser: ...\n\nAssistant: ...\n\nUser: ...\n\nAssistant:
 * Each message is cleaned like chat input (blank lines would end a turn). The prompt always ends with
 * "Assistant:" — the model writes the answer's leading space itself. A returned answer is sent back without
 * that space, and "Assistant: " + answer re-creates exactly what the model generated, so a follow-up turn's
 * prompt extends the previous prompt + answer (which is what the state cache keys on).
 */
export function renderChat(messages: unknown): string {
  if (!Array.isArray(messages)) throw invalid("'messages' must be an array", 'messages', 'invalid_type');
  if (messages.length === 0) throw invalid("'messages' must not be empty", 'messages', 'invalid_value');
  if (messages.length > 4096) throw invalid("'messages' may hold at most 4096 messages", 'messages', 'invalid_value');
  let s = '';
  messages.forEach((m, i) => {
    const p = `messages[${i}]`;
    if (!isObject(m)) throw invalid(`'${p}' must be an object`, p, 'invalid_type');
    const role = m.role;
    if (typeof role !== 'string') throw invalid(`'${p}.role' must be a string`, `${p}.role`, 'invalid_type');
    switch (role) {
      case 'system':
      case 'developer':
        s += systemBlock(contentText(m.content, `${p}.content`, false));
        break;
      case 'user':
        s += `User: ${cleanMessage(contentText(m.content, `${p}.content`, false))}\n\n`;
        break;
      case 'assistant': {
        if (given(m, 'tool_calls') && !(Array.isArray(m.tool_calls) && m.tool_calls.length === 0)) {
          throw invalid('tool calls are not supported', `${p}.tool_calls`, 'unsupported_parameter');
        }
        const text = cleanMessage(contentText(m.content, `${p}.content`, true));
        s += `Assistant:${text ? ` ${text}` : ''}\n\n`;
        break;
      }
      default:
        throw invalid(`'${p}.role' must be one of system, developer, user, assistant (got ${JSON.stringify(role).slice(0, 40)})`, `${p}.role`, 'invalid_value');
    }
  });
  return `${s}Assistant:`;
}

/** A completions prompt: a string, a one-string array, token ids, or a one-element array of token ids. */
function parsePrompt(body: Json, vocabSize: number): string | number[] {
  if (!given(body, 'prompt')) throw invalid("'prompt' is required", 'prompt', 'missing_required_parameter');
  let p = body.prompt;
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
  if (typeof p === 'string') {
    if (p.length === 0) throw invalid("'prompt' must not be empty", 'prompt', 'invalid_value');
    return p;
  }
  if (Array.isArray(p) && p.length > 0 && p.every((t) => typeof t === 'number')) {
    for (const t of p as number[]) {
      if (!(Number.isInteger(t) && t >= 0 && t < vocabSize)) {
        throw invalid(`'prompt' token id ${t} is not in this model's vocabulary (0..${vocabSize - 1})`, 'prompt', 'invalid_value');
      }
    }
    return p as number[];
  }
  if (Array.isArray(p) && p.length > 1) throw invalid('only one prompt per request is supported', 'prompt', 'unsupported_value');
  throw invalid("'prompt' must be a non-empty string or array of token ids", 'prompt', 'invalid_type');
}

/** Validates a request body; throws an ApiError (400) naming the first bad field. */
export function parseRequest(endpoint: Endpoint, body: unknown, limits: Limits): GenRequest {
  if (!isObject(body)) throw invalid('the request body must be a JSON object', null, 'invalid_body');
  if (given(body, 'model') && typeof body.model !== 'string') throw invalid("'model' must be a string", 'model', 'invalid_type');
  if (given(body, 'user') && typeof body.user !== 'string') throw invalid("'user' must be a string", 'user', 'invalid_type');
  refuseUnsupported(body, endpoint);

  const prompt = endpoint === 'chat' ? renderChat(body.messages) : parsePrompt(body, limits.vocabSize);

  // max_tokens (max_completion_tokens is the newer chat name); above the cap it is clamped to the cap.
  const mt = int(body, 'max_tokens', 0) ?? (endpoint === 'chat' ? int(body, 'max_completion_tokens', 0) : undefined);
  const maxTokens = Math.min(mt ?? (endpoint === 'chat' ? limits.maxTokensCap : 16), limits.maxTokensCap);

  const d = endpoint === 'chat' ? CHAT_DEFAULTS : GENERATE_DEFAULTS;
  const sampling: SamplingOptions = {
    temperature: num(body, 'temperature', 0, 2) ?? d.temperature,
    topP: num(body, 'top_p', 0, 1) ?? d.topP,
    topK: int(body, 'top_k', 0, 1 << 20) ?? d.topK, // extension (as in vLLM); 0 = off
    presencePenalty: num(body, 'presence_penalty', -2, 2) ?? d.presencePenalty,
    frequencyPenalty: num(body, 'frequency_penalty', -2, 2) ?? d.frequencyPenalty,
    penaltyDecay: d.penaltyDecay,
    seed: int(body, 'seed', Number.MIN_SAFE_INTEGER),
  };

  const stream = bool(body, 'stream') ?? false;
  let includeUsage = false;
  if (given(body, 'stream_options')) {
    const so = body.stream_options;
    if (!isObject(so)) throw invalid("'stream_options' must be an object", 'stream_options', 'invalid_type');
    includeUsage = bool(so, 'include_usage') ?? false;
  }

  if (given(body, 'state') && (typeof body.state !== 'string' || body.state.length > 256)) {
    throw invalid("'state' must be the name of a loaded state (a string)", 'state', 'invalid_type');
  }
  return {
    endpoint, prompt, n: parseN(body, limits.maxN ?? 1), maxTokens, sampling, stop: parseStop(body), stream, includeUsage,
    logprobs: parseLogprobs(body, endpoint), responseFormat: parseResponseFormat(body),
    state: given(body, 'state') ? body.state as string : undefined,
  };
}
