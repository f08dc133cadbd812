//! Llama-family decoder (Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language
//! Models"), in the shapes used by SmolLM and MobileLLM (Liu et al. 2024, "MobileLLM: Optimizing
//! Sub-billion Parameter Language Models for On-Device Use Cases").
//!
//! Compatible with Hugging Face `transformers` `LlamaForCausalLM` (`models/llama/modeling_llama.py`):
//! pre-norm blocks `h += attn(rms(h)); h += mlp(rms(h))`, GQA, rotate-half RoPE, SwiGLU, no biases,
//! optionally tied input/output embeddings.
//!
//! kiln additions, both off by default:
//! - `layer_sharing` (MobileLLM-LS, "immediate block-wise weight sharing"): every unique block is
//!   applied twice in a row, `h = L(h); h = L(h)`. Same parameters, twice the depth and compute.
//!   Exported to HF as layers `2i` and `2i+1` (identical copies), so plain `LlamaForCausalLM` runs it.
//! - `scaled_residual_init` (GPT-2 / nanoGPT): the projections that write into the residual stream
//!   (`o_proj`, `down_proj`) start with std `initializer_range / sqrt(2 · effective_layers)`.

use burn::module::{Initializer, Module, ModuleVisitor, Param};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config_keys::{unsupported, ConfigKeys};
use crate::error::{check_positive, ArchError};
use crate::grads::CheckpointedModel;
use crate::hf::{HfMapping, HfModel};
use crate::layers::{
    float_dtype, to_dtype, Attention, Builder, ForwardCtx, KvCache, Linear, Mlp, RmsNorm, Rope,
};

/// Llama hyper-parameters, keyed by the HF `config.json` names.
///
/// `num_hidden_layers` counts UNIQUE blocks: with `layer_sharing` the network is twice as deep
/// (and the exported HF config says `2 × num_hidden_layers`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// Token vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Residual stream width d.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of unique decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); must divide `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Per-head dimension (even, for RoPE). Usually `hidden_size / num_attention_heads`, but HF
    /// allows any value and so does kiln.
    pub head_dim: usize,
    /// Context length: the RoPE tables are precomputed this far. Default 2048 (SmolLM, MobileLLM).
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// RoPE base θ. Default 10000 (SmolLM-135M pretraining, MobileLLM).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon. Default 1e-6 (transformers; SmolLM and MobileLLM use 1e-5).
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Output head shares the embedding matrix. Default false (transformers; SmolLM and
    /// MobileLLM tie).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Std of the normal init of every Linear and the embedding. Default 0.02 (HF, MobileLLM;
    /// SmolLM used 0.0416).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// kiln: MobileLLM-LS block-wise sharing (each block applied twice in a row). Default false.
    #[serde(default)]
    pub layer_sharing: bool,
    /// kiln: divide the init std of `o_proj`/`down_proj` by `sqrt(2 · effective_layers)`.
    /// Default false (HF init).
    #[serde(default)]
    pub scaled_residual_init: bool,
}

