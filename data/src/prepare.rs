//! Data preparation: sources → filters → dedup → tokenizer → shards with document indexes.
//!
//! # Layout
//!
//! [`prepare`] writes under `cache_dir/<data key>/`:
//!
//! - `tokenizer.json` — trained here ([`TokenizerSpec::TrainBpe`], on the first documents of
//!   each text source that pass its filters) or copied ([`TokenizerSpec::File`]);
//! - one directory per source, `<name>-<source key>/`, holding per *unit* (an input file, or the
//!   story generator) `uNNNNNN.train.KKK.bin` / `uNNNNNN.val.KKK.bin` (llm.c shards of at most
//!   `shard_tokens` tokens), a `.idx` document index beside each shard
//!   ([`crate::shard::write_doc_index`]), `uNNNNNN.sig` (dedup signatures), `uNNNNNN.docs`
//!   (each filtered document's fate) and `uNNNNNN.json`, the unit's record, written last;
//! - in each source directory, once all its units are done: `report.json`, `report.txt`,
//!   `rejected/<filter>.jsonl` (samples, when `keep_rejected > 0`) and `source.json`, which marks
//!   the source complete; and `report.json` / `report.txt` over all sources at the top.
//!
//! # Keys, staleness, restarts
//!
//! `<data key>` hashes [`PREPARE_FORMAT`], the tokenizer spec (and the tokenizer file's bytes)
//! and, when the tokenizer is trained here, every text source's settings (they decide its
//! sample). `<source key>` hashes the source's settings except its name and weight, its
//! validation fraction, `shard_tokens` and the path, size and modification time of every input
//! file. A changed setting or input gives a new directory; an unchanged one is reused.
//!
//! A unit is complete when its record exists: a re-run skips complete units and redoes any unit
//! whose files exist without a record (an interrupted run). Every file is written to a `.tmp`
//! name and renamed, so no file that looks complete is partial. Deduplication is order-defined
//! (a document is a duplicate when any *earlier* document shares a hash), so skipped units
//! replay their saved signatures into the deduplicator and the result equals an uninterrupted
//! run's.
//!
//! # Workers
//!
//! [`prepare_worker`] with `(i, n)` processes only units `u` with `u % n == i`, so `n`
//! independent processes (a cluster array job) share the work; a later [`prepare`] finds those
//! units done, processes any that are missing, and merges. Each worker deduplicates within its
//! own units; the merge then applies the same order-defined rule across all units and removes
//! the documents that a worker could not see were duplicates, rewriting those units' shards, so
//! the shards equal a single-process run's (and so do the report's totals; a document that is
//! both kinds of duplicate may be counted under the other dedup stage). With a trained tokenizer, run
//! [`prepare_tokenizer`] once before the workers: they must all use the same tokenizer.
//!
//! # Documents
//!
//! Each document is preceded by `<|endoftext|>` (llm.c's convention), so shards read
//! `EOT doc0 EOT doc1 …`. A document goes to validation when a hash of (unit, index of the
//! document in its file) falls below the validation fraction: deterministic, independent of
//! filtering, order and workers.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{DataConfig, SourceConfig, SourceKind};
use crate::dedup::{read_signatures, write_signatures, Deduper, Duplicate, Signature, Signer};
use crate::filters::FilterChain;
use crate::report::SourceReport;
use crate::shard::{convert_raw_tokens, read_doc_index, write_doc_index, PendingFile, ShardWriter};
use crate::sources::{expand_paths, read_documents, DocumentReader};
use crate::tokenizer::EOT;
use crate::{DataError, Document, Shard, StoryGenerator, TextTokenizer};

/// Version tag of the preparation output; part of every cache key. Bump it whenever the output
/// for the same settings changes.
pub const PREPARE_FORMAT: &str = "kiln-data prepare v2 (stories v1, bytelevel-bpe v1)";

/// Documents read, then filtered, signed and tokenized in parallel, per batch.
const BATCH_DOCS: usize = 1024;

/// The recipe's `tokenizer:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerSpec {
    /// Train byte-level BPE on the first `sample_docs` documents (split evenly over the text
    /// sources, after their filters). `special_tokens` get ids `0..n` in order and must include
    /// `<|endoftext|>`. `vocab_size` is an upper bound: a small or repetitive sample can run out
    /// of merges first ([`PreparedData::vocab_size`] is the size reached).
    TrainBpe {
        vocab_size: usize,
        #[serde(default = "default_sample_docs")]
        sample_docs: usize,
        #[serde(default = "default_special_tokens")]
        special_tokens: Vec<String>,
    },
    /// Use an existing `tokenizer.json` (it must contain `<|endoftext|>`).
    File { path: PathBuf },
}

fn default_sample_docs() -> usize {
    20_000
}
fn default_special_tokens() -> Vec<String> {
    vec![EOT.to_string()]
}

