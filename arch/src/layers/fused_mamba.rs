//! Fused CPU kernels for the element-wise parts of the Mamba mixers, with hand-written backward
//! passes, for burn's `Flex` backend (plain, and wrapped in `Autodiff`):
//! - [`conv_silu`]: depthwise causal conv1d (kernel K, with bias) then SiLU, from position 0
//!   (Mamba-1's `x` branch, Mamba-2's `xBC`);
//! - [`softplus`]: PyTorch's softplus (threshold 20), for Δ;
//! - [`skip_gate`]: `(y + x ⊙ D) ⊙ silu(z)`, Mamba-1's D skip and output gate.
//!
//! Why: from burn ops, the causal conv is K shifted views of a padded copy, each multiplied,
//! summed and differentiated into a full-size zero tensor; softplus is five ops; the gate four.
//! Each op allocates a `[b, l, E]` tensor and walks it (strided, for the halves of `in_proj`'s
//! output), and records a node whose backward does the same again: together about a third of
//! a `tinystories-mamba` step. Here each is one pass forward and one backward.
//!
//! Same maths as the generic code in `ssm.rs` / `mamba.rs` (which every other backend and
//! non-f32 tensors still run; callers check [`super::fused_enabled`]); only `exp` (the
//! vectorisable Cephes polynomial of `simd.rs`) and summation order differ. Reductions over
//! positions (the conv's weight and bias gradients, `D`'s gradient) go through partial sums per
//! fixed block of rows, added in block order: results do not depend on the thread count.

use core::ops::Range;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorMetadata};

use super::fused::{
    ad_prim, flex, from_ad_prim, from_flex, kind, new_flex, ranges, recast, run, sigmoid, split,
    with_f32, zeros, Ad, Kind,
};
use super::Segments;
use crate::simd::ln_1p_exp;

/// `t` itself when its f32 elements are contiguous, else a contiguous copy.
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

/// Rows per block of the partial sums (fixed, so that sums do not depend on the thread count).
const BLOCK_ROWS: usize = 64;

/// Runs `f(rows, outs)` over the rows `0..n_rows`, split across threads in whole blocks of
/// [`BLOCK_ROWS`] rows. Output buffer `k` holds `per_block[k]` values per block (the last block's
/// part may be shorter); `outs` are the parts of the blocks covering `rows`.
fn par_blocks<const K: usize>(
    n_rows: usize,
    per_block: [usize; K],
    outs: [&mut [f32]; K],
    f: impl Fn(Range<usize>, [&mut [f32]; K]) + Sync,
) {
    let blocks = ranges(
        n_rows.div_ceil(BLOCK_ROWS),
        per_block.iter().sum::<usize>() * 8,
    );
    let mut parts: Vec<_> = outs
        .into_iter()
        .zip(per_block)
        .map(|(o, per)| split(o, per, &blocks).into_iter())
        .collect();
    let jobs: Vec<_> = blocks
        .iter()
        .map(|r| {
            let outs: [&mut [f32]; K] =
                core::array::from_fn(|k| parts[k].next().expect("one part per range"));
            let rows = r.start * BLOCK_ROWS..(r.end * BLOCK_ROWS).min(n_rows);
            (rows, outs)
        })
        .collect();
    run(
        jobs,
        #[inline(always)]
        |(rows, outs)| f(rows, outs),
    );
}

