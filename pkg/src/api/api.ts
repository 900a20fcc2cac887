// api/: the engine API a site calls: loadModel and the GenPRM model (api.ts), and where a model's
// files come from (model-sources.ts). It joins runtime/ (the wasm model) and python/ (the
// executor): imports those and contract/, never present/.
//
// The programmatic API: load GenPRM from a Hugging Face repo, a URL, local files or the bundled
// demo model (with progress), and verify solutions with streamed events, cancellable, with the
// model's Python run in the shared Pyodide worker.
//
//   import { loadModel } from 'genprm';
//   const model = await loadModel('GenPRM/GenPRM-1.5B', { onProgress: console.log });
//   const result = await model.verify({ problem, steps }, { onEvent: (e) => console.log(e) });
//   for await (const e of model.stream({ problem, steps })) ...
//
// The model runs in the engine's Web Worker (engine.ts), one per page, unless `worker: false`
// (here or in configure()) or the worker cannot start; the Python runs stay on the page (the
// executor's sandboxed frame), asked for by the worker.
import { pythonAssetURLs, demoModelBase, demoModelURLs } from '../runtime/assets.ts';
import { baseURLFor, filesSource, urlSource, withContext, type ModelSource } from './model-sources.ts';
import { htmlInstead, type DownloadProgress } from '../runtime/model-cache.ts';
import { PyodideExecutor, type PyodideExecutorOptions } from '../python/pyodide-executor.ts';
import type { ExecutorBridge, FetchFile, GpuInfo, LoadOptions, LoadProgress, ModelInfo, VerifyEvent, VerifyRequest, VerifyResult, WasmModel } from '../contract/types.ts';
import { engine, gpuInfoOf } from './engine.ts';

/** What to load: `'demo'` (the tiny model shipped with the package), a Hugging Face repo id
 *  (`owner/name`, optionally `@revision`), a base URL holding the files, local files (an
 *  `<input type=file multiple>`'s FileList or a folder pick), or any `fetchFile`. */
export type ModelSpec = 'demo' | string | File[] | FileList | ModelSource | { fetchFile: FetchFile; label?: string };

export type ModelLoadProgress =
  | { phase: 'download'; file: string; url: string; loaded: number; total?: number; fromCache: boolean }
  | { phase: 'load'; stage: LoadProgress['stage']; done: number; total: number; tensor?: string };

export interface LoadModelOptions {
  /** 'auto' (default): WebGPU when the browser has it, else the CPU (much slower). */
  device?: 'gpu' | 'cpu' | 'auto';
  /** Weights in memory: q4 (default for downloaded models), q8, or null (as stored, in f32; the demo model's default). */
  quant?: 'q4' | 'q8' | null;
  headQuant?: 'q8' | null;
  /** f16 mode on WebGPU for quantized weights (prompt products and KV cache in f16): by default
   *  where the adapter has shader-f16; true requires it, false keeps f32. */
  gpuF16?: boolean;
  /** The KV cache in f16: half its memory (Maj@8 over a long solution holds gigabytes of keys
   *  and values in f32), attention still computed in f32. By default f16 exactly in f16 mode on
   *  WebGPU and f32 on the CPU; true on WebGPU requires f16 mode. */
  kvF16?: boolean;
  /** How decode steps reach WebGPU: 'replay' (default: recorded once and replayed) or 'launch'. */
  gpuDecode?: 'replay' | 'launch';
  /** Keep downloads in the browser's Cache API for offline reloads (default true). */
  cache?: boolean;
  /** Run the model in the engine's Web Worker (default: configure()'s `worker`, true), keeping
   *  the page's thread free; false runs it on the page's thread. */
  worker?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: ModelLoadProgress) => void;
}

export interface VerifyOptions {
  /** Runs the model's Python; default: the shared Pyodide worker (sharedExecutor()). */
  executor?: ExecutorBridge;
  /** Each event as it happens (step started, text, code ran, judged, step done). */
  onEvent?: (e: VerifyEvent) => void;
  /** Aborts between tokens: the result then has complete=false, error "cancelled". */
  signal?: AbortSignal;
}

