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
            Kernel::Scalar => unsafe { row_tiles::<Scalar>(m, acts, t0, out) },
            // SAFETY: `matmul_with` checked that the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::tiles_avx2(m, acts, t0, out) },
            // SAFETY: `matmul_with` checked that the CPU has AVX2, FMA and AVX-VNNI.
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => unsafe { x86::tiles_avx_vnni(m, acts, t0, out) },
            // SAFETY: `matmul_with` checked that the CPU has AVX2, FMA and AVX-512 VNNI, VL, BW.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { x86::tiles_vnni(m, acts, t0, out) },
            // SAFETY: `matmul_with` checked that the CPU has NEON.
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => unsafe { neon::tiles_neon(m, acts, t0, out) },
            // SAFETY: the module loaded, so the engine has SIMD128.
            #[cfg(target_arch = "wasm32")]
            Kernel::Simd128 => unsafe { simd128::tiles_simd128(m, acts, t0, out) },
            // SAFETY: the module (built with relaxed SIMD) loaded, so the engine has it.
            #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
            Kernel::RelaxedSimd => unsafe { simd128::tiles_relaxed_simd(m, acts, t0, out) },
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

/// The portable kernel.
struct Scalar;

impl Scalar {
    /// Each row's `correction + Σ w · x` in integers.
    #[inline(always)]
    fn dot(w: &[[u8; GROUP]; TILE_ROWS], x: &[i8; GROUP], correction: i32) -> [i32; TILE_ROWS] {
        w.map(|row| correction + row.iter().zip(x).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum::<i32>())
    }
}

impl Scalar {
    /// A tile's group (`format`'s layout) as eight rows of 32 stored levels, in order.
    #[inline(always)]
    fn unpack(format: QuantFormat, tile: &[u8]) -> [[u8; GROUP]; TILE_ROWS] {
        std::array::from_fn(|k| std::array::from_fn(|j| format.stored(tile, k, j)))
    }
}

impl TileDot for Scalar {
    type W4 = [[u8; GROUP]; TILE_ROWS];
    type W8 = [[u8; GROUP]; TILE_ROWS];
    type Sums = [i32; TILE_ROWS];
    type Acc = [f32; TILE_ROWS];
    #[inline(always)]
    unsafe fn zero() -> Self::Acc {
        [0.0; TILE_ROWS]
    }
    #[inline(always)]
    unsafe fn load_q4(tile: &[u8; TILE_ROWS * GROUP / 2]) -> Self::W4 {
        Self::unpack(QuantFormat::Q4, tile)
    }
    #[inline(always)]
    unsafe fn load_q8(tile: &[u8; TILE_ROWS * GROUP]) -> Self::W8 {
        Self::unpack(QuantFormat::Q8, tile)
    }
    #[inline(always)]
    unsafe fn dot_q4(w: &Self::W4, x: &[i8; GROUP], correction: i32) -> Self::Sums {
        Self::dot(w, x, correction)
    }
    #[inline(always)]
    unsafe fn dot_q8(w: &Self::W8, x: &[i8; GROUP], correction: i32) -> Self::Sums {
        Self::dot(w, x, correction)
    }
    #[inline(always)]
    unsafe fn fma(mut acc: Self::Acc, sums: Self::Sums, ws: &[f32; TILE_ROWS], xs: f32) -> Self::Acc {
        for k in 0..TILE_ROWS {
            acc[k] += sums[k] as f32 * (ws[k] * xs);
        }
        acc
    }
    #[inline(always)]
    unsafe fn store(acc: Self::Acc, out: &mut [f32]) {
        out.copy_from_slice(&acc);
    }
}

