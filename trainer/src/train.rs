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
use kiln_arch::{Model, ModelConfig, Segments};
use kiln_data::mix::{MixLoader, MixSource, MixStage, MixState};
use kiln_data::{eval_batches, Batch, Prefetcher, PreparedData, TextTokenizer};

use crate::checkpoint::{self, CheckpointFiles, TrainState};
use crate::generate::{generate, SampleOptions};
use crate::loss::cross_entropy;
use crate::metrics::{self, EvalRecord, Logger, TrainRecord};
use crate::model_io::{export_adapter, export_model, is_adapter_param, load_model_dir_with};
use crate::objective::{batch_tensors, NextToken, SingleWorker};
use crate::optim::{AdamW, AdamWConfig};
use crate::params::{first_nonfinite, load_named_subset, load_named_tensors, named_tensors};
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

/// Mean validation loss over fixed batches (the same every evaluation), their documents kept apart
/// when they carry document ids.
pub fn validation_loss<B: Backend>(
    model: &Model<B>,
    batches: &[Batch],
    batch_size: usize,
    seq_len: usize,
    device: &B::Device,
) -> f64 {
    let mut total = 0.0;
    for batch in batches {
        let (inputs, targets) =
            batch_tensors::<B>(&batch.tokens, None, batch_size, seq_len, device);
        let segments =
            (batch.doc_ids.as_deref()).map(|ids| Segments::from_ids(batch_size, seq_len, ids));
        let ctx = model.ctx().with_segments(segments);
        let loss = cross_entropy(model.forward_with(inputs, &ctx), targets);
        total += loss.into_scalar().elem::<f64>(); // host sync, once per validation batch
    }
    total / batches.len() as f64
}

