//! The forward pass and greedy decoding against Hugging Face transformers, on every fixture and
//! every device; KV-cache decoding against full re-forwards.

mod common;

use common::*;
use genprm::generate::block_on;
use genprm::{CachedPrefix, GenerateOptions, KvCache, LogitsFor, Sampling, SamplingParams};

const TOLERANCE: f32 = 1e-4;

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_new_tokens: n, sampling: Sampling::Greedy, ..Default::default() }
}

#[test]
fn logits_match_transformers_on_every_fixture_and_device() {
    for (kind, device) in devices() {
        for name in MODELS {
            let m = load(name, &device);
            let exp = expected(name);
            let rows = block_on(genprm::score(&m.model, &exp.prompt_ids)).unwrap();
            let diff = max_abs_diff(&rows, &exp);
            println!("{name} on {kind}: max |Δlogit| = {diff:.2e}");
            assert!(diff < TOLERANCE, "{name} on {kind}: max abs diff {diff} ≥ {TOLERANCE}");
        }
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    for (kind, device) in devices() {
        for name in MODELS {
            let m = load(name, &device);
            let exp = expected(name);
            let mut cache = CachedPrefix::new();
            let out =
                block_on(genprm::generate(&m.model, None, &mut cache, &exp.prompt_ids, &greedy(exp.greedy_ids.len()), |_| {})).unwrap();
            assert_eq!(out.ids, exp.greedy_ids, "{name} on {kind}");
        }
    }
}

#[test]
fn kv_cache_decoding_equals_full_reforward() {
    for (kind, device) in devices() {
        let m = load("tiny-sharded-bf16", &device);
        let exp = expected("tiny-sharded-bf16");
        let ids: Vec<u32> = exp.prompt_ids.iter().chain(&exp.greedy_ids).copied().collect();
        let full = block_on(genprm::score(&m.model, &ids)).unwrap();
        // Prefill 5 tokens, then one at a time, then a chunk of 4: each position's logits as a full pass.
        let mut cache = KvCache::new();
        let mut got: Vec<Vec<f32>> = Vec::new();
        let v = m.model.vocab_size();
        let mut pos = 0;
        for chunk in [5usize, 1, 1, 1, 4, 1, 10] {
            let t = m.model.forward(&ids[pos..pos + chunk], 1, &mut cache, LogitsFor::All).unwrap();
            let data: Vec<f32> = t.into_data().try_into_vec().unwrap();
            got.extend(data.chunks(v).map(<[f32]>::to_vec));
            pos += chunk;
        }
        assert_eq!(cache.len(), pos);
        for (p, (a, b)) in got.iter().zip(&full).enumerate() {
            let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(d < 1e-4, "{kind}: position {p} differs by {d}");
        }
    }
}

#[test]
fn cached_prefix_is_reused_and_truncated_correctly() {
    for (kind, device) in devices() {
        let m = load("tiny-gqa-f32", &device);
        let exp = expected("tiny-gqa-f32");
        let prompt = &exp.prompt_ids;
        let mut cache = CachedPrefix::new();
        let first = block_on(genprm::generate(&m.model, None, &mut cache, prompt, &greedy(6), |_| {})).unwrap();
        assert_eq!(cache.len(), prompt.len() + 5);
        // A longer prompt that extends the cached conversation.
        let longer: Vec<u32> = prompt.iter().chain(&first.ids).chain(&[7, 8, 9]).copied().collect();
        let reused = block_on(genprm::generate(&m.model, None, &mut cache, &longer, &greedy(8), |_| {})).unwrap();
        let fresh = block_on(genprm::generate(&m.model, None, &mut CachedPrefix::new(), &longer, &greedy(8), |_| {})).unwrap();
        assert_eq!(reused.ids, fresh.ids, "{kind}: reuse");
        // A prompt that diverges inside the cache: the cache must be cut back.
        let diverged: Vec<u32> = prompt[..10].iter().chain(&[3, 1, 4, 1, 5]).copied().collect();
        let cut = block_on(genprm::generate(&m.model, None, &mut cache, &diverged, &greedy(8), |_| {})).unwrap();
        let fresh = block_on(genprm::generate(&m.model, None, &mut CachedPrefix::new(), &diverged, &greedy(8), |_| {})).unwrap();
        assert_eq!(cut.ids, fresh.ids, "{kind}: truncation");
    }
}

#[test]
fn batched_forward_equals_single_sequences() {
    for (kind, device) in devices() {
        let m = load("tiny-mha-tied-f16", &device);
        let a: Vec<u32> = (0..9).map(|i| (i * 17 + 3) % 256).collect();
        let b: Vec<u32> = (0..9).map(|i| (i * 29 + 11) % 256).collect();
        let both: Vec<u32> = a.iter().chain(&b).copied().collect();
        let t = m.model.forward(&both, 2, &mut KvCache::new(), LogitsFor::Last).unwrap();
        let got: Vec<f32> = t.into_data().try_into_vec().unwrap();
        let v = m.model.vocab_size();
        for (i, seq) in [a, b].iter().enumerate() {
            let single = block_on(genprm::score(&m.model, seq)).unwrap();
            let last = single.last().unwrap();
            let d = got[i * v..(i + 1) * v].iter().zip(last).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(d < 1e-4, "{kind}: sequence {i} differs by {d}");
        }
    }
}

/// Rows of one cache at different positions (a sample that stopped, one that restarts after
/// its code ran, one that copied another's prefix) give each sequence's own logits.
#[test]
fn rows_at_different_positions_equal_single_sequences() {
    for (kind, device) in devices() {
        let m = load("tiny-gqa-f32", &device);
        let v = m.model.vocab_size();
        let seq = |mul: u32, add: u32, n: u32| -> Vec<u32> { (0..n).map(|i| (i * mul + add) % 256).collect() };
        let (a, b) = (seq(17, 3, 12), seq(29, 11, 12));
        let last = |ids: &[u32]| block_on(genprm::score(&m.model, ids)).unwrap().pop().unwrap();
        let close = |got: &[f32], want: &[f32], what: &str| {
            let d = got.iter().zip(want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(d < 1e-4, "{kind}: {what} differs by {d}");
        };
        let rows = |t: burn::tensor::Tensor<3>| -> Vec<Vec<f32>> {
            let data: Vec<f32> = t.into_data().try_into_vec().unwrap();
            data.chunks(v).map(<[f32]>::to_vec).collect()
        };
        let mut cache = KvCache::new();
        // Prefill rows of different lengths together (the shorter one is padded).
        let got = rows(m.model.forward_rows(0, &[&a[..7], &b[..4]], &mut cache, LogitsFor::Last).unwrap());
        close(&got[0], &last(&a[..7]), "row 0 after prefill");
        close(&got[1], &last(&b[..4]), "row 1 after prefill");
        // Row 0 waits (empty input) while row 1 takes 3 more; then both decode one id.
        let got = rows(m.model.forward_rows(0, &[&[], &b[4..7]], &mut cache, LogitsFor::Last).unwrap());
        close(&got[1], &last(&b[..7]), "row 1 alone");
        assert_eq!((cache.row_len(0), cache.row_len(1)), (7, 7));
        let got = rows(m.model.forward_rows(0, &[&a[7..8], &b[7..8]], &mut cache, LogitsFor::Last).unwrap());
        close(&got[0], &last(&a[..8]), "row 0 decode");
        close(&got[1], &last(&b[..8]), "row 1 decode");
        // Row 2 starts from a copy of row 0's first 5 positions; row 1 is cut back to 6.
        cache.copy_prefix(0, 2, 5).unwrap();
        cache.truncate_row(1, 6);
        let got = rows(m.model.forward_rows(1, &[&b[6..9], &a[5..10]], &mut cache, LogitsFor::Last).unwrap());
        close(&got[0], &last(&b[..9]), "row 1 after truncation");
        close(&got[1], &last(&a[..10]), "row 2 from a copied prefix");
        // Past the first capacity step: the cache grows and keeps what it held.
        let long = seq(7, 1, 300);
        let got = rows(m.model.forward_rows(0, &[&long[..1], &long[..290], &long[..1]], &mut cache, LogitsFor::Last).unwrap());
        assert!(cache.capacity() >= 300);
        close(&got[0], &last(&[a[..8].to_vec(), long[..1].to_vec()].concat()), "row 0 after growth");
        close(&got[2], &last(&[a[..10].to_vec(), long[..1].to_vec()].concat()), "row 2 after growth");
    }
}

#[test]
fn sampling_is_reproducible_for_a_seed_and_varies_across_seeds() {
    let (_, device) = devices().remove(0);
    let m = load("tiny-gqa-f32", &device);
    let prompt = expected("tiny-gqa-f32").prompt_ids;
    let run = |seed| {
        let opts = GenerateOptions {
            max_new_tokens: 16,
            sampling: Sampling::Sample(SamplingParams { temperature: 1.0, top_k: None, top_p: 1.0, seed }),
            ..Default::default()
        };
        block_on(genprm::generate(&m.model, None, &mut CachedPrefix::new(), &prompt, &opts, |_| {})).unwrap().ids
    };
    assert_eq!(run(1), run(1));
    assert!((2..6).any(|s| run(s) != run(1)), "different seeds never changed the text");
}

/// The fused GPU decode-attention kernel against plain Rust: rows at different lengths, grouped
/// heads, a cache row offset, lengths past the kernel's unit count; with an f32 cache and, where
/// the GPU has f16 arithmetic, an f16 one (against the same values rounded to f16).
#[test]
fn fused_gpu_decode_attention_equals_a_reference() {
    use genprm::burn::tensor::{DType, Tensor, TensorData};
    for (kind, device) in devices() {
        if kind == genprm::DeviceKind::Cpu {
            continue;
        }
        let kv_types = if genprm::gpu_quant::supports_f16(&device) { vec![DType::F32, DType::F16] } else { vec![DType::F32] };
        for kv_dtype in kv_types {
            let (rows, first, n, heads, kv_heads, d, cap) = (4usize, 1usize, 3usize, 4usize, 2usize, 16usize, 256usize);
            let lens = [1usize, 70, 200];
            let val = |i: usize, salt: f32| (i as f32 * 0.618 + salt).sin() * 1.7;
            let stored = |x: f32| if kv_dtype == DType::F16 { half::f16::from_f32(x).to_f32() } else { x };
            let q: Vec<f32> = (0..n * heads * d).map(|i| val(i, 0.3)).collect();
            let keys: Vec<f32> = (0..rows * kv_heads * cap * d).map(|i| stored(val(i, 1.1))).collect();
            let values: Vec<f32> = (0..rows * kv_heads * cap * d).map(|i| stored(val(i, 2.9))).collect();
            let cache = |x: &[f32]| Tensor::<2>::from_data(TensorData::new(x.to_vec(), [rows * kv_heads * cap, d]), &device).cast(kv_dtype);
            let (kt, vt) = (cache(&keys), cache(&values));
            assert_eq!(kt.dtype(), kv_dtype);
            let got: Vec<f32> = genprm::gpu_attention::decode_attention(
                Tensor::<3>::from_data(TensorData::new(q.clone(), [n, heads, d]), &device),
                &kt,
                &vt,
                first,
                &genprm::gpu_attention::row_lens(&lens, &device),
                kv_heads,
                cap,
            )
            .into_data()
            .try_into_vec()
            .unwrap();
            for i in 0..n {
                for h in 0..heads {
                    let kv = h / (heads / kv_heads);
                    let base = ((first + i) * kv_heads + kv) * cap;
                    let qv = &q[(i * heads + h) * d..][..d];
                    let scores: Vec<f64> = (0..lens[i])
                        .map(|t| qv.iter().zip(&keys[(base + t) * d..][..d]).map(|(a, b)| f64::from(a * b)).sum::<f64>() / (d as f64).sqrt())
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for j in 0..d {
                        let want: f64 = scores.iter().enumerate().map(|(t, s)| (s - max).exp() / total * f64::from(values[(base + t) * d + j])).sum();
                        let g = f64::from(got[(i * heads + h) * d + j]);
                        assert!((g - want).abs() < 1e-4, "{kv_dtype:?} cache: row {i} head {h} dim {j}: {g} vs {want}");
                    }
                }
            }
        }
    }
}

/// The GPU's RMSNorm kernel (one launch for burn's seven ops) against a plain f64 reference:
/// widths below, at and above the units of its cube, and one row and many.
#[test]
fn gpu_rms_norm_equals_a_reference() {
    use genprm::burn::tensor::{Tensor, TensorData};
    for (kind, device) in devices() {
        if kind == genprm::DeviceKind::Cpu {
            continue;
        }
        for (rows, cols) in [(1usize, 32usize), (3, 128), (20, 1536), (2, 200)] {
            let x: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.377).sin() * if i % 53 == 0 { 40.0 } else { 1.5 }).collect();
            let w: Vec<f32> = (0..cols).map(|i| 0.5 + (i as f32 * 0.11).cos()).collect();
            let eps = 1e-6;
            let got: Vec<f32> = genprm::gpu_layer::rms_norm(
                Tensor::<2>::from_data(TensorData::new(x.clone(), [rows, cols]), &device),
                &Tensor::<1>::from_data(TensorData::new(w.clone(), [cols]), &device),
                eps,
            )
            .into_data()
            .try_into_vec()
            .unwrap();
            for r in 0..rows {
                let row = &x[r * cols..][..cols];
                let mean: f64 = row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / cols as f64;
                let inv = 1.0 / (mean + eps).sqrt();
                for c in 0..cols {
                    let want = f64::from(row[c]) * inv * f64::from(w[c]);
                    let g = f64::from(got[r * cols + c]);
                    assert!((g - want).abs() <= 1e-5 * want.abs().max(1.0), "{rows}x{cols} [{r},{c}]: {g} vs {want}");
                }
            }
        }
    }
}

