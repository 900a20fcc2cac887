//! An [`Engine`] that sends the model calls to an OpenAI-compatible completions server (vLLM,
//! SGLang, llama.cpp's server, llama-cpp-python): `POST {url}/v1/completions` with the prompt,
//! `max_tokens`, the stop strings, the sampling parameters and `logprobs: 20`, so that GenPRM's
//! protocol runs at a cluster's scale while the code the model writes still runs in the local
//! sandbox. The local tokenizer counts the step budget and names the Yes/No tokens.
//!
//! What servers differ on, and how it is handled:
//! - **The prompt**: by default the prompt's token ids (the local tokenizer's, exactly what the
//!   local engine feeds the model: one BOS; vLLM, SGLang and llama.cpp's server take them), or the
//!   rendered text (`PromptFormat::Text`, as the official code gives vLLM; the server tokenizes it
//!   and may add a second BOS), or the text without its BOS for servers that add one and take
//!   only text (`PromptFormat::TextWithoutBos`, llama-cpp-python).
//! - **Stop strings**: vLLM keeps the stop string when asked (`include_stop_str_in_output`, sent);
//!   the OpenAI convention (llama.cpp, llama-cpp-python) drops it. The text is completed from
//!   vLLM's `stop_reason` or from the returned tokens, as the protocol needs the stop string kept.
//! - **Log-probabilities**: the official reward uses vLLM 0.7.1's *processed* values (after
//!   temperature, top-k and top-p). Most servers now return raw log-probabilities
//!   ([`ServerLogprobs::Raw`], the default): the processed ones are recomputed from the returned
//!   top list, exactly when the top-k is at most the number returned. The reward's `note` says
//!   when the server's list limits its precision.

use std::time::Duration;

use serde_json::{Value, json};

use crate::engine::{AnswerScores, Completion, CompletionRequest, Engine, OFFICIAL_LOGPROBS};
use crate::error::{Error, Result};
use crate::generate::sampling::{Sampling, processed_logprobs};
use crate::tokenizer::Tokenizer;

/// How the prompt is sent.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptFormat {
    /// The local tokenizer's ids for the rendered prompt (one BOS, identical to the local engine).
    #[default]
    Tokens,
    /// The rendered prompt text (the server tokenizes it, as vLLM does for the official code;
    /// a server that adds a BOS itself then sees two, as the official runs probably did).
    Text,
    /// The rendered text without its leading BOS, for servers that add one themselves and take
    /// no token ids (llama-cpp-python): one BOS, as the local engine.
    #[cfg_attr(feature = "cli", value(name = "text-no-bos"))]
    TextWithoutBos,
}

/// What a server's `logprobs` are.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerLogprobs {
    /// Log-softmax of the raw logits (current vLLM by default, SGLang, llama.cpp).
    #[default]
    Raw,
    /// After temperature, top-k and top-p, as vLLM 0.7.1 (GenPRM's pinned version) returns them.
    Processed,
}

/// Where the server is and how to talk to it.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is accepted).
    pub url: String,
    /// The model name to request; `None` asks `GET /v1/models` and takes the first.
    pub model: Option<String>,
    /// A bearer token, sent as `Authorization: Bearer …`.
    pub api_key: Option<String>,
    /// How the prompt is sent.
    pub prompt: PromptFormat,
    /// What the server's log-probabilities are.
    pub logprobs: ServerLogprobs,
    /// Attempts after the first on connection errors, 429 and 5xx.
    pub retries: u32,
    /// The first wait between attempts; it doubles each time, up to `max_backoff`.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// The longest one request may take, all of it (the overall deadline).
    pub timeout: Duration,
    /// The longest wait for a connection to open.
    pub connect_timeout: Duration,
    /// The longest wait between two reads from the server (the response may take as long as the
    /// completion takes to compute, so the default is long; a server that stops sending is
    /// caught by this, one that trickles bytes by `timeout`).
    pub read_timeout: Duration,
    /// Whether a redirect to another host (or scheme, or port) is followed; redirects on the
    /// same server are.
    pub allow_cross_host_redirects: bool,
    /// The largest response body read; a larger one is an error (not retried).
    pub max_body_bytes: u64,
}

/// Redirects followed at most.
const MAX_REDIRECTS: u32 = 5;

