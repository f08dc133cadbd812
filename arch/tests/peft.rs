//! PEFT interop of the LoRA adapters: adapters written by `peft` (fixtures from
//! `scripts/make_peft_fixtures.py` on the tiny transformers models the HF parity tests use) load
//! into kiln models of every architecture and give PEFT's logits; kiln writes them back under the
//! same names, shapes and values; and a PEFT `target_modules` list (short names or the full
//! module names PEFT saves for `all-linear`) selects the same layers in kiln.

mod common;

use std::collections::{BTreeMap, HashMap};

use burn::tensor::FloatDType;
use common::parity::{fixture_dir, read_json, reference_f32};
use common::*;
use kiln_arch::{
    read_safetensors, AdapterPlan, ArchError, Builder, HfModel, HfTensor, LoraPlan, Model,
    ModelConfig, Targets,
};
use serde_json::Value;

/// PEFT's `target_modules` in kiln terms: a full module name (`model.layers.0.mlp.up_proj`, as
/// PEFT saves a resolved `all-linear`) becomes its module path; a short name stays.
fn targets(config: &ModelConfig, adapter_config: &Value) -> Targets {
    let mapping = config.hf_mapping();
    let names = adapter_config["target_modules"]
        .as_array()
        .expect("a list of module names")
        .iter()
        .map(|n| {
            let n = n.as_str().unwrap();
            mapping.kiln_path(n).unwrap_or_else(|| n.to_string())
        })
        .collect();
    Targets::Names(names)
}

/// The base fixture `base` with the PEFT adapter `peft-<base>` loaded.
fn load(base: &str) -> (Model<B>, HashMap<String, HfTensor>) {
    let base_dir = fixture_dir(base);
    let adapter_dir = fixture_dir(&format!("peft-{base}"));
    let config = ModelConfig::from_hf_config(&read_json(base_dir.join("config.json"))).unwrap();
    let adapter_config = read_json(adapter_dir.join("adapter_config.json"));
    assert_eq!(adapter_config["peft_type"], "LORA");
    assert_eq!(
        adapter_config["base_model_name_or_path"],
        format!("tests/fixtures/{base}")
    );
    let plan = AdapterPlan {
        lora: Some(LoraPlan {
            rank: adapter_config["r"].as_u64().unwrap() as usize,
            alpha: adapter_config["lora_alpha"].as_f64().unwrap(),
            use_rslora: adapter_config["use_rslora"].as_bool().unwrap(),
            targets: targets(&config, &adapter_config),
            seed: 0,
            init: Default::default(),
        }),
        fake_quant: None,
    };
    let device = Default::default();
    let model: Model<B> = config.init_with(&Builder::with_plan(&device, &plan));
    let model = model
        .load_hf_tensors(&read_safetensors(base_dir.join("model.safetensors")).unwrap())
        .unwrap();
    let adapter = read_safetensors(adapter_dir.join("adapter_model.safetensors")).unwrap();
    (model.load_peft_tensors(&adapter).unwrap(), adapter)
}

/// PEFT's logits, and kiln's export of the adapter equal to PEFT's file.
fn check(base: &str) {
    let _rng = lock_backend_rng();
    let (model, adapter) = load(base);
    let dir = fixture_dir(&format!("peft-{base}"));
    let ids_bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&ids_bytes).unwrap();
    let ids: Vec<i64> = st
        .tensor("input_ids")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let rows: Vec<&[i64]> = ids.chunks(16).collect();
    let expected = reference_f32(&dir, "logits");
    let scale = expected.iter().fold(1f32, |m, v| m.max(v.abs()));
    // f32 (the fused CPU kernels): the summation order differs from PyTorch's, so the bound is
    // relative to the largest logit; f64 (the generic code) must land within PEFT's own f32
    // rounding.
    let f32_diff = max_abs_diff(&to_vec(model.forward(common::ids(&rows))), &expected);
    assert!(
        f32_diff < 2e-5 * scale,
        "{base}: f32 logits differ from PEFT's by {f32_diff} (largest {scale})"
    );
    let f64_model = load(base)
        .0
        .with_precision(FloatDType::F64, FloatDType::F64);
    let f64_diff = max_abs_diff(&to_vec(f64_model.forward(common::ids(&rows))), &expected);
    assert!(
        f64_diff < 1e-4,
        "{base}: f64 logits differ from PEFT's by {f64_diff}"
    );

    let exported: BTreeMap<String, HfTensor> = model
        .to_peft_tensors()
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let written: BTreeMap<String, HfTensor> = adapter.into_iter().collect();
    assert_eq!(
        exported.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>(),
        "{base}: PEFT names"
    );
    for (name, t) in &written {
        assert_eq!(&exported[name], t, "{base}: {name}");
    }
}

#[test]
fn llama_loads_and_writes_peft_adapters() {
    check("llama-tiny-tied");
}

#[test]
fn mamba_loads_and_writes_peft_adapters() {
    check("mamba-tiny");
}

#[test]
fn mamba2_loads_and_writes_peft_adapters_with_rslora() {
    check("mamba2-tiny");
}

#[test]
fn hybrid_loads_and_writes_peft_adapters() {
    check("jamba-tiny");
}

/// An adapter for layers the model does not adapt, a missing factor and a wrong rank are errors
/// naming the tensor; nothing is half-loaded.
#[test]
fn mismatched_adapters_are_named() {
    let _rng = lock_backend_rng();
    let (model, adapter) = load("mamba-tiny");
    let mut extra = adapter.clone();
    let name = "base_model.model.backbone.layers.0.mixer.out_proj.lora_A.weight".to_string();
    extra.insert(
        name.clone(),
        HfTensor {
            name: name.clone(),
            shape: vec![4, 64],
            data: vec![0.0; 256],
        },
    );
    let (model, err) = match model.load_peft_tensors(&extra) {
        Err(e) => {
            let (m, _) = load("mamba-tiny");
            (m, e)
        }
        Ok(_) => panic!("an adapter on out_proj loaded into a model without one"),
    };
    assert!(
        matches!(&err, ArchError::UnexpectedTensors { names } if names.contains(&name)),
        "{err}"
    );
    let mut missing = adapter.clone();
    let gone = "base_model.model.backbone.layers.1.mixer.x_proj.lora_B.weight";
    missing.remove(gone).unwrap();
    let err = model.load_peft_tensors(&missing).err().unwrap();
    assert!(err.to_string().contains(gone), "{err}");
}
