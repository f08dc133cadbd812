//! Parity with Hugging Face `transformers`' `MambaForCausalLM` (its pure-torch path), on the tiny
//! tied checkpoint in `tests/fixtures/mamba-tiny/` written by `scripts/make_mamba_fixtures.py`
//! (see its docstring for the model and every reference number): config, import and export,
//! logits with every scan form, the loss, each parameter's gradient norm, and greedy decoding
//! through the recurrent cache.
//!
//! The reverse direction (a kiln export loads in transformers with kiln's logits) needs Python:
//! `write_export_for_hf_check` writes such an export (to `$KILN_WRITE_EXPORT` when set), and
//! `python scripts/make_mamba_fixtures.py --check-export DIR` compares.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use common::parity::*;
use common::*;
use kiln_arch::mamba::ScanMode;
use kiln_arch::{
    read_safetensors, write_safetensors, HfModel, Mamba, MambaConfig, SafetensorsDtype,
};

/// The scan forms checked: the reference, the default chunk, and a chunk that does not divide 16
/// (the padded last chunk).
const SCANS: [ScanMode; 3] = [
    ScanMode::Sequential,
    ScanMode::Chunked { chunk: 4 },
    ScanMode::Chunked { chunk: 5 },
];

const VOCAB: usize = 96;

fn fixture() -> PathBuf {
    fixture_dir("mamba-tiny")
}

/// The fixture's model, as kiln loads an HF directory: config.json, then the tensors.
fn load<Bk: Backend>() -> Mamba<Bk> {
    let cfg = MambaConfig::from_hf_config(&read_json(fixture().join("config.json"))).unwrap();
    cfg.init::<Bk>(&Default::default())
        .load_hf_tensors(&read_hf_tensors(&fixture()))
        .unwrap()
}

#[test]
fn config_matches_hf() {
    let hf = read_json(fixture().join("config.json"));
    let cfg = MambaConfig::from_hf_config(&hf).unwrap();
    assert_eq!(
        cfg,
        MambaConfig {
            vocab_size: 96,
            hidden_size: 32,
            state_size: 8,
            num_hidden_layers: 2,
            expand: 2,
            conv_kernel: 4,
            time_step_rank: 4,
            tie_word_embeddings: true,
            initializer_range: 0.4,
            ..MambaConfig::mamba_130m()
        }
    );
    let ours = cfg.to_hf_config(0, 0, "float32");
    for key in [
        "model_type",
        "hidden_size",
        "state_size",
        "expand",
        "conv_kernel",
        "time_step_rank",
        "num_hidden_layers",
        "vocab_size",
        "tie_word_embeddings",
        "layer_norm_epsilon",
        "use_bias",
        "use_conv_bias",
    ] {
        assert!(hf.get(key).is_some(), "HF config has no {key}");
        assert!(
            same_value(&ours[key], &hf[key]),
            "{key}: kiln {} vs HF {}",
            ours[key],
            hf[key]
        );
    }
    // Every key both write agrees; HF's extra keys are ones kiln has no use for.
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
        BTreeSet::from([
            "pad_token_id",
            "transformers_version",
            "use_associative_scan"
        ])
    );
}

/// kiln's export of the loaded checkpoint is the checkpoint: same names (in HF layout order),
/// shapes and bits.
#[test]
fn export_reproduces_checkpoint() {
    let model = load::<B>();
    assert_export_is_checkpoint(&model.to_hf_tensors(), &read_hf_tensors(&fixture()));
}

#[test]
fn logits_match_hf() {
    let r = read_reference(&fixture());
    let (inputs, _) = batch::<B>(&r);
    let model = load::<B>();
    for scan in SCANS {
        let logits = model.clone().with_scan(scan).forward(inputs.clone());
        assert_eq!(logits.dims(), [2, 16, VOCAB]);
        let diff = max_abs_diff(&to_vec(logits), &r.logits);
        eprintln!("{scan:?}: max |logits − HF| = {diff:e}");
        assert!(diff < 1e-4, "{scan:?}: max |logits − HF| = {diff}");
    }
}

