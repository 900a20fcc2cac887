//! Decode attention on the CPU device, in plain Rust over the KV cache's own memory: for each
//! new position (one per row of a batch), `softmax(q·Kᵀ/√d)·V` over the row's cached positions
//! only. The query heads that share a key/value head are done together, so each cached key and
//! value is read once per row, not once per query head; nothing is copied, packed or masked
//! (burn's generic ops transpose the keys for a matrix product and attend over the whole
//! preallocated capacity, masking the unused positions). An f16 cache is read in blocks of
//! [`BLOCK`] positions, each widened to f32 (exactly) just before it is used, so the attention
//! reads half the bytes and computes what f32 attention computes over the same values.

use burn::tensor::{DType, Tensor, TensorData};
use half::f16;

/// Positions of an f16 cache widened to f32 at a time (with 128-wide heads, 16 KiB: L1-sized).
const BLOCK: usize = 32;

/// Attention of `q` (`[n, heads, 1, d]`, rotary embeddings applied) over the cache `keys` and
/// `values` (`[rows · kv_heads · capacity, d]`, f32 or f16, the new position already written), where row
/// `first + i` holds `lens[i]` positions, the first `shared[i].1` of them equal to cache row
/// `shared[i].0`'s (Maj@N samples copied from one prompt): rows with the same source read those
/// positions from its memory together, once. Returns the output `[n, heads · d]` and the cache
/// tensors, handed back unchanged (their memory is borrowed in place, not copied, when nothing
/// else holds them). The numbers do not depend on the sharing: each score and each sum is
/// computed in the same order either way.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_attention(
    q: Tensor<4>,
    keys: Tensor<2>,
    values: Tensor<2>,
    first: usize,
    lens: &[usize],
    shared: &[Option<(usize, usize)>],
    kv_heads: usize,
    capacity: usize,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let device = q.device();
    let [n, heads, _, d] = q.dims();
    let groups = heads / kv_heads;
    // Rows that share their first positions with the same cache row attend as one team.
    let mut teams: Vec<Team> = Vec::new();
    for (i, share) in shared.iter().enumerate().take(n) {
        match share.and_then(|(source, len)| teams.iter_mut().find(|t| t.source == Some(source)).map(|t| (t, len))) {
            Some((team, len)) => {
                team.shared = team.shared.min(len);
                team.rows.push(i);
            }
            None => teams.push(Team { source: share.map(|s| s.0), shared: share.map_or(0, |s| s.1), rows: vec![i] }),
        }
    }
    // A row the others copied from joins them: its first positions are the shared ones.
    for i in 0..n {
        let Some(t) = teams.iter().position(|t| t.source == Some(first + i)) else { continue };
        if let Some(alone) = teams.iter().position(|u| u.source.is_none() && u.rows == [i]) {
            teams[t].rows.push(i);
            teams[t].shared = teams[t].shared.min(lens[i]);
            teams.remove(alone);
        }
    }
    let (q, keys, values) = (q.into_data(), keys.into_data(), values.into_data());
    let mut out = vec![0f32; n * heads * d];
    {
        let (q, keys, values) = (f32s(&q), Kv::of(&keys), Kv::of(&values));
        let jobs: Vec<(usize, usize)> = (0..teams.len()).flat_map(|t| (0..kv_heads).map(move |h| (t, h))).collect();
        // One job per (team, key/value head): its rows' `groups` query heads' outputs.
        let job = |&(t, h): &(usize, usize)| {
            let team = &teams[t];
            let at = |row: usize, from: usize, to: usize| ((row * kv_heads + h) * capacity + from) * d..((row * kv_heads + h) * capacity + to) * d;
            let shared = team.source.map_or(0, |_| team.shared);
            let common = team.source.map(|s| (keys.part(at(s, 0, shared)), values.part(at(s, 0, shared))));
            let own: Vec<Segment<'_>> = team
                .rows
                .iter()
                .map(|&i| Segment {
                    q: &q[(i * heads + h * groups) * d..][..groups * d],
                    k: keys.part(at(first + i, shared, lens[i])),
                    v: values.part(at(first + i, shared, lens[i])),
                })
                .collect();
            let scale = 1.0 / (d as f32).sqrt();
            #[cfg(target_arch = "x86_64")]
            if crate::quant::Kernel::Avx2.available() {
                // SAFETY: the CPU has AVX2 and FMA (checked).
                return unsafe { attend_avx2(common, &own, d, scale) };
            }
            // SAFETY: the module loaded, so the engine has SIMD128.
            #[cfg(target_arch = "wasm32")]
            let result = unsafe { attend_simd128(common, &own, d, scale) };
            #[cfg(not(target_arch = "wasm32"))]
            let result = attend::<false>(common, &own, d, scale);
            result
        };
        #[cfg(not(target_arch = "wasm32"))]
        let results: Vec<Vec<f32>> = {
            use rayon::prelude::*;
            jobs.par_iter().map(job).collect()
        };
        #[cfg(target_arch = "wasm32")]
        let results: Vec<Vec<f32>> = jobs.iter().map(job).collect();
        for (&(t, h), result) in jobs.iter().zip(results) {
            for (&i, part) in teams[t].rows.iter().zip(result.chunks_exact(groups * d)) {
                out[(i * heads + h * groups) * d..][..groups * d].copy_from_slice(part);
            }
        }
    }
    let out = Tensor::from_data(TensorData::new(out, [n, heads * d]), &device);
    let (kd, vd) = (keys.dtype(), values.dtype());
    (out, Tensor::from_data(keys, (&device, kd)), Tensor::from_data(values, (&device, vd)))
}

