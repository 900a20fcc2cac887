//! Weight-only quantization: int8 (`q8`) and int4 (`q4`), symmetric, one f32 scale per group of
//! 32 weights along the input dimension, and the CPU kernels that multiply by such weights
//! without expanding them: the activations are quantized to 8 bits per group of 32 for each
//! product, and each group's dot product is computed in integers: AVX2, AVX-VNNI or AVX-512
//! VNNI where the x86-64 CPU has them, NEON on AArch64, SIMD128 in WebAssembly, portable Rust
//! elsewhere. Every kernel computes the same integer sums; the tests check each against a plain reference
//! on its own target (`scripts/test-kernels` runs them on AArch64 under QEMU and on WebAssembly
//! under Node).
//!
//! Layout of an `[rows, cols]` matrix (`rows` = output features) in packs and on GPUs
//! ([`QuantMatrix::values_bytes`], [`QuantMatrix::scales`]): row-major; in `q8` one `i8` per
//! weight; in `q4` two weights per byte, the first in the low nibble, stored as `q + 8` (q in
//! −8..=7); `scales[row * cols / 32 + group]`.
//!
//! In host memory the CPU kernels' layout, after llama.cpp's repacked 8-row blocks: rows in
//! tiles of [`TILE_ROWS`] (the last padded with zero rows), and per tile and group of 32 columns
//! the eight rows interleaved four weights at a time, each level stored unsigned (q8 + 128, q4
//! + 8), the tile's eight scales together. A kernel loads a tile's group once and meets it with
//! each activation row in one integer multiply-add per four columns, every row's sum in its own
//! vector lane, then scales the eight sums with one multiply-add.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What can go wrong when quantizing or assembling a matrix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument (a format name, a shape, a tensor's bytes) is invalid.
    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument {
        /// The argument.
        name: &'static str,
        /// Why, naming the tensor where there is one.
        message: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// Output rows stored together: the kernels compute a tile of this many rows at once, one row
/// per vector lane, so a group's scales and sums are handled for eight rows by one instruction.
pub const TILE_ROWS: usize = 8;

/// A quantized `[rows, cols]` weight matrix on the host, in the CPU kernels' tiled layout (see
/// the module documentation); [`QuantMatrix::values_bytes`] and [`QuantMatrix::scales`] give
/// the row-major layout that packs and GPUs use.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    format: QuantFormat,
    /// Tile by tile of [`TILE_ROWS`] rows, group by group: [`QuantFormat::tile_bytes`] bytes of
    /// biased levels each.
    values: Vec<u8>,
    /// `[tiles, groups per row, TILE_ROWS]`; 0 for the rows padding the last tile.
    scales: Vec<f32>,
}

impl QuantFormat {
    /// What the tiled layout adds to a level to store it unsigned.
    fn bias(self) -> i32 {
        match self {
            QuantFormat::Q8 => 128,
            QuantFormat::Q4 => 8,
        }
    }

    /// Bytes of one group of one tile of rows.
    fn tile_bytes(self) -> usize {
        match self {
            QuantFormat::Q8 => TILE_ROWS * GROUP,
            QuantFormat::Q4 => TILE_ROWS * GROUP / 2,
        }
    }

    /// Where element `j` of row `k` of a tile's group is: (byte, whether in the high nibble).
    /// q8: 32-byte vector `j / 4` holds each row's four elements `j / 4 * 4..` in lane `k`.
    /// q4: vector `j % 16 / 4` the same for the elements `j < 16` in the low nibbles and the
    /// elements `16 + ..` in the high nibbles.
    #[inline(always)]
    fn slot(self, k: usize, j: usize) -> (usize, bool) {
        match self {
            QuantFormat::Q8 => (j / 4 * 32 + k * 4 + j % 4, false),
            QuantFormat::Q4 => (j % 16 / 4 * 32 + k * 4 + j % 4, j >= 16),
        }
    }

    /// The stored (biased) level of element `j` of row `k` in a tile's group.
    #[inline(always)]
    fn stored(self, tile: &[u8], k: usize, j: usize) -> u8 {
        match self.slot(k, j) {
            (b, false) if self == QuantFormat::Q8 => tile[b],
            (b, false) => tile[b] & 0xF,
            (b, true) => tile[b] >> 4,
        }
    }
}

