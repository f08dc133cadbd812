//! The HF-parity harness shared by `mamba_hf_parity`, `mamba2_hf_parity` and `hybrid`: reading a
//! fixture directory written by `scripts/make_*_fixtures.py`, and the comparisons of an export,
//! gradient norms and greedy decoding against its reference numbers.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_arch::{write_safetensors, HfTensor, SafetensorsDtype};
use serde_json::{Map, Value};

use super::{max_abs_diff, param_paths, pseudo_random, to_vec, B};

pub type AB = Autodiff<B>;

/// `tests/fixtures/{name}` of the workspace.
pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

pub fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture's `reference.json` and its main f32 tensors.
pub struct Reference {
    pub json: Value,
    /// `[2, 17]`.
    pub input_ids: Vec<i64>,
    /// `[2, 16, vocab]`, HF's logits of `input_ids[:, :16]`.
    pub logits: Vec<f32>,
    /// `[2, steps, vocab]`, the logits each greedy token was chosen from.
    pub gen_logits: Vec<f32>,
}

/// A JSON array of integer rows, flattened.
pub fn int_rows(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect()
}

/// The f32 tensor `name` of `dir/reference.safetensors` (`read_safetensors` only reads float
/// tensors, and the file also holds int64 `input_ids`).
pub fn reference_f32(dir: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `dir/reference.json` and the `logits` / `gen_logits` of `dir/reference.safetensors` (its
/// int64 `input_ids` are read from the JSON).
pub fn read_reference(dir: &Path) -> Reference {
    let json = read_json(dir.join("reference.json"));
    Reference {
        input_ids: int_rows(&json["input_ids"]),
        logits: reference_f32(dir, "logits"),
        gen_logits: reference_f32(dir, "gen_logits"),
        json,
    }
}

/// `dir/model.safetensors`.
pub fn read_hf_tensors(dir: &Path) -> HashMap<String, HfTensor> {
    kiln_arch::read_safetensors(dir.join("model.safetensors")).unwrap()
}

pub fn int_tensor<Bk: Backend>(data: Vec<i64>, shape: [usize; 2]) -> Tensor<Bk, 2, Int> {
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

/// `(input_ids[:, :16], input_ids[:, 1:17])`.
pub fn batch<Bk: Backend>(r: &Reference) -> (Tensor<Bk, 2, Int>, Tensor<Bk, 2, Int>) {
    let all = int_tensor::<Bk>(r.input_ids.clone(), [2, 17]);
    (all.clone().narrow(1, 0, 16), all.narrow(1, 1, 16))
}

/// Index of the largest value in each row of `[rows, n]` values.
pub fn argmax_rows(values: &[f32], n: usize) -> Vec<i64> {
    values
        .chunks_exact(n)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(0, |best, (i, &x)| if x > row[best] { i } else { best }) as i64
        })
        .collect()
}

/// Two JSON config values agree (numbers compared as f64: `2` and `2.0` are one value).
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// kiln's export is the checkpoint (written by transformers): the same names, shapes and bits.
pub fn assert_export_is_checkpoint(exported: &[HfTensor], tensors: &HashMap<String, HfTensor>) {
    let names: BTreeSet<&str> = exported.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), exported.len(), "a name exported twice");
    assert_eq!(names, tensors.keys().map(String::as_str).collect());
    for t in exported {
        let hf = &tensors[&t.name];
        assert_eq!(t.shape, hf.shape, "{}", t.name);
        assert!(
            t.data
                .iter()
                .zip(&hf.data)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} differs",
            t.name
        );
    }
}

/// The L2 norm of every parameter's gradient in `grads` against `hf_norms` (relative 1e-3), the
/// parameter named by `hf_name(module path)`; every HF name must be seen.
pub fn assert_grad_norms<M: Module<AB>>(
    model: &M,
    grads: &GradientsParams,
    hf_norms: &Map<String, Value>,
    hf_name: impl Fn(String) -> String,
    label: &str,
) {
    let mut seen = BTreeSet::new();
    let mut worst = (0.0f64, String::new());
    for (path, id, rank) in param_paths(model) {
        let name = hf_name(path);
        let grad = match rank {
            1 => grads.get::<B, 1>(id).map(to_vec),
            2 => grads.get::<B, 2>(id).map(to_vec),
            3 => grads.get::<B, 3>(id).map(to_vec),
            _ => unreachable!("rank {rank}"),
        }
        .unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm = grad
            .iter()
            .map(|&g| g as f64 * g as f64)
            .sum::<f64>()
            .sqrt();
        let hf = hf_norms
            .get(&name)
            .unwrap_or_else(|| panic!("{name}: not in the HF reference"))
            .as_f64()
            .unwrap();
        let rel = (norm - hf).abs() / hf;
        assert!(
            rel < 1e-3,
            "{label} {name}: |grad| {norm} vs HF {hf} ({rel:e} relative)"
        );
        if rel >= worst.0 {
            worst = (rel, name.clone());
        }
        seen.insert(name);
    }
    let expected: BTreeSet<String> = hf_norms.keys().cloned().collect();
    assert_eq!(seen, expected);
    eprintln!(
        "{label}: worst gradient-norm relative diff {:e} ({})",
        worst.0, worst.1
    );
}

