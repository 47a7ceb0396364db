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
import { Session, type GenerateOptions, type GenerateResult } from './generate.js';

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

  constructor(model: RWKV7, tokenizer: WorldTokenizer, readonly system?: string) {
    this.session = new Session(model, tokenizer);
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
