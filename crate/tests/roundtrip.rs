//! Property tests of the round trips the inputs go through: a pack written and read back, a
//! grading result and a ProcessBench prediction written as JSON and read back, a solution
//! written as JSON and parsed again.

use std::path::{Path, PathBuf};

use genprm::Result;
use genprm::pack::{Pack, ScaleDtype, write_pack};
use genprm::prm::grade::{GradeResult, RowStatus};
use genprm::prm::processbench::Prediction;
use genprm::prm::{SolutionScores, StepVerdict};
use genprm::quant::{GROUP, QuantMatrix};
use genprm::weights::{HostTensor, TensorSource};
use genprm::{Error, QuantFormat};
use proptest::prelude::*;

/// Tensors held in memory.
struct Tensors(Vec<(String, HostTensor)>);

impl TensorSource for Tensors {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.read_f32(name)?.shape)
    }
    fn read_f32(&self, name: &str) -> Result<HostTensor> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| Error::MissingTensor { path: PathBuf::from("mem"), tensor: name.into() })
    }
    fn file_of(&self, _name: &str) -> PathBuf {
        PathBuf::from("mem")
    }
}

/// A 1-D tensor or a 2-D one whose width the group size divides.
fn tensor() -> impl Strategy<Value = HostTensor> {
    prop_oneof![
        (1usize..40).prop_flat_map(|n| prop::collection::vec(-100f32..100f32, n).prop_map(move |data| HostTensor { shape: vec![n], data })),
        (1usize..5, 1usize..3).prop_flat_map(|(r, g)| {
            let c = g * GROUP;
            prop::collection::vec(-4f32..4f32, r * c).prop_map(move |data| HostTensor { shape: vec![r, c], data })
        }),
    ]
}

fn write_and_open(tensors: &[HostTensor], quant: QuantFormat, scales: ScaleDtype) -> (tempfile::TempDir, Tensors, Pack) {
    let src_dir = tempfile::tempdir().unwrap();
    std::fs::write(src_dir.path().join("config.json"), "{\"x\": 1}").unwrap();
    let source = Tensors(tensors.iter().enumerate().map(|(i, t)| (format!("t{i}"), t.clone())).collect());
    let names: Vec<String> = source.0.iter().map(|(n, _)| n.clone()).collect();
    let out = src_dir.path().join("pack");
    write_pack(&source, &names, quant, None, scales, src_dir.path(), &out, |_| {}).unwrap();
    let pack = Pack::open(&out).unwrap();
    (src_dir, source, pack)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_pack_reads_back_what_was_written(
        tensors in prop::collection::vec(tensor(), 1..6),
        q4 in any::<bool>(),
        f16 in any::<bool>(),
    ) {
        let quant = if q4 { QuantFormat::Q4 } else { QuantFormat::Q8 };
        let scales = if f16 { ScaleDtype::F16 } else { ScaleDtype::F32 };
        let (_dir, source, pack) = write_and_open(&tensors, quant, scales);
        pack.manifest().check_layout(Path::new("pack")).unwrap();
        for (name, t) in &source.0 {
            let back = pack.read_f32(name).unwrap();
            prop_assert_eq!(&back.shape, &t.shape);
            if t.shape.len() == 1 {
                prop_assert_eq!(&back.data, &t.data);
                prop_assert!(pack.read_quantized(name).unwrap().is_none());
            } else {
                let (r, c) = (t.shape[0], t.shape[1]);
                let q = match scales {
                    ScaleDtype::F32 => QuantMatrix::quantize(&t.data, r, c, quant, name).unwrap(),
                    ScaleDtype::F16 => QuantMatrix::quantize_rounding_scales(&t.data, r, c, quant, name, |s| half::f16::from_f32(s).to_f32()).unwrap(),
                };
                prop_assert_eq!(&back.data, &q.dequantize());
                let stored = pack.read_quantized(name).unwrap().unwrap();
                prop_assert_eq!(stored.dequantize(), q.dequantize());
            }
        }
    }

    #[test]
    fn a_grading_result_reads_back_from_its_json_line(
        line in 1usize..1_000_000,
        id in proptest::option::of("[a-zA-Z0-9 _\\-\"\\\\é\u{FDD0}]{0,12}"),
        student_id in proptest::option::of("[a-z0-9]{0,8}"),
        status in 0u8..3,
        error in proptest::option::of(".{0,40}"),
        rewards in prop::collection::vec(0f64..=1.0, 0..6),
        first in proptest::option::of(-1i64..6),
        label in proptest::option::of(-1i64..6),
    ) {
        let status = [RowStatus::Graded, RowStatus::BadRow, RowStatus::Failed][status as usize];
        let steps: Vec<StepVerdict> = rewards.iter().enumerate().map(|(index, &reward)| StepVerdict { index, reward, samples: vec![] }).collect();
        let scores = (!rewards.is_empty()).then(|| SolutionScores {
            min: rewards.iter().copied().fold(1.0, f64::min),
            last: *rewards.last().unwrap(),
            mean: rewards.iter().sum::<f64>() / rewards.len() as f64,
        });
        let r = GradeResult {
            line,
            id,
            student_id,
            status,
            error,
            rewards: rewards.clone(),
            first_error_step: first,
            scores,
            label,
            agreement: first.zip(label).map(|(f, l)| f == l),
            steps,
        };
        let text = serde_json::to_string(&r).unwrap();
        prop_assert!(!text.contains('\n'));
        let back: GradeResult = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &r);
        // And through a results file, as a resumed run reads it.
        let parsed: Vec<GradeResult> = genprm::jsonl::parse_jsonl(format!("{text}\n{text}\n").as_bytes(), Path::new("out.jsonl")).unwrap();
        prop_assert_eq!(parsed, vec![r.clone(), r]);
    }

    #[test]
    fn a_prediction_reads_back_from_its_json_line(
        id in ".{0,20}",
        subset in "[a-z]{1,12}",
        label in -1i64..20,
        prediction in -1i64..20,
        rewards in prop::collection::vec(0f64..=1.0, 0..8),
    ) {
        let p = Prediction { id, subset, label, prediction, rewards };
        let back: Prediction = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        prop_assert_eq!(back, p);
    }

    #[test]
    fn a_solution_reads_back_from_its_json(
        problem in "[^\\s]{1,8}.{0,30}",
        steps in prop::collection::vec("[^\\s].{0,30}", 1..6),
        id in proptest::option::of(".{0,10}"),
    ) {
        let mut s = genprm::prm::Solution::new(problem, steps);
        s.id = id;
        let text = serde_json::to_string(&s).unwrap();
        let back = genprm::prm::parse_solutions(&text, "in.json").unwrap();
        prop_assert_eq!(back, vec![s]);
    }
}
