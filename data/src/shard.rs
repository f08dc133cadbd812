//! Token shards in llm.c's binary format.
//!
//! A shard is a header of 256 little-endian `i32` (1024 bytes) followed by the tokens:
//!
//! | header word | meaning |
//! |---|---|
//! | 0 | magic `20240520` |
//! | 1 | version: `1` = `u16` tokens (llm.c, nanoGPT-style `.bin`), `2` = `u32` tokens (kiln's extension) |
//! | 2 | number of tokens |
//! | 3..256 | zero |
//!
//! Version 1 files are byte-for-byte what llm.c's `fineweb.py` writes and `dataloader.h` reads;
//! kiln writes version 1 whenever the vocabulary fits in `u16` (≤ 65,536 ids) and version 2 only
//! for larger vocabularies. Tokens are little-endian on disk.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::DataError;

/// llm.c's shard magic number (header word 0).
pub const SHARD_MAGIC: i32 = 20240520;
/// Header length in `i32` words.
pub const HEADER_WORDS: usize = 256;
/// Header length in bytes.
pub const HEADER_BYTES: usize = HEADER_WORDS * 4;

/// Bytes per token of a shard version (`None` for unknown versions).
fn token_width(version: i32) -> Option<usize> {
    match version {
        1 => Some(2),
        2 => Some(4),
        _ => None,
    }
}

/// The shard version kiln writes for a vocabulary: 1 (u16) when every id fits in 16 bits.
pub fn version_for_vocab(vocab_size: usize) -> i32 {
    if vocab_size <= 1 << 16 {
        1
    } else {
        2
    }
}

/// Writes `tokens` as a shard at `path`, atomically (`path.tmp`, then a rename).
///
/// Fails if a token is `>= vocab_size`, or if there are more tokens than an `i32` count can hold.
pub fn write_shard(path: &Path, tokens: &[u32], vocab_size: usize) -> Result<(), DataError> {
    if let Some((index, &token)) = tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab_size)
    {
        return Err(DataError::TokenOutOfRange {
            path: path.to_path_buf(),
            index,
            token,
            vocab_size,
        });
    }
    if tokens.len() > i32::MAX as usize {
        return Err(DataError::config(
            "shard_tokens",
            format!(
                "{} tokens do not fit one shard (the header count is an i32)",
                tokens.len()
            ),
        ));
    }
    let version = version_for_vocab(vocab_size);

    let mut header = [0i32; HEADER_WORDS];
    header[0] = SHARD_MAGIC;
    header[1] = version;
    header[2] = tokens.len() as i32;

    let pending = PendingFile::for_path(path);
    let tmp = pending.path();
    let io = |e| DataError::io(tmp, e);
    let file = File::create(tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    for word in header {
        w.write_all(&word.to_le_bytes()).map_err(io)?;
    }
    if version == 1 {
        for &t in tokens {
            w.write_all(&(t as u16).to_le_bytes()).map_err(io)?;
        }
    } else {
        for &t in tokens {
            w.write_all(&t.to_le_bytes()).map_err(io)?;
        }
    }
    let file = w
        .into_inner()
        .map_err(|e| DataError::io(tmp, e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    pending.commit(path)
}

/// Writes one shard token by token, without holding it in memory: the tokens stream to
/// `path.tmp` after a placeholder header; [`ShardWriter::finish`] writes the real header
/// (the count), syncs and renames, so a shard that exists under its name is complete.
pub struct ShardWriter {
    path: PathBuf,
    /// Removes the `.tmp` file if the shard is never finished.
    pending: PendingFile,
    tmp: PathBuf,
    out: BufWriter<File>,
    version: i32,
    vocab_size: usize,
    len: usize,
}

impl ShardWriter {
    pub fn create(path: &Path, vocab_size: usize) -> Result<Self, DataError> {
        let pending = PendingFile::for_path(path);
        let tmp = pending.path().to_path_buf();
        let file = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_BYTES])
            .map_err(|e| DataError::io(&tmp, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            pending,
            tmp,
            out,
            version: version_for_vocab(vocab_size),
            vocab_size,
            len: 0,
        })
    }

    /// Tokens written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `tokens`; an id `>= vocab_size` is an error (index counted from the shard start).
    pub fn push(&mut self, tokens: &[u32]) -> Result<(), DataError> {
        if let Some(i) = tokens.iter().position(|&t| t as usize >= self.vocab_size) {
            return Err(DataError::TokenOutOfRange {
                path: self.path.clone(),
                index: self.len + i,
                token: tokens[i],
                vocab_size: self.vocab_size,
            });
        }
        if self.len + tokens.len() > i32::MAX as usize {
            return Err(DataError::config(
                "shard_tokens",
                "more tokens than one shard's i32 header count can hold",
            ));
        }
        let io = |e| DataError::io(&self.tmp, e);
        if self.version == 1 {
            for &t in tokens {
                self.out.write_all(&(t as u16).to_le_bytes()).map_err(io)?;
            }
        } else {
            for &t in tokens {
                self.out.write_all(&t.to_le_bytes()).map_err(io)?;
            }
        }
        self.len += tokens.len();
        Ok(())
    }

    /// Writes the header, syncs and renames the shard into place.
    pub fn finish(self) -> Result<PathBuf, DataError> {
        use std::io::{Seek, SeekFrom};
        let io = |e| DataError::io(&self.tmp, e);
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| DataError::io(&self.tmp, e.into_error()))?;
        let mut header = [0u8; HEADER_BYTES];
        for (i, word) in [SHARD_MAGIC, self.version, self.len as i32]
            .iter()
            .enumerate()
        {
            header[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
        }
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        self.pending.commit(&self.path)?;
        Ok(self.path)
    }
}