/// Greedy decoding through `forward_cached` (the prompt in one call, then one token per call)
/// picks the reference's tokens, from the same logits (1e-4). Returns the number of positions fed.
pub fn assert_greedy_matches_hf(
    r: &Reference,
    vocab: usize,
    label: &str,
    mut forward_cached: impl FnMut(Tensor<B, 2, Int>) -> Tensor<B, 3>,
) -> usize {
    let gen = &r.json["generation"];
    let prompt = int_rows(&gen["prompt"]);
    let expected = int_rows(&gen["generated"]); // [2, steps]
    let (plen, steps) = (prompt.len() / 2, expected.len() / 2);
    let logits = forward_cached(int_tensor(prompt, [2, plen]));
    let mut last = to_vec(logits.narrow(1, plen - 1, 1)); // [2, 1, V]
    let mut generated = vec![Vec::new(); 2];
    let mut worst = 0.0f32;
    for step in 0..steps {
        let hf_step: Vec<f32> = (0..2)
            .flat_map(|b| {
                let at = (b * steps + step) * vocab;
                r.gen_logits[at..at + vocab].to_vec()
            })
            .collect();
        worst = worst.max(max_abs_diff(&last, &hf_step));
        let next = argmax_rows(&last, vocab);
        for (row, &t) in generated.iter_mut().zip(&next) {
            row.push(t);
        }
        last = to_vec(forward_cached(int_tensor(next, [2, 1])));
    }
    eprintln!("{label}: generated {generated:?}, max |step logits − HF| = {worst:e}");
    assert_eq!(generated.concat(), expected, "{label}");
    assert!(worst < 1e-4, "{label}: max |step logits − HF| = {worst}");
    plen + steps
}

/// `$KILN_WRITE_EXPORT`, else a fresh temporary directory `kiln-{tag}-export-{pid}`; created.
pub fn export_dir(tag: &str) -> PathBuf {
    let dir = std::env::var_os("KILN_WRITE_EXPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("kiln-{tag}-export-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `dir` unless it is `$KILN_WRITE_EXPORT`.
pub fn remove_export_dir(dir: &Path) {
    if std::env::var_os("KILN_WRITE_EXPORT").is_none() {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// `tensors` by name, with biases, norm gains and `D` moved off their init values.
pub fn perturbed(tensors: Vec<HfTensor>) -> HashMap<String, HfTensor> {
    tensors
        .into_iter()
        .enumerate()
        .map(|(i, mut t)| {
            if t.name.ends_with("bias") || t.name.ends_with("norm.weight") || t.name.ends_with(".D")
            {
                let noise = pseudo_random(t.data.len(), 100 + i as u64);
                t.data
                    .iter_mut()
                    .zip(noise)
                    .for_each(|(x, n)| *x += 0.2 * n);
            }
            (t.name.clone(), t)
        })
        .collect()
}

/// `2 × n` pseudo-random token ids below `vocab` (the export checks' input).
pub fn export_ids(n: usize, vocab: usize) -> Vec<i64> {
    pseudo_random(2 * n, 7)
        .iter()
        .map(|x| ((x + 1.0) / 2.0 * vocab as f32) as i64 % vocab as i64)
        .collect()
}

/// Greedy decoding of `steps` tokens after the first `plen` of each row of `ids` `[2, n]`,
/// through `forward_cached`: `(prompt [2, plen], generated [2, steps])`, flattened.
pub fn greedy_tokens(
    ids: &[i64],
    n: usize,
    vocab: usize,
    (plen, steps): (usize, usize),
    mut forward_cached: impl FnMut(Tensor<B, 2, Int>) -> Tensor<B, 3>,
) -> (Vec<i64>, Vec<i64>) {
    let prompt: Vec<i64> = (0..2)
        .flat_map(|b| ids[b * n..b * n + plen].to_vec())
        .collect();
    let first = forward_cached(int_tensor(prompt.clone(), [2, plen])).narrow(1, plen - 1, 1);
    let mut next = argmax_rows(&to_vec(first), vocab);
    let mut generated = vec![Vec::new(); 2];
    for _ in 0..steps {
        for (row, &t) in generated.iter_mut().zip(&next) {
            row.push(t);
        }
        let step = forward_cached(int_tensor(next, [2, 1]));
        next = argmax_rows(&to_vec(step), vocab);
    }
    (prompt, generated.concat())
}

/// `dir/kiln_outputs.safetensors` for `scripts/make_*_fixtures.py --check-export`: the input
/// ids `[2, n]`, kiln's logits `[2, n, vocab]`, the prompt `[2, plen]` and greedy tokens.
pub fn write_kiln_outputs(
    dir: &Path,
    ids: &[i64],
    logits: Vec<f32>,
    vocab: usize,
    prompt: &[i64],
    generated: &[i64],
) {
    let n = ids.len() / 2;
    let as_f32 = |name: &str, xs: &[i64]| HfTensor {
        name: name.to_string(),
        shape: vec![2, xs.len() / 2],
        data: xs.iter().map(|&x| x as f32).collect(),
    };
    write_safetensors(
        dir.join("kiln_outputs.safetensors"),
        &[
            as_f32("input_ids", ids),
            HfTensor {
                name: "logits".to_string(),
                shape: vec![2, n, vocab],
                data: logits,
            },
            as_f32("prompt", prompt),
            as_f32("generated", generated),
        ],
        SafetensorsDtype::F32,
    )
    .unwrap();
}
