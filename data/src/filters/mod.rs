//! Heuristic web-text filters: the published rule sets that built C4, MassiveText (Gopher) and
//! FineWeb, with their published default thresholds, plus language identification, a minimum
//! length, a URL blocklist and a score filter.
//!
//! A data source's `filters:` section is a [`FilterConfig`]; every rule set in it is optional
//! and `{}` turns one on with its published defaults:
//!
//! ```yaml
//! filters:
//!   language: {}                      # whatlang, keep English with confidence >= 0.9
//!   gopher_repetition: {}
//!   gopher_quality: {}
//!   c4: {filter_no_terminal_punct: false}   # FineWeb's setting
//!   fineweb: {}
//! ```
//!
//! [`FilterChain::new`] validates the settings and builds the chain; [`FilterChain::apply`] runs
//! it on one [`Document`] and says which filter rejected it and why ([`Rejection`]). The chain
//! runs in FineWeb's pipeline order (datatrove `examples/fineweb.py`): url_blocklist,
//! language, score, min_length, gopher_repetition, gopher_quality, c4, fineweb — cheap checks
//! first, and the C4 rules (which edit the text) before FineWeb's, as FineWeb ran them.
//!
//! | rule set | module | source |
//! |---|---|---|
//! | `url_blocklist` | [`url_blocklist`] | datatrove `URLFilter` (domains + subdomains) |
//! | `language` | [`language`] | whatlang; FineWeb used fastText ≥ 0.65 |
//! | `score` | [`score`] | FineWeb-Edu `score >= 3` |
//! | `min_length` | [`min_length`] | kiln (Gopher's 50 words) |
//! | `gopher_repetition` | [`gopher_repetition`] | Rae et al. 2021, table A1; datatrove `GopherRepetitionFilter` |
//! | `gopher_quality` | [`gopher_quality`] | Rae et al. 2021, A.1.1; datatrove `GopherQualityFilter` |
//! | `c4` | [`c4`] | Raffel et al. 2020, §2.2; datatrove `C4QualityFilter` |
//! | `fineweb` | [`fineweb`] | Penedo et al. 2024, §3.6; datatrove `FineWebQualityFilter` |
//!
//! Rejection reasons are datatrove's strings where datatrove has one (`gopher_short_doc`,
//! `dup_line_frac`, `top_2_gram`, `duplicated_5_n_grams`, `lorem_ipsum`, `curly_bracket`,
//! `too_few_sentences`, `line_punct_ratio`, `short_line_ratio`, `char_dup_ratio`,
//! `list_ratio`, `domain`, ...).
//!
//! Words: datatrove splits English words with spaCy's rule-based tokenizer, and kiln reimplements
//! it (see [`text`]); `tests/filter_agreement.rs` checks words and verdicts against datatrove on
//! real text. A document is tokenized once for all the rule sets that need words (again only
//! after C4 edits it).
//!
//! Everything here is pure and deterministic; a [`FilterChain`] is `Send + Sync` and is shared
//! by reference across rayon workers.

pub mod c4;
pub mod fineweb;
pub mod gopher_quality;
pub mod gopher_repetition;
pub mod language;
pub mod min_length;
pub mod score;
mod spacy_en;
pub mod text;
mod text_tables;
pub mod url_blocklist;

#[cfg(test)]
pub(crate) mod fixtures;

use serde::{Deserialize, Serialize};

pub use c4::C4Config;
pub use fineweb::FineWebConfig;
pub use gopher_quality::GopherQualityConfig;
pub use gopher_repetition::GopherRepetitionConfig;
pub use language::LanguageConfig;
pub use min_length::MinLengthConfig;
pub use score::ScoreConfig;
pub use url_blocklist::UrlBlocklistConfig;

use crate::{DataError, Document};

/// The `filters:` section of one data source. Every rule set is optional (`None` = off); `{}`
/// turns it on with published defaults (see each config type for its fields and sources).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Drop documents whose URL host is a listed domain or one of its subdomains.
    pub url_blocklist: Option<UrlBlocklistConfig>,
    /// Keep documents detected (whatlang) as one of the listed languages.
    pub language: Option<LanguageConfig>,
    /// Keep documents whose input `score` is in range (e.g. FineWeb-Edu's `score >= 3`).
    pub score: Option<ScoreConfig>,
    /// Drop documents shorter than a number of characters and words.
    pub min_length: Option<MinLengthConfig>,
    /// Gopher's repetition rules (duplicate lines/paragraphs, top and duplicated n-grams).
    pub gopher_repetition: Option<GopherRepetitionConfig>,
    /// Gopher's quality rules (word counts and lengths, symbols, bullets, stop words).
    pub gopher_quality: Option<GopherQualityConfig>,
    /// C4's rules (line cleaning; lorem ipsum, curly brackets, too few sentences).
    pub c4: Option<C4Config>,
    /// FineWeb's rules (line punctuation, short lines, duplicated line characters, lists).
    pub fineweb: Option<FineWebConfig>,
}

