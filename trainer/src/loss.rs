//! Next-token cross-entropy, computed in f32 from the logits.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Sum of −log p(target) over all positions. logits `[batch, seq, vocab]`, targets `[batch, seq]` → `[1]`.
pub fn nll_sum<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [batch, seq, vocab] = logits.dims();
    let log_probs = log_softmax(logits.reshape([batch * seq, vocab]), 1); // [batch·seq, vocab]
    let picked = log_probs.gather(1, targets.reshape([batch * seq, 1])); // [batch·seq, 1]
    picked.sum().neg()
}

/// Mean next-token cross-entropy over all positions → `[1]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [batch, seq, _] = logits.dims();
    nll_sum(logits, targets).div_scalar((batch * seq) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn matches_hand_computed_value() {
        let device = Default::default();
        // One position, logits [0, ln 3] → p = [1/4, 3/4]; target 1 → −ln(3/4).
        let logits = Tensor::<Flex, 3>::from_data(
            TensorData::new(vec![0.0f32, 3f32.ln()], [1, 1, 2]),
            &device,
        );
        let targets =
            Tensor::<Flex, 2, Int>::from_data(TensorData::new(vec![1i64], [1, 1]), &device);
        let loss: f32 = cross_entropy(logits, targets).into_scalar();
        assert!((loss - (-(0.75f32).ln())).abs() < 1e-6, "{loss}");
    }
}
