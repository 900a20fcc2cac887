// <genprm-verifier>: step verification in any page with one script tag and one element.
//
//   <script type="module" src="https://…/genprm/dist/index.js"></script>
//   <genprm-verifier model="demo" problem="What is 2 + 3?">
//     <ol><li>2 + 3 = 5.</li><li>So the answer is 5.</li></ol>
//   </genprm-verifier>
//
// Attributes (and the same-named properties): model ("demo", a Hugging Face repo id or a base
// URL), problem, steps (a JSON array; or child <li>s), samples, theme (light | dark | auto),
// device (auto | gpu | cpu), quant (q4 | q8 | none), greedy. Events (CustomEvent, bubbling,
// composed; named `genprm-…` so none collides with the DOM's own, such as `error`, and typed in
// GenprmVerifierEventMap): `genprm-reward` (a sample's judgement: {step, sample, reward}),
// `genprm-step` (a step's verdict: {index, reward, correct, verdict}; `correct` is null where the
// model reached no verdict), `genprm-done` (the VerifyResult), `genprm-error` ({message, stage}). `show(result)` displays a result
// computed elsewhere (a saved one, or `genprm verify --json`'s).
// Everything renders in a shadow root with its own styles, so the host page's CSS cannot break it.
import { loadModel, sharedExecutor, type GenPRM, type ModelLoadProgress } from '../api/api.ts';
import { MAX_SAMPLES } from '../contract/defaults.ts';
import type { ProtocolOptions, Reward, StepVerdict, VerifyEvent, VerifyResult } from '../contract/types.ts';
import { rationaleAppended, reduceVerifyEvent, summaryText, undecidedSteps, verifyProgress, type VerifyProgress } from './verdicts.ts';

