//! The pretraining loop: data → model → AdamW, with evaluation, checkpoints, logging and export.
//!
//! One optimizer step = `grad_accum_steps` micro-batches; each micro-batch loss is divided by the
//! number of micro-batches, so the accumulated gradient is the mean (as PyTorch users expect).
//! Host–device syncs happen only at log steps (reading the loss and grad norm), at evaluation, at
//! checkpoints and on Ctrl-C; every other step stays on the device.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::prelude::*;
use kiln_arch::{Model, ModelConfig};
use kiln_data::mix::{MixLoader, MixSource, MixStage, MixState};
use kiln_data::{eval_batches, Prefetcher, TextTokenizer};

use crate::checkpoint::{self, CheckpointFiles, TrainState};
use crate::generate::{generate, SampleOptions};
use crate::loss::cross_entropy;
use crate::metrics::{self, EvalRecord, Logger, TrainRecord};
use crate::model_io::{export_model, load_model_dir};
use crate::objective::{batch_tensors, NextToken, SingleWorker};
use crate::optim::{AdamW, AdamWConfig};
use crate::params::{first_nonfinite, load_named_tensors, named_tensors};
use crate::recipe::{ExportDtype, OnNonFinite, Recipe, MAX_CONSECUTIVE_SKIPS};
use crate::run_lock::RunLock;
use crate::schedule::Schedule;
use crate::step::{train_step, StepOutput, StepShape};

/// Micro-batches the data thread may prepare ahead of the training step.
const PREFETCH_DEPTH: usize = 4;

/// This process's place among data-parallel workers (torchrun-style `RANK` / `WORLD_SIZE`).
#[derive(Debug, Clone, Copy)]
pub struct Dist {
    pub rank: usize,
    pub world_size: usize,
}

impl Dist {
    pub fn from_env() -> Result<Self> {
        let read = |k: &str, default: usize| -> Result<usize> {
            match std::env::var(k) {
                Ok(v) => v
                    .parse()
                    .with_context(|| format!("environment variable {k}={v} is not a number")),
                Err(_) => Ok(default),
            }
        };
        let d = Self {
            rank: read("RANK", 0)?,
            world_size: read("WORLD_SIZE", 1)?,
        };
        if d.world_size == 0 || d.rank >= d.world_size {
            bail!("RANK={} must be below WORLD_SIZE={}", d.rank, d.world_size);
        }
        Ok(d)
    }
    /// Only rank 0 writes logs, checkpoints and exports.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }
}

pub struct TrainOptions {
    pub out_dir: Option<PathBuf>,
    /// Continue from the run directory's newest checkpoint (an error if it is damaged).
    pub resume: bool,
    /// Continue from this checkpoint directory; checkpoints of the run after it are set aside.
    pub resume_from: Option<PathBuf>,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub last_loss: Option<f64>,
    pub last_val_loss: Option<f64>,
    pub stopped_early: bool,
    /// The signal that stopped the run early (Ctrl-C, SIGTERM, SIGHUP), if one did.
    pub stop_signal: Option<nix::sys::signal::Signal>,
    pub export_dir: Option<PathBuf>,
    pub sample: Option<String>,
}

/// Mean validation loss over fixed batches (the same every evaluation).
pub fn validation_loss<B: Backend>(
    model: &Model<B>,
    batches: &[Vec<u32>],
    batch_size: usize,
    seq_len: usize,
    device: &B::Device,
) -> f64 {
    let mut total = 0.0;
    for tokens in batches {
        let (inputs, targets) = batch_tensors::<B>(tokens, None, batch_size, seq_len, device);
        let loss = cross_entropy(model.forward(inputs), targets);
        total += loss.into_scalar().elem::<f64>(); // host sync, once per validation batch
    }
    total / batches.len() as f64
}

