/**
 * `npm run fuzz`: seeded, structure-aware fuzzing of every loader (issue 17).
 *
 *   npm run fuzz -- [--cases N] [--kind K[,K...]] [--seed S] [--jobs J] [--timeout-ms T] [--rss-mb M]
 *                   [--save DIR | --no-save] [--replay [DIR]] [--json] [--show] [--quiet] [--max-seconds S]
 *
 * N cases (split evenly over the kinds: pth, safetensors, folder, gguf, vocab, state, chat) are generated from the
 * seed and run by J worker processes (fuzz/worker.ts), each handling many cases and restarted when it dies. Each
 * case is classified: accepted, clean (a UserError/FormatError), unexpected (any other exception), crash (the
 * worker died), hang (no answer within T ms: the worker is killed) or spike (the worker's RSS went over M MiB:
 * killed, or seen in the case's peak). Every non-clean case is saved, one per kind and top stack frame (or mutation,
 * for hangs/spikes/crashes), under fuzz/regressions/<kind>/ when its files are small. `--replay` runs the saved cases
 * instead. Prints a table of counts per kind and outcome with the largest peak RSS of a case; `--json` prints the
 * summary as JSON too; `--show` prints every case. `--max-seconds` (or Ctrl-C) stops starting new cases and reports
 * those done (the kinds are interleaved, so a cut run is spread evenly over them). Exit status 1 if any case was not accepted/clean.
 */
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hash, KINDS, type Kind } from './lib.js';
import type { Outcome, Reply, Request } from './worker.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUTCOMES: readonly Outcome[] = ['accepted', 'clean', 'unexpected', 'crash', 'hang', 'spike'];
/** Regression inputs larger than this are not saved (the folder stays small). */
const MAX_SAVED_BYTES = 96 * 1024;

