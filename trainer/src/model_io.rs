//! Loading and exporting whole models: Hugging Face-style directories (`config.json` + `model.safetensors`
//! + `tokenizer.json`) and kiln checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use kiln_arch::{
    read_safetensors, write_safetensors, AdapterPlan, Builder, HfModel, HfTensor, LoraInit,
    LoraPlan, Model, ModelConfig, SafetensorsDtype, Targets,
};
use kiln_data::TextTokenizer;
use serde_json::json;

use crate::checkpoint;
use crate::params::{load_named_subset, load_named_tensors};

/// A model with its config and (when the directory has one) its tokenizer.
pub struct LoadedModel<B: Backend> {
    pub config: ModelConfig,
    pub model: Model<B>,
    pub tokenizer: Option<TextTokenizer>,
    pub dir: PathBuf,
    /// The LoRA adapters the model carries (an adapter directory, a LoRA run's checkpoint).
    pub adapter: Option<Adapter>,
}

/// What a model's LoRA adapters are and what they adapt.
#[derive(Clone, Debug)]
pub struct Adapter {
    pub plan: LoraPlan,
    /// The base model directory (`base_model_name_or_path` of the PEFT export).
    pub base_dir: PathBuf,
}

/// A module path inside a LoRA adapter (what a LoRA run's checkpoint holds of the model).
pub fn is_adapter_param(name: &str) -> bool {
    name.contains(".lora.")
}

impl Adapter {
    /// `base.json` of a checkpoint: the base directory and the digest of each of its weight
    /// files, so that resuming against another base is an error rather than a silent mix.
    pub fn base_record(&self) -> Result<serde_json::Value> {
        let mut files = serde_json::Map::new();
        for name in ["model.safetensors", "adapter_model.safetensors"] {
            let path = self.base_dir.join(name);
            if path.is_file() {
                let digest = checkpoint::digest_file(&path)
                    .with_context(|| format!("reading the base model {}", path.display()))?;
                files.insert(name.to_string(), serde_json::to_value(digest)?);
            }
        }
        Ok(json!({"base_dir": self.base_dir.display().to_string(), "files": files}))
    }

    /// Checks that the base is still the one checkpoint `dir` adapted (its `base.json`).
    pub fn check_base(&self, dir: &Path) -> Result<()> {
        let saved = read_json(
            &dir.join(checkpoint::BASE_FILE),
            "a LoRA checkpoint records the base it adapts",
        )?;
        let now = self.base_record()?;
        if saved["files"] != now["files"] {
            bail!(
                "{}: the checkpoint's adapters were trained on the base {} with weights {}, but \
                 {} now holds {}: resuming against a different base would mix two models",
                dir.display(),
                saved["base_dir"],
                saved["files"],
                self.base_dir.display(),
                now["files"]
            );
        }
        Ok(())
    }
}

impl<B: Backend> LoadedModel<B> {
    /// The directory's tokenizer, or an error naming the directory that lacks one.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.tokenizer
            .as_ref()
            .with_context(|| format!("{} has no tokenizer.json", self.dir.display()))
    }
}

/// A JSON file's value; the error names the file (and says `why` it is needed when it cannot be
/// read).
fn read_json(path: &Path, why: &str) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} ({why})", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn read_hf_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let value = read_json(&path, "a model directory needs config.json")?;
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
    load_model_dir_with(dir, device, &AdapterPlan::default())
}

/// [`load_model_dir`] into a model built with `plan`'s adapters: the directory's weights are the
/// base (a fresh adapter starts as a no-op); a kiln checkpoint of an adapted run also restores
/// its adapters.
pub fn load_model_dir_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    plan: &AdapterPlan,
) -> Result<LoadedModel<B>> {
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    if dir.join("adapter_config.json").is_file() {
        return load_adapter_dir(dir, device, plan);
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
        return load_dir(&newest.dir.clone(), Some(newest), device, plan);
    }
    load_dir(dir, None, device, plan)
}

