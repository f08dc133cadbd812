//! Training-step benchmark on the CPU backend: `cargo bench -p kiln-trainer --bench step`.
//!
//! Two configurations, both built from `recipes/tinystories-tiny.yaml` (through the recipe's own
//! `--set` overrides, so defaults such as RoPE θ and the norm ε are the recipe's):
//! - `quickstart`: the recipe as it is;
//! - `3M`: the earlier quickstart shape (d_model 192, 6 layers, 6 heads / 2 KV heads, SwiGLU 512,
//!   seq 256, micro-batch 16: 2.76M parameters, 4,096 tokens per step).
//!
//! Random token ids stand in for the data (a step's cost does not depend on them). Each phase is
//! timed on its own for `KILN_BENCH_STEPS` steps (default 8) after one warm-up step; the table
//! shows medians:
//! - forward: `model.forward` + cross-entropy, recording the autodiff graph;
//! - forward+backward: the above + `backward()` + `GradientsParams::from_grads`;
//! - optimizer: global gradient norm + clip factor + the AdamW update;
//! - tokens/s: `micro_batch × seq_len / (forward+backward + optimizer)`.
//!
//! Environment: `KILN_BENCH_CONFIG=quickstart|3M` runs one configuration only;
//! `KILN_BENCH_RECIPE=path` benchmarks another recipe as it is; `KILN_BENCH_THREADS` sizes the
//! rayon pool. On a shared machine, compare runs taken at the same load (`uptime`).

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use kiln_arch::Model;
use kiln_data::TokenizerSpec;
use kiln_trainer::loss::cross_entropy;
use kiln_trainer::optim::{clip_factor, grad_sq_norm, AdamW, AdamWConfig};
use kiln_trainer::recipe::Recipe;
use rand::{Rng, SeedableRng};

type B = Autodiff<Flex>;

/// The pre-2026-11 quickstart shape, as overrides of the quickstart recipe.
const CONFIG_3M: &[&str] = &[
    "model.d_model=192",
    "model.n_layers=6",
    "model.n_heads=6",
    "model.n_kv_heads=2",
    "model.ffn_hidden=512",
    "model.max_seq_len=256",
    "train.seq_len=256",
    "train.micro_batch_size=16",
];

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Timings {
    forward: f64,
    forward_backward: f64,
    optimizer: f64,
    best_step: f64,
    tokens: usize,
    final_loss: f32,
}

fn bench(recipe: &Recipe, steps: usize) -> Timings {
    // The tokenizer's vocabulary, without training it: a BPE recipe says its size.
    let vocab = match &recipe.tokenizer {
        TokenizerSpec::TrainBpe { vocab_size, .. } => *vocab_size,
        TokenizerSpec::File { .. } => 2048,
    };
    let config = recipe.model_config(vocab).expect("model config");
    let (batch, seq) = (recipe.train.micro_batch_size, recipe.train.seq_len);
    let (adamw, lr) = AdamWConfig::from_section(recipe.optimizer().expect("train.optimizer"));

    let device = Default::default();
    B::seed(&device, 1337);
    let mut model: Model<B> = config.init(&device);
    let mut optimizer = AdamW::<Flex>::new(adamw);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let vocab = config.vocab_size() as i64;

    let (mut fwd, mut fwd_bwd, mut opt) = (Vec::new(), Vec::new(), Vec::new());
    let mut final_loss = f32::NAN;
    for step in 0..=steps {
        let ids: Vec<i64> = (0..batch * (seq + 1))
            .map(|_| rng.random_range(0..vocab))
            .collect();
        let all = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch, seq + 1]), &device);
        let inputs = all.clone().slice([0..batch, 0..seq]);
        let targets = all.slice([0..batch, 1..seq + 1]);

        // Forward alone (the graph it records is dropped).
        let t0 = Instant::now();
        let loss = cross_entropy(model.forward(inputs.clone()), targets.clone());
        let t_fwd = t0.elapsed().as_secs_f64();
        drop(loss);

        // Forward + backward.
        let t0 = Instant::now();
        let loss = cross_entropy(model.forward(inputs), targets);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let t_fwd_bwd = t0.elapsed().as_secs_f64();

        // Clipping + AdamW, in the training loop's order.
        let t0 = Instant::now();
        let norm = grad_sq_norm(&model, &grads).map(|s| s.sqrt());
        let scale = norm.map(|n| clip_factor(n, 1.0));
        model = optimizer.step(lr, model, grads, scale);
        let t_opt = t0.elapsed().as_secs_f64();

        final_loss = loss.into_scalar().elem();
        if step > 0 {
            fwd.push(t_fwd);
            fwd_bwd.push(t_fwd_bwd);
            opt.push(t_opt);
        }
    }
    let best_step = fwd_bwd
        .iter()
        .zip(&opt)
        .map(|(a, b)| a + b)
        .fold(f64::INFINITY, f64::min);
    Timings {
        forward: median(fwd),
        forward_backward: median(fwd_bwd),
        optimizer: median(opt),
        best_step,
        tokens: batch * seq,
        final_loss,
    }
}

fn main() {
    if let Some(n) = env_usize("KILN_BENCH_THREADS") {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .expect("rayon pool");
    }
    let steps = env_usize("KILN_BENCH_STEPS").unwrap_or(8).max(1);
    let quickstart =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../recipes/tinystories-tiny.yaml");
    let runs: Vec<(String, PathBuf, &[&str])> = match std::env::var("KILN_BENCH_RECIPE") {
        Ok(path) => vec![(path.clone(), PathBuf::from(path), &[])],
        Err(_) => {
            let which = std::env::var("KILN_BENCH_CONFIG").unwrap_or_default();
            [
                ("quickstart".to_string(), quickstart.clone(), &[][..]),
                ("3M".to_string(), quickstart, CONFIG_3M),
            ]
            .into_iter()
            .filter(|(name, _, _)| which.is_empty() || which.eq_ignore_ascii_case(name))
            .collect()
        }
    };
    println!(
        "kiln step benchmark: Autodiff<Flex>, rayon threads {}, median of {steps} steps after 1 warm-up",
        rayon::current_num_threads()
    );
    println!();
    println!("| config | params | tokens/step | forward ms | fwd+bwd ms | optimizer ms | tokens/s | best tokens/s | last loss |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, path, overrides) in runs {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let recipe = Recipe::load(&path, &overrides).expect("recipe");
        let params = recipe
            .model_config(match &recipe.tokenizer {
                TokenizerSpec::TrainBpe { vocab_size, .. } => *vocab_size,
                TokenizerSpec::File { .. } => 2048,
            })
            .expect("model config")
            .num_params();
        let t = bench(&recipe, steps);
        let step = t.forward_backward + t.optimizer;
        println!(
            "| {name} | {:.2}M | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.4} |",
            params as f64 / 1e6,
            t.tokens,
            t.forward * 1e3,
            t.forward_backward * 1e3,
            t.optimizer * 1e3,
            t.tokens as f64 / step,
            t.tokens as f64 / t.best_step,
            t.final_loss,
        );
        assert!(t.final_loss.is_finite(), "{name}: loss {}", t.final_loss);
    }
}
