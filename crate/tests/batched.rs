//! Maj@N on the local engine: the N samples of a paragraph decode as one batch — each with its
//! own stop strings, code rounds and KV-cache row — and give exactly what they give one after
//! another, in far fewer forward passes, on every device.

mod common;

use common::*;
use genprm::exec::native::{PythonSandbox, SandboxConfig};
use genprm::generate::block_on;
use genprm::prm::{self, History, Verification, VerifyOptions};
use genprm::{EngineStats, LocalEngine, Sampling, SamplingParams};

fn run(model: &genprm::LoadedModel, options: &VerifyOptions) -> (Vec<Verification>, EngineStats) {
    let tokenizer = model.tokenizer().unwrap();
    let text = std::fs::read_to_string(fixtures().join("protocol/e2e.json")).unwrap();
    // Two solutions keep the test short on lavapipe: the "times" one runs two code rounds.
    let solutions: Vec<_> = prm::parse_solutions(&text, "e2e.json").unwrap().into_iter().filter(|s| ["times", "apples"].contains(&s.id.as_deref().unwrap_or(""))).collect();
    assert_eq!(solutions.len(), 2);
    let engine = LocalEngine::new(&model.model, tokenizer).unwrap();
    let mut executors: Vec<PythonSandbox> = (0..options.samples).map(|_| PythonSandbox::new(SandboxConfig::default()).unwrap()).collect();
    let results = solutions
        .iter()
        .map(|s| block_on(prm::verify(&engine, tokenizer, &mut executors, s, options, &mut |_| {})).unwrap())
        .collect();
    (results, engine.stats())
}

#[test]
fn batched_samples_equal_samples_one_after_another() {
    for (kind, device) in devices() {
        let model = load("tiny-genprm", &device);
        // The shared history on the CPU only (lavapipe is slow).
        let histories = if kind == genprm::DeviceKind::Cpu { vec![History::PerPath, History::Shared] } else { vec![History::PerPath] };
        for history in histories {
            let options = VerifyOptions { samples: 4, sampling: Sampling::Greedy, history, ..Default::default() };
            let (batched, b) = run(&model, &options);
            let (sequential, s) = run(&model, &VerifyOptions { batch: false, ..options.clone() });
            let what = format!("{kind}, {history:?}");
            assert_eq!(batched.len(), sequential.len());
            for (x, y) in batched.iter().zip(&sequential) {
                assert_eq!(x.steps.len(), y.steps.len(), "{what}");
                for (sx, sy) in x.steps.iter().zip(&y.steps) {
                    assert_eq!(sx.samples.len(), 4);
                    for (rx, ry) in sx.samples.iter().zip(&sy.samples) {
                        assert_eq!(rx.text, ry.text, "{what}: paragraph {}", sx.index + 1);
                        assert_eq!(rx.code_runs, ry.code_runs, "{what}");
                        assert!((rx.reward.value - ry.reward.value).abs() < 1e-5, "{what}");
                    }
                }
                assert_eq!(x.first_error_step, y.first_error_step, "{what}");
            }
            assert_eq!(b.generated_tokens, s.generated_tokens, "{what}: the same tokens were generated");
            // The samples really ran as a batch: passes decoded several at once (with a shared
            // history the samples take turns with the one executor, so they overlap less).
            let factor = if history == History::PerPath { 2 } else { 1 };
            assert!(b.decode_passes * factor < s.decode_passes, "{what}: {} batched decode passes vs {} one after another", b.decode_passes, s.decode_passes);
        }
    }
}

/// Sampled samples that differ — different lengths, stops, code rounds and fallbacks — share
/// the batch and each ends whole. (Their text may differ from a one-at-a-time run in rare
/// tokens: rows multiplied together round differently in the last bits.)
#[test]
fn differing_samples_each_finish_their_own_protocol() {
    let (_, device) = devices().remove(0);
    let model = genprm::LoadedModel::load_with(
        &model_dir("tiny-genprm"),
        &device,
        genprm::LoadOptions { quant: Some(genprm::quant::QuantFormat::Q8), ..Default::default() },
        |_| {},
    )
    .unwrap();
    // A high temperature and a small budget: the samples wander, some hit the budget.
    let sampling = Sampling::Sample(SamplingParams { temperature: 1.8, top_k: None, top_p: 1.0, seed: 11 });
    let options = VerifyOptions { samples: 4, sampling, step_budget: 400, ..Default::default() };
    let (results, stats) = run(&model, &options);
    let rationales: Vec<&prm::Rationale> = results.iter().flat_map(|v| &v.steps).flat_map(|s| &s.samples).collect();
    for v in &results {
        for st in &v.steps {
            assert_eq!(st.samples.len(), 4);
            for (k, r) in st.samples.iter().enumerate() {
                assert!(r.text.starts_with(&prm::analyze_prefix(st.index + 1)), "paragraph {} sample {k}", st.index + 1);
                assert!((0.0..=1.0).contains(&r.reward.value));
            }
        }
    }
    let lengths: std::collections::BTreeSet<usize> = rationales.iter().map(|r| r.text.len()).collect();
    assert!(lengths.len() > rationales.len() / 2, "the samples did not differ");
    assert!(rationales.iter().any(|r| !r.code_runs.is_empty()), "no sample ran code");
    assert!(rationales.iter().any(|r| r.code_runs.is_empty()), "every sample ran code");
    assert!(stats.decode_passes * 2 < stats.generated_tokens, "{stats:?}: the samples did not share passes");
}
