//! A start-up self-check of the GPU kernels: when a model loads on a GPU, each custom CubeCL
//! kernel it will run (in the modes it will run them: q4/q8, the cooperative or per-unit decode
//! kernel and its epilogues, f16 mode or not, an f32 or f16 KV cache) is run once on a tiny
//! input and its result compared with a plain-Rust reference.
//!
//! Why: in a browser, a shader that fails WebGPU validation is only logged and its dispatches
//! are skipped (tracel-ai/cubecl#1641), so the buffers it should have written keep stale data
//! and the model computes wrong rewards without any error. A mismatch here is
//! [`Error::GpuKernel`], naming the kernel, before anything is judged.
//!
//! A device that computes nothing at all (Dawn's null backend and wgpu's no-op backend, used to
//! measure the host's cost) is recognised by a control computation with burn's own kernels
//! and reported as [`SelfCheck::NothingComputed`] instead: there is nothing to compare there.
//!
//! Results are read with `into_data_async`, so the check runs in the browser (where a
//! synchronous read panics) as natively (under `pollster`). It costs a few small launches and
//! read-backs; the shaders it compiles are the ones the model uses anyway.

use std::cell::Cell;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::backend::gpu::quant::{GpuQuant, InputNorm, MatvecKernel, PrefillPrecision};
pub use crate::backend::kernels::{Finish, Kernel, SelfCheck, TOP_KS};
use crate::backend::product::{Epilogue, MAX_BINDING_BYTES, PREFILL_ROWS};
use crate::quant::{QuantFormat, QuantMatrix};

thread_local! {
    static SABOTAGED: Cell<Option<Kernel>> = const { Cell::new(None) };
}

/// Makes the expected value of `kernel` wrong in every check this thread runs until the guard
/// is dropped, so tests can see the error a real mismatch raises. Not for use outside tests.
#[doc(hidden)]
pub fn sabotage(kernel: Kernel) -> Sabotage {
    SABOTAGED.set(Some(kernel));
    Sabotage(())
}

/// Undoes [`sabotage`] when dropped.
#[doc(hidden)]
#[must_use = "the sabotage ends when the guard is dropped"]
pub struct Sabotage(());

impl Drop for Sabotage {
    fn drop(&mut self) {
        SABOTAGED.set(None);
    }
}

/// Every kernel in every mode `device` can run: both formats, both decode kernels and all
/// their epilogues, f32 and (where the device has f16 arithmetic) f16 prefill and KV caches.
pub fn all_kernels(device: &Device) -> Vec<Kernel> {
    let f16 = crate::backend::gpu::quant::supports_f16(device);
    let mut kernels = vec![Kernel::RmsNorm];
    kernels.extend(TOP_KS.map(|k| Kernel::TopK { k }));
    for f16_cache in [false, true].into_iter().filter(|&h| !h || f16) {
        kernels.extend([Kernel::RotaryCache { f16_cache }, Kernel::Attention { f16_cache }]);
    }
    for format in [QuantFormat::Q4, QuantFormat::Q8] {
        kernels.push(Kernel::Lookup { format });
        for kernel in [MatvecKernel::PerUnit, MatvecKernel::Cooperative] {
            for finish in [Finish::Plain, Finish::Bias, Finish::Residual, Finish::SwiGlu] {
                // A residual add never follows a norm in the same launch (they share a binding).
                for normed in [false, true].into_iter().filter(|&n| !n || finish != Finish::Residual) {
                    kernels.push(Kernel::Decode { format, kernel, finish, normed });
                }
            }
        }
        kernels.push(Kernel::Prefill { format, precision: PrefillPrecision::F32 });
        if f16 {
            kernels.push(Kernel::Prefill { format, precision: PrefillPrecision::F16 });
        }
    }
    kernels
}

