//! The Qwen2 decoder in burn: embedding, `num_hidden_layers` × (RMSNorm, grouped-query attention
//! with rotary embeddings and q/k/v biases, RMSNorm, SwiGLU MLP), final RMSNorm and the language
//! model head (its own matrix or the tied embedding). One implementation serves every device; the
//! [`KvCache`] makes decoding incremental.

use std::sync::Arc;

use burn::tensor::activation::{silu, softmax};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Device, IndexingUpdateOp, Int, Tensor, TensorData};

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
    /// Packed integers with per-group scales, on a GPU (multiplied, and the embedding's rows
    /// looked up, by the CubeCL kernels).
    #[cfg(feature = "wgpu")]
    GpuQuant(Arc<crate::gpu_quant::GpuQuant>),
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
        let chunks =
            data.chunks(block * cols).map(|c| Tensor::from_data(TensorData::new(c.to_vec(), [c.len() / cols, cols]), device)).collect();
        Weight::Float(chunks)
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        match self {
            Weight::Float(w) => w.iter().map(|t| t.dims()[0]).sum(),
            Weight::Quant(q) => q.rows(),
            #[cfg(feature = "wgpu")]
            Weight::GpuQuant(g) => g.rows(),
        }
    }

    /// The rows of `parts` stacked in order, one matrix (the q, k and v projections; the gate
    /// and up projections), so one product computes them all. The parts share their columns and
    /// their kind (f32, or one quantized format on one device).
    pub fn concat_rows(parts: Vec<Weight>) -> Result<Weight> {
        let mismatch = || Error::InvalidArgument { name: "weights", message: "matrices stacked into one must be stored alike".into() };
        let mut parts = parts.into_iter();
        match parts.next().ok_or_else(mismatch)? {
            Weight::Float(mut blocks) => {
                for p in parts {
                    let Weight::Float(b) = p else { return Err(mismatch()) };
                    blocks.extend(b);
                }
                // One block (one product) when they fit one binding together.
                let bytes: u64 = blocks.iter().map(tensor_bytes).sum();
                if blocks.len() > 1 && bytes <= MAX_BINDING_BYTES as u64 {
                    blocks = vec![Tensor::cat(blocks, 0)];
                }
                Ok(Weight::Float(blocks))
            }
            Weight::Quant(q) => {
                let owned = |q: Arc<QuantMatrix>| Arc::try_unwrap(q).unwrap_or_else(|shared| (*shared).clone());
                let mut all = owned(q);
                for p in parts {
                    let Weight::Quant(q) = p else { return Err(mismatch()) };
                    all.append_rows(owned(q))?;
                }
                Ok(Weight::Quant(Arc::new(all)))
            }
            #[cfg(feature = "wgpu")]
            Weight::GpuQuant(g) => {
                let mut all = vec![g];
                for p in parts {
                    let Weight::GpuQuant(g) = p else { return Err(mismatch()) };
                    all.push(g);
                }
                let refs: Vec<&crate::gpu_quant::GpuQuant> = all.iter().map(|g| g.as_ref()).collect();
                Ok(Weight::GpuQuant(Arc::new(crate::gpu_quant::GpuQuant::concat_rows(&refs)?)))
            }
        }
    }

    /// Bytes a product with this weight reads: its f32 values, or its packed levels and scales.
    pub fn bytes(&self) -> u64 {
        match self {
            Weight::Float(w) => w.iter().map(tensor_bytes).sum(),
            // Counted, not copied out (`values_bytes` would copy the whole matrix).
            Weight::Quant(q) => ((q.rows() * q.cols()) as f64 * q.format().bytes_per_weight()) as u64,
            #[cfg(feature = "wgpu")]
            Weight::GpuQuant(g) => g.bytes(),
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
            Weight::GpuQuant(g) => g.matmul_t(x),
        }
    }

    /// `norm(x) Wᵀ`: on a GPU's packed weights the decode kernels apply the norm as they read
    /// `x` ([`crate::gpu_quant::InputNorm`]); elsewhere it runs first.
    pub fn matmul_t_normed(&self, x: Tensor<2>, norm: &RmsNorm) -> Tensor<2> {
        #[cfg(feature = "wgpu")]
        if let Weight::GpuQuant(g) = self {
            return g.matmul_t_normed(x, norm.input(), None, Epilogue::Plain);
        }
        self.matmul_t(norm.forward(x))
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
                    let local: Vec<i64> = ids
                        .iter()
                        .map(|&t| t as usize)
                        .map(|t| if (start..start + rows).contains(&t) { (t - start) as i64 } else { 0 })
                        .collect();
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
            Weight::GpuQuant(g) => g.gather(ids),
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

/// [`LoadOptions::gpu_f16`] decided for `device`, once per load: whether quantized weights
/// uploaded to it run in f16 mode. Asking for f16 on a device without f16 arithmetic is an
/// error.
fn resolve_gpu_f16(choice: Option<bool>, device: &Device) -> Result<bool> {
    #[cfg(feature = "wgpu")]
    let has_f16 = crate::gpu_quant::supports_f16(device);
    #[cfg(not(feature = "wgpu"))]
    let has_f16 = {
        let _ = device;
        false
    };
    match choice {
        Some(true) if !has_f16 => {
            Err(Error::Device("f16 mode (--gpu-f16 on, gpuF16: true) was asked for, but this device has no f16 arithmetic (a GPU with shader-f16)".into()))
        }
        Some(f16) => Ok(f16),
        None => Ok(has_f16),
    }
}

/// Bytes a tensor's elements take in its element type.
fn tensor_bytes<const D: usize>(t: &Tensor<D>) -> u64 {
    (t.shape().num_elements() * t.dtype().size()) as u64
}

/// Values of an activation on the CPU device (a copy in host memory; no GPU is involved).
fn host_values(x: Tensor<2>) -> Vec<f32> {
    x.into_data().try_into_vec::<f32>().unwrap_or_else(|e| panic!("activations are f32 on the CPU device: {e:?}"))
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
        self.forward_then(x, Epilogue::Plain)
    }

    /// [`Linear::forward`], its result finished by `then` (in the product's own launch on a
    /// GPU's packed-weight kernels).
    pub fn forward_then(&self, x: Tensor<2>, then: Epilogue) -> Tensor<2> {
        #[cfg(feature = "wgpu")]
        if let Weight::GpuQuant(g) = &self.weight {
            return g.matmul_t_then(x, self.bias.as_ref(), then);
        }
        then.apply(self.weight.matmul_t(x), self.bias.as_ref())
    }

    /// [`Linear::forward_then`] of `norm(x)`: on a GPU's packed weights the norm is applied as
    /// the decode kernels read `x`, in the product's launch ([`crate::gpu_quant::InputNorm`]).
    pub fn forward_normed(&self, x: Tensor<2>, norm: &RmsNorm, then: Epilogue) -> Tensor<2> {
        #[cfg(feature = "wgpu")]
        if let Weight::GpuQuant(g) = &self.weight {
            return g.matmul_t_normed(x, norm.input(), self.bias.as_ref(), then);
        }
        self.forward_then(norm.forward(x), then)
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.rows()
    }

    /// The layers of `parts` as one, their outputs side by side in order (Qwen2's q, k and v
    /// projections, its gate and up projections: one product instead of several). A part
    /// without a bias gets zeros there.
    pub fn concat_rows(parts: Vec<Linear>) -> Result<Linear> {
        let device = parts.iter().find_map(|l| l.bias.as_ref().map(|b| b.device()));
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        for l in parts {
            if let Some(device) = &device {
                let rows = l.weight.rows();
                biases.push(l.bias.unwrap_or_else(|| Tensor::zeros([rows], device)));
            }
            weights.push(l.weight);
        }
        let bias = device.is_some().then(|| Tensor::cat(biases, 0));
        Ok(Linear { weight: Weight::concat_rows(weights)?, bias })
    }

    /// Bytes one application reads: the weight ([`Weight::bytes`]) and the bias.
    pub fn bytes(&self) -> u64 {
        self.weight.bytes() + self.bias.as_ref().map_or(0, tensor_bytes)
    }
}