fn default_max_position_embeddings() -> usize {
    2048
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_initializer_range() -> f64 {
    0.02
}

impl LlamaConfig {
    /// SmolLM-135M (`HuggingFaceTB/SmolLM-135M`): 30 × 576, FFN 1536, 9/3 heads, vocab 49152, tied,
    /// init std 0.0416. 134,515,008 parameters.
    pub fn smollm_135m() -> Self {
        Self {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            max_position_embeddings: 2048,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            initializer_range: 0.0416,
            layer_sharing: false,
            scaled_residual_init: false,
        }
    }

    /// MobileLLM-125M: SmolLM-135M's shape with a 32k vocabulary and init std 0.02.
    /// 124,635,456 parameters (also for `-LS`, which sets `layer_sharing`).
    pub fn mobilellm_125m() -> Self {
        Self {
            vocab_size: 32000,
            initializer_range: 0.02,
            ..Self::smollm_135m()
        }
    }

    /// MobileLLM-350M: 32 × 960, FFN 2560, 15/5 heads, vocab 32000, tied. 345,355,200 parameters.
    pub fn mobilellm_350m() -> Self {
        Self {
            hidden_size: 960,
            intermediate_size: 2560,
            num_hidden_layers: 32,
            num_attention_heads: 15,
            num_key_value_heads: 5,
            ..Self::mobilellm_125m()
        }
    }

    /// Blocks actually applied in the forward pass (2 × unique with layer sharing).
    pub fn effective_layers(&self) -> usize {
        self.num_hidden_layers * self.repeats()
    }

    /// How many times each unique block is applied in a row.
    pub fn repeats(&self) -> usize {
        if self.layer_sharing {
            2
        } else {
            1
        }
    }

    /// Checks the config describes a buildable model; names the offending key.
    pub fn validate(&self) -> Result<(), ArchError> {
        let bad = |key: &str, reason: String| {
            Err(ArchError::InvalidConfig {
                key: key.to_string(),
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
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads = {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(
                "head_dim",
                format!("{} must be even (RoPE rotates pairs)", self.head_dim),
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad("rope_theta", format!("{} must be > 1", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad("rms_norm_eps", format!("{} must be > 0", self.rms_norm_eps));
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            return bad(
                "initializer_range",
                format!("{} must be >= 0", self.initializer_range),
            );
        }
        Ok(())
    }

    /// Matmul parameters of one block: q, k, v, o and the three SwiGLU projections.
    fn block_matmul_params(&self) -> usize {
        let (d, hd) = (self.hidden_size, self.head_dim);
        let q = d * self.num_attention_heads * hd;
        let kv = 2 * d * self.num_key_value_heads * hd;
        let o = self.num_attention_heads * hd * d;
        let mlp = 3 * d * self.intermediate_size;
        q + kv + o + mlp
    }

    /// Exact parameter count (equals burn's `Module::num_params` of the built model): embedding,
    /// unique blocks (matmuls + two norms each), final norm, and the head when untied.
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let embed = self.vocab_size * d;
        let block = self.block_matmul_params() + 2 * d;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        embed + self.num_hidden_layers * block + d + head
    }

    /// Training FLOPs per token (forward + backward) for sequences of `seq_len` tokens:
    ///
    /// `6 · N_matmul + 6 · L_eff · n_heads · head_dim · seq_len`, where
    /// - `N_matmul = L_eff · (q + k + v + o + gate + up + down weights) + vocab · d` — every weight
    ///   a token is multiplied by: the blocks counted once per APPLICATION (`L_eff` = effective
    ///   layers, so a layer-shared block counts twice) plus the output head (counted even when tied
    ///   to the embedding, because the head is a real matmul). The embedding lookup and the norms
    ///   are not matmuls and are left out. 6 = 2 (multiply-add) × 3 (forward + two backward matmuls).
    /// - the second term is attention's `QKᵀ` and `AV`: PaLM (Chowdhery et al. 2022, appendix B)
    ///   counts `12 · L · H · Q · T`; kiln halves it for the causal mask (only the lower triangle
    ///   is useful work), the convention the project's reference sheet attributes to torchtitan.
    ///
    /// RMSNorm, RoPE, softmax and SiLU are ignored (< 1% at these sizes).
    pub fn flops_per_token(&self, seq_len: usize) -> u64 {
        let l_eff = self.effective_layers() as u64;
        let n_matmul =
            l_eff * self.block_matmul_params() as u64 + (self.vocab_size * self.hidden_size) as u64;
        let attn = 6 * l_eff * (self.num_attention_heads * self.head_dim) as u64 * seq_len as u64;
        6 * n_matmul + attn
    }

    /// How module paths become `LlamaForCausalLM` tensor names (see [`crate::hf`]).
    pub fn hf_mapping(&self) -> HfMapping {
        HfMapping {
            prefix: "model.",
            renames: &[],
            layer_repeats: self.repeats(),
            embedding: "embed_tokens.weight",
            tie_word_embeddings: self.tie_word_embeddings,
            ignored_suffixes: &["rotary_emb.inv_freq"],
        }
    }

    /// HF `config.json` for `LlamaForCausalLM`. A layer-shared model is written with its effective
    /// depth (`num_hidden_layers = 2 × unique`) plus `"kiln_layer_sharing": true`, which plain
    /// transformers ignores and [`LlamaConfig::from_hf_config`] folds back.
    pub fn to_hf_config(&self, bos_token_id: u32, eos_token_id: u32, torch_dtype: &str) -> Value {
        let mut cfg = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.effective_layers(),
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            // transformers 5 reads `rope_parameters`; 4.x reads the top-level `rope_theta`.
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "hidden_act": "silu",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "pretraining_tp": 1,
            "use_cache": true,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            // `dtype` for transformers 5, `torch_dtype` for 4.x.
            "dtype": torch_dtype,
            "torch_dtype": torch_dtype,
        });
        if self.layer_sharing {
            cfg["kiln_layer_sharing"] = json!(true);
        }
        if self.scaled_residual_init {
            cfg["kiln_scaled_residual_init"] = json!(true);
        }
        cfg
    }

    /// Reads an HF Llama `config.json` (kiln's own or a real one).
    ///
    /// Absent keys take transformers' `LlamaConfig` defaults (see [`LlamaConfig::from_keys`]);
    /// `rope_theta` may sit in `rope_parameters` (transformers 5). Anything that would change the
    /// maths kiln implements (RoPE scaling, biases, another activation) is an
    /// [`ArchError::UnsupportedConfig`] naming the key.
    pub fn from_hf_config(cfg: &Value) -> Result<Self, ArchError> {
        let mut keys = ConfigKeys::object(cfg)?;
        keys.expect_model_type("llama")?;
        if let Some(archs) = keys.get("architectures") {
            let ok = archs
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x == "LlamaForCausalLM"));
            if !ok {
                return Err(unsupported(
                    "architectures",
                    archs,
                    "only [\"LlamaForCausalLM\"] is supported",
                ));
            }
        }
        for key in ["attention_bias", "mlp_bias"] {
            if keys.bool(key)? == Some(true) {
                return Err(unsupported(
                    key,
                    &Value::Bool(true),
                    "biases are not implemented",
                ));
            }
        }
        keys.expect_silu("only silu (SwiGLU) is implemented")?;
        if let Some(scaling) = keys.get("rope_scaling") {
            let is_default = scaling.get("rope_type").or_else(|| scaling.get("type"))
                == Some(&Value::from("default"));
            if !is_default {
                return Err(unsupported(
                    "rope_scaling",
                    scaling,
                    "RoPE scaling is not implemented",
                ));
            }
        }
        if let Some(params) = keys.take("rope_parameters") {
            match params.get("rope_type") {
                None | Some(Value::Null) => {}
                Some(t) if t == "default" => {}
                Some(t) => {
                    return Err(unsupported(
                        "rope_parameters.rope_type",
                        t,
                        "only the default RoPE is implemented",
                    ))
                }
            }
            match params.get("rope_theta") {
                None | Some(Value::Null) => {}
                Some(theta) if theta.is_number() => keys.set("rope_theta", theta.clone()),
                Some(v) => {
                    return Err(ConfigKeys::invalid(
                        "rope_parameters.rope_theta",
                        "a number",
                        v,
                    ))
                }
            }
        }
        // kiln's own keys; an HF layer count of a shared model is twice the unique blocks.
        keys.kiln_key("kiln_layer_sharing", "layer_sharing", None);
        keys.kiln_key("kiln_scaled_residual_init", "scaled_residual_init", None);
        if keys.bool("layer_sharing")? == Some(true) {
            let hf_layers = keys.required("num_hidden_layers")?;
            if hf_layers % 2 != 0 {
                return Err(ArchError::InvalidConfig {
                    key: "num_hidden_layers".into(),
                    reason: format!("{hf_layers} is odd but kiln_layer_sharing is true"),
                });
            }
            keys.set("num_hidden_layers", hf_layers / 2);
        }
        Self::from_keys(keys)
    }

    /// A config from `config.json` keys (`num_hidden_layers` counting unique blocks). Required:
    /// `vocab_size`, `hidden_size`, `intermediate_size`, `num_hidden_layers`,
    /// `num_attention_heads`. Absent `num_key_value_heads` is `num_attention_heads` and absent
    /// `head_dim` is `hidden_size / num_attention_heads` (transformers' rules); every other absent
    /// key takes its serde default, transformers' `LlamaConfig` default. Validated.
    pub fn from_keys(mut keys: ConfigKeys) -> Result<Self, ArchError> {
        let heads = keys.required("num_attention_heads")?;
        let hidden_size = keys.required("hidden_size")?;
        if keys.get("num_key_value_heads").is_none() {
            keys.set("num_key_value_heads", heads);
        }
        if keys.get("head_dim").is_none() {
            if heads == 0 || hidden_size % heads != 0 {
                return Err(ArchError::InvalidConfig {
                    key: "head_dim".into(),
                    reason: format!(
                        "absent, and hidden_size {hidden_size} is not a multiple of \
                         num_attention_heads {heads}"
                    ),
                });
            }
            keys.set("head_dim", hidden_size / heads);
        }
        let config: Self =
            keys.deserialize(&["vocab_size", "intermediate_size", "num_hidden_layers"])?;
        config.validate()?;
        Ok(config)
    }

    /// Fresh weights: normal(0, initializer_range) for every Linear and the embedding (HF
    /// `LlamaPreTrainedModel._init_weights`), norms at 1; with `scaled_residual_init`, `o_proj`
    /// and `down_proj` use std / sqrt(2 · effective_layers).
    ///
    /// Panics if [`LlamaConfig::validate`] fails: validate configs where they are read.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Llama<B> {
        self.init_with(&Builder::new(device))
    }

    /// [`LlamaConfig::init`] through a builder whose plan may give the projections adapters or
    /// quantizers (the base weights are the same either way).
    pub fn init_with<B: Backend>(&self, vb: &Builder<B>) -> Llama<B> {
        if let Err(e) = self.validate() {
            panic!("invalid Llama config: {e}");
        }
        let device = vb.device;
        let (d, hd) = (self.hidden_size, self.head_dim);
        let (nh, nkv) = (self.num_attention_heads, self.num_key_value_heads);
        let std = self.initializer_range;
        let residual_std = if self.scaled_residual_init {
            std / (2.0 * self.effective_layers() as f64).sqrt()
        } else {
            std
        };
        let ffn = self.intermediate_size;
        let layers = (0..self.num_hidden_layers)
            .map(|i| {
                let (attn, mlp) = (
                    vb.pp("layers").pp(i).pp("self_attn"),
                    vb.pp("layers").pp(i).pp("mlp"),
                );
                DecoderLayer {
                    input_layernorm: RmsNorm::new(d, self.rms_norm_eps, device),
                    self_attn: Attention::new(&attn, d, nh, nkv, hd, std, residual_std),
                    post_attention_layernorm: RmsNorm::new(d, self.rms_norm_eps, device),
                    mlp: Mlp::new(&mlp, d, ffn, std, residual_std),
                }
            })
            .collect();
        let model = Llama {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device),
            layers,
            norm: RmsNorm::new(d, self.rms_norm_eps, device),
            lm_head: (!self.tie_word_embeddings)
                .then(|| vb.linear_normal("lm_head", d, self.vocab_size, std)),
            rotary_emb: Rope::new(self.rope_theta, hd, self.max_position_embeddings, device),
            config: self.clone(),
            ctx: ForwardCtx::default(),
        };
        // burn initialises parameters lazily, on first use, and `Clone` of a still-lazy `Param`
        // clones the *initialiser*: a clone would later draw different random weights than the
        // original. Materialise everything now so that clones (reference models, EMA, replicas)
        // are identical copies and the RNG draw order is fixed here.
        model.visit(&mut Materialize);
        model
    }
}

