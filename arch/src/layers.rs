//! Building blocks shared by the attention architectures: RMSNorm, rotate-half RoPE (the Hugging
//! Face convention), grouped-query causal attention with a KV cache, and the SwiGLU MLP.
//!
//! On the CPU backend (`Flex`, plain or under `Autodiff`) with f32 activations, RMSNorm, SwiGLU and
//! the uncached RoPE + attention run as fused kernels with hand-written backward passes
//! (`layers/fused.rs`, same maths); the tensor-op code here is their reference and what every
//! other backend runs.
//!
//! Deliberately left out: dropout (small-model pretraining does not use it), biases (Llama has
//! none), RoPE scaling variants (linear/NTK/YaRN/llama3: `from_hf_config` rejects them).

use burn::module::{Initializer, Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, FloatDType, Int, Tensor, TensorData};

mod fused;
pub(crate) mod fused_mamba;
pub mod fused_scan;
mod linear;
mod segments;

pub use fused::{enabled as fused_enabled, recast, rope_attention, set_num_threads};
pub use linear::{AdapterPlan, Builder, FakeQuant, Linear, LoraInit, LoraPlan, LowRank, Targets};
pub use segments::Segments;

/// What a forward pass needs besides the token ids and the weights. A model holds one (set by
/// [`crate::Model::with_precision`] and [`crate::Model::with_fake_quant`]) and hands it to every
/// block and layer, so a new concern is a field here, not one more argument through four
/// architectures.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardCtx {
    /// Dtype of the blocks' matmuls and activations; the residual stream keeps the parameters'.
    pub compute: FloatDType,
    /// Linear layers that carry a fake quantizer apply it (quantization-aware training); off,
    /// they compute with their float weights.
    pub fake_quant: bool,
    /// Document boundaries of packed rows, kept apart by every layer (see [`Segments`]); `None`:
    /// each row is one sequence. Set per batch ([`ForwardCtx::with_segments`]), never held by a
    /// model.
    pub segments: Option<Segments>,
}

impl Default for ForwardCtx {
    /// f32, quantizers on, no packing.
    fn default() -> Self {
        Self {
            compute: FloatDType::F32,
            fake_quant: true,
            segments: None,
        }
    }
}

impl ForwardCtx {
    /// This context for a batch whose rows pack the documents `segments` describes (`None`: one
    /// sequence per row). Rows of a single document take the unpacked path.
    pub fn with_segments(&self, segments: Option<Segments>) -> Self {
        Self {
            segments: segments.filter(Segments::is_packed),
            ..self.clone()
        }
    }
}

/// `t` as `dtype`; no cast op is recorded when it already is.
pub fn to_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if t.dtype() == DType::from(dtype) {
        t
    } else {
        t.cast(dtype)
    }
}

/// The float dtype of `t` (`F32` for anything that is not a float dtype kiln computes in).
pub fn float_dtype<B: Backend, const D: usize>(t: &Tensor<B, D>) -> FloatDType {
    match t.dtype() {
        DType::BF16 => FloatDType::BF16,
        DType::F16 => FloatDType::F16,
        DType::F64 => FloatDType::F64,
        _ => FloatDType::F32,
    }
}

