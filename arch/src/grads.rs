//! Gradient bookkeeping shared by the checkpointed backward pass and the trainer's gradient
//! accumulation.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::nn::Embedding;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};

use crate::layers::ForwardCtx;

/// Adds `other` into `acc` parameter by parameter, for the parameters of `module` (gradient
/// accumulation over micro-batches, or over the pieces of a checkpointed backward pass).
pub fn accumulate_grads<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    module: &M,
    acc: &mut GradientsParams,
    mut other: GradientsParams,
) {
    struct Acc<'a> {
        acc: &'a mut GradientsParams,
        other: &'a mut GradientsParams,
    }
    impl<AB: AutodiffBackend> ModuleVisitor<AB> for Acc<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            if let Some(g) = self.other.remove::<AB::InnerBackend, D>(param.id) {
                let sum = match self.acc.remove::<AB::InnerBackend, D>(param.id) {
                    Some(a) => a + g,
                    None => g,
                };
                self.acc.register::<AB::InnerBackend, D>(param.id, sum);
            }
        }
    }
    module.visit(&mut Acc {
        acc,
        other: &mut other,
    });
}

/// A model made of an embedding lookup, a stack of residual blocks and a norm + head, as
/// [`backward_checkpointed`] sees it. Block `e` is the `e`-th block APPLICATION (a block shared
/// by several layers appears once per application).
pub(crate) trait CheckpointedModel<B: AutodiffBackend>: AutodiffModule<B> {
    /// The module holding one block's parameters.
    type Block: AutodiffModule<B>;
    /// The token embedding.
    fn embedding(&self) -> &Embedding<B>;
    /// Number of block applications.
    fn num_blocks(&self) -> usize;
    /// The block applied `e`-th.
    fn block(&self, e: usize) -> &Self::Block;
    /// Application `e` of the forward pass (positions `0..s`, no cache) under `ctx`, with an
    /// autodiff graph: `[b, s, d]` -> `[b, s, d]`.
    fn block_forward(&self, e: usize, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3>;
    /// The same on `inner = self.valid()`, without a graph.
    fn inner_block_forward(
        inner: &Self::InnerModule,
        e: usize,
        h: Tensor<B::InnerBackend, 3>,
        ctx: &ForwardCtx,
    ) -> Tensor<B::InnerBackend, 3>;
    /// Final norm and head: hidden states `[b, s, d]` -> f32 logits `[b, s, vocab]`.
    fn head_logits(&self, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3>;
}

/// Forward and backward with per-block activation checkpointing: the gradients of
/// `loss_fn(logits)` (the logits of `input_ids` under `ctx`) with respect to every parameter of
/// `model`, holding the activations of one block at a time instead of all of them.
///
/// 1. A forward pass without an autodiff graph keeps only each block's input `[b, s, d]`.
/// 2. Norm, head and loss run with a graph from the last block's output; backward gives the
///    head's gradients and `dL/dh` at that output.
/// 3. Each block, last to first, is recomputed with a graph from its saved input, and
///    backward of `sum(block(h) · dL/dout)` gives its parameters' gradients and `dL/dh` at
///    its input (a shared block's applications add up).
/// 4. The same for the embedding lookup.
///
/// Cost: one extra forward pass of the blocks. Every backward is a separate graph, so this
/// works on every backend and with the fused CPU kernels. Returns the loss (detached) and the
/// gradients keyed by parameter id, as `GradientsParams::from_grads` would.
pub(crate) fn backward_checkpointed<B: AutodiffBackend, M: CheckpointedModel<B>>(
    model: &M,
    input_ids: Tensor<B, 2, Int>,
    ctx: &ForwardCtx,
    loss_fn: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 1>,
) -> (Tensor<B::InnerBackend, 1>, GradientsParams) {
    let n = model.num_blocks();

    // 1. Graph-free forward, keeping every block's input.
    let inner = model.valid();
    let mut block_inputs = Vec::with_capacity(n);
    let mut h = model.embedding().valid().forward(input_ids.clone().inner()); // [b, s, d]
    for e in 0..n {
        block_inputs.push(h.clone());
        h = M::inner_block_forward(&inner, e, h, ctx);
    }
    drop(inner);

    // 2. Head and loss.
    let leaf = Tensor::<B, 3>::from_inner(h).require_grad();
    let loss = loss_fn(model.head_logits(leaf.clone(), ctx));
    let grads = loss.backward();
    let mut d_h = leaf
        .grad(&grads)
        .expect("the loss depends on the hidden states");
    let mut total = GradientsParams::from_grads(grads, model);

    // 3. Blocks, last to first.
    for (e, h_in) in block_inputs.into_iter().enumerate().rev() {
        let block = model.block(e);
        let leaf = Tensor::<B, 3>::from_inner(h_in).require_grad();
        let out = model.block_forward(e, leaf.clone(), ctx);
        let grads = (out * Tensor::from_inner(d_h)).sum().backward();
        d_h = leaf
            .grad(&grads)
            .expect("a block's output depends on its input");
        accumulate_grads(block, &mut total, GradientsParams::from_grads(grads, block));
    }

    // 4. Embedding.
    let embedding = model.embedding();
    let embedded = embedding.forward(input_ids);
    let grads = (embedded * Tensor::from_inner(d_h)).sum().backward();
    let embed_grads = GradientsParams::from_grads(grads, embedding);
    accumulate_grads(embedding, &mut total, embed_grads);
    (loss.inner(), total)
}
