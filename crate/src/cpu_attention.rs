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
            let mut probs = vec![0f32; groups * len];
            for (p, kp) in k.chunks_exact(d).enumerate() {
                for (g, qg) in q.chunks_exact(d).enumerate() {
                    probs[g * len + p] = dot(qg, kp) * scale;
                }
            }
            for row in probs.chunks_exact_mut(len) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                let mut sum = 0.0;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                row.iter_mut().for_each(|s| *s /= sum);
            }
            for (p, vp) in v.chunks_exact(d).enumerate() {
                for (g, og) in out.chunks_exact_mut(d).enumerate() {
                    let w = probs[g * len + p];
                    og.iter_mut().zip(vp).for_each(|(o, &x)| *o += w * x);
                }
            }
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

/// The values of an f32 tensor on the CPU device.
fn f32s(t: &TensorData) -> &[f32] {
    t.as_slice::<f32>().unwrap_or_else(|e| panic!("attention operands are f32 on the CPU device: {e:?}"))
}

/// `Σ a·b` in eight independent lanes (so the compiler can keep them in one vector register).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ac, ar) = a.as_chunks::<8>();
    let (bc, br) = b.as_chunks::<8>();
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>()
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
        let device = Device::flex();
        // Three cache rows, two of them attended (rows 1 and 2) with different lengths; four
        // query heads on two key/value heads; d = 12 (not a multiple of eight).
        let (rows, kv_heads, heads, capacity, d, first) = (3, 2, 4, 16, 12, 1);
        let lens = [5usize, 16];
        let noise = |seed: usize, len: usize| -> Vec<f32> { (0..len).map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 / 250.0 - 2.0).collect() };
        let (k, v) = (noise(1, rows * kv_heads * capacity * d), noise(2, rows * kv_heads * capacity * d));
        let q = noise(3, lens.len() * heads * d);
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
                    assert!((f64::from(got) - w).abs() < 1e-5, "row {i} head {h} [{x}]: {got} vs {w}");
                }
            }
        }
    }
}
