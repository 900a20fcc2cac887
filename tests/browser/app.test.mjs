// The demo page: it loads without errors, the editor works, Python starts, and bad models give a
// clear message in the page (a URL that 404s, a truncated safetensors file, a config not Qwen2).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { TINY } from './lib/fixtures.mjs';
import { equal, ok, Skip } from './lib/assert.mjs';
import { wasmMissing } from './lib/wasm.mjs';

let page;
const errors = [];

export async function setup({ browser, server }) {
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(server.url);
}

export async function teardown() {
  await page.close();
}

async function loadModel(kind, value) {
  await page.getByTestId(`source-${kind}`).check();
  if (value !== undefined) await page.getByTestId('model-url').fill(value);
  await page.getByTestId('load-model').click();
  await page.waitForFunction(() => document.querySelector('[data-testid=model-info]')?.dataset.loaded !== undefined
    && !document.querySelector('[data-testid=load-model]').disabled, null, { timeout: 300_000 });
}

const needsWasm = (fn) => async (ctx) => {
  const why = wasmMissing();
  if (why) throw new Skip(why);
  await page.goto(ctx.server.url);
  await fn(ctx);
};

export const tests = [
  {
    name: 'the page renders with an example, the editor edits steps',
    fn: async ({ artifacts }) => {
      await page.getByRole('heading', { name: 'Problem and solution' }).waitFor();
      equal(await page.getByTestId('problem').inputValue(), 'What is 2 + 3?', 'first example');
      equal(await page.locator('[data-testid=steps] textarea').count(), 2, 'steps of the first example');
      await page.getByTestId('example').selectOption('math-447');
      equal(await page.locator('[data-testid=steps] textarea').count(), 2, 'ProcessBench example steps');
      ok((await page.locator('.preview .katex').count()) > 0, 'math in the problem is typeset with KaTeX');
      await page.getByTestId('add-step').click();
      equal(await page.locator('[data-testid=steps] textarea').count(), 3, 'a step added');
      await page.locator('[data-testid=steps] textarea').nth(2).fill('So the answer is 0.0000168.');
      await page.getByRole('button', { name: 'Move step up 3' }).click();
      equal(await page.locator('[data-testid=steps] textarea').nth(1).inputValue(), 'So the answer is 0.0000168.', 'moved up');
      await page.getByRole('button', { name: 'Remove step 2' }).click();
      equal(await page.locator('[data-testid=steps] textarea').count(), 2, 'a step removed');
      await page.screenshot({ path: join(artifacts, 'app-editor.png'), fullPage: true });
    },
  },
  {
    name: 'Python starts in the page (sympy bundle)',
    fn: async () => {
      await page.waitForFunction(() => /is ready/.test(document.querySelector('[data-testid=python-status]')?.textContent ?? ''), null, { timeout: 180_000 });
      const out = await page.evaluate(() => window.genprm.executor.run(0, 'import sympy\nprint(sympy.isprime(97))'));
      equal(out, { outcome: 'ok', stdout: 'True\n' }, 'executor of the app');
    },
  },
  {
    name: 'pasting a solution splits it into steps (wasm splitParagraphs)',
    fn: needsWasm(async () => {
      await page.locator('details.paste summary').click();
      await page.getByTestId('paste').fill('First we add.\n\nThen we multiply.\n\n\nDone: 42.');
      await page.getByTestId('split').click();
      await page.waitForFunction(() => document.querySelectorAll('[data-testid=steps] textarea').length === 3);
      equal(await page.locator('[data-testid=steps] textarea').nth(2).inputValue(), 'Done: 42.', 'third paragraph');
    }),
  },
  {
    name: 'a model URL that 404s gives a clear message',
    fn: needsWasm(async ({ server }) => {
      await loadModel('url', server.url + '__test__/models/does-not-exist/');
      const alert = page.getByRole('alert').first();
      await alert.waitFor();
      const text = await alert.textContent();
      ok(/config\.json/.test(text) && /404/.test(text), `the message names config.json and the 404: ${text}`);
    }),
  },
  {
    name: 'a truncated safetensors file gives a clear message',
    fn: needsWasm(async ({ server, artifacts }) => {
      await loadModel('url', server.url + '__test__/models/truncated/');
      const alert = page.getByRole('alert').first();
      await alert.waitFor();
      const text = await alert.textContent();
      ok(/model\.safetensors/.test(text), `the message names model.safetensors: ${text}`);
      equal(await page.getByTestId('model-info').getAttribute('data-loaded'), 'false', 'no model loaded');
      await page.screenshot({ path: join(artifacts, 'app-truncated-model.png'), fullPage: true });
    }),
  },
  {
    name: 'a config that is not Qwen2 gives a clear message',
    fn: needsWasm(async ({ server }) => {
      await loadModel('url', server.url + '__test__/models/not-qwen2/');
      const alert = page.getByRole('alert').first();
      await alert.waitFor();
      const text = await alert.textContent();
      ok(/config\.json/.test(text) && /qwen2|model_type/i.test(text), `the message says it is not Qwen2: ${text}`);
    }),
  },
  {
    name: 'a model from a URL is kept in the Cache API: a reload loads it with the server unreachable, and not once the server has removed it; clearing empties it',
    fn: needsWasm(async ({ server, fixtures }) => {
      await page.getByTestId('device').selectOption(process.env.GENPRM_BROWSER_DEVICE || 'gpu');
      await loadModel('url', server.url + '__test__/models/cached/');
      equal(await page.getByTestId('model-info').getAttribute('data-loaded'), 'true', 'loaded from the URL');
      await page.waitForFunction(() => /Cached model files: [1-9]/.test(document.querySelector('[data-testid=cache-size]')?.textContent ?? ''));
      const folder = `${server.url}__test__/models/cached/**`;
      await page.route(folder, (route) => route.abort('connectionfailed'));
      try {
        await page.reload();
        await page.getByTestId('device').selectOption(process.env.GENPRM_BROWSER_DEVICE || 'gpu');
        await loadModel('url', server.url + '__test__/models/cached/');
        equal(await page.getByTestId('model-info').getAttribute('data-loaded'), 'true', 'loaded again from the cache');
        ok(/from this browser's cache/.test(await page.getByTestId('download-progress').textContent()), 'the download bar says it came from the cache');
      } finally {
        await page.unroute(folder);
      }
      // The server answers again, without the model: the kept copy is not used.
      await rm(join(fixtures, 'models', 'cached'), { recursive: true });
      await page.reload();
      await loadModel('url', server.url + '__test__/models/cached/');
      equal(await page.getByTestId('model-info').getAttribute('data-loaded'), 'false', 'a model the server removed does not load');
      const removed = await page.getByRole('alert').first().textContent();
      ok(/config\.json/.test(removed) && /no longer has it/.test(removed), `the message says the server no longer has config.json: ${removed}`);
      await page.getByTestId('clear-cache').click();
      await page.waitForFunction(() => /No models cached/.test(document.querySelector('[data-testid=cache-size]')?.textContent ?? ''));
    }),
  },
  {
    name: 'a pre-quantized q4 pack (genprm quantize) loads from a URL; a corrupt shard is named',
    fn: needsWasm(async ({ server, fixtures }) => {
      const bin = join(process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'genprm', 'target'), 'debug', 'genprm');
      if (!existsSync(bin)) throw new Skip(`the native CLI ${bin} is not built (cargo build --bin genprm)`);
      for (const name of ['pack', 'pack-corrupt']) {
        const out = join(fixtures, 'models', name);
        execFileSync(bin, ['quantize', '--model', TINY, '--to', 'q4', '--out', out], { stdio: 'pipe' });
      }
      const corrupt = join(fixtures, 'models', 'pack-corrupt');
      const shard = (await readdir(corrupt)).find((f) => f.endsWith('.bin'));
      const bytes = await readFile(join(corrupt, shard));
      bytes[bytes.length >> 1] ^= 0xff;
      await writeFile(join(corrupt, shard), bytes);

      await page.getByTestId('device').selectOption('cpu');
      await loadModel('url', server.url + '__test__/models/pack/');
      equal(await page.getByTestId('model-info').getAttribute('data-loaded'), 'true', 'the pack loaded');
      ok(/q4/i.test(await page.getByTestId('model-info').textContent()), 'the page says the weights are q4');

      await page.goto(server.url);
      await page.getByTestId('device').selectOption('cpu');
      await loadModel('url', server.url + '__test__/models/pack-corrupt/');
      const alert = page.getByRole('alert').first();
      await alert.waitFor();
      const text = await alert.textContent();
      ok(text.includes(shard) && /checksum/i.test(text), `the message names the corrupt shard: ${text}`);
    }),
  },
  {
    name: 'a browser without WebGPU gets a clear message, and the CPU still works',
    fn: needsWasm(async ({ browser, server }) => {
      const p = await browser.newPage();
      try {
        await p.addInitScript(() => { delete Navigator.prototype.gpu; delete WorkerNavigator.prototype.gpu; });
        await p.goto(server.url);
        await p.getByTestId('source-demo').check();
        await p.getByTestId('device').selectOption('gpu');
        await p.getByTestId('load-model').click();
        const alert = p.getByRole('alert').first();
        await alert.waitFor({ timeout: 120_000 });
        const text = await alert.textContent();
        ok(/WebGPU/.test(text), `the message says WebGPU is missing: ${text}`);
        await p.getByTestId('device').selectOption('cpu');
        await p.getByTestId('load-model').click();
        await p.waitForFunction(() => document.querySelector('[data-testid=model-info]')?.dataset.loaded === 'true', null, { timeout: 300_000 });
      } finally {
        await p.close();
      }
    }),
  },
  {
    name: 'Cancel stops a verification between tokens, keeps what was judged, and the next one runs',
    fn: needsWasm(async () => {
      await page.getByTestId('source-demo').check();
      await page.getByTestId('device').selectOption('cpu');
      await page.getByTestId('load-model').click();
      await page.waitForFunction(() => document.querySelector('[data-testid=model-info]')?.dataset.loaded === 'true', null, { timeout: 300_000 });
      await page.getByTestId('example').selectOption('tiny-apples');
      await page.getByTestId('greedy').check();
      // Press the page's Cancel button the moment the second step's rationale starts streaming
      // (from the event itself: on a fast CPU the tiny model can judge a whole step before a
      // poll from outside gets its turn).
      await page.evaluate(() => {
        const results = window.genprm.controller.results;
        const onEvent = results.onEvent.bind(results);
        let pressed = false;
        results.onEvent = (e) => {
          onEvent(e);
          if (!pressed && e.event === 'text' && e.step === 1) {
            pressed = true;
            document.querySelector('[data-testid=cancel]').click();
          }
        };
      });
      await page.getByTestId('verify').click();
      await page.waitForFunction(() => !window.genprm.controller.running && window.genprm.controller.last !== null, null, { timeout: 300_000 });
      const cancelled = await page.evaluate(() => window.genprm.controller.last);
      equal(cancelled.complete, false, 'not complete');
      equal(cancelled.error, 'cancelled', 'the error says cancelled');
      equal(cancelled.steps.length, 1, 'the step judged before the cancel is kept');
      ok(/Cancelled/.test(await page.getByTestId('verify-error').textContent()), 'the page says it was cancelled');
      await page.getByTestId('verify').click();
      await page.waitForFunction(() => !window.genprm.controller.running && window.genprm.controller.last !== null, null, { timeout: 300_000 });
      const again = await page.evaluate(() => window.genprm.controller.last);
      equal(again.complete, true, 'the next verification completes');
      equal(again.steps.length, 3, 'all three steps judged');
    }),
  },
  {
    name: 'no errors in the console',
    fn: async () => {
      const real = errors.filter((e) => !/Failed to load resource: the server responded with a status of 404/.test(e));
      equal(real, [], 'console errors');
    },
  },
];
