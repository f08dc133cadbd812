//! # kiln-arch: model architectures for the kiln trainer
//!
//! Model maths as burn 0.21 modules, the Hugging Face `config.json` and tensor-name mapping, and
//! the init rules, for four architectures behind one [`Model`] type: Llama (`transformers`'
//! `LlamaForCausalLM`, in the SmolLM / MobileLLM shapes, with MobileLLM-LS layer sharing as an
//! option), Mamba (`MambaForCausalLM`), Mamba-2 (`Mamba2ForCausalLM`) and a Jamba-layout hybrid
//! (`JambaForCausalLM`, one expert). Every projection is one [`Linear`] made by a path-aware
//! [`Builder`], which can give it a LoRA adapter or a fake quantizer.
//!
//! The pipeline the trainer drives:
//!
//! 1. a [`ModelConfig`] (from the recipe, or [`ModelConfig::from_hf_config`] on a `config.json`);
//! 2. [`ModelConfig::init`] → [`Model`] with fresh weights (or then
//!    [`HfModel::load_hf_tensors`] with the output of [`read_safetensors`]);
//! 3. [`Model::forward`]: token ids `[batch, seq]` → logits `[batch, seq, vocab]` (f32) for
//!    training; [`Model::new_cache`] + [`Model::forward_cached`] for generation;
//! 4. export: [`ModelConfig::to_hf_config`] → `config.json`, [`HfModel::to_hf_tensors`] →
//!    [`write_safetensors`] → `model.safetensors`, loadable by the matching transformers class's
//!    `from_pretrained`.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Int, Tensor};
//! use kiln_arch::{HfModel, LlamaConfig, Model, ModelConfig};
//!
//! let config = ModelConfig::Llama(LlamaConfig {
//!     vocab_size: 64,
//!     hidden_size: 32,
//!     intermediate_size: 64,
//!     num_hidden_layers: 2,
//!     num_attention_heads: 4,
//!     num_key_value_heads: 2,
//!     head_dim: 8,
//!     max_position_embeddings: 32,
//!     ..LlamaConfig::smollm_135m()
//! });
//! let device = Default::default();
//! let model: Model<Flex> = config.init(&device);
//! let ids = Tensor::<Flex, 2, Int>::from_data([[1, 2, 3]], &device);
//! assert_eq!(model.forward(ids).dims(), [1, 3, 64]);
//!
//! // Hugging Face export: names and [out, in] layout of `LlamaForCausalLM`.
//! let tensors = model.to_hf_tensors();
//! assert_eq!(tensors[0].name, "model.embed_tokens.weight");
//! assert_eq!(config.num_params(), tensors.iter().map(|t| t.data.len()).sum::<usize>());
//! ```
//!
//! Module paths: every Llama parameter's burn path equals its HF name without `model.`
//! (`layers.3.self_attn.q_proj.weight`), below the `Model` enum's variant (burn visitors see an
//! extra `Llama` level with container type `Enum:Model`).

mod config_keys;
pub mod error;
pub mod grads;
pub mod hf;
pub mod hybrid;
pub mod layers;
pub mod llama;
pub mod mamba;
pub mod mamba2;
pub mod simd;
mod ssm;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use config_keys::ConfigKeys;
pub use error::ArchError;
pub use hf::{
    read_safetensors, write_safetensors, HfMapping, HfModel, HfTensor, ModulePath, SafetensorsDtype,
};
pub use hybrid::{Hybrid, HybridCache, HybridConfig};
pub use layers::{
    float_dtype, to_dtype, AdapterPlan, Builder, FakeQuant, ForwardCtx, KvCache, Linear, LoraInit,
    LoraPlan, LowRank, RmsNorm, Rope, Segments, Targets,
};
pub use llama::{Llama, LlamaCache, LlamaConfig};
pub use mamba::{Mamba, MambaCache, MambaConfig};
pub use mamba2::{Mamba2, Mamba2Cache, Mamba2Config};
pub use ssm::RecurrentCache;

/// Architecture choice and hyper-parameters. One variant per architecture; match exhaustively.
///
/// Serde form (recipes): internally tagged, `{"arch": "llama", "hidden_size": 576, ...}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum ModelConfig {
    /// Llama / SmolLM / MobileLLM(-LS).
    Llama(LlamaConfig),
    /// Mamba-1 selective state-space model (`MambaForCausalLM`).
    Mamba(MambaConfig),
    /// Mamba-2 (SSD) state-space model (`Mamba2ForCausalLM`).
    Mamba2(Mamba2Config),
    /// Mamba-1 and attention layers, each with an MLP (`JambaForCausalLM`, one expert).
    Hybrid(HybridConfig),
}

