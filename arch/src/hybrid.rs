//! A hybrid Mamba + attention decoder, checkpoint-compatible with `transformers`'
//! `JambaForCausalLM` restricted to one expert (`num_experts: 1`: a plain SwiGLU MLP in every
//! layer, no router).
//!
//! Layer `i` is attention when `i % attn_layer_period == attn_layer_offset`, Mamba-1 otherwise
//! (HF `JambaConfig.layers_block_type`). Every layer is
//! `h += mixer(input_layernorm(h)); h += feed_forward(pre_ff_layernorm(h))`, then
//! `model.final_layernorm` and `lm_head` (untied by default, as in Jamba; tied supported).
//!
//! - Mamba layers (`model.layers.{i}.mamba.*`): HF `JambaMambaMixer` = the Mamba-1 mixer of
//!   [`crate::mamba`] plus RMSNorms `dt_layernorm` `[R]`, `b_layernorm`, `c_layernorm` `[N]` on δ,
//!   B and C right after `x_proj` (before `dt_proj`, whose bias is always present); `in_proj` /
//!   `out_proj` biases per `mamba_proj_bias`, conv bias per `mamba_conv_bias`.
//! - Attention layers (`model.layers.{i}.self_attn.{q,k,v,o}_proj`): grouped-query causal
//!   attention, no biases and **no positional encoding** (Jamba relies on the Mamba layers for
//!   position), `head_dim = hidden_size / num_attention_heads`.
//!
//! Burn module paths are the HF names without `model.`, except that a Mamba layer's mixer
//! parameters sit one level lower (`layers.0.mamba.mixer.in_proj.weight` for HF
//! `model.layers.0.mamba.in_proj.weight`; the norms are `layers.0.mamba.dt_layernorm.weight`).
//!
//! Mixed precision (see [`crate::Model::with_precision`]): as in [`crate::llama`] and
//! [`crate::mamba`], norms, matmuls, attention and activations run in `compute_dtype`, the Mamba
//! layers' selective scan in f32; the residual stream and the logits stay f32.
//!
//! Why Jamba rather than Bamba: Jamba's hybrid reuses kiln's Mamba-1 mixer and Llama attention
//! unchanged (plus three small norms), while Bamba needs a Mamba-2 (SSD) mixer and partial RoPE.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config_keys::ConfigKeys;
use crate::error::{check_positive, ArchError};
use crate::grads::CheckpointedModel;
use crate::hf::{HfMapping, HfModel};
use crate::layers::{
    causal_attention, fused_enabled, packed_without_cache, repeat_kv, rope_attention,
    segment_attention, Attention, Builder, ForwardCtx, KvCache, Linear, Mlp, RmsNorm,
};
use crate::llama::Materialize;
use crate::mamba::{MambaConfig, MambaLayerState, MambaMixer, ScanMode};
use crate::ssm::{norm_head_logits, normal_param, residual_add, RecurrentCache};

/// What layer `i` mixes tokens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Mamba-1 selective SSM.
    Mamba,
    /// Causal GQA attention without positional encoding.
    Attention,
}

