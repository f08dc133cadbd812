//! Next-token cross-entropy, computed in f32 from the logits.
//!
//! On the CPU backend (`Flex`, with or without `Autodiff`) with f32 logits the loss is one fused
//! pass (per row: max, log-sum-exp, the target's logit) with a hand-written backward
//! (`softmax − one_hot`, scaled by the incoming gradient), instead of burn's decomposed
//! `log_softmax` + `gather` whose forward and backward each walk the `[batch·seq, vocab]` logits
//! several times. Same maths; any other backend or dtype takes the generic path.

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::{TensorData, TensorMetadata, TensorPrimitive};
use kiln_arch::layers::{fused_enabled, recast};
use kiln_arch::simd::{exp, simd};
use rayon::prelude::*;

/// Target id of a position that is not trained on (transformers' label -100): it adds nothing to
/// the loss and gets no gradient.
pub const IGNORE_INDEX: i64 = -100;

/// Sum of −log p(target) over the positions whose target is not [`IGNORE_INDEX`].
/// logits `[batch, seq, vocab]`, targets `[batch, seq]` → `[1]`.
pub fn nll_sum<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    if fused_enabled(&logits) {
        return fused_nll_sum(logits, targets);
    }
    let [batch, seq, vocab] = logits.dims();
    let n = batch * seq;
    let ignored = targets.clone().equal_elem(IGNORE_INDEX).reshape([n, 1]); // [n, 1]
    let targets = targets.reshape([n, 1]).mask_fill(ignored.clone(), 0); // [n, 1]
    let log_probs = log_softmax(logits.reshape([n, vocab]), 1); // [n, vocab]
    let picked = log_probs.gather(1, targets).mask_fill(ignored, 0.0); // [n, 1]
    picked.sum().neg()
}

/// Mean next-token cross-entropy over all positions → `[1]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [batch, seq, _] = logits.dims();
    nll_sum(logits, targets).div_scalar((batch * seq) as f64)
}

type Ad = Autodiff<Flex>;

/// [`IGNORE_INDEX`] in the fused path's host-side targets.
const IGNORED: usize = usize::MAX;

/// Rows of at least this many elements per rayon task.
const MIN_ELEMS_PER_TASK: usize = 64 * 1024;

/// `(max, Σ exp(x − max))` of one row, with 8 independent accumulators (vectorisable).
#[inline(always)]
fn max_and_sum_exp(x: &[f32]) -> (f32, f32) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += exp(c[i] - max);
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in tail {
        sum += exp(v - max);
    }
    (max, sum)
}

/// Per row of `logits` (`[rows, vocab]`, row-major): log-sum-exp, and Σ (lse − logit[target]).
fn nll_forward(logits: &[f32], targets: &[usize], vocab: usize) -> (Vec<f32>, f64) {
    let rows = targets.len();
    let mut lse = vec![0.0f32; rows];
    let min_rows = (MIN_ELEMS_PER_TASK / vocab).max(1);
    let total: f64 = lse
        .par_chunks_mut(min_rows)
        .enumerate()
        .map(|(c, lse)| {
            simd(
                #[inline(always)]
                || {
                    let mut total = 0.0f64;
                    for (k, lse) in lse.iter_mut().enumerate() {
                        let r = c * min_rows + k;
                        if targets[r] == IGNORED {
                            continue;
                        }
                        let x = &logits[r * vocab..(r + 1) * vocab];
                        let (max, sum) = max_and_sum_exp(x);
                        *lse = max + sum.ln();
                        // log_softmax[target] = (x − max) − ln Σ exp(x − max)
                        let log_p = (x[targets[r]] - max) - sum.ln();
                        total -= log_p as f64;
                    }
                    total
                },
            )
        })
        .sum();
    (lse, total)
}

