//! Running the Python that GenPRM writes. A [`CodeExecutor`] keeps one interpreter namespace per
//! solution path; this module extracts the code block the official implementation would run
//! and formats the result into the exact `[Code Output]` text the model was trained on.
//!
//! Executors: [`native::PythonSandbox`] (a sandboxed `python3` process) natively; the browser
//! build implements the same contract with Pyodide in a Web Worker.
//!
//! May import: the error type only: the sandbox knows nothing of the model or the protocol.

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "macos")]
pub mod macos;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// The official per-run limit, in seconds.
pub const TIME_LIMIT_SECS: u64 = 5;

/// The most characters of one run's output that reach the model as `[Code Output]` (a
/// deviation from the official executor, which has no cap: a 2048-token step cannot use more,
/// and hostile code could otherwise print gigabytes for genprm to tokenize).
pub const OUTPUT_LIMIT_CHARS: usize = 8192;

/// What ends an output cut at [`OUTPUT_LIMIT_CHARS`].
pub const TRUNCATION_MARKER: &str = "\n[output truncated at 8192 characters]";

/// `text` cut to [`OUTPUT_LIMIT_CHARS`] characters, with [`TRUNCATION_MARKER`] when it was longer.
pub fn cap_output(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(OUTPUT_LIMIT_CHARS) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}{TRUNCATION_MARKER}", &text[..cut])),
    }
}

/// `text` safe to show on a terminal: control characters (escape sequences, clipboard writes,
/// screen clears, bells) removed, newlines and tabs kept.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if text.chars().any(unsafe_char) {
        std::borrow::Cow::Owned(text.chars().filter(|&c| !unsafe_char(c)).collect())
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// What running one code block gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ExecOutcome {
    /// It ran; what it printed to stdout (not yet stripped).
    Ok {
        /// Captured stdout.
        stdout: String,
    },
    /// It raised: the exception's type name and `str(e)`.
    Error {
        /// `type(e).__name__`.
        kind: String,
        /// `str(e)`.
        message: String,
    },
    /// It ran past the time limit (or raised `TimeoutError`, which the official executor treats
    /// the same way); `message` is `str(e)`, "Code execution timed out" for the limit itself.
    Timeout {
        /// The error text.
        message: String,
    },
}

impl ExecOutcome {
    /// The outcome of running past the time limit.
    pub fn timed_out() -> Self {
        ExecOutcome::Timeout { message: "Code execution timed out".to_string() }
    }

    /// The text GenPRM's official executor returns for this outcome, which goes between the
    /// code fences of `[Code Output]`, cut to [`OUTPUT_LIMIT_CHARS`] (see [`cap_output`]).
    pub fn official_text(&self) -> String {
        let text = match self {
            ExecOutcome::Ok { stdout } => python_strip(stdout).to_string(),
            ExecOutcome::Error { kind, message } => format!("Code execute Error: {kind}: {message}"),
            ExecOutcome::Timeout { message } => format!("Code execute time out: {message}"),
        };
        cap_output(&text).into_owned()
    }
}

/// The message when the text holds no complete python block.
pub const NO_CODE_FOUND: &str = "Code format error: No code found.";

/// Python's `str.strip()` (Unicode whitespace, as Rust's `trim`, plus the ASCII separators
/// Python also strips).
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || matches!(c, '\x1c'..='\x1f'))
}

static CODE_BLOCK: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"(?s)```python\s*(.*?)\s*```").expect("valid regex"));

/// The code the official executor would run for this text: the **last** complete
/// ```` ```python … ``` ```` block, stripped; `None` when there is none.
pub fn last_python_block(text: &str) -> Option<String> {
    CODE_BLOCK.captures_iter(text).last().map(|c| python_strip(&c[1]).to_string())
}

/// The `[Code Output]` section appended after a code block.
pub fn code_output_section(output: &str) -> String {
    format!("[Code Output]\n\n```\n{output}\n```\n")
}

/// Runs code for one solution path. Variables persist between runs until [`CodeExecutor::reset`].
#[allow(async_fn_in_trait)]
pub trait CodeExecutor {
    /// Runs one block with the official time limit.
    async fn run(&mut self, code: &str) -> ExecOutcome;
    /// Starts a fresh namespace (a new solution path).
    async fn reset(&mut self);
}

/// Finds the block to run in `text` and returns the official output text for it.
pub async fn execute_text<E: CodeExecutor + ?Sized>(executor: &mut E, text: &str) -> (Option<String>, String) {
    match last_python_block(text) {
        None => (None, NO_CODE_FOUND.to_string()),
        Some(code) => {
            let out = executor.run(&code).await.official_text();
            (Some(code), out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_last_complete_block() {
        let t = "```python\na = 1\n```\ntext\n```python\n  print(a)  \n```\n[Code Output]";
        assert_eq!(last_python_block(t).as_deref(), Some("print(a)"));
        assert_eq!(last_python_block("```python\nunclosed"), None);
        assert_eq!(last_python_block("no code"), None);
        // A block still open after a closed one: the closed one is what the regex finds last.
        let t = "```python\nx = 2\n```\n```python\ny = ";
        assert_eq!(last_python_block(t).as_deref(), Some("x = 2"));
    }

    #[test]
    fn official_messages() {
        assert_eq!(ExecOutcome::Ok { stdout: "  5050\n\n".into() }.official_text(), "5050");
        assert_eq!(
            ExecOutcome::Error { kind: "ZeroDivisionError".into(), message: "division by zero".into() }.official_text(),
            "Code execute Error: ZeroDivisionError: division by zero"
        );
        assert_eq!(ExecOutcome::timed_out().official_text(), "Code execute time out: Code execution timed out");
        assert_eq!(code_output_section("5"), "[Code Output]\n\n```\n5\n```\n");
        assert_eq!(code_output_section(""), "[Code Output]\n\n```\n\n```\n");
    }

    #[test]
    fn output_is_capped_with_a_visible_marker() {
        let long = "é".repeat(OUTPUT_LIMIT_CHARS + 5);
        let out = ExecOutcome::Ok { stdout: long.clone() }.official_text();
        assert_eq!(out, format!("{}{TRUNCATION_MARKER}", "é".repeat(OUTPUT_LIMIT_CHARS)));
        let exact = "x".repeat(OUTPUT_LIMIT_CHARS);
        assert_eq!(ExecOutcome::Ok { stdout: exact.clone() }.official_text(), exact);
        let err = ExecOutcome::Error { kind: "ValueError".into(), message: long }.official_text();
        assert!(err.ends_with(TRUNCATION_MARKER) && err.chars().count() == OUTPUT_LIMIT_CHARS + TRUNCATION_MARKER.chars().count());
    }

    #[test]
    fn terminal_safe_removes_escape_sequences() {
        let hostile = "ok\x1b]52;c;cHduZWQ=\x07\x1b[2J\r\u{9b}31m\tend\n";
        assert_eq!(terminal_safe(hostile), "ok]52;c;cHduZWQ=[2J31m\tend\n");
        assert!(matches!(terminal_safe("plain\ttext\n"), std::borrow::Cow::Borrowed(_)));
    }
}
