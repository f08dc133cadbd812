//! The wgpu backend agrees with the CPU backend (`flex`): same weights → same logits, and the same
//! AdamW training steps → same losses, gradient norms and weights; for Llama (tied, untied, with
//! layer sharing), Mamba, Mamba-2 and the hybrid.
//!
//! Flex runs kiln's fused CPU kernels (RMSNorm, SwiGLU, RoPE + attention, cross-entropy, the
//! selective scan, the Mamba conv / softplus / gate, each with a hand-written backward); wgpu runs
//! burn's generic ops compiled to WGSL shaders (with fusion and autotune, as the `train` binary
//! builds it): the code path every GPU runs. So this also checks the fused kernels against the
//! generic maths on a second, independent implementation.
//!
//! Needs a Vulkan adapter. Without a GPU, Mesa's software driver (lavapipe / llvmpipe) does:
//! `apt-get install mesa-vulkan-drivers` (Debian/Ubuntu; `vulkaninfo --summary` from `vulkan-tools`
//! should list `llvmpipe`). Run with
//! `cargo test --release -p kiln-trainer --features wgpu --test backends`.
//!
//! Tolerances (all f32). Both backends compute the same maths in a different order (tiled
//! matmuls, tree reductions, fused kernels), so results differ by a few ulps per op, accumulated
//! over the depth. With init std 0.1 the logits are O(1) (max |logit| ≈ 3), and on lavapipe the
//! max |Δlogit| is ≈ 3e-6: `LOGITS_TOL` = 1e-4 leaves 30× slack while any real mistake (mask, RoPE
//! offset, GQA grouping, a missing scale) moves logits by ≥ 1e-2. Five AdamW steps at lr 1e-2 (the
//! tiny model goes from loss ≈ 4.9 to ≈ 1): losses and gradient norms agree to ≲ 3e-5, checked at
//! 1e-3. Weights: Adam divides by √v, so an element whose gradient is ~0 takes a step of up to ~lr
//! whose size and sign are set by rounding noise, and this fast-moving regime amplifies small
//! differences: over 11 runs (4 seeds, both tyings) the worst tensor differed by 1.3e-4 in
//! relative norm and the worst element by 1.2e-3. Bounds: 1e-3 relative per tensor, 5e-3 per
//! element (half of one step's lr).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use burn::backend::wgpu::{graphics::Vulkan, init_setup, WgpuDevice};
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::cubecl::config::cache::CacheConfig;
use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
use burn::prelude::*;
use kiln_arch::{
    HybridConfig, LlamaConfig, Mamba2Config, MambaConfig, Model, ModelConfig, Segments,
};
use kiln_data::Batch;
use kiln_trainer::loss::cross_entropy;
use kiln_trainer::objective::{batch_tensors, NextToken, SingleWorker};
use kiln_trainer::optim::{AdamW, AdamWConfig};
use kiln_trainer::params::{load_named_tensors, named_tensors};
use kiln_trainer::step::{train_step, StepShape};

const LOGITS_TOL: f32 = 1e-4;
const TRAIN_TOL: f64 = 1e-3;
const WEIGHT_REL_TOL: f64 = 1e-3;
const WEIGHT_ABS_TOL: f32 = 5e-3;
/// Init seed (on Flex; the weights are then copied to wgpu). Best effort: Flex's RNG is
/// process-wide and the tests run in parallel, so the draws may interleave between tests.
const SEED: u64 = 20240611;

