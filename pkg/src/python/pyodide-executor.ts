// python/: running the model's Python: PyodideExecutor (this file) in the page, the sandboxed
// frame it starts (pyodide-frame.ts), the interpreters' workers inside it (pyodide-worker.ts) and
// the messages between them (worker-protocol.ts). Imports contract/ only; pyodide-worker.ts's
// function travels as source text, so it may use nothing outside itself at run time.
//
// PyodideExecutor: the browser's CodeExecutor (the contract's ExecutorBridge), used by the demo
// page, the grading page and the widget alike. Python runs the way GenPRM's official executor
// does (stdout captured, `type(e).__name__` and `str(e)` for errors, a TimeoutError raised by the
// code reported as a time-out), but boxed in by the browser rather than by Python:
//
// - Pyodide runs in Web Workers inside a sandboxed frame (pyodide-frame.ts): an opaque origin
//   (`sandbox="allow-scripts"`, no allow-same-origin), so the page's IndexedDB, Cache API and
//   OPFS are another origin's, and a Content-Security-Policy with no connections, so the browser
//   refuses every request. The page downloads Pyodide and the sympy bundle and hands them in.
// - Each solution path gets a fresh interpreter (its own worker; the model's history needs one
//   per path), started ahead of time from a small reserve; `reset(path)` ends it.
// - The official 5 s limit counts from when the code is sent to the frame. A run not back in time
//   resolves as `{ outcome: 'timeout', message: 'Code execution timed out' }` and its path's
//   interpreter is ended (that path's variables are gone, as when the official executor's
//   process is killed; other paths keep theirs); a frame that stops answering is replaced.
// - What a run prints is capped at OUTPUT_LIMIT_CHARS characters with OUTPUT_TRUNCATED_MARKER
//   appended (the model reads at most the crate's 8,192 of them, as natively).
// - The page accepts only answers to its own requests: from its frame's window, with the
//   request's id and random nonce; everything else is dropped (`ignoredMessages` counts it).
import { PYODIDE_RUNTIME_FILES, WEB_PAGE_TYPE, type ExecOutcome, type ExecutorBridge, type PyodideRuntimeFile } from '../contract/types.ts';
import type { FromFrame, InterpreterInfo, PythonFiles, PythonProgress, ToFrame } from './worker-protocol.ts';
import { TIME_LIMIT_SECS } from '../contract/defaults.ts';
import { capOutcome, frameDocument, OUTPUT_LIMIT_CHARS, OUTPUT_TRUNCATED_MARKER } from './pyodide-frame.ts';

export type { PythonProgress, InterpreterInfo } from './worker-protocol.ts';
export { OUTPUT_LIMIT_CHARS, OUTPUT_TRUNCATED_MARKER } from './pyodide-frame.ts';

/** The official per-run limit, in milliseconds. */
export const TIME_LIMIT_MS = TIME_LIMIT_SECS * 1000;
/** The official text of a time-out. */
export const TIMEOUT_MESSAGE = 'Code execution timed out';
/** How long an interpreter may take to start (not counted in the run's limit). */
const START_LIMIT_MS = 180_000;
/** How long the frame may take to answer a request that runs no code (or to acknowledge one). */
const ANSWER_LIMIT_MS = 5000;
/** How long a new frame may take to acknowledge the files (its script did not run otherwise: a
 *  Content-Security-Policy of the embedding page that forbids it, for one). */
const FRAME_LOAD_LIMIT_MS = 20_000;

export interface PyodideExecutorOptions {
  /** Where Pyodide's runtime files are served (pyodide.mjs, pyodide.asm.wasm, python_stdlib.zip, ...). */
  indexURL: string | URL;
  /** A runtime file's own URL where it is not `indexURL` + its name (a bundler copied and renamed
   *  it): the page fetches each file itself, so the names need not match. */
  runtimeURLs?: Partial<Record<PyodideRuntimeFile, string | URL>>;
  /** The sympy + mpmath bytecode bundle (genprm-python.zip). */
  bundleURL: string | URL;
  /** The limit per run, in milliseconds (default 5000, the official limit). */
  timeoutMs?: number;
  /** Interpreters kept started ahead of the paths that will need them (default 1). */
  warm?: number;
  /** Start-up progress, also after each restart of the frame. */
  onProgress?: (p: PythonProgress & { restart: number }) => void;
  /** Called when an interpreter or the frame is replaced (time-out or crash), with the reason. */
  onRestart?: (reason: string) => void;
  /** Where the hidden frame goes (default document.body). */
  container?: HTMLElement;
}

