//! The CPU device's own code: decode attention in plain Rust over the KV cache's memory, and
//! reading an activation into host memory.
//!
//! May import: the error type and the quantized format; never the model.

pub(crate) mod attention;

use burn::tensor::Tensor;

/// Values of an activation on the CPU device (a copy in host memory; no GPU is involved).
pub(crate) fn host_values(x: Tensor<2>) -> Vec<f32> {
    x.into_data().try_into_vec::<f32>().unwrap_or_else(|e| panic!("activations are f32 on the CPU device: {e:?}"))
}
