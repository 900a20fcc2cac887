//! The decode loop: prefill the prompt (reusing whatever prefix the KV cache already holds),
//! then one token at a time until a stop token, a stop string in the decoded text, the token
//! budget or the context runs out. Every step's logits are handed to the caller.
//!
//! The loop is `async` because reading logits back from a GPU in the browser must be awaited;
//! native callers block on it (see [`block_on`]).
//!
//! [`sampling`] holds the sampler and GenPRM's sampling defaults. May import: the model, the
//! tokenizer and the backend. Not the engines, the protocol or the sandbox.

pub mod sampling;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{KvCache, LogitsFor, Qwen2Model};
use crate::generate::sampling::{Sampler, Sampling};
use crate::tokenizer::Tokenizer;

/// What to generate and when to stop.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// At most this many new tokens.
    pub max_new_tokens: usize,
    /// Greedy or sampled.
    pub sampling: Sampling,
    /// Stop after emitting any of these ids (the id is kept in `ids`; its text is not in `text`).
    pub stop_token_ids: Vec<u32>,
    /// Stop once the decoded continuation contains any of these; the text is cut right after it
    /// (vLLM's `include_stop_str_in_output=True`). Needs a tokenizer.
    pub stop_strings: Vec<String>,
    /// Leave special tokens (BOS, EOS, ...) out of the text, as vLLM does by default.
    pub skip_special_tokens: bool,
    /// Checked before every forward pass; once set, generation ends with [`Error::Cancelled`].
    pub cancel: Option<CancelFlag>,
}

/// A flag another party sets to stop work in progress (a Cancel button); cheap to clone and
/// shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`Error::Cancelled`] once the flag is set.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() { Err(Error::Cancelled) } else { Ok(()) }
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 256,
            sampling: Sampling::Greedy,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            skip_special_tokens: true,
            cancel: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "value", rename_all = "snake_case")]
pub enum StopReason {
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// A stop id was generated.
    StopToken(u32),
    /// A stop string appeared in the text.
    StopString(String),
    /// The model's context window is full.
    ContextFull,
}

/// One generated token, as the loop reports it.
#[derive(Debug)]
pub struct TokenEvent<'a> {
    /// Index of the token among the new ones (0-based).
    pub index: usize,
    /// The token id.
    pub id: u32,
    /// Text this token completed (empty without a tokenizer or mid-character).
    pub text: &'a str,
    /// The raw logits the token was chosen from (`vocab_size` values). Empty where only the
    /// row's largest logits were read back (the local engine on a GPU), except at the tokens it
    /// scores (Yes and No), whose whole row it reads.
    pub logits: &'a [f32],
}

/// The result of a generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The new token ids.
    pub ids: Vec<u32>,
    /// Their decoded text, cut after a stop string when one ended generation.
    pub text: String,
    /// Why it ended.
    pub stop: StopReason,
}

/// In a browser, lets the page handle input (a Cancel click, rendering) at least every 40 ms:
/// on the CPU device nothing else in the decode loop returns to the event loop. Natively a no-op.
#[allow(clippy::unused_async)]
pub(crate) async fn yield_to_browser(last: &mut f64) {
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen::JsCast;
        let global = js_sys::global();
        let now = js_sys::Reflect::get(&global, &"performance".into())
            .ok()
            .and_then(|p| js_sys::Reflect::get(&p, &"now".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok()).map(|f| (p, f)))
            .and_then(|(p, f)| f.call0(&p).ok())
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        if now - *last < 40.0 {
            return;
        }
        *last = now;
        let Some(set_timeout) = js_sys::Reflect::get(&global, &"setTimeout".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok()) else {
            return;
        };
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            let _ = set_timeout.call2(&global, &resolve, &0.into());
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = last;
}

/// Blocks the current thread on a future (native callers of the async API).
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

/// Reads a `[rows, vocab]`-shaped logits tensor back to the host.
pub(crate) async fn read_logits(t: burn::tensor::Tensor<3>) -> Result<Vec<f32>> {
    let data = t.into_data_async().await.map_err(|e| Error::Device(format!("reading logits: {e:?}")))?;
    data.try_into_vec::<f32>().map_err(|e| Error::Device(format!("reading logits: {e:?}")))
}

