//! Mamba-2: state-space duality (SSD) blocks (Dao & Gu 2024, "Transformers are SSMs").
//!
//! Compatible with Hugging Face `transformers` `Mamba2ForCausalLM` (`models/mamba2/
//! modeling_mamba2.py`; its pure-torch `mamba2_chunk_scan` / `mamba2_selective_state_update` are
//! the reference for the maths): pre-norm residual blocks `h += mixer(rms(h))`, a final RMSNorm
//! `norm_f`, an optionally tied head.
//!
//! One mixer, with `E = expand · d = H · P` (`H = num_heads`, `P = head_dim`), `G = n_groups`,
//! `N = state_size`, `K = conv_kernel`, on `u` `[b, l, d]`:
//!
//! 1. `in_proj(u)` `[b, l, E + (E + 2GN) + H]` splits into the gate `z` `[E]`, `xBC`
//!    `[E + 2GN]` and the step pre-activation `dt` `[H]`;
//! 2. `xBC` goes through a depthwise causal convolution (kernel K, with bias) and SiLU, then
//!    splits into `x` `[H, P]`, `B` `[G, N]`, `C` `[G, N]` (head `h` uses group `h / (H / G)`);
//! 3. `Δ = clamp(softplus(dt + dt_bias), time_step_limit)` `[H]`, `A = −exp(A_log)` `[H]`: one
//!    scalar decay per head and position, `a_t = Δ_t · A`;
//! 4. the SSD recurrence per head, state `[P, N]`:
//!    `h_t = exp(a_t) · h_{t−1} + (Δ_t x_t) ⊗ B_t`, `y_t = h_t C_t + D ⊙ x_t`;
//! 5. gated RMSNorm (`norm`, per group of `E / G` channels): `rms(y ⊙ silu(z)) ⊙ w`;
//! 6. `out_proj` `[E] -> [d]`.
//!
//! The recurrence exists twice, as plain burn tensor ops: [`ssd_sequential`] (reference, one step
//! per position) and [`ssd_chunked`] (training: within a chunk a masked decay "attention"
//! `(C Bᵀ ⊙ exp(segsum a)) (Δx)`, between chunks a small state recurrence; every product is a
//! matmul). [`Mamba2::forward_cached`] carries the convolution window and the SSM state.
//!
//! Module paths equal the HF tensor names minus `backbone.`; burn's Linear weights are `[in, out]`
//! (transposed on export).
//!
//! Mixed precision (see [`crate::Model::with_precision`]): norms, matmuls, the convolution and
//! activations run in `compute_dtype`; Δ (softplus), the SSD recurrence, its `D` skip and the
//! gated RMSNorm run in f32 whatever it is, as in `mamba_ssm`; the residual stream and the logits
//! stay f32.
//!
//! On the CPU backend the SSD recurrence runs through the fused selective-scan kernel
//! (`ssd_fused`), and the conv + SiLU and softplus through the fused Mamba kernels; activation
//! checkpointing works per block (`grads.rs`).
//!
//! Left out: `attention_mask` (left padding).

use burn::module::{Module, Param};
use burn::nn::conv::Conv1d;
use burn::nn::{Embedding, PaddingConfig1d};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, FloatDType, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config_keys::{unsupported, ConfigKeys};
use crate::error::{check_positive, ArchError};
use crate::grads::CheckpointedModel;
use crate::hf::{HfMapping, HfModel};
use crate::layers::{
    float_dtype, silu_mul, to_dtype, Builder, ForwardCtx, Linear, RmsNorm, Segments,
};
use crate::ssm::{
    causal_conv_silu, norm_head_logits, normal_param, residual_add, softplus, split_steps,
    uniform_param, DocIds, RecurrentCache, KILN_RESCALE_PRENORM_RESIDUAL,
};

/// Mamba-2 hyper-parameters, keyed by the HF `Mamba2Config` names; defaults are transformers'.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mamba2Config {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Residual stream width d.
    pub hidden_size: usize,
    /// SSM state size N. Default 128.
    #[serde(default = "default_state_size")]
    pub state_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// `E = expand · hidden_size` must equal `num_heads · head_dim`. Default 2.
    #[serde(default = "default_expand")]
    pub expand: usize,
    /// Number of SSM heads H (one scalar decay each).
    pub num_heads: usize,
    /// Channels per head P. Default 64.
    #[serde(default = "default_head_dim")]
    pub head_dim: usize,
    /// Groups G sharing one B and C (G divides H). Default 8.
    #[serde(default = "default_n_groups")]
    pub n_groups: usize,
    /// Depthwise convolution kernel K (≥ 2). Default 4.
    #[serde(default = "default_conv_kernel")]
    pub conv_kernel: usize,
    /// Chunk length of the SSD training form. Default 256.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// RMSNorm epsilon (block norms, gated norm, `norm_f`). Default 1e-5.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Biases on `in_proj` and `out_proj`. Default false.
    #[serde(default)]
    pub use_bias: bool,
    /// Bias on the convolution. Default true.
    #[serde(default = "default_true")]
    pub use_conv_bias: bool,
    /// Init: initial Δ log-uniform in `[time_step_min, time_step_max]`. Default 0.001.
    #[serde(default = "default_time_step_min")]
    pub time_step_min: f64,
    /// Default 0.1.
    #[serde(default = "default_time_step_max")]
    pub time_step_max: f64,
    /// Init: lower clamp of the initial Δ. Default 1e-4.
    #[serde(default = "default_time_step_floor")]
    pub time_step_floor: f64,
    /// Δ is clamped to `[lo, hi]`; `None` = HF's default `(0, ∞)` (no clamp beyond softplus > 0).
    #[serde(default)]
    pub time_step_limit: Option<(f64, f64)>,
    /// Head shares the embedding. Default false (HF `Mamba2Config`).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Init: std of the embedding (and an untied head). Default 0.1.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Init: divide `out_proj.weight` by `sqrt(num_hidden_layers)`. Default false.
    #[serde(default)]
    pub rescale_prenorm_residual: bool,
}

