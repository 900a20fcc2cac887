//! `benchRandom`: this browser's speed at a real model shape with random weights.

use super::*;

/// Options of `benchRandom`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(super) struct WebBenchOptions {
    pub(super) shape: String,
    pub(super) device: String,
    pub(super) quant: Option<String>,
    pub(super) batch: usize,
    pub(super) prompt_tokens: usize,
    pub(super) new_tokens: usize,
    /// f16 mode as `Model.load`'s `gpuF16` chooses it (absent: the device's default).
    pub(super) gpu_f16: Option<bool>,
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
