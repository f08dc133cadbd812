//! Checkpoints: `<run>/ckpt/step-NNNNNN/` holding
//!
//! | file | content |
//! |---|---|
//! | `model.safetensors` | every parameter by name, burn layout, f32 |
//! | `optimizer.safetensors` | AdamW `exp_avg` / `exp_avg_sq` by parameter name |
//! | `state.json` | step, tokens seen, loader position, optimizer step, elapsed time, seeds, and the size and xxh3-64 checksum of every other file |
//! | `config.json` | the model's Hugging Face config (what `train export` rebuilds the model from) |
//! | `recipe.yaml`, `tokenizer.json` | the resolved recipe and the tokenizer, so the directory stands alone |
//!
//! A checkpoint is written into `ckpt/.tmp-step-NNNNNN/` (`state.json` last) and renamed into place
//! only when every file is written and synced, so a crash (or a full disk) never leaves a directory
//! that resume would pick up. Older checkpoints are pruned only after the new one is in place; a
//! pruned directory is first renamed to `.del-step-NNNNNN`, so a prune cut short leaves nothing that
//! looks like a checkpoint, and the next prune finishes it.
//!
//! Loading verifies every file against the sizes and checksums in `state.json`: same-size bit rot,
//! a truncated copy or a missing file is an error that names the file, never a silently different
//! model. Checkpoints written before checksums existed load with a notice.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
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
    /// A checkpoint whose files do not match what was written (or that was never completed).
    #[error("checkpoint {} is damaged: {reason}", dir.display())]
    Damaged { dir: PathBuf, reason: String },
}

/// Size and checksum of one checkpoint file, as recorded in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileDigest {
    pub bytes: u64,
    /// xxh3-64 of the file's bytes, 16 hex digits.
    pub xxh3: String,
}

/// `state.json` on disk: the training state plus the digests of the directory's other files.
#[derive(Serialize, Deserialize)]
struct StateFile {
    #[serde(flatten)]
    state: TrainState,
    /// Absent in checkpoints written before kiln recorded checksums.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    files: BTreeMap<String, FileDigest>,
}

/// The files of a checkpoint other than `state.json`, each covered by a digest.
/// A LoRA run's checkpoint names the frozen base it adapts here (see [`CheckpointFiles::base`]).
pub const BASE_FILE: &str = "base.json";

const CHECKED_FILES: [&str; 5] = [
    "model.safetensors",
    "optimizer.safetensors",
    "config.json",
    "recipe.yaml",
    "tokenizer.json",
];

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
    /// A LoRA run's `base.json` (the frozen base it adapts: its directory and the digests of its
    /// weight files); its model tensors are then the adapters only.
    pub base: Option<&'a serde_json::Value>,
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
        let cfg = serde_json::to_string_pretty(files.hf_config).map_err(|e| e.to_string())?;
        fs::write(tmp.join("config.json"), cfg).map_err(|e| e.to_string())?;
        fs::write(tmp.join("recipe.yaml"), files.recipe_yaml).map_err(|e| e.to_string())?;
        fs::copy(files.tokenizer_json, tmp.join("tokenizer.json")).map_err(|e| e.to_string())?;
        if let Some(base) = files.base {
            let text = serde_json::to_string_pretty(base).map_err(|e| e.to_string())?;
            fs::write(tmp.join(BASE_FILE), text).map_err(|e| e.to_string())?;
        }
        // Make the contents durable, then record what they are: state.json is written last, so a
        // directory without it was never completed.
        let mut digests = BTreeMap::new();
        for name in CHECKED_FILES {
            let path = tmp.join(name);
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let digest = digest_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            digests.insert(name.to_string(), digest);
        }
        let state = StateFile {
            state: files.state.clone(),
            files: digests,
        };
        let state = serde_json::to_string_pretty(&state).map_err(|e| e.to_string())?;
        let state_path = tmp.join("state.json");
        fs::write(&state_path, state).map_err(|e| e.to_string())?;
        fs::File::open(&state_path)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("{}: {e}", state_path.display()))?;
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
    prune(run_dir, step_of(&dir), keep_last);
    Ok(dir)
}

