//! What a loader hands the training step: one micro-batch of token windows, with what the
//! objective needs besides the tokens.

/// `rows × (seq_len + 1)` token ids, row-major (row `r` = one window: input `row[..seq_len]`,
/// target `row[1..]`), an optional loss mask and, when rows pack several documents, where they
/// start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    /// One flag per *target* position (`rows × seq_len`): `false` = that target is not trained
    /// on (a prompt token in supervised fine-tuning, padding), as labels of -100 in transformers.
    /// `None` = every target counts (pretraining).
    pub loss_mask: Option<Vec<bool>>,
    /// One document id per *input* position (`rows × seq_len`) when rows pack several documents
    /// (fine-tuning examples, pretraining documents): a document starts wherever the id changes
    /// along a row. The model keeps documents apart (attention, RoPE positions, Mamba's
    /// convolution and state restart), so each one trains as if alone. Whether the target that
    /// crosses into the next document counts is the loss mask's business. `None` = one sequence
    /// per row.
    pub doc_ids: Option<Vec<u32>>,
}

impl Batch {
    /// Counted targets: all of them without a mask.
    pub fn counted_targets(&self, rows: usize, seq_len: usize) -> usize {
        match &self.loss_mask {
            Some(mask) => mask.iter().filter(|&&m| m).count(),
            None => rows * seq_len,
        }
    }
}

impl From<Vec<u32>> for Batch {
    /// Token windows whose every target counts.
    fn from(tokens: Vec<u32>) -> Self {
        Self {
            tokens,
            loss_mask: None,
            doc_ids: None,
        }
    }
}