/// The wgpu device, after checking once (for all tests) that a Vulkan adapter exists. Without one
/// the test FAILS, saying how to get one: a silently skipped backend test proves nothing.
fn wgpu_device() -> WgpuDevice {
    static ADAPTER: OnceLock<Result<String, String>> = OnceLock::new();
    let adapter = ADAPTER.get_or_init(|| {
        // cubecl writes its autotune cache under `target/` next to the nearest Cargo.toml above
        // the working directory, which for a test is `trainer/` (not git-ignored): keep it in this
        // build's target directory instead. Environment overrides (`CUBECL_AUTOTUNE_LEVEL`, ...)
        // still apply.
        let mut config = CubeClRuntimeConfig::default().override_from_env();
        config.autotune.cache =
            CacheConfig::File(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cubecl"));
        CubeClRuntimeConfig::set(config);
        let device = WgpuDevice::DefaultDevice;
        std::panic::catch_unwind(|| {
            let setup = init_setup::<Vulkan>(&device, Default::default());
            let info = setup.adapter.get_info();
            format!(
                "{} ({:?}, driver {} {})",
                info.name, info.device_type, info.driver, info.driver_info
            )
        })
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    match adapter {
        Ok(name) => {
            eprintln!("wgpu adapter: {name}");
            WgpuDevice::DefaultDevice
        }
        Err(e) => panic!(
            "no Vulkan adapter for the wgpu backend ({e}).\n\
             Without a GPU, install Mesa's software Vulkan driver (lavapipe): \
             `apt-get install mesa-vulkan-drivers` (and `vulkan-tools`; `vulkaninfo --summary` \
             must list llvmpipe), then rerun \
             `cargo test --release -p kiln-trainer --features wgpu --test backends`."
        ),
    }
}

/// A small Llama with every feature the real ones use: GQA (4 query heads on 2 KV heads),
/// head_dim ≠ hidden/heads, RoPE. Init std 0.1 (not 0.02) so logits are O(1) and the comparison
/// means something.
fn llama(tied: bool, layer_sharing: bool) -> ModelConfig {
    ModelConfig::Llama(LlamaConfig {
        vocab_size: 96,
        hidden_size: 64,
        intermediate_size: 160,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 24,
        max_position_embeddings: 64,
        tie_word_embeddings: tied,
        initializer_range: 0.1,
        layer_sharing,
        ..LlamaConfig::smollm_135m()
    })
}

/// A small Mamba-1 (tied head, as `mamba-130m`).
fn mamba() -> ModelConfig {
    ModelConfig::Mamba(MambaConfig {
        vocab_size: 96,
        hidden_size: 32,
        state_size: 8,
        num_hidden_layers: 2,
        expand: 2,
        conv_kernel: 4,
        time_step_rank: 4,
        initializer_range: 0.2,
        ..MambaConfig::mamba_130m()
    })
}

/// A small Mamba-2 with two groups (B and C shared by the heads of a group).
fn mamba2() -> ModelConfig {
    ModelConfig::Mamba2(Mamba2Config {
        state_size: 8,
        n_groups: 2,
        chunk_size: 8,
        initializer_range: 0.2,
        ..Mamba2Config::new(96, 32, 2, 4, 16)
    })
}

/// A small hybrid: Mamba, attention (GQA, no RoPE), Mamba.
fn hybrid() -> ModelConfig {
    ModelConfig::Hybrid(HybridConfig {
        vocab_size: 96,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        attn_layer_period: 3,
        attn_layer_offset: 1,
        mamba_d_state: 8,
        mamba_d_conv: 4,
        mamba_expand: 2,
        mamba_dt_rank: 4,
        mamba_conv_bias: true,
        mamba_proj_bias: false,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: true,
        initializer_range: 0.2,
        max_position_embeddings: 64,
    })
}

/// The same weights on two backends: seeded init on the first, copied by name to the other.
fn models<A: Backend, B: Backend>(
    config: &ModelConfig,
    da: &A::Device,
    db: &B::Device,
) -> (Model<A>, Model<B>) {
    A::seed(da, SEED);
    let a: Model<A> = config.init(da);
    let weights: HashMap<_, _> = named_tensors(&a)
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let b = load_named_tensors(config.init::<B>(db), &weights, "flex weights").unwrap();
    (a, b)
}

/// Deterministic token ids, 2 windows of 33 (`[2, 32]` inputs and their next-token targets).
fn batch_ids(vocab: usize) -> Vec<u32> {
    (0..2 * 33)
        .map(|i| ((i * 7919 + 13) % vocab) as u32)
        .collect()
}

/// [`batch_ids`] as (inputs `[2, 32]`, targets `[2, 32]`) tensors.
fn batch<B: Backend>(vocab: usize, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    batch_tensors::<B>(&batch_ids(vocab), None, 2, 32, device)
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn logits_agree(label: &str, config: ModelConfig) {
    let wgpu = wgpu_device();
    let (flex, gpu) = models::<Flex, Wgpu>(&config, &Default::default(), &wgpu);
    let (inputs_f, targets_f) = batch::<Flex>(config.vocab_size(), &Default::default());
    let (inputs_g, targets_g) = batch::<Wgpu>(config.vocab_size(), &wgpu);

    let logits_f = flex.forward(inputs_f);
    let logits_g = gpu.forward(inputs_g);
    assert_eq!(logits_f.dims(), logits_g.dims());
    let (lf, lg) = (to_vec(logits_f.clone()), to_vec(logits_g.clone()));
    let scale = lf.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let diff = max_abs_diff(&lf, &lg);
    eprintln!("{label}: max |logit| {scale:.3}, max |Δlogit| {diff:.3e}");
    assert!(
        scale > 0.5,
        "logits too small for a meaningful test: {scale}"
    );
    assert!(
        diff < LOGITS_TOL,
        "{label}: max |logits(wgpu) − logits(flex)| = {diff:e} ≥ {LOGITS_TOL:e}"
    );

    let loss_f: f32 = cross_entropy(logits_f, targets_f).into_scalar();
    let loss_g: f32 = cross_entropy(logits_g, targets_g).into_scalar().elem();
    assert!(
        (loss_f - loss_g).abs() < LOGITS_TOL,
        "{label}: loss wgpu {loss_g} vs flex {loss_f}"
    );

    // Packed rows (documents kept apart: attention masks and RoPE positions, Mamba's conv and
    // state resets): the generic code on wgpu against the fused kernels on flex.
    let segments = Segments::from_lengths(32, &[vec![10, 1, 21], vec![32]]);
    let (inputs_f, _) = batch::<Flex>(config.vocab_size(), &Default::default());
    let (inputs_g, _) = batch::<Wgpu>(config.vocab_size(), &wgpu);
    let packed_f = flex.forward_with(inputs_f, &flex.ctx().with_segments(Some(segments.clone())));
    let packed_g = gpu.forward_with(inputs_g, &gpu.ctx().with_segments(Some(segments)));
    let (pf, pg) = (to_vec(packed_f), to_vec(packed_g));
    let diff = max_abs_diff(&pf, &pg);
    assert!(
        diff < LOGITS_TOL && max_abs_diff(&pf, &lf) > 1e-2,
        "{label}: packed logits wgpu vs flex: max diff {diff:e} (or packing changed nothing)"
    );

    // Generation path (KV cache, masked attention when the chunk is shorter than the keys): the
    // cached logits of the last positions equal the full forward's, on wgpu.
    let (inputs_g, _) = batch::<Wgpu>(config.vocab_size(), &wgpu);
    let mut cache = gpu.new_cache(2);
    let first = gpu.forward_cached(inputs_g.clone().slice([0..2, 0..24]), &mut cache);
    let rest = gpu.forward_cached(inputs_g.slice([0..2, 24..32]), &mut cache);
    let cached = to_vec(Tensor::cat(vec![first, rest], 1));
    let diff = max_abs_diff(&cached, &lf);
    assert!(
        diff < LOGITS_TOL,
        "{label}: wgpu cached logits vs flex: max diff {diff:e}"
    );
}

fn training_agrees(label: &str, config: ModelConfig) {
    let wgpu = wgpu_device();
    let (flex, gpu) = models::<Autodiff<Flex>, Autodiff<Wgpu>>(&config, &Default::default(), &wgpu);
    let f = train_steps(flex, &config, &Default::default());
    let g = train_steps(gpu, &config, &wgpu);
    for (i, ((lf, nf), (lg, ng))) in f.0.iter().zip(&g.0).enumerate() {
        eprintln!(
            "{label} step {i}: loss flex {lf:.6} wgpu {lg:.6}, grad norm flex {nf:.6} wgpu {ng:.6}"
        );
        assert!(
            (lf - lg).abs() < TRAIN_TOL,
            "{label} step {i}: loss wgpu {lg} vs flex {lf}"
        );
        assert!(
            (nf - ng).abs() < TRAIN_TOL * nf.max(1.0),
            "{label} step {i}: grad norm wgpu {ng} vs flex {nf}"
        );
    }
    assert!(
        f.0.last().unwrap().0 < f.0[0].0 - 0.1,
        "{label}: the loss should drop over the steps: {:?}",
        f.0
    );
    // Weights: every tensor's relative distance ‖w_wgpu − w_flex‖ / ‖w_flex‖, and the largest
    // single-element difference (see the module doc for why that one is looser).
    let wf: HashMap<_, _> = f.1.into_iter().map(|t| (t.name.clone(), t)).collect();
    let (mut worst_rel, mut worst_abs) = ((0.0f64, String::new()), (0.0f32, String::new()));
    for t in g.1 {
        let flex = &wf[&t.name].data;
        let (d2, n2) = t
            .data
            .iter()
            .zip(flex)
            .fold((0.0f64, 0.0f64), |(d, n), (a, b)| {
                (d + ((a - b) as f64).powi(2), n + (*b as f64).powi(2))
            });
        let rel = (d2 / n2).sqrt();
        if rel > worst_rel.0 {
            worst_rel = (rel, t.name.clone());
        }
        let abs = max_abs_diff(&t.data, flex);
        if abs > worst_abs.0 {
            worst_abs = (abs, t.name);
        }
    }
    eprintln!(
        "{label}: after training, max relative |Δw| {:.3e} ({}), max |Δw| {:.3e} ({})",
        worst_rel.0, worst_rel.1, worst_abs.0, worst_abs.1
    );
    assert!(
        worst_rel.0 < WEIGHT_REL_TOL,
        "{label}: after training, `{}` differs by {:e} (relative norm) between wgpu and flex",
        worst_rel.1,
        worst_rel.0
    );
    assert!(
        worst_abs.0 < WEIGHT_ABS_TOL,
        "{label}: after training, an element of `{}` differs by {:e} between wgpu and flex",
        worst_abs.1,
        worst_abs.0
    );
}

/// Five steps of the training loop's own step function (forward, cross-entropy, backward,
/// global-norm clipping at 1.0, AdamW) on the fixed batch. Returns (loss, grad norm) per step and
/// the final weights.
fn train_steps<I: Backend>(
    mut model: Model<Autodiff<I>>,
    config: &ModelConfig,
    device: &I::Device,
) -> (Vec<(f64, f64)>, Vec<kiln_arch::HfTensor>) {
    let mut opt = AdamW::<I>::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        decay_embeddings: false,
    });
    let shape = StepShape {
        micro_batch_size: 2,
        seq_len: 32,
        grad_accum_steps: 1,
        grad_clip: Some(1.0),
        activation_checkpointing: false,
        guard_nonfinite: false,
    };
    let mut out = Vec::new();
    for _ in 0..5 {
        let (next, step) = train_step(
            model,
            &mut opt,
            1e-2,
            shape,
            &NextToken,
            &mut SingleWorker,
            &mut || Batch::from(batch_ids(config.vocab_size())),
            device,
        );
        model = next;
        let loss: f64 = step.loss.into_scalar().elem();
        let norm: f64 = step.grad_norm.expect("gradients").into_scalar().elem();
        out.push((loss, norm));
    }
    (out, named_tensors(&model))
}

#[test]
fn logits_agree_tied() {
    logits_agree("llama tied", llama(true, false));
}

#[test]
fn logits_agree_untied_layer_sharing() {
    logits_agree("llama untied, layer sharing", llama(false, true));
}

#[test]
fn training_steps_agree_tied() {
    training_agrees("llama tied", llama(true, false));
}

#[test]
fn training_steps_agree_untied() {
    training_agrees("llama untied", llama(false, false));
}

#[test]
fn state_space_models_logits_agree() {
    logits_agree("mamba", mamba());
    logits_agree("mamba2", mamba2());
    logits_agree("hybrid", hybrid());
}

#[test]
fn state_space_models_training_steps_agree() {
    training_agrees("mamba", mamba());
    training_agrees("mamba2", mamba2());
    training_agrees("hybrid", hybrid());
}

/// Deterministic values in [0, 1) of `shape` on `d`.
fn pattern<Bk: Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    d: &Bk::Device,
) -> Tensor<Bk, D> {
    let n = shape.iter().product::<usize>() as u64;
    let vals = (0..n).map(|i| ((i * 2_654_435_761 + seed * 97) % 1000) as f32 / 1000.0);
    Tensor::from_data(TensorData::new(vals.collect(), shape), d)
}

/// Mamba-1's selective scan (`chunk`: `None` sequential, else chunked): `(y, final state)`.
fn mamba_scan<Bk: Backend>(l: usize, chunk: Option<usize>, d: &Bk::Device) -> (Vec<f32>, Vec<f32>) {
    use kiln_arch::mamba::{selective_scan_chunked, selective_scan_sequential};
    let (b, e, n) = (2, 6, 4);
    let (x, dt) = (pattern::<Bk, 3>([b, l, e], 4, d), pattern([b, l, e], 5, d));
    let a = pattern::<Bk, 2>([e, n], 6, d).neg();
    let (bb, c) = (pattern([b, l, n], 7, d), pattern([b, l, n], 8, d));
    let (y, state) = match chunk {
        Some(chunk) => selective_scan_chunked(x, dt, a, bb, c, None, chunk, None),
        None => selective_scan_sequential(x, dt, a, bb, c, None, None),
    };
    (to_vec(y), to_vec(state))
}

/// Mamba-2's SSD recurrence (`chunk`: `None` sequential, else chunked): `(y, final state)`.
fn ssd<Bk: Backend>(l: usize, chunk: Option<usize>, d: &Bk::Device) -> (Vec<f32>, Vec<f32>) {
    use kiln_arch::mamba2::{ssd_chunked, ssd_sequential};
    let (b, h, p, g, n) = (2, 4, 3, 2, 5);
    let signed = |t: Tensor<Bk, 4>| t.mul_scalar(2.0).sub_scalar(1.0); // [-1, 1)
    let x = signed(pattern([b, l, h, p], 1, d));
    let (bb, c) = (
        signed(pattern([b, l, g, n], 2, d)),
        signed(pattern([b, l, g, n], 3, d)),
    );
    let dt = Tensor::<Bk, 1>::from_floats([0.1, 0.3, 0.7, 1.1], d)
        .reshape([1, 1, h])
        .repeat_dim(0, b)
        .repeat_dim(1, l);
    let a = Tensor::<Bk, 1>::from_floats([-0.5, -1.0, -2.0, -0.2], d);
    let (y, state) = match chunk {
        Some(chunk) => ssd_chunked(x, dt, a, bb, c, None, chunk, None),
        None => ssd_sequential(x, dt, a, bb, c, None, None),
    };
    (to_vec(y), to_vec(state))
}

/// The scans' sequential and chunked forms on wgpu against the sequential forms on flex
/// (Mamba-1's and Mamba-2's), with and without padding of the last chunk. The models use the
/// sequential Mamba-1 scan and the chunked SSD on GPUs; the chunked SSD once read wrong elements
/// on wgpu only (a reshape chain on a permuted tensor, see `mamba2::ssd_chunked`): the model
/// tests above would show it too, this one names the function.
#[test]
fn scan_forms_agree_across_backends() {
    let wgpu = wgpu_device();
    type Form = fn(usize, Option<usize>, &WgpuDevice) -> (Vec<f32>, Vec<f32>);
    type Reference =
        fn(usize, Option<usize>, &burn::backend::flex::FlexDevice) -> (Vec<f32>, Vec<f32>);
    let forms: [(&str, Reference, Form); 2] = [
        ("mamba scan", mamba_scan::<Flex>, mamba_scan::<Wgpu>),
        ("ssd", ssd::<Flex>, ssd::<Wgpu>),
    ];
    for (name, reference, on_wgpu) in forms {
        for l in [16, 13] {
            let (y_ref, s_ref) = reference(l, None, &Default::default());
            for chunk in [None, Some(8)] {
                let (y, s) = on_wgpu(l, chunk, &wgpu);
                let (dy, ds) = (max_abs_diff(&y, &y_ref), max_abs_diff(&s, &s_ref));
                eprintln!("{name} l {l} chunk {chunk:?}: wgpu vs flex y {dy:.3e}, state {ds:.3e}");
                assert!(
                    dy < LOGITS_TOL && ds < LOGITS_TOL,
                    "{name} l {l} chunk {chunk:?}: wgpu differs from flex: y {dy:e}, state {ds:e}"
                );
            }
        }
    }
}
