// GGUF (llama.cpp rwkv7) reader and writer: fixtures against the reference's golden outputs, llama.cpp's own
// greedy tokens, fuzzed headers, and our writer against llama.cpp's converter output byte for byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FormatError } from '../src/errors.js';
import { bytesSource, type ByteSource } from '../src/formats/source.js';
import { openGguf, parseGguf, GGUF_VALUE, type GgufCheckpointFile } from '../src/formats/gguf.js';
import { checkGgufVocab, unescapeRwkvToken, escapeRwkvToken } from '../src/formats/gguf-rwkv7.js';
import { dequantize, quantizeQ4_0, quantizeQ8_0, SUPPORTED_TYPES, GGML_TYPE } from '../src/formats/gguf-quant.js';
import { writeGguf, writeRwkv7Gguf, type GgufTargetType } from '../src/formats/gguf-write.js';
import { openCheckpoint } from '../src/formats/index.js';
import { describeModel, formatInfo } from '../src/cli/info.js';
import { convertToGguf } from '../src/cli/convert.js';
import { memorySink } from '../src/formats/source.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { loadWeights } from '../src/model/weights.js';
import { RWKV7 } from '../src/model/rwkv7.js';
import { createBackend } from '../src/backends/index.js';
import { verifyGolden } from '../src/runtime/verify.js';
import { argmax } from '../src/runtime/sampler.js';
import { WorldTokenizer } from '../src/tokenizer/index.js';
import { bytesToFloat32 } from '../src/formats/dtype.js';
import type { Checkpoint } from '../src/formats/types.js';

const shared = (p: string): string => fileURLToPath(new URL(`../../shared/${p}`, import.meta.url));
const GG = (f: string): string => shared(`fixtures/gguf/${f}`);
const TOL = 1e-5;

/** A Node file as a ByteSource (fs.readSync), as the platform layer provides it. */
function fileSource(path: string): ByteSource {
  const fd = fs.openSync(path, 'r');
  const size = fs.fstatSync(fd).size;
  let open = true;
  return {
    name: path, size,
    read(offset, length) {
      const b = new Uint8Array(length);
      let got = 0;
      while (got < length) {
        const n = fs.readSync(fd, b, got, length - got, offset + got);
        if (n === 0) throw new FormatError(`${path}: unexpected end of file`);
        got += n;
      }
      return b;
    },
    close() { if (open) { open = false; fs.closeSync(fd); } },
  };
}

function asCheckpoint(g: GgufCheckpointFile): Checkpoint {
  return { path: g.path, format: 'safetensors', layout: 'blinkdl', tensors: g.tensors, close: () => g.close() };
}

async function loadGguf(path: string): Promise<RWKV7> {
  const g = openGguf(fileSource(path));
  try {
    const ck = asCheckpoint(g);
    const config = configFromCheckpoint(ck);
    const backend = await createBackend('js', { dtype: 'f32' });
    return new RWKV7(backend, config, loadWeights(ck, config, backend));
  } finally {
    g.close();
  }
}

const goldenCases: Array<[string, string, Array<'rnn' | 'seq'>]> = [
  ['tiny-l2-d128-f32.gguf', 'fixtures/golden/tiny-l2-d128.golden.safetensors', ['rnn', 'seq']],
  ['tiny-l2-d96-h32-f16.gguf', 'fixtures/golden/tiny-l2-d96-h32.golden.safetensors', ['rnn', 'seq']],
  ['storyteller-L6-D192-q4_0.gguf', 'fixtures/gguf/storyteller-L6-D192-q4_0.golden.safetensors', ['seq']],
];
for (const [file, golden, modes] of goldenCases) {
  test(`js on ${file} matches the reference (<= ${TOL})`, async () => {
    const model = await loadGguf(GG(file));
    const report = await verifyGolden(model, shared(golden), modes);
    for (const g of report.groups) {
      assert.ok(g.max_deviation <= TOL, `${g.name}/${g.mode}: deviation ${g.max_deviation}`);
      assert.ok(g.state_max_rel_error !== null && g.state_max_rel_error <= TOL, `${g.name}/${g.mode}: state ${g.state_max_rel_error}`);
    }
    process.stdout.write(`# ${file}: max deviation ${report.max_deviation.toExponential(2)}, state ${report.max_state_rel_error?.toExponential(2)}\n`);
  });
}