/// The x86-64 kernels: AVX2 (+ FMA), optionally with AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{GROUP, QuantActs, QuantMatrix, TILE_ROWS, TileDot, row_tiles};

    /// The driver with AVX2 multiply-adds.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tiles_avx2(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
        // SAFETY: this function only runs where the CPU has AVX2 and FMA.
        unsafe { row_tiles::<Avx2<false, false>>(m, a, t0, out) }
    }

    /// The driver with AVX-VNNI multiply-adds.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and AVX-VNNI.
    #[target_feature(enable = "avx2,fma,avxvnni")]
    pub(super) unsafe fn tiles_avx_vnni(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
        // SAFETY: this function only runs where the CPU has all of them.
        unsafe { row_tiles::<Avx2<true, true>>(m, a, t0, out) }
    }

    /// The driver with VNNI multiply-adds.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and AVX-512 VNNI, VL and BW.
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl,avx512bw")]
    pub(super) unsafe fn tiles_vnni(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
        // SAFETY: this function only runs where the CPU has all of them.
        unsafe { row_tiles::<Avx2<true, false>>(m, a, t0, out) }
    }

    /// 256-bit kernels, one weight row per 32-bit lane; `VNNI` selects `vpdpbusd` over
    /// `vpmaddubsw` + `vpmaddwd`, `VEX` its AVX-VNNI encoding over AVX-512 VNNI's. Every method
    /// is inlined into one of the `#[target_feature]` drivers above, which are only called where
    /// the CPU has the instructions; that is the safety contract of each `unsafe` block.
    pub(super) struct Avx2<const VNNI: bool, const VEX: bool>;

    impl<const VNNI: bool, const VEX: bool> Avx2<VNNI, VEX> {
        /// `acc` plus eight i32 lanes, each the sum of four products of an unsigned byte of `u`
        /// and a signed byte of `x`. Without VNNI the pairs are summed in i16 first, so `u`
        /// must stay ≤ 128 (2 · 128 · 127 < 32767).
        #[inline(always)]
        unsafe fn dot(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
            // SAFETY: see the type's documentation.
            unsafe {
                if VNNI && VEX {
                    _mm256_dpbusd_avx_epi32(acc, u, x)
                } else if VNNI {
                    _mm256_dpbusd_epi32(acc, u, x)
                } else {
                    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)))
                }
            }
        }

        /// `correction + Σ stored · x` for each row, the tile's stored levels unsigned
        /// (`stored[c]` holding every row's levels `4c..4c + 4`).
        #[inline(always)]
        unsafe fn stored_dot(stored: &[__m256i], x: &[i8; GROUP], correction: i32) -> __m256i {
            // SAFETY: see the type's documentation.
            unsafe {
                let mut d = _mm256_set1_epi32(correction);
                for (c, &w) in stored[..8].iter().enumerate() {
                    d = Self::dot(d, w, Self::broadcast(x, c));
                }
                d
            }
        }

        /// Four activation levels `4c..4c + 4` in every lane.
        #[inline(always)]
        unsafe fn broadcast(x: &[i8; GROUP], c: usize) -> __m256i {
            // SAFETY: `c < 8`, so four readable bytes.
            unsafe { _mm256_set1_epi32(x.as_ptr().add(4 * c).cast::<i32>().read_unaligned()) }
        }
    }

    impl<const VNNI: bool, const VEX: bool> TileDot for Avx2<VNNI, VEX> {
        /// Vector `c` holds every row's stored levels `4c..4c + 4`.
        type W4 = [__m256i; 8];
        /// With VNNI as `W4`. Without: each row's |level| (vectors 0..8) and level (8..16),
        /// for the sign trick.
        type W8 = [__m256i; 16];
        type Sums = __m256i;
        type Acc = __m256;

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            // SAFETY: see the type's documentation.
            unsafe { _mm256_setzero_ps() }
        }

        #[inline(always)]
        unsafe fn load_q4(tile: &[u8; TILE_ROWS * GROUP / 2]) -> Self::W4 {
            // SAFETY: 128 readable bytes; instructions as documented.
            unsafe {
                let mask = _mm256_set1_epi8(0x0F);
                let mut w = [_mm256_setzero_si256(); 8];
                for v in 0..4 {
                    let bytes = _mm256_loadu_si256(tile.as_ptr().add(32 * v).cast());
                    w[v] = _mm256_and_si256(bytes, mask);
                    w[v + 4] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
                }
                w
            }
        }

        #[inline(always)]
        unsafe fn load_q8(tile: &[u8; TILE_ROWS * GROUP]) -> Self::W8 {
            // SAFETY: 256 readable bytes; instructions as documented.
            unsafe {
                let mut w = [_mm256_setzero_si256(); 16];
                for c in 0..8 {
                    let stored = _mm256_loadu_si256(tile.as_ptr().add(32 * c).cast());
                    if VNNI {
                        w[c] = stored;
                    } else {
                        let level = _mm256_xor_si256(stored, _mm256_set1_epi8(-128));
                        // |−128| reads as 128 unsigned.
                        w[c] = _mm256_sign_epi8(level, level);
                        w[c + 8] = level;
                    }
                }
                w
            }
        }

        #[inline(always)]
        unsafe fn dot_q4(w: &Self::W4, x: &[i8; GROUP], correction: i32) -> __m256i {
            // SAFETY: instructions as documented; stored q4 levels are ≤ 15.
            unsafe {
                if VNNI {
                    return Self::stored_dot(w, x, correction);
                }
                // Without VNNI the whole group is summed in i16 lanes before one widening
                // `vpmaddwd` (two instructions per four columns instead of three): each i16
                // lane sums 16 products of a stored level ≤ 15 and |x| ≤ 127, at most
                // 16 · 15 · 127 = 30,480 < 32,767, so neither the pairs nor the sum saturate.
                let mut s = _mm256_setzero_si256();
                for (c, &wc) in w.iter().enumerate() {
                    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(wc, Self::broadcast(x, c)));
                }
                _mm256_add_epi32(_mm256_set1_epi32(correction), _mm256_madd_epi16(s, _mm256_set1_epi16(1)))
            }
        }

        #[inline(always)]
        unsafe fn dot_q8(w: &Self::W8, x: &[i8; GROUP], correction: i32) -> __m256i {
            // SAFETY: instructions as documented. VNNI multiplies the stored (biased, unsigned)
            // levels; the others the sign trick: |w| · (x · sign w), never above 128 · 127.
            unsafe {
                if VNNI {
                    Self::stored_dot(w, x, correction)
                } else {
                    let mut d = _mm256_setzero_si256();
                    for c in 0..8 {
                        d = Self::dot(d, w[c], _mm256_sign_epi8(Self::broadcast(x, c), w[c + 8]));
                    }
                    d
                }
            }
        }

        #[inline(always)]
        unsafe fn fma(acc: __m256, sums: __m256i, ws: &[f32; TILE_ROWS], xs: f32) -> __m256 {
            // SAFETY: eight readable scales; instructions as documented.
            unsafe { _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(_mm256_loadu_ps(ws.as_ptr()), _mm256_set1_ps(xs)), acc) }
        }

        #[inline(always)]
        unsafe fn prefetch(p: *const u8) {
            // SAFETY: a prefetch reads nothing and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
        }

        #[inline(always)]
        unsafe fn store(acc: __m256, out: &mut [f32]) {
            assert_eq!(out.len(), TILE_ROWS);
            // SAFETY: eight writable floats (checked).
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) }
        }
    }
}

