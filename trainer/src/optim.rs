//! AdamW with PyTorch's semantics, and global-norm gradient clipping.
//!
//! Why not burn's `AdamW`: its defaults differ from PyTorch (eps 1e-5, weight decay 1e-4), it decays
//! every parameter (no parameter groups), its `GradientClipping::Norm` clips each tensor on its own,
//! and its state is keyed by `ParamId`. Here, as `torch.optim.AdamW` + `clip_grad_norm_`:
//!
//! ```text
//! g      ← g · min(1, max_norm / (‖g‖₂ + 1e-6))        ‖g‖₂ over all parameters together
//! p      ← p · (1 − lr · wd)                            wd = 0 for 1-D tensors (norms), optionally embeddings
//! m      ← β₁ m + (1 − β₁) g
//! v      ← β₂ v + (1 − β₂) g²
//! p      ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + eps)
//! ```
//! State (`exp_avg`, `exp_avg_sq`) is keyed by parameter name, so a checkpoint is a plain safetensors file.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{FloatDType, TensorData};
use kiln_arch::{float_dtype, to_dtype, HfTensor};

pub use kiln_arch::grads::accumulate_grads;

use crate::params::tensor_to_vec;
use crate::recipe::OptimizerSection;
use kiln_arch::ModulePath;

#[derive(Debug, Clone)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decay_embeddings: bool,
}

impl AdamWConfig {
    /// The optimizer settings of a recipe's `train.optimizer`, and its peak learning rate.
    pub fn from_section(section: &OptimizerSection) -> (Self, f64) {
        let OptimizerSection::Adamw {
            lr,
            betas,
            eps,
            weight_decay,
            decay_embeddings,
        } = section;
        let config = Self {
            beta1: betas[0],
            beta2: betas[1],
            eps: *eps,
            weight_decay: *weight_decay,
            decay_embeddings: *decay_embeddings,
        };
        (config, *lr)
    }
}

/// First and second moments of one parameter, flattened to 1-D.
struct Moments<B: Backend> {
    exp_avg: Tensor<B, 1>,
    exp_avg_sq: Tensor<B, 1>,
}

pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    /// Updates taken so far (t in the bias corrections).
    pub step: u64,
    state: HashMap<String, Moments<B>>,
}

/// Parameter names that are token embeddings (decayed only when `decay_embeddings`).
pub fn is_embedding(name: &str) -> bool {
    name.ends_with("embed_tokens.weight") || name.ends_with("embeddings.weight")
}

impl<B: Backend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            state: HashMap::new(),
        }
    }

    /// Decayed: tensors of rank ≥ 2 (not norms, biases or Mamba's `D`), except embeddings when
    /// `decay_embeddings` is off, and Mamba's `A_log` (decaying it would pull every state's decay
    /// rate `-exp(A_log)` towards -1; `mamba_ssm` exempts it too).
    fn decays(&self, name: &str, rank: usize) -> bool {
        rank >= 2
            && (self.config.decay_embeddings || !is_embedding(name))
            && !name.ends_with("A_log")
    }

    /// One update of every parameter that has a gradient. `grad_scale` (shape [1]) multiplies every
    /// gradient first: the clipping factor, kept on the device so no host sync is needed.
    pub fn step<AB, M>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
        grad_scale: Option<Tensor<B, 1>>,
    ) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.step += 1;
        let mut mapper = StepMapper {
            opt: self,
            grads: &mut grads,
            grad_scale,
            lr,
            path: ModulePath::default(),
        };
        module.map(&mut mapper)
    }

    /// The state as named tensors (`<param>.exp_avg`, `<param>.exp_avg_sq`) for a checkpoint.
    pub fn state_tensors(&self) -> Vec<HfTensor> {
        let mut names: Vec<&String> = self.state.keys().collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len() * 2);
        for name in names {
            let m = &self.state[name];
            for (suffix, t) in [("exp_avg", &m.exp_avg), ("exp_avg_sq", &m.exp_avg_sq)] {
                out.push(HfTensor {
                    name: format!("{name}.{suffix}"),
                    shape: t.dims().to_vec(),
                    data: tensor_to_vec(t.clone()),
                });
            }
        }
        out
    }

    /// Restores the state saved by [`AdamW::state_tensors`].
    pub fn load_state(
        &mut self,
        step: u64,
        tensors: &HashMap<String, HfTensor>,
        device: &B::Device,
    ) -> Result<(), String> {
        self.step = step;
        self.state.clear();
        let load = |name: &str| -> Result<Tensor<B, 1>, String> {
            let t = tensors
                .get(name)
                .ok_or_else(|| format!("optimizer state `{name}` is missing"))?;
            Ok(Tensor::from_data(
                TensorData::new(t.data.clone(), [t.data.len()]),
                device,
            ))
        };
        for key in tensors.keys() {
            if let Some(param) = key.strip_suffix(".exp_avg") {
                let exp_avg = load(key)?;
                let exp_avg_sq = load(&format!("{param}.exp_avg_sq"))?;
                self.state.insert(
                    param.to_string(),
                    Moments {
                        exp_avg,
                        exp_avg_sq,
                    },
                );
            }
        }
        Ok(())
    }
}

