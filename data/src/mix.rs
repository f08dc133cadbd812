//! Weighted mixing of several training sources, with stages (nanotron-style data stages).
//!
//! Each source (e.g. synthetic stories, filtered web text) is a list of train shards read as one
//! token stream, cut into windows exactly like [`TokenLoader`](crate::TokenLoader): window `i`
//! covers tokens `[i·seq_len, i·seq_len + seq_len + 1)` (one token of overlap), so a source of
//! `T` tokens holds `(T − 1) / seq_len` windows.
//!
//! **Which source a row comes from.** Global step `s` draws a global batch of
//! `world_size × batch_size` rows; rank `r` returns rows `[r·batch_size, (r+1)·batch_size)`.
//! Row `j` of step `s` draws `u = xxh3_64_with_seed(s.to_le_bytes() ‖ j.to_le_bytes(), seed) >> 11`
//! scaled to `[0, 1)` (53 bits), and takes the first source whose normalised cumulative weight
//! (in the stage in force at step `s`) exceeds `u`. The choice is a pure function of
//! `(seed, step, row)` and the weights: every rank computes the same choices, resuming needs no
//! replay, and a source of weight 0 is never chosen. Over many rows the share of each source is
//! its weight divided by the stage's total (a multinomial draw per row, so a batch's composition
//! fluctuates around the weights rather than matching them exactly).
//!
//! **Stages.** A [`MixStage`] gives the weights from global step `from_step` on, until the next
//! stage starts. Stages are sorted by `from_step` and the first starts at step 0. Only the
//! choice of source changes at a stage boundary; every source keeps its position.
//!
//! **Which window a row gets.** Each source visits its windows in a per-epoch permutation,
//! drawn by Fisher–Yates from a `ChaCha8Rng` whose 32-byte key is
//! `ChaCha8Rng::seed_from_u64(seed)`'s key with the source index XOR-ed (little-endian) into
//! bytes 24..32, on stream `epoch`. Source 0's permutations are therefore exactly those of a
//! `TokenLoader` with the same seed, and with one source the mix *is* that plain shuffled loader
//! (as long as the loader skips nothing at its epoch ends, i.e. when the global batch divides
//! the window count). Within a step, the rows that chose a source take that source's next
//! windows in row order. Every rank advances every source over all rows of the global batch
//! (so all ranks agree on every cursor) but reads tokens only for its own rows. When a source's
//! permutation is used up, its next epoch starts with a new permutation, even in the middle of a
//! step: no window is skipped, and every window is seen once per epoch of its source. (A source
//! with fewer windows than the rows that choose it in one step will repeat windows within that
//! batch, from consecutive epochs.) The epoch advances lazily, when the next window is drawn:
//! right after a source's last window of an epoch, [`MixLoader::epochs`] still reports that
//! epoch.
//!
//! **Position.** [`MixState`] holds the global step and, per source (by name), its epoch, the
//! cursor in that epoch's permutation and the windows taken so far by all ranks
//! (`epoch × windows_per_epoch + cursor`). Restoring it continues exactly. The stages are not part
//! of the state: a resumed run may change the weights of later steps. A state may also be
//! restored with a different `world_size × batch_size` (elastic resume): every source continues
//! from its cursor, nothing is repeated or skipped, and the rows of later steps are drawn for the
//! new global batch size.
//!
//! ```no_run
//! use kiln_data::mix::{MixLoader, MixSource, MixStage};
//! # fn main() -> Result<(), kiln_data::DataError> {
//! # let (stories, web) = (vec![], vec![]);
//! let sources = vec![
//!     MixSource { name: "stories".into(), train_shards: stories },
//!     MixSource { name: "web".into(), train_shards: web },
//! ];
//! // 20 % stories / 80 % web, then only web from step 10,000 on.
//! let stages = vec![
//!     MixStage { from_step: 0, weights: vec![0.2, 0.8] },
//!     MixStage { from_step: 10_000, weights: vec![0.0, 1.0] },
//! ];
//! let mut mix = MixLoader::new(sources, stages, 8, 1024, 1234, 0, 1)?;
//! let batch: Vec<u32> = mix.next_batch(); // 8 × 1025 token ids, row-major
//! let tokens_seen: Vec<u64> = mix.tokens_per_source(); // log these per source
//! # let _ = (batch, tokens_seen);
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::loader::{check_shape, TokenStream};
use crate::{BatchSource, DataError};

/// One training source: its name (as in the recipe) and its train shards (llm.c format, read in
/// order as one token stream).
#[derive(Debug, Clone, PartialEq)]
pub struct MixSource {
    pub name: String,
    pub train_shards: Vec<PathBuf>,
}

/// From global step `from_step` on, draw rows from the sources in proportion to `weights` (one
/// per source, in source order, each finite and `>= 0`, sum `> 0`; they need not sum to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct MixStage {
    pub from_step: u64,
    pub weights: Vec<f64>,
}

/// Where a [`MixLoader`] is: saved in checkpoints for exact resume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MixState {
    /// Global steps taken (the next batch is step `step`).
    pub step: u64,
    /// One cursor per source, in source order.
    pub sources: Vec<SourceCursor>,
}

/// Position of one source of a [`MixState`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SourceCursor {
    /// The source's name, checked on restore.
    pub name: String,
    /// Epoch whose permutation is being consumed (0-based).
    pub epoch: u64,
    /// Windows of that permutation already taken, by all ranks together.
    pub cursor: u64,
    /// Windows taken so far by all ranks, over all epochs (`epoch × windows_per_epoch + cursor`).
    pub windows: u64,
}