/// Trains `recipe` from scratch or from a checkpoint: setup, the step loop, the final export.
pub fn run<B: Backend>(
    recipe: Recipe,
    opts: TrainOptions,
    device: B::Device,
) -> Result<RunSummary> {
    recipe.check_trainable()?;
    let dist = Dist::from_env()?;
    if dist.world_size > 1 {
        bail!(
            "WORLD_SIZE={}: multi-worker training (gradient all-reduce) is not implemented yet; \
             the data loader already shards by RANK/WORLD_SIZE",
            dist.world_size
        );
    }
    let (run_dir, _lock, resume_dir) = open_run_dir(&recipe, &opts, dist)?;
    let (prepared, tokenizer) = prepare_data(&recipe, &run_dir, dist)?;
    <AB<B> as Backend>::seed(&device, recipe.train.seed);
    let (config, model) = init_model::<AB<B>>(&recipe, &tokenizer, &device, dist)?;
    let total_steps = recipe.total_steps(dist.world_size);
    // A LoRA run's base, recorded once: the weights it was loaded from at the start.
    let base_record = recipe.adapter().map(|a| a.base_record()).transpose()?;
    let run = RunContext {
        base_record,
        eot: tokenizer.eot_id()?,
        tokenizer_path: run_dir.join("tokenizer.json"),
        recipe_yaml: recipe.to_yaml(),
        val: validation_data(&recipe, &prepared)?,
        tokens_per_step: recipe.tokens_per_step(dist.world_size),
        total_steps,
        recipe,
        dist,
        run_dir,
        config,
        tokenizer,
        device,
    };
    let (adamw, lr) = AdamWConfig::from_section(run.recipe.optimizer()?);
    let mut optimizer = AdamW::<B>::new(adamw);
    let schedule = Schedule::new(run.recipe.schedule()?.clone(), lr, total_steps);
    let mut loader = mix_loader(&run.recipe, &prepared, dist)?;
    if dist.is_main() {
        std::fs::write(run.run_dir.join("recipe.yaml"), &run.recipe_yaml)?;
    }
    let (model, mut progress) = match resume_dir {
        Some(verified) => run.resume(verified, &opts, model, &mut optimizer, &mut loader)?,
        None => {
            if opts.resume {
                run.say("--resume: no checkpoint yet, starting from step 0");
            }
            (model, Progress::new(0, 0, 0.0, None))
        }
    };
    // Precision last: loading replaces parameters with f32 tensors.
    let t = &run.recipe.train;
    let (param_dtype, compute_dtype) = t.precision.dtypes();
    let mut model = model.with_precision(param_dtype, compute_dtype);
    let mut meter = Meter::new(&run);
    let mut logger = run.open_logger(progress.resumed_from, meter.peak_flops)?;
    let mut epochs_seen: Vec<u64> = loader.state().sources.iter().map(|c| c.epoch).collect();
    // Batches are read on a background thread, a few steps ahead; `loader.state()` is the
    // position after the last batch actually trained on, which is what checkpoints save.
    let mut loader = Prefetcher::new(loader, PREFETCH_DEPTH);
    let step_shape = StepShape::from_section(t);
    let mut nonfinite = NonFiniteGuard::default();

    while progress.step < total_steps {
        let lr = schedule.lr_at(progress.step);
        // Forward/backward over the micro-batches, clipping, AdamW: no host sync.
        let (next, out) = train_step(
            model,
            &mut optimizer,
            lr,
            step_shape,
            &NextToken,
            &mut SingleWorker,
            &mut || loader.next(),
            &run.device,
        );
        model = next;
        progress.advance(run.tokens_per_step);
        meter.add(run.tokens_per_step);
        let step = progress.step;
        nonfinite.check(&out, step, &run, &logger)?;

        let stop_signal = crate::signals::requested();
        if stop_signal.is_some() {
            crate::signals::announce();
        }
        let due = Due::after(step, &run, stop_signal.is_some());
        if due.log || due.checkpoint {
            // A non-finite loss never gets here unnoticed: `train_step`'s guard refused the step
            // (above). The value was already read back by the guard, so this is no extra sync.
            let loss: f64 = out.loss.into_scalar().elem();
            progress.last_loss = Some(loss);
            if due.log && run.dist.is_main() {
                let position = loader.state();
                run.log_new_epochs(&position, &mut epochs_seen, &logger);
                let grad_norm = out.grad_norm.map(|n| n.into_scalar().elem::<f64>());
                run.log_train(
                    &mut logger,
                    &mut meter,
                    &progress,
                    loss,
                    lr,
                    grad_norm,
                    &position,
                );
            }
        }
        logger.set_step(step);
        if due.eval && run.dist.is_main() && !run.val.is_empty() {
            let pause = Instant::now();
            progress.last_val_loss = Some(run.evaluate(&model.valid(), &progress, &mut logger)?);
            // Evaluation time does not count towards training throughput.
            meter.exclude(pause.elapsed());
        }
        if due.checkpoint && run.dist.is_main() && progress.last_saved != Some(step) {
            let dir = run.save_checkpoint(&model, &optimizer, loader.state(), &progress)?;
            progress.last_saved = Some(step);
            logger.info(&format!("checkpoint: {}", dir.display()));
        }
        pause_for_tests(&run.run_dir, step);
        if let Some(signal) = stop_signal {
            logger.info(&format!(
                "stopped by {} at step {step}; continue with --resume",
                crate::signals::name(signal)
            ));
            progress.stopped_early = true;
            break;
        }
    }
    logger.finish();
    run.finish(&model, progress)
}

type AB<B> = Autodiff<B>;

/// What stays fixed for the whole run, once set up.
struct RunContext<B: Backend> {
    recipe: Recipe,
    /// The resolved recipe as written to the run directory and every checkpoint.
    recipe_yaml: String,
    dist: Dist,
    run_dir: PathBuf,
    config: ModelConfig,
    tokenizer: TextTokenizer,
    /// The run's copy of the tokenizer.
    tokenizer_path: PathBuf,
    eot: u32,
    total_steps: u64,
    tokens_per_step: u64,
    /// Fixed validation batches per source (sources that hold out nothing have none).
    val: Vec<(String, Vec<Batch>)>,
    /// A LoRA run's `base.json` (base directory, digests of its weight files), written with every
    /// checkpoint; `None` for full training.
    base_record: Option<serde_json::Value>,
    device: B::Device,
}

