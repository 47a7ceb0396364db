// Chat: G1 template helpers, the Chat class's state bookkeeping, `rwkv7 chat` with piped stdin and in a
// pseudo-terminal (util-linux `script`) through two turns, Ctrl-C, /save and /load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanMessage, userTurn, systemBlock, renderHistory, Chat } from '../src/runtime/chat.js';
import { CHAT_DEFAULTS } from '../src/runtime/sampler.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { loadModel } from '../src/runtime/load.js';

const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

test('G1 template: message cleaning, turns, history', () => {
  assert.equal(cleanMessage('  Hi\r\nthere\n\n\n\nfriend\r\n  '), 'Hi\nthere\nfriend');
  assert.equal(userTurn(' Hello '), 'User: Hello\n\nAssistant:');
  assert.equal(userTurn('Hello', true), 'User: Hello\n\nAssistant: <think');
  assert.equal(systemBlock(undefined), '');
  assert.equal(systemBlock(' Be brief. '), 'System: Be brief.\n\n');
  assert.equal(
    renderHistory({ system: 'S', turns: [{ user: 'a', assistant: ' b', think: false }, { user: 'c', assistant: ' d', think: false }] }),
    'System: S\n\nUser: a\n\nAssistant: b\n\nUser: c\n\nAssistant: d\n\n',
  );
});

test('Chat keeps one state across turns and closes every turn with a blank line', async () => {
  const tok = WorldTokenizer.default();
  const { model } = await loadModel(undefined, { backend: 'js' });
  const chat = new Chat(model, tok, 'Be kind.');
  const r1 = await chat.turn('Hello', { maxTokens: 4, sampling: { ...CHAT_DEFAULTS, seed: 1 } });
  const after1 = chat.session.stats.contextTokens;
  const fed1 = tok.encode('System: Be kind.\n\nUser: Hello\n\nAssistant:').length + r1.completionTokens;
  // a turn cut by the length limit gets its "\n\n" fed afterwards
  assert.equal(r1.finishReason, 'length');
  assert.equal(after1, fed1 + tok.encode('\n\n').length);
  // the second turn processes only its own text (no system block again)
  const r2 = await chat.turn('More', { maxTokens: 4, sampling: { ...CHAT_DEFAULTS, seed: 2 } });
  assert.equal(r2.promptTokens, tok.encode('User: More\n\nAssistant:').length);
  assert.equal(chat.history.turns.length, 2);
  chat.reset();
  assert.equal(chat.session.stats.contextTokens, 0);
  assert.equal(chat.history.turns.length, 0);
});

/** Runs `rwkv7 chat --backend js ARGS` with `input` piped to stdin. */
function pipedChat(args: string[], input: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = execFile(process.execPath, ['--import', 'tsx', main, 'chat', '--backend', 'js', ...args], (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
    p.stdin!.end(input);
  });
}

test('chat with piped stdin: answers, /stats, /quit, exit 0', async () => {
  // a fixed seed: with a random one the first token is now and then the end of the turn (an empty answer)
  const r = await pipedChat(['--max-tokens', '16', '--seed', '2'], 'Hello\n/stats\n/quit\n');
  assert.equal(r.code, 0, r.stderr);
  const m = /Assistant:(.*)/s.exec(r.stdout);
  assert.ok(m && m[1]!.trim().length > 0, `no answer in ${JSON.stringify(r.stdout)}`);
  // /stats and the exit summary: two lines with both speeds
  const lines = r.stderr.split('\n').filter((l) => /prefill [\d.]+ tok\/s.*decode [\d.]+ tok\/s/.test(l));
  assert.equal(lines.length, 2, r.stderr);
  assert.match(lines[0]!, /backend js \| dtype f32/);
});