/// Hyperparameters of a [`Hybrid`], keyed by HF `JambaConfig` names; the serde defaults are
/// `JambaConfig`'s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HybridConfig {
    /// Vocabulary size.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Model width d.
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    /// SwiGLU hidden width of every layer's `feed_forward`.
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    /// Number of layers (Mamba and attention together).
    #[serde(default = "default_num_hidden_layers")]
    pub num_hidden_layers: usize,
    /// Query heads of the attention layers.
    #[serde(default = "default_num_attention_heads")]
    pub num_attention_heads: usize,
    /// Key/value heads (divides `num_attention_heads`).
    #[serde(default = "default_num_key_value_heads")]
    pub num_key_value_heads: usize,
    /// Layer i is attention when `i % attn_layer_period == attn_layer_offset`.
    #[serde(default = "default_attn_layer_period")]
    pub attn_layer_period: usize,
    /// See `attn_layer_period` (< period).
    #[serde(default = "default_attn_layer_offset")]
    pub attn_layer_offset: usize,
    /// SSM state size N.
    #[serde(default = "default_mamba_d_state")]
    pub mamba_d_state: usize,
    /// Convolution width K.
    #[serde(default = "default_mamba_d_conv")]
    pub mamba_d_conv: usize,
    /// Mamba expansion (E = expand · d).
    #[serde(default = "default_mamba_expand")]
    pub mamba_expand: usize,
    /// Rank R of the step projection (`"auto"` in HF: `ceil(hidden_size / 16)`, resolved by
    /// [`HybridConfig::from_keys`]).
    pub mamba_dt_rank: usize,
    /// Bias on the depthwise convolution (HF default true).
    #[serde(default = "default_true")]
    pub mamba_conv_bias: bool,
    /// Biases on `in_proj` / `out_proj` (HF default false).
    #[serde(default)]
    pub mamba_proj_bias: bool,
    /// RMSNorm epsilon (every norm, the dt/B/C norms too). Default 1e-6.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Head tied to the embedding (Jamba's default: false).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Std of the normal init of embeddings and attention/MLP weights. Default 0.02.
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    /// Written to `config.json` (attention has no position table: no hard limit). Default 262144.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
}

fn default_true() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-6
}
fn default_init() -> f64 {
    0.02
}
fn default_max_pos() -> usize {
    262144
}
fn default_vocab_size() -> usize {
    65536
}
fn default_hidden_size() -> usize {
    4096
}
fn default_intermediate_size() -> usize {
    14336
}
fn default_num_hidden_layers() -> usize {
    32
}
fn default_num_attention_heads() -> usize {
    32
}
fn default_num_key_value_heads() -> usize {
    8
}
fn default_attn_layer_period() -> usize {
    8
}
fn default_attn_layer_offset() -> usize {
    4
}
fn default_mamba_d_state() -> usize {
    16
}
fn default_mamba_d_conv() -> usize {
    4
}
fn default_mamba_expand() -> usize {
    2
}

impl HybridConfig {
    /// Per-layer kinds, from `attn_layer_period` / `attn_layer_offset`.
    pub fn layout(&self) -> Vec<LayerKind> {
        (0..self.num_hidden_layers)
            .map(|i| {
                if self.attn_layer_period > 0
                    && i % self.attn_layer_period == self.attn_layer_offset
                {
                    LayerKind::Attention
                } else {
                    LayerKind::Mamba
                }
            })
            .collect()
    }

    /// The layout as a recipe-friendly string, one letter a layer: `M` Mamba, `A` attention
    /// (e.g. `"MAMA"`).
    pub fn layout_string(&self) -> String {
        self.layout()
            .iter()
            .map(|k| match k {
                LayerKind::Mamba => 'M',
                LayerKind::Attention => 'A',
            })
            .collect()
    }

    /// Per-head dimension, `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Mamba inner width E.
    pub fn mamba_intermediate(&self) -> usize {
        self.mamba_expand * self.hidden_size
    }

