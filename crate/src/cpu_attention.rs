//! Decode attention on the CPU device, in plain Rust over the KV cache's own memory: for each
//! new position (one per row of a batch), `softmax(q·Kᵀ/√d)·V` over the row's cached positions
//! only. The query heads that share a key/value head are done together, so each cached key and
//! value is read once per row, not once per query head; nothing is copied, packed or masked
//! (burn's generic ops transpose the keys for a matrix product and attend over the whole
//! preallocated capacity, masking the unused positions).

use burn::tensor::{Tensor, TensorData};

/// Attention of `q` (`[n, heads, 1, d]`, rotary embeddings applied) over the cache `keys` and
/// `values` (`[rows · kv_heads · capacity, d]`, the new position already written), where row
/// `first + i` holds `lens[i]` positions. Returns the output `[n, heads · d]` and the cache
/// tensors, handed back unchanged (their memory is borrowed in place, not copied, when nothing
/// else holds them).
pub(crate) fn decode_attention(
    q: Tensor<4>,
    keys: Tensor<2>,
    values: Tensor<2>,
    first: usize,
    lens: &[usize],
    kv_heads: usize,
    capacity: usize,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let device = q.device();
    let [n, heads, _, d] = q.dims();
    let groups = heads / kv_heads;
    let (q, keys, values) = (q.into_data(), keys.into_data(), values.into_data());
    let mut out = vec![0f32; n * heads * d];
    {
        let (q, keys, values) = (f32s(&q), f32s(&keys), f32s(&values));
        let scale = 1.0 / (d as f32).sqrt();
        // One job per (row, key/value head): its `groups` query heads' outputs.
        let job = |(j, out): (usize, &mut [f32])| {
            let (i, h) = (j / kv_heads, j % kv_heads);
            let len = lens[i];
            let base = ((first + i) * kv_heads + h) * capacity * d;
            let (k, v) = (&keys[base..base + len * d], &values[base..base + len * d]);
            let q = &q[(i * heads + h * groups) * d..][..groups * d];
            #[cfg(target_arch = "x86_64")]
            if *AVX2 {
                // SAFETY: the CPU has AVX2 and FMA (checked).
                return unsafe { attend_avx2(q, k, v, d, scale, out) };
            }
            attend::<false>(q, k, v, d, scale, out)
        };
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            out.par_chunks_mut(groups * d).enumerate().for_each(job);
        }
        #[cfg(target_arch = "wasm32")]
        out.chunks_mut(groups * d).enumerate().for_each(job);
    }
    let out = Tensor::from_data(TensorData::new(out, [n, heads * d]), &device);
    (out, Tensor::from_data(keys, &device), Tensor::from_data(values, &device))
}

/// Whether this CPU has AVX2 and FMA (detected once).
#[cfg(target_arch = "x86_64")]
static AVX2: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));

/// [`attend`] compiled for AVX2 (eight-lane vectors instead of the baseline's four).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(q: &[f32], k: &[f32], v: &[f32], d: usize, scale: f32, out: &mut [f32]) {
    attend::<true>(q, k, v, d, scale, out)
}