/// The AArch64 kernel: NEON, which every AArch64 CPU has.
#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::{GROUP, QuantActs, QuantMatrix, TILE_ROWS, TileDot, row_tiles};

    /// The driver with NEON multiply-adds.
    ///
    /// # Safety
    /// The CPU must have NEON.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn tiles_neon(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
        // SAFETY: this function only runs where the CPU has NEON.
        unsafe { row_tiles::<Neon>(m, a, t0, out) }
    }

    /// 128-bit kernels: a tile's 32-byte vector of four columns (see [`super::QuantFormat::slot`])
    /// is two NEON vectors, rows 0..4 and rows 4..8, each row's four bytes in one 32-bit lane.
    /// Bytes are multiplied as signed: q4 stored levels (0..=15) as they are, q8 levels with
    /// their bias taken off when loaded (so the q8 correction is not needed). Every method is
    /// inlined into [`tiles_neon`]; that is the safety contract of each `unsafe` block. Plain
    /// loops, as in the SIMD128 kernel, so nothing depends on the compiler inlining a generic
    /// helper.
    pub(super) struct Neon;

    impl Neon {
        /// Four activation levels `4c..4c + 4` in every 32-bit lane.
        #[inline(always)]
        unsafe fn broadcast(x: &[i8; GROUP], c: usize) -> int8x16_t {
            // SAFETY: `c < 8`, so four readable bytes.
            unsafe { vreinterpretq_s8_s32(vdupq_n_s32(x.as_ptr().add(4 * c).cast::<i32>().read_unaligned())) }
        }

        /// Each row's sum of four adjacent i32 lanes of `p` (rows 0..2 of `p[0]`, 2..4 of
        /// `p[1]`, …, two lanes per row), as rows 0..4 and 4..8.
        #[inline(always)]
        unsafe fn rows(p: [int32x4_t; 4]) -> [int32x4_t; 2] {
            // SAFETY: see the type's documentation.
            unsafe { [vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3])] }
        }

        /// The 16 bytes at `bytes[at..]`.
        #[inline(always)]
        unsafe fn load(bytes: &[u8], at: usize) -> int8x16_t {
            assert!(at + 16 <= bytes.len());
            // SAFETY: 16 readable bytes (checked).
            unsafe { vld1q_s8(bytes.as_ptr().add(at).cast()) }
        }
    }

    impl TileDot for Neon {
        /// Column quad `c`'s stored levels, rows 0..4 and 4..8.
        type W4 = [[int8x16_t; 2]; 8];
        /// Column quad `c`'s signed levels, rows 0..4 and 4..8.
        type W8 = [[int8x16_t; 2]; 8];
        /// Rows 0..4 and 4..8.
        type Sums = [int32x4_t; 2];
        type Acc = [float32x4_t; 2];

        #[inline(always)]
        unsafe fn zero() -> Self::Acc {
            // SAFETY: see the type's documentation.
            unsafe { [vdupq_n_f32(0.0); 2] }
        }

        #[inline(always)]
        unsafe fn load_q4(tile: &[u8; TILE_ROWS * GROUP / 2]) -> Self::W4 {
            // SAFETY: 128 readable bytes; instructions as documented.
            unsafe {
                let mask = vdupq_n_s8(0x0F);
                let mut w = [[mask; 2]; 8];
                for v in 0..4 {
                    for h in 0..2 {
                        let b = Self::load(tile, 32 * v + 16 * h);
                        w[v][h] = vandq_s8(b, mask);
                        w[v + 4][h] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(vreinterpretq_u8_s8(b)));
                    }
                }
                w
            }
        }

        #[inline(always)]
        unsafe fn load_q8(tile: &[u8; TILE_ROWS * GROUP]) -> Self::W8 {
            // SAFETY: 256 readable bytes; instructions as documented.
            unsafe {
                let bias = vdupq_n_s8(-128);
                let mut w = [[bias; 2]; 8];
                for (c, wc) in w.iter_mut().enumerate() {
                    for (h, half) in wc.iter_mut().enumerate() {
                        *half = veorq_s8(Self::load(tile, 32 * c + 16 * h), bias);
                    }
                }
                w
            }
        }

        #[inline(always)]
        unsafe fn dot_q4(w: &Self::W4, x: &[i8; GROUP], correction: i32) -> Self::Sums {
            // SAFETY: instructions as documented. Each i16 lane sums eight products of a stored
            // level ≤ 15 and |x| ≤ 127: at most 8 · 15 · 127 = 15,240, no overflow.
            unsafe {
                let mut s = [vdupq_n_s16(0); 4];
                for (c, [lo, hi]) in w.iter().enumerate() {
                    let xb = Self::broadcast(x, c);
                    s[0] = vmlal_s8(s[0], vget_low_s8(*lo), vget_low_s8(xb));
                    s[1] = vmlal_high_s8(s[1], *lo, xb);
                    s[2] = vmlal_s8(s[2], vget_low_s8(*hi), vget_low_s8(xb));
                    s[3] = vmlal_high_s8(s[3], *hi, xb);
                }
                let corr = vdupq_n_s32(correction);
                let [lo, hi] = Self::rows([vpaddlq_s16(s[0]), vpaddlq_s16(s[1]), vpaddlq_s16(s[2]), vpaddlq_s16(s[3])]);
                [vaddq_s32(lo, corr), vaddq_s32(hi, corr)]
            }
        }

        #[inline(always)]
        unsafe fn dot_q8(w: &Self::W8, x: &[i8; GROUP], _correction: i32) -> Self::Sums {
            // SAFETY: instructions as documented. Two column quads' products share an i16 lane
            // before widening: |−128 · 127| · 2 = 32,512 ≤ 32,767.
            unsafe {
                let mut s = [vdupq_n_s32(0); 4];
                for c in (0..8).step_by(2) {
                    let (x0, x1) = (Self::broadcast(x, c), Self::broadcast(x, c + 1));
                    for (h, (a, b)) in w[c].iter().zip(&w[c + 1]).enumerate() {
                        let low = vmlal_s8(vmull_s8(vget_low_s8(*a), vget_low_s8(x0)), vget_low_s8(*b), vget_low_s8(x1));
                        let high = vmlal_high_s8(vmull_high_s8(*a, x0), *b, x1);
                        s[2 * h] = vpadalq_s16(s[2 * h], low);
                        s[2 * h + 1] = vpadalq_s16(s[2 * h + 1], high);
                    }
                }
                Self::rows(s)
            }
        }

        #[inline(always)]
        unsafe fn fma(acc: Self::Acc, sums: Self::Sums, ws: &[f32; TILE_ROWS], xs: f32) -> Self::Acc {
            // SAFETY: eight readable scales; instructions as documented.
            unsafe {
                let s = [vmulq_n_f32(vld1q_f32(ws.as_ptr()), xs), vmulq_n_f32(vld1q_f32(ws.as_ptr().add(4)), xs)];
                [vfmaq_f32(acc[0], vcvtq_f32_s32(sums[0]), s[0]), vfmaq_f32(acc[1], vcvtq_f32_s32(sums[1]), s[1])]
            }
        }

        #[inline(always)]
        unsafe fn store(acc: Self::Acc, out: &mut [f32]) {
            assert_eq!(out.len(), TILE_ROWS);
            // SAFETY: eight writable floats (checked).
            unsafe {
                vst1q_f32(out.as_mut_ptr(), acc[0]);
                vst1q_f32(out.as_mut_ptr().add(4), acc[1]);
            }
        }
    }
}

