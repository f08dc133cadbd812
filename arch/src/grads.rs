//! Gradient bookkeeping shared by the checkpointed backward pass and the trainer's gradient
//! accumulation.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

/// Adds `other` into `acc` parameter by parameter, for the parameters of `module` (gradient
/// accumulation over micro-batches, or over the pieces of a checkpointed backward pass).
pub fn accumulate_grads<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    module: &M,
    acc: &mut GradientsParams,
    mut other: GradientsParams,
) {
    struct Acc<'a> {
        acc: &'a mut GradientsParams,
        other: &'a mut GradientsParams,
    }
    impl<AB: AutodiffBackend> ModuleVisitor<AB> for Acc<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            if let Some(g) = self.other.remove::<AB::InnerBackend, D>(param.id) {
                let sum = match self.acc.remove::<AB::InnerBackend, D>(param.id) {
                    Some(a) => a + g,
                    None => g,
                };
                self.acc.register::<AB::InnerBackend, D>(param.id, sum);
            }
        }
    }
    module.visit(&mut Acc {
        acc,
        other: &mut other,
    });
}
