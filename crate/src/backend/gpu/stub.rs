//! The GPU modules' stand-ins where genprm is built without GPU support (the `wgpu` feature
//! off): the same items, so the model names them without a `#[cfg]`. Without that feature the
//! only device is the CPU, so nothing here is ever reached with a tensor: the weight type is
//! uninhabited and the kernels' entry points are unreachable.

/// Packed quantized weights on a GPU: none exist here.
pub mod quant {
    use burn::tensor::{Device, Int, Tensor};

    pub use crate::backend::gpu::InputNorm;
    pub use crate::backend::{MatvecKernel, PrefillPrecision};
    use crate::backend::product::Epilogue;
    use crate::quant::{QuantFormat, QuantMatrix};

    const NO_GPU: &str = "genprm was built without GPU support: only the CPU device exists";

    /// The decode kernel a GPU would use: the choice, or the per-unit kernel.
    pub fn matvec_kernel(_device: &Device, choice: Option<MatvecKernel>) -> MatvecKernel {
        choice.unwrap_or(MatvecKernel::PerUnit)
    }

    /// No device has f16 shaders here.
    pub fn supports_f16(_device: &Device) -> bool {
        false
    }

    /// Packed weights on a GPU: never made without GPU support.
    #[derive(Debug)]
    pub struct GpuQuant {
        _never: (),
    }

    impl GpuQuant {
        /// Unreachable: there is no GPU to upload to.
        pub(crate) fn upload_with(_q: &QuantMatrix, _device: &Device, _max_bytes: usize, _precision: PrefillPrecision, _matvec: MatvecKernel) -> Self {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub(crate) fn concat_rows(_parts: &[&GpuQuant]) -> crate::error::Result<Self> {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub fn precision(&self) -> PrefillPrecision {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub fn format(&self) -> QuantFormat {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub fn matvec(&self) -> MatvecKernel {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub fn rows(&self) -> usize {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub fn bytes(&self) -> u64 {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub fn gather_device(&self, _ids: &Tensor<1, Int>) -> Tensor<2> {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub fn gather(&self, _ids: &[u32]) -> Tensor<2> {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub fn matmul_t(&self, _x: Tensor<2>) -> Tensor<2> {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub fn matmul_t_then(&self, _x: Tensor<2>, _bias: Option<&Tensor<1>>, _then: Epilogue) -> Tensor<2> {
            unreachable!("{NO_GPU}")
        }
        /// Unreachable: no GPU weights exist.
        pub fn matmul_t_normed(&self, _x: Tensor<2>, _norm: InputNorm<'_>, _bias: Option<&Tensor<1>>, _then: Epilogue) -> Tensor<2> {
            unreachable!("{NO_GPU}")
        }
    }
}

/// A decoder layer's GPU kernels: unreachable without GPU support.
pub mod layer {
    use burn::tensor::{Int, Tensor};

    pub use crate::backend::gpu::NewPositions;

    /// Unreachable: only CPU tensors exist.
    pub fn rms_norm(_x: Tensor<2>, _weight: &Tensor<1>, _eps: f64) -> Tensor<2> {
        unreachable!("genprm was built without GPU support: only the CPU device exists")
    }

    /// Unreachable: only CPU tensors exist.
    pub fn rotary_and_cache_write(
        _qkv: Tensor<2>,
        _table: Tensor<2>,
        _writes: &Tensor<1, Int>,
        _cache: (Tensor<2>, Tensor<2>),
        _p: NewPositions,
    ) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        unreachable!("genprm was built without GPU support: only the CPU device exists")
    }
}

/// Decode attention on a GPU: unreachable without GPU support.
pub mod attention {
    use burn::tensor::{Device, Int, Tensor};

    /// Unreachable: only the CPU device exists.
    pub fn row_lens(_lens: &[usize], _device: &Device) -> Tensor<1, Int> {
        unreachable!("genprm was built without GPU support: only the CPU device exists")
    }

    /// Unreachable: only CPU tensors exist.
    pub fn decode_attention(_q: Tensor<3>, _keys: &Tensor<2>, _values: &Tensor<2>, _first: usize, _lens: &Tensor<1, Int>, _kv_heads: usize, _capacity: usize) -> Tensor<3> {
        unreachable!("genprm was built without GPU support: only the CPU device exists")
    }
}

/// Recorded decode steps: nothing records without a GPU.
pub mod replay {
    use burn::tensor::{Int, Tensor};

    use crate::error::Result;

    /// A recording: uninhabited without GPU support.
    pub enum Recording {}

    impl Recording {
        /// Unreachable: no GPU weights exist.
        ///
        /// # Safety
        /// As the GPU build's: the recording's buffers must be alive.
        pub unsafe fn replay(&self) -> Result<()> {
            match *self {}
        }
    }

    /// No device records.
    pub fn prepare(_on: &Tensor<2>) -> bool {
        false
    }

    /// No device records.
    pub fn record<T>(_on: &Tensor<2>, _launch: impl FnOnce() -> T) -> Option<(Recording, T)> {
        None
    }

    /// Unreachable: nothing was recorded.
    pub fn write_ints(_t: &Tensor<1, Int>, _values: &[i32]) -> Result<()> {
        unreachable!("genprm was built without GPU support: nothing is recorded")
    }

    /// Unreachable: nothing was recorded.
    pub fn write_floats(_t: &Tensor<2>, _values: &[f32]) -> Result<()> {
        unreachable!("genprm was built without GPU support: nothing is recorded")
    }

    /// CPU tensors have no GPU buffer.
    pub fn buffer_id(_t: &Tensor<2>) -> String {
        String::new()
    }
}

/// The start-up check: nothing to check on the CPU.
pub mod selfcheck {
    use burn::tensor::Device;

    pub use crate::backend::kernels::{Finish, Kernel, SelfCheck, TOP_KS};
    use crate::error::Result;

    /// Only the CPU device exists: no GPU kernel runs.
    pub async fn check(_device: &Device, _kernels: &[Kernel]) -> Result<SelfCheck> {
        Ok(SelfCheck::NotAGpu)
    }
}