const STYLE = `
:host { display: block !important; visibility: visible !important; contain: content; }
:host([hidden]) { display: none !important; }
.root {
  --bg: #ffffff; --fg: #1b1f24; --muted: #57606a; --border: #d0d7de; --accent: #0b5cad; --accent-fg: #ffffff;
  --good: #1a7f37; --bad: #c0262d; --track: #eaeef2; --code-bg: #f3f5f7; --bad-bg: #fff1f0; --focus: #ff9f1a;
  all: initial; display: block; box-sizing: border-box; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); border: 1px solid var(--border); border-radius: 10px; padding: 14px 16px;
  text-align: left; direction: ltr;
}
.root[data-theme=dark] {
  --bg: #171b21; --fg: #e6edf3; --muted: #9aa5b1; --border: #30363d; --accent: #4493f8; --accent-fg: #0b0f14;
  --good: #3fb950; --bad: #ff7b72; --track: #2b3138; --code-bg: #0d1117; --bad-bg: #2d1517;
}
@media (prefers-color-scheme: dark) {
  .root[data-theme=auto] {
    --bg: #171b21; --fg: #e6edf3; --muted: #9aa5b1; --border: #30363d; --accent: #4493f8; --accent-fg: #0b0f14;
    --good: #3fb950; --bad: #ff7b72; --track: #2b3138; --code-bg: #0d1117; --bad-bg: #2d1517;
  }
}
.root * { box-sizing: border-box; }
button, summary { font-family: inherit; }
[hidden] { display: none !important; }
p, ol { margin: 0; padding: 0; }
.head { display: flex; align-items: baseline; gap: 8px; flex-wrap: wrap; margin-bottom: 8px; }
.title { font-weight: 700; font-size: 16px; }
.badge { font-size: 12px; color: var(--muted); }
.problem { margin-bottom: 8px; white-space: pre-wrap; }
.problem b { font-weight: 600; }
ol.steps { list-style: none; counter-reset: none; }
li.step { display: block; border: 1px solid var(--border); border-radius: 8px; padding: 8px 10px; margin: 6px 0; }
li.step[data-state=active] { border-color: var(--accent); }
li.step[data-first-error] { border-color: var(--bad); background: var(--bad-bg); }
.row { display: grid; grid-template-columns: auto minmax(0, 1fr) auto; gap: 4px 10px; align-items: start; }
.no { font-weight: 600; white-space: nowrap; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
.verdict { display: flex; align-items: center; gap: 8px; white-space: nowrap; font-size: 13px; color: var(--muted); }
li.step[data-state=good] .verdict { color: var(--good); }
li.step[data-state=bad] .verdict { color: var(--bad); }
.bar { display: inline-block; width: 70px; height: 8px; border-radius: 4px; background: var(--track); overflow: hidden; }
.fill { display: block; height: 100%; width: 0; background: var(--accent); }
li.step[data-state=good] .fill { background: var(--good); }
li.step[data-state=bad] .fill { background: var(--bad); }
.flag { display: inline-block; font-size: 12px; font-weight: 600; color: var(--bad); margin-top: 4px; }
details.why { margin-top: 6px; }
details.why > summary { display: list-item; cursor: pointer; color: var(--accent); font-size: 13px; }
pre.rationale { display: block; white-space: pre-wrap; overflow-wrap: anywhere; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12.5px; background: var(--code-bg); border-radius: 6px; padding: 8px; margin-top: 6px; max-height: 320px; overflow: auto; }
.actions { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; margin-top: 10px; }
button { display: inline-block; cursor: pointer; border-radius: 6px; border: 1px solid var(--border); background: var(--bg);
  color: var(--fg); padding: 6px 14px; font-size: 14px; line-height: 1.4; opacity: 1; visibility: visible; }
button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-fg); font-weight: 600; }
button:disabled { opacity: 0.55; cursor: not-allowed; }
button:focus-visible, summary:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.progress { display: flex; align-items: center; gap: 8px; margin-top: 8px; font-size: 13px; color: var(--muted); }
progress { display: inline-block; width: 160px; height: 8px; }
.status { margin-top: 8px; font-size: 13px; color: var(--muted); min-height: 1em; }
.summary { margin-top: 6px; font-weight: 600; }
.summary[data-bad] { color: var(--bad); }
.summary[data-good] { color: var(--good); }
.summary[data-unsure] { color: var(--fg); }
.error { margin-top: 8px; color: var(--bad); white-space: pre-wrap; }
`;

/** Where a widget's error arose. */
export type Stage = 'input' | 'load' | 'python' | 'verify';

/** The events a <genprm-verifier> fires, with their details: `addEventListener` on the element
 *  (or any HTMLElement) is typed by this map. */
export interface GenprmVerifierEventMap {
  /** One sample's judgement of a step. */
  'genprm-reward': CustomEvent<{ step: number; sample: number; reward: Reward }>;
  /** A step's verdict; `correct` is null where the model reached no verdict. */
  'genprm-step': CustomEvent<{ index: number; reward: number; correct: boolean | null; verdict: StepVerdict }>;
  /** The whole result, complete or not. */
  'genprm-done': CustomEvent<VerifyResult>;
  /** Bad input, a model that cannot load, or a verification that stopped on an error. */
  'genprm-error': CustomEvent<{ message: string; stage: Stage }>;
}

declare global {
  interface HTMLElementTagNameMap {
    'genprm-verifier': GenprmVerifier;
  }
  interface HTMLElementEventMap extends GenprmVerifierEventMap {}
}

interface StepView { li: HTMLLIElement; verdict: HTMLElement; fill: HTMLElement; value: HTMLElement; bar: HTMLElement; details: HTMLDetailsElement; rationales: HTMLPreElement[] }

// One load per model source, device and quant, shared by every widget on the page.
interface Shared { promise: Promise<GenPRM>; listeners: Set<(p: ModelLoadProgress) => void> }
const models = new Map<string, Shared>();

