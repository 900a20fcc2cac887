//! The language-model interface the GenPRM protocol drives: text in, text out with stop strings,
//! and the Yes/No log-probabilities the reward needs. [`LocalEngine`] runs a [`Qwen2Model`] on
//! this device; other engines (a remote server, a scripted test double) implement the same trait.
//!
//! May import: the model, generation, the tokenizer and the backend. Not the protocol ([`crate::prm`])
//! or the sandbox: engines know nothing of GenPRM.

#[cfg(not(target_arch = "wasm32"))]
pub mod remote;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::generate::{CancelFlag, Decoder, GenerateOptions, Generation, StopReason, read_logits, yield_to_browser};
use crate::model::{KvCache, LogitsFor, Qwen2Model};
use crate::generate::sampling::{Sampling, processed_logprobs};
use crate::tokenizer::Tokenizer;

/// How many log-probabilities vLLM was asked for (`logprobs=20` in GenPRM's code): the official
/// reward substitutes the smallest of them when the other answer token is not among them.
pub const OFFICIAL_LOGPROBS: usize = 20;

/// One generation request.
#[derive(Debug, Clone)]
pub struct CompletionRequest<'a> {
    /// The whole prompt text (chat template already applied, BOS included).
    pub prompt: &'a str,
    /// Token budget.
    pub max_tokens: usize,
    /// Stop strings; the text ends right after the first one found (it is kept).
    pub stop: &'a [&'a str],
    /// Greedy or sampled.
    pub sampling: Sampling,
    /// Which solution path this is, so an engine can keep one KV cache per path.
    pub path: usize,
}

/// Log-probabilities of the two answer tokens at one generated position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnswerScores {
    /// vLLM-processed log-probability of "Yes" when it is among the returned top log-probabilities.
    pub yes: Option<f32>,
    /// Likewise for "No".
    pub no: Option<f32>,
    /// The smallest returned log-probability (the official stand-in for a missing token).
    pub min: f32,
    /// Raw logit of "Yes" (before temperature and truncation), when the engine knows it.
    pub raw_yes: Option<f32>,
    /// Raw logit of "No", when the engine knows it.
    pub raw_no: Option<f32>,
    /// How many log-probabilities the engine saw at this position, when it saw only a top list
    /// (a remote server) rather than every logit; `None` for engines that see all logits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returned: Option<usize>,
    /// Whether top-k/top-p were applied to that top list rather than the whole vocabulary (the
    /// server returned fewer entries than the top-k keeps), so the processed values are estimates.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub approximate_nucleus: bool,
}

/// The result of one request.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    /// The generated text (cut after the stop string that ended it).
    pub text: String,
    /// The generated token ids.
    pub token_ids: Vec<u32>,
    /// Scores at every position whose token is "Yes" or "No": (position, scores).
    pub answer_scores: Vec<(usize, AnswerScores)>,
    /// Whether a stop string ended it (as opposed to the budget or an end-of-sequence token).
    pub stopped_by_string: bool,
}

