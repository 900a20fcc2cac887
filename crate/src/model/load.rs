//! Loading a [`Qwen2Model`] from a tensor source (a safetensors checkpoint, a pack, a browser's
//! files): the config checked against the weights before any data is read, each tensor read,
//! converted and (optionally) quantized one at a time, and the [`LoadOptions`] decided for the
//! device.

use std::sync::Arc;

use burn::tensor::{DType, Device, Tensor, TensorData};

use super::*;
use crate::backend::PrefillPrecision;
use crate::error::{Error, Result};
use crate::load::config::Qwen2Config;
use crate::load::safetensors::{AsyncTensorSource, TensorSource};
use crate::quant::{QuantFormat, QuantMatrix};

/// Matrices larger than this (in f32) are loaded a block of rows at a time from sources that
/// can read parts of a tensor.
pub const LOAD_PIECE_BYTES: usize = MAX_BINDING_BYTES;

/// How weights are stored once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Quantize every linear layer and the embedding while loading (`None`: f32).
    pub quant: Option<QuantFormat>,
    /// A different format for the embedding and lm_head (e.g. q8 with a q4 model).
    pub head_quant: Option<QuantFormat>,
    /// f16 on a GPU with quantized weights, for the prefill products (f16 operands, f32 sums)
    /// and the KV cache (stored in f16, attended to in f32): `None` where the device has f16
    /// arithmetic, `Some(false)` never, `Some(true)` always
    /// (loading fails on a device without it). Activations, decode products and f32 weights
    /// stay f32.
    pub gpu_f16: Option<bool>,
    /// The KV cache's keys and values in f16 (half the memory, and half the bytes decode
    /// attention reads; attended to in f32 either way): `None` for the device's default (on a
    /// GPU, f16 exactly in f16 mode; on the CPU, f32), `Some(true)` always (a GPU must be in f16
    /// mode), `Some(false)` never.
    pub kv_f16: Option<bool>,
    /// The decode kernel of packed weights on a GPU: `None` for the device's default (the
    /// cooperative kernel on a hardware GPU, the per-unit one on a software adapter).
    pub gpu_matvec: Option<crate::backend::MatvecKernel>,
    /// How decode attends on a GPU: the fused kernel (default), or burn's ops (comparisons).
    pub gpu_attention: crate::backend::DecodeAttention,
    /// How decode steps reach a GPU: recorded once and replayed (default), or launched anew.
    pub gpu_decode: crate::backend::GpuDecode,
}

/// [`LoadOptions::kv_f16`] decided for a loaded model: the element type of its KV cache.
pub(super) fn resolve_kv_dtype(choice: Option<bool>, device: &Device, gpu_f16: bool) -> Result<DType> {
    let f16 = match choice {
        _ if *device == Device::flex() => choice == Some(true),
        Some(true) if !gpu_f16 => {
            return Err(Error::Device(
                "an f16 KV cache on a GPU (--kv-cache f16, kvF16: true) comes with f16 mode, which is off here (f32 weights, --gpu-f16 off, or a device without shader-f16)".into(),
            ));
        }
        Some(f16) => f16,
        None => gpu_f16,
    };
    Ok(if f16 { DType::F16 } else { DType::F32 })
}

/// [`LoadOptions::gpu_f16`] decided for `device`, once per load: whether quantized weights
/// uploaded to it run in f16 mode. Asking for f16 on a device without f16 arithmetic is an
/// error.
pub(super) fn resolve_gpu_f16(choice: Option<bool>, device: &Device) -> Result<bool> {
    let has_f16 = crate::backend::gpu::quant::supports_f16(device);
    match choice {
        Some(true) if !has_f16 => {
            Err(Error::Device("f16 mode (--gpu-f16 on, gpuF16: true) was asked for, but this device has no f16 arithmetic (a GPU with shader-f16)".into()))
        }
        Some(f16) => Ok(f16),
        None => Ok(has_f16),
    }
}

/// The names of every tensor a config calls for, in the order the loader reads them.
pub fn tensor_names(config: &Qwen2Config) -> Vec<String> {
    expected_tensors(config).into_iter().map(|(name, _)| name).collect()
}