/// What a linear layer's product `y` (bias included) is combined with before it is handed on.
/// The packed-weight kernels on a GPU do it in the product's own launch; elsewhere burn's ops
/// (or one pass over host memory) do.
#[derive(Debug, Clone)]
pub enum Epilogue {
    /// `y` as it is.
    Plain,
    /// `residual + y`: the residual stream's add after attention and after the MLP.
    Add(Tensor<2>),
    /// SwiGLU of a product whose first half of outputs is the gate projection and whose second
    /// half is the up projection (the MLP's two stacked, [`Linear::concat_rows`]):
    /// `silu(gate) · up`, half as wide as `y`.
    SwiGlu,
}

impl Epilogue {
    /// Which one it is, as the GPU kernels take it at compile time.
    #[cfg(feature = "wgpu")]
    pub(crate) fn code(&self) -> u32 {
        match self {
            Epilogue::Plain => 0,
            Epilogue::Add(_) => 1,
            Epilogue::SwiGlu => 2,
        }
    }

    /// Adds `bias` to the product `y` and combines the sum with the epilogue, with burn's ops
    /// (outside a product's launch).
    pub fn apply(self, y: Tensor<2>, bias: Option<&Tensor<1>>) -> Tensor<2> {
        let y = match bias {
            Some(b) => y + b.clone().unsqueeze_dim(0),
            None => y,
        };
        match self {
            Epilogue::Plain => y,
            Epilogue::Add(residual) => residual + y,
            Epilogue::SwiGlu => {
                let [n, width] = y.dims();
                let half = width / 2;
                silu_times(y.clone().slice([0..n, 0..half]), y.slice([0..n, half..width]))
            }
        }
    }
}

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
    pub gpu_matvec: Option<crate::device::MatvecKernel>,
    /// How decode attends on a GPU: the fused kernel (default), or burn's ops (comparisons).
    pub gpu_attention: crate::device::DecodeAttention,
    /// How decode steps reach a GPU: recorded once and replayed (default), or launched anew.
    pub gpu_decode: crate::device::GpuDecode,
}

/// [`LoadOptions::kv_f16`] decided for a loaded model: the element type of its KV cache.
fn resolve_kv_dtype(choice: Option<bool>, device: &Device, gpu_f16: bool) -> Result<DType> {
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

/// Root-mean-square normalisation over the last dimension, as Qwen2 computes it in f32.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    /// Normalises `[rows, hidden]` activations.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        #[cfg(feature = "wgpu")]
        if x.device() != Device::flex() {
            return crate::gpu_layer::rms_norm(x, &self.weight, self.eps);
        }
        let variance = x.clone().square().mean_dim(1);
        let x = x * (variance + self.eps).sqrt().recip();
        x * self.weight.clone().unsqueeze_dim(0)
    }

    /// The norm as a GPU product applies it to its input.
    #[cfg(feature = "wgpu")]
    fn input(&self) -> crate::gpu_quant::InputNorm<'_> {
        crate::gpu_quant::InputNorm { weight: &self.weight, eps: self.eps }
    }
}

/// Positions are added to a [`KvCache`] in steps of this many (each growth copies the cache once).
pub const KV_CACHE_STEP: usize = 256;

/// Keys and values of every layer for the positions seen so far, for one or more sequences
/// ("rows"). Storage is preallocated for `capacity` positions per row and written in place as
/// positions are added, so decoding never copies what is already cached; each row has its own
/// length, so the rows of a batch can be at different positions (Maj@N samples that stop, run
/// code or restart at different times).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer, keys and values `[rows * kv_heads * capacity, head_dim]`, ordered by
    /// (row, head, position); f32 or f16 ([`Qwen2Model::kv_dtype`]).
    layers: Vec<Option<(Tensor<2>, Tensor<2>)>>,
    rows: usize,
    capacity: usize,
    lens: Vec<usize>,
    /// Per row, `Some((source, n))` when its first `n` positions hold the same keys and values
    /// as row `source`'s (it was copied from there by [`KvCache::copy_prefix`] and neither row
    /// has been written below `n` since). Every row keeps its own copy; this only lets the CPU
    /// attention read a prompt shared by many samples once for all of them.
    same_as: Vec<Option<(usize, usize)>>,
    /// The decode step recorded on this cache's buffers, replayed while they stay the same
    /// ([`Qwen2Model::forward_rows`] on a GPU).
    #[cfg(feature = "wgpu")]
    graph: GraphSlot,
}

/// A recorded decode step, owned by one cache: a clone of the cache does not share it (its
/// buffers would be another's).
#[cfg(feature = "wgpu")]
#[derive(Default)]
struct GraphSlot(Option<DecodeGraph>);

#[cfg(feature = "wgpu")]
impl Clone for GraphSlot {
    fn clone(&self) -> Self {
        GraphSlot(None)
    }
}

#[cfg(feature = "wgpu")]
impl std::fmt::Debug for GraphSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "a recorded decode step" } else { "none" })
    }
}

/// One decode step of the whole model on a GPU, recorded once with CubeCL's software graph
/// capture (every launch's pipeline, bindings and bind group resolved at recording) and
/// replayed for each later step: the step's inputs are written into the same buffers, then the
/// recorded launches run again. Valid while the rows, the cache's capacity and its buffers are
/// those it was recorded on ([`GraphKey`]).
#[cfg(feature = "wgpu")]
struct DecodeGraph {
    key: GraphKey,
    graph: cubecl::client::Graph,
    /// The inputs, `[rows]` i32 ids, `[rows, head_dim]` rotary table, `[rows]` i32 lengths,
    /// `[rows · kv_heads]` i32 cache rows: written before each replay.
    ids: Tensor<1, Int>,
    rope: Tensor<2>,
    lens: Tensor<1, Int>,
    writes: Tensor<1, Int>,
    /// The logits `[rows, 1, vocab]` each replay writes.
    logits: Tensor<3>,
}

/// What a recorded decode step depends on besides its inputs.
#[cfg(feature = "wgpu")]
#[derive(Debug, Clone, PartialEq)]
struct GraphKey {
    first: usize,
    rows: usize,
    capacity: usize,
    /// Every layer's key and value buffers (CubeCL's memory ids).
    buffers: Vec<String>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions held by row 0 (the only row of a single-sequence cache).
    pub fn len(&self) -> usize {
        self.row_len(0)
    }

