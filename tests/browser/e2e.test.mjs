// The whole pipeline in the page: the tiny GenPRM model loads from the app (WebGPU; SwiftShader
// without a GPU), verifies solutions it was trained on with greedy decoding, and everything the
// page shows — the streamed rationale, the Python outputs (from Pyodide), the rewards, the first
// wrong step — equals what the native CLI computes for the same input. Then a hostile code block
// (`while True: pass`) inside a verification is stopped at 5 s and the next step still runs. One
// solution runs with two samples (Maj@2), decoded as one batch in the page as on the CLI. Last,
// a q4 pack of the same model verified on the page's CPU device (WebAssembly: the module built
// with relaxed SIMD, which this Chromium has; f16 KV cache) equals the native CLI on the same
// pack (AVX2 / VNNI kernels).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { close, equal, ok } from './lib/assert.mjs';
import { REPO } from './lib/paths.mjs';
import { RELAXED_SIMD_PROBE, wasmMissing } from './lib/wasm.mjs';
import { genprmBinary, TINY } from './lib/fixtures.mjs';

const DEVICE = process.env.GENPRM_BROWSER_DEVICE || 'gpu';
const REWARD_TOL = 1e-3; // WebGPU (f32, another summation order) against the CPU
const LONG = 20 * 60_000; // SwiftShader is slow; tests assert behaviour, not time

let page;
let records;
const errors = [];

async function cli(record, samples = 1, model = join(REPO, 'tests/fixtures/models/tiny-genprm'), extra = []) {
  const dir = await mkdtemp(join(tmpdir(), 'genprm-e2e-'));
  const input = join(dir, `${record.id}.json`);
  await writeFile(input, JSON.stringify(record));
  const out = execFileSync(genprmBinary(), ['verify', '--model', model, '--input', input, '--json', '--greedy', '--samples', String(samples), ...extra],
    { encoding: 'utf8', maxBuffer: 64 << 20 });
  const result = JSON.parse(out.trim().split('\n').pop());
  delete result.id;
  delete result.label;
  return result;
}

let browserRef;

/** Starts loading the q4 pack the CPU tests quantize (fixtures' models/e2e-q4) on `p`'s CPU device. */
async function loadPackOnCpu(p, server) {
  await p.getByTestId('device').selectOption('cpu');
  await p.getByTestId('source-url').check();
  await p.getByTestId('model-url').fill(server.url + '__test__/models/e2e-q4/');
  await p.getByTestId('load-model').click();
}

export async function setup({ browser, server }) {
  browserRef = browser;
  const why = wasmMissing();
  if (why) return why;
  if (!existsSync(genprmBinary())) return `the native CLI ${genprmBinary()} is not built (cargo build --bin genprm)`;
  records = JSON.parse(await readFile(join(REPO, 'tests/fixtures/protocol/e2e.json'), 'utf8'));
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.setDefaultTimeout(LONG);
  await page.goto(server.url + '?model=demo');
  await page.getByTestId('device').selectOption(DEVICE);
  await page.getByTestId('load-model').click();
  await page.waitForFunction(() => document.querySelector('[data-testid=model-info]')?.dataset.loaded !== undefined
    && !document.querySelector('[data-testid=load-model]').disabled, null, { timeout: LONG });
  const loaded = await page.getByTestId('model-info').getAttribute('data-loaded');
  if (loaded !== 'true') {
    const alerts = await page.getByTestId('alerts').textContent();
    throw new Error(`the tiny model did not load in the page: ${alerts}`);
  }
  await page.getByTestId('greedy').check();
  // Record what the executor is asked to run and answers, to show the outputs came from Pyodide.
  await page.evaluate(() => {
    const ex = window.genprm.executor;
    const run = ex.run.bind(ex);
    window.__runs = [];
    window.__hostile = 0; // how many upcoming runs to replace with an infinite loop
    ex.run = async (path, code) => {
      const hostile = window.__hostile > 0;
      if (hostile) window.__hostile--;
      const ran = hostile ? 'while True: pass' : code;
      const outcome = await run(path, ran);
      window.__runs.push({ path, code: ran, outcome });
      return outcome;
    };
  });
}

