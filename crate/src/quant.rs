//! Weight-only quantization: int8 (`q8`) and int4 (`q4`), symmetric, one f32 scale per group of
//! 32 weights along the input dimension, and the CPU kernels that multiply by such weights
//! without expanding them (the activations stay f32).
//!
//! Layout of an `[rows, cols]` matrix (`rows` = output features): row-major; in `q8` one `i8` per
//! weight; in `q4` eight weights per `u32`, weight `k` of a word in bits `4k..4k+4`, stored as
//! `q + 8` (q in −8..=7); `scales[row * cols / 32 + group]`.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Weights per scale.
pub const GROUP: usize = 32;

/// A weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantFormat {
    /// 8-bit integers, scale = max|w| / 127.
    Q8,
    /// 4-bit integers, scale = max|w| / 7.
    Q4,
}

impl FromStr for QuantFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q8" | "int8" => Ok(QuantFormat::Q8),
            "q4" | "int4" => Ok(QuantFormat::Q4),
            other => Err(Error::InvalidArgument { name: "quant", message: format!("`{other}` is not one of q8, q4") }),
        }
    }
}

impl std::fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuantFormat::Q8 => "q8",
            QuantFormat::Q4 => "q4",
        })
    }
}

impl QuantFormat {
    fn max_level(self) -> f32 {
        match self {
            QuantFormat::Q8 => 127.0,
            QuantFormat::Q4 => 7.0,
        }
    }

    /// Bytes per weight including its share of the scale.
    pub fn bytes_per_weight(self) -> f64 {
        let values = match self {
            QuantFormat::Q8 => 1.0,
            QuantFormat::Q4 => 0.5,
        };
        values + 4.0 / GROUP as f64
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Values {
    Q8(Vec<i8>),
    Q4(Vec<u32>),
}

/// A quantized `[rows, cols]` weight matrix on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    format: QuantFormat,
    values: Values,
    scales: Vec<f32>,
}

impl QuantMatrix {
    /// Quantizes a row-major `[rows, cols]` matrix. `cols` must be a multiple of [`GROUP`];
    /// `name` labels errors.
    pub fn quantize(w: &[f32], rows: usize, cols: usize, format: QuantFormat, name: &str) -> Result<Self> {
        if cols % GROUP != 0 {
            return Err(Error::InvalidArgument {
                name: "quant",
                message: format!("tensor `{name}`: the group size {GROUP} does not divide its input dimension {cols}"),
            });
        }
        if w.len() != rows * cols {
            return Err(Error::InvalidArgument { name: "quant", message: format!("tensor `{name}`: {} values for [{rows}, {cols}]", w.len()) });
        }
        let groups = rows * cols / GROUP;
        let mut scales = Vec::with_capacity(groups);
        let max_level = format.max_level();
        let mut q = vec![0i8; w.len()];
        for (g, chunk) in w.chunks_exact(GROUP).enumerate() {
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if amax > 0.0 && amax.is_finite() { amax / max_level } else { 0.0 };
            scales.push(scale);
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (dst, &v) in q[g * GROUP..(g + 1) * GROUP].iter_mut().zip(chunk) {
                *dst = (v * inv).round().clamp(-max_level - 1.0, max_level) as i8;
            }
        }
        let values = match format {
            QuantFormat::Q8 => Values::Q8(q),
            QuantFormat::Q4 => Values::Q4(
                q.chunks_exact(8)
                    .map(|c| c.iter().enumerate().fold(0u32, |word, (k, &v)| word | (((v + 8) as u32 & 0xF) << (4 * k))))
                    .collect(),
            ),
        };
        Ok(QuantMatrix { rows, cols, format, values, scales })
    }

