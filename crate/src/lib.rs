//! genprm: GenPRM, a generative process reward model, on the user's own device.
//!
//! The modules follow the path a solution takes, each building only on those above it:
//!
//! | module | owns |
//! |---|---|
//! | [`error`] | the typed errors every module returns |
//! | [`load`] | reading a checkpoint: `config.json`, safetensors, the pre-quantized pack |
//! | [`quant`] | the quantized weight format and its CPU kernels (the `genprm-quant` crate) |
//! | [`backend`] | the devices, chosen once at load: the CPU and the GPU kernels |
//! | [`model`] | the Qwen2 decoder: linear layers, RMSNorm, the KV cache, loading, the forward pass |
//! | [`tokenizer`] | the tokenizer and the chat template |
//! | [`generate`] | sampling and the decode loop |
//! | [`engine`] | the model behind one interface: local, or a remote server |
//! | [`prm`] | the GenPRM protocol: prompts, rewards, grading, result files |
//! | [`exec`] | running the model's Python in a sandbox |
//! | [`bench`] | measuring speed, memory and bandwidth at real shapes |
//! | `wasm` | the browser API (wasm32 only) |
//!
//! The former flat module paths (`genprm::device`, `genprm::gpu_quant`, `genprm::sampling`, …)
//! remain as aliases of their new places.

#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod engine;
pub mod error;
pub mod exec;
pub mod generate;
pub mod load;
pub mod model;
pub mod prm;
/// The quantized weight format and its CPU kernels (the `genprm-quant` crate).
pub use genprm_quant as quant;
pub mod tokenizer;
#[cfg(all(target_arch = "wasm32", feature = "wgpu"))]
pub mod wasm;

// The former flat paths, kept for existing callers.
pub use backend as device;
pub use bench::bandwidth;
#[cfg(feature = "wgpu")]
pub use backend::gpu::{attention as gpu_attention, layer as gpu_layer, quant as gpu_quant, topk as gpu_topk};
pub use generate::sampling;
pub use load::{config, pack, safetensors as weights};
pub use prm::jsonl;
#[cfg(not(target_arch = "wasm32"))]
pub use engine::remote;
/// The GPU kernels' start-up self-check ([`backend::gpu::selfcheck`]) and which kernels a model
/// runs ([`model::kernels_for`]), at their former path.
#[cfg(feature = "wgpu")]
pub mod gpu_selfcheck {
    pub use crate::backend::gpu::selfcheck::*;
    pub use crate::model::{check_model, kernels_for};
}

pub use burn;
pub use config::Qwen2Config;
pub use device::{DecodeAttention, DeviceKind, GpuDecode, MatvecKernel, device};
pub use engine::{Engine, EngineStats, LocalEngine};
pub use error::{Error, Result};
pub use generate::{CachedPrefix, CancelFlag, GenerateOptions, Generation, StopReason, TokenEvent, generate, score};
pub use model::{KvCache, LoadOptions, Weight, LoadProgress, LogitsFor, Qwen2Model};
pub use quant::QuantFormat;
pub use sampling::{Sampler, Sampling, SamplingParams};
pub use tokenizer::{ChatMessage, TemplateChoice, Tokenizer};

/// A checkpoint directory loaded for inference: its config, the model on a device, and the
/// tokenizer when the directory has one.
#[cfg(not(target_arch = "wasm32"))]
pub struct LoadedModel {
    /// The model.
    pub model: Qwen2Model,
    /// The tokenizer, if `tokenizer.json` is present.
    pub tokenizer: Option<Tokenizer>,
    /// The directory it was loaded from.
    pub dir: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl LoadedModel {
    /// Loads `config.json`, `tokenizer.json` (optional) and the safetensors weights of `dir`
    /// onto `device`, reporting each tensor to `progress`.
    pub fn load(dir: &std::path::Path, device: &burn::tensor::Device, progress: impl FnMut(LoadProgress<'_>)) -> Result<Self> {
        Self::load_with(dir, device, LoadOptions::default(), progress)
    }

    /// [`LoadedModel::load`] with weight options (quantization while loading).
    pub fn load_with(
        dir: &std::path::Path,
        device: &burn::tensor::Device,
        options: LoadOptions,
        progress: impl FnMut(LoadProgress<'_>),
    ) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingFile { path: dir.to_path_buf(), hint: "; expected a model directory".into() });
        }
        let config = Qwen2Config::from_file(&dir.join("config.json"))?;
        let tokenizer = if dir.join("tokenizer.json").exists() { Some(Tokenizer::from_dir(dir)?) } else { None };
        if config.marks_pack() && !pack::Pack::is_pack(dir) {
            return Err(Error::MissingFile {
                path: dir.join(pack::MANIFEST),
                hint: "; config.json says the folder is a genprm pack, whose manifest lists its weights".into(),
            });
        }
        let model = if pack::Pack::is_pack(dir) {
            let pack = pack::Pack::open(dir)?;
            Qwen2Model::load_with(config, &pack, device, options, progress)?
        } else {
            let checkpoint = weights::Checkpoint::open(dir)?;
            Qwen2Model::load_with(config, &checkpoint, device, options, progress)?
        };
        Ok(LoadedModel { model, tokenizer, dir: dir.to_path_buf() })
    }

