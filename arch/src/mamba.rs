//! Mamba-1: a language model of selective state-space blocks (Gu & Dao 2023, "Mamba: Linear-Time
//! Sequence Modeling with Selective State Spaces").
//!
//! Compatible with Hugging Face `transformers` `MambaForCausalLM` (`models/mamba/modeling_mamba.py`,
//! its `slow_forward` is the reference for the maths): pre-norm residual blocks
//! `h += mixer(rms(h))`, a final RMSNorm `norm_f`, and a head tied to the embedding by default.
//!
//! One mixer, with `E = expand · hidden_size`, `N = state_size`, `R = time_step_rank`,
//! `K = conv_kernel`, on `u` `[b, l, d]`:
//!
//! 1. `in_proj(u)` `[b, l, 2E]` is split into the SSM input `x` and the gate `z` (`[b, l, E]` each);
//! 2. `x` goes through a depthwise causal convolution (kernel `K`, left padding `K − 1`, with bias)
//!    and SiLU;
//! 3. `x_proj(x)` `[b, l, R + 2N]` splits into a low-rank step `δ` `[R]`, `B` `[N]` and `C` `[N]`;
//!    `Δ = softplus(dt_proj(δ))` `[b, l, E]` (`dt_proj` has a bias);
//! 4. the selective scan, per channel `e` and state `n`, with `A = −exp(A_log)` `[E, N]`:
//!    `h_t = exp(Δ_t·A) ⊙ h_{t−1} + (Δ_t·x_t) ⊗ B_t`, `y_t = h_t · C_t + D ⊙ x_t`;
//! 5. `out_proj(y ⊙ silu(z))` `[b, l, d]`.
//!
//! The scan exists twice, as plain burn tensor ops (differentiable by any autodiff backend):
//! [`selective_scan_sequential`], the reference, one step per position; and
//! [`selective_scan_chunked`], for training, which solves the recurrence for all positions in
//! `O(log l)` large tensor ops at linear cost (see its doc for the design).
//! [`Mamba::forward_cached`] carries the convolution and SSM states between calls: constant memory
//! per generated token.
//!
//! Module paths equal the HF tensor names minus `backbone.` (`layers.3.mixer.A_log`); the only
//! layout difference is burn's `[in, out]` Linear weights, transposed by the generic walk in [`crate::hf`].
//!
//! Mixed precision (see [`crate::Model::with_precision`]): norms, matmuls, the convolution and
//! activations run in `compute_dtype`; the selective scan (with its `D` skip and the gating) runs
//! in f32 whatever it is, as in `mamba_ssm`; the residual stream and the logits stay f32.
//!
//! On the CPU backend the selective scan, the causal conv + SiLU, softplus and the D-skip gate run
//! as fused kernels with hand-written backward passes (`layers/fused_scan.rs`,
//! `layers/fused_mamba.rs`); activation checkpointing works per block (`grads.rs`).
//!
//! Deliberately left out (for now): `attention_mask` (left padding); the
//! `time_step_init_scheme = "constant"` init (only `"random"`).

use burn::module::{Module, Param};
use burn::nn::conv::Conv1d;
use burn::nn::{Embedding, PaddingConfig1d};
use burn::tensor::activation::silu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, FloatDType, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config_keys::ConfigKeys;
use crate::error::{check_positive, ArchError};
use crate::grads::CheckpointedModel;
use crate::hf::{HfMapping, HfModel};
use crate::layers::{float_dtype, to_dtype, Builder, ForwardCtx, Linear, RmsNorm, Segments};
use crate::ssm::{
    causal_conv_silu, norm_head_logits, normal_param, residual_add, softplus, split_steps,
    uniform_param, ChunkDocIds, DocIds, RecurrentCache, KILN_RESCALE_PRENORM_RESIDUAL,
};

/// A chunk length for [`ScanMode::Chunked`] (set with [`Mamba::with_scan`]; the default mode is
/// [`ScanMode::Sequential`], and on the CPU backend the fused kernel replaces both). The chunked scan keeps `chunk ×` the sequential scan's memory and does
/// about that much more element-wise work, in `O(log_chunk l)` ops instead of `O(l)`. Measured
/// forward + backward on the CPU backend (b 2, E 64, N 16, l 512): sequential 68 ms; chunk 2:
/// 258 ms, 4: 316 ms, 8: 495 ms, 16: 904 ms. Small chunks win on the CPU (where the sequential
/// form is faster still); the op count is what matters on a GPU.
pub const DEFAULT_SCAN_CHUNK: usize = 4;

