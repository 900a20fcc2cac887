//! `genprm`: the native command-line interface.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use genprm::generate::block_on;
use genprm::{CachedPrefix, DeviceKind, GenerateOptions, LoadedModel, Sampling, SamplingParams};

/// GenPRM on your own machine: run a Qwen2 checkpoint on the CPU or a GPU.
#[derive(Parser)]
#[command(name = "genprm", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the logits the model computes for a sequence of token ids, as JSON.
    Logits(LogitsArgs),
    /// Continue a prompt (text or token ids).
    Generate(GenerateArgs),
    /// Judge every paragraph of a solution with GenPRM (analysis, code, execution, judgement).
    Verify(verify::VerifyArgs),
    /// Grade a file of many solutions (JSON Lines or CSV) into a resumable results file.
    Grade(grade::GradeArgs),
    /// Measure prefill and decode speed, time to first token and memory.
    Bench(bench::BenchArgs),
    /// Write a pre-quantized pack (q4/q8 weights, shards of at most 128 MiB, checksummed manifest).
    Quantize(quantize::QuantizeArgs),
    /// Critic mode: GenPRM critiques a policy model's solution and the policy refines it.
    Refine(refine::RefineArgs),
    /// Evaluate GenPRM on a benchmark.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
}

#[derive(Args)]
pub(crate) struct ModelArgs {
    /// A Hugging Face checkpoint directory (config.json, tokenizer.json, *.safetensors).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Where to compute: `cpu`, or `gpu` (wgpu: Vulkan, Metal, DX12).
    #[arg(long, default_value = "cpu", value_name = "cpu|gpu")]
    device: DeviceKind,
    /// Quantize the weights while loading: q4 or q8 (weight-only, groups of 32). A
    /// pre-quantized pack (`genprm quantize`) is loaded as it is (another format is an error).
    #[arg(long, value_name = "q4|q8")]
    quant: Option<genprm::QuantFormat>,
    /// Format of the embedding and lm_head when quantizing (default: as --quant).
    #[arg(long, value_name = "q4|q8", requires = "quant")]
    head_quant: Option<genprm::QuantFormat>,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// How the model computes on a GPU and stores its KV cache: the options every command that
/// loads a model shares. The environment variables are defaults a flag overrides.
#[derive(Args)]
pub(crate) struct GpuArgs {
    /// f16 arithmetic in the prompt's (prefill's) products of quantized weights on a GPU: `auto`
    /// where the GPU has it (shader-f16), `on` (an error on a GPU without it), or `off`.
    #[arg(long, value_enum, default_value = "auto", env = "GENPRM_GPU_F16")]
    gpu_f16: GpuF16,
    /// How the KV cache stores keys and values: `f16` halves its memory and the bytes decode
    /// attention reads (attention still computes in f32); `auto` is f16 on a GPU in f16 mode and
    /// f32 on the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    kv_cache: KvCacheFormat,
    /// The decode kernel of packed weights on a GPU: `auto` (cooperative on a hardware GPU,
    /// per-unit on a software adapter), `cooperative` or `per-unit`.
    #[arg(long, value_name = "auto|cooperative|per-unit", default_value = "auto", env = "GENPRM_GPU_MATVEC", value_parser = auto_or::<genprm::MatvecKernel>)]
    gpu_matvec: AutoOr<genprm::MatvecKernel>,
    /// How decode attends on a GPU: `fused` (one kernel per layer) or `ops` (burn's generic
    /// operations, for comparisons).
    #[arg(long, value_enum, default_value = "fused", env = "GENPRM_GPU_ATTENTION")]
    gpu_attention: genprm::DecodeAttention,
    /// How decode steps reach a GPU: `replay` (recorded once, replayed with new inputs) or
    /// `launch` (every launch issued anew, for comparisons).
    #[arg(long, value_enum, default_value = "replay", env = "GENPRM_GPU_DECODE")]
    gpu_decode: genprm::GpuDecode,
}

/// A library choice, or `auto`: the library decides (`None`).
#[derive(Clone, Copy)]
pub(crate) struct AutoOr<T>(Option<T>);

/// Parses `auto` or one of `T`'s values (the library's enum, its CLI names derived there).
fn auto_or<T: ValueEnum>(s: &str) -> Result<AutoOr<T>, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(AutoOr(None));
    }
    T::from_str(s, true).map(|v| AutoOr(Some(v))).map_err(|_| {
        let names: Vec<String> = T::value_variants().iter().filter_map(|v| v.to_possible_value()).map(|p| p.get_name().to_string()).collect();
        format!("`{s}` is not one of auto, {}", names.join(", "))
    })
}

