// The chat page of rwkv7-ts. Two engines: "in this browser" (the library's model worker, ./lib/rwkv7.js, with the
// served checkpoint, a local file or a URL) and "on the server" (the OpenAI-style /v1/chat/completions stream of
// `rwkv7 serve`). Plain ES module, no build step. On a static host (no /health, no /model.json) only the
// in-browser engine is offered.

const $ = (id) => document.getElementById(id);
const ui = {
  app: document.querySelector('.app'), messages: $('messages'), empty: $('empty'), emptyText: $('empty-text'),
  input: $('input'), send: $('send'), form: $('composer'), newChat: $('new-chat'), status: $('status'),
  modelName: $('model-name'), toggle: $('toggle-settings'), settings: $('settings'),
  engine: $('engine'), engineNote: $('engine-note'), browserFields: $('browser-fields'),
  source: $('source'), fileField: $('file-field'), file: $('file'), urlField: $('url-field'), url: $('url'),
  backend: $('backend'), load: $('load'), sourceNote: $('source-note'),
  temperature: $('temperature'), temperatureOut: $('temperature-out'), topP: $('top-p'), topPOut: $('top-p-out'),
  maxTokens: $('max-tokens'), system: $('system'),
  loadCard: $('load-card'), loadLabel: $('load-label'), loadBytes: $('load-bytes'), loadBar: $('load-progress'),
};

const app = {
  server: null, // /health of the rwkv7 server behind this page, when there is one
  served: null, // /model.json: the checkpoint the server offers to browsers
  serverDtype: '',
  local: { model: null, key: '', loading: null, loadingKey: '' },
  convo: null, // { system, turns: [{ user, assistant }], chat: RemoteChat | null }
  busy: null, // the AbortController of the answer in progress
  last: null, // the last answer's numbers, for the status line
};

let lib;
const library = () => (lib ??= import('./lib/rwkv7.js'));

// ---------- small helpers ----------

const mb = (n) => `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} MB`;
const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '–');
const engineLabel = (e) => (e === 'browser' ? 'In this browser' : 'On the server');
const messageOf = (e) => (e && typeof e === 'object' && 'message' in e ? String(e.message) : String(e));

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 96;
}
function scrollDown() { ui.messages.scrollTop = ui.messages.scrollHeight; }

async function probe(url) {
  try {
    const r = await fetch(url, { headers: { accept: 'application/json' }, cache: 'no-store' });
    if (!r.ok || !(r.headers.get('content-type') ?? '').includes('json')) return null;
    return await r.json();
  } catch {
    return null;
  }
}

// ---------- settings ----------

const SAVED = ['temperature', 'topP', 'maxTokens', 'system', 'backend', 'url'];
function restoreSettings() {
  try {
    const s = JSON.parse(localStorage.getItem('rwkv7-chat') ?? '{}');
    for (const k of SAVED) if (typeof s[k] === 'string') ui[k].value = s[k];
  } catch { /* private mode: defaults */ }
}
function saveSettings() {
  try { localStorage.setItem('rwkv7-chat', JSON.stringify(Object.fromEntries(SAVED.map((k) => [k, ui[k].value])))); } catch { /* ignore */ }
}
function sampling() {
  const maxTokens = Math.max(1, Math.min(4096, Math.round(Number(ui.maxTokens.value) || 256)));
  return { maxTokens, temperature: Number(ui.temperature.value), topP: Number(ui.topP.value) };
}
function showSliders() {
  ui.temperatureOut.value = Number(ui.temperature.value).toFixed(2);
  ui.topPOut.value = Number(ui.topP.value).toFixed(2);
}

function syncSourceFields() {
  const kind = ui.source.value;
  ui.fileField.hidden = kind !== 'file';
  ui.urlField.hidden = kind !== 'url';
  ui.browserFields.disabled = !!app.local.loading || !!app.busy;
  const m = app.local.model;
  const current = !!m && app.local.key === modelKey();
  ui.load.disabled = current;
  ui.load.textContent = app.local.loading ? 'Loading…' : current ? '✓ Model loaded' : m ? 'Load this model' : 'Load model';
  if (m && current) {
    const notices = m.info.notices.length ? ` ${m.info.notices.join(' ')}` : '';
    ui.sourceNote.textContent = `Loaded in ${fmt(m.info.loadMs / 1000)} s${m.info.cached ? ' from the browser cache' : ''}.${notices}`;
  } else if (kind === 'served' && app.served?.url) {
    ui.sourceNote.textContent = `${app.served.file}, ${mb(app.served.size)}: downloaded once, then kept in this browser.`;
  } else if (kind === 'served') {
    ui.sourceNote.textContent = app.served ? `The server does not offer its model: ${app.served.why}.` : 'There is no rwkv7 server here to take the model from: choose a file or a URL.';
  } else {
    ui.sourceNote.textContent = 'A .pth or .safetensors RWKV-7 checkpoint. It loads with your first message.';
  }
}

