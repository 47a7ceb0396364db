/**
 * `rwkv7 chat`: interactive multi-turn chat with the RWKV-7 G1 template over one persistent state.
 *
 * Reads lines from stdin (a terminal or a pipe): every line that is not a /command is a user turn.
 * In a terminal, Ctrl-C stops the current answer; Ctrl-C at an empty prompt (or Ctrl-D) quits.
 */
import { weightsLabel } from '../backends/index.js';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { WorldTokenizer } from '../tokenizer/index.js';
import { CHAT_DEFAULTS, Sampler } from '../runtime/sampler.js';
import { Chat, parseSavedChat } from '../runtime/chat.js';
import { saveState, loadState } from '../model/state.js';
import { checkStateFinite } from '../model/state-check.js';
import { openSafetensors } from '../formats/safetensors.js';
import { UserError } from '../errors.js';
import { grammarFromFlag } from './generate.js';
import {
  addModelOptions, addSamplingOptions, loadModelFromFlags, samplingFromFlags, statsLine, parseInteger,
  addStateOption, initialStateFromFlag, type ModelFlags, type SamplingFlags,
} from './common.js';

interface ChatFlags extends ModelFlags, SamplingFlags {
  system?: string;
  maxTokens: number;
  think?: boolean;
  state?: string;
  jsonSchema?: string;
}

/** Errors of a /save or /load that the user can fix (bad path, bad or foreign file): reported, the chat goes on. */
function isFileError(e: unknown): boolean {
  return e instanceof UserError || e instanceof SyntaxError || typeof (e as NodeJS.ErrnoException)?.code === 'string';
}

/** Metadata key of the chat history in a state file written by /save. */
const CHAT_META_KEY = 'rwkv7.chat';

const HELP = `commands:
  /reset        forget the conversation (back to the --state initial state, if any)
  /save FILE    save the conversation (model state + history) to FILE
  /load FILE    continue a conversation saved with /save (or any rwkv7 state file)
  /think on|off start assistant turns with the G1 think prefix ("Assistant: <think")
  /stats        show throughput so far
  /quit         leave (also Ctrl-D; Ctrl-C stops an answer, Ctrl-C at an empty prompt quits)
`;

/** A queue of input lines that the chat loop awaits one at a time (readline delivers them as events). */
class LineQueue {
  private lines: string[] = [];
  private waiting?: (line: string | undefined) => void;
  private closed = false;

  push(line: string): void {
    if (this.waiting) { const w = this.waiting; this.waiting = undefined; w(line); } else this.lines.push(line);
  }

  close(): void {
    this.closed = true;
    if (this.waiting) { const w = this.waiting; this.waiting = undefined; w(undefined); }
  }

  /** The next line, or undefined once input has ended. */
  next(): Promise<string | undefined> {
    if (this.lines.length) return Promise.resolve(this.lines.shift());
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => { this.waiting = resolve; });
  }
}

export function register(program: Command): void {
  const cmd = program
    .command('chat')
    .description('interactive multi-turn chat (RWKV-7 G1 "User: ... / Assistant:" template); also reads piped stdin')
    .option('-s, --system <text>', 'system prompt (a "System: ..." block before the first turn)')
    .option('-n, --max-tokens <n>', 'most tokens per answer', parseInteger('--max-tokens', 1), 500)
    .option('--think', 'start with thinking on (G1 "Assistant: <think" prefix; /think toggles it)')
    .option('--json-schema <file>', "every answer is JSON matching this JSON Schema file ('object': any JSON object)");
  addModelOptions(cmd);
  addStateOption(cmd);
  addSamplingOptions(cmd, CHAT_DEFAULTS);
  cmd
    .addHelpText('after', `
Sampling defaults are the official RWKV-7 G1 chat demo's: temperature ${CHAT_DEFAULTS.temperature}, top-p ${CHAT_DEFAULTS.topP}, presence penalty ${CHAT_DEFAULTS.presencePenalty},
frequency penalty ${CHAT_DEFAULTS.frequencyPenalty}, penalty decay ${CHAT_DEFAULTS.penaltyDecay} (penalties restart with every answer).

${HELP}
Examples:
  rwkv7 chat
  rwkv7 chat -m rwkv7-g1a-0.4b.pth --system "You are a helpful assistant."
  printf 'Hello\\n/stats\\n/quit\\n' | rwkv7 chat --max-tokens 16`)
    .action(async (f: ChatFlags, cmd: Command) => runChat(f, cmd));
}

