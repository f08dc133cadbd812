//! Background batch loading that overlaps with compute.
//!
//! A [`Prefetcher`] moves a [`BatchSource`] (e.g. a [`TokenLoader`]) onto one named thread
//! (`kiln-data-prefetch`) that keeps a bounded queue of upcoming batches filled while the training
//! step runs, so reading shards (page faults on memory-mapped files, gathering shuffled windows)
//! happens off the critical path.
//!
//! The batches and their order are exactly those of the source alone: the thread calls
//! `next_batch` in sequence and the queue is FIFO. Checkpoints stay exact because
//! [`Prefetcher::state`] reports the position after the last batch *handed out*, not after what
//! the thread has read ahead (see its docs).
//!
//! ```no_run
//! # use kiln_data::*;
//! # fn main() -> Result<(), DataError> {
//! # let shards: Vec<std::path::PathBuf> = vec![];
//! let loader = TokenLoader::new(&shards, 8, 256, 1234, 0, 1)?;
//! let mut batches = Prefetcher::new(loader, 4);
//! let batch: Batch = batches.next(); // the tokens loader.next_batch() would give, as a Batch
//! let resume_from: LoaderState = batches.state(); // save this with the checkpoint
//! # let _ = (batch, resume_from);
//! # Ok(()) }
//! ```

use std::any::Any;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use crate::{Batch, LoaderState, TokenLoader};

/// Name of the producer thread (shows up in debuggers, `top -H` and panic messages).
pub const PREFETCH_THREAD_NAME: &str = "kiln-data-prefetch";

/// An endless, deterministic stream of batches whose position can be saved.
///
/// Implemented by [`TokenLoader`]; any loader that can run on another thread (`Send + 'static`)
/// and report where it is can be prefetched with a [`Prefetcher`].
pub trait BatchSource: Send + 'static {
    /// Position in the stream, saved in checkpoints for exact resume. It must describe the
    /// position *after* the batches returned so far, so that restoring it and calling
    /// `next_batch` continues with the batch that would have come next.
    type State: Clone + Send + 'static;

    /// The next micro-batch.
    fn next_batch(&mut self) -> Batch;

    /// The current position (after the last batch returned by `next_batch`).
    fn state(&self) -> Self::State;
}

impl BatchSource for TokenLoader {
    type State = LoaderState;

    fn next_batch(&mut self) -> Batch {
        TokenLoader::next_batch(self).into()
    }

    fn state(&self) -> LoaderState {
        TokenLoader::state(self)
    }
}

/// Runs a [`BatchSource`] on a background thread, up to `depth` batches ahead of the consumer.
///
/// The thread calls `source.next_batch()` and sends each batch, together with
/// `source.state()` taken right after it, into a bounded channel of capacity `depth`. At most
/// `depth` finished batches wait in the queue, plus one more that the thread holds while it is
/// blocked on a full queue; the thread then sleeps until the consumer takes one.
///
/// Dropping the prefetcher stops and joins the thread. If the source panics on the thread,
/// the next call to [`Prefetcher::next`] panics with the source's message.
pub struct Prefetcher<S: BatchSource> {
    /// `None` only during `drop`.
    rx: Option<Receiver<(Batch, S::State)>>,
    /// `None` once the thread has been joined (after it panicked, or in `drop`).
    handle: Option<JoinHandle<()>>,
    /// Source position after the last batch returned by `next`.
    state: S::State,
    depth: usize,
}

impl<S: BatchSource> Prefetcher<S> {
    /// Starts prefetching from `source`, keeping up to `depth` batches queued.
    ///
    /// `depth == 0` is treated as 1: a rendezvous channel would still let the thread compute one
    /// batch ahead, and "no prefetching" is better served by calling the source directly.
    ///
    /// # Panics
    ///
    /// If the operating system cannot create the thread (as [`std::thread::spawn`] does).
    pub fn new(mut source: S, depth: usize) -> Self {
        let depth = depth.max(1);
        let state = source.state();
        let (tx, rx) = sync_channel::<(Batch, S::State)>(depth);
        let handle = std::thread::Builder::new()
            .name(PREFETCH_THREAD_NAME.into())
            .spawn(move || loop {
                let batch = source.next_batch();
                let after = source.state();
                if tx.send((batch, after)).is_err() {
                    // The receiver was dropped: the prefetcher is gone, stop.
                    return;
                }
            })
            .unwrap_or_else(|e| panic!("could not spawn the {PREFETCH_THREAD_NAME} thread: {e}"));
        Prefetcher {
            rx: Some(rx),
            handle: Some(handle),
            state,
            depth,
        }
    }