/// Root-mean-square layer norm: `y = weight * (x * rsqrt(mean(x²) + eps))`.
///
/// The statistics are computed in f32 whatever the activation dtype, then the normalised value is
/// cast back to the input dtype before the multiplication by `weight` (the order of HF's
/// `LlamaRMSNorm`). [`RmsNorm::forward_as`] then casts the result to the dtype the next layer
/// computes in (bf16 under mixed precision, where the residual stream stays f32, as with
/// PyTorch's autocast). The field is named `weight` (burn's own `RmsNorm` calls it `gamma`) so the
/// module path matches the HF tensor name.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel gain, `[d]`, initialised to 1.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square before the reciprocal square root.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// A norm over `d` channels with unit gain.
    pub fn new(d: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Initializer::Ones.init([d], device),
            eps,
        }
    }

    /// Normalises over the last dimension: `[.., d] -> [.., d]`, in `x`'s dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = float_dtype(&x);
        self.forward_as(x, dtype)
    }

    /// [`RmsNorm::forward`], the result cast to `out` (the next layer's compute dtype).
    pub fn forward_as<const D: usize>(&self, x: Tensor<B, D>, out: FloatDType) -> Tensor<B, D> {
        let weight = self.weight.val(); // [d]
        if fused::enabled(&x) && fused::enabled(&weight) && out == FloatDType::F32 {
            return fused::rms_norm(x, weight, self.eps);
        }
        let dtype = float_dtype(&x);
        let x = to_dtype(x, FloatDType::F32); // [.., d] f32
        let mean_sq = x.clone().square().mean_dim(D - 1); // [.., 1]
        let inv_rms = mean_sq.add_scalar(self.eps).sqrt().recip(); // [.., 1]
        let y = to_dtype(x * inv_rms, dtype); // [.., d]
        let y = y * to_dtype(weight, dtype).unsqueeze::<D>(); // weight [d] -> [1, .., d]
        to_dtype(y, out)
    }
}

/// Rotate-half rotary position embedding (HF `LlamaRotaryEmbedding`, rope_type "default").
///
/// `inv_freq_i = θ^(-2i/d)` for `i < d/2`; the angle for position `p` is `p · inv_freq`, duplicated
/// as `cat(freqs, freqs)` so that dimension `i` pairs with `i + d/2`:
/// `x' = x·cos + rotate_half(x)·sin`, `rotate_half(x) = cat(-x[d/2:], x[:d/2])`.
/// (burn's `RotaryEncoding` pairs `(2i, 2i+1)` instead and is not checkpoint-compatible.)
///
/// The cos/sin tables are built once, for `max_position_embeddings` positions, and kept as module
/// constants (they move with the module across devices and are not parameters). Positions past the
/// table (generation beyond the trained context) are computed on the fly.
/// The arithmetic is done in f32 exactly as HF does it, so tables match transformers bit for bit
/// up to `powf`/`cos` rounding.
#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    /// `cos(p · inv_freq)` duplicated, `[max_positions, head_dim]`.
    pub cos: Tensor<B, 2>,
    /// `sin(p · inv_freq)` duplicated, `[max_positions, head_dim]`.
    pub sin: Tensor<B, 2>,
    /// Base θ.
    pub theta: f64,
    /// Rotated dimension (the full head dimension; must be even).
    pub head_dim: usize,
}

/// `(cos, sin)` values for positions `start..start + len`, each `[len * head_dim]` row-major.
fn rope_table(theta: f64, head_dim: usize, start: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    // HF: 1.0 / (base ** (arange(0, d, 2) / d)), all in f32.
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(len * head_dim);
    let mut sin = Vec::with_capacity(len * head_dim);
    for p in start..start + len {
        let angles: Vec<f32> = inv_freq.iter().map(|f| p as f32 * f).collect(); // [d/2]
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos()));
            sin.extend(angles.iter().map(|a| a.sin()));
        }
    }
    (cos, sin)
}

