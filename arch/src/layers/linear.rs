//! The one linear layer of every architecture (attention, MLP, Mamba `in/x/dt/out_proj`,
//! `lm_head`), and the path-aware builder that creates it.
//!
//! Every projection's forward pass runs through [`Linear::forward`], so whatever a layer carries
//! besides its weight acts everywhere, on every backend and next to the fused CPU kernels (which
//! never read a projection weight themselves):
//! - a low-rank adapter (LoRA, Hu et al. 2021): `y = x W + scale · (x A) B`, with `A` `[d_in, r]`
//!   and `B` `[r, d_out]` in burn layout, i.e. PEFT's `lora_A.weight` `[r, in]` and
//!   `lora_B.weight` `[out, r]` transposed;
//! - a fake quantizer of the weight (quantization-aware training): symmetric, per group of
//!   `group_size` input features of each output feature, with the straight-through estimator.
//!
//! [`Builder`] knows the module path of the layer it builds (`layers.3.self_attn.q_proj`), so a
//! plan ([`AdapterPlan`]) decides per path what a layer carries, once for all architectures.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{float_dtype, to_dtype, ForwardCtx};

/// A linear layer `[.., d_in] -> [.., d_out]` with an optional bias, adapter and fake quantizer.
/// Field names follow HF (`weight`, `bias`), so module paths are the HF tensor names.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[d_in, d_out]` (burn layout; the HF mapping transposes to PyTorch's `[d_out, d_in]`).
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Low-rank adapter added to the output.
    pub lora: Option<LowRank<B>>,
    /// Fake quantization of `weight` in the forward pass.
    #[module(skip)]
    pub fake_quant: Option<FakeQuant>,
}

/// LoRA's two factors and its scale: `Δy = scale · (x A) B`.
#[derive(Module, Debug)]
pub struct LowRank<B: Backend> {
    /// `A`, `[d_in, r]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// `B`, `[r, d_out]`; zero at init, so a fresh adapter leaves the model unchanged.
    pub lora_b: Param<Tensor<B, 2>>,
    /// `alpha / r` (PEFT's default; `alpha / sqrt(r)` with rsLoRA).
    pub scale: f64,
}

/// Symmetric fake quantization to `bits`-bit integers, one scale per `group_size` consecutive
/// input features of each output feature (`group_size` 0: one scale per output feature).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FakeQuant {
    pub bits: u32,
    pub group_size: usize,
}

impl<B: Backend> Linear<B> {
    /// A plain layer from its parameters.
    pub fn new(weight: Param<Tensor<B, 2>>, bias: Option<Param<Tensor<B, 1>>>) -> Self {
        Self {
            weight,
            bias,
            lora: None,
            fake_quant: None,
        }
    }

    /// `(d_in, d_out)`. Does not materialise a lazily initialised weight (which would draw it
    /// from the backend's RNG out of the model's order).
    pub fn dims(&self) -> (usize, usize) {
        let [d_in, d_out] = self.weight.lazy_shape().dims();
        (d_in, d_out)
    }

    /// `x` `[n, d_in]` -> `[n, d_out]`, in `x`'s dtype.
    ///
    /// Mixed precision lives here: when `x` is in the compute dtype (bf16) and the master weight in
    /// f32, the weight is cast for the matmul and its gradient is cast back to f32 by autodiff.
    pub fn forward(&self, x: Tensor<B, 2>, ctx: &ForwardCtx) -> Tensor<B, 2> {
        let dtype = float_dtype(&x);
        let mut weight = self.weight.val(); // [d_in, d_out]
        if let Some(quant) = self.fake_quant.filter(|_| ctx.fake_quant) {
            weight = quant.apply(weight);
        }
        let bias = self.bias.as_ref().map(|b| b.val());
        let y = if weight.dtype() == x.dtype() {
            burn::tensor::module::linear(x.clone(), weight, bias)
        } else {
            let y = x.clone().matmul(weight.cast(dtype)); // [n, d_out]
            match bias {
                Some(bias) => y + to_dtype(bias, dtype).unsqueeze::<2>(),
                None => y,
            }
        };
        match &self.lora {
            Some(lora) => y + lora.delta(x),
            None => y,
        }
    }

    /// [`Linear::forward`] on the rows of `x` `[b, s, d_in]` -> `[b, s, d_out]`, as one 2-D
    /// matmul: burn's 3-D linear is a batched matmul against the broadcast weight, whose weight
    /// gradient is a per-batch matmul followed by a sum, where the 2-D form is one product.
    pub fn forward_rows(&self, x: Tensor<B, 3>, ctx: &ForwardCtx) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let y = self.forward(x.reshape([b * s, d]), ctx); // [b·s, d_out]
        let d_out = y.dims()[1];
        y.reshape([b, s, d_out])
    }
}