/// d nll_sum / d logits = g · (softmax − one_hot(target)), in place: `buf` holds the logits
/// (`[rows, vocab]`) on entry and their gradient on return.
fn nll_backward_in_place(buf: &mut [f32], lse: &[f32], targets: &[usize], vocab: usize, g: f32) {
    let min_rows = (MIN_ELEMS_PER_TASK / vocab).max(1);
    buf.par_chunks_mut(vocab * min_rows)
        .enumerate()
        .for_each(|(c, rows)| {
            simd(
                #[inline(always)]
                || {
                    for (k, row) in rows.chunks_exact_mut(vocab).enumerate() {
                        let r = c * min_rows + k;
                        if targets[r] == IGNORED {
                            row.fill(0.0);
                            continue;
                        }
                        let l = lse[r];
                        for v in row.iter_mut() {
                            *v = g * exp(*v - l);
                        }
                        row[targets[r]] -= g;
                    }
                },
            )
        });
}

fn flex_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("contiguous")
                .to_vec(),
        ),
    }
}

/// Saved for the backward pass.
#[derive(Clone)]
struct NllState {
    /// `[rows, vocab]`.
    logits: FlexTensor,
    /// Per-row log-sum-exp.
    lse: Vec<f32>,
    targets: Vec<usize>,
}

impl std::fmt::Debug for NllState {
    // The shape only: the buffers are large.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NllState")
            .field("logits", &self.logits)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct NllBackward;

impl Backward<Flex, 1> for NllBackward {
    type State = NllState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else { return };
        let g = flex_f32(&g)[0];
        let NllState {
            mut logits,
            lse,
            targets,
        } = ops.state;
        let shape = logits.shape();
        let vocab = shape[shape.len() - 1];
        let n = shape.num_elements();
        // The logits are usually referenced by nothing but this node by now: overwrite them with
        // their gradient (no new [rows, vocab] buffer). Otherwise, work on a copy.
        let exact = logits.as_slice::<f32>().map(<[f32]>::len) == Some(n)
            && logits.layout().contiguous_offsets() == Some((0, n));
        let grad = match logits
            .try_storage_mut::<f32>()
            .filter(|b| exact && b.len() == n)
        {
            Some(buf) => {
                nll_backward_in_place(buf, &lse, &targets, vocab, g);
                logits
            }
            None => {
                let mut buf = flex_f32(&logits).into_owned();
                nll_backward_in_place(&mut buf, &lse, &targets, vocab, g);
                FlexTensor::from_data(TensorData::new(buf, shape))
            }
        };
        grads.register::<Flex>(node.id, grad);
    }
}

