// genprm's browser package: load GenPRM and verify solutions on the user's device (WebGPU +
// WebAssembly, Python checks in Pyodide), grade files of solutions, and the <genprm-verifier>
// custom element (defined when this module is imported).
export * from './types.ts';
export * from './defaults.ts';
export { configure, assetsURL, pythonAssetURLs, demoModelBase, type GenprmConfig } from './assets.ts';
export { loadModel, modelSource, sharedExecutor, GenPRM, type ModelSpec, type ModelLoadProgress, type LoadModelOptions, type VerifyOptions } from './api.ts';
export { gpuInfo, splitParagraphs, parseGradingInput, gradeResult, hasWasmFunction, wasm } from './wasm.ts';
export { PyodideExecutor, TIME_LIMIT_MS, TIMEOUT_MESSAGE } from './pyodide-executor.ts';
export type { PyodideExecutorOptions, PythonProgress } from './pyodide-executor.ts';
export { CACHE_NAME as MODEL_CACHE_NAME, cacheAvailable, cacheUsage, clearCache, cached, download, persistStorage, DownloadError, type DownloadProgress } from './model-cache.ts';
export { baseURLFor, DEFAULT_REPO, filesSource, urlSource, type ModelSource } from './model-sources.ts';
export { GenprmVerifier, defineVerifier, type GenprmVerifierEventMap, type Stage as VerifierErrorStage } from './widget.ts';
export { undecided, undecidedSteps, stepList, summaryText, REWARD_THRESHOLD, verifyProgress, reduceVerifyEvent, rationaleAppended } from './verdicts.ts';
export type { RationalePart, SampleProgress, StepProgress, VerifyProgress, VerifyFinished } from './verdicts.ts';
export { benchRandom } from './bench.ts';