    /// A matrix from stored parts: `values` as [`QuantMatrix::values_bytes`] writes them and one
    /// scale per group; sizes are checked (`name` labels errors).
    pub fn from_parts(rows: usize, cols: usize, format: QuantFormat, values: &[u8], scales: Vec<f32>, name: &str) -> Result<Self> {
        let bad = |m: String| Error::InvalidArgument { name: "quant", message: format!("tensor `{name}`: {m}") };
        if cols % GROUP != 0 {
            return Err(bad(format!("the group size {GROUP} does not divide its input dimension {cols}")));
        }
        let n = rows * cols;
        if scales.len() != n / GROUP {
            return Err(bad(format!("{} scales for {} groups", scales.len(), n / GROUP)));
        }
        let values = match format {
            QuantFormat::Q8 if values.len() == n => Values::Q8(values.iter().map(|&b| b as i8).collect()),
            QuantFormat::Q4 if values.len() == n / 2 => {
                Values::Q4(values.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
            _ => return Err(bad(format!("{} bytes of {format} values for {n} weights", values.len()))),
        };
        Ok(QuantMatrix { rows, cols, format, values, scales })
    }

    /// Appends the rows of `other` (same columns and format) below this matrix's, so a large
    /// matrix can be quantized piece by piece.
    pub fn append_rows(&mut self, other: QuantMatrix) -> Result<()> {
        if other.cols != self.cols || other.format != self.format {
            return Err(Error::InvalidArgument {
                name: "quant",
                message: format!("cannot append [{}, {}] {} rows to a [{}, {}] {} matrix", other.rows, other.cols, other.format, self.rows, self.cols, self.format),
            });
        }
        match (&mut self.values, other.values) {
            (Values::Q8(a), Values::Q8(b)) => a.extend(b),
            (Values::Q4(a), Values::Q4(b)) => a.extend(b),
            _ => unreachable!("formats were checked equal"),
        }
        self.scales.extend(other.scales);
        self.rows += other.rows;
        Ok(())
    }

    /// The packed values as little-endian bytes.
    pub fn values_bytes(&self) -> Vec<u8> {
        match &self.values {
            Values::Q8(v) => v.iter().map(|&q| q as u8).collect(),
            Values::Q4(v) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        }
    }

    /// One scale per group of [`GROUP`] weights, row-major.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// Bytes held (values and scales).
    pub fn bytes(&self) -> usize {
        let v = match &self.values {
            Values::Q8(v) => v.len(),
            Values::Q4(v) => v.len() * 4,
        };
        v + self.scales.len() * 4
    }

    /// Expands row `r` into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let gpr = self.cols / GROUP;
        for g in 0..gpr {
            let s = self.scales[r * gpr + g];
            let dst = &mut out[g * GROUP..(g + 1) * GROUP];
            self.unpack_group(r * gpr + g, dst);
            for v in dst.iter_mut() {
                *v *= s;
            }
        }
    }

    /// The whole matrix in f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            out.par_chunks_mut(self.cols).enumerate().for_each(|(r, row)| self.dequantize_row(r, row));
        }
        #[cfg(target_arch = "wasm32")]
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// The integer levels of group `g` (global group index) as f32, unscaled.
    #[inline(always)]
    fn unpack_group(&self, g: usize, dst: &mut [f32]) {
        match &self.values {
            Values::Q8(v) => {
                for (d, &q) in dst.iter_mut().zip(&v[g * GROUP..(g + 1) * GROUP]) {
                    *d = f32::from(q);
                }
            }
            Values::Q4(v) => {
                for (w, d8) in v[g * GROUP / 8..(g + 1) * GROUP / 8].iter().zip(dst.chunks_exact_mut(8)) {
                    for (k, d) in d8.iter_mut().enumerate() {
                        *d = ((w >> (4 * k)) & 0xF) as f32 - 8.0;
                    }
                }
            }
        }
    }

    /// `y = x Wᵀ` for `n` input rows `x` (`[n, cols]`), giving `[n, rows]`, in parallel over
    /// output rows. Each weight is read once per call: decode (n = 1) is bound by the bytes of
    /// packed weights, not by expanding them.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "activation shape");
        let gpr = self.cols / GROUP;
        // Per input row and group, the sum of x: the q4 offset of 8 is applied once per group.
        let xsum: Vec<f32> = x.chunks_exact(GROUP).map(|c| c.iter().sum()).collect();
        let block = 32usize;
        let mut yt = vec![0f32; self.rows * n];
        let work = |(bi, out): (usize, &mut [f32])| {
            for (j, acc) in out.chunks_exact_mut(n).enumerate() {
                let r = bi * block + j;
                for (i, a) in acc.iter_mut().enumerate() {
                    let xr = &x[i * self.cols..(i + 1) * self.cols];
                    *a = self.row_dot(r, xr, &xsum[i * gpr..(i + 1) * gpr]);
                }
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            yt.par_chunks_mut(block * n).enumerate().for_each(work);
        }
        #[cfg(target_arch = "wasm32")]
        yt.chunks_mut(block * n).enumerate().for_each(work);
        if n == 1 {
            return yt;
        }
        let mut y = vec![0f32; n * self.rows];
        for r in 0..self.rows {
            for i in 0..n {
                y[i * self.rows + r] = yt[r * n + i];
            }
        }
        y
    }
}

impl QuantMatrix {
    /// Σ over row `r` of W·x for one input row `xr` (its per-group sums in `xsum`), with the
    /// widest vector instructions this CPU has.
    #[inline]
    fn row_dot(&self, r: usize, xr: &[f32], xsum: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if *HAS_AVX2_FMA {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
            return unsafe { row_dot_avx2(self, r, xr, xsum) };
        }
        row_dot_generic::<false>(self, r, xr, xsum)
    }
}

#[cfg(target_arch = "x86_64")]
static HAS_AVX2_FMA: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_dot_avx2(m: &QuantMatrix, r: usize, xr: &[f32], xsum: &[f32]) -> f32 {
    row_dot_generic::<true>(m, r, xr, xsum)
}

/// The row kernel; `FMA` selects fused multiply-adds (only where the CPU has them).
#[inline(always)]
fn row_dot_generic<const FMA: bool>(m: &QuantMatrix, r: usize, xr: &[f32], xsum: &[f32]) -> f32 {
    let gpr = m.cols / GROUP;
    let mut total = 0f32;
    for g in 0..gpr {
        let gi = r * gpr + g;
        let xs = &xr[g * GROUP..(g + 1) * GROUP];
        let dot = match &m.values {
            Values::Q8(v) => dot_q8::<FMA>(&v[gi * GROUP..(gi + 1) * GROUP], xs),
            Values::Q4(v) => dot_q4::<FMA>(&v[gi * GROUP / 8..(gi + 1) * GROUP / 8], xs) - 8.0 * xsum[g],
        };
        total += dot * m.scales[gi];
    }
    total
}

#[inline(always)]
fn madd<const FMA: bool>(acc: f32, a: f32, b: f32) -> f32 {
    if FMA { a.mul_add(b, acc) } else { acc + a * b }
}

/// Σ q·x over one group of 8-bit levels, in 8 independent lanes (vectorizable).
#[inline(always)]
fn dot_q8<const FMA: bool>(q: &[i8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (q8, x8) in q.chunks_exact(8).zip(x.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] = madd::<FMA>(acc[k], f32::from(q8[k]), x8[k]);
        }
    }
    acc.iter().sum()
}

