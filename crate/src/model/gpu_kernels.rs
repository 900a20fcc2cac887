//! Which GPU kernels a loaded model runs, in which modes, and their start-up check
//! ([`crate::backend::gpu::selfcheck`] runs and compares them).

use burn::tensor::{DType, Device};

use super::Qwen2Model;
use crate::backend::gpu::selfcheck::check;
use crate::backend::kernels::{Finish, Kernel, SelfCheck, TOP_KS};
use crate::error::Result;

/// The kernels `model` runs on its device, each in the mode it runs it (empty on the CPU).
pub fn kernels_for(model: &Qwen2Model) -> Vec<Kernel> {
    let device = model.device();
    if *device == Device::flex() {
        return Vec::new();
    }
    let f16_cache = model.kv_dtype() == DType::F16;
    let mut kernels = vec![Kernel::RmsNorm, Kernel::RotaryCache { f16_cache }];
    kernels.extend(TOP_KS.map(|k| Kernel::TopK { k }));
    if model.decode_attention() == crate::backend::DecodeAttention::Fused {
        kernels.push(Kernel::Attention { f16_cache });
    }
    let tied = model.gpu_quant_roles().iter().all(|(role, _)| *role != "lm_head");
    for (role, g) in model.gpu_quant_roles() {
        let (format, kernel) = (g.format(), g.matvec());
        // Every decode product follows a norm except the two that add to the residual stream.
        let decode = |finish| Kernel::Decode { format, kernel, finish, normed: finish != Finish::Residual };
        let uses: Vec<Kernel> = match role {
            "embed" if tied => vec![Kernel::Lookup { format }, decode(Finish::Plain)],
            "embed" => vec![Kernel::Lookup { format }],
            "qkv" => vec![decode(Finish::Bias)],
            "o" | "down" => vec![decode(Finish::Residual)],
            "gate_up" => vec![decode(Finish::SwiGlu)],
            _ => vec![decode(Finish::Plain)],
        };
        // Every product also runs as prefill (from PREFILL_ROWS positions on).
        let prefill = (role != "embed" || tied).then_some(Kernel::Prefill { format, precision: g.precision() });
        for k in uses.into_iter().chain(prefill) {
            if !kernels.contains(&k) {
                kernels.push(k);
            }
        }
    }
    kernels
}

/// Runs [`kernels_for`] `model` on its device ([`check`]).
pub async fn check_model(model: &Qwen2Model) -> Result<SelfCheck> {
    check(model.device(), &kernels_for(model)).await
}

