// genprm's browser package: the Pyodide code executor and the wasm API's types.
export * from './types';
export { PyodideExecutor, TIME_LIMIT_MS, TIMEOUT_MESSAGE } from './pyodide-executor';
export type { PyodideExecutorOptions, PythonProgress } from './pyodide-executor';
