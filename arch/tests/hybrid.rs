//! The hybrid Mamba + attention model against Hugging Face `transformers`' `JambaForCausalLM`
//! (one expert, its pure-torch path), on the tiny checkpoint in `tests/fixtures/jamba-tiny/`
//! written by `scripts/make_jamba_fixtures.py`: config, import/export, logits, loss, gradient
//! norms, greedy decoding through the cache; plus cache-vs-full, parameter count, training.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use common::parity::*;
use common::*;
use kiln_arch::hybrid::LayerKind;
use kiln_arch::{
    read_safetensors, write_safetensors, HfModel, HfTensor, Hybrid, HybridConfig, SafetensorsDtype,
};

const VOCAB: usize = 96;

fn fixture() -> PathBuf {
    fixture_dir("jamba-tiny")
}

fn hf_config() -> HybridConfig {
    HybridConfig::from_hf_config(&read_json(fixture().join("config.json"))).unwrap()
}

fn load<Bk: Backend>() -> Hybrid<Bk> {
    hf_config()
        .init::<Bk>(&Default::default())
        .load_hf_tensors(&read_hf_tensors(&fixture()))
        .unwrap()
}

/// A tiny hybrid with a tied head and projection biases (the variants the fixture lacks).
fn tiny(tied: bool) -> HybridConfig {
    tiny_hybrid(tied)
}

#[test]
fn config_matches_hf() {
    let hf = read_json(fixture().join("config.json"));
    let cfg = hf_config();
    assert_eq!(
        cfg.layout(),
        [
            LayerKind::Mamba,
            LayerKind::Attention,
            LayerKind::Mamba,
            LayerKind::Attention
        ]
    );
    assert_eq!(cfg.layout_string(), "MAMA");
    assert_eq!(cfg.head_dim(), 8);
    assert!(!cfg.tie_word_embeddings);
    let ours = cfg.to_hf_config(0, 0, "float32");
    let skip = ["expert_layer_period", "expert_layer_offset", "torch_dtype"];
    for (key, value) in ours.as_object().unwrap() {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let theirs = hf
            .get(key)
            .unwrap_or_else(|| panic!("HF config has no {key}"));
        assert!(
            same_value(value, theirs),
            "{key}: kiln {value} vs HF {theirs}"
        );
    }
    assert_eq!(HybridConfig::from_hf_config(&ours).unwrap(), cfg);
    // More than one expert in a layer is refused; one expert anywhere is fine.
    let mut moe = ours.clone();
    moe["num_experts"] = 4.into();
    assert!(HybridConfig::from_hf_config(&moe).is_err());
    moe["model_type"] = "mamba".into();
    assert!(HybridConfig::from_hf_config(&moe).is_err());

    // Absent keys take `JambaConfig`'s defaults; `num_key_value_heads` absent is 8, `null` is
    // `num_attention_heads` (transformers' `__post_init__`).
    let minimal = serde_json::json!({"model_type": "jamba", "num_experts": 1});
    let c = HybridConfig::from_hf_config(&minimal).unwrap();
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.vocab_size),
        (4096, 32, 65536)
    );
    assert_eq!((c.num_attention_heads, c.num_key_value_heads), (32, 8));
    assert_eq!(
        (c.attn_layer_period, c.attn_layer_offset, c.mamba_dt_rank),
        (8, 4, 256)
    );
    assert_eq!((c.rms_norm_eps, c.max_position_embeddings), (1e-6, 262144));
    let mut null_kv = minimal.clone();
    null_kv["num_key_value_heads"] = serde_json::Value::Null;
    let c = HybridConfig::from_hf_config(&null_kv).unwrap();
    assert_eq!(c.num_key_value_heads, 32);
    // A value of the wrong type names its key.
    let mut bad = minimal;
    bad["mamba_d_state"] = "sixteen".into();
    let e = HybridConfig::from_hf_config(&bad).unwrap_err().to_string();
    assert!(e.contains("mamba_d_state"), "{e}");
}

