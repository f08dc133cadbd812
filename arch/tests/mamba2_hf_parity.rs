//! Parity with Hugging Face `transformers`' `Mamba2ForCausalLM` (its pure-torch path) on the tiny
//! tied checkpoint in `tests/fixtures/mamba2-tiny/` (written by `scripts/make_mamba2_fixtures.py`,
//! see its docstring): config, import/export, logits (2 chunks, and a padded last chunk) with both
//! SSD forms, loss, per-parameter gradient norms, greedy decoding through the cache.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use kiln_arch::mamba2::{mamba2_hf_layout, SsdMode};
use kiln_arch::{read_safetensors, HfTensor, Mamba2, Mamba2Config};
use serde_json::Value;

type AB = Autodiff<B>;

const VOCAB: usize = 96;

/// The reference, the fixture's chunk (8: two full chunks of 16), and chunks that do not divide
/// the length (padded last chunk).
const MODES: [SsdMode; 4] = [
    SsdMode::Sequential,
    SsdMode::Chunked { chunk: 8 },
    SsdMode::Chunked { chunk: 5 },
    SsdMode::Chunked { chunk: 3 },
];

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mamba2-tiny")
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Reference {
    json: Value,
    input_ids: Vec<i64>,
    /// `[2, 16, 96]`.
    logits: Vec<f32>,
    /// `[2, 13, 96]`, logits of `input_ids[:, :13]`.
    logits13: Vec<f32>,
    /// `[2, 8, 96]`.
    gen_logits: Vec<f32>,
}

fn int_rows(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect()
}

fn reference() -> Reference {
    let json = read_json(fixture().join("reference.json"));
    let bytes = std::fs::read(fixture().join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> Vec<f32> {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    Reference {
        input_ids: int_rows(&json["input_ids"]),
        logits: f32s("logits"),
        logits13: f32s("logits13"),
        gen_logits: f32s("gen_logits"),
        json,
    }
}

fn hf_tensors() -> HashMap<String, HfTensor> {
    read_safetensors(fixture().join("model.safetensors")).unwrap()
}

fn load<Bk: Backend>() -> Mamba2<Bk> {
    let cfg = Mamba2Config::from_hf_config(&read_json(fixture().join("config.json"))).unwrap();
    cfg.init::<Bk>(&Default::default())
        .load_hf_tensors(&hf_tensors())
        .unwrap()
}

fn int_tensor<Bk: Backend>(data: Vec<i64>, shape: [usize; 2]) -> Tensor<Bk, 2, Int> {
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

fn batch<Bk: Backend>(r: &Reference) -> (Tensor<Bk, 2, Int>, Tensor<Bk, 2, Int>) {
    let all = int_tensor::<Bk>(r.input_ids.clone(), [2, 17]);
    (all.clone().narrow(1, 0, 16), all.narrow(1, 1, 16))
}

fn argmax_rows(values: &[f32], n: usize) -> Vec<i64> {
    values
        .chunks_exact(n)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(0, |best, (i, &x)| if x > row[best] { i } else { best }) as i64
        })
        .collect()
}

#[test]
fn config_matches_hf() {
    let hf = read_json(fixture().join("config.json"));
    let cfg = Mamba2Config::from_hf_config(&hf).unwrap();
    assert_eq!(
        cfg,
        Mamba2Config {
            state_size: 8,
            n_groups: 1,
            chunk_size: 8,
            tie_word_embeddings: true,
            initializer_range: 0.4,
            ..Mamba2Config::new(96, 32, 2, 4, 16)
        }
    );
    let ours = cfg.to_hf_config(0, 0, "float32");
    let (ours, hf) = (ours.as_object().unwrap(), hf.as_object().unwrap());
    for (key, value) in ours {
        if let Some(theirs) = hf.get(key) {
            let same = match (value.as_f64(), theirs.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => value == theirs,
            };
            assert!(same, "{key}: kiln {value} vs HF {theirs}");
        }
    }
    let hf_only: BTreeSet<&str> = hf
        .keys()
        .filter(|k| !ours.contains_key(*k))
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        hf_only,
        BTreeSet::from(["pad_token_id", "transformers_version"])
    );
    // kiln's own config.json reads back to the same config.
    assert_eq!(
        Mamba2Config::from_hf_config(&cfg.to_hf_config(0, 0, "float32")).unwrap(),
        cfg
    );
}