/** Turns a ModelSpec into a source of files. */
export function modelSource(spec: ModelSpec, options: { cache?: boolean; signal?: AbortSignal; onDownload?: (p: DownloadProgress) => void } = {}): ModelSource {
  const onProgress = options.onDownload ?? (() => {});
  if (typeof spec === 'string') {
    if (spec.trim() === 'demo') return urlSource('the tiny demo model', demoModelBase(), onProgress, { cache: false, signal: options.signal, urls: demoModelURLs() });
    return urlSource(spec.trim(), baseURLFor(spec), onProgress, { cache: options.cache ?? true, signal: options.signal });
  }
  if (typeof FileList !== 'undefined' && spec instanceof FileList) return filesSource([...spec]);
  if (Array.isArray(spec)) return filesSource(spec);
  const s = spec as Partial<ModelSource> & { fetchFile: FetchFile };
  return { label: s.label ?? 'custom files', fetchFile: s.fetchFile, missing: s.missing ?? new Map(), location: s.location, files: s.files };
}

/** Loads a model; rejects with a message naming the file or field at fault. */
export async function loadModel(spec: ModelSpec, options: LoadModelOptions = {}): Promise<GenPRM> {
  const isDemo = spec === 'demo';
  const report = options.onProgress ?? (() => {});
  const source = modelSource(spec, {
    cache: options.cache, signal: options.signal,
    onDownload: (p) => report({ phase: 'download', file: p.name, url: p.url, loaded: p.loaded, total: p.total, fromCache: !!p.fromCache }),
  });
  const eng = await engine(options.worker);
  let device = options.device ?? 'auto';
  let gpu: GpuInfo | null = null;
  if (device !== 'cpu') {
    try {
      gpu = await gpuInfoOf(eng);
      device = 'gpu';
    } catch (e) {
      if (device === 'gpu') throw new Error(`WebGPU is not available: ${errorText(e)}`);
      device = 'cpu';
    }
  }
  const load: LoadOptions = {
    device,
    quant: options.quant !== undefined ? options.quant : isDemo ? null : 'q4',
    headQuant: options.headQuant ?? null,
    ...(options.gpuF16 === undefined ? {} : { gpuF16: options.gpuF16 }),
    ...(options.kvF16 === undefined ? {} : { kvF16: options.kvF16 }),
    ...(options.gpuDecode === undefined ? {} : { gpuDecode: options.gpuDecode }),
  };
  let model: WasmModel;
  try {
    model = await eng.load(source, load, (p) => report({ phase: 'load', ...p }), options.signal);
  } catch (err) {
    // A cancelled load fails wherever it was (a download, a file read): say so by name.
    if (options.signal?.aborted) throw new DOMException('the model load was cancelled', 'AbortError');
    const error = withContext(err, source);
    const folder = typeof spec === 'string' ? await siteFolderNamed(spec) : null;
    if (folder) error.message += ` — "${String(spec).trim()}" was read as a Hugging Face repository id, and this site has a model folder at ${folder}: write that for it`;
    throw error;
  }
  if (options.signal?.aborted) { model.free(); throw new DOMException('cancelled', 'AbortError'); }
  // A pack is loaded as it is: an explicit quant it cannot honour is an error, not ignored.
  const stored = model.info().quant;
  if (options.quant !== undefined && stored !== options.quant) {
    model.free();
    throw new Error(`${source.label} is a ${stored ?? 'f32'} pack, loaded as it is: quant ${options.quant ?? 'none'} cannot apply to it (give the float checkpoint to choose the format, or leave quant out)`);
  }
  return new GenPRM(model, source.label, gpu);
}

/** For a model given as `models/x` (a Hugging Face id by its form) whose load failed: that folder
 *  on this site, relative to the page or to its root, when it has a config.json; else null. */
async function siteFolderNamed(spec: string): Promise<string | null> {
  const s = spec.trim().replace(/\/$/, '');
  const here = (globalThis as { location?: { href: string } }).location?.href;
  if (!here || !/^[\w-][\w.-]*\/[\w.-]+$/.test(s)) return null;
  for (const folder of [`./${s}/`, `/${s}/`]) {
    const url = new URL(`${folder}config.json`, here).href;
    try {
      const res = await fetch(url, { method: 'HEAD', cache: 'no-store' });
      if (res.ok && !htmlInstead(url, res.headers.get('content-type'))) return folder;
    } catch {
      // No answer: no suggestion.
    }
  }
  return null;
}

