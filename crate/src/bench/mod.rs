//! Speed and memory measurements at real model shapes: a [`TensorSource`] of random weights for
//! a given config (so the real loading code runs, quantization included) and the timing of
//! prefill and decode.
//!
//! [`bandwidth`] measures a device's memory bandwidth. May import anything below the protocol;
//! nothing but the CLI and the browser API imports it.

pub mod bandwidth;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::load::config::Qwen2Config;
use crate::error::{Error, Result};
use crate::model::{KvCache, LoadOptions, LogitsFor, Qwen2Model};
use crate::load::safetensors::{AsyncTensorSource, HostTensor, TensorSource};

/// The config of GenPRM-1.5B (DeepSeek-R1-Distill-Qwen-1.5B).
pub fn qwen2_1_5b() -> Qwen2Config {
    let text = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":151936,
        "hidden_size":1536,"intermediate_size":8960,"num_hidden_layers":28,"num_attention_heads":12,
        "num_key_value_heads":2,"max_position_embeddings":131072,"rope_theta":10000,"rms_norm_eps":1e-06,
        "tie_word_embeddings":false,"bos_token_id":151643,"eos_token_id":151643,"torch_dtype":"bfloat16"}"#;
    Qwen2Config::from_json_str(text, Path::new("qwen2-1.5b")).expect("built-in config is valid")
}

/// A small shape for quick runs (same architecture, 1/4 of the widths, 4 layers).
pub fn qwen2_small() -> Qwen2Config {
    let mut c = qwen2_1_5b();
    c.hidden_size = 384;
    c.intermediate_size = 2240;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 3;
    c.num_key_value_heads = Some(1);
    c
}

/// GenPRM-1.5B's depth, heads and vocabulary at a quarter of its width, for measuring what the
/// host spends per token where the device's memory or time must stay small (`scripts/bench-host`
/// on Dawn's null device, which does not hold the full shape): the same 28 layers, 12 query and 2
/// key/value heads of 128 and the 151,936-token vocabulary, so a decode step makes exactly the
/// launches and reads back the same logits row as the real model; only the hidden (384) and
/// MLP (2240) widths shrink, which changes the products' sizes, not their number.
pub fn qwen2_1_5b_narrow() -> Qwen2Config {
    let mut c = qwen2_1_5b();
    c.head_dim = Some(c.head_dim());
    c.hidden_size = 384;
    c.intermediate_size = 2240;
    c
}

/// Random weights for every tensor a config calls for (norm weights near 1, others scaled by
/// 1/√fan-in), generated on demand one tensor at a time.
pub struct RandomWeights {
    config: Qwen2Config,
    seed: u64,
}

impl RandomWeights {
    /// Random weights for `config`.
    pub fn new(config: Qwen2Config, seed: u64) -> Self {
        RandomWeights { config, seed }
    }

    fn expected_shape(&self, name: &str) -> Option<Vec<usize>> {
        let c = &self.config;
        let (h, hd, nh, kv, inter, v) = (c.hidden_size, c.head_dim(), c.num_attention_heads, c.kv_heads(), c.intermediate_size, c.vocab_size);
        if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
            return Some(vec![v, h]);
        }
        if name == "model.norm.weight" {
            return Some(vec![h]);
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (_, field) = rest.split_once('.')?;
        Some(match field {
            "input_layernorm.weight" | "post_attention_layernorm.weight" => vec![h],
            "self_attn.q_proj.weight" => vec![nh * hd, h],
            "self_attn.q_proj.bias" => vec![nh * hd],
            "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![kv * hd, h],
            "self_attn.k_proj.bias" | "self_attn.v_proj.bias" => vec![kv * hd],
            "self_attn.o_proj.weight" => vec![h, nh * hd],
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![inter, h],
            "mlp.down_proj.weight" => vec![h, inter],
            _ => return None,
        })
    }
}