    /// Whether row 0 holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions held by `row` (0 for a row never written).
    pub fn row_len(&self, row: usize) -> usize {
        self.lens.get(row).copied().unwrap_or(0)
    }

    /// Rows allocated.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Positions allocated per row.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of keys and values allocated (every layer, row and position of the capacity).
    pub fn bytes(&self) -> usize {
        self.layers.iter().flatten().map(|(k, v)| tensor_bytes(k) + tensor_bytes(v)).sum::<u64>() as usize
    }

    /// The element type keys and values are stored in (`None` before the first forward pass).
    pub fn dtype(&self) -> Option<DType> {
        self.layers.iter().flatten().next().map(|(k, _)| k.dtype())
    }

    /// Keeps only the first `len` positions of every row (a later forward continues from there).
    pub fn truncate(&mut self, len: usize) {
        for l in &mut self.lens {
            *l = (*l).min(len);
        }
    }

    /// Keeps only the first `len` positions of `row`.
    pub fn truncate_row(&mut self, row: usize, len: usize) {
        if let Some(l) = self.lens.get_mut(row) {
            *l = (*l).min(len);
        }
    }

    /// Drops everything, storage included.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Makes row `to` hold the first `len` positions of row `from` (the shared prompt of Maj@N
    /// samples is prefilled once and copied). Fails only when a GPU cache with one more row would
    /// not fit one buffer binding ([`Error::KvCacheTooLarge`]).
    pub fn copy_prefix(&mut self, from: usize, to: usize, len: usize) -> Result<()> {
        let len = len.min(self.row_len(from));
        if from == to || len == 0 {
            self.truncate_row(to, len);
            return Ok(());
        }
        let Some(device) = self.layers.iter().flatten().next().map(|(k, _)| k.device()) else {
            return Ok(());
        };
        let (heads, head_dim) = (self.heads(), self.layers.iter().flatten().next().map_or(0, |(k, _)| k.dims()[1]));
        let dtype = self.dtype().unwrap_or(DType::F32);
        self.reserve(self.layers.len(), to + 1, self.capacity, heads, head_dim, dtype, &device)?;
        let capacity = self.capacity;
        let index = |row: usize| -> Vec<i64> {
            (0..heads).flat_map(|h| (0..len).map(move |p| ((row * heads + h) * capacity + p) as i64)).collect()
        };
        let (src, dst) = (index(from), index(to));
        let n = src.len();
        let src = Tensor::<1, Int>::from_data(TensorData::new(src, [n]), &device);
        let dst = Tensor::<1, Int>::from_data(TensorData::new(dst, [n]), &device);
        for slot in &mut self.layers {
            if let Some((k, v)) = slot.take() {
                let ks = k.clone().select(0, src.clone());
                let vs = v.clone().select(0, src.clone());
                let k = k.select_assign(0, dst.clone(), ks, IndexingUpdateOp::Assign);
                let v = v.select_assign(0, dst.clone(), vs, IndexingUpdateOp::Assign);
                *slot = Some((k, v));
            }
        }
        self.lens[to] = len;
        self.written(to, 0);
        self.same_as[to] = Some((from, len));
        Ok(())
    }

    /// Every layer's key and value buffers, by CubeCL's memory id (a recorded decode step is
    /// valid while they stay the same).
    #[cfg(feature = "wgpu")]
    fn buffer_ids(&self) -> Vec<String> {
        let id = |t: &Tensor<2>| match t.clone().try_into_primitive::<burn::backend::Cube>() {
            Ok(c) => format!("{:?}", c.handle.memory.descriptor().id),
            Err(_) => String::new(),
        };
        self.layers.iter().flatten().flat_map(|(k, v)| [id(k), id(v)]).collect()
    }

    /// Records that `row` is written from position `from` on: its own and every other row's
    /// claim to equal it end there.
    fn written(&mut self, row: usize, from: usize) {
        for (r, same) in self.same_as.iter_mut().enumerate() {
            if let Some((source, n)) = *same
                && (r == row || source == row)
            {
                *same = (n.min(from) > 0).then_some((source, n.min(from)));
            }
        }
    }

    /// The row whose memory holds `row`'s first positions too, and how many (at most the row's
    /// length), following copies of copies; `None` if no other row does.
    pub(crate) fn shared_prefix(&self, row: usize) -> Option<(usize, usize)> {
        let (mut source, mut n) = self.same_as.get(row).copied().flatten()?;
        n = n.min(self.row_len(row));
        while let Some((s, m)) = self.same_as.get(source).copied().flatten() {
            (source, n) = (s, n.min(m));
        }
        (n > 0).then_some((source, n))
    }

    /// Key/value heads per row (from the allocated storage).
    fn heads(&self) -> usize {
        match self.layers.iter().flatten().next() {
            Some((k, _)) if self.rows * self.capacity > 0 => k.dims()[0] / (self.rows * self.capacity),
            _ => 0,
        }
    }

    /// Grows the storage to at least `rows` rows of `positions` positions of `dtype`
    /// (zero-filled, so the masked-out positions attention multiplies by zero are finite).
    #[allow(clippy::too_many_arguments)]
    fn reserve(&mut self, layers: usize, rows: usize, positions: usize, heads: usize, head_dim: usize, dtype: DType, device: &Device) -> Result<()> {
        let capacity = positions.div_ceil(KV_CACHE_STEP) * KV_CACHE_STEP;
        // One layer's keys are one tensor: on a GPU it must fit one buffer binding.
        let bytes = rows.max(self.rows) * heads * capacity.max(self.capacity).max(KV_CACHE_STEP) * head_dim * dtype.size();
        if *device != Device::flex() && bytes > MAX_BINDING_BYTES {
            return Err(Error::KvCacheTooLarge {
                rows: rows.max(self.rows),
                positions: capacity.max(self.capacity),
                mib: bytes.div_ceil(1 << 20),
                limit_mib: MAX_BINDING_BYTES >> 20,
            });
        }
        if self.layers.len() != layers || self.heads() != heads && self.rows * self.capacity > 0 || self.dtype().is_some_and(|d| d != dtype) {
            self.clear();
        }
        if self.layers.is_empty() {
            let (rows, capacity) = (rows.max(1), capacity.max(KV_CACHE_STEP));
            let zeros = || Tensor::<2>::zeros([rows * heads * capacity, head_dim], (device, dtype));
            self.layers = (0..layers).map(|_| Some((zeros(), zeros()))).collect();
            self.rows = rows;
            self.capacity = capacity;
            self.lens = vec![0; rows];
            self.same_as = vec![None; rows];
            return Ok(());
        }
        if capacity > self.capacity {
            let (old, extra) = (self.capacity, capacity - self.capacity);
            let r = self.rows * heads;
            let grow = |t: Tensor<2>| {
                let t = t.reshape([r, old, head_dim]);
                Tensor::cat(vec![t, Tensor::<3>::zeros([r, extra, head_dim], (device, dtype))], 1).reshape([r * capacity, head_dim])
            };
            for slot in &mut self.layers {
                if let Some((k, v)) = slot.take() {
                    *slot = Some((grow(k), grow(v)));
                }
            }
            self.capacity = capacity;
        }
        if rows > self.rows {
            let extra = (rows - self.rows) * heads * self.capacity;
            let grow = |t: Tensor<2>| Tensor::cat(vec![t, Tensor::<2>::zeros([extra, head_dim], (device, dtype))], 0);
            for slot in &mut self.layers {
                if let Some((k, v)) = slot.take() {
                    *slot = Some((grow(k), grow(v)));
                }
            }
            self.rows = rows;
            self.lens.resize(rows, 0);
            self.same_as.resize(rows, None);
        }
        Ok(())
    }
}

