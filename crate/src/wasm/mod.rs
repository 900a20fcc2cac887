//! The browser API (wasm-bindgen). `pkg/src/contract.md` is its specification; the TypeScript
//! in `pkg/src` wraps it. WebGPU is initialised asynchronously with the adapter's own limits;
//! model files come from a JavaScript callback as `Blob`s (downloads kept in the Cache API, files
//! the user picked, the bundled demo model) and are read piece by piece, one tensor at a time, so
//! a checkpoint never sits whole in wasm memory. Verification streams the protocol's events to a
//! JavaScript callback and runs the model's Python through a JavaScript executor (Pyodide in a
//! Web Worker).

use std::cell::RefCell;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::Device;
use js_sys::{Function, Promise, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::{AbortSignal, Blob};

use crate::load::config::Qwen2Config;
use crate::error::{Error, Result};
use crate::exec::{CodeExecutor, ExecOutcome};
use crate::generate::CancelFlag;
use crate::model::{LoadOptions, LoadProgress, MAX_BINDING_BYTES, Qwen2Model};
use crate::load::pack::{MANIFEST, Manifest, Pack, ShardInfo};
use crate::prm::grade::{self, GradeResult, GradeRow, InputFormat};
use crate::prm::{self, History, Mode, PromptStyle, RewardMode, Solution, VerifyOptions};
use crate::quant::{QuantFormat, QuantMatrix};
use crate::generate::sampling::Sampling;
use crate::tokenizer::{TemplateChoice, Tokenizer};
use crate::load::safetensors::{AsyncTensorSource, ByteSource, HostTensor, Safetensors};
use crate::engine::LocalEngine;

// The module's static constructors (the `inventory` registrations of CubeCL's IR crates), which
// wasm-ld gathers into `__wasm_call_ctors`. A module that never calls it is linked as a "command":
// wasm-ld wraps every export in a call to it (the exports' names end in `.command_export`), so
// every call from JavaScript (the glue's externref-table exports run for each GPU handle) re-ran
// all the registrations, which cost most of a decode step's host time. Calling it once here, at
// start, makes wasm-ld link a library (no wrapping); tests/dawn checks the built module for
// `command_export`. The same fix as dtolnay/inventory's wasm documentation and wit-bindgen's.
unsafe extern "C" {
    fn __wasm_call_ctors();
}

#[wasm_bindgen(start)]
fn start() {
    static CTORS: std::sync::Once = std::sync::Once::new();
    // SAFETY: the linker-made constructor function, run once before anything else in the module
    // reads what the constructors register (wasm-bindgen's glue calls `start` at instantiation).
    CTORS.call_once(|| unsafe { __wasm_call_ctors() });
    console_error_panic_hook::set_once();
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// A load error for the page. A GPU kernel that failed the start-up self-check
/// ([`crate::backend::gpu::selfcheck`]) is an Error named `GpuKernelError` with the kernel's name in
/// `kernel`, so the page can offer the CPU device.
fn load_error(e: Error) -> JsValue {
    let js = js_sys::Error::new(&e.to_string());
    if let Error::GpuKernel { kernel, .. } = &e {
        js.set_name("GpuKernelError");
        let js: &JsValue = &js;
        let _ = js_sys::Reflect::set(js, &JsValue::from_str("kernel"), &JsValue::from_str(kernel));
    }
    js.into()
}

fn to_js<T: Serialize + ?Sized>(value: &T) -> JsValue {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap_or(JsValue::NULL)
}

/// What `gpuInfo()` reports about the WebGPU adapter.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GpuInfo {
    backend: String,
    adapter: String,
    features: Vec<String>,
    max_buffer_size: u64,
    max_storage_buffer_binding_size: u64,
    shader_f16: bool,
}

thread_local! {
    static GPU: RefCell<Option<(Device, Rc<GpuInfo>)>> = const { RefCell::new(None) };
}

fn has_webgpu() -> bool {
    let global = js_sys::global();
    let navigator = js_sys::Reflect::get(&global, &"navigator".into()).unwrap_or(JsValue::UNDEFINED);
    !navigator.is_undefined() && js_sys::Reflect::get(&navigator, &"gpu".into()).is_ok_and(|g| !g.is_undefined())
}

async fn gpu() -> Result<(Device, Rc<GpuInfo>)> {
    if let Some(d) = GPU.with_borrow(|g| g.clone()) {
        return Ok(d);
    }
    if !has_webgpu() {
        return Err(Error::Device(
            "this browser has no WebGPU (navigator.gpu is missing): use a recent Chrome or Edge, or Safari/Firefox with WebGPU enabled".into(),
        ));
    }
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| Error::Device(format!("no usable WebGPU adapter: {e}")))?;
    let limits = setup.adapter.limits();
    let features = setup.adapter.features();
    let info = setup.adapter.get_info();
    let gpu_info = Rc::new(GpuInfo {
        backend: format!("{:?}", setup.backend),
        adapter: [info.vendor.to_string(), info.name.clone(), info.driver.clone()]
            .into_iter()
            .filter(|s| !s.is_empty() && s != "0")
            .collect::<Vec<_>>()
            .join(" "),
        features: features.iter_names().map(|(n, _)| n.to_string()).collect(),
        max_buffer_size: limits.max_buffer_size,
        max_storage_buffer_binding_size: u64::from(limits.max_storage_buffer_binding_size),
        shader_f16: features.contains(burn::tensor::wgpu::wgpu::Features::SHADER_F16),
    });
    if gpu_info.max_storage_buffer_binding_size < MAX_BINDING_BYTES as u64 || gpu_info.max_buffer_size < MAX_BINDING_BYTES as u64 {
        return Err(Error::Device(format!(
            "the WebGPU adapter's limits are too small: storage bindings of {} MiB and buffers of {} MiB, but the model needs {} MiB",
            gpu_info.max_storage_buffer_binding_size >> 20,
            gpu_info.max_buffer_size >> 20,
            MAX_BINDING_BYTES >> 20
        )));
    }
    GPU.with_borrow_mut(|g| *g = Some((device.clone(), gpu_info.clone())));
    Ok((device, gpu_info))
}

