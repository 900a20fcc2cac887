//! GPU kernels (CubeCL, so WGSL/SPIR-V/Metal alike) for packed quantized weights: the weights
//! stay packed on the device — 4 bits per weight plus a scale per group of 32 — and are
//! expanded inside the matrix product, never in memory.
//!
//! Prefill (from [`PREFILL_ROWS`](crate::backend::product::PREFILL_ROWS) activation rows on) expands a
//! piece of rows at a time (at most one binding's worth) for a dense product instead. Where the
//! device runs f16 arithmetic (WebGPU's `shader-f16`, Vulkan's `shaderFloat16`), that product
//! takes f16 operands with f32 accumulation and an f32 result ([`PrefillPrecision`]);
//! activations stay f32 everywhere else.

use burn::backend::Cube;
use burn::tensor::{DType, Device, Int, Shape, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::kernel::matmul::{MatmulStrategy, matmul};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::{CubeDim, calculate_cube_count_elemwise};

use crate::backend::gpu_client;
use crate::backend::gpu::layer::cube;
use crate::backend::product::Epilogue;
use crate::quant::{GROUP, QuantFormat, QuantMatrix};

/// Units per cube of the cooperative matrix-vector kernel.
const MATVEC_UNITS: u32 = 32;

pub use crate::backend::gpu::InputNorm;
pub use crate::backend::{MatvecKernel, PrefillPrecision};

/// The decode kernel for `device`: `choice` when given; otherwise the cooperative kernel on a
/// hardware GPU and the per-unit one on a software adapter ([`is_software_adapter`]).
pub fn matvec_kernel(device: &Device, choice: Option<MatvecKernel>) -> MatvecKernel {
    match choice {
        Some(kernel) => kernel,
        None if is_software_adapter(device) => MatvecKernel::PerUnit,
        None => MatvecKernel::Cooperative,
    }
}

/// Whether `device` is the CPU device or a GPU adapter that runs on the CPU (Vulkan's
/// lavapipe, SwiftShader, WebGPU's fallback adapter): CubeCL names no physical card for it.
pub fn is_software_adapter(device: &Device) -> bool {
    gpu_client(device).is_none_or(|client| client.properties().identity.physical.is_none())
}

/// Whether the GPU behind `device` runs f16 arithmetic in its shaders (WebGPU's `shader-f16`,
/// Vulkan's `shaderFloat16`); `false` on the CPU device.
pub fn supports_f16(device: &Device) -> bool {
    use cubecl::ir::{ElemType, FloatKind};
    gpu_client(device).is_some_and(|client| client.properties().supports_type(ElemType::Float(FloatKind::F16)))
}

/// The precision prefill uses on `device` by default: f16 where the device supports it
/// ([`crate::model::LoadOptions::gpu_f16`] decides for a model).
pub fn prefill_precision(device: &Device) -> PrefillPrecision {
    if supports_f16(device) { PrefillPrecision::F16 } else { PrefillPrecision::F32 }
}

/// Packed weights on a GPU: the level words (as i32, bit for bit) and the f32 scales, in row
/// blocks whose words fit one buffer binding (the q8 embedding of the 1.5B model is 222 MiB).
#[derive(Debug, Clone)]
pub struct GpuQuant {
    blocks: Vec<Block>,
    rows: usize,
    cols: usize,
    format: QuantFormat,
    precision: PrefillPrecision,
    /// The decode kernel.
    matvec: MatvecKernel,
    /// The most bytes one buffer holds: the blocks' words, and each expanded piece in prefill.
    max_bytes: usize,
}

#[derive(Debug, Clone)]
struct Block {
    words: Tensor<1, Int>,
    scales: Tensor<1>,
    rows: usize,
}

mod kernels {
    use cubecl::prelude::*;

    /// The `k`-th level of a packed word: a 4-bit value stored as level + 8, or a two's-complement byte.
    #[cube]
    fn level(word: i32, k: u32, #[comptime] bits: u32) -> i32 {
        let mut v = (word >> i32::cast_from(bits * k)) & i32::cast_from((1u32 << bits) - 1);
        if comptime!(bits == 8) {
            if v >= 128i32 {
                v -= 256i32;
            }
        } else {
            v -= 8i32;
        }
        v
    }

    /// Group `g` of weight row `r` against each of the `n` activation rows, added to `acc[i]`:
    /// `scale[r, g] · Σ_k level · x[i, 32g + k]`. The group's words and scale are read once for
    /// all rows (the rows of a batch share every weight read). With `normed`, each activation
    /// is multiplied by the input norm's weight (`norm[32g + k]`) as it is read, and with
    /// `squares` its square is added to `sq[i]` too (the norm's sum, taken where the product
    /// reads its input anyway).
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn group_dot_rows(
        x: &Tensor<f32>,
        words: &Tensor<i32>,
        scales: &Tensor<f32>,
        norm: &Tensor<f32>,
        r: u32,
        g: u32,
        cols: u32,
        acc: &mut Array<f32>,
        sq: &mut Array<f32>,
        #[comptime] n: u32,
        #[comptime] bits: u32,
        #[comptime] normed: bool,
        #[comptime] squares: bool,
    ) {
        let per_word = comptime!(32 / bits);
        let words_per_group = comptime!(32 / (32 / bits));
        let gi = r * (cols / 32) + g;
        let mut part = zeros(n);
        for w in 0..words_per_group {
            let word = words[(gi * words_per_group + w) as usize];
            for k in 0..per_word {
                let l = f32::cast_from(level(word, k, bits));
                let col = g * 32 + w * per_word + k;
                #[unroll]
                for i in 0..n {
                    let v = x[(i * cols + col) as usize];
                    if comptime!(normed) {
                        part[i as usize] += l * (v * norm[col as usize]);
                        if comptime!(squares) {
                            sq[i as usize] += v * v;
                        }
                    } else {
                        part[i as usize] += l * v;
                    }
                }
            }
        }
        let scale = scales[gi as usize];
        #[unroll]
        for i in 0..n {
            acc[i as usize] += part[i as usize] * scale;
        }
    }

    /// RMSNorm's factor `1 / √(Σx² / cols + eps)` for an activation row's sum of squares.
    #[cube]
    fn inv_rms(sum: f32, cols: u32, eps: f32) -> f32 {
        1.0f32 / (sum / f32::cast_from(cols) + eps).sqrt()
    }

    /// What a product does with its sums before storing output `pos` (output row `r`): adds
    /// the bias (`bias[r]`, and `bias[r + rows]` for the up half), then per `then`
    /// ([`Epilogue::code`](crate::backend::product::Epilogue)): nothing (0), adds `extra[pos]` (1, a
    /// residual), or (2, SwiGLU) returns `silu(total) · up`, `total` being the gate
    /// projection's sum and `up` the up projection's (weight row `r + rows`).
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn finish(
        total: f32,
        up: f32,
        bias: &Tensor<f32>,
        extra: &Tensor<f32>,
        pos: u32,
        r: u32,
        rows: u32,
        #[comptime] has_bias: bool,
        #[comptime] then: u32,
    ) -> f32 {
        let mut y = total;
        let mut u = up;
        if comptime!(has_bias) {
            y += bias[r as usize];
            if comptime!(then == 2) {
                u += bias[(r + rows) as usize];
            }
        }
        if comptime!(then == 1) {
            y = extra[pos as usize] + y;
        } else if comptime!(then == 2) {
            y = y / (1.0f32 + (-y).exp()) * u;
        }
        y
    }

    /// An array of `n` zeros.
    #[cube]
    fn zeros(#[comptime] n: u32) -> Array<f32> {
        let mut a = Array::<f32>::new(n as usize);
        #[unroll]
        for i in 0..n {
            a[i as usize] = 0.0f32;
        }
        a
    }

    /// One unit per output row `r`, for all `n` activation rows: `out[i, r] = Σ_g scale[r, g] ·
    /// Σ_k level(r, g, k) · x[i, 32g + k]`, finished by [`finish`] (for SwiGLU, `then` = 2,
    /// weight row `r + rows` too: the up projection). `bits` is 4 (eight levels per word, stored
    /// as level + 8) or 8 (four two's-complement bytes). With `normed`, the product is of
    /// RMSNorm(x) (`x / √(mean(x²) + eps) · extra`, `extra` then holding the norm's weight):
    /// the weight is applied as `x` is read and the row's factor to the sums, so the norm needs
    /// no launch of its own.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn quant_matmul_kernel(
        x: &Tensor<f32>,
        words: &Tensor<i32>,
        scales: &Tensor<f32>,
        bias: &Tensor<f32>,
        extra: &Tensor<f32>,
        out: &mut Tensor<f32>,
        rows: u32,
        cols: u32,
        eps: f32,
        #[comptime] n: u32,
        #[comptime] bits: u32,
        #[comptime] has_bias: bool,
        #[comptime] then: u32,
        #[comptime] normed: bool,
    ) {
        let r = ABSOLUTE_POS as u32;
        if r < rows {
            let mut acc = zeros(n);
            let mut up = zeros(n);
            let mut sq = zeros(n);
            for g in 0..cols / 32 {
                group_dot_rows(x, words, scales, extra, r, g, cols, &mut acc, &mut sq, n, bits, normed, normed);
                if comptime!(then == 2) {
                    group_dot_rows(x, words, scales, extra, r + rows, g, cols, &mut up, &mut sq, n, bits, normed, false);
                }
            }
            #[unroll]
            for i in 0..n {
                let pos = i * rows + r;
                let mut total = acc[i as usize];
                let mut up_total = up[i as usize];
                if comptime!(normed) {
                    let inv = inv_rms(sq[i as usize], cols, eps);
                    total *= inv;
                    up_total *= inv;
                }
                out[pos as usize] = finish(total, up_total, bias, extra, pos, r, rows, has_bias, then);
            }
        }
    }

    /// One cube per output row `r`, for all `n` activation rows: its `units` units stride over
    /// the row's groups (neighbouring units read neighbouring groups, so a cube's loads are
    /// contiguous), then a tree sum in shared memory per activation row (two for SwiGLU, one
    /// more for the sum of squares when `normed`: see [`quant_matmul_kernel`]) and [`finish`].
    /// Needs no subgroup instructions.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn quant_matvec_kernel(
        x: &Tensor<f32>,
        words: &Tensor<i32>,
        scales: &Tensor<f32>,
        bias: &Tensor<f32>,
        extra: &Tensor<f32>,
        out: &mut Tensor<f32>,
        rows: u32,
        cols: u32,
        eps: f32,
        #[comptime] n: u32,
        #[comptime] bits: u32,
        #[comptime] units: u32,
        #[comptime] has_bias: bool,
        #[comptime] then: u32,
        #[comptime] normed: bool,
    ) {
        let r = CUBE_POS as u32;
        let live = r < rows;
        let mut acc = zeros(n);
        let mut up = zeros(n);
        let mut sq = zeros(n);
        // Barriers must sit in control flow every unit of the cube reaches, so cubes past the
        // end run the reductions too, on zeros.
        if live {
            let mut g = UNIT_POS;
            while g < cols / 32 {
                group_dot_rows(x, words, scales, extra, r, g, cols, &mut acc, &mut sq, n, bits, normed, normed);
                if comptime!(then == 2) {
                    group_dot_rows(x, words, scales, extra, r + rows, g, cols, &mut up, &mut sq, n, bits, normed, false);
                }
                g += units;
            }
        }
        let mut partial = Shared::<[f32]>::new_slice(units as usize);
        #[unroll]
        for i in 0..n {
            // The last barrier of the previous sum has passed: only unit 0 still reads (slot 0,
            // its own), so the slots can be refilled.
            let mut inv = 1.0f32;
            if comptime!(normed) {
                partial[UNIT_POS as usize] = sq[i as usize];
                crate::backend::gpu::reduce::tree_sum(&mut partial, units);
                inv = inv_rms(partial[0], cols, eps);
                // Every unit has read slot 0 before it is refilled.
                sync_cube();
            }
            let mut up_total = 0.0f32;
            if comptime!(then == 2) {
                partial[UNIT_POS as usize] = up[i as usize];
                crate::backend::gpu::reduce::tree_sum(&mut partial, units);
                up_total = partial[0];
                sync_cube();
            }
            partial[UNIT_POS as usize] = acc[i as usize];
            crate::backend::gpu::reduce::tree_sum(&mut partial, units);
            if live && UNIT_POS == 0 {
                let pos = i * rows + r;
                let mut total = partial[0];
                if comptime!(normed) {
                    total *= inv;
                    up_total *= inv;
                }
                out[pos as usize] = finish(total, up_total, bias, extra, pos, r, rows, has_bias, then);
            }
        }
    }

    /// The embedding lookup from the packed table: `out[i, c]` is column `c` of row `ids[i]`,
    /// expanded, for the ids this block holds (rows `start..start + rows`; the other blocks
    /// write the other ids). Only the looked-up rows are read.
    #[cube(launch)]
    pub fn gather_kernel(
        words: &Tensor<i32>,
        scales: &Tensor<f32>,
        ids: &Tensor<i32>,
        out: &mut Tensor<f32>,
        n: u32,
        start: u32,
        rows: u32,
        cols: u32,
        #[comptime] bits: u32,
    ) {
        let per_word = comptime!(32 / bits);
        let pos = ABSOLUTE_POS as u32;
        if pos < n * cols {
            let id = u32::cast_from(ids[(pos / cols) as usize]);
            if id >= start && id < start + rows {
                let at = (id - start) * cols + pos % cols;
                let word = words[(at / per_word) as usize];
                out[pos as usize] = f32::cast_from(level(word, at % per_word, bits)) * scales[(at / 32) as usize];
            }
        }
    }

    /// Expands packed levels to float weights (f32 or f16), one weight per unit (for prefill,
    /// where a dense matrix product over many rows beats re-reading packed groups per row).
    /// The product is formed in f32 and rounded once. `offset` is the first weight expanded (a
    /// row times the width): `out` holds `total` weights from there.
    #[cube(launch)]
    pub fn dequant_kernel<F: Float>(words: &Tensor<i32>, scales: &Tensor<f32>, out: &mut Tensor<F>, offset: u32, total: u32, #[comptime] bits: u32) {
        let per_word = comptime!(32 / bits);
        let pos = ABSOLUTE_POS as u32;
        if pos < total {
            let at = offset + pos;
            let word = words[(at / per_word) as usize];
            out[pos as usize] = F::cast_from(f32::cast_from(level(word, at % per_word, bits)) * scales[(at / 32) as usize]);
        }
    }
}

