//! The tokenizer (Hugging Face `tokenizer.json` through the `tokenizers` crate) and the chat
//! template (the checkpoint's Jinja template rendered with minijinja, as transformers renders it).
//!
//! May import: the error type only.

use std::path::Path;

use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The DeepSeek-R1-Distill chat template as updated on 2025-02-09: the generation prompt is
/// `<｜Assistant｜><think>\n`.
pub const DEEPSEEK_TEMPLATE_THINK: &str = include_str!("templates/deepseek_r1_distill_think.jinja");
/// The original (January 2025) DeepSeek-R1-Distill chat template: the generation prompt is
/// `<｜Assistant｜>`. Identical to the updated one when no generation prompt is added.
pub const DEEPSEEK_TEMPLATE_ORIGINAL: &str = include_str!("templates/deepseek_r1_distill_original.jinja");

/// Which chat template renders conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateChoice {
    /// The checkpoint's own template (`tokenizer_config.json` `chat_template` or
    /// `chat_template.jinja`), falling back to [`TemplateChoice::Original`] when it has none.
    #[default]
    Checkpoint,
    /// The original DeepSeek-R1-Distill template.
    Original,
    /// The updated DeepSeek-R1-Distill template with `<think>\n`.
    Think,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A turn with the given role.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage { role: role.to_string(), content: content.into() }
    }
}

/// A special token as `tokenizer_config.json` writes it: a string or an AddedToken object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Plain(String),
    Added { content: String },
}

impl TokenSpec {
    fn text(&self) -> &str {
        match self {
            TokenSpec::Plain(s) => s,
            TokenSpec::Added { content } => content,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    add_bos_token: Option<bool>,
    #[serde(default)]
    add_eos_token: Option<bool>,
    #[serde(default)]
    bos_token: Option<TokenSpec>,
    #[serde(default)]
    eos_token: Option<TokenSpec>,
    #[serde(default)]
    chat_template: Option<serde_json::Value>,
}

/// The fuel a chat template may burn in one rendering (about one unit per template instruction):
/// the DeepSeek-R1-Distill template uses about 40 per message, so a conversation of thousands of
/// turns renders, while a template that loops without end stops within a second or so.
pub const TEMPLATE_FUEL: u64 = 5_000_000;

/// Marks the start of conversation text (a message's content) inside a rendered prompt: the
/// text up to [`TEXT_END`] is encoded with the model's special tokens treated as plain text, so
/// a student who writes `<｜Assistant｜>` into a step cannot open a turn of the conversation.
/// Both marks are Unicode noncharacters, removed from message contents before rendering.
pub const TEXT_START: char = '\u{FDD0}';
/// Marks the end of conversation text (see [`TEXT_START`]).
pub const TEXT_END: char = '\u{FDD1}';

/// The prompt text as a server would read it: the marks around conversation text removed.
pub fn strip_text_marks(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([TEXT_START, TEXT_END]) {
        std::borrow::Cow::Owned(text.chars().filter(|c| *c != TEXT_START && *c != TEXT_END).collect())
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The text of every added token (special or not: `<｜User｜>`, `<｜Assistant｜>`, BOS, EOS,
    /// `<think>`, …).
    added: Vec<String>,
    /// `Some` when `tokenizer_config.json` decides BOS/EOS: (bos id if added, eos id if added).
    specials_from_config: Option<(Option<u32>, Option<u32>)>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    checkpoint_template: Option<String>,
    template_origin: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab", &self.inner.get_vocab_size(true)).finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`, and `tokenizer_config.json` and `chat_template.jinja` when present,
    /// from a checkpoint directory.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let bytes = std::fs::read(&tok_path).map_err(|e| Error::io(&tok_path, e))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = match std::fs::read(&cfg_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&cfg_path, e)),
        };
        let tmpl_path = dir.join("chat_template.jinja");
        let tmpl = match std::fs::read_to_string(&tmpl_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&tmpl_path, e)),
        };
        Self::from_parts(&bytes, cfg.as_deref(), tmpl, dir)
    }

