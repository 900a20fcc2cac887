//! The local engine's KV-cache reuse: within a path (the next step of a conversation) and across
//! paths (the N samples of Maj@N start from the same prompt, prefilled once).

mod common;

use common::*;
use genprm::engine::CompletionRequest;
use genprm::generate::block_on;
use genprm::{Engine, LoadedModel, LocalEngine, Sampling};

#[test]
fn samples_of_one_prompt_share_its_prefill() {
    let device = genprm::device(genprm::DeviceKind::Cpu).unwrap();
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

/// Sleeps on another thread (a stand-in for a sample running its code) without blocking the
/// requests decoding meanwhile.
async fn pause(ms: u64) {
    let done = std::sync::Arc::new(std::sync::Mutex::new((false, None::<std::task::Waker>)));
    let theirs = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let mut d = theirs.lock().unwrap();
        d.0 = true;
        if let Some(w) = d.1.take() {
            w.wake();
        }
    });
    std::future::poll_fn(|cx| {
        let mut d = done.lock().unwrap();
        if d.0 {
            std::task::Poll::Ready(())
        } else {
            d.1 = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Requests in flight together decode as one batch, each with its own prompt, budget and stop
/// strings, and one that ends, waits (as for its code) and continues joins the batch again:
/// every text equals the same request run alone, in fewer forward passes.
#[test]
fn concurrent_requests_decode_as_one_batch_with_their_own_stops() {
    for (kind, device) in devices() {
        let loaded = LoadedModel::load(&model_dir("tiny-genprm"), &device, |_| {}).unwrap();
        let tokenizer = loaded.tokenizer().unwrap();
        let base = "<｜begin▁of▁sentence｜>You are a math teacher. Your task is to review and critique the paragraphs in solution step by step.<｜User｜>Question: ";
        let prompts = [
            format!("{base}Tom has 3 apples and buys 4 more.\n\nTom has 3 + 4 = 7 apples.<｜Assistant｜><analyze>\nLet's analyze the Paragraph 1 step by step: "),
            format!("{base}What is 6 times 7?\n\n6 * 7 = 42.<｜Assistant｜><analyze>\nLet's analyze the Paragraph 1 step by step: "),
            format!("{base}What is 2 + 3?\n\n2 + 3 = 6.<｜Assistant｜><analyze>\nLet's analyze the Paragraph 1 step by step: "),
        ];
        let budgets = [60usize, 9, 80];
        let stops: [&[&str]; 3] = [&["</analyze>\n"], &[], &["\n```\n", "</output>\n"]];
        fn request<'a>(i: usize, prompt: &'a str, budgets: &[usize], stops: &[&'a [&'a str]]) -> CompletionRequest<'a> {
            CompletionRequest { prompt, max_tokens: budgets[i], stop: stops[i], sampling: Sampling::Greedy, path: i }
        }
        // Path 1 continues after its first request ends, following a pause.
        let second = |first: &str| format!("{}{first} Then", prompts[1]);

        let alone = LocalEngine::new(&loaded.model, tokenizer).unwrap();
        let mut expected: Vec<String> = (0..3).map(|i| block_on(alone.complete(&request(i, &prompts[i], &budgets, &stops), &mut |_| {})).unwrap().text).collect();
        let p = second(&expected[1]);
        expected.push(block_on(alone.complete(&CompletionRequest { max_tokens: 20, ..request(1, &p, &budgets, &stops) }, &mut |_| {})).unwrap().text);

        let engine = LocalEngine::new(&loaded.model, tokenizer).unwrap();
        let (engine, prompts) = (&engine, &prompts);
        let jobs = (0..3).map(|i| async move {
            let mut streamed = String::new();
            let first = engine.complete(&request(i, &prompts[i], &budgets, &stops), &mut |t| streamed.push_str(t)).await.unwrap();
            assert_eq!(streamed, first.text, "{kind}: streamed text of request {i}");
            if i != 1 {
                return vec![first.text];
            }
            pause(30).await;
            let p = second(&first.text);
            let then = engine.complete(&CompletionRequest { max_tokens: 20, ..request(1, &p, &budgets, &stops) }, &mut |_| {}).await.unwrap();
            vec![first.text, then.text]
        });
        let got: Vec<Vec<String>> = block_on(futures_util::future::join_all(jobs));
        let got = vec![got[0][0].clone(), got[1][0].clone(), got[2][0].clone(), got[1][1].clone()];
        assert_eq!(got, expected, "{kind}");
        let (b, a) = (engine.stats(), alone.stats());
        assert_eq!(b.generated_tokens, a.generated_tokens, "{kind}");
        assert!(b.decode_passes * 4 < a.decode_passes * 3, "{kind}: {} batched decode passes vs {} alone", b.decode_passes, a.decode_passes);
    }
}

