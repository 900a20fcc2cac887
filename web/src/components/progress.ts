// A labelled progress bar (native <progress>, so screen readers announce it).
import { h, uid } from '../lib/dom.ts';

export class ProgressBar {
  readonly el: HTMLDivElement;
  private bar: HTMLProgressElement;
  private text: HTMLSpanElement;

  constructor(label: string, testId: string) {
    const id = uid('progress');
    this.bar = h('progress', { id, max: 1, value: 0 });
    this.text = h('span', { class: 'progress-text' });
    this.el = h('div', { class: 'progress', hidden: true, 'data-testid': testId },
      h('label', { for: id, class: 'progress-label' }, label), this.bar, this.text);
  }

  /** `total` undefined: indeterminate. */
  set(done: number, total: number | undefined, text: string): void {
    this.el.hidden = false;
    this.el.classList.remove('failed', 'done');
    if (total === undefined || total <= 0) this.bar.removeAttribute('value');
    else { this.bar.max = total; this.bar.value = Math.min(done, total); }
    this.text.textContent = text;
  }

  done(text: string): void {
    this.el.hidden = false;
    this.bar.max = 1;
    this.bar.value = 1;
    this.el.classList.add('done');
    this.text.textContent = text;
  }

  fail(text: string): void {
    this.el.hidden = false;
    this.el.classList.add('failed');
    this.text.textContent = text;
  }

  hide(): void { this.el.hidden = true; }
}
