//! C4 rules: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
//! Text-to-Text Transformer" (JMLR 21), section 2.2, as implemented in datatrove's
//! `C4QualityFilter` (`datatrove/pipeline/filters/c4_filters.py`, after TFDS's `c4_utils.py`).
//!
//! From the paper: "We only retained lines that ended in a terminal punctuation mark (i.e. a
//! period, exclamation mark, question mark, or end quotation mark). We discarded any page with
//! fewer than 3 sentences [datatrove and TFDS: 5] and only retained lines that contained at least
//! 3 words. [...] Many of the scraped pages contained warnings stating that Javascript should be
//! enabled so we removed any line with the word Javascript. Some pages had placeholder 'lorem
//! ipsum' text; we removed any page where the phrase 'lorem ipsum' appeared. Some pages
//! inadvertently contained code. Since the curly bracket '{' appears in many programming
//! languages [...] we removed any pages that contained a curly bracket." TFDS's code adds: drop
//! lines with a word over 1000 characters, drop cookie / terms-of-use lines, and remove
//! Wikipedia citation marks (`[1]`, `[edit]`, `[citation needed]`).
//!
//! Unlike the other rule sets this one **edits** the document, as datatrove does: lines are
//! stripped, citation marks removed, failing lines dropped, and the kept lines joined with `\n`.
//! Whole-document rejections: `lorem_ipsum`, `curly_bracket` (both only looked for in lines that
//! survived the earlier line rules, as in datatrove) and `too_few_sentences`.
//!
//! FineWeb ran this filter with `filter_no_terminal_punct: false` (datatrove's
//! `examples/fineweb.py`): the terminal punctuation rule alone removed ~30% of tokens in its
//! ablations. kiln's default is C4's (`true`); write `c4: {filter_no_terminal_punct: false}` for
//! FineWeb's setting.
//!
//! Not implemented: the "List of Dirty, Naughty, Obscene or Otherwise Bad Words" rule (datatrove
//! has it as a separate `C4BadWordsFilter` that downloads the list), and datatrove's
//! `split_paragraph: false` mode (rules per sentence instead of per line).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::spacy_en::is_py_space;
use super::text::{py_splitlines, py_strip, sentences as count_sentences};
use super::Fields;
use crate::DataError;

/// Line endings that count as terminal punctuation (datatrove's `END_PUNCTUATION`).
const END_PUNCTUATION: [char; 5] = ['.', '?', '!', '"', '\''];

/// Substrings that mark a cookie / policy line (datatrove's `POLICY_SUBSTRINGS`, from TFDS).
pub const POLICY_SUBSTRINGS: [&str; 6] = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];

/// Settings of the C4 rules. Names and defaults are datatrove's `C4QualityFilter` parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C4Config {
    /// Remove Wikipedia citation marks `[1]`, `[]`, `[edit]`, `[citation needed]` from lines.
    /// Default: true (TFDS / datatrove).
    pub remove_citations: bool,
    /// Drop lines that do not end in `.` `?` `!` `"` `'`, or that end in `...`. Default: true
    /// (C4 paper). FineWeb: false.
    pub filter_no_terminal_punct: bool,
    /// Fewer sentences than this in the kept lines drops the document (`too_few_sentences`).
    /// Default: 5 (TFDS and datatrove; the paper's text says 3). `null` turns it off.
    pub min_num_sentences: Option<usize>,
    /// Drop lines with fewer whitespace-separated words than this. Default: 3 (C4 paper).
    pub min_words_per_line: Option<usize>,
    /// Drop lines containing a word longer than this many characters. Default: 1000 (TFDS).
    pub max_word_length: Option<usize>,
    /// Drop the document if a kept line contains "lorem ipsum" (any case). Default: true.
    pub filter_lorem_ipsum: bool,
    /// Drop lines that contain "javascript" (any case). Default: true.
    pub filter_javascript: bool,
    /// Drop the document if a kept line contains `{`. Default: true.
    pub filter_curly_bracket: bool,
    /// Drop lines containing one of [`POLICY_SUBSTRINGS`] (any case). Default: true (TFDS).
    pub filter_policy: bool,
}

