// The Python executor the model's code runs in (Pyodide in a Web Worker), started when the page
// opens so it is ready by the time a model is; its start-up progress and restarts.
import { PyodideExecutor, pythonAssetURLs, TIME_LIMIT_SECS } from 'genprm';
import { bytes, errorMessage, h } from '../lib/dom.ts';
import { ProgressBar } from './progress.ts';

export class PythonPanel {
  readonly executor: PyodideExecutor;
  readonly el: HTMLElement;
  private bar = new ProgressBar('Python start-up', 'python-progress');
  private line = h('p', { class: 'hint', 'data-testid': 'python-status', 'aria-live': 'polite' });

  constructor() {
    this.el = h('div', { class: 'python-panel' }, this.bar.el, this.line);
    this.executor = new PyodideExecutor({
      ...pythonAssetURLs(),
      onProgress: (p) => {
        const again = p.restart > 0 ? ' (restarting)' : '';
        if (p.stage === 'runtime') this.bar.set(0, undefined, `loading Pyodide${again}`);
        else if (p.stage === 'packages') this.bar.set(p.loaded ?? 0, p.total, `sympy and mpmath: ${bytes(p.loaded ?? 0)}${p.total ? ` of ${bytes(p.total)}` : ''}${again}`);
        else if (p.stage === 'imports') this.bar.set(0, undefined, `importing sympy${again}`);
        else this.bar.done('ready');
      },
      onRestart: (reason) => {
        this.line.textContent = `Python was restarted: ${reason}. Variables defined by earlier code blocks are gone (as when the official executor is killed).`;
      },
    });
    this.executor.ready.then(
      () => {
        const v = this.executor.versions;
        this.line.textContent = `Python ${v?.python} with sympy ${v?.sympy} is ready (Pyodide, in a worker; ${TIME_LIMIT_SECS} s per code block).`;
        setTimeout(() => this.bar.hide(), 1500);
      },
      (e) => {
        this.bar.fail('failed');
        this.line.textContent = `Python could not start: ${errorMessage(e)}. Verification still works with "Run the Python" off.`;
      },
    );
  }
}