/// Rows of a decode pass attending together.
struct Team {
    /// The cache row holding every member's first `shared` positions, if any.
    source: Option<usize>,
    shared: usize,
    /// The members (rows of the pass).
    rows: Vec<usize>,
}

/// One row's part of a team's job: its query heads for one key/value head, `[groups, d]`, and
/// its own cached positions after the shared ones, `[len, d]` each.
struct Segment<'a> {
    q: &'a [f32],
    k: Kv<'a>,
    v: Kv<'a>,
}

/// Cached keys or values, `[positions, d]`, as the cache stores them.
#[derive(Clone, Copy)]
enum Kv<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl<'a> Kv<'a> {
    /// The values of a CPU cache tensor's data.
    fn of(t: &'a TensorData) -> Self {
        match t.dtype() {
            DType::F16 => Kv::F16(t.as_slice::<f16>().unwrap_or_else(|e| panic!("an f16 KV cache's data: {e:?}"))),
            _ => Kv::F32(f32s(t)),
        }
    }

    /// The elements in `range`.
    fn part(self, range: std::ops::Range<usize>) -> Self {
        match self {
            Kv::F32(x) => Kv::F32(&x[range]),
            Kv::F16(x) => Kv::F16(&x[range]),
        }
    }

    fn len(self) -> usize {
        match self {
            Kv::F32(x) => x.len(),
            Kv::F16(x) => x.len(),
        }
    }

    /// How many blocks [`Kv::block`] cuts `[positions, d]` into: an f32 cache is one, an f16
    /// one has one per [`BLOCK`] positions.
    #[inline(always)]
    fn blocks(self, d: usize) -> usize {
        match self {
            Kv::F32(_) => 1,
            Kv::F16(x) => x.len().div_ceil(BLOCK * d),
        }
    }

    /// Block `b`: its first position and its `[positions, d]` in f32 (an f16 block widened into
    /// `scratch`, which holds [`BLOCK`] positions). Plain loops over the blocks, not a closure,
    /// so that the callers' code is compiled with their target features (a closure is not: its
    /// fused multiply-adds became library calls).
    #[inline(always)]
    fn block<'s>(self, b: usize, d: usize, scratch: &'s mut [f32]) -> (usize, &'s [f32])
    where
        'a: 's,
    {
        match self {
            Kv::F32(x) => (0, x),
            Kv::F16(x) => {
                let part = &x[b * BLOCK * d..((b + 1) * BLOCK * d).min(x.len())];
                let wide = &mut scratch[..part.len()];
                widen(part, wide);
                (b * BLOCK, wide)
            }
        }
    }
}

/// `dst[i] = src[i]` as f32, exactly: with F16C's conversion instruction where the CPU has it
/// (every x86 CPU with AVX2 does), else [`widen_portable`].
#[inline(always)]
fn widen(src: &[f16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has F16C (and so AVX), checked.
        return unsafe { widen_f16c(src, dst) };
    }
    widen_portable(src, dst)
}

/// [`widen`] eight values at a time with `vcvtph2ps`.
///
/// # Safety
/// The CPU must have F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn widen_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len());
    let eights = n / 8;
    for i in 0..eights {
        // SAFETY: 8 halves read and 8 floats written at 8i + 8 ≤ n, within both slices.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i * 8).cast::<__m128i>());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i * 8), _mm256_cvtph_ps(h));
        }
    }
    widen_portable(&src[eights * 8..n], &mut dst[eights * 8..n]);
}