/// Adds the per-block partial sums `parts` (`[blocks, width]`) in block order.
fn sum_blocks(parts: &[f32], width: usize) -> Vec<f32> {
    let mut total = zeros(width);
    for p in parts.chunks_exact(width) {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// `silu(p)` and its derivative `s + p·s·(1 − s)`, `s = sigmoid(p)`.
#[inline(always)]
fn silu_and_grad(p: f32) -> (f32, f32) {
    let s = sigmoid(p);
    (p * s, s + p * s * (1.0 - s))
}

// ---------------------------------------------------------------------------------------------
// Depthwise causal conv1d + SiLU: `y[t, c] = silu(bias[c] + Σ_j w[c, j] · x[t + j − (K − 1), c])`,
// positions before 0 being zeros (PyTorch's `conv1d(padding = K − 1)[..., :l]`).

#[derive(Clone, Copy, Debug)]
struct ConvDims {
    b: usize,
    l: usize,
    c: usize,
    k: usize,
}

/// The conv's weights `[C, K]` transposed to `[K, C]` (tap-major: contiguous over channels).
fn taps(w: &[f32], d: ConvDims) -> Vec<f32> {
    let mut t = zeros(d.k * d.c);
    for ch in 0..d.c {
        for j in 0..d.k {
            t[j * d.c + ch] = w[ch * d.k + j];
        }
    }
    t
}

/// The first position tap reads of row `r` (batch row `r / l`, position `r % l`) may read: its
/// document's start with packed `starts` (`[b, l]`), else 0.
#[inline(always)]
fn first_readable(starts: Option<&[u32]>, r: usize) -> usize {
    starts.map_or(0, |st| st[r] as usize)
}

/// Pre-activation of row `r` (batch row `r / l`, position `r % l`) into `pre` (`C` values).
#[inline(always)]
fn conv_row(
    x: &[f32],
    taps: &[f32],
    bias: &[f32],
    (d, starts): (ConvDims, Option<&[u32]>),
    r: usize,
    pre: &mut [f32],
) {
    let (c, t) = (d.c, r % d.l);
    let first = first_readable(starts, r);
    pre.copy_from_slice(bias);
    for j in 0..d.k {
        // Tap j reads position t + j − (K − 1).
        let Some(src_t) = (t + j).checked_sub(d.k - 1).filter(|&p| p >= first) else {
            continue;
        };
        let src = &x[(r - t + src_t) * c..][..c];
        for ((p, &w), &v) in pre.iter_mut().zip(&taps[j * c..][..c]).zip(src) {
            *p += w * v;
        }
    }
}

fn conv_silu_fwd(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    d: ConvDims,
    starts: Option<&[u32]>,
) -> Vec<f32> {
    let taps = taps(w, d);
    let mut y = zeros(d.b * d.l * d.c);
    par_blocks(
        d.b * d.l,
        [BLOCK_ROWS * d.c],
        [&mut y],
        #[inline(always)]
        |rows, [y]| {
            for (i, r) in rows.enumerate() {
                let out = &mut y[i * d.c..][..d.c];
                conv_row(x, &taps, bias, (d, starts), r, out);
                for v in out.iter_mut() {
                    *v = silu_and_grad(*v).0;
                }
            }
        },
    );
    y
}

/// Returns (dx `[b, l, C]`, dw `[C, K]`, dbias `[C]`).
fn conv_silu_bwd(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    d: ConvDims,
    starts: Option<&[u32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n_rows, c, k) = (d.b * d.l, d.c, d.k);
    let taps = taps(w, d);
    let n_blocks = n_rows.div_ceil(BLOCK_ROWS);
    // Pass 1: dpre = dy ⊙ silu'(pre), recomputing pre; per block, Σ dpre (dbias) and
    // Σ dpre[t] · x[t + j − (K − 1)] (dw, tap-major [K, C]).
    let mut dpre = zeros(n_rows * c);
    let mut db_parts = zeros(n_blocks * c);
    let mut dw_parts = zeros(n_blocks * k * c);
    par_blocks(
        n_rows,
        [BLOCK_ROWS * c, c, k * c],
        [&mut dpre, &mut db_parts, &mut dw_parts],
        #[inline(always)]
        |rows, [dpre, db_parts, dw_parts]| {
            for (i, r) in rows.clone().enumerate() {
                let dp = &mut dpre[i * c..][..c];
                conv_row(x, &taps, bias, (d, starts), r, dp);
                for (p, &g) in dp.iter_mut().zip(&dy[r * c..][..c]) {
                    *p = g * silu_and_grad(*p).1;
                }
                let blk = i / BLOCK_ROWS;
                for (s, &g) in db_parts[blk * c..][..c].iter_mut().zip(dp.iter()) {
                    *s += g;
                }
                let dw = &mut dw_parts[blk * k * c..][..k * c];
                let (t, first) = (r % d.l, first_readable(starts, r));
                for j in 0..k {
                    let Some(src_t) = (t + j).checked_sub(k - 1).filter(|&p| p >= first) else {
                        continue;
                    };
                    let src = &x[(r - t + src_t) * c..][..c];
                    for ((s, &g), &v) in dw[j * c..][..c].iter_mut().zip(dp.iter()).zip(src) {
                        *s += g * v;
                    }
                }
            }
        },
    );
    // Pass 2: dx[s] = Σ_j w[:, j] ⊙ dpre[s + (K − 1) − j] (positions within the batch row).
    let mut dx = zeros(n_rows * c);
    par_blocks(
        n_rows,
        [BLOCK_ROWS * c],
        [&mut dx],
        #[inline(always)]
        |rows, [dx]| {
            for (i, r) in rows.enumerate() {
                let out = &mut dx[i * c..][..c];
                let t = r % d.l;
                for j in 0..k {
                    let dst_t = t + (k - 1) - j;
                    // Output dst_t's tap j reads position t, unless t is before its document.
                    if dst_t >= d.l || t < first_readable(starts, r - t + dst_t) {
                        continue;
                    }
                    let dp = &dpre[(r - t + dst_t) * c..][..c];
                    for ((o, &w), &g) in out.iter_mut().zip(&taps[j * c..][..c]).zip(dp) {
                        *o += w * g;
                    }
                }
            }
        },
    );
    // dw back to the conv weight's [C, K] layout.
    let dw_taps = sum_blocks(&dw_parts, k * c);
    let mut dw = zeros(c * k);
    for ch in 0..c {
        for j in 0..k {
            dw[ch * k + j] = dw_taps[j * c + ch];
        }
    }
    (dx, dw, sum_blocks(&db_parts, c))
}

#[derive(Debug)]
struct ConvSiluBackward;

impl Backward<Flex, 3> for ConvSiluBackward {
    /// (x, weight, bias, dims, packed documents)
    type State = (
        FlexTensor,
        FlexTensor,
        FlexTensor,
        ConvDims,
        Option<Segments>,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, w, bias, d, segments) = ops.state;
        let starts = segments.as_ref().map(Segments::starts);
        let (dx, dw, db) = with_f32(&dy, |dy| {
            with_f32(&x, |x| {
                with_f32(&w, |w| {
                    with_f32(&bias, |b| conv_silu_bwd(dy, x, w, b, d, starts))
                })
            })
        });
        for (node, grad, shape) in [
            (node_x, dx, x.shape()),
            (node_w, dw, w.shape()),
            (node_b, db, bias.shape()),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, new_flex(grad, &shape));
            }
        }
    }
}

