//! A decoder layer's small operations on a GPU, one CubeCL kernel each where burn's generic ops
//! take several: RMSNorm (seven launches with burn's ops), and the rotary embedding of the new
//! queries and keys together with the write of keys and values into the KV cache (about
//! eighteen). With the q/k/v and gate/up projections stacked into one product each, the
//! epilogues of the packed products ([`crate::backend::product::Epilogue`]: bias, residual add, SwiGLU)
//! and the RMSNorms before the q/k/v, gate/up and output products applied as those products
//! read their input ([`crate::backend::gpu::quant::InputNorm`]), a decode step over packed weights
//! launches 6 kernels per layer instead of about 51 (the norm kernel here runs in prefill and
//! with f32 weights).
//! At batch 1 each launch costs the host a few microseconds of driver and validation work, about
//! as long as a small layer's reads from memory take on a real GPU, so launches, not bandwidth,
//! bounded decode there.

use burn::backend::Cube;
use burn::tensor::{DType, Int, Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeDim, calculate_cube_count_elemwise};

pub use crate::backend::gpu::NewPositions;

/// Units per cube of the RMSNorm kernel (one cube per row; the 1.5B model's 1536 columns are
/// 12 per unit).
const NORM_UNITS: u32 = 128;

mod kernels {
    use cubecl::prelude::*;

    /// One cube per row of `x` (`[rows, cols]`): `out = x / √(mean(x²) + eps) · weight`, the
    /// mean summed in shared memory (no subgroup instructions).
    #[cube(launch)]
    pub fn rms_norm_kernel(x: &Tensor<f32>, weight: &Tensor<f32>, out: &mut Tensor<f32>, rows: u32, cols: u32, eps: f32, #[comptime] units: u32) {
        let row = CUBE_POS as u32;
        // Cubes past the last row take part in the barriers too, on zeros.
        let live = row < rows;
        let base = row * cols;
        let mut sum = 0.0f32;
        if live {
            let mut c = UNIT_POS;
            while c < cols {
                let v = x[(base + c) as usize];
                sum += v * v;
                c += units;
            }
        }
        let mut partial = Shared::<[f32]>::new_slice(units as usize);
        partial[UNIT_POS as usize] = sum;
        crate::backend::gpu::reduce::tree_sum(&mut partial, units);
        if live {
            let variance = partial[0] / f32::cast_from(cols);
            let inv = 1.0f32 / (variance + eps).sqrt();
            let mut c = UNIT_POS;
            while c < cols {
                out[(base + c) as usize] = x[(base + c) as usize] * inv * weight[c as usize];
                c += units;
            }
        }
    }

    /// One unit per (new position, head, pair of head dimensions `i` and `i + d/2`), query
    /// heads first, then key/value heads. `qkv` is the q/k/v projection's output, `[positions,
    /// (heads + 2 · kv_heads) · d]`: queries, then keys, then values; positions ordered by row
    /// and then by position within the row (`seq` per row). `table` holds `cos` of the pair's
    /// angle in its first `d/2` columns and `sin` in the last, `[positions, d]`. Rotated
    /// queries go to `q_out` (`[positions, heads · d]`); rotated keys and the values go to cache
    /// row `writes[(row · kv_heads + kv head) · seq + position]` of `keys` and `values`
    /// (`[cache rows, d]`, f32 or f16). Six bindings: WebGPU guarantees eight storage buffers
    /// per stage, and CubeCL's metadata takes one.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn rotary_cache_kernel<KV: Float>(
        qkv: &Tensor<f32>,
        table: &Tensor<f32>,
        writes: &Tensor<i32>,
        q_out: &mut Tensor<f32>,
        keys: &mut Tensor<KV>,
        values: &mut Tensor<KV>,
        positions: u32,
        seq: u32,
        heads: u32,
        kv_heads: u32,
        d: u32,
    ) {
        let pos = ABSOLUTE_POS as u32;
        let half = d / 2;
        let all = heads + kv_heads;
        if pos < positions * all * half {
            let i = pos % half;
            let h = (pos / half) % all;
            let m = pos / (half * all);
            let c = table[(m * d + i) as usize];
            let s = table[(m * d + half + i) as usize];
            let row = m * (heads + 2 * kv_heads) * d;
            // "Rotate half": (x₁, x₂) ↦ (x₁·cos − x₂·sin, x₂·cos + x₁·sin), as transformers
            // computes x·cos + rotate_half(x)·sin.
            if h < heads {
                let base = row + h * d;
                let (x1, x2) = (qkv[(base + i) as usize], qkv[(base + i + half) as usize]);
                let at = (m * heads + h) * d;
                q_out[(at + i) as usize] = x1 * c + -x2 * s;
                q_out[(at + i + half) as usize] = x2 * c + x1 * s;
            } else {
                let kh = h - heads;
                let kbase = row + (heads + kh) * d;
                let vbase = row + (heads + kv_heads + kh) * d;
                let (x1, x2) = (qkv[(kbase + i) as usize], qkv[(kbase + i + half) as usize]);
                let at = u32::cast_from(writes[((m / seq * kv_heads + kh) * seq + m % seq) as usize]) * d;
                keys[(at + i) as usize] = KV::cast_from(x1 * c + -x2 * s);
                keys[(at + i + half) as usize] = KV::cast_from(x2 * c + x1 * s);
                values[(at + i) as usize] = KV::cast_from(qkv[(vbase + i) as usize]);
                values[(at + i + half) as usize] = KV::cast_from(qkv[(vbase + i + half) as usize]);
            }
        }
    }
}

