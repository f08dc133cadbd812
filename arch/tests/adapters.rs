//! The one `Linear` of every architecture: a plan gives adapters to the projections it targets,
//! the base weights stay those of a plain init, a zero adapter changes nothing, and no
//! projection's forward (fused CPU kernels included) bypasses its adapter.

mod common;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};
use common::{
    ids, lock_backend_rng, max_abs_diff, param_paths, pseudo_random, tiny_config, tiny_hybrid,
    tiny_mamba, tiny_mamba2, to_vec, B,
};
use kiln_arch::{
    AdapterPlan, Builder, FakeQuant, ForwardCtx, LlamaConfig, LoraPlan, Mamba2Config, MambaConfig,
    Model, ModelConfig, Targets,
};

fn configs() -> Vec<(&'static str, ModelConfig)> {
    vec![
        (
            "llama",
            ModelConfig::Llama(LlamaConfig {
                tie_word_embeddings: false,
                ..tiny_config()
            }),
        ),
        (
            "mamba",
            ModelConfig::Mamba(MambaConfig {
                tie_word_embeddings: false,
                ..tiny_mamba()
            }),
        ),
        (
            "mamba2",
            ModelConfig::Mamba2(Mamba2Config {
                tie_word_embeddings: false,
                ..tiny_mamba2()
            }),
        ),
        ("hybrid", ModelConfig::Hybrid(tiny_hybrid(false))),
    ]
}

fn lora_everywhere() -> AdapterPlan {
    AdapterPlan {
        lora: Some(LoraPlan {
            rank: 2,
            alpha: 4.0,
            use_rslora: false,
            // "all-linear" leaves the head out, as PEFT does; name it to include it.
            targets: Targets::Names(
                [
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "gate_proj",
                    "up_proj",
                    "down_proj",
                    "in_proj",
                    "x_proj",
                    "dt_proj",
                    "out_proj",
                    "lm_head",
                ]
                .map(String::from)
                .to_vec(),
            ),
            seed: 5,
            init: Default::default(),
        }),
        fake_quant: None,
    }
}

fn build(config: &ModelConfig, plan: &AdapterPlan) -> Model<B> {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 11);
    config.init_with(&Builder::with_plan(&device, plan))
}

/// `[2, 9]` logits of a fixed batch, through the training forward (fused kernels on flex).
fn logits(model: &Model<B>) -> Vec<f32> {
    let rows: [&[i64]; 2] = [
        &[1, 5, 9, 2, 6, 5, 3, 5, 8],
        &[40, 2, 33, 7, 7, 19, 60, 0, 12],
    ];
    to_vec(model.forward(ids(&rows)))
}

/// Module paths of the linear layers (those with a `weight` of rank 2 that is not an
/// embedding), without the trailing `.weight`.
fn linear_paths(model: &Model<B>) -> Vec<String> {
    param_paths(model)
        .into_iter()
        .filter(|(p, _, rank)| {
            *rank == 2 && p.ends_with(".weight") && !p.contains("embed") && !p.contains("lora")
        })
        .map(|(p, _, _)| p.trim_end_matches(".weight").to_string())
        .collect()
}

/// Fills the `lora_b` of the layer at `target` (or of every layer, with `None`) with values.
struct SetLoraB {
    target: Option<String>,
    stack: Vec<String>,
    seed: u64,
}

