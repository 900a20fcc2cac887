//! Solutions to verify: `{"problem": ..., "steps": [...]}` or ProcessBench records (one object or
//! an array), validated with errors that name the record, field, line and column.

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::exec::CodeExecutor;
use crate::tokenizer::Tokenizer;

use super::{Event, PartialVerification, Verification, VerifyOptions};

/// A math problem and its solution split into paragraphs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Solution {
    /// An identifier (ProcessBench's `id`, or a student id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// ProcessBench: the model that wrote the solution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// The problem statement.
    pub problem: String,
    /// The solution's paragraphs, in order.
    pub steps: Vec<String>,
    /// ProcessBench: whether the final answer is right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_answer_correct: Option<bool>,
    /// ProcessBench: the 0-based index of the first wrong paragraph, or −1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<i64>,
}

impl Solution {
    /// A solution from a problem and paragraphs.
    pub fn new(problem: impl Into<String>, steps: Vec<String>) -> Self {
        Solution { id: None, generator: None, problem: problem.into(), steps, final_answer_correct: None, label: None }
    }

    /// Checks the solution can be verified; drops a trailing empty paragraph as the official
    /// evaluation does. `what` names it in errors (e.g. "input.json, record 3").
    pub fn validate(&mut self, what: &str) -> Result<()> {
        let bad = |message: String| Error::InvalidInput { what: what.to_string(), message };
        if self.problem.trim().is_empty() {
            return Err(bad("`problem` is empty".into()));
        }
        while self.steps.last().is_some_and(|s| s.is_empty()) {
            self.steps.pop();
        }
        if self.steps.is_empty() {
            return Err(bad("`steps` is empty: there is nothing to verify".into()));
        }
        if let Some(i) = self.steps.iter().position(|s| s.trim().is_empty()) {
            return Err(bad(format!("`steps[{i}]` (paragraph {}) is empty", i + 1)));
        }
        if let Some(label) = self.label
            && (label < -1 || label >= self.steps.len() as i64)
        {
            return Err(bad(format!("`label` {label} is outside -1..{}", self.steps.len() - 1)));
        }
        Ok(())
    }
}

/// The first paragraph (0-based) that cannot be judged within a context of `context` positions,
/// with the error to report: the problem and the paragraphs up to it alone hold more tokens.
/// Each text is measured with [`Tokenizer::count_tokens_bounded`], so a 50 MB paragraph is
/// refused without being tokenized whole. `None` when every paragraph may fit (the rendered
/// conversation, with its template and rationales, is checked against the context as it grows).
pub fn first_step_over_context(solution: &Solution, tokenizer: &Tokenizer, context: usize) -> Result<Option<(usize, Error)>> {
    let over = |i: usize, tokens: usize| Error::InvalidInput {
        what: format!("paragraph {}", i + 1),
        message: format!(
            "the problem and paragraphs 1 to {} hold more than {tokens} tokens, over the model's context of {context}",
            i + 1
        ),
    };
    let mut total = tokenizer.count_tokens_bounded(&solution.problem, context)?;
    for (i, step) in solution.steps.iter().enumerate() {
        let left = context.saturating_sub(total);
        total = total.saturating_add(tokenizer.count_tokens_bounded(step, left)?);
        if total > context {
            return Ok(Some((i, over(i, context))));
        }
    }
    Ok(None)
}

