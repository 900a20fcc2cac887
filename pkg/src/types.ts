// The types of the wasm API, as pkg/src/contract.md specifies them. wasm-bindgen passes these
// objects as plain JS values, so its generated .d.ts types them loosely; the app and the package
// use these instead.

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

/** Returns a model file by name, or null when the model has no such file. */
export type FetchFile = (name: string) => Promise<Blob | null>;
