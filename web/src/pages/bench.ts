// The benchmark page: builds GenPRM-1.5B's shape (or a small Qwen2) with random weights on this
// device and reports what the native `genprm bench --random-shape` reports: load time, the first
// call (shader compilation), time to first token, prefill and decode tokens per second. It also
// watches the page's main thread while the model runs (in the package's engine worker, or on the
// page's thread with "Runs on: page"): the longest task (a PerformanceObserver for `longtask`,
// where the browser has it), the longest gap of a 10 ms timer, and the share of the run the timer
// was held up.
import '../lib/app-assets.ts';
import './styles.css';
import { benchRandom, gpuInfo, hasWasmFunction, type BenchOptions, type BenchProgress, type BenchResult, type GpuInfo } from 'genprm';
import { Alerts } from '../components/alerts.ts';
import { bytes, errorMessage, h, uid } from '../lib/dom.ts';
import { offlineFooter } from '../lib/offline.ts';

const alerts = new Alerts();

function select(testId: string, options: [string, string][], value: string): HTMLSelectElement {
  const s = h('select', { 'data-testid': testId, id: uid('bench') }, ...options.map(([v, t]) => h('option', { value: v, text: t })));
  s.value = value;
  return s;
}
function num(testId: string, value: number, min: number, max: number): HTMLInputElement {
  return h('input', { type: 'number', 'data-testid': testId, id: uid('bench'), value: String(value), min: String(min), max: String(max), step: '1' });
}
const field = (label: string, control: HTMLElement, hint?: string) =>
  h('div', { class: 'field' }, h('label', { for: control.id, text: label }), control, hint ? h('span', { class: 'hint', text: hint }) : null);

const shape = select('bench-shape', [['qwen2-1.5b', 'GenPRM-1.5B (Qwen2 1.5B: 28 layers, hidden 1536)'], ['qwen2-small', 'A small Qwen2 (quick check)']], 'qwen2-1.5b');
const quant = select('bench-quant', [['q4', '4-bit (q4, what the demo recommends)'], ['q8', '8-bit (q8)'], ['f32', 'f32 (no quantization)']], 'q4');
const device = select('bench-device', [['gpu', 'WebGPU (GPU)'], ['cpu', 'CPU (WebAssembly)']], 'gpu');
const thread = select('bench-thread', [['worker', 'the engine worker (the default)'], ['page', 'the page\u2019s thread (worker: false)']], 'worker');
const promptTokens = num('bench-prompt', 512, 1, 8192);
const newTokens = num('bench-new', 64, 1, 2048);
const runButton = h('button', { type: 'button', class: 'primary big', text: 'Run the benchmark', 'data-testid': 'bench-run' });
const gpuLine = h('p', { class: 'hint', 'data-testid': 'bench-gpu' });
const stageList = h('ol', { class: 'bench-stages', 'data-testid': 'bench-stages', 'aria-live': 'polite' });
const status = h('p', { role: 'status', 'aria-live': 'polite', 'data-testid': 'bench-status' });
const resultsBody = h('tbody', {});
const resultsTable = h('table', { class: 'grades', 'data-testid': 'bench-results' },
  h('thead', {}, h('tr', {}, ...['Shape', 'Weights', 'Device', 'Runs on', 'Prompt', 'New', 'Load (s)', 'First call (s)', 'TTFT (s)', 'Prefill tok/s', 'Decode tok/s', 'Bound tok/s', 'Longest main-thread task (ms)', 'Main thread held up'].map((t) => h('th', { scope: 'col', text: t })))),
  resultsBody);
const copyButton = h('button', { type: 'button', class: 'small', text: 'Copy the results as JSON', disabled: true });
type MainThread = { thread: 'worker' | 'page'; main_longest_task_ms: number | null; main_longest_gap_ms: number; main_blocked_pct: number };
const runs: (BenchOptions & BenchResult & MainThread & { adapter: string | null })[] = [];

/** Watches the page's main thread until stop(): the longest `longtask` entry (null where the
 *  browser reports none), and a 10 ms timer's longest gap and the share of the time it was late. */
