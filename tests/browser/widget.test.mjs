// <genprm-verifier> in a host page the way a site embeds it (one script tag loading the built
// package from vendor/genprm/dist/index.js, one element), with hostile CSS that would break any
// widget without its own shadow root: it still renders, is usable by keyboard, and its events
// fire with the tiny demo model (the wasm CPU device: no WebGPU needed here). The model runs in
// the package's engine worker, one for both widgets, never on the page's thread: the page keeps
// answering during a verification and its Cancel still stops it; where the worker cannot start
// (a policy that forbids it) the widget still works, on the page's thread.
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { equal, ok } from './lib/assert.mjs';
import { wasmMissing } from './lib/wasm.mjs';
import { REPO } from './lib/paths.mjs';

const LONG = 10 * 60_000;
let page;
const errors = [];

const HOSTILE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hostile host</title>
<style>
  * { display: inline !important; color: red !important; font-size: 3px !important; }
  button { display: none !important; }
  li, ol, p, pre, details, summary, progress, div, span { display: none !important; visibility: hidden !important; }
  body * { font-family: "Comic Sans MS" !important; background: yellow !important; opacity: 0.9 !important; }
  :root { --bg: pink; --fg: red; --accent: lime; }
  genprm-verifier { border: 9px solid red !important; }
</style>
<script type="module" src="/vendor/genprm/dist/index.js"></script>
</head><body>
<h1>A host page</h1>
<genprm-verifier id="w1" model="demo" device="cpu" greedy problem="What is 2 + 3?">
  <ol><li>2 + 3 = 5.</li><li>So the answer is 5.</li></ol>
</genprm-verifier>
<genprm-verifier id="w2" model="demo" device="cpu" greedy theme="dark"
  problem="Tom has 3 apples and buys 4 more. How many apples does he have?"
  steps='["Tom starts with 3 apples.", "He buys 4 more, so he has 3 + 4 = 8 apples.", "The answer is 8."]'></genprm-verifier>
<genprm-verifier id="empty" model="demo" device="cpu"></genprm-verifier>
<script>
  window.__events = [];
  for (const type of ['reward', 'step', 'done', 'error']) {
    document.addEventListener('genprm-' + type, (e) => { if (e.target.localName === 'genprm-verifier') window.__events.push({ id: e.target.id, type, detail: e.detail }); });
  }