/// `silu(causal_conv(x))` from position 0: `x` `[b, l, C]` (channels last), `weight` `[C, 1, K]`
/// (a depthwise `Conv1d`'s), `bias` `[C]`; returns `[b, l, C]`. With `segments`, no tap reads a
/// position of an earlier packed document.
pub(crate) fn conv_silu<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 3>,
    bias: Tensor<B, 1>,
    segments: Option<&Segments>,
) -> Tensor<B, 3> {
    let [b, l, c] = x.dims();
    if let Some(seg) = segments {
        seg.check_dims(b, l);
    }
    let starts = segments.map(Segments::starts);
    let d = ConvDims {
        b,
        l,
        c,
        k: weight.dims()[2],
    };
    let fwd = |x: &FlexTensor, w: &FlexTensor, bias: &FlexTensor| {
        let y = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(bias, |bias| conv_silu_fwd(x, w, bias, d, starts))
            })
        });
        new_flex(y, &[b, l, c])
    };
    match kind::<B>().expect("fused_mamba::conv_silu on an unsupported backend") {
        Kind::Plain => {
            let (x, w, bias) = (
                flex(recast::<B, Flex, 3>(x)),
                flex(recast::<B, Flex, 3>(weight)),
                flex(recast::<B, Flex, 1>(bias)),
            );
            recast(from_flex::<3>(fwd(&x, &w, &bias)))
        }
        Kind::Autodiff => {
            let (x, w, bias) = (
                ad_prim(recast::<B, Ad, 3>(x)),
                ad_prim(recast::<B, Ad, 3>(weight)),
                ad_prim(recast::<B, Ad, 1>(bias)),
            );
            // `x` is usually a strided half of `in_proj`'s output: copied once, for both passes.
            let x_data = contiguous(x.primitive);
            let y = fwd(&x_data, &w.primitive, &bias.primitive);
            let out = match ConvSiluBackward
                .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), bias.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let state = (x_data, w.primitive, bias.primitive, d, segments.cloned());
                    prep.finish(state, y)
                }
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            recast(from_ad_prim::<3>(out))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise: softplus and the D skip + SiLU gate.

