import { assetPath } from '../src/platform/node.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { FormatError, UserError } from '../src/errors.js';

const shared = new URL('../../shared/', import.meta.url);
const goldenPath = fileURLToPath(new URL('fixtures/tokenizer/golden.jsonl', shared));
const sharedVocab = fileURLToPath(new URL('fixtures/tokenizer/rwkv_vocab_v20230424.txt', shared));
const repoRoot = fileURLToPath(new URL('../', import.meta.url));

interface GoldenCase {
  text?: string;
  bytes_b64?: string;
  ids: number[];
}
const golden: GoldenCase[] = readFileSync(goldenPath, 'utf8')
  .split('\n')
  .filter((l) => l.length > 0)
  .map((l) => JSON.parse(l) as GoldenCase);

const tk = WorldTokenizer.default();
const caseBytes = (c: GoldenCase): Uint8Array =>
  c.text !== undefined ? new TextEncoder().encode(c.text) : new Uint8Array(Buffer.from(c.bytes_b64!, 'base64'));
const label = (c: GoldenCase, k: number): string => `case ${k + 1}: ${JSON.stringify(c.text ?? c.bytes_b64).slice(0, 80)}`;

test('bundled vocabulary is the official one and has 65536 ids', () => {
  assert.deepEqual(readFileSync(assetPath('vocab')), readFileSync(sharedVocab));
  assert.equal(tk.vocabSize, 65536);
  assert.equal(WorldTokenizer.default(), tk, 'default() is cached');
  assert.equal(golden.length, 5496);
});

test('every golden case encodes to exactly the golden ids', () => {
  let failures = 0;
  golden.forEach((c, k) => {
    const ids = c.text !== undefined ? tk.encode(c.text) : tk.encodeBytes(caseBytes(c));
    if (failures < 5 && JSON.stringify(ids) !== JSON.stringify(c.ids)) {
      failures++;
      assert.deepEqual(ids, c.ids, label(c, k));
    }
  });
  assert.equal(failures, 0);
});

test('golden ids decode back to the input; streaming decode equals whole decode', () => {
  const dec = new TextDecoder('utf-8', { ignoreBOM: true });
  golden.forEach((c, k) => {
    const bytes = tk.decodeBytes(c.ids);
    assert.deepEqual(bytes, caseBytes(c), label(c, k));
    const whole = tk.decode(c.ids);
    if (c.text !== undefined) assert.equal(whole, c.text, label(c, k));
    else assert.equal(whole, dec.decode(bytes), label(c, k));
    const stream = tk.streamDecoder();
    let text = '';
    for (const id of c.ids) text += stream.push(id);
    text += stream.flush();
    assert.equal(text, whole, label(c, k));
  });
});

test('streaming decoder holds back split characters and flushes incomplete ones as U+FFFD', () => {
  // "é" = C3 A9 and "€" = E2 82 AC as single-byte tokens (ids are byte + 1 for the raw bytes).
  const byteId = (b: number): number => tk.encodeBytes(new Uint8Array([b]))[0]!;
  const s = tk.streamDecoder();
  assert.equal(s.push(byteId(0xe2)), '');
  assert.equal(s.push(byteId(0x82)), '');
  assert.equal(s.push(byteId(0xac)), '€');
  assert.equal(s.push(byteId(0xc3)), '');
  assert.equal(s.flush(), '\ufffd');
  // A leading BOM is kept (decode is exact for every valid UTF-8 text).
  assert.equal(tk.decode(tk.encode('\ufeffx')), '\ufeffx');
  // Random byte soup split at every token: stream == whole.
  let seed = 7;
  const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let r = 0; r < 200; r++) {
    const bytes = new Uint8Array(1 + Math.floor(rand() * 40)).map(() => (rand() < 0.5 ? 0x80 + rand() * 0x80 : rand() * 0x100));
    const ids = tk.encodeBytes(bytes);
    assert.deepEqual(tk.decodeBytes(ids), bytes);
    const d = tk.streamDecoder();
    let text = '';
    for (const id of ids) text += d.push(id);
    assert.equal(text + d.flush(), tk.decode(ids));
  }
});

test('tokenBytes, id 0 and out-of-range ids', () => {
  assert.deepEqual(tk.tokenBytes(33155), new TextEncoder().encode('Hello'));
  assert.equal(tk.tokenBytes(0).length, 0, 'id 0 (end of text) has no bytes');
  assert.equal(tk.decode([0, 33155, 65535]), 'Hello');
  for (const bad of [65536, -1, 1.5, Number.NaN]) {
    assert.throws(() => tk.decode([bad]), (e: unknown) => e instanceof UserError && e.message.includes(`token id ${bad}`) && e.message.includes('65536'));
  }
  assert.throws(() => tk.tokenBytes(70000), /token id 70000 is out of range: the vocabulary has 65536 ids/);
  assert.throws(() => tk.streamDecoder().push(65536), /65536/);
});

test('fromFile: a file with the same content gives the same tokenizer; vocabSize = largest id + 1', () => {
  const t = WorldTokenizer.fromFile(sharedVocab);
  assert.equal(t.vocabSize, 65530);
  const text = golden[4]!.text!;
  assert.deepEqual(t.encode(text), tk.encode(text));
});