impl RemoteConfig {
    /// A configuration for `url` with the defaults: token-id prompts, raw log-probabilities,
    /// 8 retries from 0.5 s doubling up to 30 s, 15 minutes per request, 30 s to connect, 10
    /// minutes between reads, no redirects to other hosts, bodies of at most 64 MiB.
    pub fn new(url: impl Into<String>) -> Self {
        RemoteConfig {
            url: url.into(),
            model: None,
            api_key: None,
            prompt: PromptFormat::Tokens,
            logprobs: ServerLogprobs::Raw,
            retries: 8,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(900),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(600),
            allow_cross_host_redirects: false,
            max_body_bytes: 64 << 20,
        }
    }

    fn base(&self) -> String {
        let u = self.url.trim_end_matches('/');
        u.strip_suffix("/v1").unwrap_or(u).to_string()
    }
}

/// The HTTP side: requests with retries and clear errors. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct RemoteClient {
    agent: ureq::Agent,
    config: RemoteConfig,
    model: String,
}

impl std::fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClient").field("url", &self.config.url).field("model", &self.model).finish()
    }
}

impl RemoteClient {
    /// Connects: resolves the model name (`GET /v1/models` when none is configured), which also
    /// checks that the server answers.
    pub fn connect(config: RemoteConfig) -> Result<Self> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(Error::InvalidArgument { name: "url", message: format!("{:?} is not an http:// or https:// URL", config.url) });
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .timeout_connect(Some(config.connect_timeout))
            .timeout_per_read(Some(config.read_timeout))
            .http_status_as_error(false)
            // Redirects are followed here, so that one to another host can be refused.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .build()
            .into();
        let mut client = RemoteClient { agent, config, model: String::new() };
        client.model = match client.config.model.clone() {
            Some(m) => m,
            None => {
                let url = format!("{}/v1/models", client.config.base());
                let models = client.send(&url, None)?;
                models["data"][0]["id"].as_str().map(str::to_string).ok_or_else(|| Error::Remote {
                    url: url.clone(),
                    message: format!("the server lists no model: {}", excerpt(&models.to_string())),
                })?
            }
        };
        Ok(client)
    }

    /// The model name requests use.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The configuration.
    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// GET (`body` None) or POST a JSON body; retries connection errors, 429 and 5xx with
    /// exponential backoff (honouring `Retry-After`); any other failure is an error naming the
    /// URL, the status and the start of the body.
    fn send(&self, url: &str, body: Option<&Value>) -> Result<Value> {
        let payload = body.map(Value::to_string);
        let mut wait = self.config.backoff;
        let mut attempt = 0u32;
        loop {
            let (retryable, message, retry_after) = match self.request(url, payload.as_deref()) {
                Ok((status, retry_after, text)) => match (status, text) {
                    (200..=299, Ok(text)) => {
                        return serde_json::from_str(&text).map_err(|e| Error::Remote {
                            url: url.to_string(),
                            message: format!("the response is not JSON ({e}): {}", excerpt(&text)),
                        });
                    }
                    // Too large: the same request would get the same answer.
                    (_, Err(ureq::Error::BodyExceedsLimit(n))) => (
                        false,
                        format!("the response is larger than {n} bytes, the most read (raise it with --max-response-mib)"),
                        None,
                    ),
                    (200..=299, Err(e)) => (is_transient(&e), format!("reading the response: {e}"), None),
                    (s, text) => {
                        let body = text.unwrap_or_default();
                        (s == 429 || s >= 500, format!("HTTP {s}: {}", excerpt(&body)), retry_after)
                    }
                },
                Err(RequestError::Redirect(message)) => (false, message, None),
                Err(RequestError::Http(e)) => (is_transient(&e), e.to_string(), None),
            };
            if !retryable || attempt >= self.config.retries {
                let tries = if retryable { format!(" (after {} attempts)", attempt + 1) } else { String::new() };
                return Err(Error::Remote { url: url.to_string(), message: format!("{message}{tries}") });
            }
            std::thread::sleep(retry_after.unwrap_or(wait).min(self.config.max_backoff));
            wait = (wait * 2).min(self.config.max_backoff);
            attempt += 1;
        }
    }

    /// One request, following redirects on the same server (and to others only when allowed):
    /// the status, a `Retry-After` in seconds, and the body read up to the cap.
    fn request(&self, url: &str, payload: Option<&str>) -> std::result::Result<(u16, Option<Duration>, std::result::Result<String, ureq::Error>), RequestError> {
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let result = match payload {
                Some(p) => {
                    let mut req = self.agent.post(current.as_str()).header("Content-Type", "application/json");
                    if let Some(key) = &self.config.api_key {
                        req = req.header("Authorization", format!("Bearer {key}"));
                    }
                    req.send(p)
                }
                None => {
                    let mut req = self.agent.get(current.as_str());
                    if let Some(key) = &self.config.api_key {
                        req = req.header("Authorization", format!("Bearer {key}"));
                    }
                    req.call()
                }
            };
            let mut resp = result.map_err(RequestError::Http)?;
            let status = resp.status().as_u16();
            if (300..400).contains(&status) && status != 304 {
                let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
                let Some(location) = location else {
                    return Err(RequestError::Redirect(format!("HTTP {status} without a Location to follow")));
                };
                let next = redirect_target(&current, &location)
                    .ok_or_else(|| RequestError::Redirect(format!("HTTP {status} to {location:?}, which is not a URL")))?;
                if !self.config.allow_cross_host_redirects && origin(&next) != origin(&current) {
                    return Err(RequestError::Redirect(format!(
                        "HTTP {status} redirects to another server ({next}); not followed (pass --allow-cross-host-redirects to follow it, or give that URL)"
                    )));
                }
                current = next;
                continue;
            }
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = resp.body_mut().with_config().limit(self.config.max_body_bytes).read_to_string();
            return Ok((status, retry_after, text));
        }
        Err(RequestError::Redirect(format!("more than {MAX_REDIRECTS} redirects")))
    }
}