/// Progress of a model load, reported once per tensor.
#[derive(Debug, Clone)]
pub struct LoadProgress<'a> {
    /// The tensor just loaded.
    pub tensor: &'a str,
    /// Tensors loaded so far.
    pub done: usize,
    /// Tensors in all.
    pub total: usize,
}

/// Reads the tensors of one model load in order, checking each shape against the config,
/// quantizing as asked and reporting progress.
pub(super) struct Loader<'a, S: ?Sized, P> {
    pub(super) source: &'a S,
    pub(super) device: &'a Device,
    pub(super) progress: P,
    pub(super) done: usize,
    pub(super) total: usize,
    /// Matrices larger than this in f32 are read in row blocks where the source allows.
    pub(super) piece_bytes: usize,
    /// Whether quantized weights go to the GPU in f16 mode ([`resolve_gpu_f16`]; only GPUs read it).
    #[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
    pub(super) gpu_f16: bool,
    /// The decode kernel of quantized weights on a GPU, chosen once per load.
    pub(super) matvec: crate::backend::gpu::quant::MatvecKernel,
}

impl<S: AsyncTensorSource + ?Sized, P: FnMut(LoadProgress<'_>)> Loader<'_, S, P> {
    /// Reports `name` as the next tensor loaded; its presence and shape were checked against
    /// the config before anything was read ([`check_against_config`]).
    pub(super) fn report(&mut self, name: &str) {
        self.done += 1;
        (self.progress)(LoadProgress { tensor: name, done: self.done, total: self.total });
    }

    /// A quantized matrix where the device keeps it: packed in host memory for the CPU kernels,
    /// packed in GPU buffers for the GPU kernels (the host copy is dropped once uploaded).
    pub(super) fn stored(&self, q: QuantMatrix) -> Result<Weight> {
        if *self.device == Device::flex() {
            return Ok(Weight::Quant(Arc::new(q)));
        }
        use crate::backend::gpu::quant::GpuQuant;
        let precision = if self.gpu_f16 { PrefillPrecision::F16 } else { PrefillPrecision::F32 };
        Ok(Weight::GpuQuant(Arc::new(GpuQuant::upload_with(&q, self.device, MAX_BINDING_BYTES, precision, self.matvec))))
    }

    pub(super) async fn weight(&mut self, name: &str, expected: &[usize], format: Option<QuantFormat>) -> Result<Weight> {
        self.report(name);
        if let Some(q) = self.source.read_quantized(name).await? {
            return self.stored(q);
        }
        let (rows, cols) = (expected[0], expected[1]);
        if rows * cols * 4 > self.piece_bytes && self.source.reads_rows(name) {
            return self.weight_in_pieces(name, rows, cols, format).await;
        }
        let t = self.source.read_f32(name).await?;
        let (rows, cols) = (t.shape[0], t.shape[1]);
        Ok(match format {
            None => Weight::float(t.data, rows, cols, self.device),
            Some(f) => {
                let q = QuantMatrix::quantize(&t.data, rows, cols, f, name)?;
                drop(t);
                self.stored(q)?
            }
        })
    }

    /// A large matrix read and converted a block of rows at a time (the 151936-row embedding of
    /// a bf16 checkpoint would otherwise need about 1.4 GB of wasm memory at once).
    pub(super) async fn weight_in_pieces(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        format: Option<QuantFormat>,
    ) -> Result<Weight> {
        let piece = match format {
            // One piece per device block, so each block is uploaded once.
            None | Some(_) => (self.piece_bytes.min(MAX_BINDING_BYTES) / (cols * 4)).max(1),
        };
        let mut blocks = Vec::new();
        let mut packed: Option<QuantMatrix> = None;
        for start in (0..rows).step_by(piece) {
            let end = (start + piece).min(rows);
            let data = self.source.read_rows_f32(name, start..end).await?;
            match format {
                None => blocks.push(Tensor::<2>::from_data(TensorData::new(data, [end - start, cols]), self.device)),
                Some(f) => {
                    let q = QuantMatrix::quantize(&data, end - start, cols, f, name)?;
                    match packed.as_mut() {
                        None => packed = Some(q),
                        Some(p) => p.append_rows(q)?,
                    }
                }
            }
        }
        Ok(match packed {
            Some(q) => self.stored(q)?,
            None => Weight::Float(blocks),
        })
    }

    pub(super) async fn vector(&mut self, name: &str) -> Result<Tensor<1>> {
        self.report(name);
        let t = self.source.read_f32(name).await?;
        Ok(Tensor::<1>::from_data(TensorData::new(t.data, t.shape), self.device))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn linear(
        &mut self,
        prefix: &str,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
        format: Option<QuantFormat>,
    ) -> Result<Linear> {
        let w = self.weight(&format!("{prefix}.{name}.weight"), &[out, inp], format).await?;
        let b = if bias { Some(self.vector(&format!("{prefix}.{name}.bias")).await?) } else { None };
        Ok(Linear::new(w, b))
    }
}

/// Every tensor a Qwen2 model of `c` reads, with its shape, in load order.
pub fn expected_tensors(c: &Qwen2Config) -> Vec<(String, Vec<usize>)> {
    let (h, hd, nh, kvh, inter, vocab) =
        (c.hidden_size, c.head_dim(), c.num_attention_heads, c.kv_heads(), c.intermediate_size, c.vocab_size);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![vocab, h])];
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for (name, shape) in [
            ("self_attn.q_proj.weight", vec![nh * hd, h]),
            ("self_attn.q_proj.bias", vec![nh * hd]),
            ("self_attn.k_proj.weight", vec![kvh * hd, h]),
            ("self_attn.k_proj.bias", vec![kvh * hd]),
            ("self_attn.v_proj.weight", vec![kvh * hd, h]),
            ("self_attn.v_proj.bias", vec![kvh * hd]),
            ("self_attn.o_proj.weight", vec![h, nh * hd]),
            ("mlp.gate_proj.weight", vec![inter, h]),
            ("mlp.up_proj.weight", vec![inter, h]),
            ("mlp.down_proj.weight", vec![h, inter]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            out.push((format!("{p}.{name}"), shape));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![vocab, h]));
    }
    out
}

