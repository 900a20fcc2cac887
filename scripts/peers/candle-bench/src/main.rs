//! candle's quantized Qwen2 (candle_transformers::models::quantized_qwen2) on a GGUF file, timed
//! the way `genprm bench` times itself: a 2-token warm-up, then the prefill of a prompt (logits of
//! the last position read back, greedy argmax), then N decode steps, each reading back its logits.
//! Prints one JSON object. Usage:
//!   candle-bench --gguf FILE [--prompt-tokens P] [--new-tokens N] [--cuda]

use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen2::ModelWeights;

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut gguf = None;
    let (mut prompt_tokens, mut new_tokens, mut cuda) = (128usize, 64usize, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--gguf" => gguf = args.next(),
            "--prompt-tokens" => prompt_tokens = args.next().ok_or("--prompt-tokens N")?.parse()?,
            "--new-tokens" => new_tokens = args.next().ok_or("--new-tokens N")?.parse()?,
            "--cuda" => cuda = true,
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    let path = gguf.ok_or("--gguf FILE is required")?;
    let device = if cuda { Device::new_cuda(0)? } else { Device::Cpu };

    let t0 = Instant::now();
    let mut file = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let vocab = match content.metadata.get("qwen2.vocab_size") {
        Some(v) => v.to_u32()? as usize,
        None => content.tensor_infos["token_embd.weight"].shape.dims()[0],
    };
    let mut model = ModelWeights::from_gguf(content, &mut file, &device)?;
    let read = |t: Tensor| -> candle_core::Result<Vec<f32>> { t.flatten_all()?.to_vec1::<f32>() };
    let warm = Tensor::new(&[1u32, 1][..], &device)?.unsqueeze(0)?;
    read(model.forward(&warm, 0)?)?;
    model.clear_kv_cache();
    let load_s = t0.elapsed().as_secs_f64();

    // The prompt genprm bench uses: (i * 7919 + 13) mod vocab.
    let prompt: Vec<u32> = (0..prompt_tokens).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
    let t1 = Instant::now();
    let input = Tensor::new(prompt.as_slice(), &device)?.unsqueeze(0)?;
    let mut next = argmax(&read(model.forward(&input, 0)?)?);
    let prefill_s = t1.elapsed().as_secs_f64();
    let first = next;
    let t2 = Instant::now();
    for i in 0..new_tokens {
        let input = Tensor::new(&[next][..], &device)?.unsqueeze(0)?;
        next = argmax(&read(model.forward(&input, prompt_tokens + i)?)?);
    }
    let decode_s = t2.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "load_s": load_s,
            "prefill_tok_s": prompt_tokens as f64 / prefill_s,
            "ttft_s": prefill_s,
            "decode_tok_s": new_tokens as f64 / decode_s.max(1e-9),
            "first_token": first,
            "last_token": next,
            "threads": candle_core::utils::get_num_threads(),
            "device": if cuda { "cuda" } else { "cpu" },
        })
    );
    Ok(())
}