/// The WebAssembly kernel: SIMD128.
#[cfg(target_arch = "wasm32")]
mod simd128 {
    use std::arch::wasm32::*;

    use super::{GROUP, QuantActs, QuantMatrix, TILE_ROWS, TileDot, row_tiles};

    /// The driver with SIMD128 multiply-adds.
    ///
    /// # Safety
    /// The engine must have SIMD128 (it does if the module loaded).
    #[target_feature(enable = "simd128")]
    pub(super) unsafe fn tiles_simd128(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
        // SAFETY: this function only runs where the engine has SIMD128.
        unsafe { row_tiles::<Simd128>(m, a, t0, out) }
    }

    /// The driver with relaxed SIMD's dot products for q4 weights.
    ///
    /// # Safety
    /// The engine must have SIMD128 and relaxed SIMD (it does if the module loaded).
    #[cfg(feature = "relaxed-simd")]
    #[target_feature(enable = "simd128,relaxed-simd")]
    pub(super) unsafe fn tiles_relaxed_simd(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
        // SAFETY: this function only runs where the engine has SIMD128 and relaxed SIMD.
        unsafe { row_tiles::<RelaxedSimd>(m, a, t0, out) }
    }

    /// [`Simd128`] with q4's products in `i32x4.relaxed_dot_i8x16_i7x16_add_s`: activation
    /// bytes times stored levels (0..15, the instruction's 7-bit operand, whose result every
    /// engine defines the same way), four adjacent products summed into each row's 32-bit lane
    /// and added to it: two instructions per column quad instead of eight. q8's levels are
    /// signed 8-bit, outside the 7-bit operand's range, so q8 runs as [`Simd128`].
    #[cfg(feature = "relaxed-simd")]
    pub(super) struct RelaxedSimd;