/// [`widen`] in branch-free integer and float operations that the compiler vectorises for the
/// caller's target features (SIMD128 in the browser): the f16 exponent and mantissa moved to
/// their f32 places and the result scaled by 2¹¹², which also gets subnormals right; infinities
/// and NaNs get the f32 exponent of all ones.
#[inline(always)]
fn widen_portable(src: &[f16], dst: &mut [f32]) {
    for (d, h) in dst.iter_mut().zip(src) {
        let h = u32::from(h.to_bits());
        let magnitude = (h & 0x7fff) << 13;
        let scaled = (f32::from_bits(magnitude) * f32::from_bits(0x7780_0000)).to_bits();
        let bits = if h & 0x7c00 == 0x7c00 { magnitude | 0x7f80_0000 } else { scaled };
        *d = f32::from_bits(bits | (h & 0x8000) << 16);
    }
}

/// [`attend`] compiled for AVX2 (eight-lane vectors instead of the baseline's four).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(common: Option<(Kv<'_>, Kv<'_>)>, rows: &[Segment<'_>], d: usize, scale: f32) -> Vec<f32> {
    attend::<true>(common, rows, d, scale)
}

/// [`attend`] compiled for WebAssembly SIMD128 (four-lane vectors instead of scalar code; the
/// same operations in the same order, so the same results).
///
/// # Safety
/// The engine must have SIMD128 (it does if the module loaded: genprm-quant's kernels use it).
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
unsafe fn attend_simd128(common: Option<(Kv<'_>, Kv<'_>)>, rows: &[Segment<'_>], d: usize, scale: f32) -> Vec<f32> {
    attend::<false>(common, rows, d, scale)
}

/// A team's attention for one key/value head: every member's query heads over the `common`
/// keys and values (the shared first positions, `[shared, d]` each), then over its own. Returns
/// the members' outputs, `[members, groups, d]`. `FMA`: fused multiply-adds (only where the
/// CPU has them; elsewhere `mul_add` would be a slow library call).
#[inline(always)]
fn attend<const FMA: bool>(common: Option<(Kv<'_>, Kv<'_>)>, rows: &[Segment<'_>], d: usize, scale: f32) -> Vec<f32> {
    let (ck, cv) = common.unwrap_or((Kv::F32(&[]), Kv::F32(&[])));
    let shared = ck.len() / d;
    let queries: Vec<&[f32]> = rows.iter().flat_map(|r| r.q.chunks_exact(d)).collect();
    let groups = queries.len() / rows.len().max(1);
    let mut scratch = if matches!(ck, Kv::F16(_)) || rows.iter().any(|r| matches!(r.k, Kv::F16(_))) { vec![0f32; BLOCK * d] } else { Vec::new() };
    // Per query: scores (then weights) over the shared positions and then its row's own.
    let mut probs: Vec<Vec<f32>> = rows.iter().flat_map(|r| (0..groups).map(move |_| vec![0f32; shared + r.k.len() / d])).collect();
    for b in 0..ck.blocks(d) {
        let (p, k) = ck.block(b, d, &mut scratch);
        scores::<FMA>(&queries, k, d, scale, &mut probs, p);
    }
    for (r, row) in rows.iter().enumerate() {
        let (queries, probs) = (&queries[r * groups..(r + 1) * groups], &mut probs[r * groups..(r + 1) * groups]);
        for b in 0..row.k.blocks(d) {
            let (p, k) = row.k.block(b, d, &mut scratch);
            scores::<FMA>(queries, k, d, scale, probs, shared + p);
        }
    }
    for row in &mut probs {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut sum = 0.0;
        for s in row.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        row.iter_mut().for_each(|s| *s /= sum);
    }
    // Σ_p w_p · v_p: each value row is read once and added to every query head's output (held
    // in L1 beside it), the shared positions once for the whole team.
    let mut out = vec![0f32; queries.len() * d];
    for b in 0..cv.blocks(d) {
        let (first, v) = cv.block(b, d, &mut scratch);
        for (p, vp) in v.chunks_exact(d).enumerate() {
            for (o, w) in out.chunks_exact_mut(d).zip(&probs) {
                o.iter_mut().zip(vp).for_each(|(o, &x)| *o = madd::<FMA>(w[first + p], x, *o));
            }
        }
    }
    for (r, row) in rows.iter().enumerate() {
        let out = &mut out[r * groups * d..(r + 1) * groups * d];
        for b in 0..row.v.blocks(d) {
            let (first, v) = row.v.block(b, d, &mut scratch);
            for (p, vp) in v.chunks_exact(d).enumerate() {
                for (o, w) in out.chunks_exact_mut(d).zip(&probs[r * groups..]) {
                    o.iter_mut().zip(vp).for_each(|(o, &x)| *o = madd::<FMA>(w[shared + first + p], x, *o));
                }
            }
        }
    }
    out
}

/// `probs[j][offset + p] = queries[j] · k[p] · scale` for every position `p` of `k` (`[len, d]`).
/// Each score is computed the same way whatever the other queries and positions.
#[inline(always)]
fn scores<const FMA: bool>(queries: &[&[f32]], k: &[f32], d: usize, scale: f32, probs: &mut [Vec<f32>], offset: usize) {
    #[cfg(target_arch = "x86_64")]
    if FMA && d % 8 == 0 {
        // SAFETY: `scores::<true>` only runs from `attend_avx2`, where the CPU has AVX2 and FMA.
        return unsafe { scores_by_eight(queries, k, d, scale, probs, offset) };
    }
    for (p, kp) in k.chunks_exact(d).enumerate() {
        for (qj, pj) in queries.iter().zip(probs.iter_mut()) {
            pj[offset + p] = dot::<FMA>(qj, kp) * scale;
        }
    }
}

/// [`scores`] with AVX2: eight positions at a time, eight independent sums per query and one
/// transposing reduction (`vhaddps`) for eight scores at once instead of eight horizontal sums;
/// the positions left over are summed in the same order one at a time, so every score is the
/// same bits whichever way it was computed.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `d` must be a multiple of eight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_by_eight(queries: &[&[f32]], k: &[f32], d: usize, scale: f32, probs: &mut [Vec<f32>], offset: usize) {
    use std::arch::x86_64::*;
    let len = k.len() / d;
    let blocks = len / 8;
    // SAFETY (all blocks below): every load reads 8 floats at `c < d` of a row of `d` floats;
    // stores write 8 floats at `offset + 8b + 8 ≤ offset + len ≤ probs[j].len()`.
    for b in 0..blocks {
        let kb = &k[b * 8 * d..(b + 1) * 8 * d];
        for (qj, pj) in queries.iter().zip(probs.iter_mut()) {
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 8];
                for c in (0..d).step_by(8) {
                    let qv = _mm256_loadu_ps(qj.as_ptr().add(c));
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_loadu_ps(kb.as_ptr().add(j * d + c)), qv, *a);
                    }
                }
                // Lane l of the result: ((a_l[0] + a_l[1]) + (a_l[2] + a_l[3])) + ((a_l[4] + a_l[5]) + (a_l[6] + a_l[7])).
                let t0 = _mm256_hadd_ps(acc[0], acc[1]);
                let t1 = _mm256_hadd_ps(acc[2], acc[3]);
                let t2 = _mm256_hadd_ps(acc[4], acc[5]);
                let t3 = _mm256_hadd_ps(acc[6], acc[7]);
                let (u0, u1) = (_mm256_hadd_ps(t0, t1), _mm256_hadd_ps(t2, t3));
                let sums = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
                _mm256_storeu_ps(pj.as_mut_ptr().add(offset + b * 8), _mm256_mul_ps(sums, _mm256_set1_ps(scale)));
            }
        }
    }
    for p in blocks * 8..len {
        let kp = &k[p * d..(p + 1) * d];
        for (qj, pj) in queries.iter().zip(probs.iter_mut()) {
            unsafe {
                let mut a = _mm256_setzero_ps();
                for c in (0..d).step_by(8) {
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(kp.as_ptr().add(c)), _mm256_loadu_ps(qj.as_ptr().add(c)), a);
                }
                let mut l = [0f32; 8];
                _mm256_storeu_ps(l.as_mut_ptr(), a);
                pj[offset + p] = (((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))) * scale;
            }
        }
    }
}