/// The GPU's rotary-embedding kernel, which reads the q/k/v projection's output and also
/// writes the new keys and values into the KV cache (f32, and f16 where the GPU has it), against
/// the "rotate half" formula: the rotated queries, every written cache row, and every other
/// cache row untouched. A cache another handle still holds is copied, not overwritten.
#[test]
fn gpu_rotary_and_cache_write_equal_a_reference() {
    use genprm::burn::tensor::{DType, Int, Tensor, TensorData};
    use genprm::gpu_layer::{NewPositions, rotary_and_cache_write};
    for (kind, device) in devices() {
        if kind == genprm::DeviceKind::Cpu {
            continue;
        }
        let kv_types = if genprm::gpu_quant::supports_f16(&device) { vec![DType::F32, DType::F16] } else { vec![DType::F32] };
        for kv_dtype in kv_types {
            let (rows, seq, heads, kv_heads, d, cap) = (2usize, 3usize, 4usize, 2usize, 8usize, 8usize);
            let (m, half) = (rows * seq, d / 2);
            let val = |i: usize, salt: f32| (i as f32 * 0.618 + salt).sin() * 1.7;
            let stored = |x: f32| if kv_dtype == DType::F16 { half::f16::from_f32(x).to_f32() } else { x };
            let q: Vec<f32> = (0..m * heads * d).map(|i| val(i, 0.1)).collect();
            let k: Vec<f32> = (0..m * kv_heads * d).map(|i| val(i, 0.7)).collect();
            let v: Vec<f32> = (0..m * kv_heads * d).map(|i| val(i, 1.3)).collect();
            // Per position: the cosines of its d/2 angles, then their sines.
            let angle = |p: usize, i: usize| (p * half + i) as f32 * 0.21;
            let table: Vec<f32> = (0..m).flat_map(|p| (0..half).map(move |i| angle(p, i).cos()).chain((0..half).map(move |i| angle(p, i).sin()))).collect();
            // Row r's new positions start at 2 + r; the cache has 3 rows (the batch is rows 1 and 2).
            let first = 1;
            let mut writes = Vec::new();
            for r in 0..rows {
                for h in 0..kv_heads {
                    writes.extend((0..seq).map(|s| (((first + r) * kv_heads + h) * cap + 2 + r + s) as i32));
                }
            }
            let cache_rows = (first + rows) * kv_heads * cap;
            let old: Vec<f32> = (0..cache_rows * d).map(|i| stored(val(i, 2.2))).collect();
            let t2 = |x: &[f32], shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(x.to_vec(), shape), &device);
            let keys = t2(&old, [cache_rows, d]).cast(kv_dtype);
            let values = t2(&old, [cache_rows, d]).cast(kv_dtype);
            // The projection's output: each position's queries, then keys, then values.
            let width = (heads + 2 * kv_heads) * d;
            let qkv: Vec<f32> = (0..m)
                .flat_map(|p| {
                    let row = q[p * heads * d..][..heads * d].iter().chain(&k[p * kv_heads * d..][..kv_heads * d]);
                    row.chain(&v[p * kv_heads * d..][..kv_heads * d]).copied().collect::<Vec<f32>>()
                })
                .collect();
            assert_eq!(qkv.len(), m * width);
            let held_keys = keys.clone();
            let shape = NewPositions { rows, seq, heads, kv_heads, head_dim: d };
            let writes_t = Tensor::<1, Int>::from_data(TensorData::new(writes.clone(), [writes.len()]), &device);
            let (q_out, keys, values) = rotary_and_cache_write(t2(&qkv, [m, width]), t2(&table, [m, d]), &writes_t, (keys, values), shape);
            let host = |t: Tensor<2>| -> Vec<f32> { t.cast(DType::F32).into_data().try_into_vec().unwrap() };
            let (q_out, keys, values) = (host(q_out), host(keys), host(values));
            assert_eq!(host(held_keys), old, "{kv_dtype:?}: a cache another tensor holds was overwritten");
            // transformers: x·cos + rotate_half(x)·sin, cos and sin repeated over the halves.
            let rot = |src: &[f32], base: usize, j: usize, p: usize| {
                let (c, s) = (angle(p, j % half).cos(), angle(p, j % half).sin());
                let other = if j < half { -src[base + j + half] } else { src[base + j - half] };
                src[base + j] * c + other * s
            };
            let mut written = vec![false; cache_rows];
            for r in 0..rows {
                for s in 0..seq {
                    let p = r * seq + s;
                    for j in 0..d {
                        for h in 0..heads {
                            let at = (p * heads + h) * d + j;
                            let want = rot(&q, (p * heads + h) * d, j, p);
                            assert!((q_out[at] - want).abs() < 1e-5, "{kv_dtype:?}: q row {r} pos {s} head {h} dim {j}: {} vs {want}", q_out[at]);
                        }
                        for h in 0..kv_heads {
                            let at = writes[(r * kv_heads + h) * seq + s] as usize;
                            written[at] = true;
                            let want_k = stored(rot(&k, (p * kv_heads + h) * d, j, p));
                            let want_v = stored(v[(p * kv_heads + h) * d + j]);
                            let tol = if kv_dtype == DType::F16 { 2e-3 } else { 1e-5 };
                            assert!((keys[at * d + j] - want_k).abs() < tol, "{kv_dtype:?}: key row {r} pos {s} head {h} dim {j}");
                            assert_eq!(values[at * d + j], want_v, "{kv_dtype:?}: value row {r} pos {s} head {h} dim {j}");
                        }
                    }
                }
            }
            for (row, w) in written.iter().enumerate() {
                if !w {
                    assert_eq!(&keys[row * d..][..d], &old[row * d..][..d], "{kv_dtype:?}: cache row {row} was not to be written");
                    assert_eq!(&values[row * d..][..d], &old[row * d..][..d], "{kv_dtype:?}: cache row {row} was not to be written");
                }
            }
        }
    }
}

