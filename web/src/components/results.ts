// components/: the panels and views the pages are built of: the model (model-panel.ts), Python
// (python-panel.ts), the solution editor and its examples, the options, one verification
// (verify-controller.ts) and its results (results.ts), progress bars and alerts. They import the
// package as 'genprm', each other and lib/; never pages/ or grade/.
//
// The verification as it happens: one panel per step with each sample's rationale streaming in
// (forced protocol text dim, model text plain, code output set apart), the Python runs with their
// outputs, the judgement and a reward bar; the first wrong step highlighted; the scores.
import { rationaleAppended, reduceVerifyEvent, stepList, TIME_LIMIT_SECS, undecidedSteps, verifyProgress, type Reward, type VerifyEvent, type VerifyProgress, type VerifyResult } from 'genprm';
import { h, uid } from '../lib/dom.ts';
import { renderMath } from '../lib/math.ts';

interface SamplePanel {
  root: HTMLElement;
  summary: HTMLElement | null;
  rationale: HTMLPreElement;
  runs: HTMLOListElement;
  judgement: HTMLElement;
}

interface StepPanel {
  root: HTMLLIElement;
  status: HTMLElement;
  bar: HTMLElement;
  fill: HTMLElement;
  value: HTMLElement;
  samples: HTMLElement;
  sampleViews: SamplePanel[];
}

export function rewardText(r: number): string {
  return r.toFixed(3);
}

export class ResultsView {
  readonly el: HTMLElement;
  private list: HTMLOListElement;
  private summary: HTMLElement;
  private live: HTMLElement;
  private steps: StepPanel[] = [];
  private nSamples = 1;
  /** What the events of the verification shown say, one entry per step. */
  private progress: VerifyProgress = verifyProgress(0);
  readonly heading: HTMLHeadingElement;

  constructor(title = 'Verification', testId = 'results') {
    this.list = h('ol', { class: 'step-results', 'data-testid': testId });
    this.summary = h('div', { class: 'summary', 'data-testid': 'summary' });
    this.live = h('p', { class: 'live-status', role: 'status', 'aria-live': 'polite', 'data-testid': 'live-status' });
    const headingId = uid('results-heading');
    this.heading = h('h2', { id: headingId, text: title });
    this.el = h('section', { class: 'card results', 'aria-labelledby': headingId, hidden: true },
      this.heading, this.live, this.summary, this.list);
  }

