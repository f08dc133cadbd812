//! Hugging Face interop: tensor names/shapes, safetensors round trips, config.json, error paths.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::*;
use kiln_arch::{
    read_safetensors, write_safetensors, ArchError, HfModel, HfTensor, LlamaConfig, Model,
    ModelConfig, SafetensorsDtype,
};
use serde_json::json;

fn tmp_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-arch-hf");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", std::process::id()))
}

fn init(cfg: &LlamaConfig) -> Model<B> {
    ModelConfig::Llama(cfg.clone()).init(&Default::default())
}

fn by_name(tensors: Vec<HfTensor>) -> HashMap<String, HfTensor> {
    tensors.into_iter().map(|t| (t.name.clone(), t)).collect()
}

fn logits(model: &Model<B>) -> Vec<f32> {
    to_vec(model.forward(ids(&[&[1, 2, 3, 4, 5, 6], &[9, 8, 7, 6, 5, 4]])))
}

/// The exact HF names and `[out, in]` shapes for a tiny config with `layers` HF layers.
fn expected_layout(layers: usize, tied: bool) -> Vec<(String, Vec<usize>)> {
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![61, 32])];
    for i in 0..layers {
        let p = format!("model.layers.{i}.");
        v.extend([
            (format!("{p}input_layernorm.weight"), vec![32]),
            (format!("{p}self_attn.q_proj.weight"), vec![32, 32]),
            (format!("{p}self_attn.k_proj.weight"), vec![16, 32]),
            (format!("{p}self_attn.v_proj.weight"), vec![16, 32]),
            (format!("{p}self_attn.o_proj.weight"), vec![32, 32]),
            (format!("{p}post_attention_layernorm.weight"), vec![32]),
            (format!("{p}mlp.gate_proj.weight"), vec![48, 32]),
            (format!("{p}mlp.up_proj.weight"), vec![48, 32]),
            (format!("{p}mlp.down_proj.weight"), vec![32, 48]),
        ]);
    }
    v.push(("model.norm.weight".to_string(), vec![32]));
    if !tied {
        v.push(("lm_head.weight".to_string(), vec![61, 32]));
    }
    v
}

#[test]
fn hf_names_and_shapes() {
    for (tied, ls) in [(true, false), (false, false), (true, true)] {
        let cfg = LlamaConfig {
            tie_word_embeddings: tied,
            layer_sharing: ls,
            ..tiny_config()
        };
        let got: Vec<(String, Vec<usize>)> = init(&cfg)
            .to_hf_tensors()
            .into_iter()
            .map(|t| {
                assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
                (t.name, t.shape)
            })
            .collect();
        let layers = if ls { 4 } else { 2 };
        assert_eq!(got, expected_layout(layers, tied), "tied={tied} ls={ls}");
    }
}

#[test]
fn linear_weights_are_exported_out_by_in() {
    let model = init(&tiny_config());
    let Model::Llama(llama) = &model else {
        unreachable!("a Llama")
    };
    let burn_w = to_vec(llama.layers[0].mlp.down_proj.weight.val()); // burn [in 48, out 32]
    let t = by_name(model.to_hf_tensors());
    let hf = &t["model.layers.0.mlp.down_proj.weight"]; // HF [out 32, in 48]
    for o in 0..32 {
        for i in 0..48 {
            assert_eq!(hf.data[o * 48 + i], burn_w[i * 32 + o]);
        }
    }
}

#[test]
fn layer_shared_blocks_are_written_twice() {
    let cfg = LlamaConfig {
        layer_sharing: true,
        ..tiny_config()
    };
    let t = by_name(init(&cfg).to_hf_tensors());
    for u in 0..2 {
        for s in [
            "self_attn.q_proj.weight",
            "mlp.down_proj.weight",
            "input_layernorm.weight",
        ] {
            let a = &t[&format!("model.layers.{}.{s}", 2 * u)];
            let b = &t[&format!("model.layers.{}.{s}", 2 * u + 1)];
            assert_eq!(a.data, b.data);
        }
    }
    assert_ne!(
        t["model.layers.0.self_attn.q_proj.weight"].data,
        t["model.layers.2.self_attn.q_proj.weight"].data
    );
}

