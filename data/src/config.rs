//! The recipe's `data:` section, defined once, here (the trainer's recipe embeds it as is).
//!
//! ```yaml
//! data:
//!   sources:
//!     - name: web                       # names the source in logs, reports and metrics
//!       type: parquet                   # parquet | jsonl | text | synthetic_stories | token_shards
//!       paths: [data/fineweb-edu/*.parquet]
//!       weight: 0.8                     # share of training windows drawn from this source
//!       filters: {gopher_quality: {}, c4: {}, fineweb: {}, language: {}}
//!       dedup: {exact: true, minhash: {}}
//!     - name: stories
//!       type: synthetic_stories
//!       tokens: 20000000
//!       weight: 0.2
//!   stages:                             # optional: a new mix from a given step on
//!     - {from_step: 5000, weights: {web: 0.95, stories: 0.05}}
//! ```
//!
//! Which keys apply to which `type` is checked by [`DataConfig::validate`], which names the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dedup::DedupConfig;
use crate::filters::{FilterChain, FilterConfig};
use crate::sources::{Columns, InputFormat, TextUnit};
use crate::DataError;

/// What kind of input a source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// TinyStories-style stories generated on the fly ([`crate::StoryGenerator`]).
    SyntheticStories,
    /// Apache Parquet files (FineWeb layout: a `text` column plus metadata columns).
    Parquet,
    /// JSON Lines, one `{"text": ...}` object per line (`.gz` allowed).
    Jsonl,
    /// Plain-text files; see `text_unit`.
    Text,
    /// Already-tokenized llm.c/nanoGPT/kiln `.bin` shards, used as they are.
    TokenShards,
}

impl SourceKind {
    /// The document file format of a text source (`None` for generated stories and token shards).
    pub fn input_format(self) -> Option<InputFormat> {
        match self {
            SourceKind::Parquet => Some(InputFormat::Parquet),
            SourceKind::Jsonl => Some(InputFormat::Jsonl),
            SourceKind::Text => Some(InputFormat::Text),
            SourceKind::SyntheticStories | SourceKind::TokenShards => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SourceKind::SyntheticStories => "synthetic_stories",
            SourceKind::Parquet => "parquet",
            SourceKind::Jsonl => "jsonl",
            SourceKind::Text => "text",
            SourceKind::TokenShards => "token_shards",
        }
    }
}

/// How a `token_shards` source's files are laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    /// llm.c shards (1024-byte header, then `u16`/`u32` ids), also what kiln writes: used in place.
    #[default]
    Llmc,
    /// Header-less little-endian `u16` ids, as nanoGPT's `prepare.py` writes `train.bin`;
    /// converted once into llm.c shards in the cache.
    RawU16,
    /// Header-less little-endian `u32` ids; converted like `raw_u16`.
    RawU32,
}

impl TokenFormat {
    /// Bytes per id of a header-less format (`None` for llm.c shards).
    pub fn raw_width(self) -> Option<usize> {
        match self {
            TokenFormat::Llmc => None,
            TokenFormat::RawU16 => Some(2),
            TokenFormat::RawU32 => Some(4),
        }
    }

    fn is_llmc(&self) -> bool {
        *self == TokenFormat::Llmc
    }
}

/// One entry of `data.sources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Defaults to the type (`synthetic_stories`, `parquet`, ...); names must be unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: SourceKind,
    /// Relative share of training windows (normalised over sources). Does not affect preparation.
    #[serde(default = "default_weight")]
    pub weight: f64,

    /// `synthetic_stories`: token budget (train + validation, `<|endoftext|>` included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// `synthetic_stories`: generator seed.
    #[serde(default = "default_seed")]
    pub seed: u64,

    /// `parquet` / `jsonl` / `text`: files, directories or glob patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// `parquet` / `jsonl`: column (key) names.
    #[serde(default)]
    pub columns: Columns,
    /// `text`: a document per file, per blank-line-separated paragraph or per line.
    #[serde(default)]
    pub text_unit: TextUnit,
    /// Stop reading this source after this many documents (before filtering); for quick trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_documents: Option<u64>,

    /// Heuristic quality filters (any text source).
    #[serde(default)]
    pub filters: FilterConfig,
    /// Exact and near-duplicate removal (any text source). Exact dedup is on by default.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Keep up to this many rejected documents per filter in `rejected/<filter>.jsonl`.
    #[serde(default)]
    pub keep_rejected: usize,

    /// `token_shards`: training shards (files, directories or globs of `.bin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train: Vec<String>,
    /// `token_shards`: validation shards (optional).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val: Vec<String>,
    /// `token_shards`: the files' layout (`llmc`, or header-less `raw_u16` / `raw_u32`).
    #[serde(default, skip_serializing_if = "TokenFormat::is_llmc")]
    pub token_format: TokenFormat,

    /// Overrides `data.val_fraction` for this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_fraction: Option<f64>,
}

