// The protocol options: Maj@N samples, prompt style, reward, decoding (greedy or sampling with a
// seed), mode and code execution. Defaults are GenPRM's (as the CLI's), from the package.
import { GENPRM_TEMPERATURE, GENPRM_TOP_K, GENPRM_TOP_P, MAX_SAMPLES, TIME_LIMIT_SECS, type ProtocolOptions } from 'genprm';
import { h, uid } from '../lib/dom.ts';

function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = control.id || uid('opt');
  control.id = id;
  return h('div', { class: 'field' }, h('label', { for: id, text: label }), control, hint ? h('span', { class: 'hint', text: hint }) : null);
}

function select(testId: string, options: [string, string][], value: string): HTMLSelectElement {
  const s = h('select', { 'data-testid': testId }, ...options.map(([v, t]) => h('option', { value: v, text: t })));
  s.value = value;
  return s;
}

function number(testId: string, value: number, min: number, max: number, step: number): HTMLInputElement {
  return h('input', { type: 'number', 'data-testid': testId, value: String(value), min: String(min), max: String(max), step: String(step), inputMode: 'decimal' });
}

export class OptionsPanel {
  readonly el: HTMLElement;
  private samples = number('samples', 1, 1, MAX_SAMPLES, 1);
  private style = select('style', [['card', 'Model card (default)'], ['processbench', 'ProcessBench evaluation']], 'card');
  private reward = select('reward', [['official', 'Official (vLLM log-probabilities)'], ['calibrated', 'Calibrated (raw Yes/No logits)']], 'official');
  private mode = select('mode', [['cot_code', 'Reasoning + Python checks'], ['cot', 'Reasoning only'], ['code', 'Python checks only']], 'cot_code');
  private greedy = h('input', { type: 'checkbox', 'data-testid': 'greedy' });
  private seed = number('seed', 0, 0, 2 ** 32 - 1, 1);
  private temperature = number('temperature', GENPRM_TEMPERATURE, 0.01, 2, 0.05);
  private topK = number('top-k', GENPRM_TOP_K, 0, 1000, 1);
  private topP = number('top-p', GENPRM_TOP_P, 0.01, 1, 0.01);
  private execute = h('input', { type: 'checkbox', checked: true, 'data-testid': 'execute' });
  private stopAtFirst = h('input', { type: 'checkbox', 'data-testid': 'stop-at-first-error' });

  constructor() {
    const check = (input: HTMLInputElement, label: string) => {
      input.id = uid('opt');
      return h('div', { class: 'field check' }, input, h('label', { for: input.id, text: label }));
    };
    const sampling = h('fieldset', { class: 'sampling' }, h('legend', { text: 'Sampling' }),
      field('Seed', this.seed), field('Temperature', this.temperature), field('Top-k', this.topK, '0 = off'), field('Top-p', this.topP));
    const sync = () => { sampling.disabled = this.greedy.checked; };
    this.greedy.addEventListener('change', sync);
    this.el = h('section', { class: 'card', 'aria-labelledby': 'options-heading' },
      h('h2', { id: 'options-heading', text: 'Options' }),
      h('div', { class: 'grid' },
        field('Samples (Maj@N)', this.samples, 'each step judged N times, rewards averaged'),
        field('Prompt style', this.style),
        field('Reward', this.reward),
        field('Mode', this.mode)),
      check(this.greedy, 'Greedy decoding (deterministic, no sampling)'),
      sampling,
      check(this.execute, `Run the Python the model writes (Pyodide, ${TIME_LIMIT_SECS} s per block)`),
      check(this.stopAtFirst, 'Stop at the first wrong step'));
    sync();
  }

  get(): ProtocolOptions {
    const num = (i: HTMLInputElement, d: number) => (Number.isFinite(i.valueAsNumber) ? i.valueAsNumber : d);
    const o: ProtocolOptions = {
      samples: Math.max(1, Math.min(MAX_SAMPLES, Math.round(num(this.samples, 1)))),
      style: this.style.value as ProtocolOptions['style'],
      reward: this.reward.value as ProtocolOptions['reward'],
      mode: this.mode.value as ProtocolOptions['mode'],
      greedy: this.greedy.checked,
      execute: this.execute.checked,
      stop_at_first_error: this.stopAtFirst.checked,
    };
    if (!o.greedy) {
      o.seed = Math.max(0, Math.round(num(this.seed, 0)));
      o.temperature = num(this.temperature, GENPRM_TEMPERATURE);
      o.top_k = Math.max(0, Math.round(num(this.topK, GENPRM_TOP_K)));
      o.top_p = num(this.topP, GENPRM_TOP_P);
    }
    return o;
  }

  set(o: ProtocolOptions): void {
    if (o.samples !== undefined) this.samples.value = String(o.samples);
    if (o.style !== undefined) this.style.value = o.style;
    if (o.reward !== undefined) this.reward.value = o.reward;
    if (o.mode !== undefined) this.mode.value = o.mode;
    if (o.execute !== undefined) this.execute.checked = o.execute;
    if (o.stop_at_first_error !== undefined) this.stopAtFirst.checked = o.stop_at_first_error;
    if (o.seed !== undefined) this.seed.value = String(o.seed);
    if (o.temperature !== undefined) this.temperature.value = String(o.temperature);
    if (o.top_k !== undefined) this.topK.value = String(o.top_k);
    if (o.top_p !== undefined) this.topP.value = String(o.top_p);
    if (o.greedy !== undefined) { this.greedy.checked = o.greedy; this.greedy.dispatchEvent(new Event('change')); }
  }
}
