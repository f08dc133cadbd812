//! The recipe: one YAML file that describes a whole run. This is the only place its schema is defined.
//!
//! Every section rejects unknown keys; wrong types are errors that name the key path, the file and the
//! line. `--set a.b=value` overrides are applied to the parsed YAML before the typed parse, so they are
//! checked by exactly the same rules. Cross-field checks (`Recipe::validate`) name the keys involved.
//! Every field, its default and its meaning is documented in `recipes/README.md`.

use std::path::{Path, PathBuf};

use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use kiln_arch::{
    ArchError, ConfigKeys, HybridConfig, LlamaConfig, Mamba2Config, MambaConfig, ModelConfig,
};
use kiln_data::{DataConfig, DataError, TokenizerSpec};
use serde_json::Value as JsonValue;

/// A recipe error; always names the file and/or the key.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read recipe {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: key `{key}`: {message}")]
    Parse {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{origin}: not valid YAML: {message}")]
    Syntax { origin: String, message: String },
    #[error("--set {arg}: expected KEY=VALUE with a dotted key such as train.max_steps=20")]
    BadOverride { arg: String },
    #[error(
        "--set {arg}: the value is not valid YAML ({message}); quote text that contains YAML \
         syntax, e.g. --set 'eval.sample_prompt=\"[Once\"'"
    )]
    BadOverrideValue { arg: String, message: String },
    #[error("--set {arg}: {message}")]
    BadOverrideIndex { arg: String, message: String },
    #[error(
        "--set {arg}: `{key}` is not a section (it holds a value), cannot set a key inside it"
    )]
    OverrideThroughValue { arg: String, key: String },
    #[error("recipe key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// A `kiln-data` settings error as a recipe error; `prefix` + its field is the recipe key.
fn data_invalid(prefix: &str, e: DataError) -> RecipeError {
    match e {
        DataError::Config { field, message } => invalid(&format!("{prefix}{field}"), message),
        other => invalid(prefix.trim_end_matches('.'), other.to_string()),
    }
}

fn invalid(key: &str, message: impl Into<String>) -> RecipeError {
    RecipeError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Run name; the default output directory is `checkpoints/<name>`.
    pub name: String,
    pub model: ModelSection,
    /// Sources, filters, dedup and mix: defined in `kiln_data::config`.
    pub data: DataConfig,
    pub tokenizer: TokenizerSpec,
    pub train: TrainSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub export: ExportSection,
    /// LoRA fine-tuning: adapters on the targeted layers, the base frozen. Absent: every
    /// parameter trains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSection>,
}

/// PEFT's `LoraConfig`, as a recipe section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// Rank of every adapter.
    pub r: usize,
    /// Scale numerator: the adapter's output is multiplied by `alpha / r` (`alpha / sqrt(r)`
    /// with `use_rslora`).
    pub alpha: f64,
    /// Dropout on the adapter's input (PEFT's `lora_dropout`); only 0 is implemented so far.
    #[serde(default)]
    pub dropout: f64,
    /// Which linear layers get an adapter: `all-linear` (every projection but the output head)
    /// or a list of names matched as PEFT matches them (`q_proj` matches every
    /// `….self_attn.q_proj`; `layers.0.mlp.up_proj` one layer).
    pub target_modules: TargetModules,
    /// rsLoRA (Kalajdzievski 2023): scale `alpha / sqrt(r)`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Init of `A` (`B` starts at 0 either way, so the adapted model starts as the base):
    /// `kaiming` (PEFT's default, uniform ±1/sqrt(in)) or `gaussian` (normal, std 1/r).
    #[serde(default)]
    pub init: LoraInitKind,
}

/// `lora.target_modules`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TargetModules {
    /// `all-linear`.
    Keyword(String),
    /// Module names.
    Names(Vec<String>),
}

impl std::fmt::Display for TargetModules {
    /// As written in the recipe: `all-linear` or `[q_proj, v_proj]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keyword(k) => write!(f, "{k}"),
            Self::Names(names) => write!(f, "[{}]", names.join(", ")),
        }
    }
}

/// `lora.init`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoraInitKind {
    #[default]
    Kaiming,
    Gaussian,
}

