//! Exact and near-duplicate (MinHash LSH) document detection.
//!
//! # What counts as a duplicate
//!
//! Every document is first [`normalize`]d the way datatrove's `simplify_text`
//! (`datatrove/utils/text.py`) does before it hashes: lower case, punctuation removed, whitespace
//! collapsed to single spaces, diacritics stripped, digit runs replaced by `0`.
//!
//! - **Exact**: two documents whose normalised texts are equal (same 64-bit xxh3 hash).
//! - **Near** (MinHash LSH, Broder 1997; FineWeb's setting from datatrove's
//!   `pipeline/dedup/minhash.py`): the normalised text is split into words and cut into word
//!   `ngram`-grams (shingles, 5 by default); each shingle gets one 64-bit xxh3 base hash `x`;
//!   `bands × rows_per_band` (14 × 8 = 112) universal hash functions `h(x) = (a·x + b) mod p`
//!   with `p = 2^61 − 1` (a Mersenne prime), `a ∈ [1, p)` and `b ∈ [0, p)` drawn from a
//!   `ChaCha8Rng` seeded with `seed`, each keep their minimum over the document's shingles.
//!   Like datatrove (numpy `uint64` arithmetic), `a·x + b` wraps modulo 2^64 before the
//!   reduction modulo `p`; this costs one 64-bit multiply per hash instead of a 128-bit one and
//!   estimates Jaccard similarity just as well (tested). The 112 minima are cut into 14
//!   bands of 8; each band is reduced to one 64-bit xxh3 hash (seeded with the band's index). Two
//!   documents are near-duplicates when **any** band hash is equal, i.e. when all 8 minima of
//!   some band agree. For two documents whose shingle sets have Jaccard similarity `s` this
//!   happens with probability `1 − (1 − s^8)^14`: 0.9996 at `s = 0.9`, 0.92 at `s = 0.8`,
//!   0.64 at datatrove's threshold `s = (1/14)^(1/8) ≈ 0.72`, 0.50 at `s ≈ 0.69`, 0.05 at
//!   `s = 0.5`, under 0.001 at `s = 0.3`.
//!   Documents with fewer words than `ngram` have one shingle made of all their words (an empty
//!   document has the empty shingle), so they still get a signature.
//!
//! The permutation parameters come from our own RNG, not numpy's, so signatures are not
//! bit-compatible with datatrove's; the statistics are the same.
//!
//! # Keep-first, independent of the split
//!
//! [`Deduper::check_insert`] answers whether **any earlier** document shares the exact hash or a
//! band hash, and inserts the document either way. A document's verdict therefore depends only on
//! the set of documents before it in a fixed order, not on how the input was split into files
//! or workers: workers can [`Signer::sign`] in parallel (and save the signatures with
//! [`write_signatures`] so that an interrupted preparation can resume), and one pass over the
//! signatures in the canonical document order gives the verdicts. In each cluster of duplicates
//! the first document is kept.
//!
//! # Memory bound
//!
//! The [`Deduper`] keeps, per document, one 8-byte exact hash (when `exact` is on) and one 8-byte
//! hash per band (when MinHash is on): 120 bytes of keys with the defaults. The keys live in open
//! addressing hash tables (hashbrown: one extra control byte per slot, at most 7/8 full, capacity
//! doubling on growth), so a table holds each key in between 9 × 8/7 ≈ 10.3 and about 20.6 bytes.
//! **Bound with the defaults: at most 15 × 20.6 ≈ 309 bytes per document** (at least ~155), e.g.
//! 3.1 GB for 10 million documents. While a table grows, the old and the new table coexist for a
//! moment (up to 1.5× the bound); [`Deduper::with_capacity`] pre-sizes the tables to avoid this.
//! [`DedupConfig::max_bytes_per_document`] gives the bound for any configuration and
//! [`Deduper::memory_bytes`] the current size. Signatures themselves are not kept.
//!
//! Hash collisions: with 64-bit keys, a false match between two unrelated documents needs a
//! 2⁻⁶⁴ coincidence per pair of keys; over 10⁸ documents × 15 keys that is about a 6% chance of a
//! single wrongly dropped document in the whole run.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::DataError;

/// Which duplicates to remove. `dedup: {}` in a recipe gives exact deduplication only;
/// `dedup: {minhash: {}}` adds FineWeb's MinHash setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Remove documents whose normalised text equals an earlier one's. Default `true`.
    pub exact: bool,
    /// Near-duplicate removal with MinHash LSH. Default `None` (off).
    pub minhash: Option<MinHashConfig>,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            exact: true,
            minhash: None,
        }
    }
}

