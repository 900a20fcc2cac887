// present/: what people see: a verification's events reduced to one state (verdicts.ts, the one
// reducer the widget and the demo's panels share) and the <genprm-verifier> element (widget.ts).
// Imports contract/ and api/ (the widget loads models through it), not runtime/ or python/.
//
// Reading a verification for people: its events reduced to what a page shows (each sample's
// rationale, code runs and judgement, each step's verdict, the first wrong step so far), which
// steps the model reached no verdict on, and a summary. The widget and the demo page show the
// same state and say the same thing about it.
import type { CodeRun, Reward, StepVerdict, VerifyEvent, VerifyResult } from '../contract/types.ts';

/** A step whose reward is below this is wrong (the protocol's `first_error_step`). */
export const REWARD_THRESHOLD = 0.5;

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

/** A run of a rationale's text from one source, as it streamed in. */
export interface RationalePart {
  /** The protocol's forced text, the model's own, or a code run's output. */
  source: 'forced' | 'model' | 'code_output';
  text: string;
}

/** One sample's judgement of a step, as far as its events have come. */
export interface SampleProgress {
  /** The rationale in runs of one source; after the official fallback, the forced text that
   *  replaced it (and what followed). */
  rationale: RationalePart[];
  /** The Python runs, with their official outputs. */
  codeRuns: CodeRun[];
  /** Whether the verification was dropped and the judgement forced (the official fallback). */
  fallback: boolean;
  /** The judgement, once made. */
  reward: Reward | null;
}

/** One step of a verification, as far as its events have come. */
export interface StepProgress {
  /** `waiting` (not started), `judging`, `judged` (`verdict` is set), or `stopped` (started, but
   *  the verification ended before its verdict). */
  phase: 'waiting' | 'judging' | 'judged' | 'stopped';
  /** Its samples, each from its first event on. */
  samples: SampleProgress[];
  /** The verdict, once judged. */
  verdict: StepVerdict | null;
  /** Judged wrong: a reward below {@link REWARD_THRESHOLD}. */
  wrong: boolean;
  /** Judged, but the model reached no verdict (see {@link undecided}). */
  undecided: boolean;
}

/** A verification as far as its events have come: the state the widget and the demo page draw. */
export interface VerifyProgress {
  /** One per step of the request. */
  steps: StepProgress[];
  /** The first wrong step (0-based; −1: none): the first judged wrong so far, and the result's
   *  `first_error_step` once the verification has ended. */
  firstError: number;
  /** The result, once the verification has ended (complete or not). */
  result: VerifyResult | null;
}

/** The end of a verification, for {@link reduceVerifyEvent}: its result. */
export interface VerifyFinished {
  event: 'finished';
  result: VerifyResult;
}

/** The progress of a verification of `steps` (the steps, or how many) before its first event. */
export function verifyProgress(steps: number | readonly string[]): VerifyProgress {
  const count = typeof steps === 'number' ? steps : Array.isArray(steps) ? steps.length : NaN;
  if (!Number.isInteger(count) || count < 0) throw new TypeError(`verifyProgress: expected the steps or their count, got ${JSON.stringify(steps)}`);
  const waiting: StepProgress = { phase: 'waiting', samples: [], verdict: null, wrong: false, undecided: false };
  return { steps: Array.from({ length: count }, () => waiting), firstError: -1, result: null };
}

/**
 * The progress after one more event: the one reading of a verification's events (`onEvent`'s,
 * then `{ event: 'finished', result }`) that the widget and the demo page share. Pure: `state`
 * is left as it was, and whatever the event did not change is shared with it, so a view can
 * compare steps, samples and parts by identity to see what changed. Events for steps outside
 * the request are ignored; the result's verdicts win over the streamed ones.
 */
export function reduceVerifyEvent(state: VerifyProgress, e: VerifyEvent | VerifyFinished): VerifyProgress {
  if (e.event === 'finished') {
    const verdicts = new Map(e.result.steps.map((v) => [v.index, v]));
    const steps = state.steps.map((s, i): StepProgress => {
      const v = verdicts.get(i);
      if (v) return judged(s.samples, v);
      return s.phase === 'waiting' ? s : { ...s, phase: 'stopped', verdict: null, wrong: false, undecided: false };
    });
    return { steps, firstError: e.result.first_error_step, result: e.result };
  }
  const index = e.event === 'step_done' ? e.verdict.index : e.step;
  const step = state.steps[index];
  if (!step) return state;
  let next: StepProgress;
  if (e.event === 'step_done') {
    next = judged(step.samples, e.verdict);
  } else {
    const samples = [...step.samples];
    while (samples.length <= e.sample) samples.push({ rationale: [], codeRuns: [], fallback: false, reward: null });
    samples[e.sample] = sampleAfter(samples[e.sample], e);
    next = { ...step, samples, phase: e.event === 'step_started' ? 'judging' : step.phase };
  }
  const steps = state.steps.map((s, i) => (i === index ? next : s));
  return { steps, firstError: state.result ? state.firstError : steps.findIndex((s) => s.wrong), result: state.result };
}

function judged(samples: SampleProgress[], v: StepVerdict): StepProgress {
  return { phase: 'judged', samples, verdict: v, wrong: v.reward < REWARD_THRESHOLD, undecided: undecided(v) };
}

function sampleAfter(s: SampleProgress, e: Exclude<VerifyEvent, { event: 'step_done' }>): SampleProgress {
  switch (e.event) {
    case 'step_started':
      return s;
    case 'text': {
      const last = s.rationale[s.rationale.length - 1];
      const rationale = last?.source === e.source
        ? [...s.rationale.slice(0, -1), { source: e.source, text: last.text + e.text }]
        : [...s.rationale, { source: e.source, text: e.text }];
      return { ...s, rationale };
    }
    case 'fallback':
      return { ...s, rationale: [{ source: 'forced', text: e.text }], fallback: true };
    case 'code_ran':
      return { ...s, codeRuns: [...s.codeRuns, { code: e.code, output: e.output }] };
    case 'judged':
      return { ...s, reward: e.reward };
  }
}

/**
 * What a sample's rationale gained between two of its states, for a view that draws text as it
 * streams in: `continued`, text that continues its last part, and `added`, parts after it; or
 * null when the rationale was replaced (the fallback) and is to be drawn anew.
 */
export function rationaleAppended(before: RationalePart[], after: RationalePart[]): { continued: string; added: RationalePart[] } | null {
  const n = before.length;
  if (n === 0) return { continued: '', added: after };
  if (n > after.length || before.slice(0, -1).some((p, k) => p !== after[k])) return null;
  const last = before[n - 1];
  const now = after[n - 1];
  if (last !== now && (last.source !== now.source || !now.text.startsWith(last.text))) return null;
  return { continued: now.text.slice(last.text.length), added: after.slice(n) };
}
