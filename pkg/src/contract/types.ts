// contract/: what the Rust library and this package agree on: the wasm API's types (types.ts,
// as contract.md specifies them) and GenPRM's defaults (defaults.ts, checked against the library
// by its tests). Types and constants only: it imports nothing; every other folder may import it.
//
// The types of the wasm API, as contract.md (beside this file) specifies them. wasm-bindgen
// passes these objects as plain JS values, so its generated .d.ts types them loosely; the app and
// the package use these instead.

export interface GpuInfo {
  backend: string;
  features: string[];
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  shaderF16: boolean;
}

export interface LoadOptions {
  device?: 'gpu' | 'cpu';
  quant?: 'q4' | 'q8' | null;
  headQuant?: 'q8' | null;
  /** f16 mode on WebGPU with quantized weights (prompt products and KV cache in f16): absent =
   *  where the adapter has shader-f16, true = always (an error without it), false = never. */
  gpuF16?: boolean;
  /** The KV cache in f16 (attention computed in f32): absent = f16 exactly in f16 mode on
   *  WebGPU and f32 on the CPU, true = always (on WebGPU an error outside f16 mode), false = never. */
  kvF16?: boolean;
  /** How decode steps reach WebGPU: 'replay' (default; recorded once, replayed with new
   *  inputs: a fraction of the host's work per token) or 'launch' (every launch anew). */
  gpuDecode?: 'replay' | 'launch';
}

export interface LoadProgress {
  stage: 'config' | 'tokenizer' | 'headers' | 'weights' | 'checksum' | 'ready';
  done: number;
  total: number;
  tensor?: string;
}

export interface ModelInfo {
  modelType: string;
  layers: number;
  hidden: number;
  vocab: number;
  parameters: number;
  quant: string | null;
  device: string;
  /** Whether the model runs in f16 mode: prompt products and KV cache in f16 (quantized
   *  weights on a WebGPU adapter with shader-f16, unless turned off with gpuF16: false). */
  gpuF16: boolean;
  /** Whether the KV cache holds keys and values in f16. */
  kvF16: boolean;
  /** The CPU kernel of quantized products: 'Simd128', or 'RelaxedSimd' in the module built with
   *  WebAssembly relaxed SIMD (loaded where the engine has it). */
  cpuKernel?: string;
  /** Decode steps replayed from a recording so far, and recordings made (WebGPU, quantized
   *  weights). */
  decodeReplays?: number;
  decodeRecordings?: number;
}

/** The outcome of running one code block, before it is turned into the official message. */
export type ExecOutcome =
  | { outcome: 'ok'; stdout: string }
  | { outcome: 'error'; kind: string; message: string }
  | { outcome: 'timeout'; message: string };

/** Runs the Python GenPRM writes: one namespace per solution path, the official 5 s limit. */
export interface ExecutorBridge {
  run(path: number, code: string): Promise<ExecOutcome>;
  reset(path: number): Promise<void>;
}

export interface ProtocolOptions {
  samples?: number;
  style?: 'card' | 'processbench';
  reward?: 'official' | 'calibrated';
  mode?: 'cot_code' | 'cot' | 'code';
  history?: 'per_path' | 'shared';
  template?: 'checkpoint' | 'original' | 'think';
  greedy?: boolean;
  temperature?: number;
  top_k?: number;
  top_p?: number;
  seed?: number;
  execute?: boolean;
  stop_at_first_error?: boolean;
}

export interface VerifyRequest {
  problem: string;
  steps: string[];
  options?: ProtocolOptions;
}

export interface Reward {
  value: number;
  judgement: 'Yes' | 'No' | null;
  p_yes: number | null;
  p_no: number | null;
  note?: string;
}

export interface CodeRun {
  code: string | null;
  output: string;
}

export interface SampleVerdict {
  text: string;
  code_runs: CodeRun[];
  reward: Reward;
  fallback: boolean;
  generations: number;
}

export interface StepVerdict {
  index: number;
  reward: number;
  samples: SampleVerdict[];
}

export type VerifyEvent =
  | { event: 'step_started'; step: number; sample: number }
  | { event: 'text'; step: number; sample: number; text: string; source: 'forced' | 'model' | 'code_output' }
  | { event: 'fallback'; step: number; sample: number; text: string }
  | { event: 'code_ran'; step: number; sample: number; code: string | null; output: string }
  | { event: 'judged'; step: number; sample: number; reward: Reward }
  | { event: 'step_done'; verdict: StepVerdict };

export interface VerifyResult {
  complete: boolean;
  error: string | null;
  steps: StepVerdict[];
  first_error_step: number;
  scores: { min: number; last: number; mean: number };
}

/** Returns a model file by name, or null when the model has no such file. With `ifListed`, the
 *  file is optional and the loader has as good a fallback: a source that cannot tell whether it
 *  exists without a request that may fail (a site's folder with no file list, where a 404 is
 *  logged in the console) answers null without asking. A source may ignore the option. */
