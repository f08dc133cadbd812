//! Attention on the CPU backend, three ways, same maths (rotate-half RoPE on q and k, then causal
//! grouped-query softmax attention, scale `head_dim^-0.5`): `cargo bench -p kiln-arch --bench attention`.
//!
//! - `kiln fused`: [`kiln_arch::layers::rope_attention`], kiln's kernel (causal half only, GQA
//!   heads stacked, no `[s, s]` tensor kept; a hand-written backward under autodiff). What
//!   training and evaluation run on `flex` in f32.
//! - `burn attention`: `Rope::apply` + `repeat_kv` + `burn::tensor::module::attention` with
//!   `is_causal`. Without autodiff, `flex`'s own fused kernel; under `Autodiff` burn 0.21 always
//!   runs its unfused fallback (`burn-autodiff`'s `attention` calls `attention_fallback`). What
//!   kiln runs for cached decoding, and on every other backend.
//! - `materialized`: the same with `attention_fallback` (scores `[b, h, s, s]`, mask, softmax,
//!   matmul with V), i.e. the textbook path.
//!
//! Inference times the forward pass on `Flex`; training times forward + backward of
//! `sum(out · g)` on `Autodiff<Flex>` (gradients of q, k and v). Medians of `KILN_BENCH_REPS`
//! (default 5) after one warm-up; `RAYON_NUM_THREADS` (default: all cores) sizes the thread pools.

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::module::{attention, attention_fallback};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};
use kiln_arch::layers::{repeat_kv, rope_attention};
use kiln_arch::Rope;

/// One attention shape: batch, sequence, query heads, kv heads, head dimension.
struct Shape {
    name: &'static str,
    b: usize,
    s: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "quickstart (b 32, s 128, 4/2 heads × 32)",
        b: 32,
        s: 128,
        nh: 4,
        nkv: 2,
        hd: 32,
    },
    Shape {
        name: "cpu-20m (b 8, s 512, 6/2 heads × 64)",
        b: 8,
        s: 512,
        nh: 6,
        nkv: 2,
        hd: 64,
    },
    Shape {
        name: "smollm-135m (b 1, s 2048, 9/3 heads × 64)",
        b: 1,
        s: 2048,
        nh: 9,
        nkv: 3,
        hd: 64,
    },
];

#[derive(Clone, Copy, PartialEq)]
enum Path {
    KilnFused,
    BurnAttention,
    Materialized,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::KilnFused => "kiln fused",
            Path::BurnAttention => "burn attention",
            Path::Materialized => "materialized",
        }
    }
}

/// `q` `[b, s, nh·hd]`, `k`/`v` `[b, s, nkv·hd]` -> `[b, s, nh·hd]` along `path`.
fn run<B: Backend>(
    path: Path,
    sh: &Shape,
    rope: &Rope<B>,
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let (b, s, nh, nkv, hd) = (sh.b, sh.s, sh.nh, sh.nkv, sh.hd);
    if path == Path::KilnFused {
        let tables = Some((rope.cos.clone(), rope.sin.clone()));
        return rope_attention(q, k, v, tables, None, nh, nkv, hd);
    }
    let heads = |t: Tensor<B, 3>, h: usize| t.reshape([b, s, h, hd]).swap_dims(1, 2); // [b, h, s, hd]
    let q = rope.apply(heads(q, nh), 0);
    let k = repeat_kv(rope.apply(heads(k, nkv), 0), nh / nkv); // [b, nh, s, hd]
    let v = repeat_kv(heads(v, nkv), nh / nkv);
    let options = AttentionModuleOptions {
        scale: Some((hd as f64).powf(-0.5)),
        softcap: None,
        is_causal: true,
    };
    let y = match path {
        Path::BurnAttention => attention(q, k, v, None, None, options),
        _ => attention_fallback(q, k, v, None, None, options),
    }; // [b, nh, s, hd]
    y.swap_dims(1, 2).reshape([b, s, nh * hd])
}

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: first-touch allocations, thread pools
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

fn inputs<B: Backend>(sh: &Shape, device: &B::Device) -> [Tensor<B, 3>; 3] {
    let x = |h: usize| {
        Tensor::random(
            [sh.b, sh.s, h * sh.hd],
            Distribution::Normal(0.0, 1.0),
            device,
        )
    };
    [x(sh.nh), x(sh.nkv), x(sh.nkv)]
}

fn main() {
    let reps: usize = std::env::var("KILN_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let paths = [Path::KilnFused, Path::BurnAttention, Path::Materialized];
    println!("| shape | path | inference fwd ms | training fwd+bwd ms |");
    println!("|---|---|---:|---:|");
    for sh in SHAPES {
        let device = Default::default();
        let rope_plain = Rope::<Flex>::new(10_000.0, sh.hd, sh.s, &device);
        let rope_ad = Rope::<Autodiff<Flex>>::new(10_000.0, sh.hd, sh.s, &device);
        let [q, k, v] = inputs::<Flex>(sh, &device);
        let g = Tensor::<Autodiff<Flex>, 3>::random(
            [sh.b, sh.s, sh.nh * sh.hd],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let mut reference: Option<Tensor<Flex, 3>> = None;
        for path in paths {
            let infer = median_ms(reps, || {
                let y = run(path, sh, &rope_plain, q.clone(), k.clone(), v.clone());
                let _ = y.into_data(); // wait for the result
            });
            // All three compute the same values (checked here, so a wrong fast path cannot
            // look fast); the arch tests hold the precise comparisons.
            let y = run(path, sh, &rope_plain, q.clone(), k.clone(), v.clone());
            match &reference {
                None => reference = Some(y),
                Some(r) => {
                    let diff: f32 = (y - r.clone()).abs().max().into_scalar();
                    assert!(
                        diff < 1e-3,
                        "{} differs from kiln fused by {diff}",
                        path.label()
                    );
                }
            }
            let train = median_ms(reps, || {
                let leaf = |t: &Tensor<Flex, 3>| {
                    Tensor::<Autodiff<Flex>, 3>::from_inner(t.clone()).require_grad()
                };
                let (qa, ka, va) = (leaf(&q), leaf(&k), leaf(&v));
                let y = run(path, sh, &rope_ad, qa.clone(), ka.clone(), va.clone());
                let grads = (y * g.clone()).sum().backward();
                for t in [qa, ka, va] {
                    let _ = t.grad(&grads).expect("a gradient").into_data();
                }
            });
            println!(
                "| {} | {} | {infer:.1} | {train:.1} |",
                sh.name,
                path.label()
            );
        }
    }
}