/// Why [`FilterChain::apply`] rejected a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// Index of the rejecting filter in [`FilterChain::names`].
    pub filter: usize,
    /// The rule that failed, e.g. `"gopher_short_doc"` (datatrove's reason names where they
    /// exist).
    pub reason: &'static str,
}

/// A configured filter chain, in FineWeb's pipeline order: url_blocklist, language, score,
/// min_length, gopher_repetition, gopher_quality, c4, fineweb.
#[derive(Debug, Clone)]
pub struct FilterChain {
    stages: Vec<Stage>,
}

#[derive(Debug, Clone)]
enum Stage {
    UrlBlocklist(url_blocklist::UrlBlocklist),
    Language(language::LanguageFilter),
    Score(score::ScoreFilter),
    MinLength(min_length::MinLength),
    GopherRepetition(gopher_repetition::GopherRepetition),
    GopherQuality(gopher_quality::GopherQuality),
    C4(c4::C4),
    FineWeb(fineweb::FineWeb),
}

impl Stage {
    fn name(&self) -> &'static str {
        match self {
            Stage::UrlBlocklist(_) => "url_blocklist",
            Stage::Language(_) => "language",
            Stage::Score(_) => "score",
            Stage::MinLength(_) => "min_length",
            Stage::GopherRepetition(_) => "gopher_repetition",
            Stage::GopherQuality(_) => "gopher_quality",
            Stage::C4(_) => "c4",
            Stage::FineWeb(_) => "fineweb",
        }
    }
}

impl FilterChain {
    /// Validates thresholds and builds the chain. Errors are [`DataError::Config`] with the
    /// field spelled `{field_prefix}.gopher_quality.min_doc_words` etc.; a blocklist file that
    /// cannot be read is a [`DataError::Io`] naming it.
    pub fn new(config: &FilterConfig, field_prefix: &str) -> Result<Self, DataError> {
        let f = |section| Fields::new(field_prefix, section);
        let mut stages = Vec::new();
        if let Some(c) = &config.url_blocklist {
            stages.push(Stage::UrlBlocklist(url_blocklist::UrlBlocklist::new(
                c,
                &f("url_blocklist"),
            )?));
        }
        if let Some(c) = &config.language {
            stages.push(Stage::Language(language::LanguageFilter::new(
                c,
                &f("language"),
            )?));
        }
        if let Some(c) = &config.score {
            stages.push(Stage::Score(score::ScoreFilter::new(c, &f("score"))?));
        }
        if let Some(c) = &config.min_length {
            stages.push(Stage::MinLength(min_length::MinLength::new(
                c,
                &f("min_length"),
            )?));
        }
        if let Some(c) = &config.gopher_repetition {
            stages.push(Stage::GopherRepetition(
                gopher_repetition::GopherRepetition::new(c, &f("gopher_repetition"))?,
            ));
        }
        if let Some(c) = &config.gopher_quality {
            stages.push(Stage::GopherQuality(gopher_quality::GopherQuality::new(
                c,
                &f("gopher_quality"),
            )?));
        }
        if let Some(c) = &config.c4 {
            stages.push(Stage::C4(c4::C4::new(c, &f("c4"))?));
        }
        if let Some(c) = &config.fineweb {
            stages.push(Stage::FineWeb(fineweb::FineWeb::new(c, &f("fineweb"))?));
        }
        Ok(FilterChain { stages })
    }

    /// Names of the enabled filters, in order (e.g. `"gopher_quality"`).
    pub fn names(&self) -> Vec<&'static str> {
        self.stages.iter().map(Stage::name).collect()
    }

    /// Whether no filter is enabled.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs the filters in order; the first that rejects stops the chain. Filters may edit the
    /// text (C4 removes lines, as datatrove does), so on `Ok` `doc.text` is what passed.
    pub fn apply(&self, doc: &mut Document) -> Result<(), Rejection> {
        let mut cache = TokenCache::default();
        for (i, stage) in self.stages.iter().enumerate() {
            let result = match stage {
                Stage::UrlBlocklist(s) => s.check(doc),
                Stage::Language(s) => s.check(&doc.text),
                Stage::Score(s) => s.check(doc),
                Stage::MinLength(s) => s.check(&doc.text),
                Stage::GopherRepetition(s) => s.check(&doc.text, &mut cache),
                Stage::GopherQuality(s) => s.check(&doc.text, cache.get(&doc.text)),
                Stage::C4(s) => s.check(&doc.text).map(|text| {
                    if text != doc.text {
                        doc.text = text;
                        cache = TokenCache::default();
                    }
                }),
                Stage::FineWeb(s) => s.check(&doc.text, &mut cache),
            };
            result.map_err(|reason| Rejection { filter: i, reason })?;
        }
        Ok(())
    }
}