/// Where the run stands.
struct Progress {
    step: u64,
    tokens: u64,
    /// Training seconds before this process (from the checkpoint resumed from).
    elapsed_before: f64,
    started: Instant,
    resumed_from: Option<u64>,
    last_saved: Option<u64>,
    last_loss: Option<f64>,
    last_val_loss: Option<f64>,
    stopped_early: bool,
}

impl Progress {
    fn new(step: u64, tokens: u64, elapsed_before: f64, resumed_from: Option<u64>) -> Self {
        Self {
            step,
            tokens,
            elapsed_before,
            started: Instant::now(),
            resumed_from,
            last_saved: resumed_from,
            last_loss: None,
            last_val_loss: None,
            stopped_early: false,
        }
    }

    fn advance(&mut self, tokens: u64) {
        self.step += 1;
        self.tokens += tokens;
    }

    /// Training seconds, this process and the ones before it.
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }
}

/// Throughput over the current log interval, evaluation pauses excluded.
struct Meter {
    interval_start: Instant,
    interval_tokens: u64,
    peak_flops: Option<f64>,
    flops_per_token: u64,
}

impl Meter {
    fn new<B: Backend>(run: &RunContext<B>) -> Self {
        let t = &run.recipe.train;
        Self {
            interval_start: Instant::now(),
            interval_tokens: 0,
            peak_flops: crate::backend::peak_flops(t.backend, t.peak_flops, rayon_threads()),
            flops_per_token: run.config.flops_per_token(t.seq_len),
        }
    }

    fn add(&mut self, tokens: u64) {
        self.interval_tokens += tokens;
    }

    fn exclude(&mut self, pause: std::time::Duration) {
        self.interval_start += pause;
    }

    /// Tokens per second since the last call, and starts the next interval.
    fn take_rate(&mut self) -> f64 {
        let dt = self.interval_start.elapsed().as_secs_f64().max(1e-9);
        let rate = self.interval_tokens as f64 / dt;
        self.interval_start = Instant::now();
        self.interval_tokens = 0;
        rate
    }
}

/// What is due after an optimizer step.
struct Due {
    log: bool,
    eval: bool,
    checkpoint: bool,
}

impl Due {
    /// The last step and a stop request make the log and the checkpoint due.
    fn after<B: Backend>(step: u64, run: &RunContext<B>, stopping: bool) -> Self {
        let r = &run.recipe;
        let last = step == run.total_steps;
        let every = |n: u64| n > 0 && step.is_multiple_of(n);
        Self {
            log: step.is_multiple_of(r.train.log_every_steps) || last || stopping,
            eval: r.eval.every_steps > 0 && (every(r.eval.every_steps) || last),
            checkpoint: every(r.checkpoint.every_steps) || last || stopping,
        }
    }
}

/// Applies `train.on_nonfinite` to steps whose update `train_step` refused.
#[derive(Default)]
struct NonFiniteGuard {
    consecutive_skips: u64,
}

impl NonFiniteGuard {
    fn check<B: Backend>(
        &mut self,
        out: &StepOutput<B>,
        step: u64,
        run: &RunContext<impl Backend>,
        logger: &Logger,
    ) -> Result<()> {
        let Some((loss, norm)) = out.skipped_nonfinite else {
            self.consecutive_skips = 0;
            return Ok(());
        };
        let what = format!(
            "step {step}: loss {loss}, grad_norm {norm}: not finite, the update was not applied"
        );
        self.consecutive_skips += 1;
        if run.recipe.train.on_nonfinite == OnNonFinite::Stop {
            bail!(
                "{what}; training stopped ({}). Lower train.optimizer.lr, check the data, or \
                 set train.on_nonfinite: skip_step",
                last_good(&run.run_dir)
            );
        }
        if self.consecutive_skips >= MAX_CONSECUTIVE_SKIPS {
            bail!(
                "{what}; {} steps in a row were not finite, training stopped ({}). Lower \
                 train.optimizer.lr or check the data",
                self.consecutive_skips,
                last_good(&run.run_dir)
            );
        }
        logger.info(&format!("{what} (train.on_nonfinite: skip_step)"));
        Ok(())
    }
}