/// Runs each of `kernels` on `device` on a tiny input and compares the result with a
/// plain-Rust reference; the first that disagrees is [`Error::GpuKernel`].
pub async fn check(device: &Device, kernels: &[Kernel]) -> Result<SelfCheck> {
    if *device == Device::flex() {
        return Ok(SelfCheck::NotAGpu);
    }
    if !computes(device).await? {
        return Ok(SelfCheck::NothingComputed);
    }
    for (i, &kernel) in kernels.iter().enumerate() {
        let (got, want, rtol) = run(kernel, device, i as u32 + 1).await?;
        compare(kernel, device, &got, want, rtol)?;
    }
    Ok(SelfCheck::Passed { kernels: kernels.len() })
}

/// Whether `device` computes at all: a control with burn's own elementwise kernels.
async fn computes(device: &Device) -> Result<bool> {
    let x = [1.5f32, -2.0, 3.25, 0.5];
    let t = Tensor::<1>::from_data(TensorData::new(x.to_vec(), [4]), device) * 2.0 + 1.0;
    let got = read(t, "the control computation").await?;
    Ok(got.iter().zip(x).all(|(g, x)| (g - (2.0 * x + 1.0)).abs() < 1e-5))
}

/// Reads a result back to the host, as f32.
async fn read<const D: usize>(t: Tensor<D>, what: impl std::fmt::Display) -> Result<Vec<f32>> {
    let failed = |e: &dyn std::fmt::Debug| Error::Device(format!("reading back the GPU self-check of {what}: {e:?}"));
    let data = t.into_data_async().await.map_err(|e| failed(&e))?;
    let data = data.try_cast(DType::F32).map_err(|e| failed(&e))?;
    data.try_into_vec::<f32>().map_err(|e| failed(&e))
}

/// The largest difference between `got` and `want` (NaN counts as infinite), against a
/// tolerance of `rtol` times the reference's largest magnitude (at least 1).
fn compare(kernel: Kernel, device: &Device, got: &[f32], mut want: Vec<f32>, rtol: f32) -> Result<()> {
    let tolerance = rtol * want.iter().fold(1.0f32, |m, w| m.max(w.abs()));
    if SABOTAGED.get() == Some(kernel) {
        want[0] += 1000.0;
    }
    let max_error = if got.len() != want.len() {
        f32::INFINITY
    } else {
        got.iter().zip(&want).map(|(g, w)| (g - w).abs()).map(|e| if e.is_nan() { f32::INFINITY } else { e }).fold(0.0f32, f32::max)
    };
    if max_error <= tolerance {
        return Ok(());
    }
    Err(Error::GpuKernel {
        kernel: kernel.to_string(),
        adapter: crate::backend::adapter_name(device).unwrap_or_else(|| "unknown".into()),
        max_error,
        tolerance,
    })
}

/// Deterministic values in [-1, 1) (a small xorshift generator), different for each `seed`.
fn values(seed: u32, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn tensor1(data: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), device)
}

fn tensor2(data: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn ints(data: Vec<i32>, device: &Device) -> Tensor<1, Int> {
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), device)
}

/// The value an f16 cache holds for `v`.
fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// `x Wᵀ` in f64 over the expanded weights: `x` is `[n, cols]`, `w` `[rows, cols]`.
fn reference_product(x: &[f32], w: &[f32], n: usize, rows: usize, cols: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(n * rows);
    for i in 0..n {
        for r in 0..rows {
            y.push((0..cols).map(|c| f64::from(x[i * cols + c]) * f64::from(w[r * cols + c])).sum::<f64>() as f32);
        }
    }
    y
}

/// RMSNorm of the rows of `x` (`cols` wide) in f64: `x / √(mean(x²) + eps) · weight`.
fn rms_norm_reference(x: &[f32], weight: &[f32], cols: usize, eps: f64) -> Vec<f32> {
    x.chunks(cols)
        .flat_map(|row| {
            let mean = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / cols as f64;
            let inv = 1.0 / (mean + eps).sqrt();
            row.iter().zip(weight).map(move |(&v, &w)| (f64::from(v) * inv * f64::from(w)) as f32)
        })
        .collect()
}