    /// Checks the shapes fit together.
    pub fn validate(&self) -> Result<(), ArchError> {
        let bad = |key: &str, reason: String| {
            Err(ArchError::InvalidConfig {
                key: key.into(),
                reason,
            })
        };
        check_positive(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("attn_layer_period", self.attn_layer_period),
            ("mamba_d_state", self.mamba_d_state),
            ("mamba_d_conv", self.mamba_d_conv),
            ("mamba_expand", self.mamba_expand),
            ("mamba_dt_rank", self.mamba_dt_rank),
        ])?;
        if self.attn_layer_offset >= self.attn_layer_period {
            return bad(
                "attn_layer_offset",
                format!(
                    "{} must be smaller than attn_layer_period {}",
                    self.attn_layer_offset, self.attn_layer_period
                ),
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            );
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            );
        }
        Ok(())
    }

    /// The Mamba-1 config whose mixer a Mamba layer uses (init rules of [`MambaConfig::init`]).
    fn mamba_config(&self) -> MambaConfig {
        MambaConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            state_size: self.mamba_d_state,
            num_hidden_layers: self.num_hidden_layers,
            expand: self.mamba_expand,
            conv_kernel: self.mamba_d_conv,
            time_step_rank: self.mamba_dt_rank,
            layer_norm_epsilon: self.rms_norm_eps,
            use_bias: self.mamba_proj_bias,
            use_conv_bias: self.mamba_conv_bias,
            tie_word_embeddings: self.tie_word_embeddings,
            initializer_range: self.initializer_range,
            rescale_prenorm_residual: false,
            ..MambaConfig::mamba_130m()
        }
    }

    /// Parameters of one Mamba mixer (with its three norms).
    fn mamba_params(&self) -> usize {
        let (d, e, n, r, k) = (
            self.hidden_size,
            self.mamba_intermediate(),
            self.mamba_d_state,
            self.mamba_dt_rank,
            self.mamba_d_conv,
        );
        let proj_bias = if self.mamba_proj_bias { 2 * e + d } else { 0 };
        let conv_bias = if self.mamba_conv_bias { e } else { 0 };
        d * 2 * e
            + e * k
            + conv_bias
            + e * (r + 2 * n)
            + r * e
            + e
            + e * n
            + e
            + e * d
            + proj_bias
            + r
            + 2 * n
    }

    /// Parameters of one attention mixer.
    fn attention_params(&self) -> usize {
        let (d, hd) = (self.hidden_size, self.head_dim());
        let (nh, nkv) = (self.num_attention_heads, self.num_key_value_heads);
        d * nh * hd * 2 + d * nkv * hd * 2
    }

    /// Number of parameters (analytic; equals the module's count).
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let per_layer = 2 * d + 3 * d * self.intermediate_size;
        let mixers: usize = self
            .layout()
            .iter()
            .map(|k| match k {
                LayerKind::Mamba => self.mamba_params(),
                LayerKind::Attention => self.attention_params(),
            })
            .sum();
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_hidden_layers * per_layer + mixers + d + head
    }

    /// Training FLOPs (forward + backward) per token at sequence length `seq_len`, counted as for
    /// Llama and Mamba: `6 · N_matmul` (every layer's mixer and MLP weights plus the output head)
    /// plus, per attention layer, `6 · d · seq_len` for the causal `QKᵀ` and `AV`, and per Mamba
    /// layer `6 · E · (3N + K)` for the scan and the convolution. Norms and activations ignored.
    pub fn flops_per_token(&self, seq_len: usize) -> u64 {
        let (d, f) = (self.hidden_size as u64, self.intermediate_size as u64);
        let (e, n, r, k) = (
            self.mamba_intermediate() as u64,
            self.mamba_d_state as u64,
            self.mamba_dt_rank as u64,
            self.mamba_d_conv as u64,
        );
        let kv = (self.num_key_value_heads * self.head_dim()) as u64;
        let attn_matmul = d * d + 2 * d * kv + d * d;
        let mamba_matmul = d * 2 * e + e * (r + 2 * n) + r * e + e * d;
        let mlp = 3 * d * f;
        let mut flops = 6 * self.vocab_size as u64 * d;
        for kind in self.layout() {
            flops += 6 * mlp
                + match kind {
                    LayerKind::Attention => 6 * attn_matmul + 6 * d * seq_len as u64,
                    LayerKind::Mamba => 6 * mamba_matmul + 6 * e * (3 * n + k),
                };
        }
        flops
    }

    /// How module paths become `JambaForCausalLM` tensor names (see [`crate::hf`]): Jamba keeps
    /// the Mamba mixer's tensors directly under `mamba.`, next to its three inner norms.
    pub fn hf_mapping(&self) -> HfMapping {
        HfMapping {
            prefix: "model.",
            renames: &[(".mamba.mixer.", ".mamba.")],
            layer_repeats: 1,
            embedding: "embed_tokens.weight",
            tie_word_embeddings: self.tie_word_embeddings,
            ignored_suffixes: &[],
        }
    }

    /// HF `config.json` for `JambaForCausalLM` (one expert).
    pub fn to_hf_config(&self, bos_token_id: u32, eos_token_id: u32, torch_dtype: &str) -> Value {
        json!({
            "architectures": ["JambaForCausalLM"],
            "model_type": "jamba",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "attn_layer_period": self.attn_layer_period,
            "attn_layer_offset": self.attn_layer_offset,
            "num_experts": 1,
            "num_experts_per_tok": 1,
            "expert_layer_period": 1,
            "expert_layer_offset": 0,
            "mamba_d_state": self.mamba_d_state,
            "mamba_d_conv": self.mamba_d_conv,
            "mamba_expand": self.mamba_expand,
            "mamba_dt_rank": self.mamba_dt_rank,
            "mamba_conv_bias": self.mamba_conv_bias,
            "mamba_proj_bias": self.mamba_proj_bias,
            "use_mamba_kernels": false,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "attention_dropout": 0.0,
            "output_router_logits": false,
            "use_cache": true,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "pad_token_id": eos_token_id,
            "dtype": torch_dtype,
            "torch_dtype": torch_dtype,
        })
    }

    /// Reads an HF Jamba `config.json` (see [`HybridConfig::from_keys`]). Rejects a model with
    /// more than one expert in any layer, and any activation but SiLU.
    pub fn from_hf_config(cfg: &Value) -> Result<Self, ArchError> {
        let mut keys = ConfigKeys::object(cfg)?;
        keys.expect_model_type("jamba")?;
        keys.expect_silu("kiln implements SiLU only")?;
        // `JambaConfig` fields kiln does not keep, with their defaults.
        let key_or =
            |key: &str, default: usize| Ok::<_, ArchError>(keys.usize(key)?.unwrap_or(default));
        let (num_experts, expert_period, expert_offset) = (
            key_or("num_experts", 16)?,
            key_or("expert_layer_period", 2)?,
            key_or("expert_layer_offset", 1)?,
        );
        let layers = keys
            .usize("num_hidden_layers")?
            .unwrap_or_else(default_num_hidden_layers);
        if num_experts > 1
            && (0..layers).any(|i| expert_period > 0 && i % expert_period == expert_offset)
        {
            return Err(ArchError::UnsupportedConfig {
                key: "num_experts".into(),
                value: num_experts.to_string(),
                reason: "kiln's hybrid has one expert (a plain MLP) per layer".into(),
            });
        }
        // An explicit `null` is `num_attention_heads` (transformers), an absent key its default.
        if cfg.get("num_key_value_heads") == Some(&Value::Null) {
            let heads = keys
                .usize("num_attention_heads")?
                .unwrap_or_else(default_num_attention_heads);
            keys.set("num_key_value_heads", heads);
        }
        Self::from_keys(keys)
    }

    /// A config from `config.json` keys. `mamba_dt_rank` absent or `"auto"` is
    /// `ceil(hidden_size / 16)`; every other absent key takes its serde default, transformers'
    /// `JambaConfig` default (which describe Jamba-v0.1, so a small model names its shape).
    /// Validated.
    pub fn from_keys(mut keys: ConfigKeys) -> Result<Self, ArchError> {
        let hidden_size = keys
            .usize("hidden_size")?
            .unwrap_or_else(default_hidden_size);
        keys.resolve_auto("mamba_dt_rank", hidden_size.div_ceil(16))?;
        let config: Self = keys.deserialize(&[])?;
        config.validate()?;
        Ok(config)
    }

    /// Fresh weights: embedding, head, attention and MLP weights `~ normal(0,
    /// initializer_range)` (HF), norms 1, Mamba mixers by [`MambaConfig::init`]'s rules.
    /// Panics if [`HybridConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Hybrid<B> {
        self.init_with(&Builder::new(device))
    }

    /// [`HybridConfig::init`] through a builder whose plan may give the projections adapters or
    /// quantizers (the base weights are the same either way).
    pub fn init_with<B: Backend>(&self, vb: &Builder<B>) -> Hybrid<B> {
        let device = vb.device;
        if let Err(e) = self.validate() {
            panic!("invalid hybrid config: {e}");
        }
        let (d, hd, ffn) = (self.hidden_size, self.head_dim(), self.intermediate_size);
        let (nh, nkv) = (self.num_attention_heads, self.num_key_value_heads);
        let (std, eps) = (self.initializer_range, self.rms_norm_eps);
        let mamba_cfg = self.mamba_config();
        let layers = self
            .layout()
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let layer = vb.pp("layers").pp(i);
                let (attn, mlp) = (layer.pp("self_attn"), layer.pp("feed_forward"));
                HybridLayer {
                    input_layernorm: RmsNorm::new(d, eps, device),
                    self_attn: (kind == LayerKind::Attention)
                        .then(|| Attention::new(&attn, d, nh, nkv, hd, std, std)),
                    mamba: (kind == LayerKind::Mamba).then(|| JambaMamba {
                        mixer: mamba_cfg.init_mixer(&layer.pp("mamba").pp("mixer")),
                        dt_layernorm: RmsNorm::new(self.mamba_dt_rank, eps, device),
                        b_layernorm: RmsNorm::new(self.mamba_d_state, eps, device),
                        c_layernorm: RmsNorm::new(self.mamba_d_state, eps, device),
                    }),
                    pre_ff_layernorm: RmsNorm::new(d, eps, device),
                    feed_forward: Mlp::new(&mlp, d, ffn, std, std),
                }
            })
            .collect();
        let model = Hybrid {
            embed_tokens: Embedding {
                weight: normal_param([self.vocab_size, d], std, device),
            },
            layers,
            final_layernorm: RmsNorm::new(d, eps, device),
            lm_head: (!self.tie_word_embeddings)
                .then(|| vb.linear_normal("lm_head", d, self.vocab_size, std)),
            config: self.clone(),
            ctx: ForwardCtx::default(),
        };
        model.visit(&mut Materialize);
        model
    }
}

