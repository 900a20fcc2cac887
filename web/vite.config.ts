// The demo app's build. The package sources (../pkg/src) are compiled in; the wasm module is
// pkg/wasm/genprm.js (scripts/build-wasm); static files (Pyodide, the Python bundle, the tiny demo
// model) come from public/generated/ (scripts/copy-assets.mjs).
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';

const here = dirname(fileURLToPath(import.meta.url));
const wasmModule = resolve(here, '../pkg/wasm/genprm.js');

// Without pkg/wasm the app still builds and runs the parts that need no model (editor, Python):
// importing the model module then fails with a message saying how to build it.
function wasmModulePlugin(): Plugin {
  const missingId = '\0genprm-wasm-missing';
  return {
    name: 'genprm-wasm',
    resolveId(id) {
      if (id !== 'genprm-wasm') return null;
      if (existsSync(wasmModule)) return wasmModule;
      this.warn('pkg/wasm/genprm.js is missing (run scripts/build-wasm): the app will say the model cannot load');
      return missingId;
    },
    load(id) {
      if (id !== missingId) return null;
      return 'throw new Error("the genprm wasm module was not built (pkg/wasm/genprm.js is missing; run scripts/build-wasm)");';
    },
  };
}

export default defineConfig({
  base: './',
  plugins: [wasmModulePlugin()],
  server: { host: '127.0.0.1', fs: { allow: [resolve(here, '..')] } },
  preview: { host: '127.0.0.1' },
  worker: { format: 'es' },
  build: {
    target: 'es2022',
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      input: {
        main: resolve(here, 'index.html'),
        executor: resolve(here, 'harness/executor.html'),
      },
    },
  },
});
