//! A byte-level BPE tokenizer (GPT-2 style) built on Hugging Face `tokenizers`.
//!
//! The pipeline is the one GPT-2 uses: a `ByteLevel` pre-tokenizer (the GPT-2 split regex, bytes
//! mapped to printable characters, no prefix space), a BPE model, and a `ByteLevel` decoder. Every
//! byte is in the initial alphabet, so any UTF-8 text encodes without unknown tokens and decodes
//! back to itself. The saved `tokenizer.json` is the standard format, loadable from Python with
//! `tokenizers.Tokenizer.from_file` or `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`.

use std::collections::HashSet;
use std::path::Path;

use rayon::prelude::*;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::DataError;

/// The document separator; kiln puts it *before* every document (llm.c's convention).
pub const EOT: &str = "<|endoftext|>";

/// A trained or loaded tokenizer. Cheap to share across threads (`&TextTokenizer` is `Sync`).
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

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
        Ok(TextTokenizer { inner })
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
        Ok(TextTokenizer { inner })
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
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| DataError::tokenizer("encoding", e))?;
        Ok(enc.get_ids().to_vec())
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
