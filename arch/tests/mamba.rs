//! Mamba-1 checks: the scan's two forms against each other and against finite differences,
//! parameter counts, cached decoding, init rules, the HF mapping and config, a few training steps.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Int, Tensor, TensorData};
use common::*;
use kiln_arch::mamba::{selective_scan_chunked, selective_scan_sequential, ScanMode};
use kiln_arch::{ArchError, HfModel, HfTensor, Mamba, MambaConfig, Segments};

type AB = Autodiff<B>;

/// 2 blocks, d = 16, E = 32, N = 4, R = 4, K = 4, vocab 61. Init std 0.2 (and the Linear
/// defaults) keep the tiny model's logits far from uniform, so comparisons are meaningful.
fn tiny() -> MambaConfig {
    tiny_mamba()
}

fn tensor_of<Bk: Backend, const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<Bk, D> {
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

/// Random scan inputs: x, B, C in [-1, 1); Δ = softplus-like in (0.05, 1.05); A = −(1..=N)
/// scaled by a per-channel factor in [0.5, 1.5).
struct ScanInputs {
    x: Vec<f32>,
    dt: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    h0: Vec<f32>,
}

fn scan_inputs(bs: usize, l: usize, e: usize, n: usize, seed: u64) -> ScanInputs {
    let r = |len: usize, s: u64| pseudo_random(len, seed * 10 + s);
    let scale = r(e, 6);
    ScanInputs {
        x: r(bs * l * e, 1),
        dt: r(bs * l * e, 2).iter().map(|v| 0.55 + 0.5 * v).collect(),
        a: (0..e * n)
            .map(|i| -((i % n + 1) as f32) * (1.0 + 0.5 * scale[i / n]))
            .collect(),
        b: r(bs * l * n, 3),
        c: r(bs * l * n, 4),
        h0: r(bs * e * n, 5),
    }
}

#[test]
fn scan_forms_agree() {
    let (bs, e, n) = (2, 6, 5);
    for (l, chunk) in [
        (1, 4),
        (5, 4),
        (16, 4),
        (37, 8),
        (37, 16),
        (20, 64),
        (100, 4),
    ] {
        // Unpacked, and two packed rows: a document of one token after the first third, and
        // halves (documents across and at chunk edges).
        let doc_ids = |r: usize, t: usize| match r {
            0 => u32::from(t >= l / 3) + u32::from(t > l / 3),
            _ => u32::from(t >= l / 2),
        };
        let ids: Vec<u32> = (0..bs * l).map(|k| doc_ids(k / l, k % l)).collect();
        let packed = Segments::from_ids(bs, l, &ids);
        for (with_h0, segments) in [
            (false, None),
            (true, None),
            (false, Some(&packed)),
            (true, Some(&packed)),
        ] {
            let s = scan_inputs(bs, l, e, n, l as u64);
            let args = || {
                (
                    tensor_of::<B, 3>(s.x.clone(), [bs, l, e]),
                    tensor_of::<B, 3>(s.dt.clone(), [bs, l, e]),
                    tensor_of::<B, 2>(s.a.clone(), [e, n]),
                    tensor_of::<B, 3>(s.b.clone(), [bs, l, n]),
                    tensor_of::<B, 3>(s.c.clone(), [bs, l, n]),
                    with_h0.then(|| tensor_of::<B, 3>(s.h0.clone(), [bs, e, n])),
                )
            };
            let (x, dt, a, b, c, h0) = args();
            let (y_seq, h_seq) = selective_scan_sequential(x, dt, a, b, c, h0, segments);
            let (x, dt, a, b, c, h0) = args();
            let (y_chk, h_chk) = selective_scan_chunked(x, dt, a, b, c, h0, chunk, segments);
            assert_eq!(y_chk.dims(), [bs, l, e]);
            let (y_seq, y_chk) = (to_vec(y_seq), to_vec(y_chk));
            let dy = max_abs_diff(&y_seq, &y_chk);
            let dh = max_abs_diff(&to_vec(h_seq), &to_vec(h_chk));
            let scale = y_seq.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.1, "degenerate test input");
            assert!(
                dy < 1e-5 && dh < 1e-5,
                "l={l} chunk={chunk} h0={with_h0} {segments:?}: y diff {dy}, state diff {dh}"
            );
        }
    }
}