    #[cfg(feature = "relaxed-simd")]
    impl TileDot for RelaxedSimd {
        type W4 = <Simd128 as TileDot>::W4;
        type W8 = <Simd128 as TileDot>::W8;
        type Sums = <Simd128 as TileDot>::Sums;
        type Acc = <Simd128 as TileDot>::Acc;

        #[inline(always)]
        unsafe fn zero() -> Self::Acc {
            unsafe { Simd128::zero() }
        }

        #[inline(always)]
        unsafe fn load_q4(tile: &[u8; TILE_ROWS * GROUP / 2]) -> Self::W4 {
            unsafe { Simd128::load_q4(tile) }
        }

        #[inline(always)]
        unsafe fn load_q8(tile: &[u8; TILE_ROWS * GROUP]) -> Self::W8 {
            unsafe { Simd128::load_q8(tile) }
        }

        #[inline(always)]
        unsafe fn dot_q4(w: &Self::W4, x: &[i8; GROUP], correction: i32) -> Self::Sums {
            // Each instruction adds four products of |x| ≤ 127 and a level ≤ 15 to a lane (its
            // pairwise 16-bit step holds at most 2 · 127 · 15 = 3,810).
            let corr = i32x4_splat(correction);
            let mut s = [corr, corr];
            for (c, [lo, hi]) in w.iter().enumerate() {
                let xb = Simd128::broadcast(x, c);
                s[0] = i32x4_relaxed_dot_i8x16_i7x16_add(xb, *lo, s[0]);
                s[1] = i32x4_relaxed_dot_i8x16_i7x16_add(xb, *hi, s[1]);
            }
            s
        }

        #[inline(always)]
        unsafe fn dot_q8(w: &Self::W8, x: &[i8; GROUP], correction: i32) -> Self::Sums {
            unsafe { Simd128::dot_q8(w, x, correction) }
        }

        #[inline(always)]
        unsafe fn fma(acc: Self::Acc, sums: Self::Sums, ws: &[f32; TILE_ROWS], xs: f32) -> Self::Acc {
            unsafe { Simd128::fma(acc, sums, ws, xs) }
        }