function watchMainThread(): () => Omit<MainThread, 'thread'> {
  const INTERVAL = 10;
  let longestTask: number | null = null;
  let observer: PerformanceObserver | null = null;
  try {
    observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) longestTask = Math.max(longestTask ?? 0, e.duration);
    });
    observer.observe({ type: 'longtask' });
    longestTask = 0;
  } catch {
    observer = null;
  }
  const start = performance.now();
  let last = start, longestGap = 0, late = 0, timer = 0;
  const beat = () => {
    const now = performance.now();
    const gap = now - last;
    longestGap = Math.max(longestGap, gap);
    late += Math.max(0, gap - INTERVAL);
    last = now;
    timer = window.setTimeout(beat, INTERVAL);
  };
  timer = window.setTimeout(beat, INTERVAL);
  return () => {
    clearTimeout(timer);
    beat();
    clearTimeout(timer);
    for (const e of observer?.takeRecords() ?? []) longestTask = Math.max(longestTask ?? 0, e.duration);
    observer?.disconnect();
    const total = performance.now() - start;
    return { main_longest_task_ms: longestTask, main_longest_gap_ms: longestGap, main_blocked_pct: total > 0 ? (100 * late) / total : 0 };
  };
}

const STAGES: Record<BenchProgress['stage'], string> = {
  load: 'building the model with random weights on the device',
  compile: 'first call: compiling the shaders',
  prefill: 'prefill: the prompt in one pass',
  decode: 'decoding, one token at a time',
  bandwidth: 'measuring the memory bandwidth (the bound of decode)',
};

document.getElementById('app')!.append(
  h('header', { class: 'top' },
    h('nav', { class: 'nav' }, h('a', { href: './', text: 'Demo' }), ' · ', h('a', { href: './grade.html', text: 'Grade a file' }), ' · ', h('strong', { text: 'Benchmark' })),
    h('h1', { text: 'GenPRM benchmark' }),
    h('p', { class: 'tagline', text: 'How fast GenPRM runs on this device: the model’s exact shape with random weights (nothing to download), timed like the native `genprm bench`. Larger shapes need a GPU with a few GB of memory.' })),
  alerts.el,
  h('main', { class: 'layout' },
    h('div', { class: 'column' },
      h('section', { class: 'card', 'aria-labelledby': 'bench-heading' },
        h('h2', { id: 'bench-heading', text: 'Settings' }), gpuLine,
        h('div', { class: 'grid' }, field('Model shape', shape), field('Weights', quant), field('Device', device), field('Runs on', thread, 'where the model runs; the page\u2019s main thread is watched either way'),
          field('Prompt tokens', promptTokens, 'prefilled in one pass'), field('New tokens', newTokens, 'decoded greedily')),
        h('div', { class: 'actions' }, runButton), stageList, status)),
    h('div', { class: 'column' },
      h('section', { class: 'card', 'aria-labelledby': 'bench-results-heading' },
        h('h2', { id: 'bench-results-heading', text: 'Results' }),
        h('p', { class: 'hint', text: 'First call: the first forward pass after loading, mostly WebGPU shader compilation. TTFT: from the prompt to the first token. Tokens per second exclude the first call. Longest main-thread task: the longest the page could not respond during the run (the longest long task, else the longest gap of a 10 ms timer); held up: the share of the run the timer was late.' }),
        h('div', { class: 'table-wrap' }, resultsTable), h('div', { class: 'actions' }, copyButton)))),
  h('footer', {}, offlineFooter()),
);

let adapter: GpuInfo | null = null;

async function checkGpu(): Promise<void> {
  try {
    adapter = await gpuInfo();
    gpuLine.textContent = `WebGPU adapter: ${adapter.backend}; largest buffer ${bytes(adapter.maxBufferSize)}, largest binding ${bytes(adapter.maxStorageBufferBindingSize)}; shader-f16 ${adapter.shaderF16 ? 'yes' : 'no'}.`;
  } catch (e) {
    gpuLine.textContent = `No WebGPU here (${errorMessage(e)}): the CPU benchmark still runs.`;
    device.value = 'cpu';
  }
}

