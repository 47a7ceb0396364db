// Generation loop: stop matching, finish reasons, the state contract, greedy output against the golden
// reference, seeds, and the `rwkv7 generate` command.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { StopMatcher, generate } from '../src/runtime/generate.js';
import { GENERATE_DEFAULTS, argmax, type SamplingOptions } from '../src/runtime/sampler.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { loadModel } from '../src/runtime/load.js';
import { openSafetensors } from '../src/formats/safetensors.js';
import type { RWKV7 } from '../src/model/rwkv7.js';
import type { State } from '../src/model/state.js';

const tok = WorldTokenizer.default();
const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const goldenPath = fileURLToPath(new URL('../../shared/fixtures/golden/storyteller.text.safetensors', import.meta.url));
const greedy: SamplingOptions = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0, penaltyDecay: 1 };

function rwkv7(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', main, ...args], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Feeds pieces through a matcher; returns what was emitted and whether it stopped. */
function runMatcher(stops: string[], pieces: string[]): { out: string; stopped: boolean; emits: string[] } {
  const m = new StopMatcher(stops);
  const emits: string[] = [];
  for (const p of pieces) {
    const r = m.push(p);
    emits.push(r.emit);
    if (r.stopped) return { out: emits.join(''), stopped: true, emits };
  }
  emits.push(m.flush());
  return { out: emits.join(''), stopped: false, emits };
}

test('stop matcher: across token boundaries, held-back prefixes, false starts', () => {
  let r = runMatcher(['\n\nUser:'], ['Hel', 'lo\n', '\nUs', 'er: x']);
  assert.deepEqual(r.emits, ['Hel', 'lo', '', '']);
  assert.equal(r.out, 'Hello');
  assert.equal(r.stopped, true);
  // a false start is released once it can no longer be a stop string
  r = runMatcher(['\n\nUser:'], ['a\n', '\nUsa', 'b']);
  assert.deepEqual(r.emits, ['a', '\n\nUsa', 'b', '']);
  assert.equal(r.stopped, false);
  // text held back at the end is returned by flush
  r = runMatcher(['END'], ['abc E', 'N']);
  assert.deepEqual(r.emits, ['abc ', '', 'EN']);
  // stop string inside one piece, text after it dropped
  r = runMatcher(['world'], ['Hello world and more']);
  assert.equal(r.out, 'Hello ');
  // the earliest of several stop strings wins
  r = runMatcher(['cd', 'b'], ['ab', 'cd']);
  assert.equal(r.out, 'a');
  r = runMatcher(['\n\n', '\n\nUser:'], ['x\n', '\nUser:']);
  assert.equal(r.out, 'x');
  assert.throws(() => new StopMatcher(['']));
});

/** A stand-in model that "predicts" a scripted token sequence (one-hot logits) and counts the tokens fed. */
function scriptedModel(script: number[]): { model: RWKV7; fed: number[] } {
  const fed: number[] = [];
  let next = 0;
  const model = {
    async forward(tokens: ArrayLike<number>): Promise<Float32Array> {
      fed.push(...Array.from(tokens));
      const l = new Float32Array(tok.vocabSize);
      l[script[Math.min(next++, script.length - 1)]!] = 10;
      return l;
    },
  } as unknown as RWKV7;
  return { model, fed };
}

test('generate: stop strings end the text exactly before the stop; every generated token is in the state', async () => {
  const script = tok.encode('Hello world.\n\nUser: hi there');
  const prompt = tok.encode('Say:');
  let { model, fed } = scriptedModel(script);
  const chunks: string[] = [];
  let r = await generate(model, tok, {} as State, prompt, { maxTokens: 50, sampling: greedy, stop: ['\n\nUser:'], onText: (s) => chunks.push(s) });
  assert.equal(r.text, 'Hello world.');
  assert.equal(chunks.join(''), 'Hello world.');
  assert.equal(r.finishReason, 'stop');
  assert.equal(r.stoppedBy, '\n\nUser:');
  assert.deepEqual(fed, [...prompt, ...r.tokens], 'state holds prompt + generated tokens');
  assert.equal(r.promptTokens, prompt.length);
  assert.equal(r.completionTokens, r.tokens.length);
  assert.equal(tok.decode(r.tokens).startsWith('Hello world.\n\nUser:'), true);

  // stop string in the middle of a word, across tokens
  ({ model, fed } = scriptedModel(script));
  r = await generate(model, tok, {} as State, prompt, { maxTokens: 50, sampling: greedy, stop: ['ld.'] });
  assert.equal(r.text, 'Hello wor');

  // length limit
  ({ model, fed } = scriptedModel(script));
  r = await generate(model, tok, {} as State, prompt, { maxTokens: 2, sampling: greedy });
  assert.equal(r.finishReason, 'length');
  assert.equal(r.completionTokens, 2);
  assert.equal(r.text, tok.decode(script.slice(0, 2)));
  assert.deepEqual(fed, [...prompt, ...script.slice(0, 2)]);

  // stop token 0 (default): not part of tokens, not fed
  ({ model, fed } = scriptedModel([...tok.encode('The end.'), 0]));
  r = await generate(model, tok, {} as State, prompt, { maxTokens: 50, sampling: greedy });
  assert.equal(r.finishReason, 'stop');
  assert.equal(r.stoppedBy, 0);
  assert.equal(r.text, 'The end.');
  assert.deepEqual(fed, [...prompt, ...tok.encode('The end.')]);

  // abort
  ({ model } = scriptedModel(script));
  const ac = new AbortController();
  r = await generate(model, tok, {} as State, prompt, {
    maxTokens: 50, sampling: greedy, signal: ac.signal, onToken: () => ac.abort(),
  });
  assert.equal(r.finishReason, 'abort');
  assert.equal(r.completionTokens, 1);

  // continue from the last logits without a prompt
  ({ model, fed } = scriptedModel(script));
  const first = await generate(model, tok, {} as State, prompt, { maxTokens: 1, sampling: greedy });
  const more = await generate(model, tok, {} as State, [], { maxTokens: 1, sampling: greedy, lastLogits: first.lastLogits });
  assert.deepEqual([...first.tokens, ...more.tokens], script.slice(0, 2));
  await assert.rejects(generate(model, tok, {} as State, [], { maxTokens: 1, sampling: greedy }));
});

test('generate: multi-byte characters are streamed complete', async () => {
  const text = '中文：小狗在花园里玩。🙂';
  const { model } = scriptedModel([...tok.encode(text), 0]);
  const chunks: string[] = [];
  const r = await generate(model, tok, {} as State, [1], { maxTokens: 50, sampling: greedy, onText: (s) => chunks.push(s) });
  assert.equal(r.text, text);
  for (const c of chunks) assert.ok(!c.includes('\ufffd'), JSON.stringify(chunks));
});


test('greedy generation reproduces the reference (storyteller, 32 tokens), library and CLI, js and default backends', async () => {
  const g = openSafetensors(goldenPath);
  const toks = g.tensors.get('prompt0.tokens')!;
  const lg = g.tensors.get('prompt0.logits')!;
  const tb = toks.read();
  const promptIds = Array.from(new Int32Array(tb.buffer, tb.byteOffset, tb.byteLength / 4));
  const lb = lg.read();
  const V = lg.shape[1]!;
  const ref = new Float32Array(lb.buffer, lb.byteOffset, lb.byteLength / 4);
  g.close();
  assert.deepEqual(promptIds, tok.encode('Once upon a time'));
  const refFirst = argmax(ref.subarray((promptIds.length - 1) * V, promptIds.length * V));

  // The js backend's own argmax run, token by token.
  const { model } = await loadModel(undefined, { backend: 'js' });
  const state = model.newState();
  let logits = await model.forward(promptIds, state);
  const expected: number[] = [];
  for (let i = 0; i < 32; i++) {
    const t = argmax(logits);
    expected.push(t);
    logits = await model.forward([t], state);
  }
  assert.equal(expected[0], refFirst, 'first token = argmax of the reference logits');

  // The library loop with greedy sampling.
  const lib = await generate(model, tok, model.newState(), promptIds, { maxTokens: 32, sampling: greedy, stopTokens: [] });
  assert.deepEqual(lib.tokens, expected);

  // The CLI, as documented (penalties default to 0 with --temperature 0), js and default backends.
  const args = ['generate', '--prompt', 'Once upon a time', '--max-tokens', '32', '--temperature', '0', '--json'];
  const [js, auto] = [await rwkv7(...args, '--backend', 'js'), await rwkv7(...args)];
  for (const r of [js, auto]) {
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.deepEqual(j.tokens, expected);
    assert.equal(j.text, tok.decode(expected));
    assert.equal(j.prompt_tokens, 4);
    assert.equal(j.completion_tokens, 32);
    assert.equal(j.finish_reason, 'length');
    assert.ok(j.prefill_tok_s > 0 && j.decode_tok_s > 0);
    assert.match(r.stderr, /decode [\d.]+ tok\/s/);
  }
});

test('seeds: same seed → same text, different seeds → different texts (library and CLI)', async () => {
  const { model } = await loadModel(undefined, { backend: 'js' });
  const prompt = tok.encode('The old house');
  const run = async (seed: number) =>
    (await generate(model, tok, model.newState(), prompt, { maxTokens: 12, sampling: { ...GENERATE_DEFAULTS, seed } })).text;
  const a = await run(7);
  assert.equal(await run(7), a);
  assert.notEqual(await run(8), a);
  // The CLI with the same seed and the default settings gives the same text, streamed to stdout.
  const r = await rwkv7('generate', '-p', 'The old house', '-n', '12', '--seed', '7', '--backend', 'js', '-q');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `${a}\n`);
});

test('generate CLI: stop strings and flag errors', async () => {
  const r = await rwkv7('generate', '-p', 'Once upon a time', '-n', '32', '--temperature', '0', '--stop', 'the', '--json', '--backend', 'js');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.finish_reason, 'stop');
  assert.equal(j.text, ', and ');
  const bad = await rwkv7('generate', '-p', 'x', '--top-p', '2');
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /top-p/);
});