/// Where one forward pass writes and reads: rows `first..first + past.len()` of the cache, each
/// starting at its own position, all padded to `seq` new positions.
struct Step {
    first: usize,
    /// Positions each row held before this pass.
    past: Vec<usize>,
    seq: usize,
    capacity: usize,
    /// Per row, another cache row holding its first positions too ([`KvCache::shared_prefix`]).
    shared: Vec<Option<(usize, usize)>>,
    /// Decoding on a GPU: each row's length after this pass, on the device for the fused
    /// attention kernel (uploaded once for all layers).
    #[cfg(feature = "wgpu")]
    gpu_lens: Option<Tensor<1, Int>>,
}

/// The rotary angles of one pass's new positions, on the device.
enum Rope {
    /// Cosines and sines `[rows, 1, seq, head_dim]`, halves repeated, for burn's ops (CPU device).
    Tables(Tensor<4>, Tensor<4>),
    /// `[rows · seq, head_dim]`: each position's `head_dim/2` cosines, then its sines, for the
    /// GPU kernel ([`crate::gpu_layer::rotary_and_cache_write`]).
    #[cfg(feature = "wgpu")]
    Packed(Tensor<2>),
}

struct Attention {
    /// The q, k and v projections as one layer: outputs `[q (heads · d) | k (kv heads · d) |
    /// v (kv heads · d)]`.
    qkv: Linear,
    o: Linear,
}

struct Mlp {
    /// The gate and up projections as one layer: outputs `[gate (intermediate) | up
    /// (intermediate)]`, combined by [`Epilogue::SwiGlu`].
    gate_up: Linear,
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
    /// Whether quantized weights go to the GPU in f16 mode ([`resolve_gpu_f16`]; only GPUs read it).
    #[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
    gpu_f16: bool,
    /// The decode kernel of quantized weights on a GPU, chosen once per load.
    #[cfg(feature = "wgpu")]
    matvec: crate::gpu_quant::MatvecKernel,
}