async function sharedModel(model: string, device: 'auto' | 'gpu' | 'cpu', quant: 'q4' | 'q8' | null | undefined, onProgress: (p: ModelLoadProgress) => void): Promise<GenPRM> {
  const key = JSON.stringify([model, device, quant ?? 'default']);
  const held = models.get(key);
  // A model lost with its worker (a crash) is loaded again, in a new one.
  if (held && (await held.promise.catch(() => null))?.lost && models.get(key) === held) models.delete(key);
  let entry = models.get(key);
  if (!entry) {
    const listeners = new Set<(p: ModelLoadProgress) => void>();
    const promise = loadModel(model, { device, quant, onProgress: (p) => listeners.forEach((l) => l(p)) });
    entry = { promise, listeners };
    models.set(key, entry);
    promise.then(() => listeners.clear(), () => { listeners.clear(); models.delete(key); });
  }
  entry.listeners.add(onProgress);
  return entry.promise;
}

const Base: typeof HTMLElement = typeof HTMLElement === 'undefined' ? (class {} as unknown as typeof HTMLElement) : HTMLElement;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

export class GenprmVerifier extends Base {
  static observedAttributes = ['model', 'problem', 'steps', 'samples', 'theme', 'device', 'quant', 'greedy'];

  /** The last result (null before the first verification ends). */
  result: VerifyResult | null = null;
  private _steps: string[] | null = null;
  private _problem: string | null = null;
  private _options: ProtocolOptions = {};
  private abort: AbortController | null = null;
  private root!: HTMLDivElement;
  private problemEl!: HTMLParagraphElement;
  private list!: HTMLOListElement;
  private verifyButton!: HTMLButtonElement;
  private cancelButton!: HTMLButtonElement;
  private progressRow!: HTMLDivElement;
  private progressBar!: HTMLProgressElement;
  private progressText!: HTMLSpanElement;
  private statusEl!: HTMLParagraphElement;
  private summaryEl!: HTMLParagraphElement;
  private errorEl!: HTMLParagraphElement;
  private views: StepView[] = [];
  /** What the events of the running (or last) verification say, one entry per view. */
  private progress: VerifyProgress = verifyProgress(0);
  private observer: MutationObserver | null = null;
  private built = false;

  connectedCallback(): void {
    if (!this.built) this.build();
    this.observer ??= new MutationObserver(() => { if (!this.running) this.render(); });
    this.observer.observe(this, { childList: true, subtree: true, characterData: true });
    this.render();
  }

  disconnectedCallback(): void {
    this.observer?.disconnect();
    this.abort?.abort();
  }

  attributeChangedCallback(name: string): void {
    if (!this.built) return;
    if (name === 'theme') this.root.dataset.theme = this.theme;
    else if ((name === 'problem' || name === 'steps') && !this.running) this.render();
  }

