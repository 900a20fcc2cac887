//! The language-model interface the GenPRM protocol drives: text in, text out with stop strings,
//! and the Yes/No log-probabilities the reward needs. [`LocalEngine`] runs a [`Qwen2Model`] on
//! this device; other engines (a remote server, a scripted test double) implement the same trait.

use serde::Serialize;

use crate::error::Result;
use crate::generate::{CachedPrefix, CancelFlag, GenerateOptions, StopReason, generate};
use crate::model::Qwen2Model;
use crate::sampling::{Sampling, processed_logprobs};
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
    async fn complete(&mut self, request: &CompletionRequest<'_>, on_text: &mut dyn FnMut(&str)) -> Result<Completion>;
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

/// A [`Qwen2Model`] on this device, with one reusable KV cache per solution path.
pub struct LocalEngine<'m> {
    model: &'m Qwen2Model,
    tokenizer: &'m Tokenizer,
    caches: Vec<CachedPrefix>,
    yes: u32,
    no: u32,
    eos: Vec<u32>,
    cancel: Option<CancelFlag>,
    prefilled: usize,
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
        Ok(LocalEngine { model, tokenizer, caches: Vec::new(), yes, no, eos, cancel: None, prefilled: 0 })
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
        self.prefilled
    }
}

impl Engine for LocalEngine<'_> {
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.tokenizer.encode(text, false)?.len())
    }

    fn answer_ids(&self) -> (u32, u32) {
        (self.yes, self.no)
    }

    async fn complete(&mut self, request: &CompletionRequest<'_>, on_text: &mut dyn FnMut(&str)) -> Result<Completion> {
        // Like vLLM given a text prompt: the whole text is tokenized again (the template wrote
        // BOS, so none is added); the cache keeps whatever prefix of ids is unchanged.
        let ids = self.tokenizer.encode(request.prompt, false)?;
        if self.caches.len() <= request.path {
            self.caches.resize_with(request.path + 1, CachedPrefix::new);
        }
        // Another path may already hold more of this prompt (Maj@N: every sample of a step
        // starts from the same conversation): start from a copy of its cache instead of
        // prefilling the shared prefix again. Caches are immutable tensors, so a copy is cheap.
        let own = self.caches[request.path].common_prefix(&ids);
        let best = (0..self.caches.len()).max_by_key(|&i| self.caches[i].common_prefix(&ids)).unwrap_or(request.path);
        if best != request.path && self.caches[best].common_prefix(&ids) > own {
            self.caches[request.path] = self.caches[best].clone();
        }
        let reused = self.caches[request.path].common_prefix(&ids).min(ids.len().saturating_sub(1));
        self.prefilled += ids.len() - reused;
        let options = GenerateOptions {
            max_new_tokens: request.max_tokens,
            sampling: request.sampling,
            stop_token_ids: self.eos.clone(),
            stop_strings: request.stop.iter().map(|s| s.to_string()).collect(),
            skip_special_tokens: true,
            cancel: self.cancel.clone(),
        };
        let (yes, no) = (self.yes, self.no);
        let mut answer = Vec::new();
        let out = generate(self.model, Some(self.tokenizer), &mut self.caches[request.path], &ids, &options, |ev| {
            if ev.id == yes || ev.id == no {
                answer.push((ev.index, answer_scores(ev.logits, ev.id, yes, no, request.sampling)));
            }
            on_text(ev.text);
        })
        .await?;
        Ok(Completion {
            text: out.text,
            token_ids: out.ids,
            answer_scores: answer,
            stopped_by_string: matches!(out.stop, StopReason::StopString(_)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplingParams;

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