use kernels::{dequant_kernel, gather_kernel, quant_matmul_kernel, quant_matvec_kernel};

impl GpuQuant {
    /// Uploads a quantized matrix, still packed, in blocks of at most
    /// [`MAX_BINDING_BYTES`](crate::backend::product::MAX_BINDING_BYTES) of words.
    pub fn upload(q: &QuantMatrix, device: &Device) -> Self {
        Self::upload_in_blocks(q, device, crate::backend::product::MAX_BINDING_BYTES)
    }

    /// [`GpuQuant::upload`] with an explicit block size in bytes.
    pub fn upload_in_blocks(q: &QuantMatrix, device: &Device, max_bytes: usize) -> Self {
        Self::upload_with(q, device, max_bytes, prefill_precision(device), matvec_kernel(device, None))
    }

    /// The upload, with a prefill precision the caller has already checked against the device
    /// and a decode kernel (the model loader decides both once per load, not once per matrix).
    pub(crate) fn upload_with(q: &QuantMatrix, device: &Device, max_bytes: usize, precision: PrefillPrecision, matvec: MatvecKernel) -> Self {
        let bytes = q.values_bytes();
        let row_bytes = bytes.len() / q.rows();
        let groups_per_row = q.cols() / GROUP;
        let all_scales = q.scales();
        let block_rows = (max_bytes / row_bytes.max(1)).max(1);
        let blocks = (0..q.rows())
            .step_by(block_rows)
            .map(|start| {
                let rows = block_rows.min(q.rows() - start);
                let words: Vec<i32> = bytes[start * row_bytes..(start + rows) * row_bytes]
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let scales = all_scales[start * groups_per_row..(start + rows) * groups_per_row].to_vec();
                let (nw, ns) = (words.len(), scales.len());
                Block {
                    words: Tensor::from_data(TensorData::new(words, [nw]), device),
                    scales: Tensor::from_data(TensorData::new(scales, [ns]), device),
                    rows,
                }
            })
            .collect();
        GpuQuant { blocks, rows: q.rows(), cols: q.cols(), format: q.format(), precision, matvec, max_bytes }
    }