impl RandomWeights {
    /// Elements `range` of a tensor: a counter-based generator, so any part can be produced on
    /// its own (large matrices are loaded a block of rows at a time).
    fn values(&self, name: &str, shape: &[usize], range: std::ops::Range<usize>) -> Vec<f32> {
        let key = self.seed ^ name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let norm = name.ends_with("norm.weight");
        let scale = if shape.len() == 2 { 1.0 / (shape[1] as f32).sqrt() } else { 0.1 };
        range
            .map(|i| {
                // splitmix64 of (key, index): a uniform value in [-1, 1), times √3 for unit variance.
                let mut z = key.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let u = (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                if norm { 1.0 + 0.1 * u } else { u * 1.732 * scale }
            })
            .collect()
    }
}

impl TensorSource for RandomWeights {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.expected_shape(name).ok_or_else(|| Error::MissingTensor { path: PathBuf::from("<random>"), tensor: name.into() })
    }
    fn read_f32(&self, name: &str) -> Result<HostTensor> {
        let shape = TensorSource::shape(self, name)?;
        let n: usize = shape.iter().product();
        let data = self.values(name, &shape, 0..n);
        Ok(HostTensor { shape, data })
    }
    fn file_of(&self, _: &str) -> PathBuf {
        PathBuf::from("<random>")
    }
    fn reads_rows(&self, name: &str) -> bool {
        self.expected_shape(name).is_some_and(|s| s.len() == 2)
    }
    fn read_rows_f32(&self, name: &str, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let shape = TensorSource::shape(self, name)?;
        let cols = shape.get(1).copied().unwrap_or(1);
        Ok(self.values(name, &shape, rows.start * cols..rows.end * cols))
    }
}

/// What one benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Seconds to build the model on the device (including quantization).
    pub load_s: f64,
    /// Seconds of the first forward pass after loading (kernel/shader compilation, allocations).
    pub first_call_s: f64,
    /// Prompt tokens per second of the prefill (per sequence × batch).
    pub prefill_tok_s: f64,
    /// Seconds from the prompt to the first generated token's logits on the host.
    pub ttft_s: f64,
    /// Generated tokens per second (all sequences of the batch together).
    pub decode_tok_s: f64,
    /// Peak resident host memory of the process, in MiB (Linux only).
    pub peak_host_mib: Option<f64>,
    /// Peak GPU memory genprm reserved (weights, KV cache, activations, scratch), sampled after
    /// loading, prefill and decode; `None` on the CPU device.
    pub peak_device_mib: Option<f64>,
    /// Whether the model ran in f16 mode on the GPU (f16 prefill products and KV cache, for
    /// quantized weights where the GPU has f16 arithmetic); `None` on the CPU device.
    pub gpu_f16: Option<bool>,
    /// Bytes of parameters one decode step reads ([`Qwen2Model::decode_weight_bytes`]).
    pub weight_bytes_per_step: u64,
    /// The device's memory read bandwidth in GB/s, measured after the run
    /// ([`crate::bench::bandwidth::read_gb_s`]); `None` where it is not measured (the browser's CPU).
    pub read_gb_s: Option<f64>,
    /// Decode's memory-bandwidth bound: batch × bandwidth ÷ weight bytes per step, tokens per
    /// second (the KV cache's reads left out: small at short contexts).
    pub decode_bound_tok_s: Option<f64>,
    /// The GPU adapter as its driver names it; `None` on the CPU device.
    pub gpu_adapter: Option<String>,
    /// The packed matrix-vector kernel of decode on the GPU (`per-unit` or `cooperative`);
    /// `None` on the CPU device and for f32 weights.
    pub gpu_matvec: Option<String>,
    /// How the KV cache stored keys and values: `f32` or `f16` ([`crate::LoadOptions::kv_f16`]).
    pub kv_cache: String,
    /// The KV cache's size after decoding, in MiB ([`KvCache::bytes`]: every row and layer, the
    /// capacity allocated in steps of [`crate::model::KV_CACHE_STEP`] positions).
    pub kv_cache_mib: f64,
    /// The process's CPU time (user and system, every thread) per decode step, in ms: on a
    /// device that runs nothing ([`crate::DeviceKind::NullGpu`]) what the host alone spends per
    /// step. `None` in a browser (`scripts/bench-host` measures it there).
    pub decode_host_ms_per_step: Option<f64>,
    /// On a GPU, how many decode steps were replayed from a recording
    /// ([`crate::LoadOptions::gpu_decode`]); `None` on the CPU device.
    pub decode_replayed_steps: Option<usize>,
}

