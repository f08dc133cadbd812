//! Whole-model checks: parameter counts, FLOPs, causality, KV-cache decoding, gradients, configs.

mod common;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use common::*;
use kiln_arch::{ArchError, HfModel, LlamaConfig, Model, ModelConfig};

#[test]
fn parameter_counts_match_published_sizes() {
    let smol = LlamaConfig::smollm_135m();
    let m125 = LlamaConfig::mobilellm_125m();
    let m350 = LlamaConfig::mobilellm_350m();
    assert_eq!(smol.num_params(), 134_515_008);
    assert_eq!(m125.num_params(), 124_635_456);
    assert_eq!(m350.num_params(), 345_355_200);
    for (cfg, n) in [(m125, 124_635_456), (m350, 345_355_200)] {
        let ls = LlamaConfig {
            layer_sharing: true,
            ..cfg
        };
        assert_eq!(ls.num_params(), n, "-LS shares weights: same count");
    }
}

#[test]
fn analytic_count_equals_module_count_at_real_size() {
    let cfg = ModelConfig::Llama(LlamaConfig::smollm_135m());
    let model: Model<B> = cfg.init(&Default::default());
    assert_eq!(model.num_params(), 134_515_008);
    assert_eq!(cfg.num_params(), model.num_params());
}

#[test]
fn analytic_count_equals_module_count_tiny_variants() {
    for (tied, ls) in [(true, false), (false, false), (true, true), (false, true)] {
        let cfg = ModelConfig::Llama(LlamaConfig {
            tie_word_embeddings: tied,
            layer_sharing: ls,
            head_dim: 6, // != hidden / heads: allowed, as in HF
            ..tiny_config()
        });
        let model: Model<B> = cfg.init(&Default::default());
        assert_eq!(cfg.num_params(), model.num_params(), "tied={tied} ls={ls}");
    }
}

#[test]
fn flops_per_token_formula() {
    let c = LlamaConfig::smollm_135m();
    // Per block: q 576·576 + k,v 2·576·192 + o 576·576 + mlp 3·576·1536 = 3,538,944.
    let n_matmul: u64 = 30 * 3_538_944 + 49152 * 576;
    assert_eq!(c.flops_per_token(2048), 6 * n_matmul + 6 * 30 * 576 * 2048);
    // Layer sharing doubles the block compute (not the head).
    let ls = LlamaConfig {
        layer_sharing: true,
        ..LlamaConfig::mobilellm_125m()
    };
    let plain = LlamaConfig::mobilellm_125m();
    let head = 6 * 32000u64 * 576;
    assert_eq!(
        ls.flops_per_token(1024) - head,
        2 * (plain.flops_per_token(1024) - head)
    );
}

#[test]
fn logits_shape_and_causality() {
    let model = ModelConfig::Llama(tiny_config()).init::<B>(&Default::default());
    let a = model.forward(ids(&[&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]]));
    assert_eq!(a.dims(), [2, 5, 61]);
    // Change the last token of row 0: earlier positions' logits are unchanged.
    let b = model.forward(ids(&[&[1, 2, 3, 4, 42], &[6, 7, 8, 9, 10]]));
    let (a, b) = (to_vec(a), to_vec(b));
    let row = 5 * 61;
    assert_eq!(
        &a[..4 * 61],
        &b[..4 * 61],
        "future token changed past logits"
    );
    assert!(max_abs_diff(&a[4 * 61..row], &b[4 * 61..row]) > 1e-3);
    assert_eq!(&a[row..], &b[row..], "batch rows are independent");
}