fn to_f64<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .expect("f64 data")
}

/// The scan's gradients (both forms, through burn autodiff, in f64) against central finite
/// differences of the sequential form, for a loss `Σ y ⊙ w + Σ h_last ⊙ v`.
#[test]
fn scan_gradients_match_finite_differences() {
    let (bs, l, e, n) = (1, 5, 2, 3);
    let s = scan_inputs(bs, l, e, n, 7);
    let w = pseudo_random(bs * l * e, 99);
    let v = pseudo_random(bs * e * n, 98);
    let shapes: [Vec<usize>; 6] = [
        vec![bs, l, e],
        vec![bs, l, e],
        vec![e, n],
        vec![bs, l, n],
        vec![bs, l, n],
        vec![bs, e, n],
    ];
    let values = [&s.x, &s.dt, &s.a, &s.b, &s.c, &s.h0]
        .map(|v| v.iter().map(|&x| x as f64).collect::<Vec<f64>>());

    fn f64_tensor<Bk: Backend, const D: usize>(data: &[f64], shape: &[usize]) -> Tensor<Bk, D> {
        let shape: [usize; D] = shape.try_into().expect("rank");
        let device: Bk::Device = Default::default();
        Tensor::from_data(TensorData::new(data.to_vec(), shape), (&device, DType::F64))
    }
    // loss(inputs) with a given scan form, on any backend.
    fn loss<Bk: Backend>(
        inputs: [Tensor<Bk, 3>; 5],
        a: Tensor<Bk, 2>,
        w: &[f32],
        v: &[f32],
        chunk: Option<usize>,
    ) -> Tensor<Bk, 1> {
        let [x, dt, b, c, h0] = inputs;
        let (bs, l, e) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let n = a.dims()[1];
        let (y, h) = match chunk {
            None => selective_scan_sequential(x, dt, a, b, c, Some(h0), None),
            Some(chunk) => selective_scan_chunked(x, dt, a, b, c, Some(h0), chunk, None),
        };
        let w64: Vec<f64> = w.iter().map(|&x| x as f64).collect();
        let v64: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        let wt = f64_tensor::<Bk, 3>(&w64, &[bs, l, e]);
        let vt = f64_tensor::<Bk, 3>(&v64, &[bs, e, n]);
        (y * wt).sum() + (h * vt).sum()
    }
    let build = |vals: &[Vec<f64>; 6]| -> ([Tensor<B, 3>; 5], Tensor<B, 2>) {
        (
            [0, 1, 3, 4, 5].map(|i| f64_tensor::<B, 3>(&vals[i], &shapes[i])),
            f64_tensor::<B, 2>(&vals[2], &shapes[2]),
        )
    };

    // Central differences on the sequential (reference) form.
    let eps = 1e-6;
    let mut numeric: Vec<Vec<f64>> = Vec::new();
    for (k, value) in values.iter().enumerate() {
        let mut g = Vec::with_capacity(value.len());
        for i in 0..value.len() {
            let eval = |delta: f64| {
                let mut vals = values.clone();
                vals[k][i] += delta;
                let (inputs, a) = build(&vals);
                to_f64(loss(inputs, a, &w, &v, None))[0]
            };
            g.push((eval(eps) - eval(-eps)) / (2.0 * eps));
        }
        numeric.push(g);
    }

    for chunk in [None, Some(2), Some(8)] {
        let leaf3 = |i: usize| f64_tensor::<AB, 3>(&values[i], &shapes[i]).require_grad();
        let inputs = [0, 1, 3, 4, 5].map(leaf3);
        let a = f64_tensor::<AB, 2>(&values[2], &shapes[2]).require_grad();
        let out = loss(inputs.clone(), a.clone(), &w, &v, chunk);
        assert_eq!(out.dtype(), DType::F64, "the scan must keep f64");
        let grads = out.backward();
        let mut analytic: Vec<Vec<f64>> = inputs
            .iter()
            .map(|t| to_f64(t.grad(&grads).expect("input gradient")))
            .collect();
        analytic.insert(2, to_f64(a.grad(&grads).expect("A gradient")));
        for (k, name) in ["x", "dt", "A", "B", "C", "h0"].iter().enumerate() {
            for (i, (an, nu)) in analytic[k].iter().zip(&numeric[k]).enumerate() {
                let tol = 1e-6 * (1.0 + nu.abs());
                assert!(
                    (an - nu).abs() < tol,
                    "chunk {chunk:?}: d loss / d {name}[{i}]: autodiff {an}, finite diff {nu}"
                );
            }
        }
    }
}