test('vocabulary parser: Python literals, escapes and length check', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-vocab-'));
  try {
    const file = join(dir, 'v.txt');
    const lines = [
      `1 'a' 1`,
      `2 'b' 1`,
      `3 "it's" 4`,
      `4 '\\n\\t\\\\\\'' 4`,
      `5 '\\u00e9' 2`,
      `6 '\\xe9x' 3`, // in a str, \xe9 is U+00E9 (2 UTF-8 bytes)
      `7 b'\\xe9' 1`, // in bytes, \xe9 is one byte
      `8 'é€' 5`,
      `9 '\\U0001F600' 4`,
      `10 'ab' 2`,
      `12 ' ' 1`,
    ];
    writeFileSync(file, lines.join('\n') + '\n');
    const t = WorldTokenizer.fromFile(file);
    assert.equal(t.vocabSize, 13);
    assert.deepEqual([...t.tokenBytes(3)], [...Buffer.from("it's")]);
    assert.deepEqual([...t.tokenBytes(4)], [0x0a, 0x09, 0x5c, 0x27]);
    assert.deepEqual([...t.tokenBytes(5)], [0xc3, 0xa9]);
    assert.deepEqual([...t.tokenBytes(6)], [0xc3, 0xa9, 0x78]);
    assert.deepEqual([...t.tokenBytes(7)], [0xe9]);
    assert.deepEqual([...t.tokenBytes(9)], [0xf0, 0x9f, 0x98, 0x80]);
    assert.equal(t.tokenBytes(11).length, 0);
    assert.deepEqual(t.encode('abab a'), [10, 10, 12, 1]);
    assert.throws(() => t.encode('c'), /cannot encode byte 0x63 at offset 0/);

    const bad: [string, RegExp][] = [
      [`5 'abc' 4`, /length field says 4 bytes but the literal is 3 bytes/],
      [`5 'abc 3`, /unterminated/],
      [`5 abc 3`, /expected a Python string literal/],
      [`x 'a' 1`, /expected a token id/],
      [`5 b'é' 2`, /non-ASCII/],
      [`5 '\\x4' 1`, /truncated/],
      [`5 '\\ud800' 3`, /surrogate/],
      [`5 'a'`, /expected a space and the byte length/],
      [``, /empty line/],
      [`1 'z' 1`, /duplicate token id 1/],
      [`5 'a' 1`, /same bytes/],
    ];
    for (const [line, why] of bad) {
      writeFileSync(file, [`1 'a' 1`, `2 'b' 1`, line, `9 'c' 1`].join('\n') + '\n');
      assert.throws(
        () => WorldTokenizer.fromFile(file),
        (e: unknown) => {
          assert.ok(e instanceof FormatError, `${line}: ${String(e)}`);
          if (!/same bytes/.test(why.source)) assert.ok(e.message.startsWith(`${file}:3: `), e.message);
          assert.match(e.message, why);
          return true;
        },
        line,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// --- CLI -------------------------------------------------------------------------------------

function cli(args: string[], input?: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: repoRoot,
    input,
    encoding: 'utf8',
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

test('cli: tokenize and detokenize', () => {
  let r = cli(['tokenize', 'Hello, world!']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '33155 45 40213 34\n');
  r = cli(['tokenize', '--json', 'User: hi\n\nAssistant:']);
  assert.deepEqual(JSON.parse(r.stdout), [24281, 59, 4571, 261, 5585, 41693, 59]);
  r = cli(['tokenize', '--vocab', sharedVocab], 'Hello, world!');
  assert.equal(r.stdout, '33155 45 40213 34\n', 'stdin input, --vocab');
  r = cli(['detokenize', '33155', '45', '40213,34']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'Hello, world!\n');
  r = cli(['detokenize', '33155', '70000']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^rwkv7: token id 70000 is out of range/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  r = cli(['detokenize', 'abc']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /invalid token id 'abc'/);
});

test('cli: tokenize --jsonl (text, raw bytes, bad lines)', () => {
  const cases = golden.slice(0, 40).concat(golden.filter((c) => c.bytes_b64 !== undefined).slice(0, 10));
  const input = cases.map((c) => JSON.stringify(c.text !== undefined ? { text: c.text } : { bytes_b64: c.bytes_b64 })).join('\n') + '\n';
  const r = cli(['tokenize', '--jsonl', '-'], input);
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { ids: number[] });
  assert.deepEqual(
    out.map((o) => o.ids),
    cases.map((c) => c.ids),
  );

  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-jsonl-'));
  try {
    const file = join(dir, 'in.jsonl');
    writeFileSync(file, '{"text": "a"}\n{"text": 5}\n');
    const bad = cli(['tokenize', '--jsonl', file]);
    assert.equal(bad.code, 1);
    assert.equal(bad.stdout, '{"ids":[98]}\n');
    assert.match(bad.stderr, new RegExp(`^rwkv7: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: "text" must be a string`));
    const notJson = cli(['tokenize', '--jsonl', '-'], '{"text": "a"}\n\nnope\n');
    assert.equal(notJson.code, 1);
    assert.match(notJson.stderr, /<stdin>:3: invalid JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('cli: a malformed --vocab file names the line; exit code 1', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rwkv7-badvocab-'));
  try {
    const file = join(dir, 'bad.txt');
    writeFileSync(file, "1 'a' 1\n2 'b' 2\n");
    const r = cli(['tokenize', '--vocab', file, 'ab']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `rwkv7: ${file}:2: malformed vocabulary line: the length field says 2 bytes but the literal is 1 bytes\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
