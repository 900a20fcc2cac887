//! The CPU kernels, one file per instruction set, each implementing [`TileDot`](crate::TileDot)
//! (or, for the driver's hot loop, a function compiled with its target features) beside the
//! portable [`scalar`] reference: [`x86`] (AVX2, AVX-VNNI, AVX-512 VNNI), [`neon`] (AArch64),
//! [`wasm`] (SIMD128 and relaxed SIMD).

pub(crate) mod scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
#[cfg(target_arch = "wasm32")]
pub(crate) mod wasm;