impl<B: Backend> Rope<B> {
    /// Builds the tables for positions `0..max_positions`.
    pub fn new(theta: f64, head_dim: usize, max_positions: usize, device: &B::Device) -> Self {
        assert!(
            head_dim.is_multiple_of(2),
            "RoPE head_dim must be even, got {head_dim}"
        );
        let (cos, sin) = rope_table(theta, head_dim, 0, max_positions);
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [max_positions, head_dim]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max_positions, head_dim]), device),
            theta,
            head_dim,
        }
    }

    /// `(cos, sin)`, each `[len, head_dim]`, for positions `start..start + len`.
    pub fn cos_sin(&self, start: usize, len: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [table_len, _] = self.cos.dims();
        if start + len <= table_len {
            (
                self.cos.clone().narrow(0, start, len),
                self.sin.clone().narrow(0, start, len),
            )
        } else {
            let device = self.cos.device();
            let (cos, sin) = rope_table(self.theta, self.head_dim, start, len);
            (
                Tensor::from_data(TensorData::new(cos, [len, self.head_dim]), &device),
                Tensor::from_data(TensorData::new(sin, [len, self.head_dim]), &device),
            )
        }
    }

    /// Rotates `x` `[batch, heads, seq, head_dim]` whose first token sits at absolute position
    /// `offset`.
    pub fn apply(&self, x: Tensor<B, 4>, offset: usize) -> Tensor<B, 4> {
        let [_, _, seq, _] = x.dims();
        let dtype = float_dtype(&x);
        let (cos, sin) = self.cos_sin(offset, seq); // [seq, head_dim] each
        let cos = to_dtype(cos, dtype).unsqueeze::<4>(); // [1, 1, seq, head_dim]
        let sin = to_dtype(sin, dtype).unsqueeze::<4>(); // [1, 1, seq, head_dim]
        x.clone() * cos + rotate_half(x) * sin
    }

    /// Rotates `x` `[batch, heads, seq, head_dim]` whose token `(r, i)` sits at position
    /// `positions[r, i]` (`< seq`; packed documents restart at 0).
    pub fn apply_at(&self, x: Tensor<B, 4>, positions: Tensor<B, 2, Int>) -> Tensor<B, 4> {
        let [b, _, seq, hd] = x.dims();
        let dtype = float_dtype(&x);
        let (cos, sin) = self.cos_sin(0, seq); // [seq, head_dim] each
        let flat = positions.reshape([b * seq]);
        let rows = |table: Tensor<B, 2>| {
            to_dtype(table.select(0, flat.clone()), dtype).reshape([b, 1, seq, hd])
        }; // [b, 1, seq, head_dim]
        x.clone() * rows(cos) + rotate_half(x) * rows(sin)
    }
}

/// `cat(-x[.., d/2:], x[.., :d/2])` on the last dimension: `[.., d] -> [.., d]`.
pub fn rotate_half<const D: usize, B: Backend>(x: Tensor<B, D>) -> Tensor<B, D> {
    let d = x.dims()[D - 1];
    let half = d / 2;
    let x1 = x.clone().narrow(D - 1, 0, half); // [.., d/2]
    let x2 = x.narrow(D - 1, half, half); // [.., d/2]
    Tensor::cat(vec![x2.neg(), x1], D - 1)
}

/// Grouped-query attention head sharing: `[b, n_kv, t, hd] -> [b, n_kv * n_rep, t, hd]`, so query
/// head `h` reads kv head `h / n_rep` (HF `repeat_kv`).
pub fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n_rep: usize) -> Tensor<B, 4> {
    if n_rep == 1 {
        return x;
    }
    let [b, n_kv, t, hd] = x.dims();
    x.unsqueeze_dim::<5>(2) // [b, n_kv, 1, t, hd]
        .expand([b, n_kv, n_rep, t, hd]) // [b, n_kv, n_rep, t, hd]
        .reshape([b, n_kv * n_rep, t, hd])
}

/// Scaled-dot-product attention within the documents of packed rows (see [`Segments`]): query
/// `i` sees keys `start(i)..=i`. `q`, `k`, `v` `[b, h, s, hd]`; returns `[b, h, s, hd]`.
pub fn segment_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    segments: &Segments,
) -> Tensor<B, 4> {
    let [b, h, s, hd] = q.dims();
    segments.check_dims(b, s);
    let mask = segments
        .attention_mask::<B>(&q.device()) // [b, s, s]
        .unsqueeze_dim::<4>(1) // [b, 1, s, s]
        .expand([b, h, s, s]);
    let options = AttentionModuleOptions {
        scale: Some((hd as f64).powf(-0.5)),
        softcap: None,
        is_causal: false,
    };
    attention(q, k, v, Some(mask), None, options)
}

