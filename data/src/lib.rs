//! `kiln-data`: everything between raw text and training batches.
//!
//! The pipeline, one module per stage:
//!
//! 1. **Sources** ([`synthetic`]) — documents. Today: [`StoryGenerator`], deterministic
//!    TinyStories-style children's stories for quickstarts and tests.
//! 2. **Tokenizer** ([`tokenizer`]) — [`TextTokenizer`], GPT-2-style byte-level BPE trained with
//!    Hugging Face `tokenizers` (or loaded from any `tokenizer.json`), saved in the standard
//!    format that Python `tokenizers`/`transformers` load.
//! 3. **Shards** ([`shard`]) — token files in llm.c's format (256 × i32 header, then `u16`
//!    tokens; `u32` for vocabularies over 65,536), memory-mapped for reading.
//! 4. **Preparation** ([`prepare()`]) — turns a [`DataSpec`] into `train_*.bin` / `val_*.bin`
//!    shards plus `tokenizer.json` in a cache directory keyed by a hash of the settings, reused
//!    when complete. Documents are separated by `<|endoftext|>` (placed before each document).
//! 5. **Loading** ([`loader`]) — [`TokenLoader`] yields shuffled `[batch, seq_len + 1]` windows,
//!    deterministic for `(seed, rank, world_size)` and exactly resumable via [`LoaderState`];
//!    [`eval_batches`] gives fixed validation batches. [`Prefetcher`] ([`prefetch`]) runs any
//!    [`BatchSource`] on a background thread a few batches ahead, so loading overlaps compute.
//!
//! ```no_run
//! use kiln_data::*;
//! # fn main() -> Result<(), DataError> {
//! let spec = DataSpec {
//!     sources: vec![SourceSpec::SyntheticStories { tokens: 2_000_000, seed: 0 }],
//!     tokenizer: TokenizerSpec::TrainBpe {
//!         vocab_size: 4096,
//!         sample_docs: 5_000,
//!         special_tokens: vec!["<|endoftext|>".into()],
//!     },
//!     val_fraction: 0.01,
//!     shard_tokens: 1 << 20,
//! };
//! let data = prepare(&spec, std::path::Path::new("cache/data"), &mut |line| eprintln!("{line}"))?;
//! let mut loader = TokenLoader::new(&data.train_shards, 8, 256, 1234, 0, 1)?;
//! let batch: Vec<u32> = loader.next_batch(); // 8 × 257 token ids, row-major
//! # let _ = batch;
//! # Ok(()) }
//! ```
//!
//! Deliberately left out for now: document-boundary indexes (attention masking per document),
//! sources other than synthetic stories (parquet, jsonl, text), deduplication.
//! This crate does not depend on burn: batches are plain `Vec<u32>`.

pub mod error;
pub mod loader;
pub mod prefetch;
pub mod prepare;
pub mod shard;
pub mod synthetic;
pub mod tokenizer;

pub use error::DataError;
pub use loader::{eval_batches, LoaderState, TokenLoader};
pub use prefetch::{BatchSource, Prefetcher, PREFETCH_THREAD_NAME};
pub use prepare::{prepare, DataSpec, PreparedData, SourceSpec, TokenizerSpec, PREPARE_FORMAT};
pub use shard::{write_shard, Shard, SHARD_MAGIC};
pub use synthetic::StoryGenerator;
pub use tokenizer::{TextTokenizer, EOT};