/// Removes what is not a checkpoint any more: leftovers of earlier prunes (`.del-*`), directories
/// of interrupted writes (`.tmp-*`) and step directories older than `newest` without a
/// `state.json` (partly deleted); then, with `keep_last > 0`, complete checkpoints beyond the
/// newest `keep_last`. Failures are ignored: pruning never fails a run.
fn prune(run_dir: &Path, newest: u64, keep_last: usize) {
    let root = run_dir.join("ckpt");
    if let Ok(entries) = fs::read_dir(&root) {
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().to_string();
            let leftover = name.starts_with(".del-")
                || (name.starts_with(".tmp-") && name != format!(".tmp-{}", step_dir_name(newest)));
            if leftover {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let mut complete = Vec::new();
    for (step, dir) in step_dirs(run_dir) {
        if dir.join("state.json").is_file() {
            complete.push(dir);
        } else if step < newest {
            remove_checkpoint_dir(&dir);
        }
    }
    if keep_last > 0 {
        for old in complete
            .iter()
            .take(complete.len().saturating_sub(keep_last))
        {
            remove_checkpoint_dir(old);
        }
    }
}

/// Renames first, so that a removal cut short (a crash, a full quota) leaves a `.del-` directory
/// that no listing takes for a checkpoint.
fn remove_checkpoint_dir(dir: &Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let doomed = parent.join(format!(".del-{}", name.to_string_lossy()));
    if fs::rename(dir, &doomed).is_ok() {
        let _ = fs::remove_dir_all(&doomed);
    }
}

fn step_of(dir: &Path) -> u64 {
    dir.file_name()
        .and_then(|n| n.to_str()?.strip_prefix("step-")?.parse().ok())
        .unwrap_or(0)
}

/// Every `ckpt/step-NNNNNN` directory, complete or not, oldest first.
pub fn step_dirs(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(run_dir.join("ckpt")) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path().is_dir().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Completed checkpoints (those with a `state.json`), oldest first. Their files are verified when
/// they are loaded.
pub fn list(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    step_dirs(run_dir)
        .into_iter()
        .filter(|(_, dir)| dir.join("state.json").is_file())
        .collect()
}

/// The run's newest checkpoint directory, complete or not: resume must look at it, not skip it.
pub fn newest(run_dir: &Path) -> Option<PathBuf> {
    step_dirs(run_dir).pop().map(|(_, p)| p)
}

/// The run's newest checkpoint, verified. If it is damaged (a file changed, truncated or missing,
/// or the write never completed) the error says why and names the newest older checkpoint that
/// verifies, so that the caller can offer it; nothing falls back silently.
pub fn newest_intact(run_dir: &Path) -> Result<Option<Verified>, NewestDamaged> {
    let mut dirs = step_dirs(run_dir).into_iter().rev().map(|(_, dir)| dir);
    let Some(newest) = dirs.next() else {
        return Ok(None);
    };
    match verify(&newest) {
        Ok(verified) => Ok(Some(verified)),
        Err(error) => Err(NewestDamaged {
            error,
            intact: dirs.find(|dir| verify(dir).is_ok()),
        }),
    }
}

/// The newest checkpoint does not verify; `intact` is the newest one that verifies, if any.
#[derive(Debug)]
pub struct NewestDamaged {
    pub error: CheckpointError,
    pub intact: Option<PathBuf>,
}

/// A checkpoint directory whose files matched the sizes and checksums its `state.json` records.
#[derive(Debug)]
pub struct Verified {
    pub dir: PathBuf,
    /// The training state from `state.json`.
    pub state: TrainState,
    /// False for checkpoints that predate checksums (nothing could be verified).
    pub checked: bool,
}

/// Checks a checkpoint directory's files against the sizes and checksums its `state.json`
/// records. `Ok` with `checked: false` for checkpoints that predate checksums.
pub fn verify(dir: &Path) -> Result<Verified, CheckpointError> {
    let damaged = |reason: String| CheckpointError::Damaged {
        dir: dir.to_path_buf(),
        reason,
    };
    let state_path = dir.join("state.json");
    if !state_path.is_file() {
        let named_like_one = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("step-"));
        return Err(
            if named_like_one || dir.join("model.safetensors").is_file() {
                damaged(
                "state.json is missing (the checkpoint was never completed, or was partly deleted)"
                    .into(),
            )
            } else {
                CheckpointError::Read {
                path: dir.to_path_buf(),
                message: "no state.json: not a kiln checkpoint directory (expected <run>/ckpt/step-NNNNNN)"
                    .into(),
            }
            },
        );
    }
    let text = fs::read_to_string(&state_path)
        .map_err(|e| damaged(format!("state.json cannot be read: {e}")))?;
    let file: StateFile = serde_json::from_str(&text)
        .map_err(|e| damaged(format!("state.json does not parse: {e}")))?;
    for (name, want) in &file.files {
        let path = dir.join(name);
        let Ok(meta) = fs::metadata(&path) else {
            return Err(damaged(format!("{name} is missing")));
        };
        if meta.len() != want.bytes {
            return Err(damaged(format!(
                "{name} has {} bytes, state.json records {} (truncated or replaced)",
                meta.len(),
                want.bytes
            )));
        }
        let got = digest_file(&path).map_err(|e| damaged(format!("{name} cannot be read: {e}")))?;
        if got.xxh3 != want.xxh3 {
            return Err(damaged(format!(
                "{name} has xxh3 {}, state.json records {} (its bytes changed after it was written: \
                 disk or copy corruption)",
                got.xxh3, want.xxh3
            )));
        }
    }
    Ok(Verified {
        dir: dir.to_path_buf(),
        state: file.state,
        checked: !file.files.is_empty(),
    })
}

/// Size and xxh3-64 of a file, read in 8 MiB blocks.
pub(crate) fn digest_file(path: &Path) -> std::io::Result<FileDigest> {
    let mut file = fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut block = vec![0u8; 8 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
        bytes += n as u64;
    }
    Ok(FileDigest {
        bytes,
        xxh3: format!("{:016x}", hasher.digest()),
    })
}

/// Reads a checkpoint directory (`ckpt/step-NNNNNN`) after verifying its files.
pub fn load(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    verify(dir)?.load()
}

impl Verified {
    /// Reads the checkpoint (without hashing its files a second time).
    pub fn load(self) -> Result<Checkpoint, CheckpointError> {
        read(&self.dir, self.state, self.checked)
    }
}

fn read(dir: &Path, state: TrainState, checked: bool) -> Result<Checkpoint, CheckpointError> {
    let err = |m: String| CheckpointError::Read {
        path: dir.to_path_buf(),
        message: m,
    };
    if !checked {
        crate::metrics::log_line(&format!(
            "notice: {} records no checksums (written by an older kiln); its files are not verified",
            dir.display()
        ));
    }
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

/// Renames the run's step directories newer than `step` to `ckpt/set-aside-step-NNNNNN` (with a
/// numeric suffix if that exists): resuming from an older checkpoint starts a different future,
/// and a later `--resume` must not pick up a checkpoint of the abandoned one. Nothing is deleted.
pub fn set_aside_after(run_dir: &Path, step: u64) -> std::io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut moved = Vec::new();
    for (later, dir) in step_dirs(run_dir) {
        if later <= step {
            continue;
        }
        let root = run_dir.join("ckpt");
        let base = format!("set-aside-{}", step_dir_name(later));
        let mut target = root.join(&base);
        let mut n = 1;
        while target.exists() {
            n += 1;
            target = root.join(format!("{base}-{n}"));
        }
        fs::rename(&dir, &target)?;
        moved.push((dir, target));
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_data::mix::MixState;

    fn write(run: &Path, step: u64, keep_last: usize) -> PathBuf {
        let tokenizer = run.join("tokenizer.json");
        fs::create_dir_all(run).unwrap();
        fs::write(&tokenizer, "{}").unwrap();
        let tensor = |name: &str| HfTensor {
            name: name.into(),
            shape: vec![4, 8],
            data: (0..32).map(|i| (i as f32 + step as f32) * 0.25).collect(),
        };
        let state = TrainState {
            step,
            tokens: step * 100,
            loader: MixState::default(),
            optimizer_step: step,
            elapsed_s: 1.0,
            seed: 0,
            world_size: 1,
            kiln_version: "test".into(),
        };
        save(
            run,
            &CheckpointFiles {
                model: &[tensor("w")],
                optimizer: &[tensor("w.exp_avg")],
                state: &state,
                hf_config: &serde_json::json!({"model_type": "llama"}),
                recipe_yaml: "name: t\n",
                tokenizer_json: &tokenizer,
                base: None,
            },
            keep_last,
        )
        .unwrap()
    }

    fn steps(run: &Path) -> Vec<u64> {
        list(run).into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn every_file_is_verified_and_a_damaged_newest_names_the_intact_one() {
        let run = tempfile::tempdir().unwrap();
        let run = run.path();
        let old = write(run, 10, 0);
        let new = write(run, 20, 0);
        assert_eq!(verify(&new).unwrap().state.step, 20);
        assert!(verify(&new).unwrap().checked, "digests recorded");
        let weights = new.join("model.safetensors");
        let good = fs::read(&weights).unwrap();

        // Same-size bit rot in the weights.
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        fs::write(&weights, &flipped).unwrap();
        let e = load(&new).err().unwrap().to_string();
        assert!(
            e.contains("step-000020") && e.contains("model.safetensors has xxh3"),
            "{e}"
        );
        let damaged = newest_intact(run).unwrap_err();
        assert_eq!(damaged.intact.as_deref(), Some(old.as_path()));

        // Truncated.
        fs::write(&weights, &good[..good.len() - 7]).unwrap();
        let e = verify(&new).unwrap_err().to_string();
        assert!(e.contains("truncated or replaced"), "{e}");

        // Any other file: the tokenizer.
        fs::write(&weights, &good).unwrap();
        fs::write(new.join("tokenizer.json"), "{ }").unwrap();
        let e = verify(&new).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
        fs::write(new.join("tokenizer.json"), "{}").unwrap();
        assert_eq!(
            newest_intact(run).unwrap().map(|v| v.dir),
            Some(new.clone())
        );

        // A missing state.json is not skipped over: the newest directory is reported.
        fs::remove_file(new.join("state.json")).unwrap();
        let damaged = newest_intact(run).unwrap_err();
        assert!(
            damaged.error.to_string().contains("state.json is missing"),
            "{}",
            damaged.error
        );
        assert_eq!(damaged.intact.as_deref(), Some(old.as_path()));
        // Nothing was deleted by looking.
        assert!(weights.is_file() && old.join("model.safetensors").is_file());
    }

    #[test]
    fn checkpoints_without_digests_still_load() {
        let run = tempfile::tempdir().unwrap();
        let dir = write(run.path(), 5, 0);
        let path = dir.join("state.json");
        let mut state: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        state.as_object_mut().unwrap().remove("files");
        fs::write(&path, state.to_string()).unwrap();
        let Verified { state, checked, .. } = verify(&dir).unwrap();
        assert_eq!((state.step, checked), (5, false));
        assert_eq!(load(&dir).unwrap().state.step, 5);
    }

    #[test]
    fn pruning_clears_partly_deleted_and_interrupted_directories() {
        let run = tempfile::tempdir().unwrap();
        let run = run.path();
        write(run, 10, 2);
        write(run, 20, 2);
        let ckpt = run.join("ckpt");
        // A prune cut short in an earlier run, a step directory missing its state.json (partly
        // deleted by hand), and a write killed before its rename.
        fs::create_dir_all(ckpt.join(".del-step-000002")).unwrap();
        fs::create_dir_all(ckpt.join("step-000015")).unwrap();
        fs::write(ckpt.join("step-000015/model.safetensors"), b"x").unwrap();
        fs::create_dir_all(ckpt.join(".tmp-step-000025")).unwrap();
        write(run, 30, 2);
        let mut left: Vec<String> = fs::read_dir(&ckpt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["step-000020", "step-000030"]);
        assert_eq!(steps(run), [20, 30]);
    }

    #[test]
    fn resuming_from_an_older_checkpoint_sets_the_later_ones_aside() {
        let run = tempfile::tempdir().unwrap();
        let run = run.path();
        for step in [10, 20, 30] {
            write(run, step, 0);
        }
        let moved = set_aside_after(run, 10).unwrap();
        assert_eq!(moved.len(), 2);
        assert_eq!(steps(run), [10]);
        assert!(run.join("ckpt/set-aside-step-000030/state.json").is_file());
        // A second time over the same steps keeps both copies.
        write(run, 20, 0);
        set_aside_after(run, 10).unwrap();
        assert!(run
            .join("ckpt/set-aside-step-000020-2/state.json")
            .is_file());
    }
}
