//! genprm: GenPRM, a generative process reward model, on the user's own device.
//!
//! The crate loads a Hugging Face Qwen2 checkpoint ([`config`], [`weights`], or a pre-quantized
//! [`pack`]), runs it with burn on the CPU or a GPU ([`model`], [`device`], [`quant`] and the GPU
//! kernels), tokenizes and renders chat prompts ([`tokenizer`]), generates text ([`sampling`],
//! [`generate`], [`engine`]), runs the GenPRM verification protocol ([`prm`]) with the model's
//! Python executed in a sandbox ([`exec`]), and measures itself ([`bench`]).

#![warn(missing_docs)]

pub mod bandwidth;
pub mod bench;
pub mod config;
pub(crate) mod cpu_attention;
pub mod device;
pub mod engine;
pub mod error;
pub mod exec;
pub mod generate;
pub mod jsonl;
#[cfg(feature = "wgpu")]
pub mod gpu_attention;
#[cfg(feature = "wgpu")]
pub mod gpu_layer;
#[cfg(feature = "wgpu")]
pub mod gpu_quant;
#[cfg(feature = "wgpu")]
pub(crate) mod gpu_reduce;
#[cfg(feature = "wgpu")]
pub mod gpu_selfcheck;
#[cfg(feature = "wgpu")]
pub mod gpu_topk;
pub mod model;
pub mod pack;
pub mod prm;
/// The quantized weight format and its CPU kernels (the `genprm-quant` crate).
pub use genprm_quant as quant;
#[cfg(not(target_arch = "wasm32"))]
pub mod remote;
pub mod sampling;
pub mod tokenizer;
#[cfg(all(target_arch = "wasm32", feature = "wgpu"))]
pub mod wasm;
pub mod weights;

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
