//! `train eval`: the loss of a model on a text file, defined so that any other tool can reproduce it.
//!
//! The text is tokenized with the model's tokenizer without added special tokens, cut into consecutive
//! non-overlapping windows of `seq_len` tokens (the last shorter window is kept when it has at least
//! 2 tokens); each window predicts its tokens 1..n from 0..n−1; the loss is the mean over all predicted
//! tokens.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use burn::tensor::TensorData;
use kiln_arch::{write_safetensors, HfTensor, SafetensorsDtype};
use serde::Serialize;

use crate::loss::nll_sum;
use crate::model_io::LoadedModel;
use crate::params::tensor_to_vec;

#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    pub loss: f64,
    pub perplexity: f64,
    /// Predicted tokens the loss averages over.
    pub tokens: u64,
}

/// Windows of the token stream as the module doc defines them.
pub fn windows(ids: &[u32], seq_len: usize) -> Vec<&[u32]> {
    ids.chunks(seq_len).filter(|w| w.len() >= 2).collect()
}

pub fn evaluate<B: Backend>(
    loaded: &LoadedModel<B>,
    text_path: &Path,
    seq_len: Option<usize>,
    dump_logits: Option<&Path>,
    device: &B::Device,
) -> Result<EvalResult> {
    let tokenizer = loaded.tokenizer()?;
    let text = std::fs::read_to_string(text_path)
        .with_context(|| format!("cannot read text file {}", text_path.display()))?;
    let ids = tokenizer.encode(&text)?;
    // A recurrent model (no positional limit) is scored in windows of 1024 unless told.
    let ctx = loaded.config.max_seq_len();
    let seq_len = seq_len.or(ctx).unwrap_or(1024);
    if seq_len < 2 || ctx.is_some_and(|c| seq_len > c) {
        bail!(
            "--seq-len {seq_len} must be between 2 and the model's context ({})",
            ctx.map_or("unlimited".into(), |c| c.to_string())
        );
    }
    let wins = windows(&ids, seq_len);
    if wins.is_empty() {
        bail!(
            "{} has fewer than 2 tokens: nothing to evaluate",
            text_path.display()
        );
    }
    let mut nll = 0.0f64;
    let mut count = 0u64;
    // Full-length windows go through in batches; the shorter last one alone.
    const BATCH: usize = 8;
    let mut i = 0;
    while i < wins.len() {
        let len = wins[i].len();
        let group: Vec<&[u32]> = wins[i..]
            .iter()
            .take(BATCH)
            .take_while(|w| w.len() == len)
            .copied()
            .collect();
        let b = group.len();
        let data: Vec<i64> = group
            .iter()
            .flat_map(|w| w.iter().map(|&t| t as i64))
            .collect();
        let all = Tensor::<B, 2, Int>::from_data(TensorData::new(data, [b, len]), device);
        let inputs = all.clone().slice([0..b, 0..len - 1]);
        let targets = all.slice([0..b, 1..len]);
        let logits = loaded.model.forward(inputs.clone()); // [b, len-1, vocab]
        if i == 0 {
            if let Some(path) = dump_logits {
                dump(
                    path,
                    inputs.slice([0..1, 0..len - 1]),
                    logits.clone().slice([0..1, 0..len - 1]),
                )?;
            }
        }
        nll += nll_sum(logits, targets).into_scalar().elem::<f64>(); // host sync per batch
        count += (b * (len - 1)) as u64;
        i += b;
    }
    let loss = nll / count as f64;
    if !loss.is_finite() {
        bail!(
            "the loss of {} is {loss}: its weights (or logits) are not finite",
            loaded.dir.display()
        );
    }
    Ok(EvalResult {
        loss,
        perplexity: loss.exp(),
        tokens: count,
    })
}

/// Writes `input_ids` and `logits` of the first window (for `scripts/check_export.py`).
fn dump<B: Backend>(path: &Path, inputs: Tensor<B, 2, Int>, logits: Tensor<B, 3>) -> Result<()> {
    let ids: Vec<f32> = inputs
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .into_iter()
        .map(|t| t as f32)
        .collect();
    let tensors = [
        HfTensor {
            name: "input_ids".into(),
            shape: inputs.dims().to_vec(),
            data: ids,
        },
        HfTensor {
            name: "logits".into(),
            shape: logits.dims().to_vec(),
            data: tensor_to_vec(logits),
        },
    ];
    write_safetensors(path, &tensors, SafetensorsDtype::F32)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_definition() {
        let ids: Vec<u32> = (0..10).collect();
        let w = windows(&ids, 4);
        assert_eq!(w, vec![&[0, 1, 2, 3][..], &[4, 5, 6, 7][..], &[8, 9][..]]);
        // A final window of 1 token predicts nothing and is dropped.
        assert_eq!(windows(&ids[..9], 4).len(), 2);
    }
}
