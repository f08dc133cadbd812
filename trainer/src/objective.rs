//! What a training step minimises, and how gradients meet across workers: the two seams of
//! [`crate::step::train_step`]. New objectives (DPO, distillation) implement [`Objective`];
//! data-parallel training implements [`GradSync`]; the step itself does not change.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use kiln_arch::Model;
use kiln_data::Batch;

use crate::loss::{nll_sum, IGNORE_INDEX};

/// A training objective over micro-batches of token windows.
///
/// The step's loss is `Σ loss_sum / Σ counted` over its micro-batches: the mean over every counted
/// target of the whole step, so that gradient accumulation gives the gradient of one large batch
/// even when micro-batches count different numbers of targets (transformers'
/// `num_items_in_batch`).
pub trait Objective {
    /// Targets of `batch` (`rows × seq_len`) that count towards the step's mean.
    fn counted(&self, batch: &Batch, rows: usize, seq_len: usize) -> usize;

    /// The loss of `model` on `batch`, summed over its counted targets, `[1]`. `rows × (seq_len
    /// + 1)` tokens: inputs are `row[..seq_len]`, targets `row[1..]`.
    fn loss_sum<B: Backend>(
        &self,
        logits: Tensor<B, 3>,
        targets: Tensor<B, 2, Int>,
    ) -> Tensor<B, 1>;
}

/// Next-token cross-entropy (pretraining; SFT with a loss mask over the prompt).
#[derive(Clone, Copy, Debug, Default)]
pub struct NextToken;

impl Objective for NextToken {
    fn counted(&self, batch: &Batch, rows: usize, seq_len: usize) -> usize {
        batch.counted_targets(rows, seq_len)
    }

    fn loss_sum<B: Backend>(
        &self,
        logits: Tensor<B, 3>,
        targets: Tensor<B, 2, Int>,
    ) -> Tensor<B, 1> {
        nll_sum(logits, targets)
    }
}

/// `[rows, seq_len + 1]` token windows → (inputs `[rows, seq_len]`, targets `[rows, seq_len]`);
/// targets whose `loss_mask` flag (`[rows, seq_len]`) is false become [`IGNORE_INDEX`].
pub fn batch_tensors<B: Backend>(
    tokens: &[u32],
    loss_mask: Option<&[bool]>,
    rows: usize,
    seq_len: usize,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let row = seq_len + 1;
    assert_eq!(
        tokens.len(),
        rows * row,
        "a batch of {rows} windows of {row} tokens"
    );
    let mut inputs = Vec::with_capacity(rows * seq_len);
    let mut targets = Vec::with_capacity(rows * seq_len);
    for (r, window) in tokens.chunks_exact(row).enumerate() {
        inputs.extend(window[..seq_len].iter().map(|&t| t as i64));
        targets.extend(
            window[1..]
                .iter()
                .enumerate()
                .map(|(i, &t)| match loss_mask {
                    Some(mask) if !mask[r * seq_len + i] => IGNORE_INDEX,
                    _ => t as i64,
                }),
        );
    }
    let tensor = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [rows, seq_len]), device);
    (tensor(inputs), tensor(targets))
}

/// Combines the gradients of every worker, between accumulation and clipping (so the norm that
/// is clipped is the global one).
pub trait GradSync<B: Backend> {
    fn sync(
        &mut self,
        model: &Model<burn::backend::Autodiff<B>>,
        grads: GradientsParams,
    ) -> GradientsParams;
}

/// One worker: the gradients are already complete.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleWorker;

impl<B: Backend> GradSync<B> for SingleWorker {
    fn sync(
        &mut self,
        _: &Model<burn::backend::Autodiff<B>>,
        grads: GradientsParams,
    ) -> GradientsParams {
        grads
    }
}
