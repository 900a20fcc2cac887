// Where the package's static assets are served: the Pyodide runtime, the sympy + mpmath bytecode
// bundle and the tiny demo model (dist/assets/ in the built package).
//
// - By default each file is found where the package's build says it is (asset-urls.ts): one
//   `new URL('<literal>', import.meta.url)` per file, so a bundler (Vite, webpack, Rollup)
//   copies each into the site's build, and with no bundler they resolve next to the modules.
//   A site configures nothing.
// - `configure({ assetsURL })` points at a copy of dist/assets/ elsewhere (a CDN, or the
//   `genprm-assets` command's copy): every file is then asked for under that directory by its
//   own name. The demo app does this (its assets are served from `generated/`).
import { PACKAGED_FILES } from './asset-urls.ts';
import { PYODIDE_RUNTIME_FILES, type PyodideRuntimeFile } from '../contract/types.ts';

let base: URL | null = null;
// Not written as new URL('<literal>', import.meta.url): bundlers would take the directory for a
// module or an asset to copy (webpack warns "the request of a dependency is an expression").
const ASSET_DIR = '../assets/';
const HERE = import.meta.url;

/** The base URL of the assets (a directory URL ending in '/'): configure()'s `assetsURL`, else
 *  the assets folder next to the package's modules. A bundled site's files are not under one
 *  directory (the bundler names each): ask {@link assetURL} for a file. */
export function assetsURL(): URL {
  return base ?? new URL(ASSET_DIR, HERE);
}

/** Where one asset is fetched from, by its path under dist/assets/ ('pyodide/pyodide.asm.wasm'):
 *  under configure()'s `assetsURL` when set, else where the package's build put it. */
export function assetURL(path: string): URL {
  if (base) return new URL(path, base);
  return PACKAGED_FILES?.[`assets/${path}`] ?? new URL(path, assetsURL());
}

export interface GenprmConfig {
  /** A directory holding a copy of the package's dist/assets/ (pyodide/,
   *  python/genprm-python.zip and models/tiny-genprm/), for a CDN or a site that serves them
   *  itself; by default they are found without configuration (bundled or not). */
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

/** The name each Pyodide runtime file has in the package's assets/pyodide/: Pyodide's own, but its
 *  two JavaScript modules with `.txt` appended. Bundlers' dev servers compile the JavaScript they
 *  serve (Vite's answers 500 for these two); the Python frame imports them from memory, so it
 *  needs only their bytes, which a `.txt` file is served as. */
export function packagedPyodideName(file: PyodideRuntimeFile): string {
  return file.endsWith('.mjs') ? `${file}.txt` : file;
}

/** The Pyodide runtime and the Python bundle, for PyodideExecutor: the runtime's directory and
 *  each of its files' own URL (see {@link packagedPyodideName}; renamed again by a bundler). */
export function pythonAssetURLs(): { indexURL: string; bundleURL: string; runtimeURLs: Record<PyodideRuntimeFile, string> } {
  const runtimeURLs = Object.fromEntries(PYODIDE_RUNTIME_FILES.map((f) => [f, assetURL(`pyodide/${packagedPyodideName(f)}`).href])) as Record<PyodideRuntimeFile, string>;
  return {
    indexURL: assetURL('pyodide/').href,
    bundleURL: assetURL('python/genprm-python.zip').href,
    runtimeURLs,
  };
}

/** The demo model's files (web/scripts/copy-assets.mjs copies exactly these): the loader asks for
 *  no other name there, so a load logs no 404 for the optional files it probes. */
export const DEMO_MODEL_FILES: readonly string[] = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja'];

/** The tiny demo model's directory (under configure()'s `assetsURL`, or next to the modules). */
export function demoModelBase(): string {
  return assetURL('models/tiny-genprm/').href;
}

/** Each of the demo model's files and its URL (see {@link assetURL}). */
export function demoModelURLs(): Record<string, string> {
  return Object.fromEntries(DEMO_MODEL_FILES.map((f) => [f, assetURL(`models/tiny-genprm/${f}`).href]));
}
