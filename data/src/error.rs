//! The one error type of `kiln-data`. Every variant carries what a user needs to act on it:
//! the file, what was expected and what was found.

use std::path::PathBuf;

/// Errors from data preparation, tokenization, shard files and loading.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing `path` failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A shard whose header does not start with llm.c's magic number.
    #[error("{path}: not a token shard (header magic {found}, expected {expected}); was it written by llm.c/kiln?")]
    BadMagic {
        path: PathBuf,
        found: i32,
        expected: i32,
    },

    /// A shard with a header version kiln does not read.
    #[error(
        "{path}: unsupported shard version {found} (kiln reads 1 = u16 tokens, 2 = u32 tokens)"
    )]
    BadVersion { path: PathBuf, found: i32 },

    /// A shard whose length does not match its header.
    #[error("{path}: shard is truncated or corrupt: expected {expected_bytes} bytes ({what}), the file has {actual_bytes} bytes")]
    Truncated {
        path: PathBuf,
        /// What the expected size is made of, e.g. "1024-byte header + 1000 u16 tokens".
        what: String,
        expected_bytes: u64,
        actual_bytes: u64,
    },

    /// A token id that does not fit the vocabulary (or the shard's token width).
    #[error("{path}: token {token} at position {index} is out of range for a vocabulary of {vocab_size}")]
    TokenOutOfRange {
        path: PathBuf,
        index: usize,
        token: u32,
        vocab_size: usize,
    },

    /// A failure inside the `tokenizers` library.
    #[error("tokenizer: {context}: {message}")]
    Tokenizer { context: String, message: String },

    /// The tokenizer lacks a token kiln needs (e.g. `<|endoftext|>`).
    #[error("tokenizer has no {token:?} token; add it to the tokenizer's special tokens")]
    MissingToken { token: String },

    /// A setting is invalid; `field` names it as the recipe spells it.
    #[error("invalid data setting `{field}`: {message}")]
    Config { field: String, message: String },

    /// There is too little data for the request.
    #[error("{what}: data has {tokens} tokens, need at least {needed}")]
    NotEnoughData {
        what: String,
        tokens: u64,
        needed: u64,
    },

    /// An input document file that cannot be read as its format says: a line that is not JSON,
    /// a missing text column, a corrupt parquet row group. `location` says where in the file.
    #[error("{path}{}: {message}", location.as_ref().map(|l| format!(" ({l})")).unwrap_or_default())]
    BadInput {
        path: PathBuf,
        location: Option<String>,
        message: String,
    },

    /// A data source's path pattern matched no files. `hint` says where such files come from.
    #[error("data source `{source_name}`: no input files match `{pattern}`{hint}")]
    NoInput {
        source_name: String,
        pattern: String,
        hint: String,
    },

    /// A JSON file (e.g. a preparation manifest) could not be read or written.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(field: &str, message: impl Into<String>) -> Self {
        DataError::Config {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A [`DataError::BadInput`] without a location inside the file.
    pub fn bad_input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::BadInput {
            path: path.into(),
            location: None,
            message: message.into(),
        }
    }

    pub(crate) fn tokenizer(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        DataError::Tokenizer {
            context: context.into(),
            message: err.to_string(),
        }
    }
}
