// Where the package's static assets are served: the Pyodide runtime, the sympy + mpmath bytecode
// bundle and the tiny demo model. By default `dist/assets/` in the built package, one level above
// this module (dist/runtime/assets.js), resolved with import.meta.url so the package works from
// any URL or CDN path; `configure({ assetsURL })` points elsewhere (the demo app serves them from
// `generated/`).
let base: URL | null = null;
// Not a literal inside new URL(): bundlers would try to resolve a directory as a module asset.
// A site that bundles the package serves dist/assets/ itself and says where with configure().
const ASSET_DIR = '../assets/';

/** The base URL of the assets (a directory URL ending in '/'). */
export function assetsURL(): URL {
  return base ?? new URL(ASSET_DIR, import.meta.url);
}

export interface GenprmConfig {
  /** Directory holding pyodide/, python/genprm-python.zip and models/tiny-genprm/. */
  assetsURL?: string | URL;
  /** Run the model in a dedicated Web Worker (default true), which keeps the page responsive; false
   *  runs it on the page's thread. Where the worker cannot start, the page's thread is used anyway,
   *  with a console warning. */
  worker?: boolean;
}

let useWorker = true;

/** Whether the model should run in the engine's worker (configure({ worker })). */
export function workerPreferred(): boolean {
  return useWorker;
}

/** Package-wide settings; call before the first model or executor is created. */
export function configure(config: GenprmConfig): void {
  if (config.assetsURL !== undefined) {
    const s = String(config.assetsURL);
    base = new URL(s.endsWith('/') ? s : s + '/', globalThis.location?.href);
  }
  if (config.worker !== undefined) useWorker = config.worker;
}

/** The Pyodide runtime directory and the Python bundle, for PyodideExecutor. */
export function pythonAssetURLs(): { indexURL: string; bundleURL: string } {
  return {
    indexURL: new URL('pyodide/', assetsURL()).href,
    bundleURL: new URL('python/genprm-python.zip', assetsURL()).href,
  };
}

/** The tiny demo model shipped with the package. */
/** The demo model's files (web/scripts/copy-assets.mjs copies exactly these): the loader asks for
 *  no other name there, so a load logs no 404 for the optional files it probes. */
export const DEMO_MODEL_FILES: readonly string[] = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja'];

export function demoModelBase(): string {
  return new URL('models/tiny-genprm/', assetsURL()).href;
}