enum RequestError {
    Http(ureq::Error),
    Redirect(String),
}

/// The URL a `Location` header leads to from `from`: an absolute URL, or a path on the same
/// server.
fn redirect_target(from: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_string());
    }
    if location.starts_with('/') && !location.starts_with("//") {
        return origin(from).map(|o| format!("{o}{location}"));
    }
    None
}

/// `scheme://host[:port]` of a URL, lower-cased.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    Some(format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()))
}

fn is_transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_) | ureq::Error::HostNotFound | ureq::Error::Protocol(_)
    )
}

/// The first 300 characters of a body, on one line.
fn excerpt(text: &str) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let trimmed = one_line.trim();
    if trimmed.chars().count() > 300 { format!("{}…", trimmed.chars().take(300).collect::<String>()) } else { trimmed.to_string() }
}

/// GenPRM's protocol driving an OpenAI-compatible server.
pub struct OpenAiEngine<'t> {
    client: RemoteClient,
    tokenizer: &'t Tokenizer,
    yes: u32,
    no: u32,
    yes_text: String,
    no_text: String,
}

impl<'t> OpenAiEngine<'t> {
    /// An engine over a connected client; `tokenizer` is the model's own (from its directory).
    pub fn new(client: RemoteClient, tokenizer: &'t Tokenizer) -> Result<Self> {
        let yes = tokenizer.last_token_id("Yes")?;
        let no = tokenizer.last_token_id("No")?;
        let yes_text = tokenizer.decode(&[yes], false)?;
        let no_text = tokenizer.decode(&[no], false)?;
        Ok(OpenAiEngine { client, tokenizer, yes, no, yes_text, no_text })
    }

    fn request_body(&self, request: &CompletionRequest<'_>) -> Result<Value> {
        let prompt = match self.client.config.prompt {
            PromptFormat::Tokens => json!(self.tokenizer.encode(request.prompt, false)?),
            // The server tokenizes the text itself (and reads special tokens in it as such).
            PromptFormat::Text => json!(crate::tokenizer::strip_text_marks(request.prompt)),
            PromptFormat::TextWithoutBos => {
                let bos = self.tokenizer.bos_token().unwrap_or_default();
                let text = crate::tokenizer::strip_text_marks(request.prompt);
                json!(text.strip_prefix(bos).unwrap_or(&text))
            }
        };
        let mut body = json!({
            "model": self.client.model,
            "prompt": prompt,
            "max_tokens": request.max_tokens,
            "stop": request.stop,
            "logprobs": OFFICIAL_LOGPROBS,
            "n": 1,
            "stream": false,
            // vLLM: keep the stop string (as GenPRM's code asks); SGLang's name for the same.
            "include_stop_str_in_output": true,
            "no_stop_trim": true,
            "skip_special_tokens": true,
            // vLLM: token ids in the log-probabilities, so Yes/No are found by id, not by text.
            "return_tokens_as_token_ids": true,
            // Neutral penalties and no min-p under every server's name (llama.cpp defaults differ).
            "repetition_penalty": 1.0,
            "repeat_penalty": 1.0,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
            "min_p": 0.0,
        });
        match request.sampling {
            // Temperature 0 is greedy on every server; top-k/top-p then do nothing.
            Sampling::Greedy => body["temperature"] = json!(0.0),
            Sampling::Sample(p) => {
                body["temperature"] = json!(p.temperature);
                body["top_p"] = json!(p.top_p);
                // No top-k is spelled -1 (vLLM), 0 (llama.cpp) or rejected: leave it to the server.
                if let Some(k) = p.top_k.filter(|&k| k > 0) {
                    body["top_k"] = json!(k);
                }
                // Servers take a 32- or 64-bit seed; keep it in range for both.
                body["seed"] = json!(p.seed & 0x7fff_ffff);
            }
        }
        Ok(body)
    }
}

