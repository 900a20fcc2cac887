// Messages to the user in the page (role=alert for errors), never a dead tab.
import { h } from '../lib/dom.ts';

export class Alerts {
  readonly el = h('div', { class: 'alerts', 'data-testid': 'alerts' });

  error(title: string, detail?: string, hint?: string): HTMLElement {
    return this.show('error', title, detail, hint);
  }

  info(title: string, detail?: string): HTMLElement {
    return this.show('info', title, detail);
  }

  clear(): void { this.el.replaceChildren(); }

  private show(kind: 'error' | 'info', title: string, detail?: string, hint?: string): HTMLElement {
    const close = h('button', { type: 'button', class: 'alert-close', 'aria-label': 'Dismiss', text: '×' });
    const box = h('div', { class: `alert alert-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
      h('strong', { text: title }), detail ? h('p', { class: 'alert-detail', text: detail }) : null,
      hint ? h('p', { class: 'alert-hint', text: hint }) : null, close);
    close.addEventListener('click', () => box.remove());
    this.el.append(box);
    box.scrollIntoView?.({ block: 'nearest' });
    return box;
  }
}
