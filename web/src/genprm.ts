// The wasm module (pkg/wasm/genprm.js, built by scripts/build-wasm), loaded once on first use:
// the package's loader (pkg/src/wasm.ts).
export { wasm, splitParagraphs, parseGradingInput, gradeResult, hasWasmFunction } from '../../pkg/src/wasm.ts';
