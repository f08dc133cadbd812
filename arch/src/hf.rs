//! Hugging Face interop: the `LlamaForCausalLM` tensor mapping, safetensors files, and the
//! mapping helpers every architecture's import/export uses (`mamba.rs` too).
//!
//! The module field names already are the HF names (minus `model.`), so the mapping is a walk.
//! The only differences sit here:
//! - burn's `Linear` stores `[in, out]`; HF stores `[out, in]`: every Linear weight is transposed.
//! - a layer-shared block `i` (MobileLLM-LS) is written as HF layers `2i` and `2i + 1`; on import
//!   both copies must be present and equal.
//! - a tied head has no `lm_head.weight`; an HF checkpoint that still carries it (equal to the
//!   embedding) is accepted.
//!
//! HF's legacy `*.rotary_emb.inv_freq` buffers (old checkpoints) are ignored on import: kiln
//! recomputes RoPE from the config.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::nn::Embedding;

use crate::layers::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use crate::error::ArchError;
use crate::layers::{Attention, Mlp, RmsNorm};
use crate::llama::{DecoderLayer, Llama, LlamaConfig};

/// One tensor in HF naming and layout (row-major, Linear weights `[out, in]`), as f32.
#[derive(Clone, Debug, PartialEq)]
pub struct HfTensor {
    /// HF name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// HF shape.
    pub shape: Vec<usize>,
    /// Row-major values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

/// Element type written by [`write_safetensors`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SafetensorsDtype {
    /// 32-bit float, lossless.
    F32,
    /// bfloat16 (round to nearest even), half the size; what HF models are usually shipped in.
    Bf16,
}

/// The per-block tensors in HF order, as suffixes of `model.layers.{i}.`.
const BLOCK_TENSORS: [&str; 9] = [
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

/// HF shape of a block tensor (`[out, in]` for Linear weights).
fn block_shape(cfg: &LlamaConfig, suffix: &str) -> Vec<usize> {
    let (d, ffn) = (cfg.hidden_size, cfg.intermediate_size);
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    match suffix {
        "input_layernorm.weight" | "post_attention_layernorm.weight" => vec![d],
        "self_attn.q_proj.weight" => vec![q, d],
        "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![kv, d],
        "self_attn.o_proj.weight" => vec![d, q],
        "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![ffn, d],
        "mlp.down_proj.weight" => vec![d, ffn],
        _ => unreachable!("not a block tensor: {suffix}"),
    }
}

/// Every tensor an HF checkpoint of this config holds, in HF order: `(name, shape)`.
/// Layer-shared configs list the effective depth (`2 ×` unique blocks).
pub fn llama_hf_layout(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let d = cfg.hidden_size;
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, d],
    )];
    for i in 0..cfg.effective_layers() {
        for suffix in BLOCK_TENSORS {
            out.push((
                format!("model.layers.{i}.{suffix}"),
                block_shape(cfg, suffix),
            ));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![d]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, d]));
    }
    out
}

// Mapping helpers shared by the architectures' HF import/export (Llama here, `mamba.rs`).

/// `[rows, cols]` row-major -> `[cols, rows]` row-major.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

fn param_values<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> (Vec<usize>, Vec<f32>) {
    let t = p.val();
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted tensor data is f32");
    (shape, data)
}

/// A parameter as an [`HfTensor`], layout unchanged.
pub(crate) fn export_param<B: Backend, const D: usize>(
    name: impl Into<String>,
    p: &Param<Tensor<B, D>>,
) -> HfTensor {
    let (shape, data) = param_values(p);
    HfTensor {
        name: name.into(),
        shape,
        data,
    }
}

/// A Linear weight: burn `[in, out]` -> HF `[out, in]` (the bias, if any, is not exported).
pub(crate) fn export_linear<B: Backend>(name: impl Into<String>, lin: &Linear<B>) -> HfTensor {
    let (shape, data) = param_values(&lin.weight);
    let (d_in, d_out) = (shape[0], shape[1]);
    HfTensor {
        name: name.into(),
        shape: vec![d_out, d_in],
        data: transpose(&data, d_in, d_out),
    }
}

