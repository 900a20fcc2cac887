//! `genprm verify`: judge every paragraph of one or more solutions.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use console::style;

use genprm::exec::native::{Isolation, PythonSandbox, SandboxConfig};
use genprm::exec::{CodeExecutor, ExecOutcome, terminal_safe};
use genprm::generate::block_on;
use genprm::prm::{self, Event, History, Mode, PromptStyle, RewardMode, Solution, TextSource, VerifyOptions};
use genprm::{Sampling, TemplateChoice};

use super::ModelArgs;
use super::backend::{AnyEngine, Backend, BackendArgs, run_pool};

#[derive(Clone, Copy, ValueEnum)]
enum StyleArg {
    /// `Question: {problem}\n\n{step1}` and `<｜Assistant｜>` before `<analyze>` (model card, training data).
    Card,
    /// `{problem}\n{step1}`, no Assistant tag (the official ProcessBench script).
    Processbench,
}

#[derive(Clone, Copy, ValueEnum)]
enum RewardArg {
    /// vLLM 0.7.1's processed log-probabilities, as GenPRM's code (often exactly 0 or 1).
    Official,
    /// softmax of the raw Yes/No logits (graded).
    Calibrated,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Analysis then code verification (default).
    CotCode,
    /// Analysis only.
    Cot,
    /// Code verification only.
    Code,
}

#[derive(Clone, Copy, ValueEnum)]
enum HistoryArg {
    /// Each of the N samples keeps its own earlier rationales (the paper).
    PerPath,
    /// All samples share the first sample's rationales (the official helper).
    Shared,
}

#[derive(Clone, Copy, ValueEnum)]
enum TemplateArg {
    /// The checkpoint's chat template.
    Checkpoint,
    /// The original DeepSeek-R1-Distill template.
    Original,
    /// The updated DeepSeek-R1-Distill template.
    Think,
}

/// The protocol options shared by `verify` and `eval`.
#[derive(Args)]
pub struct ProtocolArgs {
    /// Rationales per paragraph (Maj@N); rewards are averaged.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=genprm::prm::MAX_SAMPLES as i64))]
    samples: u32,
    /// Prompt layout (verify: card; eval: processbench).
    #[arg(long, value_enum)]
    style: Option<StyleArg>,
    /// Reward computation.
    #[arg(long, value_enum, default_value = "official")]
    reward: RewardArg,
    /// Which parts of the rationale are generated.
    #[arg(long, value_enum, default_value = "cot-code")]
    mode: ModeArg,
    /// Histories of the N samples.
    #[arg(long, value_enum, default_value = "per-path")]
    history: HistoryArg,
    /// Chat template.
    #[arg(long, value_enum, default_value = "checkpoint")]
    template: TemplateArg,
    /// Deterministic: always the most likely token.
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    greedy: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = genprm::sampling::GENPRM_TEMPERATURE)]
    temperature: f32,
    /// Top-k (0 keeps all).
    #[arg(long, default_value_t = genprm::sampling::GENPRM_TOP_K)]
    top_k: usize,
    /// Top-p.
    #[arg(long, default_value_t = genprm::sampling::GENPRM_TOP_P)]
    top_p: f32,
    /// Random seed; the same seed gives the same verdicts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Do not run the model's code (the official `execute=False`).
    #[arg(long)]
    no_execute: bool,
    /// The Python interpreter for the sandbox.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Run the model's code even where the operating system's sandbox (bubblewrap on Linux,
    /// sandbox-exec on macOS) cannot be set up. Unsafe: the code, which a student's text can
    /// steer, could then read your files and reach your network.
    #[arg(long)]
    allow_unsandboxed_code: bool,
}

/// Arguments of `genprm verify`.
#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A JSON file with `{"problem": ..., "steps": [...]}` or ProcessBench record(s); `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    #[command(flatten)]
    protocol: ProtocolArgs,
    /// Stop each solution at its first paragraph with reward < 0.5.
    #[arg(long)]
    stop_at_first_error: bool,
    /// One JSON object per solution on stdout (JSON Lines), each printed when it is done.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backend: BackendArgs,
}

/// The sandbox, or nothing when execution is off.
pub enum Executor {
    Python(Box<PythonSandbox>),
    Off,
}

impl CodeExecutor for Executor {
    async fn run(&mut self, code: &str) -> ExecOutcome {
        match self {
            Executor::Python(p) => p.run(code).await,
            Executor::Off => ExecOutcome::Ok { stdout: String::new() },
        }
    }
    async fn reset(&mut self) {
        if let Executor::Python(p) = self {
            p.reset().await;
        }
    }
}