impl ModelConfig {
    /// Exact parameter count (equals `Module::num_params` of [`ModelConfig::init`]'s model).
    pub fn num_params(&self) -> usize {
        match self {
            Self::Llama(c) => c.num_params(),
            Self::Mamba(c) => c.num_params(),
            Self::Mamba2(c) => c.num_params(),
            Self::Hybrid(c) => c.num_params(),
        }
    }

    /// Training FLOPs (forward + backward) per token at sequence length `seq_len`; the formulas
    /// are documented on [`LlamaConfig::flops_per_token`] and [`MambaConfig::flops_per_token`]
    /// (which does not depend on the length).
    pub fn flops_per_token(&self, seq_len: usize) -> u64 {
        match self {
            Self::Llama(c) => c.flops_per_token(seq_len),
            Self::Mamba(c) => c.flops_per_token(),
            Self::Mamba2(c) => c.flops_per_token(),
            Self::Hybrid(c) => c.flops_per_token(seq_len),
        }
    }

    /// Vocabulary size (last dimension of the logits).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Llama(c) => c.vocab_size,
            Self::Mamba(c) => c.vocab_size,
            Self::Mamba2(c) => c.vocab_size,
            Self::Hybrid(c) => c.vocab_size,
        }
    }

    /// Longest context the model is configured for (`max_position_embeddings`); `None` for a
    /// recurrent model, which has no positional limit.
    pub fn max_seq_len(&self) -> Option<usize> {
        match self {
            Self::Llama(c) => Some(c.max_position_embeddings),
            Self::Mamba(_) | Self::Mamba2(_) => None,
            Self::Hybrid(c) => Some(c.max_position_embeddings),
        }
    }

    /// Checks the hyper-parameters; the error names the key.
    pub fn validate(&self) -> Result<(), ArchError> {
        match self {
            Self::Llama(c) => c.validate(),
            Self::Mamba(c) => c.validate(),
            Self::Mamba2(c) => c.validate(),
            Self::Hybrid(c) => c.validate(),
        }
    }

    /// HF `config.json` content (`torch_dtype` e.g. `"float32"` or `"bfloat16"`, matching the
    /// safetensors dtype).
    pub fn to_hf_config(&self, bos_token_id: u32, eos_token_id: u32, torch_dtype: &str) -> Value {
        match self {
            Self::Llama(c) => c.to_hf_config(bos_token_id, eos_token_id, torch_dtype),
            Self::Mamba(c) => c.to_hf_config(bos_token_id, eos_token_id, torch_dtype),
            Self::Mamba2(c) => c.to_hf_config(bos_token_id, eos_token_id, torch_dtype),
            Self::Hybrid(c) => c.to_hf_config(bos_token_id, eos_token_id, torch_dtype),
        }
    }

    /// The per-architecture part of the HF tensor-name mapping (see [`hf`]).
    pub fn hf_mapping(&self) -> HfMapping {
        match self {
            Self::Llama(c) => c.hf_mapping(),
            Self::Mamba(c) => c.hf_mapping(),
            Self::Mamba2(c) => c.hf_mapping(),
            Self::Hybrid(c) => c.hf_mapping(),
        }
    }

    /// Parses an HF `config.json`, dispatching on `model_type`.
    pub fn from_hf_config(cfg: &Value) -> Result<Self, ArchError> {
        match cfg.get("model_type") {
            Some(Value::String(t)) if t == "llama" => {
                Ok(Self::Llama(LlamaConfig::from_hf_config(cfg)?))
            }
            Some(Value::String(t)) if t == "mamba" => {
                Ok(Self::Mamba(MambaConfig::from_hf_config(cfg)?))
            }
            Some(Value::String(t)) if t == "mamba2" => {
                Ok(Self::Mamba2(Mamba2Config::from_hf_config(cfg)?))
            }
            Some(Value::String(t)) if t == "jamba" => {
                Ok(Self::Hybrid(HybridConfig::from_hf_config(cfg)?))
            }
            Some(v) => Err(ArchError::UnsupportedConfig {
                key: "model_type".into(),
                value: v.to_string(),
                reason: "kiln supports \"llama\", \"mamba\", \"mamba2\" and \"jamba\"".into(),
            }),
            None => Err(ArchError::MissingConfigKey {
                key: "model_type".into(),
            }),
        }
    }

    /// Fresh weights (init rules on the architecture's config, e.g. [`LlamaConfig::init`]).
    /// Panics on an invalid config: call [`ModelConfig::validate`] where configs are read.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Model<B> {
        self.init_with(&Builder::new(device))
    }

    /// A fresh model whose linear layers carry what `builder`'s plan gives them (adapters,
    /// quantizers); the base weights are those of [`ModelConfig::init`] with the same seed.
    pub fn init_with<B: Backend>(&self, builder: &Builder<B>) -> Model<B> {
        match self {
            Self::Llama(c) => Model::Llama(c.init_with(builder)),
            Self::Mamba(c) => Model::Mamba(c.init_with(builder)),
            Self::Mamba2(c) => Model::Mamba2(c.init_with(builder)),
            Self::Hybrid(c) => Model::Hybrid(c.init_with(builder)),
        }
    }
}

