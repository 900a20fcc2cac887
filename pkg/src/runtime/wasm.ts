// runtime/: what runs the model: the wasm module loaded once (wasm.ts; relaxed-simd.ts picks one
// of its two builds, wasm-module.d.ts types their bare names) on WebGPU or the CPU, the benchmark
// (bench.ts), where the static assets are served (assets.ts) and the Cache API that keeps
// downloaded model files (model-cache.ts). Imports contract/ only.
//
// The wasm module, loaded once on first use. Errors become messages that say what to do.
import { WEB_PAGE_TYPE, type GpuInfo, type GradeResult, type GradeRow, type VerifyResult, type WasmModule } from '../contract/types.ts';
import { RELAXED_SIMD_PROBE } from './relaxed-simd.ts';
import { PACKAGED_FILES } from './asset-urls.ts';

let loading: Promise<WasmModule> | null = null;
let relaxedAllowed = true;

/** Whether the relaxed-SIMD build may be loaded where the engine has it (default true). The engine's
 *  worker is told what the page's engine answers, so both pick the same build. Call before wasm(). */
export function allowRelaxedSimd(allowed: boolean): void {
  relaxedAllowed = allowed;
}

/** Whether this engine has WebAssembly relaxed SIMD ([`RELAXED_SIMD_PROBE`] validates). */
export function hasRelaxedSimd(): boolean {
  try {
    return WebAssembly.validate(new Uint8Array(RELAXED_SIMD_PROBE));
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
      if (relaxedAllowed && hasRelaxedSimd()) {
        try {
          const mod = await import('genprm-wasm-relaxed');
          await mod.default(await moduleBytes('wasm/genprm_relaxed_bg.wasm'));
          return mod as unknown as WasmModule;
        } catch (e) {
          console.warn(`genprm: the relaxed-SIMD module did not load (${e}); using the SIMD128 one`);
        }
      }
      const mod = await import('genprm-wasm');
      await mod.default(await moduleBytes('wasm/genprm_bg.wasm'));
      return mod as unknown as WasmModule;
    })();
    loading.catch(() => { loading = null; });
  }
  return loading;
}

/** The packaged module's response, checked: a server without the file, or one that answers with a
 *  web page in its place (a single-page app's fallback), gets an error naming the URL rather than
 *  WebAssembly's "expected magic word". Undefined in the source tree: the glue finds its module. */
async function moduleBytes(path: string): Promise<{ module_or_path: Response } | undefined> {
  const url = PACKAGED_FILES?.[path];
  if (!url) return undefined;
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`the genprm WebAssembly module: could not fetch ${url.href} (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!res.ok) throw new Error(`the genprm WebAssembly module: ${url.href} gave HTTP ${res.status}`);
  const type = res.headers.get('content-type') ?? '';
  if (WEB_PAGE_TYPE.test(type)) {
    throw new Error(`the genprm WebAssembly module: ${url.href} answered with a web page (${type.split(';')[0]}), not the module: the package's files are not served there`);
  }
  return { module_or_path: res };
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