test('greedy continuation of "Once upon a time" on the Q4_0 file equals llama.cpp\'s 16 tokens', async () => {
  const ref = JSON.parse(fs.readFileSync(GG('storyteller-L6-D192-q4_0.llama-cpp.json'), 'utf8')) as { prompt_tokens: number[]; greedy_tokens: number[]; text: string };
  assert.deepEqual(WorldTokenizer.default().encode(ref.text), ref.prompt_tokens);
  const model = await loadGguf(GG('storyteller-L6-D192-q4_0.gguf'));
  const state = model.newState();
  let logits = await model.forward(ref.prompt_tokens, state);
  // llama.cpp's next-token distribution after the prompt, for the record.
  const lp = bytesToFloat32('F32', fs.readFileSync(GG('storyteller-L6-D192-q4_0.llama-cpp.next_logprobs.bin')));
  assert.equal(argmax(lp), argmax(logits));
  const out: number[] = [];
  for (let i = 0; i < ref.greedy_tokens.length; i++) {
    const t = argmax(logits);
    out.push(t);
    logits = await model.forward([t], state);
  }
  assert.deepEqual(out, ref.greedy_tokens);
});

test('canonical names and shapes; hyperparameters; raw Q4_0 blocks round-trip through dequantization', () => {
  const g = openGguf(fileSource(GG('storyteller-L6-D192-q4_0.gguf')));
  try {
    assert.deepEqual(g.rwkv7, { nEmbd: 192, nLayer: 6, vocabSize: 65536, headSize: 64, dimFfn: 768, lora: { decay: 32, a: 32, v: 32, gate: 64 } });
    const t = (n: string) => { const r = g.tensors.get(n); assert.ok(r, n); return r; };
    assert.deepEqual(t('emb.weight').shape, [65536, 192]);
    assert.deepEqual(t('blocks.0.att.x_g').shape, [1, 1, 192]);
    assert.deepEqual(t('blocks.3.att.w1').shape, [192, 32]);
    assert.deepEqual(t('blocks.3.att.a2').shape, [32, 192]);
    assert.deepEqual(t('blocks.2.att.r_k').shape, [3, 64]);
    assert.ok(!g.tensors.has('blocks.0.att.v1') && g.tensors.has('blocks.1.att.v1'));
    assert.ok(t('blocks.0.ln0.weight') && t('head.weight') && t('ln_out.bias'));
    const head = t('head.weight');
    assert.equal(head.dtype, 'F32');
    assert.equal(head.ggml?.type.name, 'Q4_0');
    const raw = head.ggml!.readRaw();
    assert.equal(raw.length, 65536 * 192 / 32 * 18);
    assert.deepEqual(new Uint8Array(head.read().buffer), new Uint8Array(dequantize(head.ggml!.type, raw, 65536 * 192).buffer));
    // A transposed Q4_0 LoRA factor: the canonical matrix is the transpose of the stored one.
    const a1 = t('blocks.1.att.a1');
    assert.equal(a1.ggml?.transposed, true);
    const stored = dequantize(a1.ggml!.type, a1.ggml!.readRaw(), 192 * 32); // [32, 192]
    const canon = bytesToFloat32('F32', a1.read()); // [192, 32]
    assert.equal(canon[5 * 32 + 7], stored[7 * 192 + 5]);
    assert.equal(g.metadata['general.architecture'], 'rwkv7');
  } finally {
    g.close();
  }
});

test('GGUF tokenizers are the World vocabulary (full on storyteller, a prefix on the tiny models)', () => {
  const world = WorldTokenizer.default();
  const full = openGguf(fileSource(GG('storyteller-L6-D192-q4_0.gguf')));
  try {
    const r = checkGgufVocab(full.gguf, world);
    assert.equal(r.status, 'world', r.message);
    assert.equal(r.tokens, 65536);
  } finally { full.close(); }
  const tiny = openGguf(fileSource(GG('tiny-l2-d96-h32-f16.gguf')));
  try {
    assert.equal(checkGgufVocab(tiny.gguf, world).status, 'world-prefix');
  } finally { tiny.close(); }
  for (const id of [1, 10, 39, 92, 261, 300, 5000, 65529]) {
    const b = world.tokenBytes(id);
    assert.deepEqual(unescapeRwkvToken(escapeRwkvToken(b)), b, `token ${id}`);
  }
  assert.equal(unescapeRwkvToken('bad\\q'), undefined);
});

