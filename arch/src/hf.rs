//! Hugging Face interop: one mapping between kiln's module paths and HF tensor names for every
//! architecture, and safetensors files.
//!
//! burn's module paths already are the HF names (`layers.3.self_attn.q_proj.weight`), so the
//! mapping is one generic walk over the model ([`to_hf_tensors`], [`load_hf_tensors`],
//! [`hf_layout`]) plus a small per-architecture [`HfMapping`] table. The generic rules:
//! - every [`Linear`](crate::Linear) weight is transposed: burn stores `[in, out]`, HF `[out, in]`;
//! - adapter tensors (a `Linear`'s `lora`) are not base-model tensors: they are left out, and
//!   written by the same walk in PEFT's naming instead ([`to_peft_tensors`], [`load_peft_tensors`]):
//!   `base_model.model.` + the adapted layer's HF name + `.lora_A.weight` (`[r, in]`) /
//!   `.lora_B.weight` (`[out, r]`), as `peft`'s `get_peft_model_state_dict` writes them;
//! - a tied head has no `lm_head.weight`; an HF checkpoint that still carries it (equal to the
//!   embedding) is accepted.
//!
//! The table gives the name prefix (`model.` / `backbone.`), path renames, how many HF layers one
//! kiln block stands for (MobileLLM-LS: block `i` is written as HF layers `2i` and `2i + 1`; on
//! import both copies must be present and equal) and the checkpoint names to ignore (HF's legacy
//! `*.rotary_emb.inv_freq` buffers: kiln recomputes RoPE from the config).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use crate::error::ArchError;

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

/// The per-architecture part of the HF mapping (each config's `hf_mapping`).
#[derive(Clone, Debug, PartialEq)]
pub struct HfMapping {
    /// Put before every module path but the head's: `model.` (Llama, Jamba), `backbone.` (Mamba).
    pub prefix: &'static str,
    /// `(kiln, HF)` path fragments, the first occurrence replaced in order (Jamba keeps its Mamba
    /// mixer's tensors directly under `mamba.`, kiln one level down under `mamba.mixer.`).
    pub renames: &'static [(&'static str, &'static str)],
    /// HF layers one kiln block `layers.i` stands for: `i·n … i·n + n − 1` (MobileLLM-LS: 2).
    pub layer_repeats: usize,
    /// The token embedding's module path (`embed_tokens.weight`), for the tied-head rule.
    pub embedding: &'static str,
    /// The head is the embedding: no `lm_head.weight` is written, an equal one is accepted.
    pub tie_word_embeddings: bool,
    /// Checkpoint names with these endings are accepted and not read.
    pub ignored_suffixes: &'static [&'static str],
}

/// The head's module path: the one path HF keeps outside the prefix.
const HEAD: &str = "lm_head";