/// Mamba hyper-parameters, keyed by the HF `MambaConfig` (`config.json`) names. Defaults are
/// transformers' `MambaConfig` defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MambaConfig {
    /// Token vocabulary size (rows of `embeddings`).
    pub vocab_size: usize,
    /// Residual stream width d.
    pub hidden_size: usize,
    /// SSM state size N per channel. Default 16.
    #[serde(default = "default_state_size")]
    pub state_size: usize,
    /// Number of Mamba blocks.
    pub num_hidden_layers: usize,
    /// Inner width E = `expand · hidden_size` (HF's derived `intermediate_size`). Default 2.
    #[serde(default = "default_expand")]
    pub expand: usize,
    /// Depthwise causal convolution kernel K (kiln needs K ≥ 2). Default 4.
    #[serde(default = "default_conv_kernel")]
    pub conv_kernel: usize,
    /// Rank R of the step-size projection. HF's default `"auto"` means `ceil(hidden_size / 16)`;
    /// here it is a number ([`MambaConfig::from_hf_config`] resolves `"auto"`).
    pub time_step_rank: usize,
    /// RMSNorm epsilon. Default 1e-5.
    #[serde(default = "default_layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    /// Biases on `in_proj` and `out_proj`. Default false.
    #[serde(default)]
    pub use_bias: bool,
    /// Bias on the convolution. Default true.
    #[serde(default = "default_true")]
    pub use_conv_bias: bool,
    /// Init: the initial step sizes Δ are log-uniform in `[time_step_min, time_step_max]`.
    /// Default 0.001.
    #[serde(default = "default_time_step_min")]
    pub time_step_min: f64,
    /// Default 0.1.
    #[serde(default = "default_time_step_max")]
    pub time_step_max: f64,
    /// Init: lower clamp of the initial Δ. Default 1e-4.
    #[serde(default = "default_time_step_floor")]
    pub time_step_floor: f64,
    /// Init: `dt_proj.weight` is uniform in `±time_step_scale / sqrt(R)`. Default 1.0.
    #[serde(default = "default_one")]
    pub time_step_scale: f64,
    /// Output head shares the embedding matrix. Default true (`PretrainedConfig`'s default).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Init: std of the embedding (and of an untied head). Default 0.1 (HF `MambaConfig`).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Init: divide `out_proj.weight` by `sqrt(num_hidden_layers)` (GPT-2 scheme; the original
    /// `mamba_ssm` training code does this). Default false (HF).
    #[serde(default)]
    pub rescale_prenorm_residual: bool,
}

