// The Python interpreter behind PyodideExecutor: one Web Worker per solution path, created inside
// the sandboxed frame (pyodide-frame.ts). `pythonWorkerMain` is not called here: its source text
// becomes the worker's script (see frameDocument in pyodide-frame.ts), so it must be self-contained:
// no references outside the function, and no `import()` of its own (a compiler may route that
// through a module-level helper): it gets `importModule` from the script's own text.
//
// The worker gets Pyodide, its standard library and the sympy + mpmath bundle as bytes from the
// frame (which got them from the page): it has no network (the frame's Content-Security-Policy,
// which the worker inherits, allows no connections) and no storage (its origin is opaque). It
// runs each code block the way GenPRM's official CodeExecutor does: `exec(code, namespace)` with
// stdout captured, `type(e).__name__` and `str(e)` for errors, a TimeoutError raised by the code
// reported as a time-out. One namespace: the worker serves one solution path and is thrown away
// with it. What the code prints is kept up to the output limit (characters), then marked as
// truncated, so a 200 MB print costs the worker one string and the page 16 K characters.
import type { FromWorker, PythonFiles, ToWorker } from './worker-protocol.ts';

export function pythonWorkerMain(importModule: (url: string) => Promise<unknown>): void {
  // Typed by hand: the package compiles with the DOM library only (DOM and WebWorker clash).
  interface Scope {
    postMessage(message: unknown, transfer?: Transferable[]): void;
    onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
    fetch: typeof fetch;
  }
  interface Py {
    runPython(code: string): unknown;
    unpackArchive(buffer: ArrayBuffer | Uint8Array, format: string, options?: { extractDir?: string }): void;
    FS: { mkdirTree(path: string): void; writeFile(path: string, data: Uint8Array): void };
    makeMemorySnapshot(): Uint8Array;
    globals: { get(name: string): unknown };
  }
  const scope = globalThis as unknown as Scope;
  const post = (m: FromWorker) => scope.postMessage(m);
  const SITE_DIR = '/genprm';
  const BUNDLE = '/genprm/python.zip';
  // Pyodide asks for its files by URL; they are answered from the bytes handed in (never fetched).
  const BASE = 'https://pyodide.invalid/';
  let runFn: ((code: string) => string) | null = null;
  let ready: Promise<void> | null = null;

  const setup = (limit: number, marker: string) => `
import contextlib, io, json, sys
sys.path.insert(0, ${JSON.stringify(BUNDLE)})
sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))

for _m in ("math", "fractions", "decimal", "itertools", "sympy"):
    try:
        __import__(_m)
    except Exception:
        pass

_GENPRM_LIMIT = ${limit}
_GENPRM_MARKER = ${JSON.stringify(marker)}

def _genprm_cut(text, limit=_GENPRM_LIMIT):
    """The first limit characters of text, and whether it was longer."""
    return (text, False) if len(text) <= limit else (text[:limit], True)

class _GenprmOutput(io.TextIOBase):
    """stdout that keeps the first _GENPRM_LIMIT characters and drops the rest."""
    def __init__(self):
        self._parts = []
        self._room = _GENPRM_LIMIT
        self._cut = False
    def writable(self):
        return True
    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"string argument expected, got '{type(s).__name__}'")
        if self._cut or not s:
            return len(s)
        kept, cut = _genprm_cut(s, self._room)
        self._parts.append(kept)
        self._room -= len(kept)
        self._cut = cut
        return len(s)
    def getvalue(self):
        text = "".join(self._parts)
        return text + _GENPRM_MARKER if self._cut else text

_genprm_namespace = {}

def _genprm_run(code):
    sys.stdin = io.StringIO("")   # exit() closes stdin; every run starts with a fresh one
    sys.stderr = io.StringIO()    # the official executor does not capture stderr
    buf = _GenprmOutput()
    try:
        with contextlib.redirect_stdout(buf):
            exec(code, _genprm_namespace)
        return json.dumps({"outcome": "ok", "stdout": buf.getvalue()})
    except TimeoutError as e:     # the official executor reports a TimeoutError as a time-out
        return json.dumps({"outcome": "timeout", "message": _genprm_text(e)})
    except BaseException as e:    # SystemExit and KeyboardInterrupt too: the executor outlives them
        return json.dumps({"outcome": "error", "kind": _genprm_cut(type(e).__name__, 256)[0], "message": _genprm_text(e)})

def _genprm_text(e):
    try:
        message = str(e)
    except BaseException:
        message = "<unprintable>"
    kept, cut = _genprm_cut(message)
    return kept + _GENPRM_MARKER if cut else kept

import sympy
json.dumps([sys.version.split()[0], sympy.__version__])
`;

  // After a snapshot is restored: every interpreter would otherwise draw the same random numbers.
  const RESEED = `
import random
random.seed()
json.dumps([sys.version.split()[0], sympy.__version__])
`;

  async function init(msg: Extract<ToWorker, { type: 'init' }>): Promise<void> {
    const { files, outputLimit, marker, mode } = msg;
    const t0 = performance.now();
    const moduleURL = (name: keyof PythonFiles) => URL.createObjectURL(new Blob([files[name]], { type: 'text/javascript' }));
    const urls = [moduleURL('pyodide.mjs'), moduleURL('pyodide.asm.mjs')];
    const [mod, asm] = (await Promise.all(urls.map(importModule))) as [
      { loadPyodide(o: Record<string, unknown>): Promise<Py> },
      { default: (settings: unknown) => Promise<{ _malloc(n: number): number; _free(p: number): void }> },
    ];
    for (const u of urls) URL.revokeObjectURL(u);
    const snapshot = mode === 'snapshot' && msg.snapshot ? new Uint8Array(msg.snapshot) : null;
    const native = scope.fetch;
    scope.fetch = (async (input: RequestInfo | URL) => {
      const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
      const name = url.startsWith(BASE) ? url.slice(BASE.length) as keyof PythonFiles : null;
      if (name && name in files && name !== 'genprm-python.zip') {
        const type = name.endsWith('.wasm') ? 'application/wasm' : 'application/octet-stream';
        return new Response(files[name], { headers: { 'content-type': type } });
      }
      return native(input); // anything else goes to the browser, which refuses it (CSP)
    }) as typeof fetch;
    let py: Py;
    try {
      py = await mod.loadPyodide({
        indexURL: BASE,
        lockFileContents: new TextDecoder().decode(files['pyodide-lock.json']),
        packageBaseUrl: BASE,
        // The memory snapshot is larger than the module's initial memory: grow it first (through
        // malloc, so Emscripten's views follow) before Pyodide copies the snapshot in.
        createPyodideModule: async (settings: unknown) => {
          const m = await asm.default(settings);
          if (snapshot) m._free(m._malloc(snapshot.byteLength));
          return m;
        },
        stdout: () => {},
        stderr: () => {},
        ...(mode === 'template' ? { _makeSnapshot: true } : {}),
        ...(snapshot ? { _loadSnapshot: snapshot } : {}),
      });
    } finally {
      scope.fetch = native;
    }
    const t1 = performance.now();
    // The bundle is imported from the zip itself (zipimport): one file to write, also after a
    // snapshot, whose import machinery remembers the zip's directory.
    py.FS.mkdirTree(SITE_DIR);
    py.FS.writeFile(BUNDLE, new Uint8Array(files['genprm-python.zip']));
    const versions = snapshot ? RESEED : setup(outputLimit, marker);
    const [python, sympy] = JSON.parse(py.runPython(versions) as string) as [string, string];
    if (mode === 'template') {
      const bytes = py.makeMemorySnapshot();
      const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
      scope.postMessage({ type: 'snapshot', snapshot: buffer } satisfies FromWorker, [buffer]);
      return;
    }
    runFn = py.globals.get('_genprm_run') as (code: string) => string;
    post({ type: 'ready', python, sympy, pyodideMs: t1 - t0, sympyMs: performance.now() - t1 });
  }

  scope.onmessage = async (ev: MessageEvent<ToWorker>) => {
    const msg = ev.data;
    if (msg.type === 'init') {
      if (ready) return;
      ready = init(msg);
      ready.catch((e: unknown) => post({ type: 'init_failed', message: e instanceof Error ? e.message : String(e) }));
      return;
    }
    try {
      await ready;
    } catch {
      return; // init_failed was reported; the frame sends no work to a failed worker
    }
    if (msg.type !== 'run') return;
    try {
      post({ type: 'result', id: msg.id, outcome: JSON.parse(runFn!(msg.code)) });
    } catch (e) {
      // A JS-level failure (Pyodide's fatal error after a wasm trap, out of memory): this
      // interpreter is unusable, the frame ends it.
      post({ type: 'crashed', id: msg.id, message: e instanceof Error ? e.message : String(e) });
    }
  };
}
