//! `train bench`: times the real training step ([`crate::step::train_step`]) of a recipe's model on
//! random tokens and prints one JSON line. `scripts/bench` runs it next to the PyTorch reference
//! (`scripts/bench_torch.py`) on the same config and prints the comparison table.
//!
//! Every timed step ends with a read of its loss, which waits for the device, so a step's time
//! is its full cost. Random ids stand in for data: a step's cost does not depend on them, and the
//! benchmark needs no prepared corpus or tokenizer.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::metrics;
use crate::objective::{NextToken, SingleWorker};
use crate::optim::{AdamW, AdamWConfig};
use crate::recipe::Recipe;
use crate::step::{train_step, StepShape};
use kiln_data::{Batch, TokenizerSpec};

pub struct BenchOptions {
    /// Timed steps (the median is reported).
    pub steps: usize,
    /// Untimed steps first (allocator warm-up, autotuning, kernel compilation).
    pub warmup: usize,
    /// Also write the model's HF `config.json` here, for the PyTorch side.
    pub hf_config_out: Option<PathBuf>,
}

/// One benchmark result; the PyTorch script prints the same keys.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub framework: &'static str,
    pub backend: String,
    pub precision: String,
    pub params: usize,
    pub micro_batch_size: usize,
    pub seq_len: usize,
    pub grad_accum_steps: usize,
    /// Median seconds per optimizer step.
    pub step_s: f64,
    pub best_step_s: f64,
    pub tokens_per_s: f64,
    /// Training FLOPs per token ([`kiln_arch::ModelConfig::flops_per_token`]).
    pub flops_per_token: u64,
    pub peak_flops: Option<f64>,
    pub mfu: Option<f64>,
    /// Peak resident memory (CPU) or memory reserved on the device (GPU), MiB.
    pub peak_mem_mb: Option<f64>,
    pub mem_kind: &'static str,
    pub loss: f64,
    pub threads: usize,
}

/// The vocabulary the recipe's model gets, without training its tokenizer: a BPE recipe names its
/// size; a tokenizer file is read.
fn recipe_vocab(recipe: &Recipe) -> Result<usize> {
    Ok(match &recipe.tokenizer {
        TokenizerSpec::TrainBpe { vocab_size, .. } => *vocab_size,
        TokenizerSpec::File { path } => kiln_data::TextTokenizer::from_file(path)
            .with_context(|| format!("tokenizer.path = {}", path.display()))?
            .vocab_size(),
    })
}

pub fn run<B: Backend>(
    recipe: Recipe,
    opts: BenchOptions,
    device: B::Device,
) -> Result<BenchReport> {
    recipe.check_trainable()?;
    let config = recipe.model_config(recipe_vocab(&recipe)?)?;
    if let Some(path) = &opts.hf_config_out {
        let json = serde_json::to_string_pretty(&config.to_hf_config(0, 0, "float32"))?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let t = &recipe.train;
    let shape = StepShape::from_section(t);
    let (adamw, lr) = AdamWConfig::from_section(recipe.optimizer()?);
    <Autodiff<B> as Backend>::seed(&device, t.seed);
    let (param_dtype, compute_dtype) = t.precision.dtypes();
    let mut model = config
        .init::<Autodiff<B>>(&device)
        .with_precision(param_dtype, compute_dtype);
    let mut optimizer = AdamW::<B>::new(adamw);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(t.seed);
    let vocab = config.vocab_size() as u32;
    let window = t.micro_batch_size * (t.seq_len + 1);
    let mut next_batch = || {
        let tokens: Vec<u32> = (0..window).map(|_| rng.random_range(0..vocab)).collect();
        Batch::from(tokens)
    };

    let mut times = Vec::with_capacity(opts.steps);
    let mut loss = f64::NAN;
    for i in 0..opts.warmup + opts.steps.max(1) {
        let start = Instant::now();
        let (next, out) = train_step(
            model,
            &mut optimizer,
            lr,
            shape,
            &NextToken,
            &mut SingleWorker,
            &mut next_batch,
            &device,
        );
        model = next;
        loss = out.loss.into_scalar().elem(); // waits for the device
        if i >= opts.warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let step_s = times[times.len() / 2];
    let tokens_per_step = (t.micro_batch_size * t.seq_len * t.grad_accum_steps) as f64;
    let tokens_per_s = tokens_per_step / step_s;
    let threads = rayon::current_num_threads();
    let peak_flops = crate::backend::peak_flops(t.backend, t.peak_flops, threads);
    let flops_per_token = config.flops_per_token(t.seq_len);
    let (peak_mem_mb, mem_kind) = match crate::backend::device_memory_mb::<B>(&device) {
        Some(mb) => (Some(mb), "device"),
        None => (metrics::peak_rss_mb(), "rss"),
    };
    Ok(BenchReport {
        framework: "kiln",
        backend: format!("{:?}", t.backend).to_lowercase(),
        precision: serde_json::to_value(t.precision)?
            .as_str()
            .unwrap_or("?")
            .to_string(),
        params: config.num_params(),
        micro_batch_size: t.micro_batch_size,
        seq_len: t.seq_len,
        grad_accum_steps: t.grad_accum_steps,
        step_s,
        best_step_s: times[0],
        tokens_per_s,
        flops_per_token,
        peak_flops,
        mfu: metrics::mfu(tokens_per_s * flops_per_token as f64, peak_flops),
        peak_mem_mb,
        mem_kind,
        loss,
        threads,
    })
}