fn default_state_size() -> usize {
    128
}
fn default_expand() -> usize {
    2
}
fn default_head_dim() -> usize {
    64
}
fn default_n_groups() -> usize {
    8
}
fn default_conv_kernel() -> usize {
    4
}
fn default_chunk_size() -> usize {
    256
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_time_step_min() -> f64 {
    0.001
}
fn default_time_step_max() -> f64 {
    0.1
}
fn default_time_step_floor() -> f64 {
    1e-4
}
fn default_initializer_range() -> f64 {
    0.1
}

impl Mamba2Config {
    /// A small config with transformers' defaults for everything not given.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        num_hidden_layers: usize,
        num_heads: usize,
        head_dim: usize,
    ) -> Self {
        Self {
            vocab_size,
            hidden_size,
            state_size: default_state_size(),
            num_hidden_layers,
            expand: default_expand(),
            num_heads,
            head_dim,
            n_groups: default_n_groups(),
            conv_kernel: default_conv_kernel(),
            chunk_size: default_chunk_size(),
            layer_norm_epsilon: default_eps(),
            use_bias: false,
            use_conv_bias: true,
            time_step_min: default_time_step_min(),
            time_step_max: default_time_step_max(),
            time_step_floor: default_time_step_floor(),
            time_step_limit: None,
            tie_word_embeddings: false,
            initializer_range: default_initializer_range(),
            rescale_prenorm_residual: false,
        }
    }

    /// E = `expand · hidden_size`.
    pub fn intermediate_size(&self) -> usize {
        self.expand * self.hidden_size
    }

    /// Channels through the convolution: `E + 2·G·N`.
    pub fn conv_dim(&self) -> usize {
        self.intermediate_size() + 2 * self.n_groups * self.state_size
    }

    /// Width of `in_proj`'s output: `E + conv_dim + H`.
    pub fn in_proj_size(&self) -> usize {
        self.intermediate_size() + self.conv_dim() + self.num_heads
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
            ("state_size", self.state_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("expand", self.expand),
            ("num_heads", self.num_heads),
            ("head_dim", self.head_dim),
            ("n_groups", self.n_groups),
            ("chunk_size", self.chunk_size),
        ])?;
        if self.intermediate_size() != self.num_heads * self.head_dim {
            return bad(
                "num_heads",
                format!(
                    "num_heads ({}) × head_dim ({}) must equal expand × hidden_size ({})",
                    self.num_heads,
                    self.head_dim,
                    self.intermediate_size()
                ),
            );
        }
        if !self.num_heads.is_multiple_of(self.n_groups) {
            return bad(
                "n_groups",
                format!(
                    "{} must divide num_heads = {}",
                    self.n_groups, self.num_heads
                ),
            );
        }
        if self.conv_kernel < 2 {
            return bad("conv_kernel", format!("{} must be >= 2", self.conv_kernel));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return bad("layer_norm_epsilon", "must be > 0".into());
        }
        if !(self.time_step_min > 0.0 && self.time_step_max >= self.time_step_min) {
            return bad(
                "time_step_max",
                "need 0 < time_step_min <= time_step_max".into(),
            );
        }
        if let Some((lo, hi)) = self.time_step_limit {
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return bad("time_step_limit", format!("[{lo}, {hi}] is not a range"));
            }
        }
        Ok(())
    }

    /// Parameters of one block: `norm [d]`, `in_proj [E + conv_dim + H, d]` (+ bias),
    /// `conv1d [conv_dim, 1, K]` (+ bias), `dt_bias`, `A_log`, `D` `[H]` each, gated
    /// `norm [E]`, `out_proj [d, E]` (+ bias).
    fn block_params(&self) -> usize {
        let (d, e, h, k) = (
            self.hidden_size,
            self.intermediate_size(),
            self.num_heads,
            self.conv_kernel,
        );
        let (proj, conv) = (self.in_proj_size(), self.conv_dim());
        let linear_bias = if self.use_bias { proj + d } else { 0 };
        let conv_bias = if self.use_conv_bias { conv } else { 0 };
        d + proj * d + conv * k + conv_bias + 3 * h + e + e * d + linear_bias
    }

    /// Exact parameter count (equals burn's `num_params` of the built model).
    pub fn num_params(&self) -> usize {
        let embed = self.vocab_size * self.hidden_size;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + self.num_hidden_layers * self.block_params() + self.hidden_size + head
    }

    /// Training FLOPs (forward + backward) per token at chunk length `chunk_size`, counted as for
    /// Mamba-1: `6 · N_matmul` (`in_proj`, `out_proj` of every layer plus the output head) plus
    /// per layer `6 · (E · (2N + 2·chunk) + conv_dim · K)`: the state update and read-out, the
    /// intra-chunk decay "attention" (`C Bᵀ` and its product with `x`, halved for the causal mask)
    /// and the convolution. Norms, gates and activations ignored.
    pub fn flops_per_token(&self) -> u64 {
        let d = self.hidden_size as u64;
        let e = self.intermediate_size() as u64;
        let n = self.state_size as u64;
        let chunk = self.chunk_size as u64;
        let layers = self.num_hidden_layers as u64;
        let block_matmul = d * self.in_proj_size() as u64 + e * d;
        let n_matmul = layers * block_matmul + self.vocab_size as u64 * d;
        let ssd = e * (2 * n + chunk) + (self.conv_dim() * self.conv_kernel) as u64;
        6 * n_matmul + 6 * layers * ssd
    }

    /// How module paths become `Mamba2ForCausalLM` tensor names (see [`crate::hf`]).
    pub fn hf_mapping(&self) -> HfMapping {
        crate::ssm::backbone_hf_mapping(self.tie_word_embeddings)
    }

    /// HF `config.json` for `Mamba2ForCausalLM`.
    pub fn to_hf_config(&self, bos_token_id: u32, eos_token_id: u32, torch_dtype: &str) -> Value {
        let limit = self.time_step_limit.unwrap_or((0.0, f64::INFINITY));
        let number = |x: f64| {
            if x.is_finite() {
                json!(x)
            } else if x > 0.0 {
                json!({"__float__": "Infinity"})
            } else {
                json!({"__float__": "-Infinity"})
            }
        };
        let mut cfg = json!({
            "architectures": ["Mamba2ForCausalLM"],
            "model_type": "mamba2",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "state_size": self.state_size,
            "num_hidden_layers": self.num_hidden_layers,
            "expand": self.expand,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "n_groups": self.n_groups,
            "conv_kernel": self.conv_kernel,
            "chunk_size": self.chunk_size,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_bias": self.use_bias,
            "use_conv_bias": self.use_conv_bias,
            "hidden_act": "silu",
            "initializer_range": self.initializer_range,
            "residual_in_fp32": true,
            "time_step_rank": self.hidden_size.div_ceil(16),
            "time_step_min": self.time_step_min,
            "time_step_max": self.time_step_max,
            "time_step_floor": self.time_step_floor,
            "time_step_limit": [number(limit.0), number(limit.1)],
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_cache": true,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "dtype": torch_dtype,
            "torch_dtype": torch_dtype,
        });
        for (key, value) in
            crate::ssm::rescale_prenorm_residual_export(self.rescale_prenorm_residual)
        {
            cfg[key] = json!(value);
        }
        cfg
    }

    /// Reads an HF Mamba-2 `config.json` (see [`Mamba2Config::from_keys`]); `num_heads` and
    /// `head_dim` are required here (HF's defaults for them describe mamba2-2.8b only).
    /// `time_step_limit` entries may be numbers, `null` or transformers'
    /// `{"__float__": "Infinity"}`. `rms_norm: false`, `norm_before_gate: true` (older configs)
    /// and a non-SiLU `hidden_act` are unsupported.
    pub fn from_hf_config(cfg: &Value) -> Result<Self, ArchError> {
        let mut keys = ConfigKeys::object(cfg)?;
        keys.expect_model_type("mamba2")?;
        keys.expect_silu("kiln's Mamba-2 uses SiLU")?;
        if let Some(v) = keys.get("rms_norm").filter(|v| v.as_bool() != Some(true)) {
            return Err(unsupported("rms_norm", v, "only the gated RMSNorm"));
        }
        if let Some(v) = keys
            .get("norm_before_gate")
            .filter(|v| v.as_bool() != Some(false))
        {
            return Err(unsupported(
                "norm_before_gate",
                v,
                "HF gates before the norm",
            ));
        }
        keys.required("num_heads")?;
        keys.required("head_dim")?;
        keys.integral("expand")?;
        // JSON has no infinity: the pair is read here and set after deserializing.
        let limit_value = |v: &Value| -> Option<f64> {
            match v {
                Value::Null => Some(f64::INFINITY),
                Value::Number(n) => n.as_f64(),
                Value::Object(o) => match o.get("__float__").and_then(Value::as_str) {
                    Some("Infinity" | "inf") => Some(f64::INFINITY),
                    Some("-Infinity" | "-inf") => Some(f64::NEG_INFINITY),
                    _ => None,
                },
                _ => None,
            }
        };
        let time_step_limit = match keys.take("time_step_limit") {
            None => None,
            Some(v) => {
                let pair = v
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .and_then(|a| Some((limit_value(&a[0])?, limit_value(&a[1])?)))
                    .ok_or_else(|| ConfigKeys::invalid("time_step_limit", "[lo, hi]", &v))?;
                (pair != (0.0, f64::INFINITY)).then_some(pair)
            }
        };
        keys.kiln_key(
            KILN_RESCALE_PRENORM_RESIDUAL,
            "rescale_prenorm_residual",
            Some("rescale_prenorm_residual"),
        );
        let config = Self {
            time_step_limit,
            ..Self::from_keys(keys)?
        };
        config.validate()?;
        Ok(config)
    }

    /// A config from `config.json` keys. Required: `vocab_size`, `hidden_size`,
    /// `num_hidden_layers`. Absent `num_heads` is `expand · hidden_size / head_dim` (kiln's rule:
    /// transformers' 128 fits mamba2-2.8b only); every other absent key takes its serde default,
    /// transformers' `Mamba2Config` default. Validated.
    pub fn from_keys(mut keys: ConfigKeys) -> Result<Self, ArchError> {
        let hidden_size = keys.required("hidden_size")?;
        if keys.get("num_heads").is_none() {
            let expand = keys.usize("expand")?.unwrap_or_else(default_expand);
            let head_dim = keys.usize("head_dim")?.unwrap_or_else(default_head_dim);
            keys.set("num_heads", expand * hidden_size / head_dim.max(1));
        }
        let config: Self = keys.deserialize(&["vocab_size", "num_hidden_layers"])?;
        config.validate()?;
        Ok(config)
    }

    /// Fresh weights, the `mamba_ssm` (`modules/mamba2_simple.py`) rules:
    /// - `A_log[h] = ln(U[1, 16])` (HF's `_init_weights` uses `ln(1..H)` instead), `D = 1`,
    ///   norms 1;
    /// - `dt_bias = softplus⁻¹(Δ₀)`, `Δ₀ = max(exp(U[ln time_step_min, ln time_step_max]),
    ///   time_step_floor)` per head;
    /// - `in_proj`, `out_proj` weights `~ U(±1/sqrt(fan_in))`, conv weight and bias
    ///   `~ U(±1/sqrt(K))` (PyTorch defaults); `out_proj / sqrt(L)` with
    ///   `rescale_prenorm_residual`; Linear biases 0;
    /// - embedding (and an untied head) `~ normal(0, initializer_range)` (HF).
    ///
    /// Panics if [`Mamba2Config::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mamba2<B> {
        self.init_with(&Builder::new(device))
    }

    /// [`Mamba2Config::init`] through a builder whose plan may give the projections adapters or
    /// quantizers (the base weights are the same either way).
    pub fn init_with<B: Backend>(&self, vb: &Builder<B>) -> Mamba2<B> {
        let device = vb.device;
        if let Err(e) = self.validate() {
            panic!("invalid Mamba-2 config: {e}");
        }
        let (d, v) = (self.hidden_size, self.vocab_size);
        let layers = (0..self.num_hidden_layers)
            .map(|i| Mamba2Block {
                norm: RmsNorm::new(d, self.layer_norm_epsilon, device),
                mixer: self.init_mixer(&vb.pp("layers").pp(i).pp("mixer")),
            })
            .collect();
        Mamba2 {
            embeddings: Embedding {
                weight: normal_param([v, d], self.initializer_range, device),
            },
            layers,
            norm_f: RmsNorm::new(d, self.layer_norm_epsilon, device),
            lm_head: (!self.tie_word_embeddings).then(|| {
                vb.linear(
                    "lm_head",
                    normal_param([d, v], self.initializer_range, device),
                    None,
                )
            }),
            config: self.clone(),
            scan: SsdMode::Chunked {
                chunk: self.chunk_size,
            },
            ctx: ForwardCtx::default(),
        }
    }

    fn init_mixer<B: Backend>(&self, vb: &Builder<B>) -> Mamba2Mixer<B> {
        let device = vb.device;
        let (d, e, h, k) = (
            self.hidden_size,
            self.intermediate_size(),
            self.num_heads,
            self.conv_kernel,
        );
        let (proj, conv) = (self.in_proj_size(), self.conv_dim());
        let torch_default = |fan_in: usize| 1.0 / (fan_in as f64).sqrt();
        let zeros = |len: usize| Param::<Tensor<B, 1>>::from_tensor(Tensor::zeros([len], device));
        let out_scale = if self.rescale_prenorm_residual {
            (self.num_hidden_layers as f64).sqrt()
        } else {
            1.0
        };
        let host_uniform = |n: usize| -> Vec<f64> {
            Tensor::<B, 1>::random([n], Distribution::Uniform(0.0, 1.0), device)
                .into_data()
                .convert::<f64>()
                .into_vec::<f64>()
                .expect("converted tensor data is f64")
        };
        let (lo, hi) = (self.time_step_min.ln(), self.time_step_max.ln());
        let dt_bias: Vec<f32> = host_uniform(h)
            .iter()
            .map(|u| {
                let dt = (lo + u * (hi - lo)).exp().max(self.time_step_floor);
                (dt + (-(-dt).exp_m1()).ln()) as f32
            })
            .collect();
        let a_log: Vec<f32> = host_uniform(h)
            .iter()
            .map(|u| (1.0 + 15.0 * u).ln() as f32)
            .collect();
        let vec_param = |values: Vec<f32>| {
            Param::from_tensor(Tensor::from_data(TensorData::new(values, [h]), device))
        };
        Mamba2Mixer {
            in_proj: vb.linear(
                "in_proj",
                uniform_param([d, proj], torch_default(d), device),
                self.use_bias.then(|| zeros(proj)),
            ),
            conv1d: Conv1d {
                weight: uniform_param([conv, 1, k], torch_default(k), device),
                bias: self
                    .use_conv_bias
                    .then(|| uniform_param([conv], torch_default(k), device)),
                stride: 1,
                kernel_size: k,
                dilation: 1,
                groups: conv,
                // Unused: the forward computes the taps itself.
                padding: PaddingConfig1d::Valid,
            },
            dt_bias: vec_param(dt_bias),
            A_log: vec_param(a_log),
            D: Param::from_tensor(Tensor::ones([h], device)),
            norm: RmsNorm::new(e, self.layer_norm_epsilon, device),
            out_proj: vb.linear(
                "out_proj",
                uniform_param([e, d], torch_default(e) / out_scale, device),
                self.use_bias.then(|| zeros(d)),
            ),
            num_heads: h,
            head_dim: self.head_dim,
            n_groups: self.n_groups,
            state_size: self.state_size,
            conv_kernel: k,
            time_step_limit: self.time_step_limit,
        }
    }
}

