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

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use kiln_arch::mamba::{mamba_hf_layout, ScanMode};
use kiln_arch::{
    read_safetensors, write_safetensors, HfTensor, Mamba, MambaConfig, SafetensorsDtype,
};
use serde_json::Value;

type AB = Autodiff<B>;

/// The scan forms checked: the reference, the default chunk, and a chunk that does not divide 16
/// (the padded last chunk).
const SCANS: [ScanMode; 3] = [
    ScanMode::Sequential,
    ScanMode::Chunked { chunk: 4 },
    ScanMode::Chunked { chunk: 5 },
];

const VOCAB: usize = 96;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mamba-tiny")
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Reference {
    json: Value,
    /// `[2, 17]`.
    input_ids: Vec<i64>,
    /// `[2, 16, 96]`, HF's logits of `input_ids[:, :16]`.
    logits: Vec<f32>,
    /// `[2, 8, 96]`, the logits each greedy token was chosen from.
    gen_logits: Vec<f32>,
}

fn int_rows(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect()
}

/// `reference.json` and the f32 tensors of `reference.safetensors` (its int64 `input_ids` are
/// read from the JSON; `read_safetensors` only reads float tensors).
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

/// The fixture's model, as kiln loads an HF directory: config.json, then the tensors.
fn load<Bk: Backend>() -> Mamba<Bk> {
    let cfg = MambaConfig::from_hf_config(&read_json(fixture().join("config.json"))).unwrap();
    cfg.init::<Bk>(&Default::default())
        .load_hf_tensors(&hf_tensors())
        .unwrap()
}

fn int_tensor<Bk: Backend>(data: Vec<i64>, shape: [usize; 2]) -> Tensor<Bk, 2, Int> {
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

/// `(input_ids[:, :16], input_ids[:, 1:17])`.
fn batch<Bk: Backend>(r: &Reference) -> (Tensor<Bk, 2, Int>, Tensor<Bk, 2, Int>) {
    let all = int_tensor::<Bk>(r.input_ids.clone(), [2, 17]);
    (all.clone().narrow(1, 0, 16), all.narrow(1, 1, 16))
}

/// Index of the largest value in each row of `[rows, n]` values.
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

/// Two JSON config values agree (numbers compared as f64: `2` and `2.0` are one value).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
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
    let tensors = hf_tensors();
    let model = load::<B>();
    let exported = model.to_hf_tensors();
    let names: Vec<&str> = exported.iter().map(|t| t.name.as_str()).collect();
    let layout = mamba_hf_layout(&model.config);
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
fn logits_match_hf() {
    let r = reference();
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
    let r = reference();
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
    let r = reference();
    let hf_norms = r.json["grad_norms"].as_object().unwrap();
    let (inputs, targets) = batch::<AB>(&r);
    for scan in [ScanMode::Sequential, ScanMode::Chunked { chunk: 4 }] {
        let model = load::<AB>().with_scan(scan);
        let loss = cross_entropy(model.forward(inputs.clone()), targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut seen = BTreeSet::new();
        let mut worst = (0.0f64, String::new());
        for (path, id, rank) in param_paths(&model) {
            let name = if path.starts_with("lm_head") {
                path
            } else {
                format!("backbone.{path}")
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
                "{scan:?} {name}: |grad| {norm} vs HF {hf} ({rel:e} relative)"
            );
            if rel >= worst.0 {
                worst = (rel, name.clone());
            }
            seen.insert(name);
        }
        let expected: BTreeSet<String> = hf_norms.keys().cloned().collect();
        assert_eq!(seen, expected);
        eprintln!(
            "{scan:?}: worst gradient-norm relative diff {:e} ({})",
            worst.0, worst.1
        );
    }
}

/// Greedy decoding through [`Mamba::forward_cached`] (prompt in one call, then one token per
/// call) picks HF's tokens, from the same logits.
#[test]
fn greedy_generation_matches_hf() {
    let r = reference();
    let gen = &r.json["generation"];
    let prompt = int_rows(&gen["prompt"]);
    let expected = int_rows(&gen["generated"]); // [2, 8]
    let (plen, steps) = (prompt.len() / 2, expected.len() / 2);
    let model = load::<B>();
    for scan in [ScanMode::Sequential, ScanMode::Chunked { chunk: 4 }] {
        let model = model.clone().with_scan(scan);
        let mut cache = model.new_cache(2);
        let logits = model.forward_cached(int_tensor(prompt.clone(), [2, plen]), &mut cache);
        let mut last = to_vec(logits.narrow(1, plen - 1, 1)); // [2, 1, V]
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
        eprintln!("{scan:?}: generated {generated:?}, max |step logits − HF| = {worst:e}");
        assert_eq!(generated.concat(), expected, "{scan:?}");
        assert!(worst < 1e-4, "{scan:?}: max |step logits − HF| = {worst}");
        assert_eq!(cache.seq_len(), plen + steps);
    }
}

/// Writes a freshly initialised kiln Mamba as an HF directory, with kiln's logits and greedy
/// tokens, for `python scripts/make_mamba_fixtures.py --check-export DIR` (DIR =
/// `$KILN_WRITE_EXPORT`, else a temporary directory). Unlike the fixture, the head is untied and
/// `in_proj`/`out_proj` have biases; biases, norms and `D` are moved off their init values.
/// Checks here that kiln reads the directory back to the same model.
#[test]
fn write_export_for_hf_check() {
    let dir = std::env::var_os("KILN_WRITE_EXPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("kiln-mamba-export-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir).unwrap();
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

    let (n, v) = (12, cfg.vocab_size);
    let ids: Vec<i64> = pseudo_random(2 * n, 7)
        .iter()
        .map(|x| ((x + 1.0) / 2.0 * v as f32) as i64 % v as i64)
        .collect();
    let logits = to_vec(model.forward(int_tensor(ids.clone(), [2, n])));
    let (plen, steps) = (4, 6);
    let prompt: Vec<i64> = (0..2)
        .flat_map(|b| ids[b * n..b * n + plen].to_vec())
        .collect();
    let mut cache = model.new_cache(2);
    let mut next = argmax_rows(
        &to_vec(
            model
                .forward_cached(int_tensor(prompt.clone(), [2, plen]), &mut cache)
                .narrow(1, plen - 1, 1),
        ),
        v,
    );
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
                data: logits.clone(),
            },
            as_f32("prompt", vec![2, plen], &prompt),
            as_f32("generated", vec![2, steps], &generated.concat()),
        ],
        SafetensorsDtype::F32,
    )
    .unwrap();
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
    if std::env::var_os("KILN_WRITE_EXPORT").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