impl QuantMatrix {
    /// Quantizes a row-major `[rows, cols]` matrix. `cols` must be a multiple of [`GROUP`];
    /// `name` labels errors.
    pub fn quantize(w: &[f32], rows: usize, cols: usize, format: QuantFormat, name: &str) -> Result<Self> {
        Self::quantize_rounding_scales(w, rows, cols, format, name, |s| s)
    }

    /// [`QuantMatrix::quantize`] with each scale passed through `round` before the levels are
    /// computed from it (to store scales in a narrower type, e.g. f16, without the levels
    /// disagreeing with the stored scale).
    pub fn quantize_rounding_scales(w: &[f32], rows: usize, cols: usize, format: QuantFormat, name: &str, round: impl Fn(f32) -> f32) -> Result<Self> {
        if cols % GROUP != 0 {
            return Err(Error::InvalidArgument {
                name: "quant",
                message: format!("tensor `{name}`: the group size {GROUP} does not divide its input dimension {cols}"),
            });
        }
        if w.len() != rows * cols {
            return Err(Error::InvalidArgument { name: "quant", message: format!("tensor `{name}`: {} values for [{rows}, {cols}]", w.len()) });
        }
        let mut scales = Vec::with_capacity(rows * cols / GROUP);
        let max_level = format.max_level();
        let mut levels = vec![0i8; w.len()];
        for (chunk, q) in w.chunks_exact(GROUP).zip(levels.chunks_exact_mut(GROUP)) {
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if amax > 0.0 && amax.is_finite() { round(amax / max_level) } else { 0.0 };
            scales.push(scale);
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (dst, &v) in q.iter_mut().zip(chunk) {
                *dst = (v * inv).round().clamp(-max_level - 1.0, max_level) as i8;
            }
        }
        Ok(Self::from_levels(rows, cols, format, &levels, &scales))
    }

    /// A matrix from row-major levels (q4: −8..=7) and scales, in the tiled layout.
    fn from_levels(rows: usize, cols: usize, format: QuantFormat, levels: &[i8], row_scales: &[f32]) -> Self {
        let (gpr, tb) = (cols / GROUP, format.tile_bytes());
        let tiles = rows.div_ceil(TILE_ROWS);
        // Padding rows hold level 0.
        let pad = match format {
            QuantFormat::Q8 => 0x80,
            QuantFormat::Q4 => 0x88,
        };
        let mut values = vec![pad; tiles * gpr * tb];
        let mut scales = vec![0f32; tiles * gpr * TILE_ROWS];
        for (r, row) in levels.chunks_exact(cols).enumerate() {
            let (t, k) = (r / TILE_ROWS, r % TILE_ROWS);
            for (g, group) in row.chunks_exact(GROUP).enumerate() {
                let tg = t * gpr + g;
                scales[tg * TILE_ROWS + k] = row_scales[r * gpr + g];
                let tile = &mut values[tg * tb..(tg + 1) * tb];
                for (j, &l) in group.iter().enumerate() {
                    let stored = (i32::from(l) + format.bias()) as u8;
                    match format.slot(k, j) {
                        (b, false) if format == QuantFormat::Q8 => tile[b] = stored,
                        (b, false) => tile[b] = tile[b] & 0xF0 | stored,
                        (b, true) => tile[b] = tile[b] & 0x0F | stored << 4,
                    }
                }
            }
        }
        QuantMatrix { rows, cols, format, values, scales }
    }