    /// Whether `tokenizer_config.json`'s bytes hold a `chat_template` (false when they do not
    /// parse: [`Tokenizer::from_parts`] reports that). A reader that must ask for each file
    /// asks for `chat_template.jinja` only when this is false or the folder's files are listed.
    pub fn config_has_template(config_json: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(config_json).is_ok_and(|v| v.get("chat_template").is_some_and(|t| !t.is_null()))
    }

    /// Builds a tokenizer from the bytes of `tokenizer.json`, optional `tokenizer_config.json`
    /// bytes and an optional `chat_template.jinja` text. `dir` names the source in errors.
    pub fn from_parts(tokenizer_json: &[u8], config_json: Option<&[u8]>, chat_template: Option<String>, dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| Error::Tokenizer { context: tok_path.display().to_string(), message: e.to_string() })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Option<TokenizerConfig> = match config_json {
            Some(bytes) => {
                let de = &mut serde_json::Deserializer::from_slice(bytes);
                Some(serde_path_to_error::deserialize(de).map_err(|e| {
                    let field = e.path().to_string();
                    Error::Config { path: cfg_path.clone(), field, message: e.into_inner().to_string() }
                })?)
            }
            None => None,
        };
        let cfg_ref = cfg.clone().unwrap_or_default();
        let bos_token = cfg_ref.bos_token.as_ref().map(|t| t.text().to_string());
        let eos_token = cfg_ref.eos_token.as_ref().map(|t| t.text().to_string());
        let id_of = |tok: &Option<String>, field: &str| -> Result<Option<u32>> {
            match tok {
                Some(t) => inner.token_to_id(t).map(Some).ok_or_else(|| Error::Config {
                    path: cfg_path.clone(),
                    field: field.to_string(),
                    message: format!("token {t:?} is not in tokenizer.json"),
                }),
                None => Ok(None),
            }
        };
        let bos_id = id_of(&bos_token, "bos_token")?;
        let eos_id = id_of(&eos_token, "eos_token")?;
        let specials_from_config = cfg.as_ref().map(|c| {
            (
                if c.add_bos_token.unwrap_or(false) { bos_id } else { None },
                if c.add_eos_token.unwrap_or(false) { eos_id } else { None },
            )
        });
        // A template in chat_template.jinja wins over one in tokenizer_config.json, as in transformers.
        let (checkpoint_template, template_origin) = match (chat_template, cfg_ref.chat_template) {
            (Some(t), _) => (Some(t), dir.join("chat_template.jinja").display().to_string()),
            (None, Some(serde_json::Value::String(t))) => (Some(t), format!("{} chat_template", cfg_path.display())),
            (None, Some(serde_json::Value::Array(list))) => {
                let default = list.iter().find(|v| v.get("name").and_then(|n| n.as_str()) == Some("default"));
                let t = default.and_then(|v| v.get("template")).and_then(|t| t.as_str()).map(str::to_string);
                (t, format!("{} chat_template[default]", cfg_path.display()))
            }
            _ => (None, "built-in original DeepSeek-R1-Distill template".to_string()),
        };
        let mut added: Vec<String> = inner.get_added_tokens_decoder().into_iter().map(|(_, t)| t.content).filter(|t| !t.is_empty()).collect();
        added.sort();
        added.dedup();
        Ok(Tokenizer { inner, added, specials_from_config, bos_token, eos_token, checkpoint_template, template_origin })
    }

    /// Token ids of `text`. With `add_special_tokens`, BOS/EOS are added as `tokenizer_config.json`
    /// says (`add_bos_token`, `add_eos_token`), or as `tokenizer.json`'s post-processor does when
    /// there is no config, matching transformers.
    ///
    /// Text between [`TEXT_START`] and [`TEXT_END`] (conversation text that holds the text of an
    /// added token, marked so by [`Tokenizer::apply_chat_template`]) is encoded with every added
    /// token read as plain text; the marks themselves give no tokens.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        if !text.contains([TEXT_START, TEXT_END]) {
            return self.encode_whole(text, add_special_tokens);
        }
        let mut ids = Vec::new();
        let mut plain = false;
        let mut rest = text;
        loop {
            let (piece, mark, after) = match rest.find([TEXT_START, TEXT_END]) {
                Some(i) => {
                    let mark = rest[i..].chars().next().unwrap_or(TEXT_END);
                    (&rest[..i], Some(mark), &rest[i + mark.len_utf8()..])
                }
                None => (rest, None, ""),
            };
            if !piece.is_empty() {
                ids.extend(if plain { self.encode_plain(piece)? } else { self.encode_whole(piece, false)? });
            }
            match mark {
                Some(m) => plain = m == TEXT_START,
                None => break,
            }
            rest = after;
        }
        if add_special_tokens {
            self.add_config_specials(&mut ids);
        }
        Ok(ids)
    }

    /// BOS/EOS around `ids` as `tokenizer_config.json` says (nothing without a config).
    fn add_config_specials(&self, ids: &mut Vec<u32>) {
        if let Some((bos, eos)) = self.specials_from_config {
            if let Some(b) = bos {
                ids.insert(0, b);
            }
            if let Some(e) = eos {
                ids.push(e);
            }
        }
    }

    fn encode_whole(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let use_post = add_special_tokens && self.specials_from_config.is_none();
        let enc = self
            .inner
            .encode(text, use_post)
            .map_err(|e| Error::Tokenizer { context: "encode".into(), message: e.to_string() })?;
        let mut ids = enc.get_ids().to_vec();
        if add_special_tokens {
            self.add_config_specials(&mut ids);
        }
        Ok(ids)
    }

    /// `text` through the normalizer, the pre-tokenizer and the model, with no added token
    /// recognised: `<｜Assistant｜>` becomes the tokens of its characters.
    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        use tokenizers::{Model, Normalizer, OffsetType, PreTokenizedString, PreTokenizer};
        let err = |e: tokenizers::Error| Error::Tokenizer { context: "encode".into(), message: e.to_string() };
        let mut pre = PreTokenizedString::from(text);
        if let Some(n) = self.inner.get_normalizer() {
            pre.normalize(|s| n.normalize(s)).map_err(err)?;
        }
        if let Some(p) = self.inner.get_pre_tokenizer() {
            p.pre_tokenize(&mut pre).map_err(err)?;
        }
        let model = self.inner.get_model();
        pre.tokenize(|s| model.tokenize(s.get())).map_err(err)?;
        Ok(pre.into_encoding(None, 0, OffsetType::Byte).map_err(err)?.get_ids().to_vec())
    }

    /// About how many tokens `text` holds, without tokenizing a long text whole: it is encoded in
    /// pieces of about 64 KiB (cut before a whitespace where there is one), and counting stops
    /// once more than `limit` are found. The count is a lower bound of the whole text's up to
    /// one token per cut, so a result over `limit` means the text has more than `limit` tokens.
    /// Memory stays that of one piece, whatever the text's length.
    pub fn count_tokens_bounded(&self, text: &str, limit: usize) -> Result<usize> {
        const PIECE: usize = 64 << 10;
        if text.len() <= 4 * PIECE {
            return Ok(self.encode(text, false)?.len());
        }
        let (mut count, mut cuts, mut rest) = (0usize, 0usize, text);
        while !rest.is_empty() {
            let mut end = rest.len().min(PIECE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            if end < rest.len() {
                // Cut before a whitespace in the piece's last quarter, if any.
                if let Some(ws) = rest[end - end / 4..end].rfind(char::is_whitespace) {
                    end = end - end / 4 + ws;
                }
                if end == 0 {
                    end = rest.ceil_char_boundary(1);
                }
            }
            count += self.encode(&rest[..end], false)?.len();
            rest = &rest[end..];
            if !rest.is_empty() {
                cuts += 1;
            }
            if count.saturating_sub(cuts) > limit {
                break;
            }
        }
        Ok(count.saturating_sub(cuts))
    }

    /// Whether `text` holds the text of one of the tokenizer's added tokens.
    pub fn contains_added_token(&self, text: &str) -> bool {
        self.added.iter().any(|t| text.contains(t.as_str()))
    }

    /// Text of `ids`, special tokens included unless `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer { context: "decode".into(), message: e.to_string() })
    }

    /// A streaming decoder: feed ids one by one, get text pieces that never split a character.
    /// With `skip_special_tokens`, tokens marked special (BOS, EOS, ...) give no text.
    pub fn decode_stream(&self, skip_special_tokens: bool) -> TextStream<'_> {
        TextStream { inner: self.inner.decode_stream(skip_special_tokens) }
    }

    /// The id of a token string, e.g. `<｜User｜>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id of the last token of `text` encoded alone, as GenPRM finds "Yes"/"No"
    /// (`tokenizer.encode(text)[-1]`).
    pub fn last_token_id(&self, text: &str) -> Result<u32> {
        self.encode(text, false)?.last().copied().ok_or_else(|| Error::Tokenizer {
            context: format!("encode {text:?}"),
            message: "no tokens".into(),
        })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The BOS token string from `tokenizer_config.json`.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The EOS token string from `tokenizer_config.json`.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Renders a conversation with the chosen chat template, as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` does.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool, choice: TemplateChoice) -> Result<String> {
        let (source, origin) = match (choice, &self.checkpoint_template) {
            (TemplateChoice::Checkpoint, Some(t)) => (t.as_str(), self.template_origin.as_str()),
            (TemplateChoice::Checkpoint, None) | (TemplateChoice::Original, _) => {
                (DEEPSEEK_TEMPLATE_ORIGINAL, "built-in original DeepSeek-R1-Distill template")
            }
            (TemplateChoice::Think, _) => (DEEPSEEK_TEMPLATE_THINK, "built-in DeepSeek-R1-Distill <think> template"),
        };
        // Conversation text that spells an added token is marked, so that `encode` reads it as
        // plain text (and no text can forge the marks).
        let mut marked = None;
        // Only user turns are marked: they carry the student's text, while the template may cut
        // assistant turns (at `</think>`) and would split a mark from its pair.
        if messages.iter().any(|m| m.content.contains([TEXT_START, TEXT_END]) || (m.role == "user" && self.contains_added_token(&m.content))) {
            marked = Some(
                messages
                    .iter()
                    .map(|m| {
                        let clean = strip_text_marks(&m.content).into_owned();
                        let content =
                            if m.role == "user" && self.contains_added_token(&clean) { format!("{TEXT_START}{clean}{TEXT_END}") } else { clean };
                        ChatMessage { role: m.role.clone(), content }
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let messages = marked.as_deref().unwrap_or(messages);
        render_template(source, origin, messages, add_generation_prompt, self.bos_token(), self.eos_token())
    }

    /// Renders a conversation and encodes it. The template already writes BOS, so no special
    /// tokens are added again: the ids start with exactly one BOS.
    pub fn encode_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool, choice: TemplateChoice) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, add_generation_prompt, choice)?;
        self.encode(&text, false)
    }
}

/// Incremental detokenization (see [`Tokenizer::decode_stream`]).
pub struct TextStream<'a> {
    inner: tokenizers::DecodeStream<'a, tokenizers::ModelWrapper, tokenizers::NormalizerWrapper, tokenizers::PreTokenizerWrapper, tokenizers::PostProcessorWrapper, tokenizers::DecoderWrapper>,
}

impl TextStream<'_> {
    /// Feeds one id; returns the text it completes (possibly empty while a character is partial).
    pub fn step(&mut self, id: u32) -> Result<String> {
        self.inner
            .step(id)
            .map(Option::unwrap_or_default)
            .map_err(|e| Error::Tokenizer { context: "decode".into(), message: e.to_string() })
    }
}

/// Renders a Hugging Face chat template with the settings transformers uses (trim_blocks,
/// lstrip_blocks, Python string methods, `raise_exception`).
pub fn render_template(
    source: &str,
    origin: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> Result<String> {
    let err = |e: minijinja::Error| Error::Template { origin: origin.to_string(), message: format!("{e:#}") };
    let mut env = Environment::new();
    // A checkpoint's template is untrusted code: it runs on a budget.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", source).map_err(err)?;
    let tmpl = env.get_template("chat").map_err(err)?;
    tmpl.render(context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token.unwrap_or(""),
        eos_token => eos_token.unwrap_or(""),
    })
    .map_err(err)
}