/// Row length of the element-wise kernels, which see their tensors (any shape) flattened.
const EW_ROW: usize = 1024;

/// PyTorch's softplus (β 1, threshold 20): `x` above 20, `ln(1 + eˣ)` otherwise.
fn softplus_fwd(x: &[f32]) -> Vec<f32> {
    let mut y = zeros(x.len());
    par_blocks(
        x.len().div_ceil(EW_ROW),
        [BLOCK_ROWS * EW_ROW],
        [&mut y],
        #[inline(always)]
        |rows, [y]| {
            let lo = rows.start * EW_ROW;
            let hi = (rows.end * EW_ROW).min(x.len());
            for (y, &x) in y.iter_mut().zip(&x[lo..hi]) {
                *y = if x > 20.0 { x } else { ln_1p_exp(x) };
            }
        },
    );
    y
}

/// `dx = dy · sigmoid(x)` (1 above the threshold, as PyTorch).
fn softplus_bwd(dy: &[f32], x: &[f32]) -> Vec<f32> {
    let mut dx = zeros(x.len());
    par_blocks(
        x.len().div_ceil(EW_ROW),
        [BLOCK_ROWS * EW_ROW],
        [&mut dx],
        #[inline(always)]
        |rows, [dx]| {
            let lo = rows.start * EW_ROW;
            let hi = (rows.end * EW_ROW).min(x.len());
            for ((dx, &g), &x) in dx.iter_mut().zip(&dy[lo..hi]).zip(&x[lo..hi]) {
                *dx = if x > 20.0 { g } else { g * sigmoid(x) };
            }
        },
    );
    dx
}

#[derive(Debug)]
struct SoftplusBackward;

impl Backward<Flex, 1> for SoftplusBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let x = ops.state;
        let dx = with_f32(&dy, |dy| with_f32(&x, |x| softplus_bwd(dy, x)));
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, new_flex(dx, &x.shape()));
        }
    }
}

