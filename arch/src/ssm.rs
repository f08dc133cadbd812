//! Pieces the state-space models ([`crate::mamba`], [`crate::mamba2`], [`crate::hybrid`]) share:
//! the depthwise causal convolution, PyTorch's `softplus`, the halving slicer of the scans,
//! parameter init, the final norm + head, HF `config.json` key readers and the conv / bias
//! helpers of the HF tensor export, import and no-weight-decay listing.

use burn::module::Param;
use burn::nn::conv::Conv1d;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, FloatDType, Tensor};

use crate::hf::HfMapping;
use crate::layers::{
    float_dtype, fused_enabled, fused_mamba, packed_without_cache, to_dtype, ForwardCtx, Linear,
    RmsNorm, Segments,
};
use burn::tensor::activation::silu;

/// Depthwise causal convolution (kernel `k`, weight `[C, 1, K]`, optional bias `[C]`) on `x`
/// `[b, l, C]` after `past` `[b, C, K − 1]` (zeros when `None`): PyTorch's
/// `conv1d(padding = K − 1)[..., :l]`. Returns `[b, l, C]` and the new past (the last K − 1
/// inputs).
///
/// With `segments` (packed documents, no `past`), a tap reading a position of an earlier
/// document reads 0 instead, as if each document were convolved alone.
///
/// K shifted multiply-adds instead of burn's grouped `conv1d`: no `[b, C, l]` transposes, and
/// the same code serves a single generation step.
pub(crate) fn causal_conv<B: Backend>(
    conv1d: &Conv1d<B>,
    k: usize,
    x: Tensor<B, 3>,
    past: Option<Tensor<B, 3>>,
    segments: Option<&Segments>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [b, l, c] = x.dims();
    let past = match past {
        Some(p) => p.swap_dims(1, 2), // [b, K − 1, C]
        None => Tensor::zeros([b, k - 1, c], (&x.device(), x.dtype())),
    };
    let padded = Tensor::cat(vec![past, x], 1); // [b, K − 1 + l, C]
    let w = to_dtype(conv1d.weight.val(), float_dtype(&padded))
        .reshape([c, k])
        .transpose(); // [K, C]: tap j of every channel
                      // Tap j reads position t − (K − 1 − j).
    let tap = |j: usize| {
        let read = padded.clone().narrow(1, j, l); // [b, l, C]
        let read = match segments {
            Some(seg) if j < k - 1 => {
                read * seg.reaches_back::<B>(k - 1 - j, &padded.device(), padded.dtype())
            }
            _ => read,
        };
        read * w.clone().narrow(0, j, 1).reshape([1, 1, c])
    };
    let mut y = tap(0);
    for j in 1..k {
        y = y + tap(j);
    }
    if let Some(bias) = &conv1d.bias {
        y = y + to_dtype(bias.val(), float_dtype(&padded)).reshape([1, 1, c]);
    }
    let past = padded.narrow(1, l, k - 1).swap_dims(1, 2); // [b, C, K − 1]
    (y, past)
}

/// [`causal_conv`] followed by SiLU (the Mamba mixers' convolution branch), within the packed
/// documents of `ctx`. On the CPU backend in f32, from position 0 and with a bias (training,
/// evaluation, prefill), one fused kernel with its own backward (`layers/fused_mamba.rs`); the
/// burn ops otherwise.
pub(crate) fn causal_conv_silu<B: Backend>(
    conv1d: &Conv1d<B>,
    k: usize,
    x: Tensor<B, 3>,
    past: Option<Tensor<B, 3>>,
    ctx: &ForwardCtx,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let segments = packed_without_cache(ctx, past.is_some());
    match (&conv1d.bias, past) {
        (Some(bias), None) if fused_enabled(&x) => {
            let [b, l, c] = x.dims();
            // The new past: the last K − 1 inputs, zero-padded in front when l < K − 1.
            let past = if l >= k - 1 {
                x.clone().narrow(1, l - (k - 1), k - 1)
            } else {
                let zeros = Tensor::zeros([b, k - 1 - l, c], (&x.device(), x.dtype()));
                Tensor::cat(vec![zeros, x.clone()], 1)
            }; // [b, K − 1, C]
            let f32 = FloatDType::F32;
            let (w, bias) = (
                to_dtype(conv1d.weight.val(), f32),
                to_dtype(bias.val(), f32),
            );
            (
                fused_mamba::conv_silu(x, w, bias, segments),
                past.swap_dims(1, 2),
            )
        }
        (_, past) => {
            let (y, past) = causal_conv(conv1d, k, x, past, segments);
            (silu(y), past)
        }
    }
}

