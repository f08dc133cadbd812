//! Packed rows keep their documents apart: for every architecture, the logits of a row that packs
//! several documents equal each document's logits run alone, and the gradients of a loss over the
//! packed row equal the sum of the gradients of the same loss over the documents alone (positions
//! restart, attention stays inside a document, Mamba's convolution and state do not cross one).
//!
//! Checked on the fused CPU kernels (f32) and on the generic tensor-op code that every other
//! backend runs (f64 parameters take it on the CPU too), the Mamba scans in both their
//! sequential and chunked forms, and through the checkpointed backward pass.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use common::*;
use kiln_arch::mamba::ScanMode;
use kiln_arch::mamba2::SsdMode;
use kiln_arch::{Model, ModelConfig, Segments};

type AB = Autodiff<Flex>;

const SEQ: usize = 16;

/// Row 0 packs documents of 5, 7 and 4 tokens (a chunk of 4 ends inside the first, the last
/// starts at a chunk's first position); row 1 is one document.
fn layout() -> Vec<Vec<usize>> {
    vec![vec![5, 7, 4], vec![SEQ]]
}

/// Every document: (row, first position, length).
fn documents() -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for (row, lengths) in layout().iter().enumerate() {
        let mut start = 0;
        for &len in lengths {
            out.push((row, start, len));
            start += len;
        }
    }
    out
}

fn ids_tensor(ids: &[i64], shape: [usize; 2]) -> Tensor<AB, 2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), shape), &Default::default())
}

/// Gradient of every float parameter, flattened, in visit order.
fn param_grads(model: &Model<AB>, grads: &GradientsParams) -> Vec<Vec<f32>> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        out: Vec<Vec<f32>>,
    }
    impl ModuleVisitor<AB> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            let g = self
                .grads
                .get::<Flex, D>(param.id)
                .map_or_else(Vec::new, to_vec);
            self.out.push(g);
        }
    }
    let mut c = Collect {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

/// `|a − b| ≤ tol · max(1, max |b|)`, element-wise.
fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(a, b);
    assert!(
        diff <= tol * scale,
        "{what}: max diff {diff} (scale {scale})"
    );
}

/// The packed forward and backward against the documents run alone (see the module doc).
fn check(model: Model<AB>, what: &str, checkpointed: bool) {
    let vocab = model.config().vocab_size();
    let ids: Vec<i64> = pseudo_random(2 * SEQ, 31)
        .iter()
        .map(|v| ((v.abs() * 1000.0) as usize % vocab) as i64)
        .collect();
    // The loss: Σ w ⊙ logits with fixed random weights (any linear probe of the logits).
    let w = pseudo_random(2 * SEQ * vocab, 32);
    let probe = |logits: Tensor<AB, 3>, w: &[f32]| {
        let shape = logits.dims();
        let w = Tensor::<AB, 3>::from_data(TensorData::new(w.to_vec(), shape), &Default::default());
        (logits * w).sum()
    };

    let segments = Segments::from_lengths(SEQ, &layout());
    let ctx = model.ctx().with_segments(Some(segments));
    let packed_ids = ids_tensor(&ids, [2, SEQ]);
    let packed_logits = model.forward_with(packed_ids.clone(), &ctx);
    let packed_values = to_vec(packed_logits.clone());
    let packed_grads = if checkpointed {
        model
            .backward_checkpointed(packed_ids, &ctx, |logits| probe(logits, &w))
            .1
    } else {
        GradientsParams::from_grads(probe(packed_logits, &w).backward(), &model)
    };

    let mut alone_loss: Option<Tensor<AB, 1>> = None;
    for (row, start, len) in documents() {
        let at = row * SEQ + start;
        let logits = model.forward(ids_tensor(&ids[at..at + len], [1, len]));
        let expected = &packed_values[at * vocab..(at + len) * vocab];
        let doc = format!("{what}: document at row {row} position {start} ({len} tokens)");
        assert_close(&to_vec(logits.clone()), expected, 1e-5, &doc);
        let loss = probe(logits, &w[at * vocab..(at + len) * vocab]);
        alone_loss = Some(match alone_loss {
            Some(l) => l + loss,
            None => loss,
        });
    }
    let alone_grads = GradientsParams::from_grads(alone_loss.unwrap().backward(), &model);

    let (packed, alone) = (
        param_grads(&model, &packed_grads),
        param_grads(&model, &alone_grads),
    );
    assert!(
        alone.iter().all(|g| !g.is_empty()),
        "{what}: a parameter without gradient"
    );
    for (i, (p, a)) in packed.iter().zip(&alone).enumerate() {
        assert_close(p, a, 1e-5, &format!("{what}: gradient of parameter {i}"));
    }
}

