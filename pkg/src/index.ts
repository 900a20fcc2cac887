// genprm's browser package: load GenPRM and verify solutions on the user's device (WebGPU +
// WebAssembly, Python checks in Pyodide), grade files of solutions, and the <genprm-verifier>
// custom element (defined when this module is imported).
//
// Re-exports only: this list is the public API. The modules sit in folders along the data flow,
// each folder's rules at the top of its main file: contract/ (the wasm API's types, GenPRM's
// defaults) → runtime/ (the wasm module on WebGPU, assets, the model cache) and python/ (Pyodide
// in a sandboxed frame) → api/ (loadModel, GenPRM, model sources) → present/ (the verdicts
// reducer, <genprm-verifier>).
export * from './contract/types.ts';
export * from './contract/defaults.ts';
export { configure, assetsURL, assetURL, pythonAssetURLs, demoModelBase, demoModelURLs, DEMO_MODEL_FILES, type GenprmConfig } from './runtime/assets.ts';
export { loadModel, modelSource, sharedExecutor, GenPRM, type ModelSpec, type ModelLoadProgress, type LoadModelOptions, type VerifyOptions } from './api/api.ts';
export { gpuInfo, splitParagraphs, parseGradingInput, gradeResult, hasWasmFunction, benchRandom, startEngine, RemoteModel } from './api/engine.ts';
export { wasm } from './runtime/wasm.ts';
export { PyodideExecutor, TIME_LIMIT_MS, TIMEOUT_MESSAGE } from './python/pyodide-executor.ts';
export type { PyodideExecutorOptions, PythonProgress } from './python/pyodide-executor.ts';
export { CACHE_NAME as MODEL_CACHE_NAME, cacheAvailable, cacheUsage, clearCache, cached, download, persistStorage, DownloadError, type DownloadProgress } from './runtime/model-cache.ts';
export { baseURLFor, DEFAULT_REPO, filesSource, urlSource, type ModelSource } from './api/model-sources.ts';
export { GenprmVerifier, defineVerifier, type GenprmVerifierEventMap, type Stage as VerifierErrorStage } from './present/widget.ts';
export { undecided, undecidedSteps, stepList, summaryText, REWARD_THRESHOLD, verifyProgress, reduceVerifyEvent, rationaleAppended } from './present/verdicts.ts';
export type { RationalePart, SampleProgress, StepProgress, VerifyProgress, VerifyFinished } from './present/verdicts.ts';
