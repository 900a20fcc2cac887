// The wasm module, loaded once on first use. Errors become messages that say what to do.
import type { GpuInfo, GradeResult, GradeRow, VerifyResult, WasmModule } from './types.ts';

let loading: Promise<WasmModule> | null = null;

/** A module holding one relaxed-SIMD instruction (`i8x16.relaxed_swizzle`): it validates exactly
 *  where the engine has WebAssembly relaxed SIMD (Chrome and Edge 114+). The service worker
 *  (web/src/service-worker.js) asks the same question to cache the matching module. */
export const RELAXED_SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15, 253, 128, 2, 11]);

/** Whether this engine has WebAssembly relaxed SIMD. */
export function hasRelaxedSimd(): boolean {
  try {
    return WebAssembly.validate(RELAXED_SIMD_PROBE);
  } catch {
    return false;
  }
}

/** The initialised wasm module (genprm.js + genprm_bg.wasm, next to this package's modules; or
 *  genprm_relaxed.js + genprm_relaxed_bg.wasm, whose q4 kernel uses relaxed SIMD, where the
 *  engine has it). */
export function wasm(): Promise<WasmModule> {
  if (!loading) {
    loading = (async () => {
      if (hasRelaxedSimd()) {
        try {
          const mod = await import('genprm-wasm-relaxed');
          await mod.default();
          return mod as unknown as WasmModule;
        } catch (e) {
          console.warn(`genprm: the relaxed-SIMD module did not load (${e}); using the SIMD128 one`);
        }
      }
      const mod = await import('genprm-wasm');
      await mod.default();
      return mod as unknown as WasmModule;
    })();
    loading.catch(() => { loading = null; });
  }
  return loading;
}

/** Initialises WebGPU with the adapter's limits; rejects with a message saying what is missing. */
export async function gpuInfo(): Promise<GpuInfo> {
  return (await wasm()).gpuInfo();
}

/** Splits a pasted solution into paragraphs exactly as the CLI does (blank lines). */
export async function splitParagraphs(text: string): Promise<string[]> {
  return (await wasm()).splitParagraphs(text);
}

function missing(name: string): Error {
  return new Error(`this build of the genprm wasm module has no ${name}() (it predates it): rebuild it with scripts/build-wasm`);
}

/** Parses a grading file (JSON Lines or CSV, by its extension) into rows, as `genprm grade` does.
 *  Throws for whole-file problems; a malformed row comes back with `error` set. */
export async function parseGradingInput(bytes: Uint8Array, fileName: string): Promise<GradeRow[]> {
  const w = await wasm();
  if (!w.parseGradingInput) throw missing('parseGradingInput');
  return w.parseGradingInput(bytes, fileName);
}

/** The result record of a row (null result for a bad row): the JSON line `genprm grade` writes. */
export async function gradeResult(row: GradeRow, result: VerifyResult | null): Promise<GradeResult> {
  const w = await wasm();
  if (!w.gradeResult) throw missing('gradeResult');
  return w.gradeResult(row, result);
}

/** Whether the loaded wasm module has a function (older builds lack the newer ones). */
export async function hasWasmFunction(name: 'parseGradingInput' | 'gradeResult' | 'benchRandom'): Promise<boolean> {
  return typeof (await wasm())[name] === 'function';
}