/// PyTorch's `softplus` (β = 1, threshold 20): `ln(1 + eˣ)`, and `x` itself above 20. burn's
/// `activation::softplus` has no threshold and overflows to ∞ past x ≈ 88. A fused kernel on
/// the CPU backend in f32.
pub(crate) fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if fused_enabled(&x) {
        return fused_mamba::softplus(x);
    }
    let linear = x.clone().greater_elem(20.0);
    x.clone()
        .clamp_max(20.0)
        .exp()
        .log1p()
        .mask_where(linear, x)
}

/// `t` cut into its `len` slices of size 1 along `dim`, by recursive halving.
///
/// burn's autodiff differentiates a slice by writing its gradient into a zero tensor of the
/// whole input's shape, so `len` direct slices cost `O(len²)` in the backward pass; halving costs
/// `O(len)` per level, `O(len log len)` in all.
pub(crate) fn split_steps<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    dim: usize,
) -> Vec<Tensor<B, D>> {
    let len = t.dims()[dim];
    if len <= 1 {
        return vec![t];
    }
    let half = len / 2;
    let mut out = split_steps(t.clone().narrow(dim, 0, half), dim);
    out.extend(split_steps(t.narrow(dim, half, len - half), dim));
    out
}

/// A parameter `~ U(±bound)`.
pub(crate) fn uniform_param<B: Backend, const D: usize>(
    shape: [usize; D],
    bound: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::random(
        shape,
        Distribution::Uniform(-bound, bound),
        device,
    ))
}

/// A parameter `~ normal(0, std)`.
pub(crate) fn normal_param<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::random(
        shape,
        Distribution::Normal(0.0, std),
        device,
    ))
}

/// Final norm and head: `h` `[b, l, d]` -> f32 logits `[b, l, vocab]`; without a head, tied:
/// `h · Eᵀ` with `E = embedding.weight` `[vocab, d]`. The norm hands the head `ctx.compute` (its
/// statistics are f32); the head's matmul runs in it, the logits are cast to f32 (the loss
/// is computed in f32 whatever the compute dtype), as [`crate::Llama`] does.
pub(crate) fn norm_head_logits<B: Backend>(
    norm: &RmsNorm<B>,
    lm_head: Option<&Linear<B>>,
    embedding: &Embedding<B>,
    vocab_size: usize,
    h: Tensor<B, 3>,
    ctx: &ForwardCtx,
) -> Tensor<B, 3> {
    let [b, l, d] = h.dims();
    let compute = ctx.compute;
    let h = norm.forward_as(h, compute).reshape([b * l, d]); // [b·l, d]
    let logits = match lm_head {
        Some(head) => head.forward(h, ctx),
        None => h.matmul(to_dtype(embedding.weight.val(), compute).transpose()),
    }; // [b·l, vocab]
    to_dtype(logits.reshape([b, l, vocab_size]), FloatDType::F32)
}

/// A residual block's update `y` added to the residual stream `h` in `h`'s dtype (the block
/// computed in the compute dtype; under mixed precision the stream stays f32).
pub(crate) fn residual_add<B: Backend>(h: Tensor<B, 3>, y: Tensor<B, 3>) -> Tensor<B, 3> {
    let dtype = float_dtype(&h);
    h + to_dtype(y, dtype)
}