use kernels::{rms_norm_kernel, rotary_cache_kernel};

/// A float tensor's CubeCL primitive (a GPU tensor), contiguous, for a kernel launch.
pub(crate) fn cube<const D: usize>(t: Tensor<D>) -> CubeTensor {
    into_contiguous(t.try_into_primitive::<Cube>().expect("GPU tensor on the CubeCL backend"))
}

/// RMSNorm of `[rows, cols]` activations on a GPU in one launch: `x / √(mean(x²) + eps) ·
/// weight`, in f32 as Qwen2 computes it.
pub fn rms_norm(x: Tensor<2>, weight: &Tensor<1>, eps: f64) -> Tensor<2> {
    let [rows, cols] = x.dims();
    let x = cube(x);
    let weight = cube(weight.clone());
    let client = x.client.clone();
    let out = empty_device_contiguous_dtype(client.clone(), x.device.clone(), Shape::new([rows, cols]), DType::F32);
    // One cube per row, over two axes (one axis holds at most 65,535 cubes).
    let x_count = (rows as u32).clamp(1, 65_535);
    let cube_count = cubecl::CubeCount::Static(x_count, (rows as u32).div_ceil(x_count).max(1), 1);
    rms_norm_kernel::launch(
        &client,
        cube_count,
        CubeDim::new_1d(NORM_UNITS),
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows as u32,
        cols as u32,
        eps as f32,
        NORM_UNITS,
    );
    Tensor::from_primitive::<Cube>(out)
}

/// Qwen2's rotary embedding of a pass's new queries and keys, and the write of the rotated keys
/// and of the values into the KV cache, in one launch. `qkv` is the q/k/v projection's output,
/// `[rows · seq, (heads + 2 · kv_heads) · d]` (queries, keys, values side by side); `table`
/// holds one row per new position, in the same order: the cosines of its `d/2` angles, then
/// their sines (`[rows · seq, d]`); `writes` (i32) is the cache row of each (row, key/value
/// head, position). `keys` and `values` (`[cache rows, d]`, f32 or f16) are written in place
/// when nothing else holds them, copied first otherwise. Returns the rotated queries, `[rows ·
/// seq, heads · d]`, and the caches.
pub fn rotary_and_cache_write(
    qkv: Tensor<2>,
    table: Tensor<2>,
    writes: &Tensor<1, Int>,
    (keys, values): (Tensor<2>, Tensor<2>),
    p: NewPositions,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let NewPositions { rows, seq, heads, kv_heads, head_dim: d } = p;
    let writable = |t: Tensor<2>| {
        let t = t.try_into_primitive::<Cube>().expect("GPU tensor on the CubeCL backend");
        into_contiguous(if t.can_mut() { t } else { t.copy() })
    };
    let (keys, values) = (writable(keys), writable(values));
    let (qkv, table) = (cube(qkv), cube(table));
    let writes = into_contiguous(writes.clone().try_into_primitive::<Cube>().expect("GPU tensor on the CubeCL backend"));
    let client = qkv.client.clone();
    let q_out = empty_device_contiguous_dtype(client.clone(), qkv.device.clone(), Shape::new([rows * seq, heads * d]), DType::F32);
    let units = rows * seq * (heads + kv_heads) * (d / 2);
    let cube_dim = CubeDim::new(&client, units);
    let cube_count = calculate_cube_count_elemwise(&client, units, cube_dim);
    let kv_dtype = keys.dtype;
    let args = (qkv.into_tensor_arg(), table.into_tensor_arg(), writes.into_tensor_arg(), q_out.clone().into_tensor_arg());
    let (keys_arg, values_arg) = (keys.clone().into_tensor_arg(), values.clone().into_tensor_arg());
    let dims = ((rows * seq) as u32, seq as u32, heads as u32, kv_heads as u32, d as u32);
    macro_rules! launch {
        ($kv:ty) => {
            rotary_cache_kernel::launch::<$kv>(
                &client, cube_count, cube_dim, args.0, args.1, args.2, args.3, keys_arg, values_arg, dims.0, dims.1, dims.2, dims.3, dims.4,
            )
        };
    }
    match kv_dtype {
        DType::F16 => launch!(half::f16),
        _ => launch!(f32),
    }
    (Tensor::from_primitive::<Cube>(q_out), Tensor::from_primitive::<Cube>(keys), Tensor::from_primitive::<Cube>(values))
}