    /// A matrix from stored parts: `values` as [`QuantMatrix::values_bytes`] writes them and one
    /// scale per group, row-major; sizes are checked (`name` labels errors).
    pub fn from_parts(rows: usize, cols: usize, format: QuantFormat, values: &[u8], scales: Vec<f32>, name: &str) -> Result<Self> {
        let bad = |m: String| Error::InvalidArgument { name: "quant", message: format!("tensor `{name}`: {m}") };
        if cols % GROUP != 0 {
            return Err(bad(format!("the group size {GROUP} does not divide its input dimension {cols}")));
        }
        let n = rows * cols;
        if scales.len() != n / GROUP {
            return Err(bad(format!("{} scales for {} groups", scales.len(), n / GROUP)));
        }
        let levels: Vec<i8> = match format {
            QuantFormat::Q8 if values.len() == n => values.iter().map(|&b| b as i8).collect(),
            QuantFormat::Q4 if values.len() == n / 2 => values.iter().flat_map(|&b| [(b & 0xF) as i8 - 8, (b >> 4) as i8 - 8]).collect(),
            _ => return Err(bad(format!("{} bytes of {format} values for {n} weights", values.len()))),
        };
        Ok(Self::from_levels(rows, cols, format, &levels, &scales))
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
        let full = self.rows / TILE_ROWS * TILE_ROWS;
        if full < self.rows {
            // The last tile is partial: lay its rows out again together with the new ones.
            let gpr = self.cols / GROUP;
            let mut levels = vec![0i8; (self.rows - full + other.rows) * self.cols];
            let mut scales = Vec::with_capacity(levels.len() / GROUP);
            for (i, row) in levels.chunks_exact_mut(self.cols).enumerate() {
                let (m, r) = if full + i < self.rows { (&*self, full + i) } else { (&other, full + i - self.rows) };
                m.row_levels(r, row);
                scales.extend((0..gpr).map(|g| m.scale(r, g)));
            }
            let tail = Self::from_levels(levels.len() / self.cols, self.cols, self.format, &levels, &scales);
            self.values.truncate(full / TILE_ROWS * gpr * self.format.tile_bytes());
            self.scales.truncate(full * gpr);
            self.values.extend(tail.values);
            self.scales.extend(tail.scales);
        } else {
            self.values.extend(other.values);
            self.scales.extend(other.scales);
        }
        self.rows += other.rows;
        Ok(())
    }

    /// The values, row-major, as little-endian bytes: q8 one `i8` per weight; q4 two weights per
    /// byte, the first in the low nibble, each stored as level + 8.
    pub fn values_bytes(&self) -> Vec<u8> {
        let mut row = vec![0i8; self.cols];
        let mut out = Vec::with_capacity(self.rows * self.cols / if self.format == QuantFormat::Q4 { 2 } else { 1 });
        for r in 0..self.rows {
            self.row_levels(r, &mut row);
            match self.format {
                QuantFormat::Q8 => out.extend(row.iter().map(|&l| l as u8)),
                QuantFormat::Q4 => out.extend(row.chunks_exact(2).map(|p| (p[0] + 8) as u8 | ((p[1] + 8) as u8) << 4)),
            }
        }
        out
    }

    /// One scale per group of [`GROUP`] weights, row-major.
    pub fn scales(&self) -> Vec<f32> {
        let gpr = self.cols / GROUP;
        (0..self.rows).flat_map(|r| (0..gpr).map(move |g| self.scale(r, g))).collect()
    }

    /// The scale of group `g` of row `r`.
    fn scale(&self, r: usize, g: usize) -> f32 {
        self.scales[((r / TILE_ROWS) * (self.cols / GROUP) + g) * TILE_ROWS + r % TILE_ROWS]
    }

