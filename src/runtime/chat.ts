/**
 * The RWKV-7 G1 chat template, as the official chat demos write it:
 *
 *   System: You are a helpful assistant.\n\nUser: Hello\n\nAssistant: Hi! How can I help?\n\nUser: ...\n\nAssistant:
 *
 * Turns are separated by a blank line, so a turn's own text never contains "\n\n" (user input is cleaned).
 * The answer is generated after "Assistant:" (the model writes the leading space) and ends at the next blank
 * line. With thinking on (G1 reasoning models), the assistant turn starts "Assistant: <think" and the model
 * continues the tag.
 *
 * A conversation keeps one state: each turn feeds only its new text, then after the answer the "\n\n" that
 * closes the turn (unless the generated tokens already contained it).
 */
import type { RWKV7 } from '../model/rwkv7.js';
import type { WorldTokenizer } from '../tokenizer/index.js';
import type { HostState } from '../model/state.js';
import { Session, type GenerateOptions, type GenerateResult } from './generate.js';
import { UserError } from '../errors.js';

/** Stop strings of an assistant turn: the blank line that ends it (and the next user turn, for safety). */
export const CHAT_STOP = ['\n\nUser:', '\n\n'];

/**
 * Cleans a user message as the official demos do: CRLF/CR → LF, runs of newlines collapsed to one (a blank
 * line would end the turn), surrounding whitespace trimmed.
 */
export function cleanMessage(msg: string): string {
  return msg.replace(/\r\n?/g, '\n').replace(/\n{2,}/g, '\n').trim();
}

/** "System: ...\n\n" (empty when there is no system prompt). */
export function systemBlock(system: string | undefined): string {
  const s = system === undefined ? '' : cleanMessage(system);
  return s ? `System: ${s}\n\n` : '';
}

/** The text of a user turn up to where the assistant's answer starts. */
export function userTurn(msg: string, think = false): string {
  return `User: ${cleanMessage(msg)}\n\nAssistant:${think ? ' <think' : ''}`;
}

/** One exchange of the conversation (as it was fed to the model). */
export interface ChatTurn {
  user: string;
  assistant: string;
  think: boolean;
}

/** What a conversation needs to continue after /save and /load, besides the model state. */
export interface ChatHistory {
  system?: string;
  turns: ChatTurn[];
}

/** What `/save` stores next to the state (metadata key `rwkv7.chat`), validated by `parseSavedChat`. */
export interface SavedChat {
  history: ChatHistory;
  think?: boolean;
  started?: boolean;
  contextTokens?: number;
  /** The model the conversation was held with (informational). */
  model?: string;
}