pub fn run<B: Backend>(
    recipe: Recipe,
    opts: TrainOptions,
    device: B::Device,
) -> Result<RunSummary> {
    type AB<B> = Autodiff<B>;
    recipe.check_trainable()?;
    let dist = Dist::from_env()?;
    if dist.world_size > 1 {
        bail!(
            "WORLD_SIZE={}: multi-worker training (gradient all-reduce) is not implemented yet; \
             the data loader already shards by RANK/WORLD_SIZE",
            dist.world_size
        );
    }
    // `--resume-from <run>/ckpt/step-N` continues that run unless --out names another one.
    let run_dir = opts
        .out_dir
        .clone()
        .or_else(|| {
            let ckpt_root = opts.resume_from.as_deref()?.parent()?;
            (ckpt_root.file_name()? == "ckpt").then(|| ckpt_root.parent().map(Path::to_path_buf))?
        })
        .unwrap_or_else(|| PathBuf::from("checkpoints").join(&recipe.name));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    let say = |msg: &str| {
        if dist.is_main() {
            metrics::log_line(msg);
        }
    };
    // One process per run directory, held until the run ends (released on drop).
    let _lock = RunLock::acquire(&run_dir, say)?;
    if checkpoint::newest(&run_dir).is_some() && !opts.resume && opts.resume_from.is_none() {
        bail!(
            "{} already has checkpoints; pass --resume to continue that run, or --out DIR to start a new one",
            run_dir.display()
        );
    }

    // Checked before data preparation (which can take long): a damaged checkpoint is named now.
    let resume_dir = match (&opts.resume_from, opts.resume) {
        (Some(dir), _) => {
            checkpoint::verify(dir)?;
            Some(dir.clone())
        }
        (None, true) => checkpoint::newest_intact(&run_dir).map_err(|damaged| {
            let advice = match &damaged.intact {
                Some(intact) => format!(
                    "the newest intact checkpoint is {}: continue from it with --resume-from {} \
                     (the checkpoints after it are set aside), or restore the damaged files",
                    intact.display(),
                    intact.display()
                ),
                None => "no checkpoint of this run verifies: restore the damaged files, or start \
                         a new run with another --out"
                    .into(),
            };
            anyhow::anyhow!("{}; {advice}", damaged.error)
        })?,
        (None, false) => None,
    };

    // ---- data and tokenizer ----------------------------------------------------------------
    let prepared = crate::data_cmd::prepare(
        &recipe,
        &mut crate::data_cmd::BarProgress::new(!dist.is_main()),
    )?;
    let tokenizer = TextTokenizer::from_file(&prepared.tokenizer_path)?;
    let eot = tokenizer.eot_id()?;
    let tokenizer_path = run_dir.join("tokenizer.json");
    std::fs::copy(&prepared.tokenizer_path, &tokenizer_path)
        .with_context(|| format!("cannot write {}", tokenizer_path.display()))?;
    say(&format!(
        "data: {} train tokens, {} validation tokens, vocabulary {} ({})",
        prepared.train_tokens(),
        prepared.val_tokens(),
        tokenizer.vocab_size(),
        prepared.dir.display()
    ));

    // ---- model ------------------------------------------------------------------------------
    <AB<B> as Backend>::seed(&device, recipe.train.seed);
    let (config, mut model): (ModelConfig, Model<AB<B>>) = match &recipe.model.init_from {
        Some(dir) => {
            let loaded = load_model_dir::<AB<B>>(dir, &device)
                .with_context(|| format!("model.init_from = {}", dir.display()))?;
            say(&format!("model: initialised from {}", dir.display()));
            (loaded.config, loaded.model)
        }
        None => {
            let config = recipe.model_config(tokenizer.vocab_size())?;
            let model = config.init(&device);
            (config, model)
        }
    };
    if tokenizer.vocab_size() > config.vocab_size() {
        bail!(
            "tokenizer/model mismatch: the tokenizer has {} tokens but the model's vocab_size is {}",
            tokenizer.vocab_size(),
            config.vocab_size()
        );
    }
    if let Some(ctx) = config.max_seq_len().filter(|&c| recipe.train.seq_len > c) {
        bail!(
            "train.seq_len = {} exceeds the model's context ({ctx})",
            recipe.train.seq_len,
        );
    }
    let n_params = model.num_params();
    if n_params != config.num_params() {
        bail!(
            "internal: instantiated parameters {n_params} != analytic count {}",
            config.num_params()
        );
    }
    say(&format!(
        "model: {} parameters",
        group_digits(n_params as u64)
    ));

    // ---- optimizer, schedule, loader ----------------------------------------------------------
    let (adamw, lr) = AdamWConfig::from_section(recipe.optimizer()?);
    let mut optimizer = AdamW::<B>::new(adamw);
    let total_steps = recipe.total_steps(dist.world_size);
    let schedule = Schedule::new(recipe.schedule()?.clone(), lr, total_steps);
    let t = &recipe.train;
    // Stages switch at optimizer steps; the loader counts micro-batches.
    let stages = recipe
        .data
        .mix_schedule()
        .into_iter()
        .map(|(from_step, weights)| MixStage {
            from_step: from_step * t.grad_accum_steps as u64,
            weights,
        })
        .collect();
    let mut loader = MixLoader::new(
        prepared
            .sources
            .iter()
            .map(|s| MixSource {
                name: s.name.clone(),
                train_shards: s.train_shards.clone(),
            })
            .collect(),
        stages,
        t.micro_batch_size,
        t.seq_len,
        t.seed,
        dist.rank,
        dist.world_size,
    )?;
    // Fixed validation batches per source (sources that hold out nothing have none).
    let mut val: Vec<(String, Vec<Vec<u32>>)> = Vec::new();
    if recipe.eval.every_steps > 0 || recipe.eval.batches > 0 {
        for s in prepared.sources.iter().filter(|s| !s.val_shards.is_empty()) {
            let batches = eval_batches(
                &s.val_shards,
                t.micro_batch_size,
                t.seq_len,
                recipe.eval.batches,
            )
            .with_context(|| format!("validation data of source `{}`", s.name))?;
            val.push((s.name.clone(), batches));
        }
        if val.is_empty() && recipe.eval.every_steps > 0 {
            bail!(
                "eval.every_steps = {} but no data source holds out validation data \
                 (data.val_fraction is 0, or token_shards sources list no `val` shards)",
                recipe.eval.every_steps
            );
        }
    }
    let tokens_per_step = recipe.tokens_per_step(dist.world_size);
    let step_shape = StepShape::from_section(t);
    let recipe_yaml = recipe.to_yaml();
    if dist.is_main() {
        std::fs::write(run_dir.join("recipe.yaml"), &recipe_yaml)?;
    }

    // ---- resume -------------------------------------------------------------------------------
    let mut step = 0u64;
    let mut tokens = 0u64;
    let mut elapsed_before = 0.0;
    let mut resumed_from = None;
    let resume_ckpt = resume_dir.as_deref().map(checkpoint::load).transpose()?;
    match resume_ckpt {
        Some(ckpt) => {
            let dir = &ckpt.dir;
            check_same_model(dir, &recipe)?;
            model = load_named_tensors(
                model,
                &ckpt.model,
                &dir.join("model.safetensors").display().to_string(),
            )?;
            optimizer
                .load_state(ckpt.state.optimizer_step, &ckpt.optimizer, &device)
                .map_err(|m| anyhow::anyhow!("{}: {m}", dir.display()))?;
            loader
                .restore(&ckpt.state.loader)
                .with_context(|| format!("{}: loader state", dir.display()))?;
            step = ckpt.state.step;
            tokens = ckpt.state.tokens;
            elapsed_before = ckpt.state.elapsed_s;
            resumed_from = Some(step);
            say(&format!("resumed from {} (step {step})", dir.display()));
            if opts.resume_from.is_some() && dist.is_main() {
                for (from, to) in checkpoint::set_aside_after(&run_dir, step)? {
                    say(&format!(
                        "set aside {} (newer than the checkpoint resumed from) as {}",
                        from.display(),
                        to.display()
                    ));
                }
            }
        }
        None if opts.resume => say("--resume: no checkpoint yet, starting from step 0"),
        None => {}
    }
    if let Some(at) = resumed_from {
        if at > total_steps {
            bail!(
                "the checkpoint is at step {at}, past this recipe's {total_steps} steps \
                 (train.max_steps / train.max_tokens): nothing to train, and the learning-rate \
                 schedule would not match. Raise train.max_steps above {at} to train on, or export \
                 the checkpoint with `train export --checkpoint {}`",
                run_dir.display()
            );
        }
        if at == total_steps {
            say(&format!(
                "the run is already complete (step {at} of {total_steps}): nothing to train; raise \
                 train.max_steps to train on"
            ));
        }
    }
    // Precision last: loading replaces parameters with f32 tensors.
    let (param_dtype, compute_dtype) = t.precision.dtypes();
    model = model.with_precision(param_dtype, compute_dtype);

    let peak_flops = crate::backend::peak_flops(t.backend, t.peak_flops, rayon_threads());
    let flops_per_token = config.flops_per_token(t.seq_len);
    let mut logger = Logger::open(&run_dir, total_steps, resumed_from)?;
    logger.info(&format!(
        "training {total_steps} steps × {tokens_per_step} tokens (micro-batch {} × accumulation {} × seq {}), peak {}",
        t.micro_batch_size,
        t.grad_accum_steps,
        t.seq_len,
        peak_flops.map_or("unknown (set train.peak_flops)".into(), |p| format!("{:.1} TFLOP/s", p / 1e12))
    ));

    let save_ckpt = |model: &Model<AB<B>>,
                     optimizer: &AdamW<B>,
                     loader: MixState,
                     step: u64,
                     tokens: u64,
                     elapsed: f64|
     -> Result<PathBuf> {
        let state = TrainState {
            step,
            tokens,
            loader,
            optimizer_step: optimizer.step,
            elapsed_s: elapsed,
            seed: recipe.train.seed,
            world_size: dist.world_size,
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        // Never write a checkpoint that could not be trained on (the step guard keeps NaN out of
        // the weights; this also covers values that overflow on their own).
        let (model_tensors, optimizer_tensors) = (named_tensors(model), optimizer.state_tensors());
        if let Some(bad) = first_nonfinite(&model_tensors).or(first_nonfinite(&optimizer_tensors)) {
            bail!(
                "not writing the checkpoint of step {step}: `{bad}` has non-finite values ({})",
                last_good(&run_dir)
            );
        }
        let dir = checkpoint::save(
            &run_dir,
            &CheckpointFiles {
                model: &model_tensors,
                optimizer: &optimizer_tensors,
                state: &state,
                hf_config: &config.to_hf_config(eot, eot, "float32"),
                recipe_yaml: &recipe_yaml,
                tokenizer_json: &tokenizer_path,
            },
            recipe.checkpoint.keep_last,
        )?;
        Ok(dir)
    };

    // Batches are read on a background thread, a few steps ahead; `loader.state()` is the
    // position after the last batch actually trained on, which is what checkpoints save.
    let mut epochs_seen: Vec<u64> = loader.state().sources.iter().map(|c| c.epoch).collect();
    let mut loader = Prefetcher::new(loader, PREFETCH_DEPTH);
    let started = Instant::now();
    let mut interval_start = Instant::now();
    let mut interval_tokens = 0u64;
    let mut last_loss = None;
    let mut last_val_loss = None;
    let mut last_saved = resumed_from;
    let mut stopped_early = false;
    let mut consecutive_skips = 0u64;

    while step < total_steps {
        let lr = schedule.lr_at(step);
        // Forward/backward over the micro-batches, clipping, AdamW: no host sync.
        let (next, out) = train_step(
            model,
            &mut optimizer,
            lr,
            step_shape,
            &NextToken,
            &mut SingleWorker,
            &mut || loader.next(),
            &device,
        );
        model = next;
        let StepOutput {
            loss: step_loss,
            grad_norm,
            skipped_nonfinite,
        } = out;
        step += 1;
        tokens += tokens_per_step;
        interval_tokens += tokens_per_step;
        if let Some((loss, norm)) = skipped_nonfinite {
            let what = format!(
                "step {step}: loss {loss}, grad_norm {norm}: not finite, the update was not applied"
            );
            consecutive_skips += 1;
            if t.on_nonfinite == OnNonFinite::Stop {
                bail!(
                    "{what}; training stopped ({}). Lower train.optimizer.lr, check the data, or \
                     set train.on_nonfinite: skip_step",
                    last_good(&run_dir)
                );
            }
            if consecutive_skips >= MAX_CONSECUTIVE_SKIPS {
                bail!(
                    "{what}; {consecutive_skips} steps in a row were not finite, training stopped \
                     ({}). Lower train.optimizer.lr or check the data",
                    last_good(&run_dir)
                );
            }
            logger.info(&format!("{what} (train.on_nonfinite: skip_step)"));
        } else {
            consecutive_skips = 0;
        }

        let stop_signal = crate::signals::requested();
        let stop_now = stop_signal.is_some();
        if stop_now {
            crate::signals::announce();
        }
        let last_step = step == total_steps;
        let log_due = step.is_multiple_of(t.log_every_steps) || last_step || stop_now;
        let ckpt_due = (recipe.checkpoint.every_steps > 0
            && step.is_multiple_of(recipe.checkpoint.every_steps))
            || last_step
            || stop_now;
        if log_due || ckpt_due {
            // A non-finite loss never gets here unnoticed: `train_step`'s guard refused the step
            // (above). The value was already read back by the guard, so this is no extra sync.
            let loss: f64 = step_loss.into_scalar().elem();
            last_loss = Some(loss);
            if log_due && dist.is_main() {
                let position = loader.state();
                for (c, seen) in position.sources.iter().zip(&mut epochs_seen) {
                    if c.epoch > *seen {
                        logger.info(&format!(
                            "data: source `{}` is in epoch {} (its shards are being reshuffled and repeated)",
                            c.name,
                            c.epoch + 1
                        ));
                        *seen = c.epoch;
                    }
                }
                let dt = interval_start.elapsed().as_secs_f64().max(1e-9);
                let tokens_per_s = interval_tokens as f64 / dt;
                let elapsed = elapsed_before + started.elapsed().as_secs_f64();
                let remaining = (total_steps - step) as f64 * tokens_per_step as f64 / tokens_per_s;
                logger.train(&TrainRecord {
                    step,
                    loss,
                    lr,
                    grad_norm: grad_norm.map(|n| n.into_scalar().elem::<f64>()),
                    tokens,
                    tokens_per_s,
                    mfu: metrics::mfu(tokens_per_s * flops_per_token as f64, peak_flops),
                    elapsed_s: elapsed,
                    eta_s: remaining,
                    peak_rss_mb: metrics::peak_rss_mb(),
                    device_mem_mb: crate::backend::device_memory_mb::<B>(&device),
                    tokens_by_source: position
                        .sources
                        .iter()
                        .map(|c| (c.name.clone(), c.windows * t.seq_len as u64))
                        .collect(),
                    epochs_by_source: position
                        .sources
                        .iter()
                        .map(|c| (c.name.clone(), c.epoch))
                        .collect(),
                });
                interval_start = Instant::now();
                interval_tokens = 0;
            }
        }
        logger.set_step(step);

        let eval_due = recipe.eval.every_steps > 0
            && (step.is_multiple_of(recipe.eval.every_steps) || last_step);
        if eval_due && dist.is_main() && !val.is_empty() {
            let pause = Instant::now();
            let valid = model.valid();
            let by_source: Vec<(String, f64)> = val
                .iter()
                .map(|(name, batches)| {
                    let loss =
                        validation_loss(&valid, batches, t.micro_batch_size, t.seq_len, &device);
                    (name.clone(), loss)
                })
                .collect();
            let val_loss = mix_weighted_loss(&by_source, &recipe, step);
            last_val_loss = Some(val_loss);
            logger.eval(&EvalRecord {
                step,
                val_loss,
                val_ppl: val_loss.exp(),
                tokens,
                val_loss_by_source: by_source.into_iter().collect(),
            });
            for i in 0..recipe.eval.samples {
                let text = sample_text(
                    &valid,
                    &config,
                    &tokenizer,
                    &recipe.eval.sample_prompt,
                    &SampleOptions {
                        max_new_tokens: recipe.eval.sample_max_new_tokens,
                        temperature: recipe.eval.sample_temperature,
                        top_k: Some(50),
                        top_p: None,
                        seed: t.seed ^ (step << 8) ^ i as u64,
                    },
                    eot,
                    &device,
                )?;
                logger.info(&format!("sample: {text}"));
                logger.record(&serde_json::json!({"step": step, "sample": text}));
            }
            // Evaluation time does not count towards training throughput.
            interval_start += pause.elapsed();
        }

        if ckpt_due && dist.is_main() && last_saved != Some(step) {
            let elapsed = elapsed_before + started.elapsed().as_secs_f64();
            let dir = save_ckpt(&model, &optimizer, loader.state(), step, tokens, elapsed)?;
            last_saved = Some(step);
            logger.info(&format!("checkpoint: {}", dir.display()));
        }
        pause_for_tests(&run_dir, step);
        if let Some(signal) = stop_signal {
            logger.info(&format!(
                "stopped by {} at step {step}; continue with --resume",
                crate::signals::name(signal)
            ));
            stopped_early = true;
            break;
        }
    }
    logger.finish();

    let mut summary = RunSummary {
        run_dir: run_dir.clone(),
        steps: step,
        last_loss,
        last_val_loss,
        stopped_early,
        stop_signal: crate::signals::requested().filter(|_| stopped_early),
        export_dir: None,
        sample: None,
    };
    if !stopped_early && recipe.export.enabled && dist.is_main() {
        let export_dir = run_dir.join("export");
        let valid = model.valid();
        let dtype = match recipe.export.dtype {
            ExportDtype::F32 => kiln_arch::SafetensorsDtype::F32,
            ExportDtype::Bf16 => kiln_arch::SafetensorsDtype::Bf16,
        };
        export_model(&valid, &config, &tokenizer, &export_dir, dtype)?;
        metrics::log_line(&format!("export: {}", export_dir.display()));
        if !recipe.export.sample_prompt.is_empty() {
            let text = sample_text(
                &valid,
                &config,
                &tokenizer,
                &recipe.export.sample_prompt,
                &SampleOptions::greedy(recipe.export.sample_max_new_tokens),
                eot,
                &device,
            )?;
            summary.sample = Some(text);
        }
        summary.export_dir = Some(export_dir);
    }
    Ok(summary)
}

/// Validation loss over sources, weighted by the mix in force at `step` (a source with no
/// validation data, or weight 0, does not count; all weights 0 falls back to the plain mean).
fn mix_weighted_loss(by_source: &[(String, f64)], recipe: &Recipe, step: u64) -> f64 {
    let schedule = recipe.data.mix_schedule();
    let weights = &schedule
        .iter()
        .rev()
        .find(|(from, _)| *from <= step)
        .expect("the schedule starts at step 0")
        .1;
    let weight_of = |name: &str| {
        let i = recipe.data.sources.iter().position(|s| s.name() == name);
        i.map_or(0.0, |i| weights[i])
    };
    let total: f64 = by_source.iter().map(|(n, _)| weight_of(n)).sum();
    if total > 0.0 {
        by_source.iter().map(|(n, l)| weight_of(n) * l).sum::<f64>() / total
    } else {
        by_source.iter().map(|(_, l)| l).sum::<f64>() / by_source.len().max(1) as f64
    }
}

/// The prompt (after an end-of-text token, i.e. at a document start) and its continuation.
pub fn sample_text<B: Backend>(
    model: &Model<B>,
    config: &ModelConfig,
    tokenizer: &TextTokenizer,
    prompt: &str,
    opts: &SampleOptions,
    eot: u32,
    device: &B::Device,
) -> Result<String> {
    let mut ids = vec![eot];
    ids.extend(tokenizer.encode(prompt)?);
    let new = generate(model, config, &ids, opts, Some(eot), device);
    let new: Vec<u32> = new.into_iter().filter(|&t| t != eot).collect();
    Ok(format!("{prompt}{}", tokenizer.decode(&new)?))
}

/// Resuming with a different model section would load mismatched weights: refuse, naming the key.
fn check_same_model(ckpt_dir: &Path, recipe: &Recipe) -> Result<()> {
    let saved = std::fs::read_to_string(ckpt_dir.join("recipe.yaml"))
        .with_context(|| format!("{} has no recipe.yaml", ckpt_dir.display()))?;
    let saved: Recipe = serde_yaml_ng::from_str(&saved)
        .with_context(|| format!("{}/recipe.yaml does not parse", ckpt_dir.display()))?;
    if saved.model != recipe.model {
        let a = serde_yaml_ng::to_value(&saved.model)?;
        let b = serde_yaml_ng::to_value(&recipe.model)?;
        // The first key that differs, whichever side has it (an optional key set on one side only).
        let (am, bm) = (a.as_mapping(), b.as_mapping());
        let keys = am.into_iter().chain(bm).flat_map(|m| m.keys());
        let differs = keys
            .filter(|k| a.get(*k) != b.get(*k))
            .find_map(|k| k.as_str().map(str::to_string));
        let show = |v: &serde_yaml_ng::Value, key: &str| {
            v.get(key).map_or("not set".into(), |v| {
                serde_yaml_ng::to_string(v).map_or("?".into(), |s| s.trim().to_string())
            })
        };
        match differs {
            Some(key) => bail!(
                "cannot resume: model.{key} is {} in the checkpoint's recipe ({}) but {} now; \
                 a different model cannot continue this run (use another --out)",
                show(&a, &key),
                ckpt_dir.join("recipe.yaml").display(),
                show(&b, &key)
            ),
            None => bail!(
                "cannot resume: the model section differs from the checkpoint's recipe ({})",
                ckpt_dir.join("recipe.yaml").display()
            ),
        }
    }
    if saved.data != recipe.data || saved.tokenizer != recipe.tokenizer {
        bail!(
            "cannot resume: the data or tokenizer section differs from the checkpoint's recipe ({}); \
             the loader position would not mean the same thing",
            ckpt_dir.join("recipe.yaml").display()
        );
    }
    Ok(())
}

/// Names the newest checkpoint of the run. Every checkpoint kiln writes has finite weights and
/// optimizer state (checked before writing), so it is a good one to resume from.
fn last_good(run_dir: &Path) -> String {
    checkpoint::list(run_dir)
        .pop()
        .map_or("no checkpoint was written yet".into(), |(_, p)| {
            format!(
                "the last checkpoint, {}, has finite values: --resume continues from it",
                p.display()
            )
        })
}

/// Test hook: with `KILN_PAUSE_AFTER_STEP=N`, the process writes `<run>/paused-at-N` after step N and
/// sleeps, so that a test can SIGKILL it at a known point and check that resume is exact.
fn pause_for_tests(run_dir: &Path, step: u64) {
    let Ok(v) = std::env::var("KILN_PAUSE_AFTER_STEP") else {
        return;
    };
    if v.parse::<u64>().ok() == Some(step) {
        let _ = std::fs::write(run_dir.join(format!("paused-at-{step}")), b"");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

fn rayon_threads() -> usize {
    rayon::current_num_threads()
}

pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
