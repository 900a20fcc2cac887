// The problem and steps editor: pick an example, paste a solution and split it into paragraphs
// (the wasm splitParagraphs, as the CLI splits), edit, add, move and remove steps. Live math
// previews under each field.
import { h, uid } from '../lib/dom.ts';
import examples from './examples.json';
import { renderMath } from '../lib/math.ts';

export interface Example { id: string; title: string; source: string; problem: string; steps: string[]; label: number | null }
export const EXAMPLES = examples as Example[];

export interface Solution { problem: string; steps: string[] }

export class SolutionEditor {
  readonly el: HTMLElement;
  private problem: HTMLTextAreaElement;
  private problemPreview: HTMLDivElement;
  private list: HTMLOListElement;
  private paste: HTMLTextAreaElement;
  private exampleSelect: HTMLSelectElement;
  private note: HTMLParagraphElement;
  /** Called on any edit (the results of an earlier run no longer match). */
  onChange: () => void = () => {};

  constructor(private split: (text: string) => Promise<string[]>, private report: (title: string, detail: string) => void) {
    const exId = uid('example');
    this.exampleSelect = h('select', { id: exId, 'data-testid': 'example' },
      h('option', { value: '', text: 'Choose an example…' }),
      ...EXAMPLES.map((e) => h('option', { value: e.id, text: e.title })));
    this.exampleSelect.addEventListener('change', () => {
      const ex = EXAMPLES.find((e) => e.id === this.exampleSelect.value);
      if (ex) this.load(ex);
    });
    this.note = h('p', { class: 'hint', 'aria-live': 'polite' });

    const probId = uid('problem');
    this.problem = h('textarea', { id: probId, rows: 3, 'data-testid': 'problem', placeholder: 'The math problem, e.g. What is 2 + 3?' });
    this.problemPreview = h('div', { class: 'preview', 'aria-hidden': 'true' });
    this.problem.addEventListener('input', () => { this.preview(this.problem, this.problemPreview); this.onChange(); });

    const pasteId = uid('paste');
    this.paste = h('textarea', { id: pasteId, rows: 6, 'data-testid': 'paste', placeholder: 'Paste a whole solution; paragraphs are separated by blank lines.' });
    const splitButton = h('button', { type: 'button', text: 'Split into steps', 'data-testid': 'split' });
    splitButton.addEventListener('click', () => this.splitPasted());

    this.list = h('ol', { class: 'steps-editor', 'data-testid': 'steps' });
    const add = h('button', { type: 'button', text: 'Add a step', 'data-testid': 'add-step' });
    add.addEventListener('click', () => { const t = this.addStep(''); t.focus(); this.onChange(); });

    this.el = h('section', { class: 'card', 'aria-labelledby': 'solution-heading' },
      h('h2', { id: 'solution-heading', text: 'Problem and solution' }),
      h('div', { class: 'field' }, h('label', { for: exId, text: 'Example' }), this.exampleSelect),
      this.note,
      h('div', { class: 'field' }, h('label', { for: probId, text: 'Problem' }), this.problem, this.problemPreview),
      h('details', { class: 'paste' },
        h('summary', { text: 'Paste a whole solution' }),
        h('div', { class: 'field' }, h('label', { for: pasteId, text: 'Solution text' }), this.paste),
        splitButton),
      h('h3', { text: 'Steps' }),
      this.list, add);
  }

  get(): Solution {
    return {
      problem: this.problem.value,
      steps: [...this.list.querySelectorAll('textarea')].map((t) => t.value),
    };
  }

  set(s: Solution): void {
    this.problem.value = s.problem;
    this.preview(this.problem, this.problemPreview);
    this.list.replaceChildren();
    for (const step of s.steps) this.addStep(step);
    this.onChange();
  }

  load(ex: Example): void {
    this.exampleSelect.value = ex.id;
    this.set(ex);
    this.note.textContent = ex.label === null
      ? `From ${ex.source}.`
      : `From ${ex.source}. Annotated first wrong step: ${ex.label < 0 ? 'none (the solution is correct)' : `step ${ex.label + 1}`}.`;
  }

  private async splitPasted(): Promise<void> {
    const text = this.paste.value;
    if (!text.trim()) { this.report('Nothing to split', 'Paste a solution into the box first.'); return; }
    try {
      const steps = await this.split(text);
      if (steps.length === 0) { this.report('No paragraphs found', 'The pasted text has no non-empty paragraphs.'); return; }
      this.list.replaceChildren();
      for (const s of steps) this.addStep(s);
      this.exampleSelect.value = '';
      this.note.textContent = `Split into ${steps.length} step${steps.length === 1 ? '' : 's'}.`;
      this.onChange();
    } catch (e) {
      this.report('Could not split the solution', (e as Error).message ?? String(e));
    }
  }

  private addStep(text: string): HTMLTextAreaElement {
    const id = uid('step');
    const label = h('label', { for: id });
    const area = h('textarea', { id, rows: 2, value: text });
    const preview = h('div', { class: 'preview', 'aria-hidden': 'true' });
    area.value = text;
    area.addEventListener('input', () => { this.preview(area, preview); this.onChange(); });
    const li = h('li', { class: 'step-edit' });
    const button = (text: string, title: string, act: () => void) => {
      const b = h('button', { type: 'button', class: 'small', text, title, 'aria-label': title });
      b.addEventListener('click', () => { act(); this.renumber(); this.onChange(); });
      return b;
    };
    const tools = h('div', { class: 'step-tools' },
      button('↑', 'Move step up', () => li.previousElementSibling?.before(li)),
      button('↓', 'Move step down', () => li.nextElementSibling?.after(li)),
      button('Remove', 'Remove step', () => li.remove()));
    li.append(h('div', { class: 'step-head' }, label, tools), area, preview);
    this.list.append(li);
    this.preview(area, preview);
    this.renumber();
    return area;
  }

  private renumber(): void {
    this.list.querySelectorAll('li').forEach((li, i) => {
      const label = li.querySelector('label')!;
      label.textContent = `Step ${i + 1}`;
      li.querySelectorAll<HTMLButtonElement>('.step-tools button').forEach((b) => {
        const base = b.title.replace(/ \d+$/, '');
        b.setAttribute('aria-label', `${base} ${i + 1}`);
      });
    });
  }

  private preview(area: HTMLTextAreaElement, out: HTMLElement): void {
    const hasMath = /\$|\\\(|\\\[/.test(area.value);
    out.hidden = !hasMath;
    if (hasMath) renderMath(out, area.value);
  }
}
