//! The AArch64 kernel: NEON, which every AArch64 CPU has.

use std::arch::aarch64::*;

use crate::{GROUP, QuantActs, QuantMatrix, TILE_ROWS, TileDot, row_tiles};

/// The driver with NEON multiply-adds.
///
/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn tiles_neon(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
    // SAFETY: this function only runs where the CPU has NEON.
    unsafe { row_tiles::<Neon>(m, a, t0, out) }
}

/// 128-bit kernels: a tile's 32-byte vector of four columns (see [`crate::QuantFormat::slot`])
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