/// Fused [`crate::ssm::softplus`] (any shape).
pub(crate) fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let fwd = |x: &FlexTensor| new_flex(with_f32(x, softplus_fwd), &x.shape());
    match kind::<B>().expect("fused_mamba::softplus on an unsupported backend") {
        Kind::Plain => recast(from_flex::<D>(fwd(&flex(recast::<B, Flex, D>(x))))),
        Kind::Autodiff => {
            let x = ad_prim(recast::<B, Ad, D>(x));
            let y = fwd(&x.primitive);
            let out = match SoftplusBackward
                .prepare::<NoCheckpointing>([x.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(x.primitive, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            recast(from_ad_prim::<D>(out))
        }
    }
}

/// `(y + x ⊙ D) ⊙ silu(z)` for rows of `e` channels: `y`, `x`, `z` `[rows, e]`, `skip` (D) `[e]`.
fn skip_gate_fwd(y: &[f32], x: &[f32], skip: &[f32], z: &[f32]) -> Vec<f32> {
    let e = skip.len();
    let mut out = zeros(y.len());
    par_blocks(
        y.len() / e,
        [BLOCK_ROWS * e],
        [&mut out],
        #[inline(always)]
        |rows, [out]| {
            for (i, r) in rows.enumerate() {
                let at = r * e;
                let it = out[i * e..][..e]
                    .iter_mut()
                    .zip(&y[at..at + e])
                    .zip(&x[at..at + e]);
                for (((o, &y), &x), (&dd, &z)) in it.zip(skip.iter().zip(&z[at..at + e])) {
                    *o = (y + x * dd) * silu_and_grad(z).0;
                }
            }
        },
    );
    out
}

/// Returns (dy, dx, dD, dz).
fn skip_gate_bwd(
    g: &[f32],
    y: &[f32],
    x: &[f32],
    skip: &[f32],
    z: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, e) = (y.len(), skip.len());
    let rows = n / e;
    let (mut dy, mut dx, mut dz) = (zeros(n), zeros(n), zeros(n));
    let mut dd_parts = zeros(rows.div_ceil(BLOCK_ROWS) * e);
    par_blocks(
        rows,
        [BLOCK_ROWS * e, BLOCK_ROWS * e, BLOCK_ROWS * e, e],
        [&mut dy, &mut dx, &mut dz, &mut dd_parts],
        #[inline(always)]
        |rows, [dy, dx, dz, dd_parts]| {
            for (i, r) in rows.enumerate() {
                let (at, local) = (r * e, i * e);
                let dd = &mut dd_parts[(i / BLOCK_ROWS) * e..][..e];
                for ch in 0..e {
                    let (gv, yv, xv, zv, sk) =
                        (g[at + ch], y[at + ch], x[at + ch], z[at + ch], skip[ch]);
                    let (sz, dsz) = silu_and_grad(zv);
                    let gy = gv * sz;
                    dy[local + ch] = gy;
                    dx[local + ch] = gy * sk;
                    dd[ch] += gy * xv;
                    dz[local + ch] = gv * (yv + xv * sk) * dsz;
                }
            }
        },
    );
    (dy, dx, sum_blocks(&dd_parts, e), dz)
}

#[derive(Debug)]
struct SkipGateBackward;

impl Backward<Flex, 4> for SkipGateBackward {
    /// (y, x, D, z)
    type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_y, node_x, node_d, node_z] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (y, x, skip, z) = ops.state;
        let (dy, dx, dd, dz) = with_f32(&g, |g| {
            with_f32(&y, |y| {
                with_f32(&x, |x| {
                    with_f32(&skip, |sk| with_f32(&z, |z| skip_gate_bwd(g, y, x, sk, z)))
                })
            })
        });
        let (shape, skip_shape) = (y.shape(), skip.shape());
        for (node, grad, shape) in [
            (node_y, dy, &shape),
            (node_x, dx, &shape),
            (node_d, dd, &skip_shape),
            (node_z, dz, &shape),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, new_flex(grad, shape));
            }
        }
    }
}