/// How the SSD recurrence is computed (same values either way, up to rounding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsdMode {
    /// [`ssd_sequential`]: one step per position.
    Sequential,
    /// [`ssd_chunked`] with chunks of `chunk` positions.
    Chunked {
        /// Positions per chunk (≥ 1).
        chunk: usize,
    },
}

pub use mixer_def::Mamba2Mixer;

/// The mixer, alone in a module so the HF field names `A_log`, `D` only silence the lint here.
#[allow(non_snake_case)]
mod mixer_def {
    use super::*;

    /// The Mamba-2 mixer (HF `Mamba2Mixer`); field names are the HF names.
    #[derive(Module, Debug)]
    pub struct Mamba2Mixer<B: Backend> {
        /// `[d] -> [E + conv_dim + H]` (z, xBC, dt). burn layout `[d, E + conv_dim + H]`.
        pub in_proj: Linear<B>,
        /// Depthwise causal convolution over xBC: weight `[conv_dim, 1, K]`, bias `[conv_dim]`.
        pub conv1d: Conv1d<B>,
        /// `[H]`, added to dt before softplus.
        pub dt_bias: Param<Tensor<B, 1>>,
        /// `[H]`, `A = −exp(A_log)`.
        pub A_log: Param<Tensor<B, 1>>,
        /// `[H]`, skip `y += D_h · x`.
        pub D: Param<Tensor<B, 1>>,
        /// Gated RMSNorm weight `[E]` (normalised per group of `E / G` channels).
        pub norm: RmsNorm<B>,
        /// `[E] -> [d]`. burn layout `[E, d]`.
        pub out_proj: Linear<B>,
        /// H.
        pub num_heads: usize,
        /// P.
        pub head_dim: usize,
        /// G.
        pub n_groups: usize,
        /// N.
        pub state_size: usize,
        /// K.
        pub conv_kernel: usize,
        /// Δ clamp, `None` = none.
        pub time_step_limit: Option<(f64, f64)>,
    }
}

