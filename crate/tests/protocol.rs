//! The GenPRM protocol: exact prompts against the official template rendering (computed by
//! transformers in `scripts/gen_fixtures.py`), and the step loop against a scripted model that
//! walks every branch: normal, three code rounds then the fallback, the budget fallback, no
//! decision, code errors, timeouts, a fallback that never ends, the modes, and Maj@N histories.

mod common;

use std::collections::VecDeque;

use common::scripted::*;
use common::*;
use genprm::exec::native::{PythonSandbox, SandboxConfig};
use genprm::exec::{CodeExecutor, ExecOutcome};
use genprm::generate::block_on;
use genprm::prm::{
    self, Event, History, Judgement, Mode, PromptStyle, RewardMode, Solution, VerifyOptions, analyze_prefix, step_prompt,
};
use genprm::{Sampling, Tokenizer};
use serde::Deserialize;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(&fixtures().join("tokenizer")).unwrap()
}

#[derive(Deserialize)]
struct PromptCase {
    problem: String,
    steps: Vec<String>,
    history: Vec<String>,
    style: String,
    step: usize,
    text: String,
    ids: Vec<u32>,
}

#[test]
fn prompts_equal_the_official_rendering_for_processbench_records() {
    let tok = tokenizer();
    let cases: Vec<PromptCase> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("protocol/prompts.json")).unwrap()).unwrap();
    assert!(cases.len() >= 20);
    for c in &cases {
        let style = if c.style == "card" { PromptStyle::Card } else { PromptStyle::ProcessBench };
        let opts = VerifyOptions { style, ..Default::default() };
        let sol = Solution::new(c.problem.clone(), c.steps.clone());
        let text = step_prompt(&tok, &sol, &c.history, c.step, &opts).unwrap() + &analyze_prefix(c.step + 1);
        assert_eq!(text, c.text, "{} step {}", c.style, c.step);
        let ids = tok.encode(&text, false).unwrap();
        assert_eq!(ids, c.ids, "{} step {}", c.style, c.step);
        assert_eq!(ids.iter().filter(|&&i| i == 151646).count(), 1, "one BOS");
    }
}

/// A fake executor that returns scripted outcomes and records the code it was given.
#[derive(Default)]
struct FakeExec {
    outcomes: VecDeque<ExecOutcome>,
    ran: Vec<String>,
    resets: usize,
}

impl CodeExecutor for FakeExec {
    async fn run(&mut self, code: &str) -> ExecOutcome {
        self.ran.push(code.to_string());
        self.outcomes.pop_front().unwrap_or(ExecOutcome::Ok { stdout: String::new() })
    }
    async fn reset(&mut self) {
        self.resets += 1;
    }
}

const ANALYSIS: &str = "The sum 2 + 3 is computed correctly.\n</analyze>\n";
const CODE: &str = "print(2 + 3)\n```\n";
const YES_END: &str = "The code confirms it.\n</verify>\n<output>\n**Judgement**: $\\boxed{Yes}$\n</output>\n";

fn one_step() -> Solution {
    Solution::new("What is 2 + 3?", vec!["2 + 3 = 5.".into()])
}

fn run(engine: &Scripted, exec: &mut FakeExec, sol: &Solution, opts: &VerifyOptions) -> prm::Verification {
    let tok = tokenizer();
    block_on(prm::verify(engine, &tok, std::slice::from_mut(exec), sol, opts, &mut |_| {})).unwrap()
}

