// Messages between PyodideExecutor (the page), the sandboxed frame it starts (pyodide-frame.ts)
// and the Python workers inside that frame (pyodide-worker.ts), one worker per solution path.
import type { ExecOutcome } from '../contract/types.ts';

export type PythonStage = 'runtime' | 'packages' | 'imports' | 'ready';

export interface PythonProgress {
  stage: PythonStage;
  /** Bytes of the Python bundle downloaded so far (stage 'packages'). */
  loaded?: number;
  /** Its size when the server says so. */
  total?: number;
}

/** The files an interpreter starts from. The page downloads them and hands them in: the frame
 *  and its workers have no network at all. */
export interface PythonFiles {
  'pyodide.mjs': ArrayBuffer;
  'pyodide.asm.mjs': ArrayBuffer;
  'pyodide.asm.wasm': ArrayBuffer;
  'python_stdlib.zip': ArrayBuffer;
  'pyodide-lock.json': ArrayBuffer;
  /** The sympy + mpmath bytecode bundle. */
  'genprm-python.zip': ArrayBuffer;
}

/** One interpreter's versions and start-up cost (milliseconds, measured in the frame). */
export interface InterpreterInfo {
  python: string;
  sympy: string;
  /** From creating the worker to Python with sympy imported, ready to run code. */
  startMs: number;
  /** Of which: loading Pyodide in the worker (from the snapshot, or the runtime and its
   *  standard library from scratch). */
  pyodideMs: number;
  /** Of which: writing the bundle and importing sympy (or reseeding, after a snapshot). */
  sympyMs: number;
  /** 'snapshot': restored from the memory snapshot of a started interpreter; 'cold': from scratch. */
  from: 'snapshot' | 'cold';
}

// Page -> frame. Every request carries an id and a random nonce; the page accepts only the
// answer to a request it sent, from the frame it sent it to, carrying that request's nonce.
export type ToFrame =
  | { type: 'init'; id: number; nonce: string; files: PythonFiles; warm: number; outputLimit: number }
  /** Gives `path` a started interpreter (a fresh one unless it has one); answered 'prepared'. */
  | { type: 'prepare'; id: number; nonce: string; path: number }
  | { type: 'run'; id: number; nonce: string; path: number; code: string }
  /** Ends `path`'s interpreter (reset, or after a time-out); answered 'discarded'. */
  | { type: 'discard'; id: number; nonce: string; path: number };

// Frame -> page.
export type FromFrame =
  /** Sent at once for 'init' and 'prepare' (whose answers wait for a start-up): the frame is alive. */
  | { type: 'accepted'; id: number; nonce: string }
  | { type: 'ready'; id: number; nonce: string; info: InterpreterInfo }
  /** `fresh`: this request gave the path its interpreter (it had none). */
  | { type: 'prepared'; id: number; nonce: string; info: InterpreterInfo; fresh: boolean }
  | { type: 'failed'; id: number; nonce: string; message: string }
  /** `crashed`: the interpreter died during the run (it was ended; the path gets a fresh one). */
  | { type: 'result'; id: number; nonce: string; outcome: ExecOutcome; crashed?: boolean }
  | { type: 'discarded'; id: number; nonce: string };

// Frame -> worker.
export type ToWorker =
  /** `mode`: 'template' starts Python, imports sympy and answers with a memory snapshot of
   *  that state (no code of any solution has run in it); 'snapshot' starts from `snapshot`
   *  (fast); 'cold' starts from scratch (when no snapshot could be made). */
  | { type: 'init'; files: PythonFiles; outputLimit: number; marker: string; mode: 'template' | 'snapshot' | 'cold'; snapshot?: ArrayBuffer }
  | { type: 'run'; id: number; code: string };

// Worker -> frame. The frame accepts a result only for the run it sent to that worker.
export type FromWorker =
  | { type: 'ready'; python: string; sympy: string; pyodideMs: number; sympyMs: number }
  | { type: 'snapshot'; snapshot: ArrayBuffer }
  | { type: 'init_failed'; message: string }
  | { type: 'result'; id: number; outcome: ExecOutcome }
  | { type: 'crashed'; id: number; message: string };