/// Generation state of a layered recurrent model ([`crate::Mamba`], [`crate::Mamba2`],
/// [`crate::Hybrid`]): one state `S` per layer (constant size, whatever the number of tokens
/// processed), the batch size it was created for and the positions processed so far.
#[derive(Clone, Debug)]
pub struct RecurrentCache<S> {
    /// `layers[i]`: layer i's state, `None` before the first call (zeros).
    pub layers: Vec<Option<S>>,
    /// Batch size the cache was created for.
    pub batch: usize,
    /// Number of positions processed so far.
    pub seq_len: usize,
}

impl<S> RecurrentCache<S> {
    /// An empty cache for `n_layers` layers and `batch` sequences.
    pub(crate) fn new(n_layers: usize, batch: usize) -> Self {
        Self {
            layers: (0..n_layers).map(|_| None).collect(),
            batch,
            seq_len: 0,
        }
    }

    /// Number of positions already processed (the position of the next token).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Runs `h`, the hidden states of the next `l` positions of `b` sequences, through the layers
    /// in order: `layer(i, h, state)` gets layer i's cached state and returns its output and new
    /// state, which replaces the cached one. Panics unless `b` is the cache's batch size.
    pub(crate) fn advance<T>(
        &mut self,
        [b, l]: [usize; 2],
        mut h: T,
        mut layer: impl FnMut(usize, T, Option<S>) -> (T, S),
    ) -> T {
        assert_eq!(
            b, self.batch,
            "forward_cached: batch {b} but the cache was created for batch {}",
            self.batch
        );
        for (i, state) in self.layers.iter_mut().enumerate() {
            let (next, new_state) = layer(i, h, state.take());
            h = next;
            *state = Some(new_state);
        }
        self.seq_len += l;
        h
    }
}

/// The HF mapping of `MambaForCausalLM` and `Mamba2ForCausalLM`: every tensor under `backbone.`
/// but the head, nothing renamed.
pub(crate) fn backbone_hf_mapping(tie_word_embeddings: bool) -> HfMapping {
    HfMapping {
        prefix: "backbone.",
        renames: &[],
        layer_repeats: 1,
        embedding: "embeddings.weight",
        tie_word_embeddings,
        ignored_suffixes: &[],
    }
}

/// Where kiln keeps its `rescale_prenorm_residual` init choice in an exported `config.json`.
pub(crate) const KILN_RESCALE_PRENORM_RESIDUAL: &str = "kiln_rescale_prenorm_residual";

/// How Mamba and Mamba-2 exports write `rescale_prenorm_residual`. transformers'
/// `Mamba(2)PreTrainedModel._init_weights` runs on every `from_pretrained`, and its
/// `out_proj.weight /= sqrt(num_hidden_layers)` under this flag is not skipped for loaded
/// weights (the other init rules are): with the flag true, loading changes every trained
/// `out_proj.weight`. The flag only matters for a fresh init, so exports write it `false` and keep
/// kiln's value under [`KILN_RESCALE_PRENORM_RESIDUAL`], which transformers ignores.
pub(crate) fn rescale_prenorm_residual_export(rescale: bool) -> [(&'static str, bool); 2] {
    [
        ("rescale_prenorm_residual", false),
        (KILN_RESCALE_PRENORM_RESIDUAL, rescale),
    ]
}

/// 1 where `a` and `b` (same shape) are equal, 0 elsewhere, in `a`'s dtype.
fn equal_as_float<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = a.dtype();
    a.equal(b).float().cast(dtype)
}

/// The documents of packed positions as the chunked scans use them (see [`Segments`]): a float
/// id per position (its document's first position), `[b, l]`, and the document of the state
/// entering position 0, `[b, 1]` (the first position's: a row's first document continues `h0`).
#[derive(Clone, Debug)]
pub(crate) struct DocIds<B: Backend> {
    ids: Tensor<B, 2>,
    before: Tensor<B, 2>,
}

