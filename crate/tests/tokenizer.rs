//! The tokenizer and chat template against the Python `tokenizers` library and jinja2 (the
//! expected values were computed by `scripts/gen_fixtures.py`), and stop strings on decoded text.

mod common;

use common::*;
use genprm::generate::block_on;
use genprm::{CachedPrefix, ChatMessage, GenerateOptions, Sampling, StopReason, TemplateChoice, Tokenizer};
use serde::Deserialize;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(&fixtures().join("tokenizer")).unwrap()
}

#[derive(Deserialize)]
struct CorpusEntry {
    text: String,
    ids: Vec<u32>,
    ids_no_special: Vec<u32>,
    decoded: String,
}

#[test]
fn ids_equal_the_python_tokenizers_library_on_processbench_texts() {
    let tok = tokenizer();
    let corpus: Vec<CorpusEntry> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer/corpus.json")).unwrap()).unwrap();
    assert!(corpus.len() > 150);
    for e in &corpus {
        assert_eq!(tok.encode(&e.text, true).unwrap(), e.ids, "with BOS: {:?}", e.text);
        assert_eq!(tok.encode(&e.text, false).unwrap(), e.ids_no_special, "no BOS: {:?}", e.text);
        assert_eq!(tok.decode(&e.ids_no_special, false).unwrap(), e.decoded, "decode: {:?}", e.text);
    }
}

#[test]
fn special_ids_and_the_genprm_tokens() {
    let tok = tokenizer();
    assert_eq!(tok.token_id("<｜begin▁of▁sentence｜>"), Some(151646));
    assert_eq!(tok.token_id("<｜end▁of▁sentence｜>"), Some(151643));
    assert_eq!(tok.token_id("<｜User｜>"), Some(151644));
    assert_eq!(tok.token_id("<｜Assistant｜>"), Some(151645));
    assert_eq!(tok.last_token_id("Yes").unwrap(), 9454);
    assert_eq!(tok.last_token_id("No").unwrap(), 2753);
    // add_bos_token: true in tokenizer_config.json -> exactly one BOS.
    assert_eq!(tok.encode("hi", true).unwrap()[0], 151646);
    assert_ne!(tok.encode("hi", true).unwrap()[1], 151646);
}

#[derive(Deserialize)]
struct ChatCase {
    variant: String,
    add_generation_prompt: bool,
    messages: Vec<ChatMessage>,
    rendered: String,
    ids: Vec<u32>,
}

#[test]
fn chat_template_renders_as_jinja2_does() {
    let tok = tokenizer();
    let cases: Vec<ChatCase> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer/chat.json")).unwrap()).unwrap();
    assert!(cases.len() >= 10);
    for c in &cases {
        let choices: &[TemplateChoice] = match c.variant.as_str() {
            // The fixture directory ships the updated template, so Checkpoint renders it too.
            "think" => &[TemplateChoice::Think, TemplateChoice::Checkpoint],
            _ => &[TemplateChoice::Original],
        };
        for &choice in choices {
            let got = tok.apply_chat_template(&c.messages, c.add_generation_prompt, choice).unwrap();
            assert_eq!(got, c.rendered, "{choice:?}, generation prompt {}", c.add_generation_prompt);
            let ids = tok.encode_chat(&c.messages, c.add_generation_prompt, choice).unwrap();
            assert_eq!(ids, c.ids);
            assert_eq!(ids.iter().filter(|&&i| i == 151646).count(), 1, "exactly one BOS");
        }
    }
}

#[test]
fn generation_prompt_variants() {
    let tok = tokenizer();
    let msgs = [ChatMessage::new("system", "S"), ChatMessage::new("user", "U")];
    let orig = tok.apply_chat_template(&msgs, true, TemplateChoice::Original).unwrap();
    let think = tok.apply_chat_template(&msgs, true, TemplateChoice::Think).unwrap();
    assert_eq!(orig, "<｜begin▁of▁sentence｜>S<｜User｜>U<｜Assistant｜>");
    assert_eq!(think, "<｜begin▁of▁sentence｜>S<｜User｜>U<｜Assistant｜><think>\n");
}

#[test]
fn template_from_tokenizer_config_is_used_when_no_jinja_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("tokenizer");
    std::fs::copy(src.join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer_config.json")).unwrap()).unwrap();
    cfg["chat_template"] = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}".into();
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let got = tok.apply_chat_template(&[ChatMessage::new("user", "x")], false, TemplateChoice::Checkpoint).unwrap();
    assert_eq!(got, "<｜begin▁of▁sentence｜>[user]x");
}

#[test]
fn broken_tokenizer_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    let e = Tokenizer::from_dir(&dir.path().join("nowhere")).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("not found"), "{e}");
}

#[test]
fn stop_strings_cut_the_decoded_text() {
    let (_, device) = devices().remove(0);
    let m = load("tiny-real-vocab", &device);
    let tok = m.tokenizer().unwrap();
    let exp = expected("tiny-real-vocab");
    let free = block_on(genprm::generate(
        &m.model,
        Some(tok),
        &mut CachedPrefix::new(),
        &exp.prompt_ids,
        &GenerateOptions { max_new_tokens: 24, sampling: Sampling::Greedy, ..Default::default() },
        |_| {},
    ))
    .unwrap();
    assert_eq!(free.ids, exp.greedy_ids);
    assert_eq!(free.text, tok.decode(&exp.greedy_ids, false).unwrap());
    // Pick a stop string that ends inside the text: generation must stop at the token that
    // completes it and cut the text right after it.
    let chars: Vec<char> = free.text.chars().collect();
    assert!(chars.len() > 6, "continuation too short: {:?}", free.text);
    let stop: String = chars[chars.len() / 2 - 2..chars.len() / 2].iter().collect();
    let end = free.text.find(&stop).unwrap() + stop.len();
    let mut streamed = String::new();
    let cut = block_on(genprm::generate(
        &m.model,
        Some(tok),
        &mut CachedPrefix::new(),
        &exp.prompt_ids,
        &GenerateOptions {
            max_new_tokens: 24,
            sampling: Sampling::Greedy,
            stop_strings: vec!["never appears ∅".into(), stop.clone()],
            ..Default::default()
        },
        |ev| streamed.push_str(ev.text),
    ))
    .unwrap();
    assert_eq!(cut.stop, StopReason::StopString(stop.clone()));
    assert_eq!(cut.text, free.text[..end]);
    assert_eq!(streamed, cut.text, "streamed pieces add up to the text");
    assert!(cut.ids.len() < free.ids.len() && free.ids.starts_with(&cut.ids));
    // A stop id ends generation with that id kept.
    let stop_id = exp.greedy_ids[3];
    let by_id = block_on(genprm::generate(
        &m.model,
        Some(tok),
        &mut CachedPrefix::new(),
        &exp.prompt_ids,
        &GenerateOptions { max_new_tokens: 24, stop_token_ids: vec![stop_id], ..Default::default() },
        |_| {},
    ))
    .unwrap();
    assert_eq!(by_id.stop, StopReason::StopToken(stop_id));
    assert_eq!(*by_id.ids.last().unwrap(), stop_id);
}
