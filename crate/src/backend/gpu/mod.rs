//! The GPU kernels (CubeCL, compiled to WGSL, SPIR-V or Metal), along the decode step: packed
//! quantized products with their epilogues and input norm ([`quant`]), the layer's small
//! operations ([`layer`]: RMSNorm, rotary embedding with the KV-cache write), decode attention
//! ([`attention`]), the top-k of the logits (`topk`), shared-memory reductions (`reduce`),
//! recorded decode steps ([`replay`]), and the start-up check that each kernel computes what it
//! should ([`selfcheck`]). Built without GPU support (the `wgpu` feature off), the same names
//! are stand-ins (`stub.rs`) that nothing reaches, so the model needs no `#[cfg]`.
//!
//! May import: [`crate::backend`]'s device helpers, [`crate::backend::product`] and
//! [`crate::backend::kernels`], the error type and the quantized format; never the model.

#[cfg(feature = "wgpu")]
pub mod attention;
#[cfg(feature = "wgpu")]
pub mod layer;
#[cfg(feature = "wgpu")]
pub mod quant;
#[cfg(feature = "wgpu")]
pub(crate) mod reduce;
#[cfg(feature = "wgpu")]
pub mod replay;
#[cfg(feature = "wgpu")]
pub mod selfcheck;
#[cfg(feature = "wgpu")]
pub mod topk;

#[cfg(not(feature = "wgpu"))]
mod stub;
#[cfg(not(feature = "wgpu"))]
pub use stub::{attention, layer, quant, replay, selfcheck};

use burn::tensor::Tensor;

/// An RMSNorm applied to a product's input (`quant::GpuQuant::matmul_t_normed`): `x /
/// √(mean(x²) + eps) · weight` per activation row, as Qwen2 computes it in f32. The decode
/// kernels apply it as they read `x`, so a norm followed by a product is one launch.
#[derive(Debug, Clone, Copy)]
pub struct InputNorm<'a> {
    /// The norm's weight, one per column.
    pub weight: &'a Tensor<1>,
    /// Added to the mean square.
    pub eps: f64,
}

impl InputNorm<'_> {
    /// The norm on its own ([`layer::rms_norm`], one launch).
    pub fn apply(&self, x: Tensor<2>) -> Tensor<2> {
        layer::rms_norm(x, self.weight, self.eps)
    }
}

/// The shape of one pass's new positions for `layer::rotary_and_cache_write`.
#[derive(Debug, Clone, Copy)]
pub struct NewPositions {
    /// Sequences (batch rows) in the pass.
    pub rows: usize,
    /// New positions per row.
    pub seq: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
}