export async function teardown() {
  await page?.close();
}

async function verifyInPage(id, samples = 1) {
  await page.getByTestId('example').selectOption(`tiny-${id}`);
  await page.getByTestId('samples').fill(String(samples));
  await page.evaluate(() => { window.__runs = []; });
  const before = await page.evaluate(() => window.genprm.executor.restarts);
  await page.getByTestId('verify').click();
  await page.waitForFunction(() => !window.genprm.controller.running, null, { timeout: LONG });
  if (await page.evaluate(() => window.genprm.controller.last === null)) {
    throw new Error(`the verification did not run: ${await page.getByTestId('summary').textContent()} ${await page.getByTestId('alerts').textContent()}`);
  }
  const state = await page.evaluate(() => ({
    result: window.genprm.controller.last,
    events: window.genprm.controller.events,
    runs: window.__runs,
    restarts: window.genprm.executor.restarts,
    dom: [...document.querySelectorAll('[data-testid=step-result]')].map((el) => ({
      rationale: [...el.querySelectorAll('[data-testid=rationale]')].map((r) => r.textContent),
      outputs: [...el.querySelectorAll('.sample')].map((p) => [...p.querySelectorAll('[data-testid=code-output]')].map((o) => o.textContent)),
      reward: el.querySelector('[data-testid=reward]')?.textContent ?? '',
      firstError: el.classList.contains('first-error'),
      badge: !!el.querySelector('[data-testid=first-error-badge]'),
    })),
    summary: document.querySelector('[data-testid=summary]')?.textContent ?? '',
  }));
  return { ...state, restartsBefore: before };
}

/** The rationale of (step, sample) as the text events streamed it. */
function streamed(events, step, sample) {
  let text = '';
  for (const e of events) {
    if (e.step !== step || e.sample !== sample) continue;
    if (e.event === 'text') text += e.text;
    if (e.event === 'fallback') text = e.text;
  }
  return text;
}

function compare(got, expected, id) {
  const { result, events, runs, dom } = got;
  equal(result.complete, true, `${id}: complete`);
  equal(result.error, null, `${id}: error`);
  equal(result.first_error_step, expected.first_error_step, `${id}: first_error_step`);
  equal(result.steps.length, expected.steps.length, `${id}: steps judged`);
  for (const k of ['min', 'last', 'mean']) close(result.scores[k], expected.scores[k], REWARD_TOL, `${id}: scores.${k}`);
  const expectedRuns = [];
  expected.steps.forEach((want, i) => {
    const got = result.steps[i];
    equal(got.index, want.index, `${id} step ${i}: index`);
    close(got.reward, want.reward, REWARD_TOL, `${id} step ${i}: reward`);
    equal(got.samples.length, want.samples.length, `${id} step ${i}: samples`);
    want.samples.forEach((ws, s) => {
      const gs = got.samples[s];
      equal(gs.text, ws.text, `${id} step ${i} sample ${s}: rationale`);
      equal(gs.code_runs, ws.code_runs, `${id} step ${i} sample ${s}: code runs`);
      equal(gs.fallback, ws.fallback, `${id} step ${i} sample ${s}: fallback`);
      equal(gs.reward.judgement, ws.reward.judgement, `${id} step ${i} sample ${s}: judgement`);
      close(gs.reward.value, ws.reward.value, REWARD_TOL, `${id} step ${i} sample ${s}: reward`);
      // Streamed, not just returned: several text events, forced and model text and code output.
      const mine = events.filter((e) => e.event === 'text' && e.step === i && e.sample === s);
      ok(mine.length > 3, `${id} step ${i}: the rationale streamed in pieces (${mine.length} text events)`);
      for (const src of ['forced', 'model', 'code_output']) ok(mine.some((e) => e.source === src), `${id} step ${i}: ${src} text streamed`);
      equal(streamed(events, i, s), ws.text, `${id} step ${i} sample ${s}: the streamed text`);
      // What the page shows.
      equal(dom[i].rationale[s], ws.text, `${id} step ${i}: rationale in the page`);
      equal(dom[i].outputs[s], ws.code_runs.map((r) => r.output), `${id} step ${i} sample ${s}: code outputs in the page`);
      for (const r of ws.code_runs) if (r.code !== null) expectedRuns.push(r);
    });
    close(Number(dom[i].reward), want.reward, 0.0015, `${id} step ${i}: reward shown`);
    equal(dom[i].firstError, i === expected.first_error_step, `${id} step ${i}: highlighted as first wrong step`);
    equal(dom[i].badge, i === expected.first_error_step, `${id} step ${i}: first-wrong-step badge`);
  });
  // The outputs came from Pyodide: the same code ran there and printed what the CLI's sandbox printed
  // (batched samples run their code concurrently, so runs are compared as sets).
  const key = (code, out) => JSON.stringify([code, out]);
  const ran = runs.map((r) => key(r.code, r.outcome.outcome === 'ok' ? r.outcome.stdout.trim() : r.outcome)).sort();
  equal(ran, expectedRuns.map((r) => key(r.code, r.output)).sort(), `${id}: code run by Pyodide and its outputs`);
  equal(got.restarts, got.restartsBefore, `${id}: no Python restarts`);
}