interface Frame {
  iframe: HTMLIFrameElement;
  window: Window | null;
  ready: Promise<void>;
  dead: boolean;
}

interface Pending {
  frame: Frame;
  nonce: string;
  expects: FromFrame['type'][];
  resolve: (m: FromFrame) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
  /** The frame said it got the request: the answer's own limit starts. */
  accepted: () => void;
}


class RequestTimeout extends Error {}

// The interpreters' script is `pythonWorkerMain` from './pyodide-worker.ts', sent into the frame
// as source text (there is no worker URL to resolve).
export class PyodideExecutor implements ExecutorBridge {
  /** How many times an interpreter or the frame was replaced after a time-out or a crash. */
  restarts = 0;
  /** Python and sympy versions, once ready. */
  versions: { python: string; sympy: string } | null = null;
  /** Each interpreter given to a path, in order: its start-up (see InterpreterInfo) and `waitMs`,
   *  how long the path's first run waited for it (near zero when one was started in reserve). */
  startups: (InterpreterInfo & { waitMs: number })[] = [];
  /** Messages dropped because they answered nothing this executor asked. */
  ignoredMessages = 0;
  private frame: Frame | null = null;
  private files: Promise<PythonFiles> | null = null;
  private pending = new Map<number, Pending>();
  private queues = new Map<number, Promise<unknown>>();
  private seq = 0;
  private closed = false;
  private readonly opts: PyodideExecutorOptions & { timeoutMs: number; warm: number };
  private readonly listener = (ev: MessageEvent) => this.onMessage(ev);

  constructor(options: PyodideExecutorOptions) {
    this.opts = { timeoutMs: TIME_LIMIT_MS, warm: 1, ...options };
    addEventListener('message', this.listener);
    this.startFrame();
  }

  /** Resolves when Python and sympy are loaded (the first interpreter); rejects if it cannot start.
   *  Asked again after a failure, it starts again (a download that failed is retried). */
  get ready(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the Python executor was closed'));
    return (this.frame ?? this.startFrame()).ready;
  }

  run(path: number, code: string): Promise<ExecOutcome> {
    return this.enqueue(path, () => this.runNow(path, code));
  }

  /** Ends `path`'s interpreter: its next run starts in a fresh one. */
  reset(path: number): Promise<void> {
    return this.enqueue(path, () => this.discard(path));
  }

  /** Stops the frame and its interpreters for good. */
  terminate(): void {
    if (this.closed) return;
    this.closed = true;
    removeEventListener('message', this.listener);
    if (this.frame) this.dropFrame(this.frame, 'the Python executor was closed');
    this.frame = null;
  }

  private enqueue<T>(path: number, job: () => Promise<T>): Promise<T> {
    const next = (this.queues.get(path) ?? Promise.resolve()).then(job, job);
    this.queues.set(path, next.catch(() => undefined));
    return next;
  }

  private async runNow(path: number, code: string): Promise<ExecOutcome> {
    if (this.closed) return { outcome: 'error', kind: 'RuntimeError', message: 'the Python executor was closed' };
    let frame!: Frame;
    for (let attempt = 0; ; attempt++) {
      try {
        frame = await this.usableFrame();
        const t0 = performance.now();
        const prepared = await this.request(frame, { type: 'prepare', path }, ['prepared', 'failed'], START_LIMIT_MS, ANSWER_LIMIT_MS);
        if (prepared.type === 'failed') throw new Error(prepared.message);
        if (prepared.fresh) this.startups.push({ ...prepared.info, waitMs: performance.now() - t0 });
        break;
      } catch (e) {
        // A frame that stopped answering is replaced, and the path starts again in the new one.
        if (e instanceof RequestTimeout && attempt === 0 && this.frame === frame) {
          this.replaceFrame(frame, 'the Python frame stopped answering');
          continue;
        }
        // As the native sandbox does when its interpreter is not running.
        return { outcome: 'error', kind: 'RuntimeError', message: `Python could not start: ${errorText(e)}` };
      }
    }
    // The limit counts from here: the code is on its way.
    let answer: FromFrame;
    try {
      answer = await this.request(frame, { type: 'run', path, code }, ['result'], this.opts.timeoutMs);
    } catch (e) {
      if (e instanceof RequestTimeout) {
        this.restarted('a code block ran past the time limit');
        // The path's interpreter is ended before its next run (queued behind this one).
        void this.enqueue(path, () => this.discard(path));
        return { outcome: 'timeout', message: TIMEOUT_MESSAGE };
      }
      if (this.closed) return { outcome: 'error', kind: 'RuntimeError', message: 'the Python executor was closed' };
      return { outcome: 'error', kind: 'RuntimeError', message: `the Python interpreter crashed: ${errorText(e)}` };
    }
    if (answer.type !== 'result') return { outcome: 'error', kind: 'RuntimeError', message: 'Python is not running' };
    if (answer.crashed) this.restarted('the Python interpreter crashed');
    // The frame capped it already; the page checks again.
    return capOutcome(answer.outcome, OUTPUT_LIMIT_CHARS, OUTPUT_TRUNCATED_MARKER);
  }