impl LoraSection {
    /// Checks every key; errors name it (`lora.r`).
    pub fn validate(&self) -> Result<(), RecipeError> {
        if self.r == 0 {
            return Err(invalid("lora.r", "must be at least 1"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(invalid("lora.alpha", format!("{} must be > 0", self.alpha)));
        }
        if self.dropout != 0.0 {
            return Err(invalid(
                "lora.dropout",
                format!(
                    "{}: dropout on the adapters is not implemented yet; set 0.0",
                    self.dropout
                ),
            ));
        }
        match &self.target_modules {
            TargetModules::Keyword(k) if k != "all-linear" => Err(invalid(
                "lora.target_modules",
                format!("`{k}`: give `all-linear` or a list of module names"),
            )),
            TargetModules::Names(names)
                if names.is_empty() || names.iter().any(String::is_empty) =>
            {
                Err(invalid(
                    "lora.target_modules",
                    "needs at least one module name (or `all-linear`)",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The adapter plan the model is built with; `seed` draws the `A` factors.
    pub fn plan(&self, seed: u64) -> kiln_arch::AdapterPlan {
        let targets = match &self.target_modules {
            TargetModules::Keyword(_) => kiln_arch::Targets::AllLinear,
            TargetModules::Names(names) => kiln_arch::Targets::Names(names.clone()),
        };
        kiln_arch::AdapterPlan {
            lora: Some(kiln_arch::LoraPlan {
                rank: self.r,
                alpha: self.alpha,
                use_rslora: self.use_rslora,
                targets,
                seed,
                init: match self.init {
                    LoraInitKind::Kaiming => kiln_arch::LoraInit::Kaiming,
                    LoraInitKind::Gaussian => kiln_arch::LoraInit::Gaussian,
                },
            }),
            fake_quant: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Llama / SmolLM / MobileLLM decoder (GQA attention, SwiGLU, RMSNorm, RoPE).
    Llama,
    /// Mamba-1 selective state-space model (exports as `MambaForCausalLM`).
    Mamba,
    /// Mamba-2 (SSD) state-space model (exports as `Mamba2ForCausalLM`).
    Mamba2,
    /// Mamba-1 and attention layers (no RoPE), each followed by a SwiGLU MLP, as Jamba
    /// (exports as `JambaForCausalLM` with one expert).
    Hybrid,
}

impl std::fmt::Display for Arch {
    /// The recipe's spelling (`llama`, `mamba`, `mamba2`, `hybrid`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arch::Llama => "llama",
            Arch::Mamba => "mamba",
            Arch::Mamba2 => "mamba2",
            Arch::Hybrid => "hybrid",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub arch: Arch,
    /// Vocabulary size. Default: the tokenizer's vocabulary size.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    pub d_model: usize,
    /// Number of unique blocks (with `layer_sharing`, the effective depth is twice this).
    pub n_layers: usize,
    /// Attention heads (llama; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_heads: Option<usize>,
    /// Key/value heads for grouped-query attention. Default: `n_heads` (plain multi-head attention).
    #[serde(default)]
    pub n_kv_heads: Option<usize>,
    /// Llama: attention head size, default `d_model / n_heads`. Mamba-2: SSM head size
    /// (`head_dim`; heads = `expand · d_model / head_dim`), default 64.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// SwiGLU hidden size (llama; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn_hidden: Option<usize>,
    /// Context length the model is built for (llama: RoPE table size, `max_position_embeddings`;
    /// required there). A Mamba model has no positional limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<usize>,
    /// RoPE base (llama). Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// SSM state size N per channel (mamba). Default 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_size: Option<usize>,
    /// Inner width = `expand · d_model` (mamba). Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand: Option<usize>,
    /// Depthwise causal convolution width (mamba). Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_kernel: Option<usize>,
    /// Rank of the step-size projection (mamba; `time_step_rank`). Default `ceil(d_model / 16)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dt_rank: Option<usize>,
    /// Hybrid: layer `i` is attention when `i % attn_every == attn_offset` (Jamba's
    /// `attn_layer_period`), Mamba otherwise. Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_every: Option<usize>,
    /// Hybrid: see `attn_every` (`attn_layer_offset`, < `attn_every`). Default `attn_every / 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_offset: Option<usize>,
    /// Mamba-2: groups sharing B and C (`n_groups`). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_groups: Option<usize>,
    /// Mamba-2: positions per SSD chunk (`chunk_size`). Default 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<usize>,
    /// RMSNorm epsilon (`rms_norm_eps` / `layer_norm_epsilon`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_eps: Option<f64>,
    /// The output head shares the embedding matrix (`tie_word_embeddings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_embeddings: Option<bool>,
    /// MobileLLM-LS immediate block-wise sharing: each block is applied twice in a row.
    #[serde(default)]
    pub layer_sharing: bool,
    /// Standard deviation of the normal init of every linear layer and the embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_std: Option<f64>,
    /// Divide the init std of the residual branches' output projections by the square root of
    /// the depth: llama `o_proj`/`down_proj` by sqrt(2 · effective layers) (GPT-2); mamba
    /// `out_proj` by sqrt(layers) (`rescale_prenorm_residual`, as `mamba_ssm` trains).
    #[serde(default)]
    pub scaled_residual_init: bool,
    /// Start from these weights: a kiln export or a Hugging Face Llama directory
    /// (`config.json` + `model.safetensors`). The architecture comes from its `config.json`.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn's fast CPU backend (default).
    Flex,
    /// NVIDIA GPUs; needs a binary built with `--features cuda`.
    Cuda,
    /// Vulkan/Metal/DX12 GPUs; needs a binary built with `--features wgpu`.
    Wgpu,
}

/// Training numerics (`train.precision`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in f32.
    F32,
    /// f32 master weights and optimizer state; matmuls and activations in bf16; norm statistics,
    /// the residual stream, logits and the loss in f32 (what PyTorch's bf16 autocast does).
    Bf16Mixed,
    /// Weights and activations in bf16; the optimizer keeps f32 moments and computes the update
    /// in f32, then rounds the weight to bf16.
    Bf16,
}

impl Precision {
    /// `(parameter dtype, compute dtype)` for [`kiln_arch::Model::with_precision`].
    pub fn dtypes(self) -> (FloatDType, FloatDType) {
        match self {
            Self::F32 => (FloatDType::F32, FloatDType::F32),
            Self::Bf16Mixed => (FloatDType::F32, FloatDType::BF16),
            Self::Bf16 => (FloatDType::BF16, FloatDType::BF16),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    #[serde(default = "default_backend")]
    pub backend: BackendKind,
    #[serde(default = "default_precision")]
    pub precision: Precision,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Optimizer steps. One of `max_steps` / `max_tokens` is required; with both, the first reached ends.
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Token budget (tokens per step = micro_batch_size · grad_accum_steps · seq_len · world size).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    pub micro_batch_size: usize,
    #[serde(default = "default_one")]
    pub grad_accum_steps: usize,
    pub seq_len: usize,
    /// Required to train (see [`Recipe::check_trainable`]); data preparation does without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerSection>,
    /// Required to train, like `optimizer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSection>,
    /// Global-norm gradient clipping (PyTorch `clip_grad_norm_`); `null` disables it.
    #[serde(default = "default_grad_clip")]
    pub grad_clip: Option<f64>,
    #[serde(default = "default_log_every")]
    pub log_every_steps: u64,
    /// CPU threads for the flex backend. Default: all cores.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Peak FLOP/s of one device used for MFU. Default on CPU: the threads' f32 FMA rate, measured
    /// at start-up (`cpu_peak.rs`); on a GPU unknown unless set.
    #[serde(default)]
    pub peak_flops: Option<f64>,
    /// Per-block activation checkpointing: keep only each block's input during the forward pass
    /// and recompute the block in the backward pass (one extra forward, much less memory).
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// What a step whose loss or gradient norm is NaN or infinite does. Either way its update is
    /// not applied, and no checkpoint or export with non-finite values is ever written.
    #[serde(default)]
    pub on_nonfinite: OnNonFinite,
}

/// `train.on_nonfinite`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNonFinite {
    /// End the run with an error naming the step and the last checkpoint (default).
    #[default]
    Stop,
    /// Drop that step's update, log it and go on; [`MAX_CONSECUTIVE_SKIPS`] in a row stop the run.
    SkipStep,
}

/// Consecutive skipped steps after which `skip_step` gives up (the weights are not recovering).
pub const MAX_CONSECUTIVE_SKIPS: u64 = 16;

fn default_backend() -> BackendKind {
    BackendKind::Flex
}
fn default_precision() -> Precision {
    Precision::F32
}
fn default_seed() -> u64 {
    1337
}
fn default_one() -> usize {
    1
}
fn default_grad_clip() -> Option<f64> {
    Some(1.0)
}
fn default_log_every() -> u64 {
    10
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerSection {
    /// AdamW with PyTorch semantics (decoupled weight decay). Norm weights are never decayed.
    Adamw {
        lr: f64,
        #[serde(default = "default_betas")]
        betas: [f64; 2],
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default = "default_weight_decay")]
        weight_decay: f64,
        /// Apply weight decay to the embedding too.
        #[serde(default = "default_true")]
        decay_embeddings: bool,
    },
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.95]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.1
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DecayShape {
    Linear,
    /// `lr · (1 - sqrt(progress))`, as SmolLM's nanotron config.
    OneMinusSqrt,
    Cosine,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleSection {
    /// Linear warmup, then constant.
    Constant {
        #[serde(default)]
        warmup_steps: u64,
    },
    /// Linear warmup, then cosine decay to `min_lr_ratio · lr` at the last step.
    Cosine {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default = "default_min_lr_ratio")]
        min_lr_ratio: f64,
    },
    /// Warmup-stable-decay: warmup, constant, then decay to `min_lr_ratio · lr` over the last
    /// `decay_steps` (or `decay_fraction` of the run).
    Wsd {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        decay_steps: Option<u64>,
        #[serde(default)]
        decay_fraction: Option<f64>,
        #[serde(default = "default_decay_shape")]
        decay_shape: DecayShape,
        #[serde(default)]
        min_lr_ratio: f64,
    },
}

fn default_min_lr_ratio() -> f64 {
    0.1
}
fn default_decay_shape() -> DecayShape {
    DecayShape::Linear
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Validation every N steps (and at the end); 0 disables periodic evaluation.
    #[serde(default = "default_eval_every")]
    pub every_steps: u64,
    /// Validation batches (of `train.micro_batch_size × train.seq_len`) per evaluation.
    #[serde(default = "default_eval_batches")]
    pub batches: usize,
    /// Generations sampled at each evaluation.
    #[serde(default = "default_eval_samples")]
    pub samples: usize,
    /// Prompt of those generations (after the end-of-text token).
    #[serde(default = "default_prompt")]
    pub sample_prompt: String,
    #[serde(default = "default_sample_tokens")]
    pub sample_max_new_tokens: usize,
    #[serde(default = "default_temperature")]
    pub sample_temperature: f64,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            every_steps: default_eval_every(),
            batches: default_eval_batches(),
            samples: default_eval_samples(),
            sample_prompt: default_prompt(),
            sample_max_new_tokens: default_sample_tokens(),
            sample_temperature: default_temperature(),
        }
    }
}

fn default_eval_every() -> u64 {
    200
}
fn default_eval_batches() -> usize {
    8
}
fn default_eval_samples() -> usize {
    1
}
fn default_prompt() -> String {
    "Once upon a time".to_string()
}
fn default_sample_tokens() -> usize {
    64
}
fn default_temperature() -> f64 {
    0.8
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Checkpoint every N steps (and at the end, and on Ctrl-C); 0 disables periodic checkpoints.
    #[serde(default = "default_ckpt_every")]
    pub every_steps: u64,
    /// Keep the newest N checkpoints; 0 keeps all.
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        Self {
            every_steps: default_ckpt_every(),
            keep_last: default_keep_last(),
        }
    }
}

fn default_ckpt_every() -> u64 {
    500
}
fn default_keep_last() -> usize {
    2
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExportDtype {
    F32,
    Bf16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    /// Export to `<run>/export/` at the end of training.
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_export_dtype")]
    pub dtype: ExportDtype,
    /// Greedy sample printed after the export (empty string: none).
    #[serde(default = "default_prompt")]
    pub sample_prompt: String,
    #[serde(default = "default_export_sample_tokens")]
    pub sample_max_new_tokens: usize,
}

impl Default for ExportSection {
    fn default() -> Self {
        Self {
            enabled: true,
            dtype: default_export_dtype(),
            sample_prompt: default_prompt(),
            sample_max_new_tokens: default_export_sample_tokens(),
        }
    }
}

fn default_export_dtype() -> ExportDtype {
    ExportDtype::F32
}
fn default_export_sample_tokens() -> usize {
    120
}

impl Recipe {
    /// Reads a recipe file, applies `--set` overrides, parses and validates it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string(), overrides)
    }

    /// Parses recipe text. `origin` names the file in error messages.
    pub fn from_yaml(
        text: &str,
        origin: &str,
        overrides: &[String],
    ) -> Result<Recipe, RecipeError> {
        // YAML syntax first (bad indentation, an unclosed bracket): its error has the line, and
        // reading such a file as a recipe would only report a confusing type or missing key.
        let mut value: Value = serde_yaml_ng::from_str(text).map_err(|e| RecipeError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        // The file as written, so that errors carry its line numbers.
        let as_written = parse_typed(serde_yaml_ng::Deserializer::from_str(text), origin);
        let recipe = if overrides.is_empty() {
            as_written?
        } else {
            for arg in overrides {
                apply_override(&mut value, arg)?;
            }
            let with_origin = format!("{origin} (after --set {})", overrides.join(" --set "));
            match parse_typed(value, &with_origin) {
                Ok(recipe) => recipe,
                // The same key is wrong in the file itself: that error points at its line.
                Err(e) => {
                    return Err(match as_written {
                        Err(file_error) if parse_key(&file_error) == parse_key(&e) => file_error,
                        _ => e,
                    })
                }
            }
        };
        recipe.validate()?;
        Ok(recipe)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a recipe always serialises")
    }

    /// Cross-field checks; each error names the key to change.
    pub fn validate(&self) -> Result<(), RecipeError> {
        let m = &self.model;
        let t = &self.train;
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            return Err(invalid("name", "must be a non-empty name without slashes"));
        }
        for (key, value) in [
            ("model.d_model", m.d_model),
            ("model.n_layers", m.n_layers),
            ("train.micro_batch_size", t.micro_batch_size),
            ("train.grad_accum_steps", t.grad_accum_steps),
            ("train.seq_len", t.seq_len),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        self.validate_model()?;
        if let Some(lora) = &self.lora {
            lora.validate()?;
            if m.init_from.is_none() {
                return Err(invalid(
                    "lora",
                    "adapts a trained model: set model.init_from to its directory (a kiln export \
                     or a Hugging Face model)",
                ));
            }
        }
        if t.log_every_steps == 0 {
            return Err(invalid("train.log_every_steps", "must be at least 1"));
        }
        if t.threads == Some(0) {
            return Err(invalid("train.threads", "must be at least 1"));
        }
        if let Some(p) = t.peak_flops {
            if p <= 0.0 || !p.is_finite() {
                return Err(invalid(
                    "train.peak_flops",
                    "must be a positive FLOP/s figure",
                ));
            }
        }
        if let Some(c) = t.grad_clip {
            if c <= 0.0 || !c.is_finite() {
                return Err(invalid(
                    "train.grad_clip",
                    "must be positive (or null to disable)",
                ));
            }
        }
        if let Some(OptimizerSection::Adamw {
            lr,
            betas,
            eps,
            weight_decay,
            ..
        }) = &t.optimizer
        {
            if !(*lr > 0.0 && lr.is_finite()) {
                return Err(invalid("train.optimizer.lr", "must be a positive number"));
            }
            if betas.iter().any(|b| !(0.0..1.0).contains(b)) {
                return Err(invalid(
                    "train.optimizer.betas",
                    "each beta must be in [0, 1)",
                ));
            }
            if *eps <= 0.0 {
                return Err(invalid("train.optimizer.eps", "must be positive"));
            }
            if *weight_decay < 0.0 {
                return Err(invalid("train.optimizer.weight_decay", "must be >= 0"));
            }
        }
        match &t.schedule {
            Some(ScheduleSection::Cosine { min_lr_ratio, .. })
            | Some(ScheduleSection::Wsd { min_lr_ratio, .. })
                if !(0.0..=1.0).contains(min_lr_ratio) =>
            {
                return Err(invalid("train.schedule.min_lr_ratio", "must be in [0, 1]"));
            }
            Some(ScheduleSection::Wsd {
                decay_steps,
                decay_fraction,
                ..
            }) => match (decay_steps, decay_fraction) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        "train.schedule.decay_steps",
                        "a wsd schedule needs exactly one of decay_steps / decay_fraction",
                    ))
                }
                (None, Some(f)) if !(0.0..=1.0).contains(f) => {
                    return Err(invalid(
                        "train.schedule.decay_fraction",
                        "must be in [0, 1]",
                    ))
                }
                _ => {}
            },
            _ => {}
        }
        self.data.validate().map_err(|e| data_invalid("data.", e))?;
        self.tokenizer.validate().map_err(|e| data_invalid("", e))?;
        if let (TokenizerSpec::TrainBpe { vocab_size, .. }, Some(v)) =
            (&self.tokenizer, m.vocab_size)
        {
            if v < *vocab_size {
                return Err(invalid(
                    "model.vocab_size",
                    format!("{v} is smaller than tokenizer.vocab_size = {vocab_size}"),
                ));
            }
        }
        if self.eval.every_steps > 0 && self.eval.batches == 0 {
            return Err(invalid(
                "eval.batches",
                "must be at least 1 when eval.every_steps > 0",
            ));
        }
        if self.eval.sample_temperature < 0.0 {
            return Err(invalid("eval.sample_temperature", "must be >= 0"));
        }
        Ok(())
    }

    /// What training needs beyond [`Recipe::validate`] (data preparation does not): an optimizer,
    /// a schedule and a length (`max_steps` or `max_tokens`).
    pub fn check_trainable(&self) -> Result<(), RecipeError> {
        let t = &self.train;
        self.optimizer()?;
        self.schedule()?;
        if t.max_steps.is_none() && t.max_tokens.is_none() {
            return Err(invalid(
                "train.max_steps",
                "set train.max_steps or train.max_tokens",
            ));
        }
        for (key, value) in [
            ("train.max_steps", t.max_steps),
            ("train.max_tokens", t.max_tokens),
        ] {
            if value == Some(0) {
                return Err(invalid(
                    key,
                    "is 0: there would be nothing to train (to only prepare data, run `train data`)",
                ));
            }
        }
        Ok(())
    }

    /// The adapters a LoRA run trains and the base they adapt: `model.init_from`, or its base
    /// when it is a PEFT adapter directory (continuing that adapter), absolute when it exists;
    /// `None` without a `lora:` section.
    pub fn adapter(&self) -> Option<crate::model_io::Adapter> {
        let (lora, init) = (self.lora.as_ref()?, self.model.init_from.as_ref()?);
        let base = crate::model_io::adapter_base(init).unwrap_or_else(|| init.clone());
        let base = &base;
        let plan = lora.plan(self.train.seed).lora?;
        Some(crate::model_io::Adapter {
            plan,
            base_dir: std::fs::canonicalize(base).unwrap_or_else(|_| base.clone()),
        })
    }

    /// `train.optimizer`, or the error that training needs one.
    pub fn optimizer(&self) -> Result<&OptimizerSection, RecipeError> {
        self.train.optimizer.as_ref().ok_or_else(|| {
            invalid(
                "train.optimizer",
                "is missing: training needs one, e.g. {type: adamw, lr: 3.0e-4}",
            )
        })
    }

    /// `train.schedule`, or the error that training needs one.
    pub fn schedule(&self) -> Result<&ScheduleSection, RecipeError> {
        self.train.schedule.as_ref().ok_or_else(|| {
            invalid(
                "train.schedule",
                "is missing: training needs one, e.g. {type: cosine, warmup_steps: 100}",
            )
        })
    }

    /// The architecture-specific keys of `model` (and the training options an architecture
    /// does not support yet).
    fn validate_model(&self) -> Result<(), RecipeError> {
        let m = &self.model;
        let t = &self.train;
        let required = |key: &str, v: Option<usize>| match v {
            None => Err(invalid(
                &format!("model.{key}"),
                format!("is required for arch {}", m.arch),
            )),
            Some(0) => Err(invalid(&format!("model.{key}"), "must be at least 1")),
            Some(v) => Ok(v),
        };
        let not_for = |key: &str, set: bool| {
            if set {
                Err(invalid(
                    &format!("model.{key}"),
                    format!("does not apply to arch {}", m.arch),
                ))
            } else {
                Ok(())
            }
        };
        // Values every architecture reads; checked here so that a typo fails before data
        // preparation, naming the recipe key (not the Hugging Face one).
        if let Some(eps) = m.norm_eps.filter(|e| !(e.is_finite() && *e > 0.0)) {
            return Err(invalid(
                "model.norm_eps",
                format!("{eps} must be a finite number > 0, e.g. 1.0e-5"),
            ));
        }
        if let Some(std) = m.init_std.filter(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(invalid(
                "model.init_std",
                format!("{std} must be a finite number >= 0, e.g. 0.02"),
            ));
        }
        if let Some(theta) = m.rope_theta {
            if !(theta.is_finite() && theta > 1.0) {
                return Err(invalid(
                    "model.rope_theta",
                    format!("{theta} must be a finite number > 1, e.g. 10000"),
                ));
            }
        }
        match m.arch {
            Arch::Llama => {
                let n_heads = required("n_heads", m.n_heads)?;
                required("ffn_hidden", m.ffn_hidden)?;
                let max_seq_len = required("max_seq_len", m.max_seq_len)?;
                not_for("state_size", m.state_size.is_some())?;
                not_for("expand", m.expand.is_some())?;
                not_for("conv_kernel", m.conv_kernel.is_some())?;
                not_for("dt_rank", m.dt_rank.is_some())?;
                not_for("attn_every", m.attn_every.is_some())?;
                not_for("attn_offset", m.attn_offset.is_some())?;
                not_for("n_groups", m.n_groups.is_some())?;
                not_for("chunk_size", m.chunk_size.is_some())?;
                let n_kv = m.n_kv_heads.unwrap_or(n_heads);
                if n_kv == 0 || !n_heads.is_multiple_of(n_kv) {
                    return Err(invalid(
                        "model.n_kv_heads",
                        format!("{n_kv} must divide model.n_heads = {n_heads}"),
                    ));
                }
                if m.head_dim.is_none() && !m.d_model.is_multiple_of(n_heads) {
                    return Err(invalid(
                        "model.head_dim",
                        format!(
                            "not set, and model.d_model = {} is not divisible by model.n_heads = {n_heads}",
                            m.d_model
                        ),
                    ));
                }
                if !m.head_dim.unwrap_or(m.d_model / n_heads).is_multiple_of(2) {
                    return Err(invalid(
                        "model.head_dim",
                        "must be even (RoPE rotates pairs)",
                    ));
                }
                if t.seq_len > max_seq_len {
                    return Err(invalid(
                        "train.seq_len",
                        format!(
                            "{} is longer than model.max_seq_len = {max_seq_len}",
                            t.seq_len
                        ),
                    ));
                }
            }
            Arch::Mamba | Arch::Mamba2 | Arch::Hybrid => {
                let hybrid = m.arch == Arch::Hybrid;
                let mamba2 = m.arch == Arch::Mamba2;
                if hybrid {
                    let n_heads = required("n_heads", m.n_heads)?;
                    required("ffn_hidden", m.ffn_hidden)?;
                    let n_kv = m.n_kv_heads.unwrap_or(n_heads);
                    if n_kv == 0 || !n_heads.is_multiple_of(n_kv) {
                        return Err(invalid(
                            "model.n_kv_heads",
                            format!("{n_kv} must divide model.n_heads = {n_heads}"),
                        ));
                    }
                    if let Some(ctx) = m.max_seq_len.filter(|&c| t.seq_len > c) {
                        return Err(invalid(
                            "train.seq_len",
                            format!("{} is longer than model.max_seq_len = {ctx}", t.seq_len),
                        ));
                    }
                }
                for (key, set) in [
                    ("n_heads", !hybrid && m.n_heads.is_some()),
                    ("n_kv_heads", !hybrid && m.n_kv_heads.is_some()),
                    ("ffn_hidden", !hybrid && m.ffn_hidden.is_some()),
                    ("max_seq_len", !hybrid && m.max_seq_len.is_some()),
                    ("attn_every", !hybrid && m.attn_every.is_some()),
                    ("attn_offset", !hybrid && m.attn_offset.is_some()),
                    ("head_dim", !mamba2 && m.head_dim.is_some()),
                    ("n_groups", !mamba2 && m.n_groups.is_some()),
                    ("chunk_size", !mamba2 && m.chunk_size.is_some()),
                    ("dt_rank", mamba2 && m.dt_rank.is_some()),
                    ("rope_theta", m.rope_theta.is_some()),
                    ("layer_sharing", m.layer_sharing),
                ] {
                    not_for(key, set)?;
                }
                if m.init_from.is_none() {
                    self.model_config(m.vocab_size.unwrap_or(256))?;
                }
            }
        }
        Ok(())
    }

    /// Tokens consumed by one optimizer step across `world_size` data-parallel workers.
    pub fn tokens_per_step(&self, world_size: usize) -> u64 {
        (self.train.micro_batch_size
            * self.train.grad_accum_steps
            * self.train.seq_len
            * world_size) as u64
    }

    /// The number of optimizer steps of the run (the first of max_steps / max_tokens reached).
    pub fn total_steps(&self, world_size: usize) -> u64 {
        let by_tokens = self
            .train
            .max_tokens
            .map(|t| t.div_ceil(self.tokens_per_step(world_size)));
        match (self.train.max_steps, by_tokens) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            // Only a recipe that passed `check_trainable` is trained; one without a length
            // (data preparation only) has no steps.
            (None, None) => 0,
        }
    }

