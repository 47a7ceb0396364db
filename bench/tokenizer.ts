/**
 * Tokenizer benchmark: vocabulary load time and encode/decode throughput (median MB/s of input
 * UTF-8 bytes over several runs) on an English text and a CJK text.
 *
 *   npx tsx bench/tokenizer.ts [--runs N]
 *
 * English: all LAMBADA passages from ../shared/fixtures/tokenizer/golden.jsonl, concatenated
 * and repeated to ~8 MB. CJK: the CJK characters found in the golden cases and the vocabulary's
 * CJK tokens, shuffled deterministically into a ~4 MB text.
 * (For reference, the official Python trie tokenizer encodes about 3 MB/s on the same machine.)
 */
import { assetPath } from '../src/platform/node.js';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { WorldTokenizer } from '../src/tokenizer/index.js';

const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 7;
const golden = fileURLToPath(new URL('../../shared/fixtures/tokenizer/golden.jsonl', import.meta.url));
const vocabPath = assetPath('vocab');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

// --- Vocabulary load time (first load includes JIT warm-up; later loads are steady state).
const loads: number[] = [];
let tk!: WorldTokenizer;
for (let r = 0; r < RUNS; r++) {
  const t0 = performance.now();
  tk = WorldTokenizer.fromFile(vocabPath);
  loads.push(performance.now() - t0);
}
console.log(`vocab load: first ${loads[0]!.toFixed(1)} ms, median ${median(loads).toFixed(1)} ms (${RUNS} loads)`);

// --- Texts.
const cases = readFileSync(golden, 'utf8')
  .split('\n')
  .filter((l) => l.length > 0)
  .map((l) => JSON.parse(l) as { text?: string });
const passages = cases.map((c) => c.text ?? '').filter((t) => t.length > 200);
let english = passages.join('\n\n');
while (english.length < 8e6) english += '\n\n' + english;

const isCjk = (cp: number): boolean =>
  (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3040 && cp <= 0x30ff) || (cp >= 0xac00 && cp <= 0xd7af) || (cp >= 0x3000 && cp <= 0x303f);
const cjkPieces: string[] = [];
for (const c of cases) for (const ch of c.text ?? '') if (isCjk(ch.codePointAt(0)!)) cjkPieces.push(ch);
const dec = new TextDecoder('utf-8', { fatal: true });
for (let id = 1; id < tk.vocabSize; id++) {
  let s: string;
  try {
    s = dec.decode(tk.tokenBytes(id));
  } catch {
    continue;
  }
  if (s.length > 0 && [...s].every((ch) => isCjk(ch.codePointAt(0)!))) cjkPieces.push(s);
}
let seed = 12345;
const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
const cjkParts: string[] = [];
let cjkLen = 0;
while (cjkLen < 4e6) {
  const p = cjkPieces[Math.floor(rand() * cjkPieces.length)]!;
  cjkParts.push(p);
  cjkLen += p.length * 3;
  if (rand() < 0.05) cjkParts.push(rand() < 0.5 ? '。' : '，');
}
const cjk = cjkParts.join('');

// --- Throughput.
function bench(label: string, text: string): void {
  const bytes = new TextEncoder().encode(text);
  const mb = bytes.length / 1e6;
  const enc: number[] = [];
  const decs: number[] = [];
  let ids: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    let t0 = performance.now();
    ids = tk.encode(text);
    enc.push(mb / ((performance.now() - t0) / 1000));
    t0 = performance.now();
    const back = tk.decode(ids);
    decs.push(mb / ((performance.now() - t0) / 1000));
    if (back.length !== text.length) throw new Error(`${label}: round trip failed`);
  }
  console.log(
    `${label.padEnd(8)} ${mb.toFixed(2)} MB, ${ids.length} tokens (${(bytes.length / ids.length).toFixed(2)} bytes/token): ` +
      `encode median ${median(enc).toFixed(1)} MB/s, decode median ${median(decs).toFixed(1)} MB/s (${RUNS} runs)`,
  );
}
bench('English', english);
bench('CJK', cjk);