fn default_state_size() -> usize {
    16
}
fn default_expand() -> usize {
    2
}
fn default_conv_kernel() -> usize {
    4
}
fn default_layer_norm_epsilon() -> f64 {
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
fn default_one() -> f64 {
    1.0
}
fn default_initializer_range() -> f64 {
    0.1
}

impl MambaConfig {
    /// mamba-130m (`state-spaces/mamba-130m-hf`): 24 × 768, N 16, expand 2, K 4, R 48, vocab 50280,
    /// tied. 129,135,360 parameters.
    pub fn mamba_130m() -> Self {
        Self {
            vocab_size: 50280,
            hidden_size: 768,
            state_size: 16,
            num_hidden_layers: 24,
            expand: 2,
            conv_kernel: 4,
            time_step_rank: 48,
            layer_norm_epsilon: 1e-5,
            use_bias: false,
            use_conv_bias: true,
            time_step_min: 0.001,
            time_step_max: 0.1,
            time_step_floor: 1e-4,
            time_step_scale: 1.0,
            tie_word_embeddings: true,
            initializer_range: 0.1,
            rescale_prenorm_residual: false,
        }
    }

    /// E = `expand · hidden_size`, the width of the SSM channels.
    pub fn intermediate_size(&self) -> usize {
        self.expand * self.hidden_size
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
            ("time_step_rank", self.time_step_rank),
        ])?;
        if self.conv_kernel < 2 {
            return bad(
                "conv_kernel",
                format!("{} must be at least 2", self.conv_kernel),
            );
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return bad(
                "layer_norm_epsilon",
                format!("{} must be > 0", self.layer_norm_epsilon),
            );
        }
        if !(self.time_step_min.is_finite() && self.time_step_min > 0.0) {
            return bad(
                "time_step_min",
                format!("{} must be > 0", self.time_step_min),
            );
        }
        if !(self.time_step_max.is_finite() && self.time_step_max >= self.time_step_min) {
            return bad(
                "time_step_max",
                format!(
                    "{} must be >= time_step_min = {}",
                    self.time_step_max, self.time_step_min
                ),
            );
        }
        for (key, value) in [
            ("time_step_floor", self.time_step_floor),
            ("time_step_scale", self.time_step_scale),
            ("initializer_range", self.initializer_range),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return bad(key, format!("{value} must be >= 0"));
            }
        }
        Ok(())
    }

    /// Parameters of one block, from the HF tensor shapes: `norm.weight [d]`,
    /// `in_proj.weight [2E, d]` (+ bias `[2E]`), `conv1d.weight [E, 1, K]` (+ bias `[E]`),
    /// `x_proj.weight [R + 2N, E]`, `dt_proj.weight [E, R]` + bias `[E]`, `A_log [E, N]`, `D [E]`,
    /// `out_proj.weight [d, E]` (+ bias `[d]`).
    fn block_params(&self) -> usize {
        let (d, e, n, r, k) = (
            self.hidden_size,
            self.intermediate_size(),
            self.state_size,
            self.time_step_rank,
            self.conv_kernel,
        );
        let linear_bias = if self.use_bias { 2 * e + d } else { 0 };
        let conv_bias = if self.use_conv_bias { e } else { 0 };
        d + 2 * e * d
            + e * k
            + conv_bias
            + (r + 2 * n) * e
            + e * r
            + e
            + e * n
            + e
            + d * e
            + linear_bias
    }

    /// Exact parameter count (equals burn's `Module::num_params` of the built model): embedding,
    /// blocks, `norm_f`, and the head when untied.
    pub fn num_params(&self) -> usize {
        let embed = self.vocab_size * self.hidden_size;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + self.num_hidden_layers * self.block_params() + self.hidden_size + head
    }

    /// Training FLOPs per token (forward + backward):
    /// `6 · N_matmul + 6 · L · E · (3·N + K)`, where
    /// - `N_matmul = L · (in_proj + x_proj + dt_proj + out_proj weights) + vocab · d` (the head
    ///   counts even when tied: it is a real matmul);
    /// - the second term is the element-wise work a matmul count misses: per channel and token the
    ///   scan does three multiply-adds per state (`exp(ΔA)·h`, `Δx·B`, `h·C`) and the convolution
    ///   K. 6 = 2 (multiply-add) × 3 (forward + backward).
    ///
    /// Independent of the sequence length (this is what makes Mamba linear-time); the chunked
    /// training scan does several times more element-wise work than this count (the algorithm's
    /// cost, not useful FLOPs; see [`selective_scan_chunked`]); norms, SiLU, softplus are ignored.
    pub fn flops_per_token(&self) -> u64 {
        let (d, e, n, r, k) = (
            self.hidden_size as u64,
            self.intermediate_size() as u64,
            self.state_size as u64,
            self.time_step_rank as u64,
            self.conv_kernel as u64,
        );
        let layers = self.num_hidden_layers as u64;
        let block_matmul = d * 2 * e + e * (r + 2 * n) + r * e + e * d;
        let n_matmul = layers * block_matmul + self.vocab_size as u64 * d;
        6 * n_matmul + 6 * layers * e * (3 * n + k)
    }

    /// How module paths become `MambaForCausalLM` tensor names (see [`crate::hf`]).
    pub fn hf_mapping(&self) -> HfMapping {
        crate::ssm::backbone_hf_mapping(self.tie_word_embeddings)
    }

    /// HF `config.json` for `MambaForCausalLM`.
    pub fn to_hf_config(&self, bos_token_id: u32, eos_token_id: u32, torch_dtype: &str) -> Value {
        let mut cfg = json!({
            "architectures": ["MambaForCausalLM"],
            "model_type": "mamba",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "state_size": self.state_size,
            "num_hidden_layers": self.num_hidden_layers,
            "expand": self.expand,
            "intermediate_size": self.intermediate_size(),
            "conv_kernel": self.conv_kernel,
            "time_step_rank": self.time_step_rank,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_bias": self.use_bias,
            "use_conv_bias": self.use_conv_bias,
            "hidden_act": "silu",
            "initializer_range": self.initializer_range,
            "residual_in_fp32": true,
            "time_step_scale": self.time_step_scale,
            "time_step_min": self.time_step_min,
            "time_step_max": self.time_step_max,
            "time_step_init_scheme": "random",
            "time_step_floor": self.time_step_floor,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_cache": true,
            "use_mambapy": false,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            // `dtype` for transformers 5, `torch_dtype` for 4.x.
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

    /// Reads an HF Mamba `config.json` (kiln's own or a real one): see
    /// [`MambaConfig::from_keys`]; an `intermediate_size` must equal `expand · hidden_size`, and
    /// another `hidden_act` than SiLU is an [`ArchError::UnsupportedConfig`]. Keys that only
    /// concern PyTorch (`residual_in_fp32`, `use_mambapy`, `time_step_init_scheme`, ...) are
    /// ignored.
    pub fn from_hf_config(cfg: &Value) -> Result<Self, ArchError> {
        let mut keys = ConfigKeys::object(cfg)?;
        keys.expect_model_type("mamba")?;
        keys.expect_silu("kiln's Mamba uses SiLU")?;
        // HF: `intermediate_size = int(expand * hidden_size)`; `expand` may be written as a float.
        keys.integral("expand")?;
        if let Some(inner) = keys.usize("intermediate_size")? {
            let expand = keys.usize("expand")?.unwrap_or_else(default_expand);
            let hidden_size = keys.required("hidden_size")?;
            if inner != expand * hidden_size {
                return Err(ArchError::InvalidConfig {
                    key: "intermediate_size".into(),
                    reason: format!("{inner} != expand ({expand}) × hidden_size ({hidden_size})"),
                });
            }
        }
        keys.kiln_key(
            KILN_RESCALE_PRENORM_RESIDUAL,
            "rescale_prenorm_residual",
            Some("rescale_prenorm_residual"),
        );
        Self::from_keys(keys)
    }

    /// A config from `config.json` keys. Required: `vocab_size`, `hidden_size`,
    /// `num_hidden_layers`. `time_step_rank` absent or `"auto"` is `ceil(hidden_size / 16)`;
    /// every other absent key takes its serde default, transformers' `MambaConfig` default.
    /// Validated.
    pub fn from_keys(mut keys: ConfigKeys) -> Result<Self, ArchError> {
        let hidden_size = keys.required("hidden_size")?;
        keys.resolve_auto("time_step_rank", hidden_size.div_ceil(16))?;
        let config: Self = keys.deserialize(&["vocab_size", "num_hidden_layers"])?;
        config.validate()?;
        Ok(config)
    }

    /// Fresh weights. The rules, with their sources (`mamba_ssm` = the original implementation,
    /// `mamba_ssm/modules/mamba_simple.py`, that trained the released checkpoints; HF =
    /// `MambaPreTrainedModel._init_weights`):
    /// - `A_log[e, n] = ln(n + 1)` (S4D-real), `D = 1`, norms 1 (both);
    /// - `dt_proj.weight ~ U(±time_step_scale / sqrt(R))`; `dt_proj.bias = softplus⁻¹(Δ₀)` with
    ///   `Δ₀ = max(exp(U[ln time_step_min, ln time_step_max]), time_step_floor)`, so the initial
    ///   step sizes are log-uniform (both);
    /// - `conv1d` weight and bias `~ U(±1/sqrt(K))`: PyTorch's `Conv1d` default, as in
    ///   `mamba_ssm` (HF zeroes the bias);
    /// - `in_proj`, `x_proj`, `out_proj` weights `~ U(±1/sqrt(fan_in))`: PyTorch's `Linear`
    ///   default, as in `mamba_ssm` (HF's `_init_weights` ends with normal(0, initializer_range)
    ///   for every Linear, 0.1 by default, which makes the `in_proj` output ~3× the input at
    ///   d = 768); `out_proj` divided by `sqrt(num_hidden_layers)` with `rescale_prenorm_residual`;
    ///   Linear biases (`use_bias`) zero (both);
    /// - embedding (and an untied head) `~ normal(0, initializer_range)` (HF).
    ///
    /// Parameters are created eagerly, in this order, from the backend's RNG: a clone of a fresh
    /// model is an identical copy. Panics if [`MambaConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mamba<B> {
        self.init_with(&Builder::new(device))
    }

    /// [`MambaConfig::init`] through a builder whose plan may give the projections adapters or
    /// quantizers (the base weights are the same either way).
    pub fn init_with<B: Backend>(&self, vb: &Builder<B>) -> Mamba<B> {
        let device = vb.device;
        if let Err(e) = self.validate() {
            panic!("invalid Mamba config: {e}");
        }
        let (d, v) = (self.hidden_size, self.vocab_size);
        let std = self.initializer_range;
        let layers = (0..self.num_hidden_layers)
            .map(|i| MambaBlock {
                norm: RmsNorm::new(d, self.layer_norm_epsilon, device),
                mixer: self.init_mixer(&vb.pp("layers").pp(i).pp("mixer")),
            })
            .collect();
        Mamba {
            embeddings: Embedding {
                weight: normal_param([v, d], std, device),
            },
            layers,
            norm_f: RmsNorm::new(d, self.layer_norm_epsilon, device),
            lm_head: (!self.tie_word_embeddings)
                .then(|| vb.linear("lm_head", normal_param([d, v], std, device), None)),
            config: self.clone(),
            // Measured on CPU (flex), the sequential form trains 3–7× faster than the chunked
            // one (`scan_timing` in tests/mamba.rs); the chunked form is for backends where
            // per-op overhead dominates.
            scan: ScanMode::Sequential,
            ctx: ForwardCtx::default(),
        }
    }

    pub(crate) fn init_mixer<B: Backend>(&self, vb: &Builder<B>) -> MambaMixer<B> {
        let device = vb.device;
        let (d, e, n, r, k) = (
            self.hidden_size,
            self.intermediate_size(),
            self.state_size,
            self.time_step_rank,
            self.conv_kernel,
        );
        // PyTorch's default Linear/Conv init: kaiming_uniform(a = sqrt(5)) = U(±1/sqrt(fan_in)).
        let torch_default = |fan_in: usize| 1.0 / (fan_in as f64).sqrt();
        let zeros = |len: usize| Param::<Tensor<B, 1>>::from_tensor(Tensor::zeros([len], device));
        let out_scale = if self.rescale_prenorm_residual {
            (self.num_hidden_layers as f64).sqrt()
        } else {
            1.0
        };

        // Δ₀ log-uniform in [time_step_min, time_step_max], then the inverse of softplus,
        // Δ₀ + ln(−expm1(−Δ₀)), computed in f64 on the host (init time only).
        let u = Tensor::<B, 1>::random([e], Distribution::Uniform(0.0, 1.0), device)
            .into_data()
            .convert::<f64>()
            .into_vec::<f64>()
            .expect("converted tensor data is f64");
        let (lo, hi) = (self.time_step_min.ln(), self.time_step_max.ln());
        let dt_bias: Vec<f32> = u
            .iter()
            .map(|u| {
                let dt = (lo + u * (hi - lo)).exp().max(self.time_step_floor);
                (dt + (-(-dt).exp_m1()).ln()) as f32
            })
            .collect();
        let a_log: Vec<f32> = (0..e)
            .flat_map(|_| (1..=n).map(|i| (i as f32).ln()))
            .collect();

        MambaMixer {
            in_proj: vb.linear(
                "in_proj",
                uniform_param([d, 2 * e], torch_default(d), device),
                self.use_bias.then(|| zeros(2 * e)),
            ),
            conv1d: Conv1d {
                weight: uniform_param([e, 1, k], torch_default(k), device),
                bias: self
                    .use_conv_bias
                    .then(|| uniform_param([e], torch_default(k), device)),
                stride: 1,
                kernel_size: k,
                dilation: 1,
                groups: e,
                // Unused: the forward pads explicitly (with the cached state when generating).
                padding: PaddingConfig1d::Valid,
            },
            x_proj: vb.linear(
                "x_proj",
                uniform_param([e, r + 2 * n], torch_default(e), device),
                None,
            ),
            dt_proj: vb.linear(
                "dt_proj",
                uniform_param([r, e], self.time_step_scale / (r as f64).sqrt(), device),
                Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(dt_bias, [e]),
                    device,
                ))),
            ),
            A_log: Param::from_tensor(Tensor::from_data(TensorData::new(a_log, [e, n]), device)),
            D: Param::from_tensor(Tensor::ones([e], device)),
            out_proj: vb.linear(
                "out_proj",
                uniform_param([e, d], torch_default(e) / out_scale, device),
                self.use_bias.then(|| zeros(d)),
            ),
            state_size: n,
            time_step_rank: r,
            conv_kernel: k,
        }
    }
}