/// Cancelling stops every request of the batch, whichever request's caller runs the pass.
#[test]
fn cancelling_stops_every_request_of_the_batch() {
    let device = genprm::device(genprm::DeviceKind::Cpu).unwrap();
    let loaded = LoadedModel::load(&model_dir("tiny-genprm"), &device, |_| {}).unwrap();
    let tokenizer = loaded.tokenizer().unwrap();
    let flag = genprm::CancelFlag::new();
    let engine = LocalEngine::new(&loaded.model, tokenizer).unwrap().with_cancel(flag.clone());
    let prompt = "<｜begin▁of▁sentence｜>You are a math teacher.<｜User｜>Question: What is 2 + 3?\n\n2 + 3 = 5.<｜Assistant｜><analyze>\n";
    let (engine, flag) = (&engine, &flag);
    let jobs = (0..3).map(|path| async move {
        let request = CompletionRequest { prompt, max_tokens: 200, stop: &[], sampling: Sampling::Greedy, path };
        let mut pieces = 0;
        engine
            .complete(&request, &mut |_| {
                pieces += 1;
                if path == 2 && pieces == 3 {
                    flag.cancel();
                }
            })
            .await
    });
    let results = block_on(futures_util::future::join_all(jobs));
    for (path, r) in results.iter().enumerate() {
        assert!(matches!(r, Err(genprm::Error::Cancelled)), "path {path}: {r:?}");
    }
    assert!(engine.stats().generated_tokens < 3 * 200, "{:?}", engine.stats());
}

/// On a GPU the engine reads back only each row's largest logits (`gpu_topk`), and a whole row
/// only where the token is Yes or No: the tokens equal those `generate` chooses from whole
/// rows on the same device, greedy and sampled with top-k, and the answer scores are the ones
/// computed from the whole rows.
#[test]
fn on_a_gpu_the_top_logits_choose_what_whole_rows_choose() {
    use genprm::engine::answer_scores;
    use genprm::generate::{CachedPrefix, GenerateOptions, generate};
    use genprm::SamplingParams;
    for (kind, device) in devices() {
        if kind == genprm::DeviceKind::Cpu {
            continue;
        }
        let loaded = LoadedModel::load(&model_dir("tiny-genprm"), &device, |_| {}).unwrap();
        let tokenizer = loaded.tokenizer().unwrap();
        let prompt = "<｜begin▁of▁sentence｜>You are a math teacher.<｜User｜>Question: What is 2 + 3?\n\n2 + 3 = 5.<｜Assistant｜><analyze>\nParagraph 1";
        let ids = tokenizer.encode(prompt, false).unwrap();
        let samplings = [
            Sampling::Greedy,
            Sampling::Sample(SamplingParams { temperature: 0.6, top_k: Some(20), top_p: 0.95, seed: 5 }),
            Sampling::Sample(SamplingParams { temperature: 1.3, top_k: Some(3), top_p: 1.0, seed: 9 }),
        ];
        let mut scored = 0;
        for sampling in samplings {
            let engine = LocalEngine::new(&loaded.model, tokenizer).unwrap();
            let (yes, no) = engine.answer_ids();
            let request = CompletionRequest { prompt, max_tokens: 160, stop: &[], sampling, path: 0 };
            let got = block_on(engine.complete(&request, &mut |_| {})).unwrap();
            let stats = engine.stats();
            let answers = got.answer_scores.len();
            assert!(
                stats.whole_logit_reads <= answers,
                "{sampling:?}: {} passes read whole rows, only {answers} tokens were Yes or No",
                stats.whole_logit_reads
            );

            let mut eos = loaded.model.config().eos_ids();
            eos.extend(tokenizer.eos_token().and_then(|t| tokenizer.token_id(t)));
            let options = GenerateOptions {
                max_new_tokens: 160,
                sampling,
                stop_token_ids: eos,
                stop_strings: Vec::new(),
                skip_special_tokens: true,
                cancel: None,
            };
            let mut want_scores = Vec::new();
            let want = block_on(generate(&loaded.model, Some(tokenizer), &mut CachedPrefix::default(), &ids, &options, |ev| {
                if ev.id == yes || ev.id == no {
                    want_scores.push((ev.index, answer_scores(ev.logits, ev.id, yes, no, sampling)));
                }
            }))
            .unwrap();
            assert_eq!(got.token_ids, want.ids, "{sampling:?}: the engine's tokens differ from whole-row choices");
            assert_eq!(format!("{:?}", got.answer_scores), format!("{want_scores:?}"), "{sampling:?}: answer scores");
            scored += want_scores.len();
        }
        assert!(scored > 0, "no Yes or No was generated: the whole-row read at answers went untested");
    }
}
