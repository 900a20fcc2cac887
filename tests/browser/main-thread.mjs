#!/usr/bin/env node
// How long the page's main thread is held up while GenPRM verifies a solution, with the model in
// the package's engine worker (the default) and on the page's thread (`worker: false`): not a
// test (nothing is asserted), a measurement for the README. Serves web/dist (build it first), and
// in a fresh page for each run loads the tiny demo model with the built package
// (/vendor/genprm/dist/index.js), then verifies the "apples" example (Python on, greedy) while a
// PerformanceObserver collects long tasks and a 10 ms timer measures its own gaps.
//
//   node tests/browser/main-thread.mjs [--device gpu|cpu] [--quant q4|q8|none] [--repeat N]
//
// Prints one JSON line per run: thread, device, the verification's seconds, the longest long task
// and the longest timer gap (ms), and the share of the verification the timer was late.
import { launch } from './lib/browser.mjs';
import { serve } from './lib/server.mjs';
import { DIST } from './lib/paths.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const device = arg('device', 'gpu');
const quantArg = arg('quant', 'q4');
const quant = quantArg === 'none' ? null : quantArg;
const repeat = Number(arg('repeat', '1'));

const server = await serve(DIST);
const browser = await launch();
try {
  for (let r = 0; r < repeat; r++) {
    for (const worker of [false, true]) {
      const page = await browser.newPage();
      page.setDefaultTimeout(10 * 60_000);
      await page.goto(server.url + 'grade.html');
      const out = await page.evaluate(async ({ worker, device, quant }) => {
        const g = await import('/vendor/genprm/dist/index.js');
        const model = await g.loadModel('demo', { device, quant, worker });
        await g.sharedExecutor().ready;
        const request = { problem: 'Tom has 3 apples and buys 4 more. How many apples does he have?',
          steps: ['Tom starts with 3 apples.', 'He buys 4 more, so he has 3 + 4 = 8 apples.', 'The answer is 8.'], options: { greedy: true } };
        let longestTask = 0;
        const observer = new PerformanceObserver((list) => { for (const e of list.getEntries()) longestTask = Math.max(longestTask, e.duration); });
        observer.observe({ type: 'longtask' });
        const INTERVAL = 10;
        const start = performance.now();
        let last = start, longestGap = 0, late = 0, beating = true;
        const beat = () => {
          const now = performance.now();
          longestGap = Math.max(longestGap, now - last);
          late += Math.max(0, now - last - INTERVAL);
          last = now;
          if (beating) setTimeout(beat, INTERVAL);
        };
        setTimeout(beat, INTERVAL);
        const result = await model.verify(request);
        beating = false;
        beat();
        for (const e of observer.takeRecords()) longestTask = Math.max(longestTask, e.duration);
        observer.disconnect();
        const seconds = (performance.now() - start) / 1000;
        const info = model.info;
        model.free();
        return { thread: model.thread, device: info.device, quant: info.quant, complete: result.complete, verify_s: +seconds.toFixed(2),
          longest_task_ms: Math.round(longestTask), longest_gap_ms: Math.round(longestGap), held_up_pct: +((100 * late) / (seconds * 1000)).toFixed(1) };
      }, { worker, device, quant });
      console.log(JSON.stringify(out));
      await page.close();
    }
  }
} finally {
  await browser.close();
  await server.close();
}