#[test]
fn loss_matches_hf() {
    let r = read_reference(&fixture());
    let (inputs, targets) = batch::<B>(&r);
    let expected = r.json["loss"].as_f64().unwrap() as f32;
    let model = load::<B>();
    for scan in [ScanMode::Sequential, ScanMode::Chunked { chunk: 4 }] {
        let logits = model.clone().with_scan(scan).forward(inputs.clone());
        let loss = to_vec(cross_entropy(logits, targets.clone()))[0];
        eprintln!(
            "{scan:?}: loss {loss} vs HF {expected}: {:e}",
            (loss - expected).abs()
        );
        assert!(
            (loss - expected).abs() < 1e-5,
            "{scan:?}: loss {loss} vs HF {expected}"
        );
    }
}

/// The L2 norm of every parameter's gradient of the loss, against PyTorch's. A parameter's module
/// path is its HF name minus `backbone.`; the tied embedding's gradient includes the head's.
#[test]
fn gradient_norms_match_hf() {
    let r = read_reference(&fixture());
    let hf_norms = r.json["grad_norms"].as_object().unwrap();
    let (inputs, targets) = batch::<AB>(&r);
    for scan in [ScanMode::Sequential, ScanMode::Chunked { chunk: 4 }] {
        let model = load::<AB>().with_scan(scan);
        let loss = cross_entropy(model.forward(inputs.clone()), targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let hf_name = |path: String| {
            if path.starts_with("lm_head") {
                path
            } else {
                format!("backbone.{path}")
            }
        };
        assert_grad_norms(&model, &grads, hf_norms, hf_name, &format!("{scan:?}"));
    }
}

/// Greedy decoding through [`Mamba::forward_cached`] (prompt in one call, then one token per
/// call) picks HF's tokens, from the same logits.
#[test]
fn greedy_generation_matches_hf() {
    let r = read_reference(&fixture());
    let model = load::<B>();
    for scan in [ScanMode::Sequential, ScanMode::Chunked { chunk: 4 }] {
        let model = model.clone().with_scan(scan);
        let mut cache = model.new_cache(2);
        let fed = assert_greedy_matches_hf(&r, VOCAB, &format!("{scan:?}"), |ids| {
            model.forward_cached(ids, &mut cache)
        });
        assert_eq!(cache.seq_len(), fed);
    }
}

/// Writes a freshly initialised kiln Mamba as an HF directory, with kiln's logits and greedy
/// tokens, for `python scripts/make_mamba_fixtures.py --check-export DIR` (DIR =
/// `$KILN_WRITE_EXPORT`, else a temporary directory). Unlike the fixture, the head is untied and
/// `in_proj`/`out_proj` have biases; biases, norms and `D` are moved off their init values.
/// Checks here that kiln reads the directory back to the same model.
#[test]
fn write_export_for_hf_check() {
    let dir = export_dir("mamba");
    let cfg = MambaConfig {
        vocab_size: 80,
        hidden_size: 24,
        state_size: 6,
        num_hidden_layers: 2,
        expand: 2,
        conv_kernel: 3,
        time_step_rank: 3,
        tie_word_embeddings: false,
        use_bias: true,
        initializer_range: 0.4,
        ..MambaConfig::mamba_130m()
    };
    let fresh: Mamba<B> = cfg.init(&Default::default());
    let tensors = perturbed(fresh.to_hf_tensors());
    let model = fresh.load_hf_tensors(&tensors).unwrap();

    let (n, v) = (12, cfg.vocab_size);
    let ids = export_ids(n, v);
    let logits = to_vec(model.forward(int_tensor(ids.clone(), [2, n])));
    let mut cache = model.new_cache(2);
    let (prompt, generated) =
        greedy_tokens(&ids, n, v, (4, 6), |t| model.forward_cached(t, &mut cache));
    write_kiln_outputs(&dir, &ids, logits.clone(), v, &prompt, &generated);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg.to_hf_config(0, 0, "float32")).unwrap(),
    )
    .unwrap();
    write_safetensors(
        dir.join("model.safetensors"),
        &model.to_hf_tensors(),
        SafetensorsDtype::F32,
    )
    .unwrap();

    // kiln reads its own export back to the same model.
    let read_cfg = MambaConfig::from_hf_config(&read_json(dir.join("config.json"))).unwrap();
    assert_eq!(read_cfg, cfg);
    let reread = read_cfg
        .init::<B>(&Default::default())
        .load_hf_tensors(&read_safetensors(dir.join("model.safetensors")).unwrap())
        .unwrap();
    assert_eq!(to_vec(reread.forward(int_tensor(ids, [2, n]))), logits);
    eprintln!("kiln Mamba export written to {}", dir.display());
    remove_export_dir(&dir);
}
