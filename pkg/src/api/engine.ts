// The engine: where the wasm module, the WebGPU device and the loaded models live. By default a
// dedicated Web Worker (engine-worker.ts), one per page, shared by every model, widget and call,
// so that a verification never blocks the page's main thread; or the page's own thread, with
// configure({ worker: false }) or loadModel's `worker: false`, and automatically (with a console
// warning) where the worker cannot start (no Worker, a Content-Security-Policy without 'self' for
// workers, a server that does not serve the worker's module).
//
// Callers see no difference: loadModel gets a WasmModel either way (the worker's is a RemoteModel
// relaying verify's events, its AbortSignal and its executor's Python runs), and the wasm
// module's functions (gpuInfo, splitParagraphs, parseGradingInput, gradeResult, benchRandom) are
// called through engine().
import type { BenchOptions, BenchProgress, BenchResult, ExecutorBridge, GpuInfo, GradeResult, GradeRow, LoadOptions, LoadProgress, ModelInfo, VerifyEvent, VerifyRequest, VerifyResult, WasmModel } from '../contract/types.ts';
import { workerPreferred } from '../runtime/assets.ts';
import * as local from '../runtime/wasm.ts';
import { benchRandom as localBench } from '../runtime/bench.ts';
import type { DownloadProgress } from '../runtime/model-cache.ts';
import { errorData, errorFrom, type EngineCall, type FromEngine, type SourceSpec, type ToEngine } from './engine-protocol.ts';
import type { ModelSource } from './model-sources.ts';

/** How long the worker may take to run its module before the page's thread is used instead. */
const START_LIMIT_MS = 60_000;

export interface Engine {
  /** Where the model runs: 'worker' (the engine's Web Worker) or 'page' (the page's thread). */
  readonly thread: 'worker' | 'page';
  call<T>(fn: EngineCall, args: unknown[], onBench?: (p: BenchProgress) => void): Promise<T>;
  load(source: ModelSource, options: LoadOptions, onProgress: (p: LoadProgress) => void, signal?: AbortSignal): Promise<WasmModel>;
}

/** The wasm module on the page's thread. */
class PageEngine implements Engine {
  readonly thread = 'page' as const;

  async call<T>(fn: EngineCall, args: unknown[], onBench?: (p: BenchProgress) => void): Promise<T> {
    const a = args as never[];
    switch (fn) {
      case 'start': await local.wasm(); return true as T;
      case 'gpuInfo': return await local.gpuInfo() as T;
      case 'splitParagraphs': return await local.splitParagraphs(a[0]) as T;
      case 'parseGradingInput': return await local.parseGradingInput(a[0], a[1]) as T;
      case 'gradeResult': return await local.gradeResult(a[0], a[1]) as T;
      case 'hasWasmFunction': return await local.hasWasmFunction(a[0]) as T;
      case 'benchRandom': return await localBench(a[0], onBench) as T;
    }
  }

  async load(source: ModelSource, options: LoadOptions, onProgress: (p: LoadProgress) => void): Promise<WasmModel> {
    const w = await local.wasm();
    return w.Model.load(source.fetchFile, options, onProgress);
  }
}

interface Job {
  resolve: (m: Extract<FromEngine, { type: 'done' | 'loaded' }>) => void;
  reject: (e: Error) => void;
  onProgress?: (p: Extract<FromEngine, { type: 'progress' }>['progress']) => void;
  onEvent?: (e: VerifyEvent) => void;
  fetchFile?: ModelSource['fetchFile'];
  executor?: ExecutorBridge;
}

/** The wasm module in the engine's worker. */
class WorkerEngine implements Engine {
  readonly thread = 'worker' as const;
  private jobs = new Map<number, Job>();
  private seq = 0;
  /** Set when the worker died: every later job fails with it, and engine() starts another. */
  dead: Error | null = null;

  constructor(readonly worker: Worker, private onDeath: () => void) {
    worker.addEventListener('message', (ev: MessageEvent<FromEngine>) => this.onMessage(ev.data));
    worker.addEventListener('error', (ev) => this.die(`the engine's worker stopped: ${(ev as ErrorEvent).message || 'an error'}`));
    worker.addEventListener('messageerror', () => this.die('the engine\'s worker sent a message that could not be read'));
  }

  private die(why: string): void {
    if (this.dead) return;
    this.dead = new Error(why);
    for (const job of this.jobs.values()) job.reject(this.dead);
    this.jobs.clear();
    this.worker.terminate();
    this.onDeath();
  }

  post(m: ToEngine): void {
    this.worker.postMessage(m);
  }

