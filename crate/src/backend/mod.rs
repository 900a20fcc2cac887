//! The devices the model runs on, chosen once at run time: the pure-Rust CPU backend (burn's
//! flex, with [`cpu`]'s own decode attention) or a GPU through wgpu ([`gpu`]: CubeCL kernels
//! for packed weights, the decode layer, attention, top-k, and their start-up self-check), and
//! what products share on every device ([`product`]). The GPU options a model is loaded with
//! ([`MatvecKernel`], [`DecodeAttention`], [`GpuDecode`]) are typed here.
//!
//! May import: the error type and the quantized format (`crate::quant`). Not the model, the
//! loaders, generation, the engines or the protocol: they build on this.

pub mod cpu;
pub mod gpu;
pub mod kernels;
pub mod product;

use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{Error, Result};

/// The kinds of device a user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The CPU (burn's flex backend, multi-threaded).
    #[default]
    Cpu,
    /// The GPU wgpu finds (Vulkan, Metal, DX12; lavapipe when only a software Vulkan exists).
    Gpu,
    /// A GPU that runs nothing: wgpu's no-op backend, which validates and records every call
    /// and executes none. For benchmarks of the host's own cost per token; its results are
    /// meaningless.
    NullGpu,
}

impl FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceKind::Cpu),
            "gpu" | "wgpu" => Ok(DeviceKind::Gpu),
            "null-gpu" => Ok(DeviceKind::NullGpu),
            other => Err(Error::InvalidArgument { name: "device", message: format!("`{other}` is not one of cpu, gpu, null-gpu") }),
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
            DeviceKind::NullGpu => "null-gpu",
        })
    }
}

/// Which kernel multiplies packed weights by a few activation rows (decode) on a GPU
/// ([`crate::model::LoadOptions::gpu_matvec`]).
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatvecKernel {
    /// One unit per weight row (for every activation row of the batch), reading the whole
    /// row: the faster of the two on software adapters (lavapipe, SwiftShader), which run a
    /// cube's units as CPU loops and pay for every barrier.
    PerUnit,
    /// One cube per weight row, its units sharing the row with contiguous loads and a
    /// shared-memory sum: the usual shape on hardware GPUs, where one unit per row leaves most
    /// of the GPU idle (the 1.5B model's o and down projections have 1,536 rows) and
    /// neighbouring units read memory a row apart.
    Cooperative,
}

impl std::fmt::Display for MatvecKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MatvecKernel::PerUnit => "per-unit",
            MatvecKernel::Cooperative => "cooperative",
        })
    }
}

/// The arithmetic of prefill's dense products over expanded quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefillPrecision {
    /// f32 weights and activations.
    F32,
    /// f16 weights and activations (each activation row scaled to at most 1 in magnitude
    /// first, so no activation overflows f16's range), f32 accumulation and result: half the
    /// memory traffic of the expanded block, and the GPU's f16 matrix units where it has them.
    F16,
}

impl std::fmt::Display for PrefillPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrefillPrecision::F32 => "f32",
            PrefillPrecision::F16 => "f16",
        })
    }
}

/// How a decode step reaches a GPU ([`crate::model::LoadOptions::gpu_decode`]).
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuDecode {
    /// Recorded once (CubeCL's software graph capture) and replayed for each later step with
    /// new inputs: the launches' pipelines, bindings and bind groups are resolved once instead
    /// of at every launch (quantized weights with the fused attention; other steps launch).
    #[default]
    Replay,
    /// Every launch of every step issued anew.
    Launch,
}

/// How decode attends over the KV cache on a GPU ([`crate::model::LoadOptions::gpu_attention`]).
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecodeAttention {
    /// One fused kernel per layer, without a mask (`backend::gpu::attention`).
    #[default]
    Fused,
    /// burn's generic tensor operations with a mask, as prefill attends (for comparisons).
    Ops,
}

/// The device of that kind. The GPU is initialised once per process and shared afterwards;
/// failing to find one is an error, never a silent fallback to the CPU.
pub fn device(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        DeviceKind::Gpu => gpu(),
        DeviceKind::NullGpu => null_gpu(),
    }
}

/// wgpu's no-op backend handed to burn's runtime as an existing setup: an adapter that reports
/// f16 arithmetic and a desktop GPU's limits.
#[cfg(all(feature = "wgpu", not(target_arch = "wasm32")))]
fn null_gpu() -> Result<Device> {
    use burn::tensor::wgpu::{WgpuSetup, wgpu};
    use std::sync::OnceLock;
    static NULL: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
    NULL.get_or_init(|| {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::NOOP,
            backend_options: wgpu::BackendOptions {
                noop: wgpu::NoopBackendOptions {
                    features: Some(wgpu::Features::SHADER_F16),
                    // A desktop GPU's: WebGPU's defaults with 2 GiB buffers. (wgpu's most
                    // permissive limits align nothing, and CubeCL's pools then map ranges
                    // wgpu refuses.)
                    limits: Some(wgpu::Limits {
                        max_buffer_size: 2 << 30,
                        max_storage_buffer_binding_size: (2u64 << 30) - 4,
                        ..wgpu::Limits::default()
                    }),
                    ..wgpu::NoopBackendOptions::enabled()
                },
                ..Default::default()
            },
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).map_err(|e| e.to_string())?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("genprm null GPU"),
            required_features: adapter.features(),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| e.to_string())?;
        let setup = WgpuSetup { instance, adapter, device, queue, backend: wgpu::Backend::Noop };
        Device::wgpu_options().setup(setup).init().map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| Error::Device(format!("wgpu's no-op backend: {e}")))
}

#[cfg(any(not(feature = "wgpu"), target_arch = "wasm32"))]
fn null_gpu() -> Result<Device> {
    Err(Error::Device("this build has no native GPU support (built without the `wgpu` feature)".into()))
}

#[cfg(all(feature = "wgpu", not(target_arch = "wasm32")))]
fn gpu() -> Result<Device> {
    use std::sync::OnceLock;
    static GPU: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
    GPU.get_or_init(|| {
        // The wgpu runtime panics on some adapter failures instead of returning an error.
        std::panic::catch_unwind(|| Device::wgpu_options().init().map_err(|e| format!("{e}")))
            .unwrap_or_else(|_| Err("the wgpu runtime panicked while initialising".to_string()))
    })
    .clone()
    .map_err(|e| Error::Device(format!("no usable GPU through wgpu: {e}")))
}

#[cfg(any(not(feature = "wgpu"), target_arch = "wasm32"))]
fn gpu() -> Result<Device> {
    Err(Error::Device("this build has no native GPU support (built without the `wgpu` feature)".into()))
}

/// The CubeCL client behind a GPU `device` (its adapter's properties, its memory pools),
/// reached through a one-element probe tensor; `None` on the CPU device.
#[cfg(feature = "wgpu")]
pub(crate) fn gpu_client(device: &Device) -> Option<cubecl::client::Client> {
    use burn::backend::Cube;
    if *device == Device::flex() {
        return None;
    }
    let probe = burn::tensor::Tensor::<1>::zeros([1], device).try_into_primitive::<Cube>().ok()?;
    Some(probe.client)
}

/// The name of the GPU adapter behind `device` as its driver reports it (e.g. "NVIDIA H200",
/// "llvmpipe (LLVM 15.0.6, 256 bits)"); `None` on the CPU device.
#[cfg(feature = "wgpu")]
pub fn adapter_name(device: &Device) -> Option<String> {
    Some(gpu_client(device)?.properties().identity.name.clone())
}
