//! The portable kernel: plain Rust on every target, and the reference the others are tested
//! against.

use crate::{GROUP, QuantFormat, TILE_ROWS, TileDot};

/// The portable kernel.
pub(crate) struct Scalar;

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
