//! Batches of token windows for training and evaluation.
//!
//! The shards are read as one concatenated token stream of `T` tokens. Window `i` covers tokens
//! `[i·seq_len, i·seq_len + seq_len + 1)`: its first `seq_len` tokens are the model input, the
//! last `seq_len` (shifted by one) the targets. Consecutive windows share one token, so the
//! stream holds `n_windows = (T − 1) / seq_len` windows and every token is predicted once per epoch.
//! Windows cross document boundaries (documents are separated by `<|endoftext|>`), as in llm.c
//! and nanoGPT. With document masking (`data.document_masking`), a batch also carries each input
//! position's document (from the shards' `.idx` indexes), and the model keeps the documents of a
//! window apart.
//!
//! Training order: each epoch visits the windows in a permutation drawn by Fisher–Yates from a
//! `ChaCha8Rng` seeded with `seed` on stream `epoch`, so it depends only on `(seed, epoch)`. A
//! global step takes the next `world_size × batch_size` windows of the permutation; rank `r` takes
//! the contiguous slice `[r·batch_size, (r+1)·batch_size)` of them, so ranks never overlap and
//! together cover the global batch. When fewer than a global batch of windows remain, those
//! leftover windows are skipped and the next epoch starts (at most `world_size × batch_size − 1`
//! windows per epoch go unseen; a different permutation next epoch skips different ones).
//!
//! The position is `(epoch, cursor)` — `cursor` counts windows of the epoch's permutation already
//! consumed by all ranks — so [`TokenLoader::state`] / [`TokenLoader::restore`] resume exactly.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::shard::read_doc_index;
use crate::{Batch, DataError, Shard};

/// Where a [`TokenLoader`] is: saved in checkpoints for exact resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    /// Epoch whose permutation is being consumed (0-based).
    pub epoch: u64,
    /// Windows of that permutation already consumed, by all ranks together.
    pub cursor: u64,
}

/// Shards viewed as one token stream (also used by [`crate::mix`]).
pub(crate) struct TokenStream {
    paths: Vec<PathBuf>,
    shards: Vec<Shard>,
    /// `starts[k]` = global index of shard `k`'s first token.
    starts: Vec<u64>,
    pub(crate) total: u64,
    /// With [`TokenStream::load_documents`]: the global index of every document's first token
    /// (its leading `<|endoftext|>`), ascending.
    doc_starts: Option<Vec<u64>>,
}

impl TokenStream {
    pub(crate) fn open(paths: &[PathBuf]) -> Result<Self, DataError> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut starts = Vec::with_capacity(paths.len());
        let mut total = 0u64;
        for p in paths {
            let s = Shard::open(p)?;
            starts.push(total);
            total += s.len() as u64;
            shards.push(s);
        }
        Ok(TokenStream {
            paths: paths.to_vec(),
            shards,
            starts,
            total,
            doc_starts: None,
        })
    }

    /// Reads the document index beside every shard (`<shard>.idx`, written by `prepare`), so
    /// that windows can say where their documents start ([`TokenStream::read_window`]).
    pub(crate) fn load_documents(&mut self) -> Result<(), DataError> {
        let mut doc_starts = Vec::new();
        for (path, &offset) in self.paths.iter().zip(&self.starts) {
            let index = path.with_extension("idx");
            if !index.exists() {
                return Err(DataError::bad_input(
                    &index,
                    "missing: data.document_masking needs the document index `prepare` writes                      beside each shard (re-prepare the data, or set document_masking: false)",
                ));
            }
            doc_starts.extend(read_doc_index(&index)?.into_iter().map(|s| s + offset));
        }
        if doc_starts.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DataError::bad_input(
                self.paths[0].with_extension("idx"),
                "document indexes are not in ascending order across the shards",
            ));
        }
        self.doc_starts = Some(doc_starts);
        Ok(())
    }

    /// The window of `row` tokens from `start` into `out`; with document indexes loaded, the
    /// document of each of its `row − 1` input positions into `doc_ids` (a number that changes
    /// where a document starts).
    pub(crate) fn read_window(
        &self,
        start: u64,
        row: usize,
        out: &mut Vec<u32>,
        doc_ids: Option<&mut Vec<u32>>,
    ) {
        self.read(start, row, out);
        if let (Some(docs), Some(ids)) = (&self.doc_starts, doc_ids) {
            // Documents started at or before each position.
            let mut k = docs.partition_point(|&d| d <= start);
            for pos in start..start + row as u64 - 1 {
                while k < docs.len() && docs[k] <= pos {
                    k += 1;
                }
                ids.push(k as u32);
            }
        }
    }

    /// True once [`TokenStream::load_documents`] has run.
    pub(crate) fn has_documents(&self) -> bool {
        self.doc_starts.is_some()
    }

    /// Appends global tokens `[start, start + len)` to `out` (may span shards).
    pub(crate) fn read(&self, start: u64, len: usize, out: &mut Vec<u32>) {
        let mut pos = start;
        let mut left = len;
        // Last shard whose first token is <= pos (empty shards are skipped by the loop).
        let mut k = self.starts.partition_point(|&s| s <= pos) - 1;
        while left > 0 {
            let shard = &self.shards[k];
            let off = (pos - self.starts[k]) as usize;
            let n = left.min(shard.len() - off);
            shard.read(off, n, out);
            pos += n as u64;
            left -= n;
            k += 1;
        }
    }

    pub(crate) fn n_windows(&self, seq_len: usize) -> u64 {
        self.total.saturating_sub(1) / seq_len as u64
    }
}

