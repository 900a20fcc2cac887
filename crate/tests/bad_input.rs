//! Bad checkpoints and bad input: each a clear error naming the file and the tensor or field,
//! never a panic.

mod common;

use common::*;
use genprm::burn::tensor::Device;
use genprm::{Error, KvCache, LoadedModel, LogitsFor};

fn cpu() -> Device {
    genprm::device(genprm::DeviceKind::Cpu).unwrap()
}

fn load_err(dir: &std::path::Path) -> String {
    match LoadedModel::load(dir, &cpu(), |_| {}) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_directory_and_files() {
    let e = load_err(std::path::Path::new("/no/such/model"));
    assert!(e.contains("/no/such/model"), "{e}");

    let tmp = scratch_copy("tiny-gqa-f32");
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("config.json") && e.contains("not found"), "{e}");

    let tmp = scratch_copy("tiny-gqa-f32");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model.safetensors"), "{e}");

    let tmp = scratch_copy("tiny-sharded-bf16");
    std::fs::remove_file(tmp.path().join("model-00003-of-00004.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model-00003-of-00004.safetensors") && e.contains("not found"), "{e}");
}

#[test]
fn truncated_safetensors_names_file_and_tensor() {
    let tmp = scratch_copy("tiny-gqa-f32");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model.safetensors") && e.contains("truncated") && e.contains("tensor `"), "{e}");
    // Cut inside the header.
    std::fs::write(&path, &bytes[..20]).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model.safetensors") && e.contains("truncated"), "{e}");
}

#[test]
fn shape_disagreeing_with_config_names_tensor_and_shapes() {
    let tmp = scratch_copy("tiny-gqa-f32");
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"intermediate_size\": 80", "\"intermediate_size\": 81");
    std::fs::write(&path, text).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model.layers.0.mlp.gate_proj.weight") && e.contains("[80, 48]") && e.contains("[81, 48]"), "{e}");
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn unknown_dtype_names_tensor_and_dtype() {
    let tmp = scratch_copy("tiny-gqa-f32");
    let path = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    // Relabel one tensor as I32 (same width, so the header keeps its length).
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let key = "\"model.norm.weight\":{\"dtype\":\"F32\"";
    assert!(header.contains(key), "fixture header layout changed: {header}");
    let header = header.replace(key, "\"model.norm.weight\":{\"dtype\":\"I32\"");
    bytes[8..8 + n].copy_from_slice(header.as_bytes());
    std::fs::write(&path, bytes).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model.norm.weight") && e.contains("I32") && e.contains("model.safetensors"), "{e}");
}

#[test]
fn config_field_of_the_wrong_type_names_the_field() {
    let tmp = scratch_copy("tiny-gqa-f32");
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": \"two\"");
    std::fs::write(&path, text).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("config.json") && e.contains("num_hidden_layers"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let tmp = scratch_copy("tiny-mha-tied-f16");
    let path = tmp.path().join("config.json");
    // Untie: the checkpoint has no lm_head.weight.
    let text = std::fs::read_to_string(&path).unwrap().replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    assert!(text.contains("\"tie_word_embeddings\": false"));
    std::fs::write(&path, text).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("lm_head.weight") && e.contains("not found"), "{e}");
}

#[test]
fn token_id_out_of_range_is_an_error() {
    let m = load("tiny-gqa-f32", &cpu());
    let err = m.model.forward(&[1, 2, 320], 1, &mut KvCache::new(), LogitsFor::Last).unwrap_err();
    assert!(matches!(err, Error::TokenOutOfRange { id: 320, position: 2, vocab_size: 320 }), "{err}");
}

#[test]
fn context_overflow_is_an_error() {
    let tmp = scratch_copy("tiny-gqa-f32");
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"max_position_embeddings\": 4096", "\"max_position_embeddings\": 8");
    std::fs::write(&path, text).unwrap();
    let m = LoadedModel::load(tmp.path(), &cpu(), |_| {}).unwrap();
    let err = m.model.forward(&[1; 9], 1, &mut KvCache::new(), LogitsFor::Last).unwrap_err();
    assert!(err.to_string().contains("max_position_embeddings"), "{err}");
    // Generation stops cleanly when the context fills up.
    let out = genprm::generate::block_on(genprm::generate(
        &m.model,
        None,
        &mut genprm::CachedPrefix::new(),
        &[1, 2, 3, 4, 5],
        &genprm::GenerateOptions { max_new_tokens: 50, ..Default::default() },
        |_| {},
    ))
    .unwrap();
    assert_eq!(out.stop, genprm::StopReason::ContextFull);
    assert_eq!(out.ids.len(), 4);
}

#[test]
fn byte_buffers_load_the_same_model_as_memory_mapped_files() {
    use genprm::weights::BytesCheckpoint;
    let dir = model_dir("tiny-sharded-bf16");
    let mut src = BytesCheckpoint::new();
    for i in 1..=4 {
        let name = format!("model-0000{i}-of-00004.safetensors");
        src.add_file(&name, std::fs::read(dir.join(&name)).unwrap()).unwrap();
    }
    let config = genprm::Qwen2Config::from_file(&dir.join("config.json")).unwrap();
    let model = genprm::Qwen2Model::load(config, &src, &cpu(), |_| {}).unwrap();
    let exp = expected("tiny-sharded-bf16");
    let rows = genprm::generate::block_on(genprm::score(&model, &exp.prompt_ids)).unwrap();
    assert!(max_abs_diff(&rows, &exp) < 1e-4);
    // A truncated buffer is refused when it is added, naming it.
    let bytes = std::fs::read(dir.join("model-00001-of-00004.safetensors")).unwrap();
    let e = BytesCheckpoint::new().add_file("shard-1", bytes[..bytes.len() / 2].to_vec()).unwrap_err().to_string();
    assert!(e.contains("shard-1") && e.contains("truncated"), "{e}");
}

/// A batch whose KV cache would not fit one GPU buffer binding is refused with a clear error
/// before anything is allocated (one layer's keys are one tensor).
#[test]
fn a_kv_cache_over_a_gpu_binding_is_a_clear_error() {
    for (kind, device) in devices() {
        if kind == genprm::DeviceKind::Cpu {
            continue;
        }
        let m = load("tiny-gqa-f32", &device);
        let err = m.model.forward_rows(2_000_000, &[&[1, 2]], &mut KvCache::new(), LogitsFor::Last).unwrap_err();
        assert!(matches!(err, Error::KvCacheTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("fewer samples"), "{err}");
    }
}
