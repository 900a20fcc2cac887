// The sandboxed frame the Python workers live in. PyodideExecutor adds a hidden
// `<iframe sandbox="allow-scripts" srcdoc=...>` (no allow-same-origin: the frame's origin is
// opaque, so the page's IndexedDB, Cache API, OPFS and cookies belong to another origin) whose
// Content-Security-Policy allows no connections of any kind (`default-src 'none'`,
// `connect-src 'none'`): only the frame's own inline script (by nonce), the workers' data: and
// blob: scripts and WebAssembly may run. The workers inherit the policy, so the browser refuses
// fetch, XHR, WebSocket, EventSource, import() of a URL, fonts, ... whatever names Python reaches.
// Each worker comes from a data: URL, so each interpreter has an opaque origin of its own too.
//
// The frame's script (`pythonFrameMain`, sent as source text, so self-contained) keeps a few
// started interpreters in reserve, gives each solution path its own, forwards runs, and passes
// back only the answer to the run it sent to that path's worker, with the output capped again.
import type { ExecOutcome } from '../contract/types.ts';
import type { FromFrame, FromWorker, InterpreterInfo, PythonFiles, ToFrame, ToWorker } from './worker-protocol.ts';
import { pythonWorkerMain } from './pyodide-worker.ts';

/** The most characters (Unicode code points) of a run's stdout or error message that reach the
 *  page. Twice the cap on what reaches the model (the crate's OUTPUT_LIMIT_CHARS, 8,192, applied
 *  to the official text, natively and here alike), so that cap decides what the model reads;
 *  this one bounds what a run can hand the page. */
export const OUTPUT_LIMIT_CHARS = 16384;
/** Appended where output was cut at OUTPUT_LIMIT_CHARS. */
export const OUTPUT_TRUNCATED_MARKER = '\n[output truncated]';