#[test]
fn parameter_count_of_mamba_130m() {
    // From the HF tensor shapes (d 768, E 1536, N 16, R 48, K 4):
    let (d, e, n, r, k) = (768, 1536, 16, 48, 4);
    let block = d // norm.weight
        + 2 * e * d // in_proj.weight [2E, d]
        + e * k + e // conv1d.weight [E, 1, K], conv1d.bias [E]
        + (r + 2 * n) * e // x_proj.weight [R + 2N, E]
        + e * r + e // dt_proj.weight [E, R], dt_proj.bias [E]
        + e * n + e // A_log [E, N], D [E]
        + d * e; // out_proj.weight [d, E]
    let total = 50280 * d + 24 * block + d; // tied head
    assert_eq!(total, 129_135_360);
    let cfg = MambaConfig::mamba_130m();
    assert_eq!(cfg.num_params(), total);
    let model: Mamba<B> = cfg.init(&Default::default());
    assert_eq!(model.num_params(), total);
}

#[test]
fn analytic_count_equals_module_count_tiny_variants() {
    for (tied, bias, conv_bias) in [
        (true, false, true),
        (false, false, true),
        (true, true, false),
        (false, true, true),
    ] {
        let cfg = MambaConfig {
            tie_word_embeddings: tied,
            use_bias: bias,
            use_conv_bias: conv_bias,
            ..tiny()
        };
        let model: Mamba<B> = cfg.init(&Default::default());
        assert_eq!(
            cfg.num_params(),
            model.num_params(),
            "{tied} {bias} {conv_bias}"
        );
        let layout: usize = model
            .hf_layout()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(layout, cfg.num_params());
    }
}

#[test]
fn flops_per_token_formula() {
    let c = MambaConfig::mamba_130m();
    let block: u64 = 768 * 3072 + 1536 * 80 + 48 * 1536 + 1536 * 768;
    let n_matmul = 24 * block + 50280 * 768;
    assert_eq!(
        c.flops_per_token(),
        6 * n_matmul + 6 * 24 * 1536 * (3 * 16 + 4)
    );
}

/// burn module paths are the HF names minus `backbone.`.
#[test]
fn module_paths_are_hf_names() {
    for cfg in [
        tiny(),
        MambaConfig {
            tie_word_embeddings: false,
            use_bias: true,
            ..tiny()
        },
    ] {
        let model: Mamba<B> = cfg.init(&Default::default());
        let paths = param_paths(&model);
        let mut burn_names: Vec<String> = paths.iter().map(|(n, _, _)| n.clone()).collect();
        let mut hf_names: Vec<String> = model
            .hf_layout()
            .into_iter()
            .map(|(n, _)| n.trim_start_matches("backbone.").to_string())
            .collect();
        burn_names.sort();
        hf_names.sort();
        assert_eq!(burn_names, hf_names);
    }
}

#[test]
fn logits_shape_and_causality() {
    let model = tiny().init::<B>(&Default::default());
    let a = model.forward(ids(&[&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]]));
    assert_eq!(a.dims(), [2, 5, 61]);
    let b = model.forward(ids(&[&[1, 2, 3, 4, 42], &[6, 7, 8, 9, 10]]));
    let (a, b) = (to_vec(a), to_vec(b));
    let row = 5 * 61;
    assert!(
        max_abs_diff(&a[..4 * 61], &b[..4 * 61]) < 1e-6,
        "future token changed past logits"
    );
    assert!(max_abs_diff(&a[4 * 61..row], &b[4 * 61..row]) > 1e-3);
    assert!(
        max_abs_diff(&a[row..], &b[row..]) < 1e-6,
        "rows are independent"
    );
}

#[test]
fn sequential_and_chunked_models_agree() {
    let chunked = tiny().init::<B>(&Default::default());
    let sequential = chunked.clone().with_scan(ScanMode::Sequential);
    let x = ids(&[&[
        3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6,
    ]]);
    let diff = max_abs_diff(
        &to_vec(chunked.forward(x.clone())),
        &to_vec(sequential.forward(x)),
    );
    assert!(diff < 1e-5, "max diff {diff}");
}

