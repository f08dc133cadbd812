//! Data preparation: sources → tokenizer → `train_*.bin` / `val_*.bin` shards, cached on disk.
//!
//! [`prepare`] turns a [`DataSpec`] into a directory `cache_root/<key>/` holding
//!
//! - `tokenizer.json` — trained here ([`TokenizerSpec::TrainBpe`]) or copied ([`TokenizerSpec::File`]);
//! - `train_000000.bin`, `train_000001.bin`, … and `val_000000.bin`, … — llm.c-format shards
//!   (see [`crate::shard`]) of `shard_tokens` tokens each (the last one shorter);
//! - `manifest.json` — the spec, the shard lists and the token counts.
//!
//! `<key>` is the first 16 hex digits of a SHA-256 over [`PREPARE_FORMAT`], the spec's JSON and,
//! for a tokenizer file, that file's bytes: a changed setting or tokenizer gives a new directory.
//! Everything is written into a sibling temporary directory, `manifest.json` last, which is then
//! renamed into place; a directory without `manifest.json` (an interrupted run, or one tampered
//! with) is deleted and prepared again, never half-used.
//!
//! Documents: each document is preceded by `<|endoftext|>` (llm.c's `fineweb.py` convention), so
//! the token stream reads `EOT doc0 EOT doc1 …`. A source emits documents until its token budget
//! (EOT tokens included) is reached; the last document is kept whole.
//!
//! Validation split: by document, over the documents of all sources in order. Document `i` goes to
//! validation iff `ceil((i+1)·f) > ceil(i·f)` with `f = val_fraction`: this holds for document 0,
//! then for one document in every `1/f`, so validation gets `ceil(n·f)` of `n` documents — at least
//! one when `f > 0`, none when `f = 0` — spread evenly through the sources.
//!
//! Tokenizer training sample: the first `ceil(sample_docs / number of sources)` documents of each
//! source (deterministic; for synthetic stories these are the first stories of its stream).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tokenizer::EOT;
use crate::{write_shard, DataError, StoryGenerator, TextTokenizer};

/// Version tag of the preparation output; part of the cache key. Bump it whenever the output of
/// [`prepare`] for the same spec changes (story generator, tokenizer settings, shard layout).
pub const PREPARE_FORMAT: &str = "kiln-data prepare v1 (stories v1, bytelevel-bpe v1)";

/// Stories generated and tokenized per parallel chunk.
const CHUNK_DOCS: usize = 256;

/// Where documents come from. More kinds (parquet, jsonl, text files) will be added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// [`StoryGenerator`] stories until `tokens` tokens (EOT separators included) are produced.
    SyntheticStories { tokens: u64, seed: u64 },
}

/// Which tokenizer to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerSpec {
    /// Train byte-level BPE on the first `sample_docs` documents. `special_tokens` get ids
    /// `0..n` in order and must include `<|endoftext|>`. `vocab_size` is an upper bound: a small
    /// or repetitive sample can run out of merges first ([`PreparedData::vocab_size`] is the
    /// size actually reached).
    TrainBpe {
        vocab_size: usize,
        sample_docs: usize,
        special_tokens: Vec<String>,
    },
    /// Use an existing `tokenizer.json` (must contain `<|endoftext|>`).
    File { path: PathBuf },
}

/// Everything that determines the prepared data (and so its cache key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub sources: Vec<SourceSpec>,
    pub tokenizer: TokenizerSpec,
    /// Fraction of documents held out for validation, in `[0, 1)`.
    pub val_fraction: f64,
    /// Tokens per shard file (the last shard of each split may be shorter).
    pub shard_tokens: usize,
}

/// The result of [`prepare`]: absolute-or-as-given paths inside the cache directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedData {
    pub dir: PathBuf,
    pub tokenizer_path: PathBuf,
    pub train_shards: Vec<PathBuf>,
    /// Empty when `val_fraction` is 0.
    pub val_shards: Vec<PathBuf>,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// Embedding rows the tokenizer needs (largest id + 1).
    pub vocab_size: usize,
    pub eot_id: u32,
}

