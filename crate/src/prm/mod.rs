//! The GenPRM verification protocol, as in the official `GenPRM._single_inference`: for each
//! paragraph, a forced `<analyze>` prefix generated to `</analyze>\n`, a forced `<verify>` prefix
//! generated to the end of a code block or `</output>\n`, the last python block executed and its
//! output inserted as `[Code Output]`, up to three rounds within a 2048-token budget, then a
//! fallback that forces `<output>\n**Judgement**: $\boxed`; the reward is the probability of
//! "Yes" at the judgement token. Every string here is the official one, to the character.
//!
//! Files: [`input`] (solutions and paragraphs), [`reward`], [`critic`] (the critic prompt),
//! [`grade`] (grading files of solutions), [`processbench`], [`jsonl`] (resumable result files).
//! May import: the engines, generation's sampling options, the tokenizer and the sandbox
//! ([`crate::exec`]). Not the model or the backend directly: the protocol runs through an engine.

pub mod critic;
pub mod grade;
pub mod input;
pub mod jsonl;
pub mod processbench;
pub mod reward;

use serde::{Deserialize, Serialize};

use crate::engine::{Completion, CompletionRequest, Engine};
use crate::error::{Error, Result};
use crate::exec::{CodeExecutor, code_output_section, execute_text};
use crate::generate::sampling::{Sampling, SamplingParams};
use crate::tokenizer::{ChatMessage, TemplateChoice, Tokenizer};

pub use input::{Solution, parse_solutions, split_paragraphs};
pub use reward::{Judgement, Reward, RewardMode, step_reward};

/// The most rationales per paragraph (Maj@N) a verification runs, in the CLI and the browser.
pub const MAX_SAMPLES: usize = 64;

/// The system prompt when the model analyzes and/or verifies.
pub const SYSTEM_PROMPT: &str =
    "You are a math teacher. Your task is to review and critique the paragraphs in solution step by step.";
/// The forced start of the verify section.
pub const VERIFY_PREFIX: &str = "<verify>\nLet's use python code to find any potential error:\n```python\n";
/// The forced start of the judgement; the model continues with `{Yes}$` or `{No}$`.
pub const OUTPUT_PREFIX: &str = "<output>\n**Judgement**: $\\boxed";
/// Stop string of the analyze stage.
pub const STOP_ANALYZE: &str = "</analyze>\n";
/// Stop string at the end of a code block.
pub const STOP_CODE: &str = "\n```\n";
/// Stop string at the end of the judgement.
pub const STOP_OUTPUT: &str = "</output>\n";

/// The forced start of the analysis of paragraph `step` (1-based); note the trailing space.
pub fn analyze_prefix(step: usize) -> String {
    format!("<analyze>\nLet's analyze the Paragraph {step} step by step: ")
}

/// How the conversation is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptStyle {
    /// As the model card and the training data: first turn `Question: {problem}\n\n{step1}`, and
    /// `<｜Assistant｜>` before the forced prefix.
    #[default]
    Card,
    /// As the official ProcessBench script: first turn `{problem}\n{step1}`, no Assistant tag.
    #[serde(rename = "processbench")]
    ProcessBench,
}

/// Which parts of a rationale are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Analysis, then code verification (the default, the paper's full pipeline).
    #[default]
    #[serde(alias = "cot_code")]
    CotCode,
    /// Analysis only, then the judgement.
    Cot,
    /// Code verification only, then the judgement.
    Code,
}

impl Mode {
    fn analyze(self) -> bool {
        matches!(self, Mode::CotCode | Mode::Cot)
    }
    fn verify(self) -> bool {
        matches!(self, Mode::CotCode | Mode::Code)
    }
}

/// Whose rationales fill the history when several samples are drawn per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum History {
    /// Each of the N paths keeps its own earlier rationales (the paper's eq. 7).
    #[default]
    #[serde(alias = "per_path")]
    PerPath,
    /// All samples share one history holding the first sample's rationale (the official helper).
    Shared,
}

