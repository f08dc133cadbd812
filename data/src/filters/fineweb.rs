//! FineWeb's own rules: Penedo et al. 2024, "The FineWeb Datasets: Decanting the Web for the
//! Finest Text Data at Scale", section 3.6 ("Developing additional heuristic filters"), as
//! implemented in datatrove's `FineWebQualityFilter`
//! (`datatrove/pipeline/filters/fineweb_quality_filter.py`), which built FineWeb with its
//! defaults (`examples/fineweb.py`).
//!
//! Lines are `text.split("\n")` without the blank ones (`line.strip() == ""`), not stripped: a
//! trailing space or `\r` means the line does not end in punctuation, exactly as datatrove 0.10.1
//! counts them. A document with no non-blank line is dropped as `empty`. Every rule drops the
//! document when its ratio is strictly beyond the threshold, as in datatrove.
//!
//! Line ends that count as punctuation: datatrove's `TERMINAL_PUNCTUATION` (159 characters,
//! `.` `!` `?` and their counterparts in other scripts) unless `stop_chars` is set. FineWeb itself
//! was built with an earlier default, `stop_chars: ".'\"!?"`.
//!
//! One threshold differs between the paper and the code: the paper's text gives "fraction of
//! characters in duplicated lines ≥ 0.1", datatrove's default (what FineWeb ran) is 0.01. kiln
//! follows the code; `char_duplicates_ratio: 0.1` gives the paper's value.

use serde::{Deserialize, Serialize};

use super::spacy_en::{is_py_space, is_terminal_punct};
use super::text::{char_len, find_duplicates};
use super::{Fields, TokenCache};
use crate::DataError;

/// Settings of the FineWeb rules. Names and defaults are datatrove's `FineWebQualityFilter`
/// parameters. `null` turns a rule off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineWebConfig {
    /// A fraction of non-blank lines ending in a stop character below this drops the document
    /// (`line_punct_ratio`). Paper and code: 0.12.
    pub line_punct_thr: Option<f64>,
    /// Keep documents where *no* line ends in punctuation (ratio exactly 0) instead of dropping
    /// them. Default: false (datatrove).
    pub line_punct_exclude_zero: bool,
    /// A fraction of short non-blank lines above this drops the document (`short_line_ratio`).
    /// Paper and code: 0.67.
    pub short_line_thr: Option<f64>,
    /// A line of at most this many characters is short. Paper and code: 30.
    pub short_line_length: usize,
    /// Characters in duplicated non-blank lines / characters other than `\n`, above this, drops
    /// the document (`char_dup_ratio`). Code: 0.01 (the paper's text says 0.1).
    pub char_duplicates_ratio: Option<f64>,
    /// Newlines per word token above this drops the document as list-like (`list_ratio`).
    /// Code: 0.3 (not in the paper).
    pub new_line_ratio: Option<f64>,
    /// The characters a punctuated line ends with. Default (`null`): datatrove's
    /// `TERMINAL_PUNCTUATION`; FineWeb's own run used `".'\"!?"`.
    pub stop_chars: Option<String>,
}

