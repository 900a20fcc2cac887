// pages/: one entry module per HTML page (main.ts: index.html, grade.ts: grade.html, bench.ts:
// bench.html, embed-example.ts: embed-example.html) and their shared stylesheet; each builds its
// page from components/, grade/ and lib/, and the package as 'genprm'. Nothing imports a page.
//
// The GenPRM demo app: pick a model, a problem and its steps, and watch GenPRM judge each step on
// this device. Beside it: grade.html (a file of solutions) and bench.html (`?bench` goes there).
import '../lib/app-assets.ts';
import './styles.css';
import { splitParagraphs, type ProtocolOptions, type VerifyRequest } from 'genprm';
import { Alerts } from '../components/alerts.ts';
import { errorMessage, h } from '../lib/dom.ts';
import { EXAMPLES, SolutionEditor } from '../components/editor.ts';
import { ModelPanel } from '../components/model-panel.ts';
import { offlineFooter } from '../lib/offline.ts';
import { OptionsPanel } from '../components/options.ts';
import { PythonPanel } from '../components/python-panel.ts';
import { ResultsView } from '../components/results.ts';
import { VerifyController } from '../components/verify-controller.ts';

if (new URLSearchParams(location.search).has('bench')) location.replace('./bench.html');

const alerts = new Alerts();
const python = new PythonPanel();
const modelPanel = new ModelPanel(alerts);
const editor = new SolutionEditor(splitParagraphs, (title, detail) => alerts.error(title, detail));
const options = new OptionsPanel();
const results = new ResultsView();
const controller = new VerifyController(results, python.executor);

const verifyButton = h('button', { type: 'button', class: 'primary big', text: 'Verify the steps', 'data-testid': 'verify' });
const cancelButton = h('button', { type: 'button', text: 'Cancel', disabled: true, 'data-testid': 'cancel' });
const verifyHint = h('p', { class: 'hint', 'data-testid': 'verify-hint' });

function updateButtons(): void {
  verifyButton.disabled = controller.running;
  cancelButton.disabled = !controller.running;
  verifyHint.textContent = modelPanel.model ? '' : 'Load a model first (the tiny demo model takes a second).';
}

verifyButton.addEventListener('click', async () => {
  const model = modelPanel.model;
  if (!model) { alerts.error('No model loaded', 'Load a model in the Model section first.'); return; }
  const sol = editor.get();
  const steps = sol.steps.map((s) => s.trim());
  if (!sol.problem.trim()) { alerts.error('The problem is empty', 'Type the problem or choose an example.'); return; }
  if (steps.length === 0) { alerts.error('There are no steps', 'Add the solution’s steps, or paste it and split it into steps.'); return; }
  const empty = steps.findIndex((s) => !s);
  if (empty >= 0) { alerts.error('A step is empty', `Step ${empty + 1} has no text: fill it in or remove it.`); return; }
  alerts.clear();
  const request: VerifyRequest = { problem: sol.problem, steps: sol.steps, options: options.get() };
  const run = controller.run(model, request);
  updateButtons();
  await run.catch((e) => alerts.error('The verification failed', errorMessage(e)));
  updateButtons();
});
cancelButton.addEventListener('click', () => controller.cancel());
modelPanel.onModel = () => updateButtons();

const app = document.getElementById('app')!;
app.append(
  h('header', { class: 'top' },
    h('nav', { class: 'nav' }, h('strong', { text: 'Demo' }), ' · ', h('a', { href: './grade.html', text: 'Grade a file', 'data-testid': 'grade-link' }), ' · ', h('a', { href: './bench.html', text: 'Benchmark' }), ' · ', h('a', { href: './embed-example.html', text: 'Embedding example' })),
    h('h1', { text: 'GenPRM' }),
    h('p', { class: 'tagline', text: 'Checks a math solution step by step: for each step it writes an analysis and Python to test it, runs the Python, and judges the step. Everything runs on this device — nothing is uploaded.' })),
  alerts.el,
  h('main', { class: 'layout' },
    h('div', { class: 'column' }, modelPanel.el, python.el, editor.el, options.el,
      h('div', { class: 'actions verify-actions' }, verifyButton, cancelButton), verifyHint),
    h('div', { class: 'column' }, results.el)),
  h('footer', {}, h('p', { text: 'GenPRM-1.5B (Hugging Face GenPRM/GenPRM-1.5B) runs in the browser with WebGPU; the model’s Python runs in Pyodide. ProcessBench examples: Qwen/ProcessBench (Apache-2.0).' }), offlineFooter()),
);

// URL parameters: ?example=<id> preselects an example, ?model=demo|<repo or URL> a source.
const params = new URLSearchParams(location.search);
const exampleId = params.get('example');
editor.load(EXAMPLES.find((e) => e.id === exampleId) ?? EXAMPLES[0]);
const modelParam = params.get('model');
if (modelParam === 'demo') modelPanel.choose('demo');
else if (modelParam) modelPanel.choose('url', modelParam);
updateButtons();

// For scripts and the browser tests: the live objects of this page.
declare global {
  interface Window { genprm: { modelPanel: ModelPanel; editor: SolutionEditor; options: OptionsPanel; controller: VerifyController; executor: typeof python.executor; setOptions(o: ProtocolOptions): void } }
}
window.genprm = { modelPanel, editor, options, controller, executor: python.executor, setOptions: (o) => options.set(o) };