/// What one mixer carries between calls of [`Mamba2::forward_cached`].
#[derive(Clone, Debug)]
pub struct Mamba2LayerState<B: Backend> {
    /// The last `K − 1` convolution inputs, `[b, conv_dim, K − 1]` (oldest first), in the
    /// compute dtype.
    pub conv: Tensor<B, 3>,
    /// The SSM state, `[b, H, P, N]` (HF's layout), always f32 (the recurrence runs in f32).
    pub ssm: Tensor<B, 4>,
}

impl<B: Backend> Mamba2Mixer<B> {
    /// `u` `[b, l, d]` -> `([b, l, d]`, state after the last position), continuing from `state`.
    /// Computes in `u`'s dtype (the compute dtype), except Δ, the recurrence, the `D` skip and the
    /// gated norm, which run in f32.
    pub fn forward(
        &self,
        u: Tensor<B, 3>,
        state: Option<Mamba2LayerState<B>>,
        mode: SsdMode,
        ctx: &ForwardCtx,
    ) -> (Tensor<B, 3>, Mamba2LayerState<B>) {
        let [b, l, d] = u.dims();
        let (h, p, g, n) = (
            self.num_heads,
            self.head_dim,
            self.n_groups,
            self.state_size,
        );
        let e = h * p;
        let conv_dim = e + 2 * g * n;
        let (conv_past, ssm_past) = match state {
            Some(s) => (Some(s.conv), Some(s.ssm)),
            None => (None, None),
        };
        let proj =
            self.in_proj
                .forward(u.reshape([b * l, d]), ctx)
                .reshape([b, l, e + conv_dim + h]);
        let z = proj.clone().narrow(2, 0, e);
        let (xbc, conv_state) = causal_conv_silu(
            &self.conv1d,
            self.conv_kernel,
            proj.clone().narrow(2, e, conv_dim),
            conv_past,
            ctx,
        );
        // The recurrence runs in f32 whatever the compute dtype (as `mamba_ssm` does): its
        // inputs are cast up here, the gated norm's output cast back to the compute dtype below.
        let compute = float_dtype(&proj);
        let f32 = FloatDType::F32;
        let xbc = to_dtype(xbc, f32); // [b, l, conv_dim]
        let x = xbc.clone().narrow(2, 0, e).reshape([b, l, h, p]);
        let b_in = xbc.clone().narrow(2, e, g * n).reshape([b, l, g, n]);
        let c_out = xbc.narrow(2, e + g * n, g * n).reshape([b, l, g, n]);
        let dt = to_dtype(proj.narrow(2, e + conv_dim, h), f32)
            + to_dtype(self.dt_bias.val(), f32).reshape([1, 1, h]);
        let mut dt = softplus(dt); // [b, l, H]
        if let Some((lo, hi)) = self.time_step_limit {
            dt = dt.clamp(lo, hi);
        }
        let a = to_dtype(self.A_log.val(), f32).exp().neg(); // [H]
        let ssm_past = ssm_past.map(|s| to_dtype(s, f32));
        // On the CPU backend (f32) the fused selective-scan kernel runs the recurrence (`mode`
        // then does not matter; `KILN_FUSED_KERNELS=0` switches back to it): see `ssd_fused`.
        // Packed documents (ctx.segments) reset the state at their starts.
        let docs = ctx.segments.as_ref();
        let (y, ssm_state) = if crate::layers::fused_enabled(&x) {
            ssd_fused(x.clone(), dt, a, b_in, c_out, ssm_past, docs)
        } else {
            match mode {
                SsdMode::Sequential => {
                    ssd_sequential(x.clone(), dt, a, b_in, c_out, ssm_past, docs)
                }
                SsdMode::Chunked { chunk } => {
                    ssd_chunked(x.clone(), dt, a, b_in, c_out, ssm_past, chunk, docs)
                }
            }
        }; // [b, l, H, P]
        let y = y + x * to_dtype(self.D.val(), f32).reshape([1, 1, h, 1]);
        let y = to_dtype(self.gated_norm(y.reshape([b, l, e]), z), compute);
        let out = self
            .out_proj
            .forward(y.reshape([b * l, e]), ctx)
            .reshape([b, l, d]);
        (
            out,
            Mamba2LayerState {
                conv: conv_state,
                ssm: ssm_state,
            },
        )
    }