impl<S: AsyncTensorSource + ?Sized, P: FnMut(LoadProgress<'_>)> Loader<'_, S, P> {
    /// Reports `name` as the next tensor loaded; its presence and shape were checked against
    /// the config before anything was read ([`check_against_config`]).
    fn report(&mut self, name: &str) {
        self.done += 1;
        (self.progress)(LoadProgress { tensor: name, done: self.done, total: self.total });
    }

    /// A quantized matrix where the device keeps it: packed in host memory for the CPU kernels,
    /// packed in GPU buffers for the GPU kernels (the host copy is dropped once uploaded).
    fn stored(&self, q: QuantMatrix) -> Result<Weight> {
        if *self.device == Device::flex() {
            return Ok(Weight::Quant(Arc::new(q)));
        }
        #[cfg(feature = "wgpu")]
        {
            use crate::gpu_quant::{GpuQuant, PrefillPrecision};
            let precision = if self.gpu_f16 { PrefillPrecision::F16 } else { PrefillPrecision::F32 };
            Ok(Weight::GpuQuant(Arc::new(GpuQuant::upload_with(&q, self.device, MAX_BINDING_BYTES, precision, self.matvec))))
        }
        #[cfg(not(feature = "wgpu"))]
        {
            Ok(Weight::float(q.dequantize(), q.rows(), q.cols(), self.device))
        }
    }

    async fn weight(&mut self, name: &str, expected: &[usize], format: Option<QuantFormat>) -> Result<Weight> {
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
    async fn weight_in_pieces(
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

    async fn vector(&mut self, name: &str) -> Result<Tensor<1>> {
        self.report(name);
        let t = self.source.read_f32(name).await?;
        Ok(Tensor::<1>::from_data(TensorData::new(t.data, t.shape), self.device))
    }

    #[allow(clippy::too_many_arguments)]
    async fn linear(
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
fn check_against_config<S: AsyncTensorSource + ?Sized>(c: &Qwen2Config, source: &S) -> Result<usize> {
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

/// A Qwen2 causal language model on one device.
pub struct Qwen2Model {
    config: Qwen2Config,
    device: Device,
    embed: Weight,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// `None` when the head is tied to the embedding.
    lm_head: Option<Linear>,
    /// The element type of the KV cache ([`LoadOptions::kv_f16`]).
    kv_dtype: DType,
    /// How decode attends on a GPU ([`LoadOptions::gpu_attention`]).
    decode_attention: crate::device::DecodeAttention,
    /// How decode steps reach a GPU ([`LoadOptions::gpu_decode`]); replaying turns itself off
    /// for good when a recording fails.
    gpu_decode: crate::device::GpuDecode,
    replay_failed: std::sync::atomic::AtomicBool,
    /// Decode steps replayed from a recording, and recordings made (benchmarks, tests).
    replays: std::sync::atomic::AtomicUsize,
    recordings: std::sync::atomic::AtomicUsize,
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
        let model = crate::weights::ready(Self::load_in_pieces(config, source, device, options, progress, LOAD_PIECE_BYTES))?;
        // The GPU kernels' start-up self-check; in a browser, `load_async` runs it.
        #[cfg(all(feature = "wgpu", not(target_arch = "wasm32")))]
        pollster::block_on(crate::gpu_selfcheck::check_model(&model))?;
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
        // ([`crate::gpu_selfcheck`]): an error here beats wrong rewards later.
        #[cfg(feature = "wgpu")]
        crate::gpu_selfcheck::check_model(&model).await?;
        Ok(model)
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
            #[cfg(feature = "wgpu")]
            matvec: crate::gpu_quant::matvec_kernel(device, options.gpu_matvec),
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

    /// Whether the model runs in f16 mode ([`LoadOptions::gpu_f16`]: f16 prefill products and
    /// KV cache): quantized weights on a GPU with f16 arithmetic, unless turned off.
    pub fn gpu_f16(&self) -> bool {
        #[cfg(feature = "wgpu")]
        return self.prefill_precision() == Some(crate::gpu_quant::PrefillPrecision::F16);
        #[cfg(not(feature = "wgpu"))]
        false
    }

    /// The element type of the KV cache's keys and values ([`LoadOptions::kv_f16`]): by default
    /// f16 in f16 mode ([`LoadOptions::gpu_f16`]), else f32.
    pub fn kv_dtype(&self) -> DType {
        self.kv_dtype
    }

    /// The arithmetic of prefill's products on a GPU with quantized weights (`None` on the CPU
    /// device and for f32 weights, whose products are always f32).
    #[cfg(feature = "wgpu")]
    pub fn prefill_precision(&self) -> Option<crate::gpu_quant::PrefillPrecision> {
        match &self.layers.first()?.mlp.gate_up.weight {
            Weight::GpuQuant(g) => Some(g.precision()),
            _ => None,
        }
    }

    /// The kernel of decode's products on a GPU with quantized weights (`None` on the CPU
    /// device and for f32 weights).
    #[cfg(feature = "wgpu")]
    pub fn matvec_kernel(&self) -> Option<crate::gpu_quant::MatvecKernel> {
        match &self.layers.first()?.mlp.gate_up.weight {
            Weight::GpuQuant(g) => Some(g.matvec()),
            _ => None,
        }
    }

    /// The packed GPU matrices by role (`embed`, then the first layer's `qkv`, `o`, `gate_up`,
    /// `down`, then `lm_head` unless tied): what the start-up self-check
    /// ([`crate::gpu_selfcheck`]) runs follows from their formats and kernels.
    #[cfg(feature = "wgpu")]
    pub(crate) fn gpu_quant_roles(&self) -> Vec<(&'static str, &crate::gpu_quant::GpuQuant)> {
        let mut all = vec![("embed", &self.embed)];
        if let Some(l) = self.layers.first() {
            all.extend([("qkv", &l.attention.qkv.weight), ("o", &l.attention.o.weight), ("gate_up", &l.mlp.gate_up.weight), ("down", &l.mlp.down.weight)]);
        }
        all.extend(self.lm_head.as_ref().map(|h| ("lm_head", &h.weight)));
        all.into_iter()
            .filter_map(|(role, w)| match w {
                Weight::GpuQuant(g) => Some((role, g.as_ref())),
                _ => None,
            })
            .collect()
    }

    /// Bytes of parameters one decode step reads, whatever the batch: every layer's matrices,
    /// biases and norms, the final norm and the lm_head (the tied embedding, read whole as the
    /// head); of the embedding as a lookup table only a row per sequence, left out. Decode can
    /// be no faster than the device's memory bandwidth divided by this.
    pub fn decode_weight_bytes(&self) -> u64 {
        let norm = |n: &RmsNorm| tensor_bytes(&n.weight);
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                let (a, m) = (&l.attention, &l.mlp);
                [&a.qkv, &a.o, &m.gate_up, &m.down].iter().map(|x| x.bytes()).sum::<u64>() + norm(&l.input_norm) + norm(&l.post_norm)
            })
            .sum();
        let head = match &self.lm_head {
            Some(h) => h.bytes(),
            None => self.embed.bytes(),
        };
        layers + norm(&self.norm) + head
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
    /// from what rows `0..batch` of `cache` hold (the same number of positions each) and
    /// appending to them. Returns logits `[batch, positions, vocab]` for the positions `which`
    /// selects.
    pub fn forward(&self, tokens: &[u32], batch: usize, cache: &mut KvCache, which: LogitsFor) -> Result<Tensor<3>> {
        if batch == 0 || tokens.is_empty() || tokens.len() % batch != 0 {
            return Err(Error::InvalidArgument {
                name: "tokens",
                message: format!("{} ids cannot form {batch} sequences of equal, non-zero length", tokens.len()),
            });
        }
        let past = cache.row_len(0);
        if (1..batch).any(|r| cache.row_len(r) != past) {
            return Err(Error::InvalidArgument {
                name: "cache",
                message: "the rows of an equal-length batch hold different numbers of positions".into(),
            });
        }
        let seq = tokens.len() / batch;
        let rows: Vec<&[u32]> = tokens.chunks(seq).collect();
        self.forward_rows(0, &rows, cache, which)
    }

    /// Runs one pass over rows `first..first + inputs.len()` of `cache`, each row continuing
    /// from its own position with its own new ids (`inputs[i]`; an empty one leaves the row as
    /// it is). Rows are padded to the longest input; the padding is never cached as positions.
    /// Returns logits `[rows, 1, vocab]` at each row's last new id for [`LogitsFor::Last`]
    /// (meaningless for an empty input), or `[rows, longest, vocab]` for [`LogitsFor::All`].
    pub fn forward_rows(&self, first: usize, inputs: &[&[u32]], cache: &mut KvCache, which: LogitsFor) -> Result<Tensor<3>> {
        // On the CPU the pass runs on a worker of the thread pool, so the parallel kernels inside
        // it start without waking a sleeping thread for each matrix product.
        #[cfg(not(target_arch = "wasm32"))]
        if self.device == Device::flex() {
            return rayon::scope(|_| self.forward_rows_in_place(first, inputs, cache, which));
        }
        self.forward_rows_in_place(first, inputs, cache, which)
    }

    /// [`Qwen2Model::forward_rows`] on the calling thread.
    fn forward_rows_in_place(&self, first: usize, inputs: &[&[u32]], cache: &mut KvCache, which: LogitsFor) -> Result<Tensor<3>> {
        let c = &self.config;
        let n = inputs.len();
        let seq = inputs.iter().map(|t| t.len()).max().unwrap_or(0);
        if n == 0 || seq == 0 {
            return Err(Error::InvalidArgument { name: "tokens", message: "nothing to run".into() });
        }
        let mut position = 0;
        for (r, t) in inputs.iter().enumerate() {
            let total = cache.row_len(first + r) + t.len();
            if total > c.max_position_embeddings {
                return Err(Error::ContextOverflow { tokens: total, max: c.max_position_embeddings });
            }
            for &id in *t {
                if id as usize >= c.vocab_size {
                    return Err(Error::TokenOutOfRange { id, position, vocab_size: c.vocab_size });
                }
                position += 1;
            }
        }
        let past: Vec<usize> = (0..n).map(|r| cache.row_len(first + r)).collect();
        let needed = past.iter().map(|p| p + seq).max().unwrap_or(seq);
        cache.reserve(self.layers.len(), first + n, needed, c.kv_heads(), c.head_dim(), self.kv_dtype(), &self.device)?;
        for (r, &p) in past.iter().enumerate() {
            cache.written(first + r, p);
        }
        // Decoding on the CPU, rows whose first positions another row holds too attend over
        // that row's memory for them (read once for all).
        let shared: Vec<Option<(usize, usize)>> = (0..n).map(|r| cache.shared_prefix(first + r)).collect();
        #[cfg_attr(not(feature = "wgpu"), allow(unused_mut))]
        let mut step = Step {
            first,
            past,
            seq,
            capacity: cache.capacity,
            shared,
            #[cfg(feature = "wgpu")]
            gpu_lens: None,
        };

        #[cfg(feature = "wgpu")]
        if which == LogitsFor::Last
            && let Some(logits) = self.decode_recorded(&step, inputs, cache)?
        {
            return Ok(logits);
        }

        // Padding repeats each row's last id (or id 0); its keys land past the row's length.
        let padded: Vec<u32> = inputs.iter().flat_map(|t| (0..seq).map(move |i| t.get(i).or(t.last()).copied().unwrap_or(0))).collect();
        let x = self.embed.gather(&padded, &self.device); // [n * seq, hidden]
        let rope = self.rope(&step);
        // Decoding on a GPU: one fused kernel per layer attends without a mask.
        let fused = self.fused_decode_attention(&step);
        #[cfg(feature = "wgpu")]
        if fused && self.device != Device::flex() {
            let lens: Vec<usize> = step.past.iter().map(|p| p + 1).collect();
            step.gpu_lens = Some(crate::gpu_attention::row_lens(&lens, &self.device));
        }
        let mask = (!fused).then(|| self.attention_mask(&step));
        let writes = self.cache_writes(&step, c.kv_heads());
        let x = self.layers_forward(x, &step, &rope, mask.as_ref(), &writes, cache);
        for (r, t) in inputs.iter().enumerate() {
            cache.lens[first + r] += t.len();
        }

        let x = match which {
            LogitsFor::All => x,
            LogitsFor::Last => {
                let last: Vec<i64> = inputs.iter().enumerate().map(|(r, t)| (r * seq + t.len().max(1) - 1) as i64).collect();
                x.select(0, Tensor::<1, Int>::from_data(TensorData::new(last, [n]), &self.device))
            }
        };
        let rows = x.dims()[0];
        Ok(self.head(x).reshape([n, rows / n, c.vocab_size]))
    }

    /// Every decoder layer over the pass's hidden states `x` (`[rows · seq, hidden]`), each
    /// writing its keys and values into `cache`.
    fn layers_forward(&self, mut x: Tensor<2>, step: &Step, rope: &Rope, mask: Option<&Tensor<5>>, writes: &Tensor<1, Int>, cache: &mut KvCache) -> Tensor<2> {
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let qkv = layer.attention.qkv.forward_normed(x.clone(), &layer.input_norm, Epilogue::Plain);
            let heads = self.attention(qkv, step, rope, mask, writes, slot);
            x = layer.attention.o.forward_then(heads, Epilogue::Add(x));
            let m = &layer.mlp;
            let h = m.gate_up.forward_normed(x.clone(), &layer.post_norm, Epilogue::SwiGlu);
            x = m.down.forward_then(h, Epilogue::Add(x));
        }
        x
    }

    /// The final norm and the output head: logits `[rows, vocab]`.
    fn head(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => head.forward_normed(x, &self.norm, Epilogue::Plain),
            None => self.embed.matmul_t_normed(x, &self.norm),
        }
    }

    /// The rotary angles of each row's new positions, computed in f32 exactly as transformers
    /// does (inverse frequencies, outer product, then cos/sin), in the form the device's
    /// attention reads them.
    fn rope(&self, step: &Step) -> Rope {
        let d = self.config.head_dim();
        let n = step.past.len();
        #[cfg(feature = "wgpu")]
        if self.device != Device::flex() {
            return Rope::Packed(Tensor::from_data(TensorData::new(self.rope_table(step), [n * step.seq, d]), &self.device));
        }
        let mut cos = Vec::with_capacity(n * step.seq * d);
        let mut sin = Vec::with_capacity(n * step.seq * d);
        for a in self.rope_angles(step) {
            for _ in 0..2 {
                cos.extend(a.iter().map(|v| v.cos()));
                sin.extend(a.iter().map(|v| v.sin()));
            }
        }
        let shape = [n, 1, step.seq, d];
        Rope::Tables(Tensor::from_data(TensorData::new(cos, shape), &self.device), Tensor::from_data(TensorData::new(sin, shape), &self.device))
    }

    /// How many decode steps were replayed from a recording, and how many recordings were made
    /// ([`LoadOptions::gpu_decode`]).
    pub fn decode_replays(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.replays.load(Relaxed), self.recordings.load(Relaxed))
    }

    /// A decode step on a GPU through a recording ([`DecodeGraph`]): replayed when `cache`
    /// holds one for these rows and buffers, else recorded (after one ordinary run of the same
    /// launches, which sizes CubeCL's pools so the recording allocates nothing) and replayed.
    /// `None`: this step launches as usual (the CPU, f32 weights, burn's attention, several
    /// new positions or an empty row, replaying turned off, or a recording that failed).
    #[cfg(feature = "wgpu")]
    fn decode_recorded(&self, step: &Step, inputs: &[&[u32]], cache: &mut KvCache) -> Result<Option<Tensor<3>>> {
        use std::sync::atomic::Ordering::Relaxed;
        let Weight::GpuQuant(embed) = &self.embed else { return Ok(None) };
        if self.device == Device::flex()
            || self.gpu_decode != crate::device::GpuDecode::Replay
            || self.replay_failed.load(Relaxed)
            || !self.fused_decode_attention(step)
            || inputs.iter().any(|t| t.len() != 1)
        {
            return Ok(None);
        }
        let (n, d, kvh) = (inputs.len(), self.config.head_dim(), self.config.kv_heads());
        let ids: Vec<i32> = inputs.iter().map(|t| t[0] as i32).collect();
        let table = self.rope_table(step);
        let lens: Vec<i32> = step.past.iter().map(|&p| (p + 1) as i32).collect();
        let writes = self.cache_write_rows(step, kvh);
        let writes: Vec<i32> = writes.into_iter().map(|i| i32::try_from(i).expect("a KV cache of fewer than 2³¹ rows")).collect();
        let key = GraphKey { first: step.first, rows: n, capacity: step.capacity, buffers: cache.buffer_ids() };
        let finish = |cache: &mut KvCache| {
            for r in 0..n {
                cache.lens[step.first + r] += 1;
            }
        };
        if let Some(g) = cache.graph.0.as_ref().filter(|g| g.key == key) {
            let client = crate::gpu_layer::cube(g.rope.clone()).client;
            for (t, bytes) in [
                (g.ids.clone().try_into_primitive::<burn::backend::Cube>(), bytemuck::cast_slice::<i32, u8>(&ids).to_vec()),
                (g.lens.clone().try_into_primitive::<burn::backend::Cube>(), bytemuck::cast_slice::<i32, u8>(&lens).to_vec()),
                (g.writes.clone().try_into_primitive::<burn::backend::Cube>(), bytemuck::cast_slice::<i32, u8>(&writes).to_vec()),
                (g.rope.clone().try_into_primitive::<burn::backend::Cube>(), bytemuck::cast_slice::<f32, u8>(&table).to_vec()),
            ] {
                let t = t.map_err(|_| Error::Device("a recorded step's input is not a GPU tensor".into()))?;
                client.write(&t.handle, burn::tensor::Bytes::from_bytes_vec(bytes));
            }
            // SAFETY: the graph's buffers are alive and unshared: the inputs and logits are held
            // here, the weights by the model, the cache's buffers by `cache` (the key checked
            // they are the recorded ones), the rest pinned by the graph; one thread decodes.
            unsafe { g.graph.replay() }.map_err(|e| Error::Device(format!("replaying the recorded decode step: {e:?}")))?;
            self.replays.fetch_add(1, Relaxed);
            let logits = g.logits.clone();
            finish(cache);
            return Ok(Some(logits));
        }
        // A new recording: the old one (and the pool pages it pins) goes first.
        cache.graph.0 = None;
        let dev = &self.device;
        let ids_t = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), dev);
        let rope_t = Tensor::<2>::from_data(TensorData::new(table, [n, d]), dev);
        let lens_t = Tensor::<1, Int>::from_data(TensorData::new(lens, [n]), dev);
        let writes_t = Tensor::<1, Int>::from_data(TensorData::new(writes, [n * kvh]), dev);
        let client = crate::gpu_layer::cube(rope_t.clone()).client;
        let give_up = || {
            self.replay_failed.store(true, Relaxed);
            Ok(None)
        };
        if client.graph_prepare().is_err() {
            return give_up();
        }
        // The same launches, run once for real: they write this step's keys and values (which
        // the recording writes again, identically) and leave the pools as the recording needs.
        let warm = Step { first: step.first, past: step.past.clone(), seq: 1, capacity: step.capacity, shared: step.shared.clone(), gpu_lens: Some(lens_t.clone()) };
        drop(self.decode_launches(embed, &ids_t, &rope_t, &warm, &writes_t, cache));
        let before = cache.buffer_ids();
        if client.start_capture().is_err() {
            let _ = client.stop_capture();
            return give_up();
        }
        let logits = self.decode_launches(embed, &ids_t, &rope_t, &warm, &writes_t, cache);
        let graph = match client.stop_capture() {
            Ok(g) => g,
            Err(_) => return give_up(),
        };
        if cache.buffer_ids() != before {
            // The recording copied the cache instead of writing it in place: replays would write
            // a stale copy. Launch as usual from now on.
            return give_up();
        }
        // SAFETY: as for a replay above; nothing else holds these buffers yet.
        unsafe { graph.replay() }.map_err(|e| Error::Device(format!("running the recorded decode step: {e:?}")))?;
        self.recordings.fetch_add(1, Relaxed);
        let key = GraphKey { first: step.first, rows: n, capacity: step.capacity, buffers: before };
        cache.graph.0 = Some(DecodeGraph { key, graph, ids: ids_t, rope: rope_t, lens: lens_t, writes: writes_t, logits: logits.clone() });
        finish(cache);
        Ok(Some(logits))
    }

    /// A decode step's launches from inputs on the device (one new position per row, fused
    /// attention, the embedding looked up from packed weights): the logits `[rows, 1, vocab]`.
    #[cfg(feature = "wgpu")]
    fn decode_launches(
        &self,
        embed: &crate::gpu_quant::GpuQuant,
        ids: &Tensor<1, Int>,
        rope: &Tensor<2>,
        step: &Step,
        writes: &Tensor<1, Int>,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let n = step.past.len();
        let x = self.layers_forward(embed.gather_device(ids), step, &Rope::Packed(rope.clone()), None, writes, cache);
        self.head(x).reshape([n, 1, self.config.vocab_size])
    }

    /// The GPU kernel's rotary table of this pass's new positions ([`Rope::Packed`]): each
    /// position's `head_dim/2` cosines, then its sines, computed as [`Qwen2Model::rope`] does.
    #[cfg(feature = "wgpu")]
    fn rope_table(&self, step: &Step) -> Vec<f32> {
        self.rope_angles(step).flat_map(|a| a.iter().map(|v| v.cos()).chain(a.iter().map(|v| v.sin())).collect::<Vec<f32>>()).collect()
    }

    /// Each new position's `head_dim/2` rotary angles, row by row (position × inverse
    /// frequency, in f32 as transformers computes them).
    fn rope_angles<'s>(&self, step: &'s Step) -> impl Iterator<Item = Vec<f32>> + 's {
        let d = self.config.head_dim();
        let base = self.config.rope_theta as f32;
        let inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32)).collect();
        step.past.iter().flat_map(|&past| past..past + step.seq).map(move |p| inv.iter().map(|f| p as f32 * f).collect())
    }

    /// Whether this pass attends with a fused decode kernel, without a mask: one new position
    /// per row, on the CPU ([`crate::cpu_attention`]) or on a GPU unless the model was loaded
    /// with [`DecodeAttention::Ops`](crate::device::DecodeAttention::Ops) ([`crate::gpu_attention`]).
    fn fused_decode_attention(&self, step: &Step) -> bool {
        if step.seq != 1 {
            return false;
        }
        if self.device == Device::flex() {
            return true;
        }
        cfg!(feature = "wgpu") && self.decode_attention == crate::device::DecodeAttention::Fused
    }

    /// How decode attends on a GPU ([`LoadOptions::gpu_attention`]).
    pub fn decode_attention(&self) -> crate::device::DecodeAttention {
        self.decode_attention
    }

    /// Additive mask `[rows, 1, 1, seq, capacity]`: new position `i` of a row sees the row's
    /// cached positions and its own new positions up to `i`; −∞ everywhere else (other rows'
    /// padding, unused capacity).
    fn attention_mask(&self, step: &Step) -> Tensor<5> {
        let (seq, cap) = (step.seq, step.capacity);
        let mut m = vec![f32::NEG_INFINITY; step.past.len() * seq * cap];
        for (r, &past) in step.past.iter().enumerate() {
            for i in 0..seq {
                let row = &mut m[(r * seq + i) * cap..][..cap];
                row[..=past + i].fill(0.0);
            }
        }
        Tensor::from_data(TensorData::new(m, [step.past.len(), 1, 1, seq, cap]), &self.device)
    }

    /// Cache rows the new keys and values go to, in the order of `[rows, kv_heads, seq, d]`
    /// (i64 for burn's `select_assign` on the CPU device, i32 for the GPU kernel).
    fn cache_writes(&self, step: &Step, heads: usize) -> Tensor<1, Int> {
        let idx = self.cache_write_rows(step, heads);
        let n = idx.len();
        if self.device == Device::flex() {
            return Tensor::from_data(TensorData::new(idx, [n]), &self.device);
        }
        // The GPU kernel that writes the cache reads 32-bit indices.
        let idx: Vec<i32> = idx.into_iter().map(|i| i32::try_from(i).expect("a KV cache of fewer than 2³¹ rows")).collect();
        Tensor::from_data(TensorData::new(idx, [n]), &self.device)
    }

    /// The cache rows of [`Qwen2Model::cache_writes`], on the host.
    fn cache_write_rows(&self, step: &Step, heads: usize) -> Vec<i64> {
        let mut idx = Vec::with_capacity(step.past.len() * heads * step.seq);
        for (r, &past) in step.past.iter().enumerate() {
            for h in 0..heads {
                let base = ((step.first + r) * heads + h) * step.capacity;
                idx.extend((0..step.seq).map(|i| (base + past + i) as i64));
            }
        }
        idx
    }

    /// Self-attention of one layer up to the output projection, from the q/k/v projection's
    /// output (`[rows · seq, (heads + 2 · kv_heads) · d]`): the new queries and keys rotated,
    /// the keys and values written to the cache, and each head's attention over its row's
    /// cache, `[rows · seq, heads · d]`.
    fn attention(
        &self,
        qkv: Tensor<2>,
        step: &Step,
        rope: &Rope,
        mask: Option<&Tensor<5>>,
        writes: &Tensor<1, Int>,
        slot: &mut Option<(Tensor<2>, Tensor<2>)>,
    ) -> Tensor<2> {
        let c = &self.config;
        let (nh, kvh, d) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let (n, seq, cap) = (step.past.len(), step.seq, step.capacity);
        let groups = nh / kvh;
        let (ck, cv) = slot.take().expect("the cache was reserved for every layer");
        // Rotate the new queries and keys, and write the new keys and values in place; then
        // attend over the rows' whole storage.
        let (q, ck, cv) = match rope {
            Rope::Tables(cos, sin) => {
                let (m, qd, kd) = (n * seq, nh * d, kvh * d);
                let q = qkv.clone().slice([0..m, 0..qd]);
                let k = qkv.clone().slice([0..m, qd..qd + kd]);
                let v = qkv.slice([0..m, qd + kd..qd + 2 * kd]);
                let heads = |t: Tensor<2>, h: usize| t.reshape([n, seq, h, d]).swap_dims(1, 2); // [n, h, seq, d]
                let q = rotate(heads(q, nh), cos, sin);
                let k = rotate(heads(k, kvh), cos, sin);
                let v = heads(v, kvh);
                // An f16 cache stores the new keys and values rounded to f16.
                let (k, v) = (k.reshape([n * kvh * seq, d]).cast(ck.dtype()), v.reshape([n * kvh * seq, d]).cast(cv.dtype()));
                let ck = ck.select_assign(0, writes.clone(), k, IndexingUpdateOp::Assign);
                let cv = cv.select_assign(0, writes.clone(), v, IndexingUpdateOp::Assign);
                (q, ck, cv)
            }
            #[cfg(feature = "wgpu")]
            Rope::Packed(table) => {
                // One launch; an f16 cache (f16 mode) is written in f16.
                let shape = crate::gpu_layer::NewPositions { rows: n, seq, heads: nh, kv_heads: kvh, head_dim: d };
                let (q, ck, cv) = crate::gpu_layer::rotary_and_cache_write(qkv, table.clone(), writes, (ck, cv), shape);
                (q.reshape([n, seq, nh, d]).swap_dims(1, 2), ck, cv)
            }
        };
        let Some(mask) = mask else {
            // A fused decode kernel (one new position per row).
            if self.device == Device::flex() {
                let lens: Vec<usize> = step.past.iter().map(|p| p + 1).collect();
                let (out, ck, cv) = crate::cpu_attention::decode_attention(q, ck, cv, step.first, &lens, &step.shared, kvh, cap);
                *slot = Some((ck, cv));
                return out;
            }
            #[cfg(feature = "wgpu")]
            {
                let lens = step.gpu_lens.as_ref().expect("a fused GPU decode pass has its row lengths on the device");
                let out = crate::gpu_attention::decode_attention(q.reshape([n, nh, d]), &ck, &cv, step.first, lens, kvh, cap);
                *slot = Some((ck, cv));
                return out.reshape([n, nh * d]);
            }
            #[cfg(not(feature = "wgpu"))]
            unreachable!("without GPU support only the CPU device exists");
        };
        let span = step.first * kvh * cap..(step.first + n) * kvh * cap;
        let keys = ck.clone().slice([span.clone(), 0..d]).reshape([n, kvh, cap, d]);
        let values = cv.clone().slice([span, 0..d]).reshape([n, kvh, cap, d]);
        *slot = Some((ck, cv));

        if self.device == Device::flex() {
            // Prefill on the CPU: burn's fused attention (grouped heads read their shared
            // key/value head in place, the mask is broadcast over heads, keys are not transposed).
            // An f16 cache is read in f32.
            let (keys, values) = (keys.cast(DType::F32), values.cast(DType::F32));
            let bias = mask.clone().reshape([n, 1, seq, cap]);
            let options = AttentionModuleOptions { scale: Some(1.0 / (d as f64).sqrt()), softcap: None, is_causal: false };
            let out = burn::tensor::module::attention(q, keys, values, None, Some(bias), options); // [n, nh, seq, d]
            return out.swap_dims(1, 2).reshape([n * seq, nh * d]);
        }
        // Grouped-query attention without copying keys: the `groups` query heads that share a
        // key/value head are stacked along the query axis, rows ordered (group, position).
        // An f16 cache is read in f32.
        let (keys, values) = (keys.cast(DType::F32), values.cast(DType::F32));
        let q = q.reshape([n, kvh, groups * seq, d]);
        let scores = q.matmul(keys.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt()); // [n, kvh, g*seq, cap]
        let scores = (scores.reshape([n, kvh, groups, seq, cap]) + mask.clone()).reshape([n, kvh, groups * seq, cap]);
        let out = softmax(scores, 3).matmul(values); // [n, kvh, g*seq, d]
        out.reshape([n, nh, seq, d]).swap_dims(1, 2).reshape([n * seq, nh * d])
    }
}

