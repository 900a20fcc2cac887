//! Weight-only quantization: int8 (`q8`) and int4 (`q4`), symmetric, one f32 scale per group of
//! 32 weights along the input dimension, and the CPU kernels that multiply by such weights
//! without expanding them: the activations are quantized to 8 bits per group of 32 for each
//! product, and each group's dot product is computed in integers (AVX2 or AVX-512 VNNI where
//! the CPU has them, portable Rust elsewhere).
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
    /// output rows, with the fastest kernel this CPU has.
    ///
    /// Each activation row is quantized once per call to 8 bits per group of [`GROUP`]
    /// (symmetric, one f32 scale per group, like GGUF's Q8_0 activations); each group of weights
    /// then meets it in an integer dot product, scaled by the weight's and the activation's
    /// scale and summed in f32. Every weight is read from memory once per call and unpacked once
    /// per [`TILE`] activation rows, so decode is bound by the bytes of packed weights. A group
    /// of activations holding a NaN or an infinity makes its row's outputs NaN.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        self.matmul_with(Kernel::best(), x, n)
    }

    /// [`QuantMatrix::matmul`] with a given kernel. Every kernel computes the same integer sums;
    /// only the f32 rounding of their scaled sum differs. Panics if this CPU lacks the kernel's
    /// instructions.
    pub(crate) fn matmul_with(&self, kernel: Kernel, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "activation shape");
        assert!(kernel.available(), "this CPU cannot run the {kernel:?} kernel");
        let acts = QuantActs::new(x, n, self.cols, self.format);
        let mut yt = vec![0f32; self.rows * n];
        let work = |(bi, out): (usize, &mut [f32])| kernel.block(self, &acts, bi * ROW_BLOCK, out);
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            yt.par_chunks_mut(ROW_BLOCK * n).enumerate().for_each(work);
        }
        #[cfg(target_arch = "wasm32")]
        yt.chunks_mut(ROW_BLOCK * n).enumerate().for_each(work);
        if n == 1 {
            return yt;
        }
        let mut y = vec![0f32; n * self.rows];
        for (r, col) in yt.chunks_exact(n).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                y[i * self.rows + r] = v;
            }
        }
        y
    }
}

/// Activation rows unpacked together against each group of weights (the decode batch of 1..8
/// rows takes one or two passes over the weights' groups held in cache).
pub const TILE: usize = 4;

/// Output rows per parallel task; within a task the rows' packed weights stay in cache while
/// every tile of activation rows passes over them.
const ROW_BLOCK: usize = 32;

/// Activation rows quantized for one product: 8-bit levels, one f32 scale per group. Rows are
/// padded with zero groups to whole pairs of groups, the kernels' unit.
struct QuantActs {
    /// Rows.
    n: usize,
    /// `[n, stride]` levels in −127..=127, at the positions [`QuantActs::slot`] gives.
    levels: Vec<i8>,
    /// Levels per row: `cols` rounded up to a multiple of `PAIR`.
    stride: usize,
    /// `[n, stride / GROUP]` scales (NaN for a group holding a non-finite value; 0 for padding).
    scales: Vec<f32>,
    /// For q4 weights, `[n, stride / GROUP]` of 8 · scale · Σ levels: the stored nibbles are the
    /// levels plus 8, and this removes the 8 (empty for q8).
    offsets: Vec<f32>,
}

/// Weights in the kernels' unit: two groups.
const PAIR: usize = 2 * GROUP;

