//! Parity with Hugging Face `transformers` (llm.c's decisive test): a tiny `LlamaForCausalLM` saved by
//! `scripts/make_fixtures.py` is loaded as a model directory; its logits, its loss and five AdamW steps
//! with global-norm clipping (losses, gradient norms, final parameter norms) must match PyTorch's.

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use kiln_trainer::loss::cross_entropy;
use kiln_trainer::model_io::load_model_dir;
use kiln_trainer::optim::{clip_factor, grad_sq_norm, AdamW, AdamWConfig};
use kiln_trainer::params::named_tensors;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

struct Reference {
    input_ids: Vec<i64>, // [2, 17]
    logits: Vec<f32>,    // [2, 16, 96]
    json: Value,
}

fn reference(name: &str) -> Reference {
    let dir = fixture(name);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let input_ids = json["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()))
        .collect();
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let logits = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Reference {
        input_ids,
        logits,
        json,
    }
}

fn batch<B: Backend>(ids: &[i64], device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let all = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [2, 17]), device);
    (all.clone().slice([0..2, 0..16]), all.slice([0..2, 1..17]))
}

fn logits_and_loss_match(name: &str) {
    let device = Default::default();
    let r = reference(name);
    let loaded = load_model_dir::<Flex>(&fixture(name), &device).unwrap();
    let (inputs, targets) = batch::<Flex>(&r.input_ids, &device);
    let logits = loaded.model.forward(inputs);
    assert_eq!(logits.dims(), [2, 16, 96]);
    let ours: Vec<f32> = logits.clone().into_data().to_vec().unwrap();
    let max_diff = ours
        .iter()
        .zip(&r.logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 1e-4, "{name}: max |logits − HF| = {max_diff}");
    let loss: f32 = cross_entropy(logits, targets).into_scalar();
    let expected = r.json["loss"].as_f64().unwrap() as f32;
    assert!(
        (loss - expected).abs() < 1e-5,
        "{name}: loss {loss} vs HF {expected}"
    );
}

fn training_steps_match(name: &str) {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let r = reference(name);
    let mut model = load_model_dir::<B>(&fixture(name), &device).unwrap().model;
    // The fixture's optimizer: AdamW(lr 1e-2, betas (0.9, 0.95), eps 1e-8), weight decay 0.1 on
    // tensors with ndim ≥ 2 (embedding included), none on norms; clip_grad_norm_(1.0) before each step.
    let mut opt = AdamW::<Flex>::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        decay_embeddings: true,
    });
    let (inputs, targets) = batch::<B>(&r.input_ids, &device);
    for (i, step) in r.json["train"].as_array().unwrap().iter().enumerate() {
        let loss = cross_entropy(model.forward(inputs.clone()), targets.clone());
        let loss_value: f64 = loss.clone().into_scalar().elem();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = grad_sq_norm(&model, &grads).unwrap().sqrt();
        let norm_value: f64 = norm.clone().into_scalar().elem();
        let (hf_loss, hf_norm) = (
            step["loss"].as_f64().unwrap(),
            step["grad_norm"].as_f64().unwrap(),
        );
        assert!(
            (loss_value - hf_loss).abs() < 2e-4,
            "{name} step {i}: loss {loss_value} vs HF {hf_loss}"
        );
        assert!(
            (norm_value - hf_norm).abs() < 2e-4 * hf_norm.max(1.0),
            "{name} step {i}: grad norm {norm_value} vs HF {hf_norm}"
        );
        model = opt.step(1e-2, model, grads, Some(clip_factor(norm, 1.0)));
    }
    // After five updates: the loss and every parameter's norm (this checks the weight-decay groups).
    let loss: f64 = cross_entropy(model.forward(inputs), targets)
        .into_scalar()
        .elem();
    let hf_after = r.json["loss_after_train"].as_f64().unwrap();
    assert!(
        (loss - hf_after).abs() < 5e-4,
        "{name}: loss after training {loss} vs HF {hf_after}"
    );
    let norms = r.json["param_norms_after_train"].as_object().unwrap();
    let ours = named_tensors(&model);
    assert_eq!(ours.len(), norms.len(), "same parameter set as HF");
    for t in ours {
        let norm = t
            .data
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let hf_name = if t.name == "lm_head.weight" {
            t.name.clone()
        } else {
            format!("model.{}", t.name)
        };
        let hf = norms[&hf_name]
            .as_f64()
            .unwrap_or_else(|| panic!("{hf_name} not in the fixture"));
        assert!(
            (norm - hf).abs() < 1e-3 * hf.max(1.0),
            "{name}: ‖{hf_name}‖ = {norm} vs HF {hf}"
        );
    }
}

#[test]
fn untied_llama_logits_and_loss_match_transformers() {
    logits_and_loss_match("llama-tiny-untied");
}

#[test]
fn tied_llama_logits_and_loss_match_transformers() {
    logits_and_loss_match("llama-tiny-tied");
}

#[test]
fn untied_llama_adamw_steps_match_pytorch() {
    training_steps_match("llama-tiny-untied");
}

#[test]
fn tied_llama_adamw_steps_match_pytorch() {
    training_steps_match("llama-tiny-tied");
}
