// Messages between PyodideExecutor (main thread) and pyodide-worker.ts.
import type { ExecOutcome } from './types.ts';

export type PythonStage = 'runtime' | 'packages' | 'imports' | 'ready';

export interface PythonProgress {
  stage: PythonStage;
  /** Bytes of the Python bundle downloaded so far (stage 'packages'). */
  loaded?: number;
  /** Its size when the server says so. */
  total?: number;
}

export type ToWorker =
  | { type: 'init'; indexURL: string; bundleURL: string }
  | { type: 'run'; id: number; path: number; code: string }
  | { type: 'reset'; id: number; path: number };

export type FromWorker =
  | { type: 'progress'; progress: PythonProgress }
  | { type: 'ready'; python: string; sympy: string }
  | { type: 'init_failed'; message: string }
  | { type: 'started'; id: number }
  | { type: 'result'; id: number; outcome: ExecOutcome }
  | { type: 'reset_done'; id: number }
  | { type: 'crashed'; id: number; message: string };