/// Forces every lazily-initialised parameter to take its value.
pub(crate) struct Materialize;

impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// One pre-norm block: `h += attn(rms(h)); h += mlp(rms(h))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// GQA self-attention.
    pub self_attn: Attention<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// SwiGLU MLP.
    pub mlp: Mlp<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// `h` `[b, s, d]` -> `[b, s, d]`, plus this layer's extended KV cache. Attention and MLP
    /// compute in `compute` (the norms hand them that dtype); their outputs are added to the
    /// residual stream in its own dtype.
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        rope: &Rope<B>,
        past: Option<KvCache<B>>,
        ctx: &ForwardCtx,
    ) -> (Tensor<B, 3>, KvCache<B>) {
        let residual = float_dtype(&h);
        let x = self.input_layernorm.forward_as(h.clone(), ctx.compute);
        let (attn, cache) = self.self_attn.forward(x, rope, past, ctx);
        let h = h + to_dtype(attn, residual); // [b, s, d]
        let x = self
            .post_attention_layernorm
            .forward_as(h.clone(), ctx.compute);
        let h = h + to_dtype(self.mlp.forward(x, ctx), residual);
        (h, cache)
    }

    /// [`DecoderLayer::forward`] for positions `0..s` with no cache to fill (training, evaluation).
    fn forward_uncached(&self, h: Tensor<B, 3>, rope: &Rope<B>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        let residual = float_dtype(&h);
        let x = self.input_layernorm.forward_as(h.clone(), ctx.compute);
        let attn = self.self_attn.forward_uncached(x, rope, ctx);
        let h = h + to_dtype(attn, residual); // [b, s, d]
        let x = self
            .post_attention_layernorm
            .forward_as(h.clone(), ctx.compute);
        h + to_dtype(self.mlp.forward(x, ctx), residual)
    }
}