/// Causal scaled-dot-product attention, scale `head_dim^-0.5`.
///
/// `q`: `[b, h, s, hd]`, `k`/`v`: `[b, h, t, hd]` with `s <= t`: the queries are the last `s`
/// positions of the `t` keys, i.e. query `i` sits at absolute position `t - s + i` and sees keys
/// `0..=t - s + i`. Returns `[b, h, s, hd]`.
///
/// `s == t` (training, prefill) uses burn's `is_causal` path; `s == 1` (token-by-token decoding)
/// needs no mask; anything else (a chunk appended to a cache) gets an explicit boolean mask. burn's
/// fallback aligns `is_causal` bottom-right too, but that is not documented for every backend.
pub fn causal_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, h, s, hd] = q.dims();
    let t = k.dims()[2];
    assert!(s <= t, "causal attention: {s} queries but only {t} keys");
    let options = |is_causal| AttentionModuleOptions {
        scale: Some((hd as f64).powf(-0.5)),
        softcap: None,
        is_causal,
    };
    if s == t {
        attention(q, k, v, None, None, options(true))
    } else if s == 1 {
        attention(q, k, v, None, None, options(false))
    } else {
        // true = masked: key j is hidden from query i when j > i + (t - s).
        let mask = Tensor::<B, 2, Bool>::tril_mask([s, t], (t - s) as i64, &q.device()) // [s, t]
            .unsqueeze::<4>() // [1, 1, s, t]
            .expand([b, h, s, t]);
        attention(q, k, v, Some(mask), None, options(false))
    }
}

/// The packed documents of `ctx`, for a layer that may also be continuing a cache: packing is
/// for training and evaluation, from position 0; panics when both are given.
pub(crate) fn packed_without_cache(ctx: &ForwardCtx, has_past: bool) -> Option<&Segments> {
    let segments = ctx.segments.as_ref();
    assert!(
        segments.is_none() || !has_past,
        "packed segments cannot continue a generation cache"
    );
    segments
}

/// Keys and values of one attention layer for the positions seen so far (after RoPE, before the
/// GQA repeat): `[batch, n_kv_heads, cached_len, head_dim]` each.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    /// Rotated keys.
    pub k: Tensor<B, 4>,
    /// Values.
    pub v: Tensor<B, 4>,
}

impl<B: Backend> KvCache<B> {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.k.dims()[2]
    }

    /// True when no position is cached (never the case for a stored entry).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Multi-head self-attention with grouped-query KV heads and rotate-half RoPE, no biases.