/// A text generator the protocol can drive.
#[allow(async_fn_in_trait)]
pub trait Engine {
    /// Token count of `text` without special tokens (`tokenizer.tokenize(text)` in the official code).
    fn count_tokens(&self, text: &str) -> Result<usize>;
    /// The ids of "Yes" and "No" (`tokenizer.encode(word)[-1]`).
    fn answer_ids(&self) -> (u32, u32);
    /// Generates a continuation, calling `on_text` with each new piece of text.
    /// Requests for different `path`s may be in flight at once (awaited together): an engine
    /// can batch them.
    async fn complete(&self, request: &CompletionRequest<'_>, on_text: &mut dyn FnMut(&str)) -> Result<Completion>;
}

/// Scores for one position from its raw logits, as vLLM 0.7.1 would report them.
pub fn answer_scores(logits: &[f32], sampled: u32, yes: u32, no: u32, sampling: Sampling) -> AnswerScores {
    let lp = match sampling {
        Sampling::Greedy => processed_logprobs(logits, 1.0, None, 1.0),
        Sampling::Sample(p) => processed_logprobs(logits, p.temperature, p.top_k, p.top_p),
    };
    // The returned dict: the top OFFICIAL_LOGPROBS entries plus the sampled token.
    let k = OFFICIAL_LOGPROBS.min(lp.len());
    let mut order: Vec<usize> = (0..lp.len()).collect();
    if k > 0 && k < lp.len() {
        order.select_nth_unstable_by(k - 1, |&a, &b| lp[b].total_cmp(&lp[a]).then(a.cmp(&b)));
    }
    let mut dict: Vec<usize> = order[..k].to_vec();
    if !dict.contains(&(sampled as usize)) {
        dict.push(sampled as usize);
    }
    let lookup = |id: u32| dict.contains(&(id as usize)).then(|| lp[id as usize]);
    let min = dict.iter().map(|&i| lp[i]).fold(f32::INFINITY, f32::min);
    AnswerScores {
        yes: lookup(yes),
        no: lookup(no),
        min,
        raw_yes: logits.get(yes as usize).copied(),
        raw_no: logits.get(no as usize).copied(),
        returned: None,
        approximate_nucleus: false,
    }
}

/// A [`Qwen2Model`] on this device. Requests for different paths that are in flight at the
/// same time (the N samples of Maj@N, each awaiting its own `complete`) decode as one batch:
/// one forward pass per token for all of them, each row of the batch at its own position with
/// its own stop strings, budget and sampler. A request that ends leaves the batch while the
/// others go on; its path's next request (after its code ran) joins again. Each path keeps its
/// rows of the KV cache between requests, so a conversation's history is never prefilled
/// twice, and a path whose prompt starts like another's copies that part of its cache.
pub struct LocalEngine<'m> {
    model: &'m Qwen2Model,
    tokenizer: &'m Tokenizer,
    yes: u32,
    no: u32,
    eos: Vec<u32>,
    cancel: Option<CancelFlag>,
    batch: RefCell<Batch<'m>>,
}

/// Another row's cached prefix is copied when it holds at least this many more positions of a
/// prompt than the row's own (or all of the prompt).
const MIN_COPY: usize = 32;

/// The shared state of the requests in flight.
#[derive(Default)]
struct Batch<'m> {
    cache: KvCache,
    /// The ids each row of the cache holds.
    held: Vec<Vec<u32>>,
    /// The request running on each row (one row per path).
    slots: Vec<Option<Slot<'m>>>,
    /// A forward pass is under way (its caller is awaiting the logits).
    stepping: bool,
    stats: EngineStats,
    last_yield: f64,
}

/// What a [`LocalEngine`] has run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Prompt tokens run through the model (those not found in a KV cache).
    pub prefilled_tokens: usize,
    /// Tokens generated, all requests together.
    pub generated_tokens: usize,
    /// Forward passes that decoded (each feeds one token to every request in the batch).
    pub decode_passes: usize,
    /// Forward passes that prefilled a prompt.
    pub prefill_passes: usize,
    /// Passes whose logits were read back whole (every pass on the CPU; on a GPU, only those
    /// where a token was Yes or No, or a row's sampling needed its whole distribution).
    pub whole_logit_reads: usize,
}

/// One request in flight.
struct Slot<'m> {
    /// `None` once the generation is over.
    decoder: Option<Decoder<'m>>,
    sampling: Sampling,
    /// The whole prompt, while it still has to be prefilled.
    prompt: Option<Vec<u32>>,
    /// The id to feed at the next pass.
    next: Option<u32>,
    /// Text not yet handed to the caller.
    pieces: String,
    answers: Vec<(usize, AnswerScores)>,
    done: Option<Result<Generation>>,
    waker: Option<Waker>,
}