    /// HF `MambaRMSNormGated` (gate first): `w ⊙ rms_G(y ⊙ silu(z))`, the RMS over each group of
    /// `E / G` channels. Computed in f32 (statistics and output, as `mamba_ssm`'s
    /// `RMSNormGated`); `y` is f32, `z` any dtype.
    fn gated_norm(&self, y: Tensor<B, 3>, z: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, l, e] = y.dims();
        let g = self.n_groups;
        let f32 = FloatDType::F32;
        let x = silu_mul(to_dtype(z, f32), to_dtype(y, f32)); // [b, l, E]
        if g == 1 {
            // One group: a plain RMSNorm over the E channels (fused on the CPU).
            return self.norm.forward_as(x, f32);
        }
        let x = x.reshape([b, l, g, e / g]);
        let inv_rms = x
            .clone()
            .square()
            .mean_dim(3)
            .add_scalar(self.norm.eps)
            .sqrt()
            .recip();
        (x * inv_rms).reshape([b, l, e]) * to_dtype(self.norm.weight.val(), f32).reshape([1, 1, e])
    }
}

/// B or C `[b, l, G, N]` -> per head, head-major `[b, H, l, N]` (head `h` uses group
/// `h / (H / G)`, as `repeat_interleave`).
fn per_head<B: Backend>(t: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [b, l, g, n] = t.dims();
    t.reshape([b, l, g, 1, n])
        .expand([b, l, g, heads / g, n])
        .reshape([b, l, heads, n])
        .swap_dims(1, 2)
}