/// How [`Mamba::forward`] runs the selective scan (same values either way, up to rounding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanMode {
    /// [`selective_scan_sequential`]: one step per position. The reference; least memory.
    Sequential,
    /// [`selective_scan_chunked`] with chunks of `chunk` positions.
    Chunked {
        /// Positions per chunk (≥ 1).
        chunk: usize,
    },
}

pub use mixer_def::MambaMixer;

/// The mixer's definition, alone in a module: its field names `A_log` and `D` are the HF names,
/// and burn's `Module` derive repeats field names as local variables, so the snake-case lint is
/// silenced for this definition only.
#[allow(non_snake_case)]
mod mixer_def {
    use super::*;

    /// The Mamba mixer (HF `MambaMixer`); field names are the HF names.
    #[derive(Module, Debug)]
    pub struct MambaMixer<B: Backend> {
        /// `[d] -> [2E]`: the SSM input x and the gate z. burn layout `[d, 2E]`.
        pub in_proj: Linear<B>,
        /// Depthwise causal convolution: weight `[E, 1, K]`, bias `[E]` (HF layout). Only its
        /// parameters are used; the forward computes the K taps itself (see `MambaMixer::conv`).
        pub conv1d: Conv1d<B>,
        /// `[E] -> [R + 2N]`: the low-rank step δ, B and C. burn layout `[E, R + 2N]`.
        pub x_proj: Linear<B>,
        /// `[R] -> [E]` with bias: `Δ = softplus(dt_proj(δ))`. burn layout `[R, E]`.
        pub dt_proj: Linear<B>,
        /// `[E, N]`, `A = −exp(A_log)` (kept in log space so A stays negative).
        pub A_log: Param<Tensor<B, 2>>,
        /// `[E]`, the skip connection `y += D ⊙ x`.
        pub D: Param<Tensor<B, 1>>,
        /// `[E] -> [d]`. burn layout `[E, d]`.
        pub out_proj: Linear<B>,
        /// N.
        pub state_size: usize,
        /// R.
        pub time_step_rank: usize,
        /// K.
        pub conv_kernel: usize,
    }
}