/// A stage with its weights normalised into cumulative thresholds.
struct Stage {
    from_step: u64,
    weights: Vec<f64>,
    /// `cum[i]` = (w₀ + … + wᵢ) / Σw; 1.0 exactly from the last positive weight on.
    cum: Vec<f64>,
}

impl Stage {
    fn new(from_step: u64, weights: Vec<f64>) -> Self {
        let total: f64 = weights.iter().sum();
        let last = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
        let mut acc = 0.0;
        let cum = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                acc += w;
                if i >= last {
                    1.0
                } else {
                    acc / total
                }
            })
            .collect();
        Stage {
            from_step,
            weights,
            cum,
        }
    }

    /// The source for a uniform draw `u` in `[0, 1)`: the first whose cumulative weight exceeds
    /// `u`. A weight-0 source has the same threshold as the one before it (or 0 if it is first),
    /// so it is never the first to exceed `u`.
    fn pick(&self, u: f64) -> usize {
        self.cum
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.cum.len() - 1)
    }
}

/// One source's stream and position.
struct Source {
    name: String,
    stream: TokenStream,
    n_windows: u64,
    /// ChaCha8 key of this source's permutations.
    key: [u8; 32],
    epoch: u64,
    cursor: u64,
    windows: u64,
    /// Permutation of `perm_epoch` (built lazily: a source that is never drawn costs no memory).
    perm: Vec<u64>,
    perm_epoch: Option<u64>,
}

impl Source {
    /// The next window index of this source (starting its next epoch when the current is used up).
    fn take(&mut self) -> u64 {
        if self.cursor == self.n_windows {
            self.epoch += 1;
            self.cursor = 0;
        }
        if self.perm_epoch != Some(self.epoch) {
            self.perm = permutation(self.key, self.epoch, self.n_windows);
            self.perm_epoch = Some(self.epoch);
        }
        let w = self.perm[self.cursor as usize];
        self.cursor += 1;
        self.windows += 1;
        w
    }
}

/// ChaCha8 key of source `index`: that of `seed_from_u64(seed)` with `index` XOR-ed into bytes
/// 24..32 (so source 0 shuffles exactly like a [`TokenLoader`](crate::TokenLoader) with `seed`).
fn source_key(seed: u64, index: usize) -> [u8; 32] {
    let mut key = ChaCha8Rng::seed_from_u64(seed).get_seed();
    for (k, b) in key[24..].iter_mut().zip((index as u64).to_le_bytes()) {
        *k ^= b;
    }
    key
}

/// Fisher–Yates permutation of `0..n` from ChaCha8 (`key`, stream `epoch`); the same algorithm
/// and draws as `TokenLoader`'s.
fn permutation(key: [u8; 32], epoch: u64, n: u64) -> Vec<u64> {
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(epoch);
    let mut perm: Vec<u64> = (0..n).collect();
    for i in (1..perm.len()).rev() {
        let j = rng.random_range(0..=i as u64) as usize;
        perm.swap(i, j);
    }
    perm
}