impl HfMapping {
    /// The HF names of the parameter at module path `path` (more than one for a shared block).
    pub fn hf_names(&self, path: &str) -> Vec<String> {
        if path == HEAD || path.starts_with("lm_head.") {
            return vec![path.to_string()];
        }
        let mut path = path.to_string();
        for (from, to) in self.renames {
            path = path.replacen(from, to, 1);
        }
        let layer = path
            .strip_prefix("layers.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)));
        match layer {
            Some((i, rest)) if self.layer_repeats > 1 => (0..self.layer_repeats)
                .map(|r| {
                    let hf_layer = i * self.layer_repeats + r;
                    format!("{}layers.{hf_layer}.{rest}", self.prefix)
                })
                .collect(),
            _ => vec![format!("{}{path}", self.prefix)],
        }
    }

    /// The module path of the HF name `hf_name` (of a parameter or a module): the inverse of
    /// [`HfMapping::hf_names`], a shared block's copies giving one path. `None` for a name
    /// outside this model's prefix.
    pub fn kiln_path(&self, hf_name: &str) -> Option<String> {
        if hf_name == HEAD || hf_name.starts_with("lm_head.") {
            return Some(hf_name.to_string());
        }
        let mut path = hf_name.strip_prefix(self.prefix)?.to_string();
        let layer = path
            .strip_prefix("layers.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest.to_string())));
        if let Some((i, rest)) = layer.filter(|_| self.layer_repeats > 1) {
            path = format!("layers.{}.{rest}", i / self.layer_repeats);
        }
        for (kiln, hf) in self.renames.iter().rev() {
            path = path.replacen(hf, kiln, 1);
        }
        Some(path)
    }

    /// The embedding's HF name when the head is tied.
    fn tied_embedding(&self) -> Option<String> {
        self.tie_word_embeddings
            .then(|| self.hf_names(self.embedding).remove(0))
    }

    fn ignored(&self, name: &str) -> bool {
        self.ignored_suffixes.iter().any(|s| name.ends_with(s))
    }
}

/// The dotted module path of the parameter a burn visitor or mapper is at, with the container
/// type of each level. Enum variants (`Model::Llama`) are not part of the name: it must not
/// change when a model is wrapped in the architecture enum.
#[derive(Default)]
pub struct ModulePath {
    /// `(field name or index, type of the container it belongs to)`, outermost first.
    stack: Vec<(String, String)>,
}

impl ModulePath {
    /// Call from `enter_module`.
    pub fn enter(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    /// Call from `exit_module`.
    pub fn exit(&mut self) {
        self.stack.pop();
    }

    /// `layers.3.self_attn.q_proj.weight`.
    pub fn name(&self) -> String {
        self.stack
            .iter()
            .filter(|(_, container)| !container.starts_with("Enum:"))
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }

    /// At the weight of a [`Linear`](crate::Linear) (burn `[in, out]`, HF `[out, in]`).
    pub fn is_linear_weight(&self) -> bool {
        self.stack
            .last()
            .is_some_and(|(name, container)| name == "weight" && container == "Struct:Linear")
    }

    /// Inside a `Linear`'s low-rank adapter.
    pub fn is_adapter(&self) -> bool {
        self.stack
            .iter()
            .any(|(_, container)| container == "Struct:LowRank")
    }
}

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

/// Which tensors a walk covers: the base model's (HF names) or the LoRA adapters' (PEFT names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Base,
    Adapters,
}

/// What PEFT puts before the base model's HF names in an adapter file.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The HF-style path of an adapter factor: `….q_proj.lora.lora_a` → `….q_proj.lora_A.weight`.
fn peft_path(path: &str) -> String {
    for (kiln, peft) in [
        (".lora.lora_a", ".lora_A.weight"),
        (".lora.lora_b", ".lora_B.weight"),
    ] {
        if let Some(layer) = path.strip_suffix(kiln) {
            return format!("{layer}{peft}");
        }
    }
    path.to_string()
}

/// One base-model parameter in HF terms: its HF name(s) (several for a shared block), HF shape
/// and, when read, its values in HF layout.
struct HfParam {
    names: Vec<String>,
    shape: Vec<usize>,
    data: Vec<f32>,
    /// The kiln block (`layers.3`) when it stands for several HF layers.
    shared_block: Option<String>,
}

/// Each HF tensor with the parameter it comes from, in HF order: module order, with the copies
/// of a shared block written block by block (HF layer `2i` whole, then `2i + 1`).
fn hf_order(params: &[HfParam]) -> Vec<(&str, &HfParam)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < params.len() {
        let block = &params[start].shared_block;
        let len = match block {
            Some(_) => params[start..]
                .iter()
                .take_while(|p| &p.shared_block == block)
                .count(),
            None => 1,
        };
        let run = &params[start..start + len];
        for copy in 0..run[0].names.len() {
            out.extend(run.iter().map(|p| (p.names[copy].as_str(), p)));
        }
        start += len;
    }
    out
}

/// Collects every parameter of `part` (`with_data: false`: names and shapes only, without
/// materialising lazy parameters).
struct Export<'a> {
    mapping: &'a HfMapping,
    part: Part,
    path: ModulePath,
    with_data: bool,
    out: Vec<HfParam>,
}