impl TokenizerSpec {
    /// Checks the settings; errors name the key below `tokenizer.`.
    pub fn validate(&self) -> Result<(), DataError> {
        match self {
            TokenizerSpec::TrainBpe {
                vocab_size,
                sample_docs,
                special_tokens,
            } => {
                if *vocab_size < 256 + special_tokens.len() {
                    return Err(DataError::config(
                        "tokenizer.vocab_size",
                        "must cover the 256 byte tokens and the special tokens",
                    ));
                }
                if *sample_docs == 0 {
                    return Err(DataError::config(
                        "tokenizer.sample_docs",
                        "must be at least 1",
                    ));
                }
                if !special_tokens.iter().any(|t| t == EOT) {
                    return Err(DataError::config(
                        "tokenizer.special_tokens",
                        format!("must include {EOT:?} (it separates documents)"),
                    ));
                }
            }
            TokenizerSpec::File { path } => {
                if !path.is_file() {
                    return Err(DataError::config(
                        "tokenizer.path",
                        format!("{} is not a file", path.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Prepared shards of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedSource {
    pub name: String,
    pub dir: PathBuf,
    pub train_shards: Vec<PathBuf>,
    /// Empty when the source holds out nothing.
    pub val_shards: Vec<PathBuf>,
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub train_docs: u64,
    pub val_docs: u64,
}

/// The result of [`prepare`].
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedData {
    pub dir: PathBuf,
    pub tokenizer_path: PathBuf,
    /// Embedding rows the tokenizer needs (largest id + 1).
    pub vocab_size: usize,
    pub eot_id: u32,
    /// In recipe order.
    pub sources: Vec<PreparedSource>,
    pub reports: Vec<SourceReport>,
}

impl PreparedData {
    pub fn train_tokens(&self) -> u64 {
        self.sources.iter().map(|s| s.train_tokens).sum()
    }
    pub fn val_tokens(&self) -> u64 {
        self.sources.iter().map(|s| s.val_tokens).sum()
    }
}

/// Live figures for a progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgressUpdate<'a> {
    pub source: &'a str,
    pub docs_read: u64,
    pub docs_kept: u64,
    pub tokens: u64,
    /// Fraction of this source's work done, when known.
    pub fraction: Option<f64>,
}

/// Receives status lines and live figures.
pub trait Progress {
    fn line(&mut self, msg: &str);
    fn update(&mut self, _update: &ProgressUpdate) {}
}

impl<F: FnMut(&str)> Progress for F {
    fn line(&mut self, msg: &str) {
        self(msg)
    }
}

/// Prepares (or reuses) all sources of `config` and returns their shards. See the module docs.
pub fn prepare(
    config: &DataConfig,
    tokenizer: &TokenizerSpec,
    progress: &mut dyn Progress,
) -> Result<PreparedData, DataError> {
    let plan = Plan::new(config, tokenizer)?;
    let tok = plan.tokenizer(progress, true)?;
    let mut sources = Vec::new();
    let mut reports = Vec::new();
    for s in &plan.sources {
        let (prepared, report) = s.prepare_all(&plan, &tok, progress)?;
        sources.push(prepared);
        reports.push(report);
    }
    write_json(&plan.dir.join("report.json"), &reports)?;
    let text: String = reports.iter().map(|r| r.to_text()).collect();
    write_atomic(&plan.dir.join("report.txt"), text.as_bytes())?;
    Ok(PreparedData {
        dir: plan.dir.clone(),
        tokenizer_path: plan.tokenizer_path(),
        vocab_size: tok.vocab_size(),
        eot_id: tok.eot_id()?,
        sources,
        reports,
    })
}

/// Prepares (or reuses) only the tokenizer; returns its path.
pub fn prepare_tokenizer(
    config: &DataConfig,
    tokenizer: &TokenizerSpec,
    progress: &mut dyn Progress,
) -> Result<PathBuf, DataError> {
    let plan = Plan::new(config, tokenizer)?;
    plan.tokenizer(progress, true)?;
    Ok(plan.tokenizer_path())
}

/// What one worker did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerSummary {
    pub units_done: u64,
    pub units_skipped: u64,
}

/// Worker `index` of `count`: prepares its share of the units (see the module docs).
pub fn prepare_worker(
    config: &DataConfig,
    tokenizer: &TokenizerSpec,
    index: usize,
    count: usize,
    progress: &mut dyn Progress,
) -> Result<WorkerSummary, DataError> {
    if count == 0 || index >= count {
        return Err(DataError::config(
            "shard",
            format!("worker {index}/{count}: need 0 <= i < n"),
        ));
    }
    let plan = Plan::new(config, tokenizer)?;
    let tok = plan.tokenizer(progress, false)?;
    let mut summary = WorkerSummary::default();
    for s in &plan.sources {
        if s.is_complete() {
            continue;
        }
        let units: Vec<usize> = (0..s.n_units()).filter(|u| u % count == index).collect();
        let (done, skipped) = s.run_units(&plan, &tok, &units, progress)?;
        summary.units_done += done;
        summary.units_skipped += skipped;
    }
    Ok(summary)
}

/// Everything decided before any work: keys, directories and input files.
struct Plan {
    dir: PathBuf,
    spec: TokenizerSpec,
    shard_tokens: usize,
    sources: Vec<SourcePlan>,
}

struct SourcePlan {
    name: String,
    config: SourceConfig,
    dir: PathBuf,
    val_fraction: f64,
    /// Input files (text sources) or training shards (token shards).
    inputs: Vec<InputFile>,
    /// Token shards only: validation shards.
    val_inputs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct InputFile {
    path: PathBuf,
    bytes: u64,
    modified_ns: u128,
}

impl InputFile {
    fn stat(path: PathBuf) -> Result<Self, DataError> {
        let meta = fs::metadata(&path).map_err(|e| DataError::io(&path, e))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(InputFile {
            path,
            bytes: meta.len(),
            modified_ns,
        })
    }
}

fn sha_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serializes")
}

impl Plan {
    fn new(config: &DataConfig, tokenizer: &TokenizerSpec) -> Result<Self, DataError> {
        config.validate()?;
        tokenizer.validate()?;
        let mut key_parts: Vec<Vec<u8>> =
            vec![PREPARE_FORMAT.as_bytes().to_vec(), json_bytes(tokenizer)];
        if let TokenizerSpec::File { path } = tokenizer {
            key_parts.push(fs::read(path).map_err(|e| DataError::io(path, e))?);
        }
        let mut sources = Vec::new();
        for (i, s) in config.sources.iter().enumerate() {
            let inputs: Vec<InputFile>;
            let mut val_inputs = Vec::new();
            match s.kind {
                SourceKind::SyntheticStories => inputs = Vec::new(),
                SourceKind::TokenShards => {
                    inputs = expand_paths(s.name(), &s.train, &["bin"])
                        .map_err(|e| with_hint(e, s))?
                        .into_iter()
                        .map(InputFile::stat)
                        .collect::<Result<_, _>>()?;
                    if !s.val.is_empty() {
                        val_inputs = expand_paths(s.name(), &s.val, &["bin"])
                            .map_err(|e| with_hint(e, s))?
                            .into_iter()
                            .map(InputFile::stat)
                            .collect::<Result<_, _>>()?;
                    }
                }
                kind => {
                    let format = kind.input_format().expect("a document format");
                    inputs = expand_paths(s.name(), &s.paths, format.extensions())
                        .map_err(|e| with_hint(e, s))?
                        .into_iter()
                        .map(InputFile::stat)
                        .collect::<Result<_, _>>()?;
                }
            }
            sources.push((i, s, inputs, val_inputs));
        }
        if matches!(tokenizer, TokenizerSpec::TrainBpe { .. }) {
            for (i, s, inputs, _) in &sources {
                if s.kind != SourceKind::TokenShards {
                    key_parts.push(json_bytes(&(
                        s.preparation_key(),
                        inputs,
                        config.val_fraction_of(*i),
                    )));
                }
            }
        }
        let parts: Vec<&[u8]> = key_parts.iter().map(|p| p.as_slice()).collect();
        let dir = config.cache_dir.join(sha_hex(&parts));
        let sources = sources
            .into_iter()
            .map(|(i, s, inputs, val_inputs)| {
                let vf = config.val_fraction_of(i);
                let key = sha_hex(&[
                    PREPARE_FORMAT.as_bytes(),
                    &json_bytes(&(s.preparation_key(), &inputs, vf, config.shard_tokens)),
                    &json_bytes(&val_inputs),
                ]);
                SourcePlan {
                    name: s.name().to_string(),
                    dir: dir.join(format!("{}-{key}", s.name())),
                    config: s.clone(),
                    val_fraction: vf,
                    inputs,
                    val_inputs: val_inputs.into_iter().map(|f| f.path).collect(),
                }
            })
            .collect();
        Ok(Plan {
            dir,
            spec: tokenizer.clone(),
            shard_tokens: config.shard_tokens,
            sources,
        })
    }

    fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }

    /// Loads the tokenizer, creating it first if `create` (else a missing trained one is an error).
    fn tokenizer(
        &self,
        progress: &mut dyn Progress,
        create: bool,
    ) -> Result<TextTokenizer, DataError> {
        let path = self.tokenizer_path();
        fs::create_dir_all(&self.dir).map_err(|e| DataError::io(&self.dir, e))?;
        if path.is_file() {
            return TextTokenizer::from_file(&path);
        }
        let tok = match &self.spec {
            TokenizerSpec::File { path: src } => {
                let bytes = fs::read(src).map_err(|e| DataError::io(src, e))?;
                write_atomic(&path, &bytes)?;
                TextTokenizer::from_file(&path)?
            }
            TokenizerSpec::TrainBpe { .. } if !create => {
                return Err(DataError::config(
                    "tokenizer",
                    format!(
                        "{} does not exist yet: workers must share one trained tokenizer, so \
                         prepare it once first (`train data --recipe R --tokenizer-only`)",
                        path.display()
                    ),
                ))
            }
            TokenizerSpec::TrainBpe {
                vocab_size,
                sample_docs,
                special_tokens,
            } => {
                let text_sources: Vec<&SourcePlan> = self
                    .sources
                    .iter()
                    .filter(|s| s.config.kind != SourceKind::TokenShards)
                    .collect();
                if text_sources.is_empty() {
                    return Err(DataError::config(
                        "tokenizer",
                        "a tokenizer can only be trained on text sources; with only token_shards \
                         sources use `type: file` with the tokenizer that made the shards",
                    ));
                }
                let per_source = sample_docs.div_ceil(text_sources.len());
                let mut sample = Vec::new();
                for s in text_sources {
                    let before = sample.len();
                    s.sample(per_source, &mut sample)?;
                    progress.line(&format!(
                        "data: tokenizer sample: {} documents from `{}`",
                        sample.len() - before,
                        s.name
                    ));
                }
                progress.line(&format!(
                    "data: training a byte-level BPE tokenizer (vocab {vocab_size}) on {} documents",
                    sample.len()
                ));
                let t = Instant::now();
                let tok = TextTokenizer::train_bpe(sample.iter(), *vocab_size, special_tokens)?;
                let pending = PendingFile::for_path(&path);
                tok.save(pending.path())?;
                pending.commit(&path)?;
                progress.line(&format!(
                    "data: tokenizer trained in {:.1}s: {} tokens{}",
                    t.elapsed().as_secs_f64(),
                    tok.vocab_size(),
                    if tok.vocab_size() < *vocab_size {
                        " (the sample ran out of merges before the requested size)"
                    } else {
                        ""
                    }
                ));
                tok
            }
        };
        tok.eot_id()?;
        Ok(tok)
    }
}

/// Adds where-to-get-it hints to "no input" errors.
fn with_hint(e: DataError, s: &SourceConfig) -> DataError {
    match e {
        DataError::NoInput {
            source_name,
            pattern,
            ..
        } => {
            let hint = match s.kind {
                SourceKind::Parquet => {
                    " (expected Apache Parquet files with a `text` column; for FineWeb-Edu's \
                     10B-token sample run `huggingface-cli download HuggingFaceFW/fineweb-edu \
                     --repo-type dataset --include 'sample/10BT/*' --local-dir data/fineweb-edu` \
                     (relative paths are read from the working directory), or point \
                     `paths` at your own files)"
                }
                SourceKind::TokenShards => {
                    " (expected llm.c-format .bin shards, e.g. from llm.c's \
                     dev/data/fineweb.py or `train data`)"
                }
                _ => "",
            };
            DataError::NoInput {
                source_name,
                pattern,
                hint: hint.to_string(),
            }
        }
        e => e,
    }
}

/// The record of a finished unit (`uNNNNNN.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UnitRecord {
    input: Option<InputFile>,
    train_shards: Vec<String>,
    val_shards: Vec<String>,
    report: SourceReport,
    /// Samples of rejected documents (up to `keep_rejected` per filter).
    #[serde(default)]
    rejected: Vec<RejectedDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RejectedDoc {
    filter: String,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    text: String,
}

/// `source.json`: marks a complete source.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SourceRecord {
    format: String,
    name: String,
    train_shards: Vec<PathBuf>,
    val_shards: Vec<PathBuf>,
    report: SourceReport,
}

/// What became of one document that passed the filters (`uNNNNNN.docs`, one byte each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Fate {
    Train = 0,
    Val = 1,
    ExactDuplicate = 2,
    NearDuplicate = 3,
}

impl Fate {
    fn from_byte(b: u8) -> Option<Self> {
        [
            Fate::Train,
            Fate::Val,
            Fate::ExactDuplicate,
            Fate::NearDuplicate,
        ]
        .into_iter()
        .find(|f| *f as u8 == b)
    }
}

/// One filtered, signed, tokenized document (or the reason it was dropped).
enum Processed {
    Rejected {
        filter: usize,
        reason: &'static str,
        bytes: u64,
        sample: Option<Document>,
    },
    Passed {
        index: u64,
        signature: Signature,
        tokens: Vec<u32>,
        /// Bytes as read, and as kept (the C4 rules edit lines out).
        bytes_read: u64,
        bytes: u64,
    },
}

/// Accumulates one split of one unit and writes shards (+ indexes) as they fill.
struct SplitWriter {
    dir: PathBuf,
    prefix: String,
    shard_tokens: usize,
    vocab_size: usize,
    /// The shard being written (streamed to disk: memory does not grow with `shard_tokens`).
    current: Option<ShardWriter>,
    /// Document starts within the current shard.
    starts: Vec<u64>,
    files: Vec<String>,
}

impl SplitWriter {
    fn new(dir: &Path, prefix: String, shard_tokens: usize, vocab_size: usize) -> Self {
        SplitWriter {
            dir: dir.to_path_buf(),
            prefix,
            shard_tokens,
            vocab_size,
            current: None,
            starts: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Appends `EOT doc`; a document that does not fit continues in the next shard.
    fn push_doc(&mut self, eot: u32, doc: &[u32]) -> Result<(), DataError> {
        let mut first = true;
        let mut rest = doc;
        loop {
            if self.current.is_none() {
                let path = self.dir.join(self.next_name());
                self.current = Some(ShardWriter::create(&path, self.vocab_size)?);
            }
            let shard = self.current.as_mut().expect("opened above");
            let room = self.shard_tokens - shard.len();
            if first {
                self.starts.push(shard.len() as u64);
                shard.push(&[eot])?;
                first = false;
            } else {
                let n = rest.len().min(room);
                shard.push(&rest[..n])?;
                rest = &rest[n..];
            }
            if shard.len() >= self.shard_tokens {
                self.close()?;
            }
            if rest.is_empty() && !first {
                return Ok(());
            }
        }
    }

    fn next_name(&self) -> String {
        format!("{}.{:03}.bin", self.prefix, self.files.len())
    }

    /// Finishes the current shard and writes its document index.
    fn close(&mut self) -> Result<(), DataError> {
        if let Some(shard) = self.current.take() {
            let name = self.next_name();
            let path = shard.finish()?;
            write_doc_index(&path.with_extension("idx"), &self.starts)?;
            self.starts.clear();
            self.files.push(name);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<String>, DataError> {
        self.close()?;
        Ok(self.files)
    }
}

impl SourcePlan {
    fn record_path(&self) -> PathBuf {
        self.dir.join("source.json")
    }

    fn is_complete(&self) -> bool {
        self.load_complete().is_some()
    }

    fn load_complete(&self) -> Option<SourceRecord> {
        let text = fs::read_to_string(self.record_path()).ok()?;
        let r: SourceRecord = serde_json::from_str(&text).ok()?;
        let all_there = r
            .train_shards
            .iter()
            .chain(&r.val_shards)
            .all(|p| self.dir.join(p).is_file() || p.is_file());
        (r.format == PREPARE_FORMAT && all_there).then_some(r)
    }

    fn n_units(&self) -> usize {
        match self.config.kind {
            SourceKind::SyntheticStories => 1,
            SourceKind::TokenShards => 0,
            _ => self.inputs.len(),
        }
    }

    fn unit_name(u: usize) -> String {
        format!("u{u:06}")
    }

    fn stage_names(&self, filters: &FilterChain) -> Vec<String> {
        let mut names: Vec<String> = filters.names().iter().map(|n| n.to_string()).collect();
        if self.config.dedup.exact {
            names.push("dedup_exact".into());
        }
        if self.config.dedup.minhash.is_some() {
            names.push("dedup_near".into());
        }
        names
    }

    /// The first `n` documents that pass the filters (tokenizer sample).
    fn sample(&self, n: usize, out: &mut Vec<String>) -> Result<(), DataError> {
        let filters = FilterChain::new(&self.config.filters, "filters")?;
        let mut taken = 0;
        let mut docs = self.documents(0)?;
        let mut unit = 0;
        while taken < n {
            match docs.next() {
                Some(doc) => {
                    let mut doc = doc?;
                    if filters.apply(&mut doc).is_ok() {
                        out.push(doc.text);
                        taken += 1;
                    }
                }
                None => {
                    unit += 1;
                    if unit >= self.n_units() {
                        break;
                    }
                    docs = self.documents(unit)?;
                }
            }
        }
        Ok(())
    }

    /// The documents of unit `u`, in order.
    fn documents(&self, u: usize) -> Result<UnitDocs, DataError> {
        let c = &self.config;
        let left = c.max_documents.unwrap_or(u64::MAX);
        Ok(match c.kind {
            SourceKind::SyntheticStories => UnitDocs::Stories {
                generator: StoryGenerator::new(c.seed),
                left,
            },
            kind => {
                let format = kind.input_format().expect("a document source");
                UnitDocs::File {
                    reader: read_documents(&self.inputs[u].path, format, &c.columns, c.text_unit)?,
                    left,
                }
            }
        })
    }

    /// Processes every missing unit, merges, and writes the source's record.
    fn prepare_all(
        &self,
        plan: &Plan,
        tok: &TextTokenizer,
        progress: &mut dyn Progress,
    ) -> Result<(PreparedSource, SourceReport), DataError> {
        if self.config.kind == SourceKind::TokenShards {
            return self.prepare_token_shards(plan, tok, progress);
        }
        if let Some(r) = self.load_complete() {
            progress.line(&format!(
                "data: `{}`: reusing {} ({} train + {} val tokens)",
                self.name,
                self.dir.display(),
                human(r.report.train_tokens),
                human(r.report.val_tokens)
            ));
            return Ok((self.prepared(&r), r.report));
        }
        let units: Vec<usize> = (0..self.n_units()).collect();
        self.run_units(plan, tok, &units, progress)?;
        self.reconcile_duplicates(plan, tok, progress)?;
        self.finish(progress)
    }

    fn prepared(&self, r: &SourceRecord) -> PreparedSource {
        let abs = |ps: &[PathBuf]| ps.iter().map(|p| self.dir.join(p)).collect();
        PreparedSource {
            name: self.name.clone(),
            dir: self.dir.clone(),
            train_shards: abs(&r.train_shards),
            val_shards: abs(&r.val_shards),
            train_tokens: r.report.train_tokens,
            val_tokens: r.report.val_tokens,
            train_docs: r.report.train_docs,
            val_docs: r.report.val_docs,
        }
    }

    fn load_unit(&self, u: usize) -> Option<UnitRecord> {
        let path = self.dir.join(format!("{}.json", Self::unit_name(u)));
        let r: UnitRecord = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
        let input_matches = r.input.as_ref() == self.inputs.get(u);
        let all_there = r
            .train_shards
            .iter()
            .chain(&r.val_shards)
            .all(|n| self.dir.join(n).is_file());
        (input_matches && all_there).then_some(r)
    }

    /// Deletes whatever an interrupted run left of unit `u`.
    fn clear_unit(&self, u: usize) -> Result<(), DataError> {
        let prefix = format!("{}.", Self::unit_name(u));
        for entry in fs::read_dir(&self.dir).map_err(|e| DataError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| DataError::io(&self.dir, e))?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                fs::remove_file(entry.path()).map_err(|e| DataError::io(entry.path(), e))?;
            }
        }
        Ok(())
    }

    /// Processes `units` in order (skipping complete ones); returns (processed, skipped).
    fn run_units(
        &self,
        plan: &Plan,
        tok: &TextTokenizer,
        units: &[usize],
        progress: &mut dyn Progress,
    ) -> Result<(u64, u64), DataError> {
        fs::create_dir_all(&self.dir).map_err(|e| DataError::io(&self.dir, e))?;
        let filters = FilterChain::new(&self.config.filters, "filters")?;
        let signer = Signer::new(&self.config.dedup);
        let mut deduper = Deduper::new(&self.config.dedup);
        let (mut done, mut skipped) = (0, 0);
        for &u in units {
            let sig_path = self.dir.join(format!("{}.sig", Self::unit_name(u)));
            if self.load_unit(u).is_some() {
                // Replay the finished unit's documents so later units dedup against them.
                for sig in read_signatures(&sig_path)? {
                    deduper.check_insert(&sig);
                }
                skipped += 1;
                continue;
            }
            self.clear_unit(u)?;
            let input = self.inputs.get(u);
            progress.line(&format!(
                "data: `{}`: unit {}/{}{}",
                self.name,
                u + 1,
                self.n_units(),
                input.map_or(String::new(), |i| format!(": {}", i.path.display()))
            ));
            let t = Instant::now();
            let record =
                self.process_unit(u, plan, tok, &filters, &signer, &mut deduper, progress)?;
            let mut record = record;
            record.report.seconds = t.elapsed().as_secs_f64();
            write_json(
                &self.dir.join(format!("{}.json", Self::unit_name(u))),
                &record,
            )?;
            done += 1;
        }
        Ok((done, skipped))
    }

    #[allow(clippy::too_many_arguments)]
    fn process_unit(
        &self,
        u: usize,
        plan: &Plan,
        tok: &TextTokenizer,
        filters: &FilterChain,
        signer: &Signer,
        deduper: &mut Deduper,
        progress: &mut dyn Progress,
    ) -> Result<UnitRecord, DataError> {
        let c = &self.config;
        let eot = tok.eot_id()?;
        let vocab = tok.vocab_size();
        let unit = Self::unit_name(u);
        let stage_names = self.stage_names(filters);
        let n_filters = filters.names().len();
        let exact_stage = c.dedup.exact.then_some(n_filters);
        let near_stage = c
            .dedup
            .minhash
            .is_some()
            .then_some(n_filters + usize::from(c.dedup.exact));
        let mut report = SourceReport::new(&self.name, &stage_names);
        for s in report.stages.iter_mut().take(n_filters) {
            s.tokens_estimated = true;
        }
        report.files = u64::from(self.inputs.get(u).is_some());
        let mut train =
            SplitWriter::new(&self.dir, format!("{unit}.train"), plan.shard_tokens, vocab);
        let mut val = SplitWriter::new(&self.dir, format!("{unit}.val"), plan.shard_tokens, vocab);
        let mut signatures = Vec::new();
        let mut fates = Vec::new();
        let mut rejected = Vec::new();
        let mut rejected_per_filter = vec![0usize; n_filters];
        let budget = c.tokens.unwrap_or(u64::MAX);
        let val_threshold = (self.val_fraction * u64::MAX as f64) as u64;

        let mut docs = self.documents(u)?;
        let mut next_index = 0u64;
        let read_batch =
            |docs: &mut UnitDocs, start: u64| -> Result<Vec<(u64, Document)>, DataError> {
                let mut batch = Vec::with_capacity(BATCH_DOCS);
                for (k, d) in docs.by_ref().take(BATCH_DOCS).enumerate() {
                    batch.push((start + k as u64, d?));
                }
                Ok(batch)
            };
        let mut batch = read_batch(&mut docs, 0)?;
        'unit: while !batch.is_empty() {
            next_index += batch.len() as u64;
            let keep_samples = c.keep_rejected;
            let process = |(index, mut doc): (u64, Document)| -> Result<Processed, DataError> {
                let bytes = doc.text.len() as u64;
                if let Err(rej) = filters.apply(&mut doc) {
                    return Ok(Processed::Rejected {
                        filter: rej.filter,
                        reason: rej.reason,
                        bytes,
                        sample: (keep_samples > 0).then_some(doc),
                    });
                }
                Ok(Processed::Passed {
                    index,
                    signature: signer.sign(&doc.text),
                    tokens: tok.encode(&doc.text)?,
                    bytes_read: bytes,
                    bytes: doc.text.len() as u64,
                })
            };
            // Read the next batch while this one is processed.
            let (next, processed) = rayon::join(
                || read_batch(&mut docs, next_index),
                || batch.into_par_iter().map(process).collect::<Vec<_>>(),
            );
            for p in processed {
                report.docs_read += 1;
                match p? {
                    Processed::Rejected {
                        filter,
                        reason,
                        bytes,
                        sample,
                    } => {
                        report.bytes_read += bytes;
                        for s in &mut report.stages[..=filter] {
                            s.docs_in += 1;
                        }
                        let s = &mut report.stages[filter];
                        s.docs_removed += 1;
                        s.bytes_removed += bytes;
                        *s.reasons.entry(reason.to_string()).or_default() += 1;
                        if let Some(doc) = sample {
                            if rejected_per_filter[filter] < c.keep_rejected {
                                rejected_per_filter[filter] += 1;
                                rejected.push(RejectedDoc {
                                    filter: stage_names[filter].clone(),
                                    reason: reason.to_string(),
                                    id: doc.id,
                                    url: doc.url,
                                    text: doc.text,
                                });
                            }
                        }
                    }
                    Processed::Passed {
                        index,
                        signature,
                        tokens,
                        bytes_read,
                        bytes,
                    } => {
                        report.bytes_read += bytes_read;
                        for s in &mut report.stages[..n_filters] {
                            s.docs_in += 1;
                        }
                        let n_tokens = tokens.len() as u64;
                        let verdict = deduper.check_insert(&signature);
                        signatures.push(signature);
                        let dup_stage = match verdict {
                            Some(Duplicate::Exact) => exact_stage,
                            Some(Duplicate::Near) => near_stage,
                            None => None,
                        };
                        if let Some(e) = exact_stage {
                            report.stages[e].docs_in += 1;
                        }
                        if let (Some(nr), false) =
                            (near_stage, dup_stage == exact_stage && dup_stage.is_some())
                        {
                            report.stages[nr].docs_in += 1;
                        }
                        if let Some(stage) = dup_stage {
                            let s = &mut report.stages[stage];
                            s.docs_removed += 1;
                            s.bytes_removed += bytes;
                            s.tokens_removed += n_tokens;
                            fates.push(if verdict == Some(Duplicate::Exact) {
                                Fate::ExactDuplicate
                            } else {
                                Fate::NearDuplicate
                            });
                            continue;
                        }
                        let h =
                            xxhash_rust::xxh3::xxh3_64_with_seed(&index.to_le_bytes(), u as u64);
                        let is_val = h < val_threshold;
                        let (w, fate) = if is_val {
                            report.val_docs += 1;
                            report.val_tokens += n_tokens + 1;
                            (&mut val, Fate::Val)
                        } else {
                            report.train_docs += 1;
                            report.train_tokens += n_tokens + 1;
                            (&mut train, Fate::Train)
                        };
                        w.push_doc(eot, &tokens)?;
                        fates.push(fate);
                        report.docs_out += 1;
                        report.bytes_out += bytes;
                        report.tokens_out += n_tokens + 1;
                        if report.tokens_out >= budget {
                            break 'unit;
                        }
                    }
                }
            }
            progress.update(&ProgressUpdate {
                source: &self.name,
                docs_read: report.docs_read,
                docs_kept: report.docs_out,
                tokens: report.tokens_out,
                fraction: if c.kind == SourceKind::SyntheticStories {
                    Some((report.tokens_out as f64 / budget as f64).min(1.0))
                } else {
                    Some(u as f64 / self.n_units() as f64)
                },
            });
            batch = next?;
        }
        report.docs_skipped = docs.skipped();
        let train_shards = train.finish()?;
        let val_shards = val.finish()?;
        write_signatures(&self.dir.join(format!("{unit}.sig")), &signatures)?;
        write_atomic(
            &self.dir.join(format!("{unit}.docs")),
            &fates.iter().map(|f| *f as u8).collect::<Vec<_>>(),
        )?;
        Ok(UnitRecord {
            input: self.inputs.get(u).cloned(),
            train_shards,
            val_shards,
            report,
            rejected,
        })
    }

    /// Applies the order-defined dedup rule across all units and removes the duplicates that
    /// separate workers kept (each saw only its own units). A single-process run finds none.
    fn reconcile_duplicates(
        &self,
        plan: &Plan,
        tok: &TextTokenizer,
        progress: &mut dyn Progress,
    ) -> Result<(), DataError> {
        if !self.config.dedup.is_enabled() || self.n_units() < 2 {
            return Ok(());
        }
        let mut deduper = Deduper::new(&self.config.dedup);
        let mut removed_total = 0u64;
        for u in 0..self.n_units() {
            let unit = Self::unit_name(u);
            let sigs = read_signatures(&self.dir.join(format!("{unit}.sig")))?;
            let fates_path = self.dir.join(format!("{unit}.docs"));
            let bytes = fs::read(&fates_path).map_err(|e| DataError::io(&fates_path, e))?;
            let mut fates: Vec<Fate> = bytes
                .iter()
                .map(|&b| Fate::from_byte(b))
                .collect::<Option<_>>()
                .ok_or_else(|| DataError::bad_input(&fates_path, "unknown document fate"))?;
            if fates.len() != sigs.len() {
                return Err(DataError::bad_input(
                    &fates_path,
                    format!("{} fates for {} signatures", fates.len(), sigs.len()),
                ));
            }
            // Per split (train, val): ordinals, among the documents in that split's shards, to drop.
            let mut drop: [Vec<(usize, Duplicate)>; 2] = [Vec::new(), Vec::new()];
            let mut ordinal = [0usize; 2];
            for (fate, sig) in fates.iter_mut().zip(&sigs) {
                let verdict = deduper.check_insert(sig);
                let split = match *fate {
                    Fate::Train => 0,
                    Fate::Val => 1,
                    Fate::ExactDuplicate | Fate::NearDuplicate => continue,
                };
                let ord = ordinal[split];
                ordinal[split] += 1;
                if let Some(v) = verdict {
                    drop[split].push((ord, v));
                    *fate = match v {
                        Duplicate::Exact => Fate::ExactDuplicate,
                        Duplicate::Near => Fate::NearDuplicate,
                    };
                }
            }
            if drop.iter().all(|d| d.is_empty()) {
                continue;
            }
            removed_total += drop.iter().map(|d| d.len() as u64).sum::<u64>();
            self.rewrite_unit(u, plan, &drop, &fates, tok)?;
        }
        if removed_total > 0 {
            progress.line(&format!(
                "data: `{}`: removed {removed_total} duplicates across workers' units",
                self.name
            ));
        }
        Ok(())
    }

    /// Rewrites unit `u`'s shards without the documents `drop[split]` (ordinals in the split).
    /// The unit's record is removed first, so an interruption leaves a unit that the next run
    /// prepares again from its input. Holds one split of one unit in memory.
    fn rewrite_unit(
        &self,
        u: usize,
        plan: &Plan,
        drop: &[Vec<(usize, Duplicate)>; 2],
        fates: &[Fate],
        tok: &TextTokenizer,
    ) -> Result<(), DataError> {
        let (vocab, eot) = (tok.vocab_size(), tok.eot_id()?);
        let unit = Self::unit_name(u);
        let mut record = self
            .load_unit(u)
            .ok_or_else(|| DataError::bad_input(self.dir.join(&unit), "unit record missing"))?;
        let record_path = self.dir.join(format!("{unit}.json"));
        fs::remove_file(&record_path).map_err(|e| DataError::io(&record_path, e))?;
        let stage_of = |name: &str| record.report.stages.iter().position(|s| s.name == name);
        let (exact_stage, near_stage) = (stage_of("dedup_exact"), stage_of("dedup_near"));
        for (split, (name, ordinals)) in ["train", "val"].iter().zip(drop).enumerate() {
            if ordinals.is_empty() {
                continue;
            }
            let files = if split == 0 {
                &record.train_shards
            } else {
                &record.val_shards
            };
            // The split's documents, each without its leading EOT.
            let mut stream = Vec::new();
            let mut starts = Vec::new();
            for f in files {
                let path = self.dir.join(f);
                let offset = stream.len() as u64;
                starts.extend(
                    read_doc_index(&path.with_extension("idx"))?
                        .into_iter()
                        .map(|s| s + offset),
                );
                stream.extend(Shard::open(&path)?.to_vec());
            }
            for f in files {
                let path = self.dir.join(f);
                fs::remove_file(&path).map_err(|e| DataError::io(&path, e))?;
                let idx = path.with_extension("idx");
                fs::remove_file(&idx).map_err(|e| DataError::io(&idx, e))?;
            }
            let mut writer = SplitWriter::new(
                &self.dir,
                format!("{unit}.{name}"),
                plan.shard_tokens,
                vocab,
            );
            let mut dropped = ordinals.iter().peekable();
            let (mut docs, mut tokens) = (0u64, 0u64);
            for (k, &start) in starts.iter().enumerate() {
                let end = starts.get(k + 1).map_or(stream.len(), |&e| e as usize);
                let doc = &stream[start as usize + 1..end];
                if let Some(&(_, kind)) = dropped.next_if(|(ord, _)| *ord == k) {
                    // Counted where a single process would have counted it: an exact duplicate
                    // never reaches the near-duplicate stage.
                    let stage = match kind {
                        Duplicate::Exact => exact_stage,
                        Duplicate::Near => near_stage,
                    }
                    .expect("a duplicate verdict implies its dedup stage");
                    let bytes = tok.decode(doc)?.len() as u64;
                    let r = &mut record.report;
                    let s = &mut r.stages[stage];
                    s.docs_removed += 1;
                    s.bytes_removed += bytes;
                    s.tokens_removed += doc.len() as u64;
                    *s.reasons.entry("across_workers".into()).or_default() += 1;
                    if let (Duplicate::Exact, Some(near)) = (kind, near_stage) {
                        r.stages[near].docs_in -= 1;
                    }
                    r.bytes_out -= bytes;
                    continue;
                }
                writer.push_doc(eot, doc)?;
                docs += 1;
                tokens += 1 + doc.len() as u64;
            }
            let r = &mut record.report;
            if split == 0 {
                r.docs_out -= r.train_docs - docs;
                r.tokens_out -= r.train_tokens - tokens;
                (r.train_docs, r.train_tokens) = (docs, tokens);
                record.train_shards = writer.finish()?;
            } else {
                r.docs_out -= r.val_docs - docs;
                r.tokens_out -= r.val_tokens - tokens;
                (r.val_docs, r.val_tokens) = (docs, tokens);
                record.val_shards = writer.finish()?;
            }
        }
        write_atomic(
            &self.dir.join(format!("{unit}.docs")),
            &fates.iter().map(|f| *f as u8).collect::<Vec<_>>(),
        )?;
        write_json(&record_path, &record)
    }

    /// Merges the unit records into the source's report and record.
    fn finish(
        &self,
        progress: &mut dyn Progress,
    ) -> Result<(PreparedSource, SourceReport), DataError> {
        let filters = FilterChain::new(&self.config.filters, "filters")?;
        let mut report = SourceReport::new(&self.name, &self.stage_names(&filters));
        let mut train = Vec::new();
        let mut val = Vec::new();
        let mut rejected: BTreeMap<String, Vec<RejectedDoc>> = BTreeMap::new();
        for u in 0..self.n_units() {
            let r = self.load_unit(u).ok_or_else(|| {
                DataError::bad_input(
                    self.dir.join(format!("{}.json", Self::unit_name(u))),
                    "unit record missing or stale after preparation",
                )
            })?;
            report.add(&r.report);
            train.extend(r.train_shards.iter().map(PathBuf::from));
            val.extend(r.val_shards.iter().map(PathBuf::from));
            for doc in r.rejected {
                let list = rejected.entry(doc.filter.clone()).or_default();
                if list.len() < self.config.keep_rejected {
                    list.push(doc);
                }
            }
        }
        report.estimate_filtered_tokens();
        if report.train_docs == 0 {
            return Err(DataError::NotEnoughData {
                what: format!(
                    "source `{}`: no training documents are left after filtering and dedup ({} read); see {}",
                    self.name,
                    report.docs_read,
                    self.dir.join("report.txt").display()
                ),
                tokens: 0,
                needed: 1,
            });
        }
        if !rejected.is_empty() {
            let dir = self.dir.join("rejected");
            fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
            for (filter, docs) in &rejected {
                let mut text = Vec::new();
                for d in docs {
                    serde_json::to_writer(&mut text, d).expect("plain data serializes");
                    text.push(b'\n');
                }
                write_atomic(&dir.join(format!("{filter}.jsonl")), &text)?;
            }
        }
        write_json(&self.dir.join("report.json"), &report)?;
        write_atomic(&self.dir.join("report.txt"), report.to_text().as_bytes())?;
        let record = SourceRecord {
            format: PREPARE_FORMAT.to_string(),
            name: self.name.clone(),
            train_shards: train,
            val_shards: val,
            report: report.clone(),
        };
        write_json(&self.record_path(), &record)?;
        progress.line(&format!(
            "data: `{}`: {} train tokens ({} docs), {} val tokens ({} docs); {} of {} documents kept; report: {}",
            self.name,
            human(report.train_tokens),
            report.train_docs,
            human(report.val_tokens),
            report.val_docs,
            report.docs_out,
            report.docs_read,
            self.dir.join("report.txt").display()
        ));
        Ok((self.prepared(&record), report))
    }

    /// Converts one split's header-less token files into llm.c shards
    /// (`<split>.FFFF.KKK.bin`), or reuses a finished conversion (its list, written last).
    fn convert_raw(
        &self,
        split: &str,
        files: &[PathBuf],
        width: usize,
        shard_tokens: usize,
        vocab: usize,
        progress: &mut dyn Progress,
    ) -> Result<(Vec<PathBuf>, u64), DataError> {
        #[derive(Serialize, Deserialize)]
        struct Converted {
            shards: Vec<String>,
            tokens: u64,
        }
        let list = self.dir.join(format!("{split}.converted.json"));
        if let Some(done) = fs::read(&list)
            .ok()
            .and_then(|b| serde_json::from_slice::<Converted>(&b).ok())
        {
            let shards: Vec<PathBuf> = done.shards.iter().map(|n| self.dir.join(n)).collect();
            if shards.iter().all(|p| p.is_file()) {
                return Ok((shards, done.tokens));
            }
        }
        fs::create_dir_all(&self.dir).map_err(|e| DataError::io(&self.dir, e))?;
        let (mut shards, mut tokens) = (Vec::new(), 0);
        for (f, file) in files.iter().enumerate() {
            progress.line(&format!(
                "data: `{}`: converting {} (header-less u{}) into shards",
                self.name,
                file.display(),
                width * 8
            ));
            let (s, n) = convert_raw_tokens(file, width, shard_tokens, vocab, |k| {
                self.dir.join(format!("{split}.{f:04}.{k:03}.bin"))
            })?;
            shards.extend(s);
            tokens += n;
        }
        let names = shards
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        write_json(
            &list,
            &Converted {
                shards: names,
                tokens,
            },
        )?;
        Ok((shards, tokens))
    }

    /// llm.c shards are used in place, after checking that every id fits the tokenizer;
    /// header-less files (nanoGPT) are converted into llm.c shards in the source's directory.
    fn prepare_token_shards(
        &self,
        plan: &Plan,
        tok: &TextTokenizer,
        progress: &mut dyn Progress,
    ) -> Result<(PreparedSource, SourceReport), DataError> {
        let vocab = tok.vocab_size();
        let check = |paths: &[PathBuf]| -> Result<u64, DataError> {
            paths
                .par_iter()
                .map(|p| {
                    let shard = Shard::open(p)?;
                    let mut buf = Vec::new();
                    let mut start = 0;
                    while start < shard.len() {
                        let n = (shard.len() - start).min(1 << 20);
                        buf.clear();
                        shard.read(start, n, &mut buf);
                        if let Some(k) = buf.iter().position(|&t| t as usize >= vocab) {
                            return Err(DataError::TokenOutOfRange {
                                path: p.clone(),
                                index: start + k,
                                token: buf[k],
                                vocab_size: vocab,
                            });
                        }
                        start += n;
                    }
                    Ok(shard.len() as u64)
                })
                .sum()
        };
        let inputs: Vec<PathBuf> = self.inputs.iter().map(|i| i.path.clone()).collect();
        let (train, train_tokens, val, val_tokens) = match self.config.token_format.raw_width() {
            None => {
                let (train_tokens, val_tokens) = (check(&inputs)?, check(&self.val_inputs)?);
                (
                    inputs.clone(),
                    train_tokens,
                    self.val_inputs.clone(),
                    val_tokens,
                )
            }
            Some(width) => {
                let (train, train_tokens) =
                    self.convert_raw("train", &inputs, width, plan.shard_tokens, vocab, progress)?;
                let (val, val_tokens) = self.convert_raw(
                    "val",
                    &self.val_inputs,
                    width,
                    plan.shard_tokens,
                    vocab,
                    progress,
                )?;
                (train, train_tokens, val, val_tokens)
            }
        };
        progress.line(&format!(
            "data: `{}`: {} train shards ({} tokens), {} val shards ({} tokens), ids checked against the tokenizer (vocab {vocab})",
            self.name,
            train.len(),
            human(train_tokens),
            val.len(),
            human(val_tokens)
        ));
        let report = SourceReport {
            source: self.name.clone(),
            files: (inputs.len() + self.val_inputs.len()) as u64,
            tokens_out: train_tokens + val_tokens,
            train_tokens,
            val_tokens,
            ..Default::default()
        };
        Ok((
            PreparedSource {
                name: self.name.clone(),
                dir: self.dir.clone(),
                train_shards: train,
                val_shards: val,
                train_tokens,
                val_tokens,
                train_docs: 0,
                val_docs: 0,
            },
            report,
        ))
    }
}

/// A unit's documents: generated stories or a file's, at most `left` more.
enum UnitDocs {
    Stories {
        generator: StoryGenerator,
        left: u64,
    },
    File {
        reader: DocumentReader,
        left: u64,
    },
}

impl UnitDocs {
    /// Rows the file reader skipped (null text).
    fn skipped(&self) -> u64 {
        match self {
            UnitDocs::Stories { .. } => 0,
            UnitDocs::File { reader, .. } => reader.skipped(),
        }
    }
}

impl Iterator for UnitDocs {
    type Item = Result<Document, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            UnitDocs::Stories { left: 0, .. } | UnitDocs::File { left: 0, .. } => None,
            UnitDocs::Stories { generator, left } => {
                *left -= 1;
                Some(Ok(Document::from_text(generator.next_story())))
            }
            UnitDocs::File { reader, left } => {
                *left -= 1;
                reader.next()
            }
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let pending = PendingFile::for_path(path);
    let tmp = pending.path();
    let mut f = fs::File::create(tmp).map_err(|e| DataError::io(tmp, e))?;
    f.write_all(bytes).map_err(|e| DataError::io(tmp, e))?;
    f.sync_all().map_err(|e| DataError::io(tmp, e))?;
    drop(f);
    pending.commit(path)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DataError> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| DataError::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    write_atomic(path, &json)
}

/// `1234567` → `"1.23M"`.
pub(crate) fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}
