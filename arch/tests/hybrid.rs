//! The hybrid Mamba + attention model against Hugging Face `transformers`' `JambaForCausalLM`
//! (one expert, its pure-torch path), on the tiny checkpoint in `tests/fixtures/jamba-tiny/`
//! written by `scripts/make_jamba_fixtures.py`: config, import/export, logits, loss, gradient
//! norms, greedy decoding through the cache; plus cache-vs-full, parameter count, training.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use kiln_arch::hybrid::{hybrid_hf_layout, LayerKind};
use kiln_arch::{
    read_safetensors, write_safetensors, HfTensor, Hybrid, HybridConfig, SafetensorsDtype,
};
use serde_json::Value;

type AB = Autodiff<B>;

const VOCAB: usize = 96;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/jamba-tiny")
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Reference {
    json: Value,
    input_ids: Vec<i64>,
    logits: Vec<f32>,
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
        gen_logits: f32s("gen_logits"),
        json,
    }
}

fn hf_tensors() -> HashMap<String, HfTensor> {
    read_safetensors(fixture().join("model.safetensors")).unwrap()
}

fn hf_config() -> HybridConfig {
    HybridConfig::from_hf_config(&read_json(fixture().join("config.json"))).unwrap()
}

fn load<Bk: Backend>() -> Hybrid<Bk> {
    hf_config()
        .init::<Bk>(&Default::default())
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
            let best = row
                .iter()
                .enumerate()
                .fold(0, |best, (i, &x)| if x > row[best] { i } else { best });
            best as i64
        })
        .collect()
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A tiny hybrid with a tied head and projection biases (the variants the fixture lacks).
fn tiny(tied: bool) -> HybridConfig {
    HybridConfig {
        vocab_size: 61,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        attn_layer_period: 3,
        attn_layer_offset: 1,
        mamba_d_state: 4,
        mamba_d_conv: 3,
        mamba_expand: 2,
        mamba_dt_rank: 2,
        mamba_conv_bias: true,
        mamba_proj_bias: true,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: tied,
        initializer_range: 0.2,
        max_position_embeddings: 64,
    }
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
}

#[test]
fn export_reproduces_checkpoint() {
    let tensors = hf_tensors();
    let model = load::<B>();
    let exported = model.to_hf_tensors();
    let names: Vec<&str> = exported.iter().map(|t| t.name.as_str()).collect();
    let layout = hybrid_hf_layout(&model.config);
    assert_eq!(
        names,
        layout.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
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
}

#[test]
fn num_params_equals_module_and_export() {
    for cfg in [hf_config(), tiny(true), tiny(false)] {
        let model: Hybrid<B> = cfg.init(&Default::default());
        let exported: usize = model.to_hf_tensors().iter().map(|t| t.data.len()).sum();
        assert_eq!(cfg.num_params(), model.num_params(), "{cfg:?}");
        assert_eq!(cfg.num_params(), exported, "{cfg:?}");
        let layout: usize = hybrid_hf_layout(&cfg)
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
    let r = reference();
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
    let r = reference();
    let hf_norms = r.json["grad_norms"].as_object().unwrap();
    let (inputs, targets) = batch::<AB>(&r);
    let model = load::<AB>();
    let loss = cross_entropy(model.forward(inputs), targets);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut seen = BTreeSet::new();
    let mut worst = (0.0f64, String::new());
    for (path, id, rank) in param_paths(&model) {
        let name = if path.starts_with("lm_head") {
            path
        } else {
            format!("model.{}", path.replace(".mamba.mixer.", ".mamba."))
        };
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
            "{name}: |grad| {norm} vs HF {hf} ({rel:e} relative)"
        );
        if rel >= worst.0 {
            worst = (rel, name.clone());
        }
        seen.insert(name);
    }
    let expected: BTreeSet<String> = hf_norms.keys().cloned().collect();
    assert_eq!(seen, expected);
    eprintln!(
        "worst gradient-norm relative diff {:e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn greedy_generation_matches_hf() {
    let r = reference();
    let gen = &r.json["generation"];
    let prompt = int_rows(&gen["prompt"]);
    let expected = int_rows(&gen["generated"]);
    let (plen, steps) = (prompt.len() / 2, expected.len() / 2);
    let model = load::<B>();
    let mut cache = model.new_cache(2);
    let logits = model.forward_cached(int_tensor(prompt, [2, plen]), &mut cache);
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
    eprintln!("generated {generated:?}, max |step logits − HF| = {worst:e}");
    assert_eq!(generated.concat(), expected);
    assert!(worst < 1e-4, "max |step logits − HF| = {worst}");
    assert_eq!(cache.seq_len(), plen + steps);
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
    let dir = std::env::var_os("KILN_WRITE_EXPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("kiln-jamba-export-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = tiny(true);
    let fresh: Hybrid<B> = cfg.init(&Default::default());
    let tensors: HashMap<String, HfTensor> = fresh
        .to_hf_tensors()
        .into_iter()
        .enumerate()
        .map(|(i, mut t)| {
            if t.name.ends_with("bias") || t.name.ends_with("norm.weight") || t.name.ends_with(".D")
            {
                let noise = pseudo_random(t.data.len(), 100 + i as u64);
                t.data
                    .iter_mut()
                    .zip(noise)
                    .for_each(|(x, n)| *x += 0.2 * n);
            }
            (t.name.clone(), t)
        })
        .collect();
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
    let ids: Vec<i64> = pseudo_random(2 * n, 7)
        .iter()
        .map(|x| ((x + 1.0) / 2.0 * v as f32) as i64 % v as i64)
        .collect();
    let logits = to_vec(model.forward(int_tensor(ids.clone(), [2, n])));
    let again = to_vec(reloaded.forward(int_tensor(ids.clone(), [2, n])));
    assert_eq!(max_abs_diff(&logits, &again), 0.0);
    let (plen, steps) = (4, 6);
    let prompt: Vec<i64> = (0..2)
        .flat_map(|b| ids[b * n..b * n + plen].to_vec())
        .collect();
    let mut cache = model.new_cache(2);
    let first = model
        .forward_cached(int_tensor(prompt.clone(), [2, plen]), &mut cache)
        .narrow(1, plen - 1, 1);
    let mut next = argmax_rows(&to_vec(first), v);
    let mut generated = vec![Vec::new(); 2];
    for _ in 0..steps {
        for (row, &t) in generated.iter_mut().zip(&next) {
            row.push(t);
        }
        let step = model.forward_cached(int_tensor(next, [2, 1]), &mut cache);
        next = argmax_rows(&to_vec(step), v);
    }
    let as_f32 = |name: &str, shape: Vec<usize>, xs: &[i64]| HfTensor {
        name: name.to_string(),
        shape,
        data: xs.iter().map(|&x| x as f32).collect(),
    };
    write_safetensors(
        dir.join("kiln_outputs.safetensors"),
        &[
            as_f32("input_ids", vec![2, n], &ids),
            HfTensor {
                name: "logits".to_string(),
                shape: vec![2, n, v],
                data: logits,
            },
            as_f32("prompt", vec![2, plen], &prompt),
            as_f32("generated", vec![2, steps], &generated.concat()),
        ],
        SafetensorsDtype::F32,
    )
    .unwrap();
    if std::env::var_os("KILN_WRITE_EXPORT").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