/// Field names are HF's (`self_attn.{q,k,v,o}_proj`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[d_model] -> [n_heads * head_dim]`; head `h` owns output features `h*hd..(h+1)*hd`.
    pub q_proj: Linear<B>,
    /// `[d_model] -> [n_kv_heads * head_dim]`.
    pub k_proj: Linear<B>,
    /// `[d_model] -> [n_kv_heads * head_dim]`.
    pub v_proj: Linear<B>,
    /// `[n_heads * head_dim] -> [d_model]`.
    pub o_proj: Linear<B>,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Per-head dimension.
    pub head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// Fresh projections under `vb` (`{q,k,v,o}_proj`) from `normal(0, std)`; `o_proj` from
    /// `normal(0, out_std)` (the residual branch's output).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &Builder<B>,
        d_model: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        std: f64,
        out_std: f64,
    ) -> Self {
        let (q, kv) = (n_heads * head_dim, n_kv_heads * head_dim);
        Self {
            q_proj: vb.linear_normal("q_proj", d_model, q, std),
            k_proj: vb.linear_normal("k_proj", d_model, kv, std),
            v_proj: vb.linear_normal("v_proj", d_model, kv, std),
            o_proj: vb.linear_normal("o_proj", q, d_model, out_std),
            n_heads,
            n_kv_heads,
            head_dim,
        }
    }

    /// Attends `x` `[b, s, d]` to itself and to `past` (the positions before it); with
    /// `ctx.segments` (no `past` then), each packed document only to itself.
    /// Returns the output `[b, s, d]` and the cache extended by these `s` positions.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        past: Option<KvCache<B>>,
        ctx: &ForwardCtx,
    ) -> (Tensor<B, 3>, KvCache<B>) {
        let [b, s, _] = x.dims();
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let offset = past.as_ref().map_or(0, KvCache::len);
        let segments = packed_without_cache(ctx, past.is_some());
        let device = x.device();

        let split_heads = |t: Tensor<B, 3>, heads: usize| {
            t.reshape([b, s, heads, hd]).swap_dims(1, 2) // [b, heads, s, hd]
        };
        let q = split_heads(self.q_proj.forward_rows(x.clone(), ctx), nh); // [b, nh, s, hd]
        let k = split_heads(self.k_proj.forward_rows(x.clone(), ctx), nkv); // [b, nkv, s, hd]
        let v = split_heads(self.v_proj.forward_rows(x, ctx), nkv); // [b, nkv, s, hd]
        let (q, k) = match segments {
            Some(seg) => {
                let positions = seg.positions::<B>(&device); // [b, s]
                (
                    rope.apply_at(q, positions.clone()),
                    rope.apply_at(k, positions),
                )
            }
            None => (rope.apply(q, offset), rope.apply(k, offset)),
        };

        let (k, v) = match past {
            Some(past) => (
                Tensor::cat(vec![past.k, k], 2), // [b, nkv, offset + s, hd]
                Tensor::cat(vec![past.v, v], 2),
            ),
            None => (k, v),
        };
        let cache = KvCache {
            k: k.clone(),
            v: v.clone(),
        };

        let k = repeat_kv(k, nh / nkv); // [b, nh, t, hd]
        let v = repeat_kv(v, nh / nkv); // [b, nh, t, hd]
        let y = match segments {
            Some(seg) => segment_attention(q, k, v, seg),
            None => causal_attention(q, k, v),
        }; // [b, nh, s, hd]
        let y = y.swap_dims(1, 2).reshape([b, s, nh * hd]); // [b, s, nh * hd]
        (self.o_proj.forward_rows(y, ctx), cache) // [b, s, d]
    }

    /// [`Attention::forward`] for positions `0..s` without a KV cache (training, evaluation):
    /// the same values, through the fused kernels where they apply.
    pub(crate) fn forward_uncached(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        ctx: &ForwardCtx,
    ) -> Tensor<B, 3> {
        let [_, s, _] = x.dims();
        let [table_len, _] = rope.cos.dims();
        if !fused::enabled(&x) || s > table_len {
            return self.forward(x, rope, None, ctx).0;
        }
        let q = self.q_proj.forward_rows(x.clone(), ctx); // [b, s, nh * hd]
        let k = self.k_proj.forward_rows(x.clone(), ctx); // [b, s, nkv * hd]
        let v = self.v_proj.forward_rows(x, ctx); // [b, s, nkv * hd]
        let y = fused::rope_attention(
            q,
            k,
            v,
            Some((rope.cos.clone(), rope.sin.clone())),
            ctx.segments.as_ref(),
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
        ); // [b, s, nh * hd]
        self.o_proj.forward_rows(y, ctx) // [b, s, d]
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`, no biases. Field names are HF's.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[d_model] -> [ffn]`.
    pub gate_proj: Linear<B>,
    /// `[d_model] -> [ffn]`.
    pub up_proj: Linear<B>,
    /// `[ffn] -> [d_model]`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// Fresh projections under `vb` from `normal(0, std)`; `down_proj` from `normal(0, out_std)`.
    pub fn new(vb: &Builder<B>, d_model: usize, ffn: usize, std: f64, out_std: f64) -> Self {
        Self {
            gate_proj: vb.linear_normal("gate_proj", d_model, ffn, std),
            up_proj: vb.linear_normal("up_proj", d_model, ffn, std),
            down_proj: vb.linear_normal("down_proj", ffn, d_model, out_std),
        }
    }

    /// `[b, s, d] -> [b, s, d]`.
    pub fn forward(&self, x: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        let gate = self.gate_proj.forward_rows(x.clone(), ctx); // [b, s, ffn]
        let up = self.up_proj.forward_rows(x, ctx); // [b, s, ffn]
        let hidden = silu_mul(gate, up); // [b, s, ffn]
        self.down_proj.forward_rows(hidden, ctx) // [b, s, d]
    }
}

/// `silu(gate) ⊙ up` (same shapes): SwiGLU's product, Mamba-2's gate. One fused kernel with its
/// own backward on the CPU backend in f32; burn ops otherwise.
pub fn silu_mul<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    if fused::enabled(&gate) && fused::enabled(&up) {
        fused::swiglu(gate, up)
    } else {
        silu(gate) * up
    }
}
