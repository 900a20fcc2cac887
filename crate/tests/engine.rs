//! The local engine's KV-cache reuse: within a path (the next step of a conversation) and across
//! paths (the N samples of Maj@N start from the same prompt, prefilled once).

mod common;

use common::*;
use genprm::engine::CompletionRequest;
use genprm::generate::block_on;
use genprm::{DeviceKind, Engine, LoadedModel, LocalEngine, Sampling};

#[test]
fn samples_of_one_prompt_share_its_prefill() {
    let device = genprm::device(DeviceKind::Cpu).unwrap();
    let loaded = LoadedModel::load(&model_dir("tiny-genprm"), &device, |_| {}).unwrap();
    let tokenizer = loaded.tokenizer().unwrap();
    let prompt = "<｜begin▁of▁sentence｜>You are a math teacher.<｜User｜>Question: What is 2 + 3?\n\n2 + 3 = 5.<｜Assistant｜><analyze>\nParagraph 1";
    let n = tokenizer.encode(prompt, false).unwrap().len();
    let complete = |engine: &mut LocalEngine, path| {
        let request = CompletionRequest { prompt, max_tokens: 12, stop: &[], sampling: Sampling::Greedy, path };
        block_on(engine.complete(&request, &mut |_| {})).unwrap().text
    };

    let mut fresh = LocalEngine::new(&loaded.model, tokenizer).unwrap();
    let alone = complete(&mut fresh, 0);
    assert_eq!(fresh.prefilled_tokens(), n);

    let mut engine = LocalEngine::new(&loaded.model, tokenizer).unwrap();
    let texts: Vec<String> = (0..3).map(|path| complete(&mut engine, path)).collect();
    // Paths 1 and 2 start from path 0's cache: one token each is fed again, not the prompt.
    assert_eq!(engine.prefilled_tokens(), n + 2, "the shared prompt was prefilled more than once");
    assert!(texts.iter().all(|t| *t == alone), "a copied cache changed the output: {texts:?} vs {alone:?}");
}