/// Batch shape and data-parallel position, checked once for every loader.
pub(crate) fn check_shape(
    batch_size: usize,
    seq_len: usize,
    rank: usize,
    world_size: usize,
) -> Result<(), DataError> {
    if batch_size == 0 {
        return Err(DataError::config("batch_size", "must be at least 1"));
    }
    if seq_len == 0 {
        return Err(DataError::config("seq_len", "must be at least 1"));
    }
    if world_size == 0 {
        return Err(DataError::config("world_size", "must be at least 1"));
    }
    if rank >= world_size {
        return Err(DataError::config(
            "rank",
            format!("rank {rank} is not below world_size {world_size}"),
        ));
    }
    Ok(())
}

/// Shuffled, resumable, rank-sharded training batches. See the module docs for the order.
pub struct TokenLoader {
    stream: TokenStream,
    batch_size: usize,
    seq_len: usize,
    seed: u64,
    rank: usize,
    world_size: usize,
    n_windows: u64,
    epoch: u64,
    cursor: u64,
    /// Window indices of the current epoch, in visiting order.
    perm: Vec<u64>,
}

impl TokenLoader {
    /// A loader over `shards` (in order) for rank `rank` of `world_size`, starting at epoch 0.
    pub fn new(
        shards: &[PathBuf],
        batch_size: usize,
        seq_len: usize,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<Self, DataError> {
        check_shape(batch_size, seq_len, rank, world_size)?;
        let stream = TokenStream::open(shards)?;
        let n_windows = stream.n_windows(seq_len);
        if n_windows == 0 {
            return Err(DataError::NotEnoughData {
                what: format!("training windows of seq_len {seq_len}"),
                tokens: stream.total,
                needed: seq_len as u64 + 1,
            });
        }
        let global = (world_size * batch_size) as u64;
        if n_windows < global {
            return Err(DataError::NotEnoughData {
                what: format!(
                    "a global batch of {world_size} ranks × {batch_size} windows of seq_len {seq_len}"
                ),
                tokens: stream.total,
                needed: global * seq_len as u64 + 1,
            });
        }
        let mut loader = TokenLoader {
            stream,
            batch_size,
            seq_len,
            seed,
            rank,
            world_size,
            n_windows,
            epoch: 0,
            cursor: 0,
            perm: Vec::new(),
        };
        loader.perm = loader.permutation(0);
        Ok(loader)
    }

    /// Fisher–Yates permutation of the windows for `epoch`, from ChaCha8 (seed = `seed`, stream = `epoch`).
    fn permutation(&self, epoch: u64) -> Vec<u64> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch);
        let mut perm: Vec<u64> = (0..self.n_windows).collect();
        for i in (1..perm.len()).rev() {
            let j = rng.random_range(0..=i as u64) as usize;
            perm.swap(i, j);
        }
        perm
    }

    /// The next batch of this rank: `batch_size × (seq_len + 1)` tokens, row-major
    /// (row `b` = one window; input = `row[..seq_len]`, target = `row[1..]`).
    pub fn next_batch(&mut self) -> Vec<u32> {
        let global = (self.world_size * self.batch_size) as u64;
        if self.cursor + global > self.n_windows {
            // Leftover windows (< a global batch) are skipped; a new permutation starts.
            self.epoch += 1;
            self.cursor = 0;
            self.perm = self.permutation(self.epoch);
        }
        let row = self.seq_len + 1;
        let mut out = Vec::with_capacity(self.batch_size * row);
        let first = (self.cursor + (self.rank * self.batch_size) as u64) as usize;
        for &w in &self.perm[first..first + self.batch_size] {
            self.stream.read(w * self.seq_len as u64, row, &mut out);
        }
        self.cursor += global;
        out
    }

    /// Current position, to be saved with a checkpoint.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            epoch: self.epoch,
            cursor: self.cursor,
        }
    }

    /// Continues from a saved position: the following batches equal those an uninterrupted loader
    /// (same shards, seed, batch size, seq_len and world size) would have produced.
    ///
    /// Fails if `cursor` is beyond this data's windows (the state was saved for other data).
    pub fn restore(&mut self, state: LoaderState) -> Result<(), DataError> {
        if state.cursor > self.n_windows {
            return Err(DataError::config(
                "loader state",
                format!(
                    "cursor {} is beyond the {} windows of this data; was the checkpoint made with other data or seq_len?",
                    state.cursor, self.n_windows
                ),
            ));
        }
        if state.epoch != self.epoch {
            self.perm = self.permutation(state.epoch);
        }
        self.epoch = state.epoch;
        self.cursor = state.cursor;
        Ok(())
    }

    /// Current epoch (0-based).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Windows in the data (`(tokens − 1) / seq_len`).
    pub fn windows_per_epoch(&self) -> u64 {
        self.n_windows
    }

    /// Global steps per epoch (`windows / (world_size × batch_size)`, rounded down).
    pub fn steps_per_epoch(&self) -> u64 {
        self.n_windows / (self.world_size * self.batch_size) as u64
    }

    /// Tokens in the data.
    pub fn total_tokens(&self) -> u64 {
        self.stream.total
    }
}