        #[inline(always)]
        unsafe fn store(acc: Self::Acc, out: &mut [f32]) {
            unsafe { Simd128::store(acc, out) }
        }
    }

    /// 128-bit kernels laid out as [`super::neon::Neon`]'s: a tile's 32-byte vector of four
    /// columns is two vectors, rows 0..4 and rows 4..8, each row's four bytes in one 32-bit
    /// lane; q4 stored levels multiplied as they are, q8 levels with the bias taken off when
    /// loaded. Every method is inlined into [`tiles_simd128`], and written with plain loops
    /// only: a generic helper such as `array::map` that the compiler leaves out of line is
    /// compiled without SIMD128, and every vector operation in it becomes a call (q8 ran 10×
    /// slower so).
    pub(super) struct Simd128;

    impl Simd128 {
        /// Four activation levels `4c..4c + 4` in every 32-bit lane.
        #[inline(always)]
        fn broadcast(x: &[i8; GROUP], c: usize) -> v128 {
            i32x4_splat(i32::from_le_bytes([x[4 * c] as u8, x[4 * c + 1] as u8, x[4 * c + 2] as u8, x[4 * c + 3] as u8]))
        }

        /// Each row's sum of two adjacent i32 lanes: `p[0]` holds rows 0 and 1, `p[1]` rows 2
        /// and 3, …; returns rows 0..4 and 4..8.
        #[inline(always)]
        fn rows(p: [v128; 4]) -> [v128; 2] {
            let pair = |a: v128, b: v128| i32x4_add(i32x4_shuffle::<0, 2, 4, 6>(a, b), i32x4_shuffle::<1, 3, 5, 7>(a, b));
            [pair(p[0], p[1]), pair(p[2], p[3])]
        }

        /// The 16 bytes at `bytes[at..]`.
        #[inline(always)]
        fn load(bytes: &[u8], at: usize) -> v128 {
            assert!(at + 16 <= bytes.len());
            // SAFETY: 16 readable bytes (checked); `read_unaligned` needs no alignment.
            unsafe { bytes.as_ptr().add(at).cast::<v128>().read_unaligned() }
        }
    }

    impl TileDot for Simd128 {
        /// Column quad `c`'s stored levels, rows 0..4 and 4..8.
        type W4 = [[v128; 2]; 8];
        /// Column quad `c`'s signed levels, rows 0..4 and 4..8.
        type W8 = [[v128; 2]; 8];
        /// Rows 0..4 and 4..8.
        type Sums = [v128; 2];
        type Acc = [v128; 2];

        #[inline(always)]
        unsafe fn zero() -> Self::Acc {
            [f32x4_splat(0.0); 2]
        }

        #[inline(always)]
        unsafe fn load_q4(tile: &[u8; TILE_ROWS * GROUP / 2]) -> Self::W4 {
            let mask = u8x16_splat(0x0F);
            let mut w = [[mask; 2]; 8];
            for v in 0..4 {
                for h in 0..2 {
                    let b = Self::load(tile, 32 * v + 16 * h);
                    w[v][h] = v128_and(b, mask);
                    w[v + 4][h] = u8x16_shr(b, 4);
                }
            }
            w
        }

        #[inline(always)]
        unsafe fn load_q8(tile: &[u8; TILE_ROWS * GROUP]) -> Self::W8 {
            let bias = u8x16_splat(0x80);
            let mut w = [[bias; 2]; 8];
            for (c, wc) in w.iter_mut().enumerate() {
                for (h, half) in wc.iter_mut().enumerate() {
                    *half = v128_xor(Self::load(tile, 32 * c + 16 * h), bias);
                }
            }
            w
        }

        #[inline(always)]
        unsafe fn dot_q4(w: &Self::W4, x: &[i8; GROUP], correction: i32) -> Self::Sums {
            // Each i16 lane sums eight products of a stored level ≤ 15 and |x| ≤ 127: at most
            // 8 · 15 · 127 = 15,240, no overflow.
            let mut s = [i16x8_splat(0); 4];
            for (c, [lo, hi]) in w.iter().enumerate() {
                let xb = Self::broadcast(x, c);
                s[0] = i16x8_add(s[0], i16x8_extmul_low_i8x16(*lo, xb));
                s[1] = i16x8_add(s[1], i16x8_extmul_high_i8x16(*lo, xb));
                s[2] = i16x8_add(s[2], i16x8_extmul_low_i8x16(*hi, xb));
                s[3] = i16x8_add(s[3], i16x8_extmul_high_i8x16(*hi, xb));
            }
            let corr = i32x4_splat(correction);
            let wide = [i32x4_extadd_pairwise_i16x8(s[0]), i32x4_extadd_pairwise_i16x8(s[1]), i32x4_extadd_pairwise_i16x8(s[2]), i32x4_extadd_pairwise_i16x8(s[3])];
            let [lo, hi] = Self::rows(wide);
            [i32x4_add(lo, corr), i32x4_add(hi, corr)]
        }

