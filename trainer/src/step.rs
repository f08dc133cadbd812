//! One optimizer step: forward and backward over `grad_accum_steps` micro-batches, global-norm
//! clipping, AdamW. Shared by the training loop and `train bench`, so the benchmark times exactly
//! what training runs.
//!
//! The loss and the gradient norm are returned as device tensors. The one value read back per step
//! is the guard against non-finite steps (`guard_nonfinite`): the loss and the gradient norm,
//! before the update, so that a NaN or infinite gradient never reaches the weights or the AdamW
//! moments.

use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln_arch::{Model, Segments};
use kiln_data::Batch;

use crate::objective::{batch_tensors, GradSync, Objective};
use crate::optim::{accumulate_grads, clip_factor, grad_sq_norm, AdamW};

/// The shape of a step and its clipping threshold.
#[derive(Debug, Clone, Copy)]
pub struct StepShape {
    pub micro_batch_size: usize,
    pub seq_len: usize,
    pub grad_accum_steps: usize,
    /// Global-norm clipping threshold; `None` disables clipping.
    pub grad_clip: Option<f64>,
    /// Per-block activation checkpointing ([`Model::backward_checkpointed`]).
    pub activation_checkpointing: bool,
    /// Read the loss and gradient norm back before the update (one host sync per step) and
    /// leave the weights and optimizer state untouched when either is not finite.
    pub guard_nonfinite: bool,
}

impl StepShape {
    /// The step a recipe's `train` section describes.
    pub fn from_section(t: &crate::recipe::TrainSection) -> Self {
        Self {
            micro_batch_size: t.micro_batch_size,
            seq_len: t.seq_len,
            grad_accum_steps: t.grad_accum_steps,
            grad_clip: t.grad_clip,
            activation_checkpointing: t.activation_checkpointing,
            guard_nonfinite: true,
        }
    }
}

/// What a step leaves on the device.
pub struct StepOutput<B: Backend> {
    /// Mean loss over the micro-batches, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Global gradient norm before clipping, `[1]` (`None` when no parameter has a gradient).
    pub grad_norm: Option<Tensor<B, 1>>,
    /// With [`StepShape::guard_nonfinite`]: `Some((loss, grad_norm))` when one of them was not
    /// finite and the update was not applied.
    pub skipped_nonfinite: Option<(f64, f64)>,
}