/// `silu(gate) · up`, the SwiGLU of the MLP. On the CPU in one pass over host memory (burn's
/// `silu` allocates twice and multiplies separately); elsewhere with burn's ops.
fn silu_times(gate: Tensor<2>, up: Tensor<2>) -> Tensor<2> {
    let device = gate.device();
    if device != Device::flex() {
        return silu(gate) * up;
    }
    let shape = gate.dims();
    let (mut g, u) = (host_values(gate), host_values(up));
    for (g, &u) in g.iter_mut().zip(&u) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
    Tensor::from_data(TensorData::new(g, shape), &device)
}

/// Applies rotary embeddings to `[batch, heads, seq, d]` with `[batch, 1, seq, d]` tables
/// (the "rotate half" convention of Qwen2).
fn rotate(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, n, s, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..b, 0..n, 0..s, 0..half]);
    let x2 = x.clone().slice([0..b, 0..n, 0..s, half..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_bytes_count_every_layer_row_and_position_allocated() {
        for (dtype, size) in [(DType::F32, 4), (DType::F16, 2)] {
            let mut c = KvCache::new();
            assert_eq!(c.bytes(), 0);
            // 3 layers, 4 rows of 2 heads of 8 dimensions; 16 positions take one step (256).
            c.reserve(3, 4, 16, 2, 8, dtype, &Device::flex()).unwrap();
            assert_eq!(c.bytes(), 3 * 2 * 4 * 2 * KV_CACHE_STEP * 8 * size);
            // One more row, and capacity for 300 positions (two steps).
            c.reserve(3, 5, 300, 2, 8, dtype, &Device::flex()).unwrap();
            assert_eq!(c.bytes(), 3 * 2 * 5 * 2 * 2 * KV_CACHE_STEP * 8 * size);
        }
    }

    #[test]
    fn copied_prefixes_are_tracked_until_either_row_is_rewritten() {
        let mut c = KvCache::new();
        c.reserve(1, 4, 16, 1, 2, DType::F32, &Device::flex()).unwrap();
        c.lens[0] = 10;
        c.copy_prefix(0, 1, 8).unwrap();
        assert_eq!(c.shared_prefix(1), Some((0, 8)));
        // A copy of a copy leads to the first row.
        c.copy_prefix(1, 2, 6).unwrap();
        assert_eq!(c.shared_prefix(2), Some((0, 6)));
        // The source written from position 4 on: both claims end there.
        c.written(0, 4);
        assert_eq!((c.shared_prefix(1), c.shared_prefix(2)), (Some((0, 4)), Some((0, 4))));
        // Never beyond a row's own length.
        c.truncate_row(2, 3);
        assert_eq!(c.shared_prefix(2), Some((0, 3)));
        // Row 0 overwritten by a copy from row 3: row 1 no longer equals it, row 2 still equals
        // row 1.
        c.lens[3] = 5;
        c.copy_prefix(3, 0, 5).unwrap();
        assert_eq!((c.shared_prefix(0), c.shared_prefix(1), c.shared_prefix(2)), (Some((3, 5)), None, Some((1, 3))));
        // A row's own writes end its claim too.
        c.written(0, 0);
        assert_eq!(c.shared_prefix(0), None);
    }
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
            let options = LoadOptions { quant, ..Default::default() };
            let whole =
                crate::weights::ready(Qwen2Model::load_in_pieces(config.clone(), &source, &device, options, |_| {}, usize::MAX)).unwrap();
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
