//! The WebAssembly kernel: SIMD128.

use std::arch::wasm32::*;

use crate::{GROUP, QuantActs, QuantMatrix, TILE_ROWS, TileDot, row_tiles};

/// The driver with SIMD128 multiply-adds.
///
/// # Safety
/// The engine must have SIMD128 (it does if the module loaded).
#[target_feature(enable = "simd128")]
pub(crate) unsafe fn tiles_simd128(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
    // SAFETY: this function only runs where the engine has SIMD128.
    unsafe { row_tiles::<Simd128>(m, a, t0, out) }
}

/// The driver with relaxed SIMD's dot products for q4 weights.
///
/// # Safety
/// The engine must have SIMD128 and relaxed SIMD (it does if the module loaded).
#[cfg(feature = "relaxed-simd")]
#[target_feature(enable = "simd128,relaxed-simd")]
pub(crate) unsafe fn tiles_relaxed_simd(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
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

/// 128-bit kernels laid out as the NEON kernel's (`arch/neon.rs`): a tile's 32-byte vector of four
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
