//! Checkpoints: `<run>/ckpt/step-NNNNNN/` holding
//!
//! | file | content |
//! |---|---|
//! | `model.safetensors` | every parameter by name, burn layout, f32 |
//! | `optimizer.safetensors` | AdamW `exp_avg` / `exp_avg_sq` by parameter name |
//! | `state.json` | step, tokens seen, loader position, optimizer step, elapsed time, seeds |
//! | `config.json` | the model's Hugging Face config (what `train export` rebuilds the model from) |
//! | `recipe.yaml`, `tokenizer.json` | the resolved recipe and the tokenizer, so the directory stands alone |
//!
//! A checkpoint is written into `ckpt/.tmp-step-NNNNNN/` and renamed into place only when every file is
//! written and synced, so a crash (or a full disk) never leaves a directory that resume would pick up.
//! Older checkpoints are pruned only after the new one is in place.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_arch::{read_safetensors, write_safetensors, HfTensor, SafetensorsDtype};
use kiln_data::mix::MixState;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("writing checkpoint {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("reading checkpoint {path}: {message}")]
    Read { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Training tokens consumed (all workers).
    pub tokens: u64,
    /// Position in every data source (evaluation uses fixed batches, so it needs no state).
    pub loader: MixState,
    pub optimizer_step: u64,
    pub elapsed_s: f64,
    pub seed: u64,
    pub world_size: usize,
    pub kiln_version: String,
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub model: HashMap<String, HfTensor>,
    pub optimizer: HashMap<String, HfTensor>,
    pub state: TrainState,
    pub hf_config: serde_json::Value,
}

pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:06}")
}

pub struct CheckpointFiles<'a> {
    pub model: &'a [HfTensor],
    pub optimizer: &'a [HfTensor],
    pub state: &'a TrainState,
    pub hf_config: &'a serde_json::Value,
    pub recipe_yaml: &'a str,
    pub tokenizer_json: &'a Path,
}

/// Writes a complete checkpoint atomically and prunes to the newest `keep_last` (0 keeps all).
pub fn save(
    run_dir: &Path,
    files: &CheckpointFiles,
    keep_last: usize,
) -> Result<PathBuf, CheckpointError> {
    let root = run_dir.join("ckpt");
    let name = step_dir_name(files.state.step);
    let dir = root.join(&name);
    let tmp = root.join(format!(".tmp-{name}"));
    let err = |e: &dyn std::fmt::Display| CheckpointError::Write {
        path: dir.clone(),
        message: e.to_string(),
    };
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| err(&e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| err(&e))?;
    let result = (|| -> Result<(), String> {
        write_safetensors(
            tmp.join("model.safetensors"),
            files.model,
            SafetensorsDtype::F32,
        )
        .map_err(|e| e.to_string())?;
        write_safetensors(
            tmp.join("optimizer.safetensors"),
            files.optimizer,
            SafetensorsDtype::F32,
        )
        .map_err(|e| e.to_string())?;
        let state = serde_json::to_string_pretty(files.state).map_err(|e| e.to_string())?;
        fs::write(tmp.join("state.json"), state).map_err(|e| e.to_string())?;
        let cfg = serde_json::to_string_pretty(files.hf_config).map_err(|e| e.to_string())?;
        fs::write(tmp.join("config.json"), cfg).map_err(|e| e.to_string())?;
        fs::write(tmp.join("recipe.yaml"), files.recipe_yaml).map_err(|e| e.to_string())?;
        fs::copy(files.tokenizer_json, tmp.join("tokenizer.json")).map_err(|e| e.to_string())?;
        // Make the contents durable before the rename makes the checkpoint visible.
        for entry in fs::read_dir(&tmp).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    })();
    if let Err(message) = result {
        // Leave no partial directory behind (a full disk, say); earlier checkpoints are untouched.
        let _ = fs::remove_dir_all(&tmp);
        return Err(CheckpointError::Write { path: dir, message });
    }
    if dir.exists() {
        // Same step written again (e.g. Ctrl-C right after a periodic checkpoint): replace it.
        fs::remove_dir_all(&dir).map_err(|e| err(&e))?;
    }
    fs::rename(&tmp, &dir).map_err(|e| err(&e))?;
    if let Ok(d) = fs::File::open(&root) {
        let _ = d.sync_all();
    }
    if keep_last > 0 {
        let all = list(run_dir);
        for (_, old) in all.iter().take(all.len().saturating_sub(keep_last)) {
            let _ = fs::remove_dir_all(old);
        }
    }
    Ok(dir)
}

/// Complete checkpoints, oldest first.
pub fn list(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(run_dir.join("ckpt")) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            let path = e.path();
            path.join("state.json").is_file().then_some((step, path))
        })
        .collect();
    out.sort();
    out
}

pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    list(run_dir).pop().map(|(_, p)| p)
}

/// Reads a checkpoint directory (`ckpt/step-NNNNNN`).
pub fn load(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    let err = |m: String| CheckpointError::Read {
        path: dir.to_path_buf(),
        message: m,
    };
    if !dir.join("state.json").is_file() {
        return Err(err(
            "no state.json: not a kiln checkpoint directory (expected <run>/ckpt/step-NNNNNN)"
                .into(),
        ));
    }
    let state: TrainState = serde_json::from_str(
        &fs::read_to_string(dir.join("state.json")).map_err(|e| err(e.to_string()))?,
    )
    .map_err(|e| err(format!("state.json: {e}")))?;
    let hf_config: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.join("config.json"))
            .map_err(|e| err(format!("config.json: {e}")))?,
    )
    .map_err(|e| err(format!("config.json: {e}")))?;
    let model = read_safetensors(dir.join("model.safetensors")).map_err(|e| err(e.to_string()))?;
    let optimizer =
        read_safetensors(dir.join("optimizer.safetensors")).map_err(|e| err(e.to_string()))?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        model,
        optimizer,
        state,
        hf_config,
    })
}
