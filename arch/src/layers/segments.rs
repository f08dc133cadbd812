//! Document boundaries of packed rows: several documents (pretraining documents, fine-tuning
//! examples) laid end to end in one row of `seq` positions, kept apart in the forward pass.
//!
//! What "kept apart" means per architecture (each equals running every document alone):
//! - attention: a query sees only the keys of its own document (causal within it), and RoPE
//!   positions restart at 0 with every document (HF's `position_ids` of padding-free batches);
//! - Mamba / Mamba-2: the causal convolution reads no input of an earlier document, and the
//!   recurrent state is reset to zero at a document's first position (`mamba_ssm`'s `seq_idx`).
//!
//! Everything is derived from one array: for each position, the index (within its row) of the
//! first position of its document. It is a document id that grows along the row, so "same
//! document" is an equality of starts, and the position inside the document is `i − start`.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

/// Where the documents of packed rows start (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segments {
    rows: usize,
    seq: usize,
    /// `[rows, seq]` row-major: the first position of position `i`'s document (`≤ i`).
    starts: Arc<[u32]>,
}

impl Segments {
    /// From a document id per position (`[rows, seq]` row-major): a new document starts wherever
    /// the id differs from the previous position's (the first position of a row always starts
    /// one). Panics unless `ids.len() == rows · seq`.
    pub fn from_ids(rows: usize, seq: usize, ids: &[u32]) -> Self {
        assert_eq!(
            ids.len(),
            rows * seq,
            "segment ids: {} values for {rows} rows of {seq} positions",
            ids.len()
        );
        let mut starts = Vec::with_capacity(rows * seq);
        for row in ids.chunks_exact(seq.max(1)) {
            let mut start = 0;
            for (i, id) in row.iter().enumerate() {
                if i > 0 && *id != row[i - 1] {
                    start = i as u32;
                }
                starts.push(start);
            }
        }
        Self {
            rows,
            seq,
            starts: starts.into(),
        }
    }

    /// From the lengths of the documents of each row (each row's lengths sum to `seq`).
    /// Panics when a row's lengths do not add up to `seq` or a length is 0.
    pub fn from_lengths(seq: usize, rows: &[Vec<usize>]) -> Self {
        let mut ids = Vec::with_capacity(rows.len() * seq);
        for (r, lengths) in rows.iter().enumerate() {
            assert_eq!(
                lengths.iter().sum::<usize>(),
                seq,
                "row {r}: document lengths {lengths:?} do not fill {seq} positions"
            );
            for (doc, &len) in lengths.iter().enumerate() {
                assert!(len > 0, "row {r}: an empty document");
                ids.extend(std::iter::repeat_n(doc as u32, len));
            }
        }
        Self::from_ids(rows.len(), seq, &ids)
    }

    /// `(rows, seq)`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.seq]
    }

    /// Per position, the first position of its document, `[rows, seq]` row-major.
    pub fn starts(&self) -> &[u32] {
        &self.starts
    }

    /// True when some row holds more than one document (otherwise segments change nothing).
    pub fn is_packed(&self) -> bool {
        self.starts.iter().any(|&s| s > 0)
    }

    /// Panics unless these segments describe a batch of `[rows, seq]` positions.
    pub fn check_dims(&self, rows: usize, seq: usize) {
        assert_eq!(
            [self.rows, self.seq],
            [rows, seq],
            "segments of {} rows × {} positions for a batch of {rows} × {seq}",
            self.rows,
            self.seq
        );
    }

    /// Position of each token inside its document, `[rows, seq]` (RoPE positions).
    pub fn positions<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2, Int> {
        let pos: Vec<i64> = self
            .starts
            .iter()
            .enumerate()
            .map(|(k, &s)| (k % self.seq) as i64 - s as i64)
            .collect();
        Tensor::from_data(TensorData::new(pos, [self.rows, self.seq]), device)
    }

    /// The attention mask, `[rows, seq, seq]`, true = hidden: key `j` is hidden from query `i`
    /// unless `start(i) ≤ j ≤ i`.
    pub fn attention_mask<B: Backend>(&self, device: &B::Device) -> Tensor<B, 3, Bool> {
        let s = self.seq;
        let mut hidden = Vec::with_capacity(self.rows * s * s);
        for (k, &start) in self.starts.iter().enumerate() {
            let i = k % s;
            hidden.extend((0..s).map(|j| j < start as usize || j > i));
        }
        Tensor::from_data(TensorData::new(hidden, [self.rows, s, s]), device)
    }

    /// Per position, 1 where the token is at least `shift` positions into its document (a
    /// causal convolution's tap `shift` back may read it), 0 otherwise: `[rows, seq, 1]` in
    /// `dtype`.
    pub fn reaches_back<B: Backend>(
        &self,
        shift: usize,
        device: &B::Device,
        dtype: burn::tensor::DType,
    ) -> Tensor<B, 3> {
        let flags: Vec<f32> = self
            .starts
            .iter()
            .enumerate()
            .map(|(k, &s)| f32::from(k % self.seq >= s as usize + shift))
            .collect();
        Tensor::<B, 3>::from_data(TensorData::new(flags, [self.rows, self.seq, 1]), device)
            .cast(dtype)
    }

    /// Per position, 0 where a document other than the row's first begins (the recurrent state
    /// is reset there) and 1 elsewhere: `[rows, seq]` in `dtype`.
    pub fn carries<B: Backend>(
        &self,
        device: &B::Device,
        dtype: burn::tensor::DType,
    ) -> Tensor<B, 2> {
        let flags: Vec<f32> = self.resets().iter().map(|&r| f32::from(!r)).collect();
        Tensor::<B, 2>::from_data(TensorData::new(flags, [self.rows, self.seq]), device).cast(dtype)
    }

    /// The document starts as a float tensor `[rows, seq]` in `dtype` (exact below 2²⁴): a
    /// document id to compare positions with (the chunked scans' masks).
    pub fn ids<B: Backend>(&self, device: &B::Device, dtype: burn::tensor::DType) -> Tensor<B, 2> {
        let ids: Vec<f32> = self.starts.iter().map(|&s| s as f32).collect();
        Tensor::<B, 2>::from_data(TensorData::new(ids, [self.rows, self.seq]), device).cast(dtype)
    }

    /// Per position, true where a document other than the row's first begins, `[rows · seq]`
    /// (the fused scan's resets).
    pub fn resets(&self) -> Vec<bool> {
        self.starts
            .iter()
            .enumerate()
            .map(|(k, &s)| k % self.seq != 0 && s as usize == k % self.seq)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_positions_and_resets() {
        let seg = Segments::from_ids(2, 5, &[7, 7, 3, 3, 3, 1, 1, 1, 1, 1]);
        assert_eq!(seg.starts(), &[0, 0, 2, 2, 2, 0, 0, 0, 0, 0]);
        assert!(seg.is_packed());
        assert_eq!(
            seg.resets(),
            [false, false, true, false, false, false, false, false, false, false]
        );
        let same = Segments::from_lengths(5, &[vec![2, 3], vec![5]]);
        assert_eq!(same, seg);
        let pos = seg.positions::<burn::backend::Flex>(&Default::default());
        let pos: Vec<i64> = pos.into_data().convert::<i64>().into_vec().unwrap();
        assert_eq!(pos, [0, 1, 0, 1, 2, 0, 1, 2, 3, 4]);
    }
}