#[test]
fn normal_path_analyze_code_output() {
    let engine = Scripted::new(vec![reply(ANALYSIS), reply(CODE), reply(YES_END)]);
    let mut exec = FakeExec { outcomes: [ExecOutcome::Ok { stdout: "5\n".into() }].into(), ..Default::default() };
    let sol = one_step();
    let v = run(&engine, &mut exec, &sol, &VerifyOptions::default());
    let tok = tokenizer();
    let prompt = step_prompt(&tok, &sol, &[], 0, &VerifyOptions::default()).unwrap();
    let a = analyze_prefix(1);
    let r = &engine.requests.borrow();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].0, format!("{prompt}{a}"));
    assert_eq!((r[0].1, r[0].2.clone()), (2048, vec!["</analyze>\n".to_string()]));
    let cur = format!("{a}{ANALYSIS}{}", prm::VERIFY_PREFIX);
    assert_eq!(r[1].0, format!("{prompt}{cur}"));
    assert_eq!(r[1].2, vec!["\n```\n".to_string(), "</output>\n".to_string()]);
    assert_eq!(r[1].1, 2048 - tok.encode(&cur, false).unwrap().len(), "budget counts only the assistant side");
    let cur = format!("{cur}{CODE}[Code Output]\n\n```\n5\n```\n");
    assert_eq!(r[2].0, format!("{prompt}{cur}"));
    assert_eq!(exec.ran, vec!["print(2 + 3)"]);
    assert_eq!(exec.resets, 1);
    let s = &v.steps[0].samples[0];
    assert_eq!(s.text, format!("{cur}{YES_END}"));
    assert_eq!(s.reward.judgement, Some(Judgement::Yes));
    let expected = 1.0 / (1.0 + (-(2.0f64 / 0.6)).exp());
    assert!((s.reward.value - expected).abs() < 1e-5, "{:?}", s.reward);
    assert!(!s.fallback);
    assert_eq!(v.first_error_step, -1);
}

#[test]
fn three_code_rounds_then_the_fallback() {
    let more_code = "Let me check again:\n```python\nprint(5)\n```\n";
    let engine = Scripted::new(vec![
        reply(ANALYSIS),
        reply(CODE),
        reply(more_code),
        reply(more_code),
        reply("{No}$\n</output>\n"),
    ]);
    let mut exec = FakeExec::default();
    let sol = one_step();
    let v = run(&engine, &mut exec, &sol, &VerifyOptions::default());
    assert_eq!(engine.requests.borrow().len(), 5);
    assert_eq!(exec.ran.len(), 3, "three executions, then no more");
    let a = analyze_prefix(1);
    let forced = format!("{a}{}</analyze>\n{}", "The sum 2 + 3 is computed correctly.\n", prm::OUTPUT_PREFIX);
    let last = &engine.requests.borrow()[4];
    assert!(last.0.ends_with(&forced), "fallback drops the verify section: {}", last.0);
    assert_eq!((last.1, last.2.clone()), (20, vec!["</output>\n".to_string()]));
    let s = &v.steps[0].samples[0];
    assert!(s.fallback);
    assert_eq!(s.text, format!("{forced}{{No}}$\n</output>\n"));
    assert_eq!(s.reward.judgement, Some(Judgement::No));
    assert!(s.reward.value < 0.5);
    assert_eq!(v.first_error_step, 0);
}

#[test]
fn budget_exhaustion_falls_back_at_once() {
    let engine = Scripted::new(vec![reply(ANALYSIS), reply("{Yes}$\n</output>\n")]);
    let mut exec = FakeExec::default();
    let opts = VerifyOptions { step_budget: 10, ..Default::default() };
    let v = run(&engine, &mut exec, &one_step(), &opts);
    assert_eq!(engine.requests.borrow().len(), 2);
    assert_eq!(engine.requests.borrow()[0].1, 10);
    assert!(v.steps[0].samples[0].fallback);
    assert!(exec.ran.is_empty());
}

#[test]
fn no_decision_gives_a_neutral_reward() {
    let engine = Scripted::new(vec![reply(ANALYSIS), reply("I cannot decide.\n</verify>\n<output>\nunsure\n</output>\n")]);
    let mut exec = FakeExec::default();
    let v = run(&engine, &mut exec, &one_step(), &VerifyOptions::default());
    let r = &v.steps[0].samples[0].reward;
    assert_eq!((r.value, r.judgement), (0.5, None));
    assert!(r.note.is_some());
}

