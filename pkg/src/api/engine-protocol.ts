// The messages between the page (engine.ts) and the engine's worker (engine-worker.ts). Every job
// the page starts has an id; the worker answers it with `done` or `failed`, after any number of
// `progress` and `event` messages. While a job runs, the worker may ask the page for what only the
// page has (a model file from a page-side fetchFile, a Python run in the executor's sandboxed
// frame) with requests of their own ids, which the page answers.
import type { BenchProgress, ExecOutcome, LoadOptions, LoadProgress, ModelInfo, VerifyEvent, VerifyRequest } from '../contract/types.ts';
import type { DownloadProgress } from '../runtime/model-cache.ts';

/** Where the worker gets a model's files: it downloads URL sources itself (into the same Cache
 *  API as the page's), is handed picked Files (structured clone: no copy of their bytes), and asks
 *  the page for anything else (a caller's own fetchFile). */
export type SourceSpec =
  | { kind: 'url'; label: string; base: string; cache: boolean; files?: readonly string[]; urls?: Readonly<Record<string, string>>; revalidate?: boolean }
  | { kind: 'files'; label: string; files: File[] }
  | { kind: 'page'; label: string };

/** The functions of the wasm module that the page calls through the worker. */
export type EngineCall = 'start' | 'gpuInfo' | 'splitParagraphs' | 'parseGradingInput' | 'gradeResult' | 'hasWasmFunction' | 'benchRandom';

/** An Error as it crosses postMessage: its message and name, and a failed GPU kernel's name. */
export interface ErrorData { message: string; name: string; kernel?: unknown }

export type ToEngine =
  /** Sent first: whether the page's engine has relaxed SIMD (the worker loads that build only then). */
  | { type: 'init'; relaxedSimd: boolean }
  | { type: 'call'; id: number; fn: EngineCall; args: unknown[] }
  | { type: 'load'; id: number; source: SourceSpec; options: LoadOptions }
  | { type: 'verify'; id: number; model: number; request: VerifyRequest }
  | { type: 'info'; id: number; model: number }
  | { type: 'abort'; id: number }
  | { type: 'free'; model: number }
  // Answers to the worker's requests.
  | { type: 'file'; id: number; blob: Blob | null; error?: ErrorData }
  | { type: 'ran'; id: number; outcome: ExecOutcome }
  | { type: 'was-reset'; id: number };

export type FromEngine =
  /** The worker's module ran (sent once, first): the page may use it. */
  | { type: 'ready' }
  | { type: 'progress'; id: number; progress: { phase: 'download'; download: DownloadProgress } | { phase: 'load'; load: LoadProgress } | { phase: 'bench'; bench: BenchProgress } }
  | { type: 'event'; id: number; event: VerifyEvent }
  | { type: 'done'; id: number; value: unknown; info?: ModelInfo }
  | { type: 'loaded'; id: number; model: number; info: ModelInfo }
  | { type: 'failed'; id: number; error: ErrorData }
  /** The wasm module trapped (a panic, an out-of-bounds access): its state cannot be trusted, so
   *  the worker ends itself, and the page fails every job and starts a new worker when next asked. */
  | { type: 'lost'; error: ErrorData }
  // Requests to the page, during job `job`.
  | { type: 'fetch-file'; id: number; job: number; name: string; ifListed?: boolean }
  | { type: 'run'; id: number; job: number; path: number; code: string }
  | { type: 'reset'; id: number; job: number; path: number };

export function errorData(e: unknown): ErrorData {
  if (e instanceof Error || (typeof DOMException !== 'undefined' && e instanceof DOMException)) {
    const err = e as Error & { kernel?: unknown };
    return { message: err.message, name: err.name, ...(err.kernel !== undefined ? { kernel: err.kernel } : {}) };
  }
  return { message: String(e), name: 'Error' };
}

export function errorFrom(d: ErrorData): Error {
  const err = new Error(d.message);
  if (d.name && d.name !== 'Error') err.name = d.name;
  if (d.kernel !== undefined) Object.assign(err, { kernel: d.kernel });
  return err;
}