/// Fixed validation batches: windows `0, 1, 2, …` in order (non-overlapping inputs), grouped into
/// at most `max_batches` full batches of `batch_size × (seq_len + 1)` tokens. The same every call.
/// With `document_masking`, each batch carries its positions' documents (as training's do).
///
/// Fails if the data holds less than one full batch, or (masking) a document index is missing.
pub fn eval_batches(
    shards: &[PathBuf],
    batch_size: usize,
    seq_len: usize,
    max_batches: usize,
    document_masking: bool,
) -> Result<Vec<Batch>, DataError> {
    check_shape(batch_size, seq_len, 0, 1)?;
    let mut stream = TokenStream::open(shards)?;
    if document_masking {
        stream.load_documents()?;
    }
    let n_windows = stream.n_windows(seq_len);
    let n_batches = (n_windows / batch_size as u64).min(max_batches as u64);
    if n_batches == 0 {
        return Err(DataError::NotEnoughData {
            what: format!("one evaluation batch of {batch_size} windows of seq_len {seq_len}"),
            tokens: stream.total,
            needed: (batch_size * seq_len) as u64 + 1,
        });
    }
    let row = seq_len + 1;
    let batches = (0..n_batches)
        .map(|b| {
            let mut tokens = Vec::with_capacity(batch_size * row);
            let mut doc_ids = document_masking.then(|| Vec::with_capacity(batch_size * seq_len));
            for w in b * batch_size as u64..(b + 1) * batch_size as u64 {
                stream.read_window(w * seq_len as u64, row, &mut tokens, doc_ids.as_mut());
            }
            Batch {
                tokens,
                loss_mask: None,
                doc_ids,
            }
        })
        .collect();
    Ok(batches)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::write_shard;
    use std::collections::HashSet;

    /// Three shards holding tokens 0..n (as ids), split unevenly, plus an empty one.
    pub(crate) fn shards(dir: &std::path::Path, n: u32) -> Vec<PathBuf> {
        let cuts = [0, n / 3, n / 3, n / 2 + 7, n];
        (0..4)
            .map(|k| {
                let p = dir.join(format!("train_{k:06}.bin"));
                let toks: Vec<u32> = (cuts[k]..cuts[k + 1]).collect();
                write_shard(&p, &toks, 1 << 20).unwrap();
                p
            })
            .collect()
    }

    /// Window index of a batch row (tokens are their own global positions).
    fn window_of(row: &[u32], seq_len: usize) -> u64 {
        assert_eq!(row.len(), seq_len + 1);
        for (i, &t) in row.iter().enumerate() {
            assert_eq!(t, row[0] + i as u32, "row is not a contiguous window");
        }
        assert_eq!(row[0] as usize % seq_len, 0);
        row[0] as u64 / seq_len as u64
    }

    #[test]
    fn windows_cross_shards_and_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let paths = shards(dir.path(), 1001);
        let mut a = TokenLoader::new(&paths, 4, 10, 42, 0, 1).unwrap();
        let mut b = TokenLoader::new(&paths, 4, 10, 42, 0, 1).unwrap();
        let mut c = TokenLoader::new(&paths, 4, 10, 43, 0, 1).unwrap();
        assert_eq!(a.windows_per_epoch(), 100);
        assert_eq!(a.steps_per_epoch(), 25);
        let (mut seen, mut differs) = (HashSet::new(), false);
        for _ in 0..25 {
            let x = a.next_batch();
            assert_eq!(x.len(), 4 * 11);
            assert_eq!(x, b.next_batch());
            differs |= x != c.next_batch();
            for row in x.chunks(11) {
                assert!(
                    seen.insert(window_of(row, 10)),
                    "window repeated within an epoch"
                );
            }
        }
        assert!(differs, "different seeds gave the same order");
        assert_eq!(seen.len(), 100, "an epoch visits every window");
        assert_eq!(a.epoch(), 0);
    }

    #[test]
    fn exact_resume() {
        let dir = tempfile::tempdir().unwrap();
        let paths = shards(dir.path(), 700);
        let mut full = TokenLoader::new(&paths, 3, 8, 7, 0, 1).unwrap();
        // 87 windows, 29 steps per epoch: 40 steps crosses an epoch boundary.
        let all: Vec<Vec<u32>> = (0..40).map(|_| full.next_batch()).collect();
        for k in [0, 5, 29, 33] {
            let mut first = TokenLoader::new(&paths, 3, 8, 7, 0, 1).unwrap();
            for b in &all[..k] {
                assert_eq!(&first.next_batch(), b);
            }
            let state = first.state();
            let json = serde_json::to_string(&state).unwrap();
            let mut resumed = TokenLoader::new(&paths, 3, 8, 7, 0, 1).unwrap();
            resumed
                .restore(serde_json::from_str(&json).unwrap())
                .unwrap();
            for b in &all[k..] {
                assert_eq!(
                    &resumed.next_batch(),
                    b,
                    "resume after {k} batches diverged"
                );
            }
        }
        let mut other = TokenLoader::new(&paths, 3, 8, 7, 0, 1).unwrap();
        assert!(other
            .restore(LoaderState {
                epoch: 0,
                cursor: 10_000
            })
            .is_err());
    }

    #[test]
    fn ranks_are_disjoint_and_cover_the_global_batch() {
        let dir = tempfile::tempdir().unwrap();
        let paths = shards(dir.path(), 2000);
        let (world, bs, seq) = (3, 2, 16);
        let mut single = TokenLoader::new(&paths, world * bs, seq, 5, 0, 1).unwrap();
        let mut ranks: Vec<TokenLoader> = (0..world)
            .map(|r| TokenLoader::new(&paths, bs, seq, 5, r, world).unwrap())
            .collect();
        for _ in 0..30 {
            // One global step: rank r's rows are slice r of the single-process global batch.
            let global = single.next_batch();
            let parts: Vec<Vec<u32>> = ranks.iter_mut().map(|l| l.next_batch()).collect();
            assert_eq!(parts.concat(), global);
            let mut ws = HashSet::new();
            for row in global.chunks(seq + 1) {
                assert!(ws.insert(window_of(row, seq)));
            }
        }
        assert!(ranks.iter().all(|l| l.state() == single.state()));
    }

    #[test]
    fn epoch_rollover_skips_leftovers_and_reshuffles() {
        let dir = tempfile::tempdir().unwrap();
        let paths = shards(dir.path(), 101); // 10 windows of 10
        let mut l = TokenLoader::new(&paths, 3, 10, 1, 0, 1).unwrap();
        let epoch = |l: &mut TokenLoader| -> Vec<u64> {
            (0..3)
                .flat_map(|_| {
                    l.next_batch()
                        .chunks(11)
                        .map(|r| window_of(r, 10))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let e0 = epoch(&mut l);
        assert_eq!(
            l.state(),
            LoaderState {
                epoch: 0,
                cursor: 9
            }
        );
        let e1 = epoch(&mut l); // first call rolls over: 1 leftover window skipped
        assert_eq!(l.epoch(), 1);
        assert_eq!(
            l.state(),
            LoaderState {
                epoch: 1,
                cursor: 9
            }
        );
        assert_eq!(e0.iter().collect::<HashSet<_>>().len(), 9);
        assert_eq!(e1.iter().collect::<HashSet<_>>().len(), 9);
        assert_ne!(e0, e1, "each epoch has its own permutation");
    }

    #[test]
    fn errors_and_eval_batches() {
        let dir = tempfile::tempdir().unwrap();
        let paths = shards(dir.path(), 100);
        let err = TokenLoader::new(&paths, 1, 100, 0, 0, 1).err().unwrap();
        assert!(
            matches!(
                err,
                DataError::NotEnoughData {
                    tokens: 100,
                    needed: 101,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("data has 100 tokens, need at least 101"),
            "{err}"
        );
        assert!(TokenLoader::new(&paths, 20, 10, 0, 0, 1).is_err()); // 9 windows < 20
        assert!(TokenLoader::new(&paths, 1, 10, 0, 2, 2).is_err()); // rank >= world

        let ev = eval_batches(&paths, 2, 10, 100, false).unwrap();
        assert_eq!(ev.len(), 4); // 9 windows -> 4 full batches of 2
        assert_eq!(ev, eval_batches(&paths, 2, 10, 100, false).unwrap());
        let windows: Vec<u64> = ev
            .iter()
            .flat_map(|b| {
                b.tokens
                    .chunks(11)
                    .map(|r| window_of(r, 10))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(windows, (0..8).collect::<Vec<u64>>());
        assert!(ev.iter().all(|b| b.doc_ids.is_none()));
        assert_eq!(eval_batches(&paths, 2, 10, 3, false).unwrap().len(), 3);
        assert!(eval_batches(&paths, 10, 10, 3, false).is_err());
    }

    /// With document masking, each input position carries its document: the ids change exactly
    /// where the shards' `.idx` indexes put a document start (offsets local to each shard,
    /// documents spanning shards, an empty shard), and a missing index is an error naming it.
    #[test]
    fn document_ids_follow_the_shard_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = shards(dir.path(), 100); // token value = global position
        let global_starts = [0u64, 12, 33, 40, 70, 71];
        let err = eval_batches(&paths, 2, 10, 100, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train_000000.idx") && err.contains("document_masking"),
            "{err}"
        );
        // Shards hold 0..33, nothing, 33..57, 57..100.
        let local: [&[u64]; 4] = [&[0, 12], &[], &[0, 7], &[13, 14]];
        for (p, starts) in paths.iter().zip(local) {
            crate::shard::write_doc_index(&p.with_extension("idx"), starts).unwrap();
        }
        let ev = eval_batches(&paths, 2, 10, 100, true).unwrap();
        for batch in &ev {
            let ids = batch.doc_ids.as_ref().expect("document ids");
            assert_eq!(ids.len(), 2 * 10);
            for (r, window) in batch.tokens.chunks(11).enumerate() {
                for (i, &pos) in window[..10].iter().enumerate() {
                    let docs = global_starts.iter().filter(|&&s| s <= pos as u64).count();
                    assert_eq!(ids[r * 10 + i], docs as u32, "position {pos}");
                }
            }
        }
        let with_starts = ev.iter().flat_map(|b| b.doc_ids.clone().unwrap());
        assert!(with_starts.collect::<HashSet<_>>().len() >= 5);
    }
}