// ---- quantization: ggml's block layouts on hand-made blocks ----

test('dequantization of every supported block type follows ggml\'s layouts', () => {
  const f16one = 0x3c00, f16half = 0x3800;
  const T = (id: number) => SUPPORTED_TYPES.get(id)!;
  // Q8_0: d = 0.5, q = j - 16.
  const q8 = new Uint8Array(34);
  new DataView(q8.buffer).setUint16(0, f16half, true);
  for (let j = 0; j < 32; j++) q8[2 + j] = (j - 16) & 255;
  assert.deepEqual([...dequantize(T(GGML_TYPE.Q8_0), q8, 32)], Array.from({ length: 32 }, (_, j) => (j - 16) / 2));
  // Q4_0 / Q4_1: byte j = element j | element j+16 << 4.
  const q4 = new Uint8Array(18);
  new DataView(q4.buffer).setUint16(0, f16one, true);
  for (let j = 0; j < 16; j++) q4[2 + j] = (j & 15) | ((15 - j) << 4);
  const want4 = [...Array.from({ length: 16 }, (_, j) => j - 8), ...Array.from({ length: 16 }, (_, j) => 7 - j)];
  assert.deepEqual([...dequantize(T(GGML_TYPE.Q4_0), q4, 32)], want4);
  const q41 = new Uint8Array(20);
  const dv41 = new DataView(q41.buffer);
  dv41.setUint16(0, f16half, true); dv41.setUint16(2, f16one, true);
  q41.set(q4.subarray(2), 4);
  assert.deepEqual([...dequantize(T(GGML_TYPE.Q4_1), q41, 32)], want4.map((v) => (v + 8) / 2 + 1));
  // Q5_0: the 5th bit of element j is bit j of qh.
  const q5 = new Uint8Array(22);
  const dv5 = new DataView(q5.buffer);
  dv5.setUint16(0, f16one, true); dv5.setUint32(2, 0x80000001, true);
  assert.deepEqual([...dequantize(T(GGML_TYPE.Q5_0), q5, 32)], Array.from({ length: 32 }, (_, j) => (j === 0 || j === 31 ? 0 : -16)));
  const q51 = new Uint8Array(24);
  const dv51 = new DataView(q51.buffer);
  dv51.setUint16(0, f16one, true); dv51.setUint16(2, f16one, true); dv51.setUint32(4, 0x00010000, true); q51[8] = 0x21;
  const got51 = dequantize(T(GGML_TYPE.Q5_1), q51, 32);
  assert.deepEqual([got51[0], got51[16], got51[1]], [2, 1 + 16 + 2, 1]);
  // Q4_K: sub-block 5's scale = (s[9] & 15) | (s[1] >> 6) << 4, its min = (s[9] >> 4) | (s[5] >> 6) << 4.
  const k4 = new Uint8Array(144);
  const dk = new DataView(k4.buffer);
  dk.setUint16(0, f16one, true); dk.setUint16(2, f16half, true);
  k4[4 + 9] = 0x32; k4[4 + 1] = 0x40; k4[4 + 5] = 0xc0; // scale 2 | 16 = 18, min 3 | 48 = 51
  k4[16 + 2 * 32 + 3] = 0x50; // sub-block 5 = high nibbles of bytes 64..95: element 3 has q = 5
  const got4k = dequantize(T(GGML_TYPE.Q4_K), k4, 256);
  assert.equal(got4k[5 * 32 + 3], 18 * 5 - 51 * 0.5);
  assert.equal(got4k[5 * 32 + 4], -51 * 0.5);
  // Q5_K adds qh bit j of byte l for element l of sub-block j.
  const k5 = new Uint8Array(176);
  k5.set(k4.subarray(0, 16));
  k5[16 + 3] = 1 << 5;
  k5[48 + 2 * 32 + 3] = 0x50;
  assert.equal(dequantize(T(GGML_TYPE.Q5_K), k5, 256)[5 * 32 + 3], 18 * (5 + 16) - 51 * 0.5);
  // Q6_K: ql[128] qh[64] scales[16] d; element 64 + l of a half uses ql[l] >> 4 and qh bits 4-5.
  const k6 = new Uint8Array(210);
  new DataView(k6.buffer).setUint16(208, f16half, true);
  k6[192 + 4] = 3; // scale of elements 64..79
  k6[1] = 0x70; k6[128 + 1] = 0x20; // element 65: q = 7 | 2 << 4 = 39, minus 32 = 7
  assert.equal(dequantize(T(GGML_TYPE.Q6_K), k6, 256)[65], 0.5 * 3 * 7);
  assert.equal(dequantize(T(GGML_TYPE.Q6_K), k6, 256)[0], 0.5 * 0 * -32);
});