/// Everything that shapes a verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyOptions {
    /// Conversation layout.
    pub style: PromptStyle,
    /// CoT + code, CoT only, or code only.
    pub mode: Mode,
    /// Run the code (otherwise `[Code Output]` is appended empty, as the official `execute=False`).
    pub execute: bool,
    /// Reward computation.
    pub reward: RewardMode,
    /// Rationales per step (Maj@N); rewards are averaged.
    pub samples: usize,
    /// History of the N paths.
    pub history: History,
    /// Sampling of every call (GenPRM: T 0.6, top-k 20, top-p 0.95).
    pub sampling: Sampling,
    /// Assistant-side token budget per step (2048).
    pub step_budget: usize,
    /// Generate-and-execute rounds before the fallback (3).
    pub code_rounds: usize,
    /// Tokens for the fallback judgement (20).
    pub fallback_tokens: usize,
    /// Fallback attempts before giving up on a decision (the official loop has no limit).
    pub max_fallbacks: usize,
    /// Chat template.
    pub template: TemplateChoice,
    /// Run the samples of a paragraph concurrently, so an engine that batches (the local one)
    /// decodes them together. Off: one after another (greedy results are the same; sampled ones
    /// can differ in rare tokens, since rows computed together round differently).
    #[serde(default = "default_true")]
    pub batch: bool,
    /// Stop after the first paragraph whose mean reward is < 0.5: the ProcessBench prediction
    /// and F1 do not change (later paragraphs cannot move an earlier error), the time does.
    pub stop_at_first_error: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            style: PromptStyle::Card,
            mode: Mode::CotCode,
            execute: true,
            reward: RewardMode::Official,
            samples: 1,
            history: History::PerPath,
            sampling: Sampling::Sample(SamplingParams::default()),
            step_budget: 2048,
            code_rounds: 3,
            fallback_tokens: 20,
            max_fallbacks: 2,
            template: TemplateChoice::Checkpoint,
            stop_at_first_error: false,
            batch: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// The chat messages for judging paragraph `index` (0-based): the system prompt, one user turn
/// per paragraph up to `index`, and `history[i]` as the assistant turn after paragraph `i`.
pub fn step_messages(solution: &Solution, history: &[String], index: usize, style: PromptStyle) -> Vec<ChatMessage> {
    let mut msgs = vec![ChatMessage::new("system", SYSTEM_PROMPT)];
    for i in 0..=index {
        let content = if i == 0 {
            match style {
                PromptStyle::Card => format!("Question: {}\n\n{}", solution.problem, solution.steps[0]),
                PromptStyle::ProcessBench => format!("{}\n{}", solution.problem, solution.steps[0]),
            }
        } else {
            solution.steps[i].clone()
        };
        msgs.push(ChatMessage::new("user", content));
        if i < index {
            msgs.push(ChatMessage::new("assistant", history[i].clone()));
        }
    }
    msgs
}

/// The prompt text for judging paragraph `index`, before the forced prefix: the rendered chat
/// (one BOS, no generation prompt, a trailing EOS removed as `build_prompt` does) plus
/// `<｜Assistant｜>` in the `card` style.
pub fn step_prompt(tokenizer: &Tokenizer, solution: &Solution, history: &[String], index: usize, options: &VerifyOptions) -> Result<String> {
    let msgs = step_messages(solution, history, index, options.style);
    let mut text = tokenizer.apply_chat_template(&msgs, false, options.template)?;
    if let Some(eos) = tokenizer.eos_token() {
        if let Some(t) = text.strip_suffix(&format!("{eos}\n")) {
            text = t.to_string();
        } else if let Some(t) = text.strip_suffix(eos) {
            text = t.to_string();
        }
    }
    if options.style == PromptStyle::Card {
        text.push_str("<｜Assistant｜>");
    }
    Ok(text)
}

/// Where a piece of a rationale's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSource {
    /// A forced prefix the protocol wrote.
    Forced,
    /// The model.
    Model,
    /// The `[Code Output]` section the executor produced.
    CodeOutput,
}