#[test]
fn export_reproduces_checkpoint() {
    let model = load::<B>();
    assert_export_is_checkpoint(&model.to_hf_tensors(), &read_hf_tensors(&fixture()));
}

#[test]
fn num_params_equals_module_and_export() {
    for cfg in [hf_config(), tiny(true), tiny(false)] {
        let model: Hybrid<B> = cfg.init(&Default::default());
        let exported: usize = model.to_hf_tensors().iter().map(|t| t.data.len()).sum();
        assert_eq!(cfg.num_params(), model.num_params(), "{cfg:?}");
        assert_eq!(cfg.num_params(), exported, "{cfg:?}");
        let layout: usize = model
            .hf_layout()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(cfg.num_params(), layout);
    }
}

#[test]
fn tied_and_biased_variant_round_trips() {
    for tied in [true, false] {
        let cfg = tiny(tied);
        let model: Hybrid<B> = cfg.init(&Default::default());
        let tensors: HashMap<String, HfTensor> = model
            .to_hf_tensors()
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        assert_eq!(tensors.contains_key("lm_head.weight"), !tied);
        let fresh: Hybrid<B> = cfg.init(&Default::default());
        let loaded = fresh.load_hf_tensors(&tensors).unwrap();
        let ids = int_tensor::<B>((0..20).collect(), [2, 10]);
        let diff = max_abs_diff(
            &to_vec(model.forward(ids.clone())),
            &to_vec(loaded.forward(ids)),
        );
        assert_eq!(diff, 0.0);
        let back = HybridConfig::from_hf_config(&cfg.to_hf_config(0, 0, "float32")).unwrap();
        assert_eq!(back, cfg);
    }
}

#[test]
fn logits_and_loss_match_hf() {
    let r = read_reference(&fixture());
    let (inputs, targets) = batch::<B>(&r);
    let model = load::<B>();
    let logits = model.forward(inputs);
    assert_eq!(logits.dims(), [2, 16, VOCAB]);
    let diff = max_abs_diff(&to_vec(logits.clone()), &r.logits);
    let loss = to_vec(cross_entropy(logits, targets))[0];
    let expected = r.json["loss"].as_f64().unwrap() as f32;
    eprintln!(
        "max |logits − HF| = {diff:e}; loss {loss} vs HF {expected} ({:e})",
        (loss - expected).abs()
    );
    assert!(diff < 1e-4, "max |logits − HF| = {diff}");
    assert!(
        (loss - expected).abs() < 1e-5,
        "loss {loss} vs HF {expected}"
    );
}

#[test]
fn gradient_norms_match_hf() {
    let r = read_reference(&fixture());
    let hf_norms = r.json["grad_norms"].as_object().unwrap();
    let (inputs, targets) = batch::<AB>(&r);
    let model = load::<AB>();
    let loss = cross_entropy(model.forward(inputs), targets);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let hf_name = |path: String| {
        if path.starts_with("lm_head") {
            path
        } else {
            format!("model.{}", path.replace(".mamba.mixer.", ".mamba."))
        }
    };
    assert_grad_norms(&model, &grads, hf_norms, hf_name, "hybrid");
}

#[test]
fn greedy_generation_matches_hf() {
    let r = read_reference(&fixture());
    let model = load::<B>();
    let mut cache = model.new_cache(2);
    let fed = assert_greedy_matches_hf(&r, VOCAB, "hybrid", |ids| {
        model.forward_cached(ids, &mut cache)
    });
    assert_eq!(cache.seq_len(), fed);
}

