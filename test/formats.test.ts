import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  openCheckpoint, openSafetensors, writeSafetensors, toFloat32, fromFloat32, bytesToFloat32,
  f32BitsToBf16, f32BitsToF16, openPth, type Checkpoint,
} from '../src/formats/index.js';
import { configFromCheckpoint } from '../src/model/config.js';
import { unpickle, PyCallable, PyDict, PyTuple, type PyValue } from '../src/formats/pickle.js';
import { describeModel } from '../src/cli/info.js';
import { convertCheckpoint } from '../src/cli/convert.js';
import { writePth, tensor, type PthTensor } from './helpers/pth-writer.js';

const SHARED = fileURLToPath(new URL('../../shared/', import.meta.url));
const FIXTURES = path.join(SHARED, 'fixtures/models');
const STORYTELLER = path.join(SHARED, 'models/rwkv7-storyteller-L6-D192.pth');
const REPO = fileURLToPath(new URL('../', import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rwkv7-formats-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/** Asserts two checkpoints hold the same canonical tensors, bit for bit. */
function assertSameTensors(a: Checkpoint, b: Checkpoint, opts: { ignore?: RegExp } = {}): void {
  const names = (ck: Checkpoint) => [...ck.tensors.keys()].filter((n) => !opts.ignore?.test(n)).sort();
  assert.deepEqual(names(b), names(a));
  for (const name of names(a)) {
    const x = a.tensors.get(name)!, y = b.tensors.get(name)!;
    assert.deepEqual(y.shape, x.shape, `shape of ${name}`);
    assert.equal(y.dtype, x.dtype, `dtype of ${name}`);
    assert.ok(Buffer.from(x.read()).equals(Buffer.from(y.read())), `bytes of ${name}`);
  }
}

function withCk<T>(p: string, f: (ck: Checkpoint) => T): T {
  const ck = openCheckpoint(p);
  try { return f(ck); } finally { ck.close(); }
}

test('info matches the hyperparameters of every fixture model', () => {
  const pths = fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.pth'));
  assert.ok(pths.length >= 3);
  const cases = pths.map((f) => [path.join(FIXTURES, f), path.join(FIXTURES, f.replace(/\.pth$/, '.json'))]);
  cases.push([path.join(FIXTURES, 'tiny-l3-d256-fla'), path.join(FIXTURES, 'tiny-l3-d256.json')]);
  for (const [model, jsonPath] of cases) {
    const want = JSON.parse(fs.readFileSync(jsonPath!, 'utf8'));
    const info = describeModel(model!);
    for (const k of ['n_layer', 'n_embd', 'head_size', 'vocab_size', 'dim_ffn', 'lora', 'dtype'] as const) {
      assert.deepEqual(info[k], want[k], `${model}: ${k}`);
    }
    assert.equal(info.n_head * info.head_size, info.n_embd);
  }
  assert.equal(describeModel(path.join(FIXTURES, 'tiny-l2-d96-h32.pth')).head_size, 32);
  const fla = describeModel(path.join(FIXTURES, 'tiny-l3-d256-fla'));
  assert.equal(fla.layout, 'fla');
  assert.equal(fla.format, 'safetensors');
});

test('info on the storyteller model', () => {
  const i = describeModel(STORYTELLER);
  assert.deepEqual(
    { ...i, path: undefined },
    {
      path: undefined, format: 'pth', layout: 'blinkdl', n_layer: 6, n_embd: 192, head_size: 64, n_head: 3, vocab_size: 65536,
      dim_ffn: 768, lora: { decay: 32, a: 32, v: 32, gate: 64 }, dtype: 'bf16', parameters: 28198848, tensors: 201,
    },
  );
});

test('the fla copy decodes to exactly the .pth tensors', () => {
  withCk(path.join(FIXTURES, 'tiny-l3-d256.pth'), (pth) => withCk(path.join(FIXTURES, 'tiny-l3-d256-fla'), (fla) => {
    assert.equal(fla.layout, 'fla');
    assertSameTensors(pth, fla);
    // Spot check through f32: transposed LoRA and reshaped vectors.
    assert.deepEqual(toFloat32(fla.tensors.get('blocks.1.att.w1')!), toFloat32(pth.tensors.get('blocks.1.att.w1')!));
    assert.deepEqual(fla.tensors.get('blocks.1.att.w1')!.shape, [256, 32]);
    assert.deepEqual(fla.tensors.get('blocks.2.att.k_k')!.shape, [1, 1, 256]);
  }));
});

test('.pth -> safetensors (blinkdl) -> info round trip is bit-exact', () => {
  const src = STORYTELLER;
  const out = path.join(tmp, 'story.safetensors');
  const cfgOut = path.join(tmp, 'story.json');
  convertCheckpoint(src, out, { layout: 'blinkdl', configPath: cfgOut });
  withCk(src, (a) => withCk(out, (b) => {
    assert.equal(b.format, 'safetensors');
    assert.equal(b.layout, 'blinkdl');
    assertSameTensors(a, b);
    assert.deepEqual(configFromCheckpoint(b), configFromCheckpoint(a));
  }));
  assert.equal(JSON.parse(fs.readFileSync(cfgOut, 'utf8')).n_layer, 6);
  assert.equal(openSafetensors(out).metadata.format, 'pt');
});

test('.pth -> fla folder -> info round trip is bit-exact, and fla -> blinkdl back', () => {
  const src = path.join(FIXTURES, 'tiny-l3-d256.pth');
  const dir = path.join(tmp, 'fla-out');
  const res = convertCheckpoint(src, dir, { layout: 'fla' });
  assert.deepEqual(res.dropped, []);
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const want = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'tiny-l3-d256-fla/config.json'), 'utf8'));
  assert.deepEqual(cfg, want);
  // Same raw names and shapes as the reference fla file.
  const mine = openSafetensors(path.join(dir, 'model.safetensors'));
  const ref = openSafetensors(path.join(FIXTURES, 'tiny-l3-d256-fla/model.safetensors'));
  assert.deepEqual([...mine.tensors.keys()].sort(), [...ref.tensors.keys()].sort());
  for (const [n, t] of ref.tensors) {
    assert.deepEqual(mine.tensors.get(n)!.shape, t.shape, n);
    assert.ok(Buffer.from(mine.tensors.get(n)!.read()).equals(Buffer.from(t.read())), n);
  }
  mine.close(); ref.close();
  withCk(src, (a) => withCk(dir, (b) => assertSameTensors(a, b)));
  const back = path.join(tmp, 'back.safetensors');
  convertCheckpoint(dir, back);
  withCk(src, (a) => withCk(back, (b) => assertSameTensors(a, b)));
  // The storyteller, with its real layer-0 layout, also survives the fla trip.
  const sdir = path.join(tmp, 'story-fla');
  convertCheckpoint(STORYTELLER, sdir, { layout: 'fla' });
  withCk(STORYTELLER, (a) => withCk(sdir, (b) => assertSameTensors(a, b)));
  assert.equal(describeModel(sdir).vocab_size, 65536);
});