/// One returned token: its id when the server says it (vLLM's `token_id:N`) or when its text
/// is the Yes/No token's, and its text.
fn token_key(s: &str, yes: (u32, &str), no: (u32, &str)) -> Option<u32> {
    if let Some(id) = s.strip_prefix("token_id:").and_then(|n| n.parse().ok()) {
        return Some(id);
    }
    if s == yes.1 {
        Some(yes.0)
    } else if s == no.1 {
        Some(no.0)
    } else {
        None
    }
}

/// The Yes/No scores at one position from a server's top log-probabilities (`entries`: token id
/// when known, log-probability), as vLLM 0.7.1 would have reported them.
pub fn scores_from_top_logprobs(entries: &[(Option<u32>, f32)], yes: u32, no: u32, sampling: Sampling, kind: ServerLogprobs) -> AnswerScores {
    let raw: Vec<f32> = entries.iter().map(|(_, lp)| *lp).collect();
    let n = entries.len();
    let (values, approximate_nucleus) = match (kind, sampling) {
        (ServerLogprobs::Processed, _) | (ServerLogprobs::Raw, Sampling::Greedy) => (raw.clone(), false),
        (ServerLogprobs::Raw, Sampling::Sample(p)) => {
            // Raw log-probabilities are logits shifted by one constant, so vLLM's processing of
            // the returned set is exact whenever the top-k keeps no token outside it.
            let truncates = p.top_k.is_some_and(|k| k > 0) || p.top_p < 1.0;
            let covered = p.top_k.is_some_and(|k| k > 0 && k <= n);
            (processed_logprobs(&raw, p.temperature, p.top_k, p.top_p), truncates && !covered)
        }
    };
    let find = |id: u32| entries.iter().position(|(t, _)| *t == Some(id));
    let raw_known = kind == ServerLogprobs::Raw;
    AnswerScores {
        yes: find(yes).map(|i| values[i]),
        no: find(no).map(|i| values[i]),
        min: values.iter().copied().fold(f32::INFINITY, f32::min),
        raw_yes: find(yes).filter(|_| raw_known).map(|i| raw[i]),
        raw_no: find(no).filter(|_| raw_known).map(|i| raw[i]),
        returned: Some(n),
        approximate_nucleus,
    }
}

/// The [`Completion`] in a whole completions response (`{"choices": [...]}`) from the server at
/// `url`, the Yes/No tokens given as (id, text): an error naming the URL when it lacks what the
/// protocol needs or holds impossible log-probabilities.
pub fn parse_completion(
    response: &Value,
    request: &CompletionRequest<'_>,
    yes: (u32, &str),
    no: (u32, &str),
    kind: ServerLogprobs,
    url: &str,
) -> Result<Completion> {
    let choice = response["choices"].get(0).ok_or_else(|| Error::Remote {
        url: url.to_string(),
        message: format!("the response has no `choices`: {}", excerpt(&response.to_string())),
    })?;
    parse_choice(choice, request, yes, no, kind, url)
}

