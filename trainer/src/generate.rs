//! Autoregressive sampling with the model's cache (KV cache for attention layers): the prompt is
//! processed once, then one token per forward pass.

use burn::prelude::*;
use burn::tensor::TensorData;
use kiln_arch::{Model, ModelConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl SampleOptions {
    /// Checks the sampling settings as `train generate` takes them; `top_k: Some(0)` means no
    /// top-k, as in transformers. The error names the command-line flag.
    pub fn validated(mut self) -> Result<Self, String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "--temperature {} must be a finite number >= 0 (0 = greedy)",
                self.temperature
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("--top-p {p} must be in (0, 1]"));
            }
        }
        if self.top_k == Some(0) {
            self.top_k = None;
        }
        Ok(self)
    }

    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }
}

/// Generates up to `max_new_tokens` after `prompt`, stopping early at `stop`. Returns only the new
/// tokens.
///
/// A model with a context length (attention) sees at most that many tokens: an over-long prompt is
/// cut to its end, and when prompt + new tokens outgrow the context, generation slides on: the cache
/// is rebuilt from the last 3/4 of the context (so the rebuild costs one prompt pass every quarter
/// context, and the model always sees between 3/4 and all of its context).
pub fn generate<B: Backend>(
    model: &Model<B>,
    config: &ModelConfig,
    prompt: &[u32],
    opts: &SampleOptions,
    stop: Option<u32>,
    device: &B::Device,
) -> Vec<u32> {
    assert!(
        !prompt.is_empty(),
        "generation needs at least one prompt token"
    );
    let max_ctx = config.max_seq_len().unwrap_or(usize::MAX);
    // Keep the end of an over-long prompt.
    let prompt = &prompt[prompt.len().saturating_sub(max_ctx)..];
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut cache = model.new_cache(1);
    let mut out = Vec::new();
    let mut input: Vec<u32> = prompt.to_vec();
    // Every token so far, for rebuilding the window.
    let mut seen: Vec<u32> = prompt.to_vec();
    let mut position = 0usize;
    while out.len() < opts.max_new_tokens {
        if position + input.len() > max_ctx {
            let keep = (max_ctx * 3 / 4).max(1);
            input = seen[seen.len() - keep..].to_vec();
            cache = model.new_cache(1);
            position = 0;
        }
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(
                input.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                [1, input.len()],
            ),
            device,
        );
        let logits = model.forward_cached(ids, &mut cache); // [1, n, vocab]
        position += input.len();
        let [_, n, vocab] = logits.dims();
        // [vocab]: only the last position predicts the next token. Host sync: sampling runs on the CPU.
        let last: Vec<f32> = logits
            .slice([0..1, n - 1..n, 0..vocab])
            .reshape([vocab])
            .into_data()
            .to_vec::<f32>()
            .expect("f32 logits");
        let next = sample(&last, opts, &mut rng);
        out.push(next);
        if Some(next) == stop {
            break;
        }
        seen.push(next);
        input = vec![next];
    }
    out
}

/// Picks a token from one row of logits: greedy at temperature 0, else softmax(logits / T) restricted
/// to the top-k tokens and the smallest set whose probability reaches top-p.
pub fn sample(logits: &[f32], opts: &SampleOptions, rng: &mut impl Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &x)| {
                if x > best.1 {
                    (i, x)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if opts.temperature <= 0.0 {
        return argmax();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = opts.top_k {
        idx.truncate(k.max(1));
    }
    let max = logits[idx[0]] as f64;
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / opts.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = opts.top_p {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        idx.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let mut r: f64 = rng.random();
    for (i, p) in probs.iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return idx[i] as u32;
        }
    }
    idx[probs.len() - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the context (16 here) generation goes on with a sliding window instead of stopping,
    /// and up to the context it is the same as before.
    #[test]
    fn generation_slides_past_the_context() {
        use burn::backend::Flex;
        use kiln_arch::LlamaConfig;
        let config = ModelConfig::Llama(LlamaConfig {
            vocab_size: 50,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 8,
            max_position_embeddings: 16,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            initializer_range: 0.5,
            layer_sharing: false,
            scaled_residual_init: false,
        });
        let device = Default::default();
        let model: Model<Flex> = config.init(&device);
        let prompt = [1, 2, 3, 4, 5, 6];
        let long = generate(
            &model,
            &config,
            &prompt,
            &SampleOptions::greedy(40),
            None,
            &device,
        );
        assert_eq!(long.len(), 40);
        let short = generate(
            &model,
            &config,
            &prompt,
            &SampleOptions::greedy(11),
            None,
            &device,
        );
        assert_eq!(short, long[..11]);
        // An over-long prompt keeps its end.
        let prompt: Vec<u32> = (0..30).map(|i| i % 50).collect();
        let cut = generate(
            &model,
            &config,
            &prompt,
            &SampleOptions::greedy(3),
            None,
            &device,
        );
        let end = generate(
            &model,
            &config,
            &prompt[14..],
            &SampleOptions::greedy(3),
            None,
            &device,
        );
        assert_eq!(cut, end);
    }

    #[test]
    fn greedy_takes_argmax() {
        let opts = SampleOptions::greedy(1);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(sample(&[0.1, 3.0, -1.0, 2.9], &opts, &mut rng), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_restricts() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let logits = [0.0, 5.0, 4.9, -3.0];
        let k1 = SampleOptions {
            top_k: Some(1),
            temperature: 1.0,
            ..SampleOptions::greedy(1)
        };
        for _ in 0..50 {
            assert_eq!(sample(&logits, &k1, &mut rng), 1);
        }
        // p(1) ≈ 0.52, p(2) ≈ 0.47: top_p 0.9 keeps exactly tokens 1 and 2.
        let p = SampleOptions {
            top_p: Some(0.9),
            temperature: 1.0,
            ..SampleOptions::greedy(1)
        };
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            seen[sample(&logits, &p, &mut rng) as usize] += 1;
        }
        assert_eq!(seen[0] + seen[3], 0);
        assert!(seen[1] > 100 && seen[2] > 100, "{seen:?}");
    }
}