/// HF `JambaMambaMixer`: the Mamba-1 mixer plus RMSNorms on δ, B and C.
#[derive(Module, Debug)]
pub struct JambaMamba<B: Backend> {
    /// The Mamba-1 mixer (HF names `in_proj`, `conv1d`, `x_proj`, `dt_proj`, `A_log`, `D`,
    /// `out_proj`).
    pub mixer: MambaMixer<B>,
    /// RMSNorm over the R step features.
    pub dt_layernorm: RmsNorm<B>,
    /// RMSNorm over B's N features.
    pub b_layernorm: RmsNorm<B>,
    /// RMSNorm over C's N features.
    pub c_layernorm: RmsNorm<B>,
}

impl<B: Backend> JambaMamba<B> {
    /// `u` `[b, l, d]` -> `[b, l, d]` and the state after the last position.
    pub fn forward(
        &self,
        u: Tensor<B, 3>,
        state: Option<MambaLayerState<B>>,
        ctx: &ForwardCtx,
    ) -> (Tensor<B, 3>, MambaLayerState<B>) {
        self.mixer.forward_with_norms(
            u,
            state,
            ScanMode::Sequential,
            Some([&self.dt_layernorm, &self.b_layernorm, &self.c_layernorm]),
            ctx,
        )
    }
}

