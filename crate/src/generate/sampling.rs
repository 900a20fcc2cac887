//! Choosing the next token from a row of logits: greedy, or sampling with temperature, top-k and
//! top-p in vLLM's order (temperature, then top-k, then top-p), deterministic for a seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Sampling {
    /// The most likely token (the lowest id among equal maxima).
    Greedy,
    /// A random draw from the processed distribution.
    Sample(SamplingParams),
}

impl Sampling {
    /// Greedy, or sampling with these parameters after checking their ranges; a `top_k` of 0
    /// keeps every token (the CLI's and the browser's option conventions).
    pub fn from_options(greedy: bool, temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Result<Self> {
        if greedy {
            return Ok(Sampling::Greedy);
        }
        let p = SamplingParams { temperature, top_k: (top_k > 0).then_some(top_k), top_p, seed };
        p.validate()?;
        Ok(Sampling::Sample(p))
    }

    /// How many of a row's largest logits decide the next token exactly, when that is fewer than
    /// the vocabulary: 1 for greedy (and a temperature below 1e-5), `top_k + 1` with top-k (the
    /// one more shows whether a tie reaches past the `k`-th; see [`Sampler::enough`]). `None`:
    /// the whole row is needed.
    pub fn top_needed(&self, vocab: usize) -> Option<usize> {
        match *self {
            Sampling::Greedy => Some(1),
            Sampling::Sample(p) if p.temperature < 1e-5 => Some(1),
            Sampling::Sample(SamplingParams { top_k: Some(k), .. }) if k > 0 && k + 1 < vocab => Some(k + 1),
            Sampling::Sample(_) => None,
        }
    }
}

/// Parameters of random sampling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Logits are divided by this; below 1e-5 sampling becomes greedy, as in vLLM.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens; `None` or 0 keeps all.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose mass reaches `top_p` (1.0 keeps all).
    pub top_p: f32,
    /// Seed of the random stream; the same seed gives the same tokens.
    pub seed: u64,
}

/// GenPRM's sampling temperature (the official inference setting): the one place every
/// front end (library, CLI, browser) takes it from.
pub const GENPRM_TEMPERATURE: f32 = 0.6;
/// GenPRM's top-k.
pub const GENPRM_TOP_K: usize = 20;
/// GenPRM's top-p.
pub const GENPRM_TOP_P: f32 = 0.95;

impl Default for SamplingParams {
    /// GenPRM's defaults: T = 0.6, top-k 20, top-p 0.95 ([`GENPRM_TEMPERATURE`], [`GENPRM_TOP_K`],
    /// [`GENPRM_TOP_P`]).
    fn default() -> Self {
        SamplingParams { temperature: GENPRM_TEMPERATURE, top_k: Some(GENPRM_TOP_K), top_p: GENPRM_TOP_P, seed: 0 }
    }
}

impl SamplingParams {
    /// Checks the ranges: temperature ≥ 0 and finite, 0 < top_p ≤ 1.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::InvalidArgument { name: "temperature", message: format!("{} must be ≥ 0", self.temperature) });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidArgument { name: "top_p", message: format!("{} must be in (0, 1]", self.top_p) });
        }
        Ok(())
    }
}