fn check_cached_decoding(cfg: LlamaConfig) {
    let model = ModelConfig::Llama(cfg).init::<B>(&Default::default());
    let tokens: [&[i64]; 2] = [
        &[3, 1, 4, 1, 5, 9, 2, 6, 5, 3],
        &[2, 7, 1, 8, 2, 8, 1, 8, 2, 8],
    ];
    let full = to_vec(model.forward(ids(&tokens))); // [2, 10, 61]
    let v = 61;
    let slice = |full: &[f32], from: usize, to: usize| -> Vec<f32> {
        (0..2)
            .flat_map(|b| full[(b * 10 + from) * v..(b * 10 + to) * v].to_vec())
            .collect()
    };

    // Prefill 4, then a 2-token chunk (q_len > 1 with a cache), then token by token.
    let mut cache = model.new_cache(2);
    let mut pos = 0;
    for step in [4, 2, 1, 1, 1, 1] {
        let chunk: Vec<Vec<i64>> = tokens.iter().map(|r| r[pos..pos + step].to_vec()).collect();
        let chunk: Vec<&[i64]> = chunk.iter().map(|r| r.as_slice()).collect();
        let logits = to_vec(model.forward_cached(ids(&chunk), &mut cache));
        let diff = max_abs_diff(&logits, &slice(&full, pos, pos + step));
        assert!(
            diff < 1e-4,
            "positions {pos}..{}: max diff {diff}",
            pos + step
        );
        pos += step;
        assert_eq!(cache.seq_len(), pos);
    }
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    check_cached_decoding(tiny_config());
}

#[test]
fn kv_cache_decoding_equals_full_forward_layer_shared_untied() {
    check_cached_decoding(LlamaConfig {
        layer_sharing: true,
        tie_word_embeddings: false,
        ..tiny_config()
    });
}

#[test]
fn layer_sharing_applies_each_block_twice() {
    // A shared 2-block model equals a plain 4-block model whose blocks are 0, 0, 1, 1.
    let shared_cfg = LlamaConfig {
        layer_sharing: true,
        ..tiny_config()
    };
    let shared = shared_cfg.init::<B>(&Default::default());
    let mut plain = LlamaConfig {
        num_hidden_layers: 4,
        ..tiny_config()
    }
    .init::<B>(&Default::default());
    plain.embed_tokens = shared.embed_tokens.clone();
    plain.norm = shared.norm.clone();
    plain.layers = vec![
        shared.layers[0].clone(),
        shared.layers[0].clone(),
        shared.layers[1].clone(),
        shared.layers[1].clone(),
    ];
    let x = ids(&[&[5, 4, 3, 2, 1]]);
    let diff = max_abs_diff(
        &to_vec(shared.forward(x.clone())),
        &to_vec(plain.forward(x)),
    );
    assert!(diff < 1e-6, "max diff {diff}");
    assert_eq!(
        shared.new_cache(1).layers.len(),
        4,
        "one cache entry per effective layer"
    );
}

#[test]
fn scaled_residual_init_shrinks_residual_projections() {
    let std_of = |p: &Param<Tensor<B, 2>>| {
        let v = to_vec(p.val());
        (v.iter().map(|x| (x * x) as f64).sum::<f64>() / v.len() as f64).sqrt()
    };
    let cfg = LlamaConfig {
        hidden_size: 64,
        intermediate_size: 128,
        num_attention_heads: 4,
        head_dim: 16,
        num_hidden_layers: 8,
        initializer_range: 0.02,
        scaled_residual_init: true,
        layer_sharing: true, // 16 effective layers: residual std = 0.02 / sqrt(32)
        ..tiny_config()
    };
    let m = cfg.init::<B>(&Default::default());
    let q = std_of(&m.layers[0].self_attn.q_proj.weight);
    let o = std_of(&m.layers[0].self_attn.o_proj.weight);
    let down = std_of(&m.layers[0].mlp.down_proj.weight);
    let e = std_of(&m.embed_tokens.weight);
    assert!((q - 0.02).abs() < 0.002, "q_proj std {q}");
    assert!((e - 0.02).abs() < 0.002, "embedding std {e}");
    let target = 0.02 / 32f64.sqrt();
    assert!((o - target).abs() < 0.1 * target, "o_proj std {o}");
    assert!((down - target).abs() < 0.1 * target, "down_proj std {down}");
    let norm = to_vec(m.layers[0].input_layernorm.weight.val());
    assert!(norm.iter().all(|&w| w == 1.0));
}

struct GradCheck<'a, AB: AutodiffBackend> {
    grads: &'a AB::Gradients,
    checked: usize,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for GradCheck<'_, AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let grad = param
            .val()
            .grad(self.grads)
            .unwrap_or_else(|| panic!("parameter {:?} has no gradient", param.id));
        let g = to_vec(grad);
        assert!(g.iter().all(|x| x.is_finite()), "non-finite gradient");
        assert!(g.iter().any(|x| *x != 0.0), "all-zero gradient");
        self.checked += 1;
    }
}

