//! Shared helpers for the integration tests: fixture paths, expected values and devices.

#![allow(dead_code)]

use std::path::PathBuf;

use genprm::burn::tensor::Device;
use genprm::{DeviceKind, LoadedModel};
use serde::Deserialize;

/// `tests/fixtures` at the repository root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("tests").join("fixtures")
}

/// A model fixture directory.
pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// Every model fixture.
pub const MODELS: &[&str] = &["tiny-gqa-f32", "tiny-mha-tied-f16", "tiny-sharded-bf16", "tiny-real-vocab"];

/// What transformers computed for a fixture (`expected.json`).
#[derive(Deserialize)]
pub struct Expected {
    pub prompt_ids: Vec<u32>,
    /// `None`: every vocabulary entry; otherwise the columns `logits` holds.
    pub logit_indices: Option<Vec<usize>>,
    pub logits: Vec<Vec<f32>>,
    pub greedy_ids: Vec<u32>,
}

pub fn expected(name: &str) -> Expected {
    let path = model_dir(name).join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The devices every parity test runs on. The GPU is required (lavapipe provides one in CI);
/// set `GENPRM_TEST_DEVICES=cpu` to run on the CPU alone.
pub fn devices() -> Vec<(DeviceKind, Device)> {
    let wanted = std::env::var("GENPRM_TEST_DEVICES").unwrap_or_else(|_| "cpu,gpu".into());
    wanted
        .split(',')
        .map(|k| {
            let kind: DeviceKind = k.trim().parse().unwrap();
            let dev = genprm::device(kind).unwrap_or_else(|e| panic!("{kind} device unavailable: {e}"));
            (kind, dev)
        })
        .collect()
}

pub fn load(name: &str, device: &Device) -> LoadedModel {
    LoadedModel::load(&model_dir(name), device, |_| {}).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Largest absolute difference between our logits rows and the expected (sub)set.
pub fn max_abs_diff(rows: &[Vec<f32>], exp: &Expected) -> f32 {
    assert_eq!(rows.len(), exp.logits.len(), "number of positions");
    let mut worst = 0f32;
    for (ours, theirs) in rows.iter().zip(&exp.logits) {
        match &exp.logit_indices {
            None => {
                assert_eq!(ours.len(), theirs.len(), "vocabulary size");
                for (a, b) in ours.iter().zip(theirs) {
                    worst = worst.max((a - b).abs());
                }
            }
            Some(idx) => {
                for (&i, b) in idx.iter().zip(theirs) {
                    worst = worst.max((ours[i] - b).abs());
                }
            }
        }
    }
    worst
}

/// Copies a fixture into a fresh temporary directory (symlinks resolved) for tests that damage it.
pub fn scratch_copy(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}
pub mod scripted;
