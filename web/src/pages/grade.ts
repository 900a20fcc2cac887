// The grading page: a teacher loads a JSON Lines or CSV file of solutions, GenPRM grades them one
// after another on this device, each result is saved in IndexedDB as soon as it is produced
// (closing the tab and coming back resumes where it stopped, nothing graded twice), every
// solution can be opened to read the step rationales, and the results export as CSV, JSON or
// JSON Lines (the records `genprm grade` writes).
import '../lib/app-assets.ts';
import './styles.css';
import '../grade/grade.css';
import { GENPRM_TEMPERATURE, gradeResult, parseGradingInput, type GradeResult, type GradeRow, type ProtocolOptions, type VerifyResult } from 'genprm';
import { Alerts } from '../components/alerts.ts';
import { errorMessage, h } from '../lib/dom.ts';
import { ModelPanel } from '../components/model-panel.ts';
import { offlineFooter } from '../lib/offline.ts';
import { OptionsPanel } from '../components/options.ts';
import { ProgressBar } from '../components/progress.ts';
import { PythonPanel } from '../components/python-panel.ts';
import { ResultsView, rewardText } from '../components/results.ts';
import { VerifyController } from '../components/verify-controller.ts';
import { download, summarize, toCSV, toJSON, toJSONL, type Summary } from '../grade/export.ts';
import { deleteJob, getJob, jobKey, listJobs, putJob, putResult, results, type Job, type StoredResult } from '../grade/store.ts';

const alerts = new Alerts();
const python = new PythonPanel();
const modelPanel = new ModelPanel(alerts);
const options = new OptionsPanel();
const live = new ResultsView('Now grading', 'live-results');
const detail = new ResultsView('Solution', 'detail-results');
const controller = new VerifyController(live, python.executor);

// The file picked but not started yet, and the open job.
let picked: { file: File; bytes: Uint8Array; rows: GradeRow[] } | null = null;
let job: Job | null = null;
let rows: GradeRow[] = [];
const stored = new Map<number, StoredResult>();
let abort: AbortController | null = null;
const sessionMs: number[] = [];
/** Lines verified in this page session, in order (for the tests: nothing graded twice). */
const verifiedLines: number[] = [];

// --- the file card ---
const fileInput = h('input', { type: 'file', accept: '.jsonl,.ndjson,.csv', 'data-testid': 'grade-file', id: 'grade-file' });
const drop = h('div', { class: 'drop-zone', 'data-testid': 'drop-zone' },
  h('label', { for: 'grade-file', text: 'Solutions file (JSON Lines or CSV)' }), fileInput,
  h('p', { class: 'hint', text: 'or drop the file here. Nothing is uploaded: the file is read and graded in this browser.' }));
const fileInfo = h('div', { class: 'file-info', 'data-testid': 'file-info', 'aria-live': 'polite' });
const startButton = h('button', { type: 'button', class: 'primary big', text: 'Grade the solutions', 'data-testid': 'grade-start', disabled: true });
const pauseButton = h('button', { type: 'button', text: 'Pause', 'data-testid': 'grade-pause', disabled: true });
const startHint = h('p', { class: 'hint', 'data-testid': 'grade-hint' });
const formatHelp = h('details', { class: 'format-help' },
  h('summary', { text: 'File format' }),
  h('p', { text: 'JSON Lines: one object per line with "problem" and either "steps" (an array of paragraphs) or "solution" (the whole text; paragraphs are split at blank lines). Optional: "id", "student_id", and "label" (the first wrong step, 0-based; −1 when the solution is right) to measure agreement.' }),
  h('p', { text: 'CSV: a header row with a "problem" column and a "steps" (JSON array) or "solution" column, optionally "id", "student_id" and "label".' }),
  h('pre', { class: 'code', text: '{"id": "q1", "student_id": "ana", "problem": "What is 2 + 3?", "steps": ["2 + 3 = 5.", "So the answer is 5."], "label": -1}' }));