impl ProtocolArgs {
    /// The protocol options; `default_style` applies when `--style` is not given.
    pub fn options(&self, default_style: PromptStyle, stop_at_first_error: bool) -> Result<VerifyOptions> {
        let sampling = Sampling::from_options(self.greedy, self.temperature, self.top_k, self.top_p, self.seed)?;
        Ok(VerifyOptions {
            style: match self.style {
                Some(StyleArg::Card) => PromptStyle::Card,
                Some(StyleArg::Processbench) => PromptStyle::ProcessBench,
                None => default_style,
            },
            mode: match self.mode {
                ModeArg::CotCode => Mode::CotCode,
                ModeArg::Cot => Mode::Cot,
                ModeArg::Code => Mode::Code,
            },
            execute: !self.no_execute,
            reward: match self.reward {
                RewardArg::Official => RewardMode::Official,
                RewardArg::Calibrated => RewardMode::Calibrated,
            },
            samples: self.samples as usize,
            history: match self.history {
                HistoryArg::PerPath => History::PerPath,
                HistoryArg::Shared => History::Shared,
            },
            template: match self.template {
                TemplateArg::Checkpoint => TemplateChoice::Checkpoint,
                TemplateArg::Original => TemplateChoice::Original,
                TemplateArg::Think => TemplateChoice::Think,
            },
            sampling,
            stop_at_first_error,
            ..VerifyOptions::default()
        })
    }

    /// The sampling seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A sandbox for one path: isolated by the kernel, or, where that cannot be set up and the
    /// user passed `--allow-unsandboxed-code`, without isolation (said on stderr).
    fn sandbox(&self) -> Result<PythonSandbox> {
        let config = SandboxConfig { python: self.python.clone(), ..Default::default() };
        match PythonSandbox::new(config.clone()) {
            Ok(sandbox) => Ok(sandbox),
            Err(e) if self.allow_unsandboxed_code => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!("warning: {e}\nwarning: running the model's code WITHOUT isolation (--allow-unsandboxed-code)");
                });
                PythonSandbox::new(SandboxConfig { isolation: Isolation::Unsandboxed, ..config })
                    .context("starting the Python interpreter (unsandboxed)")
            }
            Err(e) => Err(e).context("starting the Python sandbox"),
        }
    }

    /// One executor per path the options need (the sandbox, or none when execution is off).
    pub fn executors(&self, options: &VerifyOptions) -> Result<Vec<Executor>> {
        let paths = if options.history == History::PerPath { options.samples } else { 1 };
        (0..paths)
            .map(|_| {
                Ok(if options.execute {
                    Executor::Python(Box::new(self.sandbox()?))
                } else {
                    Executor::Off
                })
            })
            .collect()
    }
}

fn read_input(path: &PathBuf) -> Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        Ok((s, "<stdin>".into()))
    } else {
        let s = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Ok((s, path.display().to_string()))
    }
}

/// Runs `genprm verify`.
pub fn run(args: VerifyArgs) -> Result<()> {
    let options = args.protocol.options(PromptStyle::Card, args.stop_at_first_error)?;
    // Validate every solution before loading anything: bad input costs nothing.
    let (text, source) = read_input(&args.input)?;
    let solutions = prm::parse_solutions(&text, &source)?;
    let backend = Backend::open(&args.model, &args.backend)?;
    let tokenizer = backend.tokenizer()?;
    let mut failures = 0usize;
    let mut stdout = std::io::stdout();
    let workers = args.backend.concurrency();
    // One worker streams straight to stdout; several write each solution's report into a
    // buffer, printed in input order as soon as the solutions before it are printed.
    let mut pending: std::collections::BTreeMap<usize, Vec<u8>> = std::collections::BTreeMap::new();
    let mut next_to_print = 0usize;
    let make_worker = || args.protocol.executors(&options);
    let work = |executors: &mut Vec<Executor>, i: usize| -> Result<(Vec<u8>, bool)> {
        let solution = &solutions[i];
        let mut engine = backend.engine()?;
        if workers == 1 {
            let mut out = std::io::stdout().lock();
            let failed = verify_one(&mut engine, tokenizer, executors, solution, i, &options, backend.context(), args.json, &mut out)?;
            Ok((Vec::new(), failed))
        } else {
            let mut out = Vec::new();
            let failed = verify_one(&mut engine, tokenizer, executors, solution, i, &options, backend.context(), args.json, &mut out)?;
            Ok((out, failed))
        }
    };
    run_pool(solutions.len(), workers, make_worker, work, |i, r| {
        let (buffer, failed) = r?;
        failures += usize::from(failed);
        pending.insert(i, buffer);
        while let Some(buffer) = pending.remove(&next_to_print) {
            stdout.write_all(&buffer).context("writing to stdout")?;
            next_to_print += 1;
        }
        stdout.flush().context("writing to stdout")?;
        Ok(())
    })?;
    if failures > 0 {
        bail!("{failures} of {} solution(s) could not be verified completely (the paragraphs judged before the error are in the output)", solutions.len());
    }
    Ok(())
}