async function run(): Promise<void> {
  alerts.clear();
  const where = { worker: thread.value === 'worker' };
  if (!(await hasWasmFunction('benchRandom').catch(() => false))) {
    alerts.error('This build cannot benchmark', 'The wasm module has no benchRandom() yet: rebuild it with scripts/build-wasm.');
    status.textContent = 'The benchmark cannot run with this build.';
    status.dataset.state = 'failed';
    return;
  }
  const opts: BenchOptions = {
    shape: shape.value as BenchOptions['shape'], quant: quant.value === 'f32' ? null : quant.value as 'q4' | 'q8', device: device.value as 'gpu' | 'cpu',
    promptTokens: Math.max(1, Math.round(promptTokens.valueAsNumber || 512)), newTokens: Math.max(1, Math.round(newTokens.valueAsNumber || 64)), batch: 1,
  };
  runButton.disabled = true;
  stageList.replaceChildren();
  status.textContent = 'Running…';
  status.dataset.state = 'running';
  const t0 = performance.now();
  let current: HTMLElement | null = null;
  let stop: (() => Omit<MainThread, 'thread'>) | null = null;
  try {
    const result = await benchRandom(opts, (p) => {
      // Watched from the load on (the first stage): the run itself, not the engine's start.
      stop ??= watchMainThread();
      current?.classList.add('done');
      current = h('li', { text: STAGES[p.stage] ?? p.stage, 'data-stage': p.stage });
      stageList.append(current);
    }, where);
    const main: MainThread = { thread: where.worker ? 'worker' : 'page', ...(stop as (() => Omit<MainThread, 'thread'>) | null ?? watchMainThread())() };
    stop = null;
    (current as HTMLElement | null)?.classList.add('done');
    const row = { ...opts, ...result, ...main, adapter: opts.device === 'gpu' ? adapter?.backend ?? null : null };
    runs.push(row);
    const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '–');
    resultsBody.append(h('tr', { 'data-testid': 'bench-row' },
      h('td', { text: opts.shape ?? 'qwen2-1.5b' }), h('td', { text: opts.quant ?? 'f32' }), h('td', { text: opts.device === 'gpu' ? 'WebGPU' : 'CPU' }),
      h('td', { text: main.thread === 'worker' ? 'worker' : 'page' }),
      h('td', { text: String(opts.promptTokens) }), h('td', { text: String(opts.newTokens) }),
      h('td', { text: f(result.load_s) }), h('td', { text: f(result.first_call_s) }), h('td', { text: f(result.ttft_s, 3) }),
      h('td', { text: f(result.prefill_tok_s, 1) }), h('td', { text: f(result.decode_tok_s, 1) }),
      h('td', { text: f(result.decode_bound_tok_s ?? NaN, 1), title: 'Memory bandwidth ÷ bytes of weights per decode step: no implementation decodes faster' }),
      h('td', { text: f(main.main_longest_task_ms ?? main.main_longest_gap_ms, 0), 'data-testid': 'bench-main-longest' }),
      h('td', { text: `${f(main.main_blocked_pct, 0)}%` })));
    copyButton.disabled = false;
    status.textContent = `Done in ${((performance.now() - t0) / 1000).toFixed(1)} s: decode ${f(result.decode_tok_s, 1)} tokens/s, prefill ${f(result.prefill_tok_s, 1)} tokens/s${result.gpu_f16 ? ' (f16 mode)' : ''}${result.decode_bound_tok_s ? `; decode at ${Math.round((100 * result.decode_tok_s) / result.decode_bound_tok_s)}% of this device's memory-bandwidth bound (${f(result.read_gb_s ?? NaN, 0)} GB/s)` : ''}; the page's main thread (model in ${main.thread === 'worker' ? 'the engine worker' : 'the page\u2019s thread'}): longest task ${f(main.main_longest_task_ms ?? main.main_longest_gap_ms, 0)} ms, held up ${f(main.main_blocked_pct, 0)}% of the run.`;
    status.dataset.state = 'done';
  } catch (e) {
    (stop as (() => unknown) | null)?.();
    status.textContent = 'The benchmark failed.';
    status.dataset.state = 'failed';
    const msg = errorMessage(e);
    alerts.error('The benchmark failed', msg, /memory|buffer|allocation|limit/i.test(msg) ? 'The device may not have enough GPU memory for this shape: try q4 or the small shape.' : undefined);
  } finally {
    runButton.disabled = false;
  }
}

runButton.addEventListener('click', () => void run());
copyButton.addEventListener('click', () => void navigator.clipboard?.writeText(JSON.stringify(runs, null, 2)));
void checkGpu();

declare global { interface Window { genprmBench: { runs: typeof runs } } }
window.genprmBench = { runs };
