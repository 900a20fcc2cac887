//! `Model.load` and `Model.info`: options, progress, the model on WebGPU or the CPU.

use super::*;

/// Options of `Model.load`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct WebLoadOptions {
    #[serde(default)]
    pub(super) device: Option<String>,
    #[serde(default)]
    pub(super) quant: Option<String>,
    #[serde(default)]
    pub(super) head_quant: Option<String>,
    /// f16 mode on WebGPU (prefill products and KV cache in f16, for quantized weights):
    /// absent where the adapter has `shader-f16`, `true` always (an error without it), `false`
    /// never.
    #[serde(default)]
    pub(super) gpu_f16: Option<bool>,
    /// The KV cache in f16 (half its memory; attention computes in f32): absent for the
    /// device's default (f16 exactly in WebGPU f16 mode, f32 on the CPU), `true` always (on
    /// WebGPU: in f16 mode only), `false` never.
    #[serde(default)]
    pub(super) kv_f16: Option<bool>,
    /// How decode steps reach WebGPU: `replay` (the default: recorded once, replayed with new
    /// inputs) or `launch` (every launch issued anew).
    #[serde(default)]
    pub(super) gpu_decode: Option<crate::backend::GpuDecode>,
}

#[derive(Serialize)]
pub(super) struct WebProgress<'a> {
    pub(super) stage: &'a str,
    pub(super) done: usize,
    pub(super) total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tensor: Option<&'a str>,
}

pub(super) struct Inner {
    pub(super) model: Qwen2Model,
    pub(super) tokenizer: Tokenizer,
    pub(super) quant: Option<String>,
    pub(super) device: String,
}

/// A loaded GenPRM (Qwen2) model on WebGPU or the CPU, ready to verify solutions.
#[wasm_bindgen]
pub struct Model {
    pub(super) inner: Rc<Inner>,
}

pub(super) fn parse_format(value: Option<&str>, field: &str) -> Result<Option<QuantFormat>> {
    match value {
        None | Some("") | Some("f32") => Ok(None),
        Some(v) => v.parse::<QuantFormat>().map(Some).map_err(|_| Error::Config {
            path: "load options".into(),
            field: field.into(),
            message: format!("`{v}` is not one of q4, q8"),
        }),
    }
}

/// Parses the pack's manifest and, where it lists the folder's files, makes every other name
/// absent without a request.
async fn read_manifest(files: &mut Files, blob: Blob) -> Result<Manifest> {
    let mpath = Path::new(MANIFEST);
    let manifest = Manifest::parse(&read_all(&blob, mpath).await?, mpath)?;
    if !manifest.files.is_empty() {
        let names = manifest.files.iter().cloned().chain(manifest.shards.iter().map(|s| s.file.clone()));
        files.known = Some(names.chain([MANIFEST.to_string()]).collect());
    }
    Ok(manifest)
}

/// Where the weights are.
enum Weights {
    Checkpoint(Safetensors<BlobBytes>),
    Pack(Manifest),
}

