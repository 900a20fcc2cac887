// The demo app's build. The package sources (../pkg/src) are compiled in: the pages import the
// package's public entry as 'genprm' (../pkg/src/index.ts), as a site would; the wasm module is
// pkg/wasm/genprm.js (scripts/build-wasm); static files (Pyodide, the Python bundle, the tiny demo
// model) come from public/generated/ (scripts/copy-assets.mjs).
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';
import { RELAXED_SIMD_PROBE } from '../pkg/src/runtime/relaxed-simd.ts';

const here = dirname(fileURLToPath(import.meta.url));
// The two builds of the module (scripts/build-wasm): SIMD128, and relaxed SIMD where the engine
// has it (pkg/src/runtime/wasm.ts picks).
const wasmModules: Record<string, string> = {
  'genprm-wasm': resolve(here, '../pkg/wasm/genprm.js'),
  'genprm-wasm-relaxed': resolve(here, '../pkg/wasm/genprm_relaxed.js'),
};

// Without pkg/wasm the app still builds and runs the parts that need no model (editor, Python):
// importing the model module then fails with a message saying how to build it.
function wasmModulePlugin(): Plugin {
  const missingId = '\0genprm-wasm-missing';
  return {
    name: 'genprm-wasm',
    resolveId(id) {
      const path = wasmModules[id];
      if (!path) return null;
      if (existsSync(path)) return path;
      this.warn(`${relative(here, path)} is missing (run scripts/build-wasm): the app will say the model cannot load`);
      return missingId;
    },
    load(id) {
      if (id !== missingId) return null;
      return 'throw new Error("the genprm wasm module was not built (pkg/wasm/genprm.js is missing; run scripts/build-wasm)");';
    },
  };
}

// dist/sw.js: src/lib/service-worker.js with the list of files to cache on install (everything
// the pages need: pages, scripts, styles, fonts, the wasm, Pyodide, the Python bundle, the demo
// model) and a version hashed from their contents, so any change installs a new worker whose
// caches replace the old ones. The package copy (vendor/) and the test harness are left out:
// the worker caches vendor/ files as the embedding example fetches them.
function serviceWorkerPlugin(): Plugin {
  let outDir = '';
  return {
    name: 'genprm-sw',
    apply: 'build',
    configResolved(config) { outDir = resolve(config.root, config.build.outDir); },
    closeBundle() {
      const files: string[] = [];
      const walk = (dir: string) => {
        for (const e of readdirSync(dir, { withFileTypes: true })) {
          const path = join(dir, e.name);
          if (e.isDirectory()) walk(path);
          else files.push(relative(outDir, path).split(sep).join('/'));
        }
      };
      walk(outDir);
      const precache = files
        .filter((f) => f !== 'sw.js' && !f.startsWith('vendor/') && !f.startsWith('harness/') && !f.endsWith('.map'))
        .sort();
      const hash = createHash('sha256');
      for (const f of precache) { hash.update(f); hash.update(readFileSync(join(outDir, f))); }
      const template = readFileSync(resolve(here, 'src/lib/service-worker.js'), 'utf8');
      const sw = template
        .replace('self.__GENPRM_PRECACHE__', JSON.stringify(precache))
        .replace('self.__GENPRM_RELAXED_SIMD_PROBE__', JSON.stringify(RELAXED_SIMD_PROBE))
        .replace('__GENPRM_VERSION__', hash.digest('hex').slice(0, 16));
      writeFileSync(join(outDir, 'sw.js'), sw);
    },
  };
}

export default defineConfig({
  base: './',
  // The package's public entry, nothing else of it (tsconfig.json's paths say the same).
  resolve: { alias: [{ find: /^genprm$/, replacement: resolve(here, '../pkg/src/index.ts') }] },
  plugins: [wasmModulePlugin(), serviceWorkerPlugin()],
  server: { host: '127.0.0.1', fs: { allow: [resolve(here, '..')] } },
  preview: { host: '127.0.0.1' },
  // The engine's worker (pkg/src/api/engine-worker.ts) loads the wasm module too.
  worker: { format: 'es', plugins: () => [wasmModulePlugin()] },
  build: {
    target: 'es2022',
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      input: {
        main: resolve(here, 'index.html'),
        grade: resolve(here, 'grade.html'),
        bench: resolve(here, 'bench.html'),
        embed: resolve(here, 'embed-example.html'),
        executor: resolve(here, 'harness/executor.html'),
      },
    },
  },
});
