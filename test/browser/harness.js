// Browser side of the browser tests (plain JS, served as-is): functions the tests call with page.evaluate.
// Each imports the bundle the way a page would.
const lib = () => import('/lib/rwkv7.js');

const notices = [];

window.rwkvTest = {
  notices,
  async env() {
    const a = await navigator.gpu?.requestAdapter();
    return { isolated: crossOriginIsolated, gpu: !!a, cores: navigator.hardwareConcurrency };
  },
  async verify(model, golden, opts, modes) {
    const { loadModel, verifyGolden } = await lib();
    const { model: m, config } = await loadModel(model, { ...opts, log: (t) => notices.push(t) });
    try {
      const report = await verifyGolden(m, golden, modes);
      return { report, info: m.info, config };
    } finally {
      await m.dispose();
    }
  },
  async tokenizer(casesUrl) {
    const { WorldTokenizer } = await lib();
    const tok = await WorldTokenizer.load();
    const text = await (await fetch(casesUrl)).text();
    let n = 0;
    const bad = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      const c = JSON.parse(line);
      const ids = c.text !== undefined ? tok.encode(c.text)
        : tok.encodeBytes(Uint8Array.from(atob(c.bytes_b64), (ch) => ch.charCodeAt(0)));
      n++;
      if (ids.length !== c.ids.length || ids.some((v, i) => v !== c.ids[i])) bad.push(n);
    }
    return { n, bad: bad.slice(0, 10), nBad: bad.length };
  },
  async greedy(model, prompt, maxTokens, opts) {
    const { loadModel } = await lib();
    const { model: m } = await loadModel(model, opts);
    try {
      const r = await m.generate(prompt, { maxTokens, sampling: { temperature: 0, topP: 1, presencePenalty: 0, frequencyPenalty: 0 } });
      return r;
    } finally {
      await m.dispose();
    }
  },
  async loadError(model, opts) {
    const { loadModel } = await lib();
    try {
      const { model: m } = await loadModel(model, opts);
      await m.dispose();
      return null;
    } catch (e) {
      return { name: e.name, message: e.message };
    }
  },
  async cachedLoad(model, opts) {
    const { loadModel } = await lib();
    const progress = [];
    const { model: m } = await loadModel(model, { ...opts, onProgress: (d, t) => progress.push([d, t]) });
    const info = m.info;
    await m.dispose();
    return { info, progress: progress.length, last: progress.at(-1) };
  },
};