/// Runs one kernel on its tiny input: what it gave, the reference, and the relative tolerance.
async fn run(kernel: Kernel, device: &Device, seed: u32) -> Result<(Vec<f32>, Vec<f32>, f32)> {
    const F32_RTOL: f32 = 1e-3;
    const F16_RTOL: f32 = 2e-2;
    match kernel {
        Kernel::Decode { format, kernel: matvec, finish, normed } => {
            // One activation row (decode of one sequence); 8 outputs over 4 groups of 32.
            let (n, rows, cols) = (1, 8, 128);
            let weight_rows = if finish == Finish::SwiGlu { 2 * rows } else { rows };
            let q = QuantMatrix::quantize(&values(seed, weight_rows * cols), weight_rows, cols, format, "self-check")?;
            let w = q.dequantize();
            let g = GpuQuant::upload_with(&q, device, MAX_BINDING_BYTES, PrefillPrecision::F32, matvec);
            let x: Vec<f32> = values(seed + 1000, n * cols).iter().map(|v| 3.0 * v).collect();
            let (norm_weight, eps) = (values(seed + 4000, cols), 1e-6);
            let y = match normed {
                true => reference_product(&rms_norm_reference(&x, &norm_weight, cols, eps), &w, n, weight_rows, cols),
                false => reference_product(&x, &w, n, weight_rows, cols),
            };
            let bias = values(seed + 2000, weight_rows);
            let residual = values(seed + 3000, n * rows);
            let (then, want) = match finish {
                Finish::Plain => (Epilogue::Plain, y),
                Finish::Bias => (Epilogue::Plain, y.iter().enumerate().map(|(i, v)| v + bias[i % rows]).collect()),
                Finish::Residual => (Epilogue::Add(tensor2(residual.clone(), [n, rows], device)), y.iter().zip(&residual).map(|(v, r)| v + r).collect()),
                Finish::SwiGlu => {
                    let want = (0..n)
                        .flat_map(|i| (0..rows).map(move |r| (i, r)))
                        .map(|(i, r)| {
                            let (gate, up) = (y[i * weight_rows + r], y[i * weight_rows + rows + r]);
                            gate / (1.0 + (-gate).exp()) * up
                        })
                        .collect();
                    (Epilogue::SwiGlu, want)
                }
            };
            let bias_t = (finish == Finish::Bias).then(|| tensor1(bias, device));
            let norm_t = tensor1(norm_weight, device);
            let norm = normed.then_some(InputNorm { weight: &norm_t, eps });
            let out = g.matmul_t_with(tensor2(x, [n, cols], device), norm, bias_t.as_ref(), then, matvec);
            Ok((read(out, kernel).await?, want, F32_RTOL))
        }
        Kernel::Prefill { format, precision } => {
            let (n, rows, cols) = (PREFILL_ROWS, 8, 64);
            let q = QuantMatrix::quantize(&values(seed, rows * cols), rows, cols, format, "self-check")?;
            let w = q.dequantize();
            let g = GpuQuant::upload_with(&q, device, MAX_BINDING_BYTES, precision, MatvecKernel::PerUnit);
            let x = values(seed + 1000, n * cols);
            let want = reference_product(&x, &w, n, rows, cols);
            let out = g.matmul_t_with(tensor2(x, [n, cols], device), None, None, Epilogue::Plain, MatvecKernel::PerUnit);
            let rtol = if precision == PrefillPrecision::F16 { F16_RTOL } else { F32_RTOL };
            Ok((read(out, kernel).await?, want, rtol))
        }
        Kernel::Lookup { format } => {
            let (rows, cols) = (8, 64);
            let q = QuantMatrix::quantize(&values(seed, rows * cols), rows, cols, format, "self-check")?;
            let w = q.dequantize();
            let g = GpuQuant::upload_with(&q, device, MAX_BINDING_BYTES, PrefillPrecision::F32, MatvecKernel::PerUnit);
            let ids = [5u32, 0, 7];
            let want = ids.iter().flat_map(|&i| w[i as usize * cols..(i as usize + 1) * cols].iter().copied()).collect();
            Ok((read(g.gather(&ids), kernel).await?, want, F32_RTOL))
        }
        Kernel::RmsNorm => {
            // Not a multiple of the kernel's 128 units: some units take one column more.
            let (rows, cols, eps) = (3, 200, 1e-6);
            let x: Vec<f32> = values(seed, rows * cols).iter().map(|v| 3.0 * v).collect();
            let weight = values(seed + 1000, cols);
            let want = rms_norm_reference(&x, &weight, cols, eps);
            let out = crate::backend::gpu::layer::rms_norm(tensor2(x, [rows, cols], device), &tensor1(weight, device), eps);
            Ok((read(out, kernel).await?, want, F32_RTOL))
        }
        Kernel::TopK { k } => {
            // Two rows over more entries than the kernel's 1024 lanes, on a coarse grid: many
            // equal values, so the order among ties (lower id first) is checked too.
            let (rows, vocab) = (2, 3000);
            let x: Vec<f32> = values(seed, rows * vocab).iter().map(|v| (v * 8.0).round()).collect();
            let want = x
                .chunks(vocab)
                .flat_map(|row| {
                    let mut order: Vec<usize> = (0..vocab).collect();
                    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                    let top = &order[..k];
                    top.iter().map(|&i| row[i]).chain(top.iter().map(|&i| i as f32)).collect::<Vec<f32>>()
                })
                .collect();
            let out = crate::backend::gpu::topk::top_k(tensor2(x, [rows, vocab], device), k);
            Ok((read(out, kernel).await?, want, 0.0))
        }
        Kernel::RotaryCache { f16_cache } => rotary_cache(kernel, device, seed, f16_cache).await,
        Kernel::Attention { f16_cache } => attention(kernel, device, seed, f16_cache).await,
    }
}