function modelKey() {
  const kind = ui.source.value;
  const f = ui.file.files?.[0];
  const what = kind === 'served' ? app.served?.url : kind === 'url' ? ui.url.value.trim() : f ? `${f.name}|${f.size}|${f.lastModified}` : '';
  return what ? JSON.stringify([kind, what, ui.backend.value]) : '';
}

// ---------- status line ----------

function renderStatus() {
  const engine = ui.engine.value;
  const parts = [[engineLabel(engine), 'engine']];
  const last = app.last?.engine === engine ? app.last : null;
  if (engine === 'browser') {
    const m = app.local.model;
    if (m) parts.push([m.info.backend, 'backend'], [m.info.dtype, 'dtype'], [`${m.info.threads} thread${m.info.threads === 1 ? '' : 's'}`, 'threads']);
    else parts.push([app.local.loading ? 'loading the model…' : 'the model loads with your first message', '']);
  } else if (app.server) {
    parts.push([app.server.backend, 'backend']);
    if (app.serverDtype) parts.push([app.serverDtype, 'dtype']);
    if (app.server.threads) parts.push([`${app.server.threads} threads`, 'threads']);
  }
  if (last) parts.push([`${fmt(last.decodeTokS)} tok/s`, 'speed']);
  if (last?.contextTokens) parts.push([`${last.contextTokens} tokens in context`, 'context']);
  ui.status.replaceChildren(...parts.map(([text, kind]) => {
    const s = document.createElement('span');
    s.textContent = text;
    if (kind) s.dataset.kind = kind;
    return s;
  }));
  ui.status.dataset.engine = engine;
  ui.status.dataset.contextTokens = String(last?.contextTokens ?? 0);
}

// ---------- messages ----------

function addMessage(role, text = '') {
  ui.empty.hidden = true;
  const row = document.createElement('div');
  row.className = `msg ${role}`;
  const bubble = document.createElement('div');
  bubble.className = 'bubble';
  bubble.dataset.testid = role === 'assistant' ? 'assistant-message' : role === 'user' ? 'user-message' : 'note';
  bubble.textContent = text;
  row.append(bubble);
  ui.messages.append(row);
  scrollDown();
  return bubble;
}

function addMeta(bubble, text, kind = '') {
  const meta = document.createElement('div');
  meta.className = `meta ${kind}`;
  meta.textContent = text;
  bubble.parentElement.append(meta);
}

function addError(text, where) {
  const box = document.createElement('div');
  box.className = 'error';
  box.setAttribute('role', 'alert');
  box.dataset.testid = 'error';
  box.textContent = text;
  (where ?? ui.messages).append(box);
  scrollDown();
}

/** A fresh conversation; `note` marks the change in the message list when there was one already. */
function newConversation(note) {
  const old = app.convo;
  old?.chat?.free().catch(() => {});
  app.convo = { system: ui.system.value.trim(), turns: [], chat: null };
  if (note && old?.turns.length) {
    const d = document.createElement('div');
    d.className = 'divider';
    d.textContent = note;
    ui.messages.append(d);
    scrollDown();
  }
}

function clearChat() {
  app.busy?.abort();
  ui.messages.replaceChildren(ui.empty);
  ui.empty.hidden = false;
  app.last = null;
  newConversation();
  renderStatus();
  ui.input.focus();
}

// ---------- the in-browser engine ----------

function showLoad(label, done = 0, total = 0) {
  ui.loadCard.hidden = false;
  ui.loadLabel.textContent = label;
  const downloading = total > 0 && done < total;
  ui.loadCard.classList.toggle('indeterminate', !downloading);
  ui.loadBar.style.width = downloading ? `${(100 * done / total).toFixed(1)}%` : '';
  ui.loadBytes.textContent = downloading ? `${mb(done)} of ${mb(total)}` : total ? mb(total) : '';
  ui.loadBar.dataset.done = String(done);
  ui.loadBar.dataset.total = String(total);
}

function sourceOf() {
  const kind = ui.source.value;
  if (kind === 'served') {
    if (!app.served?.url) throw new Error('this page has no served model: choose a checkpoint file or a URL in the settings.');
    return { source: app.served.url, name: app.served.file };
  }
  if (kind === 'file') {
    const f = ui.file.files?.[0];
    if (!f) throw new Error('choose a checkpoint file in the settings first.');
    return { source: f, name: f.name };
  }
  const url = ui.url.value.trim();
  if (!url) throw new Error('enter the URL of a checkpoint in the settings first.');
  return { source: url, name: url.split('?')[0].split('/').pop() || url };
}