    /// The next batch: exactly what `source.next_batch()` would have returned next. Blocks
    /// while the thread has none ready.
    ///
    /// # Panics
    ///
    /// If the source panicked on the background thread (the message includes its panic message).
    #[allow(
        clippy::should_implement_trait,
        reason = "the stream never ends, so an Iterator's Option would only add an unwrap per step"
    )]
    pub fn next(&mut self) -> Batch {
        let rx = self.rx.as_ref().expect("receiver is present until drop");
        match rx.recv() {
            Ok((batch, state)) => {
                self.state = state;
                batch
            }
            // The sender lives on the thread and the thread only returns once the receiver is
            // gone, so a disconnected channel means the source panicked.
            Err(_) => match self.handle.take().map(JoinHandle::join) {
                Some(Err(payload)) => panic!(
                    "{PREFETCH_THREAD_NAME} thread panicked while producing a batch: {}",
                    panic_message(payload.as_ref())
                ),
                Some(Ok(())) => {
                    panic!("{PREFETCH_THREAD_NAME} thread stopped without producing a batch")
                }
                None => panic!(
                    "{PREFETCH_THREAD_NAME} thread is gone (it panicked earlier); no more batches"
                ),
            },
        }
    }

    /// Position of the source after the last batch returned by [`next`](Self::next) (before any
    /// `next`: the source's position when the prefetcher was created).
    ///
    /// This is deliberately *not* where the background thread is: it has usually read up to
    /// `depth + 1` batches further, and those batches have not been trained on. A checkpoint
    /// that saved the thread's position would skip them on resume; saving this one makes a
    /// restored source continue with exactly the batch that `next` would have returned next.
    pub fn state(&self) -> S::State {
        self.state.clone()
    }

    /// Capacity of the queue (the `depth` given to [`new`](Self::new), at least 1).
    pub fn depth(&self) -> usize {
        self.depth
    }
}

impl<S: BatchSource> Drop for Prefetcher<S> {
    /// Stops the thread and waits for it: dropping the receiver makes its pending or next `send`
    /// fail, so it returns after at most the batch it is producing. A panic of the thread is not
    /// re-raised here (it would abort if we are already unwinding); `next` reports it.
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl<S: BatchSource> std::fmt::Debug for Prefetcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetcher")
            .field("depth", &self.depth)
            .field("running", &self.handle.is_some())
            .finish_non_exhaustive()
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::loader::tests::shards;

    /// 700 tokens, batch 3, seq_len 8: 87 windows, 29 steps per epoch.
    fn loader(paths: &[PathBuf]) -> TokenLoader {
        let l = TokenLoader::new(paths, 3, 8, 7, 0, 1).unwrap();
        assert_eq!(l.steps_per_epoch(), 29);
        l
    }

    /// A [`TokenLoader`] that counts the batches it has produced (to see the thread run ahead).
    struct Counting {
        inner: TokenLoader,
        produced: Arc<AtomicUsize>,
    }

    impl BatchSource for Counting {
        type State = LoaderState;
        fn next_batch(&mut self) -> Batch {
            let b = self.inner.next_batch();
            self.produced.fetch_add(1, Ordering::SeqCst);
            b.into()
        }
        fn state(&self) -> LoaderState {
            self.inner.state()
        }
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let t = Instant::now();
        while !cond() {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn same_batches_as_the_plain_loader_across_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let paths = shards(dir.path(), 700);
        let mut plain = loader(&paths);
        for depth in [0, 1, 4] {
            let mut plain = loader(&paths);
            let mut pre = Prefetcher::new(loader(&paths), depth);
            assert_eq!(pre.depth(), depth.max(1));
            // 70 batches cross two epoch boundaries (29 steps per epoch).
            for i in 0..70 {
                assert_eq!(
                    pre.next().tokens,
                    plain.next_batch(),
                    "batch {i}, depth {depth}"
                );
                assert_eq!(pre.state(), plain.state(), "state after batch {i}");
            }
            assert_eq!(pre.state().epoch, 2);
        }
        // A loader restored mid-stream is prefetched from where it was restored.
        for _ in 0..31 {
            plain.next_batch();
        }
        let mut restored = loader(&paths);
        restored.restore(plain.state()).unwrap();
        let mut pre = Prefetcher::new(restored, 2);
        assert_eq!(pre.state(), plain.state(), "state before any next");
        for _ in 0..10 {
            assert_eq!(pre.next().tokens, plain.next_batch());
        }
    }