    /// The rows of `parts` stacked in order (same columns, format, precision and kernel): one
    /// block when they fit one binding together, otherwise their blocks in sequence.
    pub(crate) fn concat_rows(parts: &[&GpuQuant]) -> crate::error::Result<Self> {
        let first = parts.first().ok_or(crate::error::Error::InvalidArgument { name: "weights", message: "nothing to stack".into() })?;
        if parts.iter().any(|p| p.cols != first.cols || p.format != first.format) {
            return Err(crate::error::Error::InvalidArgument { name: "weights", message: "matrices stacked into one must share columns and format".into() });
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut blocks: Vec<Block> = parts.iter().flat_map(|p| p.blocks.iter().cloned()).collect();
        let words_bytes: usize = blocks.iter().map(|b| b.words.dims()[0] * 4).sum();
        if blocks.len() > 1 && words_bytes <= first.max_bytes {
            let words = Tensor::cat(blocks.iter().map(|b| b.words.clone()).collect(), 0);
            let scales = Tensor::cat(blocks.iter().map(|b| b.scales.clone()).collect(), 0);
            blocks = vec![Block { words, scales, rows }];
        }
        let GpuQuant { cols, format, precision, matvec, max_bytes, .. } = **first;
        Ok(GpuQuant { blocks, rows, cols, format, precision, matvec, max_bytes })
    }

    /// The same weights with prefill in `precision` (the default is [`prefill_precision`]);
    /// f16 on a device without f16 arithmetic is an error.
    pub fn with_precision(mut self, precision: PrefillPrecision) -> crate::error::Result<Self> {
        if precision == PrefillPrecision::F16 && !supports_f16(&self.blocks[0].words.device()) {
            return Err(crate::error::Error::Device("f16 prefill needs a GPU with f16 arithmetic (shader-f16); this one has none".into()));
        }
        self.precision = precision;
        Ok(self)
    }

    /// The precision of this matrix's prefill products.
    pub fn precision(&self) -> PrefillPrecision {
        self.precision
    }

    /// The weights' format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// The kernel of this matrix's decode products ([`matvec_kernel`]).
    pub fn matvec(&self) -> MatvecKernel {
        self.matvec
    }

    /// Number of row blocks.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes on the device: packed levels and f32 scales.
    pub fn bytes(&self) -> u64 {
        ((self.rows * self.cols) as f64 * self.format.bytes_per_weight()) as u64
    }

    fn bits(&self) -> u32 {
        match self.format {
            QuantFormat::Q4 => 4,
            QuantFormat::Q8 => 8,
        }
    }

    /// Rows `first..first + rows` of one block expanded to `[rows, cols]` of `dtype` (F32 or
    /// F16) on the GPU.
    fn dequantize_rows(&self, block: &Block, first: usize, rows: usize, dtype: DType) -> Tensor<2> {
        let words = into_contiguous(block.words.clone().try_into_primitive::<Cube>().expect("GPU tensor"));
        let scales = into_contiguous(block.scales.clone().try_into_primitive::<Cube>().expect("GPU tensor"));
        let client = words.client.clone();
        let (offset, total) = ((first * self.cols) as u32, rows * self.cols);
        let out = empty_device_contiguous_dtype(client.clone(), words.device.clone(), Shape::new([rows, self.cols]), dtype);
        let cube_dim = CubeDim::new(&client, total);
        let cube_count = calculate_cube_count_elemwise(&client, total, cube_dim);
        let (words, scales, out_arg) = (words.into_tensor_arg(), scales.into_tensor_arg(), out.clone().into_tensor_arg());
        match dtype {
            DType::F16 => dequant_kernel::launch::<half::f16>(&client, cube_count, cube_dim, words, scales, out_arg, offset, total as u32, self.bits()),
            _ => dequant_kernel::launch::<f32>(&client, cube_count, cube_dim, words, scales, out_arg, offset, total as u32, self.bits()),
        }
        Tensor::from_primitive::<Cube>(out)
    }

    /// [`GpuQuant::gather`] of ids already on the device (i32, `[n]`): every block's kernel
    /// runs, each writing the ids it holds (a recorded decode step replays it with new ids).
    pub fn gather_device(&self, ids: &Tensor<1, Int>) -> Tensor<2> {
        self.gather_blocks(ids.clone(), |_| true)
    }

    /// Rows `ids` expanded to f32, `[ids.len(), cols]` (the embedding lookup), read from the
    /// packed blocks on the GPU: the table is never expanded and no host copy is needed.
    /// Every id must be below [`GpuQuant::rows`].
    pub fn gather(&self, ids: &[u32]) -> Tensor<2> {
        let device = self.blocks[0].words.device();
        let ids_host: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let id_tensor = Tensor::<1, Int>::from_data(TensorData::new(ids_host, [ids.len()]), &device);
        // Only the blocks holding one of the ids.
        self.gather_blocks(id_tensor, |rows| ids.iter().any(|&i| rows.contains(&(i as usize))))
    }

    /// The lookup kernel over the blocks whose rows `launch` accepts, for the ids of `ids`.
    fn gather_blocks(&self, ids: Tensor<1, Int>, launch: impl Fn(std::ops::Range<usize>) -> bool) -> Tensor<2> {
        let n = ids.dims()[0];
        let id_tensor = into_contiguous(ids.try_into_primitive::<Cube>().expect("GPU tensor on the CubeCL backend"));
        let client = id_tensor.client.clone();
        let out = empty_device_contiguous_dtype(client.clone(), id_tensor.device.clone(), Shape::new([n, self.cols]), DType::F32);
        let units = n * self.cols;
        let cube_dim = CubeDim::new(&client, units);
        let cube_count = calculate_cube_count_elemwise(&client, units, cube_dim);
        let mut start = 0usize;
        for block in &self.blocks {
            if launch(start..start + block.rows) {
                let words = into_contiguous(block.words.clone().try_into_primitive::<Cube>().expect("GPU tensor"));
                let scales = into_contiguous(block.scales.clone().try_into_primitive::<Cube>().expect("GPU tensor"));
                gather_kernel::launch(
                    &client,
                    cube_count.clone(),
                    cube_dim,
                    words.into_tensor_arg(),
                    scales.into_tensor_arg(),
                    id_tensor.clone().into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    n as u32,
                    start as u32,
                    block.rows as u32,
                    self.cols as u32,
                    self.bits(),
                );
            }
            start += block.rows;
        }
        Tensor::from_primitive::<Cube>(out)
    }

    /// The whole matrix expanded to f32 on the GPU.
    pub fn dequantize(&self) -> Tensor<2> {
        self.dequantize_as(DType::F32)
    }

    /// The whole matrix expanded to `dtype` (F32, or F16 on a device with f16 arithmetic).
    pub fn dequantize_as(&self, dtype: DType) -> Tensor<2> {
        let parts: Vec<Tensor<2>> = self.blocks.iter().map(|b| self.dequantize_rows(b, 0, b.rows, dtype)).collect();
        if parts.len() == 1 { parts.into_iter().next().expect("one block") } else { Tensor::cat(parts, 0) }
    }

    /// `x Wᵀ` for `[n, cols]` activations on the same GPU.
    pub fn matmul_t(&self, x: Tensor<2>) -> Tensor<2> {
        self.matmul_t_then(x, None, Epilogue::Plain)
    }

    /// `x Wᵀ + bias`, finished by `then`: in the product's own launch when the packed kernels
    /// run it on a single block (decode), with burn's ops otherwise.
    pub fn matmul_t_then(&self, x: Tensor<2>, bias: Option<&Tensor<1>>, then: Epilogue) -> Tensor<2> {
        self.matmul_t_with(x, None, bias, then, self.matvec)
    }

    /// [`GpuQuant::matmul_t_then`] of `norm(x)`: in decode the kernels normalise `x` as they
    /// read it (no launch of its own); in prefill the norm runs first.
    pub fn matmul_t_normed(&self, x: Tensor<2>, norm: InputNorm<'_>, bias: Option<&Tensor<1>>, then: Epilogue) -> Tensor<2> {
        self.matmul_t_with(x, Some(norm), bias, then, self.matvec)
    }

    /// [`GpuQuant::matmul_t_then`] of `x`, or of `norm(x)` ([`GpuQuant::matmul_t_normed`]),
    /// with a chosen matrix-vector kernel (for fewer than
    /// [`PREFILL_ROWS`](crate::backend::product::PREFILL_ROWS) activation rows).
    pub fn matmul_t_with(&self, x: Tensor<2>, norm: Option<InputNorm<'_>>, bias: Option<&Tensor<1>>, then: Epilogue, kernel: MatvecKernel) -> Tensor<2> {
        let n = x.dims()[0];
        // The kernels read the norm's weight where a residual would be (no product has both):
        // with both, or in prefill, the norm runs on its own first.
        let (x, norm) = match norm {
            Some(nm) if n >= crate::backend::product::PREFILL_ROWS || matches!(then, Epilogue::Add(_)) => (nm.apply(x), None),
            norm => (x, norm),
        };
        if n < crate::backend::product::PREFILL_ROWS && self.blocks.len() == 1 {
            return self.block_matmul_t(&self.blocks[0], x, norm, bias, then, kernel);
        }
        let y = if n >= crate::backend::product::PREFILL_ROWS {
            self.dense_matmul_t(x)
        } else {
            Tensor::cat(self.blocks.iter().map(|b| self.block_matmul_t(b, x.clone(), norm, None, Epilogue::Plain, kernel)).collect(), 1)
        };
        then.apply(y, bias)
    }

    /// Prefill: `x Wᵀ` through dense products, the weights expanded on the GPU a piece at a time
    /// (each piece at most `max_bytes`, so no buffer outgrows a binding: the 1.5B lm_head
    /// expanded whole would be 890 MiB), in f16 or f32 as [`PrefillPrecision`] says.
    fn dense_matmul_t(&self, x: Tensor<2>) -> Tensor<2> {
        let dtype = match self.precision {
            PrefillPrecision::F32 => DType::F32,
            PrefillPrecision::F16 => DType::F16,
        };
        // In f16, each row is scaled into [-1, 1] before rounding (f16's largest value is
        // 65,504: residual-stream outliers must not become infinities), and the f32 result is
        // scaled back.
        let (x, scale) = match self.precision {
            PrefillPrecision::F32 => (x, None),
            PrefillPrecision::F16 => {
                let scale = x.clone().abs().max_dim(1).clamp_min(f32::MIN_POSITIVE);
                ((x / scale.clone()).cast(DType::F16), Some(scale))
            }
        };
        let piece = (self.max_bytes / (self.cols * dtype.size())).max(1);
        let mut parts = Vec::new();
        for block in &self.blocks {
            for first in (0..block.rows).step_by(piece) {
                let w = self.dequantize_rows(block, first, piece.min(block.rows - first), dtype).transpose();
                parts.push(match scale {
                    None => x.clone().matmul(w),
                    Some(_) => {
                        let lhs = x.clone().try_into_primitive::<Cube>().expect("GPU tensor on the CubeCL backend");
                        let rhs = w.try_into_primitive::<Cube>().expect("GPU tensor on the CubeCL backend");
                        let y = matmul(lhs, rhs, None, MatmulStrategy::default(), DType::F32).expect("an f16 matrix product with an f32 result");
                        Tensor::<2>::from_primitive::<Cube>(y)
                    }
                });
            }
        }
        let y = if parts.len() == 1 { parts.pop().expect("one part") } else { Tensor::cat(parts, 1) };
        match scale {
            Some(scale) => y * scale,
            None => y,
        }
    }

    /// Decode: `x Wᵀ + bias` for fewer than [`PREFILL_ROWS`](crate::backend::product::PREFILL_ROWS) rows
    /// with the packed-weight kernels, which expand the levels inside the product and apply
    /// `then` before storing.
    fn block_matmul_t(&self, block: &Block, x: Tensor<2>, norm: Option<InputNorm<'_>>, bias: Option<&Tensor<1>>, then: Epilogue, kernel: MatvecKernel) -> Tensor<2> {
        let [n, cols] = x.dims();
        debug_assert_eq!(cols, self.cols);
        debug_assert_eq!(cols % GROUP, 0);
        // SwiGLU stores one output per pair of weight rows (gate row r, up row r + rows).
        let rows = if matches!(then, Epilogue::SwiGlu) { block.rows / 2 } else { block.rows };
        let bits = self.bits();
        let x = cube(x);
        let words = into_contiguous(block.words.clone().try_into_primitive::<Cube>().expect("GPU tensor"));
        let scales = cube(block.scales.clone());
        let client = x.client.clone();
        let out = empty_device_contiguous_dtype(client.clone(), x.device.clone(), Shape::new([n, rows]), DType::F32);
        // A launch binds every argument: what this one does not read is a one-element stand-in.
        let unused = || empty_device_contiguous_dtype(client.clone(), x.device.clone(), Shape::new([1]), DType::F32);
        let has_bias = bias.is_some();
        let bias = bias.map_or_else(unused, |b| cube(b.clone()));
        let code = then.code();
        let normed = norm.is_some();
        let eps = norm.map_or(0.0, |nm| nm.eps as f32);
        // `extra` holds the residual, or the input norm's weight (never both: see matmul_t_with).
        let extra = match (then, norm) {
            (Epilogue::Add(t), _) => {
                debug_assert_eq!(t.dims(), [n, rows]);
                debug_assert!(!normed, "a residual add and an input norm share one binding");
                cube(t)
            }
            (_, Some(nm)) => cube(nm.weight.clone()),
            _ => unused(),
        };
        let (n32, rows32, cols32) = (n as u32, rows as u32, self.cols as u32);
        let args = (x.into_tensor_arg(), words.into_tensor_arg(), scales.into_tensor_arg(), bias.into_tensor_arg(), extra.into_tensor_arg());
        let out_arg = out.clone().into_tensor_arg();
        // Both kernels take every activation row per weight row (the row count is part of the
        // compiled kernel), so a batch reads each weight once.
        if kernel == MatvecKernel::Cooperative {
            // One cube per weight row, laid out over two axes (one axis holds at most 65,535).
            let cubes = rows as u32;
            let x_count = cubes.min(65_535);
            let cube_count = cubecl::CubeCount::Static(x_count, cubes.div_ceil(x_count), 1);
            let dim = CubeDim::new_1d(MATVEC_UNITS);
            quant_matvec_kernel::launch(
                &client, cube_count, dim, args.0, args.1, args.2, args.3, args.4, out_arg, rows32, cols32, eps, n32, bits, MATVEC_UNITS, has_bias, code, normed,
            );
        } else {
            let cube_dim = CubeDim::new(&client, rows);
            let cube_count = calculate_cube_count_elemwise(&client, rows, cube_dim);
            quant_matmul_kernel::launch(
                &client, cube_count, cube_dim, args.0, args.1, args.2, args.3, args.4, out_arg, rows32, cols32, eps, n32, bits, has_bias, code, normed,
            );
        }
        Tensor::from_primitive::<Cube>(out)
    }
}

/// What the GPU's memory pools hold (CubeCL's memory report over every stream of the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeviceMemory {
    /// Bytes of live allocations.
    pub in_use: u64,
    /// Bytes the pools have reserved from the device (at least `in_use`; pools keep what they
    /// grew to, so this is the high-water mark of what genprm asked the device for).
    pub reserved: u64,
}

/// The memory genprm holds on `device` (a GPU device); `None` on the CPU device.
pub fn device_memory(device: &Device) -> Option<DeviceMemory> {
    let usage = gpu_client(device)?.memory_report(cubecl::MemoryScope::Device).usage();
    Some(DeviceMemory { in_use: usage.bytes_in_use, reserved: usage.bytes_reserved })
}