impl Default for C4Config {
    fn default() -> Self {
        C4Config {
            remove_citations: true,
            filter_no_terminal_punct: true,
            min_num_sentences: Some(5),
            min_words_per_line: Some(3),
            max_word_length: Some(1000),
            filter_lorem_ipsum: true,
            filter_javascript: true,
            filter_curly_bracket: true,
            filter_policy: true,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct C4 {
    cfg: C4Config,
}

impl C4 {
    pub(crate) fn new(cfg: &C4Config, f: &Fields) -> Result<Self, DataError> {
        if cfg.max_word_length == Some(0) {
            return Err(f.err(
                "max_word_length",
                "0 would drop every line; use null to turn the rule off",
            ));
        }
        Ok(C4 { cfg: cfg.clone() })
    }

    /// Runs the rules; on success returns the edited text (kept lines joined by `\n`).
    pub(crate) fn check(&self, text: &str) -> Result<String, &'static str> {
        let c = &self.cfg;
        let mut kept = String::with_capacity(text.len());
        let mut lower = String::new();
        let mut sentences = 0usize;
        let mut first = true;
        for raw in py_splitlines(text) {
            let line = py_strip(raw);
            let (n_words, longest) = words_and_longest(line);
            if c.max_word_length.is_some_and(|max| longest > max) {
                continue;
            }
            let line = if c.remove_citations {
                remove_citations(line)
            } else {
                Cow::Borrowed(line)
            };
            if c.filter_no_terminal_punct
                && (!line.ends_with(END_PUNCTUATION) || line.ends_with("..."))
            {
                continue;
            }
            if c.min_words_per_line.is_some_and(|m| n_words < m) {
                continue;
            }
            lower.clear();
            lower.push_str(&line);
            lower.make_ascii_lowercase();
            if c.filter_lorem_ipsum && lower.contains("lorem ipsum") {
                return Err("lorem_ipsum");
            }
            if c.filter_javascript && lower.contains("javascript") {
                continue;
            }
            if c.filter_curly_bracket && line.contains('{') {
                return Err("curly_bracket");
            }
            if c.filter_policy && is_policy_line(&lower) {
                continue;
            }
            if c.min_num_sentences.is_some_and(|m| sentences < m) {
                // datatrove: `len(split_into_sentences(line))`, spaCy's sentencizer. Only
                // whether the total reaches the minimum matters, so counting stops there.
                sentences += count_sentences(&line);
            }
            if !first {
                kept.push('\n');
            }
            kept.push_str(&line);
            first = false;
        }
        if c.min_num_sentences.is_some_and(|m| sentences < m) {
            return Err("too_few_sentences");
        }
        let trimmed = py_strip(&kept);
        if trimmed.len() != kept.len() {
            kept = trimmed.to_string();
        }
        Ok(kept)
    }
}

/// Python's `len(line.split())` and the length in characters of the longest word.
fn words_and_longest(line: &str) -> (usize, usize) {
    let (mut n, mut longest, mut cur) = (0usize, 0usize, 0usize);
    for c in line.chars() {
        if is_py_space(c) {
            if cur > 0 {
                n += 1;
                longest = longest.max(cur);
                cur = 0;
            }
        } else {
            cur += 1;
        }
    }
    if cur > 0 {
        n += 1;
        longest = longest.max(cur);
    }
    (n, longest)
}

/// Whether a lower-cased line contains one of [`POLICY_SUBSTRINGS`]. Every cookie phrase
/// contains "cookie", so most lines need three searches instead of six.
fn is_policy_line(lower: &str) -> bool {
    if lower.contains("cookie") {
        POLICY_SUBSTRINGS.iter().any(|p| lower.contains(p))
    } else {
        lower.contains("terms of use") || lower.contains("privacy policy")
    }
}

/// Removes `\[\d*]`, `[edit]` and `[citation needed]` (datatrove's `CITATION_REGEX`).
fn remove_citations(line: &str) -> Cow<'_, str> {
    if !line.contains('[') {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let digits = tail[1..].bytes().take_while(u8::is_ascii_digit).count();
        let citation = if tail.as_bytes().get(1 + digits) == Some(&b']') {
            digits + 2
        } else if tail.starts_with("[edit]") {
            "[edit]".len()
        } else if tail.starts_with("[citation needed]") {
            "[citation needed]".len()
        } else {
            0
        };
        if citation == 0 {
            out.push('[');
            rest = &tail[1..];
        } else {
            rest = &tail[citation..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::ARTICLE;
    use super::*;

    fn run(cfg: &C4Config, text: &str) -> Result<String, &'static str> {
        C4::new(cfg, &Fields::new("test", "c4"))
            .unwrap()
            .check(text)
    }

    fn check(text: &str) -> Result<String, &'static str> {
        run(&C4Config::default(), text)
    }

    const BODY: &str = "\
The committee published its annual report on Friday.
It shows that water use fell by ten percent last year.
Most of the savings came from repairing leaking pipes.
Households also installed more efficient washing machines.
The report recommends further investment in the network.";

    #[test]
    fn article_passes_and_only_the_title_is_removed() {
        let out = check(ARTICLE).unwrap();
        assert!(!out.contains("Riverside Library Reopens After Two-Year Renovation"));
        assert!(out.starts_with("The Riverside Public Library reopened"));
        assert!(out.ends_with("until the end of the summer."));
        assert!(!out.contains("\n\n"), "blank lines are dropped");
        // FineWeb's setting keeps the title.
        let fw = C4Config {
            filter_no_terminal_punct: false,
            ..Default::default()
        };
        assert!(run(&fw, ARTICLE)
            .unwrap()
            .starts_with("Riverside Library Reopens"));
    }

    #[test]
    fn javascript_lines_are_removed_and_the_doc_kept_if_enough_remains() {
        let doc = format!("Please enable JavaScript to view this page.\n{BODY}\nThis site requires javascript to work.");
        let out = check(&doc).unwrap();
        assert_eq!(out, BODY);
        // With only four good sentences left, the page goes.
        let short: Vec<&str> = BODY.lines().take(4).collect();
        let doc = format!(
            "Please enable JavaScript to view this page.\n{}",
            short.join("\n")
        );
        assert_eq!(check(&doc), Err("too_few_sentences"));
    }

    #[test]
    fn lorem_ipsum_drops_the_page() {
        let doc = format!("{BODY}\nLorem ipsum dolor sit amet, consectetur adipiscing elit.");
        assert_eq!(check(&doc), Err("lorem_ipsum"));
        let doc = format!("{BODY}\nThe word lorem appears here, but not the ipsum phrase.");
        assert!(check(&doc).is_ok());
    }

    #[test]
    fn curly_bracket_drops_the_page() {
        let doc = format!("{BODY}\nThe function is defined as {{ return x + 1; }} in the code.");
        assert_eq!(check(&doc), Err("curly_bracket"));
        let doc = format!("{BODY}\nThe function is defined as ( return x + 1; ) in the code.");
        assert!(check(&doc).is_ok());
    }

    #[test]
    fn policy_and_cookie_lines_are_removed() {
        let page = "\
This website uses cookies to improve your experience.
By continuing you agree to our Terms of Use.
Read our Privacy Policy for more information.
See the Cookie Policy for details.
We use cookies for analytics and advertising.
Accept all cookies to continue browsing.";
        // Every line but the last is a policy line; one sentence is left.
        assert_eq!(check(page), Err("too_few_sentences"));
        let doc = format!("{page}\n{BODY}");
        let out = check(&doc).unwrap();
        assert_eq!(
            out,
            format!("Accept all cookies to continue browsing.\n{BODY}")
        );
    }

    #[test]
    fn line_rules() {
        let doc = format!(
            "Home\nShort line.\nNo punctuation at the end here\nTo be continued...\n{BODY}\n{}.",
            "x".repeat(1001)
        );
        assert_eq!(check(&doc).unwrap(), BODY);
        // Citations are removed before the punctuation check.
        let doc = format!("{BODY}\nThe bridge opened in 1932.[3]\nIt was widely praised[citation needed] at the time.");
        let out = check(&doc).unwrap();
        assert!(
            out.ends_with("The bridge opened in 1932.\nIt was widely praised at the time."),
            "{out}"
        );
    }

    #[test]
    fn sentence_count() {
        // Sentences are counted by spaCy's sentencizer (see `spacy_en::count_sentences`):
        // abbreviations such as "Dr." and "p.m." are one token and end nothing.
        assert!(check(
            "Dr. Smith came. Mr. Jones left at 5 p.m. today. A third one. A fourth one. The fifth."
        )
        .is_ok());
        assert_eq!(
            check(
                "Dr. Smith met Mr. Jones at 5 p.m. on the bridge. Two more. Three more. Four more."
            ),
            Err("too_few_sentences")
        );
        // Five sentences on one line are enough for a page.
        assert!(check("One is here now. Two is here now. Three is here now. Four is here now. Five is here now.").is_ok());
        assert_eq!(
            check("One is here now. Two is here now. Three is here now. Four is here now."),
            Err("too_few_sentences")
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(words_and_longest("  one  three\tfive "), (3, 5));
        assert_eq!(words_and_longest("naïve\u{a0}café x"), (3, 5));
        assert_eq!(words_and_longest(""), (0, 0));
        for p in POLICY_SUBSTRINGS {
            assert!(is_policy_line(&format!("we say: {p}!")), "{p}");
        }
        assert!(!is_policy_line("a cookie recipe with chocolate."));
    }

    #[test]
    fn citations() {
        assert_eq!(
            remove_citations("a[1] b[23] c[] d[edit] e[citation needed] f[x]"),
            "a b c d e f[x]"
        );
        assert_eq!(remove_citations("no brackets"), "no brackets");
    }
}