/// What one mixer carries from one call of [`Mamba::forward_cached`] to the next.
#[derive(Clone, Debug)]
pub struct MambaLayerState<B: Backend> {
    /// The last `K − 1` convolution inputs, `[b, E, K − 1]` (oldest first; zeros before the start),
    /// in the compute dtype.
    pub conv: Tensor<B, 3>,
    /// The SSM state h, `[b, E, N]`, always f32 (the scan runs in f32).
    pub ssm: Tensor<B, 3>,
}

impl<B: Backend> MambaMixer<B> {
    /// `u` `[b, l, d]` -> `([b, l, d], state after the last position)`, continuing from `state`
    /// (zeros when `None`). Computes in `u`'s dtype (the compute dtype), except the selective
    /// scan, its `D` skip and the gating, which run in f32.
    pub fn forward(
        &self,
        u: Tensor<B, 3>,
        state: Option<MambaLayerState<B>>,
        scan: ScanMode,
        ctx: &ForwardCtx,
    ) -> (Tensor<B, 3>, MambaLayerState<B>) {
        self.forward_with_norms(u, state, scan, None, ctx)
    }

    /// [`MambaMixer::forward`], with Jamba's extra RMSNorms `[dt, B, C]` applied to the low-rank
    /// step δ, B and C right after `x_proj` (before `dt_proj`) when `norms` is given
    /// (HF `JambaMambaMixer`: `dt_layernorm`, `b_layernorm`, `c_layernorm`).
    pub(crate) fn forward_with_norms(
        &self,
        u: Tensor<B, 3>,
        state: Option<MambaLayerState<B>>,
        scan: ScanMode,
        norms: Option<[&RmsNorm<B>; 3]>,
        ctx: &ForwardCtx,
    ) -> (Tensor<B, 3>, MambaLayerState<B>) {
        let [b, l, d] = u.dims();
        let [e, _] = self.A_log.dims();
        let (n, r) = (self.state_size, self.time_step_rank);
        let (conv_past, ssm_past) = match state {
            Some(s) => (Some(s.conv), Some(s.ssm)),
            None => (None, None),
        };

        let xz = self
            .in_proj
            .forward(u.reshape([b * l, d]), ctx)
            .reshape([b, l, 2 * e]);
        let z = xz.clone().narrow(2, e, e); // gate [b, l, E]
        let (x, conv_state) = causal_conv_silu(
            &self.conv1d,
            self.conv_kernel,
            xz.narrow(2, 0, e),
            conv_past,
            ctx,
        ); // [b, l, E]

        let dbc = self.x_proj.forward(x.clone().reshape([b * l, e]), ctx); // [b·l, R + 2N]
        let (delta, b_in, c_out) = (
            dbc.clone().narrow(1, 0, r), // δ [b·l, R]
            dbc.clone().narrow(1, r, n), // B [b·l, N]
            dbc.narrow(1, r + n, n),     // C [b·l, N]
        );
        let (delta, b_in, c_out) = match norms {
            Some([dt_norm, b_norm, c_norm]) => (
                dt_norm.forward(delta),
                b_norm.forward(b_in),
                c_norm.forward(c_out),
            ),
            None => (delta, b_in, c_out),
        };
        // The scan runs in f32 whatever the compute dtype (as `mamba_ssm`'s kernel does): its
        // inputs are cast up here, its gated output cast back to the compute dtype below.
        let compute = float_dtype(&x);
        let f32 = FloatDType::F32;
        let dt = to_dtype(self.dt_proj.forward(delta, ctx), f32); // [b·l, E]
        let dt = softplus(dt).reshape([b, l, e]); // Δ > 0
        let b_in = to_dtype(b_in, f32).reshape([b, l, n]); // B [b, l, N]
        let c_out = to_dtype(c_out, f32).reshape([b, l, n]); // C [b, l, N]
        let a = to_dtype(self.A_log.val(), f32).exp().neg(); // A [E, N], < 0
        let x = to_dtype(x, f32); // [b, l, E]
        let ssm_past = ssm_past.map(|s| to_dtype(s, f32));

        // On the CPU backend (f32) a hand-written kernel with its own backward pass replaces the
        // op-by-op scan (~50× faster; same values: `layers::fused_scan` tests). `scan` then
        // does not matter; `KILN_FUSED_KERNELS=0` switches back to it.
        // Packed documents (ctx.segments) reset the state at their starts.
        let docs = ctx.segments.as_ref();
        let (y, ssm_state) = if crate::layers::fused_enabled(&x) {
            crate::layers::fused_scan::selective_scan_with_state(
                x.clone(),
                dt,
                a,
                b_in,
                c_out,
                ssm_past,
                docs,
            )
        } else {
            match scan {
                ScanMode::Sequential => {
                    selective_scan_sequential(x.clone(), dt, a, b_in, c_out, ssm_past, docs)
                }
                ScanMode::Chunked { chunk } => {
                    selective_scan_chunked(x.clone(), dt, a, b_in, c_out, ssm_past, chunk, docs)
                }
            }
        }; // y [b, l, E]
        let skip = to_dtype(self.D.val(), f32); // D [E]
        let z = to_dtype(z, f32);
        let y = if crate::layers::fused_enabled(&y) {
            crate::layers::fused_mamba::skip_gate(y, x, skip, z)
        } else {
            (y + x * skip.reshape([1, 1, e])) * silu(z)
        };
        let y = to_dtype(y, compute);
        let out = self
            .out_proj
            .forward(y.reshape([b * l, e]), ctx)
            .reshape([b, l, d]);
        (
            out,
            MambaLayerState {
                conv: conv_state,
                ssm: ssm_state,
            },
        )
    }
}

