// The wasm-bindgen module (pkg/wasm/genprm.js, built by scripts/build-wasm). The web app resolves
// the bare name with a Vite plugin (web/vite.config.ts); the package build rewrites it to
// ../wasm/genprm.js in dist/runtime/wasm.js (pkg/scripts/build.mjs). Its exports are typed by
// ../contract/types.ts's WasmModule.
declare module 'genprm-wasm' {
  export default function init(module_or_path?: { module_or_path: URL | string | Response | BufferSource }): Promise<unknown>;
}
// The same module built with WebAssembly relaxed SIMD (pkg/wasm/genprm_relaxed.js), for engines
// that have it: its q4 kernel runs about 1.7× faster.
declare module 'genprm-wasm-relaxed' {
  export default function init(module_or_path?: { module_or_path: URL | string | Response | BufferSource }): Promise<unknown>;
}
