//! Where the model calls go (`--backend local|openai`), and running many solutions at once
//! (`--concurrency K`: K worker threads, each with its own engine and sandboxes).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use genprm::engine::{Completion, CompletionRequest, Engine};
use genprm::remote::{OpenAiEngine, PromptFormat, RemoteClient, RemoteConfig, ServerLogprobs};
use genprm::{DeviceKind, LoadedModel, LocalEngine, Tokenizer};

use super::{ModelArgs, load};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// This machine (CPU or GPU).
    Local,
    /// An OpenAI-compatible completions server (vLLM, SGLang, llama.cpp).
    Openai,
}

/// Options choosing the engine, shared by `verify`, `grade` and `eval`.
#[derive(Args)]
pub struct BackendArgs {
    /// Where the model runs: `local` (this machine) or `openai` (an OpenAI-compatible completions
    /// server; the model directory still provides the tokenizer, and code still runs here).
    #[arg(long, value_enum, default_value = "local")]
    backend: BackendKind,
    /// The server's base URL, e.g. http://127.0.0.1:8000 (with --backend openai).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The environment variable holding the server's API key (sent as a bearer token).
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// The model name on the server (default: the first one `GET /v1/models` lists).
    #[arg(long, value_name = "NAME")]
    remote_model: Option<String>,
    /// How prompts are sent to the server.
    #[arg(long, value_enum, default_value = "tokens")]
    remote_prompt: PromptFormat,
    /// What the server's log-probabilities are.
    #[arg(long, value_enum, default_value = "raw")]
    server_logprobs: ServerLogprobs,
    /// Attempts after the first when the server cannot be reached or answers 429/5xx (waits
    /// double from 0.5 s up to 30 s).
    #[arg(long, value_name = "N", default_value_t = 8)]
    retries: u32,
    /// Seconds to wait for a connection to the server to open.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = seconds)]
    connect_timeout: f64,
    /// Seconds to wait between two reads from the server (the answer comes when the completion
    /// is done, so this is long by default).
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0, value_parser = seconds)]
    read_timeout: f64,
    /// Seconds one request may take in all (each retry gets its own).
    #[arg(long, value_name = "SECONDS", default_value_t = 900.0, value_parser = seconds)]
    request_timeout: f64,
    /// Follow a redirect to another server (by default only redirects on the same one are).
    #[arg(long)]
    allow_cross_host_redirects: bool,
    /// The largest response read from the server, in MiB (a larger one is an error, not retried).
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_response_mib: u64,
    /// Solutions verified at once: K worker threads, each with its own engine and sandboxes.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
}

/// A positive number of seconds, at most a day.
fn seconds(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds between 0 and 86400")),
    }
}

impl BackendArgs {
    /// The number of workers.
    pub fn concurrency(&self) -> usize {
        self.concurrency as usize
    }
}

/// The loaded model, or a connected server and the model's tokenizer.
pub enum Backend {
    /// A model on this machine.
    Local(LoadedModel),
    /// A remote server.
    OpenAi {
        /// The connection.
        client: RemoteClient,
        /// The model's tokenizer, loaded from its directory.
        tokenizer: Tokenizer,
        /// The model's context (`max_position_embeddings` of its config.json, when the directory
        /// has one).
        context: usize,
    },
}

/// The context assumed for a remote model whose directory has no config.json: inputs are still
/// measured against it, so that no text is tokenized whole whatever its length.
const REMOTE_CONTEXT: usize = 1 << 20;

