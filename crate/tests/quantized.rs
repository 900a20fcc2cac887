//! Quantized weights (q8, q4): whole-model logits against f32 on the fixtures whose widths the
//! group size divides, on every device; the trained tiny GenPRM still verifies correctly in q8.

mod common;

use common::*;
use genprm::generate::block_on;
use genprm::{LoadOptions, LoadedModel, QuantFormat};

fn load_q(name: &str, device: &genprm::burn::tensor::Device, quant: Option<QuantFormat>) -> LoadedModel {
    LoadedModel::load_with(&model_dir(name), device, LoadOptions { quant, ..Default::default() }, |_| {}).unwrap()
}

/// (max |Δlogit|, share of positions whose argmax agrees) between two sets of logits rows.
fn compare(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, f32) {
    let mut worst = 0f32;
    let mut agree = 0usize;
    for (x, y) in a.iter().zip(b) {
        worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(worst, f32::max);
        agree += usize::from(genprm::sampling::argmax(x) == genprm::sampling::argmax(y));
    }
    (worst, agree as f32 / a.len() as f32)
}

fn prompt(name: &str) -> Vec<u32> {
    if name == "tiny-genprm" {
        let tok = genprm::Tokenizer::from_dir(&model_dir(name)).unwrap();
        let text = "<｜begin▁of▁sentence｜>You are a math teacher. Your task is to review and critique the paragraphs in solution step by step.<｜User｜>Question: What is 2 + 3?\n\n2 + 3 = 5.<｜Assistant｜><analyze>\nLet's analyze the Paragraph 1 step by step: The paragraph adds 2 and 3 and gets 5, which is correct.\n</analyze>\n";
        tok.encode(text, false).unwrap()
    } else {
        expected(name).prompt_ids
    }
}

#[test]
fn quantized_logits_stay_close_to_f32() {
    for (kind, device) in devices() {
        for name in ["tiny-mha-tied-f16", "tiny-genprm"] {
            let ids = prompt(name);
            let f32_rows = block_on(genprm::score(&load_q(name, &device, None).model, &ids)).unwrap();
            let range = f32_rows.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
            // Bounds: the trained model is the realistic case; random Gaussian weights at width 32
            // are the worst case for 4 bits (measured: q4 agrees on 3 of 8 positions there), so
            // only q8 is bounded for them. The CPU kernels also round the activations to 8 bits
            // per group of 32 (issue #4), which the bounds absorb unchanged. Measured on the CPU
            // with it (in brackets: the GPU, whose activations stay f32): tiny-mha-tied-f16 q8 error 0.92
            // of range 22.0 = 4.2% (0.76 = 3.5%), top-1 23 of 24 = 0.958 (24 of 24);
            // tiny-genprm q8 0.104 of 11.8 = 0.9% (0.101), top-1 0.987 (0.987); q4 1.84 = 16%
            // (1.86), 0.934 (0.934).
            let bounds: &[(QuantFormat, f32, f32)] = if name == "tiny-genprm" {
                &[(QuantFormat::Q8, 0.02, 0.95), (QuantFormat::Q4, 0.25, 0.85)]
            } else {
                &[(QuantFormat::Q8, 0.05, 0.95), (QuantFormat::Q4, 1.0, 0.0)]
            };
            for &(format, max_rel, min_agree) in bounds {
                let q = block_on(genprm::score(&load_q(name, &device, Some(format)).model, &ids)).unwrap();
                let (err, agree) = compare(&f32_rows, &q);
                println!("{name} {format} on {kind}: max |Δlogit| {err:.4} (logit range {range:.2}), top-1 agreement {agree:.3}");
                assert!(err <= max_rel * range, "{name} {format} on {kind}: error {err} vs range {range}");
                assert!(agree >= min_agree, "{name} {format} on {kind}: top-1 agreement {agree}");
            }
        }
    }
}