/// What happens during a verification, as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A paragraph's judgement begins (one per sample).
    StepStarted {
        /// Paragraph index (0-based).
        step: usize,
        /// Sample index.
        sample: usize,
    },
    /// More rationale text.
    Text {
        /// Paragraph index.
        step: usize,
        /// Sample index.
        sample: usize,
        /// The text.
        text: &'a str,
        /// Who wrote it.
        source: TextSource,
    },
    /// The fallback replaced the rationale so far with this text (analysis kept, verify dropped,
    /// judgement forced); generation continues after it.
    Fallback {
        /// Paragraph index.
        step: usize,
        /// Sample index.
        sample: usize,
        /// The whole rationale text from here on.
        text: &'a str,
    },
    /// A code block ran.
    CodeRan {
        /// Paragraph index.
        step: usize,
        /// Sample index.
        sample: usize,
        /// The code (None when no block was found).
        code: Option<&'a str>,
        /// The output text inserted for the model.
        output: &'a str,
    },
    /// A sample's judgement and reward.
    Judged {
        /// Paragraph index.
        step: usize,
        /// Sample index.
        sample: usize,
        /// The reward.
        reward: &'a Reward,
    },
    /// A paragraph is done: all its samples judged.
    StepDone {
        /// The paragraph's verdict.
        verdict: &'a StepVerdict,
    },
}

/// One executed code block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeRun {
    /// The code that ran (None when the text held no complete block).
    pub code: Option<String>,
    /// The text inserted after `[Code Output]`.
    pub output: String,
}

/// One sampled rationale for one paragraph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rationale {
    /// The full assistant text for the paragraph (it becomes the history's assistant turn).
    pub text: String,
    /// Each code execution, in order.
    pub code_runs: Vec<CodeRun>,
    /// The reward.
    pub reward: Reward,
    /// Whether the fallback (verify dropped, judgement forced) was used.
    pub fallback: bool,
    /// Model calls made.
    pub generations: usize,
}

/// The verdict on one paragraph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepVerdict {
    /// Paragraph index (0-based).
    pub index: usize,
    /// Mean reward over the samples that judged it.
    pub reward: f64,
    /// Each sample's rationale.
    pub samples: Vec<Rationale>,
}

/// Solution-level scores from the step rewards (the Best-of-N aggregations).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SolutionScores {
    /// Smallest step reward (PRM-Min).
    pub min: f64,
    /// Last step reward (PRM-Last).
    pub last: f64,
    /// Mean step reward (PRM-Avg).
    pub mean: f64,
}

/// The result of verifying a solution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// One verdict per judged paragraph, in order.
    pub steps: Vec<StepVerdict>,
    /// 0-based index of the first paragraph with reward < 0.5, or −1 (ProcessBench's prediction).
    pub first_error_step: i64,
    /// Solution-level scores.
    pub scores: SolutionScores,
}

impl Verification {
    /// Builds the summary from the verdicts.
    pub fn from_steps(steps: Vec<StepVerdict>) -> Self {
        let rewards: Vec<f64> = steps.iter().map(|s| s.reward).collect();
        let first_error_step = rewards.iter().position(|&r| r < 0.5).map_or(-1, |i| i as i64);
        let scores = SolutionScores {
            // Nothing judged (an error on the first paragraph): neutral, like `last` and `mean`.
            min: if rewards.is_empty() { 0.5 } else { rewards.iter().copied().fold(f64::INFINITY, f64::min) },
            last: rewards.last().copied().unwrap_or(0.5),
            mean: if rewards.is_empty() { 0.5 } else { rewards.iter().sum::<f64>() / rewards.len() as f64 },
        };
        Verification { steps, first_error_step, scores }
    }
}

/// The sampling of one model call: the user's seed mixed with the paragraph, the sample and the
/// call number, so that samples differ and a run is reproducible from its seed.
pub fn call_sampling(base: Sampling, step: usize, sample: usize, call: usize) -> Sampling {
    match base {
        Sampling::Greedy => Sampling::Greedy,
        Sampling::Sample(mut p) => {
            let mut x = p.seed ^ ((step as u64) << 40) ^ ((sample as u64) << 20) ^ call as u64;
            // splitmix64 finaliser
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            p.seed = x ^ (x >> 31);
            Sampling::Sample(p)
        }
    }
}