/// Verifies one solution, writing its streamed report (or its JSON line) to `out`; returns
/// whether the verification stopped with an error.
#[allow(clippy::too_many_arguments)]
fn verify_one(
    engine: &AnyEngine<'_>,
    tokenizer: &genprm::Tokenizer,
    executors: &mut [Executor],
    solution: &Solution,
    i: usize,
    options: &VerifyOptions,
    context: usize,
    json: bool,
    out: &mut impl Write,
) -> Result<bool> {
    let name = solution.id.clone().unwrap_or_else(|| format!("solution {}", i + 1));
    if !json {
        writeln!(out, "{}", style(format!("══ {name} ══")).bold())?;
        writeln!(out, "{}", style(&solution.problem).italic())?;
    }
    let mut report = Report { out: &mut *out, solution, json, io_error: None };
    let result = block_on(prm::input::verify_within_context(engine, tokenizer, executors, solution, options, context, &mut |e| report.event(e)));
    if let Some(e) = report.io_error.take() {
        return Err(e).context("writing to stdout");
    }
    let (verification, error) = match result {
        Ok(v) => (v, None),
        Err(partial) => (partial.completed, Some(partial.error.to_string())),
    };
    if let Some(e) = &error {
        // The cause goes to stderr too, not only into the report or the JSON on stdout.
        eprintln!("{name}: {e}");
    }
    if json {
        let obj = serde_json::json!({
            "id": solution.id,
            "label": solution.label,
            "complete": error.is_none(),
            "error": error,
            "steps": verification.steps,
            "first_error_step": verification.first_error_step,
            "scores": verification.scores,
        });
        serde_json::to_writer(&mut *out, &obj)?;
        writeln!(out)?;
    } else {
        summary(out, &verification, solution, error.as_deref())?;
    }
    out.flush()?;
    Ok(error.is_some())
}

struct Report<'a, W: Write> {
    out: &'a mut W,
    solution: &'a Solution,
    json: bool,
    io_error: Option<std::io::Error>,
}

impl<W: Write> Report<'_, W> {
    fn event(&mut self, e: Event<'_>) {
        if self.json || self.io_error.is_some() {
            return;
        }
        if let Err(err) = self.print(e) {
            self.io_error = Some(err);
        }
    }

    fn print(&mut self, e: Event<'_>) -> std::io::Result<()> {
        let out = &mut *self.out;
        match e {
            Event::StepStarted { step, sample: 0 } => {
                writeln!(out, "\n{}", style(format!("── Paragraph {} ──", step + 1)).bold().cyan())?;
                writeln!(out, "{}\n", style(terminal_safe(&self.solution.steps[step])).bold())?;
            }
            Event::Text { sample: 0, text, source, .. } => {
                let text = terminal_safe(text);
                let s = match source {
                    TextSource::Forced => style(text).dim(),
                    TextSource::Model => style(text),
                    TextSource::CodeOutput => style(text).yellow(),
                };
                write!(out, "{s}")?;
            }
            Event::Fallback { sample: 0, text, .. } => {
                writeln!(out, "\n{}", style("[verification dropped after its budget; judging from the analysis]").magenta())?;
                write!(out, "{}", style(terminal_safe(text)).dim())?;
            }
            Event::StepDone { verdict } => {
                // The samples decode together, so their verdicts are listed once all are in.
                writeln!(out)?;
                for (sample, r) in verdict.samples.iter().enumerate() {
                    let verdict = match r.reward.judgement {
                        Some(prm::Judgement::Yes) => style("Yes".to_string()).green(),
                        Some(prm::Judgement::No) => style("No".to_string()).red(),
                        None => style("undecided".to_string()).yellow(),
                    };
                    writeln!(out, "  sample {}: {verdict}  reward {:.3}", sample + 1, r.reward.value)?;
                }
                let r = verdict.reward;
                let mark = if r >= 0.5 { style(format!("✓ correct (reward {r:.3})")).green() } else { style(format!("✗ wrong (reward {r:.3})")).red() };
                writeln!(out, "{} {mark}", style(format!("Paragraph {}:", verdict.index + 1)).bold())?;
            }
            _ => {}
        }
        out.flush()
    }
}

fn summary(out: &mut impl Write, v: &prm::Verification, solution: &Solution, error: Option<&str>) -> std::io::Result<()> {
    writeln!(out)?;
    if let Some(e) = error {
        writeln!(out, "{} {}", style("error:").red().bold(), terminal_safe(e))?;
    }
    let first = if v.first_error_step < 0 {
        style("no wrong paragraph found".to_string()).green()
    } else {
        style(format!("first wrong paragraph: {}", v.first_error_step + 1)).red()
    };
    writeln!(out, "{}  (scores: min {:.3}, last {:.3}, mean {:.3})", style(first).bold(), v.scores.min, v.scores.last, v.scores.mean)?;
    if let Some(label) = solution.label {
        let agree = label == v.first_error_step;
        let expected = if label < 0 { "no error".to_string() } else { format!("paragraph {}", label + 1) };
        writeln!(out, "label: {expected} — {}", if agree { style("agrees").green() } else { style("disagrees").red() })?;
    }
    writeln!(out)
}