#[test]
fn cpu_and_gpu_packed_kernels_agree_on_a_whole_model() {
    let all = devices();
    if all.len() < 2 {
        return;
    }
    for format in [QuantFormat::Q8, QuantFormat::Q4] {
        let ids = prompt("tiny-genprm");
        let rows: Vec<Vec<Vec<f32>>> =
            all.iter().map(|(_, d)| block_on(genprm::score(&load_q("tiny-genprm", d, Some(format)).model, &ids)).unwrap()).collect();
        let (err, agree) = compare(&rows[0], &rows[1]);
        let range = rows[1].iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        println!("{format}: cpu vs gpu: max |Δlogit| {err:.4} (logit range {range:.2}), top-1 agreement {agree:.3}");
        // The CPU kernels round the activations to 8 bits per group of 32 (issue #4; the GPU
        // kernels keep them f32), so the two agree up to that rounding, not to f32 precision
        // (they agreed within 1e-3 before). Measured: q8 0.095, q4 0.064 on a logit range of
        // 11.8 (0.8%, 0.5%), every top-1 equal.
        assert!(err <= 0.02 * range && agree == 1.0, "{format}: cpu vs gpu differ by {err} (range {range}), top-1 agreement {agree}");
    }
}

#[test]
fn group_size_that_does_not_divide_is_a_clear_error() {
    let device = genprm::device(genprm::DeviceKind::Cpu).unwrap();
    let e = match LoadedModel::load_with(&model_dir("tiny-gqa-f32"), &device, LoadOptions { quant: Some(QuantFormat::Q4), ..Default::default() }, |_| {}) {
        Ok(_) => panic!("hidden 48 is not a multiple of 32"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("model.embed_tokens.weight") && e.contains("48") && e.contains("32"), "{e}");
}

#[test]
fn q8_tiny_genprm_still_verifies_correctly() {
    use genprm::prm::{self, Solution, VerifyOptions};
    let device = genprm::device(genprm::DeviceKind::Cpu).unwrap();
    let m = load_q("tiny-genprm", &device, Some(QuantFormat::Q8));
    let tok = m.tokenizer().unwrap();
    let mut engine = genprm::LocalEngine::new(&m.model, tok).unwrap();
    let mut execs = vec![genprm::exec::native::PythonSandbox::new(Default::default()).unwrap()];
    let sol = Solution::new(
        "Tom has 3 apples and buys 4 more. How many apples does he have?",
        vec!["Tom starts with 3 apples.".into(), "He buys 4 more, so he has 3 + 4 = 8 apples.".into(), "The answer is 8.".into()],
    );
    let opts = VerifyOptions { sampling: genprm::Sampling::Greedy, ..Default::default() };
    let v = block_on(prm::verify(&mut engine, tok, &mut execs, &sol, &opts, &mut |_| {})).unwrap();
    assert_eq!(v.first_error_step, 1);
    let rewards: Vec<f64> = v.steps.iter().map(|s| s.reward).collect();
    assert!(rewards[0] > 0.9 && rewards[1] < 0.1 && rewards[2] < 0.1, "{rewards:?}");
}

#[test]
fn weights_split_into_blocks_multiply_and_gather_like_one_tensor() {
    use genprm::Weight;
    use genprm::burn::tensor::{Tensor, TensorData};
    for (kind, device) in devices() {
        let (rows, cols) = (37, 8);
        let data: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let whole = Weight::float_in_blocks(data.clone(), rows, cols, &device, 1 << 20);
        // 5 rows of 8 f32 per block: 8 blocks, the last one short.
        let split = Weight::float_in_blocks(data, rows, cols, &device, 5 * cols * 4);
        assert!(matches!(&split, Weight::Float(b) if b.len() == 8));
        let x: Vec<f32> = (0..3 * cols).map(|i| (i as f32 * 0.11).cos()).collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [3, cols]), &device);
        let a: Vec<f32> = whole.matmul_t(x.clone()).into_data().try_into_vec().unwrap();
        let b: Vec<f32> = split.matmul_t(x).into_data().try_into_vec().unwrap();
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5), "{kind}: matmul");
        let ids = [0u32, 36, 5, 4, 17, 5];
        let a: Vec<f32> = whole.gather(&ids, &device).into_data().try_into_vec().unwrap();
        let b: Vec<f32> = split.gather(&ids, &device).into_data().try_into_vec().unwrap();
        assert_eq!(a, b, "{kind}: gather");
    }
}

fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_genprm")).args(args).output().unwrap()
}