export const tests = [
  ...[['add', 2], ['apples', 1]].map(([id, samples]) => ({
    name: `"${id}": the page equals the native CLI (greedy, ${DEVICE}${samples > 1 ? `, Maj@${samples} as one batch` : ''})`,
    fn: async ({ artifacts }) => {
      const record = records.find((r) => r.id === id);
      const expected = await cli(record, samples);
      const got = await verifyInPage(id, samples);
      equal(got.result.steps[0].samples.length, samples, `${id}: samples per step`);
      await page.screenshot({ path: join(artifacts, `e2e-${id}.png`), fullPage: true });
      compare(got, expected, id);
      if (expected.first_error_step >= 0) ok(/First wrong step: Step 2/.test(got.summary), `summary names step 2: ${got.summary}`);
      else ok(/No wrong step found/.test(got.summary), `summary says no wrong step: ${got.summary}`);
    },
  })),
  {
    name: 'a hostile `while True: pass` block is stopped at 5 s and the next step still runs',
    fn: async ({ artifacts }) => {
      await page.evaluate(() => { window.__hostile = 1; });
      const got = await verifyInPage('add');
      await page.screenshot({ path: join(artifacts, 'e2e-hostile.png'), fullPage: true });
      const { result, runs } = got;
      equal(result.complete, true, 'complete');
      equal(result.steps.length, 2, 'both steps judged');
      equal(runs[0].code, 'while True: pass', 'the hostile block ran first');
      equal(runs[0].outcome, { outcome: 'timeout', message: 'Code execution timed out' }, 'its outcome');
      equal(result.steps[0].samples[0].code_runs[0].output, 'Code execute time out: Code execution timed out', 'the official text went to the model');
      ok(got.dom[0].outputs[0][0] === 'Code execute time out: Code execution timed out', 'the page shows the time-out');
      equal(got.restarts, got.restartsBefore + 1, 'the worker was replaced once');
      const later = runs.slice(1);
      ok(later.length > 0, 'code ran after the time-out');
      for (const r of later) ok(r.outcome.outcome !== 'timeout', `a later run did not time out: ${JSON.stringify(r)}`);
      const step2 = result.steps[1].samples[0].code_runs;
      ok(step2.length > 0 && step2.every((r) => !/time out/.test(r.output)), `step 2 ran its code: ${JSON.stringify(step2)}`);
    },
  },
  {
    name: '"apples" as a q4 pack on the CPU device (the relaxed-SIMD module: this Chromium has relaxed SIMD) with an f16 KV cache equals the native CLI on the same pack and cache',
    fn: async ({ artifacts, fixtures, server }) => {
      const pack = join(fixtures, 'models', 'e2e-q4');
      execFileSync(genprmBinary(), ['quantize', '--model', TINY, '--to', 'q4', '--out', pack], { stdio: 'pipe' });
      const record = records.find((r) => r.id === 'apples');
      const expected = await cli(record, 1, pack, ['--kv-cache', 'f16']);
      await page.getByTestId('kv-cache').selectOption('f16');
      await loadPackOnCpu(page, server);
      // The demo model is loaded already: wait for the page to show the pack's q4 weights.
      await page.waitForFunction(() => {
        const info = document.querySelector('[data-testid=model-info]');
        return info?.dataset.loaded === 'true' && /q4/i.test(info.textContent) && /KV cache in f16/.test(info.textContent)
          && /relaxed SIMD/.test(info.textContent)
          && !document.querySelector('[data-testid=load-model]').disabled;
      }, null, { timeout: 5 * 60_000 }).catch(async (e) => {
        throw new Error(`the q4 pack did not load on the CPU: ${await page.getByTestId('alerts').textContent()} (${e.message})`);
      });
      const got = await verifyInPage('apples');
      await page.screenshot({ path: join(artifacts, 'e2e-q4-cpu.png'), fullPage: true });
      compare(got, expected, 'apples (q4 pack, CPU)');
    },
  },
  {
    name: 'an engine without relaxed SIMD gets the SIMD128 module: the q4 pack loads on the CPU with it',
    fn: async ({ artifacts, fixtures, server }) => {
      const other = await browserRef.newPage({ viewport: { width: 1280, height: 1000 } });
      try {
        // Answer the relaxed-SIMD probe (pkg/src/runtime/wasm.ts) as an engine without it would.
        await other.addInitScript((probe) => {
          const validate = WebAssembly.validate.bind(WebAssembly);
          WebAssembly.validate = (bytes, ...rest) => {
            const b = ArrayBuffer.isView(bytes) ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : new Uint8Array(bytes);
            if (b.length === probe.length && b.every((x, i) => x === probe[i])) return false;
            return validate(bytes, ...rest);
          };
        }, RELAXED_SIMD_PROBE);
        await other.goto(server.url);
        await loadPackOnCpu(other, server);
        await other.waitForFunction(() => {
          const info = document.querySelector('[data-testid=model-info]');
          return info?.dataset.loaded !== undefined && !document.querySelector('[data-testid=load-model]').disabled;
        }, null, { timeout: 5 * 60_000 });
        const info = await other.getByTestId('model-info').textContent();
        await other.screenshot({ path: join(artifacts, 'e2e-q4-cpu-simd128.png') });
        ok(/q4 weights on the CPU \(WebAssembly SIMD128\)/.test(info), `the SIMD128 module ran: ${info} ${await other.getByTestId('alerts').textContent()}`);
      } finally {
        await other.close();
      }
    },
  },
  {
    name: 'WebGPU decode steps recorded once and replayed verify exactly as launched ones (the demo model as q4 on the GPU)',
    fn: async ({ browser, server }) => {
      const p = await browser.newPage();
      p.setDefaultTimeout(LONG);
      await p.goto(server.url + 'grade.html');
      const out = await p.evaluate(async () => {
        const g = await import('/vendor/genprm/dist/index.js');
        const request = { problem: 'Tom has 3 apples and buys 4 more. How many apples does he have?',
          steps: ['Tom starts with 3 apples.', 'He buys 4 more, so he has 3 + 4 = 8 apples.'], options: { greedy: true, execute: false } };
        const run = async (gpuDecode) => {
          const m = await g.loadModel('demo', { device: 'gpu', quant: 'q4', gpuDecode });
          const r = await m.verify(request);
          const info = m.wasmModel.info();
          m.free();
          return { complete: r.complete, steps: r.steps.map((s) => ({ reward: s.reward, texts: s.samples.map((x) => x.text) })),
            replays: info.decodeReplays, recordings: info.decodeRecordings };
        };
        return { replay: await run('replay'), launch: await run('launch') };
      });
      await p.close();
      ok(out.replay.complete && out.launch.complete, `both complete: ${JSON.stringify(out)}`);
      equal(JSON.stringify(out.replay.steps), JSON.stringify(out.launch.steps), 'the same rationales and rewards');
      ok(out.replay.replays > 10 && out.replay.recordings >= 1, `steps were replayed: ${out.replay.replays} replays, ${out.replay.recordings} recordings`);
      equal(out.launch.replays, 0, 'launch mode replays nothing');
    },
  },
  {
    name: 'no errors in the console',
    fn: async () => {
      equal(errors.filter((e) => !/status of 404/.test(e)), [], 'console errors');
    },
  },
];