    /// The levels of row `r` (q4: −8..=7), unscaled, into `out` (`cols` of them).
    fn row_levels(&self, r: usize, out: &mut [i8]) {
        let (gpr, tb, bias) = (self.cols / GROUP, self.format.tile_bytes(), self.format.bias());
        let (t, k) = (r / TILE_ROWS, r % TILE_ROWS);
        for (g, group) in out.chunks_exact_mut(GROUP).enumerate() {
            let tile = &self.values[(t * gpr + g) * tb..][..tb];
            for (j, l) in group.iter_mut().enumerate() {
                *l = (i32::from(self.format.stored(tile, k, j)) - bias) as i8;
            }
        }
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

    /// Bytes held (values and scales, with the padding of the last tile of rows).
    pub fn bytes(&self) -> usize {
        self.values.len() + self.scales.len() * 4
    }

    /// Expands row `r` into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let mut levels = vec![0i8; self.cols];
        self.row_levels(r, &mut levels);
        for (g, (dst, group)) in out.chunks_exact_mut(GROUP).zip(levels.chunks_exact(GROUP)).enumerate() {
            let s = self.scale(r, g);
            for (d, &l) in dst.iter_mut().zip(group) {
                *d = f32::from(l) * s;
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

    /// `y = x Wᵀ` for `n` input rows `x` (`[n, cols]`), giving `[n, rows]`, in parallel over
    /// tiles of output rows, with the fastest kernel this CPU has.
    ///
    /// Each activation row is quantized once per call to 8 bits per group of [`GROUP`]
    /// (symmetric, one f32 scale per group, like GGUF's Q8_0 activations); each group of weights
    /// then meets it in an integer dot product, scaled by the weight's and the activation's
    /// scale and summed in f32. Every weight is read from memory once per call and unpacked once
    /// per group of up to four activation rows, so decode is bound by the bytes of packed
    /// weights. A group of activations holding a NaN or an infinity makes its row's outputs NaN.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        self.matmul_with(Kernel::best(), x, n)
    }

    /// [`QuantMatrix::matmul`] with a given kernel. Every kernel computes the same integer sums;
    /// only the f32 rounding of their scaled sum differs. Panics if this CPU lacks the kernel's
    /// instructions.
    pub fn matmul_with(&self, kernel: Kernel, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "activation shape");
        assert!(kernel.available(), "this CPU cannot run the {kernel:?} kernel");
        let acts = QuantActs::new(x, n, self.cols, self.format);
        let (rows, tiles) = (self.rows, self.rows.div_ceil(TILE_ROWS));
        let mut y: Vec<f32> = Vec::with_capacity(n * rows);
        let dst = Output(y.as_mut_ptr());
        // Each task computes its tiles into its own small buffer (`[tiles, n, TILE_ROWS]`) and
        // writes them to their places in `y` (`[n, rows]`); no two tasks write the same place.
        let task = |buf: &mut Vec<f32>, t0: usize| {
            let count = TILES_PER_TASK.min(tiles - t0);
            buf.resize(count * n * TILE_ROWS, 0.0);
            kernel.tiles(self, &acts, t0, buf);
            for (dt, tile) in buf.chunks_exact(n * TILE_ROWS).enumerate() {
                let r0 = (t0 + dt) * TILE_ROWS;
                let len = TILE_ROWS.min(rows - r0);
                for (i, out) in tile.chunks_exact(TILE_ROWS).enumerate() {
                    // SAFETY: `i * rows + r0 + len ≤ n * rows`, within `y`'s capacity; rows
                    // `r0..r0 + len` belong to this task's tile only.
                    unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), dst.at(i * rows + r0), len) };
                }
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            (0..tiles).into_par_iter().step_by(TILES_PER_TASK).for_each_init(Vec::new, task);
        }
        #[cfg(target_arch = "wasm32")]
        {
            let mut buf = Vec::new();
            (0..tiles).step_by(TILES_PER_TASK).for_each(|t0| task(&mut buf, t0));
        }
        // SAFETY: the tasks wrote every one of the `n * rows` values.
        unsafe { y.set_len(n * rows) };
        y
    }
}

/// Where [`QuantMatrix::matmul_with`]'s tasks write their outputs.
struct Output(*mut f32);

// SAFETY: the tasks write disjoint places (see `matmul_with`).
unsafe impl Send for Output {}
// SAFETY: as above.
unsafe impl Sync for Output {}

impl Output {
    /// The address of value `k`.
    ///
    /// # Safety
    /// `k` must be within the allocation.
    unsafe fn at(&self, k: usize) -> *mut f32 {
        // SAFETY: the caller keeps `k` within the allocation.
        unsafe { self.0.add(k) }
    }
}

/// Tiles of output rows per parallel task.
const TILES_PER_TASK: usize = 4;

/// Activation rows quantized for one product: 8-bit levels, one f32 scale per group.
struct QuantActs {
    /// Rows.
    n: usize,
    /// `[n, cols]` levels in −127..=127, in order.
    levels: Vec<i8>,
    /// `[n, cols / GROUP]` scales (NaN for a group holding a non-finite value).
    scales: Vec<f32>,
    /// `[n, cols / GROUP]` of −bias · Σ levels: the weights are stored as level + bias
    /// ([`QuantFormat::bias`]), and this takes the bias back out of each group's sum.
    corrections: Vec<i32>,
}

impl QuantActs {
    fn new(x: &[f32], n: usize, cols: usize, format: QuantFormat) -> Self {
        let groups = n * cols / GROUP;
        let mut acts = QuantActs { n, levels: vec![0i8; n * cols], scales: vec![0f32; groups], corrections: vec![0i32; groups] };
        #[cfg(target_arch = "x86_64")]
        if Kernel::Avx2.available() {
            // SAFETY: the CPU has AVX2 (checked).
            unsafe { acts.fill_avx2(x, format) };
            return acts;
        }
        // SAFETY: the module loaded, so the engine has SIMD128.
        #[cfg(target_arch = "wasm32")]
        unsafe {
            acts.fill_simd128(x, format)
        };
        #[cfg(not(target_arch = "wasm32"))]
        acts.fill(x, format);
        acts
    }