fn round_trip(cfg: LlamaConfig, name: &str) {
    let model = init(&cfg);
    let path = tmp_path(name);
    write_safetensors(&path, &model.to_hf_tensors(), SafetensorsDtype::F32).unwrap();
    let tensors = read_safetensors(&path).unwrap();
    let fresh = init(&cfg);
    let before = logits(&fresh);
    let loaded = fresh.load_hf_tensors(&tensors).unwrap();
    assert_eq!(
        logits(&loaded),
        logits(&model),
        "{name}: logits differ after round trip"
    );
    assert_ne!(
        before,
        logits(&model),
        "{name}: the fresh model must start different"
    );
    assert_eq!(
        by_name(loaded.to_hf_tensors()),
        by_name(model.to_hf_tensors())
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn safetensors_round_trip_tied() {
    round_trip(tiny_config(), "tied.safetensors");
}

#[test]
fn safetensors_round_trip_untied_layer_shared() {
    round_trip(
        LlamaConfig {
            tie_word_embeddings: false,
            layer_sharing: true,
            ..tiny_config()
        },
        "untied-ls.safetensors",
    );
}

#[test]
fn bf16_write_read() {
    let model = init(&tiny_config());
    let tensors = model.to_hf_tensors();
    let path = tmp_path("bf16.safetensors");
    write_safetensors(&path, &tensors, SafetensorsDtype::Bf16).unwrap();
    let f32_size = tensors.iter().map(|t| t.data.len() * 4).sum::<usize>();
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(size < f32_size / 2 + 4096, "bf16 file is {size} bytes");

    // The header carries {"format": "pt"} and the BF16 dtype.
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["format"], "pt");
    assert_eq!(header["model.norm.weight"]["dtype"], "BF16");

    let read = read_safetensors(&path).unwrap();
    for t in &tensors {
        let r = &read[&t.name];
        assert_eq!(r.shape, t.shape);
        for (a, b) in t.data.iter().zip(&r.data) {
            // bf16 keeps 8 significant bits: relative error <= 2^-9.
            assert!(
                (a - b).abs() <= a.abs() * 2f32.powi(-8),
                "{}: {a} vs {b}",
                t.name
            );
        }
    }
    // And it loads.
    let loaded = init(&tiny_config()).load_hf_tensors(&read).unwrap();
    // (Per-value precision is checked exactly above; here only "same model, roughly": the
    // rounding of every weight moves logits of magnitude ~3.5 by ~0.03.)
    let reference = logits(&model);
    let scale = reference.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = max_abs_diff(&logits(&loaded), &reference);
    assert!(
        diff < 0.05 * scale,
        "bf16 logits diff {diff} (max |logit| {scale})"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn f16_files_are_read() {
    // Hand-written F16 safetensors file: one tensor [2] = [1.5, -0.25].
    let data: Vec<u8> = [1.5f32, -0.25]
        .iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect();
    let header = br#"{"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend(data);
    let path = tmp_path("f16.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let read = read_safetensors(&path).unwrap();
    assert_eq!(read["x"].data, vec![1.5, -0.25]);
    assert_eq!(read["x"].shape, vec![2]);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn read_errors_name_the_file() {
    let missing = tmp_path("does-not-exist.safetensors");
    let err = read_safetensors(&missing).unwrap_err();
    assert!(matches!(err, ArchError::Io { .. }));
    assert!(
        err.to_string().contains("does-not-exist.safetensors"),
        "{err}"
    );

    let garbage = tmp_path("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    let err = read_safetensors(&garbage).unwrap_err();
    assert!(matches!(err, ArchError::Safetensors { .. }));
    assert!(err.to_string().contains("garbage.safetensors"), "{err}");
    std::fs::remove_file(garbage).unwrap();
}

#[test]
fn load_errors_name_the_tensor() {
    let cfg = tiny_config();
    let good = by_name(init(&cfg).to_hf_tensors());

    let mut missing = good.clone();
    missing.remove("model.layers.1.mlp.up_proj.weight");
    let err = init(&cfg).load_hf_tensors(&missing).unwrap_err();
    assert!(
        matches!(&err, ArchError::MissingTensor { name } if name == "model.layers.1.mlp.up_proj.weight")
    );
    assert!(
        err.to_string()
            .contains("model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );

    let mut wrong = good.clone();
    let t = wrong
        .get_mut("model.layers.0.self_attn.k_proj.weight")
        .unwrap();
    t.shape = vec![32, 16]; // transposed
    let err = init(&cfg).load_hf_tensors(&wrong).unwrap_err();
    match &err {
        ArchError::ShapeMismatch {
            name,
            expected,
            got,
        } => {
            assert_eq!(name, "model.layers.0.self_attn.k_proj.weight");
            assert_eq!(expected, &vec![16, 32]);
            assert_eq!(got, &vec![32, 16]);
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("k_proj"), "{err}");

    let mut extra = good.clone();
    extra.insert(
        "model.layers.2.mlp.up_proj.weight".into(),
        good["model.layers.1.mlp.up_proj.weight"].clone(),
    );
    let err = init(&cfg).load_hf_tensors(&extra).unwrap_err();
    assert!(
        err.to_string()
            .contains("model.layers.2.mlp.up_proj.weight"),
        "{err}"
    );

    // A tied checkpoint may carry lm_head.weight equal to the embedding (and HF's legacy
    // inv_freq buffers), but not a different head.
    let mut with_head = good.clone();
    let mut head = good["model.embed_tokens.weight"].clone();
    head.name = "lm_head.weight".into();
    with_head.insert(head.name.clone(), head.clone());
    with_head.insert(
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        HfTensor {
            name: "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
            shape: vec![4],
            data: vec![0.0; 4],
        },
    );
    init(&cfg).load_hf_tensors(&with_head).unwrap();
    head.data[0] += 1.0;
    with_head.insert(head.name.clone(), head);
    let err = init(&cfg).load_hf_tensors(&with_head).unwrap_err();
    assert!(err.to_string().contains("lm_head.weight"), "{err}");

    // Tied checkpoint into an untied model: the head is missing.
    let untied = LlamaConfig {
        tie_word_embeddings: false,
        ..cfg
    };
    let err = init(&untied).load_hf_tensors(&good).unwrap_err();
    assert!(matches!(&err, ArchError::MissingTensor { name } if name == "lm_head.weight"));
}

#[test]
fn unequal_layer_shared_copies_are_rejected() {
    let cfg = LlamaConfig {
        layer_sharing: true,
        ..tiny_config()
    };
    let mut tensors = by_name(init(&cfg).to_hf_tensors());
    tensors
        .get_mut("model.layers.3.mlp.gate_proj.weight")
        .unwrap()
        .data[5] += 0.5;
    let err = init(&cfg).load_hf_tensors(&tensors).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ArchError::TiedTensorMismatch { .. }));
    assert!(msg.contains("model.layers.2.mlp.gate_proj.weight"), "{msg}");
    assert!(msg.contains("model.layers.3.mlp.gate_proj.weight"), "{msg}");
}

#[test]
fn hf_config_round_trip() {
    for (ls, tied, scaled) in [(false, true, false), (true, false, true)] {
        let cfg = ModelConfig::Llama(LlamaConfig {
            layer_sharing: ls,
            tie_word_embeddings: tied,
            scaled_residual_init: scaled,
            ..tiny_config()
        });
        let json = cfg.to_hf_config(0, 0, "bfloat16");
        assert_eq!(json["architectures"], json!(["LlamaForCausalLM"]));
        assert_eq!(json["model_type"], "llama");
        assert_eq!(json["num_hidden_layers"], if ls { 4 } else { 2 });
        assert_eq!(json["tie_word_embeddings"], tied);
        assert_eq!(json["hidden_act"], "silu");
        assert_eq!(json["attention_bias"], false);
        assert_eq!(json["mlp_bias"], false);
        assert!(json["rope_scaling"].is_null());
        assert_eq!(json["torch_dtype"], "bfloat16");
        assert_eq!(json["bos_token_id"], 0);
        assert_eq!(json.get("kiln_layer_sharing").is_some(), ls);
        assert_eq!(ModelConfig::from_hf_config(&json).unwrap(), cfg);
    }
}

#[test]
fn real_hf_configs_are_accepted() {
    // SmolLM-135M's config.json (abridged to the keys that matter).
    let smol = json!({
        "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 576,
        "initializer_range": 0.02, "intermediate_size": 1536, "max_position_embeddings": 2048,
        "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30,
        "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": null, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "torch_dtype": "float32", "transformers_version": "4.40.1", "use_cache": true,
        "vocab_size": 49152
    });
    let ModelConfig::Llama(c) = ModelConfig::from_hf_config(&smol).unwrap() else {
        panic!("a Llama config")
    };
    assert_eq!(c.head_dim, 64, "derived from hidden / heads");
    assert_eq!(c.num_params(), 134_515_008);

    // transformers 5 style: rope_theta inside rope_parameters; no kv heads (MHA); no tie key.
    let v5 = json!({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
        "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}
    });
    let ModelConfig::Llama(c) = ModelConfig::from_hf_config(&v5).unwrap() else {
        panic!("a Llama config")
    };
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.num_key_value_heads, 4);
    assert_eq!(c.head_dim, 16);
    assert!(!c.tie_word_embeddings, "transformers' default");
}

#[test]
fn unsupported_hf_configs_name_the_key() {
    let base = ModelConfig::Llama(tiny_config()).to_hf_config(1, 2, "float32");
    let cases = [
        ("model_type", json!("mistral")),
        ("attention_bias", json!(true)),
        ("mlp_bias", json!(true)),
        ("hidden_act", json!("gelu")),
        (
            "rope_scaling",
            json!({"rope_type": "llama3", "factor": 8.0}),
        ),
        ("architectures", json!(["MobileLLMForCausalLM"])),
    ];
    for (key, value) in cases {
        let mut cfg = base.clone();
        cfg[key] = value;
        let err = ModelConfig::from_hf_config(&cfg).unwrap_err();
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
    let mut no_vocab = base.clone();
    no_vocab.as_object_mut().unwrap().remove("vocab_size");
    let err = ModelConfig::from_hf_config(&no_vocab).unwrap_err();
    assert!(matches!(&err, ArchError::MissingConfigKey { key } if key == "vocab_size"));

    let mut bad_heads = base.clone();
    bad_heads["num_key_value_heads"] = json!(3);
    let err = ModelConfig::from_hf_config(&bad_heads).unwrap_err();
    assert!(err.to_string().contains("num_key_value_heads"), "{err}");

    let mut odd = base;
    odd["kiln_layer_sharing"] = json!(true);
    odd["num_hidden_layers"] = json!(3);
    let err = ModelConfig::from_hf_config(&odd).unwrap_err();
    assert!(err.to_string().contains("num_hidden_layers"), "{err}");
}

#[test]
fn loaded_parameters_keep_ids_and_stay_trainable() {
    use burn::backend::Autodiff;
    use burn::module::list_param_ids;
    type AB = Autodiff<B>;
    let cfg = ModelConfig::Llama(tiny_config());
    let tensors = by_name(init(&tiny_config()).to_hf_tensors());
    let fresh: Model<AB> = cfg.init(&Default::default());
    let ids_before = list_param_ids(&fresh);
    let loaded = fresh.load_hf_tensors(&tensors).unwrap();
    assert_eq!(list_param_ids(&loaded), ids_before);
    let input = burn::tensor::Tensor::<AB, 2, burn::tensor::Int>::from_data(
        [[1i64, 2, 3]],
        &Default::default(),
    );
    let grads = loaded.forward(input).mean().backward();
    let Model::Llama(m) = &loaded else {
        unreachable!("a Llama")
    };
    assert!(m.layers[0]
        .self_attn
        .q_proj
        .weight
        .val()
        .grad(&grads)
        .is_some());
    assert!(m.embed_tokens.weight.val().grad(&grads).is_some());

    // The inference copy (inner backend) computes the same logits.
    use burn::module::AutodiffModule;
    let inner: Model<B> = loaded.valid();
    let x = ids(&[&[4, 5, 6]]);
    let from_ad = to_vec(loaded.forward(
        burn::tensor::Tensor::<AB, 2, burn::tensor::Int>::from_data(
            [[4i64, 5, 6]],
            &Default::default(),
        ),
    ));
    // Not bit-equal: under Autodiff burn takes the unfused attention fallback.
    assert!(max_abs_diff(&to_vec(inner.forward(x)), &from_ad) < 1e-4);
}

/// Keys of `config.json` whose init rule transformers (5.25) applies to weights that
/// `from_pretrained` has just loaded, so that a `true` changes a trained model on load:
/// `MambaPreTrainedModel` / `Mamba2PreTrainedModel._init_weights` divide `out_proj.weight` by
/// `sqrt(num_hidden_layers)` under `rescale_prenorm_residual` without checking whether the
/// weight came from the file. (Llama's and Jamba's `_init_weights` only touch weights that were
/// not loaded.) `scripts/check_export.py` checks the loaded state dict against the file.
const LOAD_TIME_INIT_FLAGS: [&str; 1] = ["rescale_prenorm_residual"];

#[test]
fn exported_configs_carry_no_init_flag_transformers_acts_on_at_load() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    for dir in ["llama-tiny-tied", "mamba-tiny", "mamba2-tiny", "jamba-tiny"] {
        let text = std::fs::read_to_string(fixtures.join(dir).join("config.json")).unwrap();
        let mut cfg = ModelConfig::from_hf_config(&serde_json::from_str(&text).unwrap()).unwrap();
        // Every init option kiln has, on.
        match &mut cfg {
            ModelConfig::Llama(c) => c.scaled_residual_init = true,
            ModelConfig::Mamba(c) => c.rescale_prenorm_residual = true,
            ModelConfig::Mamba2(c) => c.rescale_prenorm_residual = true,
            ModelConfig::Hybrid(_) => {}
        }
        let exported = cfg.to_hf_config(0, 0, "float32");
        for flag in LOAD_TIME_INIT_FLAGS {
            assert!(
                exported.get(flag).is_none_or(|v| v == &json!(false)),
                "{dir}: config.json has {flag} = {}",
                exported[flag]
            );
        }
        // kiln's own choice survives the round trip (under a key transformers ignores).
        assert_eq!(
            ModelConfig::from_hf_config(&exported).unwrap(),
            cfg,
            "{dir}"
        );
    }
    // A real HF config asking for the rule keeps meaning it for a fresh kiln init.
    let text = std::fs::read_to_string(fixtures.join("mamba-tiny/config.json")).unwrap();
    let mut hf: serde_json::Value = serde_json::from_str(&text).unwrap();
    hf["rescale_prenorm_residual"] = json!(true);
    let ModelConfig::Mamba(c) = ModelConfig::from_hf_config(&hf).unwrap() else {
        panic!("mamba-tiny is a Mamba config")
    };
    assert!(c.rescale_prenorm_residual);
}
