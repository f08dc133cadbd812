//! Single-layer checks against hand-computed values and plain-Rust references.

mod common;

use common::*;
use kiln_arch::layers::{causal_attention, repeat_kv, rotate_half, ForwardCtx, RmsNorm, Rope};

/// Plain-Rust rotate-half RoPE of one head vector at position `p` (f64 maths).
fn rope_ref(x: &[f32], p: usize, theta: f64) -> Vec<f32> {
    let d = x.len();
    let h = d / 2;
    let mut out = vec![0.0; d];
    for j in 0..h {
        let angle = p as f64 * theta.powf(-2.0 * j as f64 / d as f64);
        let (s, c) = angle.sin_cos();
        out[j] = (x[j] as f64 * c - x[j + h] as f64 * s) as f32;
        out[j + h] = (x[j + h] as f64 * c + x[j] as f64 * s) as f32;
    }
    out
}

/// softmax(q·kᵀ·scale + causal mask)·v per head, query `i` at absolute position `t - s + i`.
/// `q`: `[h, s, hd]`, `k`/`v`: `[h, t, hd]` (flat). Returns `[h, s, hd]`.
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    h: usize,
    s: usize,
    t: usize,
    hd: usize,
) -> Vec<f32> {
    let scale = (hd as f64).powf(-0.5);
    let mut out = vec![0.0f32; h * s * hd];
    for head in 0..h {
        for i in 0..s {
            let pos = t - s + i;
            let scores: Vec<f64> = (0..=pos)
                .map(|j| {
                    (0..hd)
                        .map(|c| {
                            q[(head * s + i) * hd + c] as f64 * k[(head * t + j) * hd + c] as f64
                        })
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let z: f64 = exps.iter().sum();
            for c in 0..hd {
                let val: f64 = (0..=pos)
                    .map(|j| exps[j] / z * v[(head * t + j) * hd + c] as f64)
                    .sum();
                out[(head * s + i) * hd + c] = val as f32;
            }
        }
    }
    out
}

#[test]
fn rope_matches_hand_computed_values() {
    // head_dim 4, theta 10000: inv_freq = [1, 0.01]; x = [1, 2, 3, 4] at positions 0..4.
    let rope = Rope::<B>::new(10000.0, 4, 8, &Default::default());
    let x: Vec<f32> = (0..4).flat_map(|_| [1.0, 2.0, 3.0, 4.0]).collect();
    let out = to_vec(rope.apply(tensor(x, [1, 1, 4, 4]), 0));
    for p in 0..4 {
        let (a, b) = (p as f64, 0.01 * p as f64);
        let expected = [
            1.0 * a.cos() - 3.0 * a.sin(),
            2.0 * b.cos() - 4.0 * b.sin(),
            3.0 * a.cos() + 1.0 * a.sin(),
            4.0 * b.cos() + 2.0 * b.sin(),
        ];
        for (j, e) in expected.iter().enumerate() {
            assert!(
                (out[p * 4 + j] as f64 - e).abs() < 1e-5,
                "position {p} dim {j}: got {}, expected {e}",
                out[p * 4 + j]
            );
        }
    }
    // Position 0 is the identity; an offset selects the same rows as a longer sequence.
    assert_eq!(&out[..4], &[1.0, 2.0, 3.0, 4.0]);
    let at3 = to_vec(rope.apply(tensor(vec![1.0, 2.0, 3.0, 4.0], [1, 1, 1, 4]), 3));
    assert!(max_abs_diff(&at3, &out[12..16]) < 1e-6);
}

#[test]
fn rope_pairs_dim_i_with_i_plus_half() {
    let d = 8;
    let rope = Rope::<B>::new(10000.0, d, 4, &Default::default());
    for i in 0..d {
        let mut x = vec![0.0; d];
        x[i] = 1.0;
        let out = to_vec(rope.apply(tensor(x, [1, 1, 1, d]), 1));
        let partner = (i + d / 2) % d;
        for (j, v) in out.iter().enumerate() {
            if j != i && j != partner {
                assert_eq!(*v, 0.0, "unit vector {i} leaked into dim {j}");
            }
        }
        assert!(
            out[partner].abs() > 1e-6,
            "dim {i} must rotate into {partner}"
        );
    }
    // rotate_half([1..8]) = [-5, -6, -7, -8, 1, 2, 3, 4].
    let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
    assert_eq!(
        to_vec(rotate_half(tensor(x, [1, 8]))),
        vec![-5.0, -6.0, -7.0, -8.0, 1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn rope_beyond_the_table_matches_the_formula() {
    let rope = Rope::<B>::new(500.0, 6, 4, &Default::default());
    let x = pseudo_random(3 * 6, 1);
    let out = to_vec(rope.apply(tensor(x.clone(), [1, 1, 3, 6]), 3)); // positions 3, 4, 5
    for p in 0..3 {
        let e = rope_ref(&x[p * 6..(p + 1) * 6], 3 + p, 500.0);
        assert!(max_abs_diff(&out[p * 6..(p + 1) * 6], &e) < 1e-5);
    }
}

#[test]
fn rms_norm_matches_formula() {
    let mut norm = RmsNorm::<B>::new(4, 1e-5, &Default::default());
    norm.weight = burn::module::Param::from_tensor(tensor(vec![1.0, 2.0, 0.5, -1.0], [4]));
    let x = vec![1.0, -2.0, 3.0, 0.5, 0.1, 0.2, 0.3, 0.4];
    let out = to_vec(norm.forward(tensor(x.clone(), [2, 4])));
    for r in 0..2 {
        let row = &x[r * 4..(r + 1) * 4];
        let ms: f64 = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 4.0;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        for (c, w) in [1.0, 2.0, 0.5, -1.0].iter().enumerate() {
            let e = w * row[c] as f64 * inv;
            assert!((out[r * 4 + c] as f64 - e).abs() < 1e-5);
        }
    }
}

#[test]
fn repeat_kv_maps_query_head_to_kv_head_over_group() {
    // 2 kv heads with distinct constant values, 3 query heads per kv head.
    let kv = tensor(vec![10.0, 10.0, 20.0, 20.0], [1, 2, 1, 2]); // [b, n_kv, t, hd]
    let rep = repeat_kv(kv, 3); // [1, 6, 1, 2]
    assert_eq!(rep.dims(), [1, 6, 1, 2]);
    let v = to_vec(rep);
    for h in 0..6 {
        let expected = if h / 3 == 0 { 10.0 } else { 20.0 };
        assert_eq!(v[h * 2], expected, "query head {h}");
    }
}

#[test]
fn causal_attention_matches_manual_softmax() {
    let (h, hd) = (2, 4);
    for (s, t) in [(5, 5), (1, 5), (3, 5), (2, 2)] {
        let q = pseudo_random(h * s * hd, 10 + s as u64);
        let k = pseudo_random(h * t * hd, 20 + t as u64);
        let v = pseudo_random(h * t * hd, 30 + t as u64);
        let out = causal_attention(
            tensor(q.clone(), [1, h, s, hd]),
            tensor(k.clone(), [1, h, t, hd]),
            tensor(v.clone(), [1, h, t, hd]),
        );
        let expected = attention_ref(&q, &k, &v, h, s, t, hd);
        let diff = max_abs_diff(&to_vec(out), &expected);
        assert!(diff < 1e-5, "s={s} t={t}: max diff {diff}");
    }
}

#[test]
fn future_keys_do_not_influence_earlier_queries() {
    let (h, s, hd) = (1, 4, 4);
    let q = pseudo_random(h * s * hd, 1);
    let k = pseudo_random(h * s * hd, 2);
    let v = pseudo_random(h * s * hd, 3);
    let base = to_vec(causal_attention(
        tensor(q.clone(), [1, h, s, hd]),
        tensor(k.clone(), [1, h, s, hd]),
        tensor(v.clone(), [1, h, s, hd]),
    ));
    // Change the last key and value: rows 0..3 must not move, row 3 must.
    let (mut k2, mut v2) = (k, v);
    for c in 0..hd {
        k2[3 * hd + c] += 5.0;
        v2[3 * hd + c] -= 5.0;
    }
    let changed = to_vec(causal_attention(
        tensor(q, [1, h, s, hd]),
        tensor(k2, [1, h, s, hd]),
        tensor(v2, [1, h, s, hd]),
    ));
    assert_eq!(&base[..3 * hd], &changed[..3 * hd]);
    assert!(max_abs_diff(&base[3 * hd..], &changed[3 * hd..]) > 1e-3);
}

/// The whole attention layer (projections, head layout, RoPE, GQA, causal softmax, o_proj)
/// against a plain-Rust reference, with a cached prefix.
#[test]
fn attention_layer_matches_reference_with_gqa_and_cache() {
    let cfg = tiny_config(); // 4 query heads, 2 kv heads, head_dim 8, d 32
    let model = cfg.init::<B>(&Default::default());
    let attn = &model.layers[0].self_attn;
    let rope = &model.rotary_emb;
    let (d, nh, nkv, hd) = (32, 4, 2, 8);
    let (s_past, s) = (3, 2);
    let t = s_past + s;
    let x_all = pseudo_random(t * d, 7); // [t, d]

    // kiln: prefill 3 positions, then attend 2 more against the cache.
    let (_, cache) = attn.forward(
        tensor(x_all[..s_past * d].to_vec(), [1, s_past, d]),
        rope,
        None,
        &ForwardCtx::default(),
    );
    assert_eq!(cache.len(), s_past);
    let (out, cache) = attn.forward(
        tensor(x_all[s_past * d..].to_vec(), [1, s, d]),
        rope,
        Some(cache),
        &ForwardCtx::default(),
    );
    assert_eq!(cache.len(), t);
    let out = to_vec(out); // [s, d]

    // Reference. burn Linear weights are [in, out].
    let w = |lin: &kiln_arch::Linear<B>| to_vec(lin.weight.val());
    let (wq, wk, wv, wo) = (
        w(&attn.q_proj),
        w(&attn.k_proj),
        w(&attn.v_proj),
        w(&attn.o_proj),
    );
    let matmul = |x: &[f32], wt: &[f32], n_in: usize, n_out: usize| -> Vec<f32> {
        let rows = x.len() / n_in;
        let mut y = vec![0.0; rows * n_out];
        for r in 0..rows {
            for o in 0..n_out {
                y[r * n_out + o] = (0..n_in).map(|i| x[r * n_in + i] * wt[i * n_out + o]).sum();
            }
        }
        y
    };
    let q = matmul(&x_all, &wq, d, nh * hd); // [t, nh*hd]
    let k = matmul(&x_all, &wk, d, nkv * hd); // [t, nkv*hd]
    let v = matmul(&x_all, &wv, d, nkv * hd);
    // Regroup to [heads, pos, hd], rotating q and k; query head h reads kv head h / (nh/nkv).
    let mut qh = vec![0.0; nh * s * hd];
    for h in 0..nh {
        for i in 0..s {
            let p = s_past + i;
            let row = &q[p * nh * hd + h * hd..p * nh * hd + (h + 1) * hd];
            qh[(h * s + i) * hd..(h * s + i + 1) * hd].copy_from_slice(&rope_ref(row, p, 10000.0));
        }
    }
    let mut kh = vec![0.0; nh * t * hd];
    let mut vh = vec![0.0; nh * t * hd];
    for h in 0..nh {
        let g = h / (nh / nkv);
        for p in 0..t {
            let row = &k[p * nkv * hd + g * hd..p * nkv * hd + (g + 1) * hd];
            kh[(h * t + p) * hd..(h * t + p + 1) * hd].copy_from_slice(&rope_ref(row, p, 10000.0));
            vh[(h * t + p) * hd..(h * t + p + 1) * hd]
                .copy_from_slice(&v[p * nkv * hd + g * hd..p * nkv * hd + (g + 1) * hd]);
        }
    }
    let y = attention_ref(&qh, &kh, &vh, nh, s, t, hd); // [nh, s, hd]
    let mut merged = vec![0.0; s * nh * hd]; // [s, nh*hd]
    for h in 0..nh {
        for i in 0..s {
            merged[i * nh * hd + h * hd..i * nh * hd + (h + 1) * hd]
                .copy_from_slice(&y[(h * s + i) * hd..(h * s + i + 1) * hd]);
        }
    }
    let expected = matmul(&merged, &wo, nh * hd, d);
    let diff = max_abs_diff(&out, &expected);
    assert!(diff < 1e-4, "attention layer vs reference: max diff {diff}");
}