/// Σ (stored nibble)·x over one group of 4-bit levels (the caller removes the offset of 8).
#[inline(always)]
fn dot_q4<const FMA: bool>(words: &[u32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (&w, x8) in words.iter().zip(x.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] = madd::<FMA>(acc[k], ((w >> (4 * k)) & 0xF) as f32, x8[k]);
        }
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols).map(|i| ((i as f32 * 0.7123).sin() * 1.3) + if i % 97 == 0 { 4.0 } else { 0.0 }).collect()
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            let (rows, cols) = (5, 96);
            let w = sample(rows, cols);
            let q = QuantMatrix::quantize(&w, rows, cols, format, "w").unwrap();
            let d = q.dequantize();
            for (g, (a, b)) in w.chunks(GROUP).zip(d.chunks(GROUP)).enumerate() {
                let step = q.scales[g];
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= step * 0.5 + 1e-6, "{format}: {x} vs {y} (step {step})");
                }
            }
        }
    }

    #[test]
    fn q4_packs_eight_levels_per_word() {
        let mut w = vec![0f32; 32];
        w[0] = 7.0;
        w[1] = -7.0;
        w[9] = 3.0;
        let q = QuantMatrix::quantize(&w, 1, 32, QuantFormat::Q4, "w").unwrap();
        assert_eq!(q.scales, vec![1.0]);
        let Values::Q4(words) = &q.values else { panic!() };
        assert_eq!(words.len(), 4);
        assert_eq!(words[0] & 0xF, 15);
        assert_eq!((words[0] >> 4) & 0xF, 1);
        assert_eq!((words[1] >> 4) & 0xF, 11);
        assert_eq!(q.dequantize()[..2], [7.0, -7.0]);
    }

    #[test]
    fn matmul_equals_the_dequantized_reference() {
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            let (rows, cols, n) = (37, 64, 3);
            let q = QuantMatrix::quantize(&sample(rows, cols), rows, cols, format, "w").unwrap();
            let d = q.dequantize();
            let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.31).cos()).collect();
            let y = q.matmul(&x, n);
            for i in 0..n {
                for r in 0..rows {
                    let expect: f32 = (0..cols).map(|k| x[i * cols + k] * d[r * cols + k]).sum();
                    assert!((y[i * rows + r] - expect).abs() < 1e-3, "{format} [{i},{r}]: {} vs {expect}", y[i * rows + r]);
                }
            }
        }
    }

    #[test]
    fn group_size_must_divide_the_input_dimension() {
        let e = QuantMatrix::quantize(&[0.0; 40], 1, 40, QuantFormat::Q8, "model.x").unwrap_err().to_string();
        assert!(e.contains("model.x") && e.contains("40"), "{e}");
    }

    #[test]
    fn zero_groups_stay_zero() {
        let q = QuantMatrix::quantize(&[0.0; 64], 2, 32, QuantFormat::Q4, "w").unwrap();
        assert!(q.dequantize().iter().all(|&v| v == 0.0));
    }
}