/// The uniform draw in `[0, 1)` that chooses the source of row `row` of global step `step`.
fn row_uniform(seed: u64, step: u64, row: u64) -> f64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&step.to_le_bytes());
    bytes[8..].copy_from_slice(&row.to_le_bytes());
    (xxh3_64_with_seed(&bytes, seed) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Weighted, staged, resumable, rank-sharded batches from several sources. See the module docs.
pub struct MixLoader {
    sources: Vec<Source>,
    stages: Vec<Stage>,
    batch_size: usize,
    seq_len: usize,
    seed: u64,
    rank: usize,
    world_size: usize,
    step: u64,
}

impl MixLoader {
    /// A mix of `sources` (in order) under `stages`, for rank `rank` of `world_size`, at step 0.
    ///
    /// Fails with [`DataError::Config`] (naming the source or stage) for: no sources, an empty or
    /// repeated source name, no stages, a first stage not at step 0, stages not strictly
    /// increasing in `from_step`, a weights list whose length is not the number of sources, a
    /// weight that is negative, NaN or infinite, a stage whose weights are all 0; and with
    /// [`DataError::NotEnoughData`] (naming the source) for a source with fewer than
    /// `seq_len + 1` tokens. Shard files that cannot be opened give their own errors.
    pub fn new(
        sources: Vec<MixSource>,
        stages: Vec<MixStage>,
        batch_size: usize,
        seq_len: usize,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<Self, DataError> {
        check_shape(batch_size, seq_len, rank, world_size)?;
        if sources.is_empty() {
            return Err(DataError::config(
                "data.sources",
                "no training sources; a mix needs at least one",
            ));
        }
        for (i, s) in sources.iter().enumerate() {
            if s.name.is_empty() {
                return Err(DataError::config(
                    "data.sources",
                    format!("source {i} has an empty name"),
                ));
            }
            if sources[..i].iter().any(|o| o.name == s.name) {
                return Err(DataError::config(
                    "data.sources",
                    format!(
                        "source name `{}` is used twice; names identify sources in checkpoints",
                        s.name
                    ),
                ));
            }
        }
        let stages = validate_stages(&sources, stages)?;

        let mut opened = Vec::with_capacity(sources.len());
        for (i, s) in sources.into_iter().enumerate() {
            let stream = TokenStream::open(&s.train_shards)?;
            let n_windows = stream.n_windows(seq_len);
            if n_windows == 0 {
                return Err(DataError::NotEnoughData {
                    what: format!(
                        "source `{}` ({} shard files): one training window of seq_len {seq_len}",
                        s.name,
                        s.train_shards.len()
                    ),
                    tokens: stream.total,
                    needed: seq_len as u64 + 1,
                });
            }
            opened.push(Source {
                name: s.name,
                stream,
                n_windows,
                key: source_key(seed, i),
                epoch: 0,
                cursor: 0,
                windows: 0,
                perm: Vec::new(),
                perm_epoch: None,
            });
        }
        Ok(MixLoader {
            sources: opened,
            stages,
            batch_size,
            seq_len,
            seed,
            rank,
            world_size,
            step: 0,
        })
    }

    /// Index of the stage in force at `step` (the last one with `from_step <= step`).
    fn stage_index(&self, step: u64) -> usize {
        // The first stage starts at 0, so the partition point is at least 1.
        self.stages.partition_point(|s| s.from_step <= step) - 1
    }

    /// Batches also say where the documents of their windows start ([`crate::Batch::doc_ids`],
    /// from the `.idx` index beside each shard), for a model that keeps them apart
    /// (`data.document_masking`). Fails, naming the file, when an index is missing or damaged.
    pub fn with_document_masking(mut self) -> Result<Self, DataError> {
        for s in &mut self.sources {
            s.stream.load_documents()?;
        }
        Ok(self)
    }

    /// The next batch of this rank: `batch_size × (seq_len + 1)` tokens, row-major, the same
    /// layout as [`TokenLoader::next_batch`](crate::TokenLoader::next_batch).
    pub fn next_batch(&mut self) -> Vec<u32> {
        self.next_full_batch().tokens
    }

    /// [`MixLoader::next_batch`] with the documents of its input positions under
    /// [`MixLoader::with_document_masking`].
    pub fn next_full_batch(&mut self) -> crate::Batch {
        let stage = &self.stages[self.stage_index(self.step)];
        let row = self.seq_len + 1;
        let mine = self.rank * self.batch_size..(self.rank + 1) * self.batch_size;
        let mut tokens = Vec::with_capacity(self.batch_size * row);
        let masking = self.sources.iter().any(|s| s.stream.has_documents());
        let mut doc_ids = masking.then(|| Vec::with_capacity(self.batch_size * self.seq_len));
        for j in 0..self.world_size * self.batch_size {
            let i = stage.pick(row_uniform(self.seed, self.step, j as u64));
            let source = &mut self.sources[i];
            let w = source.take();
            if mine.contains(&j) {
                let start = w * self.seq_len as u64;
                source
                    .stream
                    .read_window(start, row, &mut tokens, doc_ids.as_mut());
            }
        }
        self.step += 1;
        crate::Batch {
            tokens,
            loss_mask: None,
            doc_ids,
        }
    }

    /// Current position, to be saved with a checkpoint.
    pub fn state(&self) -> MixState {
        MixState {
            step: self.step,
            sources: self
                .sources
                .iter()
                .map(|s| SourceCursor {
                    name: s.name.clone(),
                    epoch: s.epoch,
                    cursor: s.cursor,
                    windows: s.windows,
                })
                .collect(),
        }
    }

    /// Continues from a saved position: the following batches equal those an uninterrupted loader
    /// (same sources, stages, seed, batch size, seq_len and world size) would have produced.
    ///
    /// Fails, changing nothing, if the state's sources are not this loader's (same names, same
    /// order; the error names the difference), or if a source's cursor does not fit its data
    /// (the checkpoint was made with other data or another seq_len).
    pub fn restore(&mut self, state: &MixState) -> Result<(), DataError> {
        let saved: Vec<&str> = state.sources.iter().map(|c| c.name.as_str()).collect();
        let here = self.names();
        if saved != here {
            return Err(DataError::config(
                "mix state",
                source_list_difference(&saved, &here),
            ));
        }
        for (c, s) in state.sources.iter().zip(&self.sources) {
            let consistent = c
                .epoch
                .checked_mul(s.n_windows)
                .and_then(|x| x.checked_add(c.cursor))
                == Some(c.windows);
            if c.cursor > s.n_windows || !consistent {
                return Err(DataError::config(
                    "mix state",
                    format!(
                        "source `{}`: epoch {}, cursor {}, {} windows taken do not fit its {} \
                         windows per epoch; was the checkpoint made with other data or seq_len?",
                        s.name, c.epoch, c.cursor, c.windows, s.n_windows
                    ),
                ));
            }
        }
        for (c, s) in state.sources.iter().zip(&mut self.sources) {
            s.epoch = c.epoch;
            s.cursor = c.cursor;
            s.windows = c.windows;
        }
        self.step = state.step;
        Ok(())
    }

    /// Global steps taken so far (the index of the next batch's step).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Source names, in source order.
    pub fn names(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.name.clone()).collect()
    }

    /// Tokens consumed per source by all ranks (windows taken × `seq_len`, i.e. predicted
    /// tokens), in source order.
    pub fn tokens_per_source(&self) -> Vec<u64> {
        self.sources
            .iter()
            .map(|s| s.windows * self.seq_len as u64)
            .collect()
    }

    /// Current epoch of each source (0-based), in source order.
    pub fn epochs(&self) -> Vec<u64> {
        self.sources.iter().map(|s| s.epoch).collect()
    }

    /// Weights of the stage in force at global step `step`, as given.
    pub fn weights_at(&self, step: u64) -> &[f64] {
        &self.stages[self.stage_index(step)].weights
    }

    /// Windows per epoch of each source (`(tokens − 1) / seq_len`), in source order.
    pub fn windows_per_epoch(&self) -> Vec<u64> {
        self.sources.iter().map(|s| s.n_windows).collect()
    }
}

impl std::fmt::Debug for MixLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixLoader")
            .field("sources", &self.names())
            .field("batch_size", &self.batch_size)
            .field("seq_len", &self.seq_len)
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl BatchSource for MixLoader {
    type State = MixState;

    fn next_batch(&mut self) -> crate::Batch {
        self.next_full_batch()
    }

    fn state(&self) -> MixState {
        MixLoader::state(self)
    }
}

/// Checks the stages against the sources and normalises them.
fn validate_stages(sources: &[MixSource], stages: Vec<MixStage>) -> Result<Vec<Stage>, DataError> {
    let field = "data.stages";
    if stages.is_empty() {
        return Err(DataError::config(
            field,
            "no mixing stages; give at least one, starting at step 0",
        ));
    }
    if stages[0].from_step != 0 {
        return Err(DataError::config(
            field,
            format!(
                "the first stage starts at step {}; it must start at step 0",
                stages[0].from_step
            ),
        ));
    }
    let mut out = Vec::with_capacity(stages.len());
    for (k, stage) in stages.into_iter().enumerate() {
        let at = format!("stage {k} (from_step {})", stage.from_step);
        if k > 0 && stage.from_step <= out.last().map_or(0, |s: &Stage| s.from_step) {
            return Err(DataError::config(
                field,
                format!(
                    "{at} does not start after stage {} (from_step {}); stages must be sorted \
                     by strictly increasing from_step",
                    k - 1,
                    out[k - 1].from_step
                ),
            ));
        }
        if stage.weights.len() != sources.len() {
            let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
            return Err(DataError::config(
                field,
                format!(
                    "{at} has {} weights but there are {} sources ({}); give one weight per \
                     source, in that order",
                    stage.weights.len(),
                    sources.len(),
                    names.join(", ")
                ),
            ));
        }
        for (w, s) in stage.weights.iter().zip(sources) {
            if !w.is_finite() || *w < 0.0 {
                return Err(DataError::config(
                    field,
                    format!(
                        "{at}: source `{}` has weight {w}; weights must be finite and >= 0",
                        s.name
                    ),
                ));
            }
        }
        // Finite weights can still overflow when summed; the sum must be finite too.
        let total: f64 = stage.weights.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return Err(DataError::config(
                field,
                format!("{at}: the weights sum to {total}; at least one must be > 0 (and the sum finite)"),
            ));
        }
        out.push(Stage::new(stage.from_step, stage.weights));
    }
    Ok(out)
}