/// Causal GQA attention of `x` `[b, s, d]` over `past` and itself, without positional encoding
/// (HF `JambaAttention`); with `ctx.segments`, within each packed document. Returns `[b, s, d]`
/// and the extended cache.
fn attention_no_rope<B: Backend>(
    attn: &Attention<B>,
    x: Tensor<B, 3>,
    past: Option<KvCache<B>>,
    ctx: &ForwardCtx,
) -> (Tensor<B, 3>, KvCache<B>) {
    let [b, s, d] = x.dims();
    let (nh, nkv, hd) = (attn.n_heads, attn.n_kv_heads, attn.head_dim);
    let segments = packed_without_cache(ctx, past.is_some());
    let x = x.reshape([b * s, d]);
    if past.is_none() && fused_enabled(&x) {
        // Training / evaluation on the CPU: kiln's fused attention kernel (without RoPE), whose
        // backward beats burn's unfused one.
        let q = attn.q_proj.forward(x.clone(), ctx).reshape([b, s, nh * hd]);
        let k = attn
            .k_proj
            .forward(x.clone(), ctx)
            .reshape([b, s, nkv * hd]);
        let v = attn.v_proj.forward(x, ctx).reshape([b, s, nkv * hd]);
        let y = rope_attention(q, k.clone(), v.clone(), None, segments, nh, nkv, hd); // [b, s, nh·hd]
        let heads = |t: Tensor<B, 3>| t.reshape([b, s, nkv, hd]).swap_dims(1, 2); // [b, nkv, s, hd]
        let cache = KvCache {
            k: heads(k),
            v: heads(v),
        };
        let out = attn
            .o_proj
            .forward(y.reshape([b * s, nh * hd]), ctx)
            .reshape([b, s, d]);
        return (out, cache);
    }
    let heads = |lin: &Linear<B>, n: usize| {
        lin.forward(x.clone(), ctx)
            .reshape([b, s, n, hd])
            .swap_dims(1, 2) // [b, n, s, hd]
    };
    let (q, k, v) = (
        heads(&attn.q_proj, nh),
        heads(&attn.k_proj, nkv),
        heads(&attn.v_proj, nkv),
    );
    let (k, v) = match past {
        Some(p) => (Tensor::cat(vec![p.k, k], 2), Tensor::cat(vec![p.v, v], 2)),
        None => (k, v),
    };
    let cache = KvCache {
        k: k.clone(),
        v: v.clone(),
    };
    let (k, v) = (repeat_kv(k, nh / nkv), repeat_kv(v, nh / nkv)); // [b, nh, t, hd]
    let y = match segments {
        Some(seg) => segment_attention(q, k, v, seg),
        None => causal_attention(q, k, v),
    }; // [b, nh, s, hd]
    let y = y.swap_dims(1, 2).reshape([b * s, nh * hd]);
    (attn.o_proj.forward(y, ctx).reshape([b, s, d]), cache)
}

