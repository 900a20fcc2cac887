// Runs a verification: checks the input, resets the executor's namespaces, streams the events to
// the results view, and cancels on request.
import type { GenPRM, PyodideExecutor, VerifyEvent, VerifyRequest, VerifyResult } from 'genprm';
import { errorMessage } from '../lib/dom.ts';
import type { ResultsView } from './results.ts';

export class VerifyController {
  private abort: AbortController | null = null;
  /** The last result, for the page and the tests. */
  last: VerifyResult | null = null;
  /** The events of the last run, in order (for export and the tests). */
  events: VerifyEvent[] = [];
  /** Why the last run could not start (null when it ran). */
  lastError: string | null = null;

  constructor(private results: ResultsView, private executor: PyodideExecutor) {}

  get running(): boolean { return this.abort !== null; }

  cancel(): void {
    this.abort?.abort();
    this.results.setLive('Cancelling…');
  }

  async run(model: GenPRM, request: VerifyRequest): Promise<VerifyResult | null> {
    const abort = new AbortController();
    this.abort = abort;
    const samples = request.options?.samples ?? 1;
    this.results.start(request.steps, samples);
    this.last = null;
    this.lastError = null;
    this.events = [];
    try {
      if (request.options?.execute !== false) {
        this.results.setLive('Waiting for Python…');
        // A worker that could not start answers each run with an error outcome.
        await this.executor.ready.catch(() => undefined);
      }
      this.results.setLive('Verifying…');
      // The model resets the executor's namespaces for each solution path first.
      const result = await model.verify(request, { executor: this.executor, signal: abort.signal, onEvent: (e) => { this.events.push(e); this.results.onEvent(e); } });
      this.last = result;
      this.results.finish(result);
      return result;
    } catch (e) {
      this.lastError = errorMessage(e);
      this.results.fail(`The verification could not start: ${errorMessage(e)}`);
      return null;
    } finally {
      this.abort = null;
    }
  }
}
