// A page with nothing but the Python executor, for the browser tests (tests/browser/).
import { PyodideExecutor, pythonAssetURLs } from 'genprm';
import '../src/lib/app-assets.ts';

const status = document.getElementById('status')!;
const t0 = performance.now();
const executor = new PyodideExecutor({
  ...pythonAssetURLs(),
  onProgress: (p) => { status.textContent = `Python: ${p.stage} (restart ${p.restart})`; },
});
executor.ready.then(
  () => {
    // From the executor's creation to the first interpreter: a cold start that also makes the
    // snapshot the later ones start from, plus one start from it (the browser tests print it).
    (window as unknown as { readyMs: number }).readyMs = performance.now() - t0;
    status.textContent = `ready: Python ${executor.versions?.python}, sympy ${executor.versions?.sympy}`;
  },
  (e: Error) => { status.textContent = `failed: ${e.message}`; },
);
(window as unknown as { executor: PyodideExecutor }).executor = executor;