impl GpuArgs {
    /// The load options these flags ask for, with the weights' formats.
    pub(crate) fn load_options(&self, quant: Option<genprm::QuantFormat>, head_quant: Option<genprm::QuantFormat>) -> genprm::LoadOptions {
        genprm::LoadOptions {
            quant,
            head_quant,
            gpu_f16: self.gpu_f16.option(),
            kv_f16: self.kv_cache.option(),
            gpu_matvec: self.gpu_matvec.0,
            gpu_attention: self.gpu_attention,
            gpu_decode: self.gpu_decode,
        }
    }
}

/// The `--kv-cache` choice.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum KvCacheFormat {
    /// f16 on a GPU in f16 mode, f32 on the CPU.
    Auto,
    /// Keys and values in f32.
    F32,
    /// Keys and values in f16 (on a GPU: in f16 mode only).
    F16,
}

impl KvCacheFormat {
    /// The choice as [`genprm::LoadOptions::kv_f16`].
    pub(crate) fn option(self) -> Option<bool> {
        match self {
            KvCacheFormat::Auto => None,
            KvCacheFormat::F32 => Some(false),
            KvCacheFormat::F16 => Some(true),
        }
    }
}

/// The `--gpu-f16` choice.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum GpuF16 {
    /// f16 where the GPU has f16 arithmetic.
    Auto,
    /// Always f16 (an error on a device without it).
    #[value(alias = "1", alias = "true")]
    On,
    /// Always f32.
    #[value(alias = "0", alias = "false")]
    Off,
}

impl GpuF16 {
    /// The choice as [`genprm::LoadOptions::gpu_f16`].
    pub(crate) fn option(self) -> Option<bool> {
        match self {
            GpuF16::Auto => None,
            GpuF16::On => Some(true),
            GpuF16::Off => Some(false),
        }
    }
}

#[derive(Args)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    ids: Vec<u32>,
    /// Print every position's logits, not only the last.
    #[arg(long)]
    all_positions: bool,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt text (encoded with the tokenizer's BOS as its config says).
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    prompt: Option<String>,
    /// The prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    ids: Option<Vec<u32>>,
    /// How many tokens to generate at most.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Always take the most likely token (the default unless a sampling option is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p", "seed"])]
    greedy: bool,
    /// Sampling temperature (default 0.6 when sampling).
    #[arg(long)]
    temperature: Option<f32>,
    /// Keep only the K most likely tokens (default 20 when sampling; 0 keeps all).
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling mass (default 0.95 when sampling).
    #[arg(long)]
    top_p: Option<f32>,
    /// Random seed; the same seed gives the same text (default 0 when sampling).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when the text contains this string (repeatable); it is kept in the output.
    #[arg(long = "stop", value_name = "STRING")]
    stop_strings: Vec<String>,
    /// Do not stop at the config's end-of-sequence ids.
    #[arg(long)]
    ignore_eos: bool,
    /// Print `{"ids": [...], "text": "...", "stop": {...}}` instead of streaming text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Logits(args) => logits(args),
        Command::Generate(args) => generate(args),
        Command::Verify(args) => verify::run(args),
        Command::Grade(args) => grade::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Eval(command) => eval::run(command),
        Command::Refine(args) => refine::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

mod backend;
mod bench;
mod eval;
mod grade;
mod quantize;
mod refine;
mod verify;

/// Loads the checkpoint, with a progress bar when stderr is a terminal.
impl ModelArgs {
    /// The device asked for.
    pub(crate) fn device_kind(&self) -> DeviceKind {
        self.device
    }
}

pub(crate) fn load(args: &ModelArgs) -> Result<LoadedModel> {
    let device = genprm::device(args.device)?;
    let bar = if std::io::stderr().is_terminal() { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} loading {msg} [{bar:30}] {pos}/{len} tensors")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    // A pack is loaded as it is: a --quant it cannot honour is an error, not ignored.
    if let Some(quant) = args.quant
        && genprm::pack::Pack::is_pack(&args.model)
    {
        let manifest = genprm::pack::Manifest::read(&args.model)?;
        if manifest.quant != quant {
            anyhow::bail!(
                "{} is a {} pack, loaded as it is: --quant {quant} cannot apply to it (give the float checkpoint to choose the format, or leave --quant out)",
                args.model.display(),
                manifest.quant
            );
        }
    }
    let options = args.gpu.load_options(args.quant, args.head_quant);
    let model = LoadedModel::load_with(&args.model, &device, options, |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.tensor.to_string());
    })
    .with_context(|| format!("loading the model from {}", args.model.display()))?;
    bar.finish_and_clear();
    Ok(model)
}

