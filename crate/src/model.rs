//! The Qwen2 decoder in burn: embedding, `num_hidden_layers` × (RMSNorm, grouped-query attention
//! with rotary embeddings and q/k/v biases, RMSNorm, SwiGLU MLP), final RMSNorm and the language
//! model head (its own matrix or the tied embedding). One implementation serves every device; the
//! [`KvCache`] makes decoding incremental.

use std::sync::Arc;

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::Qwen2Config;
use crate::error::{Error, Result};
use crate::quant::{QuantFormat, QuantMatrix};
use crate::weights::{AsyncTensorSource, TensorSource};

/// A weight matrix `[out, in]`: f32 on the device, or quantized (kept packed on the CPU device,
/// multiplied by the quantized kernels without being expanded).
#[derive(Debug, Clone)]
pub enum Weight {
    /// f32 values on the device, in row blocks of at most [`MAX_BINDING_BYTES`] each (GPUs
    /// limit the size of one buffer binding: WebGPU's default is 128 MiB, while the 1.5B
    /// model's embedding is 890 MiB).
    Float(Vec<Tensor<2>>),
    /// Packed integers with per-group scales, on the CPU device.
    Quant(Arc<QuantMatrix>),
    /// Packed integers with per-group scales, on a GPU (multiplied by the CubeCL kernels);
    /// the host copy is kept for the embedding's row lookups only.
    #[cfg(feature = "wgpu")]
    GpuQuant(Arc<crate::gpu_quant::GpuQuant>, Option<Arc<QuantMatrix>>),
}

/// From this many activation rows on, quantized weights on a GPU are expanded for one dense
/// multiply (the CPU kernels take any number of rows).
pub const PREFILL_ROWS: usize = 16;

/// The most bytes one weight tensor occupies on the device; larger matrices are split by rows.
pub const MAX_BINDING_BYTES: usize = 128 << 20;

/// Matrices larger than this (in f32) are loaded a block of rows at a time from sources that
/// can read parts of a tensor.
pub const LOAD_PIECE_BYTES: usize = MAX_BINDING_BYTES;

impl Weight {
    /// An f32 weight from row-major host values, split into row blocks that fit one binding.
    pub fn float(data: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Self {
        Self::float_in_blocks(data, rows, cols, device, MAX_BINDING_BYTES)
    }

    /// [`Weight::float`] with an explicit block size in bytes.
    pub fn float_in_blocks(data: Vec<f32>, rows: usize, cols: usize, device: &Device, max_bytes: usize) -> Self {
        let block = (max_bytes / (cols.max(1) * 4)).max(1);
        if rows <= block {
            return Weight::Float(vec![Tensor::from_data(TensorData::new(data, [rows, cols]), device)]);
        }
        let chunks = data
            .chunks(block * cols)
            .map(|c| Tensor::from_data(TensorData::new(c.to_vec(), [c.len() / cols, cols]), device))
            .collect();
        Weight::Float(chunks)
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        match self {
            Weight::Float(w) => w.iter().map(|t| t.dims()[0]).sum(),
            Weight::Quant(q) => q.rows(),
            #[cfg(feature = "wgpu")]
            Weight::GpuQuant(g, _) => g.rows(),
        }
    }

    /// `x Wᵀ` for `[n, in]` activations.
    pub fn matmul_t(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Weight::Float(w) if w.len() == 1 => x.matmul(w[0].clone().transpose()),
            Weight::Float(w) => Tensor::cat(w.iter().map(|c| x.clone().matmul(c.clone().transpose())).collect(), 1),
            Weight::Quant(q) => {
                // Decode and prefill alike: the integer kernels read each packed weight once per
                // call and beat expanding the matrix for the backend's f32 multiply at every row
                // count (bench/NOTES.md).
                let [n, _] = x.dims();
                let device = x.device();
                let data = host_values(x);
                Tensor::from_data(TensorData::new(q.matmul(&data, n), [n, q.rows()]), &device)
            }
            #[cfg(feature = "wgpu")]
            Weight::GpuQuant(g, _) => g.matmul_t(x),
        }
    }

