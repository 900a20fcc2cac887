//! `genprm grade`: grade a file of many solutions (JSON Lines or CSV), one result line per row,
//! each synced to disk as it is made, resumable after an interruption.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use genprm::Error;
use genprm::generate::block_on;
use genprm::jsonl::{JsonlWriter, OpenMode};
use genprm::prm::grade::{self, GradeResult, GradeSummary, InputFormat, RowStatus};
use genprm::prm::{self, PromptStyle};

use super::ModelArgs;
use super::backend::{Backend, BackendArgs, run_pool};
use super::verify::{Executor, ProtocolArgs};

/// Arguments of `genprm grade`.
#[derive(Args)]
pub struct GradeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The solutions: FILE.jsonl (one JSON object per line) or FILE.csv (a header row, then one
    /// row per solution), with `problem`, `steps` or `solution`, optional `id`, `student_id`, `label`.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// The results file (JSON Lines): one line per input row, synced to disk as each row is graded.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Continue an interrupted run: rows whose results `--out` already holds are skipped.
    /// Without it, an `--out` that already holds results is an error, never overwritten.
    #[arg(long)]
    resume: bool,
    /// Stop each solution at its first step with reward < 0.5 (faster; later steps get no reward).
    #[arg(long)]
    stop_at_first_error: bool,
    #[command(flatten)]
    protocol: ProtocolArgs,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Runs `genprm grade`.
pub fn run(args: GradeArgs) -> Result<()> {
    let options = args.protocol.options(PromptStyle::Card, args.stop_at_first_error)?;
    // Everything about the input is checked before the model loads.
    let source = args.input.display().to_string();
    let format = InputFormat::from_file_name(&source)?;
    let bytes = std::fs::read(&args.input).with_context(|| format!("{source}: cannot read"))?;
    let rows = grade::parse_input(&bytes, format, &source)?;
    if rows.is_empty() {
        bail!("{source}: no rows to grade");
    }
    let out_name = args.out.display().to_string();
    let mode = if args.resume { OpenMode::Resume } else { OpenMode::New };
    let (mut writer, kept) = JsonlWriter::open::<GradeResult>(&args.out, mode).map_err(|e| match e {
        Error::InvalidInput { message, .. } if message.starts_with("the output file already holds results") => {
            anyhow::anyhow!("{out_name}: already holds results: pass --resume to continue it, or choose another --out (it is never overwritten)")
        }
        other => anyhow::Error::new(other),
    })?;
    let done = grade::done_lines(&rows, &kept, &out_name)?;
    #[cfg(unix)]
    say_how_to_resume_when_interrupted(&out_name);
    let todo: Vec<&grade::GradeRow> = rows.iter().filter(|r| !done.contains(&r.line)).collect();
    let bad_rows = rows.iter().filter(|r| r.solution.is_err()).count();
    note(format_args!(
        "{} rows in {source} ({bad_rows} bad), {} already graded in {out_name}, {} to grade",
        rows.len(),
        rows.len() - todo.len(),
        todo.len()
    ));
    let mut results = kept;
    if !todo.is_empty() {
        let needs_model = todo.iter().any(|r| r.solution.is_ok());
        let backend = if needs_model { Some(Backend::open(&args.model, &args.backend)?) } else { None };
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { ProgressBar::new(todo.len() as u64) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} rows, {elapsed} elapsed, eta {eta} {msg}")
                .context("progress bar template")?
                .progress_chars("=> "),
        );
        let name = |row: &grade::GradeRow| match (&row.id, &row.student_id) {
            (Some(id), _) | (None, Some(id)) => format!("line {} ({id})", row.line),
            (None, None) => format!("line {}", row.line),
        };
        let make_worker = || match &backend {
            Some(_) => args.protocol.executors(&options),
            None => Ok(Vec::new()),
        };
        // One row: its result, or an error that is not the row's fault (the sandbox, the server).
        let work = |executors: &mut Vec<Executor>, i: usize| -> Result<GradeResult> {
            let row = todo[i];
            let (solution, backend) = match (&row.solution, &backend) {
                (Err(reason), _) => return Ok(GradeResult::bad_row(row, reason)),
                (Ok(solution), Some(backend)) => (solution, backend),
                (Ok(_), None) => bail!("internal error: no model for {}", name(row)),
            };
            let tokenizer = backend.tokenizer()?;
            // A fresh engine per row: each result depends on its row and the options only, so
            // a resumed run writes what an uninterrupted one would.
            let mut engine = backend.engine()?;
            let mut quiet = |_: prm::Event<'_>| {};
            let verified = prm::input::verify_within_context(&mut engine, tokenizer, executors, solution, &options, backend.context(), &mut quiet);
            match block_on(verified) {
                Ok(v) => Ok(GradeResult::graded(row, v)),
                Err(partial) if matches!(partial.error, Error::InvalidInput { .. }) => Ok(GradeResult::failed(row, partial)),
                Err(partial) => Err(anyhow::Error::new(partial.error).context(format!("grading {source}, {}", name(row)))),
            }
        };
        let outcome = run_pool(todo.len(), args.backend.concurrency(), make_worker, work, |i, result| {
            let row = todo[i];
            let result = result?;
            writer.append(&result)?;
            match result.status {
                RowStatus::BadRow => bar.suspend(|| note(format_args!("{source}, {}: bad row: {}", name(row), result.error.as_deref().unwrap_or("")))),
                RowStatus::Failed => bar.suspend(|| note(format_args!("{source}, {}: {}", name(row), result.error.as_deref().unwrap_or("")))),
                RowStatus::Graded => {}
            }
            results.push(result);
            bar.set_message(name(row));
            bar.inc(1);
            Ok(())
        });
        if let Err(e) = outcome {
            bar.abandon();
            return Err(e.context(format!("the results so far are in {out_name}: rerun with --resume to continue")));
        }
        bar.finish_and_clear();
    }
    results.sort_by_key(|r| r.line);
    print_summary(&results, &out_name);
    Ok(())
}