/// `LlamaForCausalLM`. Field names are the HF names without the `model.` prefix, so the burn module
/// path of a parameter (`layers.3.self_attn.q_proj.weight`) is its HF name minus `model.`
/// (`lm_head.weight` is top-level in HF too).
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// Token embedding, `[vocab, d]`.
    pub embed_tokens: Embedding<B>,
    /// Unique blocks (each applied twice with `layer_sharing`).
    pub layers: Vec<DecoderLayer<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// Output head `[d] -> [vocab]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    /// RoPE cos/sin tables (constants, not parameters; HF's non-persistent `rotary_emb` buffer).
    pub rotary_emb: Rope<B>,
    /// The config this model was built from.
    #[module(skip)]
    pub config: LlamaConfig,
    /// How the blocks compute (precision, quantizers); see [`ForwardCtx`].
    #[module(skip)]
    pub ctx: ForwardCtx,
}

/// Generation cache for [`Llama`]: one `(k, v)` per EFFECTIVE layer (a shared block owns two
/// entries, one per application).
#[derive(Clone, Debug)]
pub struct LlamaCache<B: Backend> {
    /// `layers[e]` holds effective layer `e`'s keys/values, `None` before the first call.
    pub layers: Vec<Option<KvCache<B>>>,
    /// Batch size the cache was created for.
    pub batch: usize,
}