    /// Rows `ids` of the matrix (the embedding lookup), `[ids.len(), in]`.
    pub fn gather(&self, ids: &[u32], device: &Device) -> Tensor<2> {
        match self {
            Weight::Float(w) if w.len() == 1 => {
                let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
                let n = ids.len();
                w[0].clone().select(0, Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), device))
            }
            Weight::Float(w) => {
                // Each block gathers the ids it holds (others read its row 0) and a mask keeps them.
                let n = ids.len();
                let mut out: Option<Tensor<2>> = None;
                let mut start = 0usize;
                for block in w {
                    let rows = block.dims()[0];
                    let local: Vec<i64> = ids.iter().map(|&t| t as usize).map(|t| if (start..start + rows).contains(&t) { (t - start) as i64 } else { 0 }).collect();
                    let keep: Vec<f32> = ids.iter().map(|&t| f32::from(u8::from((start..start + rows).contains(&(t as usize))))).collect();
                    let rows_t = block.clone().select(0, Tensor::<1, Int>::from_data(TensorData::new(local, [n]), device));
                    let part = rows_t * Tensor::<2>::from_data(TensorData::new(keep, [n, 1]), device);
                    out = Some(match out {
                        Some(o) => o + part,
                        None => part,
                    });
                    start += rows;
                }
                out.expect("a weight has at least one block")
            }
            #[cfg(feature = "wgpu")]
            Weight::GpuQuant(_, host) => {
                gather_rows(host.as_ref().expect("row lookups need the host copy the embedding keeps"), ids, device)
            }
            Weight::Quant(q) => gather_rows(q, ids, device),
        }
    }
}

/// Rows `ids` of a packed matrix, expanded on the host (only the rows, never the table).
fn gather_rows(q: &QuantMatrix, ids: &[u32], device: &Device) -> Tensor<2> {
    let cols = q.cols();
    let mut out = vec![0f32; ids.len() * cols];
    for (row, &id) in out.chunks_exact_mut(cols).zip(ids) {
        q.dequantize_row(id as usize, row);
    }
    Tensor::from_data(TensorData::new(out, [ids.len(), cols]), device)
}

/// Values of an activation on the CPU device (a copy in host memory; no GPU is involved).
fn host_values(x: Tensor<2>) -> Vec<f32> {
    x.into_data()
        .try_into_vec::<f32>()
        .unwrap_or_else(|e| panic!("activations are f32 on the CPU device: {e:?}"))
}

/// A linear layer `y = x Wᵀ + b`. The weight keeps the checkpoint's `[out, in]` layout, in f32 or
/// quantized: this is the one place weights are multiplied, so there is one model whatever the
/// weight format.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor<1>>,
}

impl Linear {
    /// A layer from an `[out, in]` weight and an optional `[out]` bias.
    pub fn new(weight: Weight, bias: Option<Tensor<1>>) -> Self {
        Linear { weight, bias }
    }

    /// Applies the layer to `[rows, in]` activations, giving `[rows, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = self.weight.matmul_t(x);
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze_dim(0),
            None => y,
        }
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.rows()
    }
}

/// How weights are stored once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Quantize every linear layer and the embedding while loading (`None`: f32).
    pub quant: Option<QuantFormat>,
    /// A different format for the embedding and lm_head (e.g. q8 with a q4 model).
    pub head_quant: Option<QuantFormat>,
}

/// Root-mean-square normalisation over the last dimension, as Qwen2 computes it in f32.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    /// Normalises `[rows, hidden]` activations.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let variance = x.clone().square().mean_dim(1);
        let x = x * (variance + self.eps).sqrt().recip();
        x * self.weight.clone().unsqueeze_dim(0)
    }
}

/// Key and value tensors of every layer for the positions seen so far, `[batch, kv_heads, len, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps only the first `len` positions (a later forward continues from there).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        if len == 0 {
            self.clear();
            return;
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            let [b, h, _, d] = k.dims();
            *k = k.clone().slice([0..b, 0..h, 0..len, 0..d]);
            *v = v.clone().slice([0..b, 0..h, 0..len, 0..d]);
        }
        self.len = len;
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.layers.clear();
        self.len = 0;
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Layer {
    input_norm: RmsNorm,
    attention: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

/// The names of every tensor a config calls for, in the order the loader reads them.
pub fn tensor_names(config: &Qwen2Config) -> Vec<String> {
    let mut names = vec!["model.embed_tokens.weight".to_string()];
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for n in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"] {
            names.push(format!("{p}.{n}.weight"));
            names.push(format!("{p}.{n}.bias"));
        }
        for n in ["self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"] {
            names.push(format!("{p}.{n}.weight"));
        }
        names.push(format!("{p}.input_layernorm.weight"));
        names.push(format!("{p}.post_attention_layernorm.weight"));
    }
    names.push("model.norm.weight".to_string());
    if !config.tie_word_embeddings {
        names.push("lm_head.weight".to_string());
    }
    names
}

