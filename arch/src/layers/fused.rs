//! Fused CPU kernels, with hand-written backward passes, for burn's `Flex` backend (plain, and
//! wrapped in `Autodiff`): RMSNorm, SwiGLU, and RoPE + causal GQA attention.
//!
//! Why: built from burn's tensor ops, each of these blocks is a chain of small element-wise ops,
//! each of which allocates a tensor, walks it single-threaded and records an autodiff node (whose
//! backward is again a chain of element-wise ops, some on strided views that force copies). Here
//! each block is one pass over its input (parallel over rows) and one custom autodiff node.
//!
//! Attention in particular (burn's autodiff runs the unfused fallback: scores, mask, max, exp,
//! sum, divide, each with its backward, on `[b, heads, s, s]` tensors) is computed per
//! `(batch, kv head)`, by blocks of 64 query positions against only the keys they can see (the
//! products are `gemm` calls), with the GQA query heads of a kv head stacked instead of
//! repeating K/V.
//!
//! The maths is the same as the generic code in `layers.rs` (same formulas, f32 throughout);
//! only the summation order of reductions and `exp` (a vectorisable Cephes polynomial, ~1 ulp)
//! differ. The unit tests below check values and gradients against the generic code. That code
//! is still what runs on any other backend (CUDA, wgpu) and for non-f32 tensors: callers check
//! [`enabled`] first.
//!
//! The backend is picked at run time by `TypeId`: `Model<B>` stays generic over `B: Backend`.
//! Threads: scoped std threads (`RAYON_NUM_THREADS` or all cores), inner loops compiled for
//! AVX-512 or AVX2 + FMA when the CPU has them (`simd.rs`).

use core::any::{Any, TypeId};
use core::ops::Range;
use std::sync::{Arc, OnceLock};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};

use super::Segments;
use crate::simd::{exp, simd};

/// The autodiff flavour of the CPU backend (the training backend).
pub(super) type Ad = Autodiff<Flex>;

/// Which fast path, if any, backend `B` gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    /// `Flex`: forward only.
    Plain,
    /// `Autodiff<Flex>`: forward + custom backward.
    Autodiff,
}

pub(super) fn kind<B: Backend>() -> Option<Kind> {
    let id = TypeId::of::<B>();
    if id == TypeId::of::<Flex>() {
        Some(Kind::Plain)
    } else if id == TypeId::of::<Ad>() {
        Some(Kind::Autodiff)
    } else {
        None
    }
}

/// `KILN_FUSED_KERNELS=0` turns the fused kernels off (burn's stock ops everywhere), to measure
/// what they bring or to rule them out when debugging; anything else, or unset, keeps them on.
fn switched_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("KILN_FUSED_KERNELS").map_or(true, |v| v.trim() != "0"))
}

/// True when the fused kernels apply: `B` is `Flex` or `Autodiff<Flex>`, `x` is f32, and they are
/// not switched off.
pub fn enabled<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    kind::<B>().is_some() && x.dtype() == DType::F32 && switched_on()
}

/// `Tensor<From, D>` → `Tensor<To, D>` when `From` and `To` are the same type (checked by the
/// callers through [`enabled`] / `TypeId`); panics otherwise.
pub fn recast<From: Backend, To: Backend, const D: usize>(t: Tensor<From, D>) -> Tensor<To, D> {
    let mut slot = Some(t);
    let any: &mut dyn Any = &mut slot;
    any.downcast_mut::<Option<Tensor<To, D>>>()
        .and_then(Option::take)
        .expect("fused: backend type mismatch")
}

pub(super) fn flex<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    t.into_primitive().tensor()
}

pub(super) fn from_flex<const D: usize>(t: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

pub(super) fn ad_prim<const D: usize>(t: Tensor<Ad, D>) -> FloatTensor<Ad> {
    t.into_primitive().tensor()
}

pub(super) fn from_ad_prim<const D: usize>(t: FloatTensor<Ad>) -> Tensor<Ad, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A contiguous f32 tensor of `shape` holding `data`.
pub(super) fn new_flex(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, Shape::from(shape.to_vec())))
}

/// The f32 elements of `t` in row-major order (a copy only when `t` is a strided view).
pub(super) fn with_f32<R>(t: &FlexTensor, f: impl FnOnce(&[f32]) -> R) -> R {
    match t.as_slice::<f32>() {
        Some(s) => f(s),
        None => f(t.to_contiguous().as_slice::<f32>().expect("contiguous f32")),
    }
}

// ---------------------------------------------------------------------------------------------
// Threads: the kernels split their rows over scoped threads (rayon is not a dependency here).

static NUM_THREADS: OnceLock<usize> = OnceLock::new();

/// Sizes the kernels' thread count (the trainer passes `train.threads`, which also sizes burn's
/// rayon pool). Must be called before the first kernel runs; returns false if it was too late.
pub fn set_num_threads(n: usize) -> bool {
    NUM_THREADS.set(n.max(1)).is_ok()
}