export type FetchFile = (name: string, options?: FetchFileOptions) => Promise<Blob | null>;

/** The second argument of a {@link FetchFile}. */
export interface FetchFileOptions { ifListed?: boolean }

// Grading (contract.md, "Grading"): the rows of an input file and the record `genprm grade` writes.

/** One row of a grading input (JSON Lines or CSV), as the wasm `parseGradingInput` returns it. */
export interface GradeRow {
  /** 1-based line of the row in the file (the first line of a multi-line CSV record). */
  line: number;
  id: string | null;
  student_id: string | null;
  /** The reference first wrong step (0-based, −1 = correct), when the file gives one. */
  label: number | null;
  problem: string | null;
  steps: string[] | null;
  /** Set for a malformed row (line number + reason); such a row is reported, not graded. */
  error: string | null;
}

/** The result record of one row: exactly the JSON line `genprm grade` writes. */
export interface GradeResult {
  line: number;
  id?: string;
  student_id?: string;
  status: 'graded' | 'bad_row' | 'failed';
  error?: string;
  rewards: number[];
  first_error_step: number | null;
  scores: { min: number; last: number; mean: number } | null;
  label: number | null;
  agreement: boolean | null;
  steps: StepVerdict[];
}

// Benchmark (the wasm `benchRandom`, the browser's `genprm bench --random-shape`).

export interface BenchOptions {
  shape?: 'qwen2-1.5b' | 'qwen2-small';
  quant?: 'q4' | 'q8' | null;
  device?: 'gpu' | 'cpu';
  batch?: number;
  promptTokens?: number;
  newTokens?: number;
}

export interface BenchProgress {
  stage: 'load' | 'compile' | 'prefill' | 'decode' | 'bandwidth';
}

export interface BenchResult {
  load_s: number;
  first_call_s: number;
  prefill_tok_s: number;
  ttft_s: number;
  decode_tok_s: number;
  peak_host_mib?: number | null;
  peak_device_mib?: number | null;
  /** Whether the model ran in f16 mode on WebGPU; null on the CPU. */
  gpu_f16?: boolean | null;
  /** The packed matrix-vector kernel of decode on WebGPU (`per-unit` on a software adapter,
   *  `cooperative` on a hardware GPU); null on the CPU and for f32 weights. */
  gpu_matvec?: string | null;
  /** The GPU adapter's name as its driver reports it (WebGPU's description, often empty); null on the CPU. */
  gpu_adapter?: string | null;
  /** Bytes of parameters one decode step reads (every matrix but the embedding's lookup). */
  weight_bytes_per_step?: number;
  /** The device's memory read bandwidth in GB/s, measured after the run; null on the CPU. */
  read_gb_s?: number | null;
  /** Decode's memory-bandwidth bound (bandwidth ÷ weight bytes per step), tokens/s. */
  decode_bound_tok_s?: number | null;
  /** How the KV cache stored keys and values: 'f32' or 'f16'. */
  kv_cache?: string;
  /** The KV cache's size after decoding, in MiB. */
  kv_cache_mib?: number;
}

/** A model loaded by the wasm module (its `Model` class). */
export interface WasmModel {
  info(): ModelInfo;
  verify(request: VerifyRequest, executor: ExecutorBridge, onEvent: (e: VerifyEvent) => void, signal?: AbortSignal | null): Promise<VerifyResult>;
  free(): void;
}

/** The wasm module's exports, as contract.md specifies them (the grading and benchmark
 *  functions are optional: older builds lack them). */
export interface WasmModule {
  gpuInfo(): Promise<GpuInfo>;
  splitParagraphs(text: string): string[];
  Model: { load(fetchFile: FetchFile, options: LoadOptions, onProgress: (p: LoadProgress) => void): Promise<WasmModel> };
  parseGradingInput?: (bytes: Uint8Array, fileName: string) => GradeRow[];
  gradeResult?: (row: GradeRow, result: VerifyResult | null) => GradeResult;
  benchRandom?: (options: BenchOptions, onProgress: (p: BenchProgress) => void) => Promise<BenchResult>;
}

/** A Content-Type of a web page (HTML or XHTML): what a single-page app's server sends for every
 *  unknown path, with status 200, where a model file or an asset should be. */
export const WEB_PAGE_TYPE = /^\s*(text\/html|application\/xhtml\+xml)\b/i;

/** The Pyodide runtime's files, as the package ships them in assets/pyodide/: the page downloads
 *  each (PyodideExecutor) and hands them to the sandboxed frame, so each may have its own URL. */
export const PYODIDE_RUNTIME_FILES = ['pyodide.mjs', 'pyodide.asm.mjs', 'pyodide.asm.wasm', 'python_stdlib.zip', 'pyodide-lock.json'] as const;
/** One of {@link PYODIDE_RUNTIME_FILES}. */
export type PyodideRuntimeFile = typeof PYODIDE_RUNTIME_FILES[number];
