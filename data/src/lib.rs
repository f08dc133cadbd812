//! `kiln-data`: everything between raw text and training batches.
//!
//! The pipeline, one module per stage:
//!
//! 1. **Sources** ([`sources`], [`synthetic`]) — documents from parquet (streamed row group by
//!    row group), JSONL, plain text, or generated on the fly: TinyStories-style stories
//!    ([`StoryGenerator`]). (The synthetic web crawl with known junk that the tests and benches
//!    use lives in the dev-only `kiln-testkit` crate.)
//! 2. **Filters** ([`filters`]) — Gopher quality and repetition, C4, FineWeb, language ID,
//!    classifier-score and URL rules with the published default thresholds ([`FilterChain`]).
//! 3. **Deduplication** ([`dedup`]) — exact (xxh3) and MinHash-LSH near-duplicate removal.
//! 4. **Tokenizer** ([`tokenizer`]) — [`TextTokenizer`], GPT-2-style byte-level BPE trained with
//!    Hugging Face `tokenizers` (or loaded from any `tokenizer.json`).
//! 5. **Shards** ([`shard`]) — token files in llm.c's format (256 × i32 header, then `u16`
//!    tokens; `u32` for vocabularies over 65,536) plus a document index, memory-mapped.
//! 6. **Preparation** ([`prepare()`]) — runs a [`DataConfig`] through stages 1–5 into a cache
//!    directory keyed by a hash of the settings; resumable per input file, splittable across
//!    worker processes ([`prepare_worker`]), with a per-source [`SourceReport`] of what each
//!    filter removed.
//! 7. **Loading** ([`loader`], [`mix`]) — [`MixLoader`] samples `[batch, seq_len + 1]` windows
//!    from several sources by weight (with a step schedule), deterministic for
//!    `(seed, rank, world_size)` and exactly resumable via [`MixState`]; [`Prefetcher`]
//!    runs any [`BatchSource`] a few batches ahead on a background thread.
//!
//! ```no_run
//! use kiln_data::*;
//! # fn main() -> Result<(), DataError> {
//! let mut config = DataConfig::new(vec![SourceConfig::synthetic_stories(2_000_000, 0)]);
//! config.cache_dir = "cache/data".into();
//! let tokenizer = TokenizerSpec::TrainBpe {
//!     vocab_size: 4096,
//!     sample_docs: 5_000,
//!     special_tokens: vec![EOT.into()],
//! };
//! let data = prepare(&config, &tokenizer, &mut |line: &str| eprintln!("{line}"))?;
//! let sources = data.sources.iter().map(|s| MixSource {
//!     name: s.name.clone(),
//!     train_shards: s.train_shards.clone(),
//! });
//! let stages = config.mix_schedule().into_iter().map(|(from_step, weights)| MixStage {
//!     from_step,
//!     weights,
//! });
//! let mut loader = MixLoader::new(sources.collect(), stages.collect(), 8, 256, 1234, 0, 1)?;
//! let batch: Vec<u32> = loader.next_batch(); // 8 × 257 token ids, row-major
//! # let _ = batch;
//! # Ok(()) }
//! ```
//!
//! This crate does not depend on burn: batches are plain `Vec<u32>`.

pub mod batch;
pub mod config;
pub mod dedup;
pub mod document;
pub mod error;
pub mod filters;
pub mod loader;
pub mod mix;
pub mod prefetch;
pub mod prepare;
pub mod report;
pub mod shard;
pub mod sources;
pub mod synthetic;
pub mod tokenizer;

pub use batch::Batch;
pub use config::{DataConfig, SourceConfig, SourceKind, StageConfig, TokenFormat};
pub use dedup::{DedupConfig, Deduper, MinHashConfig};
pub use document::Document;
pub use error::DataError;
pub use filters::{FilterChain, FilterConfig, Rejection};
pub use loader::{eval_batches, LoaderState, TokenLoader};
pub use mix::{MixLoader, MixSource, MixStage, MixState, SourceCursor};
pub use prefetch::{BatchSource, Prefetcher, PREFETCH_THREAD_NAME};
pub use prepare::{
    prepare, prepare_tokenizer, prepare_worker, PreparedData, PreparedSource, Progress,
    ProgressUpdate, TokenizerSpec, WorkerSummary, PREPARE_FORMAT,
};
pub use report::SourceReport;
pub use shard::{read_doc_index, write_doc_index, write_shard, Shard, SHARD_MAGIC};
pub use synthetic::StoryGenerator;
pub use tokenizer::{TextTokenizer, EOT};
