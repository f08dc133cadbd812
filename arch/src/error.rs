//! The one error type of `kiln-arch`.
//!
//! Every variant carries the data a user needs to fix the problem: the config key, the tensor
//! name, the expected and actual shapes, the file path.

use std::path::PathBuf;

/// Errors from config parsing/validation, HF tensor mapping and safetensors I/O.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// A required `config.json` key is absent.
    #[error("config key `{key}` is missing")]
    MissingConfigKey {
        /// The HF `config.json` key.
        key: String,
    },

    /// A config value is malformed or inconsistent with another one.
    #[error("config key `{key}`: {reason}")]
    InvalidConfig {
        /// The offending key (HF name where one exists).
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A config describes a model kiln cannot reproduce exactly (so loading it would be wrong).
    #[error("unsupported config: `{key}` = {value} ({reason})")]
    UnsupportedConfig {
        /// The offending key.
        key: String,
        /// Its value, as JSON.
        value: String,
        /// Why it is not supported.
        reason: String,
    },

    /// An expected tensor is absent from the checkpoint.
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor {
        /// HF tensor name.
        name: String,
    },

    /// A tensor has the wrong shape for the model config.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// HF tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },

    /// An [`crate::HfTensor`]'s data length disagrees with its own shape.
    #[error("tensor `{name}` has {len} values but shape {shape:?}")]
    DataLength {
        /// HF tensor name.
        name: String,
        /// Declared shape.
        shape: Vec<usize>,
        /// Number of values present.
        len: usize,
    },

    /// The checkpoint holds tensors the model does not have.
    #[error("unexpected tensors in the checkpoint (not part of this model): {names:?}")]
    UnexpectedTensors {
        /// HF names, sorted.
        names: Vec<String>,
    },

    /// Two tensors that must be equal are not: the two HF copies of a shared
    /// (MobileLLM-LS) block, or `lm_head.weight` vs the embedding in a tied model.
    #[error("tensors `{first}` and `{second}` must be identical ({reason}) but differ")]
    TiedTensorMismatch {
        /// First HF name.
        first: String,
        /// Second HF name.
        second: String,
        /// Why they must match.
        reason: &'static str,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A safetensors file is malformed (or could not be serialised).
    #[error("{path}: safetensors error: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The safetensors crate's message.
        message: String,
    },

    /// A safetensors tensor has a dtype kiln does not read.
    #[error("{path}: tensor `{name}` has dtype {dtype}; only F32, BF16 and F16 are supported")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
}

/// `Ok` when every `(key, value)` is positive, else [`ArchError::InvalidConfig`] naming the
/// first zero one: the common first check of the configs' `validate`.
pub(crate) fn check_positive(fields: &[(&str, usize)]) -> Result<(), ArchError> {
    match fields.iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err(ArchError::InvalidConfig {
            key: key.to_string(),
            reason: "must be positive".into(),
        }),
        None => Ok(()),
    }
}