    /// The architecture config for a fresh model, given the tokenizer's vocabulary size.
    ///
    /// The recipe's keys go under their `config.json` names to the architecture's `from_keys`, so
    /// a key the recipe leaves out takes the architecture's default, the same as in a
    /// `config.json` without it (transformers' default). Two recipe rules stand on top:
    /// `n_kv_heads` defaults to `n_heads` and `attn_offset` to `attn_every / 2`.
    pub fn model_config(&self, tokenizer_vocab: usize) -> Result<ModelConfig, RecipeError> {
        let m = &self.model;
        let vocab_size = m.vocab_size.unwrap_or(tokenizer_vocab);
        if vocab_size < tokenizer_vocab {
            return Err(invalid(
                "model.vocab_size",
                format!(
                    "{vocab_size} is smaller than the tokenizer's vocabulary ({tokenizer_vocab})"
                ),
            ));
        }
        let keys = model_keys(m, vocab_size);
        let config_keys = ConfigKeys::new(
            keys.iter()
                .filter_map(|(_, hf, value)| Some((hf.to_string(), value.clone()?)))
                .collect(),
        );
        let config = match m.arch {
            Arch::Llama => LlamaConfig::from_keys(config_keys).map(ModelConfig::Llama),
            Arch::Mamba => MambaConfig::from_keys(config_keys).map(ModelConfig::Mamba),
            Arch::Mamba2 => Mamba2Config::from_keys(config_keys).map(ModelConfig::Mamba2),
            Arch::Hybrid => HybridConfig::from_keys(config_keys).map(ModelConfig::Hybrid),
        };
        // The error names config.json keys: say which recipe keys they are.
        config.map_err(|e| {
            let (hf_key, reason) = match &e {
                ArchError::InvalidConfig { key, reason } => (Some(key.as_str()), reason.clone()),
                ArchError::MissingConfigKey { key } => (Some(key.as_str()), "is required".into()),
                _ => (None, e.to_string()),
            };
            let recipe_key = keys
                .iter()
                .find(|(_, hf, _)| Some(*hf) == hf_key)
                .map_or("model".to_string(), |(key, _, _)| format!("model.{key}"));
            invalid(&recipe_key, in_recipe_terms(&reason, &keys))
        })
    }
}