/// Worker threads for the kernels: the value given to [`set_num_threads`], else
/// `RAYON_NUM_THREADS` when set (as for burn's own kernels), else the available parallelism.
fn num_threads() -> usize {
    *NUM_THREADS.get_or_init(|| {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// Below this many element-operations a kernel stays on the calling thread (tests split even
/// tiny inputs, to exercise the threaded paths).
#[cfg(not(test))]
const MIN_WORK_PER_THREAD: usize = 64 * 1024;
#[cfg(test)]
const MIN_WORK_PER_THREAD: usize = 1;

/// Splits `0..n` into contiguous ranges, one per thread (fewer when the work is small).
pub(super) fn ranges(n: usize, work_per_item: usize) -> Vec<Range<usize>> {
    let by_work = (n.saturating_mul(work_per_item.max(1)) / MIN_WORK_PER_THREAD).max(1);
    let t = num_threads().min(by_work).min(n.max(1));
    let per = n.div_ceil(t.max(1));
    (0..t)
        .map(|i| (i * per).min(n)..((i + 1) * per).min(n))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Splits `buf` (rows of `row` elements; the last row may be short) into the pieces matching
/// `ranges`.
pub(super) fn split<'a>(
    mut buf: &'a mut [f32],
    row: usize,
    ranges: &[Range<usize>],
) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let (head, tail) = buf.split_at_mut((r.len() * row).min(buf.len()));
        out.push(head);
        buf = tail;
    }
    out
}

/// Runs `f` on every job, the first on this thread and the others on scoped threads, each under
/// [`simd`] (the kernels' closures are `#[inline(always)]` so that they are compiled for it).
pub(super) fn run<J: Send, R: Send>(jobs: Vec<J>, f: impl Fn(J) -> R + Sync) -> Vec<R> {
    let mut jobs = jobs.into_iter();
    let Some(first) = jobs.next() else {
        return Vec::new();
    };
    let f = &f;
    let call = move |j: J| {
        simd(
            #[inline(always)]
            move || f(j),
        )
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs.map(|j| scope.spawn(move || call(j))).collect();
        let mut out = vec![call(first)];
        out.extend(
            handles
                .into_iter()
                .map(|h| h.join().expect("fused kernel panicked")),
        );
        out
    })
}

/// `vec![0.0; n]` (calloc: fresh pages, no memset).
pub(super) fn zeros(n: usize) -> Vec<f32> {
    vec![0.0; n]
}

