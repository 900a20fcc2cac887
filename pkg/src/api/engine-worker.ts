// The engine's worker: a dedicated Web Worker holding the wasm module, the WebGPU device and the
// loaded models, so that the page's main thread stays free while the model runs. The page
// (engine.ts) starts it with new Worker(new URL('./engine-worker.ts', import.meta.url), { type:
// 'module' }) (a bundler finds it from that; the package build writes './engine-worker.js') and
// sends it jobs (engine-protocol.ts): calls of the wasm module's functions, model loads and
// verifications. What needs the page is asked of the page: the Python runs (Pyodide lives in a
// sandboxed iframe, which a worker cannot make) and model files from a caller's own fetchFile.
// URL sources are downloaded here, into the same Cache API the page sees (model-cache.ts).
import type { ExecOutcome, ExecutorBridge, WasmModel } from '../contract/types.ts';
import { allowRelaxedSimd, gpuInfo, gradeResult, hasWasmFunction, parseGradingInput, splitParagraphs, wasm } from '../runtime/wasm.ts';
import { benchRandom } from '../runtime/bench.ts';
import { filesSource, urlSource, withContext, type ModelSource } from './model-sources.ts';
import { errorData, errorFrom, type FromEngine, type ToEngine } from './engine-protocol.ts';

// Typed by hand: the package compiles with the DOM library only (DOM and WebWorker clash).
const scope = self as unknown as {
  postMessage(m: FromEngine): void;
  addEventListener(type: 'message', listener: (ev: MessageEvent<ToEngine>) => void): void;
};
const post = (m: FromEngine) => scope.postMessage(m);

const models = new Map<number, WasmModel>();
let nextModel = 1;
const aborts = new Map<number, AbortController>();
/** The worker's requests to the page, by id. */
const asked = new Map<number, { resolve: (m: ToEngine) => void }>();
let nextAsk = 1;

type Ask = { type: 'fetch-file'; job: number; name: string; ifListed?: boolean } | { type: 'run'; job: number; path: number; code: string } | { type: 'reset'; job: number; path: number };

function ask<T extends ToEngine>(request: Ask): Promise<T> {
  const id = nextAsk++;
  return new Promise<ToEngine>((resolve) => {
    asked.set(id, { resolve });
    post({ ...request, id } as FromEngine);
  }) as Promise<T>;
}

async function job(id: number, work: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const abort = new AbortController();
  aborts.set(id, abort);
  try {
    await work(abort.signal);
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) {
      // A trap: the page fails every job (this one too) and starts a new worker when next asked.
      post({ type: 'lost', error: errorData(e) });
      (self as unknown as { close(): void }).close();
    } else {
      post({ type: 'failed', id, error: errorData(e) });
    }
  } finally {
    aborts.delete(id);
  }
}

function model(id: number): WasmModel {
  const m = models.get(id);
  if (!m) throw new Error('this model was freed');
  return m;
}

async function handle(m: ToEngine): Promise<void> {
  switch (m.type) {
    case 'init':
      allowRelaxedSimd(m.relaxedSimd);
      return;
    case 'call':
      return job(m.id, async () => {
        const a = m.args;
        let value: unknown;
        switch (m.fn) {
          case 'start': await wasm(); value = true; break;
          case 'gpuInfo': value = await gpuInfo(); break;
          case 'splitParagraphs': value = await splitParagraphs(a[0] as string); break;
          case 'parseGradingInput': value = await parseGradingInput(a[0] as Uint8Array, a[1] as string); break;
          case 'gradeResult': value = await gradeResult(a[0] as Parameters<typeof gradeResult>[0], a[1] as Parameters<typeof gradeResult>[1]); break;
          case 'hasWasmFunction': value = await hasWasmFunction(a[0] as Parameters<typeof hasWasmFunction>[0]); break;
          case 'benchRandom':
            value = await benchRandom(a[0] as Parameters<typeof benchRandom>[0], (bench) => post({ type: 'progress', id: m.id, progress: { phase: 'bench', bench } }));
            break;
        }
        post({ type: 'done', id: m.id, value });
      });
    case 'load':
      return job(m.id, async (signal) => {
        const s = m.source;
        let source: ModelSource;
        if (s.kind === 'url') {
          source = urlSource(s.label, s.base, (download) => post({ type: 'progress', id: m.id, progress: { phase: 'download', download } }), { cache: s.cache, signal, files: s.files, urls: s.urls, revalidate: s.revalidate });
        } else if (s.kind === 'files') {
          source = { ...filesSource(s.files), label: s.label };
        } else {
          source = {
            label: s.label,
            missing: new Map(),
            fetchFile: async (name, options) => {
              const got = await ask<Extract<ToEngine, { type: 'file' }>>({ type: 'fetch-file', job: m.id, name, ifListed: options?.ifListed });
              if (got.error) throw errorFrom(got.error);
              return got.blob;
            },
          };
        }
        const w = await wasm();
        let loaded: WasmModel;
        try {
          loaded = await w.Model.load(source.fetchFile, m.options, (load) => post({ type: 'progress', id: m.id, progress: { phase: 'load', load } }));
        } catch (e) {
          throw withContext(e, source);
        }
        if (signal.aborted) { loaded.free(); throw new DOMException('cancelled', 'AbortError'); }
        const handle = nextModel++;
        models.set(handle, loaded);
        post({ type: 'loaded', id: m.id, model: handle, info: loaded.info() });
      });
    case 'verify':
      return job(m.id, async (signal) => {
        const target = model(m.model);
        const executor: ExecutorBridge = {
          run: async (path, code) => (await ask<Extract<ToEngine, { type: 'ran' }>>({ type: 'run', job: m.id, path, code })).outcome as ExecOutcome,
          reset: async (path) => { await ask({ type: 'reset', job: m.id, path }); },
        };
        const result = await target.verify(m.request, executor, (event) => post({ type: 'event', id: m.id, event }), signal);
        post({ type: 'done', id: m.id, value: result, info: target.info() });
      });
    case 'info':
      return job(m.id, async () => { post({ type: 'done', id: m.id, value: model(m.model).info() }); });
    case 'abort':
      aborts.get(m.id)?.abort();
      return;
    case 'free':
      models.get(m.model)?.free();
      models.delete(m.model);
      return;
    case 'file':
    case 'ran':
    case 'was-reset': {
      const waiting = asked.get(m.id);
      asked.delete(m.id);
      waiting?.resolve(m);
      return;
    }
  }
}

scope.addEventListener('message', (ev) => { void handle(ev.data); });
post({ type: 'ready' });
