//! Replays every file of the committed fuzz corpora (`fuzz/corpus/<target>/`) and every crash
//! once found (`fuzz/regressions/<target>/`) through the fuzz targets' own bodies
//! (`fuzz/src/lib.rs`), so CI checks them on stable without fuzzing.

#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

#[test]
fn every_corpus_and_regression_file_replays_cleanly() {
    let mut summary = Vec::new();
    for (name, body) in harness::TARGETS {
        let mut files = 0usize;
        for kind in ["corpus", "regressions"] {
            let dir = fuzz_dir().join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
            paths.sort();
            for path in paths {
                // (A file a running fuzzer has just replaced is skipped.)
                let Ok(data) = std::fs::read(&path) else { continue };
                let outcome = std::panic::catch_unwind(|| body(&data));
                assert!(outcome.is_ok(), "fuzz target {name} panicked on {}", path.display());
                files += 1;
            }
        }
        assert!(files > 0, "no corpus for fuzz target {name}");
        summary.push(format!("{name}: {files}"));
    }
    eprintln!("replayed {}", summary.join(", "));
}