#[test]
fn packs_round_trip_and_refuse_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = tmp.path().join("pack");
    let model = model_dir("tiny-genprm");
    let out = run_cli(&["quantize", "--model", model.to_str().unwrap(), "--to", "q4", "--head", "q8", "--out", pack.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "genprm-pack.json", "weights-00001.bin"] {
        assert!(pack.join(f).exists(), "{f}");
    }
    // The manifest lists the folder's other files (the browser asks for no file it lacks): those
    // the source had, exactly.
    let listed: serde_json::Value = serde_json::from_slice(&std::fs::read(pack.join("genprm-pack.json")).unwrap()).unwrap();
    let listed: Vec<&str> = listed["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    let had: Vec<&str> = genprm::pack::SIDE_FILES.iter().copied().filter(|f| model.join(f).exists()).collect();
    assert_eq!(listed, had);
    assert!(listed.contains(&"chat_template.jinja") && listed.contains(&"config.json"), "{listed:?}");
    // The pack loads to the same numbers as quantizing on the fly, on every device.
    let ids = prompt("tiny-genprm");
    for (kind, device) in devices() {
        let on_the_fly = LoadedModel::load_with(&model, &device, LoadOptions { quant: Some(QuantFormat::Q4), head_quant: Some(QuantFormat::Q8), ..Default::default() }, |_| {}).unwrap();
        let packed = LoadedModel::load(&pack, &device, |_| {}).unwrap();
        let a = block_on(genprm::score(&on_the_fly.model, &ids)).unwrap();
        let b = block_on(genprm::score(&packed.model, &ids)).unwrap();
        let (err, agree) = compare(&a, &b);
        assert!(err < 1e-4 && agree == 1.0, "{kind}: pack differs by {err}");
    }
    // f16 scales: every scale takes 2 bytes instead of 4, the logits stay close to the f32-scale
    // pack's; f32 packs carry no `scale_dtype` (earlier versions read them) and read as f32.
    let pack16 = tmp.path().join("pack16");
    let out = run_cli(&["quantize", "--model", model.to_str().unwrap(), "--to", "q4", "--head", "q8", "--scales", "f16", "--out", pack16.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = |dir: &std::path::Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(dir.join("genprm-pack.json")).unwrap()).unwrap() };
    let (m32, m16) = (manifest(&pack), manifest(&pack16));
    assert_eq!((m32.get("scale_dtype"), m16["scale_dtype"].as_str()), (None, Some("f16")));
    let sum = |m: &serde_json::Value, key: &str, list: &str| -> u64 { m[list].as_array().unwrap().iter().map(|t| t[key].as_u64().unwrap()).sum() };
    let scales32 = sum(&m32, "scales_bytes", "tensors");
    assert!(scales32 > 0);
    assert_eq!(sum(&m16, "scales_bytes", "tensors") * 2, scales32);
    assert_eq!(sum(&m16, "bytes", "shards"), sum(&m32, "bytes", "shards") - scales32 / 2);
    let device = genprm::device(genprm::DeviceKind::Cpu).unwrap();
    let score_of = |dir: &std::path::Path| block_on(genprm::score(&LoadedModel::load(dir, &device, |_| {}).unwrap().model, &ids)).unwrap();
    let (a, b) = (score_of(&pack), score_of(&pack16));
    let (err, agree) = compare(&a, &b);
    let range = a.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    println!("q4 pack, f16 against f32 scales: max |Δlogit| {err:.4} (range {range:.2}), top-1 agreement {agree:.3}");
    assert!(err <= 0.02 * range && agree >= 0.95, "f16 scales differ by {err} (range {range}), top-1 agreement {agree}");
    // An explicit "f32" reads the same as none.
    let text = std::fs::read_to_string(pack.join("genprm-pack.json")).unwrap();
    let explicit = text.replacen("\"group_size\": 32,", "\"group_size\": 32,\n  \"scale_dtype\": \"f32\",", 1);
    assert_ne!(explicit, text);
    std::fs::write(pack.join("genprm-pack.json"), &explicit).unwrap();
    assert_eq!(score_of(&pack), a, "scale_dtype f32 reads as f32 scales");
    std::fs::write(pack.join("genprm-pack.json"), &text).unwrap();
    let e = run_cli(&["quantize", "--model", model.to_str().unwrap(), "--to", "q4", "--scales", "bf16", "--out", tmp.path().join("x").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("bf16") && err.contains("f16"), "{err}");

    // A --quant the pack cannot honour is refused, naming the pack's format; its own is fine.
    let e = run_cli(&["logits", "--model", pack.to_str().unwrap(), "--ids", "1,2", "--quant", "q8"]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("is a q4 pack") && err.contains("--quant q8"), "{err}");
    let same = run_cli(&["logits", "--model", pack.to_str().unwrap(), "--ids", "1,2", "--quant", "q4"]);
    assert!(same.status.success(), "{}", String::from_utf8_lossy(&same.stderr));

    // A pack verifies end to end through the CLI.
    let input = fixtures().join("protocol/e2e.json");
    let out = run_cli(&["verify", "--model", pack.to_str().unwrap(), "--input", input.to_str().unwrap(), "--greedy", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A corrupt shard is named.
    let shard = pack.join("weights-00001.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[100] ^= 0xFF;
    std::fs::write(&shard, &bytes).unwrap();
    let e = run_cli(&["logits", "--model", pack.to_str().unwrap(), "--ids", "1,2"]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("weights-00001.bin") && err.contains("checksum"), "{err}");
    bytes[100] ^= 0xFF;
    std::fs::write(&shard, &bytes).unwrap();

    // A config.json the manifest was not made for is refused.
    let cfg = pack.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 1e-05")).unwrap();
    let e = run_cli(&["logits", "--model", pack.to_str().unwrap(), "--ids", "1,2"]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("config.json") && err.contains("genprm-pack.json"), "{err}");
    std::fs::write(&cfg, text).unwrap();

    // The pack's config.json says it is one (a browser reads its manifest first, asking for no
    // model.safetensors); that config without the manifest is named, and a pack is not packed again.
    let marked: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(marked["quantization_config"]["quant_method"], "genprm-pack");
    let manifest_path = pack.join("genprm-pack.json");
    let manifest_text = std::fs::read(&manifest_path).unwrap();
    std::fs::remove_file(&manifest_path).unwrap();
    let e = run_cli(&["logits", "--model", pack.to_str().unwrap(), "--ids", "1,2"]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("genprm-pack.json") && err.contains("says the folder is a genprm pack"), "{err}");
    std::fs::write(&manifest_path, manifest_text).unwrap();
    let e = run_cli(&["quantize", "--model", pack.to_str().unwrap(), "--to", "q8", "--out", tmp.path().join("again").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("model.safetensors"), "{err}");

    // A group size that does not divide a width is refused when packing.
    let e = run_cli(&["quantize", "--model", model_dir("tiny-gqa-f32").to_str().unwrap(), "--to", "q8", "--out", tmp.path().join("bad").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("group size") && err.contains("48"), "{err}");
}

#[test]
fn gpu_packed_kernels_equal_the_dequantized_reference() {
    // Products (decode and prefill kernels), the expansion and the row lookup.
    use genprm::burn::tensor::{Tensor, TensorData};
    use genprm::gpu_quant::MatvecKernel;
    use genprm::model::Epilogue;
    use genprm::quant::QuantMatrix;
    for (kind, device) in devices() {
        if kind == genprm::DeviceKind::Cpu {
            continue;
        }
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            // n = 20 rows takes the prefill path (expand on the GPU, then a dense product); 8 and
            // 15 rows (a Maj@8 batch, the most below it) share each weight read.
            // 1536 and 8960 columns: more groups than the cooperative kernel has units per cube.
            for (rows, cols, n) in [(1usize, 32usize, 1usize), (37, 96, 1), (66, 64, 5), (300, 128, 2), (42, 64, 20), (5, 1536, 3), (2, 8960, 1), (20, 64, 8), (8, 128, 15)] {
                let w: Vec<f32> = (0..rows * cols).map(|i| ((i as f32 * 0.7123).sin() * 1.3) + if i % 97 == 0 { 4.0 } else { 0.0 }).collect();
                let q = QuantMatrix::quantize(&w, rows, cols, format, "w").unwrap();
                let d = q.dequantize();
                let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.31).cos()).collect();
                // Whole, and split into blocks of 7 rows (as matrices over the binding limit are).
                let row_bytes = q.values_bytes().len() / rows;
                // f32 prefill (this test's tolerances are f32's; the f16 one has its own test).
                let f32_prefill = |g: genprm::gpu_quant::GpuQuant| g.with_precision(genprm::gpu_quant::PrefillPrecision::F32).unwrap();
                for g in [genprm::gpu_quant::GpuQuant::upload(&q, &device), genprm::gpu_quant::GpuQuant::upload_in_blocks(&q, &device, 7 * row_bytes)].map(f32_prefill) {
                    assert_eq!(g.blocks(), if g.blocks() == 1 { 1 } else { rows.div_ceil(7) });
                    let expanded: Vec<f32> = g.dequantize().into_data().try_into_vec().unwrap();
                    assert!(expanded.iter().zip(&d).all(|(a, b)| (a - b).abs() < 1e-6), "{format}: GPU expansion");
                    // The embedding lookup from the packed blocks: first and last rows, block
                    // edges, repeats, out of order.
                    let ids: Vec<u32> = [0, rows - 1, 6, 7, rows / 2, 0, rows - 1].iter().map(|&r| r.min(rows - 1) as u32).collect();
                    let rows_got: Vec<f32> = g.gather(&ids).into_data().try_into_vec().unwrap();
                    let rows_want: Vec<f32> = ids.iter().flat_map(|&r| d[r as usize * cols..][..cols].to_vec()).collect();
                    assert_eq!(rows_got, rows_want, "{format} {rows}x{cols} blocks {}: GPU gather", g.blocks());
                    // The product alone, and with a bias and each epilogue (in the kernels'
                    // launch for one block and few rows, with burn's ops otherwise).
                    let bias: Vec<f32> = (0..rows).map(|r| (r as f32 * 0.9).sin()).collect();
                    let extra: Vec<f32> = (0..n * rows).map(|i| (i as f32 * 0.43).cos() * 3.0).collect();
                    let tensor = |v: &[f32], shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), shape), &device);
                    let bias_t = Tensor::<1>::from_data(TensorData::new(bias.clone(), [rows]), &device);
                    // An RMSNorm applied to the input as the kernels read it (with a residual
                    // add, or in prefill, it runs on its own first).
                    let norm_weight: Vec<f32> = (0..cols).map(|k| 0.5 + (k as f32 * 0.37).sin().abs()).collect();
                    let norm_t = Tensor::<1>::from_data(TensorData::new(norm_weight.clone(), [cols]), &device);
                    let eps = 1e-6;
                    let normed_x: Vec<f32> = x
                        .chunks(cols)
                        .flat_map(|row| {
                            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / cols as f32 + eps as f32).sqrt();
                            row.iter().zip(&norm_weight).map(move |(v, w)| v * inv * w)
                        })
                        .collect();
                    for (kernel, normed) in [MatvecKernel::Cooperative, MatvecKernel::PerUnit].into_iter().flat_map(|k| [(k, false), (k, true)]) {
                        let norm = normed.then_some(genprm::gpu_quant::InputNorm { weight: &norm_t, eps });
                        // What the product multiplies.
                        let xr = if normed { &normed_x } else { &x };
                        for then in 0..4 {
                            // SwiGLU pairs row r (gate) with row r + rows/2 (up).
                            if then == 3 && rows % 2 == 1 {
                                continue;
                            }
                            let epilogue = match then {
                                2 => Epilogue::Add(tensor(&extra, [n, rows])),
                                3 => Epilogue::SwiGlu,
                                _ => Epilogue::Plain,
                            };
                            let outs = if then == 3 { rows / 2 } else { rows };
                            let with_bias = (then > 0).then_some(&bias_t);
                            let y: Vec<f32> = g.matmul_t_with(tensor(&x, [n, cols]), norm, with_bias, epilogue, kernel).into_data().try_into_vec().unwrap();
                            assert_eq!(y.len(), n * outs);
                            let sum = |i: usize, r: usize| (0..cols).map(|k| xr[i * cols + k] * d[r * cols + k]).sum::<f32>() + if then > 0 { bias[r] } else { 0.0 };
                            for i in 0..n {
                                for r in 0..outs {
                                    let expect = match then {
                                        2 => extra[i * rows + r] + sum(i, r),
                                        3 => {
                                            let gate = sum(i, r);
                                            gate / (1.0 + (-gate).exp()) * sum(i, r + outs)
                                        }
                                        _ => sum(i, r),
                                    };
                                    let tol = 1e-3 * (cols as f32 / 128.0).max(1.0) * if then == 3 { 3.0 } else { 1.0 };
                                    let got = y[i * outs + r];
                                    assert!((got - expect).abs() < tol, "{format} {kernel:?} normed {normed} epilogue {then} {rows}x{cols} n={n} blocks {} [{i},{r}]: {got} vs {expect}", g.blocks());
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Logits for every position of `ids`: a prefill of [`genprm::model::PREFILL_ROWS`], then
/// one-token decode steps (the fused decode attention over the cache).
fn stepwise(m: &LoadedModel, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = genprm::KvCache::new();
    let v = m.model.vocab_size();
    let mut rows = Vec::new();
    let mut pos = 0;
    while pos < ids.len() {
        let chunk = if pos == 0 { genprm::model::PREFILL_ROWS } else { 1 };
        let t = m.model.forward(&ids[pos..pos + chunk], 1, &mut cache, genprm::LogitsFor::All).unwrap();
        rows.extend(t.into_data().try_into_vec::<f32>().unwrap().chunks(v).map(<[f32]>::to_vec));
        pos += chunk;
    }
    assert_eq!(cache.dtype(), Some(m.model.kv_dtype()));
    rows
}

/// Maj@N's decode over a shared prompt: `ids[..p]` prefilled once in row 0 and copied to rows
/// 1 and 2, then one decode step on the three rows together; returns the largest difference of
/// each row's logits from the same step on a single sequence.
fn copied_rows_against_one(m: &LoadedModel, ids: &[u32], p: usize) -> f32 {
    let v = m.model.vocab_size();
    let mut cache = genprm::KvCache::new();
    m.model.forward(&ids[..p], 1, &mut cache, genprm::LogitsFor::Last).unwrap();
    for r in 1..3 {
        cache.copy_prefix(0, r, p).unwrap();
    }
    assert_eq!(cache.dtype(), Some(m.model.kv_dtype()));
    let next = [ids[p]];
    let rows: Vec<f32> = m.model.forward_rows(0, &[&next[..]; 3], &mut cache, genprm::LogitsFor::Last).unwrap().into_data().try_into_vec().unwrap();
    let mut single = genprm::KvCache::new();
    m.model.forward(&ids[..p], 1, &mut single, genprm::LogitsFor::Last).unwrap();
    let alone: Vec<f32> = m.model.forward(&next, 1, &mut single, genprm::LogitsFor::Last).unwrap().into_data().try_into_vec().unwrap();
    rows.chunks(v).flat_map(|row| row.iter().zip(&alone).map(|(a, b)| (a - b).abs())).fold(0f32, f32::max)
}

/// The f16 KV cache (`LoadOptions::kv_f16`): f32 by default on the CPU and f16 there when asked
/// for, on a GPU with f16 mode unless turned off, refused on a GPU outside f16 mode; wherever
/// it is used, the whole model (prefill, decode steps, Maj@N's copied prompt) stays close to the
/// f32 cache.
#[test]
fn f16_kv_cache_where_asked_for() {
    use genprm::burn::tensor::DType;
    let ids = prompt("tiny-genprm");
    let load = |device: &genprm::burn::tensor::Device, quant, gpu_f16, kv_f16| {
        LoadedModel::load_with(&model_dir("tiny-genprm"), device, LoadOptions { quant, gpu_f16, kv_f16, ..Default::default() }, |_| {})
    };
    for (kind, device) in devices() {
        let gpu = kind != genprm::DeviceKind::Cpu;
        if gpu && !genprm::gpu_quant::supports_f16(&device) {
            continue;
        }
        // Quantized weights (f16 mode possible on a GPU), and f32 weights on the CPU.
        let formats: &[Option<QuantFormat>] = if gpu { &[Some(QuantFormat::Q4)] } else { &[None, Some(QuantFormat::Q4)] };
        for &quant in formats {
            let default = load(&device, quant, None, None).unwrap();
            assert_eq!(default.model.kv_dtype(), if gpu { DType::F16 } else { DType::F32 }, "{kind} {quant:?}: the default");
            let (m16, m32) = (load(&device, quant, None, Some(true)).unwrap(), load(&device, quant, None, Some(false)).unwrap());
            assert_eq!((m16.model.kv_dtype(), m32.model.kv_dtype()), (DType::F16, DType::F32), "{kind} {quant:?}");
            assert_eq!(m16.model.gpu_f16(), m32.model.gpu_f16(), "{kind} {quant:?}: the cache choice leaves f16 mode alone");
            let (a, b) = (stepwise(&m16, &ids), stepwise(&m32, &ids));
            let (err, agree) = compare(&a, &b);
            let range = b.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
            println!("tiny-genprm {quant:?} on {kind}: f16 vs f32 KV cache: max |Δlogit| {err:.5} (logit range {range:.2}), top-1 agreement {agree:.3}");
            assert!(err > 0.0, "{kind} {quant:?}: the f16 cache changed nothing (was it used?)");
            // The CPU's packed kernels round activations to 8 bits per group of 32, which turns
            // the cache's rounding into a larger step now and then (measured: f32 weights 0.0028,
            // q4 0.105 of a logit range of 11.9 — 0.02% and 0.9%; the GPU q4 0.003).
            let bound = if quant.is_some() && !gpu { 0.015 } else { 0.005 };
            assert!(err <= bound * range && agree >= 0.97, "{kind} {quant:?}: the f16 cache differs by {err} (range {range}), top-1 agreement {agree}");
            for m in [&m16, &m32] {
                let d = copied_rows_against_one(m, &ids, genprm::model::PREFILL_ROWS + 4);
                assert!(d < 1e-3, "{kind} {quant:?} {:?} cache: copied rows differ from a single sequence by {d}", m.model.kv_dtype());
            }
        }
        if gpu {
            let e = match load(&device, Some(QuantFormat::Q4), Some(false), Some(true)) {
                Ok(_) => panic!("an f16 KV cache outside f16 mode"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("f16 mode"), "{e}");
        }
    }
}

/// f16 mode: chosen where the GPU has f16 arithmetic (lavapipe, the GPU of these tests, reports
/// `shaderFloat16`), refused where it has none; the f16 prefill product is close to the f32 one
/// with activations far beyond f16's range (the rows are scaled before rounding), and a whole
/// model with an f16 KV cache stays close to f32 mode.
#[test]
fn gpu_f16_mode_where_the_device_has_it() {
    use genprm::burn::tensor::{DType, Tensor, TensorData};
    use genprm::gpu_quant::{GpuQuant, PrefillPrecision, prefill_precision, supports_f16};
    use genprm::quant::QuantMatrix;
    for (kind, device) in devices() {
        if kind == genprm::DeviceKind::Cpu {
            assert!(!supports_f16(&device));
            let e = match LoadedModel::load_with(&model_dir("tiny-genprm"), &device, LoadOptions { quant: Some(QuantFormat::Q8), gpu_f16: Some(true), ..Default::default() }, |_| {}) {
                Ok(_) => panic!("f16 prefill on the CPU device"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("f16"), "{e}");
            continue;
        }
        // GENPRM_EXPECT_GPU_F16=0 waives this on a GPU without f16 arithmetic.
        let f16 = supports_f16(&device);
        if std::env::var("GENPRM_EXPECT_GPU_F16").as_deref() != Ok("0") {
            assert!(f16, "the test GPU (lavapipe) reports shaderFloat16, but genprm sees no f16 support");
        }
        assert_eq!(prefill_precision(&device), if f16 { PrefillPrecision::F16 } else { PrefillPrecision::F32 });
        let q = QuantMatrix::quantize(&[0.5; 64], 2, 32, QuantFormat::Q8, "w").unwrap();
        if !f16 {
            assert!(GpuQuant::upload(&q, &device).with_precision(PrefillPrecision::F16).is_err());
            continue;
        }
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            // 16 and 17 rows: the prefill path; 1536 and 8960 columns: the 1.5B widths.
            for (rows, cols, n) in [(41usize, 64usize, 20usize), (300, 1536, 16), (7, 8960, 17)] {
                let w: Vec<f32> = (0..rows * cols).map(|i| ((i as f32 * 0.7123).sin() * 1.3) + if i % 97 == 0 { 4.0 } else { 0.0 }).collect();
                let q = QuantMatrix::quantize(&w, rows, cols, format, "w").unwrap();
                let d = q.dequantize();
                // Row 0 holds values up to 3e5 (f16 ends at 65,504), row 1 values down to 1e-3.
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| (i as f32 * 0.31).cos() * match i / cols { 0 => 3e5, 1 => 1e-3, _ => 1.0 })
                    .collect();
                let row_bytes = q.values_bytes().len() / rows;
                for g in [GpuQuant::upload(&q, &device), GpuQuant::upload_in_blocks(&q, &device, 7 * row_bytes)] {
                    let g16 = g.clone().with_precision(PrefillPrecision::F16).unwrap();
                    assert_eq!(g16.precision(), PrefillPrecision::F16);
                    // The f16 expansion is the f32 one rounded once.
                    let e16: Vec<f32> = g16.dequantize_as(DType::F16).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
                    assert!(e16.iter().zip(&d).all(|(a, b)| *a == half::f16::from_f32(*b).to_f32()), "{format}: f16 expansion");
                    let run = |g: &GpuQuant| -> Vec<f32> {
                        let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, cols]), &device);
                        g.matmul_t(xt).into_data().try_into_vec().unwrap()
                    };
                    let y16 = run(&g16);
                    let y32 = run(&g.clone().with_precision(PrefillPrecision::F32).unwrap());
                    for i in 0..n {
                        for r in 0..rows {
                            let (xs, ws) = (&x[i * cols..(i + 1) * cols], &d[r * cols..(r + 1) * cols]);
                            let expect: f64 = xs.iter().zip(ws).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                            let magnitude: f64 = xs.iter().zip(ws).map(|(a, b)| f64::from(a.abs()) * f64::from(b.abs())).sum();
                            let (got, got32) = (f64::from(y16[i * rows + r]), f64::from(y32[i * rows + r]));
                            // f16 rounds x and w to 11 significant bits each: ≤ 2·2⁻¹¹ of Σ|x·w|.
                            assert!(got.is_finite() && (got - expect).abs() <= 1.5e-3 * magnitude, "{format} f16 {rows}x{cols} n={n} [{i},{r}]: {got} vs {expect} (Σ|x·w| {magnitude})");
                            assert!((got32 - expect).abs() <= 1e-5 * magnitude, "{format} f32 {rows}x{cols} n={n} [{i},{r}]: {got32} vs {expect}");
                        }
                    }
                    // The two paths really differ: the f16 one was taken.
                    assert!(y16.iter().zip(&y32).any(|(a, b)| a != b), "{format}: f16 and f32 prefill gave identical results");
                }
            }
        }
        // A whole model in f16 mode (f16 prefill products, f16 KV cache) against f32 mode:
        // tiny-genprm's logits for a prompt prefilled in one pass, then for every position of
        // a prefill of 16 followed by one-token decode steps (the fused kernel over the cache).
        let ids = prompt("tiny-genprm");
        assert!(ids.len() >= genprm::model::PREFILL_ROWS + 8);
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            let load = |gpu_f16| LoadedModel::load_with(&model_dir("tiny-genprm"), &device, LoadOptions { quant: Some(format), gpu_f16: Some(gpu_f16), ..Default::default() }, |_| {}).unwrap();
            let (m16, m32) = (load(true), load(false));
            assert_eq!((m16.model.prefill_precision(), m16.model.kv_dtype()), (Some(PrefillPrecision::F16), DType::F16));
            assert_eq!((m32.model.prefill_precision(), m32.model.kv_dtype()), (Some(PrefillPrecision::F32), DType::F32));
            // Maj@N over an f16 cache: copied rows decode like a single sequence.
            let d = copied_rows_against_one(&m16, &ids, genprm::model::PREFILL_ROWS + 4);
            assert!(d < 1e-3, "{format}: copied rows differ from a single sequence by {d}");
            for (what, a, b) in [
                ("one prefill", block_on(genprm::score(&m16.model, &ids)).unwrap(), block_on(genprm::score(&m32.model, &ids)).unwrap()),
                ("prefill then decode", stepwise(&m16, &ids), stepwise(&m32, &ids)),
            ] {
                let (err, agree) = compare(&a, &b);
                let range = b.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
                println!("tiny-genprm {format} on gpu, {what}: f16 vs f32 mode: max |Δlogit| {err:.4} (logit range {range:.2}), top-1 agreement {agree:.3}");
                assert!(err <= 0.01 * range && agree >= 0.97, "{format}, {what}: f16 mode differs by {err} (range {range}), top-1 agreement {agree}");
            }
        }
    }
}

/// The bytes a decode step reads, the denominator of the memory-bandwidth bound: every layer's
/// matrices (f32, or packed levels plus an f32 scale per 32), biases and norms, the final norm
/// and the head, whatever the device keeps them on.
#[test]
fn decode_weight_bytes_count_every_matrix_and_vector_read() {
    let name = "tiny-genprm";
    let c = genprm::Qwen2Config::from_file(&model_dir(name).join("config.json")).unwrap();
    let (h, hd, nh, kvh, inter, vocab) = (c.hidden_size, c.head_dim(), c.num_attention_heads, c.kv_heads(), c.intermediate_size, c.vocab_size);
    let per_layer = h * nh * hd + 2 * h * kvh * hd + nh * hd * h + 3 * h * inter;
    let weights = (c.num_hidden_layers * per_layer + vocab * h) as f64;
    let vectors = (c.num_hidden_layers * (nh * hd + 2 * kvh * hd + 2 * h) + h) as f64 * 4.0;
    for (kind, device) in devices() {
        for (quant, bytes_per_weight) in [(None, 4.0), (Some(QuantFormat::Q8), 1.0 + 4.0 / 32.0), (Some(QuantFormat::Q4), 0.5 + 4.0 / 32.0)] {
            let got = load_q(name, &device, quant).model.decode_weight_bytes();
            assert_eq!(got as f64, weights * bytes_per_weight + vectors, "{kind} {quant:?}");
        }
    }
}