#[test]
fn a_fallback_that_never_finishes_is_capped() {
    let engine = Scripted::new(vec![
        reply(ANALYSIS),
        reply(CODE),
        reply(CODE),
        reply(CODE),
        reply("{Ye"), // fallback 1: budget of 20 ran out
        reply("{Ye"), // fallback 2: give up
    ]);
    let mut exec = FakeExec::default();
    let v = run(&engine, &mut exec, &one_step(), &VerifyOptions::default());
    assert_eq!(engine.requests.borrow().len(), 6);
    let s = &v.steps[0].samples[0];
    assert!(s.fallback);
    assert_eq!(s.reward.value, 0.5);
}

#[test]
fn code_errors_and_timeouts_reach_the_model_with_the_official_text() {
    let sandbox = PythonSandbox::new(SandboxConfig::default()).expect("python3");
    let mut execs = vec![sandbox];
    let engine = Scripted::new(vec![
        reply(ANALYSIS),
        reply("print(1/0)\n```\n"),
        reply("Again:\n```python\nwhile True:\n    pass\n```\n"),
        reply("Once more:\n```python\nprint(undefined_name)\n```\n"),
        reply("{No}$\n</output>\n"),
    ]);
    let tok = tokenizer();
    let mut outputs = Vec::new();
    let v = block_on(prm::verify(&engine, &tok, &mut execs, &one_step(), &VerifyOptions::default(), &mut |e| {
        if let Event::CodeRan { output, .. } = e {
            outputs.push(output.to_string());
        }
    }))
    .unwrap();
    assert_eq!(
        outputs,
        vec![
            "Code execute Error: ZeroDivisionError: division by zero",
            "Code execute time out: Code execution timed out",
            "Code execute Error: NameError: name 'undefined_name' is not defined",
        ]
    );
    assert!(engine.requests.borrow()[2].0.ends_with("[Code Output]\n\n```\nCode execute Error: ZeroDivisionError: division by zero\n```\n"));
    assert!(v.steps[0].samples[0].fallback);
}

#[test]
fn no_code_block_is_reported_as_the_official_format_error() {
    // The model stops at a fence that closes no python block.
    let engine = Scripted::new(vec![reply(ANALYSIS), reply("Nothing to run.\n```\n"), reply(YES_END)]);
    let mut exec = FakeExec::default();
    // VERIFY_PREFIX opens a python block, so the text does hold one; a code-only prompt without it would not.
    let v = run(&engine, &mut exec, &one_step(), &VerifyOptions::default());
    assert_eq!(v.steps[0].samples[0].code_runs[0].code.as_deref(), Some("Nothing to run."));
    assert_eq!(genprm::exec::last_python_block("no fences at all\n```\n"), None);
    assert_eq!(genprm::exec::NO_CODE_FOUND, "Code format error: No code found.");
}

#[test]
fn cot_only_and_code_only_modes() {
    let engine = Scripted::new(vec![reply(ANALYSIS), reply("{Yes}$\n</output>\n")]);
    let mut exec = FakeExec::default();
    let opts = VerifyOptions { mode: Mode::Cot, ..Default::default() };
    run(&engine, &mut exec, &one_step(), &opts);
    let a = analyze_prefix(1);
    assert!(engine.requests.borrow()[1].0.ends_with(&format!("{a}{ANALYSIS}{}", prm::OUTPUT_PREFIX)));
    assert_eq!(engine.requests.borrow()[1].2, vec!["</output>\n".to_string()]);

    let engine = Scripted::new(vec![reply(CODE), reply(YES_END)]);
    let mut exec = FakeExec::default();
    let opts = VerifyOptions { mode: Mode::Code, ..Default::default() };
    let v = run(&engine, &mut exec, &one_step(), &opts);
    assert!(engine.requests.borrow()[0].0.ends_with(&format!("<｜Assistant｜>{}", prm::VERIFY_PREFIX)));
    assert_eq!(exec.ran, vec!["print(2 + 3)"]);
    assert!(v.steps[0].samples[0].text.starts_with(prm::VERIFY_PREFIX));

    // Execution off: the official code appends an empty `[Code Output]` opening.
    let engine = Scripted::new(vec![reply(ANALYSIS), reply(CODE), reply(YES_END)]);
    let mut exec = FakeExec::default();
    let opts = VerifyOptions { execute: false, ..Default::default() };
    run(&engine, &mut exec, &one_step(), &opts);
    assert_eq!(engine.requests.borrow()[1].2, vec!["</output>\n".to_string()]);
    assert!(engine.requests.borrow()[2].0.ends_with(&format!("{CODE}[Code Output]\n\n```\n")));
    assert!(exec.ran.is_empty());
}