/// CPU seconds this process has used so far (user and system, every thread); `None` in a
/// browser.
pub fn process_cpu_s() -> Option<f64> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        // SAFETY: getrusage writes the struct it is given and nothing else.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return None;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        Some(secs(usage.ru_utime) + secs(usage.ru_stime))
    }
    #[cfg(target_arch = "wasm32")]
    None
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub fn peak_host_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// What a benchmark measures: the batch, the prompt length and the number of decode steps.
#[derive(Debug, Clone, Copy)]
pub struct BenchShape {
    /// Sequences decoded together.
    pub batch: usize,
    /// Prompt tokens per sequence.
    pub prompt_tokens: usize,
    /// Greedy decode steps.
    pub new_tokens: usize,
}

/// Loads `source` with `options`, prefills `batch` random prompts of `prompt_tokens` and
/// decodes `new_tokens` greedy steps, timing each phase (logits are read back every step, as
/// generation does).
#[cfg(not(target_arch = "wasm32"))]
pub fn run(config: Qwen2Config, source: &dyn TensorSource, device: &burn::tensor::Device, options: LoadOptions, shape: BenchShape) -> Result<BenchResult> {
    let start = std::time::Instant::now();
    crate::generate::block_on(run_async(config, source, device, options, shape, || start.elapsed().as_secs_f64(), |_| {}))
}

/// The greedy choice of each row of a pass's logits (`[rows, 1, vocab]`) as the local engine
/// reads it back: on a GPU each row's largest logit alone ([`crate::backend::gpu::topk`]; 8 bytes per row),
/// on the CPU the whole rows. Random weights feed whatever token, so a row the top-k cannot
/// decide takes id 0 instead of the engine's whole-row read: on a device that computes nothing
/// (Dawn's null backend) the read-back holds no result at all.
async fn greedy_ids(model: &Qwen2Model, t: burn::tensor::Tensor<3>) -> Result<Vec<u32>> {
    let [rows, _, vocab] = t.dims();
    #[cfg(feature = "wgpu")]
    if *model.device() != burn::tensor::Device::flex() {
        let top = crate::generate::read_logits(crate::backend::gpu::topk::top_k(t.reshape([rows, vocab]), 1).reshape([rows, 1, 2])).await?;
        return Ok(top.chunks(2).map(|row| crate::backend::gpu::topk::Candidates::parse(row, vocab).and_then(|c| c.ids.first().copied()).unwrap_or(0)).collect());
    }
    #[cfg(not(feature = "wgpu"))]
    let _ = (model, rows);
    Ok(crate::generate::read_logits(t).await?.chunks(vocab).map(crate::generate::sampling::argmax).collect())
}