#[test]
fn cached_decoding_equals_full_forward() {
    // Chunk 3: the prefill of 4 is padded and carried across chunks.
    let model = tiny()
        .init::<B>(&Default::default())
        .with_scan(ScanMode::Chunked { chunk: 3 });
    let tokens: [&[i64]; 2] = [
        &[3, 1, 4, 1, 5, 9, 2, 6, 5, 3],
        &[2, 7, 1, 8, 2, 8, 1, 8, 2, 8],
    ];
    let full = to_vec(model.forward(ids(&tokens))); // [2, 10, 61]
    let v = 61;
    let slice = |from: usize, to: usize| -> Vec<f32> {
        (0..2)
            .flat_map(|b| full[(b * 10 + from) * v..(b * 10 + to) * v].to_vec())
            .collect()
    };
    let mut cache = model.new_cache(2);
    let mut pos = 0;
    for step in [4, 2, 1, 1, 1, 1] {
        let chunk: Vec<Vec<i64>> = tokens.iter().map(|r| r[pos..pos + step].to_vec()).collect();
        let chunk: Vec<&[i64]> = chunk.iter().map(|r| r.as_slice()).collect();
        let logits = to_vec(model.forward_cached(ids(&chunk), &mut cache));
        let diff = max_abs_diff(&logits, &slice(pos, pos + step));
        assert!(
            diff < 1e-4,
            "positions {pos}..{}: max diff {diff}",
            pos + step
        );
        pos += step;
        assert_eq!(cache.seq_len(), pos);
    }
}

/// Greedy generation one token at a time through the cache; the full forward on the generated
/// sequence gives the same logits at every position.
#[test]
fn greedy_generation_matches_full_forward() {
    let model = tiny().init::<B>(&Default::default());
    let v = 61;
    let mut seq: Vec<i64> = vec![7, 3];
    let mut cache = model.new_cache(1);
    let mut step_logits = to_vec(model.forward_cached(ids(&[&seq]), &mut cache));
    let mut last = step_logits[v..].to_vec();
    for _ in 0..10 {
        let next = last
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m })
            .0 as i64;
        seq.push(next);
        last = to_vec(model.forward_cached(ids(&[&[next]]), &mut cache));
        step_logits.extend_from_slice(&last);
    }
    let full = to_vec(model.forward(ids(&[&seq[..seq.len() - 1]])));
    let diff = max_abs_diff(&full, &step_logits[..full.len()]);
    assert!(diff < 1e-4, "max diff {diff}");
    // The states keep their size: conv [b, E, K − 1], ssm [b, E, N].
    let state = cache.layers[0].as_ref().expect("state");
    assert_eq!(state.conv.dims(), [1, 32, 3]);
    assert_eq!(state.ssm.dims(), [1, 32, 4]);
}

#[test]
fn init_follows_reference_rules() {
    let cfg = MambaConfig {
        hidden_size: 64,
        time_step_rank: 16,
        state_size: 8,
        ..tiny()
    };
    let model = cfg.init::<B>(&Default::default());
    let m = &model.layers[0].mixer;
    let (e, n) = (128, 8);
    let a_log = to_vec(m.A_log.val());
    for i in 0..e {
        for j in 0..n {
            assert!((a_log[i * n + j] - ((j + 1) as f32).ln()).abs() < 1e-6);
        }
    }
    assert!(to_vec(m.D.val()).iter().all(|&d| d == 1.0));
    // softplus(dt bias) is the initial step size: log-uniform in [1e-3, 0.1].
    let bias = to_vec(m.dt_proj.bias.as_ref().expect("dt bias").val());
    let dts: Vec<f64> = bias.iter().map(|&b| (b as f64).exp().ln_1p()).collect();
    assert!(
        dts.iter().all(|&dt| (0.999e-3..=0.1001).contains(&dt)),
        "{dts:?}"
    );
    let mean_log = dts.iter().map(|dt| dt.ln()).sum::<f64>() / e as f64;
    let mid = (1e-3f64.ln() + 0.1f64.ln()) / 2.0;
    assert!(
        (mean_log - mid).abs() < 0.5,
        "mean ln Δ {mean_log} vs {mid}"
    );
    let max_abs =
        |p: &Param<Tensor<B, 2>>| to_vec(p.val()).iter().fold(0f32, |m, v| m.max(v.abs()));
    let dt_w = max_abs(&m.dt_proj.weight);
    assert!(
        dt_w <= 0.25 && dt_w > 0.2,
        "dt_proj bound 1/sqrt(16): {dt_w}"
    );
    let in_w = max_abs(&m.in_proj.weight);
    assert!(
        in_w <= 0.125 && in_w > 0.11,
        "in_proj bound 1/sqrt(64): {in_w}"
    );
    let conv = to_vec(m.conv1d.weight.val());
    assert!(conv.iter().all(|w| w.abs() <= 0.5), "conv bound 1/sqrt(K)");
    assert!(to_vec(model.norm_f.weight.val()).iter().all(|&w| w == 1.0));
    // Clones of a fresh model are identical (parameters are created eagerly).
    let copy = model.clone();
    let x = ids(&[&[1, 2, 3]]);
    assert_eq!(to_vec(copy.forward(x.clone())), to_vec(model.forward(x)));
}