/// Explains how a checkpoint's source list differs from this run's.
fn source_list_difference(saved: &[&str], here: &[String]) -> String {
    let missing: Vec<&str> = saved
        .iter()
        .copied()
        .filter(|n| !here.iter().any(|h| h == n))
        .collect();
    let new: Vec<&str> = here
        .iter()
        .map(String::as_str)
        .filter(|h| !saved.contains(h))
        .collect();
    let mut msg = format!(
        "the checkpoint's sources are [{}] but this run's are [{}]",
        saved.join(", "),
        here.join(", ")
    );
    if !missing.is_empty() {
        msg += &format!("; not in this run: {}", missing.join(", "));
    }
    if !new.is_empty() {
        msg += &format!("; not in the checkpoint: {}", new.join(", "));
    }
    if missing.is_empty() && new.is_empty() {
        msg += "; the same sources in another order";
    }
    msg + "; resuming needs the same sources in the same order"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_shard, Prefetcher, TokenLoader};
    use std::collections::HashSet;
    use std::path::Path;

    /// Token ids of source `i` start at `i × BASE`, so a row tells which source it came from.
    const BASE: u32 = 1_000_000;

    /// Source `i` named `name`: tokens `i·BASE .. i·BASE + n` split over two uneven shards.
    fn source(dir: &Path, i: u32, name: &str, n: u32) -> MixSource {
        let cut = n / 3 + 1;
        let train_shards = [(0, cut.min(n)), (cut.min(n), n)]
            .iter()
            .enumerate()
            .map(|(k, &(a, b))| {
                let p = dir.join(format!("{name}_train_{k:06}.bin"));
                let toks: Vec<u32> = (i * BASE + a..i * BASE + b).collect();
                write_shard(&p, &toks, 1 << 24).unwrap();
                p
            })
            .collect();
        MixSource {
            name: name.to_string(),
            train_shards,
        }
    }

    /// Sources with `sizes[i]` tokens each, named `s0, s1, …`.
    fn sources(dir: &Path, sizes: &[u32]) -> Vec<MixSource> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| source(dir, i as u32, &format!("s{i}"), n))
            .collect()
    }

    fn one_stage(weights: &[f64]) -> Vec<MixStage> {
        vec![MixStage {
            from_step: 0,
            weights: weights.to_vec(),
        }]
    }

    /// `(source, window)` of a batch row, checking it is a contiguous window of one source.
    fn window_of(row: &[u32], seq_len: usize) -> (usize, u64) {
        assert_eq!(row.len(), seq_len + 1);
        for (i, &t) in row.iter().enumerate() {
            assert_eq!(t, row[0] + i as u32, "row is not a contiguous window");
        }
        let (src, pos) = (row[0] / BASE, row[0] % BASE);
        assert_eq!(pos as usize % seq_len, 0, "row does not start on a window");
        (src as usize, pos as u64 / seq_len as u64)
    }

    fn rows(batch: &[u32], seq_len: usize) -> Vec<(usize, u64)> {
        batch
            .chunks(seq_len + 1)
            .map(|r| window_of(r, seq_len))
            .collect()
    }

    #[test]
    fn proportions_match_weights() {
        let dir = tempfile::tempdir().unwrap();
        // 200, 300 and 500 windows of 8: every source wraps many times.
        let srcs = sources(dir.path(), &[1601, 2401, 4001]);
        let weights = [0.2, 0.3, 0.5];
        let (bs, seq, steps) = (32, 8, 640);
        let mut mix = MixLoader::new(srcs, one_stage(&weights), bs, seq, 11, 0, 1).unwrap();
        let mut counts = [0u64; 3];
        for _ in 0..steps {
            let b = mix.next_batch();
            assert_eq!(b.len(), bs * (seq + 1));
            for (s, _) in rows(&b, seq) {
                counts[s] += 1;
            }
        }
        let n = (steps * bs) as f64;
        for (i, &p) in weights.iter().enumerate() {
            let sigma = (n * p * (1.0 - p)).sqrt();
            let dev = (counts[i] as f64 - n * p).abs();
            assert!(
                dev < 4.0 * sigma,
                "source {i}: {} rows of {n}, expected {} ± {sigma:.1}",
                counts[i],
                n * p
            );
        }
        let tokens = mix.tokens_per_source();
        for i in 0..3 {
            assert_eq!(tokens[i], counts[i] * seq as u64, "tokens of source {i}");
        }
        assert_eq!(tokens.iter().sum::<u64>(), (steps * bs * seq) as u64);
        assert_eq!(mix.step(), steps as u64);
        // Epochs: the epoch of the last window taken (lazy rollover).
        let per_epoch = mix.windows_per_epoch();
        assert_eq!(per_epoch, vec![200, 300, 500]);
        let epochs = mix.epochs();
        for i in 0..3 {
            assert_eq!(
                epochs[i],
                (counts[i] - 1) / per_epoch[i],
                "epoch of source {i}"
            );
            assert!(epochs[i] >= 10);
        }
    }

    #[test]
    fn every_window_once_per_epoch_and_reshuffled() {
        let dir = tempfile::tempdir().unwrap();
        // 10 windows of 10 (small), 73 windows of 10 (large); batch 7 does not divide either.
        let srcs = sources(dir.path(), &[101, 731]);
        let (bs, seq) = (7, 10);
        let mut mix = MixLoader::new(srcs, one_stage(&[1.0, 1.0]), bs, seq, 3, 0, 1).unwrap();
        let mut taken: [Vec<u64>; 2] = [vec![], vec![]];
        for _ in 0..60 {
            for (s, w) in rows(&mix.next_batch(), seq) {
                taken[s].push(w);
            }
        }
        for (s, n) in [(0usize, 10usize), (1, 73)] {
            let full = taken[s].len() / n;
            assert!(full >= 2, "source {s} did not wrap twice");
            let epochs: Vec<&[u64]> = taken[s].chunks(n).take(full).collect();
            for (e, chunk) in epochs.iter().enumerate() {
                let set: HashSet<u64> = chunk.iter().copied().collect();
                assert_eq!(set, (0..n as u64).collect(), "source {s}, epoch {e}");
            }
            assert_ne!(
                epochs[0], epochs[1],
                "source {s}: epochs share a permutation"
            );
        }
    }

    #[test]
    fn stages_switch_at_from_step() {
        let dir = tempfile::tempdir().unwrap();
        let srcs = sources(dir.path(), &[2001, 2001, 2001]);
        let stages = vec![
            MixStage {
                from_step: 0,
                weights: vec![1.0, 0.0, 0.0],
            },
            MixStage {
                from_step: 5,
                weights: vec![0.0, 2.0, 0.0],
            },
            MixStage {
                from_step: 9,
                weights: vec![0.5, 0.0, 0.5],
            },
        ];
        let mut mix = MixLoader::new(srcs, stages, 16, 8, 1, 0, 1).unwrap();
        assert_eq!(mix.weights_at(0), &[1.0, 0.0, 0.0]);
        assert_eq!(mix.weights_at(4), &[1.0, 0.0, 0.0]);
        assert_eq!(mix.weights_at(5), &[0.0, 2.0, 0.0]);
        assert_eq!(mix.weights_at(8), &[0.0, 2.0, 0.0]);
        assert_eq!(mix.weights_at(9), &[0.5, 0.0, 0.5]);
        assert_eq!(mix.weights_at(1 << 40), &[0.5, 0.0, 0.5]);
        let mut late = [0u64; 3];
        for step in 0..40u64 {
            let srcs: Vec<usize> = rows(&mix.next_batch(), 8).iter().map(|r| r.0).collect();
            match step {
                0..=4 => assert!(srcs.iter().all(|&s| s == 0), "step {step}: {srcs:?}"),
                5..=8 => assert!(srcs.iter().all(|&s| s == 1), "step {step}: {srcs:?}"),
                _ => srcs.iter().for_each(|&s| late[s] += 1),
            }
        }
        assert_eq!(late[1], 0, "source 1 drawn after its stage ended");
        assert!(late[0] > 200 && late[2] > 200, "{late:?}");
        // Sources keep their position across stages: source 1 took exactly 4 steps of rows.
        assert_eq!(mix.state().sources[1].windows, 4 * 16);
        assert_eq!(mix.state().sources[1].epoch, 0);
    }

    #[test]
    fn weight_zero_source_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        for weights in [[0.5, 0.0, 0.5], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]] {
            let srcs = sources(dir.path(), &[1001, 1001, 1001]);
            let mut mix = MixLoader::new(srcs, one_stage(&weights), 16, 8, 9, 0, 1).unwrap();
            for _ in 0..200 {
                for (s, _) in rows(&mix.next_batch(), 8) {
                    assert!(weights[s] > 0.0, "weights {weights:?}: source {s} was read");
                }
            }
            let state = mix.state();
            for (i, c) in state.sources.iter().enumerate() {
                assert_eq!(c.windows == 0, weights[i] == 0.0, "{weights:?}: {c:?}");
            }
            // The source is not even shuffled.
            assert!(mix.sources[1].perm.is_empty());
        }
        // Extreme draws land on positive weights only (leading and trailing zeros).
        let below_one = 1.0 - f64::EPSILON / 2.0;
        for (weights, lo, hi) in [
            (vec![0.0, 1.0], 1, 1),
            (vec![1.0, 0.0], 0, 0),
            (vec![0.0, 0.3, 0.0, 0.7, 0.0], 1, 3),
        ] {
            let stage = Stage::new(0, weights.clone());
            assert_eq!(stage.pick(0.0), lo, "{weights:?}");
            assert_eq!(stage.pick(below_one), hi, "{weights:?}");
        }
    }

    #[test]
    fn deterministic_per_seed() {
        let dir = tempfile::tempdir().unwrap();
        let srcs = sources(dir.path(), &[1001, 3001]);
        let make = |seed| MixLoader::new(srcs.clone(), one_stage(&[0.4, 0.6]), 8, 8, seed, 0, 1);
        let (mut a, mut b, mut c) = (make(5).unwrap(), make(5).unwrap(), make(6).unwrap());
        let (mut differs, mut choices_differ) = (false, false);
        for _ in 0..50 {
            let (x, y, z) = (a.next_batch(), b.next_batch(), c.next_batch());
            assert_eq!(x, y);
            differs |= x != z;
            let sx: Vec<usize> = rows(&x, 8).iter().map(|r| r.0).collect();
            let sz: Vec<usize> = rows(&z, 8).iter().map(|r| r.0).collect();
            choices_differ |= sx != sz;
        }
        assert!(
            differs && choices_differ,
            "different seeds gave the same order"
        );
        assert_eq!(a.state(), b.state());
    }

    #[test]
    fn one_source_is_the_plain_shuffled_loader() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), 0, "only", 1001); // 100 windows of 10
                                                       // Global batch 4 divides 100: identical across epochs, for any weight and any rank.
        for (bs, rank, world, weight) in [(4, 0, 1, 1.0), (2, 1, 2, 3.5), (1, 2, 4, 0.1)] {
            let mut mix = MixLoader::new(
                vec![src.clone()],
                one_stage(&[weight]),
                bs,
                10,
                42,
                rank,
                world,
            )
            .unwrap();
            let mut plain = TokenLoader::new(&src.train_shards, bs, 10, 42, rank, world).unwrap();
            for i in 0..80 {
                assert_eq!(
                    mix.next_batch(),
                    plain.next_batch(),
                    "batch {i}, rank {rank}/{world}"
                );
            }
            assert_eq!(mix.epochs()[0], plain.epoch());
        }
        // Global batch 3 does not divide 100: the same within the first epoch; after it the
        // plain loader skips its leftover window, the mix does not.
        let mut mix =
            MixLoader::new(vec![src.clone()], one_stage(&[1.0]), 3, 10, 42, 0, 1).unwrap();
        let mut plain = TokenLoader::new(&src.train_shards, 3, 10, 42, 0, 1).unwrap();
        for i in 0..33 {
            assert_eq!(mix.next_batch(), plain.next_batch(), "batch {i}");
        }
        let next = rows(&mix.next_batch(), 10);
        let mut epoch0: HashSet<u64> = HashSet::new();
        let mut replay = MixLoader::new(vec![src], one_stage(&[1.0]), 3, 10, 42, 0, 1).unwrap();
        for _ in 0..33 {
            epoch0.extend(rows(&replay.next_batch(), 10).iter().map(|r| r.1));
        }
        assert_eq!(epoch0.len(), 99);
        assert!(
            !epoch0.contains(&next[0].1),
            "the leftover window comes first"
        );
        assert_eq!(mix.epochs(), vec![1]);
    }

    #[test]
    fn ranks_are_disjoint_and_cover_the_global_batch() {
        let dir = tempfile::tempdir().unwrap();
        // 250, 375 and 500 windows of 8: no source wraps within the 30 × 8 rows below.
        let srcs = sources(dir.path(), &[2001, 3001, 4001]);
        let stages = vec![
            MixStage {
                from_step: 0,
                weights: vec![0.3, 0.3, 0.4],
            },
            MixStage {
                from_step: 10,
                weights: vec![0.1, 0.0, 0.9],
            },
        ];
        let (world, bs, seq) = (2, 4, 8);
        let mut single =
            MixLoader::new(srcs.clone(), stages.clone(), world * bs, seq, 8, 0, 1).unwrap();
        let mut ranks: Vec<MixLoader> = (0..world)
            .map(|r| MixLoader::new(srcs.clone(), stages.clone(), bs, seq, 8, r, world).unwrap())
            .collect();
        let mut seen = HashSet::new();
        for step in 0..30 {
            let global = single.next_batch();
            let parts: Vec<Vec<u32>> = ranks.iter_mut().map(|l| l.next_batch()).collect();
            let r0: HashSet<(usize, u64)> = rows(&parts[0], seq).into_iter().collect();
            let r1: HashSet<(usize, u64)> = rows(&parts[1], seq).into_iter().collect();
            assert_eq!(
                r0.len() + r1.len(),
                world * bs,
                "step {step}: a rank repeats a window"
            );
            assert!(r0.is_disjoint(&r1), "step {step}: ranks overlap");
            assert_eq!(parts.concat(), global, "step {step}");
            for w in rows(&global, seq) {
                assert!(seen.insert(w), "window {w:?} seen twice");
            }
        }
        assert!(ranks.iter().all(|l| l.state() == single.state()));
        assert_eq!(ranks[1].tokens_per_source(), single.tokens_per_source());
    }

    #[test]
    fn exact_resume_mid_epoch_and_across_a_small_sources_epoch() {
        let dir = tempfile::tempdir().unwrap();
        // The small source has 10 windows and takes about half the rows: it wraps every
        // ~3 steps, sometimes in the middle of a step.
        let srcs = sources(dir.path(), &[81, 2001, 5001]);
        let stages = vec![
            MixStage {
                from_step: 0,
                weights: vec![0.5, 0.25, 0.25],
            },
            MixStage {
                from_step: 20,
                weights: vec![0.2, 0.0, 0.8],
            },
        ];
        let (world, bs, seq) = (2, 3, 8);
        let make = |rank| MixLoader::new(srcs.clone(), stages.clone(), bs, seq, 77, rank, world);
        let mut full = [make(0).unwrap(), make(1).unwrap()];
        let mut all = [vec![], vec![]];
        let mut states = vec![full[0].state()];
        for _ in 0..50 {
            for r in 0..2 {
                all[r].push(full[r].next_batch());
            }
            assert_eq!(full[0].state(), full[1].state());
            states.push(full[0].state());
        }
        // Resume points: the start, mid-epoch of everything, just before the small source's
        // first wrap, just after it, one whose saved cursor is at the end of an epoch (if any),
        // and one in the second stage.
        let first_wrap = states.iter().position(|s| s.sources[0].epoch == 1).unwrap();
        let mut ks = vec![0, 1, first_wrap - 1, first_wrap, 25];
        ks.extend(
            states
                .iter()
                .position(|s| s.sources[0].cursor == 10 && s.step > 0),
        );
        for k in ks {
            let json = serde_json::to_string(&states[k]).unwrap();
            let state: MixState = serde_json::from_str(&json).unwrap();
            for r in 0..2 {
                let mut resumed = make(r).unwrap();
                resumed.restore(&state).unwrap();
                assert_eq!(resumed.step(), k as u64);
                for (i, b) in all[r][k..].iter().enumerate() {
                    assert_eq!(
                        &resumed.next_batch(),
                        b,
                        "rank {r}: resume at {k}, batch {i}"
                    );
                }
                assert_eq!(resumed.state(), full[r].state());
            }
        }
        assert!(full[0].epochs()[0] >= 5);
        // A loader that already ran can be restored backwards too.
        full[0].restore(&states[3]).unwrap();
        assert_eq!(full[0].next_batch(), all[0][3]);
        // Through a prefetcher: same batches, and its state is that of the batch handed out.
        let mut pre = Prefetcher::new(make(1).unwrap(), 3);
        for (i, b) in all[1].iter().enumerate() {
            assert_eq!(&pre.next().tokens, b);
            assert_eq!(pre.state(), states[i + 1]);
        }
    }

    #[test]
    fn elastic_resume_continues_every_source() {
        let dir = tempfile::tempdir().unwrap();
        let srcs = sources(dir.path(), &[4001, 4001]); // 500 windows each
        let make = |bs, rank, world| {
            MixLoader::new(srcs.clone(), one_stage(&[1.0, 1.0]), bs, 8, 4, rank, world).unwrap()
        };
        let mut before = make(6, 0, 1);
        let mut seen = HashSet::new();
        for _ in 0..20 {
            seen.extend(rows(&before.next_batch(), 8));
        }
        // Resume on 2 ranks of 5 rows: nothing repeated within the first epochs.
        let mut ranks = [make(5, 0, 2), make(5, 1, 2)];
        for r in &mut ranks {
            r.restore(&before.state()).unwrap();
        }
        for _ in 0..20 {
            for r in &mut ranks {
                for w in rows(&r.next_batch(), 8) {
                    assert!(seen.insert(w), "{w:?} repeated after an elastic resume");
                }
            }
        }
        assert_eq!(
            ranks[0].tokens_per_source().iter().sum::<u64>(),
            (20 * 6 + 20 * 10) * 8
        );
    }

    fn err_text(r: Result<MixLoader, DataError>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn invalid_settings_are_rejected_naming_the_source_or_stage() {
        let dir = tempfile::tempdir().unwrap();
        let srcs = vec![
            source(dir.path(), 0, "stories", 1001),
            source(dir.path(), 1, "web", 1001),
        ];
        let new = |srcs: Vec<MixSource>, stages: Vec<MixStage>| {
            err_text(MixLoader::new(srcs, stages, 4, 8, 0, 0, 1))
        };
        let stage = |from_step, weights: &[f64]| MixStage {
            from_step,
            weights: weights.to_vec(),
        };
        let cases: Vec<(String, &[&str])> = vec![
            (
                new(vec![], one_stage(&[])),
                &["data.sources", "no training sources"],
            ),
            (
                new(srcs.clone(), one_stage(&[1.0])),
                &["stage 0", "1 weights", "2 sources", "stories, web"],
            ),
            (
                new(srcs.clone(), one_stage(&[0.0, 0.0])),
                &["stage 0", "sum to 0"],
            ),
            (
                new(srcs.clone(), one_stage(&[0.5, -0.1])),
                &["stage 0", "`web`", "-0.1"],
            ),
            (
                new(srcs.clone(), one_stage(&[f64::NAN, 1.0])),
                &["`stories`", "NaN"],
            ),
            (
                new(srcs.clone(), one_stage(&[f64::INFINITY, 1.0])),
                &["`stories`", "inf"],
            ),
            (
                new(srcs.clone(), one_stage(&[f64::MAX, f64::MAX])),
                &["sum to inf"],
            ),
            (new(srcs.clone(), vec![]), &["no mixing stages"]),
            (
                new(srcs.clone(), vec![stage(3, &[1.0, 1.0])]),
                &["first stage starts at step 3"],
            ),
            (
                new(
                    srcs.clone(),
                    vec![
                        stage(0, &[1.0, 1.0]),
                        stage(10, &[1.0, 0.0]),
                        stage(10, &[0.0, 1.0]),
                    ],
                ),
                &[
                    "stage 2 (from_step 10)",
                    "stage 1 (from_step 10)",
                    "strictly increasing",
                ],
            ),
            (
                new(
                    srcs.clone(),
                    vec![
                        stage(0, &[1.0, 1.0]),
                        stage(10, &[1.0, 0.0]),
                        stage(5, &[0.0, 1.0]),
                    ],
                ),
                &["stage 2 (from_step 5)"],
            ),
            (
                new(
                    srcs.clone(),
                    vec![stage(0, &[1.0, 1.0]), stage(10, &[0.0, 0.0])],
                ),
                &["stage 1 (from_step 10)", "sum to 0"],
            ),
            (
                new(
                    vec![srcs[0].clone(), srcs[0].clone()],
                    one_stage(&[1.0, 1.0]),
                ),
                &["`stories` is used twice"],
            ),
            (
                new(
                    vec![srcs[0].clone(), source(dir.path(), 2, "tiny", 8)],
                    one_stage(&[1.0, 1.0]),
                ),
                &["source `tiny`", "has 8 tokens, need at least 9"],
            ),
            (
                new(
                    vec![
                        srcs[0].clone(),
                        MixSource {
                            name: "nothing".into(),
                            train_shards: vec![],
                        },
                    ],
                    one_stage(&[1.0, 1.0]),
                ),
                &["source `nothing` (0 shard files)", "has 0 tokens"],
            ),
            (
                err_text(MixLoader::new(
                    srcs.clone(),
                    one_stage(&[1.0, 1.0]),
                    4,
                    8,
                    0,
                    2,
                    2,
                )),
                &["rank 2 is not below world_size 2"],
            ),
            (
                err_text(MixLoader::new(
                    srcs.clone(),
                    one_stage(&[1.0, 1.0]),
                    0,
                    8,
                    0,
                    0,
                    1,
                )),
                &["batch_size"],
            ),
        ];
        for (msg, needles) in cases {
            for n in needles {
                assert!(msg.contains(n), "{msg:?} lacks {n:?}");
            }
        }
        // A source with enough tokens for one window is fine, and a weight-0 source is allowed.
        let tiny = source(dir.path(), 2, "tiny9", 9);
        let mut ok = MixLoader::new(vec![tiny], one_stage(&[1.0]), 4, 8, 0, 0, 1).unwrap();
        assert_eq!(ok.windows_per_epoch(), vec![1]);
        assert_eq!(ok.next_batch().len(), 4 * 9);
        assert_eq!(ok.epochs(), vec![3]);
        assert!(MixLoader::new(srcs, one_stage(&[0.0, 1.0]), 4, 8, 0, 0, 1).is_ok());
    }

    #[test]
    fn restore_rejects_other_sources_and_impossible_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let a = source(dir.path(), 0, "stories", 1001); // 125 windows of 8
        let b = source(dir.path(), 1, "web", 1001);
        let c = source(dir.path(), 2, "code", 1001);
        let make = |srcs: Vec<MixSource>| {
            let w = vec![1.0; srcs.len()];
            MixLoader::new(srcs, one_stage(&w), 4, 8, 0, 0, 1).unwrap()
        };
        let mut saved = make(vec![a.clone(), b.clone()]);
        for _ in 0..5 {
            saved.next_batch();
        }
        let state = saved.state();
        let restore_err = |mut l: MixLoader, s: &MixState| {
            let before = l.state();
            let e = l.restore(s).unwrap_err().to_string();
            assert_eq!(l.state(), before, "a failed restore changed the loader");
            e
        };
        let e = restore_err(make(vec![a.clone(), c.clone()]), &state);
        assert!(
            e.contains("not in this run: web") && e.contains("not in the checkpoint: code"),
            "{e}"
        );
        let e = restore_err(make(vec![b.clone(), a.clone()]), &state);
        assert!(
            e.contains("[stories, web]")
                && e.contains("[web, stories]")
                && e.contains("another order"),
            "{e}"
        );
        let e = restore_err(make(vec![a.clone(), b.clone(), c.clone()]), &state);
        assert!(e.contains("not in the checkpoint: code"), "{e}");
        let e = restore_err(make(vec![a.clone()]), &state);
        assert!(e.contains("not in this run: web"), "{e}");

        let mut bad = state.clone();
        bad.sources[1].cursor = 126;
        bad.sources[1].windows = 126;
        let e = restore_err(make(vec![a.clone(), b.clone()]), &bad);
        assert!(
            e.contains("source `web`") && e.contains("125 windows per epoch"),
            "{e}"
        );
        let mut bad = state.clone();
        bad.sources[0].windows += 1;
        let e = restore_err(make(vec![a.clone(), b.clone()]), &bad);
        assert!(e.contains("source `stories`"), "{e}");
        let mut bad = state.clone();
        bad.sources[0].epoch = u64::MAX;
        assert!(restore_err(make(vec![a.clone(), b.clone()]), &bad).contains("stories"));

        let mut fine = make(vec![a, b]);
        fine.restore(&state).unwrap();
        assert_eq!(fine.next_batch(), saved.next_batch());
    }
}