const fileCard = h('section', { class: 'card', 'aria-labelledby': 'file-heading' },
  h('h2', { id: 'file-heading', text: 'Solutions to grade' }), drop, formatHelp, fileInfo,
  h('div', { class: 'actions' }, startButton, pauseButton), startHint);

// --- saved gradings ---
const jobsList = h('ul', { class: 'jobs', 'data-testid': 'jobs' });
const jobsCard = h('section', { class: 'card', 'aria-labelledby': 'jobs-heading', hidden: true },
  h('h2', { id: 'jobs-heading', text: 'Saved gradings' }),
  h('p', { class: 'hint', text: 'Kept in this browser. Open one to see its results or to continue grading it.' }), jobsList);

// --- progress, results, exports ---
const progress = new ProgressBar('Graded', 'grade-progress');
const progressLine = h('p', { class: 'progress-line', role: 'status', 'aria-live': 'polite', 'data-testid': 'grade-status' });
const jobLine = h('p', { class: 'hint', 'data-testid': 'job-info' });
const tableBody = h('tbody', {});
const table = h('table', { class: 'grades', 'data-testid': 'grades' },
  h('caption', { class: 'visually-hidden', text: 'Grading results, one row per solution' }),
  h('thead', {}, h('tr', {}, ...['Line', 'Student', 'Id', 'Status', 'Steps', 'First wrong step', 'Min', 'Last', 'Mean', 'Label', 'Agrees', ''].map((t) => h('th', { scope: 'col', text: t })))),
  tableBody);
const summaryBox = h('div', { class: 'grade-summary', 'data-testid': 'grade-summary' });
const exportCSV = h('button', { type: 'button', text: 'Export CSV', 'data-testid': 'export-csv' });
const exportJSON = h('button', { type: 'button', text: 'Export JSON', 'data-testid': 'export-json' });
const exportJSONL = h('button', { type: 'button', text: 'Export JSON Lines (as genprm grade)', 'data-testid': 'export-jsonl' });
const badDetail = h('div', { class: 'card bad-row-detail', role: 'region', 'aria-label': 'Bad row', hidden: true, 'data-testid': 'bad-row-detail' });
const resultsCard = h('section', { class: 'card', 'aria-labelledby': 'grades-heading', hidden: true, 'data-testid': 'grades-card' },
  h('h2', { id: 'grades-heading', text: 'Results' }), jobLine, progress.el, progressLine, summaryBox,
  h('div', { class: 'table-wrap' }, table),
  h('div', { class: 'actions' }, exportCSV, exportJSON, exportJSONL));

const app = document.getElementById('app')!;
app.append(
  h('header', { class: 'top' },
    h('nav', { class: 'nav' }, h('a', { href: './', text: 'Demo' }), ' · ', h('strong', { text: 'Grade a file' }), ' · ', h('a', { href: './bench.html', text: 'Benchmark' })),
    h('h1', { text: 'GenPRM grading' }),
    h('p', { class: 'tagline', text: 'Grade a file of student solutions step by step, privately: the model and the Python it writes run on this device. Results are saved as they come, so you can close the tab and continue later.' })),
  alerts.el,
  h('main', { class: 'layout' },
    h('div', { class: 'column' }, modelPanel.el, python.el, fileCard, options.el, jobsCard),
    h('div', { class: 'column' }, resultsCard, badDetail, detail.el, live.el)),
  h('footer', {}, offlineFooter()),
);

// --- helpers ---
const pendingRows = () => rows.filter((r) => !stored.has(r.line));
const running = () => abort !== null;

function updateButtons(): void {
  const left = job ? pendingRows().length : picked ? picked.rows.length : 0;
  startButton.disabled = running() || left === 0 || !modelPanel.model;
  pauseButton.disabled = !running();
  startButton.textContent = job && stored.size > 0 && left > 0 ? `Continue grading (${left} left)` : `Grade ${left || ''} solution${left === 1 ? '' : 's'}`.replace('  ', ' ');
  startHint.textContent = running() ? '' : !modelPanel.model ? 'Load a model first (the tiny demo model takes a second).'
    : left === 0 && job ? 'Every solution of this file is graded.' : left === 0 ? 'Choose a file of solutions.' : '';
}