impl ModuleMapper<B> for SetLoraB {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = self.stack.join(".");
        let wanted = path.ends_with("lora.lora_b")
            && self
                .target
                .as_ref()
                .is_none_or(|t| path == format!("{t}.lora.lora_b"));
        if !wanted {
            return param;
        }
        self.seed += 1;
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let values = pseudo_random(shape.num_elements(), self.seed);
        let tensor = Tensor::from_data(TensorData::new(values, shape), &tensor.device());
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[test]
fn every_projection_of_every_architecture_carries_its_adapter() {
    let _rng = lock_backend_rng();
    for (name, config) in configs() {
        let plain = build(&config, &AdapterPlan::default());
        let adapted = build(&config, &lora_everywhere());

        // The plan reached every linear layer, and only the adapters were added.
        let layers = linear_paths(&plain);
        assert!(layers.len() >= 5, "{name}: {layers:?}");
        let adapter_paths: Vec<String> = param_paths(&adapted)
            .into_iter()
            .filter(|(p, _, _)| p.ends_with("lora.lora_a"))
            .map(|(p, _, _)| p.trim_end_matches(".lora.lora_a").to_string())
            .collect();
        assert_eq!(adapter_paths, layers, "{name}");

        // Same base weights as a plain init (the adapters draw from their own generator).
        let base = |m: &Model<B>| {
            param_paths(m)
                .into_iter()
                .filter(|(p, _, _)| !p.contains("lora"))
                .count()
        };
        assert_eq!(base(&plain), base(&adapted), "{name}");

        // B = 0 (a fresh adapter): the logits are the plain model's, exactly.
        let reference = logits(&plain);
        assert_eq!(
            logits(&adapted),
            reference,
            "{name}: a zero adapter changed the logits"
        );

        // B ≠ 0 on one projection at a time: the logits move, so no forward path (fused or
        // not) skips that projection's adapter.
        for layer in &layers {
            let one = adapted.clone().map(&mut SetLoraB {
                target: Some(layer.clone()),
                stack: Vec::new(),
                seed: 0,
            });
            let moved = max_abs_diff(&logits(&one), &reference);
            assert!(
                moved > 1e-4,
                "{name}: the adapter of {layer} is bypassed ({moved})"
            );
        }
    }
}

/// Each projection's output changes by exactly `scale · (x A) B`.
#[test]
fn an_adapter_adds_exactly_its_low_rank_product() {
    let device = Default::default();
    let plan = lora_everywhere();
    let vb = Builder::<B>::with_plan(&device, &plan)
        .pp("layers")
        .pp(0)
        .pp("mlp");
    let weight = Param::from_tensor(Tensor::<B, 2>::from_data(
        TensorData::new(pseudo_random(6 * 4, 1), [6, 4]),
        &device,
    ));
    let layer = vb.linear("up_proj", weight, None);
    let lora = layer.lora.as_ref().expect("targeted");
    assert_eq!(lora.scale, 2.0, "alpha / r");
    let b = Tensor::<B, 2>::from_data(TensorData::new(pseudo_random(2 * 4, 2), [2, 4]), &device);
    let layer = kiln_arch::Linear {
        lora: Some(kiln_arch::LowRank {
            lora_b: Param::from_tensor(b.clone()),
            lora_a: lora.lora_a.clone(),
            scale: lora.scale,
        }),
        ..layer
    };
    let x = Tensor::<B, 2>::from_data(TensorData::new(pseudo_random(3 * 6, 3), [3, 6]), &device);
    let with = to_vec(layer.forward(x.clone(), &ForwardCtx::default()));
    let base = to_vec(x.clone().matmul(layer.weight.val()));
    let a = layer.lora.as_ref().unwrap().lora_a.val();
    let product = to_vec(x.matmul(a).matmul(b).mul_scalar(2.0));
    for i in 0..with.len() {
        assert!(
            (with[i] - (base[i] + product[i])).abs() <= 1e-6 * (1.0 + base[i].abs()),
            "element {i}: {} vs {} + {}",
            with[i],
            base[i],
            product[i]
        );
    }
    // A layer the plan does not target gets nothing.
    let plain = vb.linear(
        "something_else",
        Param::from_tensor(Tensor::<B, 2>::zeros([6, 4], &device)),
        None,
    );
    assert!(plain.lora.is_none());
}

/// The forward context switches every layer's fake quantizer: on (the default), 4-bit weights
/// move every architecture's logits; off, the model is the plain one, bit for bit. So quantizers,
/// like adapters, sit on every path (fused kernels included) and are decided in one place.
#[test]
fn the_forward_context_switches_fake_quantization_everywhere() {
    let _rng = lock_backend_rng();
    let plan = AdapterPlan {
        lora: None,
        fake_quant: Some((
            FakeQuant {
                bits: 4,
                group_size: 0,
            },
            Targets::AllLinear,
        )),
    };
    for (name, config) in configs() {
        let plain = logits(&build(&config, &AdapterPlan::default()));
        let quantized = build(&config, &plan);
        assert!(quantized.ctx().fake_quant, "{name}: on by default");
        let on = logits(&quantized);
        assert!(
            max_abs_diff(&on, &plain) > 1e-4,
            "{name}: 4-bit weights change the logits"
        );
        let off = logits(&quantized.with_fake_quant(false));
        assert_eq!(off, plain, "{name}: quantizers off is the float model");
    }
}

/// With the base frozen, a backward pass (plain or checkpointed) gives gradients to the adapters
/// and to nothing else, and every adapter factor gets one (B = 0 still passes a gradient to B).
#[test]
fn a_frozen_base_gets_no_gradients() {
    use burn::backend::Autodiff;
    use burn::optim::GradientsParams;
    type AB = Autodiff<B>;
    for (name, config) in configs() {
        let _rng = lock_backend_rng();
        let device = Default::default();
        let plan = lora_everywhere();
        let model: Model<AB> = config
            .init_with(&Builder::with_plan(&device, &plan))
            .with_frozen_base();
        assert!(model.linear_layers().iter().all(|(_, adapted)| *adapted));
        let input = Tensor::from_inner(ids(&[&[1, 5, 9, 2, 7], &[3, 3, 8, 1, 0]]));
        let loss_of = |logits: Tensor<AB, 3>| logits.square().mean();
        let plain =
            GradientsParams::from_grads(loss_of(model.forward(input.clone())).backward(), &model);
        let (_, checkpointed) = model.backward_checkpointed(input, model.ctx(), loss_of);
        for (grads, how) in [(&plain, "plain"), (&checkpointed, "checkpointed")] {
            for (path, id, rank) in param_paths(&model) {
                let has = match rank {
                    1 => grads.get::<B, 1>(id).is_some(),
                    2 => grads.get::<B, 2>(id).is_some(),
                    3 => grads.get::<B, 3>(id).is_some(),
                    _ => unreachable!(),
                };
                let adapter = path.contains(".lora.");
                assert_eq!(has, adapter, "{name} {how}: {path} gradient {has}");
            }
        }
    }
}