/// Σ a·b with 8 independent accumulators (vectorisable).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Σ a with 8 independent accumulators.
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let ra = ca.remainder();
    for x in ca {
        for i in 0..8 {
            acc[i] += x[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for x in ra {
        s += x;
    }
    s
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = (x · r) · w, r = 1 / sqrt(mean(x²) + eps), per row of d.

fn rms_norm_fwd(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let rows = x.len() / d;
    let mut y = zeros(x.len());
    let mut r = zeros(rows);
    let rs = ranges(rows, d);
    let jobs: Vec<_> = rs
        .iter()
        .cloned()
        .zip(split(&mut y, d, &rs))
        .zip(split(&mut r, 1, &rs))
        .collect();
    run(
        jobs,
        #[inline(always)]
        |((range, y), r)| {
            for (i, row) in range.enumerate() {
                let x = &x[row * d..(row + 1) * d];
                let inv = 1.0 / (dot(x, x) / d as f32 + eps).sqrt();
                r[i] = inv;
                for ((y, &x), &w) in y[i * d..(i + 1) * d].iter_mut().zip(x).zip(w) {
                    *y = (x * inv) * w;
                }
            }
        },
    );
    (y, r)
}

/// Returns (dx, dw).
fn rms_norm_bwd(g: &[f32], x: &[f32], w: &[f32], r: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let rows = x.len() / d;
    let mut dx = zeros(x.len());
    let rs = ranges(rows, 2 * d);
    let jobs: Vec<_> = rs.iter().cloned().zip(split(&mut dx, d, &rs)).collect();
    let partial_dw = run(
        jobs,
        #[inline(always)]
        |(range, dx)| {
            let mut dw = vec![0.0f32; d];
            let mut gw = vec![0.0f32; d];
            for (i, row) in range.enumerate() {
                let (x, g) = (&x[row * d..(row + 1) * d], &g[row * d..(row + 1) * d]);
                let inv = r[row];
                for (((gw, dw), &g), (&x, &w)) in
                    gw.iter_mut().zip(dw.iter_mut()).zip(g).zip(x.iter().zip(w))
                {
                    *gw = g * w;
                    *dw += g * (x * inv);
                }
                let c = inv * inv * inv * dot(&gw, x) / d as f32;
                for ((dx, &gw), &x) in dx[i * d..(i + 1) * d].iter_mut().zip(&gw).zip(x) {
                    *dx = inv * gw - x * c;
                }
            }
            dw
        },
    );
    let mut dw = vec![0.0f32; d];
    for p in partial_dw {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    (dx, dw)
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    /// (x, w, per-row r)
    type State = (FlexTensor, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (x, w, r) = ops.state;
        let shape = x.shape();
        let (dx, dw) = with_f32(&g, |g| {
            with_f32(&x, |xs| {
                with_f32(&w, |ws| with_f32(&r, |rs| rms_norm_bwd(g, xs, ws, rs)))
            })
        });
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, new_flex(dx, &shape));
        }
        if let Some(node) = node_w {
            let d = dw.len();
            grads.register::<Flex>(node.id, new_flex(dw, &[d]));
        }
    }
}

/// Fused `RmsNorm::forward` (see `layers.rs`): `x` `[.., d]`, `weight` `[d]`.
pub(crate) fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let eps = eps as f32;
    let run_fwd = |x: &FlexTensor, w: &FlexTensor| {
        let (y, r) = with_f32(x, |xs| with_f32(w, |ws| rms_norm_fwd(xs, ws, eps)));
        let rows = r.len();
        (new_flex(y, &x.shape()), new_flex(r, &[rows]))
    };
    match kind::<B>().expect("fused::rms_norm on an unsupported backend") {
        Kind::Plain => {
            let (x, w) = (
                flex(recast::<B, Flex, D>(x)),
                flex(recast::<B, Flex, 1>(weight)),
            );
            recast(from_flex::<D>(run_fwd(&x, &w).0))
        }
        Kind::Autodiff => {
            let (x, w) = (
                ad_prim(recast::<B, Ad, D>(x)),
                ad_prim(recast::<B, Ad, 1>(weight)),
            );
            let (y, r) = run_fwd(&x.primitive, &w.primitive);
            let out = match RmsNormBackward
                .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((x.primitive, w.primitive, r), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            recast(from_ad_prim::<D>(out))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU: y = silu(g) · u, silu(g) = g · sigmoid(g).

#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    // burn-flex's formulation (no overflow on either side).
    if x >= 0.0 {
        1.0 / (1.0 + exp(-x))
    } else {
        let e = exp(x);
        e / (1.0 + e)
    }
}

/// Returns (y, sigmoid(g)).
fn swiglu_fwd(g: &[f32], u: &[f32]) -> (Vec<f32>, Vec<f32>) {
    const ROW: usize = 1024;
    let n = g.len();
    let mut y = zeros(n);
    let mut s = zeros(n);
    let rs = ranges(n.div_ceil(ROW), ROW * 8);
    let jobs: Vec<_> = rs
        .iter()
        .cloned()
        .zip(split(&mut y, ROW, &rs))
        .zip(split(&mut s, ROW, &rs))
        .collect();
    run(
        jobs,
        #[inline(always)]
        |((range, y), s)| {
            let lo = range.start * ROW;
            let hi = (range.end * ROW).min(n);
            for (((y, s), &g), &u) in y
                .iter_mut()
                .zip(s.iter_mut())
                .zip(&g[lo..hi])
                .zip(&u[lo..hi])
            {
                let sg = sigmoid(g);
                *s = sg;
                *y = (g * sg) * u;
            }
        },
    );
    (y, s)
}

/// Returns (dg, du).
fn swiglu_bwd(dy: &[f32], g: &[f32], u: &[f32], s: &[f32]) -> (Vec<f32>, Vec<f32>) {
    const ROW: usize = 1024;
    let n = g.len();
    let mut dg = zeros(n);
    let mut du = zeros(n);
    let rs = ranges(n.div_ceil(ROW), ROW * 4);
    let jobs: Vec<_> = rs
        .iter()
        .cloned()
        .zip(split(&mut dg, ROW, &rs))
        .zip(split(&mut du, ROW, &rs))
        .collect();
    run(
        jobs,
        #[inline(always)]
        |((range, dg), du)| {
            let lo = range.start * ROW;
            let hi = (range.end * ROW).min(n);
            let it = dg.iter_mut().zip(du.iter_mut()).zip(&dy[lo..hi]);
            for (((dg, du), &dy), ((&g, &u), &s)) in
                it.zip(g[lo..hi].iter().zip(&u[lo..hi]).zip(&s[lo..hi]))
            {
                // y = silu · u with silu = g · s: the chain rule of burn's mul and sigmoid.
                *du = dy * (g * s);
                let dsilu = dy * u;
                *dg = dsilu * s + (dsilu * g) * (s * (1.0 - s));
            }
        },
    );
    (dg, du)
}

#[derive(Debug)]
struct SwigluBackward;

impl Backward<Flex, 2> for SwigluBackward {
    /// (gate, up, sigmoid(gate))
    type State = (FlexTensor, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_g, node_u] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (g, u, s) = ops.state;
        let shape = g.shape();
        let (dg, du) = with_f32(&dy, |dy| {
            with_f32(&g, |g| {
                with_f32(&u, |u| with_f32(&s, |s| swiglu_bwd(dy, g, u, s)))
            })
        });
        if let Some(node) = node_g {
            grads.register::<Flex>(node.id, new_flex(dg, &shape));
        }
        if let Some(node) = node_u {
            grads.register::<Flex>(node.id, new_flex(du, &shape));
        }
    }
}

/// Fused `silu(gate) * up` (same shapes).
pub(crate) fn swiglu<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    let run_fwd = |g: &FlexTensor, u: &FlexTensor| {
        let (y, s) = with_f32(g, |gs| with_f32(u, |us| swiglu_fwd(gs, us)));
        let dims = g.shape();
        (new_flex(y, &dims), new_flex(s, &dims))
    };
    match kind::<B>().expect("fused::swiglu on an unsupported backend") {
        Kind::Plain => {
            let (g, u) = (
                flex(recast::<B, Flex, D>(gate)),
                flex(recast::<B, Flex, D>(up)),
            );
            recast(from_flex::<D>(run_fwd(&g, &u).0))
        }
        Kind::Autodiff => {
            let (g, u) = (
                ad_prim(recast::<B, Ad, D>(gate)),
                ad_prim(recast::<B, Ad, D>(up)),
            );
            let (y, s) = run_fwd(&g.primitive, &u.primitive);
            let out = match SwigluBackward
                .prepare::<NoCheckpointing>([g.node.clone(), u.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((g.primitive, u.primitive, s), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            recast(from_ad_prim::<D>(out))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RoPE + causal grouped-query attention, from the projections' outputs (positions 0..s, no cache).
//
// Layouts: projections `[b, s, heads, hd]` (rows of the linear layers); inside, heads first
// `[b, heads, s, hd]`, so that the `n_rep` query heads sharing a KV head are one
// `[n_rep·s, hd]` matrix per unit `(b, kv head)`: `[b, nkv, n_rep·s, hd]`. Each unit is computed
// by blocks of `BQ` query positions, each against keys `0..=its last position` (`gemm` calls for
// the products, the causal mask inside the block by the softmax), units in parallel;
// probabilities `[b, nkv, n_rep·s, s]` are kept for the backward pass.

#[derive(Clone, Copy, Debug)]
struct AttnDims {
    b: usize,
    s: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    scale: f32,
}

impl AttnDims {
    fn n_rep(&self) -> usize {
        self.nh / self.nkv
    }
}

/// One row of rotate-half RoPE: `y = x·cos + rotate_half(x)·sin`, i.e.
/// `y1 = x1·c1 + (−x2)·s1`, `y2 = x2·c2 + x1·s2` on the two halves.
#[inline(always)]
fn rope_row(x: &[f32], c: &[f32], sn: &[f32], y: &mut [f32], half: usize) {
    let (x1, x2) = x.split_at(half);
    let (c1, c2) = c.split_at(half);
    let (s1, s2) = sn.split_at(half);
    let (y1, y2) = y.split_at_mut(half);
    for ((((y1, y2), (&x1, &x2)), (&c1, &c2)), (&s1, &s2)) in y1
        .iter_mut()
        .zip(y2.iter_mut())
        .zip(x1.iter().zip(x2))
        .zip(c1.iter().zip(c2))
        .zip(s1.iter().zip(s2))
    {
        *y1 = x1 * c1 + (-x2) * s1;
        *y2 = x2 * c2 + x1 * s2;
    }
}

/// The transpose of [`rope_row`] (its backward): `y = g·cos + rotate_halfᵀ(g·sin)`, i.e.
/// `y1 = g1·c1 + g2·s2`, `y2 = g2·c2 − g1·s1`.
#[inline(always)]
fn rope_row_transposed(g: &[f32], c: &[f32], sn: &[f32], y: &mut [f32], half: usize) {
    let (g1, g2) = g.split_at(half);
    let (c1, c2) = c.split_at(half);
    let (s1, s2) = sn.split_at(half);
    let (y1, y2) = y.split_at_mut(half);
    for ((((y1, y2), (&g1, &g2)), (&c1, &c2)), (&s1, &s2)) in y1
        .iter_mut()
        .zip(y2.iter_mut())
        .zip(g1.iter().zip(g2))
        .zip(c1.iter().zip(c2))
        .zip(s1.iter().zip(s2))
    {
        *y1 = g1 * c1 + g2 * s2;
        *y2 = g2 * c2 - g1 * s1;
    }
}

/// Moves rows of `hd` elements: `dst` is `[outer, inner, hd]`, and row `(o, n)` of `dst` is
/// `transform` of row `locate(o, n) = (src row, sequence position)` of `src`. The threads split
/// `outer`, so each writes its own part of `dst`.
fn permute_rows(
    src: &[f32],
    (outer, inner, hd): (usize, usize, usize),
    locate: impl Fn(usize, usize) -> (usize, usize) + Sync,
    transform: impl Fn(&[f32], usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut dst = zeros(outer * inner * hd);
    let rs = ranges(outer, inner * hd);
    let jobs: Vec<_> = rs
        .iter()
        .cloned()
        .zip(split(&mut dst, inner * hd, &rs))
        .collect();
    run(
        jobs,
        #[inline(always)]
        |(range, dst)| {
            for (k, o) in range.enumerate() {
                for n in 0..inner {
                    let (row, pos) = locate(o, n);
                    transform(
                        &src[row * hd..][..hd],
                        pos,
                        &mut dst[(k * inner + n) * hd..][..hd],
                    );
                }
            }
        },
    );
    dst
}

/// The first position of the document of position `i` of batch row `bi` (0 without packing).
#[inline(always)]
fn doc_start(starts: Option<&[u32]>, s: usize, bi: usize, i: usize) -> usize {
    starts.map_or(0, |st| st[bi * s + i] as usize)
}

/// `src` `[b, s, h, hd]` → `[b, h, s, hd]`; with `rope`, each row rotated (rotate-half, HF):
/// `x·cos + rotate_half(x)·sin`, `rotate_half(x) = cat(-x[hd/2:], x[:hd/2])`, at its position
/// inside its document (`i − start`; `i` without packing).
fn to_heads(
    src: &[f32],
    (b, s, h, hd): (usize, usize, usize, usize),
    rope: Option<(&[f32], &[f32])>,
    starts: Option<&[u32]>,
) -> Vec<f32> {
    // dst unit (bi, hh) row i <- src row (bi, i, hh).
    let locate = |unit: usize, i: usize| {
        let bi = unit / h;
        ((bi * s + i) * h + unit % h, i - doc_start(starts, s, bi, i))
    };
    permute_rows(
        src,
        (b * h, s, hd),
        locate,
        #[inline(always)]
        |x: &[f32], i, y: &mut [f32]| match rope {
            None => y.copy_from_slice(x),
            Some((cos, sin)) => rope_row(x, &cos[i * hd..][..hd], &sin[i * hd..][..hd], y, hd / 2),
        },
    )
}

/// `src` `[b, h, s, hd]` → `[b, s, h, hd]`; with `rope`, each row goes through the transpose of
/// the rotation at the row's position (the RoPE backward): `g·cos + rotate_halfᵀ(g·sin)`, `rotate_halfᵀ(z) = cat(z[hd/2:], -z[:hd/2])`.
fn from_heads(
    src: &[f32],
    (b, s, h, hd): (usize, usize, usize, usize),
    rope: Option<(&[f32], &[f32])>,
    starts: Option<&[u32]>,
) -> Vec<f32> {
    // dst row (bi, i) head hh <- src row (bi, hh, i).
    let locate = |row: usize, hh: usize| {
        let (bi, i) = (row / s, row % s);
        ((bi * h + hh) * s + i, i - doc_start(starts, s, bi, i))
    };
    permute_rows(
        src,
        (b * s, h, hd),
        locate,
        #[inline(always)]
        |g: &[f32], i, y: &mut [f32]| match rope {
            None => y.copy_from_slice(g),
            Some((cos, sin)) => {
                rope_row_transposed(g, &cos[i * hd..][..hd], &sin[i * hd..][..hd], y, hd / 2)
            }
        },
    )
}

/// A strided f32 matrix view for [`matmul`]: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// Row-major `[.., cols]` from the start of `data`.
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `[.., cols]` matrix at the start of `data`.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }

    /// Panics unless `(rows − 1, cols − 1)` is inside `data`.
    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            assert!((rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len());
        }
    }
}

/// `dst[m, n] = a[m, k] · b[k, n]` (or `+=` when `accumulate`), `dst` row-major with row stride
/// `dst_rs`; on this thread (the callers' jobs are the parallelism) by the `gemm` crate's
/// micro-kernels (AVX-512 / AVX2 / NEON, chosen at run time).
fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    a: View,
    b: View,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "matmul: dst too small");
    a.check(m, k);
    b.check(k, n);
    // SAFETY: every index gemm touches, `i·rs + j·cs` for `i < rows`, `j < cols` of each operand,
    // is inside its slice (checked just above); `dst` is exclusively borrowed and no operand
    // aliases it (they are shared borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Query positions per block: each block's scores are one `[BQ, keys]` product with the keys
/// it can see (`keys` = the block's last position + 1), so the causal half is skipped up to
/// the triangle inside a block.
const BQ: usize = 64;

/// Blocks of one unit's query rows: `(first row, rows, position of the first row)`, per head
/// `r` (rows `r·s..(r + 1)·s`) and `BQ` positions at a time.
fn row_blocks(n_rep: usize, s: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..n_rep).flat_map(move |r| {
        (0..s)
            .step_by(BQ)
            .map(move |i| (r * s + i, BQ.min(s - i), i))
    })
}

/// Scaled, masked softmax of one row of scores in place: keys `lo..valid` are seen (`lo` = the
/// document's first position, `valid` = the query's position + 1), the others get 0.
#[inline(always)]
fn softmax_row(row: &mut [f32], lo: usize, valid: usize, scale: f32) {
    let (before, row) = row.split_at_mut(lo);
    before.fill(0.0);
    let (z, masked) = row.split_at_mut(valid - lo);
    let mut max = f32::NEG_INFINITY;
    for v in z.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    for v in z.iter_mut() {
        *v = exp(*v - max);
    }
    let total = sum(z);
    for v in z.iter_mut() {
        *v /= total;
    }
    masked.fill(0.0);
}

/// The softmax and scale backward of one row in place: dS = P ⊙ (dP − Σ P ⊙ dP) · scale, over
/// the seen keys `lo..valid` (0 elsewhere).
#[inline(always)]
fn softmax_bwd_row(dp: &mut [f32], p: &[f32], lo: usize, valid: usize, scale: f32) {
    let (before, dp) = dp.split_at_mut(lo);
    before.fill(0.0);
    let p = &p[lo..];
    let (d, masked) = dp.split_at_mut(valid - lo);
    let c = dot(&p[..valid - lo], d);
    for (d, &p) in d.iter_mut().zip(p) {
        *d = p * (*d - c) * scale;
    }
    masked.fill(0.0);
}

/// Saved for the backward pass: per unit `(b, kv head)`, with `rows = n_rep·s` query rows (head
/// `r`'s position `i` is row `r·s + i`).
#[derive(Clone)]
struct AttnState {
    dims: AttnDims,
    /// Rotated queries `[units, rows, hd]`.
    q: Arc<Vec<f32>>,
    /// Rotated keys `[units, s, hd]`.
    k: Arc<Vec<f32>>,
    /// Values `[units, s, hd]`.
    v: Arc<Vec<f32>>,
    /// Attention probabilities `[units, rows, s]` (0 above the diagonal).
    p: Arc<Vec<f32>>,
    /// RoPE tables `(cos, sin)` for positions `0..s`, `[s, hd]` each; `None`: no rotation.
    rope: Option<(FlexTensor, FlexTensor)>,
    /// Document boundaries of packed rows; `None`: one sequence per row.
    segments: Option<Segments>,
}

impl core::fmt::Debug for AttnState {
    // Dimensions only: the buffers are megabytes.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AttnState")
            .field("dims", &self.dims)
            .finish_non_exhaustive()
    }
}

/// `f` on the RoPE tables' f32 elements, `(cos, sin)`, or on `None` without tables.
fn with_tables<R>(
    rope: &Option<(FlexTensor, FlexTensor)>,
    f: impl FnOnce(Option<(&[f32], &[f32])>) -> R,
) -> R {
    match rope {
        None => f(None),
        Some((cos, sin)) => with_f32(cos, |c| with_f32(sin, |sn| f(Some((c, sn))))),
    }
}

fn attn_fwd(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    rope: Option<(FlexTensor, FlexTensor)>,
    segments: Option<Segments>,
    dims: AttnDims,
) -> (FlexTensor, AttnState) {
    let AttnDims {
        b,
        s,
        nh,
        nkv,
        hd,
        scale,
    } = dims;
    let n_rep = dims.n_rep();
    let rows = n_rep * s;
    let units = b * nkv;
    let starts = segments.as_ref().map(Segments::starts);
    let (qh, kh, vh) = with_tables(&rope, |r| {
        (
            with_f32(q, |q| to_heads(q, (b, s, nh, hd), r, starts)),
            with_f32(k, |k| to_heads(k, (b, s, nkv, hd), r, starts)),
            with_f32(v, |v| to_heads(v, (b, s, nkv, hd), None, None)),
        )
    });
    let mut p = zeros(units * rows * s);
    let mut o = zeros(units * rows * hd); // [b, nh, s, hd]
    let rs = ranges(units, rows * s * hd);
    let jobs: Vec<_> = rs
        .iter()
        .cloned()
        .zip(split(&mut p, rows * s, &rs))
        .zip(split(&mut o, rows * hd, &rs))
        .collect();
    let (qh_ref, kh_ref, vh_ref) = (&qh, &kh, &vh);
    run(
        jobs,
        #[inline(always)]
        |((range, p), o)| {
            for (u, unit) in range.enumerate() {
                let q = &qh_ref[unit * rows * hd..][..rows * hd];
                let k = &kh_ref[unit * s * hd..][..s * hd];
                let v = &vh_ref[unit * s * hd..][..s * hd];
                let p = &mut p[u * rows * s..][..rows * s];
                let o = &mut o[u * rows * hd..][..rows * hd];
                let bi = unit / nkv;
                for (row0, n, i0) in row_blocks(n_rep, s) {
                    // The block's positions see keys kb..keys (kb: the first row's document
                    // start; starts grow along a row).
                    let (kb, keys) = (doc_start(starts, s, bi, i0), i0 + n);
                    let pb = &mut p[row0 * s..(row0 + n) * s];
                    // S = Q·Kᵀ, then the masked softmax row by row, then O = P·V.
                    let qb = View::rows(&q[row0 * hd..], hd);
                    let kt = View::transposed(&k[kb * hd..], hd);
                    matmul(&mut pb[kb..], s, false, (n, keys - kb, hd), qb, kt);
                    for r in 0..n {
                        let lo = doc_start(starts, s, bi, i0 + r);
                        softmax_row(&mut pb[r * s..(r + 1) * s], lo, i0 + r + 1, scale);
                    }
                    let ob = &mut o[row0 * hd..(row0 + n) * hd];
                    matmul(
                        ob,
                        hd,
                        false,
                        (n, hd, keys - kb),
                        View::rows(&pb[kb..], s),
                        View::rows(&v[kb * hd..], hd),
                    );
                }
            }
        },
    );
    let out = from_heads(&o, (b, s, nh, hd), None, None);
    let state = AttnState {
        dims,
        q: Arc::new(qh),
        k: Arc::new(kh),
        v: Arc::new(vh),
        p: Arc::new(p),
        rope,
        segments,
    };
    (new_flex(out, &[b, s, nh * hd]), state)
}

/// Returns (dq, dk, dv) in the projections' layout `[b, s, heads·hd]`.
fn attn_bwd(state: AttnState, g: &FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
    let AttnState {
        dims,
        q,
        k,
        v,
        p,
        rope,
        segments,
    } = state;
    let AttnDims {
        b,
        s,
        nh,
        nkv,
        hd,
        scale,
    } = dims;
    let n_rep = dims.n_rep();
    let rows = n_rep * s;
    let units = b * nkv;
    let starts = segments.as_ref().map(Segments::starts);
    let go = with_f32(g, |g| to_heads(g, (b, s, nh, hd), None, None)); // dO [units, rows, hd]
    let mut dq = zeros(units * rows * hd);
    let mut dk = zeros(units * s * hd);
    let mut dv = zeros(units * s * hd);
    let rs = ranges(units, 3 * rows * s * hd);
    let jobs: Vec<_> = rs
        .iter()
        .cloned()
        .zip(split(&mut dq, rows * hd, &rs))
        .zip(split(&mut dk, s * hd, &rs))
        .zip(split(&mut dv, s * hd, &rs))
        .collect();
    let (go_ref, q_ref, k_ref, v_ref, p_ref) = (&go, &*q, &*k, &*v, &*p);
    run(
        jobs,
        #[inline(always)]
        |(((range, dq), dk), dv)| {
            let mut ds = zeros(BQ * s); // dS of one block of rows
            for (u, unit) in range.enumerate() {
                let go = &go_ref[unit * rows * hd..][..rows * hd];
                let q = &q_ref[unit * rows * hd..][..rows * hd];
                let k = &k_ref[unit * s * hd..][..s * hd];
                let v = &v_ref[unit * s * hd..][..s * hd];
                let p = &p_ref[unit * rows * s..][..rows * s];
                let dq = &mut dq[u * rows * hd..][..rows * hd];
                let dk = &mut dk[u * s * hd..][..s * hd];
                let dv = &mut dv[u * s * hd..][..s * hd];
                let bi = unit / nkv;
                for (row0, n, i0) in row_blocks(n_rep, s) {
                    let (kb, keys) = (doc_start(starts, s, bi, i0), i0 + n);
                    let (gb, qb, pb) = (
                        &go[row0 * hd..(row0 + n) * hd],
                        &q[row0 * hd..(row0 + n) * hd],
                        &p[row0 * s..(row0 + n) * s],
                    );
                    // dP = dO·Vᵀ, then dS = softmax backward, row by row.
                    let db = &mut ds[..n * s];
                    matmul(
                        &mut db[kb..],
                        s,
                        false,
                        (n, keys - kb, hd),
                        View::rows(gb, hd),
                        View::transposed(&v[kb * hd..], hd),
                    );
                    for r in 0..n {
                        let (d, pr) = (&mut db[r * s..(r + 1) * s], &pb[r * s..(r + 1) * s]);
                        let lo = doc_start(starts, s, bi, i0 + r);
                        softmax_bwd_row(d, pr, lo, i0 + r + 1, scale);
                    }
                    let db = &ds[..n * s];
                    // dQ = dS·K; dK += dSᵀ·Q and dV += Pᵀ·dO for the keys the block sees.
                    let dqb = &mut dq[row0 * hd..(row0 + n) * hd];
                    matmul(
                        dqb,
                        hd,
                        false,
                        (n, hd, keys - kb),
                        View::rows(&db[kb..], s),
                        View::rows(&k[kb * hd..], hd),
                    );
                    let (dsb, pbt) = (
                        View::transposed(&db[kb..], s),
                        View::transposed(&pb[kb..], s),
                    );
                    let (dkb, dvb) = (&mut dk[kb * hd..], &mut dv[kb * hd..]);
                    matmul(dkb, hd, true, (keys - kb, hd, n), dsb, View::rows(qb, hd));
                    matmul(dvb, hd, true, (keys - kb, hd, n), pbt, View::rows(gb, hd));
                }
            }
        },
    );
    drop(p);
    let (dq, dk) = with_tables(&rope, |r| {
        (
            from_heads(&dq, (b, s, nh, hd), r, starts),
            from_heads(&dk, (b, s, nkv, hd), r, starts),
        )
    });
    let dv = from_heads(&dv, (b, s, nkv, hd), None, None);
    (
        new_flex(dq, &[b, s, nh * hd]),
        new_flex(dk, &[b, s, nkv * hd]),
        new_flex(dv, &[b, s, nkv * hd]),
    )
}

#[derive(Debug)]
struct AttnBackward;

impl Backward<Flex, 3> for AttnBackward {
    type State = AttnState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (dq, dk, dv) = attn_bwd(ops.state, &g);
        for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// RoPE on `q`/`k` (when `rope` is given) then causal grouped-query attention, for positions
/// `0..s`; with `segments`, within each packed document (RoPE positions restart at its start,
/// queries see only its keys).
///
/// `q` `[b, s, nh·hd]`, `k`/`v` `[b, s, nkv·hd]` (the projections' outputs); `rope` the RoPE
/// tables `(cos, sin)` (at least `s` rows of `hd`), or `None` for attention without positional
/// encoding. Returns the attention output `[b, s, nh·hd]` (heads merged, ready for `o_proj`).
/// Same maths as `Rope::apply` + `repeat_kv` + `causal_attention` (`Rope::apply_at` +
/// `segment_attention` with segments).
#[allow(clippy::too_many_arguments)]
pub fn rope_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    rope: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    segments: Option<&Segments>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> Tensor<B, 3> {
    let [b, s, _] = q.dims();
    if let Some(seg) = segments {
        seg.check_dims(b, s);
    }
    let segments = segments.cloned();
    let dims = AttnDims {
        b,
        s,
        nh: n_heads,
        nkv: n_kv_heads,
        hd: head_dim,
        scale: (head_dim as f64).powf(-0.5) as f32,
    };
    let table = |t: Tensor<B, 2>| -> FlexTensor {
        let t = match kind::<B>() {
            Some(Kind::Plain) => recast::<B, Flex, 2>(t),
            _ => recast::<B, Ad, 2>(t).inner(),
        };
        flex(t.narrow(0, 0, s).cast(DType::F32))
    };
    let rope = rope.map(|(cos, sin)| (table(cos), table(sin)));
    match kind::<B>().expect("fused::rope_attention on an unsupported backend") {
        Kind::Plain => {
            let (q, k, v) = (
                flex(recast::<B, Flex, 3>(q)),
                flex(recast::<B, Flex, 3>(k)),
                flex(recast::<B, Flex, 3>(v)),
            );
            recast(from_flex::<3>(attn_fwd(&q, &k, &v, rope, segments, dims).0))
        }
        Kind::Autodiff => {
            let (q, k, v) = (
                ad_prim(recast::<B, Ad, 3>(q)),
                ad_prim(recast::<B, Ad, 3>(k)),
                ad_prim(recast::<B, Ad, 3>(v)),
            );
            let (out, state) = attn_fwd(
                &q.primitive,
                &k.primitive,
                &v.primitive,
                rope,
                segments,
                dims,
            );
            let out = match AttnBackward
                .prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            };
            recast(from_ad_prim::<3>(out))
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::layers::{causal_attention, repeat_kv, segment_attention, Rope};
    use burn::tensor::Tolerance;

    /// Deterministic values in [-1, 1).
    pub(in crate::layers) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    pub(in crate::layers) fn leaf<const D: usize>(v: &[f32], shape: [usize; D]) -> Tensor<Ad, D> {
        Tensor::<Ad, D>::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
            .require_grad()
    }

    pub(in crate::layers) fn assert_close<const D: usize>(
        a: Tensor<Flex, D>,
        b: Tensor<Flex, D>,
        what: &str,
    ) {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes");
        let (a, b) = (a.into_data(), b.into_data());
        let max = a
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .zip(b.as_slice::<f32>().unwrap())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(max < 2e-5, "{what}: max |fused - generic| = {max}");
        a.assert_approx_eq::<f32>(&b, Tolerance::absolute(2e-5));
    }

    /// `Σ y · r` with fixed random `r`: a scalar whose gradient w.r.t. `y` is `r`.
    pub(in crate::layers) fn probe<const D: usize>(y: Tensor<Ad, D>, seed: u64) -> Tensor<Ad, 1> {
        let r = Tensor::<Ad, D>::from_data(
            TensorData::new(values(y.shape().num_elements(), seed), y.shape()),
            &Default::default(),
        );
        (y * r).sum()
    }

    #[test]
    fn rms_norm_matches_generic_with_gradients() {
        let (xs, ws) = (values(2 * 5 * 16, 1), values(16, 2));
        let eps = 1e-5;
        let (x, w) = (leaf(&xs, [2, 5, 16]), leaf(&ws, [16]));
        let y = rms_norm(x.clone(), w.clone(), eps);
        let grads = probe(y.clone(), 3).backward();
        let (dx, dw) = (x.grad(&grads).unwrap(), w.grad(&grads).unwrap());

        // The generic formula of `RmsNorm::forward`.
        let (x2, w2) = (leaf(&xs, [2, 5, 16]), leaf(&ws, [16]));
        let inv = x2
            .clone()
            .square()
            .mean_dim(2)
            .add_scalar(eps)
            .sqrt()
            .recip();
        let y2 = (x2.clone() * inv) * w2.clone().unsqueeze::<3>();
        let grads2 = probe(y2.clone(), 3).backward();

        assert_close(y.inner(), y2.inner(), "rms_norm y");
        assert_close(dx, x2.grad(&grads2).unwrap(), "rms_norm dx");
        assert_close(dw, w2.grad(&grads2).unwrap(), "rms_norm dw");
    }

    #[test]
    fn swiglu_matches_generic_with_gradients() {
        // 2,100 elements: several 1,024-element chunks and a short last one.
        let shape = [3, 7, 100];
        let (gs, us) = (values(2100, 4), values(2100, 5));
        let gs: Vec<f32> = gs.iter().map(|v| v * 8.0).collect(); // both sigmoid branches
        let (g, u) = (leaf(&gs, shape), leaf(&us, shape));
        let y = swiglu(g.clone(), u.clone());
        let grads = probe(y.clone(), 6).backward();

        let (g2, u2) = (leaf(&gs, shape), leaf(&us, shape));
        let y2 = burn::tensor::activation::silu(g2.clone()) * u2.clone();
        let grads2 = probe(y2.clone(), 6).backward();

        assert_close(y.inner(), y2.inner(), "swiglu y");
        assert_close(
            g.grad(&grads).unwrap(),
            g2.grad(&grads2).unwrap(),
            "swiglu dg",
        );
        assert_close(
            u.grad(&grads).unwrap(),
            u2.grad(&grads2).unwrap(),
            "swiglu du",
        );
    }

    #[test]
    fn rope_attention_matches_generic_with_gradients() {
        // Small and wide heads, sequence lengths within one block and over several; MHA and GQA.
        for (b, s, nh, nkv, hd) in [
            (2, 9, 6, 2, 8),
            (1, 37, 4, 2, 32),
            (2, 21, 3, 3, 40),
            (1, 64, 4, 1, 16),
            // Several blocks of query rows (BQ = 64) and a partial last one: dK and dV
            // accumulate over blocks.
            (2, 150, 4, 2, 16),
        ] {
            check_rope_attention(b, s, nh, nkv, hd, None);
        }
    }

    #[test]
    fn packed_rope_attention_matches_generic_with_gradients() {
        // Documents inside one block of query rows, across block edges (BQ = 64: a block whose
        // rows start in different documents), one-token documents, an unpacked row.
        for (s, nh, nkv, hd, rows) in [
            (9, 6, 2, 8, vec![vec![4, 5], vec![1, 1, 7]]),
            (
                150,
                4,
                2,
                16,
                vec![vec![30, 70, 1, 49], vec![150], vec![64, 64, 22]],
            ),
        ] {
            let seg = Segments::from_lengths(s, &rows);
            check_rope_attention(rows.len(), s, nh, nkv, hd, Some(seg));
        }
    }

    fn check_rope_attention(
        b: usize,
        s: usize,
        nh: usize,
        nkv: usize,
        hd: usize,
        segments: Option<Segments>,
    ) {
        let rope = Rope::<Ad>::new(10000.0, hd, s.max(64), &Default::default());
        let (qs, ks, vs) = (
            values(b * s * nh * hd, 7),
            values(b * s * nkv * hd, 8),
            values(b * s * nkv * hd, 9),
        );
        let (q, k, v) = (
            leaf(&qs, [b, s, nh * hd]),
            leaf(&ks, [b, s, nkv * hd]),
            leaf(&vs, [b, s, nkv * hd]),
        );
        let y = rope_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            Some((rope.cos.clone(), rope.sin.clone())),
            segments.as_ref(),
            nh,
            nkv,
            hd,
        );
        let grads = probe(y.clone(), 10).backward();

        // The generic path of `Attention::forward`.
        let (q2, k2, v2) = (
            leaf(&qs, [b, s, nh * hd]),
            leaf(&ks, [b, s, nkv * hd]),
            leaf(&vs, [b, s, nkv * hd]),
        );
        let heads = |t: Tensor<Ad, 3>, h: usize| t.reshape([b, s, h, hd]).swap_dims(1, 2);
        let rotate = |t: Tensor<Ad, 4>| match &segments {
            Some(seg) => rope.apply_at(t, seg.positions(&Default::default())),
            None => rope.apply(t, 0),
        };
        let qh = rotate(heads(q2.clone(), nh));
        let kh = repeat_kv(rotate(heads(k2.clone(), nkv)), nh / nkv);
        let vh = repeat_kv(heads(v2.clone(), nkv), nh / nkv);
        let y2 = match &segments {
            Some(seg) => segment_attention(qh, kh, vh, seg),
            None => causal_attention(qh, kh, vh),
        };
        let y2 = y2.swap_dims(1, 2).reshape([b, s, nh * hd]);
        let grads2 = probe(y2.clone(), 10).backward();

        assert_close(y.inner(), y2.inner(), "attention y");
        assert_close(
            q.grad(&grads).unwrap(),
            q2.grad(&grads2).unwrap(),
            "attention dq",
        );
        assert_close(
            k.grad(&grads).unwrap(),
            k2.grad(&grads2).unwrap(),
            "attention dk",
        );
        assert_close(
            v.grad(&grads).unwrap(),
            v2.grad(&grads2).unwrap(),
            "attention dv",
        );
    }

    #[test]
    fn plain_flex_forward_matches_autodiff_forward() {
        let (b, s, nh, nkv, hd) = (1, 5, 2, 1, 4);
        let (qs, ks, vs) = (
            values(b * s * nh * hd, 11),
            values(b * s * hd, 12),
            values(b * s * hd, 13),
        );
        let dev = Default::default();
        let rope = Rope::<Flex>::new(10000.0, hd, 8, &dev);
        let t = |v: &[f32], n: usize| {
            Tensor::<Flex, 3>::from_data(TensorData::new(v.to_vec(), [b, s, n]), &dev)
        };
        let plain = rope_attention(
            t(&qs, nh * hd),
            t(&ks, nkv * hd),
            t(&vs, nkv * hd),
            Some((rope.cos.clone(), rope.sin.clone())),
            None,
            nh,
            nkv,
            hd,
        );
        let rope_ad = Rope::<Ad>::new(10000.0, hd, 8, &dev);
        let ad = rope_attention(
            leaf(&qs, [b, s, nh * hd]),
            leaf(&ks, [b, s, nkv * hd]),
            leaf(&vs, [b, s, nkv * hd]),
            Some((rope_ad.cos.clone(), rope_ad.sin.clone())),
            None,
            nh,
            nkv,
            hd,
        );
        assert_close(plain, ad.inner(), "plain vs autodiff");
    }
}
