// GenPRM's protocol defaults, as the Rust library has them: the demo, the grading page and the
// widget take them from here. A unit test of the library (crate/src/prm/mod.rs, browser_defaults) reads this file
// and fails when a value differs from the library's, so the two cannot drift.

/** GenPRM's sampling temperature (the official inference setting; Rust `sampling::GENPRM_TEMPERATURE`). */
export const GENPRM_TEMPERATURE = 0.6;

/** GenPRM's top-k (Rust `sampling::GENPRM_TOP_K`). */
export const GENPRM_TOP_K = 20;

/** GenPRM's top-p (Rust `sampling::GENPRM_TOP_P`). */
export const GENPRM_TOP_P = 0.95;

/** The official limit on one run of the model's Python, in seconds (Rust `exec::TIME_LIMIT_SECS`). */
export const TIME_LIMIT_SECS = 5;

/** The most samples (Maj@N) the browser module verifies a step with: it refuses more
 *  (`samples` outside 1..=MAX_SAMPLES, crate/src/wasm/mod.rs). */
export const MAX_SAMPLES = 64;
