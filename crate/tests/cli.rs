//! The `genprm` binary end to end: JSON outputs against transformers' numbers, and bad input as
//! one clear line on stderr with a failing exit code.

mod common;

use std::process::{Command, Output};

use common::*;

fn genprm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genprm")).args(args).output().expect("running genprm")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = genprm(args);
    assert!(out.status.success(), "genprm {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn failing(args: &[&str]) -> String {
    let out = genprm(args);
    assert!(!out.status.success(), "genprm {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "genprm {args:?} panicked: {err}");
    err
}

fn ids_arg(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn logits_command_matches_transformers() {
    for (kind, _) in devices() {
        let name = "tiny-gqa-f32";
        let exp = expected(name);
        let dir = model_dir(name);
        let ids = ids_arg(&exp.prompt_ids);
        let kind = kind.to_string();
        let all = ok_json(&["logits", "--model", dir.to_str().unwrap(), "--ids", &ids, "--device", &kind, "--all-positions"]);
        assert_eq!(all["vocab_size"], 320);
        let rows: Vec<Vec<f32>> = serde_json::from_value(all["logits"].clone()).unwrap();
        assert_eq!(all["positions"].as_array().unwrap().len(), exp.prompt_ids.len());
        assert!(max_abs_diff(&rows, &exp) < 1e-4);

        let last = ok_json(&["logits", "--model", dir.to_str().unwrap(), "--ids", &ids, "--device", &kind]);
        assert_eq!(last["positions"], serde_json::json!([exp.prompt_ids.len() - 1]));
        let row: Vec<Vec<f32>> = serde_json::from_value(last["logits"].clone()).unwrap();
        let d = row[0].iter().zip(exp.logits.last().unwrap()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d < 1e-4);
    }
}

#[test]
fn generate_command_greedy_from_text_and_ids() {
    let name = "tiny-real-vocab";
    let exp = expected(name);
    let dir = model_dir(name);
    let dir = dir.to_str().unwrap();
    let n = exp.greedy_ids.len().to_string();
    let from_ids = ok_json(&["generate", "--model", dir, "--ids", &ids_arg(&exp.prompt_ids), "--max-new-tokens", &n, "--greedy", "--json", "--ignore-eos"]);
    let got: Vec<u32> = serde_json::from_value(from_ids["ids"].clone()).unwrap();
    assert_eq!(got, exp.greedy_ids);
    assert!(from_ids["text"].is_string());

    // The same prompt as text: encoding it gives the fixture's ids.
    let tok = genprm::Tokenizer::from_dir(&model_dir(name)).unwrap();
    let text = tok.decode(&exp.prompt_ids, false).unwrap();
    let prompt = text.strip_prefix("<｜begin▁of▁sentence｜>").unwrap();
    let from_text = ok_json(&["generate", "--model", dir, "--prompt", prompt, "--max-new-tokens", &n, "--json", "--ignore-eos"]);
    assert_eq!(from_text["ids"], from_ids["ids"]);
    assert_eq!(from_text["text"], from_ids["text"]);

    // Plain output streams the same text.
    let out = genprm(&["generate", "--model", dir, "--prompt", prompt, "--max-new-tokens", &n, "--ignore-eos"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end_matches('\n'), from_ids["text"].as_str().unwrap());
}

#[test]
fn generate_command_sampling_is_seeded() {
    let dir = model_dir("tiny-gqa-f32");
    let dir = dir.to_str().unwrap();
    let run = |seed: &str| ok_json(&["generate", "--model", dir, "--ids", "1,2,3", "--max-new-tokens", "12", "--temperature", "1.0", "--top-k", "0", "--top-p", "1.0", "--seed", seed, "--json"]);
    assert_eq!(run("5")["ids"], run("5")["ids"]);
    assert!(run("5")["text"].is_null(), "no tokenizer in this fixture");
}

#[test]
fn bad_input_is_one_clear_line() {
    let good = model_dir("tiny-gqa-f32");
    let good = good.to_str().unwrap();
    let e = failing(&["logits", "--model", "/no/such/dir", "--ids", "1"]);
    assert!(e.contains("/no/such/dir"), "{e}");
    let e = failing(&["logits", "--model", good, "--ids", "1,999"]);
    assert!(e.contains("999") && e.contains("out of range"), "{e}");
    let e = failing(&["logits", "--model", good, "--ids", "1,x"]);
    assert!(e.contains("x"), "{e}");
    let e = failing(&["generate", "--model", good, "--prompt", "hello"]);
    assert!(e.contains("tokenizer.json"), "{e}");
    let e = failing(&["generate", "--model", good, "--ids", "1", "--top-p", "0"]);
    assert!(e.contains("top_p"), "{e}");
    let e = failing(&["logits", "--model", good, "--ids", "1", "--device", "tpu"]);
    assert!(e.contains("tpu"), "{e}");

    let tmp = scratch_copy("tiny-gqa-f32");
    let cfg = tmp.path().join("config.json");
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("\"rope_theta\": 10000.0", "\"rope_theta\": \"big\"")).unwrap();
    let e = failing(&["logits", "--model", tmp.path().to_str().unwrap(), "--ids", "1"]);
    assert!(e.contains("config.json") && e.contains("rope_theta"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
}

#[test]
fn quantizing_while_loading_from_the_cli() {
    let dir = model_dir("tiny-genprm");
    let out = genprm(&["logits", "--model", dir.to_str().unwrap(), "--ids", "1,2,3", "--quant", "q8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e = failing(&["logits", "--model", model_dir("tiny-gqa-f32").to_str().unwrap(), "--ids", "1", "--quant", "q4"]);
    assert!(e.contains("group size") && e.contains("48"), "{e}");
    let e = failing(&["logits", "--model", dir.to_str().unwrap(), "--ids", "1", "--quant", "q3"]);
    assert!(e.contains("q3"), "{e}");
}

/// `genprm bench --maj N` times Pass@1 against N samples decoded as one batch (each pass feeds
/// every sample), and says what it needs when it lacks a tokenizer.
#[test]
fn bench_maj_decodes_the_samples_as_one_batch() {
    let tok = fixtures().join("tokenizer");
    let tok = tok.to_str().unwrap();
    let small = ["bench", "--random-shape", "qwen2-small", "--quant", "q8", "--prompt-tokens", "24", "--new-tokens", "5"];
    let out = ok_json(&[&small[..], &["--maj", "3", "--tokenizer", tok, "--json"]].concat());
    let r = &out["result"];
    assert_eq!(r["samples"], 3);
    assert_eq!(r["new_tokens"], 5);
    // The prompt is prefilled once; the other samples copy it and feed its last id in the first
    // decode pass, with the first sample's first new token: one pass per token for all.
    assert_eq!(r["maj_decode_passes"], 5, "one pass per token for all three samples: {r}");
    assert_eq!(r["maj_prefill_passes"], 1, "the shared prompt is prefilled once: {r}");
    assert!(r["ratio"].as_f64().unwrap() > 0.0);
    // The record names the CPU kernel, which rows from different machines need.
    let kernel = out["cpu_kernel"].as_str().unwrap_or_else(|| panic!("no cpu_kernel: {out}"));
    assert!(["scalar", "avx2", "avxvnni", "avx512vnni", "neon", "simd128"].contains(&kernel), "{kernel}");
    let err = failing(&[&small[..], &["--maj", "3"]].concat());
    assert!(err.contains("--tokenizer"), "{err}");
}

/// `genprm bench` reports the GPU memory genprm reserved (CubeCL's memory report) and whether
/// it ran in f16 mode (`--gpu-f16`) on the GPU, and neither on the CPU; on both, the device's
/// memory bandwidth and the decode bound it gives, and the KV cache's type (`--kv-cache`).
#[test]
fn bench_reports_device_memory_and_f16_mode_on_the_gpu_only() {
    let model = model_dir("tiny-genprm");
    for (kind, _) in devices() {
        let kind = kind.to_string();
        // 20 prompt tokens: the prefill path (from 16 rows on).
        let args = ["bench", "--model", model.to_str().unwrap(), "--quant", "q4", "--device", &kind, "--prompt-tokens", "20", "--new-tokens", "2", "--json"];
        let r = &ok_json(&args)["result"];
        // The decode bound: the device's measured read bandwidth over the weight bytes of a step.
        let bytes = r["weight_bytes_per_step"].as_f64().unwrap_or_else(|| panic!("no weight bytes: {r}"));
        let gb = r["read_gb_s"].as_f64().unwrap_or_else(|| panic!("no bandwidth on {kind}: {r}"));
        let bound = r["decode_bound_tok_s"].as_f64().unwrap_or_else(|| panic!("no bound on {kind}: {r}"));
        assert!(bytes > 0.0 && gb > 0.0 && (bound - gb * 1e9 / bytes).abs() <= 1e-6 * bound, "{r}");
        match kind.as_str() {
            "gpu" => {
                // At least the packed weights: 4 bits per weight plus a scale per 32.
                let mib = r["peak_device_mib"].as_f64().unwrap_or_else(|| panic!("no device memory on the GPU: {r}"));
                assert!(mib > 0.0, "{r}");
                // lavapipe has f16 arithmetic (GENPRM_EXPECT_GPU_F16=0 waives this elsewhere).
                if std::env::var("GENPRM_EXPECT_GPU_F16").as_deref() != Ok("0") && std::env::var_os("GENPRM_GPU_F16").is_none() {
                    assert_eq!(r["gpu_f16"], true, "{r}");
                }
                let r = &ok_json(&[&args[..], &["--gpu-f16", "off"]].concat())["result"];
                assert_eq!((&r["gpu_f16"], &r["kv_cache"]), (&false.into(), &"f32".into()), "{r}");
                // The decode kernel and the attention are flags (their environment variables
                // only defaults the flags override).
                for kernel in ["cooperative", "per-unit"] {
                    let r = &ok_json(&[&args[..], &["--gpu-matvec", kernel, "--gpu-attention", "ops"]].concat())["result"];
                    assert_eq!(r["gpu_matvec"], kernel, "{r}");
                }
                let e = failing(&[&args[..], &["--gpu-matvec", "fastest"]].concat());
                assert!(e.contains("--gpu-matvec") && e.contains("cooperative"), "{e}");
            }
            _ => {
                assert!(r["peak_device_mib"].is_null() && r["gpu_f16"].is_null(), "{r}");
                // The KV cache: f32 unless asked for in f16, which halves it.
                assert_eq!(r["kv_cache"], "f32", "{r}");
                let f16 = &ok_json(&[&args[..], &["--kv-cache", "f16"]].concat())["result"];
                assert_eq!(f16["kv_cache"], "f16", "{f16}");
                let (a, b) = (r["kv_cache_mib"].as_f64().unwrap_or(0.0), f16["kv_cache_mib"].as_f64().unwrap_or(0.0));
                assert!(a > 0.0 && b == a / 2.0, "KV cache {a} MiB in f32, {b} MiB in f16");
                let e = failing(&[&args[..], &["--gpu-f16", "on"]].concat());
                assert!(e.contains("f16") && e.contains("shader-f16"), "{e}");
            }
        }
    }
}

/// `--device null-gpu` (wgpu's no-op backend: every call validated, none executed) runs the
/// GPU path end to end, so `scripts/bench-host-native` can measure the host's own cost per
/// decode step; the bench reports that CPU time on every native device.
#[test]
fn bench_on_the_null_gpu_reports_the_host_cost_per_step() {
    let args = ["bench", "--random-shape", "qwen2-small", "--device", "null-gpu", "--quant", "q4", "--prompt-tokens", "4", "--new-tokens", "3", "--json"];
    let out = ok_json(&args);
    assert_eq!(out["device"], "null-gpu", "{out}");
    let r = &out["result"];
    assert!(r["gpu_adapter"].as_str().is_some_and(|a| a.contains("noop")), "{r}");
    assert!(r["decode_host_ms_per_step"].as_f64().is_some_and(|ms| ms > 0.0), "{r}");
    let cpu = &ok_json(&["bench", "--random-shape", "qwen2-small", "--quant", "q4", "--prompt-tokens", "4", "--new-tokens", "2", "--json"])["result"];
    assert!(cpu["decode_host_ms_per_step"].as_f64().is_some_and(|ms| ms > 0.0), "{cpu}");
    let e = failing(&["bench", "--random-shape", "qwen2-small", "--device", "tpu"]);
    assert!(e.contains("null-gpu"), "{e}");
}