impl<B: Backend> DocIds<B> {
    /// The documents of `segments`, in `dtype` (the scan's).
    pub(crate) fn of(segments: &Segments, device: &B::Device, dtype: burn::tensor::DType) -> Self {
        let ids = segments.ids::<B>(device, dtype); // [b, l]
        let before = ids.clone().narrow(1, 0, 1); // [b, 1]
        Self { ids, before }
    }

    /// `pad` more positions in the last position's document (a chunked scan's padding, which
    /// must not reset anything).
    pub(crate) fn padded(self, pad: usize) -> Self {
        if pad == 0 {
            return self;
        }
        let [b, l] = self.ids.dims();
        let last = self.ids.clone().narrow(1, l - 1, 1).expand([b, pad]);
        Self {
            ids: Tensor::cat(vec![self.ids, last], 1),
            before: self.before,
        }
    }

    /// Cut into `nc` chunks of `t` positions (`nc · t` positions, padded).
    pub(crate) fn chunks(self, nc: usize, t: usize) -> ChunkDocIds<B> {
        let [b, _] = self.ids.dims();
        ChunkDocIds {
            ids: self.ids.reshape([b, nc, t]),
            before: self.before,
        }
    }
}

/// [`DocIds`] cut into chunks: ids `[b, c, T]`.
#[derive(Clone, Debug)]
pub(crate) struct ChunkDocIds<B: Backend> {
    ids: Tensor<B, 3>,
    before: Tensor<B, 2>,
}

impl<B: Backend> ChunkDocIds<B> {
    /// `[b, c, T(t), T(s)]`: 1 where positions `t` and `s` of a chunk are in one document.
    pub(crate) fn same_within_chunks(&self) -> Tensor<B, 4> {
        let [b, nc, t] = self.ids.dims();
        let rows = self
            .ids
            .clone()
            .reshape([b, nc, t, 1])
            .expand([b, nc, t, t]);
        let cols = self
            .ids
            .clone()
            .reshape([b, nc, 1, t])
            .expand([b, nc, t, t]);
        equal_as_float(rows, cols)
    }

    /// `[b, c]`: the document of each chunk's last position.
    pub(crate) fn last(&self) -> Tensor<B, 2> {
        let [b, nc, t] = self.ids.dims();
        self.ids.clone().narrow(2, t - 1, 1).reshape([b, nc])
    }

    /// `[b, c + 1]`: the document of the state before each chunk (`before`, then each chunk's
    /// last position's), and after the last chunk.
    pub(crate) fn states(&self) -> Tensor<B, 2> {
        Tensor::cat(vec![self.before.clone(), self.last()], 1)
    }

    /// `[b, c + 1, c + 1]`: 1 where two of [`ChunkDocIds::states`] are in one document.
    pub(crate) fn same_states(&self) -> Tensor<B, 3> {
        let states = self.states(); // [b, c + 1]
        let [b, m] = states.dims();
        let rows = states.clone().reshape([b, m, 1]).expand([b, m, m]);
        let cols = states.reshape([b, 1, m]).expand([b, m, m]);
        equal_as_float(rows, cols)
    }

    /// `[b, c, T]`: 1 where a position is in the document of its chunk's last position (its
    /// input reaches the chunk's end state).
    pub(crate) fn same_as_last(&self) -> Tensor<B, 3> {
        let [b, nc, t] = self.ids.dims();
        let last = self.last().reshape([b, nc, 1]).expand([b, nc, t]);
        equal_as_float(self.ids.clone(), last)
    }

    /// `[b, c, T]`: 1 where a position is in the document of the state entering its chunk (the
    /// carried state reaches it).
    pub(crate) fn same_as_entering(&self) -> Tensor<B, 3> {
        let [b, nc, t] = self.ids.dims();
        let entering = self
            .states()
            .narrow(1, 0, nc)
            .reshape([b, nc, 1])
            .expand([b, nc, t]);
        equal_as_float(self.ids.clone(), entering)
    }

    /// One level up: one position per chunk, in the document of its last position.
    pub(crate) fn chunk_level(&self) -> DocIds<B> {
        DocIds {
            ids: self.last(),
            before: self.before.clone(),
        }
    }
}
