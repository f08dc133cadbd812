//! Gopher quality rules: Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
//! Insights from Training Gopher", appendix A.1.1 ("Quality Filtering"), as implemented in
//! datatrove's `GopherQualityFilter` (`datatrove/pipeline/filters/gopher_quality_filter.py`),
//! which FineWeb ran with its defaults.
//!
//! The paper removes "any document that does not contain between 50 and 100,000 words, or whose
//! mean word length is outside the range of 3 to 10 characters; any document with a
//! symbol-to-word ratio greater than 0.1 for either the hash symbol or the ellipsis; and any
//! document with more than 90% of lines starting with a bullet point, or more than 30% ending
//! with an ellipsis. We also require that 80% of words in a document contain at least one
//! alphabetic character, and apply a 'stop word' filter, to remove documents that do not contain
//! at least two of the following English words: the, be, to, of, and, that, have, with."
//!
//! Rules run in datatrove's order and the first that fails names the rejection, with
//! datatrove's reason strings. Word tokens are [`super::text`]'s: spaCy's English tokenizer, as
//! datatrove's.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::text::{count_hashes_and_ellipses, py_splitlines, Token};
use super::Fields;
use crate::DataError;

/// The Gopher stop words (paper, appendix A.1.1; datatrove's `STOP_WORDS`).
pub const GOPHER_STOP_WORDS: [&str; 8] = ["the", "be", "to", "of", "and", "that", "have", "with"];

/// Settings of the Gopher quality rules. Every threshold is optional: `null` turns that one
/// rule off. Names and defaults are datatrove's `GopherQualityFilter` parameters, which are the
/// paper's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherQualityConfig {
    /// Fewer non-symbol words than this drops the document (`gopher_short_doc`). Paper and
    /// datatrove: 50. A word is a token with at least one non-punctuation character.
    pub min_doc_words: Option<usize>,
    /// More non-symbol words than this drops the document (`gopher_long_doc`). Paper: 100,000.
    pub max_doc_words: Option<usize>,
    /// Mean length (characters) of the non-symbol words below this drops the document
    /// (`gopher_below_avg_threshold`). Paper: 3.
    pub min_avg_word_length: Option<f64>,
    /// Mean word length above this drops the document (`gopher_above_avg_threshold`). Paper: 10.
    pub max_avg_word_length: Option<f64>,
    /// Ratio of `#` characters to tokens, and of ellipses (`...` or `…`) to tokens, above this
    /// drops the document (`gopher_too_many_hashes`, `gopher_too_many_ellipsis`). Paper: 0.1.
    pub max_symbol_word_ratio: Option<f64>,
    /// Fraction of lines starting (after leading whitespace) with a bullet above this drops the
    /// document (`gopher_too_many_bullets`). Paper: 0.9. Bullets are `•` and `-`, as datatrove
    /// counts them.
    pub max_bullet_lines_ratio: Option<f64>,
    /// Fraction of lines ending (before trailing whitespace) with `...` or `…` above this drops
    /// the document (`gopher_too_many_end_ellipsis`). Paper: 0.3.
    pub max_ellipsis_lines_ratio: Option<f64>,
    /// Despite datatrove's name, a *minimum*: the fraction of tokens containing an alphabetic
    /// character below this drops the document (`gopher_below_alpha_threshold`). Paper: 80% of
    /// words; datatrove (and so kiln) divides by all tokens, punctuation tokens included.
    pub max_non_alpha_words_ratio: Option<f64>,
    /// Fewer distinct stop words than this drops the document (`gopher_enough_stop_words`).
    /// Paper: 2. Matching is case-sensitive, as in datatrove (`The` does not count; `the` does).
    pub min_stop_words: Option<usize>,
    /// The stop words. Default: [`GOPHER_STOP_WORDS`].
    pub stop_words: Vec<String>,
}