/// Logits `[positions, vocab]` of every position of `ids` (a fresh cache, one sequence).
pub async fn score(model: &Qwen2Model, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
    let mut cache = KvCache::new();
    let logits = model.forward(ids, 1, &mut cache, LogitsFor::All)?;
    let v = model.vocab_size();
    Ok(read_logits(logits).await?.chunks(v).map(<[f32]>::to_vec).collect())
}

/// One sequence's side of the decode loop, apart from the model: chooses each next token from
/// the logits, decodes its text, and watches for stop ids, stop strings, the token budget and
/// the context. [`generate`] drives one; the local engine drives one per row of a batch.
pub struct Decoder<'t> {
    sampler: Sampler,
    stream: Option<crate::tokenizer::TextStream<'t>>,
    stop_token_ids: Vec<u32>,
    stop_strings: Vec<String>,
    longest_stop: usize,
    max_new_tokens: usize,
    ids: Vec<u32>,
    text: String,
    stop: StopReason,
}

impl<'t> Decoder<'t> {
    /// A decoder for `options`, refusing options that cannot work (stop strings without a
    /// tokenizer, an empty stop string, bad sampling parameters).
    pub fn new(tokenizer: Option<&'t Tokenizer>, options: &GenerateOptions) -> Result<Self> {
        if !options.stop_strings.is_empty() && tokenizer.is_none() {
            return Err(Error::InvalidArgument { name: "stop_strings", message: "need a tokenizer".into() });
        }
        if options.stop_strings.iter().any(String::is_empty) {
            return Err(Error::InvalidArgument { name: "stop_strings", message: "an empty stop string would stop at once".into() });
        }
        Ok(Decoder {
            sampler: Sampler::new(options.sampling)?,
            stream: tokenizer.map(|t| t.decode_stream(options.skip_special_tokens)),
            stop_token_ids: options.stop_token_ids.clone(),
            stop_strings: options.stop_strings.clone(),
            longest_stop: options.stop_strings.iter().map(String::len).max().unwrap_or(0),
            max_new_tokens: options.max_new_tokens,
            ids: Vec::new(),
            text: String::new(),
            stop: StopReason::MaxTokens,
        })
    }