/// [`load_model_dir`] on a model or checkpoint directory; `verified` when the caller has already
/// checked the checkpoint's files.
fn load_dir<B: Backend>(
    dir: &Path,
    verified: Option<checkpoint::Verified>,
    device: &B::Device,
    plan: &AdapterPlan,
) -> Result<LoadedModel<B>> {
    let config = read_hf_config(dir)?;
    let tokenizer = read_tokenizer(dir)?;
    // A checkpoint of a LoRA run holds its adapters: build the model with them.
    let from_checkpoint = checkpoint_lora(dir)?;
    let recipe_plan;
    let plan = match &from_checkpoint {
        Some(adapter) if plan.lora.is_none() => {
            recipe_plan = AdapterPlan {
                lora: Some(adapter.plan.clone()),
                fake_quant: None,
            };
            &recipe_plan
        }
        _ => plan,
    };
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
    // A LoRA run's checkpoint holds the adapters; the frozen base comes from its directory.
    if let (Some(adapter), Some(lora)) = (&from_checkpoint, &plan.lora) {
        adapter.check_base(dir)?;
        let base = load_model_dir_with::<B>(&adapter.base_dir, device, plan)
            .with_context(|| format!("the base model of checkpoint {}", dir.display()))?;
        let ckpt = match verified {
            Some(verified) => verified.load()?,
            None => checkpoint::load(dir)?,
        };
        let origin = dir.join("model.safetensors").display().to_string();
        let model = load_named_subset(base.model, &ckpt.model, &origin, &is_adapter_param)?;
        return Ok(LoadedModel {
            config,
            model,
            tokenizer,
            dir: dir.to_path_buf(),
            adapter: Some(Adapter {
                plan: lora.clone(),
                base_dir: adapter.base_dir.clone(),
            }),
        });
    }
    let fresh: Model<B> = config.init_with(&Builder::with_plan(device, plan));
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
        adapter: None,
    })
}

/// The adapters of a kiln checkpoint of a LoRA run (its `recipe.yaml` has a `lora:` section, its
/// base is `model.init_from`); `None` for anything else.
fn checkpoint_lora(dir: &Path) -> Result<Option<Adapter>> {
    let recipe = dir.join("recipe.yaml");
    if !dir.join("state.json").is_file() || !recipe.is_file() {
        return Ok(None);
    }
    let recipe = crate::recipe::Recipe::load(&recipe, &[])
        .with_context(|| format!("reading the recipe of checkpoint {}", dir.display()))?;
    Ok(recipe.adapter())
}

