//! The custom GPU kernels by name and mode, and what their start-up check found: the
//! vocabulary the model and the check share ([`crate::backend::gpu::selfcheck`] runs them).

use crate::backend::{MatvecKernel, PrefillPrecision};
use crate::quant::QuantFormat;

/// What a decode product does with its sums in its own launch ([`Epilogue`], and whether a
/// bias is added): each is a different compiled kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The product as it is (the lm_head).
    Plain,
    /// Plus a bias (the stacked q/k/v projection).
    Bias,
    /// Plus the residual stream (the o and down projections).
    Residual,
    /// SwiGLU of the stacked gate and up projections.
    SwiGlu,
}

/// One custom GPU kernel in one mode, as a model runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The decode product over packed weights (fewer than [`PREFILL_ROWS`] activation rows).
    Decode {
        /// The weights' format.
        format: QuantFormat,
        /// Cooperative or per-unit.
        kernel: MatvecKernel,
        /// Its epilogue.
        finish: Finish,
        /// Whether it applies an RMSNorm to its input as it reads it (the products after a
        /// norm: q/k/v, gate/up, the lm_head).
        normed: bool,
    },
    /// Prefill's product: packed weights expanded on the GPU (f32 or f16), then a dense product.
    Prefill {
        /// The weights' format.
        format: QuantFormat,
        /// The expansion's and product's precision.
        precision: PrefillPrecision,
    },
    /// The embedding lookup from a packed table.
    Lookup {
        /// The table's format.
        format: QuantFormat,
    },
    /// RMSNorm.
    RmsNorm,
    /// The rotary embedding of new queries and keys with the KV-cache write.
    RotaryCache {
        /// Whether the cache holds f16 (else f32).
        f16_cache: bool,
    },
    /// Decode attention over the KV cache.
    Attention {
        /// Whether the cache holds f16 (else f32).
        f16_cache: bool,
    },
    /// The selection of each row's `k` largest logits ([`crate::backend::gpu::topk`]): `k` = 1 for
    /// greedy decoding, 21 for GenPRM's top-k 20 (other values compile when first used).
    TopK {
        /// How many per row.
        k: usize,
    },
}

/// The top-k sizes the engine runs with GenPRM's settings (greedy; top-k 20, read as 21).
pub const TOP_KS: [usize; 2] = [1, 21];

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache = |f16: bool| if f16 { "f16" } else { "f32" };
        match *self {
            Kernel::Decode { format, kernel, finish, normed } => {
                let norm = if normed { ", input RMSNorm" } else { "" };
                let finish = match finish {
                    Finish::Plain => "",
                    Finish::Bias => ", bias",
                    Finish::Residual => ", residual add",
                    Finish::SwiGlu => ", SwiGLU",
                };
                write!(f, "{format} decode ({kernel}{norm}{finish})")
            }
            Kernel::Prefill { format, precision } => write!(f, "{format} prefill ({precision})"),
            Kernel::Lookup { format } => write!(f, "{format} embedding lookup"),
            Kernel::RmsNorm => f.write_str("RMSNorm"),
            Kernel::RotaryCache { f16_cache } => write!(f, "rotary + KV-cache write ({} cache)", cache(f16_cache)),
            Kernel::Attention { f16_cache } => write!(f, "decode attention ({} cache)", cache(f16_cache)),
            Kernel::TopK { k } => write!(f, "top-{k} of the logits"),
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfCheck {
    /// The CPU device: no GPU kernel runs.
    NotAGpu,
    /// The device computes nothing at all, not even burn's own kernels (Dawn's null backend,
    /// wgpu's no-op backend): nothing was compared.
    NothingComputed,
    /// Every kernel agreed with its reference.
    Passed {
        /// How many kernels (in their modes) were run.
        kernels: usize,
    },
}