/// A model of any architecture. The trainer talks only to this type.
#[derive(Module, Debug)]
pub enum Model<B: Backend> {
    /// `LlamaForCausalLM`.
    Llama(Llama<B>),
    /// `MambaForCausalLM`.
    Mamba(Mamba<B>),
    /// `Mamba2ForCausalLM`.
    Mamba2(Mamba2<B>),
    /// `JambaForCausalLM` with one expert.
    Hybrid(Hybrid<B>),
}

/// Generation state of a [`Model`] (KV cache for attention models, recurrent state for Mamba).
#[derive(Clone, Debug)]
pub enum ModelCache<B: Backend> {
    /// Per-effective-layer keys and values.
    Llama(LlamaCache<B>),
    /// Per-layer convolution window and SSM state: constant size, whatever the length.
    Mamba(MambaCache<B>),
    /// Per-layer convolution window and SSD state.
    Mamba2(Mamba2Cache<B>),
    /// KV cache for the attention layers, recurrent state for the Mamba layers.
    Hybrid(HybridCache<B>),
}

impl<B: Backend> ModelCache<B> {
    /// Number of positions already processed (the position of the next token).
    pub fn seq_len(&self) -> usize {
        match self {
            Self::Llama(c) => c.seq_len(),
            Self::Mamba(c) => c.seq_len(),
            Self::Mamba2(c) => c.seq_len(),
            Self::Hybrid(c) => c.seq_len(),
        }
    }
}

impl<B: Backend> Model<B> {
    /// Same as [`ModelConfig::init`].
    pub fn init(config: &ModelConfig, device: &B::Device) -> Self {
        config.init(device)
    }

    /// The config this model was built from.
    pub fn config(&self) -> ModelConfig {
        match self {
            Self::Llama(m) => ModelConfig::Llama(m.config.clone()),
            Self::Mamba(m) => ModelConfig::Mamba(m.config.clone()),
            Self::Mamba2(m) => ModelConfig::Mamba2(m.config.clone()),
            Self::Hybrid(m) => ModelConfig::Hybrid(m.config.clone()),
        }
    }