/// The query heads `q` (`[groups, d]`) that share one key/value head, over its positions `k`
/// and `v` (`[len, d]` each), into `out` (`[groups, d]`). `FMA`: fused multiply-adds (only
/// where the CPU has them; elsewhere `mul_add` would be a slow library call).
#[inline(always)]
fn attend<const FMA: bool>(q: &[f32], k: &[f32], v: &[f32], d: usize, scale: f32, out: &mut [f32]) {
    let (groups, len) = (q.len() / d, k.len() / d);
    let mut probs = vec![0f32; groups * len];
    // Positions already scored eight at a time (AVX2 builds, heads of a multiple of 8).
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `attend::<true>` only runs from `attend_avx2`, where the CPU has AVX2 and FMA.
    let done = if FMA && d % 8 == 0 { unsafe { scores_by_eight(q, k, d, scale, &mut probs) } } else { 0 };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (p, kp) in k.chunks_exact(d).enumerate().skip(done) {
        for (g, qg) in q.chunks_exact(d).enumerate() {
            probs[g * len + p] = dot::<FMA>(qg, kp) * scale;
        }
    }
    for row in probs.chunks_exact_mut(len.max(1)) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut sum = 0.0;
        for s in row.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        row.iter_mut().for_each(|s| *s /= sum);
    }
    // Σ_p w_p · v_p: each cached value row is read once and added to every query head's output
    // (held in L1 beside it), instead of once per head.
    out.fill(0.0);
    for (p, vp) in v.chunks_exact(d).enumerate() {
        for (g, og) in out.chunks_exact_mut(d).enumerate() {
            let w = probs[g * len + p];
            og.iter_mut().zip(vp).for_each(|(o, &x)| *o = madd::<FMA>(w, x, *o));
        }
    }
}

/// The scores of every query head against positions `0..8m` (the largest multiple of eight),
/// eight positions at a time: eight independent sums per head and one transposing reduction
/// (`vhaddps`) give eight scores at once instead of eight horizontal sums. Returns `8m`.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `d` must be a multiple of eight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_by_eight(q: &[f32], k: &[f32], d: usize, scale: f32, probs: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let len = k.len() / d;
    let blocks = len / 8;
    for b in 0..blocks {
        let kb = &k[b * 8 * d..(b + 1) * 8 * d];
        for (g, qg) in q.chunks_exact(d).enumerate() {
            // SAFETY: every load reads 8 floats at `c < d` of a row of `d` floats; the store
            // writes 8 floats at `g * len + 8b ≤ groups * len − 8`.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 8];
                for c in (0..d).step_by(8) {
                    let qv = _mm256_loadu_ps(qg.as_ptr().add(c));
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_loadu_ps(kb.as_ptr().add(j * d + c)), qv, *a);
                    }
                }
                let t0 = _mm256_hadd_ps(acc[0], acc[1]);
                let t1 = _mm256_hadd_ps(acc[2], acc[3]);
                let t2 = _mm256_hadd_ps(acc[4], acc[5]);
                let t3 = _mm256_hadd_ps(acc[6], acc[7]);
                let (u0, u1) = (_mm256_hadd_ps(t0, t1), _mm256_hadd_ps(t2, t3));
                let sums = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
                _mm256_storeu_ps(probs.as_mut_ptr().add(g * len + b * 8), _mm256_mul_ps(sums, _mm256_set1_ps(scale)));
            }
        }
    }
    blocks * 8
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

    fn check(d: usize) {
        let device = Device::flex();
        // Three cache rows, two of them attended (rows 1 and 2) with different lengths; four
        // query heads on two key/value heads.
        let (rows, kv_heads, heads, capacity, first) = (3, 2, 4, 32, 1);
        let lens = [5usize, 29];
        let noise = |seed: usize, len: usize| -> Vec<f32> { (0..len).map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 / 250.0 - 2.0).collect() };
        let (k, v) = (noise(1, rows * kv_heads * capacity * d), noise(2, rows * kv_heads * capacity * d));
        let q: Vec<f32> = noise(3, lens.len() * heads * d).iter().map(|x| x / (d as f32).sqrt()).collect();
        let (out, k2, v2) = decode_attention(
            Tensor::from_data(TensorData::new(q.clone(), [lens.len(), heads, 1, d]), &device),
            Tensor::from_data(TensorData::new(k.clone(), [rows * kv_heads * capacity, d]), &device),
            Tensor::from_data(TensorData::new(v.clone(), [rows * kv_heads * capacity, d]), &device),
            first,
            &lens,
            kv_heads,
            capacity,
        );
        assert_eq!(k2.into_data().try_to_vec::<f32>().unwrap(), k, "the keys come back unchanged");
        assert_eq!(v2.into_data().try_to_vec::<f32>().unwrap(), v);
        let out = out.into_data().try_to_vec::<f32>().unwrap();
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
