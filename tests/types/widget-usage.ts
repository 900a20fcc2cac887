// What a tutoring site's TypeScript writes against the package, type-checked by the widget's
// browser test (`tsc -p tests/types`): the element from querySelector is a GenprmVerifier, and
// its events' details are typed without casts. A type error here fails that test.
import { defineVerifier, type GenprmVerifier, type VerifyResult } from '../../pkg/src/index.ts';

defineVerifier();
const el = document.querySelector('genprm-verifier');
if (el) {
  const pending: Promise<VerifyResult | null> = el.verify();
  void pending;
  el.addEventListener('genprm-done', (e) => {
    const first: number = e.detail.first_error_step;
    void first;
  });
  el.addEventListener('genprm-step', (e) => {
    const correct: boolean | null = e.detail.correct;
    const index: number = e.detail.index;
    void correct, void index;
  });
  el.addEventListener('genprm-error', (e) => {
    const message: string = e.detail.message;
    const stage: 'input' | 'load' | 'python' | 'verify' = e.detail.stage;
    void message, void stage;
  });
  el.addEventListener('genprm-reward', (e) => {
    const value: number = e.detail.reward.value;
    void value;
  });
}
const made: GenprmVerifier = document.createElement('genprm-verifier');
made.show({ complete: true, error: null, steps: [], first_error_step: -1, scores: { min: 0, last: 0, mean: 0 } });