    /// The tokenizer, or an error saying the directory has none.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| Error::MissingFile {
            path: self.dir.join("tokenizer.json"),
            hint: "; the model directory has no tokenizer, so text input and output are unavailable (use token ids)".into(),
        })
    }
}

/// The layout's rule, checked: each folder imports only the folders its `mod.rs` allows (those
/// above it on the data flow), so no import cycle can come back unnoticed. Comments may name
/// anything.
#[cfg(test)]
mod layout {
    use std::path::Path;

    /// Every `crate::<module>` a folder's code (comments left out) names.
    fn imports(dir: &Path, found: &mut std::collections::BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                imports(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                for line in std::fs::read_to_string(&path).unwrap().lines() {
                    let code = line.split("//").next().unwrap_or("");
                    for (i, _) in code.match_indices("crate::") {
                        let name: String = code[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                        found.insert(name);
                    }
                }
            }
        }
    }

    #[test]
    fn each_folder_imports_only_what_it_may() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let rules: [(&str, &[&str]); 9] = [
            ("load", &["error", "load", "quant"]),
            ("tokenizer", &["error", "tokenizer"]),
            ("backend", &["backend", "error", "quant"]),
            ("model", &["model", "backend", "error", "load", "quant"]),
            ("generate", &["generate", "model", "backend", "tokenizer", "error"]),
            ("engine", &["engine", "generate", "model", "backend", "tokenizer", "error"]),
            ("exec", &["exec", "error"]),
            ("prm", &["prm", "engine", "generate", "tokenizer", "exec", "error"]),
            ("bench", &["bench", "engine", "generate", "model", "backend", "load", "tokenizer", "error", "quant"]),
        ];
        for (folder, allowed) in rules {
            let mut found = std::collections::BTreeSet::new();
            imports(&src.join(folder), &mut found);
            let bad: Vec<&String> = found.iter().filter(|m| !allowed.contains(&m.as_str())).collect();
            assert!(bad.is_empty(), "crate/src/{folder}/ imports {bad:?}, which its mod.rs does not allow");
        }
    }

    /// The demo (web/src) reaches the package through its public entry only (`'genprm'`), never
    /// its files.
    #[test]
    fn the_demo_imports_the_package_only_through_its_public_entry() {
        fn walk(dir: &Path, bad: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, bad);
                } else if path.extension().is_some_and(|e| e == "ts") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    bad.extend(text.lines().filter(|l| l.contains("pkg/src") && (l.contains("from ") || l.contains("import"))).map(|l| format!("{}: {l}", path.display())));
                }
            }
        }
        let mut bad = Vec::new();
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/src"), &mut bad);
        assert!(bad.is_empty(), "the demo imports the package's files: {bad:#?}");
    }

    /// The folders `src` imports name, one entry per import of a module (`from '../X/…'` is X,
    /// `from './…'` the importer's own folder; packages and stylesheets are left out), with the
    /// importing file and line.
    fn ts_imports(src: &Path, folder: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(src.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if !path.extension().is_some_and(|e| e == "ts") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let code = line.trim_start();
                if code.starts_with("//") || code.starts_with('*') {
                    continue;
                }
                for marker in ["from '", "import '", "import('"] {
                    for (i, _) in code.match_indices(marker) {
                        let spec: String = code[i + marker.len()..].chars().take_while(|c| *c != '\'').collect();
                        if !(spec.ends_with(".ts") || spec.ends_with(".js")) {
                            continue;
                        }
                        let target = match spec.strip_prefix("../") {
                            Some(rest) => rest.split('/').next().unwrap_or("").to_string(),
                            None if spec.starts_with("./") => folder.to_string(),
                            None => continue,
                        };
                        found.push((target, format!("{}: {line}", path.display())));
                    }
                }
            }
        }
        found
    }

    /// The package's folders (pkg/src) import only those their main file allows: contract/
    /// nothing, runtime/ and python/ contract/, api/ those three, present/ contract/ and api/.
    #[test]
    fn each_package_folder_imports_only_what_it_may() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pkg/src");
        let rules: [(&str, &[&str]); 5] = [
            ("contract", &["contract"]),
            ("runtime", &["runtime", "contract"]),
            ("python", &["python", "contract"]),
            ("api", &["api", "contract", "runtime", "python"]),
            ("present", &["present", "contract", "api"]),
        ];
        for (folder, allowed) in rules {
            for (target, at) in ts_imports(&src, folder) {
                assert!(allowed.contains(&target.as_str()), "pkg/src/{folder}/ may not import {target}/: {at}");
            }
        }
    }

    /// The demo's folders (web/src) import only those the head of their main file allows: a page
    /// components/, grade/ and lib/ (nothing imports a page, another page included); components/
    /// each other and lib/; grade/ itself and lib/; lib/ itself.
    #[test]
    fn each_demo_folder_imports_only_what_it_may() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/src");
        let rules: [(&str, &[&str]); 4] = [
            ("pages", &["components", "grade", "lib"]),
            ("components", &["components", "lib"]),
            ("grade", &["grade", "lib"]),
            ("lib", &["lib"]),
        ];
        let mut seen = 0;
        for (folder, allowed) in rules {
            for (target, at) in ts_imports(&src, folder) {
                seen += 1;
                assert!(allowed.contains(&target.as_str()), "web/src/{folder}/ may not import {target}/: {at}");
            }
        }
        assert!(seen > 10, "the demo's imports were read ({seen})");
    }
}