/// The config against the weights, before any tensor's data is read: every tensor the config
/// calls for present with its shape, and no layer beyond `num_hidden_layers` (a config that
/// says fewer layers than the weights hold would otherwise load a truncated model silently).
/// Returns how many tensors the model reads.
pub(super) fn check_against_config<S: AsyncTensorSource + ?Sized>(c: &Qwen2Config, source: &S) -> Result<usize> {
    let expected = expected_tensors(c);
    let total = expected.len();
    for (name, expected) in expected {
        let actual = source.shape(&name)?;
        if actual != expected {
            return Err(Error::Shape { path: source.file_of(&name), tensor: name, expected, actual });
        }
    }
    let extra_layer = source
        .tensor_names()
        .iter()
        .filter_map(|n| n.strip_prefix("model.layers.")?.split('.').next()?.parse::<usize>().ok())
        .filter(|&i| i >= c.num_hidden_layers)
        .max();
    if let Some(i) = extra_layer {
        return Err(Error::Config {
            path: std::path::PathBuf::from("config.json"),
            field: "num_hidden_layers".into(),
            message: format!(
                "is {}, but the weights hold layers up to model.layers.{i} ({} layers): the config does not belong to these weights",
                c.num_hidden_layers,
                i + 1
            ),
        });
    }
    Ok(total)
}