/// Judges one paragraph once: the official `_single_inference`. `prompt` is from
/// [`step_prompt`]; `step_no` is 1-based.
#[allow(clippy::too_many_arguments)]
pub async fn judge_once<E: Engine, X: CodeExecutor + ?Sized>(
    engine: &E,
    executor: &mut X,
    prompt: &str,
    step: usize,
    sample: usize,
    path: usize,
    options: &VerifyOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Rationale> {
    let step_no = step + 1;
    let analyze_start = analyze_prefix(step_no);
    let (analyze, verify) = (options.mode.analyze(), options.mode.verify());
    let mut generations = 0usize;
    let emit_text = |on_event: &mut dyn FnMut(Event<'_>), text: &str, source| {
        if !text.is_empty() {
            on_event(Event::Text { step, sample, text, source });
        }
    };
    let call = async |engine: &E, cur: &str, max_tokens: usize, stop: &[&str], on_event: &mut dyn FnMut(Event<'_>), call_no: usize| {
        let full = format!("{prompt}{cur}");
        let sampling = call_sampling(options.sampling, step, sample, call_no);
        let req = CompletionRequest { prompt: &full, max_tokens, stop, sampling, path };
        let mut on_text = |t: &str| {
            if !t.is_empty() {
                on_event(Event::Text { step, sample, text: t, source: TextSource::Model });
            }
        };
        engine.complete(&req, &mut on_text).await
    };

    // Stage 1: the analysis.
    let mut analysis = String::new();
    let mut cur = if analyze {
        emit_text(on_event, &analyze_start, TextSource::Forced);
        let out = call(engine, &analyze_start, options.step_budget, &[STOP_ANALYZE], on_event, generations).await?;
        generations += 1;
        analysis = out.text;
        let next = if verify { VERIFY_PREFIX } else { OUTPUT_PREFIX };
        emit_text(on_event, next, TextSource::Forced);
        format!("{analyze_start}{analysis}{next}")
    } else {
        let next = if verify { VERIFY_PREFIX } else { OUTPUT_PREFIX };
        emit_text(on_event, next, TextSource::Forced);
        next.to_string()
    };
    // The same text without the `[Code Output]` sections genprm inserted: the judgement is
    // searched here, so that what the code prints cannot decide it.
    let mut own = cur.clone();

    // Stage 2: verify/execute rounds, then the fallback.
    let code_stops: &[&str] = if verify && options.execute { &[STOP_CODE, STOP_OUTPUT] } else { &[STOP_OUTPUT] };
    let mut rounds = 0usize;
    let mut fallbacks = 0usize;
    let mut code_runs = Vec::new();
    let mut fallback = false;
    let last: Completion = loop {
        let left = options.step_budget as i64 - engine.count_tokens(&cur)? as i64;
        let out = if left > 0 && rounds < options.code_rounds {
            call(engine, &cur, left as usize, code_stops, on_event, generations).await?
        } else {
            // Degrade: drop the verify section and force the judgement.
            let forced = if analyze {
                let kept = analysis.split("</analyze>").next().unwrap_or("");
                format!("{analyze_start}{kept}</analyze>\n{OUTPUT_PREFIX}")
            } else {
                format!("{cur}</verify>\n{OUTPUT_PREFIX}")
            };
            own = if analyze { forced.clone() } else { format!("{own}</verify>\n{OUTPUT_PREFIX}") };
            fallback = true;
            fallbacks += 1;
            cur = forced;
            on_event(Event::Fallback { step, sample, text: &cur });
            call(engine, &cur, options.fallback_tokens, &[STOP_OUTPUT], on_event, generations).await?
        };
        generations += 1;
        rounds += 1;
        if out.text.ends_with(STOP_OUTPUT) {
            break out;
        }
        if fallback && fallbacks >= options.max_fallbacks {
            // The official loop would retry forever; give up with whatever was written.
            break out;
        }
        let text_so_far = format!("{cur}{}", out.text);
        let section = if options.execute {
            let (code, output) = execute_text(executor, &text_so_far).await;
            on_event(Event::CodeRan { step, sample, code: code.as_deref(), output: &output });
            code_runs.push(CodeRun { code, output: output.clone() });
            code_output_section(&output)
        } else {
            "[Code Output]\n\n```\n".to_string()
        };
        emit_text(on_event, &section, TextSource::CodeOutput);
        own.push_str(&out.text);
        cur = format!("{text_so_far}{section}");
    };
    let text = format!("{cur}{}", last.text);
    own.push_str(&last.text);
    let (yes, no) = engine.answer_ids();
    // A documented deviation: the official rule searches the whole text, `[Code Output]`
    // included, so code that prints `\boxed{Yes}` would decide the step.
    let reward = step_reward(&own, &last, yes, no, options.reward);
    on_event(Event::Judged { step, sample, reward: &reward });
    Ok(Rationale { text, code_runs, reward, fallback, generations })
}

/// A verification interrupted by an error: the paragraphs judged before it are kept.
#[derive(Debug)]
pub struct PartialVerification {
    /// What was judged before the error.
    pub completed: Verification,
    /// The error.
    pub error: Error,
}

impl std::fmt::Display for PartialVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "after {} judged paragraph(s): {}", self.completed.steps.len(), self.error)
    }
}