    /// `input_ids` `[batch, seq]` → logits `[batch, seq, vocab]` (f32), causal, positions `0..seq`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_with(input_ids, self.ctx())
    }

    /// [`Model::forward`] under `ctx`: the model's own context ([`Model::ctx`]) with what one
    /// batch adds, the documents its rows pack ([`ForwardCtx::with_segments`]): each document
    /// then gets the logits it would get alone.
    pub fn forward_with(&self, input_ids: Tensor<B, 2, Int>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        match self {
            Self::Llama(m) => m.forward_with(input_ids, ctx),
            Self::Mamba(m) => m.forward_with(input_ids, ctx),
            Self::Mamba2(m) => m.forward_with(input_ids, ctx),
            Self::Hybrid(m) => m.forward_with(input_ids, ctx),
        }
    }

    /// An empty generation cache for `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> ModelCache<B> {
        match self {
            Self::Llama(m) => ModelCache::Llama(m.new_cache(batch)),
            Self::Mamba(m) => ModelCache::Mamba(m.new_cache(batch)),
            Self::Mamba2(m) => ModelCache::Mamba2(m.new_cache(batch)),
            Self::Hybrid(m) => ModelCache::Hybrid(m.new_cache(batch)),
        }
    }

    /// Logits `[batch, seq, vocab]` for `input_ids` `[batch, seq]`, the tokens that follow what
    /// `cache` already holds (positions continue from [`ModelCache::seq_len`]); extends the cache.
    /// Equal to the matching slice of [`Model::forward`] on the whole sequence.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut ModelCache<B>,
    ) -> Tensor<B, 3> {
        match (self, cache) {
            (Self::Llama(m), ModelCache::Llama(c)) => m.forward_cached(input_ids, c),
            (Self::Mamba(m), ModelCache::Mamba(c)) => m.forward_cached(input_ids, c),
            (Self::Mamba2(m), ModelCache::Mamba2(c)) => m.forward_cached(input_ids, c),
            (Self::Hybrid(m), ModelCache::Hybrid(c)) => m.forward_cached(input_ids, c),
            _ => panic!("a generation cache of another architecture than the model's"),
        }
    }

    /// Sets how the model computes: parameters (the master weights, and so the residual stream)
    /// are cast to `param_dtype`, and the blocks' matmuls and activations run in `compute_dtype`.
    /// `(F32, F32)` is plain f32; `(F32, BF16)` is bf16 mixed precision (norm statistics, the
    /// residual stream, the logits and the loss stay f32); `(BF16, BF16)` is pure bf16.
    /// Parameter ids and `require_grad` are kept, so optimizer state stays attached.
    pub fn with_precision(self, param_dtype: FloatDType, compute_dtype: FloatDType) -> Self {
        let mut model = self.map(&mut CastParams(param_dtype));
        model.ctx_mut().compute = compute_dtype;
        model
    }

    /// Switches the linear layers' fake quantizers (quantization-aware training) on or off; off,
    /// the model computes with its float weights. On by default; layers without a quantizer are
    /// not affected.
    pub fn with_fake_quant(mut self, on: bool) -> Self {
        self.ctx_mut().fake_quant = on;
        self
    }

    /// How the model computes: precision and quantizers (see [`ForwardCtx`]).
    pub fn ctx(&self) -> &ForwardCtx {
        match self {
            Self::Llama(m) => &m.ctx,
            Self::Mamba(m) => &m.ctx,
            Self::Mamba2(m) => &m.ctx,
            Self::Hybrid(m) => &m.ctx,
        }
    }

    fn ctx_mut(&mut self) -> &mut ForwardCtx {
        match self {
            Self::Llama(m) => &mut m.ctx,
            Self::Mamba(m) => &mut m.ctx,
            Self::Mamba2(m) => &mut m.ctx,
            Self::Hybrid(m) => &mut m.ctx,
        }
    }

    /// The dtype the blocks compute in (see [`Model::with_precision`]).
    pub fn compute_dtype(&self) -> FloatDType {
        self.ctx().compute
    }

    /// Freezes everything but the LoRA adapters (parameter-efficient fine-tuning): the base
    /// parameters stop requiring gradients, so the backward pass computes none for them and the
    /// optimizer keeps no state for them.
    pub fn with_frozen_base(self) -> Self {
        struct Freeze(hf::ModulePath);
        impl<B: Backend> ModuleMapper<B> for Freeze {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                self.0.enter(name, container_type);
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.0.exit();
            }
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
                if self.0.is_adapter() {
                    p
                } else {
                    p.set_require_grad(false)
                }
            }
        }
        self.map(&mut Freeze(hf::ModulePath::default()))
    }

    /// Module path of every linear layer (`layers.0.self_attn.q_proj`) and whether it carries
    /// a LoRA adapter, in module order.
    pub fn linear_layers(&self) -> Vec<(String, bool)> {
        struct Linears {
            path: hf::ModulePath,
            out: Vec<(String, bool)>,
        }
        impl<B: Backend> ModuleVisitor<B> for Linears {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                self.path.enter(name, container_type);
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.exit();
            }
            fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<B, D>>) {
                if self.path.is_linear_weight() {
                    let weight = self.path.name();
                    let layer = weight.strip_suffix(".weight").unwrap_or(&weight);
                    self.out.push((layer.to_string(), false));
                } else if self.path.is_adapter() {
                    if let Some(last) = self.out.last_mut() {
                        last.1 = true;
                    }
                }
            }
        }
        let mut walk = Linears {
            path: hf::ModulePath::default(),
            out: Vec::new(),
        };
        self.visit(&mut walk);
        walk.out
    }
}

impl<B: Backend> HfModel<B> for Model<B> {
    fn hf_mapping(&self) -> HfMapping {
        self.config().hf_mapping()
    }
}

impl<B: burn::tensor::backend::AutodiffBackend> Model<B> {
    /// Forward + backward of `loss_fn(self.forward_with(input_ids, ctx))` with per-block
    /// activation checkpointing: the loss, detached, and the gradients keyed by parameter id (as
    /// `GradientsParams::from_grads` gives them).
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
    /// works on every backend and with the fused CPU kernels.
    pub fn backward_checkpointed(
        &self,
        input_ids: Tensor<B, 2, Int>,
        ctx: &ForwardCtx,
        loss_fn: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 1>,
    ) -> (Tensor<B::InnerBackend, 1>, burn::optim::GradientsParams) {
        match self {
            Self::Llama(m) => grads::backward_checkpointed(m, input_ids, ctx, loss_fn),
            Self::Mamba(m) => grads::backward_checkpointed(m, input_ids, ctx, loss_fn),
            Self::Mamba2(m) => grads::backward_checkpointed(m, input_ids, ctx, loss_fn),
            Self::Hybrid(m) => grads::backward_checkpointed(m, input_ids, ctx, loss_fn),
        }
    }
}

/// Casts every parameter to one dtype, keeping its id and whether it requires a gradient.
struct CastParams(FloatDType);

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if layers::float_dtype(&tensor) == self.0 {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let require_grad = tensor.is_require_grad();
        let mut cast = tensor.cast(self.0).detach();
        if require_grad {
            cast = cast.require_grad();
        }
        Param::from_mapped_value(id, cast, mapper)
    }
}