</script>
</body></html>`;

export async function setup({ browser, server, fixtures }) {
  const why = wasmMissing();
  if (why) return why;
  await mkdir(join(fixtures, 'pages'), { recursive: true });
  await writeFile(join(fixtures, 'pages', 'hostile.html'), HOSTILE);
  page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  page.setDefaultTimeout(LONG);
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(server.url + '__test__/pages/hostile.html');
  await page.waitForFunction(() => customElements.get('genprm-verifier') !== undefined);
}

export async function teardown() {
  await page?.close();
}

const events = (id) => page.evaluate((i) => window.__events.filter((e) => e.id === i), id);

export const tests = [
  {
    name: 'the widget renders inside a hostile host page (shadow DOM: its own layout, colours and sizes)',
    fn: async ({ artifacts }) => {
      const look = await page.evaluate(() => {
        const w = document.getElementById('w1');
        const root = w.shadowRoot.querySelector('.root');
        const button = w.shadowRoot.querySelector('button.primary');
        const step = w.shadowRoot.querySelector('li.step .text');
        const cs = (el) => getComputedStyle(el);
        const box = (el) => el.getBoundingClientRect();
        return {
          hostDisplay: cs(w).display, rootFont: cs(root).fontSize, rootColor: cs(root).color,
          button: { display: cs(button).display, font: cs(button).fontSize, w: box(button).width, h: box(button).height, text: button.textContent },
          step: { text: step.textContent, font: cs(step).fontSize, color: cs(step).color, h: box(step).height },
          steps: w.shadowRoot.querySelectorAll('li.step').length,
          problem: w.shadowRoot.querySelector('.problem').textContent,
        };
      });
      await page.screenshot({ path: join(artifacts, 'widget-hostile.png'), fullPage: true });
      equal(look.hostDisplay, 'block', 'the host element is a block');
      equal(look.rootFont, '15px', 'the widget keeps its font size');
      ok(look.rootColor !== 'rgb(255, 0, 0)', `the widget keeps its colour: ${look.rootColor}`);
      ok(look.button.display !== 'none' && look.button.w > 40 && look.button.h > 15, `the Verify button is visible: ${JSON.stringify(look.button)}`);
      ok(look.step.font === '15px' && look.step.color !== 'rgb(255, 0, 0)' && look.step.h > 10, `step text readable: ${JSON.stringify(look.step)}`);
      equal(look.steps, 2, 'steps from the child <li>s');
      equal(look.problem, 'Problem: What is 2 + 3?', 'problem from the attribute');
      equal(await page.evaluate(() => document.getElementById('w2').shadowRoot.querySelectorAll('li.step').length), 3, 'steps from the JSON attribute');
      equal(await page.evaluate(() => document.getElementById('w2').shadowRoot.querySelector('.root').dataset.theme), 'dark', 'theme attribute');
    },
  },
  {
    name: 'keyboard: Tab reaches Verify, Enter runs it; reward, step and done events fire; the page shows the verdicts',
    fn: async ({ artifacts }) => {
      const w = page.locator('#w1');
      const verify = w.getByRole('button', { name: 'Verify the steps' });
      await verify.focus();
      await page.keyboard.press('Enter');
      await page.waitForFunction(() => window.__events.some((e) => e.id === 'w1' && (e.type === 'done' || e.type === 'error')), null, { timeout: LONG });
      const got = await events('w1');
      const err = got.find((e) => e.type === 'error');
      ok(!err, `no error event: ${JSON.stringify(err?.detail)}`);
      const done = got.filter((e) => e.type === 'done');
      equal(done.length, 1, 'one done event');
      const result = done[0].detail;
      equal(result.complete, true, 'complete');
      equal(result.steps.length, 2, 'both steps judged');
      const steps = got.filter((e) => e.type === 'step');
      equal(steps.map((e) => e.detail.index), [0, 1], 'a step event per step, in order');
      steps.forEach((e, i) => equal(e.detail.reward, result.steps[i].reward, `step ${i} event reward`));
      const rewards = got.filter((e) => e.type === 'reward');
      equal(rewards.map((e) => e.detail.step), [0, 1], 'a reward event per judged sample');
      ok(got.findIndex((e) => e.type === 'reward') < got.findIndex((e) => e.type === 'step'), 'reward before step');
      const dom = await page.evaluate(() => {
        const s = document.getElementById('w1').shadowRoot;
        return {
          states: [...s.querySelectorAll('li.step')].map((li) => li.dataset.state),
          rationale: s.querySelector('pre.rationale')?.textContent ?? '',
          status: s.querySelector('[role=status]').textContent,
          summary: s.querySelector('.summary').textContent,
          result: document.getElementById('w1').result,
        };
      });
      ok(dom.states.every((st) => st === 'good' || st === 'bad'), `steps show a verdict: ${dom.states}`);
      ok(dom.rationale.length > 20, 'the rationale streamed into the widget');
      ok(/^Done\./.test(dom.status), `the live region announces the end: ${dom.status}`);
      ok(dom.summary.length > 0, 'a summary line');
      equal(dom.result, result, 'the result property');
      // The rationale opens from the keyboard.
      const summary = w.locator('summary').first();
      await summary.focus();
      await page.keyboard.press('Enter');
      equal(await page.evaluate(() => document.getElementById('w1').shadowRoot.querySelector('details.why').open), true, 'details open with Enter');
      await page.screenshot({ path: join(artifacts, 'widget-done.png'), fullPage: true });
    },
  },
  {
    name: 'a second widget shares the loaded model; the steps property; a widget with no problem sends an error event',
    fn: async () => {
      await page.evaluate(() => { document.getElementById('w2').steps = ['Tom starts with 3 apples.', 'He buys 4 more, so he has 3 + 4 = 7 apples.']; });
      equal(await page.evaluate(() => document.getElementById('w2').shadowRoot.querySelectorAll('li.step').length), 2, 'steps set as a property');
      const result = await page.evaluate(() => document.getElementById('w2').verify());
      ok(result && result.steps.length === 2, 'verify() from script resolves with the result');
      equal((await events('w2')).filter((e) => e.type === 'done').length, 1, 'done event of the second widget');
      await page.locator('#empty').getByRole('button', { name: 'Verify the steps' }).click();
      await page.waitForFunction(() => window.__events.some((e) => e.id === 'empty' && e.type === 'error'));
      const err = (await events('empty')).find((e) => e.type === 'error');
      equal(err.detail.stage, 'input', 'error stage');
      ok(/problem/.test(err.detail.message), `the message says what is missing: ${err.detail.message}`);
      ok(await page.locator('#empty').getByRole('alert').isVisible(), 'the error shows in the widget');
    },
  },
  {
    // A typo in an attribute would otherwise change what runs without a word (device="CPU" ran on
    // WebGPU, samples="lots" one sample, steps that are not JSON a bare JSON.parse message).
    name: 'attribute mistakes (steps not JSON, an unknown device, quant or samples) stop with an error naming the attribute; device="CPU" is cpu',
    fn: async () => {
      const cases = [
        [{ steps: 'Tom starts with 3 apples.' }, /steps attribute is not JSON/],
        [{ device: 'webgl' }, /device attribute must be auto, gpu or cpu, not "webgl"/],
        [{ quant: 'q5' }, /quant attribute must be q4, q8 or none, not "q5"/],
        [{ samples: 'lots' }, /samples attribute must be a whole number from 1 to \d+, not "lots"/],
        [{ samples: '0' }, /samples attribute/],
      ];
      for (const [attrs, want] of cases) {
        const detail = await page.evaluate(async (attrs) => {
          const w = document.createElement('genprm-verifier');
          Object.entries({ model: 'demo', device: 'cpu', problem: 'What is 2 + 3?', steps: '["2 + 3 = 5."]', ...attrs }).forEach(([k, v]) => w.setAttribute(k, v));
          document.body.append(w);
          const got = new Promise((resolve) => w.addEventListener('genprm-error', (e) => resolve(e.detail), { once: true }));
          const result = await w.verify();
          w.remove();
          return { result, ...(await got) };
        }, attrs);
        equal(detail.result, null, `${JSON.stringify(attrs)}: nothing ran`);
        equal(detail.stage, 'input', `${JSON.stringify(attrs)}: the input stage`);
        ok(want.test(detail.message), `${JSON.stringify(attrs)}: ${detail.message}`);
      }
      const upper = await page.evaluate(async () => {
        const w = document.createElement('genprm-verifier');
        Object.entries({ model: 'demo', device: 'CPU', greedy: '', problem: 'What is 2 + 3?', steps: '["2 + 3 = 5."]' }).forEach(([k, v]) => w.setAttribute(k, v));
        document.body.append(w);
        const result = await w.verify();
        w.remove();
        return result?.complete;
      });
      equal(upper, true, 'device="CPU" verifies');
    },
  },
  {
    name: 'the model runs in one engine worker shared by both widgets: the worker fetched the wasm module and the model once, the page neither',
    fn: async () => {
      const engines = page.workers().filter((w) => /engine-worker/.test(w.url()));
      equal(engines.length, 1, `one engine worker: ${page.workers().map((w) => w.url())}`);
      const WASM = /genprm(_relaxed)?_bg[^/]*\.wasm$/;
      const CONFIG = /\/models\/tiny-genprm\/config\.json$/;
      const pageFetched = await page.evaluate(() => performance.getEntriesByType('resource').map((e) => e.name));
      equal(pageFetched.filter((n) => WASM.test(n) || CONFIG.test(n)), [], 'the page fetched neither the wasm module nor the model');
      const workerFetched = await engines[0].evaluate(() => performance.getEntriesByType('resource').map((e) => e.name));
      equal(workerFetched.filter((n) => WASM.test(n)).length, 1, `the worker fetched the wasm module once: ${workerFetched}`);
      equal(workerFetched.filter((n) => CONFIG.test(n)).length, 1, 'the two widgets loaded the model once, in the worker');
    },
  },
  {
    name: 'during a verification the page keeps answering (a timer keeps ticking), events stream, and Cancel from the page stops it',
    fn: async () => {
      const got = await page.evaluate(async () => {
        const w = document.getElementById('w1');
        let ticks = 0, beating = true;
        const beat = () => { ticks++; if (beating) setTimeout(beat, 10); };
        setTimeout(beat, 10);
        const seen = [];
        const log = (e) => seen.push({ type: e.type, ticks, rationale: w.shadowRoot.querySelector('pre.rationale')?.textContent.length ?? 0 });
        w.addEventListener('genprm-reward', log);
        w.addEventListener('genprm-step', log);
        const t0 = ticks;
        const full = await w.verify();
        const ticked = ticks - t0;
        w.removeEventListener('genprm-reward', log);
        w.removeEventListener('genprm-step', log);
        // Cancel from the page as soon as step 1 is judged: step 2 is never finished.
        const cancelAt = () => w.cancel();
        w.addEventListener('genprm-reward', cancelAt, { once: true });
        const cancelled = await w.verify();
        beating = false;
        return { ticked, seen, full: { complete: full.complete, steps: full.steps.length }, cancelled: { complete: cancelled.complete, error: cancelled.error, steps: cancelled.steps.length },
          status: w.shadowRoot.querySelector('[role=status]').textContent };
      });
      ok(got.ticked > 0, `the page's timer ticked during the verification: ${got.ticked}`);
      equal(got.full, { complete: true, steps: 2 }, 'the verification completed');
      const first = got.seen[0];
      ok(first && first.type === 'genprm-reward' && first.rationale > 0, `step 1's rationale streamed into the widget before its judgement: ${JSON.stringify(first)}`);
      ok(got.seen.filter((e) => e.type === 'genprm-step').length === 2, `a step event per step: ${JSON.stringify(got.seen)}`);
      equal(got.cancelled.complete, false, 'the cancelled verification is not complete');
      equal(got.cancelled.error, 'cancelled', 'it says cancelled');
      ok(got.cancelled.steps < 2, `step 2 was not finished: ${got.cancelled.steps} steps`);
      ok(/Cancelled/.test(got.status), `the widget says so: ${got.status}`);
    },
  },
  {
    name: 'a step the model reached no verdict on is shown as such, never as "looks right" (show() of a result)',
    fn: async () => {
      const reward = (value, note) => ({ value, judgement: note ? null : 'Yes', p_yes: note ? null : value, p_no: note ? null : 1 - value, ...(note ? { note } : {}) });
      const step = (index, value, note) => ({ index, reward: value, samples: [{ text: '', code_runs: [], reward: reward(value, note), fallback: false, generations: 1 }] });
      const result = (steps) => ({ complete: true, error: null, steps, first_error_step: -1, scores: { min: 0.5, last: 0.5, mean: 0.5 } });
      const shown = (r) => page.evaluate((r) => {
        const w = document.getElementById('w1');
        w.show(r);
        const root = w.shadowRoot;
        return { labels: [...root.querySelectorAll('li.step .verdict .label')].map((e) => e.textContent),
          states: [...root.querySelectorAll('li.step')].map((e) => e.dataset.state),
          summary: root.querySelector('.summary').textContent, status: root.querySelector('[role=status]').textContent };
      }, r);
      let got = await shown(result([step(0, 0.93), step(1, 0.5, 'no \\boxed{Yes} or \\boxed{No} found')]));
      equal(got.labels, ['looks right', 'no verdict'], 'step labels');
      equal(got.states, ['good', 'unsure'], 'step states');
      ok(!/looks right/.test(got.summary) && /no verdict on step 2/.test(got.summary), `summary: ${got.summary}`);
      ok(/no verdict on step 2/.test(got.status), `announced: ${got.status}`);
      got = await shown(result([step(0, 0.5, 'no decision'), step(1, 0.5, 'no decision')]));
      ok(/no verdict on any step/.test(got.summary), `all undecided: ${got.summary}`);
      got = await shown(result([step(0, 0.93), step(1, 0.88)]));
      equal(got.summary, 'Every step looks right.', 'decided steps keep the plain summary');
    },
  },
  {
    name: 'TypeScript: querySelector gives a GenprmVerifier and its genprm-* events are typed (tests/types type-checks without casts)',
    fn: async () => {
      try {
        execFileSync(join(REPO, 'web', 'node_modules', '.bin', 'tsc'), ['-p', join(REPO, 'tests', 'types')], { stdio: 'pipe' });
      } catch (e) {
        throw new Error(`tsc -p tests/types failed:\n${e.stdout}${e.stderr}`);
      }
    },
  },
  {
    name: 'a page whose policy forbids the worker (worker-src without \'self\') still verifies, on its own thread, with a console warning',
    fn: async ({ browser, server, fixtures }) => {
      const csp = "default-src 'self'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval' data: blob:; worker-src data:; style-src 'self' 'unsafe-inline'; connect-src 'self'";
      await writeFile(join(fixtures, 'pages', 'no-worker.html'), `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>no worker</title>
<meta http-equiv="Content-Security-Policy" content="${csp}">
<script type="module" src="/vendor/genprm/dist/index.js"></script></head><body>
<genprm-verifier id="w" model="demo" device="cpu" greedy problem="What is 2 + 3?"><ol><li>2 + 3 = 5.</li></ol></genprm-verifier>
</body></html>`);
      const p = await browser.newPage();
      p.setDefaultTimeout(LONG);
      const warnings = [];
      p.on('console', (m) => { if (m.type() === 'warning') warnings.push(m.text()); });
      try {
        await p.goto(server.url + '__test__/pages/no-worker.html');
        await p.waitForFunction(() => customElements.get('genprm-verifier') !== undefined);
        const result = await p.evaluate(() => document.getElementById('w').verify());
        ok(result && result.complete && result.steps.length === 1, `verified: ${JSON.stringify(result)?.slice(0, 200)}`);
        ok(warnings.some((w) => /engine's worker could not start/.test(w)), `a warning says the worker could not start: ${warnings}`);
        equal(p.workers().filter((w) => /engine-worker/.test(w.url())).length, 0, 'no engine worker');
      } finally {
        await p.close();
      }
    },
  },
  {
    name: 'stream(): leaving the loop after the first event cancels the verification (its result says cancelled)',
    fn: async () => {
      const got = await page.evaluate(async () => {
        const g = await import('/vendor/genprm/dist/index.js');
        const model = await g.loadModel('demo', { device: 'cpu' });
        // Eight steps: far more work than the abort takes to arrive.
        const stream = model.stream({ problem: 'What is 2 + 3?', steps: Array.from({ length: 8 }, (_, i) => `Step ${i + 1}: 2 + 3 = 5.`), options: { greedy: true } });
        let seen = 0;
        for await (const e of stream) { seen += e ? 1 : 0; break; }
        const result = await stream.result;
        model.free();
        return { seen, complete: result.complete, error: result.error };
      });
      equal(got, { seen: 1, complete: false, error: 'cancelled' }, 'the stream left after one event');
    },
  },
  {
    name: 'verifyProgress() takes the steps or their count (anything else is a TypeError); download() reports a finished file once',
    fn: async ({ server }) => {
      const got = await page.evaluate(async (url) => {
        const g = await import('/vendor/genprm/dist/index.js');
        const fromSteps = g.verifyProgress(['a', 'b', 'c']).steps.length;
        const fromCount = g.verifyProgress(3).steps.length;
        let refused = null;
        try { g.verifyProgress('abc'); } catch (e) { refused = e.name; }
        const reports = [];
        await g.download(url, 'config.json', (p) => reports.push(`${p.loaded}/${p.total}`), { cache: false });
        return { fromSteps, fromCount, refused, reports };
      }, `${server.url}__test__/pages/hostile.html`);
      equal([got.fromSteps, got.fromCount, got.refused], [3, 3, 'TypeError'], 'verifyProgress');
      equal(new Set(got.reports).size, got.reports.length, `each progress report says something new: ${got.reports}`);
    },
  },
  {
    name: 'no errors in the console',
    fn: async () => equal(errors.filter((e) => !/status of 404/.test(e)), [], 'console errors'),
  },
  {
    name: 'the engine worker crashing mid-verification (an uncaught trap in it): the widget says the verification stopped, and Verify again loads the model in a new worker and completes',
    fn: async () => {
      const before = page.workers().filter((w) => /engine-worker/.test(w.url()));
      equal(before.length, 1, 'one engine worker');
      const started = page.evaluate(() => {
        const w = document.getElementById('w2');
        window.__crash = { reward: new Promise((r) => w.addEventListener('genprm-reward', r, { once: true })) };
        return true;
      });
      await started;
      const run = page.evaluate(() => document.getElementById('w2').verify().then((r) => r && { complete: r.complete }));
      await page.evaluate(() => window.__crash.reward);
      // As a trap in the wasm module surfaces from a task the worker runs: uncaught.
      await before[0].evaluate(() => { setTimeout(() => { throw new WebAssembly.RuntimeError('unreachable (a simulated trap)'); }, 0); });
      equal(await run, null, 'the stopped verification resolves null');
      const error = (await events('w2')).filter((e) => e.type === 'error').at(-1)?.detail;
      ok(error && error.stage === 'verify' && /worker stopped/.test(error.message) && /simulated trap/.test(error.message) && /load it again|Verify again/.test(error.message),
        `a genprm-error says the worker stopped and what to do: ${JSON.stringify(error)}`);
      const shown = await page.evaluate(() => document.getElementById('w2').shadowRoot.textContent);
      ok(/worker stopped/.test(shown), 'the widget shows it');
      const again = await page.evaluate(() => document.getElementById('w2').verify().then((r) => r && { complete: r.complete, first: r.first_error_step }));
      equal(again, { complete: true, first: 1 }, 'Verify again completes (step 2 flagged)');
      const after = page.workers().filter((w) => /engine-worker/.test(w.url()));
      equal(after.length, 1, `one engine worker again: ${page.workers().map((w) => w.url())}`);
      ok(after[0] !== before[0], 'a new one');
    },
  },
];