impl Batch<'_> {
    fn wake_all(&mut self) {
        for slot in self.slots.iter_mut().flatten() {
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }

    /// Whether a pass should run now: something to feed, no pass running, and every ended
    /// request collected (so its path can submit its next request and join this pass).
    fn ready(&self) -> bool {
        let live = || self.slots.iter().flatten();
        !self.stepping && live().all(|s| s.done.is_none()) && live().any(|s| s.prompt.is_some() || s.next.is_some())
    }

    /// Ends every other request in flight with an error (the pass `row`'s caller ran failed or
    /// was cancelled; that caller returns the error itself).
    fn fail_others(&mut self, row: usize, error: &Error) {
        for (r, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot.as_mut().filter(|_| r != row) else { continue };
            if slot.done.is_none() {
                slot.done = Some(Err(match error {
                    Error::Cancelled => Error::Cancelled,
                    e => Error::Device(format!("the batch this request ran in failed: {e}")),
                }));
            }
        }
        self.wake_all();
    }

    /// Points `row` at the longest cached prefix of `prompt` (its own, or a copy of another
    /// row's) and returns the ids still to feed (at least one).
    fn reuse(&mut self, row: usize, prompt: &[u32]) -> Result<Vec<u32>> {
        let common = |held: &Vec<u32>| held.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let own = common(&self.held[row]);
        let (best, best_len) =
            self.held.iter().enumerate().map(|(r, h)| (r, common(h))).max_by_key(|&(r, n)| (n, r == row)).unwrap_or((row, own));
        // Copy only a real saving (the shared prompt of a new step), not the odd token another
        // row happens to share: positions computed in other passes can differ in the last bits,
        // and results should not depend on what other rows hold at that moment.
        if best != row && best_len > own && (best_len - own >= MIN_COPY || best_len + 1 >= prompt.len()) {
            self.cache.copy_prefix(best, row, best_len)?;
            self.held[row] = self.held[best][..best_len].to_vec();
        }
        let keep = common(&self.held[row]).min(prompt.len() - 1).min(self.cache.row_len(row));
        self.cache.truncate_row(row, keep);
        self.held[row].truncate(keep);
        self.stats.prefilled_tokens += prompt.len() - keep;
        Ok(prompt[keep..].to_vec())
    }
}

/// Removes a request's slot however its call ends (returned, failed, or dropped early because
/// another sample failed), so the batch never waits on it.
struct SlotGuard<'a, 'm> {
    batch: &'a RefCell<Batch<'m>>,
    row: usize,
}

impl Drop for SlotGuard<'_, '_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.batch.try_borrow_mut() {
            if let Some(slot) = b.slots.get_mut(self.row) {
                *slot = None;
            }
            b.wake_all();
        }
    }
}

/// Marks the end of a pass however it ends (done, failed, or its caller dropped mid-pass) and
/// wakes the requests waiting for it.
struct PassGuard<'a, 'm>(&'a RefCell<Batch<'m>>);

impl Drop for PassGuard<'_, '_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.0.try_borrow_mut() {
            b.stepping = false;
            b.wake_all();
        }
    }
}

/// Resolves once the request's owner was woken (after registering its waker in the slot).
struct Woken<'a, 'm> {
    batch: &'a RefCell<Batch<'m>>,
    row: usize,
    registered: bool,
}

impl Future for Woken<'_, '_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered {
            return Poll::Ready(());
        }
        if let Some(Some(slot)) = self.batch.borrow_mut().slots.get_mut(self.row) {
            slot.waker = Some(cx.waker().clone());
        }
        self.registered = true;
        Poll::Pending
    }
}