pub(super) async fn load(fetch: Function, options: WebLoadOptions, on_progress: Function) -> Result<Model> {
    let mut files = Files::new(fetch);
    let report = |stage: &str, done: usize, total: usize, tensor: Option<&str>| {
        let _ = on_progress.call1(&JsValue::NULL, &to_js(&WebProgress { stage, done, total, tensor }));
    };
    let load_options = LoadOptions {
        quant: parse_format(options.quant.as_deref(), "quant")?,
        head_quant: parse_format(options.head_quant.as_deref(), "headQuant")?,
        gpu_f16: options.gpu_f16,
        kv_f16: options.kv_f16,
        gpu_decode: options.gpu_decode.unwrap_or_default(),
        ..LoadOptions::default()
    };
    report("config", 0, 1, None);
    let cpath = Path::new("config.json");
    let config_blob = files.required("config.json", "; a model needs config.json (is this a Hugging Face model repository?)").await?;
    let config_bytes = read_all(&config_blob, cpath).await?;
    let config_text = String::from_utf8(config_bytes.clone())
        .map_err(|_| Error::Config { path: cpath.into(), field: "(file)".into(), message: "is not UTF-8 text".into() })?;
    let config = Qwen2Config::from_json_str(&config_text, cpath)?;
    // A pack says so in its config.json; its manifest then lists the folder's other files, so the
    // optional ones it lacks (chat_template.jinja, say) are never asked for.
    let marked = if config.marks_pack() {
        let blob = files.required(MANIFEST, "; config.json says the folder is a genprm pack, whose manifest lists its weights").await?;
        Some(read_manifest(&mut files, blob).await?)
    } else {
        None
    };
    report("tokenizer", 0, 1, None);
    let tok_blob = files.required("tokenizer.json", "; the model has no tokenizer.json").await?;
    let tok_bytes = read_all(&tok_blob, Path::new("tokenizer.json")).await?;
    let tok_config = match files.get("tokenizer_config.json").await? {
        Some(b) => Some(read_all(&b, Path::new("tokenizer_config.json")).await?),
        None => None,
    };
    // chat_template.jinja wins over tokenizer_config.json's template, as in transformers. When
    // tokenizer_config.json has one, the file is asked for only where the page can tell it exists
    // without a request (a site's plain folder has no list: its template is then
    // tokenizer_config.json's, and no 404 is logged).
    let template_blob = if tok_config.as_deref().is_some_and(Tokenizer::config_has_template) {
        files.get_if_listed("chat_template.jinja").await?
    } else {
        files.get("chat_template.jinja").await?
    };
    let template = match template_blob {
        Some(b) => Some(String::from_utf8_lossy(&read_all(&b, Path::new("chat_template.jinja")).await?).into_owned()),
        None => None,
    };
    let tokenizer = Tokenizer::from_parts(&tok_bytes, tok_config.as_deref(), template, Path::new(""))?;
    drop(tok_bytes);
    let (device, device_name) = match options.device.as_deref() {
        None | Some("gpu") | Some("webgpu") => (gpu().await?.0, "webgpu"),
        Some("cpu") => (Device::flex(), "cpu"),
        Some(other) => {
            return Err(Error::Config { path: "load options".into(), field: "device".into(), message: format!("`{other}` is not one of gpu, cpu") });
        }
    };
    let mut on_tensor = |p: LoadProgress<'_>| report("weights", p.done, p.total, Some(p.tensor));
    // Weights: the pack's, or model.safetensors, or the shards of an index, or (a pack made before
    // config.json was marked) a manifest.
    let weights = match marked {
        Some(manifest) => Weights::Pack(manifest),
        None => {
            report("headers", 0, 1, None);
            match open_safetensors(&files).await? {
                Some(checkpoint) => Weights::Checkpoint(checkpoint),
                None => match files.get(MANIFEST).await? {
                    Some(blob) => Weights::Pack(read_manifest(&mut files, blob).await?),
                    None => {
                        return Err(Error::MissingFile {
                            path: "model.safetensors".into(),
                            hint: format!("; expected model.safetensors, model.safetensors.index.json with its shards, or a genprm pack ({MANIFEST})"),
                        });
                    }
                },
            }
        }
    };
    let (model, quant) = match weights {
        Weights::Checkpoint(checkpoint) => {
            let quant = load_options.quant.map(|q| q.to_string());
            (Qwen2Model::load_async(config, &checkpoint, &device, load_options, &mut on_tensor).await?, quant)
        }
        Weights::Pack(manifest) => {
            let hint = format!("; {MANIFEST} lists it");
            let fetch = async |info: &ShardInfo| Ok(BlobBytes(files.required(&info.file, &hint).await?));
            let pack = Pack::verified(Path::new(""), manifest, &config_bytes, fetch, &mut |file, done, total| report("checksum", done, total, Some(file))).await?;
            let quant = Some(pack.manifest().quant.to_string());
            (Qwen2Model::load_async(config, &pack, &device, load_options, &mut on_tensor).await?, quant)
        }
    };
    report("ready", 1, 1, None);
    Ok(Model { inner: Rc::new(Inner { model, tokenizer, quant, device: device_name.to_string() }) })
}


#[wasm_bindgen]
impl Model {
    /// Loads a model from `fetchFile(name) => Promise<Blob | null>` (see contract.md), reporting
    /// `{stage, done, total, tensor?}` to `onProgress`.
    pub fn load(fetch_file: Function, options: JsValue, on_progress: Function) -> Promise {
        future_to_promise(async move {
            let options: WebLoadOptions = if options.is_undefined() || options.is_null() {
                WebLoadOptions::default()
            } else {
                serde_wasm_bindgen::from_value(options).map_err(|e| js_error(format!("load options: {e}")))?
            };
            load(fetch_file, options, on_progress).await.map(JsValue::from).map_err(load_error)
        })
    }

    /// Facts about the model for the page.
    pub fn info(&self) -> JsValue {
        let c = self.inner.model.config();
        let (h, l, v, i) = (c.hidden_size, c.num_hidden_layers, c.vocab_size, c.intermediate_size);
        let kv = c.kv_heads() * c.head_dim();
        let per_layer = h * (h + 2 * kv) + h * h + 3 * h * i;
        let parameters = v * h * if c.tie_word_embeddings { 1 } else { 2 } + l * per_layer;
        to_js(&serde_json::json!({
            "modelType": "qwen2",
            "layers": l,
            "hidden": h,
            "vocab": v,
            "parameters": parameters,
            "quant": self.inner.quant,
            "device": self.inner.device,
            "gpuF16": self.inner.model.gpu_f16(),
            "kvF16": self.inner.model.kv_dtype() == burn::tensor::DType::F16,
            // The CPU kernel of quantized products (`Simd128`, or `RelaxedSimd` in the module
            // built with relaxed SIMD).
            "cpuKernel": format!("{:?}", crate::quant::Kernel::best()),
            // Decode steps replayed from a recording so far, and recordings made.
            "decodeReplays": self.inner.model.decode_replays().0,
            "decodeRecordings": self.inner.model.decode_replays().1,
        }))
    }
}