/// Which positions the forward pass returns logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only the last position of each sequence (generation).
    Last,
    /// Every input position (scoring, tests).
    All,
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
struct Loader<'a, S: ?Sized, P> {
    source: &'a S,
    device: &'a Device,
    progress: P,
    done: usize,
    total: usize,
    /// Matrices larger than this in f32 are read in row blocks where the source allows.
    piece_bytes: usize,
}

impl<S: AsyncTensorSource + ?Sized, P: FnMut(LoadProgress<'_>)> Loader<'_, S, P> {
    fn check(&mut self, name: &str, expected: &[usize]) -> Result<()> {
        let shape = self.source.shape(name)?;
        if shape != expected {
            return Err(Error::Shape {
                path: self.source.file_of(name),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                actual: shape,
            });
        }
        self.done += 1;
        (self.progress)(LoadProgress { tensor: name, done: self.done, total: self.total });
        Ok(())
    }

    /// A quantized matrix where the device keeps it: packed in host memory for the CPU kernels,
    /// packed in GPU buffers for the GPU kernels (the embedding also keeps a host copy for row
    /// gathers).
    fn stored(&self, q: QuantMatrix, keep_host: bool) -> Weight {
        if *self.device == Device::flex() {
            return Weight::Quant(Arc::new(q));
        }
        #[cfg(feature = "wgpu")]
        {
            let g = crate::gpu_quant::GpuQuant::upload(&q, self.device);
            Weight::GpuQuant(Arc::new(g), keep_host.then(|| Arc::new(q)))
        }
        #[cfg(not(feature = "wgpu"))]
        {
            let _ = keep_host;
            Weight::float(q.dequantize(), q.rows(), q.cols(), self.device)
        }
    }

    async fn weight(&mut self, name: &str, expected: &[usize], format: Option<QuantFormat>) -> Result<Weight> {
        self.check(name, expected)?;
        let keep_host = name == "model.embed_tokens.weight";
        if let Some(q) = self.source.read_quantized(name).await? {
            return Ok(self.stored(q, keep_host));
        }
        let (rows, cols) = (expected[0], expected[1]);
        if rows * cols * 4 > self.piece_bytes && self.source.reads_rows(name) {
            return self.weight_in_pieces(name, rows, cols, format, keep_host).await;
        }
        let t = self.source.read_f32(name).await?;
        let (rows, cols) = (t.shape[0], t.shape[1]);
        Ok(match format {
            None => Weight::float(t.data, rows, cols, self.device),
            Some(f) => {
                let q = QuantMatrix::quantize(&t.data, rows, cols, f, name)?;
                drop(t);
                self.stored(q, keep_host)
            }
        })
    }

    /// A large matrix read and converted a block of rows at a time (the 151936-row embedding of
    /// a bf16 checkpoint would otherwise need about 1.4 GB of wasm memory at once).
    async fn weight_in_pieces(&mut self, name: &str, rows: usize, cols: usize, format: Option<QuantFormat>, keep_host: bool) -> Result<Weight> {
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
            Some(q) => self.stored(q, keep_host),
            None => Weight::Float(blocks),
        })
    }

    async fn vector(&mut self, name: &str, len: usize) -> Result<Tensor<1>> {
        self.check(name, &[len])?;
        let t = self.source.read_f32(name).await?;
        Ok(Tensor::<1>::from_data(TensorData::new(t.data, t.shape), self.device))
    }

    #[allow(clippy::too_many_arguments)]
    async fn linear(&mut self, prefix: &str, name: &str, out: usize, inp: usize, bias: bool, format: Option<QuantFormat>) -> Result<Linear> {
        let w = self.weight(&format!("{prefix}.{name}.weight"), &[out, inp], format).await?;
        let b = if bias { Some(self.vector(&format!("{prefix}.{name}.bias"), out).await?) } else { None };
        Ok(Linear::new(w, b))
    }
}

/// A Qwen2 causal language model on one device.
pub struct Qwen2Model {
    config: Qwen2Config,
    device: Device,
    embed: Weight,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// `None` when the head is tied to the embedding.
    lm_head: Option<Linear>,
}