/// The GPU's top-k selection (what a decode step reads back instead of the whole row) against a
/// sort on the host: the k largest by value, the lower id first among equal values (many ties
/// here), at GenPRM's vocabulary and at sizes below the kernel's lanes; a row with NaN, and
/// one with fewer than k values above the kernel's floor, ask for the whole row instead.
#[test]
fn gpu_top_k_equals_a_sort() {
    use genprm::burn::tensor::{Tensor, TensorData};
    use genprm::gpu_topk::{Candidates, top_k};
    for (kind, device) in devices() {
        if kind == genprm::DeviceKind::Cpu {
            continue;
        }
        for (rows, vocab) in [(1usize, 151_936usize), (3, 1000), (2, 5), (8, 40_000)] {
            // Values on a coarse grid: many equal values, so the order among ties matters.
            let x: Vec<f32> = (0..rows * vocab).map(|i| ((i as f32 * 0.7371).sin() * 9.0).round() + (i % 7) as f32 * 0.25).collect();
            for k in [1usize, 3, 21] {
                let out: Vec<f32> = top_k(Tensor::<2>::from_data(TensorData::new(x.clone(), [rows, vocab]), &device), k)
                    .into_data()
                    .try_into_vec()
                    .unwrap();
                assert_eq!(out.len(), rows * 2 * k);
                for r in 0..rows {
                    let row = &x[r * vocab..][..vocab];
                    let got = Candidates::parse(&out[r * 2 * k..][..2 * k], vocab);
                    if k > vocab {
                        assert_eq!(got, None, "{rows}x{vocab} k={k}: fewer values than k must ask for the row");
                        continue;
                    }
                    let mut order: Vec<usize> = (0..vocab).collect();
                    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                    let mut want: Vec<usize> = order[..k].to_vec();
                    // The values come back largest first, as selected.
                    let by_value: Vec<f32> = out[r * 2 * k..][..k].to_vec();
                    assert_eq!(by_value, want.iter().map(|&i| row[i]).collect::<Vec<_>>(), "{rows}x{vocab} k={k} row {r}: values");
                    want.sort();
                    let got = got.unwrap_or_else(|| panic!("{rows}x{vocab} k={k} row {r}: asked for the whole row"));
                    assert_eq!(got.ids, want.iter().map(|&i| i as u32).collect::<Vec<_>>(), "{rows}x{vocab} k={k} row {r}: ids");
                    assert_eq!(got.values, want.iter().map(|&i| row[i]).collect::<Vec<_>>(), "{rows}x{vocab} k={k} row {r}");
                }
            }
        }
        // NaN anywhere in a row: the row must be read whole (the host's order puts NaN apart).
        let mut x: Vec<f32> = (0..2 * 3000).map(|i| (i as f32 * 0.1).cos()).collect();
        x[3000 + 1234] = f32::NAN;
        let out: Vec<f32> = top_k(Tensor::<2>::from_data(TensorData::new(x, [2, 3000]), &device), 4).into_data().try_into_vec().unwrap();
        assert!(Candidates::parse(&out[..8], 3000).is_some(), "the row without NaN is usable");
        assert_eq!(Candidates::parse(&out[8..], 3000), None, "the row with NaN asks for the whole row");
    }
}
