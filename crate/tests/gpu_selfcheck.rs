//! The start-up self-check of the GPU kernels (`genprm::gpu_selfcheck`): every kernel in every
//! mode agrees with its CPU reference on this machine's GPU (lavapipe in CI), a wrong answer is
//! an error naming the kernel, and loading a model on a GPU runs the check for the kernels that
//! model uses.

mod common;

use genprm::gpu_selfcheck::{self, Finish, Kernel, SelfCheck};
use genprm::gpu_quant::{MatvecKernel, PrefillPrecision};
use genprm::{DeviceKind, Error, LoadOptions, LoadedModel, QuantFormat};

fn gpu() -> genprm::burn::tensor::Device {
    genprm::device(DeviceKind::Gpu).unwrap_or_else(|e| panic!("GPU device unavailable (lavapipe provides one in CI): {e}"))
}

#[test]
fn every_kernel_in_every_mode_agrees_with_the_cpu() {
    let device = gpu();
    let kernels = gpu_selfcheck::all_kernels(&device);
    // Both formats, both decode kernels and their four epilogues; the f16 modes too where the
    // device has f16 arithmetic (this machine's lavapipe has none).
    assert!(kernels.len() >= 2 * (1 + 2 * 4 + 1) + 3, "{kernels:?}");
    let started = std::time::Instant::now();
    let outcome = genprm::generate::block_on(gpu_selfcheck::check(&device, &kernels)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{} kernels checked in {:?} on {:?} (f16: {})", kernels.len(), started.elapsed(), genprm::device::adapter_name(&device), genprm::gpu_quant::supports_f16(&device));
    for k in &kernels {
        eprintln!("  {k}");
    }
    assert_eq!(outcome, SelfCheck::Passed { kernels: kernels.len() });
}

#[test]
fn a_wrong_answer_is_an_error_naming_the_kernel() {
    let device = gpu();
    let kernels = gpu_selfcheck::all_kernels(&device);
    for &bad in &kernels {
        let _sabotage = gpu_selfcheck::sabotage(bad);
        let err = genprm::generate::block_on(gpu_selfcheck::check(&device, &kernels)).expect_err(&format!("{bad} was made wrong"));
        let message = err.to_string();
        match err {
            Error::GpuKernel { kernel, max_error, tolerance, .. } => {
                assert_eq!(kernel, bad.to_string());
                assert!(max_error > tolerance && max_error > 900.0, "{message}");
            }
            other => panic!("expected Error::GpuKernel for {bad}, got {other:?}"),
        }
        assert!(message.contains(&format!("the GPU kernel `{bad}` gave wrong results")), "{message}");
        assert!(message.contains("use the CPU device"), "{message}");
    }
    // The guard is gone: the same check passes again.
    genprm::generate::block_on(gpu_selfcheck::check(&device, &kernels)).unwrap();
}

#[test]
fn kernel_names_say_the_mode() {
    let names = [
        (Kernel::Decode { format: QuantFormat::Q4, kernel: MatvecKernel::Cooperative, finish: Finish::Plain, normed: false }, "q4 decode (cooperative)"),
        (Kernel::Decode { format: QuantFormat::Q4, kernel: MatvecKernel::Cooperative, finish: Finish::Bias, normed: true }, "q4 decode (cooperative, input RMSNorm, bias)"),
        (Kernel::Decode { format: QuantFormat::Q8, kernel: MatvecKernel::PerUnit, finish: Finish::SwiGlu, normed: false }, "q8 decode (per-unit, SwiGLU)"),
        (Kernel::Prefill { format: QuantFormat::Q4, precision: PrefillPrecision::F16 }, "q4 prefill (f16)"),
        (Kernel::Lookup { format: QuantFormat::Q8 }, "q8 embedding lookup"),
        (Kernel::RmsNorm, "RMSNorm"),
        (Kernel::RotaryCache { f16_cache: true }, "rotary + KV-cache write (f16 cache)"),
        (Kernel::Attention { f16_cache: false }, "decode attention (f32 cache)"),
        (Kernel::TopK { k: 21 }, "top-21 of the logits"),
    ];
    for (k, name) in names {
        assert_eq!(k.to_string(), name);
    }
}

/// tiny-genprm (separate embedding and head) on the GPU, loaded with `options`.
fn load_q4(device: &genprm::burn::tensor::Device, options: LoadOptions) -> genprm::Result<LoadedModel> {
    LoadedModel::load_with(&common::model_dir("tiny-genprm"), device, options, |_| {})
}

#[test]
fn loading_on_a_gpu_checks_the_kernels_the_model_uses() {
    let device = gpu();
    for gpu_f16 in [Some(false), None] {
        let options = LoadOptions { quant: Some(QuantFormat::Q4), head_quant: Some(QuantFormat::Q8), gpu_f16, ..Default::default() };
        let model = load_q4(&device, options).unwrap_or_else(|e| panic!("{e}")).model;
        let kernels = gpu_selfcheck::kernels_for(&model);
        let matvec = model.matvec_kernel().expect("packed weights on the GPU");
        let precision = model.prefill_precision().expect("packed weights on the GPU");
        let f16_cache = model.kv_dtype() == genprm::burn::tensor::DType::F16;
        eprintln!("gpu_f16 {gpu_f16:?}: {}", kernels.iter().map(|k| k.to_string()).collect::<Vec<_>>().join("; "));
        for k in [
            Kernel::RmsNorm,
            Kernel::RotaryCache { f16_cache },
            Kernel::Lookup { format: QuantFormat::Q8 },
            // The products after a norm apply it as they read their input.
            Kernel::Decode { format: QuantFormat::Q4, kernel: matvec, finish: Finish::Bias, normed: true },
            Kernel::Decode { format: QuantFormat::Q4, kernel: matvec, finish: Finish::Residual, normed: false },
            Kernel::Decode { format: QuantFormat::Q4, kernel: matvec, finish: Finish::SwiGlu, normed: true },
            Kernel::Decode { format: QuantFormat::Q8, kernel: matvec, finish: Finish::Plain, normed: true },
            Kernel::Prefill { format: QuantFormat::Q4, precision },
            Kernel::Prefill { format: QuantFormat::Q8, precision },
        ] {
            assert!(kernels.contains(&k), "{k} missing from {kernels:?}");
        }
        assert!(!kernels.contains(&Kernel::Lookup { format: QuantFormat::Q4 }), "the embedding is q8");
        assert_eq!(genprm::generate::block_on(gpu_selfcheck::check_model(&model)).unwrap(), SelfCheck::Passed { kernels: kernels.len() });

        // The same load with one of those kernels made wrong fails, naming it.
        for bad in [Kernel::Decode { format: QuantFormat::Q4, kernel: matvec, finish: Finish::SwiGlu, normed: true }, Kernel::RotaryCache { f16_cache }] {
            let _sabotage = gpu_selfcheck::sabotage(bad);
            match load_q4(&device, options) {
                Err(Error::GpuKernel { kernel, .. }) => assert_eq!(kernel, bad.to_string()),
                Err(other) => panic!("expected Error::GpuKernel for {bad}, got {other}"),
                Ok(_) => panic!("the load passed with {bad} made wrong"),
            }
        }
        // A kernel this model does not use is not run.
        let _sabotage = gpu_selfcheck::sabotage(Kernel::Lookup { format: QuantFormat::Q4 });
        load_q4(&device, options).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn a_tied_head_is_checked_as_a_product_too() {
    let device = gpu();
    let options = LoadOptions { quant: Some(QuantFormat::Q8), ..Default::default() };
    let model = LoadedModel::load_with(&common::model_dir("tiny-mha-tied-f16"), &device, options, |_| {}).unwrap_or_else(|e| panic!("{e}")).model;
    let kernels = gpu_selfcheck::kernels_for(&model);
    let (matvec, precision) = (model.matvec_kernel().unwrap(), model.prefill_precision().unwrap());
    for k in [
        Kernel::Lookup { format: QuantFormat::Q8 },
        Kernel::Decode { format: QuantFormat::Q8, kernel: matvec, finish: Finish::Plain, normed: true },
        Kernel::Prefill { format: QuantFormat::Q8, precision },
    ] {
        assert!(kernels.contains(&k), "{k} missing from {kernels:?}");
    }
}

#[test]
fn f32_weights_on_a_gpu_check_the_layer_kernels() {
    let device = gpu();
    let model = common::load("tiny-mha-tied-f16", &device).model;
    let kernels = gpu_selfcheck::kernels_for(&model);
    assert!(kernels.contains(&Kernel::RmsNorm) && kernels.contains(&Kernel::RotaryCache { f16_cache: false }), "{kernels:?}");
    assert!(!kernels.iter().any(|k| matches!(k, Kernel::Decode { .. } | Kernel::Prefill { .. } | Kernel::Lookup { .. })), "{kernels:?}");
    let _sabotage = gpu_selfcheck::sabotage(Kernel::RmsNorm);
    let err = LoadedModel::load(&common::model_dir("tiny-mha-tied-f16"), &device, |_| {}).err().expect("RMSNorm was made wrong");
    assert!(matches!(&err, Error::GpuKernel { kernel, .. } if kernel == "RMSNorm"), "{err}");
}

#[test]
fn the_cpu_device_has_nothing_to_check() {
    let cpu = genprm::device(DeviceKind::Cpu).unwrap();
    assert_eq!(genprm::generate::block_on(gpu_selfcheck::check(&cpu, &[Kernel::RmsNorm])).unwrap(), SelfCheck::NotAGpu);
    let _sabotage = gpu_selfcheck::sabotage(Kernel::RmsNorm);
    let model = common::load("tiny-gqa-f32", &cpu).model;
    assert!(gpu_selfcheck::kernels_for(&model).is_empty());
}

/// The GPU kernel choices are load options, not environment variables read inside the
/// kernels: the decode kernel and the attention a model was loaded with are the ones it
/// reports, runs and checks at start-up, whatever the environment says.
#[test]
fn kernel_choices_are_load_options() {
    use genprm::{DecodeAttention, MatvecKernel};
    let device = gpu();
    // SAFETY (set_var): this test binary's other tests do not read these variables.
    unsafe {
        std::env::set_var("GENPRM_GPU_MATVEC", "per-unit");
        std::env::set_var("GENPRM_GPU_ATTENTION", "fused");
    }
    for (matvec, attention) in [(MatvecKernel::Cooperative, DecodeAttention::Ops), (MatvecKernel::PerUnit, DecodeAttention::Fused)] {
        let options = LoadOptions { quant: Some(QuantFormat::Q4), gpu_matvec: Some(matvec), gpu_attention: attention, ..Default::default() };
        let model = load_q4(&device, options).unwrap_or_else(|e| panic!("{e}")).model;
        assert_eq!(model.matvec_kernel(), Some(matvec));
        assert_eq!(model.decode_attention(), attention);
        let kernels = gpu_selfcheck::kernels_for(&model);
        assert_eq!(kernels.iter().any(|k| matches!(k, Kernel::Attention { .. })), attention == DecodeAttention::Fused, "{kernels:?}");
        assert!(kernels.iter().all(|k| !matches!(k, Kernel::Decode { kernel, .. } if *kernel != matvec)), "{kernels:?}");
    }
}

/// Decode steps recorded once and replayed (`GpuDecode::Replay`, CubeCL's software graph)
/// compute exactly what launching every kernel anew computes: the same logits, bit for bit,
/// at batch 1 and 3, across the KV cache's growth past its first 256 positions (a new
/// recording on the new buffers), after rows are truncated (a conversation's next step) and
/// after a row is copied from another (Maj@N): every change the engine makes between steps.
#[test]
fn replayed_decode_steps_equal_launched_ones() {
    use genprm::burn::tensor::Tensor;
    use genprm::{GpuDecode, KvCache, LogitsFor};
    let device = gpu();
    let load = |gpu_decode| {
        let options = LoadOptions { quant: Some(QuantFormat::Q4), gpu_decode, ..Default::default() };
        load_q4(&device, options).unwrap_or_else(|e| panic!("{e}")).model
    };
    let (replay, launch) = (load(GpuDecode::Replay), load(GpuDecode::Launch));
    let read = |t: Tensor<3>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
    let argmax = |row: &[f32]| genprm::sampling::argmax(row);
    let vocab = replay.vocab_size();
    // Batch 1: a prompt, then 300 greedy steps (the cache grows at 256).
    let (mut a, mut b) = (KvCache::new(), KvCache::new());
    let prompt = [1u32, 5, 9, 3, 7];
    let la = read(replay.forward(&prompt, 1, &mut a, LogitsFor::Last).unwrap());
    let lb = read(launch.forward(&prompt, 1, &mut b, LogitsFor::Last).unwrap());
    assert_eq!(la, lb, "prefill");
    let mut next = argmax(&la);
    for step in 0..300 {
        let la = read(replay.forward(&[next], 1, &mut a, LogitsFor::Last).unwrap());
        let lb = read(launch.forward(&[next], 1, &mut b, LogitsFor::Last).unwrap());
        assert_eq!(la, lb, "decode step {step}");
        next = argmax(&la);
        if step == 280 {
            // The next step of a conversation starts from an earlier position.
            a.truncate(200);
            b.truncate(200);
        }
    }
    let (replays, recordings) = replay.decode_replays();
    assert!(replays >= 290 && recordings >= 2, "{replays} replays, {recordings} recordings");
    assert_eq!(launch.decode_replays(), (0, 0));
    // Batch 3, after row 2 copies row 0's prefix.
    let (mut a, mut b) = (KvCache::new(), KvCache::new());
    let rows: [&[u32]; 3] = [&[1, 2, 3, 4], &[7, 8], &[9]];
    replay.forward_rows(0, &rows, &mut a, LogitsFor::Last).unwrap();
    launch.forward_rows(0, &rows, &mut b, LogitsFor::Last).unwrap();
    let mut next = vec![3u32, 4, 5];
    for step in 0..20 {
        let inputs: Vec<&[u32]> = next.chunks(1).collect();
        let la = read(replay.forward_rows(0, &inputs, &mut a, LogitsFor::Last).unwrap());
        let lb = read(launch.forward_rows(0, &inputs, &mut b, LogitsFor::Last).unwrap());
        assert_eq!(la, lb, "batch step {step}");
        next = la.chunks(vocab).map(argmax).collect();
        if step == 10 {
            a.copy_prefix(0, 2, 3).unwrap();
            b.copy_prefix(0, 2, 3).unwrap();
        }
    }
    assert!(replay.decode_replays().0 > replays + 15);
}
