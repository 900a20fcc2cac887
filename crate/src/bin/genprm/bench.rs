//! `genprm bench`: prefill and decode speed, time to first token, load time and peak memory.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

use genprm::bench::{self, RandomWeights};
use genprm::{DeviceKind, LoadOptions, QuantFormat};

#[derive(Clone, Copy, ValueEnum)]
enum Shape {
    /// GenPRM-1.5B: hidden 1536, 28 layers, 12 heads, 2 KV heads, intermediate 8960, vocab 151936.
    #[value(name = "qwen2-1.5b")]
    Qwen2_1_5b,
    /// The same architecture at a quarter of the width and 4 layers, for quick runs.
    #[value(name = "qwen2-small")]
    Small,
    /// GenPRM-1.5B's 28 layers, heads and vocabulary at a quarter of its width: the real
    /// model's launches per step in less memory (host-cost measurements).
    #[value(name = "qwen2-1.5b-narrow")]
    Narrow,
}

#[derive(Clone, Copy, ValueEnum)]
enum Quant {
    F32,
    Q8,
    Q4,
}

/// Arguments of `genprm bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// A checkpoint directory to measure.
    #[arg(long, value_name = "DIR", conflicts_with = "random_shape", required_unless_present = "random_shape")]
    model: Option<PathBuf>,
    /// Random weights at a named shape (the real sizes without the real weights).
    #[arg(long, value_enum)]
    random_shape: Option<Shape>,
    /// Weight format.
    #[arg(long, value_enum, default_value = "f32")]
    quant: Quant,
    /// Where to compute.
    #[arg(long, default_value = "cpu", value_name = "cpu|gpu")]
    device: DeviceKind,
    #[command(flatten)]
    gpu: crate::GpuArgs,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Prompt length.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Instead of the speed table: Pass@1 against Maj@N — one sampled request, then N concurrent
    /// ones on the same prompt, decoded as one batch — and the ratio of their wall times.
    #[arg(long, value_name = "N")]
    maj: Option<usize>,
    /// The tokenizer directory for `--maj` with `--random-shape` (a checkpoint brings its own).
    #[arg(long, value_name = "DIR")]
    tokenizer: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `genprm bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.batch == 0 || args.prompt_tokens == 0 {
        bail!("--batch and --prompt-tokens must be at least 1");
    }
    let device = genprm::device(args.device)?;
    let quant = match args.quant {
        Quant::F32 => None,
        Quant::Q8 => Some(QuantFormat::Q8),
        Quant::Q4 => Some(QuantFormat::Q4),
    };
    let options = args.gpu.load_options(quant, None);
    if let Some(samples) = args.maj {
        return run_maj(&args, samples, &device, options);
    }
    let measure = bench::BenchShape { batch: args.batch, prompt_tokens: args.prompt_tokens, new_tokens: args.new_tokens };
    let (label, result) = match (&args.model, args.random_shape) {
        (Some(dir), _) => {
            let config = genprm::Qwen2Config::from_file(&dir.join("config.json"))?;
            let source = genprm::weights::Checkpoint::open(dir)?;
            (dir.display().to_string(), bench::run(config, &source, &device, options, measure)?)
        }
        (None, Some(shape)) => {
            let (name, config) = match shape {
                Shape::Qwen2_1_5b => ("qwen2-1.5b (random)", bench::qwen2_1_5b()),
                Shape::Small => ("qwen2-small (random)", bench::qwen2_small()),
                Shape::Narrow => ("qwen2-1.5b-narrow (random)", bench::qwen2_1_5b_narrow()),
            };
            let source = RandomWeights::new(config.clone(), 1);
            (name.to_string(), bench::run(config, &source, &device, options, measure)?)
        }
        (None, None) => bail!("give --model DIR or --random-shape"),
    };
    let quant = quant.map_or("f32".to_string(), |q| q.to_string());
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": label, "quant": quant, "device": args.device.to_string(), "cpu_kernel": cpu_kernel(), "batch": args.batch,
                "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "result": result,
            })
        );
    } else {
        println!("model {label}, {quant}, device {}, batch {}, prompt {} tokens, {} new tokens", args.device, args.batch, args.prompt_tokens, args.new_tokens);
        println!("  CPU kernel (quantized products)    {:>9}", cpu_kernel());
        if let Some(name) = &result.gpu_adapter {
            println!("  GPU adapter                        {name}");
        }
        println!("  load (incl. quantization)          {:>9.2} s", result.load_s);
        println!("  first call (kernel compilation)    {:>9.2} s", result.first_call_s);
        println!("  prefill                            {:>9.1} tokens/s", result.prefill_tok_s);
        println!("  time to first token                {:>9.3} s", result.ttft_s);
        println!("  decode                             {:>9.2} tokens/s", result.decode_tok_s);
        if let Some(ms) = result.decode_host_ms_per_step {
            println!("  host CPU per decode step           {ms:>9.2} ms");
        }
        match result.peak_host_mib {
            Some(m) => println!("  peak host memory                   {m:>9.0} MiB"),
            None => println!("  peak host memory                   n/a"),
        }
        if let Some(m) = result.peak_device_mib {
            println!("  peak device memory (GPU pools)     {m:>9.0} MiB");
        }
        if let Some(f16) = result.gpu_f16 {
            println!("  GPU f16 mode (prefill, KV cache)   {:>9}", if f16 { "on" } else { "off" });
        }
        println!("  KV cache ({})                      {:>9.0} MiB", result.kv_cache, result.kv_cache_mib);
        println!("  weights read per decode step       {:>9.0} MiB", result.weight_bytes_per_step as f64 / (1 << 20) as f64);
        if let (Some(gb), Some(bound)) = (result.read_gb_s, result.decode_bound_tok_s) {
            println!("  memory read bandwidth (probe)      {gb:>9.1} GB/s");
            println!("  decode bound (bandwidth / weights) {bound:>9.2} tokens/s ({:.0}% reached)", 100.0 * result.decode_tok_s / bound);
        }
        if let Some(k) = &result.gpu_matvec {
            println!("  GPU decode kernel                  {k:>9}");
        }
    }
    Ok(())
}

/// `genprm bench --maj N`.
fn run_maj(args: &BenchArgs, samples: usize, device: &genprm::burn::tensor::Device, options: LoadOptions) -> Result<()> {
    use anyhow::Context;
    let (label, config, source, tok_dir): (String, _, Box<dyn genprm::weights::TensorSource>, PathBuf) = match (&args.model, args.random_shape) {
        (Some(dir), _) => {
            let config = genprm::Qwen2Config::from_file(&dir.join("config.json"))?;
            let tok = args.tokenizer.clone().unwrap_or_else(|| dir.clone());
            (dir.display().to_string(), config, Box::new(genprm::weights::Checkpoint::open(dir)?), tok)
        }
        (None, Some(shape)) => {
            let (name, config) = match shape {
                Shape::Qwen2_1_5b => ("qwen2-1.5b (random)", bench::qwen2_1_5b()),
                Shape::Small => ("qwen2-small (random)", bench::qwen2_small()),
                Shape::Narrow => ("qwen2-1.5b-narrow (random)", bench::qwen2_1_5b_narrow()),
            };
            let Some(tok) = args.tokenizer.clone() else { bail!("--maj with --random-shape needs --tokenizer DIR (a DeepSeek-R1-Distill-Qwen tokenizer)") };
            (name.to_string(), config.clone(), Box::new(RandomWeights::new(config, 1)), tok)
        }
        (None, None) => bail!("give --model DIR or --random-shape"),
    };
    let tokenizer = genprm::Tokenizer::from_dir(&tok_dir).with_context(|| format!("loading the tokenizer from {}", tok_dir.display()))?;
    if tokenizer.vocab_size() > config.vocab_size {
        bail!("the tokenizer in {} has {} tokens, more than the model's {}", tok_dir.display(), tokenizer.vocab_size(), config.vocab_size);
    }
    let model = genprm::Qwen2Model::load_with(config, source.as_ref(), device, options, |_| {})?;
    let r = bench::run_maj(&model, &tokenizer, samples, args.prompt_tokens, args.new_tokens)?;
    let quant = options.quant.map_or("f32".to_string(), |q| q.to_string());
    if args.json {
        println!("{}", serde_json::json!({ "model": label, "quant": quant, "device": args.device.to_string(), "cpu_kernel": cpu_kernel(), "result": r }));
    } else {
        println!("model {label}, {quant}, device {}, prompt {} tokens, {} new tokens per sample", args.device, r.prompt_tokens, r.new_tokens);
        println!("  CPU kernel (quantized products)    {:>9}", cpu_kernel());
        println!("  Pass@1                             {:>9.2} s", r.pass1_s);
        println!("  Maj@{:<3} (one batch)               {:>9.2} s  ({} decode passes)", r.samples, r.maj_s, r.maj_decode_passes);
        println!("  Maj@{}/Pass@1                       {:>9.2}×", r.samples, r.ratio);
    }
    Ok(())
}

/// The CPU kernel the quantized products run with on this machine (`GENPRM_CPU_KERNEL` picks
/// another), for the benchmark's record: rows from different machines compare only with it.
fn cpu_kernel() -> String {
    format!("{:?}", genprm::quant::Kernel::best()).to_ascii_lowercase()
}
