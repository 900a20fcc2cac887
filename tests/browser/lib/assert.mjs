import { isDeepStrictEqual, inspect } from 'node:util';

export function equal(actual, expected, what = 'value') {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(`${what}: expected ${inspect(expected, { depth: 6 })}, got ${inspect(actual, { depth: 6 })}`);
  }
}

export function ok(cond, what) {
  if (!cond) throw new Error(what);
}

export function close(actual, expected, tol, what) {
  if (!(Math.abs(actual - expected) <= tol)) throw new Error(`${what}: expected ${expected} ± ${tol}, got ${actual}`);
}

/** Thrown by a test that cannot run here (the runner reports it as skipped, with the reason). */
export class Skip extends Error {}