/// A PEFT LoRA adapter directory (`adapter_config.json` + `adapter_model.safetensors`, written
/// by PEFT or by kiln): its base (`base_model_name_or_path`, a local model directory) with the
/// adapters applied. The adapters are built as the file describes them (rank, alpha, rsLoRA,
/// target modules), or as `plan` when it has LoRA (a recipe continuing to train them: a
/// different rank or set of layers is then an error naming the tensor). The tokenizer is the
/// adapter directory's when it has one, else the base's.
fn load_adapter_dir<B: Backend>(
    dir: &Path,
    device: &B::Device,
    plan: &AdapterPlan,
) -> Result<LoadedModel<B>> {
    let path = dir.join("adapter_config.json");
    let cfg = read_json(&path, "a PEFT adapter directory needs adapter_config.json")?;
    let key = |k: &str| {
        cfg.get(k)
            .filter(|v| !v.is_null())
            .with_context(|| format!("{}: `{k}` is missing", path.display()))
    };
    if key("peft_type")? != "LORA" {
        bail!(
            "{}: peft_type {} is not LORA",
            path.display(),
            key("peft_type")?
        );
    }
    let base_name = key("base_model_name_or_path")?.as_str().with_context(|| {
        format!(
            "{}: base_model_name_or_path is not a string",
            path.display()
        )
    })?;
    let base_dir = local_base(dir, base_name).with_context(|| {
        format!(
            "{}: the base model `{base_name}` is not a local directory (kiln does not \
                 download models; give the path of a downloaded copy)",
            path.display()
        )
    })?;
    let config = read_hf_config(&base_dir)?;
    let mapping = config.hf_mapping();
    let number = |k: &str| -> Result<f64> {
        key(k)?
            .as_f64()
            .with_context(|| format!("{}: `{k}` is not a number", path.display()))
    };
    let targets = match key("target_modules")? {
        serde_json::Value::String(s) if s == "all-linear" => Targets::AllLinear,
        serde_json::Value::String(s) => Targets::Names(vec![s.clone()]),
        serde_json::Value::Array(names) => Targets::Names(
            names
                .iter()
                .filter_map(|n| n.as_str())
                .map(|n| mapping.kiln_path(n).unwrap_or_else(|| n.to_string()))
                .collect(),
        ),
        other => bail!(
            "{}: target_modules {other} is not a list of names",
            path.display()
        ),
    };
    let file_plan = AdapterPlan {
        lora: Some(LoraPlan {
            rank: number("r")? as usize,
            alpha: number("lora_alpha")?,
            use_rslora: cfg
                .get("use_rslora")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            targets,
            seed: 0,
            init: Default::default(),
        }),
        fake_quant: None,
    };
    let plan = if plan.lora.is_some() {
        plan
    } else {
        &file_plan
    };
    let lora = plan.lora.clone().expect("a LoRA plan");
    let base = load_model_dir_with::<B>(&base_dir, device, plan)
        .with_context(|| format!("the base model of adapter {}", dir.display()))?;
    let weights = dir.join("adapter_model.safetensors");
    let tensors = read_safetensors(&weights)?;
    let model = base
        .model
        .load_peft_tensors(&tensors)
        .with_context(|| format!("loading {} onto {}", weights.display(), base_dir.display()))?;
    let tokenizer = match read_tokenizer(dir)? {
        Some(t) => Some(t),
        None => base.tokenizer,
    };
    Ok(LoadedModel {
        config: base.config,
        model,
        tokenizer,
        dir: dir.to_path_buf(),
        adapter: Some(Adapter {
            plan: lora,
            base_dir,
        }),
    })
}

/// Where `base_model_name_or_path` (`name`) of the adapter directory `dir` is on this machine: the
/// path as given, or relative to `dir`; `None` when neither is a directory.
fn local_base(dir: &Path, name: &str) -> Option<PathBuf> {
    [PathBuf::from(name), dir.join(name)]
        .into_iter()
        .find(|p| p.is_dir())
}

/// The base model directory of `dir` when it is a PEFT adapter directory (a LoRA run continuing
/// an adapter adapts that adapter's base); `None` for any other directory, or when the base is
/// not found (loading the adapter then names the problem).
pub fn adapter_base(dir: &Path) -> Option<PathBuf> {
    let cfg = read_json(&dir.join("adapter_config.json"), "").ok()?;
    local_base(dir, cfg.get("base_model_name_or_path")?.as_str()?)
}