/// `(y + x ⊙ D) ⊙ silu(z)`: `y`, `x`, `z` `[b, l, E]`, `skip` (D) `[E]`; returns `[b, l, E]`.
pub(crate) fn skip_gate<B: Backend>(
    y: Tensor<B, 3>,
    x: Tensor<B, 3>,
    skip: Tensor<B, 1>,
    z: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let dims = y.dims();
    let fwd = |y: &FlexTensor, x: &FlexTensor, sk: &FlexTensor, z: &FlexTensor| {
        let out = with_f32(y, |y| {
            with_f32(x, |x| {
                with_f32(sk, |sk| with_f32(z, |z| skip_gate_fwd(y, x, sk, z)))
            })
        });
        new_flex(out, &dims)
    };
    match kind::<B>().expect("fused_mamba::skip_gate on an unsupported backend") {
        Kind::Plain => {
            let (y, x, sk, z) = (
                flex(recast::<B, Flex, 3>(y)),
                flex(recast::<B, Flex, 3>(x)),
                flex(recast::<B, Flex, 1>(skip)),
                flex(recast::<B, Flex, 3>(z)),
            );
            recast(from_flex::<3>(fwd(&y, &x, &sk, &z)))
        }
        Kind::Autodiff => {
            let (y, x, sk, z) = (
                ad_prim(recast::<B, Ad, 3>(y)),
                ad_prim(recast::<B, Ad, 3>(x)),
                ad_prim(recast::<B, Ad, 1>(skip)),
                ad_prim(recast::<B, Ad, 3>(z)),
            );
            // `z` is a strided half of `in_proj`'s output: copied once, for both passes.
            let z_data = contiguous(z.primitive);
            let out = fwd(&y.primitive, &x.primitive, &sk.primitive, &z_data);
            let out = match SkipGateBackward
                .prepare::<NoCheckpointing>([
                    y.node.clone(),
                    x.node.clone(),
                    sk.node.clone(),
                    z.node.clone(),
                ])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    prep.finish((y.primitive, x.primitive, sk.primitive, z_data), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(out),
            };
            recast(from_ad_prim::<3>(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::fused::tests::{assert_close, leaf, probe, values};
    use crate::ssm::causal_conv;
    use burn::nn::conv::Conv1dConfig;
    use burn::nn::PaddingConfig1d;
    use burn::tensor::activation::silu;

    #[test]
    fn conv_silu_matches_generic_with_gradients() {
        // Lengths shorter than the kernel, around a block of rows, and several batch rows (rows
        // of different batch rows must not see each other); channel counts not a power of two.
        // Packed rows: documents shorter than the kernel, of one token, across a block of rows.
        let packed = |l: usize, rows: Vec<Vec<usize>>| Some(Segments::from_lengths(l, &rows));
        for (b, l, c, k, segments) in [
            (2, 2, 5, 4, None),
            (3, 23, 7, 4, None),
            (2, 70, 16, 4, None),
            (1, 9, 3, 2, None),
            (2, 9, 5, 4, packed(9, vec![vec![2, 1, 6], vec![4, 5]])),
            (2, 70, 16, 4, packed(70, vec![vec![63, 3, 4], vec![70]])),
        ] {
            let (xs, ws, bs) = (values(b * l * c, 11), values(c * k, 12), values(c, 13));
            let (x, w, bias) = (leaf(&xs, [b, l, c]), leaf(&ws, [c, 1, k]), leaf(&bs, [c]));
            let y = conv_silu(x.clone(), w.clone(), bias.clone(), segments.as_ref());
            let grads = probe(y.clone(), 14).backward();

            // The generic path: the shifted-multiply-add conv of `ssm.rs`, then SiLU.
            let mut conv = Conv1dConfig::new(c, c, k)
                .with_groups(c)
                .with_padding(PaddingConfig1d::Explicit(k - 1, 0))
                .init::<Ad>(&Default::default());
            conv.weight = burn::module::Param::from_tensor(leaf(&ws, [c, 1, k]));
            conv.bias = Some(burn::module::Param::from_tensor(leaf(&bs, [c])));
            let x2 = leaf(&xs, [b, l, c]);
            let (y2, _) = causal_conv(&conv, k, x2.clone(), None, segments.as_ref());
            let y2 = silu(y2);
            let grads2 = probe(y2.clone(), 14).backward();

            let what = format!("conv_silu b {b} l {l} c {c} k {k} {segments:?}");
            assert_close(y.inner(), y2.inner(), &format!("{what}: y"));
            let dx2 = x2.grad(&grads2).unwrap();
            assert_close(x.grad(&grads).unwrap(), dx2, &format!("{what}: dx"));
            let dw2 = conv.weight.val().grad(&grads2).unwrap();
            assert_close(w.grad(&grads).unwrap(), dw2, &format!("{what}: dw"));
            let db2 = conv.bias.as_ref().unwrap().val().grad(&grads2).unwrap();
            assert_close(bias.grad(&grads).unwrap(), db2, &format!("{what}: dbias"));
        }
    }

    #[test]
    fn softplus_matches_generic_with_gradients() {
        // Values from −30 to 30: both sides of the threshold at 20 and far negative.
        let xs: Vec<f32> = values(3 * 700, 21).iter().map(|v| v * 30.0).collect();
        let x = leaf(&xs, [3, 700]);
        let y = softplus(x.clone());
        let grads = probe(y.clone(), 22).backward();

        let x2 = leaf(&xs, [3, 700]);
        let linear = x2.clone().greater_elem(20.0);
        let y2 = x2
            .clone()
            .clamp_max(20.0)
            .exp()
            .log1p()
            .mask_where(linear, x2.clone());
        let grads2 = probe(y2.clone(), 22).backward();

        assert_close(y.inner(), y2.inner(), "softplus y");
        assert_close(
            x.grad(&grads).unwrap(),
            x2.grad(&grads2).unwrap(),
            "softplus dx",
        );
    }

    #[test]
    fn skip_gate_matches_generic_with_gradients() {
        let (b, l, e) = (3, 45, 24);
        let n = b * l * e;
        let (ys, xs, ds) = (values(n, 31), values(n, 32), values(e, 33));
        let zs: Vec<f32> = values(n, 34).iter().map(|v| v * 8.0).collect();
        let (y, x, d, z) = (
            leaf(&ys, [b, l, e]),
            leaf(&xs, [b, l, e]),
            leaf(&ds, [e]),
            leaf(&zs, [b, l, e]),
        );
        let out = skip_gate(y.clone(), x.clone(), d.clone(), z.clone());
        let grads = probe(out.clone(), 35).backward();

        let (y2, x2, d2, z2) = (
            leaf(&ys, [b, l, e]),
            leaf(&xs, [b, l, e]),
            leaf(&ds, [e]),
            leaf(&zs, [b, l, e]),
        );
        let out2 = (y2.clone() + x2.clone() * d2.clone().reshape([1, 1, e])) * silu(z2.clone());
        let grads2 = probe(out2.clone(), 35).backward();

        assert_close(out.inner(), out2.inner(), "skip_gate out");
        for (name, a, b) in [
            ("dy", y.grad(&grads), y2.grad(&grads2)),
            ("dx", x.grad(&grads), x2.grad(&grads2)),
            ("dz", z.grad(&grads), z2.grad(&grads2)),
        ] {
            assert_close(a.unwrap(), b.unwrap(), &format!("skip_gate {name}"));
        }
        assert_close(
            d.grad(&grads).unwrap(),
            d2.grad(&grads2).unwrap(),
            "skip_gate dD",
        );
    }

    #[test]
    fn plain_backend_forward_equals_autodiff_forward() {
        let (b, l, c, k) = (2, 30, 6, 4);
        let (xs, ws, bs) = (values(b * l * c, 41), values(c * k, 42), values(c, 43));
        let dev = Default::default();
        let plain = |v: &[f32], s: Vec<usize>| {
            Tensor::<Flex, 1>::from_floats(v, &dev).reshape(burn::tensor::Shape::from(s))
        };
        let y_plain: Tensor<Flex, 3> = conv_silu(
            plain(&xs, vec![b, l, c]),
            plain(&ws, vec![c, 1, k]),
            Tensor::<Flex, 1>::from_floats(bs.as_slice(), &dev),
            None,
        );
        let y_ad = conv_silu(
            leaf(&xs, [b, l, c]),
            leaf(&ws, [c, 1, k]),
            leaf(&bs, [c]),
            None,
        );
        assert_close(y_plain, y_ad.inner(), "conv_silu plain vs autodiff");
    }
}