impl Export<'_> {
    /// The HF (or PEFT) names of the parameter at module path `path`.
    fn names(mapping: &HfMapping, part: Part, path: &str) -> Vec<String> {
        match part {
            Part::Base => mapping.hf_names(path),
            Part::Adapters => mapping
                .hf_names(&peft_path(path))
                .into_iter()
                .map(|n| format!("{PEFT_PREFIX}{n}"))
                .collect(),
        }
    }
}

impl<B: Backend> ModuleVisitor<B> for Export<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.path.is_adapter() != (self.part == Part::Adapters) {
            return;
        }
        let mut shape = param.lazy_shape().to_vec();
        let mut data = Vec::new();
        if self.with_data {
            data = param
                .val()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("converted tensor data is f32");
        }
        // Linear weights and both LoRA factors are `[in, out]` in burn, `[out, in]` in PyTorch.
        if self.path.is_linear_weight() || self.part == Part::Adapters {
            let (d_in, d_out) = (shape[0], shape[1]);
            if self.with_data {
                data = transpose(&data, d_in, d_out);
            }
            shape = vec![d_out, d_in];
        }
        let path = self.path.name();
        let names = Self::names(self.mapping, self.part, &path);
        let shared_block = (names.len() > 1).then(|| {
            let mut parts = path.splitn(3, '.');
            format!(
                "{}.{}",
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("")
            )
        });
        self.out.push(HfParam {
            names,
            shape,
            data,
            shared_block,
        });
    }
}

fn hf_params<B: Backend, M: Module<B>>(
    model: &M,
    mapping: &HfMapping,
    part: Part,
    with_data: bool,
) -> Vec<HfParam> {
    let mut walk = Export {
        mapping,
        part,
        path: ModulePath::default(),
        with_data,
        out: Vec::new(),
    };
    model.visit(&mut walk);
    walk.out
}

/// Every base-model parameter under its HF name(s), in HF layout (`[out, in]`), in module order;
/// a shared block once per HF layer, no `lm_head.weight` when tied.
pub fn to_hf_tensors<B: Backend, M: Module<B>>(model: &M, mapping: &HfMapping) -> Vec<HfTensor> {
    tensors_of(model, mapping, Part::Base)
}

/// Every LoRA adapter factor under its PEFT name (`base_model.model.model.layers.0.self_attn.
/// q_proj.lora_A.weight` `[r, in]`, `….lora_B.weight` `[out, r]`), in module order; a shared
/// block's adapter once per HF layer. Empty for a model without adapters.
pub fn to_peft_tensors<B: Backend, M: Module<B>>(model: &M, mapping: &HfMapping) -> Vec<HfTensor> {
    tensors_of(model, mapping, Part::Adapters)
}

fn tensors_of<B: Backend, M: Module<B>>(
    model: &M,
    mapping: &HfMapping,
    part: Part,
) -> Vec<HfTensor> {
    let params = hf_params(model, mapping, part, true);
    hf_order(&params)
        .into_iter()
        .map(|(name, p)| HfTensor {
            name: name.to_string(),
            shape: p.shape.clone(),
            data: p.data.clone(),
        })
        .collect()
}

/// Every tensor an HF checkpoint of `model` holds, `(name, HF shape)`, in [`to_hf_tensors`]
/// order. Reads no parameter values.
pub fn hf_layout<B: Backend, M: Module<B>>(
    model: &M,
    mapping: &HfMapping,
) -> Vec<(String, Vec<usize>)> {
    let params = hf_params(model, mapping, Part::Base, false);
    hf_order(&params)
        .into_iter()
        .map(|(name, p)| (name.to_string(), p.shape.clone()))
        .collect()
}

/// HF import and export for a model: the generic walk with the model's [`HfMapping`].
/// Implemented by [`crate::Model`] and each architecture's model.
pub trait HfModel<B: Backend>: Module<B> {
    /// The per-architecture table (from the model's config).
    fn hf_mapping(&self) -> HfMapping;

    /// Every base-model parameter under its HF name(s), HF layout (see [`to_hf_tensors`]).
    fn to_hf_tensors(&self) -> Vec<HfTensor> {
        to_hf_tensors(self, &self.hf_mapping())
    }

    /// `(name, HF shape)` of every tensor an HF checkpoint of this model holds; reads no values.
    fn hf_layout(&self) -> Vec<(String, Vec<usize>)> {
        hf_layout(self, &self.hf_mapping())
    }