/// The selective scan, one position at a time (the reference; HF's `slow_forward` loop).
///
/// Inputs: `x`, `dt` (Δ, already through softplus) `[b, l, E]`; `a` (A, negative) `[E, N]`;
/// `b_in` (B), `c_out` (C) `[b, l, N]`; `h0` the state before position 0 `[b, E, N]` (zeros when
/// `None`). Returns `y` `[b, l, E]` (without the `D ⊙ x` skip) and the state after the last
/// position `[b, E, N]`:
/// `h_t = exp(Δ_t ⊙ A) ⊙ h_{t−1} + (Δ_t ⊙ x_t) ⊗ B_t`, `y_t = h_t · C_t`. With `segments`
/// (packed rows), `h_{t−1}` counts as 0 where a document other than the row's first starts.
///
/// Cost: `l` steps of a few `[b, E, N]` ops; autodiff keeps `O(b · l · E · N)`. The per-step
/// slices come from [`split_steps`], so the backward pass is `O(l log l)`, not `O(l²)`.
pub fn selective_scan_sequential<B: Backend>(
    x: Tensor<B, 3>,
    dt: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b_in: Tensor<B, 3>,
    c_out: Tensor<B, 3>,
    h0: Option<Tensor<B, 3>>,
    segments: Option<&Segments>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [bs, l, e] = x.dims();
    let [_, n] = a.dims();
    // Discretisation for every position at once, as HF does.
    let decay = (dt.clone().reshape([bs, l, e, 1]) * a.reshape([1, 1, e, n])).exp(); // [b, l, E, N]
    let decay = match segments {
        Some(seg) => {
            decay
                * seg
                    .carries::<B>(&x.device(), x.dtype())
                    .reshape([bs, l, 1, 1])
        }
        None => decay,
    };
    let input = (dt * x).reshape([bs, l, e, 1]) * b_in.reshape([bs, l, 1, n]); // [b, l, E, N]
    let mut h = h0.unwrap_or_else(|| Tensor::zeros([bs, e, n], (&input.device(), input.dtype())));
    let steps = split_steps(decay, 1)
        .into_iter()
        .zip(split_steps(input, 1))
        .zip(split_steps(c_out.swap_dims(1, 2), 2)); // C_t [b, N, 1]
    let mut ys = Vec::with_capacity(l);
    for ((decay_t, input_t), c_t) in steps {
        h = decay_t.reshape([bs, e, n]) * h + input_t.reshape([bs, e, n]); // [b, E, N]
        ys.push(h.clone().matmul(c_t)); // y_t [b, E, 1]
    }
    let y = Tensor::cat(ys, 2).swap_dims(1, 2); // [b, l, E]
    (y, h)
}