impl QuantActs {
    fn new(x: &[f32], n: usize, cols: usize, format: QuantFormat) -> Self {
        let q4 = format == QuantFormat::Q4;
        let stride = cols.div_ceil(PAIR) * PAIR;
        let groups = n * stride / GROUP;
        let mut levels = vec![0i8; n * stride];
        let mut scales = vec![0f32; groups];
        let mut offsets = vec![0f32; if q4 { groups } else { 0 }];
        for (i, (xr, lr)) in x.chunks_exact(cols).zip(levels.chunks_exact_mut(stride)).enumerate() {
            for (g, xg) in xr.chunks_exact(GROUP).enumerate() {
                let amax = xg.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = if xg.iter().all(|v| v.is_finite()) { amax / 127.0 } else { f32::NAN };
                let mut sum = 0i32;
                if scale > 0.0 {
                    for (j, &v) in xg.iter().enumerate() {
                        let r = v / scale;
                        // Round half away from zero; the kernels rely on −127..=127 (never −128).
                        let q = ((r + 0.5f32.copysign(r)) as i32).clamp(-127, 127);
                        sum += q;
                        lr[Self::slot(q4, g, j)] = q as i8;
                    }
                }
                scales[i * stride / GROUP + g] = scale;
                if q4 {
                    offsets[i * stride / GROUP + g] = 8.0 * scale * sum as f32;
                }
            }
        }
        QuantActs { n, levels, stride, scales, offsets }
    }

    /// Where element `j` of group `g` goes in a row. q8: in order. q4: in the order in which the
    /// kernels unpack a pair of groups (32 bytes, byte b holding the weights 2b and 2b + 1 of
    /// the pair's group b / 16): the low nibbles of both groups (each group's even elements),
    /// then the high ones (the odd elements).
    fn slot(q4: bool, g: usize, j: usize) -> usize {
        let base = g / 2 * PAIR;
        if q4 { base + (j % 2) * GROUP + (g % 2) * (GROUP / 2) + j / 2 } else { base + (g % 2) * GROUP + j }
    }
}

/// A CPU kernel for the quantized products; [`Kernel::best`] picks one at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Portable Rust, on every target.
    Scalar,
    /// AVX2 and FMA: `vpmaddubsw` and `vpmaddwd` on 256-bit vectors.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// As `Avx2`, with AVX-512 VNNI's `vpdpbusd` (on 256-bit vectors) for the multiply-adds.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel, this CPU's or not.
    const ALL: &[Kernel] = &[
        Kernel::Scalar,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni,
    ];

    /// Whether this CPU has the kernel's instructions.
    pub(crate) fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                Kernel::Avx2.available() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
            }
        }
    }

    /// The kernels this CPU can run.
    pub(crate) fn available_kernels() -> Vec<Kernel> {
        Kernel::ALL.iter().copied().filter(|k| k.available()).collect()
    }

    /// The fastest kernel this CPU has (detected once). The environment variable
    /// `GENPRM_CPU_KERNEL` (`scalar`, `avx2`, `avx512vnni`) picks a slower one, for comparisons.
    pub(crate) fn best() -> Kernel {
        static BEST: std::sync::LazyLock<Kernel> = std::sync::LazyLock::new(|| {
            let wanted = std::env::var("GENPRM_CPU_KERNEL").ok().map(|v| v.to_ascii_lowercase());
            let available = Kernel::available_kernels();
            match wanted.and_then(|w| available.iter().copied().find(|k| format!("{k:?}").to_ascii_lowercase() == w)) {
                Some(k) => k,
                None => *available.last().expect("the scalar kernel runs everywhere"),
            }
        });
        *BEST
    }

    /// Output rows `r0..` of `m` (as many as `out` holds, `[rows, acts.n]`) against every
    /// activation row.
    fn block(self, m: &QuantMatrix, acts: &QuantActs, r0: usize, out: &mut [f32]) {
        match self {
            // SAFETY: the scalar kernel uses no special instructions.
            Kernel::Scalar => unsafe { block_dot::<Scalar>(m, acts, r0, out) },
            // SAFETY: `matmul_with` checked that the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::block_avx2(m, acts, r0, out) },
            // SAFETY: `matmul_with` checked that the CPU has AVX2, FMA, AVX-512 VNNI and VL.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { x86::block_vnni(m, acts, r0, out) },
        }
    }
}