/// Initialises WebGPU (once) with the adapter's limits and reports the adapter.
#[wasm_bindgen(js_name = gpuInfo)]
pub async fn gpu_info() -> std::result::Result<JsValue, JsValue> {
    let (_, info) = gpu().await.map_err(js_error)?;
    Ok(to_js(&*info))
}

/// Splits a pasted solution into paragraphs on blank lines, as the CLI does.
#[wasm_bindgen(js_name = splitParagraphs)]
pub fn split_paragraphs(text: &str) -> Vec<String> {
    prm::split_paragraphs(text)
}

/// The model's files, fetched through the page's `fetchFile(name) => Promise<Blob | null>`.
struct Files {
    fetch: Function,
}

impl Files {
    async fn get(&self, name: &str) -> Result<Option<Blob>> {
        let failed = |e: JsValue| Error::Io {
            path: name.into(),
            source: std::io::Error::other(e.as_string().or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message()))).unwrap_or_else(|| format!("{e:?}"))),
        };
        let promise = self.fetch.call1(&JsValue::NULL, &name.into()).map_err(failed)?;
        let value = JsFuture::from(Promise::resolve(&promise)).await.map_err(failed)?;
        if value.is_null() || value.is_undefined() {
            return Ok(None);
        }
        value.dyn_into::<Blob>().map(Some).map_err(|_| Error::Io {
            path: name.into(),
            source: std::io::Error::other("fetchFile did not return a Blob or null"),
        })
    }

    async fn required(&self, name: &str, hint: &str) -> Result<Blob> {
        self.get(name).await?.ok_or_else(|| Error::MissingFile { path: name.into(), hint: hint.to_string() })
    }
}