/// `text` with every config.json key of `keys` (as a whole word) replaced by its recipe key.
fn in_recipe_terms(text: &str, keys: &[(&str, &str, Option<JsonValue>)]) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_word) {
        out.push_str(&rest[..start]);
        let word_len = rest[start..]
            .find(|c: char| !is_word(c))
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        match keys.iter().find(|(_, hf, _)| *hf == word) {
            Some((recipe, _, _)) => out.push_str(&format!("model.{recipe}")),
            None => out.push_str(word),
        }
        rest = &rest[start + word_len..];
    }
    out.push_str(rest);
    out
}

/// `(recipe key, config.json key, value if set)` of every model key of `m`'s architecture.
fn model_keys(
    m: &ModelSection,
    vocab_size: usize,
) -> Vec<(&'static str, &'static str, Option<JsonValue>)> {
    let n = |x: Option<usize>| x.map(JsonValue::from);
    let f = |x: Option<f64>| x.map(JsonValue::from);
    let b = |x: Option<bool>| x.map(JsonValue::from);
    let mut keys = vec![
        (
            "vocab_size",
            "vocab_size",
            Some(JsonValue::from(vocab_size)),
        ),
        ("d_model", "hidden_size", Some(JsonValue::from(m.d_model))),
        (
            "n_layers",
            "num_hidden_layers",
            Some(JsonValue::from(m.n_layers)),
        ),
        ("tie_embeddings", "tie_word_embeddings", b(m.tie_embeddings)),
        ("init_std", "initializer_range", f(m.init_std)),
    ];
    let n_kv_heads = m.n_kv_heads.or(m.n_heads);
    let attn_offset = m.attn_offset.or(m.attn_every.map(|every| every / 2));
    let scaled = Some(JsonValue::from(m.scaled_residual_init));
    keys.extend(match m.arch {
        Arch::Llama => vec![
            ("ffn_hidden", "intermediate_size", n(m.ffn_hidden)),
            ("n_heads", "num_attention_heads", n(m.n_heads)),
            ("n_kv_heads", "num_key_value_heads", n(n_kv_heads)),
            ("head_dim", "head_dim", n(m.head_dim)),
            ("max_seq_len", "max_position_embeddings", n(m.max_seq_len)),
            ("rope_theta", "rope_theta", f(m.rope_theta)),
            ("norm_eps", "rms_norm_eps", f(m.norm_eps)),
            (
                "layer_sharing",
                "layer_sharing",
                Some(JsonValue::from(m.layer_sharing)),
            ),
            (
                "scaled_residual_init",
                "scaled_residual_init",
                scaled.clone(),
            ),
        ],
        Arch::Mamba => vec![
            ("state_size", "state_size", n(m.state_size)),
            ("expand", "expand", n(m.expand)),
            ("conv_kernel", "conv_kernel", n(m.conv_kernel)),
            ("dt_rank", "time_step_rank", n(m.dt_rank)),
            ("norm_eps", "layer_norm_epsilon", f(m.norm_eps)),
            (
                "scaled_residual_init",
                "rescale_prenorm_residual",
                scaled.clone(),
            ),
        ],
        Arch::Mamba2 => vec![
            ("state_size", "state_size", n(m.state_size)),
            ("expand", "expand", n(m.expand)),
            ("head_dim", "head_dim", n(m.head_dim)),
            ("n_groups", "n_groups", n(m.n_groups)),
            ("conv_kernel", "conv_kernel", n(m.conv_kernel)),
            ("chunk_size", "chunk_size", n(m.chunk_size)),
            ("norm_eps", "layer_norm_epsilon", f(m.norm_eps)),
            (
                "scaled_residual_init",
                "rescale_prenorm_residual",
                scaled.clone(),
            ),
        ],
        Arch::Hybrid => vec![
            ("ffn_hidden", "intermediate_size", n(m.ffn_hidden)),
            ("n_heads", "num_attention_heads", n(m.n_heads)),
            ("n_kv_heads", "num_key_value_heads", n(n_kv_heads)),
            ("attn_every", "attn_layer_period", n(m.attn_every)),
            ("attn_offset", "attn_layer_offset", n(attn_offset)),
            ("state_size", "mamba_d_state", n(m.state_size)),
            ("conv_kernel", "mamba_d_conv", n(m.conv_kernel)),
            ("expand", "mamba_expand", n(m.expand)),
            ("dt_rank", "mamba_dt_rank", n(m.dt_rank)),
            ("norm_eps", "rms_norm_eps", f(m.norm_eps)),
            ("max_seq_len", "max_position_embeddings", n(m.max_seq_len)),
        ],
    });
    keys
}

