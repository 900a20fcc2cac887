//! The x86-64 kernels: AVX2 (+ FMA), optionally with AVX-512 VNNI.

use std::arch::x86_64::*;

use crate::{GROUP, QuantActs, QuantMatrix, TILE_ROWS, TileDot, row_tiles};

/// The driver with AVX2 multiply-adds.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tiles_avx2(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
    // SAFETY: this function only runs where the CPU has AVX2 and FMA.
    unsafe { row_tiles::<Avx2<false, false>>(m, a, t0, out) }
}

/// The driver with AVX-VNNI multiply-adds.
///
/// # Safety
/// The CPU must have AVX2, FMA and AVX-VNNI.
#[target_feature(enable = "avx2,fma,avxvnni")]
pub(crate) unsafe fn tiles_avx_vnni(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
    // SAFETY: this function only runs where the CPU has all of them.
    unsafe { row_tiles::<Avx2<true, true>>(m, a, t0, out) }
}

/// The driver with VNNI multiply-adds.
///
/// # Safety
/// The CPU must have AVX2, FMA and AVX-512 VNNI, VL and BW.
#[target_feature(enable = "avx2,fma,avx512vnni,avx512vl,avx512bw")]
pub(crate) unsafe fn tiles_vnni(m: &QuantMatrix, a: &QuantActs, t0: usize, out: &mut [f32]) {
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