/// Bytes `start..end` of a blob.
async fn read_range(blob: &Blob, start: u64, end: u64, path: &Path) -> Result<Vec<u8>> {
    let io = |e: JsValue| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(format!("{e:?}")) };
    let part = blob.slice_with_f64_and_f64(start as f64, end as f64).map_err(io)?;
    let buffer = JsFuture::from(part.array_buffer()).await.map_err(io)?;
    let bytes = Uint8Array::new(&buffer).to_vec();
    if bytes.len() as u64 != end - start {
        return Err(Error::Safetensors {
            path: path.to_path_buf(),
            message: format!("read {} bytes at {start}, expected {} (truncated?)", bytes.len(), end - start),
        });
    }
    Ok(bytes)
}

async fn read_all(blob: &Blob, path: &Path) -> Result<Vec<u8>> {
    read_range(blob, 0, blob.size() as u64, path).await
}

/// A model file as a `Blob`, read piece by piece: the [`ByteSource`] the one safetensors reader
/// and the one pack reader take in the browser.
struct BlobBytes(Blob);

impl ByteSource for BlobBytes {
    fn size(&self) -> u64 {
        self.0.size() as u64
    }
    async fn read(&self, range: std::ops::Range<u64>, path: &Path) -> Result<Cow<'_, [u8]>> {
        read_range(&self.0, range.start, range.end, path).await.map(Cow::Owned)
    }
}

/// Opens the safetensors files of a model folder: `model.safetensors`, or the shards its index
/// lists (names confined to the folder: no `..`, no absolute path or URL).
async fn open_safetensors(files: &Files) -> Result<Safetensors<BlobBytes>> {
    let names: Vec<String> = match files.get("model.safetensors.index.json").await? {
        Some(blob) => {
            let path = Path::new("model.safetensors.index.json");
            let bytes = read_all(&blob, path).await?;
            let text = std::str::from_utf8(&bytes).map_err(|e| Error::Config {
                path: path.to_path_buf(),
                field: "(file)".into(),
                message: format!("not UTF-8 text: {e}"),
            })?;
            crate::load::safetensors::parse_index(text, path)?.into_iter().map(|(file, _)| file).collect()
        }
        None => vec!["model.safetensors".to_string()],
    };
    let mut checkpoint = Safetensors::empty(None);
    for name in names {
        let blob = files.required(&name, "; expected model.safetensors, model.safetensors.index.json with its shards, or a genprm pack").await?;
        checkpoint.add(PathBuf::from(name), BlobBytes(blob)).await?;
    }
    Ok(checkpoint)
}

impl AsyncTensorSource for Safetensors<BlobBytes> {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.entry_shape(name)
    }
    fn tensor_names(&self) -> Vec<String> {
        self.names()
    }
    async fn read_f32(&self, name: &str) -> Result<HostTensor> {
        self.tensor_f32(name).await
    }
    async fn read_quantized(&self, _name: &str) -> Result<Option<QuantMatrix>> {
        Ok(None)
    }
    fn file_of(&self, name: &str) -> PathBuf {
        self.file(name)
    }
    fn reads_rows(&self, name: &str) -> bool {
        self.holds(name)
    }
    async fn read_rows_f32(&self, name: &str, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        self.rows_f32(name, rows).await
    }
}

impl AsyncTensorSource for Pack<BlobBytes> {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.entry_shape(name)
    }
    fn tensor_names(&self) -> Vec<String> {
        self.names()
    }
    async fn read_f32(&self, name: &str) -> Result<HostTensor> {
        self.tensor_f32(name).await
    }
    async fn read_quantized(&self, name: &str) -> Result<Option<QuantMatrix>> {
        self.tensor_quantized(name).await
    }
    fn file_of(&self, _name: &str) -> PathBuf {
        self.file()
    }
}