#[test]
fn maj_at_n_averages_and_keeps_per_path_or_shared_histories() {
    let sol = Solution::new("What is 2 + 3?", vec!["2 + 3 = 5.".into(), "So the answer is 5.".into()]);
    let yes = |k: u32| reply(&format!("path {k}\n</analyze>\n"));
    let verdict = |v: &str, y: f32, n: f32| Reply { text: format!("ok\n</verify>\n<output>\n**Judgement**: $\\boxed{{{v}}}$\n</output>\n"), yes_no: (y, n) };
    let script = vec![
        yes(0), verdict("Yes", 2.0, 1.0), // step 0, sample 0
        yes(1), verdict("No", 1.5, 2.0),  // step 0, sample 1
        yes(2), verdict("Yes", 2.0, 1.0), // step 1, sample 0
        yes(3), verdict("Yes", 2.0, 1.0), // step 1, sample 1
    ];
    for history in [History::PerPath, History::Shared] {
        let engine = Scripted::new(script.clone());
        let mut execs: Vec<FakeExec> = (0..2).map(|_| FakeExec::default()).collect();
        let opts = VerifyOptions { samples: 2, history, ..Default::default() };
        let tok = tokenizer();
        let v = block_on(prm::verify(&engine, &tok, &mut execs, &sol, &opts, &mut |_| {})).unwrap();
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let p = sig(1.0 / 0.6);
        assert!((v.steps[0].reward - (p + sig(-0.5 / 0.6)) / 2.0).abs() < 1e-6, "mean of the two samples");
        assert_eq!(v.steps[0].samples.len(), 2);
        assert!((v.steps[1].reward - p).abs() < 1e-6);
        assert_eq!(v.first_error_step, -1);
        // Step 1, sample 1 sees its own path's step-0 rationale, or sample 0's when shared.
        let prompt_s1 = &engine.requests.borrow()[6].0;
        match history {
            History::PerPath => {
                assert!(prompt_s1.contains("path 1") && !prompt_s1.contains("path 0"));
                assert_eq!(engine.requests.borrow()[6].3, 1, "own KV cache");
                assert_eq!(execs[1].resets, 1);
            }
            History::Shared => {
                assert!(prompt_s1.contains("path 0") && !prompt_s1.contains("path 1"));
                // Its own KV-cache row still, so the samples can decode as one batch.
                assert_eq!(engine.requests.borrow()[6].3, 1);
            }
        }
    }
}

#[test]
fn stop_at_first_error_skips_later_paragraphs() {
    let sol = Solution::new("P", vec!["a".into(), "b".into(), "c".into()]);
    let engine = Scripted::new(vec![reply(ANALYSIS), reply("x\n</verify>\n<output>\n**Judgement**: $\\boxed{No}$\n</output>\n")]);
    let mut exec = FakeExec::default();
    let opts = VerifyOptions { stop_at_first_error: true, ..Default::default() };
    let v = run(&engine, &mut exec, &sol, &opts);
    assert_eq!(v.steps.len(), 1);
    assert_eq!(v.first_error_step, 0);
}