#[test]
fn export_reproduces_checkpoint() {
    let tensors = hf_tensors();
    let model = load::<B>();
    let exported = model.to_hf_tensors();
    let names: Vec<&str> = exported.iter().map(|t| t.name.as_str()).collect();
    let layout = mamba2_hf_layout(&model.config);
    assert_eq!(
        names,
        layout.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    // The same names as HF's `named_parameters()`.
    let r = reference();
    let grad_names: Vec<&str> = r.json["grad_norms"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut sorted_names = names.clone();
    sorted_names.sort();
    let mut sorted_grads = grad_names;
    sorted_grads.sort();
    assert_eq!(sorted_names, sorted_grads);
    assert_eq!(exported.len(), tensors.len());
    for t in &exported {
        let hf = &tensors[&t.name];
        assert_eq!(t.shape, hf.shape, "{}", t.name);
        assert!(
            t.data
                .iter()
                .zip(&hf.data)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} differs",
            t.name
        );
    }
    assert_eq!(
        model.config.num_params(),
        exported.iter().map(|t| t.data.len()).sum::<usize>()
    );
}

#[test]
fn logits_match_hf() {
    let r = reference();
    let (inputs, _) = batch::<B>(&r);
    let model = load::<B>();
    for mode in MODES {
        let m = model.clone().with_scan(mode);
        let logits = m.forward(inputs.clone());
        assert_eq!(logits.dims(), [2, 16, VOCAB]);
        let diff = max_abs_diff(&to_vec(logits), &r.logits);
        let short = m.forward(inputs.clone().narrow(1, 0, 13));
        let diff13 = max_abs_diff(&to_vec(short), &r.logits13);
        eprintln!("{mode:?}: max |logits − HF| = {diff:e} (len 16), {diff13:e} (len 13)");
        assert!(diff < 1e-4, "{mode:?}: {diff}");
        assert!(diff13 < 1e-4, "{mode:?} len 13: {diff13}");
    }
}

#[test]
fn loss_matches_hf() {
    let r = reference();
    let (inputs, targets) = batch::<B>(&r);
    let expected = r.json["loss"].as_f64().unwrap() as f32;
    let model = load::<B>();
    for mode in [SsdMode::Sequential, SsdMode::Chunked { chunk: 8 }] {
        let logits = model.clone().with_scan(mode).forward(inputs.clone());
        let loss = to_vec(cross_entropy(logits, targets.clone()))[0];
        let diff = (loss - expected).abs();
        eprintln!("{mode:?}: loss {loss} vs HF {expected}: {diff:e}");
        assert!(diff < 1e-5, "{mode:?}: loss {loss} vs HF {expected}");
    }
}

#[test]
fn gradient_norms_match_hf() {
    let r = reference();
    let hf_norms = r.json["grad_norms"].as_object().unwrap();
    let (inputs, targets) = batch::<AB>(&r);
    for mode in [SsdMode::Sequential, SsdMode::Chunked { chunk: 8 }] {
        let model = load::<AB>().with_scan(mode);
        let loss = cross_entropy(model.forward(inputs.clone()), targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut seen = BTreeSet::new();
        let mut worst = (0.0f64, String::new());
        for (path, id, rank) in param_paths(&model) {
            let name = format!("backbone.{path}");
            let grad = match rank {
                1 => grads.get::<B, 1>(id).map(to_vec),
                2 => grads.get::<B, 2>(id).map(to_vec),
                3 => grads.get::<B, 3>(id).map(to_vec),
                _ => unreachable!("rank {rank}"),
            }
            .unwrap_or_else(|| panic!("{name}: no gradient"));
            let norm = grad
                .iter()
                .map(|&g| g as f64 * g as f64)
                .sum::<f64>()
                .sqrt();
            let hf = hf_norms
                .get(&name)
                .unwrap_or_else(|| panic!("{name}: not in the HF reference"))
                .as_f64()
                .unwrap();
            let rel = (norm - hf).abs() / hf;
            assert!(
                rel < 1e-3,
                "{mode:?} {name}: |grad| {norm} vs HF {hf} ({rel:e})"
            );
            if rel >= worst.0 {
                worst = (rel, name.clone());
            }
            seen.insert(name);
        }
        let expected: BTreeSet<String> = hf_norms.keys().cloned().collect();
        assert_eq!(seen, expected);
        eprintln!(
            "{mode:?}: worst gradient-norm relative diff {:e} ({})",
            worst.0, worst.1
        );
    }
}

#[test]
fn greedy_generation_matches_hf() {
    let r = reference();
    let gen = &r.json["generation"];
    let prompt = int_rows(&gen["prompt"]);
    let expected = int_rows(&gen["generated"]);
    let (plen, steps) = (prompt.len() / 2, expected.len() / 2);
    let model = load::<B>();
    for mode in [SsdMode::Sequential, SsdMode::Chunked { chunk: 8 }] {
        let model = model.clone().with_scan(mode);
        let mut cache = model.new_cache(2);
        let logits = model.forward_cached(int_tensor(prompt.clone(), [2, plen]), &mut cache);
        let mut last = to_vec(logits.narrow(1, plen - 1, 1));
        let mut generated = vec![Vec::new(); 2];
        let mut worst = 0.0f32;
        for step in 0..steps {
            let hf_step: Vec<f32> = (0..2)
                .flat_map(|b| {
                    let at = (b * steps + step) * VOCAB;
                    r.gen_logits[at..at + VOCAB].to_vec()
                })
                .collect();
            worst = worst.max(max_abs_diff(&last, &hf_step));
            let next = argmax_rows(&last, VOCAB);
            for (row, &t) in generated.iter_mut().zip(&next) {
                row.push(t);
            }
            last = to_vec(model.forward_cached(int_tensor(next, [2, 1]), &mut cache));
        }
        eprintln!("{mode:?}: generated {generated:?}, max |step logits − HF| = {worst:e}");
        assert_eq!(generated.concat(), expected, "{mode:?}");
        assert!(worst < 1e-4, "{mode:?}: {worst}");
        assert_eq!(cache.seq_len(), plen + steps);
    }
}