/// Options of `Model.load`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WebLoadOptions {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    quant: Option<String>,
    #[serde(default)]
    head_quant: Option<String>,
    /// f16 mode on WebGPU (prefill products and KV cache in f16, for quantized weights):
    /// absent where the adapter has `shader-f16`, `true` always (an error without it), `false`
    /// never.
    #[serde(default)]
    gpu_f16: Option<bool>,
    /// The KV cache in f16 (half its memory; attention computes in f32): absent for the
    /// device's default (f16 exactly in WebGPU f16 mode, f32 on the CPU), `true` always (on
    /// WebGPU: in f16 mode only), `false` never.
    #[serde(default)]
    kv_f16: Option<bool>,
    /// How decode steps reach WebGPU: `replay` (the default: recorded once, replayed with new
    /// inputs) or `launch` (every launch issued anew).
    #[serde(default)]
    gpu_decode: Option<crate::backend::GpuDecode>,
}

#[derive(Serialize)]
struct WebProgress<'a> {
    stage: &'a str,
    done: usize,
    total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    tensor: Option<&'a str>,
}

struct Inner {
    model: Qwen2Model,
    tokenizer: Tokenizer,
    quant: Option<String>,
    device: String,
}

/// A loaded GenPRM (Qwen2) model on WebGPU or the CPU, ready to verify solutions.
#[wasm_bindgen]
pub struct Model {
    inner: Rc<Inner>,
}

fn parse_format(value: Option<&str>, field: &str) -> Result<Option<QuantFormat>> {
    match value {
        None | Some("") | Some("f32") => Ok(None),
        Some(v) => v.parse::<QuantFormat>().map(Some).map_err(|_| Error::Config {
            path: "load options".into(),
            field: field.into(),
            message: format!("`{v}` is not one of q4, q8"),
        }),
    }
}

async fn load(fetch: Function, options: WebLoadOptions, on_progress: Function) -> Result<Model> {
    let files = Files { fetch };
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
    report("tokenizer", 0, 1, None);
    let tok_blob = files.required("tokenizer.json", "; the model has no tokenizer.json").await?;
    let tok_bytes = read_all(&tok_blob, Path::new("tokenizer.json")).await?;
    let tok_config = match files.get("tokenizer_config.json").await? {
        Some(b) => Some(read_all(&b, Path::new("tokenizer_config.json")).await?),
        None => None,
    };
    let template = match files.get("chat_template.jinja").await? {
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
    let (model, quant) = match files.get(MANIFEST).await? {
        Some(manifest) => {
            let mpath = Path::new(MANIFEST);
            let manifest: Manifest = serde_json::from_slice(&read_all(&manifest, mpath).await?).map_err(|e| Error::json(mpath, &e))?;
            let hint = format!("; {MANIFEST} lists it");
            let fetch = async |info: &ShardInfo| Ok(BlobBytes(files.required(&info.file, &hint).await?));
            let pack = Pack::verified(Path::new(""), manifest, &config_bytes, fetch, &mut |file, done, total| report("checksum", done, total, Some(file))).await?;
            let quant = Some(pack.manifest().quant.to_string());
            (Qwen2Model::load_async(config, &pack, &device, load_options, &mut on_tensor).await?, quant)
        }
        None => {
            report("headers", 0, 1, None);
            let checkpoint = open_safetensors(&files).await?;
            let quant = load_options.quant.map(|q| q.to_string());
            (Qwen2Model::load_async(config, &checkpoint, &device, load_options, &mut on_tensor).await?, quant)
        }
    };
    report("ready", 1, 1, None);
    Ok(Model { inner: Rc::new(Inner { model, tokenizer, quant, device: device_name.to_string() }) })
}

/// The protocol options of `verify`, with the CLI's defaults.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebOptions {
    samples: usize,
    style: PromptStyle,
    reward: RewardMode,
    mode: Mode,
    history: History,
    template: TemplateChoice,
    greedy: bool,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    seed: u64,
    execute: bool,
    stop_at_first_error: bool,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            samples: 1,
            style: PromptStyle::Card,
            reward: RewardMode::Official,
            mode: Mode::CotCode,
            history: History::PerPath,
            template: TemplateChoice::Checkpoint,
            greedy: false,
            temperature: crate::generate::sampling::GENPRM_TEMPERATURE,
            top_k: crate::generate::sampling::GENPRM_TOP_K,
            top_p: crate::generate::sampling::GENPRM_TOP_P,
            seed: 0,
            execute: true,
            stop_at_first_error: false,
        }
    }
}