async function ensureModel() {
  const L = app.local;
  const key = modelKey();
  if (L.model && L.key === key) return L.model;
  if (L.loading && L.loadingKey === key) return L.loading;
  if (L.loading) await L.loading.catch(() => {});
  const { source, name } = sourceOf();
  L.loadingKey = key;
  L.loading = (async () => {
    if (L.model) {
      const old = L.model;
      L.model = null;
      newConversation('The model changed: a new conversation starts here.');
      await old.dispose();
    }
    showLoad(`Loading ${name}…`);
    const { loadModel } = await library();
    const { model } = await loadModel(source, {
      backend: ui.backend.value,
      onProgress: (done, total) => showLoad(done < total ? `Downloading ${name}` : `Preparing ${name}…`, done, total),
    });
    L.model = model;
    L.key = key;
    if (!app.server) ui.modelName.textContent = name;
    return model;
  })();
  syncSourceFields();
  renderStatus();
  try {
    return await L.loading;
  } catch (e) {
    throw new Error(`Could not load the model: ${messageOf(e)}`);
  } finally {
    L.loading = null;
    ui.loadCard.hidden = true;
    syncSourceFields();
    renderStatus();
  }
}

async function browserTurn(c, model, text, onText, signal) {
  c.chat ??= await model.chat(c.system || undefined);
  if (signal.aborted) return { finishReason: 'abort', completionTokens: 0, decodeTokS: NaN, contextTokens: app.last?.contextTokens };
  const s = sampling();
  return c.chat.turn(text, { maxTokens: s.maxTokens, sampling: { temperature: s.temperature, topP: s.topP }, onText, signal });
}

// ---------- the server engine ----------

async function serverTurn(c, text, onText, signal) {
  const messages = c.system ? [{ role: 'system', content: c.system }] : [];
  for (const t of c.turns) messages.push({ role: 'user', content: t.user }, { role: 'assistant', content: t.assistant });
  messages.push({ role: 'user', content: text });
  const s = sampling();
  const body = { messages, stream: true, stream_options: { include_usage: true }, max_tokens: s.maxTokens, temperature: s.temperature, top_p: s.topP };
  let res;
  try {
    res = await fetch('./v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
  } catch (e) {
    if (signal.aborted) return { finishReason: 'abort', completionTokens: 0, decodeTokS: NaN };
    throw new Error(`Could not reach the server (${messageOf(e)}).`);
  }
  if (!res.ok) {
    const j = await res.json().catch(() => null);
    throw new Error(`The server refused the request (HTTP ${res.status}): ${j?.error?.message ?? res.statusText}`);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let first = 0;
  let pieces = 0;
  let usage = null;
  let finish = 'stop';
  const onEvent = (data) => {
    if (data === '[DONE]') return;
    const j = JSON.parse(data);
    if (j.error) throw new Error(`The server failed while answering: ${j.error.message}`);
    if (j.system_fingerprint) app.serverDtype = j.system_fingerprint.split('-').pop();
    if (j.usage) usage = j.usage;
    const ch = j.choices?.[0];
    if (ch?.delta?.content) {
      first ||= performance.now();
      pieces++;
      onText(ch.delta.content);
    }
    if (ch?.finish_reason) finish = ch.finish_reason;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r/g, '');
      for (let i; (i = buf.indexOf('\n\n')) >= 0; buf = buf.slice(i + 2)) {
        for (const line of buf.slice(0, i).split('\n')) if (line.startsWith('data:')) onEvent(line.slice(5).trim());
      }
    }
  } catch (e) {
    if (!signal.aborted) throw e;
    finish = 'abort';
  }
  const tokens = usage?.completion_tokens ?? pieces;
  const secs = (performance.now() - first) / 1000;
  return { finishReason: finish, completionTokens: tokens, decodeTokS: first && tokens > 1 ? (tokens - 1) / secs : NaN };
}

// ---------- one turn ----------

function setBusy(ac) {
  app.busy = ac;
  ui.app.classList.toggle('busy', !!ac);
  ui.send.setAttribute('aria-label', ac ? 'Stop' : 'Send');
  ui.send.querySelector('span').textContent = ac ? 'Stop' : 'Send';
  ui.send.dataset.state = ac ? 'stop' : 'send';
  syncSourceFields();
}