fn logits(args: LogitsArgs) -> Result<()> {
    let loaded = load(&args.model)?;
    let rows = block_on(genprm::score(&loaded.model, &args.ids))?;
    let first = if args.all_positions { 0 } else { rows.len() - 1 };
    let out = serde_json::json!({
        "vocab_size": loaded.model.vocab_size(),
        "positions": (first..rows.len()).collect::<Vec<_>>(),
        "logits": &rows[first..],
    });
    let mut w = BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer(&mut w, &out)?;
    writeln!(w)?;
    w.flush()?;
    Ok(())
}

fn sampling(args: &GenerateArgs) -> Result<Sampling> {
    if args.greedy || (args.temperature.is_none() && args.top_k.is_none() && args.top_p.is_none() && args.seed.is_none()) {
        return Ok(Sampling::Greedy);
    }
    let d = SamplingParams::default();
    let p = SamplingParams {
        temperature: args.temperature.unwrap_or(d.temperature),
        top_k: args.top_k.or(d.top_k),
        top_p: args.top_p.unwrap_or(d.top_p),
        seed: args.seed.unwrap_or(d.seed),
    };
    p.validate()?;
    Ok(Sampling::Sample(p))
}

fn generate(args: GenerateArgs) -> Result<()> {
    let sampling = sampling(&args)?;
    let loaded = load(&args.model)?;
    let prompt = match (&args.prompt, &args.ids) {
        (Some(text), _) => loaded.tokenizer()?.encode(text, true)?,
        (None, Some(ids)) => ids.clone(),
        (None, None) => bail!("give --prompt or --ids"),
    };
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        stop_token_ids: if args.ignore_eos { Vec::new() } else { loaded.model.config().eos_ids() },
        stop_strings: args.stop_strings.clone(),
        ..Default::default()
    };
    let tokenizer = loaded.tokenizer.as_ref();
    let mut cache = CachedPrefix::new();
    let stream = !args.json && tokenizer.is_some();
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let result = block_on(genprm::generate(&loaded.model, tokenizer, &mut cache, &prompt, &options, |ev| {
        if stream && write_error.is_none() {
            if let Err(e) = stdout.write_all(ev.text.as_bytes()).and_then(|()| stdout.flush()) {
                write_error = Some(e);
            }
        }
    }))?;
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    if args.json {
        let out = serde_json::json!({
            "ids": result.ids,
            "text": tokenizer.map(|_| result.text.clone()),
            "stop": result.stop,
        });
        serde_json::to_writer(&mut stdout, &out)?;
        writeln!(stdout)?;
    } else if stream {
        writeln!(stdout)?;
    } else {
        let ids: Vec<String> = result.ids.iter().map(u32::to_string).collect();
        writeln!(stdout, "{}", ids.join(","))?;
    }
    Ok(())
}