    /// [`QuantActs::fill`] compiled for WebAssembly SIMD128.
    ///
    /// # Safety
    /// The engine must have SIMD128 (it does if the module loaded).
    #[cfg(target_arch = "wasm32")]
    #[target_feature(enable = "simd128")]
    unsafe fn fill_simd128(&mut self, x: &[f32], format: QuantFormat) {
        self.fill(x, format)
    }

    /// [`QuantActs::fill`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2(&mut self, x: &[f32], format: QuantFormat) {
        self.fill(x, format)
    }

    /// Quantizes `x` group by group.
    #[inline(always)]
    fn fill(&mut self, x: &[f32], format: QuantFormat) {
        let groups = x.as_chunks::<GROUP>().0.iter().zip(self.levels.as_chunks_mut::<GROUP>().0);
        for ((xg, lg), (s, c)) in groups.zip(self.scales.iter_mut().zip(&mut self.corrections)) {
            let (scale, sum) = quantize_group(xg, lg);
            *s = scale;
            *c = -format.bias() * sum;
        }
    }
}

/// One group of activations to levels in −127..=127 (round half away from zero; the kernels
/// rely on never seeing −128): returns the scale, max|x| / 127 (NaN if the group holds a NaN
/// or an infinity, its levels then 0), and the sum of the levels. Written lane-wise so that it
/// compiles to vector instructions.
#[inline(always)]
fn quantize_group(xg: &[f32; GROUP], lg: &mut [i8; GROUP]) -> (f32, i32) {
    let (mut amax, mut bad) = ([0f32; 8], [false; 8]);
    for c in xg.as_chunks::<8>().0 {
        for l in 0..8 {
            let a = c[l].abs();
            bad[l] |= !(a <= f32::MAX);
            amax[l] = if a > amax[l] { a } else { amax[l] };
        }
    }
    if bad.iter().any(|&b| b) {
        return (f32::NAN, 0);
    }
    let scale = amax.iter().fold(0f32, |m, &a| if a > m { a } else { m }) / 127.0;
    if scale <= 0.0 {
        return (scale, 0);
    }
    let mut sum = 0i32;
    for (l, &v) in lg.iter_mut().zip(xg) {
        let r = v / scale;
        // SAFETY: `v` and `scale > 0` are finite, so the clamped value is finite and in range.
        let q: i32 = unsafe { (r + 0.5f32.copysign(r)).clamp(-127.0, 127.0).to_int_unchecked() };
        sum += q;
        *l = q as i8;
    }
    (scale, sum)
}

/// A CPU kernel for the quantized products; [`Kernel::best`] picks one at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, on every target.
    Scalar,
    /// AVX2 and FMA: `vpmaddubsw` and `vpmaddwd` on 256-bit vectors.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// As `Avx2`, with AVX-VNNI's `vpdpbusd` (VEX-encoded: Intel's client CPUs from Alder Lake
    /// on, which have no AVX-512) for the multiply-adds.
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// As `Avx2`, with AVX-512 VNNI's `vpdpbusd` (on 256-bit vectors) for the multiply-adds.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AArch64's NEON (every AArch64 CPU): `smull`/`smlal` and pairwise adds on 128-bit vectors.
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// WebAssembly SIMD128: `i16x8.extmul_*_i8x16` and pairwise adds on 128-bit vectors. Every
    /// browser with WebGPU has it; an engine without it would refuse the whole module.
    #[cfg(target_arch = "wasm32")]
    Simd128,
    /// SIMD128 with relaxed SIMD's `i32x4.relaxed_dot_i8x16_i7x16_add_s` for q4 weights (four
    /// products summed into a 32-bit lane in one instruction; the stored levels 0..15 are the
    /// 7-bit operand, so every engine computes the same sums). Only in a module built with the
    /// `relaxed-simd` feature, which loads only where the engine has relaxed SIMD.
    #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
    RelaxedSimd,
}

impl Kernel {
    /// Every kernel, this CPU's or not.
    const ALL: &[Kernel] = &[
        Kernel::Scalar,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2,
        #[cfg(target_arch = "x86_64")]
        Kernel::AvxVnni,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni,
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon,
        #[cfg(target_arch = "wasm32")]
        Kernel::Simd128,
        #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
        Kernel::RelaxedSimd,
    ];