/// The files an export directory holds ([`export_model`]); a directory with only these (and at
/// least `config.json`) is an export, which `train export` may overwrite.
const EXPORT_FILES: [&str; 7] = [
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "adapter_model.safetensors",
    "adapter_config.json",
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
/// directory as it is. The base model only: LoRA adapters are written by [`export_adapter`], or
/// merged first ([`merged_hf_tensors`] and [`export_hf_tensors`]).
pub fn export_model<B: Backend>(
    model: &Model<B>,
    config: &ModelConfig,
    tokenizer: &TextTokenizer,
    out: &Path,
    dtype: SafetensorsDtype,
) -> Result<()> {
    export_hf_tensors(model.to_hf_tensors(), config, tokenizer, out, dtype)
}

/// The HF tensors of `model` with its LoRA adapters merged into the base weights
/// (`W + scale · B A`, PEFT's `merge_and_unload`): a plain model that transformers loads with
/// the adapted model's logits.
pub fn merged_hf_tensors<B: Backend>(model: &Model<B>, adapter: &Adapter) -> Result<Vec<HfTensor>> {
    let mut tensors = model.to_hf_tensors();
    let adapters = model.to_peft_tensors();
    kiln_arch::hf::merge_peft_into_hf(&mut tensors, &adapters, adapter.plan.scale()).context(
        "merging the LoRA adapters (an adapter on a head tied to the embedding cannot be merged)",
    )?;
    Ok(tensors)
}

/// [`export_model`] of given HF tensors.
pub fn export_hf_tensors(
    tensors: Vec<HfTensor>,
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

/// Writes the LoRA adapters of `model` as a PEFT adapter directory: `adapter_model.safetensors`
/// (PEFT's tensor names and `[r, in]` / `[out, r]` layout, f32) and `adapter_config.json`, which
/// `peft.PeftModel.from_pretrained(base, out)` loads onto the base `base_dir` names; plus the
/// tokenizer files. `target_modules` lists the full HF module name of every adapted layer, as
/// PEFT records a resolved `all-linear`, so PEFT adapts exactly these layers.
///
/// Returns warnings for adapters PEFT + transformers will not apply as kiln does: PEFT 0.22
/// refuses `out_proj` on Mamba and Mamba-2 models, and transformers 5's Mamba and Jamba mixers
/// read `dt_proj.weight` directly, so an adapter there is silently ignored.
pub fn export_adapter<B: Backend>(
    model: &Model<B>,
    adapter: &Adapter,
    tokenizer: &TextTokenizer,
    out: &Path,
) -> Result<Vec<String>> {
    let (lora, base_dir) = (&adapter.plan, adapter.base_dir.as_path());
    let tensors = model.to_peft_tensors();
    if tensors.is_empty() {
        bail!(
            "not exporting an adapter to {}: the model has no LoRA adapter",
            out.display()
        );
    }
    if let Some(bad) = crate::params::first_nonfinite(&tensors) {
        bail!(
            "not exporting to {}: `{bad}` has non-finite values",
            out.display()
        );
    }
    let mapping = model.hf_mapping();
    let mut targets: Vec<String> = model
        .linear_layers()
        .into_iter()
        .filter(|(_, adapted)| *adapted)
        .flat_map(|(path, _)| mapping.hf_names(&format!("{path}.weight")))
        .map(|name| name.trim_end_matches(".weight").to_string())
        .collect();
    targets.sort();
    targets.dedup();
    let ssm = matches!(model, Model::Mamba(_) | Model::Mamba2(_) | Model::Hybrid(_));
    let mut warnings = Vec::new();
    for (layer, why) in [
        (
            "out_proj",
            "PEFT refuses adapters on `out_proj` of Mamba and Mamba-2 models when loading them",
        ),
        (
            "dt_proj",
            "transformers' Mamba and Jamba mixers read `dt_proj.weight` directly, so PEFT's \
             adapter there is silently not applied",
        ),
    ] {
        let hit = targets.iter().any(|t| t.ends_with(&format!(".{layer}")));
        let refused = layer == "dt_proj" || !matches!(model, Model::Hybrid(_));
        if ssm && hit && refused {
            warnings.push(format!(
                "{}: adapters on `{layer}`: {why}; kiln applies them (`train eval` / `generate` \
                 on this directory)",
                out.display()
            ));
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_safetensors(
        out.join("adapter_model.safetensors"),
        &tensors,
        SafetensorsDtype::F32,
    )?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        // Absolute: the adapter must find its base from wherever it is loaded.
        "base_model_name_or_path": std::fs::canonicalize(base_dir)
            .unwrap_or_else(|_| base_dir.to_path_buf())
            .display()
            .to_string(),
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "use_rslora": lora.use_rslora,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": match lora.init {
            LoraInit::Kaiming => json!(true),
            LoraInit::Gaussian => json!("gaussian"),
        },
        "modules_to_save": null,
        "inference_mode": true,
        "use_dora": false,
        "revision": null,
    });
    write_json(&out.join("adapter_config.json"), &config)?;
    tokenizer
        .save(out.join("tokenizer.json"))
        .with_context(|| format!("writing {}", out.join("tokenizer.json").display()))?;
    Ok(warnings)
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
