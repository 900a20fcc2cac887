//! The OpenAI-compatible remote backend against a real server: llama-cpp-python's server on
//! 127.0.0.1 serving the tiny GenPRM as GGUF (`tests/fixtures/models/tiny-genprm-gguf`, made by
//! `scripts/gen-gguf` with llama.cpp's own converter). `scripts/test` installs the server and sets
//! GENPRM_LLAMA_PYTHON; `GENPRM_TEST_REMOTE=skip` skips these tests on a machine without it.
//!
//! What must hold: with greedy decoding and the prompt sent as the local tokenizer's ids, the
//! server's model walks the protocol exactly as the local engine does (same rationales, code runs,
//! judgements, first wrong paragraph), and its rewards agree to float precision (llama.cpp
//! computes the same f32 model with other kernels, so logits differ in the last bits).

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> Option<PathBuf> {
    if std::env::var("GENPRM_TEST_REMOTE").is_ok_and(|v| v == "skip") {
        eprintln!("GENPRM_TEST_REMOTE=skip: the remote-backend test is skipped");
        return None;
    }
    let default = std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache/genprm/llama-venv/bin/python")).ok();
    let path = std::env::var("GENPRM_LLAMA_PYTHON").map(PathBuf::from).ok().or(default).filter(|p| p.exists());
    Some(path.expect(
        "llama-cpp-python's server is not installed: run scripts/test (it installs it into ~/.cache/genprm/llama-venv), \
         point GENPRM_LLAMA_PYTHON at a python that has it, or set GENPRM_TEST_REMOTE=skip",
    ))
}

fn start_server(python: &PathBuf) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gguf = fixtures().join("models/tiny-genprm-gguf/tiny-genprm-f32.gguf");
    let log = std::fs::File::create(std::env::temp_dir().join(format!("genprm-llama-server-{port}.log"))).unwrap();
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model", gguf.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_ctx", "2048", "--logits_all", "true", "--n_threads", "1", "--verbose", "false"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting llama_cpp.server");
    let server = Server { child, url: format!("http://127.0.0.1:{port}") };
    let start = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Listening; the model is loaded before the port opens.
            return server;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "llama_cpp.server did not start in 2 minutes");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn genprm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genprm")).args(args).output().expect("running genprm")
}

fn verify_json(extra: &[&str]) -> Vec<serde_json::Value> {
    let model = model_dir("tiny-genprm");
    let input = fixtures().join("protocol/e2e.json");
    let mut args = vec!["verify", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--json", "--greedy"];
    args.extend_from_slice(extra);
    let out = genprm(&args);
    assert!(out.status.success(), "genprm verify {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn greedy_verification_through_a_llama_cpp_server_equals_the_local_engine() {
    let Some(python) = python() else { return };
    let server = start_server(&python);
    let local = verify_json(&[]);
    for concurrency in ["1", "2"] {
        // llama-cpp-python takes text only and adds the BOS itself.
        let remote = verify_json(&["--backend", "openai", "--url", &server.url, "--remote-prompt", "text-no-bos", "--concurrency", concurrency]);
        assert_eq!(remote.len(), local.len());
        for (r, l) in remote.iter().zip(&local) {
            assert_eq!(r["id"], l["id"], "input order is kept with --concurrency {concurrency}");
            assert_eq!(r["complete"], true);
            assert_eq!(r["first_error_step"], l["first_error_step"]);
            let (rs, ls) = (r["steps"].as_array().unwrap(), l["steps"].as_array().unwrap());
            assert_eq!(rs.len(), ls.len());
            for (a, b) in rs.iter().zip(ls) {
                let (a, b) = (&a["samples"][0], &b["samples"][0]);
                assert_eq!(a["text"], b["text"], "the same rationale, stop strings included");
                assert_eq!(a["code_runs"], b["code_runs"]);
                assert_eq!(a["reward"]["judgement"], b["reward"]["judgement"]);
                assert_eq!(a["generations"], b["generations"]);
                let (x, y) = (a["reward"]["value"].as_f64().unwrap(), b["reward"]["value"].as_f64().unwrap());
                assert!((x - y).abs() < 1e-4, "rewards {x} (server) and {y} (local)");
                // 20 log-probabilities came back with Yes and No among them: nothing to note.
                assert!(a["reward"].get("note").is_none(), "{}", a["reward"]);
            }
        }
    }
}

#[test]
fn grade_and_eval_run_through_the_server_and_a_dead_server_is_a_clear_error() {
    let Some(python) = python() else { return };
    let server = start_server(&python);
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir("tiny-genprm");
    let sols: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(fixtures().join("protocol/e2e.json")).unwrap()).unwrap();
    let input = dir.path().join("class.jsonl");
    let mut lines: Vec<String> = sols.iter().map(|s| s.to_string()).collect();
    lines.insert(1, "{\"problem\": \"p\"}".into());
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("results.jsonl");
    let o = genprm(&[
        "grade", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(),
        "--greedy", "--backend", "openai", "--url", &server.url, "--remote-prompt", "text-no-bos", "--concurrency", "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = String::from_utf8(o.stdout).unwrap();
    assert!(summary.contains("4 rows: 3 graded, 1 bad"), "{summary}");
    // Written as they finished, keyed by input line.
    let mut got: Vec<(u64, i64)> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| (r["line"].as_u64().unwrap(), r["first_error_step"].as_i64().unwrap_or(-9)))
        .collect();
    got.sort();
    assert_eq!(got, vec![(1, -1), (2, -9), (3, 1), (4, -1)]);

    // ProcessBench evaluation through the server.
    let data = dir.path().join("pb");
    std::fs::create_dir(&data).unwrap();
    let labels = [-1, 1, -1];
    let records: Vec<serde_json::Value> = sols
        .iter()
        .zip(labels)
        .map(|(s, label)| serde_json::json!({"id": s["id"], "generator": "t", "problem": s["problem"], "steps": s["steps"], "final_answer_correct": label == -1, "label": label}))
        .collect();
    std::fs::write(data.join("math.json"), serde_json::to_string(&records).unwrap()).unwrap();
    let preds = dir.path().join("preds.jsonl");
    let o = genprm(&[
        "eval", "processbench", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--subset", "math",
        "--out", preds.to_str().unwrap(), "--greedy", "--style", "card", "--backend", "openai", "--url", &server.url, "--remote-prompt", "text-no-bos", "--concurrency", "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("| math | 3 | 100.0 | 100.0 | 100.0 |"), "{table}");

    // The server goes away: a clear error naming the URL, and nothing half-written.
    let url = server.url.clone();
    drop(server);
    let out2 = dir.path().join("results2.jsonl");
    let o = genprm(&[
        "grade", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out2.to_str().unwrap(),
        "--greedy", "--backend", "openai", "--url", &url, "--remote-model", "tiny", "--retries", "2",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{url}/v1/completions")) && err.contains("attempts"), "{err}");
}