test('chat --json-schema: every answer is JSON matching the schema', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-chat-schema-'));
  try {
    const schema = join(dir, 'mood.json');
    writeFileSync(schema, JSON.stringify({ type: 'object', properties: { mood: { enum: ['happy', 'sad'] } }, required: ['mood'], additionalProperties: false }));
    const r = await pipedChat(['--json-schema', schema, '--max-tokens', '40', '--seed', '4'], 'How do you feel?\nAnd now?\n/quit\n');
    assert.equal(r.code, 0, r.stderr);
    const answers = r.stdout.split('Assistant:').slice(1).map((a) => a.trim());
    assert.equal(answers.length, 2, r.stdout);
    for (const a of answers) assert.ok(['happy', 'sad'].includes(JSON.parse(a).mood), a);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a failed /save or /load is reported and the chat goes on', async () => {
  const r = await pipedChat(['--max-tokens', '4'], '/save /nonexistent-dir/x.safetensors\n/load /nonexistent.safetensors\n/load package.json\nHello\n/quit\n');
  assert.equal(r.code, 0, r.stderr);
  const all = r.stdout + r.stderr;
  assert.match(all, /cannot save \/nonexistent-dir\/x\.safetensors: .*ENOENT/);
  assert.match(all, /cannot load \/nonexistent\.safetensors: .*no such file/);
  assert.match(all, /cannot load package\.json: .*not a safetensors file/);
  assert.match(r.stdout, /Assistant:/);
});

const haveScript = spawnSync('script', ['--version']).status === 0;

/** Drives `rwkv7 chat` in a pseudo-terminal: waits for output patterns, then types. */
class Pty {
  out = '';
  private proc;
  private waiters: Array<{ re: RegExp; from: number; resolve: () => void }> = [];
  readonly exited: Promise<number>;

  constructor(cmd: string) {
    this.proc = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const onData = (d: Buffer) => {
      // Terminal control sequences (cursor moves, line clears) are dropped so patterns see plain text.
      this.out += d.toString().replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
      this.waiters = this.waiters.filter((w) => {
        if (w.re.test(this.out.slice(w.from))) { w.resolve(); return false; }
        return true;
      });
    };
    this.proc.stdout.on('data', onData);
    this.proc.stderr.on('data', onData);
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code ?? -1)));
  }

  /** Resolves when `re` matches output produced from now on (or from `from`). */
  waitFor(re: RegExp, from = this.out.length, ms = 60000): Promise<void> {
    if (re.test(this.out.slice(from))) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout waiting for ${re} in:\n${this.out}`)), ms);
      this.waiters.push({ re, from, resolve: () => { clearTimeout(timer); resolve(); } });
    });
  }

  type(s: string): void {
    this.proc.stdin.write(s);
  }

  kill(): void {
    this.proc.kill();
  }
}

test('chat in a terminal: two turns, Ctrl-C stops an answer, /save and /load, Ctrl-C at the prompt quits', { skip: !haveScript && 'util-linux script not installed', timeout: 120000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-chat-'));
  const file = join(dir, 'conv.st');
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const pty = new Pty(`${q(process.execPath)} --import tsx ${q(main)} chat --max-tokens 12 --backend js --seed 5`);
  try {
    const prompt = /User: $/m;
    await pty.waitFor(prompt, 0);
    // turn 1: a complete answer
    let from = pty.out.length;
    pty.type('Hello there\r');
    await pty.waitFor(/Assistant:[^\n]*\S[\s\S]*User: $/, from);
    from = pty.out.length;
    pty.type(`/save ${file}\r`);
    await pty.waitFor(/\(saved 1 turn\(s\)/, from);
    await pty.waitFor(prompt, from);
    // turn 2: stopped with Ctrl-C as soon as the answer starts; the chat goes on
    from = pty.out.length;
    pty.type('Tell me a long story\r');
    await pty.waitFor(/Assistant:/, from);
    pty.type('\x03');
    await pty.waitFor(/\[stopped\][\s\S]*User: $/, from);
    // back to the state after turn 1
    from = pty.out.length;
    pty.type(`/load ${file}\r`);
    await pty.waitFor(/\(loaded 1 turn\(s\)/, from);
    await pty.waitFor(prompt, from);
    from = pty.out.length;
    pty.type('What next?\r');
    await pty.waitFor(/Assistant:[^\n]*\S[\s\S]*User: $/, from);
    // Ctrl-C at an empty prompt quits, with the summary
    from = pty.out.length;
    pty.type('\x03');
    assert.equal(await pty.exited, 0, pty.out);
    assert.match(pty.out.slice(from), /decode [\d.]+ tok\/s/);
    assert.ok(existsSync(file));
  } finally {
    pty.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});