fn check_gradients(cfg: LlamaConfig) {
    type AB = Autodiff<B>;
    let device = Default::default();
    let model: Model<AB> = ModelConfig::Llama(cfg.clone()).init(&device);
    let input = Tensor::<AB, 2, Int>::from_data([[1i64, 5, 9, 2], [7, 3, 3, 8]], &device);
    let target = Tensor::<AB, 2, Int>::from_data([[5i64, 9, 2, 4], [3, 3, 8, 0]], &device);
    let logits = model.forward(input); // [2, 4, vocab]
                                       // Cross-entropy: mean over positions of -log p(target).
    let logp = log_softmax(logits, 2);
    let loss = logp.gather(2, target.unsqueeze_dim::<3>(2)).mean().neg();
    let loss_value = to_vec(loss.clone())[0];
    assert!(loss_value.is_finite() && loss_value > 0.0);
    let grads = loss.backward();
    let mut check = GradCheck::<AB> {
        grads: &grads,
        checked: 0,
    };
    model.visit(&mut check);
    let per_block = 9;
    let expected = 2 + per_block * cfg.num_hidden_layers + usize::from(!cfg.tie_word_embeddings);
    assert_eq!(check.checked, expected);
}

#[test]
fn gradients_are_finite_for_every_parameter() {
    check_gradients(tiny_config());
    check_gradients(LlamaConfig {
        tie_word_embeddings: false,
        layer_sharing: true,
        ..tiny_config()
    });
}

#[test]
fn config_validation_names_the_key() {
    let cases: [(LlamaConfig, &str); 4] = [
        (
            LlamaConfig {
                num_key_value_heads: 3,
                ..tiny_config()
            },
            "num_key_value_heads",
        ),
        (
            LlamaConfig {
                head_dim: 7,
                ..tiny_config()
            },
            "head_dim",
        ),
        (
            LlamaConfig {
                vocab_size: 0,
                ..tiny_config()
            },
            "vocab_size",
        ),
        (
            LlamaConfig {
                rms_norm_eps: 0.0,
                ..tiny_config()
            },
            "rms_norm_eps",
        ),
    ];
    for (cfg, key) in cases {
        let err = cfg.validate().unwrap_err();
        assert!(
            matches!(&err, ArchError::InvalidConfig { key: k, .. } if k == key),
            "{err}"
        );
        assert!(err.to_string().contains(key), "{err}");
    }
    assert!(tiny_config().validate().is_ok());
}

#[test]
fn model_config_serde_round_trip_and_defaults() {
    let cfg = ModelConfig::Llama(LlamaConfig {
        layer_sharing: true,
        ..tiny_config()
    });
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["arch"], "llama");
    let back: ModelConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, cfg);

    // Only the shape is required; the rest takes transformers' `LlamaConfig` defaults.
    let minimal: ModelConfig = serde_json::from_str(
        r#"{"arch": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16}"#,
    )
    .unwrap();
    let ModelConfig::Llama(c) = &minimal else {
        panic!("a Llama config")
    };
    assert_eq!(c.max_position_embeddings, 2048);
    assert_eq!(c.rope_theta, 10000.0);
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert!(!c.tie_word_embeddings && !c.layer_sharing && !c.scaled_residual_init);
    assert_eq!(minimal.max_seq_len(), Some(2048));
    assert_eq!(minimal.vocab_size(), 100);

    let unknown = serde_json::from_str::<ModelConfig>(
        r#"{"arch": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "hiden_size": 3}"#,
    );
    assert!(unknown.unwrap_err().to_string().contains("hiden_size"));
}

#[test]
fn clone_of_a_fresh_model_is_identical() {
    // burn's lazy init would give a clone of a never-used model its own random draw.
    let model = ModelConfig::Llama(tiny_config()).init::<B>(&Default::default());
    let copy = model.clone();
    let x = ids(&[&[1, 2, 3]]);
    assert_eq!(to_vec(copy.forward(x.clone())), to_vec(model.forward(x)));
}