// One verification at a time per executor: the Python namespaces are per solution path.
const queues = new WeakMap<object, Promise<unknown>>();
function serialised<T>(key: object, job: () => Promise<T>): Promise<T> {
  const prev = queues.get(key) ?? Promise.resolve();
  const next = prev.then(job, job);
  queues.set(key, next.catch(() => undefined));
  return next;
}

/** A loaded GenPRM. */
export class GenPRM {
  readonly info: ModelInfo;

  /** Where the model runs: 'worker' (the engine's Web Worker) or 'page' (the page's thread). */
  readonly thread: 'worker' | 'page';

  constructor(readonly wasmModel: WasmModel, readonly label: string, readonly gpu: GpuInfo | null) {
    this.info = wasmModel.info();
    this.thread = (wasmModel as { thread?: 'worker' }).thread ?? 'page';
  }

  get device(): 'gpu' | 'cpu' { return this.info.device === 'cpu' ? 'cpu' : 'gpu'; }

  /** Why the model is gone, or null while it is usable: the engine's worker stopped (a crash, a
   *  trap in the wasm module) and took the model with it. Load it again (a new worker starts). */
  get lost(): Error | null { return (this.wasmModel as { lost?: Error | null }).lost ?? null; }

  /** Verifies a solution; resolves with the result (complete=false with `error` when stopped
   *  part-way, judged steps kept), rejects on invalid arguments and when the model is lost (its
   *  worker stopped: see `lost`). Calls are queued. */
  verify(request: VerifyRequest, options: VerifyOptions = {}): Promise<VerifyResult> {
    const runsCode = request.options?.execute !== false;
    const executor = options.executor ?? (runsCode ? sharedExecutor() : NO_EXECUTOR);
    return serialised(executor, () => serialised(this, async () => {
      if (options.signal?.aborted) return cancelledResult();
      if (runsCode) {
        const samples = request.options?.samples ?? 1;
        // Fresh namespaces for each solution path (a worker that cannot start answers each run
        // with an error outcome, which the protocol hands to the model as the official text).
        for (let p = 0; p < samples; p++) await executor.reset(p).catch(() => undefined);
      }
      return this.wasmModel.verify(request, executor, (e) => options.onEvent?.(e), options.signal ?? null);
    }));
  }

  /** The same as verify(), as an async iterable of events; `result` resolves at the end.
   *  Leaving the loop early (break, return, a throw) cancels the verification, as its signal
   *  would: `result` then resolves with complete=false, error "cancelled". */
  stream(request: VerifyRequest, options: Omit<VerifyOptions, 'onEvent'> = {}): AsyncIterable<VerifyEvent> & { result: Promise<VerifyResult> } {
    const buffer: VerifyEvent[] = [];
    let wake: (() => void) | null = null;
    let finished = false;
    let failure: unknown = null;
    const left = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, left.signal]) : left.signal;
    const result = this.verify(request, { ...options, signal, onEvent: (e) => { buffer.push(e); wake?.(); } });
    result.then(() => { finished = true; wake?.(); }, (e) => { failure = e; finished = true; wake?.(); });
    return {
      result,
      async *[Symbol.asyncIterator]() {
        try {
          for (;;) {
            while (buffer.length) yield buffer.shift()!;
            if (finished) { if (failure) throw failure; return; }
            await new Promise<void>((r) => { wake = r; });
            wake = null;
          }
        } finally {
          if (!finished) left.abort();
        }
      },
    };
  }

  /** Releases the weights (GPU buffers). The model cannot be used afterwards. */
  free(): void { this.wasmModel.free(); }
}

function cancelledResult(): VerifyResult {
  return { complete: false, error: 'cancelled', steps: [], first_error_step: -1, scores: { min: 0, last: 0, mean: 0 } };
}

const NO_EXECUTOR: ExecutorBridge = {
  run: async () => ({ outcome: 'error', kind: 'RuntimeError', message: 'code execution is off' }),
  reset: async () => undefined,
};

let shared: PyodideExecutor | null = null;

/** The Pyodide worker the models use unless given another executor; started on first use. */
export function sharedExecutor(options: Partial<PyodideExecutorOptions> = {}): PyodideExecutor {
  if (!shared) shared = new PyodideExecutor({ ...pythonAssetURLs(), ...options });
  return shared;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