impl Qwen2Model {
    /// Loads every tensor the config calls for from `source`, one at a time, checking each shape
    /// against the config. `progress` is called after each tensor.
    pub fn load(
        config: Qwen2Config,
        source: &dyn TensorSource,
        device: &Device,
        progress: impl FnMut(LoadProgress<'_>),
    ) -> Result<Self> {
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
        crate::weights::ready(Self::load_async(config, source, device, options, progress))
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
        Self::load_in_pieces(config, source, device, options, progress, LOAD_PIECE_BYTES).await
    }

    async fn load_in_pieces<S: AsyncTensorSource + ?Sized>(
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
        let total = 2 + c.num_hidden_layers * 12 + usize::from(!c.tie_word_embeddings);
        let mut l = Loader { source, device, progress, done: 0, total, piece_bytes };
        let head_format = options.head_quant.or(options.quant);

        let embed = l.weight("model.embed_tokens.weight", &[vocab, h], head_format).await?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let q = options.quant;
            let attention = Attention {
                q: l.linear(&p, "self_attn.q_proj", nh * hd, h, true, q).await?,
                k: l.linear(&p, "self_attn.k_proj", kvh * hd, h, true, q).await?,
                v: l.linear(&p, "self_attn.v_proj", kvh * hd, h, true, q).await?,
                o: l.linear(&p, "self_attn.o_proj", h, nh * hd, false, q).await?,
            };
            let mlp = Mlp {
                gate: l.linear(&p, "mlp.gate_proj", inter, h, false, q).await?,
                up: l.linear(&p, "mlp.up_proj", inter, h, false, q).await?,
                down: l.linear(&p, "mlp.down_proj", h, inter, false, q).await?,
            };
            let input_norm = RmsNorm { weight: l.vector(&format!("{p}.input_layernorm.weight"), h).await?, eps: c.rms_norm_eps };
            let post_norm =
                RmsNorm { weight: l.vector(&format!("{p}.post_attention_layernorm.weight"), h).await?, eps: c.rms_norm_eps };
            layers.push(Layer { input_norm, attention, post_norm, mlp });
        }
        let norm = RmsNorm { weight: l.vector("model.norm.weight", h).await?, eps: c.rms_norm_eps };
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(Linear::new(l.weight("lm_head.weight", &[vocab, h], head_format).await?, None))
        };
        Ok(Qwen2Model { config, device: device.clone(), embed, layers, norm, lm_head })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Qwen2Config {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Rows of the embedding (and columns of the logits).
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Runs `batch` sequences of equal length whose ids are concatenated in `tokens`, continuing
    /// from what `cache` holds and appending to it. Returns logits `[batch, positions, vocab]`
    /// for the positions `which` selects.
    pub fn forward(&self, tokens: &[u32], batch: usize, cache: &mut KvCache, which: LogitsFor) -> Result<Tensor<3>> {
        let c = &self.config;
        if batch == 0 || tokens.is_empty() || tokens.len() % batch != 0 {
            return Err(Error::InvalidArgument {
                name: "tokens",
                message: format!("{} ids cannot form {batch} sequences of equal, non-zero length", tokens.len()),
            });
        }
        let seq = tokens.len() / batch;
        let past = cache.len;
        if past + seq > c.max_position_embeddings {
            return Err(Error::ContextOverflow { tokens: past + seq, max: c.max_position_embeddings });
        }
        for (position, &id) in tokens.iter().enumerate() {
            if id as usize >= c.vocab_size {
                return Err(Error::TokenOutOfRange { id, position, vocab_size: c.vocab_size });
            }
        }
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let mut x = self.embed.gather(tokens, &self.device); // [batch * seq, hidden]

        let (cos, sin) = self.rope_tables(past, seq);
        let mask = (seq > 1).then(|| self.causal_mask(past, seq));
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = layer.input_norm.forward(x.clone());
            let h = self.attention(&layer.attention, h, batch, seq, &cos, &sin, mask.clone(), slot);
            x = x + h;
            let h = layer.post_norm.forward(x.clone());
            let m = &layer.mlp;
            let h = m.down.forward(silu(m.gate.forward(h.clone())) * m.up.forward(h));
            x = x + h;
        }
        cache.len = past + seq;

        let hidden = c.hidden_size;
        let x = match which {
            LogitsFor::All => x,
            LogitsFor::Last => {
                x.reshape([batch, seq, hidden]).slice([0..batch, seq - 1..seq, 0..hidden]).reshape([batch, hidden])
            }
        };
        let rows = x.dims()[0];
        let x = self.norm.forward(x);
        let logits = match &self.lm_head {
            Some(head) => head.forward(x),
            None => self.embed.matmul_t(x),
        };
        Ok(logits.reshape([batch, rows / batch, c.vocab_size]))
    }

