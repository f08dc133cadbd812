//! kiln's trainer: recipe → data → model → AdamW loop → checkpoints → Hugging Face export.
//!
//! The `train` binary (`src/main.rs`) is a thin layer over these modules:
//! [`recipe`] (the YAML schema), [`train`] (the loop), [`optim`] (AdamW + global-norm clipping),
//! [`schedule`], [`checkpoint`], [`metrics`], [`model_io`] (load/export model directories),
//! [`generate`] (sampling with the KV cache) and [`eval`] (`train eval`).

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cpu_peak;
pub mod data_cmd;
pub mod eval;
pub mod generate;
pub mod loss;
pub mod metrics;
pub mod model_io;
pub mod objective;
pub mod optim;
pub mod params;
pub mod recipe;
pub mod run_lock;
pub mod schedule;
pub mod signals;
pub mod step;
pub mod train;
