//! The linear layer, the one place weights are multiplied: [`Weight`] (f32 or quantized, on the
//! CPU or a GPU) and [`Linear`] (a weight and a bias), with the epilogues a product applies and
//! the RMSNorm a GPU product applies to its input.

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::norm::RmsNorm;
use crate::backend::cpu::host_values;
pub use crate::backend::product::{Epilogue, MAX_BINDING_BYTES, PREFILL_ROWS};
use crate::error::{Error, Result};
use crate::quant::QuantMatrix;

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
    GpuQuant(Arc<crate::backend::gpu::quant::GpuQuant>),
}

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
            Weight::GpuQuant(g) => {
                let mut all = vec![g];
                for p in parts {
                    let Weight::GpuQuant(g) = p else { return Err(mismatch()) };
                    all.push(g);
                }
                let refs: Vec<&crate::backend::gpu::quant::GpuQuant> = all.iter().map(|g| g.as_ref()).collect();
                Ok(Weight::GpuQuant(Arc::new(crate::backend::gpu::quant::GpuQuant::concat_rows(&refs)?)))
            }
        }
    }

    /// Bytes a product with this weight reads: its f32 values, or its packed levels and scales.
    pub fn bytes(&self) -> u64 {
        match self {
            Weight::Float(w) => w.iter().map(tensor_bytes).sum(),
            // Counted, not copied out (`values_bytes` would copy the whole matrix).
            Weight::Quant(q) => ((q.rows() * q.cols()) as f64 * q.format().bytes_per_weight()) as u64,
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
            Weight::GpuQuant(g) => g.matmul_t(x),
        }
    }

    /// `norm(x) Wᵀ`: on a GPU's packed weights the decode kernels apply the norm as they read
    /// `x` ([`crate::backend::gpu::quant::InputNorm`]); elsewhere it runs first.
    pub fn matmul_t_normed(&self, x: Tensor<2>, norm: &RmsNorm) -> Tensor<2> {
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
            Weight::GpuQuant(g) => g.gather(ids),
            Weight::Quant(q) => gather_rows(q, ids, device),
        }
    }
}

/// Rows `ids` of a packed matrix, expanded on the host (only the rows, never the table).
pub(super) fn gather_rows(q: &QuantMatrix, ids: &[u32], device: &Device) -> Tensor<2> {
    let cols = q.cols();
    let mut out = vec![0f32; ids.len() * cols];
    for (row, &id) in out.chunks_exact_mut(cols).zip(ids) {
        q.dequantize_row(id as usize, row);
    }
    Tensor::from_data(TensorData::new(out, [ids.len(), cols]), device)
}

/// Bytes a tensor's elements take in its element type.
pub(crate) fn tensor_bytes<const D: usize>(t: &Tensor<D>) -> u64 {
    (t.shape().num_elements() * t.dtype().size()) as u64
}

/// A linear layer `y = x Wᵀ + b`. The weight keeps the checkpoint's `[out, in]` layout, in f32 or
/// quantized: this is the one place weights are multiplied, so there is one model whatever the
/// weight format.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(super) weight: Weight,
    pub(super) bias: Option<Tensor<1>>,
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
        if let Weight::GpuQuant(g) = &self.weight {
            return g.matmul_t_then(x, self.bias.as_ref(), then);
        }
        then.apply(self.weight.matmul_t(x), self.bias.as_ref())
    }

    /// [`Linear::forward_then`] of `norm(x)`: on a GPU's packed weights the norm is applied as
    /// the decode kernels read `x`, in the product's launch ([`crate::backend::gpu::quant::InputNorm`]).
    pub fn forward_normed(&self, x: Tensor<2>, norm: &RmsNorm, then: Epilogue) -> Tensor<2> {
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
