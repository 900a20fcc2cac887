//! The Qwen2 `config.json` of a Hugging Face checkpoint: parsing, defaults and validation.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One or several token ids, as `eos_token_id` may be written either way.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// A list of ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    32_768
}
fn default_hidden_act() -> String {
    "silu".to_string()
}

/// The fields of a Qwen2 `config.json` that the forward pass uses. Unknown fields are ignored,
/// as Hugging Face configs carry many that do not affect inference.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Qwen2Config {
    /// `model_type`; must be `qwen2`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// `architectures`; when present must include `Qwen2ForCausalLM`.
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// Rows of the embedding table (may exceed the tokenizer's vocabulary).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Context window.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Rotary embedding base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Whether `lm_head` shares the embedding table.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// The MLP activation; only `silu` is supported.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// RoPE scaling (transformers 4.x); only `null` is supported.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// RoPE parameters (transformers 5.x writes `{"rope_theta": .., "rope_type": "default"}`
    /// here instead of a top-level `rope_theta`).
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// Sliding-window attention; only `false` is supported.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Beginning-of-sequence id (informative: the tokenizer decides BOS).
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s): generation stops on them.
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// The dtype the weights were saved in (informative).
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<String>,
    /// How the checkpoint's weights are quantized, as Hugging Face marks quantized checkpoints:
    /// absent for float weights, `{"quant_method": "genprm-pack", …}` in a genprm pack's copy.
    /// Other methods (GPTQ, AWQ, …) are refused: their weights are not tensors genprm reads.
    #[serde(default)]
    pub quantization_config: Option<QuantizationConfig>,
}

/// The `quantization_config` object of a quantized checkpoint's `config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuantizationConfig {
    /// The method; genprm reads only its own packs' (`genprm-pack`).
    pub quant_method: String,
}

/// The `quant_method` a genprm pack's `config.json` carries, so that a reader that must ask
/// for each file (a browser, over HTTP) knows to read the pack's manifest, and asks for no
/// `model.safetensors`.
pub const PACK_QUANT_METHOD: &str = "genprm-pack";

/// The `rope_parameters` object of transformers 5.x configs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RopeParameters {
    /// Rotary base.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Only `default` (plain RoPE) is supported.
    #[serde(default)]
    pub rope_type: Option<String>,
}

