// The wasm module (pkg/wasm/genprm.js, built by scripts/build-wasm): loaded once, on first use,
// with errors turned into messages for the page.
import type * as Wasm from 'genprm-wasm';

type WasmModule = typeof Wasm;
let loading: Promise<WasmModule> | null = null;

export function wasm(): Promise<WasmModule> {
  if (!loading) {
    loading = (async () => {
      const mod = (await import('genprm-wasm')) as WasmModule;
      await mod.default();
      return mod;
    })();
    loading.catch(() => { loading = null; });
  }
  return loading;
}

/** Splits a pasted solution into paragraphs exactly as the CLI does (blank lines). */
export async function splitParagraphs(text: string): Promise<string[]> {
  return (await wasm()).splitParagraphs(text);
}