    /// Rotary tables `[seq, head_dim]` for positions `past..past + seq`, computed in f32 exactly
    /// as transformers does (inverse frequencies, outer product, then cos/sin, halves repeated).
    fn rope_tables(&self, past: usize, seq: usize) -> (Tensor<2>, Tensor<2>) {
        let d = self.config.head_dim();
        let base = self.config.rope_theta as f32;
        let inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32)).collect();
        let mut cos = Vec::with_capacity(seq * d);
        let mut sin = Vec::with_capacity(seq * d);
        for p in past..past + seq {
            let angles: Vec<f32> = inv.iter().map(|f| p as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        (
            Tensor::from_data(TensorData::new(cos, [seq, d]), &self.device),
            Tensor::from_data(TensorData::new(sin, [seq, d]), &self.device),
        )
    }

    /// Additive mask `[seq, past + seq]`: 0 where query `i` may see key `j`, −∞ after it.
    fn causal_mask(&self, past: usize, seq: usize) -> Tensor<2> {
        let total = past + seq;
        let mut m = vec![0f32; seq * total];
        for i in 0..seq {
            for j in past + i + 1..total {
                m[i * total + j] = f32::NEG_INFINITY;
            }
        }
        Tensor::from_data(TensorData::new(m, [seq, total]), &self.device)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        a: &Attention,
        x: Tensor<2>,
        batch: usize,
        seq: usize,
        cos: &Tensor<2>,
        sin: &Tensor<2>,
        mask: Option<Tensor<2>>,
        slot: &mut Option<(Tensor<4>, Tensor<4>)>,
    ) -> Tensor<2> {
        let c = &self.config;
        let (nh, kvh, d) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let groups = nh / kvh;
        let heads = |t: Tensor<2>, n: usize| t.reshape([batch, seq, n, d]).swap_dims(1, 2); // [b, n, seq, d]
        let q = rotate(heads(a.q.forward(x.clone()), nh), cos, sin);
        let k = rotate(heads(a.k.forward(x.clone()), kvh), cos, sin);
        let v = heads(a.v.forward(x), kvh);
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        let total = k.dims()[2];

        // Grouped-query attention without copying keys: the `groups` query heads that share a
        // key/value head are stacked along the query axis, rows ordered (group, position).
        let q = q.reshape([batch, kvh, groups * seq, d]);
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt()); // [b, kvh, g*seq, total]
        let scores = match mask {
            Some(m) => scores + m.repeat_dim(0, groups).reshape([1, 1, groups * seq, total]),
            None => scores,
        };
        let out = softmax(scores, 3).matmul(v); // [b, kvh, g*seq, d]
        let out = out.reshape([batch, nh, seq, d]).swap_dims(1, 2).reshape([batch * seq, nh * d]);
        a.o.forward(out)
    }
}

/// Applies rotary embeddings to `[batch, heads, seq, d]` with `[seq, d]` tables
/// (the "rotate half" convention of Qwen2).
fn rotate(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    let [b, n, s, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..b, 0..n, 0..s, 0..half]);
    let x2 = x.clone().slice([0..b, 0..n, 0..s, half..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let cos = cos.clone().reshape([1, 1, s, d]);
    let sin = sin.clone().reshape([1, 1, s, d]);
    x * cos + rotated * sin
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::BytesCheckpoint;

    fn fixture(name: &str) -> (Qwen2Config, BytesCheckpoint) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models").join(name);
        let config = Qwen2Config::from_file(&dir.join("config.json")).unwrap();
        let mut source = BytesCheckpoint::new();
        source.add_file(dir.join("model.safetensors"), std::fs::read(dir.join("model.safetensors")).unwrap()).unwrap();
        (config, source)
    }

    fn logits(m: &Qwen2Model) -> Vec<f32> {
        let ids: Vec<u32> = (0..7).map(|i| (i * 37 % m.vocab_size()) as u32).collect();
        let t = m.forward(&ids, 1, &mut KvCache::new(), LogitsFor::All).unwrap();
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// Large matrices read a block of rows at a time give the same model as whole reads, in f32
    /// and quantized (each row's groups are quantized alike whatever the block).
    #[test]
    fn loading_in_row_pieces_matches_whole_tensors() {
        let (config, source) = fixture("tiny-genprm");
        let device = Device::flex();
        for quant in [None, Some(QuantFormat::Q4)] {
            let options = LoadOptions { quant, head_quant: None };
            let whole = crate::weights::ready(Qwen2Model::load_in_pieces(config.clone(), &source, &device, options, |_| {}, usize::MAX)).unwrap();
            // 256 bytes: every matrix is split into blocks of a row or two.
            let pieces = crate::weights::ready(Qwen2Model::load_in_pieces(config.clone(), &source, &device, options, |_| {}, 256)).unwrap();
            if quant.is_none() {
                assert!(matches!(&pieces.embed, Weight::Float(blocks) if blocks.len() > 1), "the embedding was not split");
            }
            let (a, b) = (logits(&whole), logits(&pieces));
            let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(max < 1e-5, "{quant:?}: max difference {max}");
        }
    }
}
