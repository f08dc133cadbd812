//! Data preparation from the command line: `train data` and the step before training.
//!
//! [`BarProgress`] shows preparation live (documents/s, tokens/s, ETA) on an indicatif bar
//! when stderr is a terminal, and as plain lines otherwise (logs, CI).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_data::{PreparedData, Progress, ProgressUpdate};

use crate::recipe::Recipe;

/// A [`Progress`] that draws one bar per source.
pub struct BarProgress {
    bar: Option<ProgressBar>,
    source: String,
    started: Instant,
    /// Print lines only (the main process of a multi-worker run prints; others stay quiet).
    quiet: bool,
}

impl BarProgress {
    pub fn new(quiet: bool) -> Self {
        BarProgress {
            bar: None,
            source: String::new(),
            started: Instant::now(),
            quiet,
        }
    }
}

impl Progress for BarProgress {
    fn line(&mut self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => crate::metrics::log_line(msg),
        }
    }

    fn update(&mut self, u: &ProgressUpdate) {
        if self.quiet {
            return;
        }
        if self.source != u.source {
            if let Some(bar) = self.bar.take() {
                bar.finish_and_clear();
            }
            self.source = u.source.to_string();
            self.started = Instant::now();
            let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {msg} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("data `{}`", u.source));
            self.bar = Some(bar);
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        if let Some(bar) = &self.bar {
            if let Some(f) = u.fraction {
                bar.set_position((f * 1000.0) as u64);
            }
            bar.set_message(format!(
                "{} docs ({:.0}/s), {} kept, {} tokens ({:.0}/s)",
                u.docs_read,
                u.docs_read as f64 / secs,
                u.docs_kept,
                u.tokens,
                u.tokens as f64 / secs
            ));
        }
    }
}

impl Drop for BarProgress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// What `train data` was asked to do.
pub enum DataMode {
    /// Everything: tokenizer, all sources, reports.
    All,
    /// Only the tokenizer (run once before `--shard` workers).
    TokenizerOnly,
    /// Worker `i` of `n`: its share of the units; a later plain run merges.
    Worker { index: usize, count: usize },
}

impl DataMode {
    /// Parses `--shard i/n`.
    pub fn parse_shard(arg: &str) -> Result<Self> {
        let parsed = arg
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => {
                Ok(DataMode::Worker { index, count })
            }
            _ => bail!("--shard {arg}: expected I/N with 0 <= I < N, e.g. --shard 3/16"),
        }
    }
}

/// Runs `train data`; prints one JSON line with what was prepared.
pub fn run_data(recipe: &Recipe, mode: DataMode) -> Result<()> {
    let mut progress = BarProgress::new(false);
    match mode {
        DataMode::All => {
            let prepared = prepare(recipe, &mut progress)?;
            drop(progress);
            let sources: Vec<_> = prepared
                .sources
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "dir": s.dir,
                        "train_tokens": s.train_tokens,
                        "val_tokens": s.val_tokens,
                        "train_docs": s.train_docs,
                        "val_docs": s.val_docs,
                        "train_shards": s.train_shards.len(),
                        "val_shards": s.val_shards.len(),
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "dir": prepared.dir,
                    "tokenizer": prepared.tokenizer_path,
                    "train_tokens": prepared.train_tokens(),
                    "val_tokens": prepared.val_tokens(),
                    "vocab_size": prepared.vocab_size,
                    "report": prepared.dir.join("report.txt"),
                    "sources": sources,
                })
            );
        }
        DataMode::TokenizerOnly => {
            let path = kiln_data::prepare_tokenizer(&recipe.data, &recipe.tokenizer, &mut progress)
                .context("tokenizer preparation failed")?;
            println!("{}", serde_json::json!({ "tokenizer": path }));
        }
        DataMode::Worker { index, count } => {
            let s = kiln_data::prepare_worker(
                &recipe.data,
                &recipe.tokenizer,
                index,
                count,
                &mut progress,
            )
            .with_context(|| format!("data worker {index}/{count} failed"))?;
            drop(progress);
            eprintln!(
                "data worker {index}/{count}: {} units prepared, {} already done; when all workers \
                 have finished, run `train data --recipe R` once to merge",
                s.units_done, s.units_skipped
            );
            println!(
                "{}",
                serde_json::json!({
                    "worker": index, "workers": count,
                    "units_done": s.units_done, "units_skipped": s.units_skipped,
                })
            );
        }
    }
    Ok(())
}

/// Prepares (or reuses) the recipe's data.
pub fn prepare(recipe: &Recipe, progress: &mut dyn Progress) -> Result<PreparedData> {
    kiln_data::prepare(&recipe.data, &recipe.tokenizer, progress).context("data preparation failed")
}