/// `{prefix}.weight` (as [`export_linear`]), then `{prefix}.bias` when the layer has one.
pub(crate) fn export_linear_at<B: Backend>(prefix: &str, lin: &Linear<B>) -> Vec<HfTensor> {
    let mut out = vec![export_linear(format!("{prefix}.weight"), lin)];
    if let Some(bias) = &lin.bias {
        out.push(export_param(format!("{prefix}.bias"), bias));
    }
    out
}

fn export_block<B: Backend>(block: &DecoderLayer<B>, i: usize) -> Vec<HfTensor> {
    let n = |suffix: &str| format!("model.layers.{i}.{suffix}");
    let (attn, mlp) = (&block.self_attn, &block.mlp);
    vec![
        export_param(n(BLOCK_TENSORS[0]), &block.input_layernorm.weight),
        export_linear(n(BLOCK_TENSORS[1]), &attn.q_proj),
        export_linear(n(BLOCK_TENSORS[2]), &attn.k_proj),
        export_linear(n(BLOCK_TENSORS[3]), &attn.v_proj),
        export_linear(n(BLOCK_TENSORS[4]), &attn.o_proj),
        export_param(n(BLOCK_TENSORS[5]), &block.post_attention_layernorm.weight),
        export_linear(n(BLOCK_TENSORS[6]), &mlp.gate_proj),
        export_linear(n(BLOCK_TENSORS[7]), &mlp.up_proj),
        export_linear(n(BLOCK_TENSORS[8]), &mlp.down_proj),
    ]
}

/// All parameters of `model` in HF naming/layout and order (see [`llama_hf_layout`]).
pub fn llama_to_hf<B: Backend>(model: &Llama<B>) -> Vec<HfTensor> {
    let repeats = model.config.repeats();
    let mut out = vec![export_param(
        "model.embed_tokens.weight".to_string(),
        &model.embed_tokens.weight,
    )];
    for (u, block) in model.layers.iter().enumerate() {
        let first = export_block(block, u * repeats);
        // Shared block: the same values again under the next HF layer index(es).
        let copies: Vec<HfTensor> = (1..repeats)
            .flat_map(|r| {
                first.iter().map(move |t| HfTensor {
                    name: t.name.replacen(
                        &format!("model.layers.{}.", u * repeats),
                        &format!("model.layers.{}.", u * repeats + r),
                        1,
                    ),
                    ..t.clone()
                })
            })
            .collect();
        out.extend(first);
        out.extend(copies);
    }
    out.push(export_param(
        "model.norm.weight".to_string(),
        &model.norm.weight,
    ));
    if let Some(head) = &model.lm_head {
        out.push(export_linear("lm_head.weight".to_string(), head));
    }
    out
}

/// Looks a tensor up and checks its shape and data length.
pub(crate) fn fetch<'a>(
    tensors: &'a HashMap<String, HfTensor>,
    name: &str,
    shape: &[usize],
) -> Result<&'a HfTensor, ArchError> {
    let t = tensors.get(name).ok_or_else(|| ArchError::MissingTensor {
        name: name.to_string(),
    })?;
    if t.shape != shape {
        return Err(ArchError::ShapeMismatch {
            name: name.to_string(),
            expected: shape.to_vec(),
            got: t.shape.clone(),
        });
    }
    let len: usize = t.shape.iter().product();
    if t.data.len() != len {
        return Err(ArchError::DataLength {
            name: name.to_string(),
            shape: t.shape.clone(),
            len: t.data.len(),
        });
    }
    Ok(t)
}