/// Index of the largest value; the first one among ties, NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// Log-probabilities after vLLM 0.7.1's processing: `logits / temperature`, tokens outside the
/// top-k and the top-p nucleus set to −∞, then log-softmax. These are the numbers vLLM returns
/// as `logprobs`, which GenPRM's reward is computed from.
pub fn processed_logprobs(logits: &[f32], temperature: f32, top_k: Option<usize>, top_p: f32) -> Vec<f32> {
    let t = if temperature < 1e-5 { 1.0 } else { temperature };
    let mut scaled: Vec<f32> = logits.iter().map(|&l| l / t).collect();
    let n = scaled.len();
    if n == 0 {
        return scaled;
    }
    // vLLM's _apply_top_k_top_p sorts every logit ascending. Tokens below the k-th largest get
    // −∞ and zero mass, so they never move the top-p walk: only the survivors need sorting
    // (151,936 logits per token otherwise, for each sample of a batch).
    // Keep values ≥ the k-th largest (ties with it survive, as in vLLM's gather/compare).
    let kth = top_k.filter(|&k| k > 0 && k < n).map(|k| kth_largest(&scaled, k));
    if let Some(kth) = kth {
        for v in scaled.iter_mut() {
            if v.total_cmp(&kth).is_lt() {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    if top_p < 1.0 {
        let mut order: Vec<usize> = match kth {
            Some(kth) => (0..n).filter(|&i| !scaled[i].total_cmp(&kth).is_lt()).collect(),
            None => (0..n).collect(),
        };
        order.sort_by(|&a, &b| scaled[a].total_cmp(&scaled[b]).then(b.cmp(&a)));
        let max = scaled[order[order.len() - 1]];
        let exps: Vec<f64> = order.iter().map(|&i| f64::from(scaled[i] - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        let mut cum = 0.0f64;
        let mut masked = Vec::new();
        let last = order.len() - 1;
        for (rank, &i) in order.iter().enumerate() {
            cum += exps[rank] / total;
            // Mask while the cumulative mass from the bottom is ≤ 1 − p; the top token always stays.
            if cum <= f64::from(1.0 - top_p) && rank != last {
                masked.push(i);
            } else {
                break;
            }
        }
        for i in masked {
            scaled[i] = f32::NEG_INFINITY;
        }
    }
    log_softmax(&scaled)
}

/// The `k`-th largest of `values` in `f32::total_cmp` order, counting repeated values
/// (`0 < k ≤ len`): one pass keeping the `k` largest seen so far, sorted (the top-k of a
/// 151,936-token vocabulary with k = 20 touches the small array a few hundred times).
fn kth_largest(values: &[f32], k: usize) -> f32 {
    let mut top: Vec<f32> = Vec::with_capacity(k + 1);
    for &v in values {
        if top.len() == k {
            if v.total_cmp(&top[0]).is_le() {
                continue;
            }
            top.remove(0);
        }
        let at = top.partition_point(|t| t.total_cmp(&v).is_lt());
        top.insert(at, v);
    }
    top[0]
}

/// Log-softmax in f64 accumulation; −∞ inputs stay −∞ (and cost no exponential: after top-k
/// most of the vocabulary is −∞).
pub fn log_softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return x.to_vec();
    }
    let sum: f64 = x.iter().filter(|&&v| v != f32::NEG_INFINITY).map(|&v| f64::from(v - max).exp()).sum();
    let log_sum = sum.ln() as f32;
    x.iter().map(|&v| v - max - log_sum).collect()
}

/// Picks tokens; holds the random stream so a sequence of draws is reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Sampler {
    sampling: Sampling,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler for the given mode (the seed is taken from the parameters).
    pub fn new(sampling: Sampling) -> Result<Self> {
        let seed = match sampling {
            Sampling::Greedy => 0,
            Sampling::Sample(p) => {
                p.validate()?;
                p.seed
            }
        };
        Ok(Sampler { sampling, rng: ChaCha8Rng::seed_from_u64(seed) })
    }

    /// The sampling mode.
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// The next token for one row of logits.
    pub fn next(&mut self, logits: &[f32]) -> u32 {
        self.pick(logits)
    }

    /// Whether `top` (a row's largest logits by value, lower id first among equal values, as
    /// many as [`Sampling::top_needed`] asked for or more) decides the next token exactly as the
    /// whole row would: every token the whole row's top-k keeps is among them.
    pub fn enough(&self, top_by_value: &[f32]) -> bool {
        let Some(n) = self.sampling.top_needed(usize::MAX) else { return false };
        if top_by_value.len() < n || top_by_value.iter().any(|v| v.is_nan()) {
            return false;
        }
        match self.sampling {
            Sampling::Sample(p) if n > 1 => {
                // The k-th largest after scaling, against the next one: a tie (or -0.0 beside
                // 0.0) may continue past what was read.
                let t = if p.temperature < 1e-5 { 1.0 } else { p.temperature };
                top_by_value[n - 1] / t < top_by_value[n - 2] / t
            }
            _ => true,
        }
    }

    /// The next token from some of a row's logits: `ids` (increasing) and their `values`, which
    /// must hold every token the whole row would keep ([`Sampler::enough`]). Draws the same
    /// token, and advances the random stream the same way, as [`Sampler::next`] on the whole row.
    pub fn next_among(&mut self, ids: &[u32], values: &[f32]) -> u32 {
        let i = self.pick(values) as usize;
        ids.get(i).copied().unwrap_or(0)
    }

    /// The index of the chosen entry of `logits`.
    fn pick(&mut self, logits: &[f32]) -> u32 {
        match self.sampling {
            Sampling::Greedy => argmax(logits),
            Sampling::Sample(p) if p.temperature < 1e-5 => argmax(logits),
            Sampling::Sample(p) => {
                let lp = processed_logprobs(logits, p.temperature, p.top_k, p.top_p);
                let mut cands: Vec<(usize, f64)> = lp
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| (i, f64::from(v).exp()))
                    .collect();
                // Most likely first, so the walk below is stable and short.
                cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let total: f64 = cands.iter().map(|c| c.1).sum();
                let mut u = self.rng.random::<f64>() * total;
                for &(i, p) in &cands {
                    if u < p {
                        return i as u32;
                    }
                    u -= p;
                }
                cands.last().map(|c| c.0 as u32).unwrap_or_else(|| argmax(logits))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vLLM's processing as written: every logit sorted ascending.
    fn processed_logprobs_full_sort(logits: &[f32], temperature: f32, top_k: Option<usize>, top_p: f32) -> Vec<f32> {
        let t = if temperature < 1e-5 { 1.0 } else { temperature };
        let mut scaled: Vec<f32> = logits.iter().map(|&l| l / t).collect();
        let n = scaled.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scaled[a].total_cmp(&scaled[b]).then(b.cmp(&a)));
        if let Some(k) = top_k.filter(|&k| k > 0 && k < n) {
            let kth = scaled[order[n - k]];
            for v in scaled.iter_mut() {
                if *v < kth {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        if top_p < 1.0 {
            let max = scaled[order[n - 1]];
            let exps: Vec<f64> = order.iter().map(|&i| f64::from(scaled[i] - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            let mut cum = 0.0f64;
            for (rank, &i) in order.iter().enumerate() {
                cum += exps[rank] / total;
                if cum <= f64::from(1.0 - top_p) && rank != n - 1 {
                    scaled[i] = f32::NEG_INFINITY;
                } else {
                    break;
                }
            }
        }
        log_softmax(&scaled)
    }

    #[test]
    fn the_kth_largest_counts_repeated_values() {
        // Few distinct values, so ties straddle the k-th place; −∞, +∞ and NaN among them.
        let values: Vec<f32> =
            (0..200u32).map(|i| [1.5, -2.0, 7.25, 0.0, f32::NEG_INFINITY, 7.25, f32::INFINITY, 3.0][(i * 37 % 23 % 8) as usize]).collect();
        let mut values = values;
        values[101] = f32::NAN;
        let mut sorted = values.clone();
        sorted.sort_by(f32::total_cmp);
        for k in 1..=values.len() {
            let want = sorted[values.len() - k];
            assert_eq!(kth_largest(&values, k).to_bits(), want.to_bits(), "k = {k}");
        }
    }

    #[test]
    fn sorting_only_the_top_k_survivors_changes_nothing() {
        let mut x = 12345u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) * 8.0 - 4.0
        };
        for case in 0..40 {
            // Some cases with many ties (coarse values), including ties at the k-th value.
            let coarse = case % 2 == 0;
            let logits: Vec<f32> = (0..500).map(|_| if coarse { next().round() } else { next() }).collect();
            for (t, k, p) in [(0.6, Some(20), 0.95), (1.0, Some(3), 0.5), (1.0, None, 0.9), (0.6, Some(20), 1.0), (2.0, Some(499), 0.3)] {
                let a = processed_logprobs(&logits, t, k, p);
                let b = processed_logprobs_full_sort(&logits, t, k, p);
                assert_eq!(a, b, "case {case}, T {t}, k {k:?}, p {p}");
            }
        }
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, f32::NAN, -1.0]), 1);
    }

    #[test]
    fn top_k_keeps_k_tokens() {
        let lp = processed_logprobs(&[1.0, 4.0, 3.0, 2.0], 1.0, Some(2), 1.0);
        let kept: Vec<usize> = (0..4).filter(|&i| lp[i].is_finite()).collect();
        assert_eq!(kept, vec![1, 2]);
        let total: f32 = lp.iter().filter(|v| v.is_finite()).map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_p_keeps_the_nucleus_and_always_the_top_token() {
        // softmax of [ln .5, ln .3, ln .15, ln .05] = [.5, .3, .15, .05]
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let lp = processed_logprobs(&logits, 1.0, None, 0.75);
        // Cumulative mass from the bottom: .05 and .20 are ≤ .25 and masked; .5 and .3 stay.
        assert!(lp[0].is_finite() && lp[1].is_finite());
        assert!(lp[2].is_infinite() && lp[3].is_infinite());
        let lp = processed_logprobs(&logits, 1.0, None, 0.01);
        assert!(lp[0].is_finite() && lp[1..].iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn temperature_scales_before_softmax() {
        let lp = processed_logprobs(&[0.0, 0.6], 0.6, None, 1.0);
        // p1/p0 = exp(0.6 / 0.6) = e
        assert!(((lp[1] - lp[0]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn sampling_is_deterministic_for_a_seed_and_respects_top_k() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let params = SamplingParams { temperature: 1.0, top_k: Some(5), top_p: 1.0, seed: 7 };
        let draw = |seed| {
            let mut s = Sampler::new(Sampling::Sample(SamplingParams { seed, ..params })).unwrap();
            (0..40).map(|_| s.next(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut top5: Vec<usize> = (0..50).collect();
        top5.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        for t in draw(7) {
            assert!(top5[..5].contains(&(t as usize)));
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let p = SamplingParams { top_p: 0.0, ..Default::default() };
        assert!(Sampler::new(Sampling::Sample(p)).is_err());
        let p = SamplingParams { temperature: -1.0, ..Default::default() };
        assert!(Sampler::new(Sampling::Sample(p)).is_err());
    }
}