/// Converts a header-less file of little-endian token ids, `width` bytes each (nanoGPT's
/// `train.bin` holds `u16`), into shards of at most `shard_tokens` tokens at `shard_path(k)`,
/// checking every id against `vocab_size`. Reads the input memory-mapped, one shard at a time.
/// Returns the shards written and the number of tokens.
pub fn convert_raw_tokens(
    input: &Path,
    width: usize,
    shard_tokens: usize,
    vocab_size: usize,
    shard_path: impl Fn(usize) -> PathBuf,
) -> Result<(Vec<PathBuf>, u64), DataError> {
    let file = File::open(input).map_err(|e| DataError::io(input, e))?;
    let bytes = file.metadata().map_err(|e| DataError::io(input, e))?.len();
    if bytes % width as u64 != 0 {
        return Err(DataError::bad_input(
            input,
            format!(
                "{bytes} bytes is not a whole number of {width}-byte token ids \
                 (truncated, or not a header-less u{} token file)",
                width * 8
            ),
        ));
    }
    if bytes == 0 {
        return Ok((Vec::new(), 0));
    }
    // SAFETY: read-only mapping of an input the pipeline does not modify; a file changed by
    // another process meanwhile gives wrong ids (caught by the range check), not unsoundness
    // in this process beyond what reading a shared file implies.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(input, e))?;
    let total = bytes as usize / width;
    let per_shard = shard_tokens.clamp(1, i32::MAX as usize);
    let mut shards = Vec::new();
    let mut ids = Vec::with_capacity(per_shard.min(total));
    for (k, start) in (0..total).step_by(per_shard).enumerate() {
        let end = (start + per_shard).min(total);
        ids.clear();
        let raw = &map[start * width..end * width];
        if width == 2 {
            ids.extend(
                raw.chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32),
            );
        } else {
            ids.extend(
                raw.chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        if let Some(i) = ids.iter().position(|&t| t as usize >= vocab_size) {
            return Err(DataError::TokenOutOfRange {
                path: input.to_path_buf(),
                index: start + i,
                token: ids[i],
                vocab_size,
            });
        }
        let path = shard_path(k);
        write_shard(&path, &ids, vocab_size)?;
        shards.push(path);
    }
    Ok((shards, total as u64))
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The `.tmp` file a write goes to before it is renamed into place. Dropped without
/// [`PendingFile::commit`] (the write failed: a full disk, a bad token), it removes the file, so a
/// failed data preparation leaves no partial `.tmp` behind.
pub(crate) struct PendingFile {
    tmp: Option<PathBuf>,
}

impl PendingFile {
    /// The pending file for `path` (`path.tmp`).
    pub(crate) fn for_path(path: &Path) -> Self {
        Self {
            tmp: Some(tmp_path(path)),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.tmp.as_deref().expect("set until committed")
    }

    /// Renames the finished file to `path`.
    pub(crate) fn commit(mut self, path: &Path) -> Result<(), DataError> {
        let tmp = self.tmp.take().expect("set until committed");
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            DataError::io(path, e)
        })
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A read-only, memory-mapped shard.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    version: i32,
    len: usize,
}

impl Shard {
    /// Maps `path` and validates its header (magic, version) and its length against the header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| DataError::io(&path, e))?;
        let actual = file.metadata().map_err(|e| DataError::io(&path, e))?.len();
        if actual < HEADER_BYTES as u64 {
            return Err(DataError::Truncated {
                path,
                what: format!("at least the {HEADER_BYTES}-byte header"),
                expected_bytes: HEADER_BYTES as u64,
                actual_bytes: actual,
            });
        }
        // SAFETY: the file is opened read-only and shards are never modified in place (writers
        // go through a temporary file and a rename), so the mapping's contents do not change.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(&path, e))?;
        let word = |i: usize| {
            i32::from_le_bytes([map[4 * i], map[4 * i + 1], map[4 * i + 2], map[4 * i + 3]])
        };
        let (magic, version, count) = (word(0), word(1), word(2));
        if magic != SHARD_MAGIC {
            return Err(DataError::BadMagic {
                path,
                found: magic,
                expected: SHARD_MAGIC,
            });
        }
        let Some(width) = token_width(version) else {
            return Err(DataError::BadVersion {
                path,
                found: version,
            });
        };
        if count < 0 {
            return Err(DataError::Truncated {
                path,
                what: format!("header token count {count} is negative"),
                expected_bytes: HEADER_BYTES as u64,
                actual_bytes: actual,
            });
        }
        let expected = HEADER_BYTES as u64 + count as u64 * width as u64;
        if actual != expected {
            return Err(DataError::Truncated {
                path,
                what: format!("{HEADER_BYTES}-byte header + {count} u{} tokens", width * 8),
                expected_bytes: expected,
                actual_bytes: actual,
            });
        }
        Ok(Shard {
            path,
            map,
            version,
            len: count as usize,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the shard holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Header version: 1 (u16 tokens) or 2 (u32 tokens).
    pub fn version(&self) -> i32 {
        self.version
    }

    /// The file this shard was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token `i`. Panics if `i >= len()`.
    pub fn get(&self, i: usize) -> u32 {
        assert!(
            i < self.len,
            "token {i} out of range for {} ({} tokens)",
            self.path.display(),
            self.len
        );
        let data = &self.map[HEADER_BYTES..];
        if self.version == 1 {
            u16::from_le_bytes([data[2 * i], data[2 * i + 1]]) as u32
        } else {
            u32::from_le_bytes([
                data[4 * i],
                data[4 * i + 1],
                data[4 * i + 2],
                data[4 * i + 3],
            ])
        }
    }

    /// Appends tokens `[start, start + len)` to `out`. Panics if the range is out of bounds.
    pub fn read(&self, start: usize, len: usize, out: &mut Vec<u32>) {
        let end = start.checked_add(len).filter(|&e| e <= self.len);
        assert!(
            end.is_some(),
            "tokens {start}..{start}+{len} out of range for {} ({} tokens)",
            self.path.display(),
            self.len
        );
        let data = &self.map[HEADER_BYTES..];
        out.reserve(len);
        if self.version == 1 {
            let bytes = &data[2 * start..2 * (start + len)];
            out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32),
            );
        } else {
            let bytes = &data[4 * start..4 * (start + len)];
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
    }

    /// All tokens (convenient for small shards and tests).
    pub fn to_vec(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len);
        self.read(0, self.len, &mut out);
        out
    }
}

/// Magic bytes of a document-boundary index (`<shard>.idx`).
pub const DOC_INDEX_MAGIC: &[u8; 8] = b"KILNIDX1";

/// Writes a shard's document-boundary index, atomically: 8 magic bytes, a little-endian `u64`
/// count, then `count` little-endian `u64` token offsets, one per document, where the document's
/// leading `<|endoftext|>` sits in the shard. A document that began in the previous shard has no
/// entry, so offset 0 is listed only when a document starts there.
pub fn write_doc_index(path: &Path, doc_starts: &[u64]) -> Result<(), DataError> {
    let pending = PendingFile::for_path(path);
    let io = |e| DataError::io(pending.path(), e);
    let mut bytes = Vec::with_capacity(16 + 8 * doc_starts.len());
    bytes.extend_from_slice(DOC_INDEX_MAGIC);
    bytes.extend_from_slice(&(doc_starts.len() as u64).to_le_bytes());
    for s in doc_starts {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(pending.path(), &bytes).map_err(io)?;
    pending.commit(path)
}

/// Reads an index written by [`write_doc_index`]; a foreign or truncated file is an error.
pub fn read_doc_index(path: &Path) -> Result<Vec<u64>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bad = |what: &str| DataError::bad_input(path, format!("not a kiln document index: {what}"));
    if bytes.len() < 16 || &bytes[..8] != DOC_INDEX_MAGIC {
        return Err(bad("bad magic"));
    }
    let count = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if bytes.len() as u64 != 16 + 8 * count {
        return Err(bad(&format!(
            "{count} entries need {} bytes, the file has {}",
            16 + 8 * count,
            bytes.len()
        )));
    }
    Ok(bytes[16..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_word(bytes: &[u8], i: usize) -> i32 {
        i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap())
    }

    /// A full disk (`/dev/full` behind the `.tmp` name) and a writer dropped after an error both
    /// leave no `.tmp` file, and the error names the file.
    #[cfg(target_os = "linux")]
    #[test]
    fn failed_writes_leave_no_tmp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_000000.bin");
        std::os::unix::fs::symlink("/dev/full", tmp_path(&path)).unwrap();
        let e = write_shard(&path, &[1, 2, 3], 50257)
            .unwrap_err()
            .to_string();
        assert!(e.contains("train_000000.bin.tmp"), "{e}");
        assert!(!tmp_path(&path).exists() && !tmp_path(&path).is_symlink());
        assert!(!path.exists());

        std::os::unix::fs::symlink("/dev/full", tmp_path(&path)).unwrap();
        let mut w = ShardWriter::create(&path, 50257).unwrap();
        w.push(&[5; 1000]).unwrap(); // buffered
        assert!(w.finish().is_err());
        assert!(
            !tmp_path(&path).is_symlink(),
            "the failed shard's .tmp is removed"
        );

        let mut w = ShardWriter::create(&path, 300).unwrap();
        assert!(w.push(&[5, 301]).is_err());
        drop(w);
        assert!(
            !tmp_path(&path).exists(),
            "an abandoned shard's .tmp is removed"
        );

        let index = dir.path().join("train_000000.idx");
        std::os::unix::fs::symlink("/dev/full", tmp_path(&index)).unwrap();
        assert!(write_doc_index(&index, &[0, 5]).is_err());
        assert!(!tmp_path(&index).is_symlink());
    }

    #[test]
    fn u16_round_trip_and_llm_c_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_000000.bin");
        let tokens: Vec<u32> = (0..1000u32)
            .map(|i| (i * 37) % 50257)
            .chain([65535, 0])
            .collect();
        write_shard(&path, &tokens, 65536).unwrap();
        assert!(!tmp_path(&path).exists(), "temporary file left behind");

        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), HEADER_BYTES + 2 * tokens.len());
        assert_eq!(&bytes[0..4], &20240520i32.to_le_bytes());
        assert_eq!(header_word(&bytes, 0), 20240520);
        assert_eq!(header_word(&bytes, 1), 1);
        assert_eq!(header_word(&bytes, 2), tokens.len() as i32);
        assert!((3..256).all(|i| header_word(&bytes, i) == 0));
        // First token right after the header, u16 little-endian.
        assert_eq!(
            u16::from_le_bytes([bytes[1024], bytes[1025]]),
            tokens[0] as u16
        );
        assert_eq!(
            u16::from_le_bytes([bytes[1026], bytes[1027]]),
            tokens[1] as u16
        );

        let shard = Shard::open(&path).unwrap();
        assert_eq!(shard.version(), 1);
        assert_eq!(shard.len(), tokens.len());
        assert_eq!(shard.to_vec(), tokens);
        assert_eq!(shard.get(1000), 65535);
        let mut out = vec![7];
        shard.read(10, 5, &mut out);
        assert_eq!(out, [&[7], &tokens[10..15]].concat());
    }

    #[test]
    fn u32_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        let tokens: Vec<u32> = vec![0, 65536, 100_000, 199_999, 5];
        write_shard(&path, &tokens, 200_000).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(header_word(&bytes, 1), 2);
        assert_eq!(bytes.len(), HEADER_BYTES + 4 * tokens.len());
        let shard = Shard::open(&path).unwrap();
        assert_eq!(shard.version(), 2);
        assert_eq!(shard.to_vec(), tokens);

        // Empty shards are valid.
        write_shard(&path, &[], 200_000).unwrap();
        assert!(Shard::open(&path).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_files_with_useful_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.bin");

        let err = write_shard(&path, &[1, 2, 300], 256).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TokenOutOfRange {
                    index: 2,
                    token: 300,
                    vocab_size: 256,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!path.exists());

        write_shard(&path, &[1, 2, 3, 4], 1000).unwrap();
        let good = std::fs::read(&path).unwrap();

        let mut bad = good.clone();
        bad[0] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let err = Shard::open(&path).err().unwrap();
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    expected: 20240520,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("s.bin"), "{err}");

        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&3i32.to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        let err = Shard::open(&path).err().unwrap();
        assert!(
            matches!(err, DataError::BadVersion { found: 3, .. }),
            "{err}"
        );

        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        let err = Shard::open(&path).err().unwrap();
        match &err {
            DataError::Truncated {
                path: p,
                expected_bytes,
                actual_bytes,
                ..
            } => {
                assert_eq!(p, &path);
                assert_eq!(*expected_bytes, 1024 + 8);
                assert_eq!(*actual_bytes, 1024 + 7);
            }
            other => panic!("expected Truncated, got {other}"),
        }
        assert!(err.to_string().contains("1032"), "{err}");

        std::fs::write(&path, &good[..100]).unwrap();
        assert!(matches!(
            Shard::open(&path),
            Err(DataError::Truncated {
                actual_bytes: 100,
                ..
            })
        ));

        let missing = dir.path().join("missing.bin");
        let err = Shard::open(&missing).err().unwrap();
        assert!(
            matches!(err, DataError::Io { ref path, .. } if path == &missing),
            "{err}"
        );
    }

    #[test]
    fn doc_index_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.idx");
        write_doc_index(&p, &[0, 17, 90]).unwrap();
        assert_eq!(read_doc_index(&p).unwrap(), vec![0, 17, 90]);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let err = read_doc_index(&p).unwrap_err().to_string();
        assert!(err.contains("a.idx") && err.contains("3 entries"), "{err}");
    }

    #[test]
    fn shard_writer_streams_the_same_file_as_write_shard() {
        let dir = tempfile::tempdir().unwrap();
        for vocab in [50_000usize, 70_000] {
            let tokens: Vec<u32> = (0..5000u32).map(|i| (i * 7919) % vocab as u32).collect();
            let whole = dir.path().join(format!("whole-{vocab}.bin"));
            write_shard(&whole, &tokens, vocab).unwrap();
            let streamed = dir.path().join(format!("streamed-{vocab}.bin"));
            let mut w = ShardWriter::create(&streamed, vocab).unwrap();
            for chunk in tokens.chunks(333) {
                w.push(chunk).unwrap();
            }
            assert!(!streamed.exists(), "not under its name before finish");
            w.finish().unwrap();
            assert_eq!(
                std::fs::read(&whole).unwrap(),
                std::fs::read(&streamed).unwrap()
            );
        }
        let mut w = ShardWriter::create(&dir.path().join("bad.bin"), 10).unwrap();
        w.push(&[1, 2]).unwrap();
        let err = w.push(&[3, 10]).unwrap_err().to_string();
        assert!(err.contains("10") && err.contains("bad.bin"), "{err}");
    }
}