/// `config`'s model with fresh weights, as f32 (the fused CPU kernels) or f64 (the generic code).
fn model(config: ModelConfig, f64_generic: bool) -> Model<AB> {
    let _rng = lock_backend_rng();
    let device = Default::default();
    AB::seed(&device, 5);
    let model = config.init::<AB>(&device);
    if f64_generic {
        model.with_precision(FloatDType::F64, FloatDType::F64)
    } else {
        model
    }
}

#[test]
fn llama_packed_rows_equal_documents_alone() {
    let config = ModelConfig::Llama(tiny_config());
    check(model(config.clone(), false), "llama fused", false);
    check(
        model(config.clone(), false),
        "llama fused checkpointed",
        true,
    );
    check(model(config, true), "llama generic", false);
}

#[test]
fn mamba_packed_rows_equal_documents_alone() {
    let config = ModelConfig::Mamba(tiny_mamba());
    check(model(config.clone(), false), "mamba fused", false);
    check(
        model(config.clone(), false),
        "mamba fused checkpointed",
        true,
    );
    for scan in [ScanMode::Sequential, ScanMode::Chunked { chunk: 4 }] {
        let Model::Mamba(m) = model(config.clone(), true) else {
            unreachable!()
        };
        check(
            Model::Mamba(m.with_scan(scan)),
            &format!("mamba generic {scan:?}"),
            false,
        );
    }
}

#[test]
fn mamba2_packed_rows_equal_documents_alone() {
    let config = ModelConfig::Mamba2(tiny_mamba2());
    check(model(config.clone(), false), "mamba2 fused", false);
    check(
        model(config.clone(), false),
        "mamba2 fused checkpointed",
        true,
    );
    for scan in [SsdMode::Sequential, SsdMode::Chunked { chunk: 4 }] {
        let Model::Mamba2(m) = model(config.clone(), true) else {
            unreachable!()
        };
        check(
            Model::Mamba2(m.with_scan(scan)),
            &format!("mamba2 generic {scan:?}"),
            false,
        );
    }
}

#[test]
fn hybrid_packed_rows_equal_documents_alone() {
    let config = ModelConfig::Hybrid(tiny_hybrid(true));
    check(model(config.clone(), false), "hybrid fused", false);
    check(
        model(config.clone(), false),
        "hybrid fused checkpointed",
        true,
    );
    check(model(config, true), "hybrid generic", false);
}

/// Without packing the context changes nothing: one document per row takes the plain path.
#[test]
fn one_document_per_row_is_the_plain_forward() {
    let m = model(ModelConfig::Mamba2(tiny_mamba2()), false);
    let ids = ids_tensor(&[1, 2, 3, 4, 5, 6, 7, 8], [2, 4]);
    let ctx = m
        .ctx()
        .with_segments(Some(Segments::from_lengths(4, &[vec![4], vec![4]])));
    assert!(ctx.segments.is_none());
    assert_eq!(
        to_vec(m.forward_with(ids.clone(), &ctx)),
        to_vec(m.forward(ids))
    );
}