  /** Starts a job; `signal` aborts it in the worker. */
  start(message: (id: number) => ToEngine, job: Omit<Job, 'resolve' | 'reject'>, signal?: AbortSignal): Promise<Extract<FromEngine, { type: 'done' | 'loaded' }>> {
    if (this.dead) return Promise.reject(this.dead);
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const onAbort = () => this.post({ type: 'abort', id });
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => signal?.removeEventListener('abort', onAbort);
      this.jobs.set(id, { ...job, resolve: (m) => { done(); resolve(m); }, reject: (e) => { done(); reject(e); } });
      this.post(message(id));
      if (signal?.aborted) onAbort();
    });
  }

  private onMessage(m: FromEngine): void {
    if (m.type === 'ready') return;
    if (m.type === 'lost') { this.die(`the engine's worker stopped: its WebAssembly module failed (${m.error.message})`); return; }
    const id = m.type === 'fetch-file' || m.type === 'run' || m.type === 'reset' ? m.job : m.id;
    const job = this.jobs.get(id);
    if (!job) return;
    switch (m.type) {
      case 'progress': job.onProgress?.(m.progress); break;
      case 'event': job.onEvent?.(m.event); break;
      case 'done':
      case 'loaded':
        this.jobs.delete(id);
        job.resolve(m);
        break;
      case 'failed':
        this.jobs.delete(id);
        job.reject(errorFrom(m.error));
        break;
      case 'fetch-file':
        if (!job.fetchFile) return;
        job.fetchFile(m.name, m.ifListed ? { ifListed: true } : undefined).then(
          (blob) => this.post({ type: 'file', id: m.id, blob }),
          (e) => this.post({ type: 'file', id: m.id, blob: null, error: errorData(e) }));
        break;
      case 'run': {
        const ex = job.executor;
        const ran = ex ? ex.run(m.path, m.code) : Promise.resolve({ outcome: 'error' as const, kind: 'RuntimeError', message: 'code execution is off' });
        ran.catch((e) => ({ outcome: 'error' as const, kind: 'RuntimeError', message: errorData(e).message }))
          .then((outcome) => this.post({ type: 'ran', id: m.id, outcome }));
        break;
      }
      case 'reset':
        Promise.resolve(job.executor?.reset(m.path)).catch(() => undefined).then(() => this.post({ type: 'was-reset', id: m.id }));
        break;
    }
  }

  async call<T>(fn: EngineCall, args: unknown[], onBench?: (p: BenchProgress) => void): Promise<T> {
    const m = await this.start((id) => ({ type: 'call', id, fn, args }), { onProgress: (p) => { if (p.phase === 'bench') onBench?.(p.bench); } });
    return (m as Extract<FromEngine, { type: 'done' }>).value as T;
  }

  async load(source: ModelSource, options: LoadOptions, onProgress: (p: LoadProgress) => void, signal?: AbortSignal): Promise<WasmModel> {
    const where = source.location;
    const spec: SourceSpec = where ? { kind: 'url', label: source.label, base: where.base, cache: where.cache, files: where.files, urls: where.urls, revalidate: where.revalidate }
      : source.files ? { kind: 'files', label: source.label, files: source.files }
        : { kind: 'page', label: source.label };
    // The source's own signal (urlSource's) aborts the worker's downloads too.
    const signals = [...new Set([signal, where?.signal])].filter((s): s is AbortSignal => !!s);
    const both = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
    const onDownload: (p: DownloadProgress) => void = where?.onProgress ?? (() => {});
    const m = await this.start((id) => ({ type: 'load', id, source: spec, options }), {
      onProgress: (p) => { if (p.phase === 'load') onProgress(p.load); else if (p.phase === 'download') onDownload(p.download); },
      fetchFile: spec.kind === 'page' ? source.fetchFile : undefined,
    }, both);
    const loaded = m as Extract<FromEngine, { type: 'loaded' }>;
    return new RemoteModel(this, loaded.model, loaded.info);
  }
}

/** A model loaded in the engine's worker: the wasm Model's interface, relayed. */
export class RemoteModel implements WasmModel {
  readonly thread = 'worker' as const;
  private freed = false;

  constructor(private engine: WorkerEngine, private handle: number, private latest: ModelInfo) {}

  /** The model's facts as of its last verification (the counters, such as decodeReplays, move). */
  info(): ModelInfo { return { ...this.latest }; }

  /** Why the model is gone with its worker (the worker stopped: a crash, a trap in the wasm
   *  module), or null while it is usable. A lost model is loaded again in a new worker. */
  get lost(): Error | null {
    return this.engine.dead;
  }

  async verify(request: VerifyRequest, executor: ExecutorBridge, onEvent: (e: VerifyEvent) => void, signal?: AbortSignal | null): Promise<VerifyResult> {
    if (this.freed) throw new Error('this model was freed');
    let m: Extract<FromEngine, { type: 'done' | 'loaded' }>;
    try {
      m = await this.engine.start((id) => ({ type: 'verify', id, model: this.handle, request }), { onEvent, executor }, signal ?? undefined);
    } catch (e) {
      if (this.engine.dead) throw new Error(`${this.engine.dead.message}; the model was lost with it: load it again`);
      throw e;
    }
    const done = m as Extract<FromEngine, { type: 'done' }>;
    if (done.info) this.latest = done.info;
    return done.value as VerifyResult;
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    if (!this.engine.dead) this.engine.post({ type: 'free', model: this.handle });
  }
}

