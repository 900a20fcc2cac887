// Runs a verification: checks the input, resets the executor's namespaces, streams the events to
// the results view, and cancels on request.
import type { VerifyEvent, VerifyRequest, VerifyResult } from '../../pkg/src/types.ts';
import type { Model } from 'genprm-wasm';
import type { PyodideExecutor } from '../../pkg/src/pyodide-executor.ts';
import { errorMessage } from './dom.ts';
import type { ResultsView } from './results.ts';

export class VerifyController {
  private abort: AbortController | null = null;
  /** The last result, for the page and the tests. */
  last: VerifyResult | null = null;
  /** The events of the last run, in order (for export and the tests). */
  events: VerifyEvent[] = [];

  constructor(private results: ResultsView, private executor: PyodideExecutor) {}

  get running(): boolean { return this.abort !== null; }

  cancel(): void {
    this.abort?.abort();
    this.results.setLive('Cancelling…');
  }

  async run(model: Model, request: VerifyRequest): Promise<VerifyResult | null> {
    const abort = new AbortController();
    this.abort = abort;
    const samples = request.options?.samples ?? 1;
    this.results.start(request.steps, samples);
    this.last = null;
    this.events = [];
    try {
      if (request.options?.execute !== false) {
        this.results.setLive('Waiting for Python…');
        // A worker that could not start answers each run with an error outcome; nothing to reset.
        for (let p = 0; p < samples; p++) await this.executor.reset(p).catch(() => undefined);
        this.results.setLive('Verifying…');
      }
      const result = await model.verify(request, this.executor, (e) => { this.events.push(e); this.results.onEvent(e); }, abort.signal);
      this.last = result;
      this.results.finish(result);
      return result;
    } catch (e) {
      this.results.fail(`The verification could not start: ${errorMessage(e)}`);
      return null;
    } finally {
      this.abort = null;
    }
  }
}