#[test]
fn hf_tensors_round_trip() {
    for cfg in [
        tiny(),
        MambaConfig {
            tie_word_embeddings: false,
            use_bias: true,
            ..tiny()
        },
    ] {
        let device = Default::default();
        let model: Mamba<B> = cfg.init(&device);
        let tensors = model.to_hf_tensors();
        let layout = model.hf_layout();
        let got: Vec<(String, Vec<usize>)> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        assert_eq!(got, layout);
        assert_eq!(tensors[0].name, "backbone.embeddings.weight");

        // Linear weights are written [out, in]: in_proj row j is burn column j.
        let in_proj = tensors
            .iter()
            .find(|t| t.name == "backbone.layers.0.mixer.in_proj.weight")
            .expect("in_proj");
        let burn_w = to_vec(model.layers[0].mixer.in_proj.weight.val()); // [d, 2E]
        assert_eq!(in_proj.data[1], burn_w[64]); // HF [0, 1] = burn [1, 0] (2E = 64)

        let map: HashMap<String, HfTensor> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        let fresh: Mamba<B> = cfg.init(&device);
        let x = ids(&[&[5, 4, 3, 2, 1, 0, 60]]);
        assert!(
            max_abs_diff(
                &to_vec(fresh.forward(x.clone())),
                &to_vec(model.forward(x.clone()))
            ) > 1e-3
        );
        let loaded = fresh.load_hf_tensors(&map).expect("load");
        assert_eq!(loaded.to_hf_tensors(), tensors);
        assert_eq!(to_vec(loaded.forward(x.clone())), to_vec(model.forward(x)));

        // Errors name the tensor.
        let mut missing = map.clone();
        missing.remove("backbone.layers.1.mixer.A_log");
        let err = cfg
            .init::<B>(&device)
            .load_hf_tensors(&missing)
            .unwrap_err();
        assert!(
            matches!(&err, ArchError::MissingTensor { name } if name == "backbone.layers.1.mixer.A_log"),
            "{err}"
        );
        let mut bad = map.clone();
        bad.get_mut("backbone.layers.0.mixer.conv1d.weight")
            .expect("conv")
            .shape = vec![32, 4, 1];
        let err = cfg.init::<B>(&device).load_hf_tensors(&bad).unwrap_err();
        assert!(matches!(err, ArchError::ShapeMismatch { .. }), "{err}");
        let mut extra = map.clone();
        extra.insert(
            "backbone.layers.9.norm.weight".into(),
            HfTensor {
                name: "backbone.layers.9.norm.weight".into(),
                shape: vec![16],
                data: vec![1.0; 16],
            },
        );
        let err = cfg.init::<B>(&device).load_hf_tensors(&extra).unwrap_err();
        assert!(matches!(err, ArchError::UnexpectedTensors { .. }), "{err}");
    }

    // A tied checkpoint that carries `lm_head.weight` (equal to the embedding) is accepted.
    let model: Mamba<B> = tiny().init(&Default::default());
    let mut map: HashMap<String, HfTensor> = model
        .to_hf_tensors()
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let embed = map["backbone.embeddings.weight"].clone();
    map.insert(
        "lm_head.weight".into(),
        HfTensor {
            name: "lm_head.weight".into(),
            ..embed
        },
    );
    assert!(tiny()
        .init::<B>(&Default::default())
        .load_hf_tensors(&map)
        .is_ok());
}