/// One instruction set's inner products: a pair of groups of weight levels against a pair of
/// groups of activation levels, each group's integer sum scaled by its own scale and added up
/// in f32. The driver ([`block_dot`]) is shared by all.
trait GroupDot {
    /// A pair of groups of weights, unpacked.
    type W: Copy;
    /// A running f32 sum.
    type Acc: Copy;
    /// A zero sum.
    unsafe fn zero() -> Self::Acc;
    /// Two groups of q4 weights (8 words, 32 bytes): the stored nibbles 0..=15, in the order of
    /// [`QuantActs::slot`].
    unsafe fn load_q4(words: &[u32; PAIR / 8]) -> Self::W;
    /// Two groups of q8 weights.
    unsafe fn load_q8(levels: &[i8; PAIR]) -> Self::W;
    /// `acc + scales[0] · Σ_first group w·x + scales[1] · Σ_second group w·x`, q4 weights.
    unsafe fn fma_q4(acc: Self::Acc, w: Self::W, x: &[i8; PAIR], scales: [f32; 2]) -> Self::Acc;
    /// The same for q8 weights.
    unsafe fn fma_q8(acc: Self::Acc, w: Self::W, x: &[i8; PAIR], scales: [f32; 2]) -> Self::Acc;
    /// The value of a sum.
    unsafe fn sum(acc: Self::Acc) -> f32;
}

/// The driver: output rows `r0..r0 + out.len() / n` of `m` against every activation row, tile by
/// tile (`out` is `[rows, n]`).
///
/// # Safety
/// The CPU must have `I`'s instructions.
#[inline(always)]
unsafe fn block_dot<I: GroupDot>(m: &QuantMatrix, a: &QuantActs, r0: usize, out: &mut [f32]) {
    let n = a.n;
    let mut i0 = 0;
    while i0 < n {
        let nb = (n - i0).min(TILE);
        for (j, o) in out.chunks_exact_mut(n).enumerate() {
            let o = &mut o[i0..i0 + nb];
            // SAFETY: the caller guarantees `I`'s instructions.
            unsafe {
                match nb {
                    1 => tile::<I, 1>(m, a, r0 + j, i0, o),
                    2 => tile::<I, 2>(m, a, r0 + j, i0, o),
                    3 => tile::<I, 3>(m, a, r0 + j, i0, o),
                    _ => tile::<I, TILE>(m, a, r0 + j, i0, o),
                }
            }
        }
        i0 += nb;
    }
}

