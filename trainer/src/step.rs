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
use burn::tensor::TensorData;
use kiln_arch::Model;

use crate::loss::cross_entropy;
use crate::optim::{accumulate_grads, clip_factor, grad_sq_norm, AdamW};

/// `[batch, seq + 1]` token windows → (inputs `[batch, seq]`, targets `[batch, seq]`).
pub fn batch_tensors<B: Backend>(
    tokens: &[u32],
    batch: usize,
    seq_len: usize,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let data: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let all = Tensor::<B, 2, Int>::from_data(TensorData::new(data, [batch, seq_len + 1]), device);
    let inputs = all.clone().slice([0..batch, 0..seq_len]);
    let targets = all.slice([0..batch, 1..seq_len + 1]);
    (inputs, targets)
}

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

/// Runs one optimizer step. `next_batch` is called `grad_accum_steps` times for
/// `[micro_batch_size, seq_len + 1]` token windows. Each micro-batch loss is divided by the number
/// of micro-batches, so the accumulated gradient is the mean (as PyTorch users expect).
pub fn train_step<B: Backend>(
    model: Model<Autodiff<B>>,
    optimizer: &mut AdamW<B>,
    lr: f64,
    shape: StepShape,
    next_batch: &mut dyn FnMut() -> Vec<u32>,
    device: &B::Device,
) -> (Model<Autodiff<B>>, StepOutput<B>) {
    let accum = shape.grad_accum_steps;
    let mut grads = GradientsParams::new();
    let mut loss_sum: Option<Tensor<B, 1>> = None;
    for _ in 0..accum {
        let batch = next_batch();
        let (inputs, targets) =
            batch_tensors::<Autodiff<B>>(&batch, shape.micro_batch_size, shape.seq_len, device);
        let scaled_loss = |logits| cross_entropy(logits, targets).div_scalar(accum as f64); // [1]
        let (scaled, micro) = if shape.activation_checkpointing {
            model.backward_checkpointed(inputs, scaled_loss)
        } else {
            let loss = scaled_loss(model.forward(inputs));
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            (loss.inner(), grads)
        };
        accumulate_grads(&model, &mut grads, micro);
        let detached = scaled.mul_scalar(accum as f64);
        loss_sum = Some(match loss_sum {
            Some(s) => s + detached,
            None => detached,
        });
    }
    let loss = loss_sum
        .expect("grad_accum_steps >= 1")
        .div_scalar(accum as f64);
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

    use crate::optim::AdamWConfig;

    /// The backend's seed is process-wide: tests running in parallel would interleave their
    /// draws and initialise different models. Hold this from `seed` to the end of `init`.
    fn lock_backend_rng() -> std::sync::MutexGuard<'static, ()> {
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

    fn tiny() -> ModelConfig {
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
            (0..4 * 17).map(|i| (i * 7 + k % 2) % 97).collect()
        };
        let mut out = Vec::new();
        for _ in 0..steps {
            let (next, step) =
                train_step(model, &mut optimizer, 1e-2, shape, &mut next_batch, &device);
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
            let mut batch = || (0..2 * 9).map(|i| (i * 5) % 97).collect();
            let (_, out) = train_step(model, &mut optimizer, 1e-2, shape, &mut batch, &device);
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
        let mut batch = || (0..2 * 9).map(|i| (i * 5) % 97).collect();
        let (model, out) = train_step(model, &mut optimizer, 1e-2, shape, &mut batch, &device);
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