/// The SSD recurrence, one position at a time (the reference; HF's single-token
/// `selective_state_update` repeated).
///
/// Inputs: `x` `[b, l, H, P]`; `dt` (Δ, after softplus) `[b, l, H]`; `a` (A < 0) `[H]`; `b_in`,
/// `c_out` `[b, l, G, N]`; `h0` `[b, H, P, N]` (zeros when `None`). Returns `y` `[b, l, H, P]`
/// (without the `D` skip) and the last state `[b, H, P, N]`:
/// `h_t = exp(Δ_t A) h_{t−1} + (Δ_t x_t) ⊗ B_t`, `y_t = h_t C_t`. With `segments` (packed rows),
/// `h_{t−1}` counts as 0 where a document other than the row's first starts.
pub fn ssd_sequential<B: Backend>(
    x: Tensor<B, 4>,
    dt: Tensor<B, 3>,
    a: Tensor<B, 1>,
    b_in: Tensor<B, 4>,
    c_out: Tensor<B, 4>,
    h0: Option<Tensor<B, 4>>,
    segments: Option<&Segments>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [bs, l, h, p] = x.dims();
    let n = b_in.dims()[3];
    let decay = (dt.clone() * a.reshape([1, 1, h])).exp().swap_dims(1, 2); // [b, H, l]
    let decay = match segments {
        Some(seg) => decay * seg.carries::<B>(&x.device(), x.dtype()).reshape([bs, 1, l]),
        None => decay,
    };
    let xdt = (x * dt.reshape([bs, l, h, 1])).swap_dims(1, 2); // [b, H, l, P]
    let bh = per_head(b_in, h); // [b, H, l, N]
    let ch = per_head(c_out, h);
    let mut state =
        h0.unwrap_or_else(|| Tensor::zeros([bs, h, p, n], (&xdt.device(), xdt.dtype())));
    let mut ys = Vec::with_capacity(l);
    let steps = split_steps(decay.reshape([bs, h, l, 1]), 2)
        .into_iter()
        .zip(split_steps(xdt, 2))
        .zip(split_steps(bh, 2))
        .zip(split_steps(ch, 2));
    for (((decay_t, x_t), b_t), c_t) in steps {
        // decay_t [b, H, 1, 1], x_t [b, H, 1, P], b_t / c_t [b, H, 1, N]
        state = state * decay_t + x_t.swap_dims(2, 3).matmul(b_t); // [b, H, P, N]
        ys.push(state.clone().matmul(c_t.swap_dims(2, 3))); // [b, H, P, 1]
    }
    let y = Tensor::cat(ys, 3).permute([0, 3, 1, 2]); // [b, l, H, P]
    (y, state)
}

/// The SSD recurrence through Mamba-1's fused CPU scan (`layers::fused_scan`, with its own
/// backward); same inputs, outputs and values as [`ssd_sequential`] (up to rounding).
///
/// Mamba-2's recurrence is Mamba-1's selective scan over the `E = H·P` head channels with Δ
/// constant over a head's `P` channels, `A` constant over them and over the `N` states, and
/// `B`, `C` shared by the heads of a group: so Δ and `A` are broadcast to `[b, l, E]` and
/// `[E, N]` (autodiff sums their gradients back), and the scan runs once per group on that
/// group's channels. Per position it costs `O(E·N)`, like the chunked form's state part, with
/// no `[T, T]` decay matrices: on the CPU at kiln's sizes this is several times faster than
/// [`ssd_chunked`] built from burn ops. As in Mamba-1's fused scan, the returned state is
/// detached under autodiff (no gradient flows back through it; training starts from zero
/// states and never differentiates the final one).
pub fn ssd_fused<B: Backend>(
    x: Tensor<B, 4>,
    dt: Tensor<B, 3>,
    a: Tensor<B, 1>,
    b_in: Tensor<B, 4>,
    c_out: Tensor<B, 4>,
    h0: Option<Tensor<B, 4>>,
    segments: Option<&Segments>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [bs, l, h, p] = x.dims();
    let [_, _, g, n] = b_in.dims();
    let (e, channels_per_group) = (h * p, h / g * p);
    let x = x.reshape([bs, l, e]);
    let dt = dt
        .reshape([bs, l, h, 1])
        .expand([bs, l, h, p])
        .reshape([bs, l, e]);
    let a = a.reshape([h, 1, 1]).expand([h, p, n]).reshape([e, n]);
    let h0 = h0.map(|s| s.reshape([bs, e, n]));
    let group = |t: Tensor<B, 3>, dim: usize, gi: usize| {
        if g == 1 {
            t
        } else {
            t.narrow(dim, gi * channels_per_group, channels_per_group)
        }
    };
    let (mut ys, mut states) = (Vec::with_capacity(g), Vec::with_capacity(g));
    for gi in 0..g {
        let per_group = |t: &Tensor<B, 4>| t.clone().narrow(2, gi, 1).reshape([bs, l, n]);
        let (y, state) = crate::layers::fused_scan::selective_scan_with_state(
            group(x.clone(), 2, gi),
            group(dt.clone(), 2, gi),
            a.clone()
                .narrow(0, gi * channels_per_group, channels_per_group),
            per_group(&b_in),
            per_group(&c_out),
            h0.clone().map(|s| group(s, 1, gi)),
            segments,
        ); // y [b, l, E/G], state [b, E/G, N]
        ys.push(y);
        states.push(state);
    }
    let y = Tensor::cat(ys, 2).reshape([bs, l, h, p]);
    let state = Tensor::cat(states, 1).reshape([bs, h, p, n]);
    (y, state)
}

