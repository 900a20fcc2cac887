//! ProcessBench evaluation: the metric exactly as ProcessBench defines it, and resumable
//! prediction files (one JSON line per record, appended and flushed as each is judged).

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::prm::jsonl::{self, JsonlWriter, OpenMode};

/// The four ProcessBench subsets, in the paper's order.
pub const SUBSETS: &[&str] = &["gsm8k", "math", "olympiadbench", "omnimath"];

/// One record's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The record's id.
    pub id: String,
    /// Its subset.
    pub subset: String,
    /// The reference: 0-based index of the first wrong paragraph, or −1.
    pub label: i64,
    /// GenPRM's prediction, the same way.
    pub prediction: i64,
    /// The step rewards.
    pub rewards: Vec<f64>,
}

/// acc_err, acc_cor and F1 of one subset (fractions in [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SubsetScore {
    /// Match rate on erroneous solutions (label ≠ −1).
    pub acc_err: f64,
    /// Match rate on correct solutions (label = −1).
    pub acc_cor: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
    /// Records scored.
    pub records: usize,
}

/// ProcessBench's metric: a prediction matches when it equals the label; acc_err over the
/// erroneous records, acc_cor over the correct ones, F1 their harmonic mean (0 when both are 0).
pub fn score(predictions: &[&Prediction]) -> SubsetScore {
    let rate = |want_error: bool| {
        let group: Vec<_> = predictions.iter().filter(|p| (p.label != -1) == want_error).collect();
        if group.is_empty() { 0.0 } else { group.iter().filter(|p| p.prediction == p.label).count() as f64 / group.len() as f64 }
    };
    let (acc_err, acc_cor) = (rate(true), rate(false));
    let f1 = if acc_err + acc_cor == 0.0 { 0.0 } else { 2.0 * acc_err * acc_cor / (acc_err + acc_cor) };
    SubsetScore { acc_err, acc_cor, f1, records: predictions.len() }
}

/// Scores per subset present, and the plain mean of their F1 ("Avg." in the paper).
pub fn report(predictions: &[Prediction]) -> (Vec<(String, SubsetScore)>, f64) {
    let mut per = Vec::new();
    for subset in SUBSETS.iter().map(|s| s.to_string()).chain(
        predictions.iter().map(|p| p.subset.clone()).filter(|s| !SUBSETS.contains(&s.as_str())).collect::<std::collections::BTreeSet<_>>(),
    ) {
        let group: Vec<&Prediction> = predictions.iter().filter(|p| p.subset == subset).collect();
        if !group.is_empty() {
            per.push((subset, score(&group)));
        }
    }
    let avg = if per.is_empty() { 0.0 } else { per.iter().map(|(_, s)| s.f1).sum::<f64>() / per.len() as f64 };
    (per, avg)
}

/// Refuses two records with one id (`ids` in file order; `source` names the file): a prediction
/// is kept per id, so the second would never be judged and the first would be scored twice.
pub fn check_unique_ids<'a>(ids: impl IntoIterator<Item = &'a str>, source: &str) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, id) in ids.into_iter().enumerate() {
        if let Some(first) = seen.insert(id, i) {
            return Err(Error::InvalidInput {
                what: format!("{source}, record {i}"),
                message: format!("the id {id:?} is also the id of record {first}: each record needs its own id"),
            });
        }
    }
    Ok(())
}

/// Reads the predictions already in `path` (a missing file is empty). A last line cut short by
/// an interruption is ignored; any other bad line is an error naming its number.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    jsonl::read_records(path)
}

/// Appends predictions to a JSON Lines file, each synced to disk as it is written, after
/// dropping a torn last line left by an interrupted run.
pub struct PredictionWriter {
    file: JsonlWriter,
    done: HashSet<String>,
}

impl PredictionWriter {
    /// Opens (or creates) `path`, keeping the complete predictions it holds.
    pub fn open(path: &Path) -> Result<(Self, Vec<Prediction>)> {
        let (file, kept) = JsonlWriter::open::<Prediction>(path, OpenMode::Resume)?;
        let done = kept.iter().map(|p| key(&p.subset, &p.id)).collect();
        Ok((PredictionWriter { file, done }, kept))
    }

    /// Whether a record already has a prediction.
    pub fn has(&self, subset: &str, id: &str) -> bool {
        self.done.contains(&key(subset, id))
    }

    /// Appends one prediction and syncs it to disk.
    pub fn write(&mut self, p: &Prediction) -> Result<()> {
        self.file.append(p)?;
        self.done.insert(key(&p.subset, &p.id));
        Ok(())
    }
}

fn key(subset: &str, id: &str) -> String {
    format!("{subset}\u{0}{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(subset: &str, label: i64, prediction: i64) -> Prediction {
        Prediction { id: format!("{subset}-{label}-{prediction}"), subset: subset.into(), label, prediction, rewards: vec![] }
    }

    #[test]
    fn metric_matches_processbench_on_hand_made_predictions() {
        // Erroneous: 3 records, 2 exact matches (a too-late and a too-early prediction do not count).
        // Correct: 2 records, 1 predicted as correct.
        let preds = [p("math", 2, 2), p("math", 0, 0), p("math", 1, 3), p("math", -1, -1), p("math", -1, 4)];
        let refs: Vec<&Prediction> = preds.iter().collect();
        let s = score(&refs);
        assert!((s.acc_err - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.acc_cor - 0.5).abs() < 1e-12);
        assert!((s.f1 - 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5)).abs() < 1e-12);
        assert_eq!(s.records, 5);
        // Avg. is the plain mean of the subset F1s (the paper's GenPRM-7B: 78.7 80.3 72.2 69.8 -> 75.25).
        let mut all = preds.to_vec();
        all.push(p("gsm8k", -1, -1));
        all.push(p("gsm8k", 1, 1));
        let (per, avg) = report(&all);
        assert_eq!(per[0].0, "gsm8k");
        assert_eq!(per[0].1.f1, 1.0);
        assert!((avg - (1.0 + s.f1) / 2.0).abs() < 1e-12);
        // Nothing right: F1 0, not NaN.
        let none = [p("x", 1, 0), p("x", -1, 2)];
        assert_eq!(score(&none.iter().collect::<Vec<_>>()).f1, 0.0);
    }

    #[test]
    fn predictions_resume_and_a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preds.jsonl");
        let (mut w, kept) = PredictionWriter::open(&path).unwrap();
        assert!(kept.is_empty());
        w.write(&p("math", 1, 1)).unwrap();
        w.write(&p("math", -1, -1)).unwrap();
        drop(w);
        // An interrupted third write.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"id\":\"math-2-2\",\"sub");
        std::fs::write(&path, text).unwrap();
        let (w, kept) = PredictionWriter::open(&path).unwrap();
        assert_eq!(kept.len(), 2);
        assert!(w.has("math", "math-1-1") && !w.has("math", "math-2-2"));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        // A bad line in the middle is an error naming it.
        std::fs::write(&path, "not json\n{}\n").unwrap();
        let e = read_predictions(&path).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
