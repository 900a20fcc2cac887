import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DIST, REPO } from './paths.mjs';

/** Why the wasm-dependent tests cannot run, or null when the build has the real wasm module. */
export function wasmMissing() {
  if (!existsSync(join(REPO, 'pkg', 'wasm', 'genprm.js'))) return 'pkg/wasm/genprm.js is missing (run scripts/build-wasm, then rebuild the app)';
  if (readdirSync(join(DIST, 'assets')).some((f) => f.includes('genprm-wasm-missing'))) {
    return 'web/dist was built before pkg/wasm existed: rebuild the app (npm run build --prefix web)';
  }
  return null;
}

/** The bytes the wasm loader and the service worker validate to ask whether the engine has
 *  WebAssembly relaxed SIMD, read from their one source (pkg/src/runtime/relaxed-simd.ts). */
export const RELAXED_SIMD_PROBE = JSON.parse(
  readFileSync(join(REPO, 'pkg', 'src', 'runtime', 'relaxed-simd.ts'), 'utf8').match(/RELAXED_SIMD_PROBE[^=]*=\s*(\[[^\]]*\])/)[1],
);
