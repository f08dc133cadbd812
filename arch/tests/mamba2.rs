//! Mamba-2 (SSD) module tests that need no fixture: the chunked form against the sequential
//! reference (values, final states, gradients; lengths that are not a multiple of the chunk), the
//! cache, the analytic parameter count, init, config parsing and HF import/export round trips.

mod common;

use std::collections::HashMap;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use common::*;
use kiln_arch::mamba2::{ssd_chunked, ssd_fused, ssd_sequential, SsdMode};
use kiln_arch::{ArchError, HfModel, HfTensor, Mamba2, Mamba2Config, Segments};
use serde_json::json;

type AB = Autodiff<B>;

fn tiny() -> Mamba2Config {
    Mamba2Config {
        state_size: 8,
        n_groups: 2,
        chunk_size: 4,
        initializer_range: 0.4,
        ..Mamba2Config::new(53, 24, 2, 6, 8)
    }
}

fn rand<Bk: Backend, const D: usize>(shape: [usize; D], seed: u64, scale: f32) -> Tensor<Bk, D> {
    let n = shape.iter().product();
    let data: Vec<f32> = pseudo_random(n, seed).iter().map(|x| x * scale).collect();
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

/// Inputs of an SSD call: x, Δ > 0, A < 0, B, C, h0.
#[allow(clippy::type_complexity)]
fn ssd_inputs<Bk: Backend>(
    b: usize,
    l: usize,
    h: usize,
    p: usize,
    g: usize,
    n: usize,
    seed: u64,
) -> (
    Tensor<Bk, 4>,
    Tensor<Bk, 3>,
    Tensor<Bk, 1>,
    Tensor<Bk, 4>,
    Tensor<Bk, 4>,
    Tensor<Bk, 4>,
) {
    let x = rand([b, l, h, p], seed, 1.0);
    let dt = rand::<Bk, 3>([b, l, h], seed + 1, 1.0)
        .exp()
        .mul_scalar(0.3);
    let a = rand::<Bk, 1>([h], seed + 2, 1.0).exp().neg();
    let bb = rand([b, l, g, n], seed + 3, 1.0);
    let c = rand([b, l, g, n], seed + 4, 1.0);
    let h0 = rand([b, h, p, n], seed + 5, 0.5);
    (x, dt, a, bb, c, h0)
}

#[derive(Clone, Copy, Debug)]
enum Form {
    Sequential,
    Chunked(usize),
    Fused,
}

/// `form`'s outputs and final state against the sequential reference.
fn check_values(form: Form, dims: (usize, usize, usize, usize, usize), with_h0: bool) {
    check_packed_values(form, dims, with_h0, None);
}

/// [`check_values`] for two rows that pack the documents `segments` describes.
fn check_packed_values(
    form: Form,
    (l, h, p, g, n): (usize, usize, usize, usize, usize),
    with_h0: bool,
    segments: Option<&Segments>,
) {
    let (x, dt, a, bb, c, h0) = ssd_inputs::<B>(2, l, h, p, g, n, l as u64);
    let h0 = with_h0.then_some(h0);
    let (ys, hs) = ssd_sequential(
        x.clone(),
        dt.clone(),
        a.clone(),
        bb.clone(),
        c.clone(),
        h0.clone(),
        segments,
    );
    let (yf, hf) = match form {
        Form::Chunked(chunk) => ssd_chunked(x, dt, a, bb, c, h0, chunk, segments),
        Form::Fused => ssd_fused(x, dt, a, bb, c, h0, segments),
        Form::Sequential => unreachable!("the reference itself"),
    };
    assert_eq!(yf.dims(), [2, l, h, p]);
    assert_eq!(hf.dims(), [2, h, p, n]);
    let dy = max_abs_diff(&to_vec(ys), &to_vec(yf));
    let dh = max_abs_diff(&to_vec(hs), &to_vec(hf));
    assert!(
        dy < 1e-4 && dh < 1e-4,
        "{form:?} g {g} l {l} h0 {with_h0} {segments:?}: y {dy}, state {dh}"
    );
}

/// With packed documents, every form resets the state where the sequential reference does
/// (which the model tests hold against each document run alone): documents within a chunk,
/// across chunk edges, of one token, starting at a chunk's first position.
#[test]
fn packed_forms_match_sequential() {
    let l = 13;
    let seg = Segments::from_lengths(l, &[vec![4, 1, 3, 5], vec![8, 5]]);
    for form in [
        Form::Chunked(1),
        Form::Chunked(4),
        Form::Chunked(5),
        Form::Fused,
    ] {
        for g in [1, 2] {
            for with_h0 in [false, true] {
                check_packed_values(form, (l, 4, 3, g, 5), with_h0, Some(&seg));
            }
        }
    }
}

#[test]
fn chunked_matches_sequential() {
    for l in [1, 5, 8, 13, 16, 21] {
        for chunk in [1, 3, 4, 8, 32] {
            for with_h0 in [false, true] {
                check_values(Form::Chunked(chunk), (l, 4, 3, 2, 5), with_h0);
            }
        }
    }
}

/// The fused CPU form (Mamba-1's scan kernel per group) against the sequential reference.
#[test]
fn fused_matches_sequential() {
    for g in [1, 2, 4] {
        for l in [1, 5, 13, 40] {
            for with_h0 in [false, true] {
                check_values(Form::Fused, (l, 4, 3, g, 5), with_h0);
            }
        }
    }
}

/// Splitting a sequence and carrying the state gives the whole-sequence result.
#[test]
fn ssd_state_carries_over() {
    let (l, h, p, g, n) = (13, 2, 3, 1, 4);
    let (x, dt, a, bb, c, _) = ssd_inputs::<B>(1, l, h, p, g, n, 99);
    let (y_all, h_all) = ssd_chunked(
        x.clone(),
        dt.clone(),
        a.clone(),
        bb.clone(),
        c.clone(),
        None,
        4,
        None,
    );
    let cut = |t: Tensor<B, 4>, s: usize, len: usize| t.narrow(1, s, len);
    let (y1, h1) = ssd_chunked(
        cut(x.clone(), 0, 6),
        dt.clone().narrow(1, 0, 6),
        a.clone(),
        cut(bb.clone(), 0, 6),
        cut(c.clone(), 0, 6),
        None,
        4,
        None,
    );
    let (y2, h2) = ssd_sequential(
        cut(x, 6, 7),
        dt.narrow(1, 6, 7),
        a,
        cut(bb, 6, 7),
        cut(c, 6, 7),
        Some(h1),
        None,
    );
    let y = Tensor::cat(vec![y1, y2], 1);
    assert!(max_abs_diff(&to_vec(y_all), &to_vec(y)) < 1e-4);
    assert!(max_abs_diff(&to_vec(h_all), &to_vec(h2)) < 1e-4);
}

#[test]
fn chunked_and_fused_gradients_match_sequential() {
    for g in [1, 2] {
        check_gradients(g);
    }
}

fn check_gradients(g: usize) {
    let (l, h, p, n) = (11, 4, 3, 5);
    // `with_state`: the loss also depends on the final state (the fused form returns it
    // detached, as Mamba-1's fused scan does: no gradient flows back through it).
    let grads = |form: Form, with_state: bool| -> Vec<Vec<f32>> {
        let (x, dt, a, bb, c, h0) = ssd_inputs::<AB>(2, l, h, p, g, n, 7);
        let (x, dt, a, bb, c, h0) = (
            x.require_grad(),
            dt.require_grad(),
            a.require_grad(),
            bb.require_grad(),
            c.require_grad(),
            h0.require_grad(),
        );
        let (xc, dtc, ac, bc, cc, h0c) = (
            x.clone(),
            dt.clone(),
            a.clone(),
            bb.clone(),
            c.clone(),
            Some(h0.clone()),
        );
        let (y, last) = match form {
            Form::Chunked(chunk) => ssd_chunked(xc, dtc, ac, bc, cc, h0c, chunk, None),
            Form::Sequential => ssd_sequential(xc, dtc, ac, bc, cc, h0c, None),
            Form::Fused => ssd_fused(xc, dtc, ac, bc, cc, h0c, None),
        };
        let w = rand::<AB, 4>([2, l, h, p], 3, 1.0);
        let loss = if with_state {
            (y * w).sum() + last.square().sum()
        } else {
            (y * w).sum()
        };
        let g = loss.backward();
        vec![
            to_vec(x.grad(&g).unwrap()),
            to_vec(dt.grad(&g).unwrap()),
            to_vec(a.grad(&g).unwrap()),
            to_vec(bb.grad(&g).unwrap()),
            to_vec(c.grad(&g).unwrap()),
            to_vec(h0.grad(&g).unwrap()),
        ]
    };
    for (form, with_state) in [(Form::Chunked(4), true), (Form::Fused, false)] {
        let reference = grads(Form::Sequential, with_state);
        for (i, (gs, gc)) in reference.iter().zip(&grads(form, with_state)).enumerate() {
            let scale = gs.iter().fold(1.0f32, |m, x| m.max(x.abs()));
            let d = max_abs_diff(gs, gc);
            assert!(
                d < 1e-4 * scale,
                "{form:?}, g {g}, input {i}: {d} (scale {scale})"
            );
        }
    }
}

#[test]
fn model_modes_agree_and_cache_matches_forward() {
    let cfg = tiny();
    let model: Mamba2<B> = cfg.init(&Default::default());
    let (b, l) = (2, 14);
    let ids: Vec<i64> = pseudo_random(b * l, 5)
        .iter()
        .map(|x| ((x + 1.0) * 26.0) as i64 % 53)
        .collect();
    let ids = Tensor::<B, 2, burn::tensor::Int>::from_data(
        TensorData::new(ids, [b, l]),
        &Default::default(),
    );
    let full = model.forward(ids.clone());
    assert_eq!(full.dims(), [b, l, 53]);
    let seq = model
        .clone()
        .with_scan(SsdMode::Sequential)
        .forward(ids.clone());
    assert!(max_abs_diff(&to_vec(full.clone()), &to_vec(seq)) < 1e-4);

    // Prompt of 5 (chunked from zeros), 3 single tokens, then 6 at once from the cached state.
    let mut cache = model.new_cache(b);
    let mut parts = vec![model.forward_cached(ids.clone().narrow(1, 0, 5), &mut cache)];
    for t in 5..8 {
        parts.push(model.forward_cached(ids.clone().narrow(1, t, 1), &mut cache));
    }
    parts.push(model.forward_cached(ids.narrow(1, 8, 6), &mut cache));
    assert_eq!(cache.seq_len(), l);
    let cached = Tensor::cat(parts, 1);
    let diff = max_abs_diff(&to_vec(full), &to_vec(cached));
    assert!(diff < 1e-4, "cached vs full: {diff}");
}

#[test]
fn num_params_is_analytic() {
    for (tied, bias, conv_bias, groups) in [
        (true, false, true, 1),
        (false, true, false, 2),
        (false, false, true, 3),
    ] {
        let cfg = Mamba2Config {
            tie_word_embeddings: tied,
            use_bias: bias,
            use_conv_bias: conv_bias,
            n_groups: groups,
            ..tiny()
        };
        let model: Mamba2<B> = cfg.init(&Default::default());
        assert_eq!(cfg.num_params(), model.num_params(), "{cfg:?}");
        let exported: usize = model.to_hf_tensors().iter().map(|t| t.data.len()).sum();
        assert_eq!(cfg.num_params(), exported);
    }
}

#[test]
fn init_follows_reference_rules() {
    let cfg = Mamba2Config {
        num_heads: 48,
        head_dim: 1,
        ..tiny()
    };
    let model: Mamba2<B> = cfg.init(&Default::default());
    for layer in &model.layers {
        let m = &layer.mixer;
        let a_log = to_vec(m.A_log.val());
        assert!(a_log
            .iter()
            .all(|&x| (0.0..=16f32.ln() + 1e-6).contains(&x)));
        assert!(a_log.iter().any(|&x| x > 1.0) && a_log.iter().any(|&x| x < 1.5));
        assert!(to_vec(m.D.val()).iter().all(|&x| x == 1.0));
        assert!(to_vec(m.norm.weight.val()).iter().all(|&x| x == 1.0));
        for b in to_vec(m.dt_bias.val()) {
            let dt = (b as f64).exp().ln_1p(); // softplus
            assert!(
                (cfg.time_step_min * 0.999..=cfg.time_step_max * 1.001).contains(&dt),
                "{dt}"
            );
        }
        let bound = 1.0 / (cfg.hidden_size as f32).sqrt();
        assert!(to_vec(m.in_proj.weight.val())
            .iter()
            .all(|x| x.abs() <= bound));
    }
}

#[test]
fn config_parsing_and_validation() {
    let cfg = tiny();
    // Serde (recipe form) and HF round trips.
    let text = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<Mamba2Config>(&text).unwrap(), cfg);
    let limited = Mamba2Config {
        time_step_limit: Some((0.0, 0.5)),
        ..cfg.clone()
    };
    assert_eq!(
        Mamba2Config::from_hf_config(&limited.to_hf_config(0, 0, "float32")).unwrap(),
        limited
    );
    assert_eq!(
        Mamba2Config::from_hf_config(&cfg.to_hf_config(0, 0, "bfloat16")).unwrap(),
        cfg
    );

    let base = cfg.to_hf_config(0, 0, "float32");
    let with = |key: &str, v: serde_json::Value| {
        let mut c = base.clone();
        c[key] = v;
        Mamba2Config::from_hf_config(&c)
    };
    assert!(matches!(
        with("model_type", json!("mamba")),
        Err(ArchError::UnsupportedConfig { .. })
    ));
    assert!(matches!(
        with("num_heads", json!(5)),
        Err(ArchError::InvalidConfig { .. })
    ));
    assert!(matches!(
        with("n_groups", json!(4)),
        Err(ArchError::InvalidConfig { .. })
    ));
    assert!(matches!(
        with("hidden_act", json!("gelu")),
        Err(ArchError::UnsupportedConfig { .. })
    ));
    assert!(matches!(
        with("norm_before_gate", json!(true)),
        Err(ArchError::UnsupportedConfig { .. })
    ));
    assert!(matches!(
        with("time_step_limit", json!([0.0])),
        Err(ArchError::InvalidConfig { .. })
    ));
    assert_eq!(
        with("time_step_limit", json!([0.0, null]))
            .unwrap()
            .time_step_limit,
        None
    );
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("head_dim");
    assert!(matches!(
        Mamba2Config::from_hf_config(&missing),
        Err(ArchError::MissingConfigKey { .. })
    ));
}

