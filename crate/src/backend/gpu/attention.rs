//! Decode attention on a GPU in one CubeCL kernel: for each new position (one per row of a
//! batch) and each query head, `softmax(q·Kᵀ/√d)·V` over the row's cached positions, read in
//! place from the preallocated KV cache. burn's generic ops need about eight launches per layer
//! for the same (matmul, scale, mask, max, exp, sum, divide, matmul) plus a mask upload.

use burn::backend::Cube;
use burn::tensor::{DType, Device, Int, Shape, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::CubeDim;

/// Units per cube: positions are split among them for the scores, head dimensions for the sum.
const UNITS: u32 = 64;

mod kernels {
    use cubecl::prelude::*;

    /// One cube per (row, query head). `keys`/`values` are the whole cache,
    /// `[rows · kv_heads · capacity, d]`, in f32 or f16 (`KV`; read into f32 arithmetic);
    /// `lens[i]` is how many positions row `first + i` holds (the new one included); `probs` is
    /// scratch, `[n · heads · capacity]`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn decode_attention_kernel<KV: Float>(
        q: &Tensor<f32>,
        keys: &Tensor<KV>,
        values: &Tensor<KV>,
        lens: &Tensor<i32>,
        probs: &mut Tensor<f32>,
        out: &mut Tensor<f32>,
        first: u32,
        heads: u32,
        kv_heads: u32,
        capacity: u32,
        d: u32,
        scale: f32,
        #[comptime] units: u32,
    ) {
        let cube = CUBE_POS as u32;
        let i = cube / heads;
        let h = cube % heads;
        let kv = h / (heads / kv_heads);
        let len = u32::cast_from(lens[i as usize]);
        let qbase = (i * heads + h) * d;
        let kbase = ((first + i) * kv_heads + kv) * capacity;
        let pbase = (i * heads + h) * capacity;

        // Scores: each unit a stripe of positions, keeping its largest.
        let mut best = f32::new(-1.0e30);
        let mut t = UNIT_POS;
        while t < len {
            let mut s = 0.0f32;
            for j in 0..d {
                s += q[(qbase + j) as usize] * f32::cast_from(keys[((kbase + t) * d + j) as usize]);
            }
            s = s * scale;
            probs[(pbase + t) as usize] = s;
            if s > best {
                best = s;
            }
            t += units;
        }
        let mut red = Shared::<[f32]>::new_slice(units as usize);
        red[UNIT_POS as usize] = best;
        crate::backend::gpu::reduce::tree_max(&mut red, units);
        let max = red[0];
        sync_cube();

        // Unnormalised probabilities over the same stripes, and their sum.
        let mut sum = 0.0f32;
        let mut t = UNIT_POS;
        while t < len {
            let p = (probs[(pbase + t) as usize] - max).exp();
            probs[(pbase + t) as usize] = p;
            sum += p;
            t += units;
        }
        red[UNIT_POS as usize] = sum;
        crate::backend::gpu::reduce::tree_sum(&mut red, units);
        let total = red[0];
        // The probabilities other units wrote must be visible before they are read.
        sync_storage();
        sync_cube();

        // The weighted sum of values: each unit a stripe of head dimensions.
        let mut j = UNIT_POS;
        while j < d {
            let mut acc = 0.0f32;
            for t in 0..len {
                acc += probs[(pbase + t) as usize] * f32::cast_from(values[((kbase + t) * d + j) as usize]);
            }
            out[(qbase + j) as usize] = acc / total;
            j += units;
        }
    }
}

use kernels::decode_attention_kernel;

/// Each row's number of positions as [`decode_attention`] reads them (i32 on the device):
/// uploaded once per pass, not once per layer.
pub fn row_lens(lens: &[usize], device: &Device) -> Tensor<1, Int> {
    let lens: Vec<i32> = lens.iter().map(|&l| i32::try_from(l).expect("fewer than 2³¹ positions")).collect();
    let n = lens.len();
    Tensor::<1, Int>::from_data(TensorData::new(lens, [n]), device)
}

/// Attention of one new position per row: `q` is `[n, heads, d]`; `keys`/`values` the whole
/// cache `[rows · kv_heads · capacity, d]`, f32 or f16; `lens[i]` ([`row_lens`]) the positions
/// row `first + i` attends to. Returns `[n, heads, d]` in f32.
pub fn decode_attention(q: Tensor<3>, keys: &Tensor<2>, values: &Tensor<2>, first: usize, lens: &Tensor<1, Int>, kv_heads: usize, capacity: usize) -> Tensor<3> {
    let [n, heads, d] = q.dims();
    let lens = lens.clone();
    let q = into_contiguous(q.try_into_primitive::<Cube>().expect("GPU tensor on the CubeCL backend"));
    let keys = into_contiguous(keys.clone().try_into_primitive::<Cube>().expect("GPU tensor"));
    let values = into_contiguous(values.clone().try_into_primitive::<Cube>().expect("GPU tensor"));
    let lens = into_contiguous(lens.try_into_primitive::<Cube>().expect("GPU tensor"));
    let client = q.client.clone();
    let probs = empty_device_contiguous_dtype(client.clone(), q.device.clone(), Shape::new([n * heads * capacity]), DType::F32);
    let out = empty_device_contiguous_dtype(client.clone(), q.device.clone(), Shape::new([n, heads, d]), DType::F32);
    let kv_dtype = keys.dtype;
    let cube_count = cubecl::CubeCount::Static((n * heads) as u32, 1, 1);
    let (q, keys, values, lens, probs) = (q.into_tensor_arg(), keys.into_tensor_arg(), values.into_tensor_arg(), lens.into_tensor_arg(), probs.into_tensor_arg());
    let out_arg = out.clone().into_tensor_arg();
    let scale = 1.0 / (d as f32).sqrt();
    let (first, heads, kv_heads, capacity, d) = (first as u32, heads as u32, kv_heads as u32, capacity as u32, d as u32);
    let dim = CubeDim::new_1d(UNITS);
    match kv_dtype {
        DType::F16 => decode_attention_kernel::launch::<half::f16>(
            &client, cube_count, dim, q, keys, values, lens, probs, out_arg, first, heads, kv_heads, capacity, d, scale, UNITS,
        ),
        _ => decode_attention_kernel::launch::<f32>(
            &client, cube_count, dim, q, keys, values, lens, probs, out_arg, first, heads, kv_heads, capacity, d, scale, UNITS,
        ),
    }
    Tensor::from_primitive::<Cube>(out)
}
