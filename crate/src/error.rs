//! The library's error type: every failure names the file and the tensor or field it concerns.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A required file is missing from a model directory.
    #[error("{path}: file not found{hint}")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// Extra advice, starting with "; " or empty.
        hint: String,
    },
    /// A JSON file could not be parsed (syntax or a field of the wrong type).
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde said, with line and column.
        message: String,
    },
    /// A config field has a value the model cannot use.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The offending field.
        field: String,
        /// Why it is wrong.
        message: String,
    },
    /// A safetensors file is malformed or truncated.
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("{path}: tensor `{tensor}` not found in the checkpoint")]
    MissingTensor {
        /// The file (or index) that was searched.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
    },
    /// A tensor's shape disagrees with config.json.
    #[error("{path}: tensor `{tensor}` has shape {actual:?} but config.json implies {expected:?}")]
    Shape {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The shape config.json implies.
        expected: Vec<usize>,
        /// The shape in the file.
        actual: Vec<usize>,
    },
    /// A tensor is stored in a dtype the loader does not read.
    #[error("{path}: tensor `{tensor}` has dtype {dtype}, expected one of F32, F16, BF16")]
    Dtype {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor holds a NaN or infinite value (a damaged or mis-converted checkpoint): the model
    /// would compute no logits, and every judgement would silently be "no decision".
    #[error("{path}: tensor `{tensor}` holds a non-finite value ({value} at element {index}); the checkpoint is damaged")]
    NonFinite {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The element's index (row-major).
        index: usize,
        /// The value (NaN or ±inf).
        value: f32,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("{context}: {message}")]
    Tokenizer {
        /// The file or operation.
        context: String,
        /// The tokenizer library's message.
        message: String,
    },
    /// The chat template failed to parse or render.
    #[error("chat template ({origin}): {message}")]
    Template {
        /// Where the template came from.
        origin: String,
        /// The template engine's message.
        message: String,
    },
    /// A token id is outside the model's vocabulary.
    #[error("token id {id} at position {position} is out of range: the vocabulary has {vocab_size} entries")]
    TokenOutOfRange {
        /// The bad id.
        id: u32,
        /// Its position in the input.
        position: usize,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// The input is longer than the model's context window.
    #[error("{tokens} tokens exceed the model's context of {max} positions (max_position_embeddings)")]
    ContextOverflow {
        /// Tokens requested.
        tokens: usize,
        /// The limit.
        max: usize,
    },
    /// The KV cache of a batch would not fit one GPU buffer binding.
    #[error(
        "the KV cache of {rows} sequence(s) × {positions} positions needs {mib} MiB per layer, over the {limit_mib} MiB one GPU buffer binding may hold; judge with fewer samples (Maj@N) or shorter solutions, or use the CPU device"
    )]
    KvCacheTooLarge {
        /// Sequences (samples) in the batch.
        rows: usize,
        /// Positions per sequence.
        positions: usize,
        /// MiB one layer's keys would need.
        mib: usize,
        /// The limit in MiB.
        limit_mib: usize,
    },
    /// A generation or input argument is invalid.
    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument {
        /// The argument.
        name: &'static str,
        /// Why.
        message: String,
    },
    /// A solution to verify is malformed.
    #[error("{what}: {message}")]
    InvalidInput {
        /// The input (file, record).
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The code executor could not be started or used.
    #[error("code executor: {0}")]
    Exec(String),
    /// The compute device could not be created or failed.
    #[error("device: {0}")]
    Device(String),
    /// A GPU kernel disagreed with its CPU reference in the start-up self-check
    /// (`genprm::gpu_selfcheck`): in a browser, a shader that fails validation is skipped
    /// silently and leaves stale data, so the model would compute wrong rewards.
    #[error("the GPU kernel `{kernel}` gave wrong results on this adapter ({adapter}): max error {max_error} against its CPU reference, over the tolerance of {tolerance}; use the CPU device")]
    GpuKernel {
        /// The kernel and its mode (e.g. "q4 decode (cooperative)").
        kernel: String,
        /// The GPU adapter's name.
        adapter: String,
        /// The largest difference from the reference (infinite for NaN).
        max_error: f32,
        /// The largest difference allowed.
        tolerance: f32,
    },
    /// The caller cancelled the work (the browser's Cancel button, an aborted request).
    #[error("cancelled")]
    Cancelled,
    /// Work that stopped elsewhere (in the browser page, on a server), with its message as given.
    #[error("{0}")]
    Stopped(String),
    /// A remote completions server failed or answered something unusable.
    #[error("{url}: {message}")]
    Remote {
        /// The URL requested.
        url: String,
        /// The status and the start of the body, or the connection error.
        message: String,
    },
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`; a missing file becomes [`Error::MissingFile`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile { path, hint: String::new() }
        } else {
            Error::Io { path, source }
        }
    }

    /// A JSON error on `path`, keeping serde's line and column.
    pub fn json(path: impl Into<PathBuf>, err: &serde_json::Error) -> Self {
        Error::Json { path: path.into(), message: err.to_string() }
    }
}

impl From<genprm_quant::Error> for Error {
    fn from(e: genprm_quant::Error) -> Self {
        match e {
            genprm_quant::Error::InvalidArgument { name, message } => Error::InvalidArgument { name, message },
        }
    }
}