  // Properties mirroring the attributes.
  get model(): string { return this.getAttribute('model') ?? 'demo'; }
  set model(v: string) { this.setAttribute('model', v); }
  get problem(): string {
    if (this._problem !== null) return this._problem;
    const attr = this.getAttribute('problem');
    if (attr !== null) return attr;
    return this.querySelector('[slot=problem], .problem')?.textContent?.trim() ?? '';
  }
  set problem(v: string) { this._problem = v; if (this.built && !this.running) this.render(); }
  get steps(): string[] {
    if (this._steps) return [...this._steps];
    const attr = this.getAttribute('steps');
    if (attr !== null) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(attr);
      } catch (e) {
        throw new Error(`the steps attribute is not JSON (${errorText(e)}): write it as a JSON array of strings, or give the steps as <li> children`);
      }
      if (!Array.isArray(parsed) || !parsed.every((s) => typeof s === 'string')) throw new Error('the steps attribute must be a JSON array of strings');
      return parsed;
    }
    return [...this.querySelectorAll('li')].map((li) => (li.textContent ?? '').trim());
  }
  set steps(v: string[] | string) {
    this._steps = typeof v === 'string' ? JSON.parse(v) : [...v];
    if (this.built && !this.running) this.render();
  }
  get samples(): number {
    const n = Number(this.getAttribute('samples') ?? '1');
    return Number.isFinite(n) && n >= 1 ? Math.min(MAX_SAMPLES, Math.round(n)) : 1;
  }
  set samples(v: number) { this.setAttribute('samples', String(v)); }
  get theme(): 'light' | 'dark' | 'auto' {
    const t = this.getAttribute('theme');
    return t === 'light' || t === 'dark' ? t : 'auto';
  }
  set theme(v: 'light' | 'dark' | 'auto') { this.setAttribute('theme', v); }
  /** Protocol options beyond `samples` (style, reward, greedy, seed, ...). */
  get options(): ProtocolOptions { return { ...this._options }; }
  set options(v: ProtocolOptions) { this._options = { ...v }; }
  get running(): boolean { return this.abort !== null; }

  /** The device, quant and samples attributes, checked: a value the widget does not know is an
   *  error naming the attribute (a typo would otherwise change what runs without a word). */
  private settings(): { device: 'auto' | 'gpu' | 'cpu'; quant: 'q4' | 'q8' | null | undefined; samples: number } {
    const attr = (name: string) => this.getAttribute(name)?.trim().toLowerCase() ?? null;
    const device = attr('device') ?? 'auto';
    if (device !== 'auto' && device !== 'gpu' && device !== 'cpu') throw new Error(`the device attribute must be auto, gpu or cpu, not "${this.getAttribute('device')}"`);
    const q = attr('quant');
    if (q !== null && !['q4', 'q8', 'none', 'f32'].includes(q)) throw new Error(`the quant attribute must be q4, q8 or none, not "${this.getAttribute('quant')}"`);
    const quant = q === 'q4' || q === 'q8' ? q : q === null ? undefined : null;
    const n = attr('samples');
    if (n !== null && !(/^\d+$/.test(n) && Number(n) >= 1 && Number(n) <= MAX_SAMPLES)) {
      throw new Error(`the samples attribute must be a whole number from 1 to ${MAX_SAMPLES}, not "${this.getAttribute('samples')}"`);
    }
    return { device, quant, samples: n === null ? 1 : Number(n) };
  }

  /** Verifies the steps; resolves with the result (null when it could not start). */
  async verify(): Promise<VerifyResult | null> {
    if (this.running) return null;
    if (!this.built) this.build();
    let problem: string, steps: string[], settings: ReturnType<GenprmVerifier['settings']>;
    try {
      problem = this.problem.trim();
      steps = this.steps.map((s) => s.trim()).filter((s) => s.length > 0);
      settings = this.settings();
      if (!problem) throw new Error('there is no problem to check (set the problem attribute)');
      if (steps.length === 0) throw new Error('there are no steps to check (add <li> children or set the steps attribute)');
    } catch (e) {
      this.fail('input', errorText(e));
      return null;
    }
    const abort = new AbortController();
    this.abort = abort;
    this.render(problem, steps);
    this.setBusy(true);
    this.result = null;
    try {
      this.say('Loading the model…');
      const { device, quant } = settings;
      let model: GenPRM;
      try {
        model = await sharedModel(this.model, device, quant, (p) => this.loadProgress(p));
      } catch (e) {
        this.fail('load', `The model could not be loaded: ${errorText(e)}`);
        return null;
      }
      if (abort.signal.aborted) { this.say('Cancelled.'); return null; }
      this.progressRow.hidden = true;
      const options: ProtocolOptions = { ...this._options, samples: settings.samples };
      if (this.hasAttribute('greedy')) options.greedy = true;
      if (options.execute !== false) {
        this.say('Starting Python…');
        // A verification whose code cannot run would judge on error messages of ours rather than
        // on what the code prints: stop, and say why (a site that wants verdicts without the
        // model's code runs sets `execute: false` in the options).
        try {
          await sharedExecutor().ready;
        } catch (e) {
          this.fail('python', `Python could not start, so the model's code cannot run: ${errorText(e)}`);
          return null;
        }
      }
      this.say(`Checking ${steps.length} step${steps.length === 1 ? '' : 's'}…`);
      let result: VerifyResult;
      try {
        result = await model.verify({ problem, steps, options }, { signal: abort.signal, onEvent: (e) => this.onEvent(e, steps.length) });
      } catch (e) {
        this.fail('verify', model.lost ? `The verification stopped: ${errorText(e)} (Verify again to reload it)` : `The verification could not start: ${errorText(e)}`);
        return null;
      }
      this.finish(result);
      return result;
    } finally {
      this.abort = null;
      this.setBusy(false);
    }
  }

  /** Stops a running verification (the steps judged so far are kept). */
  cancel(): void {
    if (!this.abort) return;
    this.abort.abort();
    this.say('Cancelling…');
  }

  private build(): void {
    this.built = true;
    const shadow = this.shadowRoot ?? this.attachShadow({ mode: 'open' });
    const style = el('style');
    style.textContent = STYLE;
    this.root = el('div', { class: 'root', part: 'root', role: 'group', 'aria-label': 'Step-by-step check' });
    this.root.dataset.theme = this.theme;
    const head = el('div', { class: 'head' });
    head.append(el('span', { class: 'title' }, 'Check the steps'), el('span', { class: 'badge' }, 'GenPRM, running on this device'));
    this.problemEl = el('p', { class: 'problem' });
    this.list = el('ol', { class: 'steps', 'aria-label': 'Steps' });
    this.verifyButton = el('button', { type: 'button', class: 'primary', part: 'verify-button' }, 'Verify the steps');
    this.cancelButton = el('button', { type: 'button', part: 'cancel-button' }, 'Cancel');
    this.cancelButton.hidden = true;
    this.verifyButton.addEventListener('click', () => void this.verify());
    this.cancelButton.addEventListener('click', () => this.cancel());
    const actions = el('div', { class: 'actions' });
    actions.append(this.verifyButton, this.cancelButton);
    this.progressBar = el('progress', { max: '1' });
    this.progressText = el('span');
    this.progressRow = el('div', { class: 'progress' });
    this.progressRow.append(this.progressBar, this.progressText);
    this.progressRow.hidden = true;
    this.statusEl = el('p', { class: 'status', role: 'status', 'aria-live': 'polite' });
    this.summaryEl = el('p', { class: 'summary' });
    this.errorEl = el('p', { class: 'error', role: 'alert' });
    this.errorEl.hidden = true;
    this.root.append(head, this.problemEl, this.list, actions, this.progressRow, this.statusEl, this.summaryEl, this.errorEl);
    shadow.replaceChildren(style, this.root);
  }

  /** Shows the problem and the steps, without verdicts. */
  private render(problem?: string, steps?: string[]): void {
    if (!this.built) return;
    let list: string[];
    try {
      problem ??= this.problem;
      list = steps ?? this.steps;
    } catch (e) {
      this.fail('input', errorText(e));
      return;
    }
    this.problemEl.replaceChildren(el('b', {}, 'Problem: '), problem);
    this.problemEl.hidden = !problem;
    this.views = list.map((text, i) => {
      const li = el('li', { class: 'step', 'data-state': 'waiting' });
      const row = el('div', { class: 'row' });
      const verdict = el('span', { class: 'verdict' });
      const bar = el('span', { class: 'bar', role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': '1', 'aria-label': `Reward of step ${i + 1}` });
      const fill = el('span', { class: 'fill' });
      bar.append(fill);
      const value = el('span', { class: 'value' });
      verdict.append(el('span', { class: 'label' }), bar, value);
      bar.hidden = true;
      row.append(el('span', { class: 'no' }, `Step ${i + 1}`), el('span', { class: 'text' }, text), verdict);
      const details = el('details', { class: 'why' });
      details.append(el('summary', {}, 'Why? (GenPRM’s check)'));
      details.hidden = true;
      li.append(row, details);
      this.list.append(li);
      return { li, verdict, fill, value, bar, details, rationales: [] };
    });
    this.list.replaceChildren(...this.views.map((v) => v.li));
    this.progress = verifyProgress(this.views.length);
    this.summaryEl.textContent = '';
    this.summaryEl.removeAttribute('data-bad');
    this.summaryEl.removeAttribute('data-good');
    this.summaryEl.removeAttribute('data-unsure');
    this.errorEl.hidden = true;
  }

  private rationale(step: number, sample: number): HTMLPreElement | null {
    const v = this.views[step];
    if (!v) return null;
    while (v.rationales.length <= sample) {
      const pre = el('pre', { class: 'rationale', 'aria-label': `GenPRM’s check of step ${step + 1}${this.samples > 1 ? `, sample ${v.rationales.length + 1}` : ''}` });
      v.rationales.push(pre);
      v.details.append(pre);
      v.details.hidden = false;
    }
    return v.rationales[sample];
  }

  private onEvent(e: VerifyEvent, total: number): void {
    const before = this.progress;
    this.progress = reduceVerifyEvent(before, e);
    switch (e.event) {
      case 'step_started':
        if (!this.views[e.step]) return;
        this.renderStep(e.step);
        this.rationale(e.step, e.sample);
        this.say(`Checking step ${e.step + 1} of ${total}${this.samples > 1 ? ` (sample ${e.sample + 1} of ${this.samples})` : ''}…`);
        break;
      case 'text':
      case 'fallback':
        this.renderRationale(e.step, e.sample, before);
        break;
      case 'code_ran':
        break; // the output is in the rationale text (code_output)
      case 'judged':
        this.emit('genprm-reward', { step: e.step, sample: e.sample, reward: e.reward } satisfies { step: number; sample: number; reward: Reward });
        break;
      case 'step_done': {
        this.renderStep(e.verdict.index);
        const step = this.progress.steps[e.verdict.index];
        this.emit('genprm-step', { index: e.verdict.index, reward: e.verdict.reward, correct: !step || step.undecided ? null : !step.wrong, verdict: e.verdict });
        break;
      }
    }
  }

  /** A sample's rationale as the events since `before` left it. */
  private renderRationale(step: number, sample: number, before: VerifyProgress): void {
    const pre = this.rationale(step, sample);
    const now = this.progress.steps[step]?.samples[sample];
    if (!pre || !now) return;
    const grown = rationaleAppended(before.steps[step]?.samples[sample]?.rationale ?? [], now.rationale);
    if (!grown) pre.textContent = now.rationale.map((p) => p.text).join('');
    else pre.append(grown.continued + grown.added.map((p) => p.text).join(''));
  }

  /** A step's state and verdict as the progress has them. */
  private renderStep(i: number): void {
    const view = this.views[i];
    const step = this.progress.steps[i];
    if (!view || !step) return;
    const label = view.verdict.firstChild as HTMLElement;
    if (step.phase === 'judging') {
      view.li.dataset.state = 'active';
      label.textContent = 'checking…';
    } else if (step.phase === 'stopped') {
      view.li.dataset.state = 'waiting';
      label.textContent = 'not checked';
    } else if (step.verdict) {
      const v = step.verdict;
      view.li.dataset.state = step.undecided ? 'unsure' : step.wrong ? 'bad' : 'good';
      label.textContent = step.undecided ? 'no verdict' : step.wrong ? 'looks wrong' : 'looks right';
      view.bar.hidden = false;
      view.fill.style.width = `${Math.round(v.reward * 100)}%`;
      view.bar.setAttribute('aria-valuenow', v.reward.toFixed(3));
      view.value.textContent = v.reward.toFixed(2);
    }
  }

  /**
   * Shows a result computed elsewhere (a saved one, or `genprm verify --json`'s) against the
   * element's problem and steps, without running the model; fires no events.
   */
  show(result: VerifyResult): void {
    if (this.running) return;
    if (!this.built) this.build();
    this.render();
    this.progress = reduceVerifyEvent(this.progress, { event: 'finished', result });
    this.present();
    this.say(this.summaryEl.textContent ?? '');
  }

  private finish(result: VerifyResult): void {
    this.progress = reduceVerifyEvent(this.progress, { event: 'finished', result });
    this.present();
    if (!result.complete) {
      this.say(result.error === 'cancelled' ? 'Cancelled; the steps checked so far are kept.' : `Stopped: ${result.error}`);
      if (result.error !== 'cancelled') this.emit('genprm-error', { message: result.error ?? 'the verification stopped', stage: 'verify' as Stage });
    } else {
      this.say(`Done. ${summaryText(result) ?? ''}`.trim());
    }
    this.emit('genprm-done', result);
  }

  /** Every step's verdict and the summary of the finished progress's result. */
  private present(): void {
    const result = this.progress.result;
    if (!result) return;
    this.result = result;
    this.views.forEach((v, i) => {
      this.renderStep(i);
      const first = i === this.progress.firstError;
      v.li.toggleAttribute('data-first-error', first);
      if (first) {
        v.li.setAttribute('aria-current', 'step');
        if (!v.li.querySelector('.flag')) v.li.insertBefore(el('span', { class: 'flag' }, 'First wrong step'), v.details);
      }
    });
    this.summaryEl.textContent = summaryText(result) ?? '';
    this.summaryEl.toggleAttribute('data-bad', result.first_error_step >= 0);
    const open = result.first_error_step < 0 && undecidedSteps(result).length > 0;
    this.summaryEl.toggleAttribute('data-unsure', open);
    this.summaryEl.toggleAttribute('data-good', result.first_error_step < 0 && !open && result.steps.length > 0);
  }

  private loadProgress(p: ModelLoadProgress): void {
    this.progressRow.hidden = false;
    if (p.phase === 'download') {
      if (p.total) { this.progressBar.max = p.total; this.progressBar.value = p.loaded; } else this.progressBar.removeAttribute('value');
      this.progressText.textContent = p.fromCache ? `${p.file} (from this browser’s cache)` : `Downloading ${p.file}: ${mb(p.loaded)}${p.total ? ` of ${mb(p.total)}` : ''}`;
    } else if (p.stage === 'weights' || p.stage === 'checksum') {
      this.progressBar.max = Math.max(1, p.total);
      this.progressBar.value = p.done;
      this.progressText.textContent = p.stage === 'weights' ? `Loading weights: ${p.done} of ${p.total}` : 'Checking the files';
    } else {
      this.progressBar.removeAttribute('value');
      this.progressText.textContent = p.stage === 'ready' ? 'Model ready' : 'Reading the model';
    }
  }

  private setBusy(busy: boolean): void {
    this.verifyButton.disabled = busy;
    this.cancelButton.hidden = !busy;
    this.root.setAttribute('aria-busy', String(busy));
    if (!busy) this.progressRow.hidden = true;
  }

  private say(text: string): void { this.statusEl.textContent = text; }

  private fail(stage: Stage, message: string): void {
    this.errorEl.textContent = message;
    this.errorEl.hidden = false;
    this.say('');
    this.emit('genprm-error', { message, stage });
  }

  private emit<K extends keyof GenprmVerifierEventMap>(type: K, detail: GenprmVerifierEventMap[K]['detail']): void {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

function mb(n: number): string {
  return `${(n / 1048576).toFixed(n < 10 * 1048576 ? 1 : 0)} MB`;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Registers <genprm-verifier> (done when the package is imported; safe to call again). */
export function defineVerifier(name = 'genprm-verifier'): void {
  if (typeof customElements !== 'undefined' && !customElements.get(name)) customElements.define(name, name === 'genprm-verifier' ? GenprmVerifier : class extends GenprmVerifier {});
}

defineVerifier();
