//! A byte-level BPE tokenizer (GPT-2 style) built on Hugging Face `tokenizers`.
//!
//! The pipeline is the one GPT-2 uses: a `ByteLevel` pre-tokenizer (the GPT-2 split regex, bytes
//! mapped to printable characters, no prefix space), a BPE model, and a `ByteLevel` decoder. Every
//! byte is in the initial alphabet, so any UTF-8 text encodes without unknown tokens and decodes
//! back to itself. The saved `tokenizer.json` is the standard format, loadable from Python with
//! `tokenizers.Tokenizer.from_file` or `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

use rayon::prelude::*;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use crate::DataError;

/// The document separator; kiln puts it *before* every document (llm.c's convention).
pub const EOT: &str = "<|endoftext|>";

/// A trained or loaded tokenizer. Cheap to share across threads (`&TextTokenizer` is `Sync`).
///
/// Encoding has a fast path, used when the tokenizer is GPT-2-style byte-level BPE (no
/// normalizer, `ByteLevel` pre-tokenizer with its regex and no prefix space, no BPE dropout,
/// truncation or padding) and the text is ASCII without added tokens: the text is split by a
/// hand-written equivalent of GPT-2's regex and each piece's ids come from a cache filled by the
/// `tokenizers` pipeline itself. The ids are identical to the plain pipeline's (tested); it is
/// several times faster on repetitive text such as stories. Anything else takes the plain path.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    fast: Option<Arc<FastPath>>,
}

/// Piece → ids cache of the fast encoding path, plus the added tokens that disable it.
struct FastPath {
    cache: RwLock<HashMap<String, Box<[u32]>>>,
    added: Vec<String>,
}

/// The cache stops growing at this many pieces (bounded memory on large vocabularies of words).
const MAX_CACHED_PIECES: usize = 1 << 18;

impl TextTokenizer {
    /// Trains byte-level BPE on `texts`.
    ///
    /// `vocab_size` counts everything: the special tokens (ids `0..special_tokens.len()`, in the
    /// given order, so `<|endoftext|>` first gets id 0), the 256 byte symbols, then merges. It
    /// must leave room for at least one merge. It is an upper bound: when every word of the
    /// sample is already a single token, training stops early (check [`vocab_size`](Self::vocab_size)).
    pub fn train_bpe<I, S>(
        texts: I,
        vocab_size: usize,
        special_tokens: &[String],
    ) -> Result<Self, DataError>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send,
        S: AsRef<str> + Send,
    {
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let min = special_tokens.len() + alphabet.len() + 1;
        if vocab_size < min {
            return Err(DataError::config(
                "tokenizer.vocab_size",
                format!(
                    "{vocab_size} is too small: {} special tokens + {} byte symbols + at least one merge need {min}",
                    special_tokens.len(),
                    alphabet.len()
                ),
            ));
        }
        let specials: Vec<AddedToken> = special_tokens
            .iter()
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(0)
            .special_tokens(specials)
            .initial_alphabet(alphabet)
            .show_progress(false)
            .build()
            .into();

        let mut inner = Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        inner
            .train(&mut trainer, texts.into_iter())
            .map_err(|e| DataError::tokenizer("training BPE", e))?;
        Ok(Self::wrap(inner))
    }

