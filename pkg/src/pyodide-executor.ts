// PyodideExecutor: the browser's CodeExecutor (the contract's ExecutorBridge). Python runs in a
// Web Worker (pyodide-worker.ts) with one namespace per solution path, exactly as GenPRM's
// official executor: stdout captured, `type(e).__name__` and `str(e)` for errors, a TimeoutError
// raised by the code reported as a time-out.
//
// The official 5 s limit is enforced from here: when a run is not back in time, the worker is
// terminated, the run resolves as `{ outcome: 'timeout', message: 'Code execution timed out' }`,
// and a fresh worker starts. Terminating loses every path's namespace (variables from earlier
// paragraphs are gone, for every sample), as killing the official executor's process would;
// `restarts` counts these, and the next run waits for the new worker to be ready.
import type { ExecOutcome, ExecutorBridge } from './types.ts';
import type { FromWorker, PythonProgress, ToWorker } from './worker-protocol.ts';

export type { PythonProgress } from './worker-protocol.ts';

/** The official per-run limit. */
export const TIME_LIMIT_MS = 5000;
/** The official text of a time-out. */
export const TIMEOUT_MESSAGE = 'Code execution timed out';

export interface PyodideExecutorOptions {
  /** Where Pyodide's runtime files are served (pyodide.mjs, pyodide.asm.wasm, python_stdlib.zip, ...). */
  indexURL: string | URL;
  /** The sympy + mpmath bytecode bundle (genprm-python.zip). */
  bundleURL: string | URL;
  /** The limit per run, in milliseconds (default 5000, the official limit). */
  timeoutMs?: number;
  /** Start-up progress, also after each restart. */
  onProgress?: (p: PythonProgress & { restart: number }) => void;
  /** Called when the worker is replaced (time-out or crash), with the reason. */
  onRestart?: (reason: string) => void;
  /** Creates the worker; the default bundles pyodide-worker.ts. */
  createWorker?: () => Worker;
}

interface Pending {
  resolve: (o: ExecOutcome | void) => void;
  timer?: ReturnType<typeof setTimeout>;
}

interface Live {
  worker: Worker;
  ready: Promise<void>;
}

export class PyodideExecutor implements ExecutorBridge {
  /** How many times the worker was replaced after a time-out or a crash. */
  restarts = 0;
  /** Python and sympy versions, once ready. */
  versions: { python: string; sympy: string } | null = null;
  private live: Live | null = null;
  private lastReady: Promise<void> | null = null;
  private pending = new Map<number, Pending>();
  private seq = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly opts: Required<Pick<PyodideExecutorOptions, 'timeoutMs'>> & PyodideExecutorOptions;

  constructor(options: PyodideExecutorOptions) {
    this.opts = { timeoutMs: TIME_LIMIT_MS, ...options };
    this.spawn();
  }

  /** Resolves when Python and sympy are loaded (the current worker); rejects if it cannot start. */
  get ready(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the Python executor was closed'));
    return this.live?.ready ?? this.lastReady!;
  }

  run(path: number, code: string): Promise<ExecOutcome> {
    return this.enqueue(() => this.runNow(path, code));
  }

  reset(path: number): Promise<void> {
    return this.enqueue(async () => {
      const live = await this.usable();
      if (!live) return; // a fresh worker has fresh namespaces
      await new Promise<ExecOutcome | void>((resolve) => {
        const id = ++this.seq;
        this.pending.set(id, { resolve });
        this.send(live, { type: 'reset', id, path });
      });
    });
  }