/// Builds the [`Completion`] from one `choices[0]` of a completions response.
fn parse_choice(
    choice: &Value,
    request: &CompletionRequest<'_>,
    yes: (u32, &str),
    no: (u32, &str),
    kind: ServerLogprobs,
    url: &str,
) -> Result<Completion> {
    let bad = |what: &str| Error::Remote { url: url.to_string(), message: format!("{what}: {}", excerpt(&choice.to_string())) };
    let mut text = choice["text"].as_str().ok_or_else(|| bad("the response has no `choices[0].text`"))?.to_string();
    let logprobs = &choice["logprobs"];
    let tokens: Vec<String> = match logprobs["tokens"].as_array() {
        Some(t) => t.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect(),
        None => return Err(bad("the response has no `logprobs.tokens` (the reward needs log-probabilities)")),
    };
    let tops = logprobs["top_logprobs"].as_array().ok_or_else(|| bad("the response has no `logprobs.top_logprobs`"))?;
    let finish = choice["finish_reason"].as_str().unwrap_or("");
    // The stop string, which the protocol needs kept at the end of the text.
    let mut stopped_by_string = request.stop.iter().any(|s| text.ends_with(s));
    if !stopped_by_string && finish == "stop" {
        let named = choice["stop_reason"].as_str().filter(|s| request.stop.contains(s));
        let from_tokens = || {
            // The tokens the server generated go on past the trimmed text: the first stop string
            // right after it is the one that matched.
            let all: String = tokens.iter().map(String::as_str).collect();
            let rest = all.strip_prefix(text.as_str())?;
            request.stop.iter().find(|s| rest.starts_with(**s)).copied()
        };
        if let Some(stop) = named.or_else(from_tokens) {
            text.push_str(stop);
            stopped_by_string = true;
        }
    }
    let mut token_ids = Vec::with_capacity(tokens.len());
    let mut answer_scores = Vec::new();
    for (i, tok) in tokens.iter().enumerate() {
        let id = token_key(tok, yes, no).unwrap_or(u32::MAX);
        token_ids.push(id);
        if id != yes.0 && id != no.0 {
            continue;
        }
        let Some(top) = tops.get(i).and_then(Value::as_object) else { continue };
        let mut entries: Vec<(Option<u32>, f32)> = Vec::with_capacity(top.len());
        for (k, v) in top {
            let lp = v.as_f64().map(|x| x as f32);
            // A log-probability is at most 0 (a little over, from rounding) and finite.
            match lp {
                Some(lp) if lp.is_finite() && lp <= 1e-3 => entries.push((token_key(k, yes, no), lp)),
                _ => {
                    return Err(Error::Remote {
                        url: url.to_string(),
                        message: format!(
                            "the server returned an impossible log-probability {v} for token {k:?} at position {i} (log-probabilities are finite and at most 0)"
                        ),
                    });
                }
            }
        }
        // The returned list: the top entries (as many as the official 20) plus the sampled token.
        entries.sort_by(|a, b| b.1.total_cmp(&a.1));
        let sampled = entries.iter().position(|(t, _)| *t == Some(id));
        if entries.len() > OFFICIAL_LOGPROBS {
            let keep_sampled = sampled.filter(|&s| s >= OFFICIAL_LOGPROBS).map(|s| entries[s]);
            entries.truncate(OFFICIAL_LOGPROBS);
            entries.extend(keep_sampled);
        }
        answer_scores.push((i, scores_from_top_logprobs(&entries, yes.0, no.0, request.sampling, kind)));
    }
    Ok(Completion { text, token_ids, answer_scores, stopped_by_string })
}

