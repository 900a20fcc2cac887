//! A test double for the model: scripted replies in order, every request recorded.

use std::cell::RefCell;
use std::collections::VecDeque;

use genprm::engine::{Completion, CompletionRequest, Engine, answer_scores};
use genprm::{Result, Tokenizer};

use super::fixtures;

/// The real tokenizer from the fixtures.
pub fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(&fixtures().join("tokenizer")).unwrap()
}

/// One scripted model reply: its text, and the raw logits of Yes and No wherever it emits them.
#[derive(Clone)]
pub struct Reply {
    /// The text.
    pub text: String,
    /// The raw logits of Yes and No.
    pub yes_no: (f32, f32),
}

/// A reply whose logits favour the answer it writes.
pub fn reply(text: &str) -> Reply {
    let yes_no = if text.contains("{No}") { (1.0, 3.0) } else { (3.0, 1.0) };
    Reply { text: text.to_string(), yes_no }
}

/// A test double for the model: returns scripted replies in order and records every request.
pub struct Scripted {
    tok: Tokenizer,
    replies: RefCell<VecDeque<Reply>>,
    /// Every request: prompt, max tokens, stop strings, path.
    pub requests: RefCell<Vec<(String, usize, Vec<String>, usize)>>,
}

impl Scripted {
    /// A model that gives `replies` in order.
    pub fn new(replies: Vec<Reply>) -> Self {
        Scripted { tok: tokenizer(), replies: RefCell::new(replies.into()), requests: RefCell::new(Vec::new()) }
    }
}

impl Engine for Scripted {
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.tok.encode(text, false)?.len())
    }
    fn answer_ids(&self) -> (u32, u32) {
        (self.tok.last_token_id("Yes").unwrap(), self.tok.last_token_id("No").unwrap())
    }
    async fn complete(&self, req: &CompletionRequest<'_>, on_text: &mut dyn FnMut(&str)) -> Result<Completion> {
        self.requests.borrow_mut().push((req.prompt.to_string(), req.max_tokens, req.stop.iter().map(|s| s.to_string()).collect(), req.path));
        let r = self.replies.borrow_mut().pop_front().unwrap_or_else(|| panic!("script exhausted at request {}", self.requests.borrow().len()));
        let ids = self.tok.encode(&r.text, false)?;
        let (yes, no) = self.answer_ids();
        let answer = ids
            .iter()
            .enumerate()
            .filter(|&(_, &t)| t == yes || t == no)
            .map(|(i, &t)| {
                let mut logits = vec![-5.0f32; 151_665];
                logits[yes as usize] = r.yes_no.0;
                logits[no as usize] = r.yes_no.1;
                (i, answer_scores(&logits, t, yes, no, req.sampling))
            })
            .collect();
        on_text(&r.text);
        let stopped = req.stop.iter().any(|s| r.text.ends_with(s));
        Ok(Completion { text: r.text, token_ids: ids, answer_scores: answer, stopped_by_string: stopped })
    }
}

