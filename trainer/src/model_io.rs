//! Loading and exporting whole models: Hugging Face-style directories (`config.json` + `model.safetensors`
//! + `tokenizer.json`) and kiln checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use kiln_arch::{
    read_safetensors, write_safetensors, HfModel, Model, ModelConfig, SafetensorsDtype,
};
use kiln_data::TextTokenizer;
use serde_json::json;

use crate::checkpoint;
use crate::params::load_named_tensors;

/// A model with its config and (when the directory has one) its tokenizer.
pub struct LoadedModel<B: Backend> {
    pub config: ModelConfig,
    pub model: Model<B>,
    pub tokenizer: Option<TextTokenizer>,
    pub dir: PathBuf,
}

impl<B: Backend> LoadedModel<B> {
    /// The directory's tokenizer, or an error naming the directory that lacks one.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.tokenizer
            .as_ref()
            .with_context(|| format!("{} has no tokenizer.json", self.dir.display()))
    }
}

fn read_hf_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (a model directory needs config.json)",
            path.display()
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    ModelConfig::from_hf_config(&value)
        .with_context(|| format!("unsupported model config {}", path.display()))
}

fn read_tokenizer(dir: &Path) -> Result<Option<TextTokenizer>> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(TextTokenizer::from_file(&path).with_context(
        || format!("cannot load tokenizer {}", path.display()),
    )?))
}

/// Loads a model directory: a kiln export, a Hugging Face Llama checkpoint, or a kiln checkpoint
/// (`<run>/ckpt/step-NNNNNN`). A run directory means its latest checkpoint.
pub fn load_model_dir<B: Backend>(dir: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    // A run directory: use its newest checkpoint.
    if dir.join("ckpt").is_dir() && !dir.join("config.json").is_file() {
        let newest = checkpoint::newest_intact(dir).map_err(|damaged| match damaged.intact {
            Some(intact) => anyhow::anyhow!(
                "{}; the newest intact checkpoint is {}: name it instead of the run directory",
                damaged.error,
                intact.display()
            ),
            None => anyhow::anyhow!(
                "{}; no checkpoint of {} verifies",
                damaged.error,
                dir.display()
            ),
        })?;
        let newest =
            newest.with_context(|| format!("{} has no checkpoint under ckpt/", dir.display()))?;
        return load_dir(&newest.dir.clone(), Some(newest), device);
    }
    load_dir(dir, None, device)
}

/// [`load_model_dir`] on a model or checkpoint directory; `verified` when the caller has already
/// checked the checkpoint's files.
fn load_dir<B: Backend>(
    dir: &Path,
    verified: Option<checkpoint::Verified>,
    device: &B::Device,
) -> Result<LoadedModel<B>> {
    let config = read_hf_config(dir)?;
    let tokenizer = read_tokenizer(dir)?;
    if let Some(tok) = &tokenizer {
        // A tokenizer whose ids do not fit the model's embedding is a mismatch worth stopping for.
        if tok.vocab_size() > config.vocab_size() {
            bail!(
                "{}: tokenizer.json has {} tokens but the model's vocab_size is {}: tokenizer and model do not match",
                dir.display(),
                tok.vocab_size(),
                config.vocab_size()
            );
        }
    }
    let fresh: Model<B> = config.init(device);
    let model = if dir.join("state.json").is_file() {
        let ckpt = match verified {
            Some(verified) => verified.load()?,
            None => checkpoint::load(dir)?,
        };
        load_named_tensors(
            fresh,
            &ckpt.model,
            &dir.join("model.safetensors").display().to_string(),
        )?
    } else {
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            if dir.join("model.safetensors.index.json").is_file() {
                bail!(
                    "{}: sharded safetensors checkpoints are not supported yet; merge them into model.safetensors",
                    dir.display()
                );
            }
            bail!(
                "{} is missing (a model directory needs model.safetensors)",
                weights.display()
            );
        }
        let tensors = read_safetensors(&weights)?;
        fresh
            .load_hf_tensors(&tensors)
            .with_context(|| format!("loading {}", weights.display()))?
    };
    Ok(LoadedModel {
        config,
        model,
        tokenizer,
        dir: dir.to_path_buf(),
    })
}

/// The files an export directory holds ([`export_model`]); a directory with only these (and at
/// least `config.json`) is an export, which `train export` may overwrite.
const EXPORT_FILES: [&str; 5] = [
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

/// Refuses an export target that would destroy something: a checkpoint (`state.json`), a run
/// directory (`ckpt/`, `metrics.jsonl`), or any other non-empty directory that is not an export,
/// unless `force`. An absent or empty directory, or an earlier export, is fine.
pub fn check_export_target(out: &Path, force: bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(()); // absent (or unreadable: creating it reports that)
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() || force {
        return Ok(());
    }
    let has = |n: &str| names.iter().any(|x| x == n);
    let what = if has("state.json") {
        "is a training checkpoint (it has state.json): exporting into it would overwrite its \
         model and config, and the run could no longer resume from it"
            .to_string()
    } else if has("ckpt") || has("metrics.jsonl") {
        "is a run directory (it has ckpt/ or metrics.jsonl)".to_string()
    } else if has("config.json") && names.iter().all(|n| EXPORT_FILES.contains(&n.as_str())) {
        return Ok(()); // an earlier export: replaced
    } else {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        format!(
            "is not empty and not an export (it holds {})",
            shown.join(", ")
        )
    };
    bail!(
        "--out {} {what}; choose another directory, or pass --force to write into it anyway",
        out.display()
    )
}

/// Writes `model.safetensors`, `config.json`, `generation_config.json`, `tokenizer.json` and
/// `tokenizer_config.json` so that `transformers`' `AutoModelForCausalLM` / `AutoTokenizer` load the
/// directory as it is.
pub fn export_model<B: Backend>(
    model: &Model<B>,
    config: &ModelConfig,
    tokenizer: &TextTokenizer,
    out: &Path,
    dtype: SafetensorsDtype,
) -> Result<()> {
    let eot = tokenizer.eot_id()?;
    let torch_dtype = match dtype {
        SafetensorsDtype::F32 => "float32",
        SafetensorsDtype::Bf16 => "bfloat16",
    };
    let tensors = model.to_hf_tensors();
    if let Some(bad) = crate::params::first_nonfinite(&tensors) {
        bail!(
            "not exporting to {}: `{bad}` has non-finite values",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_safetensors(out.join("model.safetensors"), &tensors, dtype)?;
    let cfg = config.to_hf_config(eot, eot, torch_dtype);
    write_json(&out.join("config.json"), &cfg)?;
    // A recurrent model has no context limit: `max_length` / `model_max_length` are left out
    // (transformers then uses its own defaults).
    let mut generation = json!({
        "bos_token_id": eot,
        "eos_token_id": eot,
        "do_sample": true,
        "temperature": 0.8,
        "top_k": 50,
    });
    if let Some(ctx) = config.max_seq_len() {
        generation["max_length"] = json!(ctx);
    }
    write_json(&out.join("generation_config.json"), &generation)?;
    tokenizer
        .save(out.join("tokenizer.json"))
        .with_context(|| format!("writing {}", out.join("tokenizer.json").display()))?;
    let mut tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": null,
        "add_bos_token": false,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(ctx) = config.max_seq_len() {
        tokenizer_config["model_max_length"] = json!(ctx);
    }
    write_json(&out.join("tokenizer_config.json"), &tokenizer_config)?;
    Ok(())
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