test('Q8_0 and Q4_0 quantizers round as ggml\'s reference', () => {
  const x = Float32Array.from({ length: 64 }, (_, i) => Math.fround(Math.sin(i * 1.7) * (i % 7 + 1)));
  const q8 = quantizeQ8_0(x);
  const back8 = dequantize(SUPPORTED_TYPES.get(GGML_TYPE.Q8_0)!, q8, 64);
  for (let i = 0; i < 64; i++) assert.ok(Math.abs(back8[i]! - x[i]!) <= 7 / 127 / 2 * 1.01, `q8 ${i}`);
  const q4 = quantizeQ4_0(x);
  // The largest-magnitude value of each block maps to code 0 exactly (d = max / -8).
  const back4 = dequantize(SUPPORTED_TYPES.get(GGML_TYPE.Q4_0)!, q4, 64);
  for (let b = 0; b < 2; b++) {
    let m = 0;
    for (let j = 0; j < 32; j++) if (Math.abs(x[b * 32 + j]!) > Math.abs(x[b * 32 + m]!)) m = j;
    assert.ok(Math.abs(back4[b * 32 + m]! - x[b * 32 + m]!) <= Math.abs(x[b * 32 + m]!) * 1e-3);
  }
  // All zeros: d = 0 / -8 = -0 (f16 0x8000, as ggml and gguf-py store it), every code 8.
  assert.deepEqual([...quantizeQ4_0(new Float32Array(32))], [0, 0x80, ...new Array(16).fill(0x88)]);
});

// ---- writer: what llama.cpp's converter writes ----

function convertInMemory(model: string, type: GgufTargetType, name: string): Uint8Array {
  const ck = openCheckpoint(model);
  try {
    const sink = memorySink(`${name}.gguf`);
    writeRwkv7Gguf(sink, ck.tensors, configFromCheckpoint(ck), { type, name, vocab: WorldTokenizer.default() });
    return sink.bytes();
  } finally {
    ck.close();
  }
}

/** Compares two GGUFs tensor by tensor (names, order, types, dims, bytes), then metadata, then the whole file. */
function assertSameGguf(ours: Uint8Array, ref: Uint8Array, label: string): void {
  const a = parseGguf(bytesSource(ours, `ours ${label}`)), b = parseGguf(bytesSource(ref, `fixture ${label}`));
  assert.deepEqual(a.tensors.map((t) => t.name), b.tensors.map((t) => t.name));
  for (let i = 0; i < a.tensors.length; i++) {
    const x = a.tensors[i]!, y = b.tensors[i]!;
    assert.equal(x.type.name, y.type.name, `${x.name} type`);
    assert.deepEqual(x.ne, y.ne, `${x.name} ne`);
    const bx = ours.subarray(x.fileOffset, x.fileOffset + x.nbytes), by = ref.subarray(y.fileOffset, y.fileOffset + y.nbytes);
    assert.ok(Buffer.from(bx).equals(Buffer.from(by)), `${label}: tensor ${x.name} (${x.type.name}) differs`);
  }
  assert.deepEqual([...a.metadata.keys()], [...b.metadata.keys()]);
  for (const [k, v] of b.metadata) assert.deepEqual(a.metadata.get(k), v, `metadata ${k}`);
  assert.ok(Buffer.from(ours).equals(Buffer.from(ref)), `${label}: files differ`);
}

test('convert storyteller .pth to q4_0 GGUF: byte-identical to the llama.cpp fixture, tensor by tensor', () => {
  const ours = convertInMemory(shared('models/rwkv7-storyteller-L6-D192.pth'), 'q4_0', 'rwkv7-storyteller-L6-D192');
  assertSameGguf(ours, fs.readFileSync(GG('storyteller-L6-D192-q4_0.gguf')), 'storyteller q4_0');
});