impl<B: Backend> LowRank<B> {
    /// `scale · (x A) B` for `x` `[n, d_in]` -> `[n, d_out]`, in `x`'s dtype.
    pub fn delta(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let dtype = float_dtype(&x);
        let a = to_dtype(self.lora_a.val(), dtype); // [d_in, r]
        let b = to_dtype(self.lora_b.val(), dtype); // [r, d_out]
        x.matmul(a).matmul(b).mul_scalar(self.scale) // [n, d_out]
    }
}

impl FakeQuant {
    /// `w` `[d_in, d_out]` rounded to the integer grid and back, with the straight-through
    /// estimator: the forward value is quantized, the gradient passes to `w` unchanged.
    pub fn apply<B: Backend>(&self, w: Tensor<B, 2>) -> Tensor<B, 2> {
        let [d_in, d_out] = w.dims();
        let group = if self.group_size == 0 || self.group_size > d_in {
            d_in
        } else {
            self.group_size
        };
        assert!(
            d_in.is_multiple_of(group),
            "fake quantization: group size {group} does not divide d_in = {d_in}"
        );
        let q_max = ((1u64 << (self.bits - 1)) - 1) as f64;
        let dtype = float_dtype(&w);
        let w32 = to_dtype(w.clone(), FloatDType::F32);
        // Groups run along d_in for each output feature: [d_out, groups, group].
        let grouped = w32
            .clone()
            .transpose()
            .reshape([d_out, d_in / group, group]);
        let scale = grouped
            .clone()
            .abs()
            .max_dim(2) // [d_out, groups, 1]
            .div_scalar(q_max)
            .clamp_min(f32::MIN_POSITIVE as f64);
        let q = (grouped / scale.clone()).round().clamp(-q_max - 1.0, q_max) * scale; // [d_out, groups, group]
        let q = to_dtype(q.reshape([d_out, d_in]).transpose(), dtype); // [d_in, d_out]
                                                                       // STE: value q, gradient of w.
        w.clone() + (q - w).detach()
    }
}

/// What the layers of a model carry besides their weights, decided by module path.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdapterPlan {
    pub lora: Option<LoraPlan>,
    pub fake_quant: Option<(FakeQuant, Targets)>,
}

/// A LoRA adapter on every targeted linear layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPlan {
    pub rank: usize,
    pub alpha: f64,
    /// rsLoRA: scale `alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
    pub targets: Targets,
    /// Seed of the `A` init. `A` is drawn from its own generator (seeded by this and the layer's
    /// path), not from the backend's: the base weights of a model built with adapters are the
    /// same as without.
    pub seed: u64,
    /// How `A` is drawn (`B` starts at 0).
    pub init: LoraInit,
}

/// PEFT's `init_lora_weights` for `A`: `true` (kaiming-uniform) or `"gaussian"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoraInit {
    /// `U(±1/sqrt(d_in))` (kaiming-uniform with a = sqrt(5), PEFT's default).
    #[default]
    Kaiming,
    /// `normal(0, 1/r)`.
    Gaussian,
}

/// Which linear layers a plan applies to, by name as PEFT's `target_modules` match: a name matches
/// a layer whose module path is that name or ends with `.name` (`q_proj`, `self_attn.q_proj`,
/// `layers.1.mlp.up_proj`); or all of them (PEFT's `"all-linear"`, which leaves out the output
/// head; name `lm_head` to include it).
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    AllLinear,
    Names(Vec<String>),
}

impl Targets {
    pub fn matches(&self, path: &str) -> bool {
        let name = path.rsplit('.').next().unwrap_or(path);
        match self {
            Targets::AllLinear => name != "lm_head",
            Targets::Names(names) => names.iter().any(|n| {
                path == n
                    || (path.ends_with(n.as_str()) && path[..path.len() - n.len()].ends_with('.'))
            }),
        }
    }
}

/// Creates parameters for the module at `path`, knowing where it is (in the spirit of candle's
/// `VarBuilder`): `builder.pp("layers").pp(3).pp("self_attn").linear("q_proj", w, None)`.
#[derive(Clone, Debug)]
pub struct Builder<'a, B: Backend> {
    pub device: &'a B::Device,
    plan: &'a AdapterPlan,
    path: String,
}

static NO_PLAN: AdapterPlan = AdapterPlan {
    lora: None,
    fake_quant: None,
};

impl<'a, B: Backend> Builder<'a, B> {
    /// A builder at the model's root that creates plain layers.
    pub fn new(device: &'a B::Device) -> Self {
        Self::with_plan(device, &NO_PLAN)
    }

    /// A builder at the model's root that follows `plan`.
    pub fn with_plan(device: &'a B::Device, plan: &'a AdapterPlan) -> Self {
        Self {
            device,
            plan,
            path: String::new(),
        }
    }