  start(steps: string[], samples: number): void {
    this.el.hidden = false;
    this.nSamples = samples;
    this.summary.replaceChildren();
    this.summary.className = 'summary';
    this.list.replaceChildren();
    this.steps = steps.map((text, i) => this.stepPanel(text, i));
    this.progress = verifyProgress(steps.length);
    this.setLive(`Verifying ${steps.length} step${steps.length === 1 ? '' : 's'}…`);
    // On a narrow screen the results are below the form: bring them into view.
    if (this.el.getBoundingClientRect().top > window.innerHeight) this.el.scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  /** Shows a finished verification (a stored result): its steps, each sample's rationale, code
   *  runs and judgement, as if its events had streamed in. */
  show(steps: string[], result: VerifyResult, title?: string): void {
    if (title) this.heading.textContent = title;
    const samples = result.steps.reduce((m, v) => Math.max(m, v.samples.length), 1);
    this.start(steps, samples);
    for (const v of result.steps) {
      v.samples.forEach((s, k) => {
        this.onEvent({ event: 'step_started', step: v.index, sample: k });
        if (s.text) this.onEvent({ event: 'text', step: v.index, sample: k, text: s.text, source: 'model' });
        for (const r of s.code_runs) this.onEvent({ event: 'code_ran', step: v.index, sample: k, code: r.code, output: r.output });
        this.onEvent({ event: 'judged', step: v.index, sample: k, reward: s.reward });
      });
      this.onEvent({ event: 'step_done', verdict: v });
    }
    this.finish(result);
  }

  setLive(text: string): void { this.live.textContent = text; }

  onEvent(e: VerifyEvent): void {
    const before = this.progress;
    this.progress = reduceVerifyEvent(before, e);
    switch (e.event) {
      case 'step_started':
        if (!this.steps[e.step]) return;
        this.renderStep(e.step);
        this.renderSample(e.step, e.sample, before);
        this.setLive(`Judging step ${e.step + 1} of ${this.steps.length}${this.nSamples > 1 ? ` (${this.nSamples} samples)` : ''}…`);
        break;
      case 'text':
      case 'fallback':
      case 'code_ran':
      case 'judged':
        this.renderSample(e.step, e.sample, before);
        break;
      case 'step_done':
        this.renderStep(e.verdict.index);
        break;
    }
  }

  finish(result: VerifyResult): void {
    this.progress = reduceVerifyEvent(this.progress, { event: 'finished', result });
    this.steps.forEach((s, i) => {
      this.renderStep(i);
      s.root.classList.remove('active');
      if (!this.progress.steps[i]?.verdict) { s.root.classList.add('skipped'); s.status.textContent = result.complete ? 'not judged (stopped at the first wrong step)' : 'not judged'; }
    });
    this.highlight(this.progress.firstError);
    const parts: (HTMLElement | string)[] = [];
    if (result.first_error_step >= 0) {
      parts.push(h('p', { class: 'verdict-line', 'data-testid': 'first-error' }, 'First wrong step: ', h('strong', { text: `Step ${result.first_error_step + 1}` })));
    } else if (result.steps.length > 0) {
      parts.push(h('p', { class: 'verdict-line', 'data-testid': 'first-error' }, result.complete ? 'No wrong step found.' : 'No wrong step among the steps judged.'));
      // Steps without a verdict are not "right": say so where the summary is read.
      const open = undecidedSteps(result);
      if (open.length > 0) {
        parts.push(h('p', { class: 'verdict-line undecided', 'data-testid': 'undecided' },
          `The model reached no verdict on ${stepList(open)} (reward 0.5): check ${open.length === 1 ? 'it' : 'them'} yourself.`));
      }
    }
    if (result.steps.length > 0) {
      parts.push(h('p', { class: 'scores', 'data-testid': 'scores' },
        `Scores — min ${rewardText(result.scores.min)}, last ${rewardText(result.scores.last)}, mean ${rewardText(result.scores.mean)}`));
    }
    if (!result.complete) {
      parts.push(h('p', { class: 'stopped', role: 'alert', 'data-testid': 'verify-error' },
        result.error === 'cancelled' ? 'Cancelled. The steps judged so far are kept.' : `Stopped: ${result.error}. The steps judged so far are kept.`));
    }
    this.summary.replaceChildren(...parts);
    this.summary.classList.toggle('has-error', result.first_error_step >= 0);
    this.summary.dataset.firstErrorStep = String(result.first_error_step);
    this.setLive(result.complete ? 'Verification finished.' : result.error === 'cancelled' ? 'Verification cancelled.' : 'Verification stopped by an error.');
  }

  /** An error before any result (invalid request, no model). */
  fail(message: string): void {
    this.steps.forEach((s) => s.root.classList.remove('active'));
    this.summary.replaceChildren(h('p', { class: 'stopped', role: 'alert', 'data-testid': 'verify-error', text: message }));
    this.setLive('Verification failed.');
  }

  private stepPanel(text: string, i: number): StepPanel {
    const status = h('span', { class: 'step-status', text: 'waiting' });
    const fill = h('div', { class: 'fill' });
    const bar = h('div', { class: 'reward-bar', role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': '1', 'aria-label': `Reward of step ${i + 1}` }, fill);
    const value = h('span', { class: 'reward-value', 'data-testid': 'reward' });
    const stepText = h('div', { class: 'step-text' });
    renderMath(stepText, text);
    const samples = h('div', { class: 'samples' });
    const root = h('li', { class: 'step-result', 'data-step': String(i), 'data-testid': 'step-result' },
      h('div', { class: 'step-result-head' }, h('span', { class: 'step-no', text: `Step ${i + 1}` }), status, bar, value),
      stepText, samples);
    this.list.append(root);
    return { root, status, bar, fill, value, samples, sampleViews: [] };
  }

  private sample(step: number, sample: number): SamplePanel | null {
    const p = this.steps[step];
    if (!p) return null;
    while (p.sampleViews.length <= sample) {
      const k = p.sampleViews.length;
      const rationale = h('pre', { class: 'rationale', 'data-testid': 'rationale', 'aria-label': `Rationale of step ${step + 1}${this.nSamples > 1 ? `, sample ${k + 1}` : ''}` });
      const runs = h('ol', { class: 'code-runs' });
      const judgement = h('div', { class: 'judgement', 'data-testid': 'judgement' });
      let root: HTMLElement;
      let summary: HTMLElement | null = null;
      if (this.nSamples > 1) {
        summary = h('summary', { text: `Sample ${k + 1}` });
        root = h('details', { class: 'sample', open: k === 0 }, summary, rationale, runs, judgement);
      } else {
        root = h('div', { class: 'sample' }, rationale, runs, judgement);
      }
      root.dataset.sample = String(k);
      p.samples.append(root);
      p.sampleViews.push({ root, summary, rationale, runs, judgement });
    }
    return p.sampleViews[sample];
  }

  private judgementText(r: Reward): HTMLElement {
    const j = r.judgement ?? 'none';
    const probs = r.p_yes !== null || r.p_no !== null
      ? ` (P(Yes) ${r.p_yes === null ? '–' : r.p_yes.toFixed(3)}, P(No) ${r.p_no === null ? '–' : r.p_no.toFixed(3)})` : '';
    return h('span', {}, 'Judgement: ', h('strong', { class: `j-${j.toLowerCase()}`, text: j }), ` — reward ${rewardText(r.value)}${probs}`, r.note ? h('span', { class: 'hint', text: ` ${r.note}` }) : null);
  }

  /** A step's state and verdict as the progress has them. */
  private renderStep(i: number): void {
    const p = this.steps[i];
    const step = this.progress.steps[i];
    if (!p || !step) return;
    if (step.phase === 'judging') {
      p.root.classList.add('active');
      // The samples of a step are decoded together (one batch), so they start at once.
      p.status.textContent = this.nSamples > 1 ? `judging ${this.nSamples} samples together…` : 'judging…';
      return;
    }
    const v = step.verdict;
    if (!v) return;
    const good = !step.wrong;
    const open = step.undecided;
    p.root.classList.remove('active');
    p.root.classList.add('judged', good ? 'good' : 'bad');
    p.root.classList.toggle('undecided', open);
    p.root.dataset.reward = String(v.reward);
    p.status.textContent = open ? 'no verdict (check it yourself)' : good ? 'looks correct' : 'looks wrong';
    p.fill.style.width = `${Math.round(v.reward * 100)}%`;
    p.bar.setAttribute('aria-valuenow', v.reward.toFixed(3));
    p.bar.setAttribute('aria-valuetext', `${rewardText(v.reward)}, ${open ? 'no verdict' : good ? 'correct' : 'wrong'}`);
    p.value.textContent = rewardText(v.reward);
    // Until the result says otherwise, the first step judged wrong is the first wrong one.
    this.highlight(this.progress.firstError);
  }

  /** A sample's rationale, code runs and judgement as the events since `before` left them. */
  private renderSample(step: number, sample: number, before: VerifyProgress): void {
    const s = this.sample(step, sample);
    const now = this.progress.steps[step]?.samples[sample];
    if (!s || !now) return;
    const was = before.steps[step]?.samples[sample];
    const grown = rationaleAppended(was?.rationale ?? [], now.rationale);
    if (!grown) s.rationale.replaceChildren();
    if (grown?.continued) (s.rationale.lastElementChild as HTMLElement).append(grown.continued);
    for (const part of grown ? grown.added : now.rationale) {
      s.rationale.append(h('span', { class: `src-${part.source}`, 'data-source': part.source }, part.text));
    }
    if (now.fallback && !was?.fallback) {
      s.root.classList.add('fallback');
      s.runs.append(h('li', { class: 'note', text: 'Out of code rounds or tokens: the verification was dropped and the judgement forced (the official fallback).' }));
    }
    for (const run of now.codeRuns.slice(was?.codeRuns.length ?? 0)) {
      const kind = /^Code execute time out/.test(run.output) ? 'timeout' : /^Code (execute Error|format error)/.test(run.output) ? 'error' : 'ok';
      s.runs.append(h('li', { class: `code-run run-${kind}`, 'data-testid': 'code-run' },
        h('div', { class: 'run-label', text: kind === 'ok' ? 'Python ran' : kind === 'timeout' ? `Python timed out (${TIME_LIMIT_SECS} s)` : 'Python error' }),
        run.code !== null ? h('pre', { class: 'code', 'aria-label': 'Code' }, h('code', { text: run.code })) : null,
        h('pre', { class: 'code-output', 'data-testid': 'code-output', 'aria-label': 'Output', text: run.output })));
    }
    if (now.reward && now.reward !== was?.reward) {
      s.judgement.replaceChildren(this.judgementText(now.reward));
      s.judgement.dataset.reward = String(now.reward.value);
      if (s.summary) s.summary.textContent = `Sample ${sample + 1}: ${now.reward.judgement ?? 'no judgement'}, reward ${rewardText(now.reward.value)}`;
    }
  }

  private highlight(first: number): void {
    this.steps.forEach((s, i) => {
      const isFirst = i === first;
      s.root.classList.toggle('first-error', isFirst);
      if (isFirst) s.root.setAttribute('aria-current', 'step'); else s.root.removeAttribute('aria-current');
      const badge = s.root.querySelector('.first-error-badge');
      if (isFirst && !badge) s.root.querySelector('.step-result-head')!.append(h('span', { class: 'first-error-badge', 'data-testid': 'first-error-badge', text: 'first wrong step' }));
      if (!isFirst && badge) badge.remove();
    });
  }
}