let page: PageEngine | null = null;
let worker: Promise<Engine> | null = null;

function startWorker(): Promise<Engine> {
  return new Promise<Engine>((resolve, reject) => {
    if (typeof Worker === 'undefined') { reject(new Error('this context has no Web Workers')); return; }
    let w: Worker;
    try {
      w = new Worker(new URL('./engine-worker.ts', import.meta.url), { type: 'module', name: 'genprm-engine' });
    } catch (e) {
      reject(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    const fail = (why: string) => { clearTimeout(timer); w.terminate(); reject(new Error(why)); };
    const timer = setTimeout(() => fail(`it did not start within ${START_LIMIT_MS / 1000} s`), START_LIMIT_MS);
    const onError = (ev: Event) => fail((ev as ErrorEvent).message || 'its module could not be loaded (blocked by a Content-Security-Policy, or not served?)');
    w.addEventListener('error', onError);
    w.addEventListener('message', function first(ev: MessageEvent<FromEngine>) {
      if (ev.data?.type !== 'ready') return;
      clearTimeout(timer);
      w.removeEventListener('error', onError);
      w.removeEventListener('message', first);
      resolve(new WorkerEngine(w, () => { worker = null; }));
    });
    w.postMessage({ type: 'init', relaxedSimd: local.hasRelaxedSimd() } satisfies ToEngine);
  });
}

/** The engine: the shared worker (started on first use) unless `useWorker` (default:
 *  configure({ worker })) is false or the worker cannot start. */
export function engine(useWorker: boolean = workerPreferred()): Promise<Engine> {
  if (!useWorker) return Promise.resolve(page ??= new PageEngine());
  worker ??= startWorker().catch((e) => {
    console.warn(`genprm: the engine's worker could not start (${e instanceof Error ? e.message : e}); the model runs on the page's thread, which it blocks while it works`);
    return page ??= new PageEngine();
  });
  return worker;
}

/** Starts the engine and its wasm module; resolves with where the model will run. Rejects with
 *  a message saying what is wrong when the wasm module cannot load. */
export async function startEngine(): Promise<'worker' | 'page'> {
  const e = await engine();
  await e.call('start', []);
  return e.thread;
}

/** Initialises WebGPU in the engine with the adapter's limits; rejects with a message saying what
 *  is missing. A page whose navigator has no `gpu` gets none in the worker either. */
export async function gpuInfo(): Promise<GpuInfo> {
  return gpuInfoOf(await engine());
}

export async function gpuInfoOf(e: Engine): Promise<GpuInfo> {
  if (e.thread === 'worker' && !(typeof navigator !== 'undefined' && (navigator as Navigator & { gpu?: unknown }).gpu)) {
    throw new Error('this browser gives the page no WebGPU (navigator.gpu is missing)');
  }
  return e.call<GpuInfo>('gpuInfo', []);
}

/** Splits a pasted solution into paragraphs exactly as the CLI does (blank lines). */
export async function splitParagraphs(text: string): Promise<string[]> {
  return (await engine()).call('splitParagraphs', [text]);
}

/** Parses a grading file (JSON Lines or CSV, by its extension) into rows, as `genprm grade` does.
 *  Throws for whole-file problems; a malformed row comes back with `error` set. */
export async function parseGradingInput(bytes: Uint8Array, fileName: string): Promise<GradeRow[]> {
  return (await engine()).call('parseGradingInput', [bytes, fileName]);
}

/** The result record of a row (null result for a bad row): the JSON line `genprm grade` writes. */
export async function gradeResult(row: GradeRow, result: VerifyResult | null): Promise<GradeResult> {
  return (await engine()).call('gradeResult', [row, result]);
}

/** Whether the loaded wasm module has a function (older builds lack the newer ones). */
export async function hasWasmFunction(name: 'parseGradingInput' | 'gradeResult' | 'benchRandom'): Promise<boolean> {
  return (await engine()).call('hasWasmFunction', [name]);
}

/** The browser benchmark (random weights at a real shape), run where the engine runs models
 *  (`worker: false`: on the page's thread). */
export async function benchRandom(options: BenchOptions, onProgress: (p: BenchProgress) => void = () => {}, where: { worker?: boolean } = {}): Promise<BenchResult> {
  const e = await engine(where.worker);
  if ((options.device ?? 'gpu') === 'gpu') await gpuInfoOf(e);
  return e.call('benchRandom', [options], onProgress);
}
