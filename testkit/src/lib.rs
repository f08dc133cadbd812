//! Test and benchmark support for kiln, used only as a dev-dependency.
//!
//! [`webgen`]: a synthetic web crawl (articles, forum posts, code, boilerplate and known junk:
//! spam, keyword lists, duplicates) written as parquet or JSONL, so the data pipeline's filters
//! and dedup are exercised end to end without network access.

pub mod webgen;