/// bf16 mixed precision: logits stay f32 and close to the f32 model's; the parameters (master
/// weights) stay f32; pure bf16 converts the parameters. The KV-cache path agrees with the full
/// forward in mixed precision too.
#[test]
fn bf16_mixed_precision_forward_is_close_to_f32() {
    use burn::tensor::{DType, FloatDType};
    let device = Default::default();
    let config = ModelConfig::Llama(tiny_config());
    let model: Model<B> = config.init(&device);
    let input = ids(&[&[1, 5, 9, 2, 33, 60, 7, 7], &[3, 3, 4, 10, 12, 0, 59, 8]]);
    let reference = to_vec(model.forward(input.clone()));

    let mixed = model
        .clone()
        .with_precision(FloatDType::F32, FloatDType::BF16);
    assert_eq!(mixed.compute_dtype(), FloatDType::BF16);
    let logits = mixed.forward(input.clone());
    assert_eq!(logits.dtype(), DType::F32, "logits are returned in f32");
    let logits = to_vec(logits);
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = reference
        .iter()
        .zip(&logits)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    // bf16 keeps 8 significant bits (relative error 2^-9 per rounding); a few roundings through
    // two blocks stay within a few percent of the logit scale.
    assert!(
        max_diff < 0.05 * scale,
        "bf16-mixed logits differ from f32 by {max_diff} (scale {scale})"
    );
    assert!(
        max_diff > 0.0,
        "bf16 compute changed nothing: casts are not applied"
    );
    for t in mixed.to_hf_tensors() {
        assert!(t.data.iter().all(|v| v.is_finite()), "{}", t.name);
    }
    let Model::Llama(m) = &mixed else {
        unreachable!("a Llama")
    };
    assert_eq!(m.layers[0].mlp.up_proj.weight.val().dtype(), DType::F32);

    let pure = model.with_precision(FloatDType::BF16, FloatDType::BF16);
    let Model::Llama(m) = &pure else {
        unreachable!("a Llama")
    };
    assert_eq!(m.layers[0].mlp.up_proj.weight.val().dtype(), DType::BF16);
    assert_eq!(m.embed_tokens.weight.val().dtype(), DType::BF16);
    let pure_logits = to_vec(pure.forward(input.clone()));
    let pure_diff = reference
        .iter()
        .zip(&pure_logits)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        pure_diff < 0.1 * scale,
        "pure bf16 logits differ from f32 by {pure_diff} (scale {scale})"
    );

    // Cached decoding in mixed precision equals the full mixed forward (same roundings).
    let mut cache = mixed.new_cache(2);
    let first = to_vec(mixed.forward_cached(input.clone().slice([0..2, 0..5]), &mut cache));
    let rest = to_vec(mixed.forward_cached(input.slice([0..2, 5..8]), &mut cache));
    let vocab = 61;
    for b in 0..2 {
        for (pos, chunk) in [(0..5, &first), (5..8, &rest)] {
            for (i, p) in pos.clone().enumerate() {
                let len = pos.len();
                let got = &chunk[(b * len + i) * vocab..(b * len + i + 1) * vocab];
                let want = &logits[(b * 8 + p) * vocab..(b * 8 + p + 1) * vocab];
                let d = got
                    .iter()
                    .zip(want)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(d < 0.02 * scale, "cached vs full at b={b} p={p}: {d}");
            }
        }
    }
}

/// Per-block activation checkpointing gives the same loss and the same gradient for every
/// parameter as the plain backward pass (tied and untied head, with and without layer sharing).
#[test]
fn checkpointed_backward_equals_plain_backward() {
    for cfg in [
        tiny_config(),
        LlamaConfig {
            tie_word_embeddings: false,
            layer_sharing: true,
            ..tiny_config()
        },
    ] {
        let model: Model<Autodiff<B>> = ModelConfig::Llama(cfg.clone()).init(&Default::default());
        let (checked, _) = assert_checkpointed_equals_plain(&model, cfg.vocab_size as i64);
        let expected = 2 + 9 * cfg.num_hidden_layers + usize::from(!cfg.tie_word_embeddings);
        assert_eq!(checked, expected);
    }
}
