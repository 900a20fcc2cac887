//! The step reward: the probability of "Yes" at the judgement token, as GenPRM's official code
//! computes it from vLLM's log-probabilities (`official`), or from the raw logits (`calibrated`).

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::engine::{AnswerScores, Completion, OFFICIAL_LOGPROBS};

/// How a step's reward is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RewardMode {
    /// GenPRM's code: p(Yes) / (p(Yes) + p(No)) with vLLM 0.7.1's processed log-probabilities
    /// (temperature, top-k, top-p, log-softmax), the smallest returned log-probability standing
    /// in for a missing token, 0.5 when no decision is found. Often exactly 0 or 1.
    #[default]
    Official,
    /// softmax over the raw Yes/No logits at the same position: a graded confidence.
    Calibrated,
}

/// The judgement a rationale ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Judgement {
    /// `\boxed{Yes}`: the paragraph is correct.
    Yes,
    /// `\boxed{No}`: the paragraph is wrong.
    No,
}

/// A step's reward and how it was obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    /// p(Yes) in [0, 1]; 0.5 when undecided.
    pub value: f64,
    /// The decision found in the text (the first `Yes}`/`No}`, any case), if any.
    pub judgement: Option<Judgement>,
    /// p(Yes) and p(No) before normalisation, when the reward came from log-probabilities.
    pub p_yes: Option<f64>,
    /// See `p_yes`.
    pub p_no: Option<f64>,
    /// Why the reward is neutral, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

static DECISION: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"(?i)(Yes|No)\}").expect("valid regex"));

/// The decision in a step's full assistant text: the first `(Yes|No)}` match, case-insensitive
/// (`re.search(r'(Yes|No)\}', text, re.IGNORECASE)`).
pub fn find_judgement(text: &str) -> Option<Judgement> {
    DECISION.captures(text).map(|c| if c[1].eq_ignore_ascii_case("yes") { Judgement::Yes } else { Judgement::No })
}

/// The reward for a step whose full assistant text is `full_text` and whose last generation is
/// `last`; `yes`/`no` are the answer token ids.
pub fn step_reward(full_text: &str, last: &Completion, yes: u32, no: u32, mode: RewardMode) -> Reward {
    let neutral = |judgement, note: &str| Reward { value: 0.5, judgement, p_yes: None, p_no: None, note: Some(note.to_string()) };
    let Some(judgement) = find_judgement(full_text) else {
        return neutral(None, "no \\boxed{Yes} or \\boxed{No} found");
    };
    let decided = if judgement == Judgement::Yes { yes } else { no };
    // The last occurrence of the decided token among the final generation's tokens.
    let Some(pos) = last.token_ids.iter().rposition(|&t| t == decided) else {
        return neutral(Some(judgement), "the decided token is not among the final generation's tokens");
    };
    let Some(scores) = last.answer_scores.iter().find(|(p, _)| *p == pos).map(|(_, s)| *s) else {
        return neutral(Some(judgement), "the engine returned no log-probabilities for the decision token");
    };
    match mode {
        RewardMode::Official => {
            let lp_yes = scores.yes.unwrap_or(scores.min);
            let lp_no = scores.no.unwrap_or(scores.min);
            let (py, pn) = (f64::from(lp_yes).exp(), f64::from(lp_no).exp());
            let value = if py + pn == 0.0 { 0.5 } else { py / (py + pn) };
            Reward { value, judgement: Some(judgement), p_yes: Some(py), p_no: Some(pn), note: precision_note(&scores) }
        }
        RewardMode::Calibrated => match (scores.raw_yes, scores.raw_no) {
            (Some(y), Some(n)) => {
                let value = 1.0 / (1.0 + (f64::from(n) - f64::from(y)).exp());
                Reward { value, judgement: Some(judgement), p_yes: None, p_no: None, note: None }
            }
            _ => neutral(Some(judgement), "calibrated rewards need raw logits, which this engine does not report"),
        },
    }
}

