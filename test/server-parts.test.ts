// Unit tests of the server's parts: the prefix state cache, the FIFO slot queue and model lock, SSE framing,
// chat rendering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/runtime/load.js';
import { StateCache, stateBytes } from '../src/runtime/state-cache.js';
import { FifoLock, SlotQueue, QueueFullError, AbortedError } from '../src/server/scheduler.js';
import { sseEvent, SSE_DONE } from '../src/server/sse.js';
import { renderChat, parseRequest } from '../src/server/validate.js';
import { ApiError } from '../src/server/errors.js';

const shared = (p: string) => fileURLToPath(new URL(`../../shared/${p}`, import.meta.url));

test('state cache: longest verified prefix, private copies, logits rule, LRU within the byte budget', async () => {
  const { model } = await loadModel(shared('fixtures/models/tiny-l2-d96-h32.pth'), { backend: 'js' });
  const V = model.config.vocabSize;
  const seq = Array.from({ length: 12 }, (_, i) => (i * 7 + 3) % V);
  const run = async (ids: number[]) => {
    const s = model.newState();
    const logits = await model.forward(ids, s);
    return { s, logits };
  };
  const per = stateBytes(model.newState());
  const cache = new StateCache(per * 3 + 10);

  const a = await run(seq.slice(0, 5));
  const b = await run(seq.slice(0, 9));
  assert.ok(cache.insert(seq.slice(0, 5), a.s));
  assert.ok(cache.insert(seq.slice(0, 9), b.s));
  assert.ok(!cache.insert(seq.slice(0, 9), b.s), 'already cached');
  assert.ok(cache.has(seq.slice(0, 9)) && !cache.has(seq.slice(0, 8)));

  // Longest prefix of a longer query: 9 tokens; the returned state is a copy, continuing it equals a full run.
  const hit = cache.lookup(seq, () => model.newState());
  assert.equal(hit.length, 9);
  assert.equal(hit.logits, undefined);
  const cont = await model.forward(seq.slice(9), hit.state);
  const full = await run(seq);
  assert.deepEqual(cont, full.logits);
  // Changing the copy did not change the cached state: a second lookup still continues correctly.
  const hit2 = cache.lookup(seq, () => model.newState());
  assert.deepEqual(await model.forward(seq.slice(9), hit2.state), full.logits);

  // A diverging query only matches the shared prefix; an exact query without stored logits falls back to the
  // shorter entry (the caller needs at least one token to run); with logits it is served whole.
  const other = [...seq.slice(0, 6), (seq[6]! + 1) % V, 1, 2];
  assert.equal(cache.lookup(other, () => model.newState()).length, 5);
  assert.equal(cache.lookup(seq.slice(0, 9), () => model.newState()).length, 5);
  assert.equal(cache.lookup([seq[1]!, seq[2]!], () => model.newState()).length, 0);
  assert.ok(!cache.insert(seq.slice(0, 9), b.s, b.logits)); // adds the logits to the existing entry
  const exact = cache.lookup(seq.slice(0, 9), () => model.newState());
  assert.equal(exact.length, 9);
  assert.deepEqual(exact.logits, b.logits);
  assert.notEqual(exact.logits, b.logits);

  // Budget: ~3 states. Entry 9 has logits now (bigger); adding two more evicts the least recently used (5).
  const c = await run(seq.slice(0, 3));
  const d = await run(seq.slice(0, 11));
  cache.insert(seq.slice(0, 3), c.s);
  cache.insert(seq.slice(0, 11), d.s);
  const st = cache.stats();
  assert.ok(st.bytes <= st.budgetBytes, `${st.bytes} > ${st.budgetBytes}`);
  assert.ok(st.evictions >= 1);
  assert.ok(!cache.has(seq.slice(0, 5)), 'the least recently used entry went first');
  assert.ok(cache.has(seq.slice(0, 11)));

  // Disabled cache: never stores, always a fresh state.
  const off = new StateCache(0);
  assert.ok(!off.insert(seq, full.s));
  assert.equal(off.lookup(seq, () => model.newState()).length, 0);
  cache.clear();
  assert.equal(cache.stats().entries, 0);
  assert.equal(cache.stats().bytes, 0);
});

test('slot queue: FIFO hand-over, queue full, leaving the queue, close', async () => {
  const q = new SlotQueue(2, 2);
  const r1 = await q.acquire();
  const r2 = await q.acquire();
  const order: string[] = [];
  const p3 = q.acquire().then((r) => { order.push('3'); return r; });
  const ac = new AbortController();
  const p4 = q.acquire(ac.signal);
  await assert.rejects(q.acquire(), QueueFullError);
  ac.abort();
  await assert.rejects(p4, AbortedError);
  const p5 = q.acquire().then((r) => { order.push('5'); return r; });
  assert.equal(q.queuedCount, 2);
  r1();
  r1(); // a second release is ignored
  const r3 = await p3;
  assert.deepEqual(order, ['3']);
  r2();
  const r5 = await p5;
  assert.deepEqual(order, ['3', '5']);
  assert.equal(q.activeCount, 2);
  r3(); r5();
  assert.equal(q.activeCount, 0);
  const p6 = q.acquire();
  const r6 = await p6;
  r6();
  const rA = await q.acquire(); const rB = await q.acquire();
  const p7 = q.acquire();
  q.close();
  await assert.rejects(p7, AbortedError);
  await assert.rejects(q.acquire(), AbortedError);
  rA(); rB();
});

test('fifo lock: one at a time, in arrival order, errors do not jam it', async () => {
  const lock = new FifoLock();
  const log: string[] = [];
  let inside = 0;
  const job = (name: string, ms: number, fail = false) => lock.run(async () => {
    inside++;
    assert.equal(inside, 1);
    log.push(`+${name}`);
    await new Promise((r) => setTimeout(r, ms));
    log.push(`-${name}`);
    inside--;
    if (fail) throw new Error(name);
    return name;
  });
  const results = await Promise.allSettled([job('a', 20), job('b', 1, true), job('c', 5)]);
  assert.deepEqual(log, ['+a', '-a', '+b', '-b', '+c', '-c']);
  assert.equal(results[1]!.status, 'rejected');
  assert.equal(await lock.run(() => 7), 7);
  assert.equal(lock.depth, 0);
});

test('SSE framing and the G1 chat template', () => {
  assert.equal(sseEvent({ a: 'x\n\ny' }), 'data: {"a":"x\\n\\ny"}\n\n');
  assert.equal(SSE_DONE, 'data: [DONE]\n\n');
  assert.equal(
    renderChat([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi\r\n\r\nthere  ' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: [{ type: 'text', text: 'Bye' }] },
    ]),
    'System: Be brief.\n\nUser: Hi\nthere\n\nAssistant: Hello!\n\nUser: Bye\n\nAssistant:',
  );
  const r = parseRequest('chat', { messages: [{ role: 'user', content: 'x' }], max_tokens: 10_000, stop: 'END' }, { maxTokensCap: 100, vocabSize: 65536 });
  assert.equal(r.maxTokens, 100);
  assert.deepEqual(r.stop, ['END']);
  assert.throws(() => parseRequest('completion', { prompt: 'x', top_p: 2 }, { maxTokensCap: 100, vocabSize: 65536 }), (e: unknown) => e instanceof ApiError && e.status === 400 && e.param === 'top_p');
});