/// The rotary embedding and cache write of two rows of two new positions each (one row starts
/// at position 0, the other at 1), four query heads sharing two key/value heads of 8 dimensions.
async fn rotary_cache(kernel: Kernel, device: &Device, seed: u32, f16_cache: bool) -> Result<(Vec<f32>, Vec<f32>, f32)> {
    let (rows, seq, heads, kv_heads, d, capacity) = (2, 2, 4, 2, 8, 4);
    let past = [0usize, 1];
    let half = d / 2;
    let width = (heads + 2 * kv_heads) * d;
    let m = rows * seq;
    let qkv = values(seed, m * width);
    let inv: Vec<f32> = (0..half).map(|i| 1.0 / 10_000f32.powf((2 * i) as f32 / d as f32)).collect();
    let table: Vec<f32> = (0..m)
        .flat_map(|p| {
            let pos = (past[p / seq] + p % seq) as f32;
            let angles: Vec<f32> = inv.iter().map(|f| pos * f).collect();
            angles.iter().map(|a| a.cos()).chain(angles.iter().map(|a| a.sin())).collect::<Vec<_>>()
        })
        .collect();
    let writes: Vec<usize> = (0..rows)
        .flat_map(|r| (0..kv_heads).flat_map(move |h| (0..seq).map(move |s| (r * kv_heads + h) * capacity + past[r] + s)))
        .collect();
    let stored = |v: f32| if f16_cache { f16_round(v) } else { v };
    let cache_rows = rows * kv_heads * capacity;
    // The cache starts with other values, which must stay where nothing is written.
    let mut keys: Vec<f32> = values(seed + 1000, cache_rows * d).into_iter().map(stored).collect();
    let mut vals: Vec<f32> = values(seed + 2000, cache_rows * d).into_iter().map(stored).collect();
    let dtype = if f16_cache { DType::F16 } else { DType::F32 };
    let keys_t = Tensor::<2>::from_data(TensorData::new(keys.clone(), [cache_rows, d]), (device, dtype));
    let vals_t = Tensor::<2>::from_data(TensorData::new(vals.clone(), [cache_rows, d]), (device, dtype));

    let rotate = |x: &[f32], p: usize, i: usize| {
        let (c, s) = (table[p * d + i], table[p * d + half + i]);
        (x[i] * c - x[i + half] * s, x[i + half] * c + x[i] * s)
    };
    let mut q_out = vec![0f32; m * heads * d];
    for p in 0..m {
        let row = &qkv[p * width..(p + 1) * width];
        for h in 0..heads {
            for i in 0..half {
                let (a, b) = rotate(&row[h * d..(h + 1) * d], p, i);
                q_out[(p * heads + h) * d + i] = a;
                q_out[(p * heads + h) * d + i + half] = b;
            }
        }
        let (r, s) = (p / seq, p % seq);
        for h in 0..kv_heads {
            let at = writes[(r * kv_heads + h) * seq + s] * d;
            let k = &row[(heads + h) * d..(heads + h + 1) * d];
            let v = &row[(heads + kv_heads + h) * d..(heads + kv_heads + h + 1) * d];
            for i in 0..half {
                let (a, b) = rotate(k, p, i);
                keys[at + i] = stored(a);
                keys[at + i + half] = stored(b);
            }
            for (j, &x) in v.iter().enumerate() {
                vals[at + j] = stored(x);
            }
        }
    }
    let writes_t = ints(writes.iter().map(|&w| w as i32).collect(), device);
    let shape = crate::backend::gpu::layer::NewPositions { rows, seq, heads, kv_heads, head_dim: d };
    let (q, k, v) = crate::backend::gpu::layer::rotary_and_cache_write(tensor2(qkv, [m, width], device), tensor2(table, [m, d], device), &writes_t, (keys_t, vals_t), shape);
    let mut got = read(q, kernel).await?;
    got.extend(read(k, kernel).await?);
    got.extend(read(v, kernel).await?);
    let want = q_out.into_iter().chain(keys).chain(vals).collect();
    Ok((got, want, if f16_cache { 2e-2 } else { 1e-3 }))
}

