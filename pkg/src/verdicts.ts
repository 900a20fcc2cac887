// Reading a verification's verdicts for people: which steps the model reached no verdict on.
// The widget and the demo page say the same thing about them.
import type { StepVerdict, VerifyResult } from './types.ts';

/**
 * Whether the model reached no verdict on a step: every sample's reward is the neutral 0.5
 * given when its text holds no `\boxed{Yes}` or `\boxed{No}` (or no log-probability for it;
 * the reward's `note` says which). Such a step is not "correct": nobody checked it.
 */
export function undecided(v: StepVerdict): boolean {
  return v.samples.length > 0 && v.samples.every((s) => s.reward.note != null);
}

/** The steps (0-based) of a result on which the model reached no verdict. */
export function undecidedSteps(result: VerifyResult): number[] {
  return result.steps.filter(undecided).map((v) => v.index);
}

/** "step 2", "steps 2 and 3", "steps 1, 2 and 4" (1-based, from 0-based indices). */
export function stepList(indices: number[]): string {
  const n = indices.map((i) => String(i + 1));
  if (n.length <= 1) return `step ${n.join('')}`;
  return `steps ${n.slice(0, -1).join(', ')} and ${n[n.length - 1]}`;
}

/**
 * One sentence on a finished result for people, or null when no step was judged: the first
 * wrong step, or that none was found, saying plainly which steps got no verdict (a tutoring
 * page must not answer "every step looks right" for steps nobody judged).
 */
export function summaryText(result: VerifyResult): string | null {
  if (result.first_error_step >= 0) return `Step ${result.first_error_step + 1} looks wrong.`;
  if (result.steps.length === 0) return null;
  const open = undecidedSteps(result);
  if (open.length === result.steps.length) {
    return `The model reached no verdict on ${open.length === 1 ? 'the step' : 'any step'}: check ${open.length === 1 ? 'it' : 'them'} yourself.`;
  }
  if (open.length > 0) {
    return `No step looks wrong, but the model reached no verdict on ${stepList(open)}: check ${open.length === 1 ? 'it' : 'them'} yourself.`;
  }
  return result.complete ? 'Every step looks right.' : 'The steps checked look right.';
}
