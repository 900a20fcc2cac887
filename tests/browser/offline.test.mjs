// Offline after the first load: the service worker caches the app shell (pages, scripts, the
// wasm, Pyodide, the sympy bundle, the demo model) on the first visit; with the server stopped,
// a reload still shows the page, starts Python and verifies with the demo model (wasm CPU).
// Its own server and browser context, so stopping the server touches no other suite.
import { join } from 'node:path';
import { equal, ok } from './lib/assert.mjs';
import { DIST } from './lib/paths.mjs';
import { serve } from './lib/server.mjs';
import { RELAXED_SIMD_PROBE, wasmMissing } from './lib/wasm.mjs';

const LONG = 10 * 60_000;
let context, page, server;

export async function setup({ browser }) {
  const why = wasmMissing();
  if (why) return why;
  server = await serve(DIST);
  context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, serviceWorkers: 'allow' });
  page = await context.newPage();
  page.setDefaultTimeout(LONG);
}

export async function teardown() {
  await context?.close();
  await server?.close();
}

export const tests = [
  {
    name: 'first visit: the service worker installs and caches the app (versioned cache)',
    fn: async () => {
      await page.goto(server.url + '?model=demo');
      await page.waitForFunction(() => document.querySelector('[data-testid=offline-status]')?.dataset.state === 'ready', null, { timeout: LONG });
      const state = await page.evaluate(async (probe) => {
        const reg = await navigator.serviceWorker.ready;
        const names = await caches.keys();
        const app = names.find((n) => n.startsWith('genprm-app-'));
        const keys = app ? (await (await caches.open(app)).keys()).map((r) => new URL(r.url).pathname) : [];
        // The probe pkg/src/runtime/wasm.ts and the worker ask: does this engine have relaxed SIMD?
        const relaxed = WebAssembly.validate(new Uint8Array(probe));
        return { scope: reg.scope, names, keys, relaxed };
      }, RELAXED_SIMD_PROBE);
      ok(state.names.some((n) => /^genprm-app-[0-9a-f]{16}$/.test(n)), `a versioned app cache: ${state.names}`);
      for (const want of ['/index.html', '/grade.html', '/bench.html', '/embed-example.html', '/generated/pyodide/pyodide.asm.wasm', '/generated/python/genprm-python.zip', '/generated/models/tiny-genprm/model.safetensors']) {
        ok(state.keys.includes(want), `${want} is cached`);
      }
      // One of the two builds of the wasm module: the one this engine loads (this Chromium has
      // relaxed SIMD), not both.
      const [used, unused] = state.relaxed ? ['genprm_relaxed_bg', 'genprm_bg'] : ['genprm_bg', 'genprm_relaxed_bg'];
      ok(state.keys.some((k) => new RegExp(`/assets/${used}-[^/]*\\.wasm$`).test(k)), `the wasm module it loads (${used}) is cached`);
      ok(!state.keys.some((k) => new RegExp(`/assets/${unused}-[^/]*\\.wasm$`).test(k)), `the other build (${unused}) is not`);
      ok(state.relaxed, 'this Chromium has relaxed SIMD (so the relaxed-SIMD module is the one tested here)');
    },
  },
  {
    name: 'server stopped: a reload still works and verifies with the demo model',
    fn: async ({ artifacts }) => {
      await server.close();
      const offline = await fetch(server.url).then(() => false, () => true);
      ok(offline, 'the server is really gone');
      await page.reload();
      await page.getByRole('heading', { name: 'GenPRM', exact: true }).waitFor();
      await page.getByTestId('device').selectOption('cpu');
      await page.getByTestId('load-model').click();
      await page.waitForFunction(() => document.querySelector('[data-testid=model-info]')?.dataset.loaded !== undefined
        && !document.querySelector('[data-testid=load-model]').disabled, null, { timeout: LONG });
      equal(await page.getByTestId('model-info').getAttribute('data-loaded'), 'true', `the demo model loaded offline: ${await page.getByTestId('alerts').textContent()}`);
      await page.getByTestId('example').selectOption('tiny-add');
      await page.getByTestId('greedy').check();
      await page.getByTestId('verify').click();
      await page.waitForFunction(() => !window.genprm.controller.running && window.genprm.controller.last !== null, null, { timeout: LONG });
      const result = await page.evaluate(() => window.genprm.controller.last);
      await page.screenshot({ path: join(artifacts, 'offline-verify.png'), fullPage: true });
      equal(result.complete, true, 'complete');
      equal(result.steps.length, 2, 'both steps judged');
      const outputs = result.steps.flatMap((s) => s.samples.flatMap((x) => x.code_runs.map((r) => r.output)));
      ok(outputs.length > 0 && outputs.every((o) => !/Error|time out/.test(o)), `Python ran offline: ${JSON.stringify(outputs)}`);
      ok(/Works offline/.test(await page.getByTestId('offline-status').textContent()), 'the page says it works offline');
    },
  },
];