    fn wrap(inner: Tokenizer) -> Self {
        let gpt2_like = inner.get_normalizer().is_none()
            && matches!(inner.get_pre_tokenizer(),
                Some(PreTokenizerWrapper::ByteLevel(b)) if !b.add_prefix_space && b.use_regex)
            && matches!(inner.get_model(), ModelWrapper::BPE(m) if m.dropout.is_none())
            && inner.get_truncation().is_none()
            && inner.get_padding().is_none();
        let fast = gpt2_like.then(|| {
            Arc::new(FastPath {
                cache: RwLock::new(HashMap::new()),
                added: inner
                    .get_added_tokens_decoder()
                    .into_values()
                    .map(|t| t.content)
                    .filter(|c| !c.is_empty())
                    .collect(),
            })
        });
        TextTokenizer { inner, fast }
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(DataError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer file not found"),
            ));
        }
        let inner = Tokenizer::from_file(path)
            .map_err(|e| DataError::tokenizer(format!("loading {}", path.display()), e))?;
        Ok(Self::wrap(inner))
    }

    /// Writes a standard `tokenizer.json` (pretty-printed).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), DataError> {
        let path = path.as_ref();
        self.inner
            .save(path, true)
            .map_err(|e| DataError::tokenizer(format!("saving {}", path.display()), e))
    }

    /// Token ids of `text`, without any special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        match &self.fast {
            Some(fast)
                if text.is_ascii() && !fast.added.iter().any(|a| text.contains(a.as_str())) =>
            {
                self.encode_pieces(fast, text)
            }
            _ => self.encode_plain(text),
        }
    }

    /// The `tokenizers` pipeline, unabridged.
    fn encode_plain(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| DataError::tokenizer("encoding", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Fast path: GPT-2 pieces, each piece's ids cached. Each piece is one pre-token of the
    /// plain pipeline, and BPE encodes pre-tokens independently, so the result is the same.
    fn encode_pieces(&self, fast: &FastPath, text: &str) -> Result<Vec<u32>, DataError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        {
            let cache = fast.cache.read().unwrap_or_else(|e| e.into_inner());
            let all_cached = Gpt2Pieces::new(text).all(|p| match cache.get(p) {
                Some(ids) => {
                    out.extend_from_slice(ids);
                    true
                }
                None => false,
            });
            if all_cached {
                return Ok(out);
            }
        }
        // Some pieces are new: encode them with the plain pipeline, cache them, assemble.
        let mut fresh: HashMap<&str, Vec<u32>> = HashMap::new();
        {
            let cache = fast.cache.read().unwrap_or_else(|e| e.into_inner());
            for p in Gpt2Pieces::new(text) {
                if !cache.contains_key(p) && !fresh.contains_key(p) {
                    fresh.insert(p, Vec::new());
                }
            }
        }
        for (piece, ids) in fresh.iter_mut() {
            *ids = self.encode_plain(piece)?;
        }
        out.clear();
        let mut cache = fast.cache.write().unwrap_or_else(|e| e.into_inner());
        for (piece, ids) in &fresh {
            if cache.len() < MAX_CACHED_PIECES {
                cache.insert(piece.to_string(), ids.clone().into_boxed_slice());
            }
        }
        for p in Gpt2Pieces::new(text) {
            match fresh.get(p) {
                Some(ids) => out.extend_from_slice(ids),
                None => out.extend_from_slice(&cache[p]),
            }
        }
        Ok(out)
    }

    /// [`encode`](Self::encode) for many texts in parallel (rayon); output order = input order.
    pub fn encode_batch(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, DataError> {
        texts.par_iter().map(|t| self.encode(t)).collect()
    }

    /// Text of `ids`. Special tokens are kept (`<|endoftext|>` appears literally), so decoding a
    /// shard shows its document boundaries.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| DataError::tokenizer("decoding", e))
    }

    /// Id of `<|endoftext|>`.
    pub fn eot_id(&self) -> Result<u32, DataError> {
        self.token_id(EOT).ok_or_else(|| DataError::MissingToken {
            token: EOT.to_string(),
        })
    }

    /// Id of a token string (special or not), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Size of the embedding table this tokenizer needs: one more than the largest id,
    /// added tokens included.
    pub fn vocab_size(&self) -> usize {
        let max_id = self.inner.get_vocab(true).values().copied().max();
        let by_id = max_id.map_or(0, |m| m as usize + 1);
        by_id.max(self.inner.get_vocab_size(true))
    }

    /// The wrapped `tokenizers::Tokenizer`, for anything not covered here.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// Splits ASCII text exactly as GPT-2's pre-tokenizer regex does:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// (alternatives tried in order at each position; `\s` is Unicode White_Space, which in ASCII is
/// `\t \n \x0B \x0C \r` and space). Only valid for ASCII input.
struct Gpt2Pieces<'a> {
    text: &'a str,
    pos: usize,
}

#[derive(PartialEq, Clone, Copy)]
enum Class {
    Letter,
    Digit,
    Space,
    Other,
}

fn class(b: u8) -> Class {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
        b'0'..=b'9' => Class::Digit,
        b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => Class::Space,
        _ => Class::Other,
    }
}

impl<'a> Gpt2Pieces<'a> {
    fn new(text: &'a str) -> Self {
        debug_assert!(text.is_ascii());
        Gpt2Pieces { text, pos: 0 }
    }
}