/// `a · b + c`, fused or not.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// The values of an f32 tensor on the CPU device.
fn f32s(t: &TensorData) -> &[f32] {
    t.as_slice::<f32>().unwrap_or_else(|e| panic!("attention operands are f32 on the CPU device: {e:?}"))
}

/// `Σ a·b` in four independent sums of eight lanes (so the additions do not wait on each other
/// and each fits one vector register).
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [[0f32; 8]; 4];
    let (ac, ar) = a.as_chunks::<32>();
    let (bc, br) = b.as_chunks::<32>();
    for (x, y) in ac.iter().zip(bc) {
        for (j, lane) in lanes.iter_mut().enumerate() {
            for l in 0..8 {
                lane[l] = madd::<FMA>(x[j * 8 + l], y[j * 8 + l], lane[l]);
            }
        }
    }
    let mut sum = [0f32; 8];
    for lane in &lanes {
        for l in 0..8 {
            sum[l] += lane[l];
        }
    }
    sum.iter().sum::<f32>() + ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    /// A deterministic stream in [−2, 2).
    fn noise(seed: usize, len: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 / 250.0 - 2.0).collect()
    }

    /// [`decode_attention`] on host vectors (`q` `[lens.len(), heads, 1, d]`; `k`, `v` the whole
    /// cache of `capacity` positions per row and key/value head); returns the output.
    #[allow(clippy::too_many_arguments)]
    fn run(q: &[f32], k: &[f32], v: &[f32], heads: usize, kv_heads: usize, d: usize, capacity: usize, first: usize, lens: &[usize], shared: &[Option<(usize, usize)>]) -> Vec<f32> {
        run_as(DType::F32, q, k, v, heads, kv_heads, d, capacity, first, lens, shared)
    }

    /// [`run`] with the cache stored as `dtype` (f16: `k` and `v` rounded to it).
    #[allow(clippy::too_many_arguments)]
    fn run_as(dtype: DType, q: &[f32], k: &[f32], v: &[f32], heads: usize, kv_heads: usize, d: usize, capacity: usize, first: usize, lens: &[usize], shared: &[Option<(usize, usize)>]) -> Vec<f32> {
        let device = Device::flex();
        let cache_rows = k.len() / d;
        let cache = |x: &[f32]| Tensor::<2>::from_data(TensorData::new(x.to_vec(), [cache_rows, d]), (&device, dtype));
        let (keys, values) = (cache(k), cache(v));
        let stored = (keys.clone().into_data(), values.clone().into_data());
        let (out, k2, v2) = decode_attention(
            Tensor::from_data(TensorData::new(q.to_vec(), [lens.len(), heads, 1, d]), &device),
            keys,
            values,
            first,
            lens,
            shared,
            kv_heads,
            capacity,
        );
        assert_eq!((k2.dtype(), v2.dtype()), (dtype, dtype), "the cache keeps its type");
        assert_eq!(k2.into_data(), stored.0, "the keys come back unchanged");
        assert_eq!(v2.into_data(), stored.1);
        out.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Copies cache row 0's first `len` positions (every key/value head) to `rows`, as Maj@N's
    /// samples copy their shared prompt.
    fn copy_prompt(k: &mut [f32], v: &mut [f32], rows: std::ops::Range<usize>, len: usize, kv_heads: usize, capacity: usize, d: usize) {
        for row in rows {
            for h in 0..kv_heads {
                let (src, dst) = ((h * capacity) * d, ((row * kv_heads + h) * capacity) * d);
                k.copy_within(src..src + len * d, dst);
                v.copy_within(src..src + len * d, dst);
            }
        }
    }

    #[test]
    fn widening_f16_is_exact_for_every_value() {
        // Every f16 (plus 3 so the vector path has a remainder), both ways of widening.
        let all: Vec<f16> = (0..=u16::MAX).chain(0..3).map(f16::from_bits).collect();
        for (way, widen) in [("dispatched", widen as fn(&[f16], &mut [f32])), ("portable", widen_portable)] {
            let mut wide = vec![0f32; all.len()];
            widen(&all, &mut wide);
            for (h, w) in all.iter().zip(&wide) {
                let want = h.to_f32();
                assert!(w.to_bits() == want.to_bits() || (w.is_nan() && want.is_nan()), "{way} {:#06x}: {w:e} vs {want:e}", h.to_bits());
            }
        }
    }

    #[test]
    fn an_f16_cache_attends_like_f32_over_the_same_values() {
        // Lengths below, at, and across several of the f16 blocks (32 positions), a team of
        // rows sharing a prompt of 40 positions, and d = 12 and 128.
        for d in [12, 128] {
            let (rows, kv_heads, heads, capacity, first) = (4, 2, 6, 128, 0);
            let lens = [BLOCK, 75, 100, 7];
            let (mut k, mut v) = (noise(7, rows * kv_heads * capacity * d), noise(8, rows * kv_heads * capacity * d));
            copy_prompt(&mut k, &mut v, 1..3, 40, kv_heads, capacity, d);
            let rounded = |x: &[f32]| x.iter().map(|&x| f16::from_f32(x).to_f32()).collect::<Vec<f32>>();
            let (k16, v16) = (rounded(&k), rounded(&v));
            assert!(k16 != k, "the noise is not already f16");
            let q = noise(9, lens.len() * heads * d);
            for shared in [[None; 4], [None, Some((0, 40)), Some((0, 40)), None]] {
                let half = run_as(DType::F16, &q, &k, &v, heads, kv_heads, d, capacity, first, &lens, &shared);
                let full = run_as(DType::F32, &q, &k16, &v16, heads, kv_heads, d, capacity, first, &lens, &shared);
                assert!(half.iter().zip(&full).all(|(a, b)| a.to_bits() == b.to_bits()), "d {d} {shared:?}: the f16 cache changed the numbers");
            }
        }
    }

    /// Plain f64 attention of one query head over `len` positions.
    fn reference(q: &[f32], k: &[f32], v: &[f32], len: usize, d: usize) -> Vec<f64> {
        let scores: Vec<f64> =
            (0..len).map(|p| (0..d).map(|x| f64::from(q[x]) * f64::from(k[p * d + x])).sum::<f64>() / (d as f64).sqrt()).collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        (0..d).map(|x| (0..len).map(|p| e[p] / sum * f64::from(v[p * d + x])).sum()).collect()
    }

    #[test]
    fn equals_a_reference_per_row_and_head() {
        // d = 12 (not a multiple of eight) and 128 (the real heads', vectorised eight positions
        // at a time, with a remainder of positions).
        for d in [12, 128] {
            check(d);
        }
    }

    #[test]
    fn rows_sharing_a_prompt_read_it_once_and_get_the_same_bits() {
        for d in [12, 128] {
            // Cache row 0 holds a prompt of 11 positions and went on to 15; rows 1 and 2 copied
            // the prompt and went on, to 20 and 29 positions; row 3 did not copy it. All four
            // attend in this pass.
            let (rows, kv_heads, heads, capacity, first) = (4, 2, 6, 32, 0);
            let lens = [15usize, 20, 29, 13];
            let (mut k, mut v) = (noise(4, rows * kv_heads * capacity * d), noise(5, rows * kv_heads * capacity * d));
            copy_prompt(&mut k, &mut v, 1..3, 11, kv_heads, capacity, d);
            let q = noise(6, lens.len() * heads * d);
            let run = |shared: &[Option<(usize, usize)>]| run(&q, &k, &v, heads, kv_heads, d, capacity, first, &lens, shared);
            let alone = run(&[None, None, None, None]);
            let together = run(&[None, Some((0, 11)), Some((0, 11)), None]);
            assert!(alone.iter().zip(&together).all(|(a, b)| a.to_bits() == b.to_bits()), "d {d}: sharing changed the numbers");
            // A shorter claim for one row shortens the team's shared part; still the same bits.
            assert!(run(&[None, Some((0, 11)), Some((0, 5)), None]).iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "d {d}");
        }
    }

    fn check(d: usize) {
        // Three cache rows, two of them attended (rows 1 and 2) with different lengths; four
        // query heads on two key/value heads.
        let (rows, kv_heads, heads, capacity, first) = (3, 2, 4, 32, 1);
        let lens = [5usize, 29];
        let (k, v) = (noise(1, rows * kv_heads * capacity * d), noise(2, rows * kv_heads * capacity * d));
        let q: Vec<f32> = noise(3, lens.len() * heads * d).iter().map(|x| x / (d as f32).sqrt()).collect();
        let out = run(&q, &k, &v, heads, kv_heads, d, capacity, first, &lens, &[None, None]);
        for (i, &len) in lens.iter().enumerate() {
            for h in 0..heads {
                let base = ((first + i) * kv_heads + h / (heads / kv_heads)) * capacity * d;
                let want = reference(&q[(i * heads + h) * d..][..d], &k[base..], &v[base..], len, d);
                for (x, w) in want.iter().enumerate() {
                    let got = out[(i * heads + h) * d + x];
                    assert!((f64::from(got) - w).abs() < 1e-5, "d {d} row {i} head {h} [{x}]: {got} vs {w}");
                }
            }
        }
    }
}
