// The benchmark page with the small Qwen2 shape on the wasm CPU device (a few seconds): it runs
// the wasm benchRandom in the package's engine worker (and once on the page's thread) and reports
// each measurement, the page's main thread during the run included. Behaviour only, never a speed.
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { equal, ok } from './lib/assert.mjs';
import { REPO } from './lib/paths.mjs';
import { wasmMissing } from './lib/wasm.mjs';

let page;
const errors = [];

export async function setup({ browser, server }) {
  const why = wasmMissing();
  if (why) return why;
  if (!/benchRandom/.test(readFileSync(join(REPO, 'pkg', 'wasm', 'genprm.d.ts'), 'utf8'))) return 'the wasm module has no benchRandom yet (rebuild pkg/wasm with scripts/build-wasm)';
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(10 * 60_000);
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(server.url + '?bench');
  await page.waitForURL(/bench\.html/);
}

export async function teardown() {
  await page?.close();
}

export const tests = [
  {
    name: 'qwen2-small on the CPU: load, first call, TTFT, prefill and decode tokens/s reported',
    fn: async ({ artifacts }) => {
      await page.getByTestId('bench-shape').selectOption('qwen2-small');
      await page.getByTestId('bench-quant').selectOption('q4');
      await page.getByTestId('bench-device').selectOption('cpu');
      await page.getByTestId('bench-prompt').fill('16');
      await page.getByTestId('bench-new').fill('4');
      await page.getByTestId('bench-run').click();
      await page.waitForFunction(() => ['done', 'failed'].includes(document.querySelector('[data-testid=bench-status]')?.dataset.state));
      await page.screenshot({ path: join(artifacts, 'bench.png'), fullPage: true });
      equal(await page.getByTestId('bench-status').getAttribute('data-state'), 'done', `finished: ${await page.getByTestId('alerts').textContent()}`);
      const runs = await page.evaluate(() => window.genprmBench.runs);
      equal(runs.length, 1, 'one run');
      for (const k of ['load_s', 'first_call_s', 'ttft_s', 'prefill_tok_s', 'decode_tok_s', 'weight_bytes_per_step', 'kv_cache_mib']) ok(Number.isFinite(runs[0][k]) && runs[0][k] > 0, `${k} = ${runs[0][k]}`);
      // No bandwidth probe on the wasm CPU (one thread; a gigabyte of wasm memory), so no bound.
      equal([runs[0].read_gb_s, runs[0].decode_bound_tok_s], [null, null], 'no memory probe on the CPU');
      equal(runs[0].kv_cache, 'f32', 'an f32 KV cache by default on the CPU');
      equal(await page.locator('[data-stage]').evaluateAll((els) => els.map((e) => e.dataset.stage)), ['load', 'compile', 'prefill', 'decode', 'bandwidth'], 'stages reported in order');
      equal(await page.getByTestId('bench-row').count(), 1, 'a row in the table');
      // The page's main thread during the run, as numbers (the model ran in the engine worker).
      equal(runs[0].thread, 'worker', 'the model ran in the engine worker');
      ok(page.workers().some((w) => /engine-worker/.test(w.url())), `an engine worker: ${page.workers().map((w) => w.url())}`);
      ok(Number.isFinite(runs[0].main_longest_gap_ms) && runs[0].main_longest_gap_ms >= 0, `main_longest_gap_ms = ${runs[0].main_longest_gap_ms}`);
      ok(Number.isFinite(runs[0].main_blocked_pct) && runs[0].main_blocked_pct >= 0 && runs[0].main_blocked_pct <= 100, `main_blocked_pct = ${runs[0].main_blocked_pct}`);
      ok(runs[0].main_longest_task_ms === null || (Number.isFinite(runs[0].main_longest_task_ms) && runs[0].main_longest_task_ms >= 0), `main_longest_task_ms = ${runs[0].main_longest_task_ms}`);
      ok(/longest task \d+ ms/.test(await page.getByTestId('bench-status').textContent()), 'the status line reports the longest main-thread task');
      equal(errors, [], 'page errors');
    },
  },
  {
    name: 'the same on the page\'s thread (Runs on: page): reported as such',
    fn: async () => {
      await page.getByTestId('bench-thread').selectOption('page');
      await page.getByTestId('bench-run').click();
      await page.waitForFunction(() => window.genprmBench.runs.length === 2 || document.querySelector('[data-testid=bench-status]')?.dataset.state === 'failed');
      equal(await page.getByTestId('bench-status').getAttribute('data-state'), 'done', `finished: ${await page.getByTestId('alerts').textContent()}`);
      const runs = await page.evaluate(() => window.genprmBench.runs);
      equal(runs[1].thread, 'page', 'on the page\'s thread');
      ok(Number.isFinite(runs[1].decode_tok_s) && runs[1].decode_tok_s > 0 && Number.isFinite(runs[1].main_longest_gap_ms), `measured: ${JSON.stringify(runs[1])}`);
      equal(errors, [], 'page errors');
    },
  },
];
