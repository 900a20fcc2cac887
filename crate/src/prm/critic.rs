//! Critic mode: GenPRM's verdict on a policy model's solution turned into a refinement request
//! (the official `policy_refine.py`): find the first paragraph with reward < 0.5, take the
//! analysis GenPRM wrote for it, and ask the policy model to rethink from there.

use std::sync::LazyLock;

use serde::Serialize;

use super::{Solution, Verification};
use crate::engine::{CompletionRequest, Engine};
use crate::error::Result;
use crate::generate::sampling::{Sampling, SamplingParams};
use crate::tokenizer::{ChatMessage, TemplateChoice, Tokenizer};

/// The refinement instruction that opens the critique turn.
pub const REFINE_INSTRUCTION: &str =
    "There might be some problem in this paragraph of your reasoning, please rethink and refine your answer:\n";
/// System prompt of the Qwen2.5 policy models.
pub const QWEN_SYSTEM_PROMPT: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
/// Appended to the problem in the policy's first turn.
pub const POLICY_INSTRUCTION: &str = "\n\nPlease reason step by step, and put your final answer within \\boxed{}.";

/// Policy sampling of the official refinement runs (Qwen2.5-7B-Instruct): T 0.7, top-p 0.8, top-k 20.
pub fn policy_sampling(seed: u64) -> Sampling {
    Sampling::Sample(SamplingParams { temperature: 0.7, top_k: Some(20), top_p: 0.8, seed })
}

static ANALYZE: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"(?s)<analyze>(.*?)</analyze>").expect("valid regex"));

/// The critique in a rationale: the `<analyze>` contents after the first colon (dropping
/// "Let's analyze the Paragraph k step by step:"), stripped; the whole text when there is no
/// `<analyze>` section; empty when the section has no colon (the official code returns None).
pub fn critique(rationale: &str) -> String {
    match ANALYZE.captures(rationale) {
        None => rationale.to_string(),
        Some(c) => {
            let content = &c[1];
            content.find(':').map(|i| crate::exec::python_strip(&content[i + 1..]).to_string()).unwrap_or_default()
        }
    }
}

/// The refinement conversation for the policy: its original solution as the assistant turn and
/// the critique of paragraph `index` as the next user turn.
pub fn refinement_messages(solution: &Solution, index: usize, critique: &str, system: &str) -> Vec<ChatMessage> {
    let critic = format!("{REFINE_INSTRUCTION}>{}\n\n{critique}", solution.steps[index]);
    vec![
        ChatMessage::new("system", system),
        ChatMessage::new("user", format!("{}{POLICY_INSTRUCTION}", solution.problem)),
        ChatMessage::new("assistant", solution.steps.join("\n\n")),
        ChatMessage::new("user", critic),
    ]
}

/// What one critique-and-refine round produced.
#[derive(Debug, Clone, Serialize)]
pub struct Refinement {
    /// The first paragraph GenPRM judged wrong (0-based), or None when all passed.
    pub error_step: Option<usize>,
    /// The critique passed to the policy.
    pub critique: Option<String>,
    /// The policy's new solution (the original, joined, when nothing was wrong).
    pub solution: String,
}

/// One round: given GenPRM's verification of `solution`, asks the policy (`policy` with its own
/// tokenizer and chat template) for a refined solution. Nothing is asked when no paragraph failed.
pub async fn refine<P: Engine>(
    policy: &P,
    policy_tokenizer: &Tokenizer,
    solution: &Solution,
    verification: &Verification,
    sampling: Sampling,
    max_tokens: usize,
    on_text: &mut dyn FnMut(&str),
) -> Result<Refinement> {
    let Some(first) = verification.steps.iter().find(|s| s.reward < 0.5) else {
        return Ok(Refinement { error_step: None, critique: None, solution: solution.steps.join("\n\n") });
    };
    let text = first.samples.first().map(|r| r.text.as_str()).unwrap_or("");
    let critique = critique(text);
    let msgs = refinement_messages(solution, first.index, &critique, QWEN_SYSTEM_PROMPT);
    let prompt = policy_tokenizer.apply_chat_template(&msgs, true, TemplateChoice::Checkpoint)?;
    let req = CompletionRequest { prompt: &prompt, max_tokens, stop: &[], sampling, path: 0 };
    let out = policy.complete(&req, on_text).await?;
    Ok(Refinement { error_step: Some(first.index), critique: Some(critique), solution: out.text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critique_is_the_analysis_after_the_first_colon() {
        let r = "<analyze>\nLet's analyze the Paragraph 2 step by step: The sum is wrong: 2+2=5.\n</analyze>\n<verify>...";
        assert_eq!(critique(r), "The sum is wrong: 2+2=5.");
        assert_eq!(critique("no sections"), "no sections");
        assert_eq!(critique("<analyze>no colon</analyze>"), "");
    }

    #[test]
    fn refinement_conversation_matches_the_official_layout() {
        let s = Solution::new("What is 2+2?", vec!["2+2=5".into(), "So 5.".into()]);
        let m = refinement_messages(&s, 0, "It is 4.", QWEN_SYSTEM_PROMPT);
        assert_eq!(m[1].content, "What is 2+2?\n\nPlease reason step by step, and put your final answer within \\boxed{}.");
        assert_eq!(m[2].content, "2+2=5\n\nSo 5.");
        assert_eq!(
            m[3].content,
            "There might be some problem in this paragraph of your reasoning, please rethink and refine your answer:\n>2+2=5\n\nIt is 4."
        );
    }
}