/// The checks every HF import runs before touching the model: each `layout` tensor present with
/// its shape; with a tied head (`tied_embedding` names the embedding), an optional
/// `lm_head.weight` equal to the embedding; no names outside the layout except that optional head
/// and those `ignored` accepts.
pub(crate) fn check_hf_tensors(
    tensors: &HashMap<String, HfTensor>,
    layout: &[(String, Vec<usize>)],
    tied_embedding: Option<&str>,
    ignored: impl Fn(&str) -> bool,
) -> Result<(), ArchError> {
    for (name, shape) in layout {
        fetch(tensors, name, shape)?;
    }
    let head = "lm_head.weight";
    if let Some(embed) = tied_embedding {
        if let Some(embed_t) = tensors.get(embed).filter(|_| tensors.contains_key(head)) {
            if fetch(tensors, head, &embed_t.shape)?.data != embed_t.data {
                return Err(ArchError::TiedTensorMismatch {
                    first: embed.to_string(),
                    second: head.to_string(),
                    reason: "tie_word_embeddings is true",
                });
            }
        }
    }
    let expected: BTreeSet<&str> = layout.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: BTreeSet<&String> = tensors
        .keys()
        .filter(|k| !expected.contains(k.as_str()))
        .filter(|k| !(tied_embedding.is_some() && k.as_str() == head))
        .filter(|k| !ignored(k))
        .collect();
    if !unexpected.is_empty() {
        return Err(ArchError::UnexpectedTensors {
            names: unexpected.into_iter().cloned().collect(),
        });
    }
    Ok(())
}

/// Replaces a parameter's value with `t` (same layout), keeping its id, device and
/// `require_grad` (and not running its lazy initialiser).
pub(crate) fn load_param<B: Backend, const D: usize>(
    p: Param<Tensor<B, D>>,
    t: &HfTensor,
) -> Param<Tensor<B, D>> {
    load_values(p, t.shape.clone(), t.data.clone())
}

/// `shape`/`data` are already in burn layout.
fn load_values<B: Backend, const D: usize>(
    p: Param<Tensor<B, D>>,
    shape: Vec<usize>,
    data: Vec<f32>,
) -> Param<Tensor<B, D>> {
    let device = p.lazy_device();
    let tensor = Tensor::<B, D>::from_data(TensorData::new(data, shape), &device);
    let id = p.id;
    p.transform_for_load(tensor, id)
}

pub(crate) fn load_norm<B: Backend>(norm: RmsNorm<B>, t: &HfTensor) -> RmsNorm<B> {
    RmsNorm {
        weight: load_param(norm.weight, t),
        eps: norm.eps,
    }
}

/// A Linear weight: HF `[out, in]` -> burn `[in, out]`; the bias is kept as it is.
pub(crate) fn load_linear<B: Backend>(lin: Linear<B>, t: &HfTensor) -> Linear<B> {
    let (d_out, d_in) = (t.shape[0], t.shape[1]);
    Linear {
        weight: load_values(
            lin.weight,
            vec![d_in, d_out],
            transpose(&t.data, d_out, d_in),
        ),
        ..lin
    }
}

/// `{prefix}.weight` (as [`load_linear`]) and, when the layer has a bias, `{prefix}.bias`.
/// Panics on a missing name: check with [`check_hf_tensors`] first.
pub(crate) fn load_linear_at<B: Backend>(
    lin: Linear<B>,
    tensors: &HashMap<String, HfTensor>,
    prefix: &str,
) -> Linear<B> {
    let lin = load_linear(lin, &tensors[&format!("{prefix}.weight")]);
    Linear {
        bias: lin
            .bias
            .map(|b| load_param(b, &tensors[&format!("{prefix}.bias")])),
        ..lin
    }
}

fn load_block<B: Backend>(
    block: DecoderLayer<B>,
    tensors: &HashMap<String, HfTensor>,
    i: usize,
) -> DecoderLayer<B> {
    // Every name was checked by `llama_from_hf` before any loading starts.
    let t = |k: usize| &tensors[&format!("model.layers.{i}.{}", BLOCK_TENSORS[k])];
    let DecoderLayer {
        input_layernorm,
        self_attn,
        post_attention_layernorm,
        mlp,
    } = block;
    DecoderLayer {
        input_layernorm: load_norm(input_layernorm, t(0)),
        self_attn: Attention {
            q_proj: load_linear(self_attn.q_proj, t(1)),
            k_proj: load_linear(self_attn.k_proj, t(2)),
            v_proj: load_linear(self_attn.v_proj, t(3)),
            o_proj: load_linear(self_attn.o_proj, t(4)),
            ..self_attn
        },
        post_attention_layernorm: load_norm(post_attention_layernorm, t(5)),
        mlp: Mlp {
            gate_proj: load_linear(mlp.gate_proj, t(6)),
            up_proj: load_linear(mlp.up_proj, t(7)),
            down_proj: load_linear(mlp.down_proj, t(8)),
        },
    }
}

