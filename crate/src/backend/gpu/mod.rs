//! The GPU kernels (CubeCL, compiled to WGSL, SPIR-V or Metal), along the decode step: packed
//! quantized products with their epilogues and input norm ([`quant`]), the layer's small
//! operations ([`layer`]: RMSNorm, rotary embedding with the KV-cache write), decode attention
//! ([`attention`]), the top-k of the logits ([`topk`]), shared-memory reductions ([`reduce`]),
//! and the start-up check that each kernel computes what it should ([`selfcheck`]).
//!
//! May import: [`crate::backend`]'s device helpers and [`crate::backend::product`], the error
//! type and the quantized format; never the model.

pub mod attention;
pub mod layer;
pub mod quant;
pub(crate) mod reduce;
pub mod selfcheck;
pub mod topk;