/// `manifest.json`: written last; its presence marks a complete preparation.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    key: String,
    spec: DataSpec,
    tokenizer: String,
    train_shards: Vec<String>,
    val_shards: Vec<String>,
    train_tokens: u64,
    val_tokens: u64,
    train_docs: u64,
    val_docs: u64,
    vocab_size: usize,
    eot_id: u32,
}

impl DataSpec {
    /// Checks the settings, naming the offending field.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.sources.is_empty() {
            return Err(DataError::config(
                "sources",
                "at least one source is needed",
            ));
        }
        for (i, s) in self.sources.iter().enumerate() {
            match s {
                SourceSpec::SyntheticStories { tokens, .. } => {
                    if *tokens == 0 {
                        return Err(DataError::config(
                            &format!("sources[{i}].tokens"),
                            "must be at least 1",
                        ));
                    }
                }
            }
        }
        if !(self.val_fraction.is_finite() && (0.0..1.0).contains(&self.val_fraction)) {
            return Err(DataError::config(
                "val_fraction",
                format!("{} is not in [0, 1)", self.val_fraction),
            ));
        }
        if self.shard_tokens == 0 {
            return Err(DataError::config("shard_tokens", "must be at least 1"));
        }
        if let TokenizerSpec::TrainBpe {
            sample_docs,
            special_tokens,
            ..
        } = &self.tokenizer
        {
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
        Ok(())
    }

    /// Cache key: 16 hex digits of SHA-256(format tag, spec JSON, tokenizer file bytes).
    pub fn cache_key(&self) -> Result<String, DataError> {
        let mut h = Sha256::new();
        h.update(PREPARE_FORMAT.as_bytes());
        h.update(b"\n");
        let json = serde_json::to_vec(self).map_err(|e| DataError::Json {
            path: PathBuf::from("<data spec>"),
            source: e,
        })?;
        h.update(&json);
        if let TokenizerSpec::File { path } = &self.tokenizer {
            h.update(b"\n");
            h.update(fs::read(path).map_err(|e| DataError::io(path, e))?);
        }
        let digest = h.finalize();
        Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Prepares (or reuses) the data described by `spec` under `cache_root`. See the module docs.
///
/// `progress` receives human-readable status lines.
pub fn prepare(
    spec: &DataSpec,
    cache_root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PreparedData, DataError> {
    spec.validate()?;
    let key = spec.cache_key()?;
    let dir = cache_root.join(&key);

    if let Some(done) = load_complete(&dir, spec, &key) {
        progress(&format!(
            "data: reusing {} ({} train + {} val tokens)",
            dir.display(),
            human(done.train_tokens),
            human(done.val_tokens)
        ));
        return Ok(done);
    }
    if dir.exists() {
        progress(&format!(
            "data: {} is incomplete or stale; preparing it again",
            dir.display()
        ));
        fs::remove_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    }

    // Build in a private temporary directory, then rename into place.
    fs::create_dir_all(cache_root).map_err(|e| DataError::io(cache_root, e))?;
    let tmp = cache_root.join(format!(".{key}.partial-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let built = build(spec, &key, &tmp, progress);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }

    match fs::rename(&tmp, &dir) {
        Ok(()) => {}
        Err(e) => {
            // Another process (e.g. another rank) may have finished the same preparation first.
            let _ = fs::remove_dir_all(&tmp);
            if load_complete(&dir, spec, &key).is_none() {
                return Err(DataError::io(&dir, e));
            }
        }
    }
    load_complete(&dir, spec, &key).ok_or_else(|| {
        DataError::io(
            dir.join("manifest.json"),
            std::io::Error::other(
                "prepared data vanished or is unreadable right after being written",
            ),
        )
    })
}

/// The prepared data in `dir` if its manifest exists, matches `spec` and lists existing files.
fn load_complete(dir: &Path, spec: &DataSpec, key: &str) -> Option<PreparedData> {
    let text = fs::read_to_string(dir.join("manifest.json")).ok()?;
    let m: Manifest = serde_json::from_str(&text).ok()?;
    if m.format != PREPARE_FORMAT || m.key != key || &m.spec != spec {
        return None;
    }
    let paths = |names: &[String]| names.iter().map(|n| dir.join(n)).collect::<Vec<_>>();
    let data = PreparedData {
        dir: dir.to_path_buf(),
        tokenizer_path: dir.join(&m.tokenizer),
        train_shards: paths(&m.train_shards),
        val_shards: paths(&m.val_shards),
        train_tokens: m.train_tokens,
        val_tokens: m.val_tokens,
        vocab_size: m.vocab_size,
        eot_id: m.eot_id,
    };
    let all_there = data.tokenizer_path.is_file()
        && data
            .train_shards
            .iter()
            .chain(&data.val_shards)
            .all(|p| p.is_file());
    all_there.then_some(data)
}

/// Accumulates one split's tokens and writes full shards as they fill.
struct ShardWriter<'a> {
    dir: &'a Path,
    prefix: &'static str,
    shard_tokens: usize,
    vocab_size: usize,
    buf: Vec<u32>,
    files: Vec<String>,
    tokens: u64,
    docs: u64,
}

impl<'a> ShardWriter<'a> {
    fn new(dir: &'a Path, prefix: &'static str, shard_tokens: usize, vocab_size: usize) -> Self {
        ShardWriter {
            dir,
            prefix,
            shard_tokens,
            vocab_size,
            buf: Vec::new(),
            files: Vec::new(),
            tokens: 0,
            docs: 0,
        }
    }

    fn push_doc(&mut self, eot: u32, doc: &[u32]) -> Result<(), DataError> {
        self.buf.push(eot);
        self.buf.extend_from_slice(doc);
        self.tokens += 1 + doc.len() as u64;
        self.docs += 1;
        while self.buf.len() >= self.shard_tokens {
            self.flush(self.shard_tokens)?;
        }
        Ok(())
    }

    fn flush(&mut self, n: usize) -> Result<(), DataError> {
        let name = format!("{}_{:06}.bin", self.prefix, self.files.len());
        write_shard(&self.dir.join(&name), &self.buf[..n], self.vocab_size)?;
        self.buf.drain(..n);
        self.files.push(name);
        Ok(())
    }

    fn finish(mut self) -> Result<Self, DataError> {
        if !self.buf.is_empty() {
            self.flush(self.buf.len())?;
        }
        Ok(self)
    }
}

fn build(
    spec: &DataSpec,
    key: &str,
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), DataError> {
    let start = Instant::now();
    let tok_path = dir.join("tokenizer.json");
    let tok = match &spec.tokenizer {
        TokenizerSpec::TrainBpe {
            vocab_size,
            sample_docs,
            special_tokens,
        } => {
            let per_source = sample_docs.div_ceil(spec.sources.len());
            let mut sample = Vec::with_capacity(per_source * spec.sources.len());
            for s in &spec.sources {
                match s {
                    SourceSpec::SyntheticStories { seed, .. } => {
                        let mut g = StoryGenerator::new(*seed);
                        sample.extend((0..per_source).map(|_| g.next_story()));
                    }
                }
            }
            progress(&format!(
                "data: training a byte-level BPE tokenizer (vocab {vocab_size}) on {} documents",
                sample.len()
            ));
            let t = Instant::now();
            let tok = TextTokenizer::train_bpe(sample.iter(), *vocab_size, special_tokens)?;
            tok.save(&tok_path)?;
            progress(&format!(
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
        TokenizerSpec::File { path } => {
            // Copied byte for byte (the cache key covers these bytes).
            fs::copy(path, &tok_path).map_err(|e| DataError::io(path, e))?;
            TextTokenizer::from_file(&tok_path)?
        }
    };
    let eot = tok.eot_id()?;
    let vocab_size = tok.vocab_size();

    let f = spec.val_fraction;
    let is_val = |i: u64| ((i + 1) as f64 * f).ceil() > (i as f64 * f).ceil();
    let mut train = ShardWriter::new(dir, "train", spec.shard_tokens, vocab_size);
    let mut val = ShardWriter::new(dir, "val", spec.shard_tokens, vocab_size);
    let mut doc_index = 0u64;

    for (si, source) in spec.sources.iter().enumerate() {
        match source {
            SourceSpec::SyntheticStories {
                tokens: budget,
                seed,
            } => {
                progress(&format!(
                    "data: source {}/{}: synthetic stories (seed {seed}), {} tokens",
                    si + 1,
                    spec.sources.len(),
                    human(*budget)
                ));
                let mut g = StoryGenerator::new(*seed);
                let gen_chunk = |g: &mut StoryGenerator| {
                    (0..CHUNK_DOCS).map(|_| g.next_story()).collect::<Vec<_>>()
                };
                let mut chunk = gen_chunk(&mut g);
                let mut produced = 0u64;
                let mut next_report = *budget / 10;
                'source: loop {
                    // Generate the next chunk while this one is tokenized (both deterministic).
                    let (next, encoded) =
                        rayon::join(|| gen_chunk(&mut g), || tok.encode_batch(&chunk));
                    for ids in encoded? {
                        if produced >= *budget {
                            break 'source;
                        }
                        let w = if is_val(doc_index) {
                            &mut val
                        } else {
                            &mut train
                        };
                        w.push_doc(eot, &ids)?;
                        produced += 1 + ids.len() as u64;
                        doc_index += 1;
                    }
                    if produced >= next_report && produced < *budget {
                        progress(&format!(
                            "data:   {} / {} tokens",
                            human(produced),
                            human(*budget)
                        ));
                        next_report = produced + *budget / 10;
                    }
                    chunk = next;
                }
            }
        }
    }

    let train = train.finish()?;
    let val = val.finish()?;
    if train.docs == 0 {
        return Err(DataError::NotEnoughData {
            what: format!(
                "the training split ({doc_index} documents, all held out by val_fraction {f})"
            ),
            tokens: 0,
            needed: 1,
        });
    }
    let manifest = Manifest {
        format: PREPARE_FORMAT.to_string(),
        key: key.to_string(),
        spec: spec.clone(),
        tokenizer: "tokenizer.json".to_string(),
        train_shards: train.files,
        val_shards: val.files,
        train_tokens: train.tokens,
        val_tokens: val.tokens,
        train_docs: train.docs,
        val_docs: val.docs,
        vocab_size,
        eot_id: eot,
    };
    let path = dir.join("manifest.json");
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| DataError::Json {
        path: path.clone(),
        source: e,
    })?;
    fs::write(&path, json).map_err(|e| DataError::io(&path, e))?;
    let secs = start.elapsed().as_secs_f64();
    progress(&format!(
        "data: {} train tokens ({} docs, {} shards), {} val tokens ({} docs, {} shards), vocab {vocab_size}, in {secs:.1}s ({}/s)",
        human(manifest.train_tokens),
        manifest.train_docs,
        manifest.train_shards.len(),
        human(manifest.val_tokens),
        manifest.val_docs,
        manifest.val_shards.len(),
        human(((manifest.train_tokens + manifest.val_tokens) as f64 / secs.max(1e-9)) as u64),
    ));
    Ok(())
}

/// `1234567` → `"1.23M"`.
fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shard;

    fn spec(tokens: u64) -> DataSpec {
        DataSpec {
            sources: vec![SourceSpec::SyntheticStories { tokens, seed: 11 }],
            tokenizer: TokenizerSpec::TrainBpe {
                vocab_size: 400,
                sample_docs: 200,
                special_tokens: vec![EOT.to_string()],
            },
            val_fraction: 0.1,
            shard_tokens: 8_000,
        }
    }

    #[test]
    fn prepares_stories_reuses_and_redoes_interrupted() {
        let root = tempfile::tempdir().unwrap();
        let spec = spec(30_000);
        let mut log = Vec::new();
        let a = prepare(&spec, root.path(), &mut |l| log.push(l.to_string())).unwrap();
        assert!(!log.is_empty());
        assert_eq!(a.vocab_size, 400);
        assert_eq!(a.eot_id, 0);
        assert!(a.train_shards.len() >= 3, "{:?}", a.train_shards);
        assert!(!a.val_shards.is_empty());
        assert!(a.train_tokens + a.val_tokens >= 30_000);
        // Roughly 10% of documents, hence of tokens, are held out.
        let frac = a.val_tokens as f64 / (a.train_tokens + a.val_tokens) as f64;
        assert!((0.04..0.2).contains(&frac), "val fraction {frac}");

        // Shards decode to stories separated by <|endoftext|>.
        let tok = TextTokenizer::from_file(&a.tokenizer_path).unwrap();
        let first = Shard::open(&a.train_shards[0]).unwrap();
        assert_eq!(first.len(), 8_000);
        let ids = first.to_vec();
        assert_eq!(ids[0], 0, "the stream starts with EOT");
        let text = tok.decode(&ids).unwrap();
        let docs: Vec<&str> = text.split(EOT).filter(|d| !d.is_empty()).collect();
        assert!(docs.len() > 10);
        let mut g = StoryGenerator::new(11);
        let stories: Vec<String> = (0..300).map(|_| g.next_story()).collect();
        // Document 0 is validation; documents 1.. begin the training stream.
        assert_eq!(docs[0], stories[1]);
        assert_eq!(docs[1], stories[2]);
        let val_text = tok
            .decode(&Shard::open(&a.val_shards[0]).unwrap().to_vec())
            .unwrap();
        assert!(val_text.starts_with(&format!("{EOT}{}", stories[0])));
        let total: u64 = a
            .train_shards
            .iter()
            .map(|p| Shard::open(p).unwrap().len() as u64)
            .sum();
        assert_eq!(total, a.train_tokens);

        // Second call: reused, same paths, no rebuild.
        let t = Instant::now();
        let mut log2 = Vec::new();
        let b = prepare(&spec, root.path(), &mut |l| log2.push(l.to_string())).unwrap();
        assert_eq!(a, b);
        assert!(t.elapsed().as_secs_f64() < 0.5);
        assert!(log2.iter().any(|l| l.contains("reusing")), "{log2:?}");
        let mtime = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
        let before = mtime(&a.train_shards[0]);

        // Interrupted preparation (no manifest): redone, with identical content.
        fs::remove_file(a.dir.join("manifest.json")).unwrap();
        fs::remove_file(&a.train_shards[1]).unwrap();
        let mut log3 = Vec::new();
        let c = prepare(&spec, root.path(), &mut |l| log3.push(l.to_string())).unwrap();
        assert_eq!(a, c);
        assert!(log3.iter().any(|l| l.contains("again")), "{log3:?}");
        assert!(c.train_shards[1].exists());
        assert!(mtime(&c.train_shards[0]) >= before);
        assert_eq!(Shard::open(&c.train_shards[0]).unwrap().to_vec(), ids);

        // No temporary directories left behind; a different spec gets a different directory.
        let mut other = spec.clone();
        other.val_fraction = 0.2;
        let d = prepare(&other, root.path(), &mut |_| {}).unwrap();
        assert_ne!(d.dir, a.dir);
        let entries: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries.len(), 2, "{entries:?}");
    }

    #[test]
    fn tokenizer_file_source_and_validation() {
        let root = tempfile::tempdir().unwrap();
        let a = prepare(&spec(5_000), root.path(), &mut |_| {}).unwrap();
        let mut s = spec(5_000);
        s.tokenizer = TokenizerSpec::File {
            path: a.tokenizer_path.clone(),
        };
        s.val_fraction = 0.0;
        let b = prepare(&s, root.path(), &mut |_| {}).unwrap();
        assert!(b.val_shards.is_empty());
        assert_eq!(b.val_tokens, 0);
        assert_eq!(b.vocab_size, a.vocab_size);
        assert_eq!(
            fs::read(&b.tokenizer_path).unwrap(),
            fs::read(&a.tokenizer_path).unwrap()
        );

        let mut bad = spec(5_000);
        bad.val_fraction = 1.0;
        let err = prepare(&bad, root.path(), &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, DataError::Config { ref field, .. } if field == "val_fraction"),
            "{err}"
        );
        let mut bad = spec(5_000);
        bad.tokenizer = TokenizerSpec::TrainBpe {
            vocab_size: 400,
            sample_docs: 10,
            special_tokens: vec![],
        };
        let err = prepare(&bad, root.path(), &mut |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("tokenizer.special_tokens"),
            "{err}"
        );

        // Serde form of a spec, as a recipe would write it.
        let json = serde_json::to_value(spec(1)).unwrap();
        assert_eq!(json["sources"][0]["type"], "synthetic_stories");
        assert_eq!(json["tokenizer"]["type"], "train_bpe");
    }
}