function describeOptions(o: ProtocolOptions): string {
  const parts = [`${o.samples ?? 1} sample${(o.samples ?? 1) === 1 ? '' : 's'}`, o.greedy ? 'greedy' : `sampling (seed ${o.seed ?? 0}, T ${o.temperature ?? GENPRM_TEMPERATURE})`,
    `${o.style ?? 'card'} prompt`, `${o.reward ?? 'official'} reward`, `mode ${o.mode ?? 'cot_code'}`];
  if (o.execute === false) parts.push('no Python');
  if (o.stop_at_first_error) parts.push('stops at the first wrong step');
  return parts.join(', ');
}

function minutes(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function updateProgress(): void {
  const total = rows.length;
  const done = stored.size;
  const bad = [...stored.values()].filter((s) => s.result.status === 'bad_row').length;
  const left = pendingRows().filter((r) => r.error === null).length;
  progress.set(done, total || 1, `${done} of ${total}`);
  if (done === total && total > 0) progress.done(`${done} of ${total}`);
  // ETA from this session's pace (or the saved results' when nothing ran yet).
  const times = sessionMs.length ? sessionMs : [...stored.values()].map((s) => s.ms).filter((ms) => ms > 0);
  const mean = times.length ? times.reduce((a, b) => a + b, 0) / times.length : 0;
  const eta = running() && mean > 0 && left > 0 ? ` — about ${minutes(mean * left)} left` : '';
  progressLine.textContent = `${done} of ${total} solution${total === 1 ? '' : 's'} done${bad ? ` (${bad} bad row${bad === 1 ? '' : 's'})` : ''}${eta}.${!running() && left > 0 && done > 0 ? ' Paused: continue any time, also after closing the tab.' : ''}`;
  progressLine.dataset.done = String(done);
  progressLine.dataset.total = String(total);
  renderSummary(summarize(records(), total));
}

function records(): GradeResult[] {
  return [...stored.values()].sort((a, b) => a.line - b.line).map((s) => s.result);
}

const pct = (x: number | null) => (x === null ? '–' : `${(x * 100).toFixed(1)}%`);

function renderSummary(s: Summary): void {
  const parts: (HTMLElement | string)[] = [
    h('span', {}, h('strong', { text: String(s.graded) }), ' graded'),
    h('span', {}, h('strong', { text: String(s.with_error) }), ' with a wrong step found'),
  ];
  if (s.bad_rows) parts.push(h('span', { class: 'bad' }, h('strong', { text: String(s.bad_rows) }), ` bad row${s.bad_rows === 1 ? '' : 's'} (not graded)`));
  if (s.failed) parts.push(h('span', { class: 'bad' }, h('strong', { text: String(s.failed) }), ' failed'));
  if (s.labeled) {
    parts.push(h('span', { 'data-testid': 'agreement' }, 'agreement with the labels: ', h('strong', { text: `${s.agreed} of ${s.labeled} (${pct(s.agreement)})` }),
      ` — on wrong solutions ${pct(s.agreement_on_wrong)}, on right ones ${pct(s.agreement_on_correct)}, F1 ${pct(s.f1)}`));
  }
  summaryBox.replaceChildren(...parts.flatMap((p, i) => (i ? [' · ', p] : [p])));
}

function statusText(r: GradeResult): string {
  return r.status === 'graded' ? 'graded' : r.status === 'bad_row' ? 'bad row' : 'failed';
}

function addRow(s: StoredResult): void {
  const r = s.result;
  const view = h('button', { type: 'button', class: 'small', text: 'View', 'aria-label': `View line ${r.line}` });
  view.addEventListener('click', () => showDetail(s));
  const fe = r.first_error_step;
  const tr = h('tr', { class: `status-${r.status}`, 'data-line': String(r.line), 'data-testid': 'grade-row' },
    h('td', { text: String(r.line) }), h('td', { text: r.student_id ?? '' }), h('td', { text: r.id ?? '' }),
    h('td', { text: statusText(r), title: r.error ?? '' }),
    h('td', { text: String(r.rewards.length || '') }),
    h('td', { text: fe === null ? '' : fe < 0 ? 'none' : `step ${fe + 1}` }),
    h('td', { text: r.scores ? rewardText(r.scores.min) : '' }), h('td', { text: r.scores ? rewardText(r.scores.last) : '' }),
    h('td', { text: r.scores ? rewardText(r.scores.mean) : '' }),
    h('td', { text: r.label === null ? '' : r.label < 0 ? 'right' : `step ${r.label + 1}` }),
    h('td', { class: r.agreement === null ? '' : r.agreement ? 'agree' : 'disagree', text: r.agreement === null ? '' : r.agreement ? 'yes' : 'no' }),
    h('td', {}, view));
  tr.addEventListener('dblclick', () => showDetail(s));
  const next = [...tableBody.children].find((c) => Number((c as HTMLElement).dataset.line) > r.line);
  tableBody.insertBefore(tr, next ?? null);
}

function showDetail(s: StoredResult): void {
  const r = s.result;
  const row = rows.find((x) => x.line === r.line);
  const who = [r.student_id && `student ${r.student_id}`, r.id && `id ${r.id}`].filter(Boolean).join(', ');
  if (r.status === 'bad_row' || !row?.steps) {
    detail.el.hidden = true;
    badDetail.hidden = false;
    badDetail.replaceChildren(h('h2', { text: `Line ${r.line}${who ? ` (${who})` : ''}: not graded` }), h('p', { text: r.error ?? 'this row could not be read' }));
    badDetail.focus();
    return;
  }
  badDetail.hidden = true;
  const result: VerifyResult = {
    complete: r.status === 'graded', error: r.error ?? null, steps: r.steps,
    first_error_step: r.first_error_step ?? -1, scores: r.scores ?? { min: 0, last: 0, mean: 0 },
  };
  detail.show(row.steps, result, `Line ${r.line}${who ? ` — ${who}` : ''}`);
  detail.el.dataset.line = String(r.line);
}

// --- jobs ---
async function refreshJobs(): Promise<void> {
  let jobs: Job[];
  try { jobs = await listJobs(); } catch (e) { alerts.error('Saved gradings are not available', errorMessage(e)); return; }
  jobsCard.hidden = jobs.length === 0;
  const items = await Promise.all(jobs.map(async (j) => {
    const n = (await results(j.key)).length;
    const open = h('button', { type: 'button', class: 'small', text: j.key === job?.key ? 'Open (shown)' : 'Open', disabled: j.key === job?.key || running() });
    const del = h('button', { type: 'button', class: 'small', text: 'Delete', 'aria-label': `Delete the grading of ${j.fileName}`, disabled: j.key === job?.key && running() });
    open.addEventListener('click', () => void openJob(j));
    del.addEventListener('click', async () => {
      if (!confirm(`Delete the saved grading of ${j.fileName} (${n} results)?`)) return;
      await deleteJob(j.key);
      if (job?.key === j.key) closeJob();
      await refreshJobs();
    });
    return h('li', { 'data-testid': 'job' }, h('strong', { text: j.fileName }), ` — ${n} of ${j.rows} done, ${describeOptions(j.options)}; ${new Date(j.updated).toLocaleString()} `, open, ' ', del);
  }));
  jobsList.replaceChildren(...items);
}

function closeJob(): void {
  job = null;
  rows = [];
  stored.clear();
  tableBody.replaceChildren();
  resultsCard.hidden = true;
  detail.el.hidden = true;
  badDetail.hidden = true;
  updateButtons();
}

async function openJob(j: Job, parsed?: GradeRow[]): Promise<void> {
  if (running()) return;
  const bytes = new Uint8Array(await j.input.arrayBuffer());
  const r = parsed ?? await parseGradingInput(bytes, j.fileName);
  // Everything read before anything is shown: the page never exposes the job without its
  // saved results (a reload mid-run used to, for a moment).
  const saved = await results(j.key);
  job = j;
  rows = r;
  picked = null;
  stored.clear();
  for (const s of saved) stored.set(s.line, s);
  tableBody.replaceChildren();
  for (const s of stored.values()) addRow(s);
  resultsCard.hidden = false;
  detail.el.hidden = true;
  badDetail.hidden = true;
  options.set(j.options); // the options this file is graded with
  jobLine.textContent = `${j.fileName}: ${rows.length} row${rows.length === 1 ? '' : 's'}; ${describeOptions(j.options)}${j.model ? `; graded with ${j.model}` : ''}.`;
  fileInfo.textContent = '';
  updateProgress();
  updateButtons();
  await refreshJobs();
}

// --- choosing a file ---
async function pick(file: File): Promise<void> {
  if (running()) { alerts.error('Grading is running', 'Pause it before choosing another file.'); return; }
  alerts.clear();
  // A file that cannot be graded replaces the one chosen before: nothing is left to grade by mistake.
  const refuse = (title: string, message: string) => {
    closeJob();
    picked = null;
    fileInfo.textContent = '';
    alerts.error(title, message);
    updateButtons();
  };
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const parsed = await parseGradingInput(bytes, file.name);
    if (parsed.length === 0) { refuse('The file has no solutions', `${file.name} holds no rows.`); return; }
    // The same file with the same options: continue that grading.
    const existing = await getJob(await jobKey(bytes, file.name, options.get()));
    if (existing) {
      await openJob(existing, parsed);
      fileInfo.textContent = pendingRows().length === 0
        ? `You graded ${file.name} before with these options: every solution is graded (the results are below).`
        : `You graded part of ${file.name} before with these options: continuing.`;
      return;
    }
    closeJob();
    picked = { file, bytes, rows: parsed };
    const bad = parsed.filter((r) => r.error !== null);
    fileInfo.replaceChildren(
      h('p', { text: `${file.name}: ${parsed.length} solution${parsed.length === 1 ? '' : 's'}${bad.length ? `, ${bad.length} of them unreadable (reported in the results, not graded)` : ''}.` }),
      ...(bad.length ? [h('ul', { class: 'bad-rows' }, ...bad.slice(0, 5).map((r) => h('li', { text: `line ${r.line}: ${r.error}` })), bad.length > 5 ? h('li', { text: `and ${bad.length - 5} more` }) : null)] : []));
    updateButtons();
  } catch (e) {
    refuse(`${file.name} cannot be graded`, errorMessage(e));
  }
}