#[test]
fn history_holds_full_rationales_with_code_and_outputs() {
    let sol = Solution::new("What is 2 + 3?", vec!["2 + 3 = 5.".into(), "Done.".into()]);
    let engine = Scripted::new(vec![reply(ANALYSIS), reply(CODE), reply(YES_END), reply(ANALYSIS), reply(YES_END)]);
    let mut exec = FakeExec { outcomes: [ExecOutcome::Ok { stdout: "5".into() }].into(), ..Default::default() };
    let v = run(&engine, &mut exec, &sol, &VerifyOptions::default());
    let first = &v.steps[0].samples[0].text;
    assert!(first.contains("[Code Output]\n\n```\n5\n```\n"));
    let step2 = &engine.requests.borrow()[3].0;
    assert!(step2.contains(&format!("<｜Assistant｜>{first}<｜end▁of▁sentence｜><｜User｜>Done.<｜Assistant｜>")), "{step2}");
}

#[test]
fn calibrated_rewards_and_greedy() {
    let engine = Scripted::new(vec![reply(ANALYSIS), Reply { text: YES_END.into(), yes_no: (9.0, 1.0) }]);
    let mut exec = FakeExec::default();
    let opts = VerifyOptions { reward: RewardMode::Calibrated, sampling: Sampling::Greedy, ..Default::default() };
    // The reply stops at </output>: no code, so one verify call after the analysis.
    let v = run(&engine, &mut exec, &one_step(), &opts);
    let r = &v.steps[0].samples[0].reward;
    assert!((r.value - 1.0 / (1.0 + (-8.0f64).exp())).abs() < 1e-9);
    // Greedy requests get unprocessed log-probabilities (as vLLM at temperature 0): the official
    // formula then equals the calibrated one.
    let engine = Scripted::new(vec![reply(ANALYSIS), Reply { text: YES_END.into(), yes_no: (9.0, 1.0) }]);
    let v = run(&engine, &mut exec, &one_step(), &VerifyOptions { reward: RewardMode::Official, ..opts.clone() });
    assert!((v.steps[0].samples[0].reward.value - r.value).abs() < 1e-6);
    // Sampled at T 0.6 with top-p 0.95, No falls outside the nucleus: exactly 1.
    let engine = Scripted::new(vec![reply(ANALYSIS), Reply { text: YES_END.into(), yes_no: (9.0, 1.0) }]);
    let v = run(&engine, &mut exec, &one_step(), &VerifyOptions::default());
    assert_eq!(v.steps[0].samples[0].reward.value, 1.0);
}

#[test]
fn the_real_engine_reports_context_overflow_as_bad_input_and_keeps_judged_steps() {
    // tiny-real-vocab has the real tokenizer; shrink its context so paragraph 2 cannot fit.
    let tmp = scratch_copy("tiny-real-vocab");
    let cfg = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"max_position_embeddings\": 4096", "\"max_position_embeddings\": 150");
    std::fs::write(&cfg, text).unwrap();
    let m = genprm::LoadedModel::load(tmp.path(), &genprm::device(genprm::DeviceKind::Cpu).unwrap(), |_| {}).unwrap();
    let tok = m.tokenizer().unwrap();
    let engine = genprm::LocalEngine::new(&m.model, tok).unwrap();
    let mut execs = vec![FakeExec::default()];
    let long = "word ".repeat(200);
    let sol = Solution::new("P", vec!["short".into(), long]);
    let opts = VerifyOptions { sampling: Sampling::Greedy, step_budget: 8, fallback_tokens: 2, max_fallbacks: 1, ..Default::default() };
    let err = block_on(prm::verify(&engine, tok, &mut execs, &sol, &opts, &mut |_| {})).unwrap_err();
    assert_eq!(err.completed.steps.len(), 1, "paragraph 1 was judged and is kept");
    let msg = err.error.to_string();
    assert!(msg.contains("paragraph 2") && msg.contains("context"), "{msg}");
}

#[test]
fn a_verification_with_nothing_judged_scores_neutral() {
    let v = prm::Verification::from_steps(Vec::new());
    assert_eq!(v.first_error_step, -1);
    assert_eq!((v.scores.min, v.scores.last, v.scores.mean), (0.5, 0.5, 0.5));
}
