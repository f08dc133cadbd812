//! What a loader hands the training step: one micro-batch of token windows, with what the
//! objective needs besides the tokens.

/// `rows × (seq_len + 1)` token ids, row-major (row `r` = one window: input `row[..seq_len]`,
/// target `row[1..]`), and an optional loss mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    /// One flag per *target* position (`rows × seq_len`): `false` = that target is not trained
    /// on (a prompt token in supervised fine-tuning, padding), as labels of -100 in transformers.
    /// `None` = every target counts (pretraining).
    pub loss_mask: Option<Vec<bool>>,
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
        }
    }
}