/// The activation rows of a tile, by pair of groups: levels, scales, q4 offsets.
struct TileActs<'a, const NB: usize> {
    x: [&'a [[i8; PAIR]]; NB],
    scales: [&'a [[f32; 2]]; NB],
    offsets: [&'a [[f32; 2]]; NB],
}

/// Row `r` of `m` against activation rows `i0..i0 + NB`, into `out[..NB]`.
///
/// # Safety
/// The CPU must have `I`'s instructions.
#[inline(always)]
unsafe fn tile<I: GroupDot, const NB: usize>(m: &QuantMatrix, a: &QuantActs, r: usize, i0: usize, out: &mut [f32]) {
    let (cols, gpr, spr) = (m.cols, m.cols / GROUP, a.stride / GROUP);
    let (ws, ws_rest) = m.scales[r * gpr..(r + 1) * gpr].as_chunks::<2>();
    let ws_last = [ws_rest.first().copied().unwrap_or(0.0), 0.0];
    let acts = TileActs::<NB> {
        x: std::array::from_fn(|t| a.levels[(i0 + t) * a.stride..(i0 + t + 1) * a.stride].as_chunks().0),
        scales: std::array::from_fn(|t| pairs_of_row(&a.scales, i0 + t, spr)),
        offsets: std::array::from_fn(|t| pairs_of_row(&a.offsets, i0 + t, spr)),
    };
    let mut acc = [unsafe { I::zero() }; NB];
    let mut off = [[0f32; 2]; NB];
    // SAFETY (all calls below): the caller guarantees `I`'s instructions.
    match &m.values {
        Values::Q8(v) => {
            let (pairs, rest) = v[r * cols..(r + 1) * cols].as_chunks::<PAIR>();
            for (p, (w, &s)) in pairs.iter().zip(ws).enumerate() {
                unsafe { step::<I, NB, false>(&mut acc, &mut off, I::load_q8(w), s, p, &acts) };
            }
            if !rest.is_empty() {
                let mut last = [0i8; PAIR];
                last[..rest.len()].copy_from_slice(rest);
                unsafe { step::<I, NB, false>(&mut acc, &mut off, I::load_q8(&last), ws_last, pairs.len(), &acts) };
            }
        }
        Values::Q4(v) => {
            let (pairs, rest) = v[r * cols / 8..(r + 1) * cols / 8].as_chunks::<{ PAIR / 8 }>();
            for (p, (w, &s)) in pairs.iter().zip(ws).enumerate() {
                unsafe { step::<I, NB, true>(&mut acc, &mut off, I::load_q4(w), s, p, &acts) };
            }
            if !rest.is_empty() {
                let mut last = [0u32; PAIR / 8];
                last[..rest.len()].copy_from_slice(rest);
                unsafe { step::<I, NB, true>(&mut acc, &mut off, I::load_q4(&last), ws_last, pairs.len(), &acts) };
            }
        }
    }
    for t in 0..NB {
        out[t] = unsafe { I::sum(acc[t]) } - (off[t][0] + off[t][1]);
    }
}

/// Row `i` of a `[n, per_row]` table by pairs (none if the table is empty).
#[inline(always)]
fn pairs_of_row(v: &[f32], i: usize, per_row: usize) -> &[[f32; 2]] {
    if v.is_empty() { &[] } else { v[i * per_row..(i + 1) * per_row].as_chunks().0 }
}

/// One pair of groups of weights (`w`, scales `ws`) against pair `p` of every row of the tile.
///
/// # Safety
/// The CPU must have `I`'s instructions.
#[inline(always)]
unsafe fn step<I: GroupDot, const NB: usize, const Q4: bool>(
    acc: &mut [I::Acc; NB],
    off: &mut [[f32; 2]; NB],
    w: I::W,
    ws: [f32; 2],
    p: usize,
    a: &TileActs<'_, NB>,
) {
    for t in 0..NB {
        let xs = a.scales[t][p];
        let s = [ws[0] * xs[0], ws[1] * xs[1]];
        // SAFETY: the caller guarantees `I`'s instructions.
        acc[t] = unsafe { if Q4 { I::fma_q4(acc[t], w, &a.x[t][p], s) } else { I::fma_q8(acc[t], w, &a.x[t][p], s) } };
        if Q4 {
            let xo = a.offsets[t][p];
            off[t][0] += ws[0] * xo[0];
            off[t][1] += ws[1] * xo[1];
        }
    }
}

/// The portable kernel.
struct Scalar;

impl Scalar {
    /// Σ w·x in integers.
    #[inline(always)]
    fn dot(w: &[i8], x: &[i8]) -> i32 {
        w.iter().zip(x).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum()
    }
}

impl GroupDot for Scalar {
    type W = [i8; PAIR];
    type Acc = f32;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn load_q4(words: &[u32; PAIR / 8]) -> [i8; PAIR] {
        let mut w = [0i8; PAIR];
        for b in 0..PAIR / 2 {
            let byte = (words[b / 4] >> (8 * (b % 4))) as u8;
            w[b] = (byte & 0xF) as i8;
            w[b + PAIR / 2] = (byte >> 4) as i8;
        }
        w
    }
    #[inline(always)]
    unsafe fn load_q8(levels: &[i8; PAIR]) -> [i8; PAIR] {
        *levels
    }
    #[inline(always)]
    unsafe fn fma_q4(acc: f32, w: [i8; PAIR], x: &[i8; PAIR], s: [f32; 2]) -> f32 {
        let (h, q) = (GROUP, GROUP / 2);
        let first = Scalar::dot(&w[..q], &x[..q]) + Scalar::dot(&w[h..h + q], &x[h..h + q]);
        let second = Scalar::dot(&w[q..h], &x[q..h]) + Scalar::dot(&w[h + q..], &x[h + q..]);
        acc + s[0] * first as f32 + s[1] * second as f32
    }
    #[inline(always)]
    unsafe fn fma_q8(acc: f32, w: [i8; PAIR], x: &[i8; PAIR], s: [f32; 2]) -> f32 {
        acc + s[0] * Scalar::dot(&w[..GROUP], &x[..GROUP]) as f32 + s[1] * Scalar::dot(&w[GROUP..], &x[GROUP..]) as f32
    }
    #[inline(always)]
    unsafe fn sum(acc: f32) -> f32 {
        acc
    }
}

/// The x86-64 kernels: AVX2 (+ FMA), optionally with AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{GROUP, GroupDot, PAIR, QuantActs, QuantMatrix, block_dot};

    /// The driver with AVX2 multiply-adds.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_avx2(m: &QuantMatrix, a: &QuantActs, r0: usize, out: &mut [f32]) {
        // SAFETY: this function only runs where the CPU has AVX2 and FMA.
        unsafe { block_dot::<Avx2<false>>(m, a, r0, out) }
    }

    /// The driver with VNNI multiply-adds.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA, AVX-512 VNNI and AVX-512 VL.
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub(super) unsafe fn block_vnni(m: &QuantMatrix, a: &QuantActs, r0: usize, out: &mut [f32]) {
        // SAFETY: this function only runs where the CPU has all of them.
        unsafe { block_dot::<Avx2<true>>(m, a, r0, out) }
    }

    /// 256-bit kernels; `VNNI` selects `vpdpbusd` over `vpmaddubsw` + `vpmaddwd`. Every method
    /// is inlined into one of the `#[target_feature]` drivers above, which are only called
    /// where the CPU has the instructions; that is the safety contract of each `unsafe` block.
    pub(super) struct Avx2<const VNNI: bool>;

    impl<const VNNI: bool> Avx2<VNNI> {
        /// `acc` plus eight i32 lanes, each the sum of four products of an unsigned byte of `u`
        /// and a signed byte of `x`. Without VNNI the pairs are summed in i16 first; that cannot
        /// saturate here because `u` ≤ 128 and |x| ≤ 127 (2 · 128 · 127 < 32767).
        #[inline(always)]
        unsafe fn dot(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
            // SAFETY: see the type's documentation.
            unsafe {
                if VNNI {
                    _mm256_dpbusd_epi32(acc, u, x)
                } else {
                    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)))
                }
            }
        }

        /// Loads 32 bytes.
        #[inline(always)]
        unsafe fn load(p: &[i8]) -> __m256i {
            debug_assert!(p.len() >= 32);
            // SAFETY: 32 readable bytes (callers pass halves of 64-byte arrays).
            unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
        }
    }

    impl<const VNNI: bool> GroupDot for Avx2<VNNI> {
        /// q4: the low and the high nibbles of the pair's 32 bytes (the first group in each
        /// vector's low 16 bytes). q8: each group's |level|, then each group's levels.
        type W = [__m256i; 4];
        type Acc = __m256;

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            // SAFETY: see the type's documentation.
            unsafe { _mm256_setzero_ps() }
        }

        #[inline(always)]
        unsafe fn load_q4(words: &[u32; PAIR / 8]) -> Self::W {
            // SAFETY: 32 readable bytes (8 little-endian words); instructions as documented.
            unsafe {
                let bytes = _mm256_loadu_si256(words.as_ptr().cast());
                let mask = _mm256_set1_epi8(0x0F);
                let zero = _mm256_setzero_si256();
                [_mm256_and_si256(bytes, mask), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask), zero, zero]
            }
        }

        #[inline(always)]
        unsafe fn load_q8(levels: &[i8; PAIR]) -> Self::W {
            // SAFETY: 64 readable bytes; instructions as in the type's documentation.
            unsafe {
                let (a, b) = (Self::load(&levels[..GROUP]), Self::load(&levels[GROUP..]));
                [_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, b), a, b]
            }
        }

        #[inline(always)]
        unsafe fn fma_q4(acc: __m256, w: Self::W, x: &[i8; PAIR], s: [f32; 2]) -> __m256 {
            // SAFETY: 64 readable bytes; instructions as in the type's documentation. Lanes 0..4
            // hold the first group's sums, lanes 4..8 the second's.
            unsafe {
                let d = Self::dot(_mm256_setzero_si256(), w[0], Self::load(&x[..GROUP]));
                let d = Self::dot(d, w[1], Self::load(&x[GROUP..]));
                let scale = _mm256_set_m128(_mm_set1_ps(s[1]), _mm_set1_ps(s[0]));
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), scale, acc)
            }
        }

        #[inline(always)]
        unsafe fn fma_q8(acc: __m256, w: Self::W, x: &[i8; PAIR], s: [f32; 2]) -> __m256 {
            // SAFETY: 64 readable bytes; instructions as in the type's documentation. The sign
            // trick (|w| · (x · sign w)) makes the weight operand unsigned; |−128| reads as 128.
            // The horizontal add leaves the first group's sums in lanes 0, 1, 4, 5.
            unsafe {
                let zero = _mm256_setzero_si256();
                let a = Self::dot(zero, w[0], _mm256_sign_epi8(Self::load(&x[..GROUP]), w[2]));
                let b = Self::dot(zero, w[1], _mm256_sign_epi8(Self::load(&x[GROUP..]), w[3]));
                let half = _mm_setr_ps(s[0], s[0], s[1], s[1]);
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_hadd_epi32(a, b)), _mm256_set_m128(half, half), acc)
            }
        }

        #[inline(always)]
        unsafe fn sum(acc: __m256) -> f32 {
            // SAFETY: see the type's documentation.
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
            }
        }
    }
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
    fn matmul_is_close_to_the_dequantized_f32_product() {
        // Against plain f32 arithmetic on the dequantized weights: the only difference is the
        // activations' rounding to 8 bits, at most half a step per value.
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            let (rows, cols, n) = (37, 64, 3);
            let q = QuantMatrix::quantize(&sample(rows, cols), rows, cols, format, "w").unwrap();
            let d = q.dequantize();
            let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.31).cos()).collect();
            let y = q.matmul(&x, n);
            for i in 0..n {
                for r in 0..rows {
                    let expect: f32 = (0..cols).map(|k| x[i * cols + k] * d[r * cols + k]).sum();
                    let bound: f32 = (0..cols)
                        .map(|k| {
                            let g = &x[i * cols + k / GROUP * GROUP..][..GROUP];
                            d[r * cols + k].abs() * g.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0 * 0.5
                        })
                        .sum();
                    let got = y[i * rows + r];
                    assert!((got - expect).abs() <= bound + 1e-4, "{format} [{i},{r}]: {got} vs {expect} (bound {bound})");
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

    /// A deterministic pseudo-random stream in [-1, 1).
    fn noise(seed: u64, len: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The plain reference for `matmul`: activations quantized per group as documented (natural
    /// order), integer dot products, summed in f64. Returns (y, bound on the f32 rounding).
    fn reference(q: &QuantMatrix, x: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
        let (rows, cols, gpr) = (q.rows, q.cols, q.cols / GROUP);
        let mut w = vec![0f32; cols];
        let (mut y, mut mag) = (vec![0f64; n * rows], vec![0f64; n * rows]);
        for r in 0..rows {
            // The integer levels of row r (q4: −8..=7), unscaled.
            for g in 0..gpr {
                q.unpack_group(r * gpr + g, &mut w[g * GROUP..(g + 1) * GROUP]);
            }
            for i in 0..n {
                for g in 0..gpr {
                    let xg = &x[i * cols + g * GROUP..i * cols + (g + 1) * GROUP];
                    let amax = xg.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let xs = amax / 127.0;
                    let dot: i64 = if xs > 0.0 {
                        xg.iter().zip(&w[g * GROUP..]).map(|(&v, &l)| (v / xs).round().clamp(-127.0, 127.0) as i64 * l as i64).sum()
                    } else {
                        0
                    };
                    let s = f64::from(q.scales[r * gpr + g]) * f64::from(xs);
                    y[i * rows + r] += s * dot as f64;
                    let abs: i64 = xg.iter().zip(&w[g * GROUP..]).map(|(_, &l)| 127 * (l as i64).abs()).sum();
                    mag[i * rows + r] += s.abs() * abs as f64;
                }
            }
        }
        (y, mag)
    }

    /// Runs every kernel this CPU has on `x` and checks each against the reference (and so
    /// against each other): equal up to f32 rounding of the scaled sums.
    fn check_all_kernels(q: &QuantMatrix, x: &[f32], n: usize, what: &str) {
        let (expect, mag) = reference(q, x, n);
        for kernel in Kernel::available_kernels() {
            let y = q.matmul_with(kernel, x, n);
            for (k, ((&got, &want), &m)) in y.iter().zip(&expect).zip(&mag).enumerate() {
                let tol = 1e-5 * m + 1e-30;
                assert!(
                    (f64::from(got) - want).abs() <= tol,
                    "{what}, {} n={n}, {kernel:?}: y[{}, {}] = {got} vs {want} (tolerance {tol})",
                    q.format,
                    k / q.rows,
                    k % q.rows
                );
            }
        }
    }

    #[test]
    fn every_kernel_matches_the_integer_reference() {
        assert!(Kernel::available_kernels().contains(&Kernel::Scalar));
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            for (rows, cols) in [(1, 32), (37, 96), (64, 256), (33, 1536)] {
                let mut w = noise(rows as u64 * 7 + cols as u64, rows * cols);
                // An all-zero weight group and an outlier.
                w[..GROUP].fill(0.0);
                w[rows * cols / 2] = 9.0;
                let q = QuantMatrix::quantize(&w, rows, cols, format, "w").unwrap();
                for n in (1..=8).chain([13]) {
                    let mut x = noise(n as u64 * 31 + cols as u64, n * cols);
                    // An all-zero activation group and outliers.
                    x[(n - 1) * cols..(n - 1) * cols + GROUP].fill(0.0);
                    x[cols / 3] = -25.0;
                    check_all_kernels(&q, &x, n, &format!("[{rows}, {cols}]"));
                }
            }
        }
    }

    #[test]
    fn kernels_handle_extreme_levels_and_magnitudes() {
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            let (rows, cols) = (5, 64);
            // Levels at the ends of the range: q8 −128 (only possible in stored packs) and 127;
            // q4 nibbles 0 (−8) and 15 (+7); rows 2..5 mix them. Scales and activations as large
            // and as small as f32 holds their products.
            let (lo, hi) = match format {
                QuantFormat::Q8 => (0x80u8, 0x7Fu8),
                QuantFormat::Q4 => (0x00, 0xFF),
            };
            let per_row = if format == QuantFormat::Q4 { cols / 2 } else { cols };
            let mut bytes = Vec::new();
            for r in 0..rows {
                bytes.extend((0..per_row).map(|k| match r {
                    0 => lo,
                    1 => hi,
                    2 => if k % 2 == 0 { lo } else { hi },
                    _ => if format == QuantFormat::Q4 { 0xF0 } else if k % 3 == 0 { lo } else { hi },
                }));
            }
            let scales = vec![1.0f32, 1e4, 3e-20, 0.5, 2.0, 1e-3, 7.0, 1.0, 1.0, 1.0][..rows * cols / GROUP].to_vec();
            let q = QuantMatrix::from_parts(rows, cols, format, &bytes, scales, "w").unwrap();
            for n in [1, 2, 5] {
                let mut x = vec![0f32; n * cols];
                for (i, row) in x.chunks_exact_mut(cols).enumerate() {
                    for (k, v) in row.iter_mut().enumerate() {
                        // Full-scale activations of both signs, huge and tiny magnitudes.
                        *v = match (i + k / GROUP) % 4 {
                            0 => -1.0,
                            1 => if k % 2 == 0 { 1e30 } else { -1e30 },
                            2 => 1e-30 * (k as f32 - 31.5),
                            _ => 1.0,
                        };
                    }
                }
                check_all_kernels(&q, &x, n, "extremes");
            }
        }
    }

    #[test]
    fn the_sign_trick_does_not_saturate() {
        // |−128| · 127, twice per 16-bit pair, is the largest pair sum `vpmaddubsw` sees.
        let q = QuantMatrix::from_parts(1, 32, QuantFormat::Q8, &[0x80; 32], vec![1.0], "w").unwrap();
        for kernel in Kernel::available_kernels() {
            for sign in [1.0f32, -1.0] {
                let y = q.matmul_with(kernel, &[sign; 32], 1);
                assert_eq!(y, vec![-sign * 128.0 * 32.0], "{kernel:?}");
            }
        }
    }

    #[test]
    fn zero_and_non_finite_activations() {
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            let (rows, cols) = (9, 64);
            let q = QuantMatrix::quantize(&noise(3, rows * cols), rows, cols, format, "w").unwrap();
            for kernel in Kernel::available_kernels() {
                let mut x = vec![0f32; 3 * cols];
                x[cols + 5] = f32::NAN;
                x[2 * cols + 40] = f32::INFINITY;
                let y = q.matmul_with(kernel, &x, 3);
                assert!(y[..rows].iter().all(|&v| v == 0.0), "{format} {kernel:?}: zero row");
                assert!(y[rows..].iter().all(|v| v.is_nan()), "{format} {kernel:?}: non-finite rows give NaN");
            }
        }
    }

    #[test]
    fn activation_levels_are_within_half_a_step() {
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            let q4 = format == QuantFormat::Q4;
            // Three groups: rows padded to two pairs, the fourth group zero.
            let (n, cols) = (2, 96);
            let x = noise(11, n * cols);
            let a = QuantActs::new(&x, n, cols, format);
            assert_eq!((a.stride, a.levels.len(), a.scales.len()), (128, 256, 8));
            for (i, xr) in x.chunks_exact(cols).enumerate() {
                let lr = &a.levels[i * a.stride..(i + 1) * a.stride];
                let mut seen = vec![false; a.stride];
                for (g, xg) in xr.chunks_exact(GROUP).enumerate() {
                    let s = a.scales[i * 4 + g];
                    let mut sum = 0i32;
                    for (j, &v) in xg.iter().enumerate() {
                        let slot = QuantActs::slot(q4, g, j);
                        assert!(!std::mem::replace(&mut seen[slot], true), "{format}: slot {slot} twice");
                        let l = lr[slot];
                        assert!((-127..=127).contains(&l));
                        assert!((v - f32::from(l) * s).abs() <= s * 0.5 * (1.0 + 1e-5), "{format} group {g}: {v} vs {l}·{s}");
                        sum += i32::from(l);
                    }
                    if q4 {
                        assert_eq!(a.offsets[i * 4 + g], 8.0 * s * sum as f32);
                    }
                }
                assert!(seen.iter().enumerate().all(|(k, &used)| used || lr[k] == 0), "{format}: padding is zero");
                assert_eq!(a.scales[i * 4 + 3], 0.0);
            }
        }
    }
}