impl Default for GopherQualityConfig {
    fn default() -> Self {
        GopherQualityConfig {
            min_doc_words: Some(50),
            max_doc_words: Some(100_000),
            min_avg_word_length: Some(3.0),
            max_avg_word_length: Some(10.0),
            max_symbol_word_ratio: Some(0.1),
            max_bullet_lines_ratio: Some(0.9),
            max_ellipsis_lines_ratio: Some(0.3),
            max_non_alpha_words_ratio: Some(0.8),
            min_stop_words: Some(2),
            stop_words: GOPHER_STOP_WORDS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct GopherQuality {
    cfg: GopherQualityConfig,
    stop_words: HashSet<Box<str>>,
    /// Byte lengths of the shortest and longest stop word: a cheap pre-check per token.
    stop_len: (usize, usize),
}

impl GopherQuality {
    pub(crate) fn new(cfg: &GopherQualityConfig, f: &Fields) -> Result<Self, DataError> {
        if let (Some(lo), Some(hi)) = (cfg.min_doc_words, cfg.max_doc_words) {
            if lo > hi {
                return Err(f.err(
                    "min_doc_words",
                    format!("{lo} is above max_doc_words ({hi})"),
                ));
            }
        }
        f.non_negative("min_avg_word_length", cfg.min_avg_word_length)?;
        f.non_negative("max_avg_word_length", cfg.max_avg_word_length)?;
        if let (Some(lo), Some(hi)) = (cfg.min_avg_word_length, cfg.max_avg_word_length) {
            if lo > hi {
                return Err(f.err(
                    "min_avg_word_length",
                    format!("{lo} is above max_avg_word_length ({hi})"),
                ));
            }
        }
        f.non_negative("max_symbol_word_ratio", cfg.max_symbol_word_ratio)?;
        f.fraction("max_bullet_lines_ratio", cfg.max_bullet_lines_ratio)?;
        f.fraction("max_ellipsis_lines_ratio", cfg.max_ellipsis_lines_ratio)?;
        f.fraction("max_non_alpha_words_ratio", cfg.max_non_alpha_words_ratio)?;
        if cfg.min_stop_words.unwrap_or(0) > 0 && cfg.stop_words.is_empty() {
            return Err(f.err(
                "stop_words",
                "is empty while min_stop_words is set; list stop words or set min_stop_words: null",
            ));
        }
        if let Some(w) = cfg
            .stop_words
            .iter()
            .find(|w| w.is_empty() || w.chars().any(char::is_whitespace))
        {
            return Err(f.err("stop_words", format!("{w:?} is not a single word")));
        }
        let stop_words: HashSet<Box<str>> =
            cfg.stop_words.iter().map(|s| s.as_str().into()).collect();
        let stop_len = (
            stop_words.iter().map(|s| s.len()).min().unwrap_or(0),
            stop_words.iter().map(|s| s.len()).max().unwrap_or(0),
        );
        Ok(GopherQuality {
            cfg: cfg.clone(),
            stop_words,
            stop_len,
        })
    }

    pub(crate) fn check(&self, text: &str, tokens: &[Token]) -> Result<(), &'static str> {
        let c = &self.cfg;
        let n_words = tokens.len();
        let (mut n_non_symbol, mut non_symbol_chars) = (0usize, 0usize);
        for t in tokens.iter().filter(|t| !t.symbol) {
            n_non_symbol += 1;
            non_symbol_chars += t.chars as usize;
        }
        if c.min_doc_words.is_some_and(|m| n_non_symbol < m) {
            return Err("gopher_short_doc");
        }
        if c.max_doc_words.is_some_and(|m| n_non_symbol > m) {
            return Err("gopher_long_doc");
        }
        if n_non_symbol > 0 {
            let avg = non_symbol_chars as f64 / n_non_symbol as f64;
            if c.min_avg_word_length.is_some_and(|m| avg < m) {
                return Err("gopher_below_avg_threshold");
            }
            if c.max_avg_word_length.is_some_and(|m| avg > m) {
                return Err("gopher_above_avg_threshold");
            }
        }
        if let (Some(max), true) = (c.max_symbol_word_ratio, n_words > 0) {
            let (hashes, ellipses) = count_hashes_and_ellipses(text);
            if hashes as f64 / n_words as f64 > max {
                return Err("gopher_too_many_hashes");
            }
            if ellipses as f64 / n_words as f64 > max {
                return Err("gopher_too_many_ellipsis");
            }
        }
        if c.max_bullet_lines_ratio.is_some() || c.max_ellipsis_lines_ratio.is_some() {
            let (mut lines, mut bullets, mut ellipsis) = (0usize, 0usize, 0usize);
            for line in py_splitlines(text) {
                lines += 1;
                let head = line.trim_start();
                bullets += usize::from(head.starts_with('•') || head.starts_with('-'));
                let tail = line.trim_end();
                ellipsis += usize::from(tail.ends_with("...") || tail.ends_with('…'));
            }
            if lines > 0 {
                if c.max_bullet_lines_ratio
                    .is_some_and(|m| bullets as f64 / lines as f64 > m)
                {
                    return Err("gopher_too_many_bullets");
                }
                if c.max_ellipsis_lines_ratio
                    .is_some_and(|m| ellipsis as f64 / lines as f64 > m)
                {
                    return Err("gopher_too_many_end_ellipsis");
                }
            }
        }
        if let (Some(min), true) = (c.max_non_alpha_words_ratio, n_words > 0) {
            let alpha = tokens.iter().filter(|t| t.alpha).count();
            if (alpha as f64 / n_words as f64) < min {
                return Err("gopher_below_alpha_threshold");
            }
        }
        if let Some(min) = c.min_stop_words.filter(|&m| m > 0) {
            // datatrove: `len(stop_words ∩ set(words)) < min`, i.e. distinct stop words.
            let (lo, hi) = self.stop_len;
            let mut found: Vec<&str> = Vec::with_capacity(min);
            for t in tokens {
                let len = t.end - t.start;
                if len < lo || len > hi {
                    continue;
                }
                let w = t.as_str(text);
                if self.stop_words.contains(w) && !found.contains(&w) {
                    found.push(w);
                    if found.len() >= min {
                        break;
                    }
                }
            }
            if found.len() < min {
                return Err("gopher_enough_stop_words");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{words_doc, ARTICLE};
    use super::super::text::tokens;
    use super::*;

    fn run(cfg: &GopherQualityConfig, text: &str) -> Result<(), &'static str> {
        let f = GopherQuality::new(cfg, &Fields::new("test", "gopher_quality")).unwrap();
        f.check(text, &tokens(text))
    }

    fn check(text: &str) -> Result<(), &'static str> {
        run(&GopherQualityConfig::default(), text)
    }

    #[test]
    fn article_passes() {
        assert_eq!(check(ARTICLE), Ok(()));
    }

    #[test]
    fn word_count_bounds() {
        assert_eq!(check(&words_doc(49)), Err("gopher_short_doc"));
        assert_eq!(check(&words_doc(50)), Ok(()));
        let cfg = GopherQualityConfig {
            max_doc_words: Some(60),
            ..Default::default()
        };
        assert_eq!(run(&cfg, &words_doc(60)), Ok(()));
        assert_eq!(run(&cfg, &words_doc(61)), Err("gopher_long_doc"));
        // Punctuation is not a word: 49 words and 20 commas is still short.
        let mut t = words_doc(49);
        t.push_str(&" ,".repeat(20));
        assert_eq!(check(&t), Err("gopher_short_doc"));
    }

    #[test]
    fn mean_word_length() {
        // Baby talk: 2.x-character words.
        let short = "we go to an ox in my bed. it is so a bit of it. ".repeat(6);
        assert_eq!(check(&short), Err("gopher_below_avg_threshold"));
        // Concatenated identifiers: very long "words".
        let long = "the internationalization andcharacteristically incomprehensibilities \
                    withmisunderstandings counterrevolutionaries. "
            .repeat(10);
        assert_eq!(check(&long), Err("gopher_above_avg_threshold"));
    }

    #[test]
    fn hash_and_ellipsis_ratio() {
        let base = words_doc(100);
        // 100 words + n "#" tokens: 10/110 <= 0.1 keeps; 12/112 > 0.1 drops.
        let tags = |n: usize| format!("{base}\n{}", "# ".repeat(n));
        assert_eq!(check(&tags(10)), Ok(()));
        assert_eq!(check(&tags(12)), Err("gopher_too_many_hashes"));
        // Each "and so on..." adds 4 tokens, one an ellipsis: 10/140 keeps, 20/180 drops.
        let dots = |n: usize| format!("{base} {}and that is all", "and so on... ".repeat(n));
        assert_eq!(check(&dots(10)), Ok(()));
        assert_eq!(check(&dots(20)), Err("gopher_too_many_ellipsis"));
    }

    #[test]
    fn bullet_lines() {
        // 20 lines: 18 bullets is exactly 0.9 (kept), 19 is 0.95 (dropped).
        let list = |bullets: usize| {
            (0..20)
                .map(|i| {
                    let mark = if i < bullets { "• " } else { "" };
                    format!("{mark}Item {i} of the list has the best price and the fast shipping to your door.")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(check(&list(18)), Ok(()));
        assert_eq!(check(&list(19)), Err("gopher_too_many_bullets"));
        let dashes = list(19).replace('•', "-");
        assert_eq!(check(&dashes), Err("gopher_too_many_bullets"));
    }

    #[test]
    fn ellipsis_lines() {
        // 10 lines: 3 ending in an ellipsis is 0.3 (kept), 4 is 0.4 (dropped).
        let teasers = |n: usize| {
            (0..10)
                .map(|i| {
                    let end = if i < n { "…" } else { "." };
                    format!("Read the story of the town and the river and the old mill {i}{end}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(check(&teasers(3)), Ok(()));
        assert_eq!(check(&teasers(4)), Err("gopher_too_many_end_ellipsis"));
    }

    #[test]
    fn alphabetic_fraction() {
        let table = |rows: usize| {
            let mut t = words_doc(60);
            for i in 0..rows {
                t.push_str(&format!("\n{} {} {}", 1000 + i, 2000 + i, 3000 + i));
            }
            t
        };
        // 60 words + 3 per row of numbers: 60/(60+3r) >= 0.8 needs r <= 5.
        assert_eq!(check(&table(5)), Ok(()));
        assert_eq!(check(&table(6)), Err("gopher_below_alpha_threshold"));
    }

    #[test]
    fn stop_words() {
        let no_stop =
            "Apple banana cherry grape lemon mango melon orange peach pear plum kiwi. ".repeat(5);
        assert_eq!(check(&no_stop), Err("gopher_enough_stop_words"));
        let one = format!("{no_stop} the");
        assert_eq!(check(&one), Err("gopher_enough_stop_words"));
        let two = format!("{no_stop} the end of it");
        assert_eq!(check(&two), Ok(()));
        // Distinct stop words count, as in datatrove (a set intersection): "the" twice is one.
        let repeated = format!("{no_stop} the end the");
        assert_eq!(check(&repeated), Err("gopher_enough_stop_words"));
        // Case-sensitive, as datatrove: "The" and "OF" do not count.
        let caps = format!("{no_stop} The end OF it");
        assert_eq!(check(&caps), Err("gopher_enough_stop_words"));
    }

    #[test]
    fn null_turns_a_rule_off() {
        let cfg = GopherQualityConfig {
            min_doc_words: None,
            min_stop_words: None,
            ..Default::default()
        };
        assert_eq!(run(&cfg, "Hello there friend"), Ok(()));
    }

    #[test]
    fn config_errors_name_the_field() {
        let f = Fields::new("data.sources[0].filters", "gopher_quality");
        let bad = GopherQualityConfig {
            min_doc_words: Some(200),
            max_doc_words: Some(100),
            ..Default::default()
        };
        let e = GopherQuality::new(&bad, &f).unwrap_err().to_string();
        assert!(
            e.contains("data.sources[0].filters.gopher_quality.min_doc_words"),
            "{e}"
        );
        let bad = GopherQualityConfig {
            max_bullet_lines_ratio: Some(1.5),
            ..Default::default()
        };
        let e = GopherQuality::new(&bad, &f).unwrap_err().to_string();
        assert!(e.contains("gopher_quality.max_bullet_lines_ratio"), "{e}");
    }
}