/** The frame's Content-Security-Policy; `nonce` admits its one inline script. */
export function frameCSP(nonce: string): string {
  return [
    "default-src 'none'",
    `script-src 'nonce-${nonce}' data: blob: 'wasm-unsafe-eval'`,
    'worker-src data:',
    "connect-src 'none'",
    "font-src 'none'",
    "img-src 'none'",
    "media-src 'none'",
    "style-src 'none'",
    "frame-src 'none'",
    "child-src 'none'",
    "object-src 'none'",
    "manifest-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
}

/** The frame's document (its srcdoc). */
export function frameDocument(nonce: string): string {
  // `import()` is written here, in a string no compiler rewrites (tsc's relative-extension rewrite
  // would call a helper the worker does not have).
  const workerSource = `(${pythonWorkerMain.toString()})((url) => import(url));\n`;
  const script = `(${pythonFrameMain.toString()})(${capOutcome.toString()}, ${JSON.stringify(workerSource)}, ${JSON.stringify(OUTPUT_TRUNCATED_MARKER)});`;
  return '<!doctype html><html><head><meta charset="utf-8">'
    + `<meta http-equiv="Content-Security-Policy" content="${frameCSP(nonce)}">`
    + `<title>genprm python</title></head><body><script nonce="${nonce}">${script.replace(/<\/(script)/gi, '<\\/$1')}</script></body></html>`;
}

/** Checks an outcome's shape and caps its texts at `limit` characters (plus the marker; an output
 *  the interpreter already cut that way passes unchanged). Self-contained: the frame gets its
 *  source text. */
export function capOutcome(o: unknown, limit: number, marker: string): ExecOutcome {
  const cap = (s: unknown, max: number): string => {
    const text = typeof s === 'string' ? s : '';
    if (text.length <= max) return text; // UTF-16 units: never fewer than code points
    let n = 0;
    let end = 0;
    for (const ch of text) {
      if (n === max) break;
      n++;
      end += ch.length;
    }
    if (end === text.length || text.slice(end) === marker) return text;
    return text.slice(0, end) + marker;
  };
  const r = (o ?? {}) as Record<string, unknown>;
  if (r.outcome === 'ok') return { outcome: 'ok', stdout: cap(r.stdout, limit) };
  if (r.outcome === 'timeout') return { outcome: 'timeout', message: cap(r.message, limit) };
  if (r.outcome === 'error') return { outcome: 'error', kind: cap(r.kind, 256) || 'RuntimeError', message: cap(r.message, limit) };
  return { outcome: 'error', kind: 'RuntimeError', message: 'the Python interpreter gave a malformed answer' };
}

/** The frame's script. Runs in the sandboxed frame; talks only to its parent (the page). */
export function pythonFrameMain(cap: typeof capOutcome, workerSource: string, marker: string): void {
  interface Interp {
    /** Null until the snapshot is there. */
    worker: Worker | null;
    ready: Promise<InterpreterInfo>;
    info: InterpreterInfo | null;
    /** The run sent to this worker and not answered yet. */
    run: { wid: number; id: number; nonce: string } | null;
    dead: boolean;
  }
  const workerURL = 'data:text/javascript;charset=utf-8,' + encodeURIComponent(workerSource);
  let files: PythonFiles | null = null;
  let outputLimit = 0;
  let warm = 1;
  let pageOrigin = '*';
  let wseq = 0;
  const spares: Interp[] = [];
  const paths = new Map<number, Interp>();

  const reply = (m: FromFrame) => parent.postMessage(m, pageOrigin);
  const text = (v: unknown, max = 2000) => String(v).slice(0, max);

  function end(it: Interp): void {
    it.dead = true;
    it.worker?.terminate();
    const i = spares.indexOf(it);
    if (i >= 0) spares.splice(i, 1);
    for (const [p, v] of paths) if (v === it) paths.delete(p);
  }

  // Interpreters start from a memory snapshot of one that imported sympy and ran nothing else
  // (the template): a fraction of a cold start. Without one (it failed), they start cold.
  let snapshot: Promise<ArrayBuffer | null> | null = null;

  function makeSnapshot(): Promise<ArrayBuffer | null> {
    return new Promise((resolve) => {
      const worker = new Worker(workerURL, { type: 'module', name: 'genprm-python-template' });
      const done = (s: ArrayBuffer | null) => { worker.terminate(); resolve(s); };
      worker.onmessage = (ev: MessageEvent<FromWorker>) => {
        const m = ev.data;
        done(m && m.type === 'snapshot' && m.snapshot instanceof ArrayBuffer ? m.snapshot : null);
      };
      worker.onerror = (ev: ErrorEvent) => { ev.preventDefault(); done(null); };
      const init: ToWorker = { type: 'init', files: files!, outputLimit, marker, mode: 'template' };
      worker.postMessage(init);
    });
  }

  function spawn(): Interp {
    const t0 = performance.now();
    const it: Interp = { worker: null!, ready: null!, info: null, run: null, dead: false };
    it.ready = (snapshot ??= makeSnapshot()).then((snap) => new Promise<InterpreterInfo>((resolve, reject) => {
      if (it.dead) { reject(new Error('ended')); return; }
      const worker = new Worker(workerURL, { type: 'module', name: 'genprm-python' });
      it.worker = worker;
      const failed = (message: string) => {
        if (it.run) {
          const r = it.run;
          it.run = null;
          reply({ type: 'result', id: r.id, nonce: r.nonce, crashed: true, outcome: { outcome: 'error', kind: 'RuntimeError', message: `the Python interpreter crashed: ${message}` } });
        }
        if (!it.info) {
          // A snapshot that does not restore is not tried again.
          if (snap) snapshot = Promise.resolve(null);
          reject(new Error(message));
        }
        end(it);
      };
      worker.onmessage = (ev: MessageEvent<FromWorker>) => {
        if (it.dead) return;
        const m = ev.data as Partial<FromWorker> & Record<string, unknown>;
        if (!m || typeof m !== 'object') return;
        if (!it.info) {
          if (m.type === 'ready') {
            it.info = {
              python: text(m.python, 32), sympy: text(m.sympy, 32), startMs: performance.now() - t0,
              pyodideMs: Number(m.pyodideMs) || 0, sympyMs: Number(m.sympyMs) || 0, from: snap ? 'snapshot' : 'cold',
            };
            resolve(it.info);
          } else if (m.type === 'init_failed') {
            failed(text(m.message));
          }
          return;
        }
        // After start-up the worker runs the solution's code: only the answer to the run this
        // frame sent it is passed on, checked and capped; anything else it posts is dropped.
        const r = it.run;
        if (!r || m.id !== r.wid) return;
        if (m.type === 'result') {
          it.run = null;
          reply({ type: 'result', id: r.id, nonce: r.nonce, outcome: cap(m.outcome, outputLimit, marker) });
        } else if (m.type === 'crashed') {
          failed(text(m.message));
        }
      };
      // Before start-up an error means the worker could not load. After it, an error event is an
      // exception the code left uncaught in a JS callback (or a nested worker's): the interpreter
      // lives on (one that really dies stops answering, and its run times out).
      worker.onerror = (ev: ErrorEvent) => {
        ev.preventDefault();
        if (!it.info) failed(ev.message || 'the Python worker failed to load');
      };
      const init: ToWorker = snap
        ? { type: 'init', files: files!, outputLimit, marker, mode: 'snapshot', snapshot: snap }
        : { type: 'init', files: files!, outputLimit, marker, mode: 'cold' };
      worker.postMessage(init);
    }));
    it.ready.catch(() => undefined);
    return it;
  }

  function topUp(): void {
    while (spares.length < warm) spares.push(spawn());
  }

  /** Gives `path` an interpreter (a started one from the reserve) unless it has one; a fresh one
   *  that fails to start is replaced once. */
  function prepare(path: number, id: number, nonce: string, retry: boolean): void {
    let it = paths.get(path);
    const fresh = !it || it.dead;
    if (!it || it.dead) {
      it = spares.shift() ?? spawn();
      paths.set(path, it);
      topUp();
    }
    const mine = it;
    mine.ready.then(
      (info) => reply({ type: 'prepared', id, nonce, info, fresh }),
      (e: Error) => {
        if (paths.get(path) === mine) paths.delete(path);
        if (retry && fresh) prepare(path, id, nonce, false);
        else reply({ type: 'failed', id, nonce, message: e.message });
      },
    );
  }

  addEventListener('message', (ev: MessageEvent<ToFrame>) => {
    if (ev.source !== parent) return;
    const m = ev.data;
    if (!m || typeof m !== 'object' || typeof m.id !== 'number' || typeof m.nonce !== 'string') return;
    const { id, nonce } = m;
    switch (m.type) {
      case 'init': {
        if (files) return;
        reply({ type: 'accepted', id, nonce });
        files = m.files;
        outputLimit = m.outputLimit;
        warm = Math.max(1, m.warm | 0);
        pageOrigin = ev.origin && ev.origin !== 'null' ? ev.origin : '*';
        topUp();
        const first = (retry: boolean) => spares[0].ready.then(
          (info) => reply({ type: 'ready', id, nonce, info }),
          (e: Error) => {
            topUp(); // the failed one left the reserve
            if (retry) first(false);
            else reply({ type: 'failed', id, nonce, message: e.message });
          },
        );
        first(true);
        break;
      }
      case 'prepare': {
        if (!files) return;
        reply({ type: 'accepted', id, nonce });
        prepare(m.path, id, nonce, true);
        break;
      }
      case 'run': {
        const it = paths.get(m.path);
        if (!it || it.dead || !it.info || it.run) {
          reply({ type: 'result', id, nonce, outcome: { outcome: 'error', kind: 'RuntimeError', message: 'Python is not running' } });
          return;
        }
        it.run = { wid: ++wseq, id, nonce };
        const run: ToWorker = { type: 'run', id: it.run.wid, code: String(m.code) };
        it.worker!.postMessage(run);
        break;
      }
      case 'discard': {
        const it = paths.get(m.path);
        if (it) end(it);
        reply({ type: 'discarded', id, nonce });
        break;
      }
    }
  });
}