impl Engine for OpenAiEngine<'_> {
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.tokenizer.encode(text, false)?.len())
    }

    fn answer_ids(&self) -> (u32, u32) {
        (self.yes, self.no)
    }

    async fn complete(&self, request: &CompletionRequest<'_>, on_text: &mut dyn FnMut(&str)) -> Result<Completion> {
        let url = format!("{}/v1/completions", self.client.config.base());
        let body = self.request_body(request)?;
        let response = self.client.send(&url, Some(&body))?;
        let completion = parse_completion(
            &response,
            request,
            (self.yes, &self.yes_text),
            (self.no, &self.no_text),
            self.client.config.logprobs,
            &url,
        )?;
        on_text(&completion.text);
        Ok(completion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::sampling::SamplingParams;

    const YES: u32 = 7;
    const NO: u32 = 9;

    fn request<'a>(stop: &'a [&'a str], sampling: Sampling) -> CompletionRequest<'a> {
        CompletionRequest { prompt: "p", max_tokens: 10, stop, sampling, path: 0 }
    }

    #[test]
    fn raw_top_logprobs_give_vllm_processed_values_when_the_top_k_is_covered() {
        // 30 raw logits; the server returns the top 20 as log-softmax values.
        let mut logits: Vec<f32> = (0..30).map(|i| -(i as f32) * 0.3).collect();
        logits[YES as usize] = 1.0;
        logits[NO as usize] = 0.8;
        let lse = logits.iter().map(|l| (l - 1.0).exp()).sum::<f32>().ln() + 1.0;
        let mut order: Vec<usize> = (0..30).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let entries: Vec<(Option<u32>, f32)> = order[..20].iter().map(|&i| (Some(i as u32), logits[i] - lse)).collect();
        let sampling = Sampling::Sample(SamplingParams::default());
        let from_server = scores_from_top_logprobs(&entries, YES, NO, sampling, ServerLogprobs::Raw);
        let local = crate::engine::answer_scores(&logits, YES, YES, NO, sampling);
        assert!((from_server.yes.unwrap() - local.yes.unwrap()).abs() < 1e-5);
        assert_eq!(from_server.no.is_some(), local.no.is_some());
        if let (Some(a), Some(b)) = (from_server.no, local.no) {
            assert!(a == b || (a - b).abs() < 1e-5, "{a} {b}");
        }
        assert!(!from_server.approximate_nucleus);
        assert_eq!(from_server.returned, Some(20));
        // Raw differences are logit differences: the calibrated reward needs nothing else.
        assert!(((from_server.raw_yes.unwrap() - from_server.raw_no.unwrap()) - 0.2).abs() < 1e-5);
        // A server that returns only 5: the nucleus is estimated.
        let few = scores_from_top_logprobs(&entries[..5], YES, NO, sampling, ServerLogprobs::Raw);
        assert!(few.approximate_nucleus);
        assert_eq!(few.returned, Some(5));
    }

    #[test]
    fn stop_strings_trimmed_by_the_server_are_put_back() {
        let yes = (YES, "Yes");
        let no = (NO, "No");
        let stops = ["\n```\n", "</output>\n"];
        // llama.cpp style: text without the stop string, the tokens go on.
        let choice = json!({
            "text": "x = 1\nprint(x)",
            "finish_reason": "stop",
            "logprobs": {"tokens": ["x", " =", " 1", "\n", "print", "(x)", "\n", "```", "\n"], "top_logprobs": []}
        });
        let c = parse_choice(&choice, &request(&stops, Sampling::Greedy), yes, no, ServerLogprobs::Raw, "u").unwrap();
        assert_eq!(c.text, "x = 1\nprint(x)\n```\n");
        assert!(c.stopped_by_string);
        // vLLM style: the stop string kept, ids in the log-probabilities; Yes found by id.
        let choice = json!({
            "text": "{Yes}$\n</output>\n",
            "finish_reason": "stop",
            "stop_reason": "</output>\n",
            "logprobs": {
                "tokens": ["token_id:1", "token_id:7", "token_id:2"],
                "top_logprobs": [{"token_id:1": 0.0}, {"token_id:7": -0.1, "token_id:9": -2.5, "token_id:3": -4.0}, {"token_id:2": 0.0}]
            }
        });
        let c = parse_choice(&choice, &request(&stops, Sampling::Greedy), yes, no, ServerLogprobs::Raw, "u").unwrap();
        assert_eq!(c.text, "{Yes}$\n</output>\n");
        assert_eq!(c.token_ids, vec![1, 7, 2]);
        assert_eq!(c.answer_scores.len(), 1);
        let (pos, s) = c.answer_scores[0];
        assert_eq!((pos, s.yes, s.no, s.min), (1, Some(-0.1), Some(-2.5), -4.0));
        // An end-of-sequence stop: nothing is added.
        let choice = json!({"text": "done", "finish_reason": "stop", "logprobs": {"tokens": ["done"], "top_logprobs": [{"done": 0.0}]}});
        let c = parse_choice(&choice, &request(&stops, Sampling::Greedy), yes, no, ServerLogprobs::Raw, "u").unwrap();
        assert_eq!((c.text.as_str(), c.stopped_by_string), ("done", false));
        // No log-probabilities: a clear error.
        let e = parse_choice(&json!({"text": "a"}), &request(&stops, Sampling::Greedy), yes, no, ServerLogprobs::Raw, "http://h/v1/completions")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://h/v1/completions") && e.contains("logprobs"), "{e}");
    }
}
