//! Minimum document length: a cheap first cut before the costlier rules.
//!
//! There is no single published value; kiln's defaults are:
//! - `min_words: 50`, Gopher's lower word bound (Rae et al. 2021, appendix A.1.1), so that
//!   `min_length: {}` alone already drops what Gopher would call too short;
//! - `min_chars: 200`, about 35 English words: a bound for text without spaces between words
//!   (Chinese, Japanese, Thai), where a word count means little — set `min_words: 0` for those.

use serde::{Deserialize, Serialize};

use super::text::char_len;
use super::Fields;
use crate::DataError;

/// Settings of the minimum-length filter. Both bounds are inclusive (a document of exactly
/// `min_words` words is kept); 0 turns a bound off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinLengthConfig {
    /// Fewest characters (Unicode scalar values) kept (`too_few_chars`). Default: 200.
    pub min_chars: usize,
    /// Fewest whitespace-separated words kept (`too_few_words`). Default: 50.
    pub min_words: usize,
}

impl Default for MinLengthConfig {
    fn default() -> Self {
        MinLengthConfig {
            min_chars: 200,
            min_words: 50,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct MinLength {
    cfg: MinLengthConfig,
}

impl MinLength {
    pub(crate) fn new(cfg: &MinLengthConfig, f: &Fields) -> Result<Self, DataError> {
        if cfg.min_chars == 0 && cfg.min_words == 0 {
            return Err(f.err(
                "min_chars",
                "both min_chars and min_words are 0: the filter would do nothing",
            ));
        }
        Ok(MinLength { cfg: cfg.clone() })
    }

    pub(crate) fn check(&self, text: &str) -> Result<(), &'static str> {
        let min_chars = self.cfg.min_chars;
        // UTF-8 is 1 to 4 bytes per char: skip the count when the byte length decides.
        if text.len() < min_chars || (text.len() < 4 * min_chars && char_len(text) < min_chars) {
            return Err("too_few_chars");
        }
        if self.cfg.min_words > 0
            && text.split_whitespace().take(self.cfg.min_words).count() < self.cfg.min_words
        {
            return Err("too_few_words");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{words_doc, ARTICLE};
    use super::*;

    fn check(cfg: MinLengthConfig, text: &str) -> Result<(), &'static str> {
        MinLength::new(&cfg, &Fields::new("test", "min_length"))
            .unwrap()
            .check(text)
    }

    #[test]
    fn word_and_char_bounds() {
        let d = MinLengthConfig::default();
        assert_eq!(check(d.clone(), ARTICLE), Ok(()));
        assert_eq!(check(d.clone(), &words_doc(49)), Err("too_few_words"));
        assert_eq!(check(d.clone(), &words_doc(50)), Ok(()));
        let chars_only = MinLengthConfig {
            min_chars: 200,
            min_words: 0,
        };
        assert_eq!(
            check(chars_only.clone(), &"a".repeat(199)),
            Err("too_few_chars")
        );
        assert_eq!(check(chars_only.clone(), &"a".repeat(200)), Ok(()));
        // Characters, not bytes: 199 CJK characters are 597 bytes and still too short.
        assert_eq!(
            check(chars_only.clone(), &"字".repeat(199)),
            Err("too_few_chars")
        );
        assert_eq!(check(chars_only, &"字".repeat(200)), Ok(()));
    }

    #[test]
    fn all_zero_is_a_config_error() {
        let e = MinLength::new(
            &MinLengthConfig {
                min_chars: 0,
                min_words: 0,
            },
            &Fields::new("p", "min_length"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p.min_length.min_chars"), "{e}");
    }
}