  /** Ends `path`'s interpreter; a frame that does not answer is replaced. */
  private async discard(path: number): Promise<void> {
    const frame = this.frame;
    if (!frame || frame.dead) return; // a fresh frame has no interpreters yet
    try {
      await frame.ready;
    } catch {
      return;
    }
    try {
      await this.request(frame, { type: 'discard', path }, ['discarded'], ANSWER_LIMIT_MS);
    } catch (e) {
      if (e instanceof RequestTimeout) this.replaceFrame(frame, 'the Python frame stopped answering');
    }
  }

  private restarted(reason: string): void {
    this.restarts++;
    this.opts.onRestart?.(reason);
  }

  private async usableFrame(): Promise<Frame> {
    if (this.closed) throw new Error('the Python executor was closed');
    const frame = this.frame && !this.frame.dead ? this.frame : this.startFrame();
    await frame.ready;
    return frame;
  }

  /** Sends a request to the frame; resolves with its answer, rejects with RequestTimeout when none
   *  comes in `timeoutMs`. With `ackMs`, the frame must first say it got the request within
   *  `ackMs` (a frame that stopped answering is found without waiting out a start-up limit). */
  private request<K extends FromFrame['type']>(frame: Frame, body: DistributiveOmit<ToFrame, 'id' | 'nonce'>, expects: K[], timeoutMs: number, ackMs?: number): Promise<Extract<FromFrame, { type: K }>> {
    return new Promise((resolve, reject) => {
      if (frame.dead || !frame.window) { reject(new Error('the Python frame is gone')); return; }
      const id = ++this.seq;
      const nonce = randomNonce();
      const expire = (ms: number, what: string) => setTimeout(() => {
        if (this.pending.delete(id)) reject(new RequestTimeout(`no ${what} in ${ms} ms`));
      }, ms);
      const pending: Pending = {
        frame, nonce, expects: ackMs === undefined ? expects : [...expects, 'accepted'],
        resolve: resolve as (m: FromFrame) => void, reject,
        timer: ackMs === undefined ? expire(timeoutMs, 'answer') : expire(ackMs, 'acknowledgement from the Python frame'),
        accepted: () => {
          pending.expects = expects;
          pending.timer = expire(timeoutMs, 'answer');
        },
      };
      this.pending.set(id, pending);
      frame.window.postMessage({ ...body, id, nonce } as ToFrame, '*');
    });
  }

  private onMessage(ev: MessageEvent): void {
    const m = ev.data as Partial<FromFrame> | null;
    const p = m && typeof m === 'object' && typeof m.id === 'number' ? this.pending.get(m.id) : undefined;
    if (!p || ev.source === null || ev.source !== p.frame.window || p.frame !== this.frame
      || m!.nonce !== p.nonce || !p.expects.includes(m!.type as FromFrame['type'])) {
      if (this.frame && ev.source === this.frame.window) this.ignoredMessages++;
      else if (m && typeof m === 'object' && 'nonce' in m) this.ignoredMessages++;
      return;
    }
    clearTimeout(p.timer);
    if (m!.type === 'accepted') {
      p.accepted();
      return;
    }
    this.pending.delete(m!.id!);
    p.resolve(m as FromFrame);
  }

