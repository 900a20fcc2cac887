//! `Model.verify`: the protocol's options, the page's Python executor, events and cancellation.

use super::*;

/// The protocol options of `verify`, with the CLI's defaults.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct WebOptions {
    pub(super) samples: usize,
    pub(super) style: PromptStyle,
    pub(super) reward: RewardMode,
    pub(super) mode: Mode,
    pub(super) history: History,
    pub(super) template: TemplateChoice,
    pub(super) greedy: bool,
    pub(super) temperature: f32,
    pub(super) top_k: usize,
    pub(super) top_p: f32,
    pub(super) seed: u64,
    pub(super) execute: bool,
    pub(super) stop_at_first_error: bool,
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
    pub(super) fn verify_options(&self) -> Result<VerifyOptions> {
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
pub(super) struct WebRequest {
    pub(super) problem: String,
    pub(super) steps: Vec<String>,
    #[serde(default)]
    pub(super) options: WebOptions,
}

/// The page's code executor: `run(path, code)` and `reset(path)` returning promises.
pub(super) struct JsExecutor {
    pub(super) bridge: JsValue,
    pub(super) path: usize,
}

impl JsExecutor {
    pub(super) async fn call(&self, method: &str, args: &[JsValue]) -> std::result::Result<JsValue, String> {
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
