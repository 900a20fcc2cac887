//! What every device's matrix products share: the [`Epilogue`] a product applies to its sums
//! (in the GPU kernels' own launch, with burn's ops elsewhere) and the sizes that decide how a
//! product runs ([`PREFILL_ROWS`], [`MAX_BINDING_BYTES`]).

use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

use super::cpu::host_values;

/// From this many activation rows on, quantized weights on a GPU are expanded for one dense
/// multiply (the CPU kernels take any number of rows).
pub const PREFILL_ROWS: usize = 16;

/// The most bytes one weight tensor occupies on the device; larger matrices are split by rows.
pub const MAX_BINDING_BYTES: usize = 128 << 20;

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