impl WebOptions {
    fn verify_options(&self) -> Result<VerifyOptions> {
        if !(1..=crate::prm::MAX_SAMPLES).contains(&self.samples) {
            return Err(Error::InvalidArgument { name: "samples", message: format!("{} is not in 1..={}", self.samples, crate::prm::MAX_SAMPLES) });
        }
        let sampling = Sampling::from_options(self.greedy, self.temperature, self.top_k, self.top_p, self.seed)?;
        Ok(VerifyOptions {
            style: self.style,
            mode: self.mode,
            execute: self.execute,
            reward: self.reward,
            samples: self.samples,
            history: self.history,
            template: self.template,
            sampling,
            stop_at_first_error: self.stop_at_first_error,
            ..VerifyOptions::default()
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebRequest {
    problem: String,
    steps: Vec<String>,
    #[serde(default)]
    options: WebOptions,
}

/// The page's code executor: `run(path, code)` and `reset(path)` returning promises.
struct JsExecutor {
    bridge: JsValue,
    path: usize,
}

impl JsExecutor {
    async fn call(&self, method: &str, args: &[JsValue]) -> std::result::Result<JsValue, String> {
        let f: Function = js_sys::Reflect::get(&self.bridge, &method.into())
            .ok()
            .and_then(|f| f.dyn_into().ok())
            .ok_or_else(|| format!("the executor has no `{method}` function"))?;
        let args: js_sys::Array = args.iter().collect();
        let promise = f.apply(&self.bridge, &args).map_err(|e| format!("{e:?}"))?;
        JsFuture::from(Promise::resolve(&promise)).await.map_err(|e| {
            e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).or_else(|| e.as_string()).unwrap_or_else(|| format!("{e:?}"))
        })
    }
}

impl CodeExecutor for JsExecutor {
    async fn run(&mut self, code: &str) -> ExecOutcome {
        match self.call("run", &[JsValue::from(self.path as u32), code.into()]).await {
            Ok(v) => serde_wasm_bindgen::from_value(v).unwrap_or_else(|e| ExecOutcome::Error {
                kind: "ExecutorError".into(),
                message: format!("the executor returned a malformed outcome: {e}"),
            }),
            Err(message) => ExecOutcome::Error { kind: "ExecutorError".into(), message },
        }
    }
    async fn reset(&mut self) {
        if let Err(e) = self.call("reset", &[JsValue::from(self.path as u32)]).await {
            web_sys::console::warn_1(&format!("resetting the Python executor failed: {e}").into());
        }
    }
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

    /// Verifies `{problem, steps, options}`; see contract.md. Events go to `onEvent` as they
    /// happen; the promise resolves with the result, complete or not.
    pub fn verify(&self, request: JsValue, executor: JsValue, on_event: Function, signal: Option<AbortSignal>) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let request: WebRequest = serde_wasm_bindgen::from_value(request).map_err(|e| js_error(format!("verify request: {e}")))?;
            let options = request.options.verify_options().map_err(js_error)?;
            let mut solution = Solution::new(request.problem, request.steps);
            solution.validate("the solution").map_err(js_error)?;
            let cancel = CancelFlag::new();
            let _listener = signal.as_ref().map(|s| {
                if s.aborted() {
                    cancel.cancel();
                }
                let flag = cancel.clone();
                let closure = Closure::<dyn FnMut()>::new(move || flag.cancel());
                let _ = s.add_event_listener_with_callback("abort", closure.as_ref().unchecked_ref());
                closure
            });
            let engine = LocalEngine::new(&inner.model, &inner.tokenizer).map_err(js_error)?.with_cancel(cancel);
            let paths = if options.history == History::PerPath { options.samples } else { 1 };
            let mut executors: Vec<JsExecutor> = (0..paths).map(|path| JsExecutor { bridge: executor.clone(), path }).collect();
            let mut on = |e: prm::Event<'_>| {
                if let Err(err) = on_event.call1(&JsValue::NULL, &to_js(&e)) {
                    web_sys::console::error_2(&"genprm: the onEvent callback threw".into(), &err);
                }
            };
            // The solution is measured against the context before anything is tokenized whole.
            let context = inner.model.config().max_position_embeddings;
            let result = prm::input::verify_within_context(&engine, &inner.tokenizer, &mut executors, &solution, &options, context, &mut on).await;
            let (v, error) = match result {
                Ok(v) => (v, None),
                Err(partial) => (partial.completed, Some(partial.error.to_string())),
            };
            Ok(to_js(&serde_json::json!({
                "complete": error.is_none(),
                "error": error,
                "steps": v.steps,
                "first_error_step": v.first_error_step,
                "scores": v.scores,
            })))
        })
    }
}