#[test]
fn hf_config_round_trip_and_real_config() {
    for cfg in [
        tiny(),
        MambaConfig::mamba_130m(),
        MambaConfig {
            use_bias: true,
            tie_word_embeddings: false,
            rescale_prenorm_residual: true,
            ..tiny()
        },
    ] {
        let json = cfg.to_hf_config(0, 0, "float32");
        assert_eq!(json["model_type"], "mamba");
        assert_eq!(json["architectures"][0], "MambaForCausalLM");
        assert_eq!(MambaConfig::from_hf_config(&json).expect("parse"), cfg);
    }
    // The shape of `state-spaces/mamba-130m-hf`'s config.json (abridged).
    let real = serde_json::json!({
        "architectures": ["MambaForCausalLM"], "model_type": "mamba", "vocab_size": 50280,
        "hidden_size": 768, "state_size": 16, "num_hidden_layers": 24, "expand": 2,
        "intermediate_size": 1536, "conv_kernel": 4, "time_step_rank": 48,
        "layer_norm_epsilon": 1e-5, "use_bias": false, "use_conv_bias": true,
        "hidden_act": "silu", "initializer_range": 0.1, "residual_in_fp32": true,
        "time_step_init_scheme": "random", "bos_token_id": 0, "eos_token_id": 0,
        "pad_token_id": 0, "torch_dtype": "float32"
    });
    assert_eq!(
        MambaConfig::from_hf_config(&real).expect("parse"),
        MambaConfig::mamba_130m()
    );
    let mut auto = real.clone();
    auto["time_step_rank"] = "auto".into();
    auto["hidden_size"] = 100.into();
    auto.as_object_mut()
        .expect("object")
        .remove("intermediate_size");
    assert_eq!(
        MambaConfig::from_hf_config(&auto)
            .expect("parse")
            .time_step_rank,
        7
    );

    let mut gelu = real.clone();
    gelu["hidden_act"] = "gelu".into();
    let err = MambaConfig::from_hf_config(&gelu).unwrap_err();
    assert!(matches!(&err, ArchError::UnsupportedConfig { key, .. } if key == "hidden_act"));
    let mut inner = real.clone();
    inner["intermediate_size"] = 1000.into();
    let err = MambaConfig::from_hf_config(&inner).unwrap_err();
    assert!(matches!(&err, ArchError::InvalidConfig { key, .. } if key == "intermediate_size"));
    let mut llama = real;
    llama["model_type"] = "llama".into();
    assert!(MambaConfig::from_hf_config(&llama).is_err());
}

#[test]
fn recipe_serde_defaults_and_validation() {
    let cfg: MambaConfig = serde_json::from_str(
        r#"{"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, "time_step_rank": 4}"#,
    )
    .expect("parse");
    assert_eq!((cfg.state_size, cfg.expand, cfg.conv_kernel), (16, 2, 4));
    assert!(cfg.tie_word_embeddings && cfg.use_conv_bias && !cfg.use_bias);
    assert_eq!(cfg.initializer_range, 0.1);
    let back: MambaConfig =
        serde_json::from_value(serde_json::to_value(&cfg).expect("json")).expect("round trip");
    assert_eq!(back, cfg);
    let unknown = serde_json::from_str::<MambaConfig>(
        r#"{"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, "time_step_rank": 4,
            "stat_size": 8}"#,
    );
    assert!(unknown.unwrap_err().to_string().contains("stat_size"));
    for (bad, key) in [
        (
            MambaConfig {
                conv_kernel: 1,
                ..tiny()
            },
            "conv_kernel",
        ),
        (
            MambaConfig {
                state_size: 0,
                ..tiny()
            },
            "state_size",
        ),
        (
            MambaConfig {
                time_step_max: 1e-4,
                ..tiny()
            },
            "time_step_max",
        ),
    ] {
        let err = bad.validate().unwrap_err();
        assert!(
            matches!(&err, ArchError::InvalidConfig { key: k, .. } if k == key),
            "{err}"
        );
    }
}