    /// Replaces every base-model parameter with the HF tensors (ids, device and `require_grad`
    /// kept), after checking names, shapes, shared copies, a tied head and extra names; the error
    /// names the offending tensor.
    fn load_hf_tensors(self, tensors: &HashMap<String, HfTensor>) -> Result<Self, ArchError> {
        let mapping = self.hf_mapping();
        load_hf_tensors(self, &mapping, tensors)
    }

    /// Every LoRA factor under its PEFT name (see [`to_peft_tensors`]).
    fn to_peft_tensors(&self) -> Vec<HfTensor> {
        to_peft_tensors(self, &self.hf_mapping())
    }

    /// Replaces every LoRA factor with the PEFT tensors (see [`load_peft_tensors`]).
    fn load_peft_tensors(self, tensors: &HashMap<String, HfTensor>) -> Result<Self, ArchError> {
        let mapping = self.hf_mapping();
        load_peft_tensors(self, &mapping, tensors)
    }
}

/// Looks a tensor up and checks its shape and data length.
fn fetch<'a>(
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

/// The checks an HF import runs before touching the model: every tensor of the layout present
/// with its shape; the copies of a shared block equal; with a tied head, an optional
/// `lm_head.weight` equal to the embedding; no names outside the layout but that optional head and
/// the ignored ones. Each error names the offending tensor(s).
fn check_hf_tensors<B: Backend, M: Module<B>>(
    model: &M,
    mapping: &HfMapping,
    part: Part,
    tensors: &HashMap<String, HfTensor>,
) -> Result<(), ArchError> {
    let params = hf_params(model, mapping, part, false);
    for p in &params {
        for name in &p.names {
            fetch(tensors, name, &p.shape)?;
        }
        let first = &p.names[0];
        for copy in &p.names[1..] {
            if tensors[first].data != tensors[copy].data {
                return Err(ArchError::TiedTensorMismatch {
                    first: first.clone(),
                    second: copy.clone(),
                    reason:
                        "layer sharing: HF layers 2i and 2i+1 are one kiln block (and one adapter)",
                });
            }
        }
    }
    let head = "lm_head.weight";
    let tied = mapping.tied_embedding().filter(|_| part == Part::Base);
    if let Some(embed) = &tied {
        if let Some(embed_t) = tensors.get(embed).filter(|_| tensors.contains_key(head)) {
            if fetch(tensors, head, &embed_t.shape)?.data != embed_t.data {
                return Err(ArchError::TiedTensorMismatch {
                    first: embed.clone(),
                    second: head.to_string(),
                    reason: "tie_word_embeddings is true",
                });
            }
        }
    }
    let expected: BTreeSet<&str> = params
        .iter()
        .flat_map(|p| p.names.iter().map(String::as_str))
        .collect();
    let unexpected: BTreeSet<&String> = tensors
        .keys()
        .filter(|k| !expected.contains(k.as_str()))
        .filter(|k| !(tied.is_some() && k.as_str() == head))
        .filter(|k| part == Part::Adapters || !mapping.ignored(k))
        .collect();
    if !unexpected.is_empty() {
        return Err(ArchError::UnexpectedTensors {
            names: unexpected.into_iter().cloned().collect(),
        });
    }
    Ok(())
}

/// Replaces every parameter of `part` by its HF tensor (checked by [`check_hf_tensors`] first).
struct Import<'a> {
    mapping: &'a HfMapping,
    part: Part,
    path: ModulePath,
    tensors: &'a HashMap<String, HfTensor>,
}