impl Qwen2Model {
    /// Loads every tensor the config calls for from `source`, one at a time, checking each shape
    /// against the config. `progress` is called after each tensor.
    pub fn load(config: Qwen2Config, source: &dyn TensorSource, device: &Device, progress: impl FnMut(LoadProgress<'_>)) -> Result<Self> {
        Self::load_with(config, source, device, LoadOptions::default(), progress)
    }

    /// [`Qwen2Model::load`] with weight options: each tensor is quantized as soon as it is read,
    /// so host memory peaks at about one f32 tensor plus the quantized model. Quantized weights
    /// stay packed on every device: the CPU kernels or the GPU (CubeCL) kernels expand them
    /// inside the matrix product.
    pub fn load_with(
        config: Qwen2Config,
        source: &dyn TensorSource,
        device: &Device,
        options: LoadOptions,
        progress: impl FnMut(LoadProgress<'_>),
    ) -> Result<Self> {
        let model = crate::load::safetensors::ready(Self::load_in_pieces(config, source, device, options, progress, LOAD_PIECE_BYTES))?;
        // The GPU kernels' start-up self-check; in a browser, `load_async` runs it.
        #[cfg(not(target_arch = "wasm32"))]
        pollster::block_on(super::check_model(&model))?;
        Ok(model)
    }

    /// [`Qwen2Model::load_with`] from a source whose reads are awaited (files read piecewise in a
    /// browser): the same loader, one tensor at a time, so the model never sits whole in memory.
    pub async fn load_async<S: AsyncTensorSource + ?Sized>(
        config: Qwen2Config,
        source: &S,
        device: &Device,
        options: LoadOptions,
        progress: impl FnMut(LoadProgress<'_>),
    ) -> Result<Self> {
        let model = Self::load_in_pieces(config, source, device, options, progress, LOAD_PIECE_BYTES).await?;
        // On a GPU, each kernel the model runs is checked against the CPU once
        // ([`crate::backend::gpu::selfcheck`]): an error here beats wrong rewards later.
        super::check_model(&model).await?;
        Ok(model)
    }

    pub(super) async fn load_in_pieces<S: AsyncTensorSource + ?Sized>(
        config: Qwen2Config,
        source: &S,
        device: &Device,
        options: LoadOptions,
        progress: impl FnMut(LoadProgress<'_>),
        piece_bytes: usize,
    ) -> Result<Self> {
        let c = &config;
        let (h, hd, nh, kvh, inter, vocab) =
            (c.hidden_size, c.head_dim(), c.num_attention_heads, c.kv_heads(), c.intermediate_size, c.vocab_size);
        let total = check_against_config(c, source)?;
        let gpu_f16 = resolve_gpu_f16(options.gpu_f16, device)?;
        let mut l = Loader {
            source,
            device,
            progress,
            done: 0,
            total,
            piece_bytes,
            gpu_f16,
            matvec: crate::backend::gpu::quant::matvec_kernel(device, options.gpu_matvec),
        };
        let head_format = options.head_quant.or(options.quant);

        let embed = l.weight("model.embed_tokens.weight", &[vocab, h], head_format).await?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let q = options.quant;
            let attention = Attention {
                qkv: Linear::concat_rows(vec![
                    l.linear(&p, "self_attn.q_proj", nh * hd, h, true, q).await?,
                    l.linear(&p, "self_attn.k_proj", kvh * hd, h, true, q).await?,
                    l.linear(&p, "self_attn.v_proj", kvh * hd, h, true, q).await?,
                ])?,
                o: l.linear(&p, "self_attn.o_proj", h, nh * hd, false, q).await?,
            };
            let mlp = Mlp {
                gate_up: Linear::concat_rows(vec![
                    l.linear(&p, "mlp.gate_proj", inter, h, false, q).await?,
                    l.linear(&p, "mlp.up_proj", inter, h, false, q).await?,
                ])?,
                down: l.linear(&p, "mlp.down_proj", h, inter, false, q).await?,
            };
            let input_norm = RmsNorm { weight: l.vector(&format!("{p}.input_layernorm.weight")).await?, eps: c.rms_norm_eps };
            let post_norm = RmsNorm { weight: l.vector(&format!("{p}.post_attention_layernorm.weight")).await?, eps: c.rms_norm_eps };
            layers.push(Layer { input_norm, attention, post_norm, mlp });
        }
        let norm = RmsNorm { weight: l.vector("model.norm.weight").await?, eps: c.rms_norm_eps };
        let lm_head =
            if c.tie_word_embeddings { None } else { Some(Linear::new(l.weight("lm_head.weight", &[vocab, h], head_format).await?, None)) };
        let mut model = Qwen2Model {
            config,
            device: device.clone(),
            embed,
            layers,
            norm,
            lm_head,
            kv_dtype: DType::F32,
            decode_attention: options.gpu_attention,
            gpu_decode: options.gpu_decode,
            replay_failed: Default::default(),
            replays: Default::default(),
            recordings: Default::default(),
        };
        model.kv_dtype = resolve_kv_dtype(options.kv_f16, device, model.gpu_f16())?;
        Ok(model)
    }
}