/// MinHash LSH parameters. The defaults are FineWeb's (datatrove `MinhashConfig`: `n_grams=5`,
/// `num_buckets=14`, `hashes_per_bucket=8`, `seed=1`): a pair of documents whose 5-gram Jaccard
/// similarity is 0.8 is caught with probability 0.92, at 0.69 with 1/2, at 0.5 with 0.05.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinHashConfig {
    /// Words per shingle (datatrove `n_grams`). Default 5.
    pub ngram: usize,
    /// Number of LSH bands (datatrove `num_buckets`). Default 14.
    pub bands: usize,
    /// Hashes per band (datatrove `hashes_per_bucket`). Default 8.
    pub rows_per_band: usize,
    /// Seed of the hash permutations; must be the same for all workers of one dataset. Default 1.
    pub seed: u64,
}

impl Default for MinHashConfig {
    fn default() -> Self {
        MinHashConfig {
            ngram: 5,
            bands: 14,
            rows_per_band: 8,
            seed: 1,
        }
    }
}

/// Upper limits that keep a typo (e.g. `bands: 14000`) from silently costing gigabytes.
const MAX_NGRAM: usize = 64;
const MAX_HASHES: usize = 1024;

impl DedupConfig {
    /// Checks the settings; `field_prefix` is where this config sits in the recipe
    /// (e.g. `data.sources[1].dedup`) and prefixes the field named in the error.
    pub fn validate(&self, field_prefix: &str) -> Result<(), DataError> {
        let field = |name: &str| {
            if field_prefix.is_empty() {
                format!("minhash.{name}")
            } else {
                format!("{field_prefix}.minhash.{name}")
            }
        };
        if let Some(m) = &self.minhash {
            if m.ngram == 0 || m.ngram > MAX_NGRAM {
                return Err(DataError::config(
                    &field("ngram"),
                    format!(
                        "must be between 1 and {MAX_NGRAM} words, got {} (FineWeb uses 5)",
                        m.ngram
                    ),
                ));
            }
            if m.bands == 0 {
                return Err(DataError::config(
                    &field("bands"),
                    "must be at least 1 (FineWeb uses 14)",
                ));
            }
            if m.rows_per_band == 0 {
                return Err(DataError::config(
                    &field("rows_per_band"),
                    "must be at least 1 (FineWeb uses 8)",
                ));
            }
            if m.bands.saturating_mul(m.rows_per_band) > MAX_HASHES {
                return Err(DataError::config(
                    &field("bands"),
                    format!(
                        "bands × rows_per_band = {} × {} exceeds {MAX_HASHES} hashes (FineWeb uses 14 × 8 = 112)",
                        m.bands, m.rows_per_band
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether any deduplication happens.
    pub fn is_enabled(&self) -> bool {
        self.exact || self.minhash.is_some()
    }

    /// Upper bound on the bytes a [`Deduper`] keeps per document (see the module docs):
    /// 8-byte keys (1 exact + one per band) at the worst hash-table fill. 309 with
    /// `exact` and the default MinHash, 21 with exact only.
    pub fn max_bytes_per_document(&self) -> usize {
        let keys = usize::from(self.exact) + self.minhash.as_ref().map_or(0, |m| m.bands);
        // 9 bytes per slot (key + control byte), slots at least 7/16 full just after doubling.
        (keys * 9 * 16).div_ceil(7)
    }
}

/// The non-ASCII characters of datatrove's `PUNCTUATION`, plus `‘` (which it misses).
const NON_ASCII_PUNCTUATION: &str = "—–“”„‘’´«»…►∶％〈〉、━【】「」，；《》．（）？！：～。";

/// Removes what datatrove's `PUNCTUATION` removes (all ASCII punctuation plus common CJK and
/// typographic marks), plus the left single quote it misses; control characters too.
fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation() || c.is_ascii_control();
    }
    NON_ASCII_PUNCTUATION.contains(c) || ('\u{7f}'..='\u{9f}').contains(&c)
}

/// Strips the diacritic of a lower-case Latin letter that has a canonical decomposition
/// (Latin-1 Supplement and Latin Extended-A), as NFD + dropping combining marks does.
/// Letters without a decomposition (ß, æ, ø, ł, đ) are kept, like NFD keeps them.
fn fold_diacritic(c: char) -> Option<char> {
    Some(match c {
        'à'..='å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'ď' => 'd',
        'è'..='ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => 'g',
        'ĥ' => 'h',
        'ì'..='ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' => 'i',
        'ĵ' => 'j',
        'ķ' => 'k',
        'ĺ' | 'ļ' | 'ľ' => 'l',
        'ñ' | 'ń' | 'ņ' | 'ň' => 'n',
        'ò'..='ö' | 'ō' | 'ŏ' | 'ő' => 'o',
        'ŕ' | 'ŗ' | 'ř' => 'r',
        'ś' | 'ŝ' | 'ş' | 'š' => 's',
        'ţ' | 'ť' => 't',
        'ù'..='ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => 'u',
        'ŵ' => 'w',
        'ý' | 'ÿ' | 'ŷ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        _ => return None,
    })
}

/// The text that exact hashes and shingles are computed from, as datatrove's `simplify_text`
/// with its default `TextNormConfig`: lower case; punctuation (see above) and control characters
/// removed, without splitting the word they sit in (`don't` → `dont`); runs of whitespace
/// collapsed to one space, none at the ends; diacritics stripped from Latin letters
/// (`café` → `cafe`; combining marks U+0300–U+036F dropped); every run of digits replaced by
/// `0` (`1,250.5` → `0`).
///
/// ```
/// assert_eq!(kiln_data::dedup::normalize("  Hello,\tWORLD!  Café costs 3.50 € "), "hello world cafe costs 0 €");
/// ```
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    let mut in_number = false;
    let push = |out: &mut String, pending_space: &mut bool, c: char| {
        if *pending_space {
            if !out.is_empty() {
                out.push(' ');
            }
            *pending_space = false;
        }
        out.push(c);
    };
    for c in text.chars() {
        if c.is_ascii() {
            let b = c as u8;
            if b.is_ascii_lowercase() {
                in_number = false;
                push(&mut out, &mut pending_space, c);
            } else if b.is_ascii_uppercase() {
                in_number = false;
                push(&mut out, &mut pending_space, c.to_ascii_lowercase());
            } else if b.is_ascii_digit() {
                if !in_number {
                    push(&mut out, &mut pending_space, '0');
                    in_number = true;
                }
            } else if b.is_ascii_whitespace() || b == 0x0b {
                pending_space = true;
                in_number = false;
            }
            // ASCII punctuation and control characters: removed, the word goes on.
            continue;
        }
        if c.is_whitespace() {
            pending_space = true;
            in_number = false;
        } else if is_punctuation(c) || ('\u{300}'..='\u{36f}').contains(&c) {
            // removed
        } else if c.is_numeric() {
            if !in_number {
                push(&mut out, &mut pending_space, '0');
                in_number = true;
            }
        } else {
            in_number = false;
            for l in c.to_lowercase() {
                if ('\u{300}'..='\u{36f}').contains(&l) {
                    continue;
                }
                push(&mut out, &mut pending_space, fold_diacritic(l).unwrap_or(l));
            }
        }
    }
    out
}

/// What [`Signer::sign`] computes for one document: the exact hash of its normalised text and
/// one hash per LSH band (empty when MinHash is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub exact: u64,
    pub bands: Vec<u64>,
}

/// The Mersenne prime 2^61 − 1 of the universal hash functions.
const MERSENNE_61: u64 = (1 << 61) - 1;

/// One MinHash permutation, computed as datatrove computes it with numpy `uint64` arrays:
/// `(x · a + b) mod 2^64` (the product wraps), then `mod (2^61 − 1)`. The final reduction uses
/// 2^61 ≡ 1 (mod p) instead of a division.
#[inline(always)]
fn permute(a: u64, x: u64, b: u64) -> u64 {
    let v = x.wrapping_mul(a).wrapping_add(b);
    let r = (v & MERSENNE_61) + (v >> 61); // ≡ v (mod p), < p + 8
    r.min(r.wrapping_sub(MERSENNE_61)) // r − p when r ≥ p
}

#[derive(Debug, Clone)]
struct MinHasher {
    ngram: usize,
    bands: usize,
    rows: usize,
    a: Vec<u64>,
    b: Vec<u64>,
}

/// Computes [`Signature`]s; immutable, `Send + Sync`, shared by all threads of a run.
#[derive(Debug, Clone)]
pub struct Signer {
    minhash: Option<MinHasher>,
}

impl Signer {
    /// A signer for `config` (which should have passed [`DedupConfig::validate`]).
    pub fn new(config: &DedupConfig) -> Self {
        let minhash = config.minhash.as_ref().map(|m| {
            let n = m.bands * m.rows_per_band;
            let mut rng = ChaCha8Rng::seed_from_u64(m.seed);
            let mut a = Vec::with_capacity(n);
            let mut b = Vec::with_capacity(n);
            for _ in 0..n {
                a.push(rng.random_range(1..MERSENNE_61));
                b.push(rng.random_range(0..MERSENNE_61));
            }
            MinHasher {
                ngram: m.ngram.max(1),
                bands: m.bands,
                rows: m.rows_per_band,
                a,
                b,
            }
        });
        Signer { minhash }
    }

    /// The signature of one document.
    pub fn sign(&self, text: &str) -> Signature {
        let norm = normalize(text);
        let exact = xxh3_64(norm.as_bytes());
        let bands = match &self.minhash {
            Some(m) => m.bands(&norm),
            None => Vec::new(),
        };
        Signature { exact, bands }
    }
}

impl MinHasher {
    /// The `bands × rows` minima of the permutations over the shingles of `norm`.
    fn minima(&self, norm: &str) -> Vec<u64> {
        // Base hashes of the shingles (word n-grams; `norm` has single spaces between words).
        let bytes = norm.as_bytes();
        let mut starts: Vec<usize> = Vec::with_capacity(bytes.len() / 5 + 1);
        if !bytes.is_empty() {
            starts.push(0);
            starts.extend(memchr_spaces(bytes).map(|i| i + 1));
        }
        let words = starts.len();
        let mut xs: Vec<u64> = Vec::with_capacity(words);
        let base = |shingle: &[u8]| xxh3_64(shingle);
        if words < self.ngram {
            xs.push(base(bytes));
        } else {
            for i in 0..=words - self.ngram {
                let end = if i + self.ngram < words {
                    starts[i + self.ngram] - 1
                } else {
                    bytes.len()
                };
                xs.push(base(&bytes[starts[i]..end]));
            }
        }
        // Repeated shingles cannot change a minimum.
        xs.sort_unstable();
        xs.dedup();
        // One minimum per hash function.
        self.a
            .iter()
            .zip(&self.b)
            .map(|(&a, &b)| {
                xs.iter()
                    .map(|&x| permute(a, x, b))
                    .min()
                    .unwrap_or(u64::MAX)
            })
            .collect()
    }

    fn bands(&self, norm: &str) -> Vec<u64> {
        let mins = self.minima(norm);
        let mut buf = Vec::with_capacity(self.rows * 8);
        (0..self.bands)
            .map(|band| {
                buf.clear();
                for v in &mins[band * self.rows..(band + 1) * self.rows] {
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                xxh3_64_with_seed(&buf, band as u64)
            })
            .collect()
    }
}

fn memchr_spaces(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter_map(|(i, &b)| (b == b' ').then_some(i))
}

/// Whether a document repeats an earlier one exactly (after [`normalize`]) or nearly (shares
/// a MinHash band).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicate {
    Exact,
    Near,
}

/// Hasher for keys that are already uniform 64-bit hashes: passes them through.
#[derive(Default, Clone, Copy)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; keep a correct fallback anyway.
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeySet = HashSet<u64, BuildHasherDefault<IdentityHasher>>;

/// The set of documents seen so far (their hashes only). See the module docs for the memory
/// bound and the keep-first semantics.
#[derive(Debug, Clone)]
pub struct Deduper {
    exact: Option<KeySet>,
    bands: Option<KeySet>,
    docs: usize,
}

impl Deduper {
    /// An empty deduper for `config` (give it signatures from a [`Signer`] of the same config).
    pub fn new(config: &DedupConfig) -> Self {
        Self::with_capacity(config, 0)
    }

    /// An empty deduper with room for `docs` documents without growing (avoids the transient
    /// 1.5× peak of a table resize when the document count is known).
    pub fn with_capacity(config: &DedupConfig, docs: usize) -> Self {
        let set = |n: usize| KeySet::with_capacity_and_hasher(n, Default::default());
        Deduper {
            exact: config.exact.then(|| set(docs)),
            bands: config
                .minhash
                .as_ref()
                .map(|m| set(docs.saturating_mul(m.bands))),
            docs: 0,
        }
    }

    /// `Some(kind)` if any earlier inserted document shares the exact hash (when exact
    /// deduplication is on; reported as [`Duplicate::Exact`]) or any band hash (when MinHash is
    /// on; [`Duplicate::Near`]). The document is inserted either way, so the verdict for a
    /// document depends only on the set of documents before it (keep-first per cluster,
    /// independent of how the input is split into files or workers).
    pub fn check_insert(&mut self, sig: &Signature) -> Option<Duplicate> {
        self.docs += 1;
        let mut verdict = None;
        if let Some(exact) = &mut self.exact {
            if !exact.insert(sig.exact) {
                verdict = Some(Duplicate::Exact);
            }
        }
        if let Some(bands) = &mut self.bands {
            debug_assert!(
                !sig.bands.is_empty(),
                "signature without bands given to a MinHash deduper"
            );
            let mut shared = false;
            for &h in &sig.bands {
                shared |= !bands.insert(h);
            }
            if shared && verdict.is_none() {
                verdict = Some(Duplicate::Near);
            }
        }
        verdict
    }

    /// Documents inserted so far (duplicates included).
    pub fn len(&self) -> usize {
        self.docs
    }

    /// Whether no document was inserted.
    pub fn is_empty(&self) -> bool {
        self.docs == 0
    }

    /// Estimated heap bytes of the hash tables now: per allocated slot one 8-byte key and one
    /// control byte (hashbrown's layout). Grows by doubling; see the module docs for the bound
    /// per document.
    pub fn memory_bytes(&self) -> usize {
        let table = |s: &Option<KeySet>| {
            s.as_ref().map_or(0, |s| {
                let cap = s.capacity();
                if cap == 0 {
                    0
                } else {
                    // capacity() is 7/8 of the (power of two) slot count for large tables.
                    let slots = (cap * 8 / 7).next_power_of_two();
                    slots * 9
                }
            })
        };
        std::mem::size_of::<Self>() + table(&self.exact) + table(&self.bands)
    }
}

/// Verdicts for signatures in order: one pass of a fresh [`Deduper`].
pub fn dedup_verdicts(config: &DedupConfig, sigs: &[Signature]) -> Vec<Option<Duplicate>> {
    let mut d = Deduper::with_capacity(config, sigs.len());
    sigs.iter().map(|s| d.check_insert(s)).collect()
}

/// First 8 bytes of a signature file.
pub const SIGNATURE_MAGIC: [u8; 8] = *b"KILNSIGS";
/// Version of the signature file layout.
pub const SIGNATURE_VERSION: u32 = 1;
const SIG_HEADER_BYTES: usize = 8 + 4 + 4 + 8;

/// Writes signatures to a binary file, all little-endian: magic `KILNSIGS`, `u32` version (1),
/// `u32` band count, `u64` signature count, then per signature the `u64` exact hash and its
/// `u64` band hashes. All signatures must have the same band count. The file is written under
/// a temporary name and renamed, so an interrupted write leaves no file at `path`.
pub fn write_signatures(path: &Path, sigs: &[Signature]) -> Result<(), DataError> {
    let bands = sigs.first().map_or(0, |s| s.bands.len());
    if let Some(bad) = sigs.iter().position(|s| s.bands.len() != bands) {
        return Err(DataError::bad_input(
            path,
            format!(
                "signature {bad} has {} bands, the first has {bands}; one file holds one configuration",
                sigs[bad].bands.len()
            ),
        ));
    }
    let pending = crate::shard::PendingFile::for_path(path);
    let tmp = pending.path();
    let write = || -> std::io::Result<()> {
        let mut w = BufWriter::new(std::fs::File::create(tmp)?);
        w.write_all(&SIGNATURE_MAGIC)?;
        w.write_all(&SIGNATURE_VERSION.to_le_bytes())?;
        w.write_all(&(bands as u32).to_le_bytes())?;
        w.write_all(&(sigs.len() as u64).to_le_bytes())?;
        for s in sigs {
            w.write_all(&s.exact.to_le_bytes())?;
            for b in &s.bands {
                w.write_all(&b.to_le_bytes())?;
            }
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    write().map_err(|e| DataError::io(tmp, e))?;
    pending.commit(path)
}

/// Reads a file written by [`write_signatures`]. A file of another kind, another version, or of
/// the wrong length (truncated) is a [`DataError::BadInput`] naming `path`.
pub fn read_signatures(path: &Path) -> Result<Vec<Signature>, DataError> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| DataError::io(path, e))?;
    if data.len() < SIG_HEADER_BYTES || data[..8] != SIGNATURE_MAGIC {
        return Err(DataError::bad_input(
            path,
            format!(
                "not a kiln signature file (expected it to start with {:?}, {} bytes in all)",
                String::from_utf8_lossy(&SIGNATURE_MAGIC),
                data.len()
            ),
        ));
    }
    let u32_at = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
    let version = u32_at(8);
    if version != SIGNATURE_VERSION {
        return Err(DataError::bad_input(
            path,
            format!("signature file version {version}, this build reads {SIGNATURE_VERSION}"),
        ));
    }
    let bands = u32_at(12) as usize;
    let count = u64_at(16);
    let record = 8 * (1 + bands as u64);
    let expected = count
        .checked_mul(record)
        .and_then(|b| b.checked_add(SIG_HEADER_BYTES as u64));
    if expected != Some(data.len() as u64) {
        return Err(DataError::bad_input(
            path,
            format!(
                "signature file is truncated or corrupt: the header announces {count} signatures of {bands} bands ({} bytes), the file has {} bytes",
                expected.map_or_else(|| "overflowing".to_string(), |e| e.to_string()),
                data.len()
            ),
        ));
    }
    let mut sigs = Vec::with_capacity(count as usize);
    let mut at = SIG_HEADER_BYTES;
    for _ in 0..count {
        let exact = u64_at(at);
        at += 8;
        let mut b = Vec::with_capacity(bands);
        for _ in 0..bands {
            b.push(u64_at(at));
            at += 8;
        }
        sigs.push(Signature { exact, bands: b });
    }
    Ok(sigs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minhash_config() -> DedupConfig {
        DedupConfig {
            exact: true,
            minhash: Some(MinHashConfig::default()),
        }
    }

    /// `n` random lower-case words of 3–8 letters.
    fn random_words(rng: &mut ChaCha8Rng, n: usize) -> Vec<String> {
        (0..n).map(|_| letters(rng)).collect()
    }

    fn letters(rng: &mut ChaCha8Rng) -> String {
        let len = rng.random_range(3..9);
        (0..len)
            .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
            .collect()
    }

    #[test]
    fn normalize_matches_simplify_text() {
        assert_eq!(normalize(""), "");
        assert_eq!(normalize("  \n\t "), "");
        assert_eq!(normalize("Hello,   World!"), "hello world");
        assert_eq!(normalize("don't stop-me now..."), "dont stopme now");
        assert_eq!(normalize("Über café NAÏVE"), "uber cafe naive");
        assert_eq!(normalize("In 2023, 1,250.5 people"), "in 0 0 people");
        assert_eq!(normalize("a — b “c” «d»"), "a b c d");
        assert_eq!(normalize("e\u{301}te\u{301}"), "ete");
        assert_eq!(normalize("Straße ØRE"), "straße øre");
    }

    #[test]
    fn identical_docs_are_exact_duplicates() {
        let signer = Signer::new(&minhash_config());
        let mut d = Deduper::new(&minhash_config());
        let text = "The quick brown fox jumps over the lazy dog. It was a sunny day.";
        assert_eq!(d.check_insert(&signer.sign(text)), None);
        assert_eq!(d.check_insert(&signer.sign(text)), Some(Duplicate::Exact));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn case_punctuation_and_whitespace_differences_are_exact() {
        let signer = Signer::new(&DedupConfig::default());
        let mut d = Deduper::new(&DedupConfig::default());
        let a = "The quick brown fox jumps over the lazy dog. It was a sunny day.";
        let b = "the QUICK brown fox -- jumps over the lazy dog\n\nit was a sunny day!!!";
        assert_eq!(d.check_insert(&signer.sign(a)), None);
        assert_eq!(d.check_insert(&signer.sign(b)), Some(Duplicate::Exact));
        // One real word changed: not exact, and exact-only dedup has no near check.
        let c = "The quick brown fox jumps over the lazy cat. It was a sunny day.";
        assert_eq!(d.check_insert(&signer.sign(c)), None);
    }

    #[test]
    fn two_changed_words_in_300_are_near_duplicates() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let config = minhash_config();
        let signer = Signer::new(&config);
        for trial in 0..20 {
            let words = random_words(&mut rng, 300);
            let mut changed = words.clone();
            for _ in 0..2 {
                let i = rng.random_range(0..300);
                changed[i] = format!("{}x", changed[i]);
            }
            let mut d = Deduper::new(&config);
            assert_eq!(d.check_insert(&signer.sign(&words.join(" "))), None);
            assert_eq!(
                d.check_insert(&signer.sign(&changed.join(" "))),
                Some(Duplicate::Near),
                "trial {trial}"
            );
        }
    }

    #[test]
    fn unrelated_docs_are_not_duplicates() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let config = minhash_config();
        let signer = Signer::new(&config);
        let mut d = Deduper::new(&config);
        for _ in 0..500 {
            let n = rng.random_range(1..400);
            let text = random_words(&mut rng, n).join(" ");
            assert_eq!(d.check_insert(&signer.sign(&text)), None);
        }
        assert_eq!(d.len(), 500);
    }

    /// Two documents whose 5-gram sets have Jaccard similarity near `target`: a shared run of
    /// words plus private runs on each side (a run of m words has m − 4 shingles).
    fn pair_with_jaccard(rng: &mut ChaCha8Rng, target: f64) -> (String, String) {
        let shared = 400usize;
        // J = S / (S + 2P) with S, P counted in shingles; runs are joined, adding a few
        // boundary shingles on each side.
        let private = ((shared as f64) * (1.0 - target) / (2.0 * target)).round() as usize;
        let common = random_words(rng, shared);
        let mut a = common.clone();
        let mut b = common;
        a.extend(random_words(rng, private));
        b.extend(random_words(rng, private));
        (a.join(" "), b.join(" "))
    }

    fn shingle_jaccard(a: &str, b: &str, n: usize) -> f64 {
        let set = |t: &str| {
            let norm = normalize(t);
            let w: Vec<&str> = norm.split(' ').collect();
            w.windows(n)
                .map(|g| g.join(" "))
                .collect::<std::collections::HashSet<_>>()
        };
        let (sa, sb) = (set(a), set(b));
        sa.intersection(&sb).count() as f64 / sa.union(&sb).count() as f64
    }

    #[test]
    fn lsh_catch_rates_follow_the_s_curve() {
        let config = minhash_config();
        let signer = Signer::new(&config);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut caught = |target: f64| {
            let mut n = 0;
            for _ in 0..200 {
                let (a, b) = pair_with_jaccard(&mut rng, target);
                let j = shingle_jaccard(&a, &b, 5);
                assert!((j - target).abs() < 0.03, "built J={j}, wanted {target}");
                let mut d = Deduper::new(&config);
                d.check_insert(&signer.sign(&a));
                if d.check_insert(&signer.sign(&b)) == Some(Duplicate::Near) {
                    n += 1;
                }
            }
            n
        };
        // P(caught) = 1 − (1 − s^8)^14: 0.9996 at s = 0.9, 0.0009 at s = 0.3.
        let high = caught(0.9);
        let low = caught(0.3);
        assert!(high >= 197, "caught {high}/200 pairs at J≈0.9");
        assert!(low <= 1, "caught {low}/200 pairs at J≈0.3");
    }

    #[test]
    fn minima_estimate_jaccard_similarity() {
        // The fraction of equal minima is an unbiased estimate of the shingle Jaccard
        // similarity (the min-wise property the LSH curve rests on).
        let config = minhash_config();
        let signer = Signer::new(&config);
        let m = signer.minhash.as_ref().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for target in [0.2, 0.5, 0.8] {
            let (mut sum, pairs) = (0.0, 100);
            for _ in 0..pairs {
                let (a, b) = pair_with_jaccard(&mut rng, target);
                let j = shingle_jaccard(&a, &b, 5);
                let (ma, mb) = (m.minima(&normalize(&a)), m.minima(&normalize(&b)));
                let equal = ma.iter().zip(&mb).filter(|(x, y)| x == y).count();
                sum += equal as f64 / ma.len() as f64 - j;
            }
            // Per pair the estimate has standard deviation sqrt(J(1−J)/112) ≤ 0.047; the mean
            // over 100 pairs ≤ 0.005.
            let bias = sum / pairs as f64;
            assert!(bias.abs() < 0.02, "J≈{target}: mean estimate error {bias}");
        }
    }

    #[test]
    fn signing_speed() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let docs: Vec<String> = (0..2000)
            .map(|_| random_words(&mut rng, 400).join(" "))
            .collect();
        let bytes: usize = docs.iter().map(String::len).sum();
        let signer = Signer::new(&minhash_config());
        let start = std::time::Instant::now();
        let sigs: Vec<Signature> = docs.iter().map(|d| signer.sign(d)).collect();
        let secs = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let verdicts = dedup_verdicts(&minhash_config(), &sigs);
        let insert = start.elapsed().as_secs_f64();
        assert!(verdicts.iter().all(Option::is_none));
        println!(
            "MinHash signing: {:.1} MB/s per core ({:.0} µs per 400-word document); insert {:.2} µs",
            bytes as f64 / 1e6 / secs,
            secs * 1e6 / docs.len() as f64,
            insert * 1e6 / docs.len() as f64
        );
    }

    #[test]
    fn short_and_empty_documents_get_signatures() {
        let config = minhash_config();
        let signer = Signer::new(&config);
        let empty = signer.sign("");
        assert_eq!(empty.bands.len(), 14);
        assert_eq!(signer.sign(" ... !! "), empty);
        let short = signer.sign("two words");
        assert_eq!(short.bands.len(), 14);
        let mut d = Deduper::new(&config);
        assert_eq!(d.check_insert(&empty), None);
        assert_eq!(d.check_insert(&short), None);
        assert_eq!(
            d.check_insert(&signer.sign("Two words.")),
            Some(Duplicate::Exact)
        );
        assert_eq!(d.check_insert(&signer.sign("two other words")), None);
    }

    #[test]
    fn near_only_config_reports_near_for_identical_docs() {
        let config = DedupConfig {
            exact: false,
            minhash: Some(MinHashConfig::default()),
        };
        let signer = Signer::new(&config);
        let mut d = Deduper::new(&config);
        let text = "one two three four five six seven eight nine ten";
        assert_eq!(d.check_insert(&signer.sign(text)), None);
        assert_eq!(d.check_insert(&signer.sign(text)), Some(Duplicate::Near));
    }

    #[test]
    fn verdicts_do_not_depend_on_how_signing_is_split() {
        use rayon::prelude::*;
        let config = minhash_config();
        let signer = Signer::new(&config);
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        // Unique docs plus exact and near copies of earlier ones, shuffled in.
        let mut docs: Vec<String> = Vec::new();
        for i in 0..400 {
            match (i % 10, docs.is_empty()) {
                (3, false) => docs.push(docs[rng.random_range(0..docs.len())].to_uppercase()),
                (7, false) => {
                    let src = docs[rng.random_range(0..docs.len())].clone();
                    docs.push(src + " appendix");
                }
                _ => {
                    let n = rng.random_range(50..300);
                    docs.push(random_words(&mut rng, n).join(" "));
                }
            }
        }
        let one_pass: Vec<Signature> = docs.iter().map(|d| signer.sign(d)).collect();
        let expected = dedup_verdicts(&config, &one_pass);
        assert!(expected.contains(&Some(Duplicate::Exact)));
        assert!(expected.contains(&Some(Duplicate::Near)));

        // Two workers sign their halves in parallel and save them; the merge step reads them
        // back in file order.
        let dir = tempfile::tempdir().unwrap();
        let halves = [&docs[..173], &docs[173..]];
        halves.par_iter().enumerate().for_each(|(i, half)| {
            let sigs: Vec<Signature> = half.par_iter().map(|d| signer.sign(d)).collect();
            write_signatures(&dir.path().join(format!("{i}.sig")), &sigs).unwrap();
        });
        let mut merged = read_signatures(&dir.path().join("0.sig")).unwrap();
        merged.extend(read_signatures(&dir.path().join("1.sig")).unwrap());
        assert_eq!(merged, one_pass);
        assert_eq!(dedup_verdicts(&config, &merged), expected);

        // Keep-first: every document marked duplicate has an earlier kept twin, and removing the
        // flagged documents and deduplicating again flags nothing.
        let kept: Vec<Signature> = one_pass
            .iter()
            .zip(&expected)
            .filter(|(_, v)| v.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        assert!(dedup_verdicts(&config, &kept).iter().all(Option::is_none));
    }

    #[test]
    fn signature_file_round_trip_and_errors() {
        let config = minhash_config();
        let signer = Signer::new(&config);
        let sigs: Vec<Signature> = ["a b c", "", "the cat sat on the mat today"]
            .iter()
            .map(|t| signer.sign(t))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sigs.bin");
        write_signatures(&path, &sigs).unwrap();
        assert_eq!(read_signatures(&path).unwrap(), sigs);
        assert!(!dir.path().join("sigs.bin.tmp").exists());

        let empty = dir.path().join("empty.bin");
        write_signatures(&empty, &[]).unwrap();
        assert_eq!(read_signatures(&empty).unwrap(), vec![]);

        let exact_only: Vec<Signature> = ["x", "y"]
            .iter()
            .map(|t| Signer::new(&DedupConfig::default()).sign(t))
            .collect();
        let p = dir.path().join("exact.bin");
        write_signatures(&p, &exact_only).unwrap();
        assert_eq!(read_signatures(&p).unwrap(), exact_only);

        // Truncated.
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.bin");
        std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
        let err = read_signatures(&cut).unwrap_err().to_string();
        assert!(
            err.contains("cut.bin") && err.contains("truncated"),
            "{err}"
        );
        // Foreign.
        let foreign = dir.path().join("foreign.bin");
        std::fs::write(&foreign, b"{\"text\": \"not signatures at all\"}").unwrap();
        let err = read_signatures(&foreign).unwrap_err().to_string();
        assert!(
            err.contains("foreign.bin") && err.contains("not a kiln signature file"),
            "{err}"
        );
        // Missing.
        let err = read_signatures(&dir.path().join("missing.bin"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.bin"), "{err}");
        // Mixed band counts are refused.
        let mixed = vec![sigs[0].clone(), exact_only[0].clone()];
        assert!(write_signatures(&dir.path().join("mixed.bin"), &mixed).is_err());
    }

    #[test]
    fn config_defaults_validation_and_memory() {
        let c: DedupConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, DedupConfig::default());
        assert!(c.exact && c.minhash.is_none() && c.is_enabled());
        let m: DedupConfig = serde_json::from_str(r#"{"minhash": {}}"#).unwrap();
        assert_eq!(m.minhash, Some(MinHashConfig::default()));
        assert!(serde_json::from_str::<DedupConfig>(r#"{"exakt": true}"#).is_err());
        assert!(!DedupConfig {
            exact: false,
            minhash: None
        }
        .is_enabled());
        m.validate("data.sources[0].dedup").unwrap();
        let bad = DedupConfig {
            exact: true,
            minhash: Some(MinHashConfig {
                ngram: 0,
                ..Default::default()
            }),
        };
        let err = bad
            .validate("data.sources[0].dedup")
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.sources[0].dedup.minhash.ngram"), "{err}");
        let bad = DedupConfig {
            exact: true,
            minhash: Some(MinHashConfig {
                bands: 1000,
                ..Default::default()
            }),
        };
        assert!(bad
            .validate("")
            .unwrap_err()
            .to_string()
            .contains("minhash.bands"));

        assert_eq!(m.max_bytes_per_document(), 309);
        // Measured size stays within the documented bound.
        let signer = Signer::new(&m);
        let mut d = Deduper::new(&m);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            d.check_insert(&signer.sign(&format!("document {}", letters(&mut rng))));
        }
        let per_doc = d.memory_bytes() as f64 / d.len() as f64;
        assert!((100.0..=310.0).contains(&per_doc), "{per_doc} bytes/doc");
    }
}