/// Options of `benchRandom`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct WebBenchOptions {
    shape: String,
    device: String,
    quant: Option<String>,
    batch: usize,
    prompt_tokens: usize,
    new_tokens: usize,
    /// f16 mode as `Model.load`'s `gpuF16` chooses it (absent: the device's default).
    gpu_f16: Option<bool>,
}

impl Default for WebBenchOptions {
    fn default() -> Self {
        WebBenchOptions {
            shape: "qwen2-1.5b".into(),
            device: "gpu".into(),
            quant: Some("q4".into()),
            batch: 1,
            prompt_tokens: 128,
            new_tokens: 32,
            gpu_f16: None,
        }
    }
}

/// Measures this browser's speed at a real model shape with random weights (the same
/// measurement as `genprm bench --random-shape`): `{shape: 'qwen2-1.5b' | 'qwen2-small' |
/// 'qwen2-1.5b-narrow', device, quant, batch, promptTokens, newTokens, gpuF16}` (the narrow
/// shape is scripts/bench-host's). `onProgress({stage})` hears load, compile, prefill and decode. Resolves with `{load_s, first_call_s, prefill_tok_s, ttft_s, decode_tok_s}`.
#[wasm_bindgen(js_name = benchRandom)]
pub fn bench_random(options: JsValue, on_progress: Function) -> Promise {
    future_to_promise(async move {
        let o: WebBenchOptions = if options.is_undefined() || options.is_null() {
            WebBenchOptions::default()
        } else {
            serde_wasm_bindgen::from_value(options).map_err(|e| js_error(format!("bench options: {e}")))?
        };
        let config = match o.shape.as_str() {
            "qwen2-1.5b" => crate::bench::qwen2_1_5b(),
            "qwen2-small" => crate::bench::qwen2_small(),
            "qwen2-1.5b-narrow" => crate::bench::qwen2_1_5b_narrow(),
            other => return Err(js_error(format!("bench options: shape `{other}` is not one of qwen2-1.5b, qwen2-small, qwen2-1.5b-narrow"))),
        };
        let device = match o.device.as_str() {
            "gpu" | "webgpu" => gpu().await.map_err(js_error)?.0,
            "cpu" => Device::flex(),
            other => return Err(js_error(format!("bench options: device `{other}` is not one of gpu, cpu"))),
        };
        let quant = parse_format(o.quant.as_deref(), "quant").map_err(js_error)?;
        let source = crate::bench::RandomWeights::new(config.clone(), 1);
        let performance = js_sys::Reflect::get(&js_sys::global(), &"performance".into())?;
        let now_fn: Function = js_sys::Reflect::get(&performance, &"now".into())?.dyn_into()?;
        let now = || now_fn.call0(&performance).ok().and_then(|v| v.as_f64()).unwrap_or(0.0) / 1000.0;
        let stage = |s: &str| {
            let _ = on_progress.call1(&JsValue::NULL, &to_js(&serde_json::json!({ "stage": s })));
        };
        let shape = crate::bench::BenchShape { batch: o.batch, prompt_tokens: o.prompt_tokens, new_tokens: o.new_tokens };
        let result = crate::bench::run_async(config, &source, &device, LoadOptions { quant, gpu_f16: o.gpu_f16, ..Default::default() }, shape, now, stage)
            .await
            .map_err(js_error)?;
        Ok(to_js(&result))
    })
}