fn fused_nll_sum<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [_, _, vocab] = logits.dims();
    let targets: Vec<usize> = targets
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("targets as i64")
        .into_iter()
        .map(|t| {
            if t == IGNORE_INDEX {
                return IGNORED;
            }
            assert!(
                (0..vocab as i64).contains(&t),
                "cross_entropy: target {t} outside the vocabulary (0..{vocab})"
            );
            t as usize
        })
        .collect();
    let loss = |total: f64| FlexTensor::from_data(TensorData::new(vec![total as f32], [1]));
    if TypeId::of::<B>() == TypeId::of::<Flex>() {
        let x: FlexTensor = recast::<B, Flex, 3>(logits).into_primitive().tensor();
        let (_, total) = nll_forward(&flex_f32(&x), &targets, vocab);
        let out = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(loss(total)));
        return recast::<Flex, B, 1>(out);
    }
    let x = recast::<B, Ad, 3>(logits).into_primitive().tensor();
    let (lse, total) = nll_forward(&flex_f32(&x.primitive), &targets, vocab);
    let out = match NllBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = NllState {
                logits: x.primitive,
                lse,
                targets,
            };
            prep.finish(state, loss(total))
        }
        OpsKind::UnTracked(prep) => prep.finish(loss(total)),
    };
    recast::<Ad, B, 1>(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn matches_hand_computed_value() {
        let device = Default::default();
        // One position, logits [0, ln 3] → p = [1/4, 3/4]; target 1 → −ln(3/4).
        let logits = Tensor::<Flex, 3>::from_data(
            TensorData::new(vec![0.0f32, 3f32.ln()], [1, 1, 2]),
            &device,
        );
        let targets =
            Tensor::<Flex, 2, Int>::from_data(TensorData::new(vec![1i64], [1, 1]), &device);
        let loss: f32 = cross_entropy(logits, targets).into_scalar();
        assert!((loss - (-(0.75f32).ln())).abs() < 1e-6, "{loss}");
    }

    /// The fused CPU path (forward and gradient) against burn's generic ops on the same backend.
    #[test]
    fn fused_matches_generic_with_gradient() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let (b, s, v) = (2, 3, 7);
        let values: Vec<f32> = (0..b * s * v)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3)
            .collect();
        let ids = vec![0i64, 6, 3, 2, 5, 1];
        let logits = || {
            Tensor::<AB, 3>::from_data(TensorData::new(values.clone(), [b, s, v]), &device)
                .require_grad()
        };
        let targets =
            || Tensor::<AB, 2, Int>::from_data(TensorData::new(ids.clone(), [b, s]), &device);

        let x = logits();
        // `× 1` hands the loss logits that nothing else references (as in training, where they
        // come from the LM head): the backward then overwrites them in place.
        let fused = cross_entropy(x.clone().mul_scalar(1.0), targets());
        let g_fused = x.grad(&fused.backward()).unwrap();

        let y = logits();
        let log_probs = log_softmax(y.clone().reshape([b * s, v]), 1);
        let generic = log_probs
            .gather(1, targets().reshape([b * s, 1]))
            .sum()
            .neg()
            .div_scalar((b * s) as f64);
        let g_generic = y.grad(&generic.backward()).unwrap();

        let (lf, lg): (f32, f32) = (fused.into_scalar(), generic.into_scalar());
        assert!((lf - lg).abs() < 1e-6, "{lf} vs {lg}");
        g_fused.into_data().assert_approx_eq::<f32>(
            &g_generic.into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }

    /// Targets of -100 add nothing and get no gradient, in the fused path and the generic one
    /// (run here on a backend the fused path does not take: `Autodiff<Flex>` with f64 logits is
    /// not fused, so the generic ops run).
    #[test]
    fn ignored_targets_add_nothing_fused_and_generic() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let (b, s, v) = (2, 3, 5);
        let values: Vec<f32> = (0..b * s * v)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.25)
            .collect();
        let kept = [0i64, 4, 1, 3, 2, 0];
        let masked = [0i64, IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX, 0];
        let run = |ids: &[i64], generic: bool| {
            let x = Tensor::<AB, 3>::from_data(TensorData::new(values.clone(), [b, s, v]), &device)
                .require_grad();
            let t = Tensor::<AB, 2, Int>::from_data(TensorData::new(ids.to_vec(), [b, s]), &device);
            let logits = if generic {
                // f64 logits: not the fused kernel's dtype.
                x.clone().cast(burn::tensor::FloatDType::F64)
            } else {
                x.clone().mul_scalar(1.0)
            };
            let loss = nll_sum(logits, t);
            let g: Vec<f32> = x
                .grad(&loss.backward())
                .unwrap()
                .into_data()
                .to_vec()
                .unwrap();
            let l: f64 = loss.into_scalar().elem();
            (l, g)
        };
        for generic in [false, true] {
            let (all, _) = run(&kept, generic);
            let (part, g) = run(&masked, generic);
            // Only positions 0, 2 and 5 count: the same as summing those rows of the full loss.
            let row_loss = |r: usize| {
                let x = &values[r * v..(r + 1) * v];
                let lse = x.iter().map(|&a| (a as f64).exp()).sum::<f64>().ln();
                lse - x[kept[r] as usize] as f64
            };
            let expected: f64 = [0, 2, 5].iter().map(|&r| row_loss(r)).sum();
            assert!(
                (part - expected).abs() < 1e-4,
                "generic={generic}: {part} vs {expected}"
            );
            assert!(part < all);
            for r in [1, 3, 4] {
                assert!(
                    g[r * v..(r + 1) * v].iter().all(|&x| x == 0.0),
                    "row {r} has a gradient"
                );
            }
            assert!(g[..v].iter().any(|&x| x != 0.0));
        }
    }
}