/// Ctrl-C (SIGINT) or a kill (SIGTERM) still ends the run at once (each result is on disk as
/// soon as it is made), now with a line saying where the results are and how to continue. A
/// signal the run was started ignoring (a background job's SIGINT) stays ignored.
#[cfg(unix)]
fn say_how_to_resume_when_interrupted(out_name: &str) {
    static MESSAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let _ = MESSAGE.set(format!("\ninterrupted: the rows graded so far are in {out_name}; run the same command with --resume to continue\n").into_bytes());
    extern "C" fn on_signal(signal: libc::c_int) {
        if let Some(message) = MESSAGE.get() {
            // SAFETY: write(2) is async-signal-safe, and the message was made before the handler was set.
            let _ = unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
        }
        // SAFETY: _exit(2) is async-signal-safe.
        unsafe { libc::_exit(128 + signal) }
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only makes async-signal-safe calls.
        let before = unsafe { libc::signal(signal, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
        if before == libc::SIG_IGN {
            // SAFETY: restores the disposition the process started with.
            unsafe { libc::signal(signal, libc::SIG_IGN) };
        }
    }
}

/// A line on stderr; a reader that went away (`2>&1 | head`) stops no grading.
fn note(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A line of the summary on stdout, likewise.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn print_summary(results: &[GradeResult], out_name: &str) {
    let s = GradeSummary::of(results);
    say(format_args!("{} rows: {} graded, {} bad, {} failed; results in {out_name}", s.rows, s.graded, s.bad_rows, s.failed));
    let lines = |status| results.iter().filter(|r| r.status == status).map(|r| r.line.to_string()).collect::<Vec<_>>().join(", ");
    if s.bad_rows > 0 {
        say(format_args!("bad rows (input lines): {}", lines(RowStatus::BadRow)));
    }
    if s.failed > 0 {
        say(format_args!("failed rows (input lines): {}", lines(RowStatus::Failed)));
    }
    if s.labelled > 0 {
        say(format_args!(
            "agreement with labels: {}/{} ({:.1}%) of graded rows with a label",
            s.agreed,
            s.labelled,
            100.0 * s.agreed as f64 / s.labelled as f64
        ));
    }
}
