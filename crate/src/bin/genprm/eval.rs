//! `genprm eval processbench`: GenPRM's predictions on ProcessBench and its F1, resumable.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use genprm::generate::block_on;
use genprm::prm::processbench::{self, Prediction, PredictionWriter};
use genprm::prm::{self, PromptStyle};

use super::ModelArgs;
use super::backend::{Backend, BackendArgs, run_pool};
use super::verify::{Executor, ProtocolArgs};

/// Benchmarks `genprm eval` runs.
#[derive(Subcommand)]
pub enum EvalCommand {
    /// ProcessBench: predict the first wrong paragraph of each solution; acc_err, acc_cor, F1.
    Processbench(ProcessBenchArgs),
}

/// Arguments of `genprm eval processbench`.
#[derive(Args)]
pub struct ProcessBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The folder holding gsm8k.json, math.json, olympiadbench.json and omnimath.json.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Comma-separated subsets (default: all four).
    #[arg(long, value_delimiter = ',')]
    subset: Vec<String>,
    /// At most this many records per subset (the first ones).
    #[arg(long)]
    limit: Option<usize>,
    /// Predictions file (JSON Lines); records already in it are skipped, so an interrupted run resumes.
    #[arg(long, value_name = "FILE", default_value = "processbench-predictions.jsonl")]
    out: PathBuf,
    /// Judge every paragraph instead of stopping at the first one below 0.5 (F1 is the same).
    #[arg(long)]
    all_steps: bool,
    #[command(flatten)]
    protocol: ProtocolArgs,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Runs `genprm eval`.
pub fn run(command: EvalCommand) -> Result<()> {
    match command {
        EvalCommand::Processbench(args) => processbench_eval(args),
    }
}

fn processbench_eval(args: ProcessBenchArgs) -> Result<()> {
    let options = args.protocol.options(PromptStyle::ProcessBench, !args.all_steps)?;
    let subsets: Vec<String> = if args.subset.is_empty() { processbench::SUBSETS.iter().map(|s| s.to_string()).collect() } else { args.subset.clone() };
    // Read and validate the data before loading the model.
    let mut work = Vec::new();
    for subset in &subsets {
        let path = args.data.join(format!("{subset}.json"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let mut records = prm::parse_solutions(&text, &path.display().to_string())?;
        if let Some(limit) = args.limit {
            records.truncate(limit);
        }
        let ids: Vec<String> = records.iter().enumerate().map(|(i, r)| r.id.clone().unwrap_or_else(|| format!("{subset}-{i}"))).collect();
        processbench::check_unique_ids(ids.iter().map(String::as_str), &path.display().to_string())?;
        for ((i, r), id) in records.into_iter().enumerate().zip(ids) {
            let Some(label) = r.label else { bail!("{}: record {i} has no `label`", path.display()) };
            work.push((subset.clone(), id, label, r));
        }
    }
    let (mut writer, mut done) = PredictionWriter::open(&args.out)?;
    let todo: Vec<_> = work.iter().filter(|(s, id, _, _)| !writer.has(s, id)).collect();
    eprintln!("{} records, {} already in {}, {} to judge", work.len(), work.len() - todo.len(), args.out.display(), todo.len());
    if !todo.is_empty() {
        let backend = Backend::open(&args.model, &args.backend)?;
        let tokenizer = backend.tokenizer()?;
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { ProgressBar::new(todo.len() as u64) } else { ProgressBar::hidden() };
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} records, eta {eta} {msg}").context("progress template")?);
        let make_worker = || args.protocol.executors(&options);
        let work = |executors: &mut Vec<Executor>, i: usize| -> Result<std::result::Result<Prediction, String>> {
            let (subset, id, label, record) = todo[i];
            let mut engine = backend.engine()?;
            let mut quiet = |_: prm::Event<'_>| {};
            let verified = prm::input::verify_within_context(&mut engine, tokenizer, executors, record, &options, backend.context(), &mut quiet);
            Ok(match block_on(verified) {
                Ok(v) => Ok(Prediction {
                    id: id.clone(),
                    subset: subset.clone(),
                    label: *label,
                    prediction: v.first_error_step,
                    rewards: v.steps.iter().map(|s| s.reward).collect(),
                }),
                Err(partial) => Err(format!("{id}: {partial} — skipped; rerun to retry it")),
            })
        };
        run_pool(todo.len(), args.backend.concurrency(), make_worker, work, |_, r| {
            match r? {
                Ok(p) => {
                    writer.write(&p)?;
                    bar.set_message(p.id.clone());
                    done.push(p);
                }
                Err(message) => bar.suspend(|| eprintln!("{message}")),
            }
            bar.inc(1);
            Ok(())
        })
        .inspect_err(|_| bar.abandon())?;
        bar.finish_and_clear();
    }
    let wanted: Vec<Prediction> = done.into_iter().filter(|p| work.iter().any(|(s, id, _, _)| *s == p.subset && *id == p.id)).collect();
    let (per, avg) = processbench::report(&wanted);
    println!("| subset | records | acc_err | acc_cor | F1 |");
    println!("|---|---|---|---|---|");
    for (subset, s) in &per {
        println!("| {subset} | {} | {:.1} | {:.1} | {:.1} |", s.records, 100.0 * s.acc_err, 100.0 * s.acc_cor, 100.0 * s.f1);
    }
    println!("| average F1 | | | | {:.1} |", 100.0 * avg);
    Ok(())
}