async function send() {
  if (app.busy) { app.busy.abort(); return; }
  const text = ui.input.value.trim();
  if (!text) return;
  ui.input.value = '';
  autosize();
  const engine = ui.engine.value;
  addMessage('user', text);
  const bubble = addMessage('assistant');
  bubble.classList.add('streaming');
  const ac = new AbortController();
  setBusy(ac);
  let answer = '';
  const onText = (piece) => {
    if (ac.signal.aborted && engine === 'server') return;
    if (!answer) piece = piece.trimStart();
    if (!piece) return;
    const stick = nearBottom();
    answer += piece;
    bubble.append(piece);
    if (stick) scrollDown();
  };
  try {
    // The conversation this turn belongs to (New chat or a new model during the turn starts another one).
    const model = engine === 'browser' ? await ensureModel() : null;
    const convo = app.convo;
    const r = model ? await browserTurn(convo, model, text, onText, ac.signal) : await serverTurn(convo, text, onText, ac.signal);
    if (model && r.text !== undefined) answer = r.text.trim() || answer;
    convo.turns.push({ user: text, assistant: answer });
    app.last = { ...r, engine };
    const why = r.finishReason === 'abort' ? 'stopped' : r.finishReason === 'length' ? 'max tokens reached' : '';
    addMeta(bubble, [`${r.completionTokens} tokens`, Number.isFinite(r.decodeTokS) ? `${fmt(r.decodeTokS)} tok/s` : '', why].filter(Boolean).join(' · '));
    if (!answer) bubble.classList.add('blank');
  } catch (e) {
    bubble.parentElement.remove();
    addError(messageOf(e));
  } finally {
    bubble.classList.remove('streaming');
    setBusy(null);
    renderStatus();
    ui.input.focus();
  }
}

// ---------- wiring ----------

function autosize() {
  ui.input.style.height = 'auto';
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
}

const wide = matchMedia('(min-width: 960px)');
ui.toggle.addEventListener('click', () => {
  const cls = wide.matches ? 'settings-hidden' : 'settings-open';
  ui.app.classList.toggle(cls);
  ui.toggle.setAttribute('aria-expanded', String(wide.matches ? !ui.app.classList.contains(cls) : ui.app.classList.contains(cls)));
});

ui.form.addEventListener('submit', (e) => { e.preventDefault(); send(); });
ui.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    if (!app.busy) send();
  }
});
ui.input.addEventListener('input', autosize);
ui.newChat.addEventListener('click', clearChat);
ui.engine.addEventListener('change', () => {
  app.busy?.abort();
  newConversation(`Switched to "${engineLabel(ui.engine.value).toLowerCase()}": a new conversation starts here.`);
  ui.browserFields.hidden = ui.engine.value !== 'browser';
  renderStatus();
});
for (const x of [ui.source, ui.backend, ui.file]) x.addEventListener('change', () => { syncSourceFields(); saveSettings(); });
ui.url.addEventListener('input', () => { syncSourceFields(); saveSettings(); });
ui.load.addEventListener('click', () => ensureModel().catch((e) => addError(messageOf(e))));
for (const x of [ui.temperature, ui.topP]) x.addEventListener('input', () => { showSliders(); saveSettings(); });
for (const x of [ui.maxTokens, ui.system]) x.addEventListener('change', saveSettings);

async function start() {
  restoreSettings();
  showSliders();
  newConversation();
  const [health, served] = await Promise.all([probe('./health'), probe('./model.json')]);
  app.server = health && typeof health.backend === 'string' ? health : null;
  app.served = served && 'url' in served ? served : null;
  if (app.server) {
    ui.modelName.textContent = app.server.model;
    app.serverDtype = app.server.weight_dtype ?? app.server.dtype ?? '';
  } else {
    ui.engine.value = 'browser';
    ui.engine.querySelector('option[value=server]').disabled = true;
    ui.engineNote.textContent = 'This page is served as static files, with no rwkv7 server behind it: the model runs here, in your browser. Pick a checkpoint file or a URL below.';
    ui.emptyText.textContent = 'Everything runs in this browser: pick an RWKV-7 checkpoint (a file or a URL) in the settings, then write a message.';
  }
  if (!app.served?.url) {
    ui.source.querySelector('option[value=served]').disabled = true;
    if (ui.source.value === 'served') ui.source.value = ui.url.value ? 'url' : 'file';
  } else {
    ui.source.querySelector('option[value=served]').textContent = `The server's model (${mb(app.served.size)})`;
  }
  ui.browserFields.hidden = ui.engine.value !== 'browser';
  ui.toggle.setAttribute('aria-expanded', String(wide.matches));
  ui.app.classList.add('ready');
  syncSourceFields();
  renderStatus();
  ui.input.focus();
}

start();