test('convert --dtype f32 then bf16 returns the original bits; f16 rounds', () => {
  const src = path.join(FIXTURES, 'tiny-l2-d96-h32.pth');
  const f32 = path.join(tmp, 'h32-f32.safetensors');
  const bf16 = path.join(tmp, 'h32-bf16.safetensors');
  const f16 = path.join(tmp, 'h32-f16.safetensors');
  convertCheckpoint(src, f32, { dtype: 'f32' });
  convertCheckpoint(f32, bf16, { dtype: 'bf16' });
  convertCheckpoint(src, f16, { dtype: 'f16' });
  assert.equal(describeModel(f32).dtype, 'f32');
  assert.equal(describeModel(f16).dtype, 'f16');
  withCk(src, (a) => withCk(bf16, (b) => assertSameTensors(a, b)));
  withCk(src, (a) => withCk(f16, (b) => {
    const x = toFloat32(a.tensors.get('blocks.1.att.w1')!), y = toFloat32(b.tensors.get('blocks.1.att.w1')!);
    for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i]! - y[i]!) <= Math.abs(x[i]!) * 2 ** -11 + 2 ** -24);
  }));
});

test('sharded HF folder (model.safetensors.index.json) loads the same tensors', () => {
  const ref = openSafetensors(path.join(FIXTURES, 'tiny-l3-d256-fla/model.safetensors'));
  const dir = path.join(tmp, 'sharded');
  fs.mkdirSync(dir);
  const all = [...ref.tensors.values()];
  const half = Math.ceil(all.length / 2);
  const shards = [all.slice(0, half), all.slice(half)];
  const weightMap: Record<string, string> = {};
  shards.forEach((list, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    writeSafetensors(path.join(dir, file), list, { metadata: { format: 'pt' } });
    for (const t of list) weightMap[t.name] = file;
  });
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  fs.copyFileSync(path.join(FIXTURES, 'tiny-l3-d256-fla/config.json'), path.join(dir, 'config.json'));
  ref.close();
  withCk(path.join(FIXTURES, 'tiny-l3-d256.pth'), (a) => withCk(dir, (b) => {
    assert.equal(b.layout, 'fla');
    assertSameTensors(a, b);
    assert.equal(configFromCheckpoint(b).nLayer, 3);
  }));
});