fn default_weight() -> f64 {
    1.0
}
fn default_seed() -> u64 {
    1234
}

impl SourceConfig {
    /// The source's name: `name`, or the type when unnamed.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }

    /// A synthetic-stories source (the quickstart's data).
    pub fn synthetic_stories(tokens: u64, seed: u64) -> Self {
        SourceConfig {
            name: None,
            kind: SourceKind::SyntheticStories,
            weight: 1.0,
            tokens: Some(tokens),
            seed,
            paths: Vec::new(),
            columns: Columns::default(),
            text_unit: TextUnit::default(),
            max_documents: None,
            filters: FilterConfig::default(),
            dedup: DedupConfig::default(),
            keep_rejected: 0,
            train: Vec::new(),
            val: Vec::new(),
            token_format: TokenFormat::Llmc,
            val_fraction: None,
        }
    }

    /// A document source (`parquet`, `jsonl` or `text`) over `paths`.
    pub fn files(kind: SourceKind, paths: &[&str]) -> Self {
        SourceConfig {
            kind,
            tokens: None,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..Self::synthetic_stories(0, default_seed())
        }
    }

    /// The part of the config that determines the prepared shards (name and weight do not).
    pub(crate) fn preparation_key(&self) -> SourceConfig {
        SourceConfig {
            name: None,
            weight: 1.0,
            ..self.clone()
        }
    }

    fn validate(&self, i: usize, default_val_fraction: f64) -> Result<(), DataError> {
        let field = |k: &str| format!("sources[{i}].{k}");
        let kind = self.kind.as_str();
        let not_for =
            |k: &str| DataError::config(&field(k), format!("does not apply to a `{kind}` source"));
        let name = self.name();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(DataError::config(
                &field("name"),
                format!("{name:?}: use letters, digits, '-', '_' or '.'"),
            ));
        }
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(DataError::config(
                &field("weight"),
                format!("{} is not a finite number >= 0", self.weight),
            ));
        }
        let vf = self.val_fraction.unwrap_or(default_val_fraction);
        if !(vf.is_finite() && (0.0..0.5).contains(&vf)) {
            return Err(DataError::config(
                &field("val_fraction"),
                format!("{vf} is not in [0, 0.5)"),
            ));
        }
        let is_text = !matches!(self.kind, SourceKind::TokenShards);
        let is_files = self.kind.input_format().is_some();
        if self.kind == SourceKind::SyntheticStories {
            match self.tokens {
                None => return Err(DataError::config(&field("tokens"), "is required")),
                Some(0) => return Err(DataError::config(&field("tokens"), "must be at least 1")),
                Some(_) => {}
            }
        } else if self.tokens.is_some() {
            return Err(not_for("tokens"));
        }
        if is_files && self.paths.is_empty() {
            return Err(DataError::config(
                &field("paths"),
                "is required: files, directories or glob patterns",
            ));
        }
        if !is_files && !self.paths.is_empty() {
            return Err(not_for("paths"));
        }
        if self.kind != SourceKind::Text && self.text_unit != TextUnit::default() {
            return Err(not_for("text_unit"));
        }
        if !matches!(self.kind, SourceKind::Parquet | SourceKind::Jsonl)
            && self.columns != Columns::default()
        {
            return Err(not_for("columns"));
        }
        if self.kind == SourceKind::TokenShards {
            if self.train.is_empty() {
                return Err(DataError::config(
                    &field("train"),
                    "is required: the training .bin shards",
                ));
            }
            if self.filters != FilterConfig::default() {
                return Err(not_for("filters"));
            }
            if self.dedup != DedupConfig::default() {
                return Err(not_for("dedup"));
            }
            if self.max_documents.is_some() {
                return Err(not_for("max_documents"));
            }
            if self.val_fraction.is_some() {
                return Err(DataError::config(
                    &field("val_fraction"),
                    "does not apply to `token_shards` (list validation shards under `val`)",
                ));
            }
        } else if !self.token_format.is_llmc() {
            return Err(not_for("token_format"));
        } else if !self.train.is_empty() || !self.val.is_empty() {
            return Err(not_for(if self.train.is_empty() {
                "val"
            } else {
                "train"
            }));
        }
        if is_text {
            FilterChain::new(&self.filters, &field("filters"))?;
            self.dedup.validate(&field("dedup"))?;
        }
        Ok(())
    }
}