/** JSON type of a value, for messages: "missing", "null", "an array", "a number", ... */
function typeName(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  const t = typeof v;
  return t === 'object' ? 'an object' : `a ${t}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Validates a saved conversation completely (every field, every turn) and returns a fresh copy holding only the
 * known fields, so nothing malformed can reach `Chat.restore`, `Chat.turn` or `renderHistory` later.
 * `json` is the text stored under `rwkv7.chat`; `file` names the state file in messages.
 * Throws a UserError naming the field and what was expected.
 */
export function parseSavedChat(json: string, file: string): SavedChat {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (e) {
    throw new UserError(`${file}: the saved conversation (metadata rwkv7.chat) is not valid JSON: ${(e as Error).message}`);
  }
  const bad = (field: string, v: unknown, expected: string): never => {
    throw new UserError(`${file}: saved conversation field ${field} is ${typeName(v)}, expected ${expected}`);
  };
  if (!isPlainObject(raw)) return bad('(top level)', raw, 'an object with history, think, started, contextTokens');
  const opt = <T>(field: string, type: 'boolean' | 'string'): T | undefined => {
    const v = Object.hasOwn(raw as object, field) ? (raw as Record<string, unknown>)[field] : undefined;
    if (v === undefined) return undefined;
    if (typeof v !== type) bad(field, v, `a ${type}`);
    return v as T;
  };
  const h = Object.hasOwn(raw, 'history') ? raw.history : undefined;
  if (!isPlainObject(h)) return bad('history', h, 'an object {system?, turns}');
  const system = Object.hasOwn(h, 'system') ? h.system : undefined;
  if (system !== undefined && typeof system !== 'string') bad('history.system', system, 'a string (or no field)');
  const turnsRaw = Object.hasOwn(h, 'turns') ? h.turns : undefined;
  if (!Array.isArray(turnsRaw)) return bad('history.turns', turnsRaw, 'an array of turns');
  const turns: ChatTurn[] = [];
  for (let i = 0; i < turnsRaw.length; i++) {
    const t: unknown = turnsRaw[i];
    const at = `history.turns[${i}]`;
    if (!isPlainObject(t)) return bad(at, t, 'an object {user, assistant, think}');
    const user = Object.hasOwn(t, 'user') ? t.user : undefined;
    const assistant = Object.hasOwn(t, 'assistant') ? t.assistant : undefined;
    const think = Object.hasOwn(t, 'think') ? t.think : undefined;
    if (typeof user !== 'string') bad(`${at}.user`, user, 'a string');
    if (typeof assistant !== 'string') bad(`${at}.assistant`, assistant, 'a string');
    if (think !== undefined && typeof think !== 'boolean') bad(`${at}.think`, think, 'a boolean');
    turns.push({ user: user as string, assistant: assistant as string, think: think === true });
  }
  const contextTokens = Object.hasOwn(raw, 'contextTokens') ? raw.contextTokens : undefined;
  if (contextTokens !== undefined && !(typeof contextTokens === 'number' && Number.isSafeInteger(contextTokens) && contextTokens >= 0)) {
    bad('contextTokens', contextTokens, 'a non-negative integer');
  }
  const out: SavedChat = { history: { turns } };
  if (system !== undefined) out.history.system = system as string;
  const think = opt<boolean>('think', 'boolean');
  const started = opt<boolean>('started', 'boolean');
  const model = opt<string>('model', 'string');
  if (think !== undefined) out.think = think;
  if (started !== undefined) out.started = started;
  if (contextTokens !== undefined) out.contextTokens = contextTokens as number;
  if (model !== undefined) out.model = model;
  return out;
}

/** The full prompt text of a history (what the state holds after all its turns). */
export function renderHistory(h: ChatHistory): string {
  let s = systemBlock(h.system);
  for (const t of h.turns) s += `${userTurn(t.user, t.think)}${t.assistant}\n\n`;
  return s;
}

/** A multi-turn G1 conversation over one persistent state. */
export class Chat {
  readonly session: Session;
  history: ChatHistory;
  /** Whether the next assistant turns start with the G1 think prefix. */
  think = false;
  /** Whether the system block has been fed into the state yet. */
  started = false;

  /** `opts.initialState`: the conversation starts from this state (e.g. a state-tuned file's), and `reset()` returns to it. */
  constructor(model: RWKV7, tokenizer: WorldTokenizer, readonly system?: string, opts: { initialState?: HostState } = {}) {
    this.session = new Session(model, tokenizer, undefined, opts.initialState);
    this.history = { system: systemBlock(system) ? cleanMessage(system!) : undefined, turns: [] };
  }

  /**
   * Runs one turn: feeds the user message (and, on the first turn, the system prompt), generates the answer
   * (stopping at the blank line that ends it), and closes the turn in the state.
   * Returns the generation result; `result.text` is the answer without the closing blank line.
   */
  async turn(message: string, opts: Omit<GenerateOptions, 'stop'> & { stop?: string[] }): Promise<GenerateResult> {
    const user = cleanMessage(message);
    const prefix = this.started ? '' : systemBlock(this.history.system);
    const r = await this.session.generate(prefix + userTurn(user, this.think), { ...opts, stop: opts.stop ?? CHAT_STOP });
    this.started = true;
    // The state holds the generated tokens. If they already included the blank line (the stop string matched),
    // the turn is closed; otherwise (stop token, length limit, Ctrl-C) feed it now.
    const closed = r.finishReason === 'stop' && typeof r.stoppedBy === 'string';
    if (!closed) await this.session.feed('\n\n');
    this.history.turns.push({ user, assistant: r.text, think: this.think });
    return r;
  }

  /** Forget the conversation (the system prompt is fed again on the next turn). */
  reset(): void {
    this.session.reset();
    this.history = { system: this.history.system, turns: [] };
    this.started = false;
  }

  /** Replace the conversation by a restored one whose state has already been loaded into `session.state`. */
  restore(history: ChatHistory, contextTokens: number, started = history.turns.length > 0): void {
    this.history = history;
    // `started`: whether the state already holds the system prompt. A chat saved before its first turn is the
    // zero state, so the system prompt still has to be fed.
    this.started = started;
    this.session.lastLogits = undefined;
    this.session.stats.contextTokens = contextTokens;
  }
}
