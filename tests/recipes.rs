//! Every shipped recipe parses, and the published models' parameter counts come out exactly.

use std::path::PathBuf;

use kiln_data::TokenizerSpec;
use kiln_trainer::recipe::Recipe;

fn recipes_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../recipes")
}

fn params_of(name: &str) -> (Recipe, usize) {
    let recipe = Recipe::load(&recipes_dir().join(format!("{name}.yaml")), &[]).unwrap();
    let vocab = match &recipe.tokenizer {
        TokenizerSpec::TrainBpe { vocab_size, .. } => *vocab_size,
        TokenizerSpec::File { .. } => panic!("shipped recipes train their tokenizer"),
    };
    let n = recipe.model_config(vocab).unwrap().num_params();
    (recipe, n)
}

#[test]
fn every_shipped_recipe_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(recipes_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let r = Recipe::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                path.file_stem().unwrap().to_str().unwrap(),
                r.name,
                "file name = recipe name"
            );
            n += 1;
        }
    }
    assert!(n >= 6, "expected the six shipped recipes, found {n}");
}

#[test]
fn published_parameter_counts_are_exact() {
    assert_eq!(params_of("smollm-135m").1, 134_515_008);
    assert_eq!(params_of("mobilellm-125m").1, 124_635_456);
    assert_eq!(params_of("mobilellm-350m").1, 345_355_200);
    // Layer sharing applies each block twice: same parameters.
    let (ls, n) = params_of("mobilellm-125m-ls");
    assert!(ls.model.layer_sharing);
    assert_eq!(n, 124_635_456);
    assert_eq!(params_of("mobilellm-350m-ls").1, 345_355_200);
    // state-spaces/mamba-130m-hf.
    assert_eq!(params_of("mamba-130m").1, 129_135_360);
}

#[test]
fn smollm_recipe_has_the_published_setup() {
    let (r, _) = params_of("smollm-135m");
    let kiln_trainer::recipe::OptimizerSection::Adamw {
        lr,
        betas,
        eps,
        weight_decay,
        ..
    } = *r.optimizer().unwrap();
    assert_eq!(
        (lr, betas, eps, weight_decay),
        (3e-3, [0.9, 0.95], 1e-8, 0.01)
    );
    assert_eq!(r.train.grad_clip, Some(1.0));
    // ~1M tokens per optimizer step.
    assert_eq!(r.tokens_per_step(1), 1_048_576);
    assert_eq!(r.model.init_std, Some(0.0416));
}