/// The word tokens of the document's current text, computed at most once per text.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Option<Vec<text::Token>>,
}

impl TokenCache {
    pub(crate) fn get(&mut self, text: &str) -> &[text::Token] {
        self.tokens.get_or_insert_with(|| text::tokens(text))
    }

    /// The number of tokens, without storing them when they are not cached yet.
    pub(crate) fn count(&mut self, text: &str) -> usize {
        match &self.tokens {
            Some(t) => t.len(),
            None => text::count_tokens(text),
        }
    }
}

/// Spells config field names as the recipe does (`{prefix}.{section}.{field}`) for errors, and
/// holds the shared range checks.
pub(crate) struct Fields {
    base: String,
}

impl Fields {
    pub(crate) fn new(prefix: &str, section: &str) -> Self {
        let base = if prefix.is_empty() {
            section.to_string()
        } else {
            format!("{prefix}.{section}")
        };
        Fields { base }
    }

    pub(crate) fn name(&self, field: &str) -> String {
        format!("{}.{field}", self.base)
    }

    pub(crate) fn err(&self, field: &str, message: impl Into<String>) -> DataError {
        DataError::config(&self.name(field), message)
    }

    /// `None`, or a number in [0, 1].
    pub(crate) fn fraction(&self, field: &str, v: Option<f64>) -> Result<(), DataError> {
        match v {
            Some(x) if !(0.0..=1.0).contains(&x) => {
                Err(self.err(field, format!("{x} is not a fraction between 0 and 1")))
            }
            _ => Ok(()),
        }
    }