/// [`super::verify`], after measuring the solution against the context: the paragraphs before
/// the first that cannot fit ([`first_step_over_context`]) are judged, and the verification
/// then stops with that paragraph's error, as it would have, without the text over the context
/// ever being tokenized whole.
pub async fn verify_within_context<E: Engine, X: CodeExecutor>(
    engine: &E,
    tokenizer: &Tokenizer,
    executors: &mut [X],
    solution: &Solution,
    options: &VerifyOptions,
    context: usize,
    on_event: &mut dyn FnMut(Event<'_>),
) -> std::result::Result<Verification, PartialVerification> {
    let (step, error) = match first_step_over_context(solution, tokenizer, context) {
        Err(e) => return Err(PartialVerification { completed: Verification::from_steps(Vec::new()), error: e }),
        Ok(None) => return super::verify(engine, tokenizer, executors, solution, options, on_event).await,
        Ok(Some(over)) => over,
    };
    if step == 0 {
        return Err(PartialVerification { completed: Verification::from_steps(Vec::new()), error });
    }
    let mut head = solution.clone();
    head.steps.truncate(step);
    if let Some(label) = head.label
        && label >= step as i64
    {
        head.label = None;
    }
    match super::verify(engine, tokenizer, executors, &head, options, on_event).await {
        // Stopped at a wrong paragraph before the one over the context: that is the answer.
        Ok(v) if options.stop_at_first_error && v.first_error_step >= 0 => Ok(v),
        Ok(v) => Err(PartialVerification { completed: v, error }),
        Err(partial) => Err(partial),
    }
}

/// Splits a whole solution text into paragraphs on blank lines (`response.split('\n\n')`, as
/// GenPRM's Best-of-N code does), dropping empty pieces.
pub fn split_paragraphs(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n").split("\n\n").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Parses a JSON document holding one solution or an array of them. `source` names the input
/// in errors; syntax errors give line and column, field errors the record and field.
pub fn parse_solutions(text: &str, source: &str) -> Result<Vec<Solution>> {
    let doc: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::InvalidInput { what: source.to_string(), message: format!("malformed JSON: {e}") })?;
    let (values, single) = match doc {
        serde_json::Value::Array(v) => (v, false),
        other => (vec![other], true),
    };
    if values.is_empty() {
        return Err(Error::InvalidInput { what: source.to_string(), message: "the array holds no solutions".into() });
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let what = if single { source.to_string() } else { format!("{source}, record {i}") };
            let mut s: Solution = serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                let at = if path == "." { String::new() } else { format!("field `{path}`: ") };
                Error::InvalidInput { what: what.clone(), message: format!("{at}{}", e.into_inner()) }
            })?;
            s.validate(&what)?;
            Ok(s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_object_or_an_array_of_processbench_records() {
        let one = parse_solutions(r#"{"problem": "2+3?", "steps": ["2+3=5", ""]}"#, "in.json").unwrap();
        assert_eq!(one[0].steps, vec!["2+3=5"]);
        let many = parse_solutions(
            r#"[{"id":"gsm8k-0","generator":"Qwen2-7B","problem":"p","steps":["a","b"],"final_answer_correct":false,"label":1}]"#,
            "pb.json",
        )
        .unwrap();
        assert_eq!(many[0].label, Some(1));
    }

    #[test]
    fn errors_name_the_place() {
        let e = parse_solutions("{\"problem\": \"p\",\n \"steps\": [\"a\",]}", "in.json").unwrap_err().to_string();
        assert!(e.contains("in.json") && e.contains("line 2"), "{e}");
        let e = parse_solutions(r#"[{"problem":"p","steps":["a"]},{"problem":"p","steps":["a"],"colour":"red"}]"#, "in.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("record 1") && e.contains("colour"), "{e}");
        let e = parse_solutions(r#"{"problem":"p","steps":[]}"#, "in.json").unwrap_err().to_string();
        assert!(e.contains("steps") && e.contains("empty"), "{e}");
        let e = parse_solutions(r#"{"problem":"p","steps":["a","  ","c"]}"#, "in.json").unwrap_err().to_string();
        assert!(e.contains("steps[1]"), "{e}");
        let e = parse_solutions(r#"{"problem":"p","steps":"a"}"#, "in.json").unwrap_err().to_string();
        assert!(e.contains("steps"), "{e}");
        let e = parse_solutions(r#"{"problem":"p","steps":["a"],"label":4}"#, "in.json").unwrap_err().to_string();
        assert!(e.contains("label"), "{e}");
    }

    #[test]
    fn paragraphs_split_on_blank_lines() {
        assert_eq!(split_paragraphs("a\nb\n\nc\r\n\r\n\n\nd  "), vec!["a\nb", "c", "d"]);
    }
}
