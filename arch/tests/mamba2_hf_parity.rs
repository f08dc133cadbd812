//! Parity with Hugging Face `transformers`' `Mamba2ForCausalLM` (its pure-torch path) on the tiny
//! tied checkpoint in `tests/fixtures/mamba2-tiny/` (written by `scripts/make_mamba2_fixtures.py`,
//! see its docstring): config, import/export, logits (2 chunks, and a padded last chunk) with both
//! SSD forms, loss, per-parameter gradient norms, greedy decoding through the cache.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use common::parity::*;
use common::*;
use kiln_arch::mamba2::SsdMode;
use kiln_arch::{HfModel, Mamba2, Mamba2Config};

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
    fixture_dir("mamba2-tiny")
}

fn load<Bk: Backend>() -> Mamba2<Bk> {
    let cfg = Mamba2Config::from_hf_config(&read_json(fixture().join("config.json"))).unwrap();
    cfg.init::<Bk>(&Default::default())
        .load_hf_tensors(&read_hf_tensors(&fixture()))
        .unwrap()
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
            assert!(
                same_value(value, theirs),
                "{key}: kiln {value} vs HF {theirs}"
            );
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
    let model = load::<B>();
    let exported = model.to_hf_tensors();
    assert_export_is_checkpoint(&exported, &read_hf_tensors(&fixture()));
    // The same names as HF's `named_parameters()`.
    let r = read_reference(&fixture());
    let mut names: Vec<&str> = exported.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    let mut grad_names: Vec<&str> = r.json["grad_norms"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    grad_names.sort();
    assert_eq!(names, grad_names);
    assert_eq!(
        model.config.num_params(),
        exported.iter().map(|t| t.data.len()).sum::<usize>()
    );
}

#[test]
fn logits_match_hf() {
    let r = read_reference(&fixture());
    let (inputs, _) = batch::<B>(&r);
    let model = load::<B>();
    for mode in MODES {
        let m = model.clone().with_scan(mode);
        let logits = m.forward(inputs.clone());
        assert_eq!(logits.dims(), [2, 16, VOCAB]);
        let diff = max_abs_diff(&to_vec(logits), &r.logits);
        let short = m.forward(inputs.clone().narrow(1, 0, 13));
        let diff13 = max_abs_diff(&to_vec(short), &reference_f32(&fixture(), "logits13"));
        eprintln!("{mode:?}: max |logits − HF| = {diff:e} (len 16), {diff13:e} (len 13)");
        assert!(diff < 1e-4, "{mode:?}: {diff}");
        assert!(diff13 < 1e-4, "{mode:?} len 13: {diff13}");
    }
}

#[test]
fn loss_matches_hf() {
    let r = read_reference(&fixture());
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
    let r = read_reference(&fixture());
    let hf_norms = r.json["grad_norms"].as_object().unwrap();
    let (inputs, targets) = batch::<AB>(&r);
    for mode in [SsdMode::Sequential, SsdMode::Chunked { chunk: 8 }] {
        let model = load::<AB>().with_scan(mode);
        let loss = cross_entropy(model.forward(inputs.clone()), targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let hf_name = |path: String| format!("backbone.{path}");
        assert_grad_norms(&model, &grads, hf_norms, hf_name, &format!("{mode:?}"));
    }
}

#[test]
fn greedy_generation_matches_hf() {
    let r = read_reference(&fixture());
    let model = load::<B>();
    for mode in [SsdMode::Sequential, SsdMode::Chunked { chunk: 8 }] {
        let model = model.clone().with_scan(mode);
        let mut cache = model.new_cache(2);
        let fed = assert_greedy_matches_hf(&r, VOCAB, &format!("{mode:?}"), |ids| {
            model.forward_cached(ids, &mut cache)
        });
        assert_eq!(cache.seq_len(), fed);
    }
}
