// PyodideExecutor through web/harness/executor.html: sympy's stdout, the official error text,
// the 5 s limit, one fresh interpreter per solution path, and (executor-hostile.mjs) a hostile
// corpus against the sandboxed frame the interpreters live in; the start-up cost per path.
import { equal, ok } from './lib/assert.mjs';
import { hostileTests, startCanary } from './executor-hostile.mjs';

let page;
let canary;
const run = (path, code) => page.evaluate(([p, c]) => window.executor.run(p, c), [path, code]);

export async function setup({ browser, server }) {
  canary = await startCanary();
  page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`     [page error] ${e.message}`));
  await page.goto(server.url + 'harness/executor.html');
  await page.evaluate(() => window.executor.ready);
}

export async function teardown() {
  await page.close();
  await canary.close();
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

export const tests = [
  {
    name: 'sympy computation: raw stdout',
    fn: async () => {
      const out = await run(0, 'import sympy as sp\nx = sp.symbols("x")\nprint(sp.factor(x**2 - 1))\nprint(sp.Rational(1, 3) + sp.Rational(1, 6))\n');
      equal(out, { outcome: 'ok', stdout: '(x - 1)*(x + 1)\n1/2\n' }, 'sympy output');
    },
  },
  {
    name: 'print output is not stripped here (the model side strips it)',
    fn: async () => {
      equal(await run(0, 'print("  5050  ")\nprint()'), { outcome: 'ok', stdout: '  5050  \n\n' }, 'stdout');
    },
  },
  {
    name: 'exceptions: type(e).__name__ and str(e), partial stdout discarded',
    fn: async () => {
      equal(await run(0, 'print("before")\n1/0'), { outcome: 'error', kind: 'ZeroDivisionError', message: 'division by zero' }, 'ZeroDivisionError');
      equal(await run(0, "print('unterminated)"), {
        outcome: 'error', kind: 'SyntaxError',
        message: 'unterminated string literal (detected at line 1) (<string>, line 1)',
      }, 'SyntaxError');
      equal(await run(0, 'raise TimeoutError("Code execution timed out")'), { outcome: 'timeout', message: 'Code execution timed out' }, 'TimeoutError raised by the code');
      equal(await run(0, 'exit()'), { outcome: 'error', kind: 'SystemExit', message: 'None' }, 'exit() (as CPython: SystemExit(None))');
      equal(await run(0, 'import numpy as np'), { outcome: 'error', kind: 'ModuleNotFoundError', message: "No module named 'numpy'" }, 'a package that is not shipped (CPython\'s message)');
      equal(await run(0, 'import fractions, decimal, statistics, itertools, hashlib\nprint(fractions.Fraction(1, 3) + fractions.Fraction(1, 6))'), { outcome: 'ok', stdout: '1/2\n' }, 'standard library');
      equal(await run(0, 'input()'), { outcome: 'error', kind: 'EOFError', message: 'EOF when reading a line' }, 'input()');
    },
  },
  {
    name: 'namespaces: variables persist per path, isolated between paths, reset clears',
    fn: async () => {
      await page.evaluate(() => Promise.all([window.executor.reset(0), window.executor.reset(1)]));
      equal(await run(0, 'a = 41'), { outcome: 'ok', stdout: '' }, 'define a in path 0');
      equal(await run(1, 'a = 1'), { outcome: 'ok', stdout: '' }, 'define a in path 1');
      equal(await run(0, 'print(a + 1)'), { outcome: 'ok', stdout: '42\n' }, 'path 0 keeps a');
      equal(await run(1, 'print(a + 1)'), { outcome: 'ok', stdout: '2\n' }, 'path 1 has its own a');
      equal(await run(2, 'print(a)'), { outcome: 'error', kind: 'NameError', message: "name 'a' is not defined" }, 'path 2 has no a');
      await page.evaluate(() => window.executor.reset(0));
      equal(await run(0, 'print(a)'), { outcome: 'error', kind: 'NameError', message: "name 'a' is not defined" }, 'reset clears path 0');
      equal(await run(1, 'print(a)'), { outcome: 'ok', stdout: '1\n' }, 'reset leaves path 1');
    },
  },
  {
    name: 'while True: pass is stopped by the 5 s limit; the next run works in a fresh interpreter',
    fn: async () => {
      equal(await run(0, 'kept = 7'), { outcome: 'ok', stdout: '' }, 'setup');
      const before = await page.evaluate(() => window.executor.restarts);
      const t0 = Date.now();
      equal(await run(0, 'while True: pass'), { outcome: 'timeout', message: 'Code execution timed out' }, 'infinite loop');
      ok(Date.now() - t0 >= 5000, 'the limit is 5 s: the run was stopped before it');
      equal(await page.evaluate(() => window.executor.restarts), before + 1, 'restarts');
      equal(await run(0, 'import sympy\nprint(sympy.sqrt(8))'), { outcome: 'ok', stdout: '2*sqrt(2)\n' }, 'the next run');
      // The path's interpreter was ended: its next one starts with an empty namespace (documented).
      equal(await run(0, 'print(kept)'), { outcome: 'error', kind: 'NameError', message: "name 'kept' is not defined" }, 'namespace after respawn');
    },
  },
  {
    name: 'code that swallows exceptions in a loop is stopped too',
    fn: async () => {
      const out = await run(3, 'while True:\n    try:\n        pass\n    except BaseException:\n        pass\n');
      equal(out, { outcome: 'timeout', message: 'Code execution timed out' }, 'outcome');
      equal(await run(3, 'print(6 * 7)'), { outcome: 'ok', stdout: '42\n' }, 'next run');
    },
  },
  ...hostileTests({ run, page: () => page, canary: () => canary }),
  {
    name: "the npm package's build of the executor (tsc, as the widget loads it) runs Python in its frame",
    fn: async ({ browser, server }) => {
      const other = await browser.newPage();
      try {
        await other.goto(server.url + 'vendor/genprm/package.json');
        const got = await other.evaluate(async () => {
          const { PyodideExecutor } = await import('/vendor/genprm/dist/python/pyodide-executor.js');
          const { pythonAssetURLs } = await import('/vendor/genprm/dist/runtime/assets.js');
          const ex = new PyodideExecutor(pythonAssetURLs());
          const outs = [await ex.run(0, 'import sympy\nprint(sympy.factor("x**2 - 1"))'), await ex.run(1, 'import js\nprint(js.self.origin)')];
          ex.terminate();
          return outs;
        });
        equal(got, [{ outcome: 'ok', stdout: '(x - 1)*(x + 1)\n' }, { outcome: 'ok', stdout: 'null\n' }], 'runs');
      } finally {
        await other.close();
      }
    },
  },
  {
    name: 'start-up cost of a fresh interpreter per solution path (printed)',
    fn: async () => {
      const paths = [200, 201, 202, 203, 204];
      const waits = [];
      for (const p of paths) {
        await page.evaluate((q) => window.executor.reset(q), p);
        const t0 = Date.now();
        equal(await run(p, 'print(1)'), { outcome: 'ok', stdout: '1\n' }, `path ${p}`);
        waits.push(Date.now() - t0);
        await new Promise((r) => setTimeout(r, 6000)); // a step's generation: the reserve refills
      }
      const back = [];
      for (const p of paths) {
        await page.evaluate((q) => window.executor.reset(q), p);
        const t0 = Date.now();
        equal(await run(p, 'print(2)'), { outcome: 'ok', stdout: '2\n' }, `path ${p} back to back`);
        back.push(Date.now() - t0);
      }
      const starts = (await page.evaluate(() => window.executor.startups)).slice(-paths.length * 2);
      ok(starts.every((s) => s.from === 'snapshot'), `interpreters restored from the snapshot: ${JSON.stringify(starts.map((s) => s.from))}`);
      const ms = (x) => `${Math.round(x)} ms`;
      const readyMs = await page.evaluate(() => window.readyMs);
      console.log(`     first interpreter of the page (cold start + snapshot + one start from it): ${ms(readyMs)}`);
      console.log(`     per path: interpreter start ${ms(median(starts.map((s) => s.startMs)))} (median of ${starts.length}; `
        + `Pyodide from the snapshot ${ms(median(starts.map((s) => s.pyodideMs)))}); `
        + `first run of a fresh path with one in reserve ${ms(median(waits))}, back to back ${ms(median(back))}`);
    },
  },
];
