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
