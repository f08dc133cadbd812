//! Helpers shared by the integration tests (tiny configs, tensor <-> Vec conversions).
#![allow(dead_code)]

use burn::backend::Flex;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_arch::{HybridConfig, LlamaConfig, Mamba2Config, MambaConfig};

pub mod parity;

pub type B = Flex;

/// Held by a test that seeds the backend and draws parameters from it: the backend's RNG is one
/// per process and tests run on parallel threads, so two such tests would take each other's draws.
/// (Lazily initialised parameters are drawn at first use, so hold it until the model is used.)
pub fn lock_backend_rng() -> std::sync::MutexGuard<'static, ()> {
    static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// 2 unique blocks, d = 32, 4 query / 2 kv heads of 8, FFN 48, vocab 61.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 61,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        max_position_embeddings: 64,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: true,
        // Larger than usual so that the tiny model's logits are far from uniform and every
        // comparison below is meaningful.
        initializer_range: 0.2,
        layer_sharing: false,
        scaled_residual_init: false,
    }
}

pub fn to_vec<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

pub fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

pub fn ids(rows: &[&[i64]]) -> Tensor<B, 2, Int> {
    let b = rows.len();
    let s = rows[0].len();
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [b, s]), &Default::default())
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Mean cross-entropy of `logits` `[b, l, vocab]` against `target` `[b, l]`, a 1-element tensor.
pub fn cross_entropy<Bk: Backend>(
    logits: Tensor<Bk, 3>,
    target: Tensor<Bk, 2, Int>,
) -> Tensor<Bk, 1> {
    let logp = burn::tensor::activation::log_softmax(logits, 2);
    logp.gather(2, target.unsqueeze_dim::<3>(2)).mean().neg()
}

/// 2 layers, d = 16, N = 4, E = 32, R = 4, vocab 61, tied; init std 0.2.
pub fn tiny_mamba() -> MambaConfig {
    MambaConfig {
        vocab_size: 61,
        hidden_size: 16,
        state_size: 4,
        num_hidden_layers: 2,
        expand: 2,
        conv_kernel: 4,
        time_step_rank: 4,
        initializer_range: 0.2,
        ..MambaConfig::mamba_130m()
    }
}

/// 2 layers, d = 24, 6 heads of 8, 2 groups, N = 8, chunks of 4, vocab 61; init std 0.4.
pub fn tiny_mamba2() -> Mamba2Config {
    Mamba2Config {
        state_size: 8,
        n_groups: 2,
        chunk_size: 4,
        initializer_range: 0.4,
        ..Mamba2Config::new(61, 24, 2, 6, 8)
    }
}

/// 3 layers (attention at layer 1), d = 16, 4 query / 2 kv heads, N = 4, vocab 61; init std 0.2.
pub fn tiny_hybrid(tied: bool) -> HybridConfig {
    HybridConfig {
        vocab_size: 61,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        attn_layer_period: 3,
        attn_layer_offset: 1,
        mamba_d_state: 4,
        mamba_d_conv: 3,
        mamba_expand: 2,
        mamba_dt_rank: 2,
        mamba_conv_bias: true,
        mamba_proj_bias: true,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: tied,
        initializer_range: 0.2,
        max_position_embeddings: 64,
    }
}

/// Every float parameter of `module` in visit order: its module path (field names joined by
/// `.`, e.g. `layers.0.mixer.A_log`), id and rank.
pub fn param_paths<Bk: Backend, M: Module<Bk>>(module: &M) -> Vec<(String, ParamId, usize)> {
    struct Paths {
        stack: Vec<String>,
        out: Vec<(String, ParamId, usize)>,
    }
    impl<Bk: Backend> ModuleVisitor<Bk> for Paths {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            self.out.push((self.stack.join("."), param.id, D));
        }
    }
    let mut paths = Paths {
        stack: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut paths);
    paths.out
}

/// Runs `model`'s checkpointed backward and the plain one on the same next-token loss (a fixed
/// batch of 2 × 7 tokens, ids taken modulo `vocab`) and asserts the losses agree and every
/// parameter's gradient agrees within 1e-4 of its largest entry. Returns the number of
/// parameters compared and the largest relative difference.
pub fn assert_checkpointed_equals_plain(
    model: &kiln_arch::Model<burn::backend::Autodiff<B>>,
    vocab: i64,
) -> (usize, f32) {
    use burn::optim::GradientsParams;
    type AB = burn::backend::Autodiff<B>;
    struct Compare<'a> {
        plain: &'a GradientsParams,
        checkpointed: &'a GradientsParams,
        checked: usize,
        max_rel: f32,
    }
    impl ModuleVisitor<AB> for Compare<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            let a = to_vec(self.plain.get::<B, D>(param.id).expect("plain grad"));
            let b = to_vec(
                self.checkpointed
                    .get::<B, D>(param.id)
                    .expect("checkpointed grad"),
            );
            assert_eq!(a.len(), b.len());
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let diff = max_abs_diff(&a, &b);
            assert!(diff <= 1e-4 * scale, "max diff {diff} (scale {scale})");
            self.max_rel = self.max_rel.max(diff / scale);
            self.checked += 1;
        }
    }
    let row = |r: &[i64]| r.iter().map(|t| t % vocab).collect::<Vec<_>>();
    let (i0, i1) = (
        row(&[1, 5, 9, 2, 33, 60, 7]),
        row(&[3, 3, 4, 10, 12, 0, 59]),
    );
    let (t0, t1) = (
        row(&[5, 9, 2, 33, 60, 7, 8]),
        row(&[3, 4, 10, 12, 0, 59, 1]),
    );
    let input: Tensor<AB, 2, Int> = Tensor::from_inner(ids(&[&i0, &i1]));
    let target: Tensor<AB, 2, Int> = Tensor::from_inner(ids(&[&t0, &t1]));
    let loss_fn = |logits: Tensor<AB, 3>| cross_entropy(logits, target.clone());
    let loss = loss_fn(model.forward(input.clone()));
    let plain = GradientsParams::from_grads(loss.backward(), model);
    let (ck_loss, checkpointed) = model.backward_checkpointed(input, model.ctx(), loss_fn);
    let (l1, l2) = (to_vec(loss.inner())[0], to_vec(ck_loss)[0]);
    assert!((l1 - l2).abs() < 1e-6, "loss {l1} vs {l2}");
    let mut cmp = Compare {
        plain: &plain,
        checkpointed: &checkpointed,
        checked: 0,
        max_rel: 0.0,
    };
    model.visit(&mut cmp);
    assert_eq!(cmp.checked, param_paths(model).len());
    (cmp.checked, cmp.max_rel)
}