test('convert the tiny models to f32 / f16 GGUF: byte-identical to the fixtures', () => {
  assertSameGguf(convertInMemory(shared('fixtures/models/tiny-l2-d128.pth'), 'f32', 'tiny-l2-d128'), fs.readFileSync(GG('tiny-l2-d128-f32.gguf')), 'tiny f32');
  assertSameGguf(convertInMemory(shared('fixtures/models/tiny-l2-d96-h32.pth'), 'f16', 'tiny-l2-d96-h32'), fs.readFileSync(GG('tiny-l2-d96-h32-f16.gguf')), 'tiny f16');
});

test('our reader reads our writer\'s bf16 and q8_0 files (bf16 exact against the golden outputs)', async () => {
  const pth = shared('fixtures/models/tiny-l2-d128.pth');
  const ck = openCheckpoint(pth);
  try {
    for (const type of ['bf16', 'q8_0'] as const) {
      const g = openGguf(bytesSource(convertInMemory(pth, type, 'tiny'), `tiny-${type}.gguf`));
      const byName = new Map(g.gguf.tensors.map((t) => [t.name, t.type.name]));
      const want = type === 'bf16' ? 'BF16' : 'Q8_0';
      assert.equal(byName.get('blk.1.time_mix_key.weight'), want);
      assert.equal(byName.get('blk.1.time_mix_a1.weight'), want);
      assert.equal(byName.get('blk.1.time_mix_w1.weight'), 'F32');
      assert.equal(byName.get('blk.1.time_mix_lerp_fused.weight'), 'F32');
      for (const [name, ref] of ck.tensors) {
        if (/^blocks\.0\.att\.v[012]$/.test(name)) continue;
        const t = g.tensors.get(name);
        assert.ok(t, name);
        assert.deepEqual(t.shape, ref.shape, name);
        const src = bytesToFloat32(ref.dtype, ref.read()), got = bytesToFloat32(t.dtype, t.read());
        if (type === 'bf16' || t.ggml?.type.name !== 'Q8_0') {
          assert.deepEqual(got, src, name); // bf16 source: bf16 and f32 storage are exact
        } else {
          let amax = 0;
          for (let i = 0; i < src.length; i++) amax = Math.max(amax, Math.abs(got[i]! - src[i]!));
          assert.ok(amax < 0.01, `${name}: q8_0 error ${amax}`);
        }
      }
      if (type === 'bf16') {
        const c = asCheckpoint(g);
        const config = configFromCheckpoint(c);
        const backend = await createBackend('js', { dtype: 'f32' });
        const report = await verifyGolden(new RWKV7(backend, config, loadWeights(c, config, backend)), shared('fixtures/golden/tiny-l2-d128.golden.safetensors'), ['seq']);
        assert.ok(report.max_deviation <= TOL, `bf16 GGUF deviation ${report.max_deviation}`);
      }
      g.close();
    }
  } finally {
    ck.close();
  }
});

// ---- untrusted input: lying headers give FormatErrors naming the field, never a crash or a huge allocation ----

/**
 * A small valid GGUF, laid out as (offsets in bytes):
 *   0 magic | 4 version | 8 tensor_count | 16 kv_count
 *   24 key len (20) | 32 "general.architecture" | 52 type 8 | 56 len 5 | 64 "rwkv7"
 *   69 key len (5) | 77 "x.arr" | 82 type 9 | 86 item type 0 | 90 count 3 | 98 three u8
 *   101 name len 1 | 109 "t" | 110 n_dims 2 | 114 ne0 32 | 122 ne1 2 | 130 type 0 (F32) | 134 offset 0 | 142 end
 *   padding to 160, then 256 bytes of data.
 */
function tinyGguf(extra: Array<[string, { type: number; value: number | boolean }]> = []): Uint8Array {
  const sink = memorySink();
  writeGguf((b) => sink.write(b), [
    ['general.architecture', { type: GGUF_VALUE.STRING, value: 'rwkv7' }],
    ['x.arr', { type: GGUF_VALUE.ARRAY, value: { itemType: GGUF_VALUE.UINT8, items: [1, 2, 3] } }],
    ...extra,
  ], [{ name: 't', ne: [32, 2], type: SUPPORTED_TYPES.get(GGML_TYPE.F32)!, data: () => new Uint8Array(256) }]);
  return sink.bytes();
}

