//! `genprm refine`: critic mode — GenPRM critiques a policy model's solution and the policy
//! rewrites it, for up to K rounds or until no paragraph is judged wrong.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use genprm::generate::block_on;
use genprm::prm::{self, PromptStyle, Solution, critic, split_paragraphs};
use genprm::{LoadedModel, LocalEngine};

use super::verify::ProtocolArgs;
use super::{ModelArgs, load};

/// Arguments of `genprm refine`.
#[derive(Args)]
pub struct RefineArgs {
    /// GenPRM (the critic).
    #[command(flatten)]
    model: ModelArgs,
    /// The policy model that rewrites its solution (any Qwen2 checkpoint with a chat template).
    #[arg(long, value_name = "DIR")]
    policy: PathBuf,
    /// The problem.
    #[arg(long)]
    problem: String,
    /// The policy's first solution: a file (paragraphs separated by blank lines); without it the
    /// policy writes one first.
    #[arg(long, value_name = "FILE")]
    solution: Option<PathBuf>,
    /// Critique-and-refine rounds at most.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tokens per policy answer.
    #[arg(long, default_value_t = 4096)]
    max_tokens: usize,
    #[command(flatten)]
    protocol: ProtocolArgs,
}

/// Runs `genprm refine`.
pub fn run(args: RefineArgs) -> Result<()> {
    let options = args.protocol.options(PromptStyle::Card, true)?;
    let prm_model = load(&args.model)?;
    let tok = prm_model.tokenizer()?;
    let device = genprm::device(args.model.device_kind())?;
    let policy = LoadedModel::load(&args.policy, &device, |_| {}).with_context(|| format!("loading the policy from {}", args.policy.display()))?;
    let ptok = policy.tokenizer()?;
    let mut engine = LocalEngine::new(&prm_model.model, tok)?;
    let mut pengine = LocalEngine::new(&policy.model, ptok)?;
    let mut executors = args.protocol.executors(&options)?;
    let sampling = critic::policy_sampling(args.protocol.seed());

    let mut text = match &args.solution {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?,
        None => {
            let msgs = [
                genprm::ChatMessage::new("system", critic::QWEN_SYSTEM_PROMPT),
                genprm::ChatMessage::new("user", format!("{}{}", args.problem, critic::POLICY_INSTRUCTION)),
            ];
            let prompt = ptok.apply_chat_template(&msgs, true, genprm::TemplateChoice::Checkpoint)?;
            let req = genprm::engine::CompletionRequest { prompt: &prompt, max_tokens: args.max_tokens, stop: &[], sampling, path: 0 };
            block_on(genprm::Engine::complete(&mut pengine, &req, &mut |_| {}))?.text
        }
    };
    for round in 1..=args.rounds {
        let mut solution = Solution::new(args.problem.clone(), split_paragraphs(&text));
        if solution.steps.is_empty() {
            bail!("round {round}: the solution has no paragraphs");
        }
        solution.validate(&format!("round {round}"))?;
        let v = block_on(prm::verify(&mut engine, tok, &mut executors, &solution, &options, &mut |_| {})).map_err(|p| anyhow::anyhow!("{p}"))?;
        let r = block_on(critic::refine(&mut pengine, ptok, &solution, &v, sampling, args.max_tokens, &mut |_| {}))?;
        match (r.error_step, &r.critique) {
            (Some(i), Some(c)) => {
                println!("round {round}: paragraph {} judged wrong — {c}", i + 1);
                text = r.solution;
            }
            _ => {
                println!("round {round}: no paragraph judged wrong");
                break;
            }
        }
    }
    println!("\n{text}");
    Ok(())
}

