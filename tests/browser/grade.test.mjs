// The grading page: a JSON Lines file (one row unreadable) graded in the browser with the demo
// model on the wasm CPU device; the page is reloaded while it grades, and coming back resumes
// with everything saved kept and nothing verified twice; every solution opens to its
// rationales; the CSV and JSON exports are parsed back and checked against the results.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { equal, ok } from './lib/assert.mjs';
import { parseCSV } from './lib/csv.mjs';
import { REPO } from './lib/paths.mjs';
import { wasmMissing } from './lib/wasm.mjs';

const LONG = 10 * 60_000;
let page;
const errors = [];

const ROWS = [
  { id: 'q1', student_id: 'ana', problem: 'What is 2 + 3?', steps: ['2 + 3 = 5.', 'So the answer is 5.'], label: -1 },
  { id: 'q2', student_id: 'ben', problem: 'Tom has 3 apples and buys 4 more. How many apples does he have?', steps: ['Tom starts with 3 apples.', 'He buys 4 more, so he has 3 + 4 = 8 apples.', 'The answer is 8.'], label: 1 },
  '{"id": "q3", "student_id": "cy", "problem": "What is 1 + 1?", "steps": ["1 + 1 = 2."',
  { id: 'q4', student_id: 'dee', problem: 'What is 6 times 7?', solution: '6 times 7 is 42.' },
  { id: 'q5', student_id: 'eve', problem: 'What is 2 + 3?', solution: '2 + 3 = 5.\n\nSo the answer is 5.', label: -1 },
];
const JSONL = ROWS.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n';
const GOOD_LINES = [1, 2, 4, 5];

export async function setup({ browser, server }) {
  const why = wasmMissing();
  if (why) return why;
  if (!/parseGradingInput/.test(readFileSync(join(REPO, 'pkg', 'wasm', 'genprm.d.ts'), 'utf8'))) {
    return 'the wasm module has no parseGradingInput/gradeResult yet (rebuild pkg/wasm with scripts/build-wasm once the crate has them)';
  }
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true });
  page.setDefaultTimeout(LONG);
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(server.url + 'grade.html?model=demo');
}

export async function teardown() {
  await page?.close();
}

async function loadDemoModel() {
  await page.getByTestId('device').selectOption('cpu');
  await page.getByTestId('load-model').click();
  await page.waitForFunction(() => document.querySelector('[data-testid=model-info]')?.dataset.loaded !== undefined
    && !document.querySelector('[data-testid=load-model]').disabled, null, { timeout: LONG });
  equal(await page.getByTestId('model-info').getAttribute('data-loaded'), 'true', 'the demo model loaded');
}

const state = () => page.evaluate(() => window.genprmGrade.state());

let final;