/// One layer: `h += mixer(input_layernorm(h)); h += feed_forward(pre_ff_layernorm(h))`. Exactly
/// one of `self_attn` / `mamba` is present.
#[derive(Module, Debug)]
pub struct HybridLayer<B: Backend> {
    /// Norm before the mixer.
    pub input_layernorm: RmsNorm<B>,
    /// Attention mixer (attention layers).
    pub self_attn: Option<Attention<B>>,
    /// Mamba mixer (Mamba layers).
    pub mamba: Option<JambaMamba<B>>,
    /// Norm before the MLP.
    pub pre_ff_layernorm: RmsNorm<B>,
    /// SwiGLU MLP (HF `JambaMLP`, the single expert).
    pub feed_forward: Mlp<B>,
}

/// What one layer carries between calls of [`Hybrid::forward_cached`].
#[derive(Clone, Debug)]
pub enum HybridLayerState<B: Backend> {
    /// Keys and values so far.
    Attention(KvCache<B>),
    /// Convolution and SSM state.
    Mamba(MambaLayerState<B>),
}

impl<B: Backend> HybridLayer<B> {
    /// The mixer and the MLP compute in `ctx.compute` (the norms hand them that dtype); their
    /// outputs are added to the residual stream in its own dtype.
    fn forward(
        &self,
        h: Tensor<B, 3>,
        state: Option<HybridLayerState<B>>,
        ctx: &ForwardCtx,
    ) -> (Tensor<B, 3>, HybridLayerState<B>) {
        let x = self.input_layernorm.forward_as(h.clone(), ctx.compute);
        let (y, state) = match (&self.self_attn, &self.mamba) {
            (Some(attn), _) => {
                let past = match state {
                    Some(HybridLayerState::Attention(kv)) => Some(kv),
                    _ => None,
                };
                let (y, kv) = attention_no_rope(attn, x, past, ctx);
                (y, HybridLayerState::Attention(kv))
            }
            (None, Some(mamba)) => {
                let past = match state {
                    Some(HybridLayerState::Mamba(s)) => Some(s),
                    _ => None,
                };
                let (y, s) = mamba.forward(x, past, ctx);
                (y, HybridLayerState::Mamba(s))
            }
            (None, None) => panic!("hybrid layer without a mixer"),
        };
        let h = residual_add(h, y);
        let y = self.feed_forward.forward(
            self.pre_ff_layernorm.forward_as(h.clone(), ctx.compute),
            ctx,
        );
        (residual_add(h, y), state)
    }
}