    /// Chooses the next token from `logits` (the model's output after everything fed so far)
    /// and reports it to `on_token`. Returns the id to feed next, or `None` once generation is
    /// over. `room` says whether the context can take one more position.
    pub fn push(&mut self, logits: &[f32], room: bool, on_token: &mut dyn FnMut(TokenEvent<'_>)) -> Result<Option<u32>> {
        match self.choose(logits) {
            Some(id) => self.accept(id, logits, room, on_token),
            None => Ok(None),
        }
    }

    /// The next token from the whole row of logits, or `None` when the budget is spent.
    /// [`Decoder::accept`] takes it.
    pub fn choose(&mut self, logits: &[f32]) -> Option<u32> {
        (self.ids.len() < self.max_new_tokens).then(|| self.sampler.next(logits))
    }

    /// The next token from some of the row's logits ([`Sampler::next_among`]: the same token
    /// as [`Decoder::choose`] on the whole row), or `None` when the budget is spent.
    pub fn choose_among(&mut self, ids: &[u32], values: &[f32]) -> Option<u32> {
        (self.ids.len() < self.max_new_tokens).then(|| self.sampler.next_among(ids, values))
    }

    /// Whether `top_by_value` (a row's largest logits, largest first) decides the next token
    /// exactly ([`Sampler::enough`]).
    pub fn top_suffices(&self, top_by_value: &[f32]) -> bool {
        self.sampler.enough(top_by_value)
    }

    /// The sampling mode.
    pub fn sampling(&self) -> Sampling {
        self.sampler.sampling()
    }

    /// Takes the chosen token `id` (from [`Decoder::choose`] or [`Decoder::choose_among`]):
    /// decodes its text, reports it to `on_token` with `logits` (the row, or empty), and returns
    /// the id to feed next, or `None` once generation is over.
    pub fn accept(&mut self, id: u32, logits: &[f32], room: bool, on_token: &mut dyn FnMut(TokenEvent<'_>)) -> Result<Option<u32>> {
        let index = self.ids.len();
        self.ids.push(id);
        let text = &mut self.text;
        let before = text.len();
        let stop_id = self.stop_token_ids.contains(&id);
        if let Some(s) = self.stream.as_mut() {
            let piece = s.step(id)?;
            if !stop_id {
                text.push_str(&piece);
            }
        }
        // Look for stop strings only where the new text could complete one.
        let mut hit = None;
        if self.longest_stop > 0 && text.len() > before {
            let mut from = before.saturating_sub(self.longest_stop - 1);
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            hit = self
                .stop_strings
                .iter()
                .filter_map(|s| text[from..].find(s.as_str()).map(|pos| (from + pos + s.len(), s)))
                .min_by_key(|(end, _)| *end);
        }
        let piece_end = hit.as_ref().map_or(text.len(), |(end, _)| *end);
        on_token(TokenEvent { index, id, text: &text[before.min(piece_end)..piece_end], logits });
        if let Some((end, s)) = hit {
            self.stop = StopReason::StopString(s.clone());
            text.truncate(end);
            return Ok(None);
        }
        if stop_id {
            self.stop = StopReason::StopToken(id);
            return Ok(None);
        }
        if index + 1 == self.max_new_tokens {
            return Ok(None);
        }
        if !room {
            self.stop = StopReason::ContextFull;
            return Ok(None);
        }
        Ok(Some(id))
    }

    /// The generation so far.
    pub fn finish(self) -> Generation {
        Generation { ids: self.ids, text: self.text, stop: self.stop }
    }
}

/// Generates a continuation of `prompt`. `cache` may already hold a prefix of `prompt` (from a
/// previous call on the same conversation): only the rest is prefilled. On return the cache
/// holds the prompt and all generated tokens but the last. `on_token` sees every token with its
/// logits as it is produced.
pub async fn generate(
    model: &Qwen2Model,
    tokenizer: Option<&Tokenizer>,
    cache: &mut CachedPrefix,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_token: impl FnMut(TokenEvent<'_>),
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(Error::InvalidArgument { name: "prompt", message: "is empty".into() });
    }
    let mut decoder = Decoder::new(tokenizer, options)?;
    let max_ctx = model.config().max_position_embeddings;
    if prompt.len() > max_ctx {
        return Err(Error::ContextOverflow { tokens: prompt.len(), max: max_ctx });
    }
    let vocab = model.vocab_size();
    let check_cancel = || options.cancel.as_ref().map_or(Ok(()), CancelFlag::check);
    let mut last_yield = 0.0f64;
    check_cancel()?;

    // Reuse the longest cached prefix, leaving at least one prompt token to feed.
    let keep = cache.common_prefix(prompt).min(prompt.len() - 1);
    cache.truncate(keep);
    let mut logits = {
        let t = model.forward(&prompt[keep..], 1, &mut cache.cache, LogitsFor::Last)?;
        cache.ids.extend_from_slice(&prompt[keep..]);
        read_logits(t).await?
    };
    loop {
        if logits.len() != vocab {
            return Err(Error::Device(format!("expected {vocab} logits, got {}", logits.len())));
        }
        let Some(id) = decoder.push(&logits, cache.len() < max_ctx, &mut on_token)? else { break };
        yield_to_browser(&mut last_yield).await;
        check_cancel()?;
        let t = model.forward(&[id], 1, &mut cache.cache, LogitsFor::Last)?;
        cache.ids.push(id);
        logits = read_logits(t).await?;
    }
    Ok(decoder.finish())
}

/// A KV cache together with the token ids it holds, so a later prompt that extends them
/// (the next step of a conversation) is not prefilled again.
#[derive(Debug, Clone, Default)]
pub struct CachedPrefix {
    cache: KvCache,
    ids: Vec<u32>,
}

impl CachedPrefix {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids held.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Length of the common prefix of the held ids and `ids`.
    pub fn common_prefix(&self, ids: &[u32]) -> usize {
        self.ids.iter().zip(ids).take_while(|(a, b)| a == b).count()
    }

    /// Keeps only the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        if len < self.ids.len() {
            self.cache.truncate(len);
            self.ids.truncate(len);
        }
    }
}