#[test]
fn every_parameter_gets_a_finite_gradient() {
    struct Check<'a> {
        grads: &'a <AB as AutodiffBackend>::Gradients,
        checked: usize,
    }
    impl ModuleVisitor<AB> for Check<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            let g = to_vec(param.val().grad(self.grads).expect("gradient"));
            assert!(g.iter().all(|x| x.is_finite()), "non-finite gradient");
            assert!(g.iter().any(|x| *x != 0.0), "all-zero gradient");
            self.checked += 1;
        }
    }
    let cfg = MambaConfig {
        tie_word_embeddings: false,
        use_bias: true,
        ..tiny()
    };
    let model: Mamba<AB> = cfg.init(&Default::default());
    let input: Tensor<AB, 2, Int> = Tensor::from_inner(ids(&[&[1, 5, 9, 2, 7], &[7, 3, 3, 8, 1]]));
    let target: Tensor<AB, 2, Int> = Tensor::from_inner(ids(&[&[5, 9, 2, 4, 4], &[3, 3, 8, 0, 2]]));
    let grads = cross_entropy(model.forward(input), target).backward();
    let mut check = Check {
        grads: &grads,
        checked: 0,
    };
    model.visit(&mut check);
    assert_eq!(check.checked, model.hf_layout().len());
}

#[test]
fn tiny_mamba_trains() {
    let device = Default::default();
    let mut model: Mamba<AB> = tiny().init(&device);
    let mut optim = AdamConfig::new().init::<AB, Mamba<AB>>();
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
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(last < 0.5 * first, "loss {first} -> {last}: {losses:?}");
}

/// Forward + backward time of the two scan forms. Run with
/// `cargo test --release -p kiln-arch --test mamba -- --ignored --nocapture scan_timing`.
#[test]
#[ignore]
fn scan_timing() {
    let (bs, e, n) = (2, 64, 16);
    let time = |l: usize, chunk: Option<usize>| {
        let s = scan_inputs(bs, l, e, n, 3);
        let run = || {
            let x = tensor_of::<AB, 3>(s.x.clone(), [bs, l, e]).require_grad();
            let dt = tensor_of::<AB, 3>(s.dt.clone(), [bs, l, e]).require_grad();
            let a = tensor_of::<AB, 2>(s.a.clone(), [e, n]).require_grad();
            let b = tensor_of::<AB, 3>(s.b.clone(), [bs, l, n]).require_grad();
            let c = tensor_of::<AB, 3>(s.c.clone(), [bs, l, n]).require_grad();
            let (y, _) = match chunk {
                None => selective_scan_sequential(x.clone(), dt, a, b, c, None, None),
                Some(chunk) => selective_scan_chunked(x.clone(), dt, a, b, c, None, chunk, None),
            };
            let grads = y.sum().backward();
            to_vec(x.grad(&grads).expect("grad"))[0]
        };
        run(); // warm-up
        let reps = 3;
        let start = Instant::now();
        for _ in 0..reps {
            run();
        }
        start.elapsed().as_secs_f64() * 1e3 / reps as f64
    };
    println!("scan fwd+bwd, b={bs} E={e} N={n}: ms per call");
    let chunks = [2, 4, 8, 16];
    print!("{:>6} {:>12}", "seq", "sequential");
    for c in chunks {
        print!(" {:>10}", format!("chunk {c}"));
    }
    println!();
    for l in [64, 128, 256, 512, 1024] {
        print!("{l:>6} {:>12.1}", time(l, None));
        for c in chunks {
            print!(" {:>10.1}", time(l, Some(c)));
        }
        println!();
    }
}

/// Per-block activation checkpointing gives the same loss and the same gradient for every
/// parameter as the plain backward pass (tied and untied head).
#[test]
fn checkpointed_backward_equals_plain_backward() {
    for tie in [true, false] {
        let cfg = MambaConfig {
            tie_word_embeddings: tie,
            ..tiny()
        };
        let model: kiln_arch::Model<AB> =
            kiln_arch::ModelConfig::Mamba(cfg).init(&Default::default());
        let (n, rel) = assert_checkpointed_equals_plain(&model, 61);
        println!("mamba tied={tie}: {n} parameters, max relative diff {rel:e}");
    }
}