impl<B: Backend> LlamaCache<B> {
    /// Number of positions already cached (the position of the next token).
    pub fn seq_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|c| c.as_ref())
            .map_or(0, KvCache::len)
    }
}

impl<B: Backend> Llama<B> {
    /// `input_ids` `[b, s]` -> logits `[b, s, vocab]` (f32), positions `0..s`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.run(input_ids, None, &self.ctx)
    }

    /// [`Llama::forward`] under `ctx` (a batch's context: packed documents, see [`ForwardCtx`]).
    pub fn forward_with(&self, input_ids: Tensor<B, 2, Int>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        self.run(input_ids, None, ctx)
    }

    /// An empty cache for `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> LlamaCache<B> {
        LlamaCache {
            layers: vec![None; self.config.effective_layers()],
            batch,
        }
    }

    /// Like [`Llama::forward`] for the tokens following what `cache` holds (positions continue
    /// from `cache.seq_len()`); appends their keys/values to the cache.
    ///
    /// Panics if the batch size differs from the one the cache was created for.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut LlamaCache<B>,
    ) -> Tensor<B, 3> {
        let [b, _] = input_ids.dims();
        assert_eq!(
            b, cache.batch,
            "forward_cached: batch {b} but the cache was created for batch {}",
            cache.batch
        );
        self.run(input_ids, Some(cache), &self.ctx)
    }

    fn run(
        &self,
        input_ids: Tensor<B, 2, Int>,
        mut cache: Option<&mut LlamaCache<B>>,
        ctx: &ForwardCtx,
    ) -> Tensor<B, 3> {
        let repeats = self.config.repeats();
        let mut h = self.embed_tokens.forward(input_ids); // [b, s, d]
        for (e, layer) in self
            .layers
            .iter()
            .flat_map(|l| std::iter::repeat_n(l, repeats))
            .enumerate()
        {
            match cache.as_mut() {
                Some(c) => {
                    let past = c.layers[e].take();
                    let (next, kv) = layer.forward(h, &self.rotary_emb, past, ctx);
                    h = next; // [b, s, d]
                    c.layers[e] = Some(kv);
                }
                None => h = layer.forward_uncached(h, &self.rotary_emb, ctx), // [b, s, d]
            }
        }
        self.logits(h, ctx)
    }

    /// Final norm and output head: hidden states `[b, s, d]` -> f32 logits `[b, s, vocab]`.
    fn logits(&self, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        let [b, s, _] = h.dims();
        let compute = ctx.compute;
        let h = self.norm.forward_as(h, compute); // [b, s, d]
        let d = self.config.hidden_size;
        let h = h.reshape([b * s, d]); // [b·s, d]
        let logits = match &self.lm_head {
            Some(head) => head.forward(h, ctx), // [b·s, vocab]
            // Tied: logits = h · E^T with E = embed_tokens.weight [vocab, d].
            None => h.matmul(to_dtype(self.embed_tokens.weight.val(), compute).transpose()), // [b·s, vocab]
        };
        // The loss (log-softmax) is computed in f32 whatever the compute dtype.
        to_dtype(
            logits.reshape([b, s, self.config.vocab_size]),
            FloatDType::F32,
        ) // [b, s, vocab]
    }
}

impl<B: Backend> HfModel<B> for Llama<B> {
    fn hf_mapping(&self) -> HfMapping {
        self.config.hf_mapping()
    }
}

impl<B: AutodiffBackend> CheckpointedModel<B> for Llama<B> {
    type Block = DecoderLayer<B>;

    fn embedding(&self) -> &Embedding<B> {
        &self.embed_tokens
    }

    fn num_blocks(&self) -> usize {
        self.config.effective_layers()
    }

    fn block(&self, e: usize) -> &DecoderLayer<B> {
        &self.layers[e / self.config.repeats()]
    }

    fn block_forward(&self, e: usize, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        self.block(e).forward_uncached(h, &self.rotary_emb, ctx)
    }

    fn inner_block_forward(
        inner: &Llama<B::InnerBackend>,
        e: usize,
        h: Tensor<B::InnerBackend, 3>,
        ctx: &ForwardCtx,
    ) -> Tensor<B::InnerBackend, 3> {
        inner.layers[e / inner.config.repeats()].forward_uncached(h, &inner.rotary_emb, ctx)
    }

    fn head_logits(&self, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        self.logits(h, ctx)
    }
}