    /// Whether this CPU has the kernel's instructions.
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => Kernel::Avx2.available() && is_x86_feature_detected!("avxvnni"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                Kernel::Avx2.available()
                    && is_x86_feature_detected!("avx512vnni")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bw")
            }
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            // A module holding SIMD128 instructions only loads where the engine has them.
            #[cfg(target_arch = "wasm32")]
            Kernel::Simd128 => true,
            // Likewise for relaxed SIMD.
            #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
            Kernel::RelaxedSimd => true,
        }
    }

    /// The kernels this CPU can run.
    pub fn available_kernels() -> Vec<Kernel> {
        Kernel::ALL.iter().copied().filter(|k| k.available()).collect()
    }

    /// The fastest kernel this CPU has (detected once). The environment variable
    /// `GENPRM_CPU_KERNEL` (`scalar`, `avx2`, `avxvnni`, `avx512vnni`, `neon`, `simd128`) picks a
    /// slower one, for comparisons.
    pub fn best() -> Kernel {
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

    /// Tiles `t0..` of output rows of `m` (as many as `out` holds, `[tiles, acts.n, TILE_ROWS]`)
    /// against every activation row.
    fn tiles(self, m: &QuantMatrix, acts: &QuantActs, t0: usize, out: &mut [f32]) {
        match self {
            // SAFETY: the scalar kernel uses no special instructions.
            Kernel::Scalar => unsafe { row_tiles::<arch::scalar::Scalar>(m, acts, t0, out) },
            // SAFETY: `matmul_with` checked that the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { arch::x86::tiles_avx2(m, acts, t0, out) },
            // SAFETY: `matmul_with` checked that the CPU has AVX2, FMA and AVX-VNNI.
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => unsafe { arch::x86::tiles_avx_vnni(m, acts, t0, out) },
            // SAFETY: `matmul_with` checked that the CPU has AVX2, FMA and AVX-512 VNNI, VL, BW.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { arch::x86::tiles_vnni(m, acts, t0, out) },
            // SAFETY: `matmul_with` checked that the CPU has NEON.
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => unsafe { arch::neon::tiles_neon(m, acts, t0, out) },
            // SAFETY: the module loaded, so the engine has SIMD128.
            #[cfg(target_arch = "wasm32")]
            Kernel::Simd128 => unsafe { arch::wasm::tiles_simd128(m, acts, t0, out) },
            // SAFETY: the module (built with relaxed SIMD) loaded, so the engine has it.
            #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
            Kernel::RelaxedSimd => unsafe { arch::wasm::tiles_relaxed_simd(m, acts, t0, out) },
        }
    }
}

/// One instruction set's products of a tile of [`TILE_ROWS`] weight rows with one group of an
/// activation row, each row's sum in its own lane. The driver ([`row_tiles`]) is shared by all.
trait TileDot {
    /// A tile's group of q4 weights, unpacked.
    type W4: Copy;
    /// A tile's group of q8 weights, unpacked.
    type W8: Copy;
    /// Eight i32 sums.
    type Sums: Copy;
    /// Eight running f32 sums.
    type Acc: Copy;
    /// Zero sums.
    unsafe fn zero() -> Self::Acc;
    /// One group of a tile of q4 weights (128 bytes, stored as in [`QuantFormat::slot`]).
    unsafe fn load_q4(tile: &[u8; TILE_ROWS * GROUP / 2]) -> Self::W4;
    /// One group of a tile of q8 weights (256 bytes).
    unsafe fn load_q8(tile: &[u8; TILE_ROWS * GROUP]) -> Self::W8;
    /// Each row's `correction + Σ stored · x`, q4 weights (`correction` = −8 · Σ x).
    unsafe fn dot_q4(w: &Self::W4, x: &[i8; GROUP], correction: i32) -> Self::Sums;
    /// The same for q8 weights (`correction` = −128 · Σ x).
    unsafe fn dot_q8(w: &Self::W8, x: &[i8; GROUP], correction: i32) -> Self::Sums;
    /// `acc + sums · weight scales · activation scale`, lane by lane.
    unsafe fn fma(acc: Self::Acc, sums: Self::Sums, ws: &[f32; TILE_ROWS], xs: f32) -> Self::Acc;
    /// Writes the eight sums.
    unsafe fn store(acc: Self::Acc, out: &mut [f32]);
    /// Asks for the cache line at `p` (which may lie past the weights: nothing is read).
    #[inline(always)]
    unsafe fn prefetch(_p: *const u8) {}
}