impl<'a> Iterator for Gpt2Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let b = self.text.as_bytes();
        let (i, n) = (self.pos, b.len());
        if i >= n {
            return None;
        }
        let end = 'piece: {
            // 's 't 're 've 'm 'll 'd
            if b[i] == b'\'' {
                let rest = &b[i + 1..];
                for (c, len) in [
                    (&b"s"[..], 2),
                    (b"t", 2),
                    (b"re", 3),
                    (b"ve", 3),
                    (b"m", 2),
                    (b"ll", 3),
                    (b"d", 2),
                ] {
                    if rest.starts_with(c) {
                        break 'piece i + len;
                    }
                }
            }
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
            let j = if b[i] == b' ' && i + 1 < n { i + 1 } else { i };
            let k = class(b[j]);
            if k != Class::Space {
                let mut e = j + 1;
                while e < n && class(b[e]) == k {
                    e += 1;
                }
                break 'piece e;
            }
            // `\s+(?!\S)`: whitespace up to (not including) the last one before a non-space;
            // `\s+`: a single whitespace character before a non-space.
            let mut e = i + 1;
            while e < n && class(b[e]) == Class::Space {
                e += 1;
            }
            if e < n && e - i >= 2 {
                e - 1
            } else {
                e
            }
        };
        self.pos = end;
        Some(&self.text[i..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoryGenerator;

    fn stories(n: usize) -> Vec<String> {
        let mut g = StoryGenerator::new(3);
        (0..n).map(|_| g.next_story()).collect()
    }

    #[test]
    fn train_save_load_round_trip() {
        let texts = stories(300);
        let tok = TextTokenizer::train_bpe(texts.iter(), 512, &[EOT.to_string()]).unwrap();
        assert_eq!(tok.eot_id().unwrap(), 0);
        assert_eq!(tok.vocab_size(), 512);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let loaded = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(loaded.vocab_size(), 512);
        assert_eq!(loaded.eot_id().unwrap(), 0);

        // Round trip on training text, unseen text and bytes outside the training alphabet.
        let unseen = StoryGenerator::new(99).next_story();
        for text in [
            texts[0].as_str(),
            unseen.as_str(),
            "Ünïcode ✓ 🚀 and\ttabs\n\n  spaces",
        ] {
            let ids = loaded.encode(text).unwrap();
            assert_eq!(ids, tok.encode(text).unwrap());
            assert!(ids.iter().all(|&i| (i as usize) < 512));
            assert_eq!(loaded.decode(&ids).unwrap(), text);
        }
        // BPE compresses: far fewer tokens than bytes on in-domain text.
        let ids = tok.encode(&unseen).unwrap();
        assert!(
            ids.len() * 2 < unseen.len(),
            "{} tokens for {} bytes",
            ids.len(),
            unseen.len()
        );

        // The special token is one token and decodes literally.
        let with_eot = format!("{EOT}{}", texts[1]);
        let ids = tok.encode(&with_eot).unwrap();
        assert_eq!(ids[0], 0);
        assert_eq!(tok.decode(&ids).unwrap(), with_eot);

        let batch = tok.encode_batch(&texts[..20]).unwrap();
        for (t, ids) in texts[..20].iter().zip(&batch) {
            assert_eq!(&tok.encode(t).unwrap(), ids);
        }
    }

    #[test]
    fn fast_path_equals_plain_pipeline() {
        use rand::{Rng, SeedableRng};
        let texts = stories(200);
        let tok = TextTokenizer::train_bpe(texts.iter(), 600, &[EOT.to_string()]).unwrap();
        assert!(tok.fast.is_some());
        let check = |t: &str| {
            assert_eq!(
                tok.encode(t).unwrap(),
                tok.encode_plain(t).unwrap(),
                "text {t:?}"
            );
        };
        for t in &texts {
            check(t);
        }
        for t in [
            "",
            " ",
            "  ",
            "\n",
            "a",
            " a",
            "  a",
            "a  ",
            "a \n b",
            "x\n\n\ny",
            "tab\t\tx",
            "\x0b\x0c\r\n z",
            "it's they're we've I'm you'll he'd 'twas '",
            " 's 'S 'LL",
            "\"Hi!\" said Tom.",
            "1,234.5 x2 2x",
            "...!?",
            "a\x00b\x07c",
            "end with space ",
            "end with spaces   ",
            " \t",
            "'''",
            "don''t",
        ] {
            check(t);
        }
        // Random ASCII over an alphabet rich in the regex's edge cases.
        let alphabet: Vec<char> = " \t\n\r\x0b\x0c'sStTreRvVmlLdD0123456789aZ.,!?\"-_()\x00\x7f"
            .chars()
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..3000 {
            let len = rng.random_range(0..40);
            let t: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            check(&t);
        }
        // Texts with special tokens or non-ASCII take the plain path (and agree trivially).
        check(&format!("{EOT}{}", texts[0]));
        check("caf\u{e9} na\u{ef}ve");

        // A GPT-2-style tokenizer with a prefix space does not take the fast path.
        let mut other = tok.inner.clone();
        other.with_pre_tokenizer(Some(ByteLevel::new(true, true, true)));
        assert!(TextTokenizer::wrap(other).fast.is_none());
    }

    #[test]
    fn rejects_tiny_vocab_and_missing_eot() {
        let texts = stories(20);
        let err = TextTokenizer::train_bpe(texts.iter(), 100, &[EOT.to_string()])
            .err()
            .unwrap();
        assert!(
            matches!(err, DataError::Config { ref field, .. } if field == "tokenizer.vocab_size"),
            "{err}"
        );

        let tok = TextTokenizer::train_bpe(texts.iter(), 300, &["<pad>".to_string()]).unwrap();
        assert!(matches!(tok.eot_id(), Err(DataError::MissingToken { .. })));
        assert_eq!(tok.token_id("<pad>"), Some(0));
    }
}
