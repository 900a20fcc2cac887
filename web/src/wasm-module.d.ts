// The wasm-bindgen module (pkg/wasm/genprm.js), typed as pkg/src/contract.md specifies it.
declare module 'genprm-wasm' {
  import type { ExecutorBridge, FetchFile, GpuInfo, LoadOptions, LoadProgress, ModelInfo, VerifyEvent, VerifyRequest, VerifyResult } from '../../pkg/src/types.ts';
  export default function init(module_or_path?: { module_or_path: URL | string | Response | BufferSource }): Promise<unknown>;
  export function gpuInfo(): Promise<GpuInfo>;
  export function splitParagraphs(text: string): string[];
  export class Model {
    private constructor();
    static load(fetchFile: FetchFile, options: LoadOptions, onProgress: (p: LoadProgress) => void): Promise<Model>;
    info(): ModelInfo;
    verify(request: VerifyRequest, executor: ExecutorBridge, onEvent: (e: VerifyEvent) => void, signal?: AbortSignal | null): Promise<VerifyResult>;
    free(): void;
  }
}