  /** Adds a new frame, hands it the files and waits for its first interpreter. */
  private startFrame(): Frame {
    const restart = this.restarts;
    const progress = (p: PythonProgress) => this.opts.onProgress?.({ ...p, restart });
    const iframe = document.createElement('iframe');
    iframe.setAttribute('sandbox', 'allow-scripts');
    iframe.setAttribute('aria-hidden', 'true');
    iframe.setAttribute('referrerpolicy', 'no-referrer');
    iframe.tabIndex = -1;
    iframe.title = 'genprm python';
    iframe.hidden = true;
    iframe.style.setProperty('display', 'none', 'important'); // whatever the embedding page's CSS says
    const nonce = randomNonce();
    iframe.srcdoc = frameDocument(nonce);
    const loaded = new Promise<void>((resolve) => iframe.addEventListener('load', () => resolve(), { once: true }));
    (this.opts.container ?? document.body ?? document.documentElement).append(iframe);
    const frame: Frame = { iframe, window: iframe.contentWindow, ready: null!, dead: false };
    this.frame = frame;
    frame.ready = (async () => {
      const files = await this.download(progress);
      await loaded;
      progress({ stage: 'imports' });
      const answer = await this.request(frame, {
        type: 'init', files, warm: this.opts.warm, outputLimit: OUTPUT_LIMIT_CHARS,
      }, ['ready', 'failed'], START_LIMIT_MS, FRAME_LOAD_LIMIT_MS);
      if (answer.type === 'failed') throw new Error(answer.message);
      if (answer.type !== 'ready') throw new Error('the Python frame did not start');
      this.versions ??= { python: answer.info.python, sympy: answer.info.sympy };
      progress({ stage: 'ready' });
    })();
    frame.ready.catch((e: unknown) => {
      // The next run tries a fresh frame (and reports the error if that fails too).
      if (this.frame === frame) this.frame = null;
      this.dropFrame(frame, errorText(e));
    });
    return frame;
  }

  private replaceFrame(frame: Frame, reason: string): void {
    if (frame.dead) return;
    this.dropFrame(frame, reason);
    if (this.frame === frame) this.frame = null;
    this.restarted(reason);
    if (!this.closed) this.startFrame();
  }

  private dropFrame(frame: Frame, reason: string): void {
    if (frame.dead) return;
    frame.dead = true;
    frame.iframe.remove();
    for (const [id, p] of this.pending) {
      if (p.frame !== frame) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new Error(reason));
    }
  }

  /** Pyodide's files and the Python bundle, fetched once by the page (the frame cannot). */
  private download(progress: (p: PythonProgress) => void): Promise<PythonFiles> {
    if (!this.files) {
      const indexURL = new URL(String(this.opts.indexURL), globalThis.location?.href);
      const bundleURL = new URL(String(this.opts.bundleURL), globalThis.location?.href).href;
      this.files = (async () => {
        progress({ stage: 'runtime' });
        const [runtime, bundle] = await Promise.all([
          Promise.all(PYODIDE_RUNTIME_FILES.map((f) => fetchBytes(new URL(String(this.opts.runtimeURLs?.[f] ?? new URL(f, indexURL)), indexURL).href, f))),
          fetchBytes(bundleURL, 'genprm-python.zip', (loaded, total) => progress({ stage: 'packages', loaded, total })),
        ]);
        const files = {} as PythonFiles;
        PYODIDE_RUNTIME_FILES.forEach((f, i) => { files[f] = runtime[i]; });
        files['genprm-python.zip'] = bundle;
        return files;
      })();
      this.files.catch(() => { this.files = null; }); // a later start downloads again
    }
    return this.files;
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** A runtime file's bytes; an error that names the URL when the server has no such file or
 *  answers with a web page instead (a single-page app's fallback for unknown paths). */
async function fetchBytes(url: string, name: string, onProgress?: (loaded: number, total?: number) => void): Promise<ArrayBuffer> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`${name}: could not fetch ${url} (${errorText(e)})`);
  }
  if (!res.ok) throw new Error(`${name}: ${url} gave HTTP ${res.status}: the package's Python runtime is not served there (see the package's README, "Assets")`);
  const type = res.headers.get('content-type') ?? '';
  if (WEB_PAGE_TYPE.test(type)) {
    throw new Error(`${name}: ${url} answered with a web page (${type.split(';')[0]}), not the file: the package's Python runtime is not served there (see the package's README, "Assets")`);
  }
  const total = Number(res.headers.get('content-length')) || undefined;
  if (!onProgress || !res.body) return res.arrayBuffer();
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  let last = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    if (loaded - last > 256 * 1024) {
      last = loaded;
      onProgress(loaded, total);
    }
  }
  onProgress(loaded, total ?? loaded);
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.byteLength; }
  return out.buffer;
}

function randomNonce(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