impl std::error::Error for PartialVerification {}

/// A code executor several samples share (the `shared` history): runs take turns.
struct SharedExecutor<'a, X>(&'a futures_util::lock::Mutex<&'a mut X>);

impl<X: CodeExecutor> CodeExecutor for SharedExecutor<'_, X> {
    async fn run(&mut self, code: &str) -> crate::exec::ExecOutcome {
        self.0.lock().await.run(code).await
    }
    async fn reset(&mut self) {
        self.0.lock().await.reset().await;
    }
}

/// Verifies a whole solution: every paragraph, `options.samples` times, rewards averaged.
/// `executors` holds one executor per path (`samples` of them for per-path histories, one for
/// a shared history); each is reset first, so namespaces never leak between solutions.
///
/// The samples of a paragraph run concurrently (with `options.batch`): an engine that batches
/// (the local one) decodes them together, and a sample running its code leaves the others
/// decoding. Greedy samples give the same texts, code and rewards as one after another; sampled
/// ones can differ in rare tokens (rows computed together round differently in the last bits).
pub async fn verify<E: Engine, X: CodeExecutor>(
    engine: &E,
    tokenizer: &Tokenizer,
    executors: &mut [X],
    solution: &Solution,
    options: &VerifyOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> std::result::Result<Verification, PartialVerification> {
    let fail = |steps: &Vec<StepVerdict>, error| PartialVerification { completed: Verification::from_steps(steps.clone()), error };
    let n = options.samples.max(1);
    let paths = match options.history {
        History::PerPath => n,
        History::Shared => 1,
    };
    if executors.len() < paths {
        let e = Error::InvalidArgument { name: "executors", message: format!("{paths} needed, {} given", executors.len()) };
        return Err(fail(&Vec::new(), e));
    }
    for x in executors[..paths].iter_mut() {
        x.reset().await;
    }
    let on_event = std::cell::RefCell::new(on_event);
    let mut histories: Vec<Vec<String>> = vec![Vec::new(); paths];
    let mut verdicts: Vec<StepVerdict> = Vec::new();
    let in_context = |step: usize, e: Error| match e {
        Error::ContextOverflow { tokens, max } => Error::InvalidInput {
            what: format!("paragraph {}", step + 1),
            message: format!("the conversation reaches {tokens} tokens, over the model's context of {max}"),
        },
        other => other,
    };
    for step in 0..solution.steps.len() {
        let mut prompts = Vec::with_capacity(paths);
        for history in &histories {
            match step_prompt(tokenizer, solution, history, step, options) {
                Ok(p) => prompts.push(p),
                Err(e) => return Err(fail(&verdicts, e)),
            }
        }
        // Concurrent samples each use their own path (KV-cache row), so they can decode together.
        let samples: Result<Vec<Rationale>> = if options.batch && n > 1 {
            match options.history {
                History::PerPath => {
                    let (prompts, on_event) = (&prompts, &on_event);
                    let jobs = executors[..n].iter_mut().enumerate().map(|(sample, x)| async move {
                        on_event.borrow_mut()(Event::StepStarted { step, sample });
                        let mut emit = |e: Event<'_>| on_event.borrow_mut()(e);
                        judge_once(engine, x, &prompts[sample], step, sample, sample, options, &mut emit).await
                    });
                    futures_util::future::try_join_all(jobs).await
                }
                History::Shared => {
                    let shared = futures_util::lock::Mutex::new(&mut executors[0]);
                    let (prompt, on_event, shared) = (&prompts[0], &on_event, &shared);
                    let jobs = (0..n).map(|sample| async move {
                        on_event.borrow_mut()(Event::StepStarted { step, sample });
                        let mut emit = |e: Event<'_>| on_event.borrow_mut()(e);
                        let mut x = SharedExecutor(shared);
                        judge_once(engine, &mut x, prompt, step, sample, sample, options, &mut emit).await
                    });
                    futures_util::future::try_join_all(jobs).await
                }
            }
        } else {
            async {
                let mut done = Vec::with_capacity(n);
                for sample in 0..n {
                    let path = if options.history == History::PerPath { sample } else { 0 };
                    on_event.borrow_mut()(Event::StepStarted { step, sample });
                    let mut emit = |e: Event<'_>| on_event.borrow_mut()(e);
                    done.push(judge_once(engine, &mut executors[path], &prompts[path], step, sample, path, options, &mut emit).await?);
                }
                Ok(done)
            }
            .await
        };
        let samples = match samples {
            Ok(s) => s,
            Err(e) => return Err(fail(&verdicts, in_context(step, e))),
        };
        match options.history {
            History::PerPath => {
                for (h, r) in histories.iter_mut().zip(&samples) {
                    h.push(r.text.clone());
                }
            }
            History::Shared => histories[0].push(samples[0].text.clone()),
        }
        let reward = samples.iter().map(|r| r.reward.value).sum::<f64>() / samples.len() as f64;
        let verdict = StepVerdict { index: step, reward, samples };
        on_event.borrow_mut()(Event::StepDone { verdict: &verdict });
        verdicts.push(verdict);
        if options.stop_at_first_error && reward < 0.5 {
            break;
        }
    }
    Ok(Verification::from_steps(verdicts))
}

/// GenPRM's defaults are the library's ([`crate::generate::sampling`], [`crate::exec`], this
/// module); the browser package mirrors them in TypeScript, checked here.
#[cfg(test)]
mod browser_defaults {
    use crate::generate::sampling::{GENPRM_TEMPERATURE, GENPRM_TOP_K, GENPRM_TOP_P};

    /// The number `export const NAME = value;` sets in a TypeScript module.
    fn typescript_constant<T: std::str::FromStr>(source: &str, file: &str, name: &str) -> T {
        let value = source
            .lines()
            .filter_map(|line| line.strip_prefix("export const ")?.strip_suffix(';')?.split_once(" = "))
            .find_map(|(n, v)| (n.trim() == name).then_some(v.trim()))
            .unwrap_or_else(|| panic!("{file} has no `export const {name} = ...;`"));
        value.parse().unwrap_or_else(|_| panic!("{file}: {name} = {value} is not a number of the library's type"))
    }

    #[test]
    fn the_browser_package_has_the_library_defaults() {
        // pkg/src/contract/defaults.ts holds the defaults for the demo, the grading page and the widget.
        const FILE: &str = "pkg/src/contract/defaults.ts";
        let ts = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../pkg/src/contract/defaults.ts"));
        assert_eq!(typescript_constant::<f32>(ts, FILE, "GENPRM_TEMPERATURE"), GENPRM_TEMPERATURE, "GENPRM_TEMPERATURE");
        assert_eq!(typescript_constant::<usize>(ts, FILE, "GENPRM_TOP_K"), GENPRM_TOP_K, "GENPRM_TOP_K");
        assert_eq!(typescript_constant::<f32>(ts, FILE, "GENPRM_TOP_P"), GENPRM_TOP_P, "GENPRM_TOP_P");
        assert_eq!(typescript_constant::<u64>(ts, FILE, "TIME_LIMIT_SECS"), crate::exec::TIME_LIMIT_SECS, "TIME_LIMIT_SECS");
        assert_eq!(typescript_constant::<usize>(ts, FILE, "MAX_SAMPLES"), super::MAX_SAMPLES, "MAX_SAMPLES");

        // The demo's options take them from there, with no literal of its own.
        let options = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/src/components/options.ts"));
        let imports = options.lines().find(|l| l.starts_with("import") && l.contains("GENPRM_TEMPERATURE")).unwrap_or("");
        assert!(imports.ends_with("from 'genprm';"), "web/src/components/options.ts does not import the defaults from the package: {imports:?}");
        for name in ["GENPRM_TEMPERATURE", "GENPRM_TOP_K", "GENPRM_TOP_P", "MAX_SAMPLES"] {
            assert!(imports.contains(name), "web/src/components/options.ts does not import {name} from the package");
        }
        for literal in ["0.6", "0.95", " 20", "64"] {
            assert!(!options.contains(literal), "web/src/components/options.ts holds the literal {literal:?}: use the package's defaults");
        }
    }
}
