//! `genprm verify` end to end with a real (tiny, trained) GenPRM-format model: greedy decoding
//! walks analyze → code → execution in the sandbox → output → reward, on every device.

mod common;

use std::process::{Command, Output};

use common::*;
use serde::Deserialize;

fn genprm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genprm")).args(args).output().expect("running genprm")
}

#[derive(Deserialize)]
struct ExpectedStep {
    text: String,
    code_outputs: Vec<String>,
    judgement: String,
}

#[derive(Deserialize)]
struct ExpectedSolution {
    id: String,
    steps: Vec<ExpectedStep>,
    first_error_step: i64,
}

fn expected_e2e() -> Vec<ExpectedSolution> {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("protocol/e2e_expected.json")).unwrap()).unwrap()
}

fn verify_json(extra: &[&str]) -> Vec<serde_json::Value> {
    let model = model_dir("tiny-genprm");
    let input = fixtures().join("protocol/e2e.json");
    let mut args = vec!["verify", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = genprm(&args);
    assert!(out.status.success(), "genprm verify failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn check_against_expected(results: &[serde_json::Value], what: &str) {
    let expected = expected_e2e();
    assert_eq!(results.len(), expected.len());
    for (got, exp) in results.iter().zip(&expected) {
        assert_eq!(got["id"], exp.id.as_str());
        assert_eq!(got["complete"], true);
        assert_eq!(got["first_error_step"], exp.first_error_step, "{what}: {}", exp.id);
        let steps = got["steps"].as_array().unwrap();
        assert_eq!(steps.len(), exp.steps.len());
        for (k, (s, e)) in steps.iter().zip(&exp.steps).enumerate() {
            let sample = &s["samples"][0];
            assert_eq!(sample["text"], e.text.as_str(), "{what}: {} paragraph {}", exp.id, k + 1);
            let outputs: Vec<&str> = sample["code_runs"].as_array().unwrap().iter().map(|r| r["output"].as_str().unwrap()).collect();
            assert_eq!(outputs, e.code_outputs, "{what}: code outputs come from the sandbox");
            assert_eq!(sample["reward"]["judgement"], e.judgement.as_str());
            let reward = s["reward"].as_f64().unwrap();
            if e.judgement == "Yes" {
                assert!(reward > 0.99, "{what}: {} paragraph {} reward {reward}", exp.id, k + 1);
            } else {
                assert!(reward < 0.01, "{what}: {} paragraph {} reward {reward}", exp.id, k + 1);
            }
            assert_eq!(sample["fallback"], false);
        }
    }
}

#[test]
fn greedy_verification_walks_the_whole_protocol_on_every_device() {
    for (kind, _) in devices() {
        let kind = kind.to_string();
        let results = verify_json(&["--greedy", "--device", &kind]);
        check_against_expected(&results, &kind);
        // The two-round rationale ran two code blocks.
        let times = results.iter().find(|r| r["id"] == "times").unwrap();
        assert_eq!(times["steps"][0]["samples"][0]["code_runs"].as_array().unwrap().len(), 2);
        // Namespaces persist across paragraphs: "apples" paragraph 2 uses `start` from paragraph 1.
        let apples = results.iter().find(|r| r["id"] == "apples").unwrap();
        assert_eq!(apples["steps"][1]["samples"][0]["code_runs"][0]["code"], "total = start + 4\nprint(total)");
    }
}

#[test]
fn sampled_verification_is_seeded_and_official_rewards_are_exact() {
    let a = verify_json(&["--seed", "3"]);
    let b = verify_json(&["--seed", "3"]);
    assert_eq!(a, b, "same seed, same output");
    check_against_expected(&a, "sampled");
    // At T 0.6 / top-p 0.95 the other answer is outside the nucleus: official rewards are 0 or 1.
    for r in &a {
        for s in r["steps"].as_array().unwrap() {
            let v = s["reward"].as_f64().unwrap();
            assert!(v == 0.0 || v == 1.0, "{v}");
        }
    }
    // Maj@3 with per-path histories: three rationales per paragraph, rewards averaged.
    let m = verify_json(&["--seed", "3", "--samples", "3", "--reward", "calibrated"]);
    check_against_expected(&m, "maj@3");
    for r in &m {
        for s in r["steps"].as_array().unwrap() {
            assert_eq!(s["samples"].as_array().unwrap().len(), 3);
        }
    }
}

#[test]
fn readable_report_streams_the_rationale() {
    let model = model_dir("tiny-genprm");
    let input = fixtures().join("protocol/e2e.json");
    let out = genprm(&["verify", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--greedy"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("── Paragraph 2 ──"));
    assert!(text.contains("[Code Output]\n\n```\n7\n```"));
    assert!(text.contains("Paragraph 2: ✗ wrong"));
    assert!(text.contains("first wrong paragraph: 2"));
}

#[test]
fn bad_input_files_are_reported_before_any_work() {
    let model = model_dir("tiny-genprm");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("{\"problem\": \"p\",\n  \"steps\": [\"a\",,]}", "line 2"),
        ("{\"problem\": \"p\", \"steps\": [\"a\"], \"answer\": 3}", "unknown field `answer`"),
        ("{\"problem\": \"p\", \"steps\": []}", "`steps` is empty"),
        ("[{\"problem\": \"p\", \"steps\": [\"a\"]}, {\"problem\": \"q\"}]", "record 1"),
    ];
    for (i, (content, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.json"));
        std::fs::write(&path, content).unwrap();
        let out = genprm(&["verify", "--model", model.to_str().unwrap(), "--input", path.to_str().unwrap(), "--json"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle) && err.contains(&format!("bad{i}.json")), "{content}\n-> {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn critic_mode_asks_a_qwen2_policy_to_refine_from_the_first_wrong_paragraph() {
    use genprm::generate::block_on;
    use genprm::prm::{self, Solution, VerifyOptions, critic};
    use genprm::{LocalEngine, Sampling};

    let device = genprm::device(genprm::DeviceKind::Cpu).unwrap();
    let prm_model = load("tiny-genprm", &device);
    let tok = prm_model.tokenizer().unwrap();
    let mut engine = LocalEngine::new(&prm_model.model, tok).unwrap();
    let mut execs = vec![genprm::exec::native::PythonSandbox::new(Default::default()).unwrap()];
    let sol = Solution::new(
        "Tom has 3 apples and buys 4 more. How many apples does he have?",
        vec!["Tom starts with 3 apples.".into(), "He buys 4 more, so he has 3 + 4 = 8 apples.".into(), "The answer is 8.".into()],
    );
    let opts = VerifyOptions { sampling: Sampling::Greedy, stop_at_first_error: true, ..Default::default() };
    let v = block_on(prm::verify(&mut engine, tok, &mut execs, &sol, &opts, &mut |_| {})).unwrap();
    assert_eq!(v.first_error_step, 1);

    // Any Qwen2 checkpoint can be the policy; here the random one with the real tokenizer.
    let policy = load("tiny-real-vocab", &device);
    let ptok = policy.tokenizer().unwrap();
    let mut pengine = LocalEngine::new(&policy.model, ptok).unwrap();
    let r = block_on(critic::refine(&mut pengine, ptok, &sol, &v, critic::policy_sampling(1), 6, &mut |_| {})).unwrap();
    assert_eq!(r.error_step, Some(1));
    assert_eq!(r.critique.as_deref(), Some("The paragraph claims 3 + 4 = 8, but 3 + 4 is 7. This is an error."));
    assert!(!r.solution.is_empty());
}

#[test]
fn processbench_eval_scores_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let sols: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(fixtures().join("protocol/e2e.json")).unwrap()).unwrap();
    let labels = [("add", -1), ("apples", 1), ("times", -1)];
    let records: Vec<serde_json::Value> = sols
        .iter()
        .map(|s| {
            let label = labels.iter().find(|(id, _)| *id == s["id"]).unwrap().1;
            serde_json::json!({"id": s["id"], "generator": "test", "problem": s["problem"], "steps": s["steps"], "final_answer_correct": label == -1, "label": label})
        })
        .collect();
    std::fs::write(dir.path().join("math.json"), serde_json::to_string(&records[..2]).unwrap()).unwrap();
    std::fs::write(dir.path().join("gsm8k.json"), serde_json::to_string(&records[2..]).unwrap()).unwrap();
    let out = dir.path().join("preds.jsonl");
    let model = model_dir("tiny-genprm");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "eval", "processbench", "--model", model.to_str().unwrap(), "--data", dir.path().to_str().unwrap(),
            "--subset", "gsm8k,math", "--out", out.to_str().unwrap(), "--greedy", "--style", "card",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        let o = genprm(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (String::from_utf8(o.stdout).unwrap(), String::from_utf8(o.stderr).unwrap())
    };
    let (table, log) = run(&[]);
    assert!(log.contains("3 records, 0 already"), "{log}");
    assert!(table.contains("| math | 2 | 100.0 | 100.0 | 100.0 |"), "{table}");
    assert!(table.contains("| gsm8k | 1 | 0.0 | 100.0 | 0.0 |"), "only a correct record: acc_err 0, F1 0\n{table}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);
    // Stopping at the first error: apples has 2 judged paragraphs.
    let preds: Vec<serde_json::Value> = std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let apples = preds.iter().find(|p| p["id"] == "apples").unwrap();
    assert_eq!(apples["prediction"], 1);
    assert_eq!(apples["rewards"].as_array().unwrap().len(), 2);
    // A rerun judges nothing again; a torn last line is judged again.
    let (table2, log) = run(&[]);
    assert!(log.contains("3 already") && log.contains("0 to judge"), "{log}");
    assert_eq!(table2, table);
    let text = std::fs::read_to_string(&out).unwrap();
    let cut = text.trim_end().rfind('\n').unwrap() + 10;
    std::fs::write(&out, &text[..cut]).unwrap();
    let (table3, log) = run(&[]);
    assert!(log.contains("2 already") && log.contains("1 to judge"), "{log}");
    assert_eq!(table3, table);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);
}

#[test]
fn refine_command_critiques_and_asks_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let sol = dir.path().join("apples.txt");
    std::fs::write(&sol, "Tom starts with 3 apples.\n\nHe buys 4 more, so he has 3 + 4 = 8 apples.\n\nThe answer is 8.\n").unwrap();
    let out = genprm(&[
        "refine", "--model", model_dir("tiny-genprm").to_str().unwrap(), "--policy", model_dir("tiny-real-vocab").to_str().unwrap(),
        "--problem", "Tom has 3 apples and buys 4 more. How many apples does he have?", "--solution", sol.to_str().unwrap(),
        "--rounds", "1", "--max-tokens", "8", "--greedy",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("round 1: paragraph 2 judged wrong — The paragraph claims 3 + 4 = 8, but 3 + 4 is 7. This is an error."), "{text}");
}

#[test]
fn the_terminal_never_receives_control_characters_from_the_text() {
    // A student's paragraph carrying an OSC 52 clipboard write, a screen clear and a bell.
    let model = model_dir("tiny-genprm");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hostile.json");
    let step = "2 + 3 = 5.\u{1b}]52;c;cHduZWQ=\u{7}\u{1b}[2J\u{9b}31m";
    std::fs::write(&input, serde_json::json!({"problem": "What is 2 + 3?", "steps": [step]}).to_string()).unwrap();
    let out = genprm(&["verify", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--greedy"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("2 + 3 = 5.]52;c;cHduZWQ=[2J31m"), "{text}");
    assert!(!text.chars().any(|c| c.is_control() && c != '\n' && c != '\t'), "{text:?}");
}