/// [`run`] for any source and clock (`now()` in seconds; the browser's `performance.now`),
/// reading logits back asynchronously as a browser must. `stage` hears "load", "compile",
/// "prefill", "decode" and "bandwidth" (the memory probe) as each begins.
pub async fn run_async<S: AsyncTensorSource + ?Sized>(
    config: Qwen2Config,
    source: &S,
    device: &burn::tensor::Device,
    options: LoadOptions,
    shape: BenchShape,
    now: impl Fn() -> f64,
    mut stage: impl FnMut(&str),
) -> Result<BenchResult> {
    let BenchShape { batch, prompt_tokens, new_tokens } = shape;
    if batch == 0 || prompt_tokens == 0 {
        return Err(Error::InvalidArgument { name: "bench", message: "batch and prompt tokens must be at least 1".into() });
    }
    let vocab = config.vocab_size as u32;
    stage("load");
    let t0 = now();
    let model = Qwen2Model::load_async(config, source, device, options, |_| {}).await?;
    let read = async |t: burn::tensor::Tensor<3>| -> Result<Vec<f32>> {
        let data = t.into_data_async().await.map_err(|e| Error::Device(format!("{e:?}")))?;
        data.try_into_vec::<f32>().map_err(|e| Error::Device(format!("{e:?}")))
    };
    // Warm-up: compile kernels and size allocations with a short pass.
    stage("compile");
    let t_first = now();
    read(model.forward(&vec![1; batch * 2], batch, &mut KvCache::new(), LogitsFor::Last)?).await?;
    let first_call_s = now() - t_first;
    let after_load = device_reserved_mib(device);
    let load_s = t_first - t0;

    stage("prefill");
    let prompt: Vec<u32> = (0..batch * prompt_tokens).map(|i| (i as u32 * 7919 + 13) % vocab).collect();
    let mut cache = KvCache::new();
    let t1 = now();
    // Greedy, as a decode step of the local engine reads it back: on a GPU only each row's
    // largest logit.
    let mut next = greedy_ids(&model, model.forward(&prompt, batch, &mut cache, LogitsFor::Last)?).await?;
    let prefill_s = now() - t1;
    let after_prefill = device_reserved_mib(device);
    let ttft_s = now() - t1;
    stage("decode");
    let cpu2 = process_cpu_s();
    let t2 = now();
    for _ in 0..new_tokens {
        next = greedy_ids(&model, model.forward(&next, batch, &mut cache, LogitsFor::Last)?).await?;
    }
    let decode_s = now() - t2;
    let decode_host_ms_per_step = cpu2.zip(process_cpu_s()).map(|(a, b)| (b - a) * 1e3 / new_tokens.max(1) as f64);
    let kv_cache_mib = cache.bytes() as f64 / (1 << 20) as f64;
    let after_decode = device_reserved_mib(device);
    let peak_device_mib = [after_load, after_prefill, after_decode].into_iter().flatten().reduce(f64::max);
    // Host memory's high-water mark before the bandwidth probe's buffer raises it.
    let peak_host_mib = if cfg!(target_arch = "wasm32") { None } else { peak_host_mib() };
    stage("bandwidth");
    let weight_bytes_per_step = model.decode_weight_bytes();
    let read_gb_s = crate::bench::bandwidth::read_gb_s(device, &now).await?;
    Ok(BenchResult {
        load_s,
        first_call_s,
        prefill_tok_s: (batch * prompt_tokens) as f64 / prefill_s.max(1e-9),
        ttft_s,
        decode_tok_s: (batch * new_tokens) as f64 / decode_s.max(1e-9),
        peak_host_mib,
        peak_device_mib,
        weight_bytes_per_step,
        read_gb_s,
        decode_bound_tok_s: read_gb_s.map(|gb| batch as f64 * gb * 1e9 / weight_bytes_per_step.max(1) as f64),
        gpu_f16: (*device != burn::tensor::Device::flex()).then(|| model.gpu_f16()),
        gpu_matvec: gpu_matvec(&model),
        gpu_adapter: gpu_adapter(device),
        kv_cache: kv_name(model.kv_dtype()).into(),
        kv_cache_mib,
        decode_host_ms_per_step,
        decode_replayed_steps: (*device != burn::tensor::Device::flex()).then(|| model.decode_replays().0),
    })
}

/// `f16` or `f32`: a KV cache's element type as the options name it.
fn kv_name(dtype: burn::tensor::DType) -> &'static str {
    if dtype == burn::tensor::DType::F16 { "f16" } else { "f32" }
}

/// The GPU adapter's name.
fn gpu_adapter(device: &burn::tensor::Device) -> Option<String> {
    #[cfg(feature = "wgpu")]
    return crate::backend::adapter_name(device);
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = device;
        None
    }
}

/// The decode kernel of a model's quantized weights on a GPU.
fn gpu_matvec(model: &Qwen2Model) -> Option<String> {
    #[cfg(feature = "wgpu")]
    return model.matvec_kernel().map(|k| k.to_string());
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = model;
        None
    }
}