export const tests = [
  {
    name: 'a JSONL with a bad row, reloaded mid-run: resumes, complete, nothing graded twice',
    fn: async ({ artifacts }) => {
      await loadDemoModel();
      await page.getByTestId('greedy').check();
      await page.getByTestId('grade-file').setInputFiles({ name: 'class-4b.jsonl', mimeType: 'application/x-ndjson', buffer: Buffer.from(JSONL) });
      await page.waitForFunction(() => /5 solutions/.test(document.querySelector('[data-testid=file-info]')?.textContent ?? ''));
      ok(/line 3/i.test(await page.getByTestId('file-info').textContent()), 'the bad row is named by its line before grading');
      await page.getByTestId('grade-start').click();
      // Two solutions graded (and saved), the third row (bad) follows at once, the fourth is
      // being verified: close the page in the middle of it.
      await page.waitForFunction(() => Number(document.querySelector('[data-testid=grade-status]')?.dataset.done ?? 0) >= 2, null, { timeout: LONG });
      await page.reload();
      await page.waitForFunction(() => window.genprmGrade && window.genprmGrade.state().job !== null, null, { timeout: 60_000 });
      const saved = (await state()).results;
      ok(saved.length >= 2 && saved.length < 5, `the results saved before the reload are back: ${saved.map((r) => r.line)}`);
      ok(/Continuing class-4b\.jsonl/.test(await page.getByTestId('file-info').textContent()), 'the page says it continues the file');
      await loadDemoModel();
      ok(/Continue grading/.test(await page.getByTestId('grade-start').textContent()), 'the button continues');
      await page.getByTestId('grade-start').click();
      await page.waitForFunction(() => document.querySelector('[data-testid=grade-status]')?.dataset.finished === 'true', null, { timeout: LONG });
      await page.screenshot({ path: join(artifacts, 'grade-finished.png'), fullPage: true });
      const s = await state();
      final = s.results;
      const verifiedNow = await page.evaluate(() => window.genprmGrade.verifiedLines);
      equal(final.map((r) => r.line), [1, 2, 3, 4, 5], 'one result per row, every row');
      const savedGraded = saved.filter((r) => r.status !== 'bad_row').map((r) => r.line);
      equal(verifiedNow.filter((l) => savedGraded.includes(l)), [], `nothing saved before the reload was verified again (after: ${verifiedNow})`);
      equal(new Set(verifiedNow).size, verifiedNow.length, 'no row verified twice after the reload');
      equal([...savedGraded, ...verifiedNow].sort(), GOOD_LINES, 'every readable row verified once in all');
      for (const r of saved) equal(final.find((f) => f.line === r.line), r, `line ${r.line} kept as saved`);
      const bad = final.find((r) => r.line === 3);
      equal(bad.status, 'bad_row', 'the unreadable row is reported');
      ok(bad.error && bad.error.length > 0, `with its error: ${bad.error}`);
      for (const l of GOOD_LINES) {
        const r = final.find((f) => f.line === l);
        equal(r.status, 'graded', `line ${l} graded`);
        equal(r.rewards.length, l === 2 ? 3 : l === 4 ? 1 : 2, `line ${l}: a reward per step (solution text split on blank lines)`);
        equal(r.student_id, ROWS[l - 1].student_id, `line ${l}: student id`);
      }
      equal(final.find((r) => r.line === 1).label, -1, 'label kept');
      equal(await page.getByTestId('grade-row').count(), 5, 'a table row per result');
      ok(/bad row/.test(await page.getByTestId('grade-summary').textContent()), 'the summary counts the bad row');
      ok(/agreement with the labels/.test(await page.getByTestId('agreement').textContent()), 'agreement summary shown');
    },
  },
  {
    name: 'drill-down: a solution opens with its step rationales; a bad row shows its error',
    fn: async () => {
      await page.getByRole('button', { name: 'View line 2' }).click();
      const detail = page.getByTestId('detail-results');
      await detail.waitFor();
      equal(await detail.locator('[data-testid=step-result]').count(), 3, 'three steps');
      const rationale = await detail.locator('[data-testid=rationale]').first().textContent();
      equal(rationale, final.find((r) => r.line === 2).steps[0].samples[0].text, 'the first step’s rationale');
      await page.getByRole('button', { name: 'View line 3' }).click();
      ok(/not graded/.test(await page.getByTestId('bad-row-detail').textContent()), 'the bad row explains itself');
    },
  },
  {
    name: 'exports: CSV and JSON parse back to the results, with the agreement summary',
    fn: async () => {
      const grab = async (testId) => {
        const [dl] = await Promise.all([page.waitForEvent('download'), page.getByTestId(testId).click()]);
        return { name: dl.suggestedFilename(), text: readFileSync(await dl.path(), 'utf8') };
      };
      const csv = await grab('export-csv');
      equal(csv.name, 'class-4b-graded.csv', 'CSV file name');
      ok(csv.text.startsWith('\uFEFF'), 'the CSV starts with a byte-order mark (Excel reads it as UTF-8)');
      const [header, ...rows] = parseCSV(csv.text.slice(1));
      equal(rows.length, 5, 'CSV rows');
      const col = (name) => header.indexOf(name);
      for (const name of ['line', 'id', 'student_id', 'status', 'first_error_step', 'score_min', 'score_last', 'score_mean', 'label', 'agreement', 'reward_step_1', 'reward_step_3']) ok(col(name) >= 0, `CSV column ${name}`);
      rows.forEach((row, i) => {
        const r = final[i];
        equal(Number(row[col('line')]), r.line, `CSV line ${r.line}`);
        equal(row[col('student_id')], r.student_id ?? '', `CSV student ${r.line}`);
        equal(row[col('status')], r.status, `CSV status ${r.line}`);
        const rewards = [1, 2, 3].map((k) => row[col(`reward_step_${k}`)]).filter((x) => x !== '').map(Number);
        equal(rewards, r.rewards, `CSV rewards ${r.line}`);
        equal(row[col('first_error_step')] === '' ? null : Number(row[col('first_error_step')]), r.first_error_step, `CSV first error ${r.line}`);
        if (r.scores) equal(Number(row[col('score_mean')]), r.scores.mean, `CSV mean ${r.line}`);
        equal(row[col('agreement')], r.agreement === null ? '' : r.agreement ? 'yes' : 'no', `CSV agreement ${r.line}`);
      });
      const json = await grab('export-json');
      const data = JSON.parse(json.text);
      equal(data.results, final, 'JSON results are the records');
      equal(data.file, 'class-4b.jsonl', 'JSON names the file');
      equal(data.options.greedy, true, 'JSON options');
      const labeled = final.filter((r) => r.status === 'graded' && r.label !== null);
      equal(data.summary.rows, 5, 'summary rows');
      equal(data.summary.bad_rows, 1, 'summary bad rows');
      equal(data.summary.graded, 4, 'summary graded');
      equal(data.summary.labeled, labeled.length, 'summary labeled');
      equal(data.summary.agreed, labeled.filter((r) => r.agreement).length, 'summary agreed');
      const jsonl = await grab('export-jsonl');
      equal(jsonl.text.trim().split('\n').map((l) => JSON.parse(l)), final, 'JSON Lines = the records');
    },
  },
  {
    name: 'picking the graded file again says it is graded; then a file that cannot be graded replaces it: nothing left to grade, no stale file line; no "Now grading" once done',
    fn: async () => {
      const heading = await page.evaluate(() => [...document.querySelectorAll('h2')].map((e) => e.textContent).find((t) => /grading|graded/i.test(t ?? '')) ?? '');
      ok(!/^Now grading/.test(heading), `the live heading once finished: ${heading}`);
      await page.getByTestId('grade-file').setInputFiles({ name: 'class-4b.jsonl', mimeType: 'application/x-ndjson', buffer: Buffer.from(JSONL) });
      await page.waitForFunction(() => /every solution is graded/.test(document.querySelector('[data-testid=file-info]')?.textContent ?? ''));
      await page.getByTestId('grade-file').setInputFiles({ name: 'semi.csv', mimeType: 'text/csv', buffer: Buffer.from('problem;solution\nWhat is 2 + 3?;5\n') });
      await page.getByRole('alert').filter({ hasText: 'semi.csv cannot be graded' }).waitFor();
      equal((await page.getByTestId('file-info').textContent()).trim(), '', 'no line about the file chosen before');
      equal(await page.getByTestId('grade-start').isDisabled(), true, 'nothing to grade');
      equal(await page.getByTestId('grade-row').count(), 0, 'the earlier file\'s results are not shown as this one\'s');
    },
  },
  {
    name: 'no errors in the console',
    fn: async () => equal(errors.filter((e) => !/status of 404/.test(e)), [], 'console errors'),
  },
];