/// `JambaForCausalLM` with one expert. Field names are the HF names without `model.`.
#[derive(Module, Debug)]
pub struct Hybrid<B: Backend> {
    /// Token embedding `[vocab, d]`.
    pub embed_tokens: Embedding<B>,
    /// The layers.
    pub layers: Vec<HybridLayer<B>>,
    /// Final norm.
    pub final_layernorm: RmsNorm<B>,
    /// Output head; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    /// The config this model was built from.
    #[module(skip)]
    pub config: HybridConfig,
    /// How the blocks compute (precision, quantizers); see [`ForwardCtx`].
    #[module(skip)]
    pub ctx: ForwardCtx,
}

/// Generation state of a [`Hybrid`]: KV caches of attention layers, conv/SSM states of Mamba
/// layers (HF `HybridMambaAttentionDynamicCache`). Under mixed precision keys, values and conv
/// windows are kept in the compute dtype, SSM states in f32.
pub type HybridCache<B> = RecurrentCache<HybridLayerState<B>>;

impl<B: Backend> Hybrid<B> {
    /// `input_ids` `[b, l]` -> logits `[b, l, vocab]`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_with(input_ids, &self.ctx)
    }

    /// [`Hybrid::forward`] under `ctx` (a batch's context: packed documents, see [`ForwardCtx`]).
    pub fn forward_with(&self, input_ids: Tensor<B, 2, Int>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        let mut h = self.embed_tokens.forward(input_ids);
        for layer in &self.layers {
            h = layer.forward(h, None, ctx).0;
        }
        self.logits(h, ctx)
    }

    /// An empty cache for `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> HybridCache<B> {
        RecurrentCache::new(self.layers.len(), batch)
    }

    /// Logits for `input_ids` `[b, l]` following what `cache` holds; updates the cache. Equal to
    /// the matching slice of [`Hybrid::forward`] on the whole sequence. Panics on a batch size
    /// other than the cache's.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut HybridCache<B>,
    ) -> Tensor<B, 3> {
        let dims = input_ids.dims();
        let h = self.embed_tokens.forward(input_ids);
        let h = cache.advance(dims, h, |i, h, state| {
            self.layers[i].forward(h, state, &self.ctx)
        });
        self.logits(h, &self.ctx)
    }

    fn logits(&self, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        norm_head_logits(
            &self.final_layernorm,
            self.lm_head.as_ref(),
            &self.embed_tokens,
            self.config.vocab_size,
            h,
            ctx,
        )
    }
}

impl<B: Backend> HfModel<B> for Hybrid<B> {
    fn hf_mapping(&self) -> HfMapping {
        self.config.hf_mapping()
    }
}

impl<B: AutodiffBackend> CheckpointedModel<B> for Hybrid<B> {
    type Block = HybridLayer<B>;

    fn embedding(&self) -> &Embedding<B> {
        &self.embed_tokens
    }

    fn num_blocks(&self) -> usize {
        self.layers.len()
    }

    fn block(&self, e: usize) -> &HybridLayer<B> {
        &self.layers[e]
    }

    fn block_forward(&self, e: usize, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        self.layers[e].forward(h, None, ctx).0
    }

    fn inner_block_forward(
        inner: &Hybrid<B::InnerBackend>,
        e: usize,
        h: Tensor<B::InnerBackend, 3>,
        ctx: &ForwardCtx,
    ) -> Tensor<B::InnerBackend, 3> {
        inner.layers[e].forward(h, None, ctx).0
    }

    fn head_logits(&self, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        self.logits(h, ctx)
    }
}