/// The SSD recurrence by chunks of `T = min(chunk, l)` positions; same inputs, outputs and values
/// as [`ssd_sequential`] (up to rounding). With `S` the within-chunk cumulative sum of `a = Δ A`:
///
/// 1. intra-chunk: `Y_diag = (C Bᵀ ⊙ L) (Δx)`, `L[t, s] = exp(S_t − S_s)` for `s ≤ t`, else 0
///    (a `[T, T]` masked decay "attention" per head and chunk);
/// 2. each chunk's own end state `(Δx)ᵀ (B ⊙ exp(S_last − S))` `[P, N]`;
/// 3. the states entering chunks, from `h0` and those, by one `[c + 1, c + 1]` decay matrix
///    `exp(segsum)` over chunk totals (a matmul; `c` = number of chunks);
/// 4. `Y_off = (C · state_inᵀ) ⊙ exp(S)`.
///
/// A length that is not a multiple of `T` is padded with `a = 0`, `Δx = 0`: the final state is
/// unchanged. Every exponent is ≤ 0 where it is used.
///
/// With `segments` (packed documents) each of the four terms is masked to pairs of positions (or
/// states) in one document, so that nothing crosses a document start: `L` within chunks, the
/// inputs that reach a chunk's end state, the chunk-to-chunk decays and the carried states.
#[allow(clippy::too_many_arguments)]
pub fn ssd_chunked<B: Backend>(
    x: Tensor<B, 4>,
    dt: Tensor<B, 3>,
    a: Tensor<B, 1>,
    b_in: Tensor<B, 4>,
    c_out: Tensor<B, 4>,
    h0: Option<Tensor<B, 4>>,
    chunk: usize,
    segments: Option<&Segments>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    assert!(chunk > 0, "ssd_chunked: chunk must be positive");
    let [bs, l, h, p] = x.dims();
    let n = b_in.dims()[3];
    let device = x.device();
    let dtype = x.dtype();
    let t = chunk.min(l);
    let nc = l.div_ceil(t);
    let pad = nc * t - l;
    // Pad dim 2 (positions, head-major layout) with zeros and cut into chunks.
    let chunks = |v: Tensor<B, 4>| {
        let [_, _, _, w] = v.dims();
        let v = if pad == 0 {
            v
        } else {
            Tensor::cat(vec![v, Tensor::zeros([bs, h, pad, w], (&device, dtype))], 2)
        };
        v.reshape([bs, h, nc, t, w])
    };
    let log_decay = (dt.clone() * a.reshape([1, 1, h])).swap_dims(1, 2); // [b, H, l]
    let xdt = chunks((x * dt.reshape([bs, l, h, 1])).swap_dims(1, 2)); // [b, H, c, T, P]
    let bh = chunks(per_head(b_in, h)); // [b, H, c, T, N]
    let ch = chunks(per_head(c_out, h));
    // Padded and split without a `[b, H, l, 1]` detour: on burn 0.21's cubecl backends (wgpu
    // checked, CUDA shares the code) reshaping the permuted `log_decay` to `[b, H, l, 1]` and then
    // to `[b, H, c, T, 1]` reads the wrong elements (`tests/backends.rs` caught it); one reshape
    // of the permuted tensor, or of the contiguous padded copy, is right.
    let log_decay = if pad == 0 {
        log_decay
    } else {
        Tensor::cat(
            vec![log_decay, Tensor::zeros([bs, h, pad], (&device, dtype))],
            2,
        )
    };
    let cum = log_decay.reshape([bs, h, nc, t]).cumsum(3); // S [b, H, c, T]
    let docs = segments.map(|seg| DocIds::of(seg, &device, dtype).padded(pad).chunks(nc, t));
    // A per-position mask `[b, c, T]` (or pair mask `[b, c, T, T]`) broadcast over the heads.
    let over_heads3 = |m: Tensor<B, 3>| m.unsqueeze_dim::<4>(1); // [b, 1, c, T]
    let over_heads4 = |m: Tensor<B, 4>| m.unsqueeze_dim::<5>(1); // [b, 1, c, T, T]

    // 1. Intra-chunk.
    let causal: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t <= i / t {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let causal = to_dtype(
        Tensor::<B, 2>::from_data(TensorData::new(causal, [t, t]), &device),
        float_dtype(&cum),
    )
    .reshape([1, 1, 1, t, t]);
    let seg = cum.clone().reshape([bs, h, nc, t, 1]) - cum.clone().reshape([bs, h, nc, 1, t]);
    let decay = (seg + causal).exp(); // [b, H, c, T(t), T(s)]
    let decay = match &docs {
        Some(d) => decay * over_heads4(d.same_within_chunks()),
        None => decay,
    };
    let scores = ch.clone().matmul(bh.clone().swap_dims(3, 4)) * decay; // [b, H, c, T, T]
    let y_diag = scores.matmul(xdt.clone()); // [b, H, c, T, P]

    // 2. Each chunk's end state from a zero start.
    let last = cum.clone().narrow(3, t - 1, 1); // [b, H, c, 1]
    let to_end = (last.clone() - cum.clone()).exp(); // [b, H, c, T]
    let to_end = match &docs {
        Some(d) => to_end * over_heads3(d.same_as_last()),
        None => to_end,
    }
    .reshape([bs, h, nc, t, 1]);
    let states = xdt.swap_dims(3, 4).matmul(bh * to_end); // [b, H, c, P, N]

    // 3. States entering each chunk (and the final one): new_i = Σ_{j ≤ i} exp(cc_i − cc_j) s_j
    //    over [h0, states], cc = exclusive cumsum of the chunk totals.
    let h0 = h0.unwrap_or_else(|| Tensor::zeros([bs, h, p, n], (&device, dtype)));
    let all = Tensor::cat(
        vec![
            h0.reshape([bs, h, 1, p * n]),
            states.reshape([bs, h, nc, p * n]),
        ],
        2,
    ); // [b, H, c + 1, P·N]
    let cc = Tensor::cat(
        vec![
            Tensor::zeros([bs, h, 1], (&device, dtype)),
            last.reshape([bs, h, nc]).cumsum(2),
        ],
        2,
    ); // [b, H, c + 1]
    let m = nc + 1;
    let mask: Vec<f32> = (0..m * m)
        .map(|i| {
            if i % m <= i / m {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let mask = to_dtype(
        Tensor::<B, 2>::from_data(TensorData::new(mask, [m, m]), &device),
        float_dtype(&cc),
    )
    .reshape([1, 1, m, m]);
    let chunk_decay = (cc.clone().reshape([bs, h, m, 1]) - cc.reshape([bs, h, 1, m]) + mask).exp();
    let chunk_decay = match &docs {
        // State i (before chunk i) takes state j only when both are in one document.
        Some(d) => chunk_decay * d.same_states().unsqueeze_dim::<4>(1),
        None => chunk_decay,
    };
    let new = chunk_decay.matmul(all); // [b, H, c + 1, P·N]
    let final_state = new.clone().narrow(2, nc, 1).reshape([bs, h, p, n]);
    let starts = new.narrow(2, 0, nc).reshape([bs, h, nc, p, n]);

    // 4. The carried state, read out and decayed to each position.
    let carried = match &docs {
        Some(d) => cum.exp() * over_heads3(d.same_as_entering()),
        None => cum.exp(),
    }; // [b, H, c, T]
    let y_off = ch.matmul(starts.swap_dims(3, 4)) * carried.reshape([bs, h, nc, t, 1]);
    let y = (y_diag + y_off)
        .reshape([bs, h, nc * t, p])
        .narrow(2, 0, l)
        .swap_dims(1, 2); // [b, l, H, P]
    (y, final_state)
}

/// One pre-norm block (HF `Mamba2Block`): `h += mixer(norm(h))`.
#[derive(Module, Debug)]
pub struct Mamba2Block<B: Backend> {
    /// RMSNorm before the mixer.
    pub norm: RmsNorm<B>,
    /// The SSD mixer.
    pub mixer: Mamba2Mixer<B>,
}

impl<B: Backend> Mamba2Block<B> {
    /// `h` `[b, l, d]` -> `[b, l, d]` and the mixer's state after the last position. The mixer
    /// computes in `compute` (the norm hands it that dtype); its output is added to the residual
    /// stream in the stream's own dtype.
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        state: Option<Mamba2LayerState<B>>,
        mode: SsdMode,
        ctx: &ForwardCtx,
    ) -> (Tensor<B, 3>, Mamba2LayerState<B>) {
        let (y, state) = self.mixer.forward(
            self.norm.forward_as(h.clone(), ctx.compute),
            state,
            mode,
            ctx,
        );
        (residual_add(h, y), state)
    }
}

/// `Mamba2ForCausalLM`. Field names are the HF names without `backbone.`.
#[derive(Module, Debug)]
pub struct Mamba2<B: Backend> {
    /// Token embedding `[vocab, d]`.
    pub embeddings: Embedding<B>,
    /// The blocks.
    pub layers: Vec<Mamba2Block<B>>,
    /// Final norm.
    pub norm_f: RmsNorm<B>,
    /// Output head; `None` when tied to `embeddings`.
    pub lm_head: Option<Linear<B>>,
    /// The config this model was built from.
    #[module(skip)]
    pub config: Mamba2Config,
    /// How [`Mamba2::forward`] computes the recurrence (default: chunks of `chunk_size`).
    #[module(skip)]
    pub scan: SsdMode,
    /// How the blocks compute (precision, quantizers); see [`ForwardCtx`].
    #[module(skip)]
    pub ctx: ForwardCtx,
}

/// Generation state of a [`Mamba2`]: per layer, conv window and SSM state (constant size). Under
/// mixed precision the conv window is kept in the compute dtype and the SSM state in f32.
pub type Mamba2Cache<B> = RecurrentCache<Mamba2LayerState<B>>;

impl<B: Backend> Mamba2<B> {
    /// The same model with another SSD implementation.
    pub fn with_scan(mut self, scan: SsdMode) -> Self {
        self.scan = scan;
        self
    }

    /// `input_ids` `[b, l]` -> logits `[b, l, vocab]`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_with(input_ids, &self.ctx)
    }

    /// [`Mamba2::forward`] under `ctx` (a batch's context: packed documents, see [`ForwardCtx`]).
    pub fn forward_with(&self, input_ids: Tensor<B, 2, Int>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        let mut h = self.embeddings.forward(input_ids);
        for layer in &self.layers {
            h = layer.forward(h, None, self.scan, ctx).0;
        }
        self.logits(h, ctx)
    }

    /// An empty cache for `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> Mamba2Cache<B> {
        RecurrentCache::new(self.layers.len(), batch)
    }

    /// Logits for `input_ids` `[b, l]` following what `cache` holds; updates the cache. A single
    /// token is one recurrent step; a longer input runs the model's scan from the cached state.
    /// Panics if the batch size differs from the cache's.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut Mamba2Cache<B>,
    ) -> Tensor<B, 3> {
        let dims = input_ids.dims();
        let mode = if dims[1] == 1 {
            SsdMode::Sequential
        } else {
            self.scan
        };
        let h = self.embeddings.forward(input_ids);
        let h = cache.advance(dims, h, |i, h, state| {
            self.layers[i].forward(h, state, mode, &self.ctx)
        });
        self.logits(h, &self.ctx)
    }

    fn logits(&self, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        norm_head_logits(
            &self.norm_f,
            self.lm_head.as_ref(),
            &self.embeddings,
            self.config.vocab_size,
            h,
            ctx,
        )
    }
}

impl<B: Backend> HfModel<B> for Mamba2<B> {
    fn hf_mapping(&self) -> HfMapping {
        self.config.hf_mapping()
    }
}

impl<B: AutodiffBackend> CheckpointedModel<B> for Mamba2<B> {
    type Block = Mamba2Block<B>;

    fn embedding(&self) -> &Embedding<B> {
        &self.embeddings
    }

    fn num_blocks(&self) -> usize {
        self.layers.len()
    }

    fn block(&self, e: usize) -> &Mamba2Block<B> {
        &self.layers[e]
    }

    fn block_forward(&self, e: usize, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        self.layers[e].forward(h, None, self.scan, ctx).0
    }

    fn inner_block_forward(
        inner: &Mamba2<B::InnerBackend>,
        e: usize,
        h: Tensor<B::InnerBackend, 3>,
        ctx: &ForwardCtx,
    ) -> Tensor<B::InnerBackend, 3> {
        inner.layers[e].forward(h, None, inner.scan, ctx).0
    }

    fn head_logits(&self, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        self.logits(h, ctx)
    }
}