fileInput.addEventListener('change', () => { const f = fileInput.files?.[0]; if (f) void pick(f); });
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const f = e.dataTransfer?.files?.[0];
  if (f) void pick(f);
});

// --- grading ---
async function start(): Promise<void> {
  const model = modelPanel.model;
  if (!model) { alerts.error('No model loaded', 'Load a model in the Model section first.'); return; }
  if (running()) return;
  alerts.clear();
  try {
    if (!job && picked) {
      const opts = options.get();
      const key = await jobKey(picked.bytes, picked.file.name, opts);
      const now = Date.now();
      const j: Job = (await getJob(key)) ?? {
        key, fileName: picked.file.name, fileSize: picked.bytes.byteLength, input: new Blob([picked.bytes as Uint8Array<ArrayBuffer>]),
        options: opts, rows: picked.rows.length, created: now, updated: now, model: null,
      };
      await putJob(j);
      await openJob(j, picked.rows);
    }
  } catch (e) {
    alerts.error('The grading could not be saved', errorMessage(e));
    return;
  }
  if (!job) return;
  const j = job;
  const modelName = `${model.label} (${model.info.quant ?? 'f32'}, ${model.info.device})`;
  abort = new AbortController();
  updateButtons();
  try {
    for (const row of rows) {
      if (abort.signal.aborted) break;
      if (stored.has(row.line)) continue;
      let record: GradeResult;
      let ms = 0;
      if (row.error !== null || row.problem === null || row.steps === null) {
        record = await gradeResult(row, null);
      } else {
        verifiedLines.push(row.line);
        live.heading.textContent = `Now grading line ${row.line}${row.student_id ? ` (student ${row.student_id})` : ''}`;
        const t0 = performance.now();
        const result = await controller.run(model, { problem: row.problem, steps: row.steps, options: j.options });
        ms = performance.now() - t0;
        if (result && !result.complete && result.error === 'cancelled') break; // paused: graded again later, whole
        record = await gradeResult(row, result ?? {
          complete: false, error: `the verification could not start: ${controller.lastError ?? 'unknown error'}`,
          steps: [], first_error_step: -1, scores: { min: 0, last: 0, mean: 0 },
        });
        sessionMs.push(ms);
      }
      const entry: StoredResult = { job: j.key, line: row.line, result: record, ms, at: Date.now(), model: modelName };
      await putResult(entry);
      if (job?.key !== j.key) break;
      stored.set(row.line, entry);
      addRow(entry);
      updateProgress();
      void refreshJobs(); // the saved gradings' counts, as they grow
    }
  } catch (e) {
    alerts.error('Grading stopped', errorMessage(e));
  } finally {
    abort = null;
    live.heading.textContent = live.heading.textContent?.replace(/^Now grading/, 'Last graded:') ?? '';
    if (job?.key === j.key) {
      j.model = modelName;
      updateProgress();
      progressLine.dataset.finished = String(pendingRows().length === 0);
      if (pendingRows().length === 0) {
        progressLine.textContent += ' Finished.';
        fileInfo.textContent = `${j.fileName} is graded: export the results below.`;
      }
    }
    updateButtons();
    void refreshJobs();
  }
}