fn parse_key(e: &RecipeError) -> Option<&str> {
    match e {
        RecipeError::Parse { key, .. } => Some(key),
        _ => None,
    }
}

fn parse_typed<'de, D: serde::Deserializer<'de>>(de: D, origin: &str) -> Result<Recipe, RecipeError>
where
    D::Error: std::fmt::Display,
{
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        RecipeError::Parse {
            origin: origin.to_string(),
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// Applies one `a.b.c=value` override; the value is parsed as YAML (`4`, `1e-3`, `true`, `[0.9, 0.95]`).
pub fn apply_override(root: &mut Value, arg: &str) -> Result<(), RecipeError> {
    let bad = || RecipeError::BadOverride {
        arg: arg.to_string(),
    };
    let (key, raw) = arg.split_once('=').ok_or_else(bad)?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(bad());
    }
    let value: Value = serde_yaml_ng::from_str(raw).map_err(|e| RecipeError::BadOverrideValue {
        arg: arg.to_string(),
        message: e.to_string(),
    })?;
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        // A list item by position: data.sources.0.weight=2.
        if node.is_sequence() {
            let list = node.as_sequence_mut().expect("checked above");
            let len = list.len();
            let index_error = |what: &str| RecipeError::BadOverrideIndex {
                arg: arg.to_string(),
                message: format!(
                    "`{}` is a list of {len} items: {what} (address an item by its position, \
                     from 0, e.g. {}.0.weight=2; or replace the whole list, e.g. {}='[...]')",
                    parts[..i].join("."),
                    parts[..i].join("."),
                    parts[..i].join(".")
                ),
            };
            let index: usize = part
                .parse()
                .map_err(|_| index_error(&format!("`{part}` is not a position")))?;
            let item = list
                .get_mut(index)
                .ok_or_else(|| index_error(&format!("there is no item {index}")))?;
            if i + 1 == parts.len() {
                *item = value;
                return Ok(());
            }
            node = item;
            continue;
        }
        if !node.is_mapping() {
            if node.is_null() {
                *node = Value::Mapping(Default::default());
            } else {
                return Err(RecipeError::OverrideThroughValue {
                    arg: arg.to_string(),
                    key: parts[..i].join("."),
                });
            }
        }
        let map = node.as_mapping_mut().expect("checked above");
        let k = Value::String(part.to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map.entry(k).or_insert(Value::Null);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const TINY: &str = r#"
name: tiny
model:
  arch: llama
  d_model: 32
  n_layers: 2
  n_heads: 4
  n_kv_heads: 2
  ffn_hidden: 64
  max_seq_len: 64
data:
  sources:
    - type: synthetic_stories
      tokens: 20000
tokenizer:
  type: train_bpe
  vocab_size: 300
train:
  max_steps: 10
  micro_batch_size: 2
  seq_len: 32
  optimizer: {type: adamw, lr: 1e-3}
  schedule: {type: cosine, warmup_steps: 2}
"#;

    fn err(text: &str, overrides: &[&str]) -> String {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Recipe::from_yaml(text, "r.yaml", &o)
            .unwrap_err()
            .to_string()
    }

    /// A model key left out of a recipe means what it means left out of the architecture's
    /// `config.json`: a recipe with only the required keys gives the config transformers' reader
    /// would give for a `config.json` with only those keys (and so the same defaults).
    #[test]
    fn recipe_defaults_are_the_architectures() {
        let cases = [
            (
                "arch: llama\n  d_model: 64\n  n_layers: 2\n  n_heads: 4\n  ffn_hidden: 96\n  max_seq_len: 64",
                serde_json::json!({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "intermediate_size": 96, "max_position_embeddings": 64}),
            ),
            (
                "arch: mamba\n  d_model: 64\n  n_layers: 2",
                serde_json::json!({"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2}),
            ),
            (
                // Transformers' 8 groups need a head count they divide: 2 · 256 / 64 = 8 heads.
                "arch: mamba2\n  d_model: 256\n  n_layers: 2",
                serde_json::json!({"model_type": "mamba2", "hidden_size": 256, "num_hidden_layers": 2,
                    "num_heads": 8, "head_dim": 64}),
            ),
            (
                "arch: hybrid\n  d_model: 64\n  n_layers: 8\n  n_heads: 4\n  ffn_hidden: 96",
                serde_json::json!({"model_type": "jamba", "hidden_size": 64, "num_hidden_layers": 8,
                    "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 96,
                    "num_experts": 1}),
            ),
        ];
        for (model, mut hf) in cases {
            let text = TINY.replace(
                "arch: llama\n  d_model: 32\n  n_layers: 2\n  n_heads: 4\n  n_kv_heads: 2\n  ffn_hidden: 64\n  max_seq_len: 64",
                model,
            );
            let text = text.replace("seq_len: 32", "seq_len: 16");
            let recipe = Recipe::from_yaml(&text, "r.yaml", &[]).unwrap();
            hf["vocab_size"] = 300.into();
            let from_recipe = recipe.model_config(300).unwrap();
            assert_eq!(
                from_recipe,
                ModelConfig::from_hf_config(&hf).unwrap(),
                "{model}"
            );
            // ... which are transformers' defaults, e.g.:
            match from_recipe {
                ModelConfig::Llama(c) => {
                    assert_eq!((c.rms_norm_eps, c.tie_word_embeddings), (1e-6, false));
                    assert_eq!((c.rope_theta, c.initializer_range), (10000.0, 0.02));
                }
                ModelConfig::Mamba(c) => {
                    assert_eq!((c.layer_norm_epsilon, c.initializer_range), (1e-5, 0.1));
                    assert_eq!((c.state_size, c.time_step_rank), (16, 4));
                    assert!(c.tie_word_embeddings);
                }
                ModelConfig::Mamba2(c) => {
                    assert_eq!((c.n_groups, c.state_size, c.chunk_size), (8, 128, 256));
                    assert!(!c.tie_word_embeddings);
                }
                ModelConfig::Hybrid(c) => {
                    assert_eq!((c.attn_layer_period, c.attn_layer_offset), (8, 4));
                    assert_eq!((c.rms_norm_eps, c.max_position_embeddings), (1e-6, 262144));
                    assert!(!c.tie_word_embeddings);
                }
            }
        }
        // An arch error names the recipe key: Mamba-2's default 8 groups do not divide 2 heads.
        let text = TINY.replace(
            "arch: llama\n  d_model: 32\n  n_layers: 2\n  n_heads: 4\n  n_kv_heads: 2\n  ffn_hidden: 64\n  max_seq_len: 64",
            "arch: mamba2\n  d_model: 64\n  n_layers: 2",
        );
        let e = err(&text, &[]);
        assert!(e.contains("model.n_groups"), "{e}");
    }

    #[test]
    fn tiny_recipe_parses_with_defaults() {
        let r = Recipe::from_yaml(TINY, "r.yaml", &[]).unwrap();
        assert_eq!(r.train.grad_accum_steps, 1);
        assert_eq!(r.train.grad_clip, Some(1.0));
        assert_eq!(r.train.seed, 1337);
        assert_eq!(r.model.n_kv_heads, Some(2));
        assert_eq!(r.model.tie_embeddings, None);
        assert_eq!(r.checkpoint.every_steps, 500);
        assert_eq!(r.total_steps(1), 10);
        // The resolved recipe round-trips through YAML unchanged.
        let again = Recipe::from_yaml(&r.to_yaml(), "again.yaml", &[]).unwrap();
        assert_eq!(r, again);
    }

    #[test]
    fn overrides_apply_with_types() {
        let o = [
            "train.max_steps=20".to_string(),
            "model.n_layers=4".into(),
            "train.optimizer.lr=3e-4".into(),
            "train.optimizer.betas=[0.8, 0.99]".into(),
            "eval.every_steps=5".into(),
        ];
        let r = Recipe::from_yaml(TINY, "r.yaml", &o).unwrap();
        assert_eq!(r.train.max_steps, Some(20));
        assert_eq!(r.model.n_layers, 4);
        assert_eq!(r.eval.every_steps, 5);
        let OptimizerSection::Adamw { lr, betas, .. } = r.train.optimizer.clone().unwrap();
        assert_eq!(lr, 3e-4);
        assert_eq!(betas, [0.8, 0.99]);
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let text = TINY.replace("  n_heads: 4\n", "  n_heads: 4\n  n_layerz: 3\n");
        let e = err(&text, &[]);
        assert!(e.contains("r.yaml"), "{e}");
        assert!(e.contains("n_layerz"), "{e}");
        assert!(e.contains("line 8"), "{e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = err(&TINY.replace("n_layers: 2", "n_layers: two"), &[]);
        assert!(
            e.contains("model.n_layers") && e.contains("invalid type"),
            "{e}"
        );
    }

    #[test]
    fn unknown_override_key_is_an_error() {
        let e = err(TINY, &["train.max_stepz=3"]);
        assert!(e.contains("max_stepz") && e.contains("--set"), "{e}");
        let e = err(TINY, &["train.max_steps"]);
        assert!(e.contains("KEY=VALUE"), "{e}");
        let e = err(TINY, &["name.x=3"]);
        assert!(e.contains("not a section"), "{e}");
        let e = err(TINY, &["train.max_steps=ten"]);
        assert!(e.contains("train.max_steps"), "{e}");
    }

    #[test]
    fn yaml_syntax_errors_come_first_with_their_line() {
        // Bad indentation: a key at a deeper level than its siblings.
        let text = TINY.replace("  n_heads: 4\n", "     n_heads: 4\n");
        let e = err(&text, &[]);
        assert!(e.contains("not valid YAML") && e.contains("line 7"), "{e}");
        // An unclosed flow sequence.
        let text = TINY.replace("seq_len: 32", "seq_len: [32");
        let e = err(&text, &["train.max_steps=3"]);
        assert!(e.contains("not valid YAML") && e.contains("line"), "{e}");
        assert!(!e.contains("missing field"), "{e}");
    }

    #[test]
    fn override_values_and_list_items() {
        let e = err(TINY, &["train.optimizer.betas=[0.9, 0.95"]);
        assert!(e.contains("not valid YAML") && e.contains("betas"), "{e}");
        let o = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
        let r = Recipe::from_yaml(
            TINY,
            "r.yaml",
            &o(&["data.sources.0.tokens=1234", "data.sources.0.weight=2"]),
        )
        .unwrap();
        assert_eq!(r.data.sources[0].tokens, Some(1234));
        assert_eq!(r.data.sources[0].weight, 2.0);
        let e = err(TINY, &["data.sources.3.tokens=1"]);
        assert!(
            e.contains("data.sources") && e.contains("list of 1 items") && e.contains("no item 3"),
            "{e}"
        );
        let e = err(TINY, &["data.sources.first.tokens=1"]);
        assert!(e.contains("not a position"), "{e}");
        // A type error in an item names it by position.
        let e = err(TINY, &["data.sources.0.tokens=many"]);
        assert!(e.contains("data.sources[0].tokens"), "{e}");
    }

    /// Values that used to panic after data preparation (llama) or train to NaN (state-space
    /// models) are refused at load, naming the recipe key.
    #[test]
    fn model_values_are_checked_at_load_for_every_architecture() {
        for (key, bad) in [
            ("model.norm_eps", "0"),
            ("model.norm_eps", "-1"),
            ("model.init_std", "-1"),
            ("model.init_std", ".nan"),
            ("model.rope_theta", "1"),
            ("model.rope_theta", "-5"),
        ] {
            let e = err(TINY, &[&format!("{key}={bad}")]);
            assert!(
                e.contains(&format!("recipe key `{key}`")),
                "{key}={bad}: {e}"
            );
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes");
        for name in [
            "tinystories-mamba2.yaml",
            "tinystories-hybrid.yaml",
            "tinystories-mamba.yaml",
        ] {
            for (key, bad) in [("model.norm_eps", "-1"), ("model.init_std", "-1")] {
                let e = Recipe::load(&root.join(name), &[format!("{key}={bad}")])
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains(&format!("recipe key `{key}`")),
                    "{name} {key}: {e}"
                );
            }
        }
    }

    #[test]
    fn zero_length_runs_are_refused() {
        for key in ["train.max_steps", "train.max_tokens"] {
            let o = vec![format!("{key}=0")];
            let e = Recipe::from_yaml(TINY, "r.yaml", &o)
                .unwrap()
                .check_trainable()
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("nothing to train"), "{e}");
        }
    }

    #[test]
    fn missing_section_is_named() {
        let text = TINY.replace("name: tiny\n", "");
        let e = err(&text, &[]);
        assert!(e.contains("missing field `name`"), "{e}");
    }

    #[test]
    fn cross_field_checks_name_the_key() {
        assert!(err(TINY, &["train.seq_len=128"]).contains("train.seq_len"));
        assert!(err(TINY, &["model.n_kv_heads=3"]).contains("model.n_kv_heads"));
        assert!(err(TINY, &["model.vocab_size=100"]).contains("model.vocab_size"));
        assert!(err(TINY, &["train.optimizer.lr=-1"]).contains("train.optimizer.lr"));
        assert!(err(TINY, &["train.micro_batch_size=0"]).contains("train.micro_batch_size"));
        assert!(err(TINY, &["train.schedule={type: wsd}"]).contains("decay_steps"));
        assert!(
            err(TINY, &["tokenizer.special_tokens=[\"<s>\"]"]).contains("tokenizer.special_tokens")
        );
    }

    /// Data preparation needs no optimizer, schedule or length; training names what it misses.
    #[test]
    fn training_sections_are_checked_only_for_training() {
        let trainable = |overrides: &[&str]| {
            let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            Recipe::from_yaml(TINY, "r.yaml", &o)
                .expect("loads without the training sections")
                .check_trainable()
                .map_err(|e| e.to_string())
        };
        assert!(trainable(&[]).is_ok());
        let e = trainable(&["train.max_steps=null"]).unwrap_err();
        assert!(e.contains("train.max_steps"), "{e}");
        let e = trainable(&["train.optimizer=null"]).unwrap_err();
        assert!(
            e.contains("train.optimizer") && e.contains("missing"),
            "{e}"
        );
        let e = trainable(&["train.schedule=null"]).unwrap_err();
        assert!(e.contains("train.schedule") && e.contains("missing"), "{e}");
    }

    #[test]
    fn token_budget_sets_steps() {
        let r = Recipe::from_yaml(
            TINY,
            "r.yaml",
            &[
                "train.max_steps=null".into(),
                "train.max_tokens=1000".into(),
            ],
        )
        .unwrap();
        // 2 × 1 × 32 = 64 tokens per step on one worker → ceil(1000 / 64) = 16 steps.
        assert_eq!(r.total_steps(1), 16);
        assert_eq!(r.total_steps(2), 8);
    }

    #[test]
    fn model_config_follows_tokenizer_vocab() {
        let r = Recipe::from_yaml(TINY, "r.yaml", &[]).unwrap();
        let ModelConfig::Llama(c) = r.model_config(300).unwrap() else {
            panic!("a llama recipe")
        };
        assert_eq!(c.vocab_size, 300);
        assert_eq!(c.head_dim, 8);
        assert_eq!(c.num_key_value_heads, 2);
        assert!(r.model_config(400).is_ok()); // vocab from the tokenizer
        let r = Recipe::from_yaml(TINY, "r.yaml", &["model.vocab_size=320".into()]).unwrap();
        assert!(r
            .model_config(330)
            .unwrap_err()
            .to_string()
            .contains("model.vocab_size"));
    }
}