impl Qwen2Config {
    /// Parses and validates `config.json` text; `path` is used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let mut config: Qwen2Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            if field.is_empty() || field == "." {
                Error::json(path, &inner)
            } else {
                Error::Config { path: path.to_path_buf(), field, message: inner.to_string() }
            }
        })?;
        if let Some(rp) = &config.rope_parameters {
            if let Some(kind) = &rp.rope_type
                && kind != "default"
            {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    field: "rope_parameters.rope_type".into(),
                    message: format!("`{kind}` is not supported; only `default`"),
                });
            }
            if let Some(theta) = rp.rope_theta {
                config.rope_theta = theta;
            }
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Reads and validates `config.json` from a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Number of key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether the config is a genprm pack's (its `quantization_config` says so); packs made
    /// before the mark have none, and are known by their manifest.
    pub fn marks_pack(&self) -> bool {
        self.quantization_config.as_ref().is_some_and(|q| q.quant_method == PACK_QUANT_METHOD)
    }

    /// End-of-sequence ids from the config.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let err = |field: &str, message: String| Error::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        if let Some(mt) = &self.model_type
            && mt != "qwen2"
        {
            return Err(err("model_type", format!("`{mt}` is not a Qwen2 model; genprm runs Qwen2 checkpoints (model_type \"qwen2\")")));
        }
        if let Some(archs) = &self.architectures
            && !archs.iter().any(|a| a == "Qwen2ForCausalLM")
        {
            return Err(err("architectures", format!("{archs:?} does not include Qwen2ForCausalLM")));
        }
        if let Some(q) = &self.quantization_config
            && q.quant_method != PACK_QUANT_METHOD
        {
            return Err(err(
                "quantization_config.quant_method",
                format!(
                    "`{}`: weights quantized by another tool are not supported; use the float checkpoint (genprm quantizes it while loading, or into a pack with `genprm quantize`)",
                    q.quant_method
                ),
            ));
        }
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(err(field, "must be positive".into()));
            }
        }
        // Sane maxima, far above any Qwen2 model (the 72B has 80 layers, width 8192, 152k
        // vocabulary, 131072 positions), so a damaged or hostile config is refused before
        // anything is sized from it.
        for (field, value, max) in [
            ("vocab_size", self.vocab_size, 1usize << 22),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            ("num_key_value_heads", self.kv_heads(), 1 << 10),
            ("head_dim", self.head_dim.unwrap_or(1), 1 << 12),
            ("max_position_embeddings", self.max_position_embeddings, 1 << 24),
        ] {
            if value > max {
                return Err(err(field, format!("{value} is over the largest supported value, {max}")));
            }
        }
        // The largest tensors' element counts must fit an address (they do under the maxima on
        // 64-bit targets; this is the 32-bit browser's check).
        let products = [
            ("vocab_size", [self.vocab_size, self.hidden_size]),
            ("intermediate_size", [self.intermediate_size, self.hidden_size]),
            ("num_attention_heads", [self.num_attention_heads, self.head_dim()]),
        ];
        for (field, dims) in products {
            if dims.iter().try_fold(4usize, |acc, &d| acc.checked_mul(d)).is_none_or(|b| b > isize::MAX as usize) {
                return Err(err(field, format!("a {dims:?} matrix of f32 does not fit this machine's memory addresses")));
            }
        }
        let kv = self.kv_heads();
        if kv == 0 || self.num_attention_heads % kv != 0 {
            return Err(err(
                "num_key_value_heads",
                format!("{kv} must be positive and divide num_attention_heads ({})", self.num_attention_heads),
            ));
        }
        match self.head_dim {
            Some(0) => return Err(err("head_dim", "must be positive".into())),
            Some(d) if d % 2 != 0 => return Err(err("head_dim", format!("{d} must be even for rotary embeddings"))),
            None if self.hidden_size % self.num_attention_heads != 0 => {
                return Err(err(
                    "hidden_size",
                    format!(
                        "{} is not divisible by num_attention_heads ({}); set head_dim explicitly",
                        self.hidden_size, self.num_attention_heads
                    ),
                ));
            }
            None if self.head_dim() % 2 != 0 => {
                return Err(err("hidden_size", format!("head dimension {} must be even for rotary embeddings", self.head_dim())));
            }
            _ => {}
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(err("rope_theta", format!("{} must be a positive number", self.rope_theta)));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(err("rms_norm_eps", format!("{} must be a non-negative number", self.rms_norm_eps)));
        }
        if self.hidden_act != "silu" {
            return Err(err("hidden_act", format!("`{}` is not supported; only `silu`", self.hidden_act)));
        }
        if let Some(scaling) = &self.rope_scaling
            && !scaling.is_null()
        {
            return Err(err("rope_scaling", format!("{scaling} is not supported; only null")));
        }
        if self.use_sliding_window {
            return Err(err("use_sliding_window", "sliding-window attention is not supported".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":151936,
        "hidden_size":1536,"intermediate_size":8960,"num_hidden_layers":28,"num_attention_heads":12,
        "num_key_value_heads":2,"max_position_embeddings":131072,"rope_theta":10000,"rms_norm_eps":1e-06,
        "tie_word_embeddings":false,"bos_token_id":151643,"eos_token_id":151643,"torch_dtype":"bfloat16",
        "use_sliding_window":false,"sliding_window":4096,"max_window_layers":21,"rope_scaling":null}"#;

    #[test]
    fn parses_the_deepseek_r1_distill_config() {
        let c = Qwen2Config::from_json_str(BASE, Path::new("config.json")).unwrap();
        assert_eq!(c.head_dim(), 128);
        assert_eq!(c.kv_heads(), 2);
        assert_eq!(c.eos_ids(), vec![151643]);
        assert_eq!(c.rope_theta, 10_000.0);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let text = BASE.replace("\"num_hidden_layers\":28", "\"num_hidden_layers\":\"28\"");
        let e = Qwen2Config::from_json_str(&text, Path::new("m/config.json")).unwrap_err().to_string();
        assert!(e.contains("m/config.json") && e.contains("num_hidden_layers"), "{e}");
    }

    #[test]
    fn missing_field_is_reported() {
        let text = BASE.replace("\"hidden_size\":1536,", "");
        let e = Qwen2Config::from_json_str(&text, Path::new("config.json")).unwrap_err().to_string();
        assert!(e.contains("hidden_size"), "{e}");
    }

    #[test]
    fn not_qwen2_is_refused() {
        let text = BASE.replace("\"qwen2\"", "\"llama\"");
        let e = Qwen2Config::from_json_str(&text, Path::new("config.json")).unwrap_err().to_string();
        assert!(e.contains("model_type") && e.contains("llama"), "{e}");
    }

    #[test]
    fn rope_parameters_of_transformers_5_are_read() {
        let text = BASE.replace("\"rope_theta\":10000,", "\"rope_parameters\":{\"rope_theta\":1000000.0,\"rope_type\":\"default\"},");
        let c = Qwen2Config::from_json_str(&text, Path::new("config.json")).unwrap();
        assert_eq!(c.rope_theta, 1e6);
        let text = text.replace("\"default\"", "\"yarn\"");
        let e = Qwen2Config::from_json_str(&text, Path::new("config.json")).unwrap_err().to_string();
        assert!(e.contains("rope_type"), "{e}");
    }

    #[test]
    fn a_pack_is_marked_and_other_quantizations_are_refused() {
        let plain = Qwen2Config::from_json_str(BASE, Path::new("config.json")).unwrap();
        assert!(!plain.marks_pack());
        let pack = BASE.replacen('{', r#"{"quantization_config":{"quant_method":"genprm-pack","quant":"q4"},"#, 1);
        assert!(Qwen2Config::from_json_str(&pack, Path::new("config.json")).unwrap().marks_pack());
        let gptq = BASE.replacen('{', r#"{"quantization_config":{"quant_method":"gptq","bits":4},"#, 1);
        let e = Qwen2Config::from_json_str(&gptq, Path::new("m/config.json")).unwrap_err().to_string();
        assert!(e.contains("m/config.json") && e.contains("quantization_config.quant_method") && e.contains("`gptq`"), "{e}");
    }

    #[test]
    fn bad_gqa_ratio_is_refused() {
        let text = BASE.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":5");
        let e = Qwen2Config::from_json_str(&text, Path::new("config.json")).unwrap_err().to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
    }

    #[test]
    fn sizes_over_the_maxima_are_refused_naming_the_field() {
        for (from, to, field) in [
            ("\"num_hidden_layers\":28", "\"num_hidden_layers\":1000000000", "num_hidden_layers"),
            ("\"num_hidden_layers\":28", "\"num_hidden_layers\":1000000000000000000", "num_hidden_layers"),
            ("\"vocab_size\":151936", "\"vocab_size\":18446744073709551615", "vocab_size"),
            ("\"hidden_size\":1536", "\"hidden_size\":4611686018427387904", "hidden_size"),
            ("\"max_position_embeddings\":131072", "\"max_position_embeddings\":1099511627776", "max_position_embeddings"),
        ] {
            let text = BASE.replace(from, to);
            assert_ne!(text, BASE);
            let e = Qwen2Config::from_json_str(&text, Path::new("m/config.json")).unwrap_err().to_string();
            assert!(e.contains("m/config.json") && e.contains(field), "{e}");
        }
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let e = Qwen2Config::from_json_str("{\n\"vocab_size\": 3,,\n}", Path::new("config.json")).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