    #[test]
    fn state_is_that_of_the_consumed_batch_and_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let paths = shards(dir.path(), 700);
        let mut full = loader(&paths);
        let all: Vec<Vec<u32>> = (0..60).map(|_| full.next_batch()).collect();
        let depth = 3;
        for k in [0, 1, 5, 28, 29, 33] {
            let produced = Arc::new(AtomicUsize::new(0));
            let mut pre = Prefetcher::new(
                Counting {
                    inner: loader(&paths),
                    produced: produced.clone(),
                },
                depth,
            );
            let mut plain = loader(&paths);
            for b in &all[..k] {
                assert_eq!(&pre.next().tokens, b);
                plain.next_batch();
            }
            // Let the thread fill the queue: it is now `depth + 1` batches ahead.
            wait_until("the prefetch queue to fill", || {
                produced.load(Ordering::SeqCst) == k + depth + 1
            });
            let state = pre.state();
            assert_eq!(state, plain.state(), "state after {k} batches");
            let mut ahead = loader(&paths);
            ahead.restore(state).unwrap();
            for _ in 0..=depth {
                ahead.next_batch();
            }
            assert_ne!(
                state,
                ahead.state(),
                "the thread's own position is further on"
            );

            // A fresh loader restored from the saved state continues with the same batches,
            // and so does the prefetcher itself.
            let mut resumed = loader(&paths);
            resumed.restore(state).unwrap();
            for (i, b) in all[k..].iter().enumerate() {
                assert_eq!(&resumed.next_batch(), b, "resume after {k}, batch {i}");
                assert_eq!(&pre.next().tokens, b, "prefetcher after {k}, batch {i}");
            }
        }
    }

    /// A source that records when it is dropped (i.e. when the thread owning it has ended).
    struct Flagged {
        inner: TokenLoader,
        dropped: Arc<AtomicBool>,
    }

    impl Drop for Flagged {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    impl BatchSource for Flagged {
        type State = LoaderState;
        fn next_batch(&mut self) -> Batch {
            self.inner.next_batch().into()
        }
        fn state(&self) -> LoaderState {
            self.inner.state()
        }
    }

    #[test]
    fn drop_mid_stream_stops_and_joins_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let paths = shards(dir.path(), 700);
        for (consumed, depth) in [(0, 1), (3, 4), (40, 2)] {
            let dropped = Arc::new(AtomicBool::new(false));
            let mut pre = Prefetcher::new(
                Flagged {
                    inner: loader(&paths),
                    dropped: dropped.clone(),
                },
                depth,
            );
            for _ in 0..consumed {
                pre.next();
            }
            // Give the thread time to fill the queue and block on `send`.
            std::thread::sleep(Duration::from_millis(20));
            let t = Instant::now();
            drop(pre);
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "drop took {:?}",
                t.elapsed()
            );
            // The source is dropped when the thread's closure ends, and `drop` joined it.
            assert!(dropped.load(Ordering::SeqCst), "thread was not joined");
        }
        // Dropping right after creation, before the thread produced anything, also works.
        drop(Prefetcher::new(loader(&paths), 8));
    }

    /// Yields `ok` batches, then panics.
    struct Failing {
        ok: u32,
        n: u32,
    }

    impl BatchSource for Failing {
        type State = u32;
        fn next_batch(&mut self) -> Batch {
            if self.n == self.ok {
                panic!("shard vanished at batch {}", self.n);
            }
            self.n += 1;
            vec![self.n].into()
        }
        fn state(&self) -> u32 {
            self.n
        }
    }

    #[test]
    fn producer_panic_is_reported_by_next() {
        let mut pre = Prefetcher::new(Failing { ok: 2, n: 0 }, 4);
        assert_eq!(pre.state(), 0);
        assert_eq!(pre.next().tokens, vec![1]);
        assert_eq!(pre.next().tokens, vec![2]);
        assert_eq!(pre.state(), 2);
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pre.next()))
            .expect_err("next must panic once the source has panicked");
        let msg = panic_message(err.as_ref());
        assert!(
            msg.contains("kiln-data-prefetch thread panicked")
                && msg.contains("shard vanished at batch 2"),
            "{msg}"
        );
        // Later calls panic too (no hang), and drop after a panic is fine.
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pre.next()));
        assert!(again.is_err());
        assert_eq!(pre.state(), 2, "state stays at the last batch handed out");
        drop(pre);
    }
}
