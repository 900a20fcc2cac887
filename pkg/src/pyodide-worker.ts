// The Pyodide Web Worker behind PyodideExecutor. It loads Pyodide (served by the app, no CDN),
// unpacks the sympy + mpmath bytecode bundle, and runs each code block the way GenPRM's official
// CodeExecutor does: `exec(code, namespace)` with stdout captured, one namespace per solution path.
// The 5 s limit is enforced from outside: the main thread terminates this worker and starts a new
// one, so a runaway `while True: pass` cannot hang anything (all namespaces are lost with it).
import type { FromWorker, PythonProgress, ToWorker } from './worker-protocol.ts';

// Typed by hand: the package compiles with the DOM library only (DOM and WebWorker clash).
interface WorkerScope {
  postMessage(message: unknown): void;
  onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
}
const scope = globalThis as unknown as WorkerScope;

const SITE_DIR = '/genprm/site';

// Python run once at start-up: the executor functions and the warm imports.
const SETUP = `
import contextlib, io, json, sys
sys.path.insert(0, ${JSON.stringify(SITE_DIR)})
sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))

for _m in ("math", "fractions", "decimal", "itertools", "sympy"):
    try:
        __import__(_m)
    except Exception:
        pass

_genprm_namespaces = {}

def _genprm_run(path, code):
    ns = _genprm_namespaces.get(path)
    if ns is None:
        ns = _genprm_namespaces[path] = {}
    sys.stdin = io.StringIO("")   # exit() closes stdin; every run starts with a fresh one
    sys.stderr = io.StringIO()    # the official executor does not capture stderr
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(code, ns)
        return json.dumps({"outcome": "ok", "stdout": buf.getvalue()})
    except TimeoutError as e:     # the official executor reports a TimeoutError as a time-out
        return json.dumps({"outcome": "timeout", "message": str(e)})
    except BaseException as e:    # SystemExit and KeyboardInterrupt too: the executor outlives them
        try:
            message = str(e)
        except BaseException:
            message = "<unprintable>"
        return json.dumps({"outcome": "error", "kind": type(e).__name__, "message": message})

def _genprm_reset(path):
    _genprm_namespaces.pop(path, None)

import sympy
json.dumps([sys.version.split()[0], sympy.__version__])
`;

// Once Python is up, the code it runs has no business on the network or spawning more workers.
const NETWORK_APIS = ['fetch', 'XMLHttpRequest', 'WebSocket', 'EventSource', 'WebTransport', 'importScripts',
  'Worker', 'SharedWorker', 'BroadcastChannel', 'indexedDB', 'caches'];

const post = scope.postMessage.bind(scope) as (m: FromWorker) => void;

function stripNetwork(): void {
  for (const name of NETWORK_APIS) {
    for (let o: object | null = globalThis; o; o = Object.getPrototypeOf(o)) {
      const d = Object.getOwnPropertyDescriptor(o, name);
      if (d?.configurable) delete (o as Record<string, unknown>)[name];
    }
  }
  // Forged replies from Python (js.postMessage) are not possible through the global either.
  for (let o: object | null = globalThis; o; o = Object.getPrototypeOf(o)) {
    const d = Object.getOwnPropertyDescriptor(o, 'postMessage');
    if (d?.configurable) delete (o as Record<string, unknown>).postMessage;
  }
}

interface Py {
  runPython(code: string): unknown;
  unpackArchive(buffer: ArrayBuffer | Uint8Array, format: string, options?: { extractDir?: string }): void;
  FS: { mkdirTree(path: string): void };
  globals: { get(name: string): (...args: unknown[]) => unknown };
}

let runFn: ((path: number, code: string) => string) | null = null;
let resetFn: ((path: number) => void) | null = null;
let ready: Promise<void> | null = null;

const progress = (p: PythonProgress) => post({ type: 'progress', progress: p });

async function download(url: string): Promise<Uint8Array> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`the Python bundle ${url} gave HTTP ${res.status}`);
  const total = Number(res.headers.get('content-length')) || undefined;
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  let last = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    if (loaded - last > 256 * 1024) {
      last = loaded;
      progress({ stage: 'packages', loaded, total });
    }
  }
  progress({ stage: 'packages', loaded, total: total ?? loaded });
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.byteLength; }
  return out;
}

async function init(indexURL: string, bundleURL: string): Promise<void> {
  progress({ stage: 'runtime' });
  const mod = (await import(/* @vite-ignore */ new URL('pyodide.mjs', indexURL).href)) as {
    loadPyodide(o: Record<string, unknown>): Promise<Py>;
  };
  const [py, bundle] = await Promise.all([
    mod.loadPyodide({ indexURL, stdout: () => {}, stderr: () => {} }),
    download(bundleURL),
  ]);
  progress({ stage: 'imports' });
  py.FS.mkdirTree(SITE_DIR);
  py.unpackArchive(bundle, 'zip', { extractDir: SITE_DIR });
  const [python, sympy] = JSON.parse(py.runPython(SETUP) as string) as [string, string];
  runFn = py.globals.get('_genprm_run') as unknown as (path: number, code: string) => string;
  resetFn = py.globals.get('_genprm_reset') as unknown as (path: number) => void;
  stripNetwork();
  progress({ stage: 'ready' });
  post({ type: 'ready', python, sympy });
}

scope.onmessage = async (ev: MessageEvent<ToWorker>) => {
  const msg = ev.data;
  if (msg.type === 'init') {
    ready = init(msg.indexURL, msg.bundleURL);
    ready.catch((e: unknown) => post({ type: 'init_failed', message: e instanceof Error ? e.message : String(e) }));
    return;
  }
  try {
    await ready;
  } catch {
    return; // init_failed was reported; the main thread does not send work to a failed worker
  }
  try {
    if (msg.type === 'run') {
      post({ type: 'started', id: msg.id });
      const outcome = JSON.parse(runFn!(msg.path, msg.code));
      post({ type: 'result', id: msg.id, outcome });
    } else if (msg.type === 'reset') {
      resetFn!(msg.path);
      post({ type: 'reset_done', id: msg.id });
    }
  } catch (e) {
    // A JS-level failure (Pyodide's fatal error after a wasm trap, out of memory): this
    // interpreter is unusable, the main thread replaces the worker.
    post({ type: 'crashed', id: msg.id, message: e instanceof Error ? e.message : String(e) });
  }
};