/// One entry of `data.stages`: the mix from `from_step` on. Sources not listed get weight 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub from_step: u64,
    pub weights: BTreeMap<String, f64>,
}

/// The recipe's `data:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub sources: Vec<SourceConfig>,
    /// Mix changes at later steps; the sources' `weight`s are the mix from step 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageConfig>,
    /// Fraction of each source's documents held out for validation (per-source override:
    /// `sources[i].val_fraction`).
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Tokens per shard file.
    #[serde(default = "default_shard_tokens")]
    pub shard_tokens: usize,
    /// Where prepared shards are cached (keyed by a hash of the data and tokenizer sections).
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// Keep the documents inside a training window apart (attention, RoPE positions, Mamba's
    /// convolution and state restart at each document), from the `.idx` document index beside
    /// each shard: Llama 3's and torchtitan's document masking. Default false: windows run across
    /// documents, as in nanoGPT and llm.c. Training only; the prepared data is the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub document_masking: bool,
}

fn default_val_fraction() -> f64 {
    0.005
}
fn default_shard_tokens() -> usize {
    100_000_000
}
fn default_cache_dir() -> PathBuf {
    PathBuf::from("checkpoints/data")
}

impl DataConfig {
    /// A config with these sources and the defaults for everything else.
    pub fn new(sources: Vec<SourceConfig>) -> Self {
        DataConfig {
            sources,
            stages: Vec::new(),
            val_fraction: default_val_fraction(),
            shard_tokens: default_shard_tokens(),
            cache_dir: default_cache_dir(),
            document_masking: false,
        }
    }