impl Backend {
    /// Loads the model, or connects to the server (checking it answers).
    pub fn open(model: &ModelArgs, args: &BackendArgs) -> Result<Backend> {
        match args.backend {
            BackendKind::Local => {
                if args.url.is_some() || args.api_key_env.is_some() || args.remote_model.is_some() || args.allow_cross_host_redirects {
                    bail!("--url, --api-key-env, --remote-model and --allow-cross-host-redirects need --backend openai");
                }
                if args.concurrency > 1 {
                    bail!("--concurrency needs --backend openai: a local model computes one solution at a time");
                }
                Ok(Backend::Local(load(model)?))
            }
            BackendKind::Openai => {
                if model.quant.is_some() || model.device != DeviceKind::Cpu {
                    bail!("--quant, --head-quant and --device choose how a local model runs; with --backend openai the server decides");
                }
                let Some(url) = args.url.clone() else { bail!("--backend openai needs --url (the server's base URL, e.g. http://127.0.0.1:8000)") };
                let mut config = RemoteConfig::new(url);
                config.model = args.remote_model.clone();
                config.retries = args.retries;
                config.connect_timeout = std::time::Duration::from_secs_f64(args.connect_timeout);
                config.read_timeout = std::time::Duration::from_secs_f64(args.read_timeout);
                config.timeout = std::time::Duration::from_secs_f64(args.request_timeout);
                config.allow_cross_host_redirects = args.allow_cross_host_redirects;
                config.max_body_bytes = args.max_response_mib << 20;
                config.prompt = args.remote_prompt;
                config.logprobs = args.server_logprobs;
                if let Some(var) = &args.api_key_env {
                    let key = std::env::var(var).with_context(|| format!("--api-key-env {var}: the environment variable is not set"))?;
                    config.api_key = Some(key);
                }
                let tokenizer = Tokenizer::from_dir(&model.model)
                    .with_context(|| format!("{}: the tokenizer is needed locally with --backend openai", model.model.display()))?;
                let config_path = model.model.join("config.json");
                let context = if config_path.exists() {
                    genprm::Qwen2Config::from_file(&config_path)?.max_position_embeddings
                } else {
                    REMOTE_CONTEXT
                };
                let client = RemoteClient::connect(config).context("connecting to the completions server")?;
                Ok(Backend::OpenAi { client, tokenizer, context })
            }
        }
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        match self {
            Backend::Local(loaded) => Ok(loaded.tokenizer()?),
            Backend::OpenAi { tokenizer, .. } => Ok(tokenizer),
        }
    }

    /// The model's context in positions, which inputs are measured against before they are
    /// tokenized whole.
    pub fn context(&self) -> usize {
        match self {
            Backend::Local(loaded) => loaded.model.config().max_position_embeddings,
            Backend::OpenAi { context, .. } => *context,
        }
    }

    /// A fresh engine (empty caches).
    pub fn engine(&self) -> Result<AnyEngine<'_>> {
        Ok(match self {
            Backend::Local(loaded) => AnyEngine::Local(LocalEngine::new(&loaded.model, loaded.tokenizer()?)?),
            Backend::OpenAi { client, tokenizer, .. } => AnyEngine::OpenAi(OpenAiEngine::new(client.clone(), tokenizer)?),
        })
    }
}

/// Either engine.
pub enum AnyEngine<'a> {
    /// On this machine.
    Local(LocalEngine<'a>),
    /// On a server.
    OpenAi(OpenAiEngine<'a>),
}

impl Engine for AnyEngine<'_> {
    fn count_tokens(&self, text: &str) -> genprm::Result<usize> {
        match self {
            AnyEngine::Local(e) => e.count_tokens(text),
            AnyEngine::OpenAi(e) => e.count_tokens(text),
        }
    }

    fn answer_ids(&self) -> (u32, u32) {
        match self {
            AnyEngine::Local(e) => e.answer_ids(),
            AnyEngine::OpenAi(e) => e.answer_ids(),
        }
    }

    async fn complete(&self, request: &CompletionRequest<'_>, on_text: &mut dyn FnMut(&str)) -> genprm::Result<Completion> {
        match self {
            AnyEngine::Local(e) => e.complete(request, on_text).await,
            AnyEngine::OpenAi(e) => e.complete(request, on_text).await,
        }
    }
}

/// Runs `work` on `count` items with `workers` threads (one: on this thread), each worker with
/// its own state from `make_worker`. Every result goes to `sink` on this thread as soon as it is
/// made (so in completion order when there are several workers). After `sink` returns an error,
/// no new item starts; the items already running finish and reach `sink` too, so no finished
/// work is lost; then the first error is returned.
pub fn run_pool<W, R: Send>(
    count: usize,
    workers: usize,
    make_worker: impl Fn() -> Result<W> + Sync,
    work: impl Fn(&mut W, usize) -> R + Sync,
    mut sink: impl FnMut(usize, R) -> Result<()>,
) -> Result<()> {
    let workers = workers.clamp(1, count.max(1));
    if workers == 1 {
        let mut w = make_worker()?;
        for i in 0..count {
            sink(i, work(&mut w, i))?;
        }
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut first_error: Option<anyhow::Error> = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<R>)>();
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, stop, make_worker, work) = (&next, &stop, &make_worker, &work);
            scope.spawn(move || {
                let mut w = match make_worker() {
                    Ok(w) => w,
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        let _ = tx.send((usize::MAX, Err(e)));
                        return;
                    }
                };
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        break;
                    }
                    if tx.send((i, Ok(work(&mut w, i)))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            let outcome = r.and_then(|r| sink(i, r));
            if let Err(e) = outcome {
                stop.store(true, Ordering::SeqCst);
                first_error.get_or_insert(e);
            }
        }
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