#[test]
fn hf_import_export_round_trip_and_errors() {
    let cfg = Mamba2Config {
        tie_word_embeddings: false,
        use_bias: true,
        ..tiny()
    };
    let a: Mamba2<B> = cfg.init(&Default::default());
    let b: Mamba2<B> = cfg.init(&Default::default());
    let tensors: HashMap<String, HfTensor> = a
        .to_hf_tensors()
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let loaded = b.clone().load_hf_tensors(&tensors).unwrap();
    let ids = ids(&[&[1, 2, 3, 4, 5, 6]]);
    assert_eq!(to_vec(a.forward(ids.clone())), to_vec(loaded.forward(ids)));

    let mut missing = tensors.clone();
    missing.remove("backbone.layers.1.mixer.dt_bias");
    assert!(matches!(
        b.clone().load_hf_tensors(&missing),
        Err(ArchError::MissingTensor { .. })
    ));
    let mut wrong = tensors.clone();
    wrong
        .get_mut("backbone.layers.0.mixer.A_log")
        .unwrap()
        .shape = vec![5];
    assert!(matches!(
        b.clone().load_hf_tensors(&wrong),
        Err(ArchError::ShapeMismatch { .. })
    ));
    let mut extra = tensors;
    extra.insert(
        "backbone.layers.0.mixer.x_proj.weight".into(),
        HfTensor {
            name: "backbone.layers.0.mixer.x_proj.weight".into(),
            shape: vec![1],
            data: vec![0.0],
        },
    );
    assert!(matches!(
        b.load_hf_tensors(&extra),
        Err(ArchError::UnexpectedTensors { .. })
    ));
}

/// Per-block activation checkpointing gives the same loss and the same gradient for every
/// parameter as the plain backward pass (tied and untied head).
#[test]
fn checkpointed_backward_equals_plain_backward() {
    for tie in [true, false] {
        let cfg = Mamba2Config {
            tie_word_embeddings: tie,
            ..tiny()
        };
        let model: kiln_arch::Model<AB> =
            kiln_arch::ModelConfig::Mamba2(cfg).init(&Default::default());
        let (n, rel) = assert_checkpointed_equals_plain(&model, 53);
        println!("mamba2 tied={tie}: {n} parameters, max relative diff {rel:e}");
    }
}