/// What limits an official reward computed from a server's top log-probabilities, if anything.
fn precision_note(s: &AnswerScores) -> Option<String> {
    let n = s.returned?;
    let missing: Vec<&str> = [("Yes", s.yes), ("No", s.no)].iter().filter(|(_, v)| v.is_none()).map(|(w, _)| *w).collect();
    let mut notes = Vec::new();
    if n < OFFICIAL_LOGPROBS {
        notes.push(format!("the server returned {n} log-probabilities, fewer than the official {OFFICIAL_LOGPROBS}"));
    }
    if !missing.is_empty() {
        notes.push(format!(
            "{} not among the server's top {n} log-probabilities: the smallest of them stands in (the official rule)",
            missing.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(" and ")
        ));
    }
    if s.approximate_nucleus {
        notes.push(format!("top-k/top-p were applied to the {n} returned log-probabilities, not the whole vocabulary"));
    }
    if notes.is_empty() {
        return None;
    }
    let exact = n >= OFFICIAL_LOGPROBS && !s.approximate_nucleus;
    Some(format!("{}{}", notes.join("; "), if exact { "" } else { ": the reward is approximate" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::answer_scores;
    use crate::generate::sampling::{Sampling, SamplingParams};

    const YES: u32 = 5;
    const NO: u32 = 6;

    fn completion(tokens: Vec<u32>, logits_at: &[(usize, Vec<f32>)]) -> Completion {
        let answer_scores = logits_at
            .iter()
            .map(|(p, l)| (*p, answer_scores(l, tokens[*p], YES, NO, Sampling::Sample(SamplingParams::default()))))
            .collect();
        Completion { text: String::new(), token_ids: tokens, answer_scores, stopped_by_string: true }
    }

    fn logits(yes: f32, no: f32) -> Vec<f32> {
        let mut l = vec![-20.0f32; 40];
        for (i, v) in l.iter_mut().enumerate().take(30).skip(10) {
            *v = -3.0 - i as f32 * 0.01; // 20 plausible other tokens
        }
        l[YES as usize] = yes;
        l[NO as usize] = no;
        l
    }

    #[test]
    fn first_decision_in_the_text_wins() {
        assert_eq!(find_judgement("maybe no} then $\\boxed{Yes}$"), Some(Judgement::No));
        assert_eq!(find_judgement("**Judgement**: $\\boxed{YES}$"), Some(Judgement::Yes));
        assert_eq!(find_judgement("nothing"), None);
    }

    #[test]
    fn official_reward_is_the_temperature_scaled_ratio_when_both_survive() {
        // Yes 1.0, No 0.9: both inside top-20 and the 0.95 nucleus.
        let c = completion(vec![1, 2, YES, 3], &[(2, logits(1.0, 0.9))]);
        let r = step_reward("$\\boxed{Yes}$", &c, YES, NO, RewardMode::Official);
        let expected = 1.0 / (1.0 + (-(0.1f64 / 0.6)).exp());
        assert!((r.value - expected).abs() < 1e-6, "{r:?}");
        // Calibrated: plain softmax of the raw pair.
        let r = step_reward("$\\boxed{Yes}$", &c, YES, NO, RewardMode::Calibrated);
        assert!((r.value - 1.0 / (1.0 + (-0.1f64).exp())).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn official_reward_is_one_or_zero_when_the_other_token_is_cut() {
        let c = completion(vec![NO, 9, NO], &[(0, logits(0.0, 0.0)), (2, logits(-2.0, 8.0))]);
        // The last No (position 2) decides; Yes is outside the nucleus.
        let r = step_reward("\\boxed{No}", &c, YES, NO, RewardMode::Official);
        assert_eq!(r.value, 0.0);
        assert_eq!(r.judgement, Some(Judgement::No));
    }

    #[test]
    fn missing_token_takes_the_smallest_returned_logprob() {
        let s = AnswerScores { yes: Some(-0.1), no: None, min: -4.0, raw_yes: None, raw_no: None, returned: None, approximate_nucleus: false };
        let c = Completion { text: String::new(), token_ids: vec![YES], answer_scores: vec![(0, s)], stopped_by_string: true };
        let r = step_reward("Yes}", &c, YES, NO, RewardMode::Official);
        let (py, pn) = ((-0.1f64).exp(), (-4.0f64).exp());
        assert!((r.value - py / (py + pn)).abs() < 1e-6);
        // And the calibrated mode says plainly when it cannot work.
        let r = step_reward("Yes}", &c, YES, NO, RewardMode::Calibrated);
        assert_eq!(r.value, 0.5);
        assert!(r.note.is_some());
    }

    #[test]
    fn no_decision_is_neutral() {
        let c = completion(vec![1, 2], &[]);
        let r = step_reward("no verdict here", &c, YES, NO, RewardMode::Official);
        assert_eq!((r.value, r.judgement), (0.5, None));
        // A decision in the text whose token the final generation never produced.
        let r = step_reward("\\boxed{Yes}", &c, YES, NO, RewardMode::Official);
        assert_eq!((r.value, r.judgement), (0.5, Some(Judgement::Yes)));
    }
}