/// Lets the other requests in flight run once (they take their text and may join the batch).
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<'m> LocalEngine<'m> {
    /// An engine over a loaded model and its tokenizer.
    pub fn new(model: &'m Qwen2Model, tokenizer: &'m Tokenizer) -> Result<Self> {
        let yes = tokenizer.last_token_id("Yes")?;
        let no = tokenizer.last_token_id("No")?;
        let mut eos = model.config().eos_ids();
        if let Some(id) = tokenizer.eos_token().and_then(|t| tokenizer.token_id(t))
            && !eos.contains(&id)
        {
            eos.push(id);
        }
        Ok(LocalEngine { model, tokenizer, yes, no, eos, cancel: None, batch: RefCell::new(Batch::default()) })
    }

    /// Stops every generation with [`crate::Error::Cancelled`] once `flag` is set.
    pub fn with_cancel(mut self, flag: CancelFlag) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        self.tokenizer
    }

    /// Prompt tokens run through the model so far (those not found in a KV cache).
    pub fn prefilled_tokens(&self) -> usize {
        self.batch.borrow().stats.prefilled_tokens
    }

    /// Counts of what ran so far (tokens, forward passes).
    pub fn stats(&self) -> EngineStats {
        self.batch.borrow().stats
    }

    /// Runs one round of forward passes: each new request's prompt (alone, after taking what
    /// the cache already holds of it), then one token for every decoding request together.
    async fn step(&self) -> Result<()> {
        let mut last_yield = {
            let mut b = self.batch.borrow_mut();
            b.stepping = true;
            b.last_yield
        };
        let _pass = PassGuard(&self.batch);
        yield_to_browser(&mut last_yield).await;
        self.batch.borrow_mut().last_yield = last_yield;
        if let Some(c) = &self.cancel {
            c.check()?;
        }
        // Prefills, one row at a time: a later row may copy what an earlier one just cached.
        let prefills: Vec<usize> = {
            let b = self.batch.borrow();
            b.slots.iter().enumerate().filter(|(_, s)| s.as_ref().is_some_and(|s| s.prompt.is_some())).map(|(r, _)| r).collect()
        };
        for row in prefills {
            let feed = {
                let mut b = self.batch.borrow_mut();
                let prompt = b.slots[row].as_mut().and_then(|s| s.prompt.take()).expect("a prefill row has its prompt");
                b.reuse(row, &prompt)?
            };
            if feed.len() == 1 {
                // Only the last prompt id is new: it decodes with the others.
                if let Some(s) = self.batch.borrow_mut().slots[row].as_mut() {
                    s.next = Some(feed[0]);
                }
                continue;
            }
            let t = {
                let mut b = self.batch.borrow_mut();
                let t = self.model.forward_rows(row, &[&feed], &mut b.cache, LogitsFor::Last)?;
                b.held[row].extend_from_slice(&feed);
                b.stats.prefill_passes += 1;
                t
            };
            self.take_pass(t, &[Some(row)]).await?;
        }
        // One decode pass over the contiguous rows that have a token to feed.
        let rows: Vec<(usize, u32)> = {
            let b = self.batch.borrow();
            b.slots.iter().enumerate().filter_map(|(r, s)| s.as_ref().and_then(|s| s.next).map(|id| (r, id))).collect()
        };
        if let (Some(&(first, _)), Some(&(last, _))) = (rows.first(), rows.last()) {
            let t = {
                let mut b = self.batch.borrow_mut();
                let mut inputs: Vec<Vec<u32>> = vec![Vec::new(); last + 1 - first];
                for &(r, id) in &rows {
                    inputs[r - first] = vec![id];
                    b.held[r].push(id);
                    if let Some(s) = b.slots[r].as_mut() {
                        s.next = None;
                    }
                }
                let inputs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
                b.stats.decode_passes += 1;
                self.model.forward_rows(first, &inputs, &mut b.cache, LogitsFor::Last)?
            };
            let taken: Vec<Option<usize>> = (first..=last).map(|r| rows.iter().any(|&(x, _)| x == r).then_some(r)).collect();
            self.take_pass(t, &taken).await?;
        }
        Ok(())
    }

    /// Reads a pass's logits (`[rows, 1, vocab]`) back and hands row `i` to the decoder of
    /// batch row `rows[i]` (`None`: nothing to take). On a GPU, when every row's sampling is
    /// decided by a few of its largest logits ([`Sampling::top_needed`]), only those are read
    /// back ([`crate::backend::gpu::topk`]), and the whole rows only when a row's token is Yes or No
    /// (its answer scores need them); the tokens are the same as from the whole rows.
    async fn take_pass(&self, t: burn::tensor::Tensor<3>, rows: &[Option<usize>]) -> Result<()> {
        let vocab = self.model.vocab_size();
        #[cfg(feature = "wgpu")]
        if let Some(k) = self.top_needed(rows) {
            let n = rows.len();
            let top = crate::backend::gpu::topk::top_k(t.clone().reshape([n, vocab]), k);
            let top = read_logits(top.reshape([n, 1, 2 * k])).await?;
            if let Some(picks) = self.pick_among(&top, k, rows) {
                let yes_no = picks.iter().any(|&(_, id)| id.is_some_and(|id| id == self.yes || id == self.no));
                let full = if yes_no {
                    self.batch.borrow_mut().stats.whole_logit_reads += 1;
                    read_logits(t).await?
                } else {
                    Vec::new()
                };
                let row_of = |i: usize| full.get(i * vocab..(i + 1) * vocab).unwrap_or(&[]);
                let outs: Vec<(usize, Option<Option<u32>>, &[f32])> = rows
                    .iter()
                    .zip(picks.iter().map(|p| p.1))
                    .enumerate()
                    .filter_map(|(i, (r, id))| r.map(|r| (r, Some(id), row_of(i))))
                    .collect();
                self.take_rows(&outs);
                return Ok(());
            }
        }
        self.batch.borrow_mut().stats.whole_logit_reads += 1;
        let logits = read_logits(t).await?;
        let outs: Vec<(usize, Option<Option<u32>>, &[f32])> =
            rows.iter().enumerate().filter_map(|(i, r)| r.map(|r| (r, None, &logits[i * vocab..][..vocab]))).collect();
        self.take_rows(&outs);
        Ok(())
    }

    /// How many of each row's largest logits to read back on a GPU: the most any row's
    /// sampling needs, or `None` on the CPU or when a row needs its whole distribution.
    #[cfg(feature = "wgpu")]
    fn top_needed(&self, rows: &[Option<usize>]) -> Option<usize> {
        if *self.model.device() == burn::tensor::Device::flex() {
            return None;
        }
        let vocab = self.model.vocab_size();
        let b = self.batch.borrow();
        let mut k = 1;
        for r in rows.iter().flatten() {
            let Some(decoder) = b.slots.get(*r).and_then(|s| s.as_ref()).and_then(|s| s.decoder.as_ref()) else { continue };
            k = k.max(decoder.sampling().top_needed(vocab)?);
        }
        Some(k)
    }

    /// Each row's token chosen from its `k` largest logits (`top`: per row `k` values, largest
    /// first, then their ids), paired with the tensor row, or `None` (nothing drawn) when a row
    /// needs more of its logits than that (NaN, or a tie past the `k`-th).
    #[cfg(feature = "wgpu")]
    fn pick_among(&self, top: &[f32], k: usize, rows: &[Option<usize>]) -> Option<Vec<(usize, Option<u32>)>> {
        let vocab = self.model.vocab_size();
        let mut b = self.batch.borrow_mut();
        let mut found = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let Some(r) = *r else { continue };
            let Some(decoder) = b.slots.get(r).and_then(|s| s.as_ref()).and_then(|s| s.decoder.as_ref()) else { continue };
            let row = &top[i * 2 * k..(i + 1) * 2 * k];
            let c = crate::backend::gpu::topk::Candidates::parse(row, vocab).filter(|_| decoder.top_suffices(&row[..k]))?;
            found.push((i, r, c));
        }
        let mut picks: Vec<(usize, Option<u32>)> = rows.iter().enumerate().map(|(i, _)| (i, None)).collect();
        for (i, r, c) in found {
            if let Some(decoder) = b.slots[r].as_mut().and_then(|s| s.decoder.as_mut()) {
                picks[i].1 = decoder.choose_among(&c.ids, &c.values);
            }
        }
        Some(picks)
    }

    /// Hands each row's logits to its decoder: the next id to feed, or the finished generation.
    /// A row's token may be chosen already (`Some(choice)`, from its largest logits; `logits`
    /// is then the whole row or empty), else it is chosen from `logits`.
    fn take_rows(&self, rows: &[(usize, Option<Option<u32>>, &[f32])]) {
        let (max_ctx, yes, no) = (self.model.config().max_position_embeddings, self.yes, self.no);
        let mut b = self.batch.borrow_mut();
        let b = &mut *b;
        for &(row, chosen, logits) in rows {
            let room = b.cache.row_len(row) < max_ctx;
            let Some(slot) = b.slots[row].as_mut() else { continue };
            let (sampling, pieces, answers) = (slot.sampling, &mut slot.pieces, &mut slot.answers);
            let Some(decoder) = slot.decoder.as_mut() else { continue };
            b.stats.generated_tokens += 1;
            let pushed = match chosen.unwrap_or_else(|| decoder.choose(logits)) {
                None => Ok(None),
                Some(id) => decoder.accept(id, logits, room, &mut |ev| {
                    if ev.id == yes || ev.id == no {
                        answers.push((ev.index, answer_scores(ev.logits, ev.id, yes, no, sampling)));
                    }
                    pieces.push_str(ev.text);
                }),
            };
            match pushed {
                Ok(Some(id)) => slot.next = Some(id),
                Ok(None) => slot.done = slot.decoder.take().map(|d| Ok(d.finish())),
                Err(e) => slot.done = Some(Err(e)),
            }
        }
    }
}