        #[inline(always)]
        unsafe fn dot_q8(w: &Self::W8, x: &[i8; GROUP], _correction: i32) -> Self::Sums {
            // Two column quads' products share an i16 lane before widening:
            // |−128 · 127| · 2 = 32,512 ≤ 32,767.
            let mut s = [i32x4_splat(0); 4];
            for c in (0..8).step_by(2) {
                let (x0, x1) = (Self::broadcast(x, c), Self::broadcast(x, c + 1));
                let ([a0, a1], [b0, b1]) = (w[c], w[c + 1]);
                let pairs = |a: v128, b: v128, high: bool| {
                    let p = if high {
                        i16x8_add(i16x8_extmul_high_i8x16(a, x0), i16x8_extmul_high_i8x16(b, x1))
                    } else {
                        i16x8_add(i16x8_extmul_low_i8x16(a, x0), i16x8_extmul_low_i8x16(b, x1))
                    };
                    i32x4_extadd_pairwise_i16x8(p)
                };
                s[0] = i32x4_add(s[0], pairs(a0, b0, false));
                s[1] = i32x4_add(s[1], pairs(a0, b0, true));
                s[2] = i32x4_add(s[2], pairs(a1, b1, false));
                s[3] = i32x4_add(s[3], pairs(a1, b1, true));
            }
            Self::rows(s)
        }

        #[inline(always)]
        unsafe fn fma(acc: Self::Acc, sums: Self::Sums, ws: &[f32; TILE_ROWS], xs: f32) -> Self::Acc {
            let x = f32x4_splat(xs);
            let mut out = acc;
            for (h, o) in out.iter_mut().enumerate() {
                let s = f32x4_mul(f32x4(ws[4 * h], ws[4 * h + 1], ws[4 * h + 2], ws[4 * h + 3]), x);
                *o = f32x4_add(*o, f32x4_mul(f32x4_convert_i32x4(sums[h]), s));
            }
            out
        }

        #[inline(always)]
        unsafe fn store(acc: Self::Acc, out: &mut [f32]) {
            assert_eq!(out.len(), TILE_ROWS);
            for (h, a) in acc.iter().enumerate() {
                let v = [f32x4_extract_lane::<0>(*a), f32x4_extract_lane::<1>(*a), f32x4_extract_lane::<2>(*a), f32x4_extract_lane::<3>(*a)];
                out[4 * h..4 * h + 4].copy_from_slice(&v);
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

    /// A WebAssembly build with relaxed SIMD runs it (the other tests then check it against
    /// the plain reference with every other kernel).
    #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
    #[test]
    fn relaxed_simd_is_the_webassembly_kernel_where_built() {
        assert_eq!(Kernel::available_kernels(), [Kernel::Scalar, Kernel::Simd128, Kernel::RelaxedSimd]);
        if std::env::var_os("GENPRM_CPU_KERNEL").is_none() {
            assert_eq!(Kernel::best(), Kernel::RelaxedSimd);
        }
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            let (rows, cols) = (5, 96);
            let w = sample(rows, cols);
            let q = QuantMatrix::quantize(&w, rows, cols, format, "w").unwrap();
            let (d, scales) = (q.dequantize(), q.scales());
            for (g, (a, b)) in w.chunks(GROUP).zip(d.chunks(GROUP)).enumerate() {
                let step = scales[g];
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= step * 0.5 + 1e-6, "{format}: {x} vs {y} (step {step})");
                }
            }
        }
    }

    #[test]
    fn q4_packs_two_levels_per_byte() {
        let mut w = vec![0f32; 32];
        w[0] = 7.0;
        w[1] = -7.0;
        w[9] = 3.0;
        let q = QuantMatrix::quantize(&w, 1, 32, QuantFormat::Q4, "w").unwrap();
        assert_eq!(q.scales(), vec![1.0]);
        let bytes = q.values_bytes();
        assert_eq!(bytes.len(), 16);
        assert_eq!(bytes[0], 15 | 1 << 4);
        assert_eq!(bytes[4], 8 | 11 << 4);
        assert_eq!(q.dequantize()[..2], [7.0, -7.0]);
    }