    /// The builder one module level down (`name` a field name or an index).
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let path = if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        };
        Self {
            device: self.device,
            plan: self.plan,
            path,
        }
    }

    /// This builder's module path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The linear layer `name` from its freshly created parameters, with what the plan gives it.
    pub fn linear(
        &self,
        name: &str,
        weight: Param<Tensor<B, 2>>,
        bias: Option<Param<Tensor<B, 1>>>,
    ) -> Linear<B> {
        let path = self.pp(name).path;
        let mut layer = Linear::new(weight, bias);
        let (d_in, d_out) = layer.dims();
        if let Some(plan) = self.plan.lora.as_ref().filter(|p| p.targets.matches(&path)) {
            layer.lora = Some(plan.init(&path, d_in, d_out, self.device));
        }
        if let Some((quant, targets)) = &self.plan.fake_quant {
            if targets.matches(&path) {
                layer.fake_quant = Some(*quant);
            }
        }
        layer
    }

    /// A bias-free layer `[d_in] -> [d_out]` with weights from `normal(0, std)`.
    pub fn linear_normal(&self, name: &str, d_in: usize, d_out: usize, std: f64) -> Linear<B> {
        let weight = burn::module::Initializer::Normal { mean: 0.0, std }.init_with(
            [d_in, d_out],
            Some(d_in),
            Some(d_out),
            self.device,
        );
        self.linear(name, weight, None)
    }
}

impl LoraPlan {
    /// The adapters' output scale: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// PEFT's init: `A ~ U(±1/sqrt(d_in))` (kaiming-uniform with a = sqrt(5)) or
    /// `normal(0, 1/r)` (gaussian), `B = 0`.
    fn init<B: Backend>(
        &self,
        path: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> LowRank<B> {
        // FNV-1a of the path: a stable per-layer stream.
        let path_hash = path.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ path_hash);
        let a: Vec<f32> = match self.init {
            LoraInit::Kaiming => {
                let bound = 1.0 / (d_in as f32).sqrt();
                (0..d_in * self.rank)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect()
            }
            LoraInit::Gaussian => {
                // Box–Muller: two uniforms per normal draw.
                let std = 1.0 / self.rank as f64;
                (0..d_in * self.rank)
                    .map(|_| {
                        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
                        let u2: f64 = rng.random();
                        (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                    })
                    .collect()
            }
        };
        let scale = self.scale();
        LowRank {
            lora_a: Param::from_tensor(Tensor::from_data(
                TensorData::new(a, [d_in, self.rank]),
                device,
            )),
            lora_b: Param::from_tensor(Tensor::zeros([self.rank, d_out], device)),
            scale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type Ad = Autodiff<Flex>;

    /// Values land on the symmetric grid of each group (at most 2^(bits-1) - 1 steps of
    /// `max|w| / q_max`), the group's largest magnitude is kept, and the gradient passes
    /// straight through.
    #[test]
    fn fake_quantization_rounds_per_group_with_a_straight_through_gradient() {
        let device = Default::default();
        // [d_in = 8, d_out = 2]; groups of 4 input features per output feature.
        let values: Vec<f32> = (0..16)
            .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
            .collect();
        let w = Tensor::<Ad, 2>::from_data(TensorData::new(values.clone(), [8, 2]), &device)
            .require_grad();
        let quant = FakeQuant {
            bits: 4,
            group_size: 4,
        };
        let q = quant.apply(w.clone());
        let out: Vec<f32> = q.clone().into_data().to_vec().unwrap();
        for col in 0..2 {
            for group in 0..2 {
                let idx: Vec<usize> = (0..4).map(|k| (group * 4 + k) * 2 + col).collect();
                let max = idx.iter().map(|&i| values[i].abs()).fold(0.0, f32::max);
                let step = max / 7.0;
                for &i in &idx {
                    let levels = out[i] / step;
                    assert!(
                        (levels - levels.round()).abs() < 1e-4,
                        "{} not on the grid",
                        out[i]
                    );
                    assert!(levels.abs() <= 7.0 + 1e-4);
                    assert!((out[i] - values[i]).abs() <= step / 2.0 + 1e-6);
                }
                let kept = idx.iter().any(|&i| (out[i].abs() - max).abs() < 1e-6);
                assert!(kept, "the group's largest magnitude is representable");
            }
        }
        let grads = q.sum().backward();
        let g: Vec<f32> = w.grad(&grads).unwrap().into_data().to_vec().unwrap();
        assert!(g.iter().all(|&x| x == 1.0), "straight-through: {g:?}");
    }

    #[test]
    fn targets_match_like_peft_target_modules() {
        let all = Targets::AllLinear;
        assert!(all.matches("layers.0.self_attn.q_proj"));
        assert!(!all.matches("lm_head"), "all-linear leaves the head out");
        let some = Targets::Names(vec!["q_proj".into(), "layers.1.mlp.up_proj".into()]);
        assert!(some.matches("layers.3.self_attn.q_proj"));
        assert!(some.matches("layers.1.mlp.up_proj"));
        assert!(!some.matches("layers.0.mlp.up_proj"));
        assert!(!some.matches("layers.0.self_attn.k_proj"));
        let dotted = Targets::Names(vec!["self_attn.q_proj".into(), "proj".into()]);
        assert!(dotted.matches("layers.3.self_attn.q_proj"));
        assert!(
            !dotted.matches("layers.3.self_attn.k_proj"),
            "whole components only"
        );
    }
}