interface Options {
  cases: number; kinds: Kind[]; seed: number; jobs: number; timeoutMs: number; rssMb: number;
  save?: string; replay?: string; json: boolean; quiet: boolean; show: boolean; maxSeconds?: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { cases: 7000, kinds: [...KINDS], seed: 1, jobs: 2, timeoutMs: 20_000, rssMb: 1024, save: path.join(HERE, 'regressions'), json: false, quiet: false, show: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${a} needs a value`); return v; };
    const num = (): number => { const v = Number(val()); if (!Number.isFinite(v) || v < 0) throw new Error(`${a}: not a number`); return v; };
    switch (a) {
      case '--cases': o.cases = Math.floor(num()); break;
      case '--kind': o.kinds = val().split(',').map((k) => { if (!(KINDS as readonly string[]).includes(k)) throw new Error(`unknown kind ${k} (${KINDS.join(', ')})`); return k as Kind; }); break;
      case '--seed': o.seed = Math.floor(num()); break;
      case '--jobs': o.jobs = Math.max(1, Math.floor(num())); break;
      case '--timeout-ms': o.timeoutMs = num(); break;
      case '--rss-mb': o.rssMb = num(); break;
      case '--save': o.save = path.resolve(val()); break;
      case '--no-save': o.save = undefined; break;
      case '--replay': o.replay = argv[i + 1] && !argv[i + 1]!.startsWith('--') ? path.resolve(val()) : path.join(HERE, 'regressions'); break;
      case '--json': o.json = true; break;
      case '--quiet': o.quiet = true; break;
      case '--show': o.show = true; break;
      case '--max-seconds': o.maxSeconds = num(); break;
      case '--help': case '-h': console.log(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]); process.exit(0);
      // falls through
      default: throw new Error(`unknown option ${a}`);
    }
  }
  return o;
}

/** One unit of work: a generated case or a saved one. */
type Job = { kind: Kind; index: number } | { kind: Kind; replay: string };

interface Result { job: Job; outcome: Outcome; message?: string; top?: string; rssKb: number; ms: number; mutation: string[]; dir?: string }

function rssKbOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}

class Worker {
  child!: ChildProcess;
  ready!: Promise<void>;
  busy?: { job: Job; id: number; resolve: (r: Result) => void; timer?: NodeJS.Timeout; started?: Extract<Reply, { phase: 'start' }>; peakKb: number };
  private nextId = 0;
  private stderrTail = '';
  readonly scratch: string;

  constructor(readonly n: number, private readonly opts: Options, root: string) {
    this.scratch = path.join(root, `w${n}`);
    this.start();
  }

  start(): void {
    fs.rmSync(this.scratch, { recursive: true, force: true });
    fs.mkdirSync(this.scratch, { recursive: true });
    this.stderrTail = '';
    // A V8 heap limit a little over the RSS cap: a runaway heap ends as a crash, not as a machine out of memory.
    this.child = fork(path.join(HERE, 'worker.ts'), [], {
      execArgv: ['--import', 'tsx', `--max-old-space-size=${Math.max(256, Math.round(this.opts.rssMb * 1.5))}`, '--stack-size=984'],
      env: { ...process.env, FUZZ_SCRATCH: this.scratch },
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.child.stderr!.on('data', (d: Buffer) => { this.stderrTail = (this.stderrTail + d.toString()).slice(-2000); });
    this.ready = new Promise((resolve) => {
      const onMsg = (m: Reply) => { if (m.id === -1) { this.child.off('message', onMsg); resolve(); } };
      this.child.on('message', onMsg);
    });
    this.child.on('message', (m: Reply) => this.onMessage(m));
    this.child.on('exit', (code, signal) => this.onExit(code, signal));
  }

  private onMessage(m: Reply): void {
    const b = this.busy;
    if (!b || m.id !== b.id) return;
    if (m.phase === 'start') { b.started = m; return; }
    clearTimeout(b.timer);
    this.busy = undefined;
    const peak = Math.max(m.rssKb, b.peakKb);
    const spike = peak > this.opts.rssMb * 1024;
    b.resolve({ job: b.job, outcome: spike && m.outcome !== 'unexpected' ? 'spike' : m.outcome, message: m.message, top: m.top, rssKb: peak, ms: m.ms, mutation: b.started?.mutation ?? [], dir: b.started?.dir });
  }

  /** The worker died or was killed: the case in progress is a crash (or the hang/spike that got it killed). */
  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    const b = this.busy;
    this.busy = undefined;
    if (b) {
      clearTimeout(b.timer);
      const why = (this.child as ChildProcess & { fuzzKill?: Outcome }).fuzzKill;
      const outcome: Outcome = why ?? 'crash';
      const tail = this.stderrTail.trim().split('\n').slice(-3).join(' | ');
      // Keep the case's files out of the way of the restarted worker, for saving.
      let dir: string | undefined;
      if (b.started) {
        dir = `${this.scratch}-dead-${b.id}`;
        try { fs.renameSync(b.started.dir, dir); } catch { dir = undefined; }
      }
      b.resolve({ job: b.job, outcome, message: why ? `${why} (killed)` : `worker exited (code ${code}, signal ${signal}): ${tail}`, rssKb: b.peakKb, ms: 0, mutation: b.started?.mutation ?? [], dir });
    }
    this.start();
  }

  kill(why: Outcome): void {
    (this.child as ChildProcess & { fuzzKill?: Outcome }).fuzzKill = why;
    this.child.kill('SIGKILL');
  }

  async run(job: Job, seed: number): Promise<Result> {
    await this.ready;
    return new Promise((resolve) => {
      const id = this.nextId++;
      this.busy = { job, id, resolve, peakKb: 0 };
      this.busy.timer = setTimeout(() => this.kill('hang'), this.opts.timeoutMs);
      const req: Request = 'replay' in job ? { id, replay: job.replay } : { id, kind: job.kind, seed, index: job.index };
      this.child.send(req);
    });
  }

  /** Called by the pool's sampler: kills a worker whose RSS is over the cap. */
  sample(): void {
    if (!this.busy || !this.child.pid) return;
    const kb = rssKbOf(this.child.pid);
    this.busy.peakKb = Math.max(this.busy.peakKb, kb);
    if (kb > this.opts.rssMb * 1024) this.kill('spike');
  }

  stop(): void { this.child.removeAllListeners('exit'); this.child.kill('SIGKILL'); fs.rmSync(this.scratch, { recursive: true, force: true }); }
}

/** Copies a case folder (case.json + the regular files, cut to their written length) to `dest`. */
function saveCase(src: string, dest: string, r: Result): boolean {
  const meta = JSON.parse(fs.readFileSync(path.join(src, 'case.json'), 'utf8')) as { files: Array<{ name: string; type: string; length?: number }> };
  let total = 0;
  for (const f of meta.files) if (f.type === 'file') total += f.length ?? 0;
  if (total > MAX_SAVED_BYTES) return false;
  fs.rmSync(dest, { recursive: true, force: true });
  fs.mkdirSync(path.join(dest, 'files'), { recursive: true });
  for (const f of meta.files) {
    if (f.type !== 'file') continue;
    const fd = fs.openSync(path.join(src, f.name), 'r');
    const buf = Buffer.alloc(f.length ?? 0);
    fs.readSync(fd, buf, 0, buf.length, 0);
    fs.closeSync(fd);
    fs.writeFileSync(path.join(dest, 'files', f.name), buf);
  }
  const found = { outcome: r.outcome, top: r.top, message: r.message };
  fs.writeFileSync(path.join(dest, 'case.json'), JSON.stringify({ ...JSON.parse(fs.readFileSync(path.join(src, 'case.json'), 'utf8')), found }, null, 1));
  return true;
}

export interface Summary {
  seed: number; cases: number; seconds: number;
  counts: Record<string, Record<Outcome, number>>;
  peakRssMb: Record<string, number>;
  maxMs: Record<string, number>;
  failures: Array<{ kind: Kind; outcome: Outcome; top?: string; message?: string; mutation: string[]; case?: string; saved?: string }>;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const jobs: Job[] = [];
  if (o.replay) {
    for (const kind of KINDS) {
      const d = path.join(o.replay, kind);
      if (!fs.existsSync(d)) continue;
      for (const c of fs.readdirSync(d).sort()) if (fs.existsSync(path.join(d, c, 'case.json'))) jobs.push({ kind, replay: path.join(d, c) });
    }
    o.save = undefined;
  } else {
    const per = Math.ceil(o.cases / o.kinds.length);
    // Interleave the kinds so every kind gets its share early (a run cut short is still spread over kinds).
    for (let i = 0; i < per; i++) for (const kind of o.kinds) jobs.push({ kind, index: i });
  }
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'rwkv7-fuzz-'));
  const workers = Array.from({ length: Math.min(o.jobs, Math.max(1, jobs.length)) }, (_, n) => new Worker(n, o, root));
  const sampler = setInterval(() => { for (const w of workers) w.sample(); }, 25);
  const counts: Summary['counts'] = {};
  const peak: Record<string, number> = {};
  const maxMs: Record<string, number> = {};
  const failures: Summary['failures'] = [];
  const seen = new Set<string>();
  const t0 = Date.now();
  let done = 0;
  let nextJob = 0;
  const onResult = (r: Result): void => {
    const k = r.job.kind;
    counts[k] ??= Object.fromEntries(OUTCOMES.map((x) => [x, 0])) as Record<Outcome, number>;
    counts[k]![r.outcome]++;
    peak[k] = Math.max(peak[k] ?? 0, r.rssKb / 1024);
    maxMs[k] = Math.max(maxMs[k] ?? 0, r.ms);
    done++;
    if (o.show) console.error(`${k} ${'index' in r.job ? r.job.index : r.job.replay} ${r.outcome} ${r.ms.toFixed(0)}ms [${r.mutation.join('; ')}] ${r.message ?? ''}`.slice(0, 400));
    if (r.outcome === 'accepted' || r.outcome === 'clean') return;
    const key = `${k}|${r.outcome}|${r.top ?? r.mutation.slice(1).map((m) => m.replace(/[\d.]+/g, 'N')).join(';')}`;
    const f: Summary['failures'][number] = { kind: k, outcome: r.outcome, top: r.top, message: r.message, mutation: r.mutation, case: 'replay' in r.job ? r.job.replay : `--seed ${o.seed} --kind ${k} index ${r.job.index}` };
    if (!seen.has(key)) {
      seen.add(key);
      if (o.save && r.dir && fs.existsSync(path.join(r.dir, 'case.json'))) {
        const dest = path.join(o.save, k, `${r.outcome}-${hash(key).toString(16).padStart(8, '0')}`);
        if (saveCase(r.dir, dest, r)) f.saved = path.relative(process.cwd(), dest);
      }
      failures.push(f);
      if (!o.quiet) console.error(`[${r.outcome}] ${k}: ${r.top ?? ''} ${r.message ?? ''}\n    mutation: ${r.mutation.join('; ')}${f.saved ? `\n    saved: ${f.saved}` : ''}`);
    }
  };
  let lastReport = Date.now();
  let stopping = false;
  process.once('SIGINT', () => { stopping = true; console.error('(stopping: finishing the cases in progress)'); });
  const more = (): boolean => !stopping && nextJob < jobs.length && !(o.maxSeconds !== undefined && Date.now() - t0 > o.maxSeconds * 1000);
  await Promise.all(workers.map(async (w) => {
    while (more()) {
      const job = jobs[nextJob++]!;
      onResult(await w.run(job, o.seed));
      if (!o.quiet && Date.now() - lastReport > 15_000) {
        lastReport = Date.now();
        console.error(`... ${done}/${jobs.length} cases, ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      }
    }
  }));
  clearInterval(sampler);
  for (const w of workers) w.stop();
  fs.rmSync(root, { recursive: true, force: true });
  const seconds = (Date.now() - t0) / 1000;

  // The table.
  const kinds = Object.keys(counts);
  const head = ['kind', ...OUTCOMES, 'peak RSS/case', 'slowest'];
  const rows = kinds.map((k) => [k, ...OUTCOMES.map((x) => String(counts[k]![x])), `${peak[k]!.toFixed(0)} MB`, `${maxMs[k]!.toFixed(0)} ms`]);
  const total = ['total', ...OUTCOMES.map((x) => String(kinds.reduce((a, k) => a + counts[k]![x], 0))), `${Math.max(0, ...kinds.map((k) => peak[k]!)).toFixed(0)} MB`, `${Math.max(0, ...kinds.map((k) => maxMs[k]!)).toFixed(0)} ms`];
  const all = [head, ...rows, total];
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(`${o.replay ? `replayed ${jobs.length} saved cases` : `${done} cases${done < jobs.length ? ` (of ${jobs.length}: stopped early)` : ''}, seed ${o.seed}`}, ${o.jobs} job(s), ${seconds.toFixed(1)} s`);
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  console.log(line(total));
  const summary: Summary = { seed: o.seed, cases: done, seconds, counts, peakRssMb: peak, maxMs, failures };
  if (o.json) console.log(`JSON ${JSON.stringify(summary)}`);
  process.exitCode = failures.length ? 1 : 0;
}

main().catch((e) => { console.error(e instanceof Error ? e.message : e); process.exitCode = 2; });