/// A grading input row as the page sees it (see contract.md).
#[derive(Serialize, Deserialize)]
struct WebGradeRow {
    line: usize,
    id: Option<String>,
    student_id: Option<String>,
    label: Option<i64>,
    problem: Option<String>,
    steps: Option<Vec<String>>,
    error: Option<String>,
}

impl From<&GradeRow> for WebGradeRow {
    fn from(row: &GradeRow) -> Self {
        let (problem, steps, error) = match &row.solution {
            Ok(s) => (Some(s.problem.clone()), Some(s.steps.clone()), None),
            Err(e) => (None, None, Some(e.clone())),
        };
        WebGradeRow { line: row.line, id: row.id.clone(), student_id: row.student_id.clone(), label: row.label, problem, steps, error }
    }
}

impl WebGradeRow {
    fn row(self) -> GradeRow {
        let solution = match (self.error, self.problem, self.steps) {
            (Some(e), _, _) => Err(e),
            (None, Some(problem), Some(steps)) => {
                let mut s = Solution::new(problem, steps);
                s.id = self.id.clone();
                s.label = self.label;
                Ok(s)
            }
            _ => Err("the row has no problem and steps".to_string()),
        };
        GradeRow { line: self.line, id: self.id, student_id: self.student_id, label: self.label, solution }
    }
}

/// Parses a grading input (JSON Lines or CSV by the file name's extension) with the same code as
/// `genprm grade`: one row per solution, a malformed row carrying its line number and reason.
#[wasm_bindgen(js_name = parseGradingInput)]
pub fn parse_grading_input(bytes: &[u8], file_name: &str) -> std::result::Result<JsValue, JsValue> {
    let format = InputFormat::from_file_name(file_name).map_err(js_error)?;
    let rows = grade::parse_input(bytes, format, file_name).map_err(js_error)?;
    let rows: Vec<WebGradeRow> = rows.iter().map(WebGradeRow::from).collect();
    Ok(to_js(&rows))
}

/// The result record of a grading row, exactly the JSON line `genprm grade` writes: from the
/// row and `Model.verify`'s result (null for a bad row).
#[wasm_bindgen(js_name = gradeResult)]
pub fn grade_result(row: JsValue, result: JsValue) -> std::result::Result<JsValue, JsValue> {
    #[derive(Deserialize)]
    struct WebResult {
        complete: bool,
        error: Option<String>,
        steps: Vec<prm::StepVerdict>,
    }
    let row: WebGradeRow = serde_wasm_bindgen::from_value(row).map_err(|e| js_error(format!("grading row: {e}")))?;
    let row = row.row();
    let record = match (&row.solution, result.is_null() || result.is_undefined()) {
        (Err(reason), _) => GradeResult::bad_row(&row, reason),
        (Ok(_), true) => return Err(js_error("gradeResult: a gradable row needs the verification result")),
        (Ok(_), false) => {
            let r: WebResult = serde_wasm_bindgen::from_value(result).map_err(|e| js_error(format!("verification result: {e}")))?;
            let verification = prm::Verification::from_steps(r.steps);
            if r.complete {
                GradeResult::graded(&row, verification)
            } else {
                let message = r.error.unwrap_or_else(|| "the verification stopped".into());
                GradeResult::failed(&row, prm::PartialVerification { completed: verification, error: Error::Stopped(message) })
            }
        }
    };
    Ok(to_js(&record))
}