impl Default for FineWebConfig {
    fn default() -> Self {
        FineWebConfig {
            line_punct_thr: Some(0.12),
            line_punct_exclude_zero: false,
            short_line_thr: Some(0.67),
            short_line_length: 30,
            char_duplicates_ratio: Some(0.01),
            new_line_ratio: Some(0.3),
            stop_chars: None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct FineWeb {
    cfg: FineWebConfig,
}

impl FineWeb {
    pub(crate) fn new(cfg: &FineWebConfig, f: &Fields) -> Result<Self, DataError> {
        f.fraction("line_punct_thr", cfg.line_punct_thr)?;
        f.fraction("short_line_thr", cfg.short_line_thr)?;
        f.fraction("char_duplicates_ratio", cfg.char_duplicates_ratio)?;
        f.non_negative("new_line_ratio", cfg.new_line_ratio)?;
        if cfg.stop_chars.as_deref() == Some("") {
            return Err(f.err(
                "stop_chars",
                "is empty: no line could end in punctuation; use null for the default",
            ));
        }
        Ok(FineWeb { cfg: cfg.clone() })
    }

    fn is_stop_char(&self, c: char) -> bool {
        match &self.cfg.stop_chars {
            Some(chars) => chars.contains(c),
            None => is_terminal_punct(c),
        }
    }

    pub(crate) fn check(&self, text: &str, cache: &mut TokenCache) -> Result<(), &'static str> {
        let c = &self.cfg;
        // datatrove: `[l for l in text.split("\n") if l.strip() != ""]`.
        let non_blank = || text.split('\n').filter(|l| !l.chars().all(is_py_space));
        let (mut lines, mut punct, mut short) = (0usize, 0usize, 0usize);
        let max = c.short_line_length;
        for line in non_blank() {
            lines += 1;
            punct += usize::from(
                line.chars()
                    .next_back()
                    .is_some_and(|e| self.is_stop_char(e)),
            );
            // A char is 1 to 4 bytes: decide from the byte length when it is conclusive.
            let is_short = if line.len() <= max {
                true
            } else if line.len() > 4 * max {
                false
            } else {
                char_len(line) <= max
            };
            short += usize::from(is_short);
        }
        if lines == 0 {
            return Err("empty");
        }
        let punct_ratio = punct as f64 / lines as f64;
        if let Some(thr) = c.line_punct_thr {
            if punct_ratio < thr && !(punct == 0 && c.line_punct_exclude_zero) {
                return Err("line_punct_ratio");
            }
        }
        if c.short_line_thr
            .is_some_and(|thr| short as f64 / lines as f64 > thr)
        {
            return Err("short_line_ratio");
        }
        if let Some(thr) = c.char_duplicates_ratio {
            let non_newline = char_len(text) - text.bytes().filter(|&b| b == b'\n').count();
            if non_newline > 0 {
                let d = find_duplicates(non_blank());
                if d.chars as f64 / non_newline as f64 > thr {
                    return Err("char_dup_ratio");
                }
            }
        }
        if let Some(thr) = c.new_line_ratio {
            let words = cache.count(text);
            let newlines = text.bytes().filter(|&b| b == b'\n').count();
            if words > 0 && newlines as f64 / words as f64 > thr {
                return Err("list_ratio");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::ARTICLE;
    use super::*;

    fn run(cfg: &FineWebConfig, text: &str) -> Result<(), &'static str> {
        FineWeb::new(cfg, &Fields::new("test", "fineweb"))
            .unwrap()
            .check(text, &mut TokenCache::default())
    }

    fn check(text: &str) -> Result<(), &'static str> {
        run(&FineWebConfig::default(), text)
    }

    /// Long distinct lines (over 30 characters), `with_punct` of them ending in a period.
    fn lines(n: usize, with_punct: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let end = if i < with_punct { "." } else { "" };
                format!(
                    "Line {i} describes item number {} in some detail{end}",
                    i * 37 + 11
                )
            })
            .collect()
    }

    #[test]
    fn article_passes() {
        assert_eq!(check(ARTICLE), Ok(()));
    }

    #[test]
    fn line_punctuation_ratio() {
        let only = FineWebConfig {
            short_line_thr: None,
            char_duplicates_ratio: None,
            new_line_ratio: None,
            ..Default::default()
        };
        // 25 lines: 2 punctuated is 0.08 (dropped), 3 is 0.12 (kept: the rule is <).
        assert_eq!(
            run(&only, &lines(25, 2).join("\n")),
            Err("line_punct_ratio")
        );
        assert_eq!(run(&only, &lines(25, 3).join("\n")), Ok(()));
        // Blank lines do not count: 3 of 25 non-blank lines still pass with blank lines between.
        assert_eq!(run(&only, &lines(25, 3).join("\n\n  \n")), Ok(()));
        // FineWeb's original stop characters: a line ending in a quote counts.
        let quoted: Vec<String> = lines(25, 0)
            .into_iter()
            .enumerate()
            .map(|(i, l)| if i < 3 { format!("{l}\"") } else { l })
            .collect();
        assert_eq!(run(&only, &quoted.join("\n")), Err("line_punct_ratio"));
        let fineweb_chars = FineWebConfig {
            stop_chars: Some(".'\"!?".into()),
            ..only.clone()
        };
        assert_eq!(run(&fineweb_chars, &quoted.join("\n")), Ok(()));
        // No punctuated line at all: dropped, unless line_punct_exclude_zero.
        assert_eq!(
            run(&only, &lines(25, 0).join("\n")),
            Err("line_punct_ratio")
        );
        let zero_ok = FineWebConfig {
            line_punct_exclude_zero: true,
            ..only.clone()
        };
        assert_eq!(run(&zero_ok, &lines(25, 0).join("\n")), Ok(()));
        // Trailing whitespace (or `\r`) counts against the line, as in datatrove.
        assert_eq!(
            run(&only, &lines(25, 4).join(" \n")),
            Err("line_punct_ratio")
        );
        assert_eq!(
            run(&only, &lines(25, 4).join("\r\n")),
            Err("line_punct_ratio")
        );
        assert_eq!(check(" \n\n\t"), Err("empty"));
    }

    #[test]
    fn short_line_ratio() {
        // 3 long punctuated lines + k short ones ("Price: $10" etc.).
        let doc = |k: usize| {
            let mut l = lines(3, 3);
            for i in 0..k {
                l.push(format!("Size {i}: small."));
            }
            l.join("\n")
        };
        // 6 short of 9 lines = 0.667 <= 0.67 keeps; 7 of 10 = 0.7 drops.
        let only = FineWebConfig {
            char_duplicates_ratio: None,
            new_line_ratio: None,
            ..Default::default()
        };
        assert_eq!(run(&only, &doc(6)), Ok(()));
        assert_eq!(run(&only, &doc(7)), Err("short_line_ratio"));
        // A line of exactly 30 characters is short; 31 is not.
        assert_eq!(char_len("This line has thirty chars ok."), 30);
        let mixed = |s: &str| format!("{}\n{s}\n{s}\n{s}", lines(1, 1)[0]);
        assert_eq!(
            run(&only, &mixed("This line has thirty chars ok.")),
            Err("short_line_ratio")
        );
        assert_eq!(
            run(&only, &mixed("This line has thirty-one chars.")),
            Ok(())
        );
    }

    #[test]
    fn duplicated_line_characters() {
        // 100 distinct lines (~5,000 chars); one repeated 11-char line: 11/5000 < 0.01 keeps;
        // a repeated 60-char line is above 1%.
        let body = lines(100, 100);
        let with = |dup: &str| {
            let mut l = body.clone();
            l.insert(10, dup.to_string());
            l.insert(50, dup.to_string());
            l.join("\n")
        };
        assert_eq!(check(&with("Share this.")), Ok(()));
        assert_eq!(
            check(&with(
                "Sign up for our newsletter to get the latest deals by email."
            )),
            Err("char_dup_ratio")
        );
        // Empty lines never count as duplicates.
        assert_eq!(check(&body.join("\n\n")), Ok(()));
        // The paper's 0.1 keeps the second page.
        let paper = FineWebConfig {
            char_duplicates_ratio: Some(0.1),
            ..Default::default()
        };
        assert_eq!(
            run(
                &paper,
                &with("Sign up for our newsletter to get the latest deals by email.")
            ),
            Ok(())
        );
    }

    #[test]
    fn list_like_documents() {
        // Prose lines of 8 tokens: 19 newlines / 160 tokens keeps.
        let names = (0..20)
            .map(|i| format!("Resident number{i} signed the petition, {}.", i * 3))
            .collect::<Vec<_>>();
        assert_eq!(check(&names.join("\n")), Ok(()));
        // A list of names, 3 tokens per line ("Person0" "Surname0" "."): 19 / 60 > 0.3 drops.
        let only_list = FineWebConfig {
            short_line_thr: None,
            ..Default::default()
        };
        let people = (0..20)
            .map(|i| format!("Person{i} Surname{i}."))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(run(&only_list, &people), Err("list_ratio"));
        let more_words = (0..20)
            .map(|i| format!("Person{i} Surname{i} and friends."))
            .collect::<Vec<_>>()
            .join("\n");
        // 5 tokens per line: 19 / 100 keeps.
        assert_eq!(run(&only_list, &more_words), Ok(()));
    }
}