struct StepMapper<'a, B: Backend> {
    opt: &'a mut AdamW<B>,
    grads: &'a mut GradientsParams,
    grad_scale: Option<Tensor<B, 1>>,
    lr: f64,
    path: ModulePath,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for StepMapper<'_, AB::InnerBackend> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<AB::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let name = self.path.name();
        let cfg = &self.opt.config;
        let shape = tensor.shape();
        let n = shape.num_elements();
        let require_grad = tensor.is_require_grad();

        // [n]: everything below is elementwise, so work on flat views. The update is computed
        // in f32 and the moments are kept in f32 whatever the parameter's dtype (pure-bf16
        // training rounds only the stored weight).
        let param_dtype = float_dtype(&tensor);
        let mut g = to_dtype(grad.reshape([n]), FloatDType::F32);
        if let Some(scale) = &self.grad_scale {
            g = g * scale.clone();
        }
        let mut p = to_dtype(tensor.inner().reshape([n]), FloatDType::F32);
        if self.opt.decays(&name, D) && cfg.weight_decay > 0.0 {
            p = p.mul_scalar(1.0 - self.lr * cfg.weight_decay);
        }
        let (m, v) = match self.opt.state.remove(&name) {
            Some(s) => (
                s.exp_avg.mul_scalar(cfg.beta1) + g.clone().mul_scalar(1.0 - cfg.beta1),
                s.exp_avg_sq.mul_scalar(cfg.beta2) + (g.clone() * g).mul_scalar(1.0 - cfg.beta2),
            ),
            None => (
                g.clone().mul_scalar(1.0 - cfg.beta1),
                (g.clone() * g).mul_scalar(1.0 - cfg.beta2),
            ),
        };
        let t = self.opt.step as i32;
        let bias1 = 1.0 - cfg.beta1.powi(t);
        let bias2_sqrt = (1.0 - cfg.beta2.powi(t)).sqrt();
        let denom = v.clone().sqrt().div_scalar(bias2_sqrt).add_scalar(cfg.eps);
        let p = p - (m.clone() / denom).mul_scalar(self.lr / bias1);
        self.opt.state.insert(
            name,
            Moments {
                exp_avg: m,
                exp_avg_sq: v,
            },
        );

        let mut p = Tensor::<AB, D>::from_inner(to_dtype(p, param_dtype).reshape(shape));
        if require_grad {
            p = p.require_grad();
        }
        Param::from_mapped_value(id, p, mapper)
    }
}

/// Sum over all parameters of ‖grad‖², as a device tensor of shape [1] (no host sync).
pub fn grad_sq_norm<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    module: &M,
    grads: &GradientsParams,
) -> Option<Tensor<AB::InnerBackend, 1>> {
    struct SqNorm<'a, B: Backend> {
        grads: &'a GradientsParams,
        total: Option<Tensor<B, 1>>,
    }
    impl<AB: AutodiffBackend> ModuleVisitor<AB> for SqNorm<'_, AB::InnerBackend> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            if let Some(g) = self.grads.get::<AB::InnerBackend, D>(param.id) {
                let g = to_dtype(g, FloatDType::F32);
                let s = (g.clone() * g).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    let mut v = SqNorm { grads, total: None };
    module.visit(&mut v);
    v.total
}

/// PyTorch's `clip_grad_norm_` factor: `min(1, max_norm / (norm + 1e-6))`, on the device.
pub fn clip_factor<B: Backend>(norm: Tensor<B, 1>, max_norm: f64) -> Tensor<B, 1> {
    (norm.add_scalar(1e-6).recip() * max_norm).clamp_max(1.0)
}