function mutated(at: number, width: 4 | 8, value: number | bigint, base = tinyGguf()): Uint8Array {
  const b = base.slice();
  const dv = new DataView(b.buffer);
  if (width === 4) dv.setUint32(at, Number(value), true);
  else dv.setBigUint64(at, BigInt(value), true);
  return b;
}

function assertFormatError(bytes: Uint8Array, re: RegExp, label: string): void {
  assert.throws(() => parseGguf(bytesSource(bytes, 'bad.gguf')), (e: unknown) => {
    assert.ok(e instanceof FormatError, `${label}: ${String(e)}`);
    assert.match(e.message, /^bad\.gguf: /, label);
    assert.match(e.message, re, label);
    return true;
  }, label);
}

test('a GGUF Q8_0 block with a NaN scale is refused by tensor name (matrix and embedding, kept as blocks), unless allowNonFinite', async () => {
  const pth = shared('fixtures/models/tiny-l2-d128.pth');
  const clean = convertInMemory(pth, 'q8_0', 'tiny');
  const infos = new Map(parseGguf(bytesSource(clean, 'tiny-q8_0.gguf')).tensors.map((t) => [t.name, t]));
  for (const [ggufName, canon] of [['blk.1.time_mix_key.weight', 'blocks.1.att.key.weight'], ['token_embd.weight', 'emb.weight']] as const) {
    const info = infos.get(ggufName)!;
    assert.equal(info.type.name, 'Q8_0', ggufName);
    const bytes = clean.slice();
    bytes[info.fileOffset + 34] = 0x00; bytes[info.fileOffset + 35] = 0x7e; // block 1's f16 scale: NaN (32 NaN values)
    for (const backendName of ['wasm', 'js'] as const) {
      const load = async (allowNonFinite: boolean) => {
        const g = openGguf(bytesSource(bytes, 'poisoned.gguf'));
        try {
          const ck = asCheckpoint(g);
          const config = configFromCheckpoint(ck);
          const backend = await createBackend(backendName, { dtype: 'q8_0', threads: 1 });
          try { loadWeights(ck, config, backend, { allowNonFinite }); } finally { await backend.dispose(); }
        } finally { g.close(); }
      };
      await assert.rejects(load(false), (e: Error) => e instanceof FormatError && new RegExp(`tensor ${canon.replace(/\./g, '\\.')} holds 32 non-finite values \\(the first, NaN, at element 32\\)`).test(e.message), `${ggufName} on ${backendName}`);
      await load(true);
    }
  }
});