/// The driver: tiles `t0..` of `m` against every activation row, up to four rows per pass over
/// the tile's weights (`out` is `[tiles, n, TILE_ROWS]`). Four rows measured faster than eight
/// on AVX-512 VNNI, where eight rows' sums and a tile (16 vectors) crowd the 32 registers.
///
/// # Safety
/// The CPU must have `I`'s instructions.
#[inline(always)]
unsafe fn row_tiles<I: TileDot>(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
    let n = a.n;
    for (dt, o) in out.chunks_exact_mut(n * TILE_ROWS).enumerate() {
        let mut i0 = 0;
        while i0 < n {
            let nb = match n - i0 {
                r if r >= 4 => 4,
                r if r >= 2 => 2,
                _ => 1,
            };
            let o = &mut o[i0 * TILE_ROWS..(i0 + nb) * TILE_ROWS];
            // SAFETY: the caller guarantees `I`'s instructions.
            unsafe {
                match nb {
                    4 => tile::<I, 4>(m, a, t0 + dt, i0, o),
                    2 => tile::<I, 2>(m, a, t0 + dt, i0, o),
                    _ => tile::<I, 1>(m, a, t0 + dt, i0, o),
                }
            }
            i0 += nb;
        }
    }
}

/// Tile `t` of `m` against activation rows `i0..i0 + NB`, into `out` (`[NB, TILE_ROWS]`).
///
/// # Safety
/// The CPU must have `I`'s instructions.
#[inline(always)]
unsafe fn tile<I: TileDot, const NB: usize>(m: &QuantMatrix, a: &QuantActs, t: usize, i0: usize, out: &mut [f32]) {
    let (cols, gpr) = (m.cols, m.cols / GROUP);
    let tb = m.format.tile_bytes();
    let values = &m.values[t * gpr * tb..(t + 1) * gpr * tb];
    let ws = m.scales[t * gpr * TILE_ROWS..(t + 1) * gpr * TILE_ROWS].as_chunks::<TILE_ROWS>().0;
    let x: [&[[i8; GROUP]]; NB] = std::array::from_fn(|u| a.levels[(i0 + u) * cols..(i0 + u + 1) * cols].as_chunks().0);
    let xs: [&[f32]; NB] = std::array::from_fn(|u| &a.scales[(i0 + u) * gpr..(i0 + u + 1) * gpr]);
    let corr: [&[i32]; NB] = std::array::from_fn(|u| &a.corrections[(i0 + u) * gpr..(i0 + u + 1) * gpr]);
    // SAFETY (all calls below): the caller guarantees `I`'s instructions.
    let mut acc = [unsafe { I::zero() }; NB];
    match m.format {
        QuantFormat::Q8 => {
            for (g, (w, s)) in values.as_chunks::<{ TILE_ROWS * GROUP }>().0.iter().zip(ws).enumerate() {
                for line in (0..TILE_ROWS * GROUP).step_by(64) {
                    unsafe { I::prefetch(w.as_ptr().wrapping_add(PREFETCH_AHEAD + line)) };
                }
                let w = unsafe { I::load_q8(w) };
                for u in 0..NB {
                    acc[u] = unsafe { I::fma(acc[u], I::dot_q8(&w, &x[u][g], corr[u][g]), s, xs[u][g]) };
                }
            }
        }
        QuantFormat::Q4 => {
            for (g, (w, s)) in values.as_chunks::<{ TILE_ROWS * GROUP / 2 }>().0.iter().zip(ws).enumerate() {
                for line in (0..TILE_ROWS * GROUP / 2).step_by(64) {
                    unsafe { I::prefetch(w.as_ptr().wrapping_add(PREFETCH_AHEAD + line)) };
                }
                let w = unsafe { I::load_q4(w) };
                for u in 0..NB {
                    acc[u] = unsafe { I::fma(acc[u], I::dot_q4(&w, &x[u][g], corr[u][g]), s, xs[u][g]) };
                }
            }
        }
    }
    for (u, o) in out.chunks_exact_mut(TILE_ROWS).enumerate() {
        unsafe { I::store(acc[u], o) };
    }
}

/// How far ahead of the group being multiplied the kernels ask for weights: decoding eight rows
/// at the 1.5B shape ran ~10% faster with 4–8 KiB than without (the hardware prefetcher alone
/// falls behind while the cores are busy multiplying).
const PREFETCH_AHEAD: usize = 4096;

mod arch;
#[cfg(test)]
mod tests;