/// Loads HF tensors into `model` (whose config fixes every expected name and shape).
///
/// Checks, before touching the model: every expected tensor present with its shape; shared-block
/// copies equal; a tied checkpoint's optional `lm_head.weight` equal to the embedding; no
/// unexpected names. Each error names the offending tensor(s).
pub fn llama_from_hf<B: Backend>(
    model: Llama<B>,
    tensors: &HashMap<String, HfTensor>,
) -> Result<Llama<B>, ArchError> {
    let cfg = model.config.clone();
    let layout = llama_hf_layout(&cfg);
    let embed_name = "model.embed_tokens.weight";
    check_hf_tensors(
        tensors,
        &layout,
        cfg.tie_word_embeddings.then_some(embed_name),
        |name| name.ends_with("rotary_emb.inv_freq"),
    )?;
    if cfg.layer_sharing {
        for u in 0..cfg.num_hidden_layers {
            for suffix in BLOCK_TENSORS {
                let first = format!("model.layers.{}.{suffix}", 2 * u);
                let second = format!("model.layers.{}.{suffix}", 2 * u + 1);
                if tensors[&first].data != tensors[&second].data {
                    return Err(ArchError::TiedTensorMismatch {
                        first,
                        second,
                        reason: "layer sharing: HF layers 2i and 2i+1 are one kiln block",
                    });
                }
            }
        }
    }

    let Llama {
        embed_tokens,
        layers,
        norm,
        lm_head,
        rotary_emb,
        config,
        compute_dtype,
    } = model;
    let embed = &tensors[embed_name];
    let repeats = config.repeats();
    Ok(Llama {
        embed_tokens: Embedding {
            weight: load_param(embed_tokens.weight, embed),
        },
        // Shared block u reads HF layer 2u (2u + 1 was checked equal above).
        layers: layers
            .into_iter()
            .enumerate()
            .map(|(u, block)| load_block(block, tensors, u * repeats))
            .collect(),
        norm: load_norm(norm, &tensors["model.norm.weight"]),
        lm_head: lm_head.map(|head| load_linear(head, &tensors["lm_head.weight"])),
        rotary_emb,
        config,
        compute_dtype,
    })
}

/// A tensor serialised to little-endian bytes, for the safetensors writer.
struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `tensors` to a safetensors file with metadata `{"format": "pt"}` (what transformers
/// expects), converting to `dtype`.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &[HfTensor],
    dtype: SafetensorsDtype,
) -> Result<(), ArchError> {
    let path = path.as_ref();
    let mut raw = Vec::with_capacity(tensors.len());
    let mut seen = BTreeSet::new();
    for t in tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(ArchError::Safetensors {
                path: path.to_path_buf(),
                message: format!("duplicate tensor name `{}`", t.name),
            });
        }
        if t.data.len() != t.shape.iter().product::<usize>() {
            return Err(ArchError::DataLength {
                name: t.name.clone(),
                shape: t.shape.clone(),
                len: t.data.len(),
            });
        }
        let (st_dtype, bytes) = match dtype {
            SafetensorsDtype::F32 => (
                Dtype::F32,
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            SafetensorsDtype::Bf16 => (
                Dtype::BF16,
                t.data
                    .iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
        };
        raw.push((
            t.name.clone(),
            RawTensor {
                dtype: st_dtype,
                shape: t.shape.clone(),
                bytes,
            },
        ));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(
        raw.iter().map(|(name, t)| (name.as_str(), t)),
        Some(metadata),
        path,
    )
    .map_err(|e| ArchError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads every tensor of a safetensors file, converting F32/BF16/F16 to f32.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<HashMap<String, HfTensor>, ArchError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ArchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ArchError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = HashMap::with_capacity(st.len());
    for (name, view) in st.iter() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ArchError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        out.insert(
            name.to_string(),
            HfTensor {
                name: name.to_string(),
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}