/// Runs one optimizer step. `next_batch` is called `grad_accum_steps` times for micro-batches of
/// `[micro_batch_size, seq_len + 1]` token windows. The loss is `objective`'s mean over every
/// counted target of the step (see [`Objective`]); with no loss mask that is the mean of the
/// micro-batch means, as PyTorch users expect. `sync` combines the accumulated gradients across
/// workers before the norm is taken and clipped.
#[allow(clippy::too_many_arguments)]
pub fn train_step<B: Backend, O: Objective>(
    model: Model<Autodiff<B>>,
    optimizer: &mut AdamW<B>,
    lr: f64,
    shape: StepShape,
    objective: &O,
    sync: &mut dyn GradSync<B>,
    next_batch: &mut dyn FnMut() -> Batch,
    device: &B::Device,
) -> (Model<Autodiff<B>>, StepOutput<B>) {
    let (rows, seq_len) = (shape.micro_batch_size, shape.seq_len);
    // The micro-batches are drawn first (token ids only) so that the normaliser, the step's
    // counted targets, is known before the first backward pass.
    let batches: Vec<Batch> = (0..shape.grad_accum_steps).map(|_| next_batch()).collect();
    let counted: usize = batches
        .iter()
        .map(|b| objective.counted(b, rows, seq_len))
        .sum();
    let normaliser = counted.max(1) as f64;
    let mut grads = GradientsParams::new();
    let mut loss_sum: Option<Tensor<B, 1>> = None;
    for batch in &batches {
        let (inputs, targets) = batch_tensors::<Autodiff<B>>(
            &batch.tokens,
            batch.loss_mask.as_deref(),
            rows,
            seq_len,
            device,
        );
        // This micro-batch's forward context: the model's, plus the documents its rows pack.
        let segments = (batch.doc_ids.as_deref()).map(|ids| Segments::from_ids(rows, seq_len, ids));
        let ctx = model.ctx().with_segments(segments);
        let scaled_loss = |logits| objective.loss_sum(logits, targets).div_scalar(normaliser); // [1]
        let (scaled, micro) = if shape.activation_checkpointing {
            model.backward_checkpointed(inputs, &ctx, scaled_loss)
        } else {
            let loss = scaled_loss(model.forward_with(inputs, &ctx));
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            (loss.inner(), grads)
        };
        accumulate_grads(&model, &mut grads, micro);
        loss_sum = Some(match loss_sum {
            Some(s) => s + scaled,
            None => scaled,
        });
    }
    let loss = loss_sum.expect("grad_accum_steps >= 1");
    let grads = sync.sync(&model, grads);
    let grad_norm = grad_sq_norm(&model, &grads).map(|s| s.sqrt());
    if shape.guard_nonfinite {
        let loss_value: f64 = loss.clone().into_scalar().elem();
        let norm_value: f64 = grad_norm
            .clone()
            .map_or(0.0, |n| n.into_scalar().elem::<f64>());
        if !(loss_value.is_finite() && norm_value.is_finite()) {
            let out = StepOutput {
                loss,
                grad_norm,
                skipped_nonfinite: Some((loss_value, norm_value)),
            };
            return (model, out);
        }
    }
    let scale = match (shape.grad_clip, &grad_norm) {
        (Some(c), Some(n)) => Some(clip_factor(n.clone(), c)),
        _ => None,
    };
    let model = optimizer.step(lr, model, grads, scale);
    let out = StepOutput {
        loss,
        grad_norm,
        skipped_nonfinite: None,
    };
    (model, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{DType, FloatDType};
    use kiln_arch::{LlamaConfig, ModelConfig};

    use crate::objective::{NextToken, SingleWorker};
    use crate::optim::AdamWConfig;

    /// The backend's seed is process-wide: tests running in parallel would interleave their
    /// draws and initialise different models. Hold this from `seed` to the end of `init`.
    pub(super) fn lock_backend_rng() -> std::sync::MutexGuard<'static, ()> {
        static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
        BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// AdamW with β 0.9/0.95 and eps 1e-8, as the recipes use.
    fn adamw(weight_decay: f64, decay_embeddings: bool) -> AdamW<Flex> {
        AdamW::new(AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay,
            decay_embeddings,
        })
    }

    pub(super) fn tiny() -> ModelConfig {
        ModelConfig::Llama(LlamaConfig {
            vocab_size: 97,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 8,
            max_position_embeddings: 32,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            initializer_range: 0.02,
            layer_sharing: false,
            scaled_residual_init: false,
        })
    }

    /// Losses of `steps` optimizer steps (2 micro-batches each) on a fixed repeating batch, so
    /// the loss falls fast and differences in the numerics show.
    fn losses(
        param: FloatDType,
        compute: FloatDType,
        steps: usize,
        activation_checkpointing: bool,
    ) -> (Vec<f32>, DType) {
        let _rng = lock_backend_rng();
        let device = Default::default();
        <Autodiff<Flex> as Backend>::seed(&device, 7);
        let mut model = tiny()
            .init::<Autodiff<Flex>>(&device)
            .with_precision(param, compute);
        let mut optimizer = adamw(0.1, true);
        let shape = StepShape {
            micro_batch_size: 4,
            seq_len: 16,
            grad_accum_steps: 2,
            grad_clip: Some(1.0),
            activation_checkpointing,
            guard_nonfinite: true,
        };
        let mut k = 0u32;
        let mut next_batch = || {
            k += 1;
            Batch::from(
                (0..4 * 17)
                    .map(|i| (i * 7 + k % 2) % 97)
                    .collect::<Vec<u32>>(),
            )
        };
        let mut out = Vec::new();
        for _ in 0..steps {
            let (next, step) = train_step(
                model,
                &mut optimizer,
                1e-2,
                shape,
                &NextToken,
                &mut SingleWorker,
                &mut next_batch,
                &device,
            );
            model = next;
            out.push(step.loss.into_scalar().elem::<f32>());
        }
        let kiln_arch::Model::Llama(m) = &model else {
            unreachable!("tiny() is a Llama")
        };
        let dtype = m.layers[0].self_attn.q_proj.weight.val().dtype();
        (out, dtype)
    }

    #[test]
    fn bf16_mixed_training_tracks_f32() {
        let (f32_losses, f32_dtype) = losses(FloatDType::F32, FloatDType::F32, 8, false);
        let (mixed, mixed_dtype) = losses(FloatDType::F32, FloatDType::BF16, 8, false);
        let (pure, pure_dtype) = losses(FloatDType::BF16, FloatDType::BF16, 8, false);
        assert_eq!(f32_dtype, DType::F32);
        assert_eq!(
            mixed_dtype,
            DType::F32,
            "bf16-mixed keeps f32 master weights"
        );
        assert_eq!(pure_dtype, DType::BF16, "pure bf16 keeps bf16 weights");
        assert!(
            f32_losses[7] < f32_losses[0] - 0.5,
            "the reference run must learn: {f32_losses:?}"
        );
        for (i, ((a, b), c)) in f32_losses.iter().zip(&mixed).zip(&pure).enumerate() {
            // bf16 activations: ~0.4% relative error per rounding; the loss over 8 steps stays
            // within a few percent of the f32 run, and pure bf16 (rounded weights) a bit further.
            assert!(
                (a - b).abs() < 0.02 * a,
                "step {i}: f32 {a} vs bf16-mixed {b}"
            );
            assert!((a - c).abs() < 0.05 * a, "step {i}: f32 {a} vs bf16 {c}");
        }
        assert_ne!(
            f32_losses, mixed,
            "bf16-mixed must actually compute in bf16"
        );
    }

    #[test]
    fn activation_checkpointing_trains_identically() {
        // In f32 the two paths do the same arithmetic. In bf16-mixed, the tied embedding's two
        // gradient contributions and the bf16 roundings are summed in another order, and AdamW's
        // normalised update turns those last-bit differences into ~1e-4 relative loss changes.
        for (compute, tolerance) in [(FloatDType::F32, 1e-5), (FloatDType::BF16, 1e-3)] {
            let (plain, _) = losses(FloatDType::F32, compute, 6, false);
            let (checkpointed, _) = losses(FloatDType::F32, compute, 6, true);
            for (i, (a, b)) in plain.iter().zip(&checkpointed).enumerate() {
                assert!(
                    (a - b).abs() <= tolerance * a.abs(),
                    "{compute:?} step {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn gradient_accumulation_averages_micro_batches() {
        // Two identical micro-batches give the same step as one of them alone.
        let device = Default::default();
        let run = |accum: usize| {
            let rng = lock_backend_rng();
            <Autodiff<Flex> as Backend>::seed(&device, 3);
            let model = tiny().init::<Autodiff<Flex>>(&device);
            drop(rng);
            let mut optimizer = adamw(0.0, false);
            let shape = StepShape {
                micro_batch_size: 2,
                seq_len: 8,
                grad_accum_steps: accum,
                grad_clip: None,
                activation_checkpointing: false,
                guard_nonfinite: false,
            };
            let mut batch = || Batch::from((0..2 * 9).map(|i| (i * 5) % 97).collect::<Vec<u32>>());
            let (_, out) = train_step(
                model,
                &mut optimizer,
                1e-2,
                shape,
                &NextToken,
                &mut SingleWorker,
                &mut batch,
                &device,
            );
            let norm: f32 = out.grad_norm.expect("grads").into_scalar().elem();
            (out.loss.into_scalar().elem::<f32>(), norm)
        };
        let (l1, n1) = run(1);
        let (l2, n2) = run(2);
        assert!(
            (l1 - l2).abs() < 1e-5 && (n1 - n2).abs() < 1e-4 * n1,
            "{l1} {n1} vs {l2} {n2}"
        );
    }

    /// A step whose loss or gradient is not finite leaves the weights and the optimizer state
    /// as they were (the guard reads both before the update).
    #[test]
    fn a_nonfinite_step_changes_nothing() {
        let device = Default::default();
        let model = {
            let _rng = lock_backend_rng();
            <Autodiff<Flex> as Backend>::seed(&device, 7);
            tiny().init::<Autodiff<Flex>>(&device)
        };
        let mut tensors: std::collections::HashMap<String, kiln_arch::HfTensor> =
            crate::params::named_tensors(&model)
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect();
        let norm = tensors.get_mut("norm.weight").expect("final norm");
        norm.data[3] = f32::NAN;
        let model = crate::params::load_named_tensors(model, &tensors, "test").unwrap();
        let before = crate::params::named_tensors(&model);
        let mut optimizer = adamw(0.1, true);
        let shape = StepShape {
            micro_batch_size: 2,
            seq_len: 8,
            grad_accum_steps: 1,
            grad_clip: Some(1.0),
            activation_checkpointing: false,
            guard_nonfinite: true,
        };
        let mut batch = || Batch::from((0..2 * 9).map(|i| (i * 5) % 97).collect::<Vec<u32>>());
        let (model, out) = train_step(
            model,
            &mut optimizer,
            1e-2,
            shape,
            &NextToken,
            &mut SingleWorker,
            &mut batch,
            &device,
        );
        let (loss, _) = out.skipped_nonfinite.expect("the step is refused");
        assert!(loss.is_nan());
        let after = crate::params::named_tensors(&model);
        for (a, b) in before.iter().zip(&after) {
            let same = a
                .data
                .iter()
                .zip(&b.data)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{} changed", a.name);
        }
        assert!(
            optimizer.state_tensors().is_empty(),
            "no AdamW moments were made"
        );
    }
}

/// The objective and gradient-sync seams: loss masks, accumulation over micro-batches that count
/// different numbers of targets, and the sync's place between accumulation and clipping.
#[cfg(test)]
mod seam_tests {
    use burn::backend::{Autodiff, Flex};
    use burn::optim::GradientsParams;
    use burn::prelude::*;
    use kiln_arch::Model;
    use kiln_data::Batch;

    use super::{train_step, StepShape};
    use crate::objective::{GradSync, NextToken, SingleWorker};
    use crate::optim::{AdamW, AdamWConfig};
    use crate::params::named_tensors;

    type AB = Autodiff<Flex>;

    fn model() -> Model<AB> {
        let _held = super::tests::lock_backend_rng();
        let device = Default::default();
        <AB as Backend>::seed(&device, 21);
        super::tests::tiny().init(&device)
    }

    fn shape(rows: usize, accum: usize) -> StepShape {
        StepShape {
            micro_batch_size: rows,
            seq_len: 8,
            grad_accum_steps: accum,
            grad_clip: None,
            activation_checkpointing: false,
            guard_nonfinite: false,
        }
    }

    /// Loss, gradient norm and the updated weights of one step over `batches`.
    fn step(
        batches: Vec<Batch>,
        rows: usize,
        sync: &mut dyn GradSync<Flex>,
    ) -> (f32, f32, Vec<f32>) {
        let device = Default::default();
        let mut optimizer = AdamW::<Flex>::new(AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_embeddings: false,
        });
        let accum = batches.len();
        let mut queue = batches.into_iter();
        let (model, out) = train_step(
            model(),
            &mut optimizer,
            1e-2,
            shape(rows, accum),
            &NextToken,
            sync,
            &mut || queue.next().expect("enough batches"),
            &device,
        );
        let weights = named_tensors(&model)
            .into_iter()
            .flat_map(|t| t.data)
            .collect();
        let norm = out.grad_norm.expect("grads").into_scalar().elem();
        (out.loss.into_scalar().elem(), norm, weights)
    }

    fn tokens(rows: usize, salt: u32) -> Vec<u32> {
        (0..rows as u32 * 9).map(|i| (i * 31 + salt) % 97).collect()
    }

    fn masked(tokens: Vec<u32>, mask: Vec<bool>) -> Batch {
        Batch {
            tokens,
            loss_mask: Some(mask),
            doc_ids: None,
        }
    }

    /// A row packing two documents trains exactly as the two documents in rows of their own:
    /// same loss, gradient norm and update. The packed row is `A (4 tokens) | B (5 tokens)`, its
    /// target crossing from A into B masked out; alone, each document is padded at its end
    /// (causal, so the padding does not reach it) and its padding targets masked out.
    #[test]
    fn a_packed_row_trains_as_its_documents_alone() {
        let (a, b) = ([11u32, 52, 7, 90], [3u32, 64, 28, 45, 19]);
        let packed_tokens = [&a[..], &b[..]].concat(); // 9 tokens: one window of 8 inputs
        let mut packed_mask = vec![true; 8];
        packed_mask[3] = false; // a3 -> b0
        let packed = Batch {
            tokens: packed_tokens.clone(),
            loss_mask: Some(packed_mask.clone()),
            doc_ids: Some(vec![0, 0, 0, 0, 1, 1, 1, 1]),
        };
        let pad = |doc: &[u32]| [doc, &vec![1u32; 9 - doc.len()][..]].concat();
        let targets = |doc: &[u32]| (0..8).map(|i| i + 1 < doc.len()).collect::<Vec<_>>();
        let alone = masked(
            [pad(&a), pad(&b)].concat(),
            [targets(&a), targets(&b)].concat(),
        );
        let (lp, np, wp) = step(vec![packed], 1, &mut SingleWorker);
        let (la, na, wa) = step(vec![alone], 2, &mut SingleWorker);
        assert!((lp - la).abs() < 1e-5, "loss {lp} vs {la}");
        assert!((np - na).abs() < 1e-5 * na, "grad norm {np} vs {na}");
        assert!(close(&wp, &wa, 1e-5), "updated weights differ");
        // Without the document ids B attends to A: the same row trains differently.
        let (lu, _, _) = step(
            vec![masked(packed_tokens, packed_mask)],
            1,
            &mut SingleWorker,
        );
        assert!((lu - la).abs() > 1e-4, "loss {lu} vs {la}");
    }

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
    }

    #[test]
    fn an_all_true_mask_is_no_mask() {
        let plain = step(vec![Batch::from(tokens(2, 1))], 2, &mut SingleWorker);
        let all = step(
            vec![masked(tokens(2, 1), vec![true; 16])],
            2,
            &mut SingleWorker,
        );
        assert_eq!(plain.0, all.0);
        assert_eq!(plain.2, all.2);
    }

    /// A target the mask excludes has no influence at all: changing that token (the last of a
    /// window, so it is no input either) changes neither the loss nor the update.
    #[test]
    fn masked_targets_do_not_train() {
        let mut mask = vec![true; 16];
        mask[7] = false; // row 0, last target = token 8 of the window
        let a = tokens(2, 1);
        let mut b = a.clone();
        b[8] = (b[8] + 40) % 97;
        let (la, _, wa) = step(vec![masked(a.clone(), mask.clone())], 2, &mut SingleWorker);
        let (lb, _, wb) = step(vec![masked(b.clone(), mask)], 2, &mut SingleWorker);
        assert_eq!(la, lb);
        assert_eq!(wa, wb);
        // Without the mask the same change does move the loss.
        let (lc, _, _) = step(vec![Batch::from(b)], 2, &mut SingleWorker);
        let (ld, _, _) = step(vec![Batch::from(a)], 2, &mut SingleWorker);
        assert_ne!(lc, ld);
    }

    /// Two micro-batches counting 3 and 12 targets give the step of one batch holding both: the
    /// mean is over the step's counted targets, not a mean of micro-batch means.
    #[test]
    fn accumulation_over_unequal_masks_equals_one_batch() {
        let (t1, t2) = (tokens(2, 1), tokens(2, 5));
        let mut m1 = vec![false; 16];
        m1[2] = true;
        m1[9] = true;
        m1[15] = true;
        let mut m2 = vec![true; 16];
        m2[0] = false;
        m2[4] = false;
        m2[11] = false;
        m2[12] = false;
        let split = step(
            vec![
                masked(t1.clone(), m1.clone()),
                masked(t2.clone(), m2.clone()),
            ],
            2,
            &mut SingleWorker,
        );
        let joined = step(
            vec![masked([t1, t2].concat(), [m1, m2].concat())],
            4,
            &mut SingleWorker,
        );
        assert!(
            (split.0 - joined.0).abs() < 1e-5,
            "{} vs {}",
            split.0,
            joined.0
        );
        assert!((split.1 - joined.1).abs() < 1e-4 * joined.1);
        assert!(close(&split.2, &joined.2, 1e-5));
    }

    /// The sync sees the accumulated gradients once per step, before the norm is taken.
    #[test]
    fn the_sync_runs_between_accumulation_and_clipping() {
        struct Doubling(usize);
        impl GradSync<Flex> for Doubling {
            fn sync(&mut self, model: &Model<AB>, grads: GradientsParams) -> GradientsParams {
                self.0 += 1;
                let mut doubled = GradientsParams::new();
                for id in burn::module::list_param_ids(model) {
                    if let Some(g) = grads.get::<Flex, 2>(id) {
                        doubled.register(id, g.mul_scalar(2.0));
                    } else if let Some(g) = grads.get::<Flex, 1>(id) {
                        doubled.register(id, g.mul_scalar(2.0));
                    }
                }
                doubled
            }
        }
        let batches = || vec![Batch::from(tokens(2, 1)), Batch::from(tokens(2, 3))];
        let (_, plain, _) = step(batches(), 2, &mut SingleWorker);
        let mut doubling = Doubling(0);
        let (_, doubled, _) = step(batches(), 2, &mut doubling);
        assert_eq!(doubling.0, 1, "once per step, not per micro-batch");
        assert!(
            (doubled - 2.0 * plain).abs() < 1e-5 * plain,
            "{doubled} vs 2 × {plain}"
        );
    }
}