    /// `None`, or a finite number >= 0.
    pub(crate) fn non_negative(&self, field: &str, v: Option<f64>) -> Result<(), DataError> {
        match v {
            Some(x) if !(x.is_finite() && x >= 0.0) => {
                Err(self.err(field, format!("{x} is not a finite number >= 0")))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{ARTICLE, FRENCH, GERMAN};
    use super::*;

    /// Every rule set on, with published defaults.
    fn all_defaults() -> FilterConfig {
        FilterConfig {
            url_blocklist: Some(UrlBlocklistConfig {
                domains: vec!["spam.example".into()],
                file: None,
            }),
            language: Some(LanguageConfig::default()),
            score: Some(ScoreConfig::default()),
            min_length: Some(MinLengthConfig::default()),
            gopher_repetition: Some(GopherRepetitionConfig::default()),
            gopher_quality: Some(GopherQualityConfig::default()),
            c4: Some(C4Config::default()),
            fineweb: Some(FineWebConfig::default()),
        }
    }

    fn article() -> Document {
        Document {
            url: Some("https://news.example.org/2024/library".into()),
            score: Some(3.4),
            ..Document::from_text(ARTICLE)
        }
    }

    #[test]
    fn chain_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FilterChain>();
    }

    #[test]
    fn article_passes_every_rule_set_with_defaults() {
        let chain = FilterChain::new(&all_defaults(), "data.sources[0].filters").unwrap();
        assert_eq!(
            chain.names(),
            vec![
                "url_blocklist",
                "language",
                "score",
                "min_length",
                "gopher_repetition",
                "gopher_quality",
                "c4",
                "fineweb"
            ]
        );
        let mut doc = article();
        assert_eq!(chain.apply(&mut doc), Ok(()));
        // C4 removed the title (no terminal punctuation) and the blank lines.
        assert!(doc
            .text
            .starts_with("The Riverside Public Library reopened"));
        assert!(!doc.text.contains("\n\n"));

        // FineWeb's own configuration (C4 keeps lines without terminal punctuation).
        let fineweb = FilterConfig {
            c4: Some(C4Config {
                filter_no_terminal_punct: false,
                ..Default::default()
            }),
            ..all_defaults()
        };
        let mut doc = article();
        assert_eq!(
            FilterChain::new(&fineweb, "").unwrap().apply(&mut doc),
            Ok(())
        );
        assert!(doc
            .text
            .starts_with("Riverside Library Reopens After Two-Year Renovation\nThe Riverside"));
    }

    #[test]
    fn rejections_name_the_filter_and_reason() {
        let chain = FilterChain::new(&all_defaults(), "").unwrap();
        let names = chain.names();
        let reject = |doc: &mut Document| {
            let r = chain.apply(doc).unwrap_err();
            (names[r.filter], r.reason)
        };
        let mut blocked = Document {
            url: Some("http://www.spam.example/x".into()),
            ..article()
        };
        assert_eq!(reject(&mut blocked), ("url_blocklist", "domain"));
        let mut german = Document {
            text: GERMAN.into(),
            ..article()
        };
        assert_eq!(reject(&mut german), ("language", "wrong_language"));
        let mut french = Document {
            text: FRENCH.into(),
            ..article()
        };
        assert_eq!(reject(&mut french), ("language", "wrong_language"));
        let mut low = Document {
            score: Some(1.0),
            ..article()
        };
        assert_eq!(reject(&mut low), ("score", "score_below_min"));
        let mut unscored = Document {
            score: None,
            ..article()
        };
        assert_eq!(reject(&mut unscored), ("score", "score_missing"));
        let short = "The library reopened on Saturday after a long renovation, and many residents came to see it.";
        let mut short = Document {
            text: short.into(),
            ..article()
        };
        assert_eq!(reject(&mut short), ("min_length", "too_few_chars"));
        let mut lorem = Document {
            text: format!("{ARTICLE}\n\nLorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."),
            ..article()
        };
        assert_eq!(reject(&mut lorem), ("c4", "lorem_ipsum"));
        let repeated = format!("{ARTICLE}\n\n{}", ARTICLE.split("\n\n").nth(1).unwrap()).repeat(2);
        let mut repeated = Document {
            text: repeated,
            ..article()
        };
        assert_eq!(reject(&mut repeated).0, "gopher_repetition");
    }

    #[test]
    fn german_is_kept_when_listed() {
        let cfg = FilterConfig {
            language: Some(LanguageConfig {
                languages: vec!["en".into(), "de".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let chain = FilterChain::new(&cfg, "").unwrap();
        assert_eq!(chain.apply(&mut Document::from_text(GERMAN)), Ok(()));
        assert_eq!(
            chain.apply(&mut Document::from_text(FRENCH)),
            Err(Rejection {
                filter: 0,
                reason: "wrong_language"
            })
        );
    }

    #[test]
    fn empty_config_is_an_empty_chain() {
        let chain = FilterChain::new(&FilterConfig::default(), "x").unwrap();
        assert!(chain.is_empty());
        let mut doc = Document::from_text("");
        assert_eq!(chain.apply(&mut doc), Ok(()));
    }

    #[test]
    fn yaml_style_config_uses_published_defaults() {
        // `{}` turns a rule set on with its defaults; `null` turns one rule off.
        let cfg: FilterConfig = serde_json::from_str(
            r#"{"gopher_quality": {}, "c4": {"filter_no_terminal_punct": false},
                "gopher_repetition": {"dup_line_frac": null, "top_n_grams": [[2, 0.25]]}}"#,
        )
        .unwrap();
        assert_eq!(cfg.gopher_quality, Some(GopherQualityConfig::default()));
        let c4 = cfg.c4.as_ref().unwrap();
        assert!(!c4.filter_no_terminal_punct && c4.min_num_sentences == Some(5));
        let rep = cfg.gopher_repetition.as_ref().unwrap();
        assert_eq!(rep.dup_line_frac, None);
        assert_eq!(rep.dup_para_frac, Some(0.3));
        assert_eq!(rep.top_n_grams, vec![(2, 0.25)]);
        assert!(cfg.fineweb.is_none() && cfg.language.is_none());
        let chain = FilterChain::new(&cfg, "").unwrap();
        assert_eq!(
            chain.names(),
            vec!["gopher_repetition", "gopher_quality", "c4"]
        );
        // Unknown fields are errors.
        let bad = serde_json::from_str::<FilterConfig>(r#"{"gopher_quality": {"min_words": 3}}"#);
        assert!(bad.unwrap_err().to_string().contains("min_words"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let cfg = FilterConfig {
            gopher_quality: Some(GopherQualityConfig {
                min_doc_words: Some(10),
                max_doc_words: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = FilterChain::new(&cfg, "data.sources[3].filters").unwrap_err();
        match e {
            DataError::Config { field, .. } => assert_eq!(
                field,
                "data.sources[3].filters.gopher_quality.min_doc_words"
            ),
            other => panic!("{other}"),
        }
        let cfg = FilterConfig {
            fineweb: Some(FineWebConfig {
                short_line_thr: Some(2.0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = FilterChain::new(&cfg, "web").unwrap_err().to_string();
        assert!(e.contains("`web.fineweb.short_line_thr`"), "{e}");
        let cfg = FilterConfig {
            url_blocklist: Some(UrlBlocklistConfig {
                domains: vec![],
                file: Some("/nonexistent/kiln-block.txt".into()),
            }),
            ..Default::default()
        };
        let e = FilterChain::new(&cfg, "web").unwrap_err();
        assert!(
            matches!(&e, DataError::Io { path, .. } if path.ends_with("kiln-block.txt")),
            "{e}"
        );
    }
}