  /** Stops the worker for good. */
  terminate(): void {
    this.closed = true;
    this.live?.worker.terminate();
    this.live = null;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.resolve({ outcome: 'error', kind: 'RuntimeError', message: 'the Python executor was closed' });
    }
    this.pending.clear();
  }

  private enqueue<T>(job: () => Promise<T>): Promise<T> {
    const next = this.queue.then(job, job);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The live worker once ready, or null when it could not start (the error goes to the run). */
  private async usable(): Promise<Live | null> {
    if (this.closed) throw new Error('the Python executor was closed');
    if (!this.live) this.spawn();
    const live = this.live!;
    await live.ready;
    return live;
  }

  private async runNow(path: number, code: string): Promise<ExecOutcome> {
    let live: Live | null;
    try {
      live = await this.usable();
    } catch (e) {
      // As the native sandbox does when its interpreter is not running.
      return { outcome: 'error', kind: 'RuntimeError', message: `Python could not start: ${errorText(e)}` };
    }
    if (!live) return { outcome: 'error', kind: 'RuntimeError', message: 'Python is not running' };
    return new Promise<ExecOutcome>((resolve) => {
      const id = ++this.seq;
      this.pending.set(id, { resolve: resolve as (o: ExecOutcome | void) => void });
      this.send(live!, { type: 'run', id, path, code });
    });
  }

  private send(live: Live, msg: ToWorker): void {
    live.worker.postMessage(msg);
  }

  private spawn(): void {
    const worker = this.opts.createWorker
      ? this.opts.createWorker()
      : new Worker(new URL('./pyodide-worker.ts', import.meta.url), { type: 'module', name: 'genprm-python' });
    const restart = this.restarts;
    let settle!: { resolve: () => void; reject: (e: Error) => void };
    const ready = new Promise<void>((resolve, reject) => { settle = { resolve, reject }; });
    ready.catch(() => undefined); // observed by runs; no unhandled rejection when nobody waits
    const live: Live = { worker, ready };
    this.live = live;
    this.lastReady = ready;
    worker.onmessage = (ev: MessageEvent<FromWorker>) => {
      if (this.live !== live) return;
      const m = ev.data;
      switch (m.type) {
        case 'progress':
          this.opts.onProgress?.({ ...m.progress, restart });
          break;
        case 'ready':
          this.versions = { python: m.python, sympy: m.sympy };
          settle.resolve();
          break;
        case 'init_failed':
          settle.reject(new Error(m.message));
          worker.terminate();
          this.live = null; // the next run tries a fresh worker
          break;
        case 'started': {
          const p = this.pending.get(m.id);
          if (p) p.timer = setTimeout(() => this.timedOut(live, m.id), this.opts.timeoutMs);
          break;
        }
        case 'result':
          this.finish(m.id, m.outcome);
          break;
        case 'reset_done':
          this.finish(m.id, undefined);
          break;
        case 'crashed':
          this.replace(live, `the Python worker crashed: ${m.message}`);
          this.finish(m.id, { outcome: 'error', kind: 'RuntimeError', message: `the Python interpreter crashed: ${m.message}` });
          break;
      }
    };
    worker.onerror = (ev: ErrorEvent) => {
      ev.preventDefault();
      if (this.live !== live) return;
      const message = ev.message || 'the Python worker failed to load';
      settle.reject(new Error(message));
      this.replace(live, message);
      for (const [id] of this.pending) {
        this.finish(id, { outcome: 'error', kind: 'RuntimeError', message: `the Python interpreter crashed: ${message}` });
      }
    };
    const init: ToWorker = {
      type: 'init',
      indexURL: new URL(String(this.opts.indexURL), globalThis.location?.href).href,
      bundleURL: new URL(String(this.opts.bundleURL), globalThis.location?.href).href,
    };
    worker.postMessage(init);
  }

  private finish(id: number, outcome: ExecOutcome | undefined): void {
    const p = this.pending.get(id);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(id);
    p.resolve(outcome);
  }

  private timedOut(live: Live, id: number): void {
    if (this.live !== live || !this.pending.has(id)) return;
    this.replace(live, 'a code block ran past the time limit');
    this.finish(id, { outcome: 'timeout', message: TIMEOUT_MESSAGE });
  }

  /** Terminates `live` and starts a fresh worker (its namespaces are empty). */
  private replace(live: Live, reason: string): void {
    live.worker.terminate();
    if (this.live === live) this.live = null;
    this.restarts++;
    this.opts.onRestart?.(reason);
    if (!this.closed) this.spawn();
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