async function runChat(f: ChatFlags, cmd: Command): Promise<void> {
  // A refused schema fails before the model loads.
  const grammar = f.jsonSchema === undefined ? undefined : grammarFromFlag(f.jsonSchema);
  const loaded = await loadModelFromFlags(f);
  const tokenizer = WorldTokenizer.default();
  const chat = new Chat(loaded.model, tokenizer, f.system, { initialState: initialStateFromFlag(f.state, loaded.config) });
  chat.think = f.think === true;
  const sampling = samplingFromFlags(f, cmd);
  // One random stream for the whole chat (a --seed makes the conversation repeatable).
  let sampler = new Sampler(sampling, tokenizer);

  const interactive = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: interactive, prompt: 'User: ' });
  const queue = new LineQueue();
  rl.on('line', (l) => queue.push(l));
  rl.on('close', () => queue.close());

  let current: AbortController | undefined;
  let quitting = false;
  const onInterrupt = () => {
    if (current) {
      current.abort(); // stop the answer, stay in the chat
    } else if (interactive && rl.line.length > 0) {
      // Ctrl-C with text typed at the prompt: discard the line.
      process.stdout.write('^C\n');
      (rl as unknown as { line: string }).line = '';
      rl.prompt();
    } else {
      quitting = true;
      if (interactive) process.stdout.write('\n');
      rl.close();
    }
  };
  rl.on('SIGINT', onInterrupt); // terminal: Ctrl-C arrives as a keypress
  process.on('SIGINT', onInterrupt); // piped input: a real signal

  const info = (msg: string) => process.stderr.write(`${msg}\n`);
  const summary = () => info(statsLine(loaded, {
    promptTokens: chat.session.stats.promptTokens,
    completionTokens: chat.session.stats.completionTokens,
    prefillTokS: chat.session.prefillTokS,
    decodeTokS: chat.session.decodeTokS,
  }) + ` | context ${chat.session.stats.contextTokens} tokens`);

  if (interactive) {
    info(`rwkv7 chat — ${loaded.path} (${loaded.model.backend.name}, ${weightsLabel(loaded.model.backend)}). /help for commands, Ctrl-C stops an answer, Ctrl-D quits.`);
    if (chat.history.system) info(`System: ${chat.history.system}`);
  }

  /** Handles a /command; returns false to quit. */
  const command = async (line: string): Promise<boolean> => {
    const [name, ...rest] = line.trim().split(/\s+/);
    const arg = line.trim().slice(name!.length).trim();
    switch (name) {
      case '/quit':
      case '/exit':
        return false;
      case '/help':
        info(HELP.trimEnd());
        return true;
      case '/reset':
        chat.reset();
        sampler = new Sampler(sampling, tokenizer);
        info('(conversation reset)');
        return true;
      case '/stats':
        summary();
        return true;
      case '/think': {
        const v = rest[0];
        if (v === 'on' || v === 'off') chat.think = v === 'on';
        else if (v !== undefined) { info('usage: /think on|off'); return true; }
        info(`(thinking ${chat.think ? 'on' : 'off'})`);
        return true;
      }
      case '/save': {
        if (!arg) { info('usage: /save FILE'); return true; }
        try {
          const host = await chat.session.state.toHost();
          saveState(arg, host, loaded.config, {
            [CHAT_META_KEY]: JSON.stringify({
              history: chat.history, think: chat.think, started: chat.started,
              contextTokens: chat.session.stats.contextTokens, model: loaded.path,
            }),
          });
          info(`(saved ${chat.history.turns.length} turn(s) to ${arg})`);
        } catch (e) {
          if (!isFileError(e)) throw e;
          info(`cannot save ${arg}: ${(e as Error).message}`);
        }
        return true;
      }
      case '/load': {
        if (!arg) { info('usage: /load FILE'); return true; }
        try {
          const host = loadState(arg, loaded.config);
          checkStateFinite(arg, host);
          const st = openSafetensors(arg);
          let meta: unknown;
          try { meta = Object.hasOwn(st.metadata, CHAT_META_KEY) ? st.metadata[CHAT_META_KEY] : undefined; } finally { st.close(); }
          // Validate everything before touching the live conversation, so a bad file leaves it as it was.
          if (meta !== undefined && typeof meta !== 'string') throw new UserError(`${arg}: metadata ${CHAT_META_KEY} is not a string`);
          const m = meta !== undefined ? parseSavedChat(meta, arg) : undefined;
          chat.session.state.fromHost(host);
          if (m) {
            chat.restore(m.history, m.contextTokens ?? 0, m.started);
            if (m.think !== undefined) chat.think = m.think;
          } else {
            // A bare state file: continue from it as if it held a conversation.
            chat.restore({ system: chat.history.system, turns: [] }, 0, true);
          }
          info(`(loaded ${chat.history.turns.length} turn(s) from ${arg})`);
        } catch (e) {
          if (!isFileError(e)) throw e;
          info(`cannot load ${arg}: ${(e as Error).message}`);
        }
        return true;
      }
      default:
        info(`unknown command ${name} (/help lists them)`);
        return true;
    }
  };

  if (interactive) rl.prompt();
  for (;;) {
    const line = await queue.next();
    if (line === undefined || quitting) break;
    if (line.trim().startsWith('/')) {
      if (!(await command(line))) break;
    } else if (line.trim().length > 0) {
      const ac = new AbortController();
      current = ac;
      process.stdout.write(chat.think ? 'Assistant: <think' : 'Assistant:');
      // The penalties restart with every answer, as in the official demos; the random stream goes on.
      sampler.resetPenalties();
      const r = await chat.turn(line, {
        maxTokens: f.maxTokens,
        sampling,
        sampler,
        signal: ac.signal,
        onText: (s) => process.stdout.write(s),
        constraint: grammar?.constraint(tokenizer),
      });
      current = undefined;
      process.stdout.write(r.finishReason === 'abort' ? ' [stopped]\n\n' : '\n\n');
    }
    if (interactive) rl.prompt();
  }
  rl.close();
  process.off('SIGINT', onInterrupt);
  summary();
}
