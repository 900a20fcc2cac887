//! RMSNorm, as Qwen2 computes it in f32: one kernel on a GPU, or applied by the product after it
//! as that product reads its input ([`crate::backend::gpu::quant::InputNorm`]).

use burn::tensor::{Device, Tensor};

/// Root-mean-square normalisation over the last dimension, as Qwen2 computes it in f32.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub(super) weight: Tensor<1>,
    pub(super) eps: f64,
}

impl RmsNorm {
    /// Normalises `[rows, hidden]` activations.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        if x.device() != Device::flex() {
            return crate::backend::gpu::layer::rms_norm(x, &self.weight, self.eps);
        }
        let variance = x.clone().square().mean_dim(1);
        let x = x * (variance + self.eps).sqrt().recip();
        x * self.weight.clone().unsqueeze_dim(0)
    }

    /// The norm as a GPU product applies it to its input.
    pub(crate) fn input(&self) -> crate::backend::gpu::quant::InputNorm<'_> {
        crate::backend::gpu::quant::InputNorm { weight: &self.weight, eps: self.eps }
    }
}