function pause(): void {
  abort?.abort();
  controller.cancel();
}

startButton.addEventListener('click', () => void start());
pauseButton.addEventListener('click', pause);

function exportName(ext: string): string {
  return `${(job?.fileName ?? 'grading').replace(/\.[^.]+$/, '')}-graded.${ext}`;
}
// With a byte-order mark: Excel then reads the file as UTF-8 (names like "élodie", "√2").
exportCSV.addEventListener('click', () => download(exportName('csv'), `\uFEFF${toCSV(records())}`, 'text/csv;charset=utf-8'));
exportJSON.addEventListener('click', () => job && download(exportName('json'), toJSON(job.fileName, job.options, job.model, records(), rows.length), 'application/json'));
exportJSONL.addEventListener('click', () => download(exportName('jsonl'), toJSONL(records()), 'application/x-ndjson'));

modelPanel.onModel = () => updateButtons();

// ?model=demo|<repo or URL> preselects a model source, as on the demo page.
const params = new URLSearchParams(location.search);
const modelParam = params.get('model');
if (modelParam === 'demo') modelPanel.choose('demo');
else if (modelParam) modelPanel.choose('url', modelParam);

// Coming back: open the grading that was last worked on, if it is not finished.
void (async () => {
  try {
    const jobs = await listJobs();
    for (const j of jobs) {
      const n = (await results(j.key)).length;
      if (n < j.rows) {
        await openJob(j);
        fileInfo.textContent = `Continuing ${j.fileName}: ${n} of ${j.rows} done. Load the model and press "Continue grading".`;
        break;
      }
    }
    await refreshJobs();
  } catch (e) {
    alerts.error('Saved gradings could not be read', errorMessage(e));
  }
  updateButtons();
})();
updateButtons();

declare global {
  interface Window { genprmGrade: { modelPanel: ModelPanel; options: OptionsPanel; verifiedLines: number[]; state(): { job: string | null; rows: number; results: GradeResult[]; running: boolean } } }
}
window.genprmGrade = {
  modelPanel, options, verifiedLines,
  state: () => ({ job: job?.key ?? null, rows: rows.length, results: records(), running: running() }),
};
