//! How fast a device reads memory, measured by reading a buffer larger than its caches. With
//! the bytes of weights one decode step reads ([`crate::Qwen2Model::decode_weight_bytes`]) it
//! gives decode's memory-bandwidth bound: at batch 1 every weight is read once per token, so no
//! implementation decodes faster than bandwidth ÷ weight bytes.

use burn::tensor::Device;

use crate::error::Result;

/// Bytes the probe reads per pass on a GPU: one buffer of at most a binding's size
/// ([`MAX_BINDING_BYTES`](crate::model::MAX_BINDING_BYTES)), larger than GPUs' last-level caches.
#[cfg(feature = "wgpu")]
const GPU_PROBE_BYTES: usize = crate::model::MAX_BINDING_BYTES;

/// Passes timed on a GPU (after one untimed pass that compiles the kernel).
#[cfg(feature = "wgpu")]
const GPU_PASSES: usize = 8;

/// Bytes the probe reads per pass on the CPU: 1 GiB, larger than any CPU's caches.
#[cfg(not(target_arch = "wasm32"))]
const HOST_PROBE_BYTES: usize = 1 << 30;

/// Units of the GPU probe: enough loads in flight to keep a large GPU's memory busy.
#[cfg(feature = "wgpu")]
const GPU_UNITS: usize = 1 << 18;

#[cfg(feature = "wgpu")]
mod kernels {
    use cubecl::prelude::*;

    /// Each unit sums `per_unit` values strided by the number of units (neighbouring units read
    /// neighbouring values, so every load of a group of units is contiguous) and stores the sum,
    /// so the reads cannot be optimised away.
    #[cube(launch)]
    pub fn read_kernel(input: &Tensor<f32>, out: &mut Tensor<f32>, units: u32, per_unit: u32) {
        let g = ABSOLUTE_POS as u32;
        let mut acc = 0.0f32;
        for k in 0..per_unit {
            acc += input[(g + k * units) as usize];
        }
        out[g as usize] = acc;
    }
}

/// The read bandwidth of `device` in GB/s (10⁹ bytes per second), the best of a few passes
/// over a buffer larger than its caches: on a GPU a CubeCL kernel whose units read contiguous
/// words, on the CPU every core summing a part of 1 GiB of host memory. `now()` is a clock in
/// seconds. `None` for the CPU device in WebAssembly (one thread, and a gigabyte of wasm memory
/// would outlive the measurement).
pub async fn read_gb_s(device: &Device, now: impl Fn() -> f64) -> Result<Option<f64>> {
    if *device == Device::flex() {
        #[cfg(not(target_arch = "wasm32"))]
        return Ok(Some(host_read_gb_s(&now)));
        #[cfg(target_arch = "wasm32")]
        return Ok(None);
    }
    #[cfg(feature = "wgpu")]
    {
        gpu_read_gb_s(device, now).await.map(Some)
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = now;
        Ok(None)
    }
}

/// Host memory: rayon's threads each fold a slice of 1 GiB (four independent sums, so loads,
/// not additions, bound it); the best of three passes.
#[cfg(not(target_arch = "wasm32"))]
fn host_read_gb_s(now: &impl Fn() -> f64) -> f64 {
    use rayon::prelude::*;
    let words = vec![1u64; HOST_PROBE_BYTES / 8];
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = now();
        let sum: u64 = words
            .par_chunks(1 << 16)
            .map(|c| {
                let mut acc = [0u64; 4];
                for q in c.chunks_exact(4) {
                    for (a, v) in acc.iter_mut().zip(q) {
                        *a = a.wrapping_add(*v);
                    }
                }
                acc.iter().fold(0u64, |s, a| s.wrapping_add(*a))
            })
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(sum);
        best = best.min(now() - t);
    }
    HOST_PROBE_BYTES as f64 / best.max(1e-9) / 1e9
}

/// A GPU: [`GPU_PASSES`] launches of the read kernel over one buffer, timed from the first launch
/// to the sums read back.
#[cfg(feature = "wgpu")]
async fn gpu_read_gb_s(device: &Device, now: impl Fn() -> f64) -> Result<f64> {
    use burn::tensor::{DType, Shape, Tensor};
    use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
    use cubecl::CubeDim;

    use crate::error::Error;
    use crate::backend::gpu::layer::cube;

    let values = GPU_PROBE_BYTES / 4;
    // Ones, not zeros: a buffer never written may be backed by one shared zero page (lavapipe's
    // memory is the host's), which reads at cache speed.
    let input = cube(Tensor::<1>::ones([values], device));
    let client = input.client.clone();
    let out = empty_device_contiguous_dtype(client.clone(), input.device.clone(), Shape::new([GPU_UNITS]), DType::F32);
    let launch = || {
        let dim = 256u32;
        kernels::read_kernel::launch(
            &client,
            cubecl::CubeCount::Static((GPU_UNITS as u32).div_ceil(dim), 1, 1),
            CubeDim::new_1d(dim),
            input.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            GPU_UNITS as u32,
            (values / GPU_UNITS) as u32,
        );
    };
    let read_back = async || -> Result<()> {
        let sums = Tensor::<1>::from_primitive::<burn::backend::Cube>(out.clone());
        // The sums are taken out of the data: that, not the await, waits for the reads.
        let data = sums.into_data_async().await.map_err(|e| Error::Device(format!("reading the bandwidth probe back: {e:?}")))?;
        data.try_into_vec::<f32>().map(|_| ()).map_err(|e| Error::Device(format!("reading the bandwidth probe back: {e:?}")))
    };
    // Compile the kernel and settle the allocations first.
    launch();
    read_back().await?;
    let t = now();
    for _ in 0..GPU_PASSES {
        launch();
    }
    read_back().await?;
    let seconds = (now() - t).max(1e-9);
    Ok((GPU_PASSES * GPU_PROBE_BYTES) as f64 / seconds / 1e9)
}