impl Engine for LocalEngine<'_> {
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.tokenizer.encode(text, false)?.len())
    }

    fn answer_ids(&self) -> (u32, u32) {
        (self.yes, self.no)
    }

    async fn complete(&self, request: &CompletionRequest<'_>, on_text: &mut dyn FnMut(&str)) -> Result<Completion> {
        // Like vLLM given a text prompt: the whole text is tokenized again (the template wrote
        // BOS, so none is added); the cache keeps whatever prefix of ids is unchanged.
        let ids = self.tokenizer.encode(request.prompt, false)?;
        if ids.is_empty() {
            return Err(Error::InvalidArgument { name: "prompt", message: "is empty".into() });
        }
        let max_ctx = self.model.config().max_position_embeddings;
        if ids.len() > max_ctx {
            return Err(Error::ContextOverflow { tokens: ids.len(), max: max_ctx });
        }
        let options = GenerateOptions {
            max_new_tokens: request.max_tokens,
            sampling: request.sampling,
            stop_token_ids: self.eos.clone(),
            stop_strings: request.stop.iter().map(|s| s.to_string()).collect(),
            skip_special_tokens: true,
            cancel: None,
        };
        let decoder = Decoder::new(Some(self.tokenizer), &options)?;
        if let Some(c) = &self.cancel {
            c.check()?;
        }
        let row = request.path;
        {
            let mut b = self.batch.borrow_mut();
            if b.slots.len() <= row {
                b.slots.resize_with(row + 1, || None);
                b.held.resize_with(row + 1, Vec::new);
            }
            if b.slots[row].is_some() {
                return Err(Error::InvalidArgument { name: "path", message: format!("path {row} already has a request in flight") });
            }
            b.slots[row] = Some(Slot {
                decoder: Some(decoder),
                sampling: request.sampling,
                prompt: Some(ids),
                next: None,
                pieces: String::new(),
                answers: Vec::new(),
                done: None,
                waker: None,
            });
        }
        let _guard = SlotGuard { batch: &self.batch, row };
        // Let the other requests being made now (the other samples of this step) open theirs,
        // so the first pass already runs them together.
        YieldNow(false).await;
        loop {
            let (pieces, done) = {
                let mut b = self.batch.borrow_mut();
                let slot = b.slots[row].as_mut().expect("the slot lives while its request does");
                (std::mem::take(&mut slot.pieces), slot.done.take())
            };
            if !pieces.is_empty() {
                on_text(&pieces);
            }
            if let Some(done) = done {
                let answers = {
                    let mut b = self.batch.borrow_mut();
                    let slot = b.slots[row].take().expect("the slot lives while its request does");
                    b.wake_all();
                    slot.answers
                };
                let out = done?;
                return Ok(Completion {
                    text: out.text,
                    token_ids: out.ids,
                    answer_scores: answers,
                    stopped_by_string: matches!(out.stop, StopReason::StopString(_)),
                });
            }
            let ready = self.batch.borrow().ready();
            if ready {
                if let Err(e) = self.step().await {
                    self.batch.borrow_mut().fail_others(row, &e);
                    return Err(e);
                }
                let others = self.batch.borrow().slots.iter().flatten().count() > 1;
                if others {
                    YieldNow(false).await;
                }
            } else {
                Woken { batch: &self.batch, row, registered: false }.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::sampling::SamplingParams;

    #[test]
    fn both_answers_in_the_nucleus() {
        let mut logits = vec![-10.0f32; 100];
        logits[7] = 2.0; // yes
        logits[9] = 1.7; // no
        let s = answer_scores(&logits, 7, 7, 9, Sampling::Sample(SamplingParams::default()));
        let (py, pn) = (f64::from(s.yes.unwrap()).exp(), f64::from(s.no.unwrap()).exp());
        let expected = 1.0 / (1.0 + (-(0.3f64 / 0.6)).exp());
        assert!((py / (py + pn) - expected).abs() < 1e-5);
    }

    #[test]
    fn the_other_answer_cut_by_top_p_has_no_mass() {
        let mut logits = vec![-10.0f32; 100];
        logits[7] = 9.0;
        logits[9] = 1.0;
        let s = answer_scores(&logits, 7, 7, 9, Sampling::Sample(SamplingParams::default()));
        assert_eq!(s.yes, Some(0.0));
        // Fewer than 20 tokens survive, so the dict holds −∞ entries: No is either −∞ or missing with min −∞.
        assert!(s.no.map_or(s.min == f32::NEG_INFINITY, |v| v == f32::NEG_INFINITY));
        assert_eq!(s.raw_no, Some(1.0));
    }
}