/// The run directory (created), its lock (held until the run ends) and the checkpoint to resume
/// from. A damaged checkpoint is named now, before data preparation (which can take long).
fn open_run_dir(
    recipe: &Recipe,
    opts: &TrainOptions,
    dist: Dist,
) -> Result<(PathBuf, RunLock, Option<checkpoint::Verified>)> {
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
    let lock = RunLock::acquire(&run_dir, |msg: &str| say(dist, msg))?;
    if checkpoint::newest(&run_dir).is_some() && !opts.resume && opts.resume_from.is_none() {
        bail!(
            "{} already has checkpoints; pass --resume to continue that run, or --out DIR to start a new one",
            run_dir.display()
        );
    }
    let resume_dir = match (&opts.resume_from, opts.resume) {
        (Some(dir), _) => Some(checkpoint::verify(dir)?),
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
    Ok((run_dir, lock, resume_dir))
}

/// A progress line from the main process only.
fn say(dist: Dist, msg: &str) {
    if dist.is_main() {
        metrics::log_line(msg);
    }
}

/// Data preparation (or its cache) and the tokenizer, copied into the run directory.
fn prepare_data(
    recipe: &Recipe,
    run_dir: &Path,
    dist: Dist,
) -> Result<(PreparedData, TextTokenizer)> {
    let prepared = crate::data_cmd::prepare(
        recipe,
        &mut crate::data_cmd::BarProgress::new(!dist.is_main()),
    )?;
    let tokenizer = TextTokenizer::from_file(&prepared.tokenizer_path)?;
    let tokenizer_path = run_dir.join("tokenizer.json");
    std::fs::copy(&prepared.tokenizer_path, &tokenizer_path)
        .with_context(|| format!("cannot write {}", tokenizer_path.display()))?;
    say(
        dist,
        &format!(
            "data: {} train tokens, {} validation tokens, vocabulary {} ({})",
            prepared.train_tokens(),
            prepared.val_tokens(),
            tokenizer.vocab_size(),
            prepared.dir.display()
        ),
    );
    Ok((prepared, tokenizer))
}

/// A fresh model from the recipe, or `model.init_from`'s weights; checked against the tokenizer
/// and the sequence length.
fn init_model<B: Backend>(
    recipe: &Recipe,
    tokenizer: &TextTokenizer,
    device: &B::Device,
    dist: Dist,
) -> Result<(ModelConfig, Model<B>)> {
    let plan = match &recipe.lora {
        Some(lora) => lora.plan(recipe.train.seed),
        None => kiln_arch::AdapterPlan::default(),
    };
    let (config, model) = match &recipe.model.init_from {
        Some(dir) => {
            let loaded = load_model_dir_with::<B>(dir, device, &plan)
                .with_context(|| format!("model.init_from = {}", dir.display()))?;
            say(dist, &format!("model: initialised from {}", dir.display()));
            (loaded.config, loaded.model)
        }
        None => {
            let config = recipe.model_config(tokenizer.vocab_size())?;
            let model = config.init(device);
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
    // Adapters are what the model holds beyond the base's analytic count.
    let n_adapter = n_params.saturating_sub(config.num_params());
    if n_params != config.num_params() && recipe.lora.is_none() {
        bail!(
            "internal: instantiated parameters {n_params} != analytic count {}",
            config.num_params()
        );
    }
    let model = match &recipe.lora {
        None => {
            say(
                dist,
                &format!("model: {} parameters", group_digits(n_params as u64)),
            );
            model
        }
        Some(lora) => {
            let layers = model.linear_layers();
            let adapted = layers.iter().filter(|(_, a)| *a).count();
            if adapted == 0 {
                let mut names: Vec<&str> = layers
                    .iter()
                    .map(|(p, _)| p.rsplit('.').next().unwrap_or(p))
                    .collect();
                names.sort();
                names.dedup();
                bail!(
                    "lora.target_modules {} match no linear layer of this model; its linear \
                     layers are {} (e.g. {}), or use all-linear",
                    lora.target_modules,
                    names.join(", "),
                    layers.first().map_or("", |(p, _)| p.as_str())
                );
            }
            say(
                dist,
                &format!(
                    "model: {} parameters, {} trainable in LoRA adapters (r {}) on {adapted} of \
                     {} linear layers; the base is frozen",
                    group_digits(n_params as u64),
                    group_digits(n_adapter as u64),
                    lora.r,
                    layers.len()
                ),
            );
            model.with_frozen_base()
        }
    };
    Ok((config, model))
}

/// The training data stream: each row from a source by the weights of the mix stage in force.
fn mix_loader(recipe: &Recipe, prepared: &PreparedData, dist: Dist) -> Result<MixLoader> {
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
    let sources = prepared
        .sources
        .iter()
        .map(|s| MixSource {
            name: s.name.clone(),
            train_shards: s.train_shards.clone(),
        })
        .collect();
    let loader = MixLoader::new(
        sources,
        stages,
        t.micro_batch_size,
        t.seq_len,
        t.seed,
        dist.rank,
        dist.world_size,
    )?;
    Ok(if recipe.data.document_masking {
        say(
            dist,
            "data: document masking on (each window's documents kept apart)",
        );
        loader.with_document_masking()?
    } else {
        loader
    })
}

/// Fixed validation batches per source (the same every evaluation).
fn validation_data(recipe: &Recipe, prepared: &PreparedData) -> Result<Vec<(String, Vec<Batch>)>> {
    let t = &recipe.train;
    let mut val = Vec::new();
    if recipe.eval.every_steps == 0 && recipe.eval.batches == 0 {
        return Ok(val);
    }
    for s in prepared.sources.iter().filter(|s| !s.val_shards.is_empty()) {
        let batches = eval_batches(
            &s.val_shards,
            t.micro_batch_size,
            t.seq_len,
            recipe.eval.batches,
            recipe.data.document_masking,
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
    Ok(val)
}

impl<B: Backend> RunContext<B> {
    fn say(&self, msg: &str) {
        say(self.dist, msg);
    }

    /// Loads the checkpoint into the model, the optimizer and the loader.
    fn resume(
        &self,
        verified: checkpoint::Verified,
        opts: &TrainOptions,
        model: Model<AB<B>>,
        optimizer: &mut AdamW<B>,
        loader: &mut MixLoader,
    ) -> Result<(Model<AB<B>>, Progress)> {
        let ckpt = verified.load()?;
        let dir = &ckpt.dir;
        check_same_model(dir, &self.recipe)?;
        let origin = dir.join("model.safetensors").display().to_string();
        let model = match self.recipe.adapter() {
            // The base came from model.init_from: it must be the one the adapters were trained on.
            Some(adapter) => {
                adapter.check_base(dir)?;
                load_named_subset(model, &ckpt.model, &origin, &is_adapter_param)?
            }
            None => load_named_tensors(model, &ckpt.model, &origin)?,
        };
        optimizer
            .load_state(ckpt.state.optimizer_step, &ckpt.optimizer, &self.device)
            .map_err(|m| anyhow::anyhow!("{}: {m}", dir.display()))?;
        loader
            .restore(&ckpt.state.loader)
            .with_context(|| format!("{}: loader state", dir.display()))?;
        let step = ckpt.state.step;
        self.say(&format!("resumed from {} (step {step})", dir.display()));
        if opts.resume_from.is_some() && self.dist.is_main() {
            for (from, to) in checkpoint::set_aside_after(&self.run_dir, step)? {
                self.say(&format!(
                    "set aside {} (newer than the checkpoint resumed from) as {}",
                    from.display(),
                    to.display()
                ));
            }
        }
        let total = self.total_steps;
        if step > total {
            bail!(
                "the checkpoint is at step {step}, past this recipe's {total} steps \
                 (train.max_steps / train.max_tokens): nothing to train, and the learning-rate \
                 schedule would not match. Raise train.max_steps above {step} to train on, or export \
                 the checkpoint with `train export --checkpoint {}`",
                self.run_dir.display()
            );
        }
        if step == total {
            self.say(&format!(
                "the run is already complete (step {step} of {total}): nothing to train; raise \
                 train.max_steps to train on"
            ));
        }
        let progress = Progress::new(step, ckpt.state.tokens, ckpt.state.elapsed_s, Some(step));
        Ok((model, progress))
    }

    fn open_logger(&self, resumed_from: Option<u64>, peak: Option<f64>) -> Result<Logger> {
        let t = &self.recipe.train;
        let logger = Logger::open(&self.run_dir, self.total_steps, resumed_from)?;
        logger.info(&format!(
            "training {} steps × {} tokens (micro-batch {} × accumulation {} × seq {}), peak {}",
            self.total_steps,
            self.tokens_per_step,
            t.micro_batch_size,
            t.grad_accum_steps,
            t.seq_len,
            peak.map_or("unknown (set train.peak_flops)".into(), |p| format!(
                "{:.1} TFLOP/s",
                p / 1e12
            ))
        ));
        Ok(logger)
    }

    /// Says when a source starts another pass over its shards.
    fn log_new_epochs(&self, position: &MixState, epochs_seen: &mut [u64], logger: &Logger) {
        for (c, seen) in position.sources.iter().zip(epochs_seen) {
            if c.epoch > *seen {
                logger.info(&format!(
                    "data: source `{}` is in epoch {} (its shards are being reshuffled and repeated)",
                    c.name,
                    c.epoch + 1
                ));
                *seen = c.epoch;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn log_train(
        &self,
        logger: &mut Logger,
        meter: &mut Meter,
        progress: &Progress,
        loss: f64,
        lr: f64,
        grad_norm: Option<f64>,
        position: &MixState,
    ) {
        let seq_len = self.recipe.train.seq_len as u64;
        let tokens_per_s = meter.take_rate();
        let remaining =
            (self.total_steps - progress.step) as f64 * self.tokens_per_step as f64 / tokens_per_s;
        logger.train(&TrainRecord {
            step: progress.step,
            loss,
            lr,
            grad_norm,
            tokens: progress.tokens,
            tokens_per_s,
            mfu: metrics::mfu(
                tokens_per_s * meter.flops_per_token as f64,
                meter.peak_flops,
            ),
            elapsed_s: progress.elapsed(),
            eta_s: remaining,
            peak_rss_mb: metrics::peak_rss_mb(),
            device_mem_mb: crate::backend::device_memory_mb::<B>(&self.device),
            tokens_by_source: position
                .sources
                .iter()
                .map(|c| (c.name.clone(), c.windows * seq_len))
                .collect(),
            epochs_by_source: position
                .sources
                .iter()
                .map(|c| (c.name.clone(), c.epoch))
                .collect(),
        });
    }

    /// Validation loss per source and mix-weighted, logged with the samples; returns the latter.
    fn evaluate(&self, model: &Model<B>, progress: &Progress, logger: &mut Logger) -> Result<f64> {
        let (t, step) = (&self.recipe.train, progress.step);
        let by_source: Vec<(String, f64)> = self
            .val
            .iter()
            .map(|(name, batches)| {
                let loss =
                    validation_loss(model, batches, t.micro_batch_size, t.seq_len, &self.device);
                (name.clone(), loss)
            })
            .collect();
        let val_loss = mix_weighted_loss(&by_source, &self.recipe, step);
        logger.eval(&EvalRecord {
            step,
            val_loss,
            val_ppl: val_loss.exp(),
            tokens: progress.tokens,
            val_loss_by_source: by_source.into_iter().collect(),
        });
        let e = &self.recipe.eval;
        for i in 0..e.samples {
            let options = SampleOptions {
                max_new_tokens: e.sample_max_new_tokens,
                temperature: e.sample_temperature,
                top_k: Some(50),
                top_p: None,
                seed: t.seed ^ (step << 8) ^ i as u64,
            };
            let text = self.sample(model, &e.sample_prompt, &options)?;
            logger.info(&format!("sample: {text}"));
            logger.record(&serde_json::json!({"step": step, "sample": text}));
        }
        Ok(val_loss)
    }

    fn sample(&self, model: &Model<B>, prompt: &str, options: &SampleOptions) -> Result<String> {
        let (config, tokenizer) = (&self.config, &self.tokenizer);
        sample_text(
            model,
            config,
            tokenizer,
            prompt,
            options,
            self.eot,
            &self.device,
        )
    }

    /// Writes `ckpt/step-N` (model, optimizer, loader position, recipe, tokenizer).
    fn save_checkpoint(
        &self,
        model: &Model<AB<B>>,
        optimizer: &AdamW<B>,
        loader: MixState,
        progress: &Progress,
    ) -> Result<PathBuf> {
        let step = progress.step;
        let state = TrainState {
            step,
            tokens: progress.tokens,
            loader,
            optimizer_step: optimizer.step,
            elapsed_s: progress.elapsed(),
            seed: self.recipe.train.seed,
            world_size: self.dist.world_size,
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        // Never write a checkpoint that could not be trained on (the step guard keeps NaN out of
        // the weights; this also covers values that overflow on their own).
        let (mut model_tensors, optimizer_tensors) =
            (named_tensors(model), optimizer.state_tensors());
        // A LoRA run saves its adapters and which base they adapt, not the frozen base.
        if self.base_record.is_some() {
            model_tensors.retain(|t| is_adapter_param(&t.name));
        }
        if let Some(bad) = first_nonfinite(&model_tensors).or(first_nonfinite(&optimizer_tensors)) {
            bail!(
                "not writing the checkpoint of step {step}: `{bad}` has non-finite values ({})",
                last_good(&self.run_dir)
            );
        }
        let dir = checkpoint::save(
            &self.run_dir,
            &CheckpointFiles {
                model: &model_tensors,
                optimizer: &optimizer_tensors,
                state: &state,
                hf_config: &self.config.to_hf_config(self.eot, self.eot, "float32"),
                recipe_yaml: &self.recipe_yaml,
                tokenizer_json: &self.tokenizer_path,
                base: self.base_record.as_ref(),
            },
            self.recipe.checkpoint.keep_last,
        )?;
        Ok(dir)
    }

    /// The summary, after the export and its sample unless the run was stopped early.
    fn finish(&self, model: &Model<AB<B>>, progress: Progress) -> Result<RunSummary> {
        let mut summary = RunSummary {
            run_dir: self.run_dir.clone(),
            steps: progress.step,
            last_loss: progress.last_loss,
            last_val_loss: progress.last_val_loss,
            stopped_early: progress.stopped_early,
            stop_signal: crate::signals::requested().filter(|_| progress.stopped_early),
            export_dir: None,
            sample: None,
        };
        let export = &self.recipe.export;
        if progress.stopped_early || !export.enabled || !self.dist.is_main() {
            return Ok(summary);
        }
        let export_dir = self.run_dir.join("export");
        let valid = model.valid();
        let dtype = match export.dtype {
            ExportDtype::F32 => kiln_arch::SafetensorsDtype::F32,
            ExportDtype::Bf16 => kiln_arch::SafetensorsDtype::Bf16,
        };
        match self.recipe.adapter() {
            Some(adapter) => {
                let warnings = export_adapter(&valid, &adapter, &self.tokenizer, &export_dir)?;
                for w in warnings {
                    metrics::log_line(&format!("warning: {w}"));
                }
            }
            None => export_model(&valid, &self.config, &self.tokenizer, &export_dir, dtype)?,
        }
        metrics::log_line(&format!("export: {}", export_dir.display()));
        if !export.sample_prompt.is_empty() {
            let options = SampleOptions::greedy(export.sample_max_new_tokens);
            summary.sample = Some(self.sample(&valid, &export.sample_prompt, &options)?);
        }
        summary.export_dir = Some(export_dir);
        Ok(summary)
    }
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
