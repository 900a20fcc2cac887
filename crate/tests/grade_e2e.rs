//! `genprm grade` end to end with the trained tiny GenPRM: JSON Lines and CSV inputs with bad
//! rows, results parsed back, the refusal to overwrite, and kill-and-resume (SIGKILL and
//! SIGINT) giving exactly the file an uninterrupted run writes, no row graded twice.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use genprm::prm::grade::{GradeResult, RowStatus};

fn genprm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genprm")).args(args).output().expect("running genprm")
}

/// The three trained solutions, with their reference labels: (id, problem, steps, label).
fn solutions() -> Vec<(String, String, Vec<String>, i64)> {
    let sols: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(fixtures().join("protocol/e2e.json")).unwrap()).unwrap();
    sols.iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap().to_string();
            let label = if id == "apples" { 1 } else { -1 };
            let steps = s["steps"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
            (id, s["problem"].as_str().unwrap().to_string(), steps, label)
        })
        .collect()
}

fn grade_args<'a>(input: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let model = model_dir("tiny-genprm");
    let mut a: Vec<String> = ["grade", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run_grade(input: &Path, out: &Path, extra: &[&str]) -> (String, String) {
    let a = grade_args(input, out, extra);
    let o = genprm(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "genprm grade failed: {}", String::from_utf8_lossy(&o.stderr));
    (String::from_utf8(o.stdout).unwrap(), String::from_utf8(o.stderr).unwrap())
}

fn results(out: &Path) -> Vec<GradeResult> {
    std::fs::read_to_string(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn check_graded(r: &GradeResult, id: &str, steps: usize, label: i64) {
    assert_eq!(r.status, RowStatus::Graded, "{r:?}");
    assert_eq!(r.id.as_deref().or(r.student_id.as_deref()), Some(id));
    assert_eq!(r.rewards.len(), steps);
    assert_eq!(r.steps.len(), steps);
    assert_eq!(r.first_error_step, Some(label), "{id}");
    assert_eq!(r.label, Some(label));
    assert_eq!(r.agreement, Some(true));
    let scores = r.scores.unwrap();
    assert_eq!(scores.min, r.rewards.iter().copied().fold(f64::INFINITY, f64::min));
    assert_eq!(scores.last, *r.rewards.last().unwrap());
    // The full verdicts: rationales with their code runs from the sandbox.
    assert!(r.steps[0].samples[0].text.starts_with("<analyze>\nLet's analyze the Paragraph 1 step by step: "));
    assert!(!r.steps[0].samples[0].code_runs.is_empty());
}

#[test]
fn jsonl_with_bad_rows_is_graded_and_the_output_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let sols = solutions();
    let mut lines = Vec::new();
    for (i, (id, problem, steps, label)) in sols.iter().enumerate() {
        // The second solution comes as one text, split on blank lines.
        let row = if i == 1 {
            serde_json::json!({"student_id": id, "problem": problem, "solution": steps.join("\n\n"), "label": label})
        } else {
            serde_json::json!({"id": id, "problem": problem, "steps": steps, "label": label})
        };
        lines.push(row.to_string());
        if i == 0 {
            lines.push("{\"id\": \"broken\", \"problem\": \"2+2?\", \"steps\": [\"4\"".into()); // line 2: not JSON
            lines.push(String::new()); // line 3: blank, skipped
            lines.push("{\"id\": \"nothing\", \"problem\": \"2+2?\"}".into()); // line 4: no steps
        }
    }
    let input = dir.path().join("class.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("results.jsonl");
    let (summary, log) = run_grade(&input, &out, &["--greedy"]);
    assert!(log.contains("5 rows in") && log.contains("(2 bad), 0 already graded"), "{log}");
    assert!(log.contains("line 2: bad row: not JSON"), "{log}");
    assert!(summary.contains("5 rows: 3 graded, 2 bad, 0 failed"), "{summary}");
    assert!(summary.contains("bad rows (input lines): 2, 4"), "{summary}");
    assert!(summary.contains("agreement with labels: 3/3 (100.0%)"), "{summary}");
    let rs = results(&out);
    assert_eq!(rs.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 2, 4, 5, 6]);
    check_graded(&rs[0], "add", 2, -1);
    check_graded(&rs[3], "apples", 3, 1);
    check_graded(&rs[4], "times", 1, -1);
    assert_eq!(rs[3].student_id.as_deref(), Some("apples"));
    for (r, needle) in [(&rs[1], "not JSON"), (&rs[2], "missing field: `steps`")] {
        assert_eq!(r.status, RowStatus::BadRow);
        assert!(r.error.as_deref().unwrap().contains(needle), "{r:?}");
        assert!(r.rewards.is_empty() && r.steps.is_empty() && r.first_error_step.is_none());
    }
    assert_eq!(rs[2].id.as_deref(), Some("nothing"));

    // A second run without --resume refuses the file and leaves it as it was.
    let before = std::fs::read(&out).unwrap();
    let a = grade_args(&input, &out, &["--greedy"]);
    let o = genprm(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("results.jsonl") && err.contains("--resume"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    // With --resume there is nothing left to do.
    let (summary, log) = run_grade(&input, &out, &["--greedy", "--resume"]);
    assert!(log.contains("5 already graded") && log.contains("0 to grade"), "{log}");
    assert!(summary.contains("5 rows: 3 graded, 2 bad"), "{summary}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[test]
fn csv_with_a_bad_row_is_graded() {
    let dir = tempfile::tempdir().unwrap();
    let sols = solutions();
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut csv = String::from("student_id,problem,solution,steps,label,comment\n");
    for (i, (id, problem, steps, label)) in sols.iter().enumerate() {
        if i == 2 {
            // A steps column holding a JSON array instead of the text.
            csv += &format!("{id},{},,{},{label},\n", quote(problem), quote(&serde_json::to_string(steps).unwrap()));
        } else {
            csv += &format!("{id},{},{},,{label},a comment\n", quote(problem), quote(&steps.join("\n\n")));
        }
        if i == 0 {
            csv += "s9,,\"6 * 7 = 42.\",,,no problem given\n";
        }
    }
    let input = dir.path().join("class.csv");
    std::fs::write(&input, csv).unwrap();
    let out = dir.path().join("results.jsonl");
    let (summary, _) = run_grade(&input, &out, &["--greedy"]);
    assert!(summary.contains("4 rows: 3 graded, 1 bad"), "{summary}");
    let rs = results(&out);
    // "add" spans lines 2-4 (its solution text has blank lines), the bad row is line 5,
    // "apples" spans 6-10.
    assert_eq!(rs.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 5, 6, 11]);
    check_graded(&rs[0], "add", 2, -1);
    check_graded(&rs[2], "apples", 3, 1);
    check_graded(&rs[3], "times", 1, -1);
    assert_eq!(rs[1].status, RowStatus::BadRow);
    assert_eq!(rs[1].student_id.as_deref(), Some("s9"));
    assert!(rs[1].error.as_deref().unwrap().contains("`problem` is empty"), "{:?}", rs[1]);
}

#[test]
fn output_paths_that_cannot_hold_results_are_named_and_a_closed_stderr_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sols = solutions();
    let input = dir.path().join("class.jsonl");
    let line = |(id, problem, steps, _): &(String, String, Vec<String>, i64)| serde_json::json!({"id": id, "problem": problem, "steps": steps}).to_string();
    std::fs::write(&input, sols.iter().map(line).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let refused = |out: &Path| {
        let a = grade_args(&input, out, &["--greedy"]);
        let o = genprm(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = refused(&dir.path().join("no-such-folder/out.jsonl"));
    assert!(err.contains("the folder") && err.contains("no-such-folder") && err.contains("does not exist") && !err.contains("--resume"), "{err}");
    let err = refused(dir.path());
    assert!(err.contains("is a folder") && !err.contains("--resume"), "{err}");
    // stderr read by a reader that goes away after one line (`2>&1 | head -1`): every row is
    // still graded and the run ends well.
    let out = dir.path().join("results.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_genprm"))
        .args(grade_args(&input, &out, &["--greedy"]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(results(&out).len(), sols.len());
    // Twice to one file: the message says so once, and what to do.
    let err = refused(&out);
    assert!(err.contains("already holds results") && err.contains("--resume") && err.matches("results.jsonl").count() == 1, "{err}");
}

/// An input of `n` rows cycling through the three trained solutions, with one bad row.
fn long_input(dir: &Path, n: usize) -> PathBuf {
    let sols = solutions();
    let mut lines = Vec::new();
    for i in 0..n {
        if i == 3 {
            lines.push("not json at all".to_string());
            continue;
        }
        let (id, problem, steps, label) = &sols[i % sols.len()];
        lines.push(serde_json::json!({"id": format!("{id}-{i}"), "problem": problem, "steps": steps, "label": label}).to_string());
    }
    let path = dir.join("many.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn complete_lines(path: &Path) -> usize {
    std::fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0)
}

fn interrupted_then_resumed(signal: i32) {
    let dir = tempfile::tempdir().unwrap();
    let rows = 12;
    let input = long_input(dir.path(), rows);
    let sampling = ["--seed", "11", "--samples", "2"];
    let reference = dir.path().join("reference.jsonl");
    run_grade(&input, &reference, &sampling);
    let expected = std::fs::read(&reference).unwrap();
    assert_eq!(complete_lines(&reference), rows);

    let out = dir.path().join("interrupted.jsonl");
    let a = grade_args(&input, &out, &sampling);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_genprm"));
    cmd.args(&a).stdout(Stdio::null()).stderr(Stdio::piped());
    // As a terminal's Ctrl-C: the default action even when this test runs in a background job,
    // whose children inherit SIGINT ignored.
    // SAFETY: only an async-signal-safe call between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    // Interrupt as soon as the first row's result is on disk.
    while complete_lines(&out) < 1 {
        assert!(child.try_wait().unwrap().is_none(), "genprm grade ended before its first result");
        assert!(start.elapsed() < Duration::from_secs(300), "no result after 5 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none(), "genprm grade finished before the interruption");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    // Ctrl-C says where the results are and how to continue (SIGKILL cannot be caught).
    if signal == libc::SIGINT {
        assert!(log.contains("interrupted: the rows graded so far are in") && log.contains("--resume"), "{log}");
        assert_eq!(std::os::unix::process::ExitStatusExt::into_raw(status) >> 8, 130, "exit status 130 after SIGINT");
    }
    let kept = complete_lines(&out);
    assert!((1..rows).contains(&kept), "{kept} rows were done before the interruption");
    let done_before: Vec<u8> = std::fs::read(&out).unwrap();

    let mut resume = sampling.to_vec();
    resume.push("--resume");
    let (_, log) = run_grade(&input, &out, &resume);
    assert!(log.contains(&format!("{kept} already graded")) && log.contains(&format!("{} to grade", rows - kept)), "{log}");
    let got = std::fs::read(&out).unwrap();
    // The rows done before the interruption were kept as they were, none was graded again,
    // and the whole file is what the uninterrupted run wrote.
    let complete_prefix = &done_before[..done_before.iter().rposition(|&c| c == b'\n').unwrap() + 1];
    assert!(got.starts_with(complete_prefix));
    let lines: Vec<usize> = results(&out).iter().map(|r| r.line).collect();
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "a row was graded twice: {lines:?}");
    assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(expected).unwrap());
    let rs = results(&out);
    assert_eq!(rs.iter().filter(|r| r.status == RowStatus::BadRow).count(), 1);
    assert!(rs.iter().filter(|r| r.status == RowStatus::Graded).all(|r| r.steps[0].samples.len() == 2));
}

#[test]
fn sigkill_then_resume_writes_the_uninterrupted_file() {
    interrupted_then_resumed(libc::SIGKILL);
}

#[test]
fn sigint_then_resume_writes_the_uninterrupted_file() {
    interrupted_then_resumed(libc::SIGINT);
}