    #[test]
    fn the_tiled_layout_round_trips_through_the_row_major_one() {
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            for rows in [1, 7, 8, 9, 21] {
                let cols = 96;
                let q = QuantMatrix::quantize(&noise(rows as u64, rows * cols), rows, cols, format, "w").unwrap();
                let again = QuantMatrix::from_parts(rows, cols, format, &q.values_bytes(), q.scales(), "w").unwrap();
                assert_eq!(again, q, "{format} rows {rows}");
                assert_eq!(q.bytes(), rows.div_ceil(TILE_ROWS) * TILE_ROWS * (cols * if format == QuantFormat::Q4 { 1 } else { 2 } / 2 + cols / GROUP * 4));
            }
        }
    }

    #[test]
    fn appending_rows_equals_quantizing_the_whole() {
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            let (rows, cols) = (37, 64);
            let w = noise(9, rows * cols);
            let whole = QuantMatrix::quantize(&w, rows, cols, format, "w").unwrap();
            // Pieces ending inside a tile and on a tile's end.
            for cuts in [vec![13, 24], vec![16, 21], vec![3, 5, 8, 21]] {
                let mut start = 0;
                let mut built: Option<QuantMatrix> = None;
                for len in cuts {
                    let piece = QuantMatrix::quantize(&w[start * cols..(start + len) * cols], len, cols, format, "w").unwrap();
                    match built.as_mut() {
                        None => built = Some(piece),
                        Some(b) => b.append_rows(piece).unwrap(),
                    }
                    start += len;
                }
                assert_eq!(built.unwrap(), whole, "{format}");
            }
        }
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
        let mut w = vec![0i8; cols];
        let (mut y, mut mag) = (vec![0f64; n * rows], vec![0f64; n * rows]);
        for r in 0..rows {
            // The integer levels of row r (q4: −8..=7), unscaled.
            q.row_levels(r, &mut w);
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
                    let s = f64::from(q.scale(r, g)) * f64::from(xs);
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
        let kernels = Kernel::available_kernels();
        assert!(kernels.contains(&Kernel::Scalar));
        // Each target's own kernel is tested on it (scripts/test runs these tests on AArch64
        // under QEMU and on WebAssembly under Node).
        #[cfg(target_arch = "aarch64")]
        assert!(kernels.contains(&Kernel::Neon));
        #[cfg(target_arch = "wasm32")]
        assert!(kernels.contains(&Kernel::Simd128));
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
            let (n, cols) = (2, 96);
            let mut x = noise(11, n * cols);
            // The last group of the second row is zero.
            x[n * cols - GROUP..].fill(0.0);
            let a = QuantActs::new(&x, n, cols, format);
            assert_eq!((a.levels.len(), a.scales.len(), a.corrections.len()), (192, 6, 6));
            for (g, (xg, lg)) in x.chunks_exact(GROUP).zip(a.levels.chunks_exact(GROUP)).enumerate() {
                let s = a.scales[g];
                for (&v, &l) in xg.iter().zip(lg) {
                    assert!((-127..=127).contains(&l));
                    assert!((v - f32::from(l) * s).abs() <= s * 0.5 * (1.0 + 1e-5), "{format} group {g}: {v} vs {l}·{s}");
                }
                assert_eq!(a.corrections[g], -format.bias() * lg.iter().map(|&l| i32::from(l)).sum::<i32>());
            }
            assert_eq!((a.scales[5], a.corrections[5]), (0.0, 0));
        }
    }

    /// Kernel speed at the 1.5B model's shapes (a measurement, not a test):
    /// `cargo test -p genprm-quant kernel_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run it with --ignored --nocapture"]
    fn kernel_speed() {
        for format in [QuantFormat::Q4, QuantFormat::Q8] {
            for (rows, cols) in [(8960, 1536), (1536, 8960), (1536, 1536)] {
                let q = QuantMatrix::quantize(&noise(3, rows * cols), rows, cols, format, "w").unwrap();
                for n in [1, 2, 4, 8] {
                    let x = noise(5, n * cols);
                    let mut best = f64::MAX;
                    for _ in 0..25 {
                        let t = std::time::Instant::now();
                        std::hint::black_box(q.matmul(&x, n));
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    let macs = (rows * cols * n) as f64;
                    println!("{format} [{rows}x{cols}] n={n}: {:.3} ms, {:.1} GMAC/s, {:.2} ms/row", best * 1e3, macs / best / 1e9, best * 1e3 / n as f64);
                }
            }
        }
    }
}