/// The selective scan by chunks of `chunk` positions: same inputs (packed `segments` included),
/// outputs and values as [`selective_scan_sequential`] (up to rounding), with no loop over
/// positions.
///
/// The scan is the first-order linear recurrence `h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t x_t ⊗ B_t`
/// (element-wise over the `E·N` state entries), read out as `y_t = h_t · C_t`;
/// `linear_recurrence_chunked` solves the recurrence for every `t` at once.
///
/// Cost is linear in `l`: `O(b · l · T · E · N)` element-wise work and memory for chunk length
/// `T` (the intra-chunk decay matrix; `T ×` the sequential scan's memory), in `O(log_T l)`
/// tensor ops. The decay is per (channel, state) in Mamba-1, so unlike Mamba-2's scalar decay
/// the chunk's work cannot become matmuls.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_chunked<B: Backend>(
    x: Tensor<B, 3>,
    dt: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b_in: Tensor<B, 3>,
    c_out: Tensor<B, 3>,
    h0: Option<Tensor<B, 3>>,
    chunk: usize,
    segments: Option<&Segments>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    assert!(chunk > 0, "selective_scan_chunked: chunk must be positive");
    let [bs, l, e] = x.dims();
    let [_, n] = a.dims();
    let log_decay = (dt.clone().reshape([bs, l, e, 1]) * a.reshape([1, 1, e, n])) // ΔA ≤ 0
        .reshape([bs, l, e * n]);
    let input = ((dt * x).reshape([bs, l, e, 1]) * b_in.reshape([bs, l, 1, n])) // Δx ⊗ B
        .reshape([bs, l, e * n]);
    let h0 = h0.map(|h| h.reshape([bs, e * n]));
    let docs = segments.map(|seg| DocIds::of(seg, &input.device(), input.dtype()));
    let (h, h_last) = linear_recurrence_chunked(log_decay, input, h0, chunk, docs); // [b, l, E·N]
    let y = (h.reshape([bs, l, e, n]) * c_out.reshape([bs, l, 1, n]))
        .sum_dim(3)
        .reshape([bs, l, e]); // y_t = h_t · C_t
    (y, h_last.reshape([bs, e, n]))
}

/// Every state of `h_t = exp(log_decay_t) ⊙ h_{t−1} + input_t` (`log_decay` ≤ 0, `input`
/// `[b, l, M]`, `h_{−1} = h0` `[b, M]` or zeros), by chunks of `T = min(chunk, l)` positions:
/// `([b, l, M]` states, `[b, M]` last state).
///
/// Within chunk `c`, with `S_t = Σ_{k ≤ t} log_decay_k` (a `cumsum` from the chunk's start) and
/// `H_c` the state entering the chunk:
///
/// `h_t = Σ_{s ≤ t} exp(S_t − S_s) ⊙ input_s  +  exp(S_t) ⊙ H_c`.
///
/// 1. The first term, the state from a zero start, is a masked decay matrix `[b, c, T, T, M]`
///    (`−∞` added above the diagonal before `exp`: exactly 0 there, and every exponent is ≤ 0, so
///    nothing overflows) applied to the chunk's inputs.
/// 2. The states entering the chunks obey the same kind of recurrence one level up, with
///    per-chunk decay `S_{T−1}` and input "state at the chunk's end from a zero start": solved by
///    a recursive call on `l / T` positions (so no op ever loops over chunks either; depth
///    `log_T l`).
/// 3. The second term adds them back.
///
/// A length that is not a multiple of `T` is padded with `log_decay = 0`, `input = 0` (decay 1,
/// nothing added), which leaves every state, the last included, unchanged.
///
/// With `docs` (packed documents), a term from position `s` reaches position `t` only when both
/// are in one document (no reset in between), and a carried state only the positions of its own
/// document: the same masks at every level, with each chunk standing for the document of its
/// last position.
fn linear_recurrence_chunked<B: Backend>(
    log_decay: Tensor<B, 3>,
    input: Tensor<B, 3>,
    h0: Option<Tensor<B, 2>>,
    chunk: usize,
    docs: Option<DocIds<B>>,
) -> (Tensor<B, 3>, Tensor<B, 2>) {
    let [bs, l, m] = input.dims();
    let device = input.device();
    let dtype = input.dtype();
    let t = chunk.min(l);
    let nc = l.div_ceil(t);
    let pad = nc * t - l;
    let pad_seq = |v: Tensor<B, 3>| {
        if pad == 0 {
            v
        } else {
            Tensor::cat(vec![v, Tensor::zeros([bs, pad, m], (&device, dtype))], 1)
        }
    };
    let docs = docs.map(|d| d.padded(pad).chunks(nc, t));
    let cum = pad_seq(log_decay).reshape([bs, nc, t, m]).cumsum(2); // S [b, c, T, M]
    let input = pad_seq(input).reshape([bs, nc, t, m]);

    // 1. States from a zero start at each chunk's beginning. `causal[t, s]`: 0 for s ≤ t, −∞ above.
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
    .reshape([1, 1, t, t, 1]);
    let seg = cum.clone().reshape([bs, nc, t, 1, m]) - cum.clone().reshape([bs, nc, 1, t, m]);
    let decay = (seg + causal).exp(); // exp(S_t − S_s), 0 for s > t: [b, c, T(t), T(s), M]
    let decay = match &docs {
        Some(d) => decay * d.same_within_chunks().unsqueeze_dim::<5>(4),
        None => decay,
    };
    let local = (decay * input.reshape([bs, nc, 1, t, m]))
        .sum_dim(3)
        .reshape([bs, nc, t, m]); // [b, c, T, M]

    // 2. The state entering each chunk, [b, c, M].
    let h0 = h0.unwrap_or_else(|| Tensor::zeros([bs, m], (&device, dtype)));
    let starts = if nc == 1 {
        h0.reshape([bs, 1, m])
    } else {
        let chunk_decay = cum.clone().narrow(2, t - 1, 1).reshape([bs, nc, m]);
        let chunk_input = local.clone().narrow(2, t - 1, 1).reshape([bs, nc, m]);
        // after[c] = state at the end of chunk c.
        let chunk_docs = docs.as_ref().map(ChunkDocIds::chunk_level);
        let (after, _) =
            linear_recurrence_chunked(chunk_decay, chunk_input, Some(h0.clone()), t, chunk_docs);
        Tensor::cat(vec![h0.reshape([bs, 1, m]), after.narrow(1, 0, nc - 1)], 1)
    };

    // 3. Add the carried state, decayed to each position (within its document).
    let carried = cum.exp() * starts.reshape([bs, nc, 1, m]); // [b, c, T, M]
    let carried = match &docs {
        Some(d) => carried * d.same_as_entering().unsqueeze_dim::<4>(3),
        None => carried,
    };
    let h = local + carried; // [b, c, T, M]
    let h = h.reshape([bs, nc * t, m]);
    let last = h.clone().narrow(1, nc * t - 1, 1).reshape([bs, m]);
    (h.narrow(1, 0, l), last)
}