test('fuzzed GGUF headers: lying counts, lengths, offsets, dimensions and types are FormatErrors naming the field', () => {
  const ok = parseGguf(bytesSource(tinyGguf(), 'ok.gguf'));
  assert.deepEqual([ok.tensors[0]!.fileOffset, ok.tensors[0]!.nbytes, ok.dataOffset], [160, 256, 160]);
  const cases: Array<[Uint8Array, RegExp, string]> = [
    [mutated(0, 4, 0x46554746), /not a GGUF file/, 'magic'],
    [mutated(4, 4, 1), /version 1 is obsolete/, 'v1'],
    [mutated(4, 4, 4), /unsupported GGUF version 4/, 'v4'],
    [mutated(8, 8, 2n ** 40n), /tensor_count is 1099511627776/, 'tensor count'],
    [mutated(16, 8, 2n ** 62n), /metadata_kv_count/, 'kv count'],
    [mutated(24, 8, 2n ** 63n), /length of metadata key #0/, 'key length'],
    [mutated(56, 8, 1e9), /length of metadata general\.architecture/, 'string length'],
    [mutated(52, 4, 42), /general\.architecture has unknown value type 42/, 'value type'],
    [mutated(86, 4, 99), /x\.arr has unknown element type 99/, 'array item type'],
    [mutated(90, 8, 2n ** 50n), /element count of metadata x\.arr/, 'array count'],
    [mutated(110, 4, 5), /tensor t has 5 dimensions/, 'n_dims'],
    [mutated(110, 4, 0), /tensor t has 0 dimensions/, 'n_dims 0'],
    [mutated(114, 8, 2n ** 60n), /ne\[0\] of tensor t/, 'huge dim'],
    [mutated(114, 8, 0), /tensor t has an empty dimension/, 'zero dim'],
    [mutated(122, 8, 100), /tensor t .*runs past the end of the file/, 'dims beyond data'],
    [mutated(114, 8, 3000, mutated(122, 8, 3000)), /more than a file of \d+ bytes can hold/, 'dim product'],
    [mutated(130, 4, 16), /tensor t has ggml type IQ2_XXS, which this runtime does not read/, 'IQ type'],
    [mutated(130, 4, 1000), /tensor t has ggml type type 1000/, 'unknown type'],
    [mutated(130, 4, 2, mutated(114, 8, 16)), /Q4_0 with rows of 16 values, not a multiple of its block size 32/, 'partial block'],
    [mutated(134, 8, 2n ** 40n), /data offset of tensor t/, 'huge offset'],
    [mutated(134, 8, 3), /data offset 3 is not a multiple of the alignment 32/, 'misaligned offset'],
    [mutated(134, 8, 32), /runs past the end/, 'offset past end'],
    [tinyGguf().subarray(0, 20), /only 20 bytes/, 'tiny file'],
  ];
  for (const [bytes, re, label] of cases) assertFormatError(bytes, re, label);
  // general.alignment must be a power of two.
  assertFormatError(tinyGguf([['general.alignment', { type: GGUF_VALUE.UINT32, value: 3 }]]), /general\.alignment must be a u32 power of two/, 'alignment');
  // A bool byte other than 0/1.
  const withBool = tinyGguf([['b', { type: GGUF_VALUE.BOOL, value: true }]]);
  const boolAt = withBool.indexOf(0x62, 100) + 1 + 4; // after key "b" and its type
  const bad = withBool.slice();
  bad[boolAt] = 7;
  assertFormatError(bad, /metadata b is a bool with byte value 7/, 'bool');
});

test('fuzzed GGUF files: every truncation and thousands of random corruptions give FormatErrors or parse, nothing else', () => {
  const base = tinyGguf();
  for (let n = 0; n < base.length; n++) {
    try { parseGguf(bytesSource(base.subarray(0, n), 'cut.gguf')); assert.fail(`truncated to ${n} bytes parsed`); } catch (e) {
      assert.ok(e instanceof FormatError, `truncated to ${n}: ${String(e)}`);
    }
  }
  const real = fs.readFileSync(GG('tiny-l2-d96-h32-f16.gguf')).subarray(0, 20000); // header + some data
  const g = parseGguf(bytesSource(fs.readFileSync(GG('tiny-l2-d96-h32-f16.gguf')), 'x'));
  const rss0 = process.memoryUsage().rss;
  let seed = 12345;
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
  for (let i = 0; i < 3000; i++) {
    const src = i % 2 ? base : real;
    const b = src.slice();
    for (let k = 0, m = 1 + rnd(4); k < m; k++) {
      // Corrupt the header region (where the counts and lengths are), often in the high bytes of a u64.
      const at = rnd(Math.min(b.length, i % 2 ? base.length : g.dataOffset));
      b[at] = rnd(3) === 0 ? 0xff : rnd(256);
    }
    try { parseGguf(bytesSource(b, 'fuzz.gguf')); } catch (e) {
      assert.ok(e instanceof FormatError, `mutation ${i}: ${String(e)}`);
    }
  }
  assert.ok(process.memoryUsage().rss - rss0 < 512 * 2 ** 20, 'fuzzing must not allocate much');
});

test('rwkv7 mapping errors: hyperparameter metadata that disagrees with the shapes, foreign architectures, unknown tensors', () => {
  const real = fs.readFileSync(GG('tiny-l2-d128-f32.gguf'));
  const at = (key: string): number => real.indexOf(Buffer.from(key)) + key.length + 4; // the value after the type
  const open = (b: Uint8Array): void => { openGguf(bytesSource(b, 'bad.gguf')).close(); };
  const patch = (key: string, v: number): Uint8Array => { const b = Uint8Array.from(real); new DataView(b.buffer).setUint32(at(key), v, true); return b; };
  assert.throws(() => open(patch('rwkv7.embedding_length', 256)), /metadata rwkv7\.embedding_length = 256, but the tensor shapes give 128/);
  assert.throws(() => open(patch('rwkv7.block_count', 3)), /metadata rwkv7\.block_count = 3, but the tensor shapes give 2/);
  assert.throws(() => open(patch('rwkv7.attention.gate_lora_rank', 32)), /gate_lora_rank = 32, but the tensor shapes give 64/);
  assert.throws(() => open(patch('rwkv7.wkv.head_size', 48)), /head_size 48 does not divide n_embd 128/);
  const arch = Uint8Array.from(real);
  arch[real.indexOf(Buffer.from('rwkv7'), 40) + 4] = 0x36; // the architecture value "rwkv7" -> "rwkv6"
  assert.throws(() => open(arch), (e: unknown) => e instanceof FormatError && /architecture is "rwkv6" \(an older RWKV generation/.test(e.message));
  const renamed = Uint8Array.from(real);
  renamed[real.indexOf(Buffer.from('output_norm.bias')) + 15] = 0x74; // "output_norm.biat"
  assert.throws(() => open(renamed), /unrecognised tensor output_norm\.biat for the rwkv7 architecture/);
  // The whole file through openCheckpoint (format sniffing by magic).
  const ck = openCheckpoint(bytesSource(real, 'tiny.gguf'));
  assert.equal(ck.format, 'gguf');
  assert.equal(configFromCheckpoint(ck).headSize, 64);
  ck.close();
});

test('rwkv7 info shows a GGUF\'s types per tensor group and its tokenizer; convert writes .gguf files', () => {
  const info = describeModel(GG('storyteller-L6-D192-q4_0.gguf'));
  assert.equal(info.format, 'gguf');
  assert.deepEqual(info.gguf?.types, {
    embedding: 'Q4_0 x 1', head: 'Q4_0 x 1', 'attention matrices': 'Q4_0 x 24', 'ffn matrices': 'Q4_0 x 12',
    lora: 'Q4_0 x 36, F32 x 12', 'vectors and norms': 'F32 x 88',
  });
  assert.match(info.gguf!.tokenizer, /RWKV World vocabulary \(65536 tokens\)/);
  assert.match(formatInfo(info), /types +lora: Q4_0 x 36, F32 x 12/);
  const dir = fs.mkdtempSync(join(tmpdir(), 'rwkv7-gguf-'));
  try {
    const out = join(dir, 'tiny-l2-d128-f32.gguf');
    const r = convertToGguf(shared('fixtures/models/tiny-l2-d128.pth'), out, { dtype: 'f32' });
    assert.ok(r.dropped.every((n) => /^blocks\.0\.att\.v[012]$/.test(n)), r.dropped.join(', '));
    assert.ok(fs.readFileSync(out).equals(fs.readFileSync(GG('tiny-l2-d128-f32.gguf'))));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a header that points its counts at a terabyte of "tensor data" is refused without reading or allocating it', () => {
  // A virtual 1 TiB file: the small GGUF's header, then zeros. Every read is recorded.
  const base = tinyGguf();
  let largest = 0;
  const huge = (bytes: Uint8Array): ByteSource => ({
    name: 'huge.gguf', size: 2 ** 40,
    read(offset, length) {
      largest = Math.max(largest, length);
      const out = new Uint8Array(length);
      if (offset < bytes.length) out.set(bytes.subarray(offset, Math.min(bytes.length, offset + length)));
      return out;
    },
    close() {},
  });
  const cases: Array<[Uint8Array, RegExp]> = [
    [mutated(8, 8, 2n ** 30n), /tensor_count is 1073741824 .*more than the 1048576 this reader accepts/],
    [mutated(16, 8, 2n ** 36n), /metadata_kv_count is 68719476736 .*more than the 1048576/],
    [mutated(56, 8, 2n ** 35n), /length of metadata general\.architecture is 34359738368 .*more than the 67108864/],
    [mutated(90, 8, 2n ** 32n), /element count of metadata x\.arr is 4294967296 .*more than the 16777216/],
  ];
  for (const [bytes, re] of cases) {
    largest = 0;
    assert.throws(() => parseGguf(huge(bytes)), (e: unknown) => e instanceof FormatError && re.test(e.message));
    assert.ok(largest <= 1 << 20, `read ${largest} bytes at once`);
  }
});