impl<B: Backend> ModuleMapper<B> for Import<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.path.is_adapter() != (self.part == Part::Adapters) {
            return param;
        }
        // A shared block reads its first HF layer (the copies were checked equal).
        let t = &self.tensors[&Export::names(self.mapping, self.part, &self.path.name())[0]];
        let (shape, data) = if self.path.is_linear_weight() || self.part == Part::Adapters {
            let (d_out, d_in) = (t.shape[0], t.shape[1]);
            (vec![d_in, d_out], transpose(&t.data, d_out, d_in))
        } else {
            (t.shape.clone(), t.data.clone())
        };
        // Keeps the parameter's id, device and `require_grad`, without running a lazy initialiser.
        let device = param.lazy_device();
        let tensor = Tensor::<B, D>::from_data(TensorData::new(data, shape), &device);
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Loads HF tensors into `model`, whose structure fixes every expected name and shape. Checks
/// everything first (see [`check_hf_tensors`]), so an error leaves no half-loaded model; adapter
/// tensors are kept as they are.
pub fn load_hf_tensors<B: Backend, M: Module<B>>(
    model: M,
    mapping: &HfMapping,
    tensors: &HashMap<String, HfTensor>,
) -> Result<M, ArchError> {
    load_part(model, mapping, Part::Base, tensors)
}

/// Checks, then replaces, every parameter of `part`.
fn load_part<B: Backend, M: Module<B>>(
    model: M,
    mapping: &HfMapping,
    part: Part,
    tensors: &HashMap<String, HfTensor>,
) -> Result<M, ArchError> {
    check_hf_tensors(&model, mapping, part, tensors)?;
    Ok(model.map(&mut Import {
        mapping,
        part,
        path: ModulePath::default(),
        tensors,
    }))
}

/// Loads a PEFT adapter file's tensors into the LoRA factors of `model` (built with adapters on
/// the layers the adapter targets), with the checks of [`load_hf_tensors`]: every factor present
/// with its shape, a shared block's copies equal, no tensor the model has no place for (an adapter
/// on a layer this model does not adapt is named). Base weights are kept.
pub fn load_peft_tensors<B: Backend, M: Module<B>>(
    model: M,
    mapping: &HfMapping,
    tensors: &HashMap<String, HfTensor>,
) -> Result<M, ArchError> {
    load_part(model, mapping, Part::Adapters, tensors)
}
/// Merges LoRA adapters into base-model tensors, both in HF terms: for every PEFT pair
/// `base_model.model.<layer>.lora_A.weight` (`A` `[r, in]`) / `.lora_B.weight` (`B` `[out, r]`),
/// `<layer>.weight` (`W` `[out, in]`) becomes `W + scale · B A` (PEFT's `merge_and_unload`).
/// Errors name the adapter whose layer is not among `base` (e.g. a head tied to the embedding:
/// merging would untie it) or whose shapes do not fit.
pub fn merge_peft_into_hf(
    base: &mut [HfTensor],
    adapters: &[HfTensor],
    scale: f64,
) -> Result<(), ArchError> {
    let by_name: HashMap<&str, &HfTensor> = adapters.iter().map(|t| (t.name.as_str(), t)).collect();
    for a in adapters {
        let Some(layer) = a
            .name
            .strip_prefix(PEFT_PREFIX)
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
        else {
            continue;
        };
        let b_name = format!("{PEFT_PREFIX}{layer}.lora_B.weight");
        let b = by_name
            .get(b_name.as_str())
            .ok_or_else(|| ArchError::MissingTensor {
                name: b_name.clone(),
            })?;
        let weight = format!("{layer}.weight");
        let w = base.iter_mut().find(|t| t.name == weight).ok_or_else(|| {
            ArchError::UnexpectedTensors {
                names: vec![a.name.clone()],
            }
        })?;
        let (r, d_in) = (a.shape[0], a.shape[1]);
        let d_out = b.shape[0];
        if w.shape != [d_out, d_in] || b.shape != [d_out, r] {
            return Err(ArchError::ShapeMismatch {
                name: b_name,
                expected: vec![w.shape[0], r],
                got: b.shape.clone(),
            });
        }
        // W[o, i] += scale · Σ_k B[o, k] A[k, i], accumulated in f64.
        for o in 0..d_out {
            for i in 0..d_in {
                let delta: f64 = (0..r)
                    .map(|k| b.data[o * r + k] as f64 * a.data[k * d_in + i] as f64)
                    .sum();
                w.data[o * d_in + i] = (w.data[o * d_in + i] as f64 + scale * delta) as f32;
            }
        }
    }
    Ok(())
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