/// Prompt in one call, then a chunk of 3, then single tokens: the same logits as one full
/// forward, for the fixture model and the tied/biased variant.
#[test]
fn cached_forward_equals_full_forward() {
    let ids: Vec<i64> = (0..24).map(|i| (i * 7 + 3) % 61).collect();
    let check = |model: &Hybrid<B>, vocab: usize| {
        let full = to_vec(model.forward(int_tensor(ids.clone(), [2, 12])));
        let mut cache = model.new_cache(2);
        let mut got = vec![Vec::new(); 2];
        let mut pos = 0;
        for len in [5, 3, 1, 1, 1, 1] {
            let chunk: Vec<i64> = (0..2)
                .flat_map(|b| ids[b * 12 + pos..b * 12 + pos + len].to_vec())
                .collect();
            let out = to_vec(model.forward_cached(int_tensor(chunk, [2, len]), &mut cache));
            for (b, row) in got.iter_mut().enumerate() {
                row.extend_from_slice(&out[b * len * vocab..(b + 1) * len * vocab]);
            }
            pos += len;
        }
        let diff = max_abs_diff(&got.concat(), &full);
        eprintln!("cached vs full: {diff:e}");
        assert!(diff < 1e-4, "cached vs full: {diff}");
        assert_eq!(cache.seq_len(), 12);
    };
    check(&load::<B>(), VOCAB);
    check(&tiny(true).init::<B>(&Default::default()), 61);
}

#[test]
fn tiny_hybrid_trains() {
    let device = Default::default();
    let mut model: Hybrid<AB> = tiny(false).init(&device);
    let mut optim = AdamConfig::new().init::<AB, Hybrid<AB>>();
    let rows: [&[i64]; 2] = [
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        &[40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51],
    ];
    let input: Tensor<AB, 2, Int> = Tensor::from_inner(ids(&rows)).slice([0..2, 0..11]);
    let target: Tensor<AB, 2, Int> = Tensor::from_inner(ids(&rows)).slice([0..2, 1..12]);
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = cross_entropy(model.forward(input.clone()), target.clone());
        losses.push(to_vec(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    eprintln!("loss {first} -> {last}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(last < 0.5 * first, "loss {first} -> {last}: {losses:?}");
}

/// Writes a freshly initialised kiln hybrid (tied head, projection biases, norms / biases / `D`
/// moved off their init values) as an HF directory with kiln's logits and greedy tokens, for
/// `python scripts/make_jamba_fixtures.py --check-export DIR` (DIR = `$KILN_WRITE_EXPORT`, else
/// a temporary directory).
#[test]
fn write_export_for_hf_check() {
    let dir = export_dir("jamba");
    let cfg = tiny(true);
    let fresh: Hybrid<B> = cfg.init(&Default::default());
    let tensors = perturbed(fresh.to_hf_tensors());
    let model = fresh.load_hf_tensors(&tensors).unwrap();
    let exported = model.to_hf_tensors();
    write_safetensors(
        dir.join("model.safetensors"),
        &exported,
        SafetensorsDtype::F32,
    )
    .unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg.to_hf_config(0, 0, "float32")).unwrap(),
    )
    .unwrap();
    let back = read_safetensors(dir.join("model.safetensors")).unwrap();
    let reloaded = HybridConfig::from_hf_config(&read_json(dir.join("config.json")))
        .unwrap()
        .init::<B>(&Default::default())
        .load_hf_tensors(&back)
        .unwrap();

    let (n, v) = (12, cfg.vocab_size);
    let ids = export_ids(n, v);
    let logits = to_vec(model.forward(int_tensor(ids.clone(), [2, n])));
    let again = to_vec(reloaded.forward(int_tensor(ids.clone(), [2, n])));
    assert_eq!(max_abs_diff(&logits, &again), 0.0);
    let mut cache = model.new_cache(2);
    let (prompt, generated) =
        greedy_tokens(&ids, n, v, (4, 6), |t| model.forward_cached(t, &mut cache));
    write_kiln_outputs(&dir, &ids, logits, v, &prompt, &generated);
    remove_export_dir(&dir);
}

/// Per-block activation checkpointing gives the same loss and the same gradient for every
/// parameter as the plain backward pass (tied and untied head, attention and Mamba layers).
#[test]
fn checkpointed_backward_equals_plain_backward() {
    for tie in [true, false] {
        let model: kiln_arch::Model<burn::backend::Autodiff<B>> =
            kiln_arch::ModelConfig::Hybrid(tiny(tie)).init(&Default::default());
        let (n, rel) = assert_checkpointed_equals_plain(&model, 61);
        println!("hybrid tied={tie}: {n} parameters, max relative diff {rel:e}");
    }
}