/// One pre-norm block (HF `MambaBlock`): `h += mixer(norm(h))`.
#[derive(Module, Debug)]
pub struct MambaBlock<B: Backend> {
    /// RMSNorm before the mixer.
    pub norm: RmsNorm<B>,
    /// The selective-SSM mixer.
    pub mixer: MambaMixer<B>,
}

impl<B: Backend> MambaBlock<B> {
    /// `h` `[b, l, d]` -> `[b, l, d]` and the mixer's state after the last position. The mixer
    /// computes in `compute` (the norm hands it that dtype); its output is added to the residual
    /// stream in the stream's own dtype.
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        state: Option<MambaLayerState<B>>,
        scan: ScanMode,
        ctx: &ForwardCtx,
    ) -> (Tensor<B, 3>, MambaLayerState<B>) {
        let (y, state) = self.mixer.forward(
            self.norm.forward_as(h.clone(), ctx.compute),
            state,
            scan,
            ctx,
        );
        (residual_add(h, y), state)
    }
}

/// `MambaForCausalLM`. Field names are the HF names without `backbone.` (`lm_head.weight` is
/// top-level in HF too), so burn module paths are HF names minus `backbone.`.
#[derive(Module, Debug)]
pub struct Mamba<B: Backend> {
    /// Token embedding, `[vocab, d]`.
    pub embeddings: Embedding<B>,
    /// The blocks.
    pub layers: Vec<MambaBlock<B>>,
    /// Final norm.
    pub norm_f: RmsNorm<B>,
    /// Output head `[d] -> [vocab]`; `None` when tied to `embeddings`.
    pub lm_head: Option<Linear<B>>,
    /// The config this model was built from.
    #[module(skip)]
    pub config: MambaConfig,
    /// How [`Mamba::forward`] runs the scan.
    #[module(skip)]
    pub scan: ScanMode,
    /// How the blocks compute (precision, quantizers); see [`ForwardCtx`].
    #[module(skip)]
    pub ctx: ForwardCtx,
}

/// Generation state of a [`Mamba`]: per layer, the convolution and SSM states. Constant size,
/// whatever the number of tokens processed. Under mixed precision the convolution window is
/// kept in the compute dtype and the SSM state in f32 (the scan's dtype).
pub type MambaCache<B> = RecurrentCache<MambaLayerState<B>>;

impl<B: Backend> Mamba<B> {
    /// The same model with another scan implementation (same values up to rounding).
    pub fn with_scan(mut self, scan: ScanMode) -> Self {
        self.scan = scan;
        self
    }

    /// `input_ids` `[b, l]` -> logits `[b, l, vocab]`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_with(input_ids, &self.ctx)
    }

    /// [`Mamba::forward`] under `ctx` (a batch's context: packed documents, see [`ForwardCtx`]).
    pub fn forward_with(&self, input_ids: Tensor<B, 2, Int>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        let mut h = self.embeddings.forward(input_ids); // [b, l, d]
        for layer in &self.layers {
            h = layer.forward(h, None, self.scan, ctx).0;
        }
        self.logits(h, ctx)
    }

    /// An empty cache for `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> MambaCache<B> {
        RecurrentCache::new(self.layers.len(), batch)
    }

    /// Logits `[b, l, vocab]` for `input_ids` `[b, l]`, the tokens that follow what `cache`
    /// already holds; updates the cache. Equal to the matching slice of [`Mamba::forward`] on the
    /// whole sequence.
    ///
    /// A single token (generation) is one recurrent step: constant time and memory per token. A
    /// longer input (a prompt) runs the model's scan from the cached state.
    ///
    /// Panics if the batch size differs from the one the cache was created for.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut MambaCache<B>,
    ) -> Tensor<B, 3> {
        let dims = input_ids.dims();
        let scan = if dims[1] == 1 {
            ScanMode::Sequential
        } else {
            self.scan
        };
        let h = self.embeddings.forward(input_ids); // [b, l, d]
        let h = cache.advance(dims, h, |i, h, state| {
            self.layers[i].forward(h, state, scan, &self.ctx)
        });
        self.logits(h, &self.ctx)
    }

    /// Final norm and head: `[b, l, d]` -> logits `[b, l, vocab]`.
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

impl<B: Backend> HfModel<B> for Mamba<B> {
    fn hf_mapping(&self) -> HfMapping {
        self.config.hf_mapping()
    }
}

impl<B: AutodiffBackend> CheckpointedModel<B> for Mamba<B> {
    type Block = MambaBlock<B>;

    fn embedding(&self) -> &Embedding<B> {
        &self.embeddings
    }

    fn num_blocks(&self) -> usize {
        self.layers.len()
    }

    fn block(&self, e: usize) -> &MambaBlock<B> {
        &self.layers[e]
    }

    fn block_forward(&self, e: usize, h: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        self.layers[e].forward(h, None, self.scan, ctx).0
    }

    fn inner_block_forward(
        inner: &Mamba<B::InnerBackend>,
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