test('.pth views: storage offsets, shared storages and strided tensors are gathered right', () => {
  // One f32 storage [0..11] shared by three tensors.
  const data = new Float32Array(12).map((_, i) => i);
  const storage = { key: '0', dtype: 'F32' as const, numel: 12, data: () => new Uint8Array(data.buffer) };
  const tensors: PthTensor[] = [
    { name: 'whole', storage, shape: [3, 4] },
    { name: 'tail', storage, shape: [2, 2], offset: 8 }, // contiguous at an offset
    { name: 'transposed', storage, shape: [4, 3], stride: [1, 4] }, // whole.T
    { name: 'column', storage, shape: [3], stride: [4], offset: 1 }, // whole[:, 1]
    { name: 'unit', storage, shape: [1, 1, 2], stride: [99, 7, 1], offset: 2 }, // size-1 dims: any stride
  ];
  for (const zip64 of [false, true]) {
    const p = path.join(tmp, `views${zip64 ? 64 : ''}.pth`);
    writePth(p, tensors, { zip64, top: 'some folder name' });
    const ck = openPth(p);
    {
      const get = (n: string) => Array.from(toFloat32(ck.tensors.get(n)!));
      assert.deepEqual(get('whole'), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      assert.deepEqual(get('tail'), [8, 9, 10, 11]);
      assert.deepEqual(get('transposed'), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
      assert.deepEqual(get('column'), [1, 5, 9]);
      assert.deepEqual(get('unit'), [2, 3]);
    }
    ck.close();
  }
});

test('dtype helpers: bf16 shift, exact f16 (subnormals, inf, nan), round-to-nearest-even', () => {
  const f16 = new Uint16Array([0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0xc000, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x3555]);
  const got = bytesToFloat32('F16', new Uint8Array(f16.buffer));
  const want = [0, -0, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, 1, -2, 65504, Infinity, -Infinity, NaN, 0.333251953125];
  want.forEach((w, i) => assert.ok(Object.is(got[i], w), `f16 0x${f16[i]!.toString(16)}: ${got[i]} vs ${w}`));
  // Every f16 value survives f16 -> f32 -> f16 (NaNs stay NaN).
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = new Uint16Array(fromFloat32(bytesToFloat32('F16', new Uint8Array(all.buffer)), 'F16').buffer);
  for (let i = 0; i < 65536; i++) {
    const isNan = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
    if (isNan) assert.ok((back[i]! & 0x7c00) === 0x7c00 && (back[i]! & 0x3ff) !== 0);
    else assert.equal(back[i], i);
  }
  const bits = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0]!;
  assert.equal(f32BitsToBf16(bits(1)), 0x3f80);
  assert.equal(f32BitsToBf16(0x3f808000), 0x3f80); // tie -> even
  assert.equal(f32BitsToBf16(0x3f818000), 0x3f82); // tie -> even (up)
  assert.equal(f32BitsToBf16(0x3f808001), 0x3f81);
  assert.equal(f32BitsToBf16(0x7f7fffff), 0x7f80); // rounds up to inf
  assert.ok((f32BitsToBf16(0x7f800001) & 0x7f) !== 0); // NaN stays NaN
  assert.equal(f32BitsToF16(bits(65520)), 0x7c00); // halfway above max -> inf
  assert.equal(f32BitsToF16(bits(65519)), 0x7bff);
  assert.equal(f32BitsToF16(bits(2 ** -25)), 0x0000); // tie -> even (zero)
  assert.equal(f32BitsToF16(bits(3 * 2 ** -25)), 0x0002); // tie -> even (2)
  assert.equal(f32BitsToF16(bits(1 + 2 ** -11)), 0x3c00); // tie -> even
  assert.equal(f32BitsToF16(bits(1 + 3 * 2 ** -11)), 0x3c02);
  assert.equal(f32BitsToF16(bits(-(2 ** -14))), 0x8400);
  const bf = new Uint16Array([0x3f80, 0xc040]);
  assert.deepEqual(Array.from(bytesToFloat32('BF16', new Uint8Array(bf.buffer))), [1, -3]);
});

test('rwkv7 info CLI prints JSON, and user errors without a stack', () => {
  const cli = ['--import', 'tsx', path.join(REPO, 'src/cli/main.ts')];
  const out = execFileSync(process.execPath, [...cli, 'info', '--json', path.join(FIXTURES, 'tiny-l2-d128.pth')], { encoding: 'utf8' });
  const info = JSON.parse(out);
  assert.equal(info.n_layer, 2);
  assert.equal(info.n_embd, 128);
  const bad = path.join(tmp, 'bad.pth');
  fs.writeFileSync(bad, 'not a zip at all, just text');
  let err: { status: number; stderr: string } | undefined;
  try {
    execFileSync(process.execPath, [...cli, 'info', bad], { encoding: 'utf8', stdio: 'pipe' });
  } catch (e) {
    err = e as { status: number; stderr: string };
  }
  assert.ok(err);
  assert.equal(err.status, 1);
  assert.match(err.stderr, /bad\.pth: not a PyTorch zip checkpoint/);
  assert.doesNotMatch(err.stderr, /\n\s+at /);
});

test('a tiny synthetic RWKV-7 .pth built by the test writer loads with the right config', () => {
  // Also checks the writer used by bench/load.ts produces what the reader and config expect.
  const C = 64, H = 1, N = 64, V = 50, F = 256, L = 2, R = 8;
  const t: PthTensor[] = [];
  const add = (name: string, shape: number[]) => t.push(tensor(name, 'BF16', shape, new Uint8Array(shape.reduce((a, b) => a * b, 1) * 2)));
  add('emb.weight', [V, C]);
  for (let i = 0; i < L; i++) {
    const b = `blocks.${i}.`;
    if (i === 0) { add(`${b}ln0.weight`, [C]); add(`${b}ln0.bias`, [C]); }
    for (const n of ['ln1', 'ln2', 'att.ln_x']) { add(`${b}${n}.weight`, [C]); add(`${b}${n}.bias`, [C]); }
    for (const n of ['x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g', 'w0', 'a0', 'k_k', 'k_a']) add(`${b}att.${n}`, [1, 1, C]);
    for (const x of i ? ['w', 'a', 'v', 'g'] : ['w', 'a', 'g']) { add(`${b}att.${x}1`, [C, R]); add(`${b}att.${x}2`, [R, C]); }
    if (i) add(`${b}att.v0`, [1, 1, C]);
    add(`${b}att.r_k`, [H, N]);
    for (const n of ['receptance', 'key', 'value', 'output']) add(`${b}att.${n}.weight`, [C, C]);
    add(`${b}ffn.x_k`, [1, 1, C]); add(`${b}ffn.key.weight`, [F, C]); add(`${b}ffn.value.weight`, [C, F]);
  }
  add('ln_out.weight', [C]); add('ln_out.bias', [C]); add('head.weight', [V, C]);
  const p = path.join(tmp, 'synthetic.pth');
  writePth(p, t);
  const cfg = withCk(p, configFromCheckpoint);
  assert.deepEqual(cfg, { nLayer: 2, nEmbd: 64, headSize: 64, nHead: 1, vocabSize: 50, dimFfn: 256, lora: { decay: 8, a: 8, v: 8, gate: 8 } });
});

test('unpickler: protocols 2 and 4 (FRAME, MEMOIZE, STACK_GLOBAL), LONG1, floats, bytes, BUILD of _metadata', () => {
  // pickle.dumps(od, protocol=P) in CPython for od = OrderedDict(x=[1, 2**40, -5, 1.5, True, None, b'ab', (1, 2, 3), {'k': 'v'}])
  // with od._metadata = OrderedDict({'': {'version': 1}}).
  const p2 = Uint8Array.from([128, 2, 99, 99, 111, 108, 108, 101, 99, 116, 105, 111, 110, 115, 10, 79, 114, 100, 101, 114, 101, 100, 68, 105, 99, 116, 10, 113, 0, 41, 82, 113, 1, 88, 1, 0, 0, 0, 120, 113, 2, 93, 113, 3, 40, 75, 1, 138, 6, 0, 0, 0, 0, 0, 1, 74, 251, 255, 255, 255, 71, 63, 248, 0, 0, 0, 0, 0, 0, 136, 78, 99, 95, 99, 111, 100, 101, 99, 115, 10, 101, 110, 99, 111, 100, 101, 10, 113, 4, 88, 2, 0, 0, 0, 97, 98, 113, 5, 88, 6, 0, 0, 0, 108, 97, 116, 105, 110, 49, 113, 6, 134, 113, 7, 82, 113, 8, 75, 1, 75, 2, 75, 3, 135, 113, 9, 125, 113, 10, 88, 1, 0, 0, 0, 107, 113, 11, 88, 1, 0, 0, 0, 118, 113, 12, 115, 101, 115, 125, 113, 13, 88, 9, 0, 0, 0, 95, 109, 101, 116, 97, 100, 97, 116, 97, 113, 14, 104, 0, 41, 82, 113, 15, 88, 0, 0, 0, 0, 113, 16, 125, 113, 17, 88, 7, 0, 0, 0, 118, 101, 114, 115, 105, 111, 110, 113, 18, 75, 1, 115, 115, 115, 98, 46]);
  const p4 = Uint8Array.from([128, 4, 149, 133, 0, 0, 0, 0, 0, 0, 0, 140, 11, 99, 111, 108, 108, 101, 99, 116, 105, 111, 110, 115, 148, 140, 11, 79, 114, 100, 101, 114, 101, 100, 68, 105, 99, 116, 148, 147, 148, 41, 82, 148, 140, 1, 120, 148, 93, 148, 40, 75, 1, 138, 6, 0, 0, 0, 0, 0, 1, 74, 251, 255, 255, 255, 71, 63, 248, 0, 0, 0, 0, 0, 0, 136, 78, 67, 2, 97, 98, 148, 75, 1, 75, 2, 75, 3, 135, 148, 125, 148, 140, 1, 107, 148, 140, 1, 118, 148, 115, 101, 115, 125, 148, 140, 9, 95, 109, 101, 116, 97, 100, 97, 116, 97, 148, 104, 2, 41, 82, 148, 140, 0, 148, 125, 148, 140, 7, 118, 101, 114, 115, 105, 111, 110, 148, 75, 1, 115, 115, 115, 98, 46]);
  for (const bytes of [p2, p4]) {
    const root = unpickle(bytes, {
      where: 'test',
      findGlobal: (m, n) => m === 'collections' && n === 'OrderedDict' ? new PyCallable('od', () => new PyDict())
        : m === '_codecs' && n === 'encode' ? new PyCallable('enc', (a) => Buffer.from(a[0] as string, 'latin1')) : undefined,
      persistentLoad: () => null,
    });
    assert.ok(root instanceof PyDict);
    const x = root.entries.get('x') as PyValue[];
    assert.deepEqual(x.slice(0, 6), [1, 2 ** 40, -5, 1.5, true, null]);
    assert.deepEqual(Array.from(x[6] as Uint8Array), [97, 98]);
    assert.deepEqual((x[7] as PyTuple).items, [1, 2, 3]);
    assert.equal((x[8] as PyDict).entries.get('k'), 'v');
    const attrs = root.attrs as PyDict;
    assert.ok((attrs.entries.get('_metadata') as PyDict).entries.has(''));
  }
});

test('fla folder with tied embeddings (no lm_head) uses the embedding as head', () => {
  const ref = openSafetensors(path.join(FIXTURES, 'tiny-l3-d256-fla/model.safetensors'));
  const dir = path.join(tmp, 'tied');
  fs.mkdirSync(dir);
  writeSafetensors(path.join(dir, 'model.safetensors'), [...ref.tensors.values()].filter((t) => t.name !== 'lm_head.weight'));
  ref.close();
  const cfg = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'tiny-l3-d256-fla/config.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, tie_word_embeddings: true }));
  withCk(dir, (ck) => {
    assert.ok(Buffer.from(ck.tensors.get('head.weight')!.read()).equals(Buffer.from(ck.tensors.get('emb.weight')!.read())));
    assert.equal(configFromCheckpoint(ck).vocabSize, 4096);
  });
});