/// Decode attention of rows 1 and 2 of a cache of three (3 and 6 positions held, 8 of
/// capacity), four query heads sharing two key/value heads of 8 dimensions.
async fn attention(kernel: Kernel, device: &Device, seed: u32, f16_cache: bool) -> Result<(Vec<f32>, Vec<f32>, f32)> {
    let (n, heads, kv_heads, d, capacity, first) = (2, 4, 2, 8, 8, 1);
    let lens = [3usize, 6];
    let cache_rows = (first + n) * kv_heads * capacity;
    let stored = |v: f32| if f16_cache { f16_round(v) } else { v };
    let q: Vec<f32> = values(seed, n * heads * d).iter().map(|v| 2.0 * v).collect();
    let keys: Vec<f32> = values(seed + 1000, cache_rows * d).into_iter().map(stored).collect();
    let vals: Vec<f32> = values(seed + 2000, cache_rows * d).into_iter().map(stored).collect();
    let scale = 1.0 / (d as f64).sqrt();
    let mut want = Vec::with_capacity(n * heads * d);
    for (i, &len) in lens.iter().enumerate() {
        for h in 0..heads {
            let kv = h / (heads / kv_heads);
            let base = ((first + i) * kv_heads + kv) * capacity;
            let qh = &q[(i * heads + h) * d..][..d];
            let scores: Vec<f64> = (0..len)
                .map(|t| qh.iter().zip(&keys[(base + t) * d..][..d]).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>() * scale)
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = p.iter().sum();
            for j in 0..d {
                want.push((0..len).map(|t| p[t] * f64::from(vals[(base + t) * d + j])).sum::<f64>() as f32 / total as f32);
            }
        }
    }
    let dtype = if f16_cache { DType::F16 } else { DType::F32 };
    let keys_t = Tensor::<2>::from_data(TensorData::new(keys, [cache_rows, d]), (device, dtype));
    let vals_t = Tensor::<2>::from_data(TensorData::new(vals, [cache_rows, d]), (device, dtype));
    let q_t = Tensor::<3>::from_data(TensorData::new(q, [n, heads, d]), device);
    let lens_t = crate::backend::gpu::attention::row_lens(&lens, device);
    let out = crate::backend::gpu::attention::decode_attention(q_t, &keys_t, &vals_t, first, &lens_t, kv_heads, capacity);
    Ok((read(out, kernel).await?, want, 1e-3))
}