/// Memory the GPU pools reserved, in MiB (`None` on the CPU device or without GPU support).
fn device_reserved_mib(device: &burn::tensor::Device) -> Option<f64> {
    #[cfg(feature = "wgpu")]
    {
        crate::backend::gpu::quant::device_memory(device).map(|m| m.reserved as f64 / (1 << 20) as f64)
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = device;
        None
    }
}

/// Pass@1 against Maj@N through the local engine: one request, then `samples` concurrent
/// requests (the samples of one paragraph) on the same prompt, each generating `new_tokens`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MajResult {
    /// Samples of the Maj@N run.
    pub samples: usize,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens each sample generated.
    pub new_tokens: usize,
    /// Wall time of one sample, prefill included.
    pub pass1_s: f64,
    /// Wall time of all the samples, prefill included (the prompt is prefilled once).
    pub maj_s: f64,
    /// `maj_s / pass1_s`.
    pub ratio: f64,
    /// Forward passes the Maj@N run decoded with.
    pub maj_decode_passes: usize,
    /// Forward passes the Maj@N run prefilled with (1: the shared prompt once).
    pub maj_prefill_passes: usize,
}

/// Measures [`MajResult`]: sampled requests (so the samples differ) with no stop strings, on a
/// prompt of about `prompt_tokens` tokens of ProcessBench-like text.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_maj(model: &Qwen2Model, tokenizer: &crate::tokenizer::Tokenizer, samples: usize, prompt_tokens: usize, new_tokens: usize) -> Result<MajResult> {
    use crate::engine::{CompletionRequest, Engine, LocalEngine};
    use crate::generate::sampling::{Sampling, SamplingParams};
    if samples == 0 || prompt_tokens == 0 || new_tokens == 0 {
        return Err(Error::InvalidArgument { name: "bench", message: "samples, prompt tokens and new tokens must be at least 1".into() });
    }
    let filler = "Paragraph: Tom has 3 apples and buys 4 more, so he has 3 + 4 = 7 apples; then he gives 2 away. ";
    let mut ids = tokenizer.encode(&filler.repeat(prompt_tokens / 8 + 2), false)?;
    ids.truncate(prompt_tokens);
    let prompt = tokenizer.decode(&ids, false)?;
    let request = |path: usize| CompletionRequest {
        prompt: &prompt,
        max_tokens: new_tokens,
        stop: &[],
        sampling: Sampling::Sample(SamplingParams { seed: path as u64 + 1, ..SamplingParams::default() }),
        path,
    };
    let (prompt_len, request) = (tokenizer.encode(&prompt, false)?.len(), &request);
    // Warm-up (kernels, allocations), not timed.
    let warm = LocalEngine::new(model, tokenizer)?;
    crate::generate::block_on(warm.complete(&CompletionRequest { max_tokens: 2, ..request(0) }, &mut |_| {}))?;

    let one = LocalEngine::new(model, tokenizer)?;
    let t = std::time::Instant::now();
    crate::generate::block_on(one.complete(&request(0), &mut |_| {}))?;
    let pass1_s = t.elapsed().as_secs_f64();

    let many = LocalEngine::new(model, tokenizer)?;
    let many = &many;
    let t = std::time::Instant::now();
    let jobs = (0..samples).map(|path| async move { many.complete(&request(path), &mut |_| {}).await });
    let done = crate::generate::block_on(futures_util::future::try_join_all(jobs))?;
    let maj_s = t.elapsed().as_secs_f64();
    let new = done.iter().map(|c| c.token_ids.len()).min().unwrap_or(0);
    Ok(MajResult {
        samples,
        prompt_tokens: prompt_len,
        new_tokens: new,
        pass1_s,
        maj_s,
        ratio: maj_s / pass1_s.max(1e-9),
        maj_decode_passes: many.stats().decode_passes,
        maj_prefill_passes: many.stats().prefill_passes,
    })
}