    /// Checks every setting; errors name the key below `data.` (e.g. `sources[1].paths`).
    pub fn validate(&self) -> Result<(), DataError> {
        if self.sources.is_empty() {
            return Err(DataError::config("sources", "needs at least one source"));
        }
        if !(self.val_fraction.is_finite() && (0.0..0.5).contains(&self.val_fraction)) {
            return Err(DataError::config(
                "val_fraction",
                format!("{} is not in [0, 0.5)", self.val_fraction),
            ));
        }
        if self.shard_tokens < 1024 {
            return Err(DataError::config("shard_tokens", "must be at least 1024"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            s.validate(i, self.val_fraction)?;
            if !names.insert(s.name()) {
                return Err(DataError::config(
                    &format!("sources[{i}].name"),
                    format!(
                        "`{}` is used by an earlier source; give each source a unique `name`",
                        s.name()
                    ),
                ));
            }
        }
        if self.sources.iter().map(|s| s.weight).sum::<f64>() <= 0.0 {
            return Err(DataError::config(
                "sources",
                "the weights sum to 0: at least one source needs a positive weight",
            ));
        }
        let mut last = 0;
        for (k, stage) in self.stages.iter().enumerate() {
            let field = |f: &str| format!("stages[{k}].{f}");
            if stage.from_step == 0 || stage.from_step <= last {
                return Err(DataError::config(
                    &field("from_step"),
                    "stages must start after step 0 (step 0 uses the sources' weights) and in increasing order",
                ));
            }
            last = stage.from_step;
            for (name, w) in &stage.weights {
                if !names.contains(name.as_str()) {
                    return Err(DataError::config(
                        &field("weights"),
                        format!("no source is named `{name}` (sources: {names:?})"),
                    ));
                }
                if !(w.is_finite() && *w >= 0.0) {
                    return Err(DataError::config(
                        &field(&format!("weights.{name}")),
                        format!("{w} is not a finite number >= 0"),
                    ));
                }
            }
            if stage.weights.values().sum::<f64>() <= 0.0 {
                return Err(DataError::config(
                    &field("weights"),
                    "the weights sum to 0: at least one source needs a positive weight",
                ));
            }
        }
        Ok(())
    }

    /// Validation fraction of source `i`.
    pub fn val_fraction_of(&self, i: usize) -> f64 {
        self.sources[i].val_fraction.unwrap_or(self.val_fraction)
    }

    /// `(from_step, weights in source order)` for step 0 and every stage.
    pub fn mix_schedule(&self) -> Vec<(u64, Vec<f64>)> {
        let mut out = vec![(0, self.sources.iter().map(|s| s.weight).collect())];
        for stage in &self.stages {
            let weights = self
                .sources
                .iter()
                .map(|s| stage.weights.get(s.name()).copied().unwrap_or(0.0))
                .collect();
            out.push((stage.from_step, weights));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> DataConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    /// The error of `validate`, as text.
    fn invalid(yaml: &str) -> String {
        parse(yaml).validate().unwrap_err().to_string()
    }

    #[test]
    fn a_full_config_parses_and_gives_the_mix_schedule() {
        let c = parse(concat!(
            "sources:\n",
            "  - {name: web, type: parquet, paths: [a/*.parquet], weight: 0.8,\n",
            "     filters: {gopher_quality: {}, language: {}}, dedup: {exact: true, minhash: {}}}\n",
            "  - {type: synthetic_stories, tokens: 1000, weight: 0.2}\n",
            "  - {name: old, type: token_shards, train: [x.bin], token_format: raw_u16, weight: 0}\n",
            "stages:\n",
            "  - {from_step: 100, weights: {web: 1, old: 1}}\n",
        ));
        c.validate().unwrap();
        assert_eq!(c.sources[1].name(), "synthetic_stories");
        assert_eq!(c.sources[2].token_format, TokenFormat::RawU16);
        assert_eq!(
            c.mix_schedule(),
            vec![(0, vec![0.8, 0.2, 0.0]), (100, vec![1.0, 0.0, 1.0])]
        );
        // Name and weight do not change what is prepared.
        let mut renamed = c.sources[0].clone();
        renamed.name = Some("other".into());
        renamed.weight = 3.0;
        assert_eq!(renamed.preparation_key(), c.sources[0].preparation_key());
    }

    #[test]
    fn errors_name_the_key() {
        for (yaml, needles) in [
            ("sources: []", &["sources", "at least one"][..]),
            (
                "sources: [{type: parquet, paths: [a], tokens: 5}]",
                &["sources[0].tokens", "parquet"],
            ),
            (
                "sources: [{type: synthetic_stories, tokens: 5, token_format: raw_u16}]",
                &["sources[0].token_format"],
            ),
            (
                "sources: [{type: token_shards, train: [a.bin], filters: {c4: {}}}]",
                &["sources[0].filters"],
            ),
            (
                "sources: [{type: synthetic_stories, tokens: 5}, {type: synthetic_stories, tokens: 9}]",
                &["sources[1].name", "unique"],
            ),
            (
                "sources: [{type: synthetic_stories, tokens: 5, weight: 0}]",
                &["weights sum to 0"],
            ),
            (
                "sources: [{type: synthetic_stories, tokens: 5}]\nstages: [{from_step: 0, weights: {synthetic_stories: 1}}]",
                &["stages[0].from_step"],
            ),
            (
                "sources: [{type: synthetic_stories, tokens: 5}]\nstages: [{from_step: 9, weights: {web: 1}}]",
                &["stages[0].weights", "`web`"],
            ),
            (
                "sources: [{type: parquet, paths: [a], filters: {gopher_quality: {min_doc_words: -1}}}]",
                &["gopher_quality"],
            ),
        ] {
            let err = match serde_yaml_ng::from_str::<DataConfig>(yaml) {
                Ok(c) => c.validate().unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            for n in needles {
                assert!(err.contains(n), "{yaml}: {err:?} should mention {n}");
            }
        }
        assert!(invalid("sources: [{type: parquet}]").contains("sources[0].paths"));
    }
}
