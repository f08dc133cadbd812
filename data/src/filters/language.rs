//! Language identification with the `whatlang` crate (trigram and alphabet profiles of 70
//! languages, pure Rust, no model file).
//!
//! FineWeb kept documents whose top fastText `lid.176` language was English with a probability
//! above 0.65 (datatrove's `LanguageFilter`, `language_threshold=0.65`). whatlang's confidence is
//! on a different scale, so that number does not carry over: whatlang reports the relative
//! margin between its two best languages, mapped to 1.0 once the margin exceeds
//! `3 / trigram_count + 0.015`. In practice any single-language paragraph of a few sentences
//! scores 1.0, a short phrase ("Click here to read more.") about 0.2, a line of code or a
//! product-code list below 0.1, and whatlang itself calls a detection reliable above 0.9
//! (`Info::is_reliable`). kiln's default `min_score` is therefore **0.9**: whatlang's own
//! reliability cut, which, like FineWeb's 0.65, keeps ordinary prose and drops text too short or
//! too mixed for the detector to be sure.

use serde::{Deserialize, Serialize};
use whatlang::Lang;

use super::Fields;
use crate::DataError;

/// Settings of the language filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanguageConfig {
    /// Languages to keep, as ISO 639-1 (`en`) or ISO 639-3 (`eng`) codes. Default: `[en]`.
    /// Codes whatlang does not detect are an error. `zh` is Mandarin (`cmn`), `no`/`nb`
    /// Bokmål, `fa` Persian (`pes`).
    pub languages: Vec<String>,
    /// Minimum whatlang confidence (0 to 1) of the detected language. Default: 0.9 (see the
    /// module docs for why not FineWeb's fastText 0.65).
    pub min_score: f64,
    /// Detect on at most this many leading characters (speed: whatlang costs ~40 µs per KB past
    /// a ~200 µs base). Default: `null`, the whole text, as datatrove does.
    pub max_chars: Option<usize>,
}

impl Default for LanguageConfig {
    fn default() -> Self {
        LanguageConfig {
            languages: vec!["en".into()],
            min_score: 0.9,
            max_chars: None,
        }
    }
}

/// ISO 639-1 codes of the languages whatlang 0.18 detects.
const ISO_639_1: [(&str, Lang); 72] = [
    ("af", Lang::Afr),
    ("ak", Lang::Aka),
    ("am", Lang::Amh),
    ("ar", Lang::Ara),
    ("az", Lang::Aze),
    ("be", Lang::Bel),
    ("bg", Lang::Bul),
    ("bn", Lang::Ben),
    ("ca", Lang::Cat),
    ("cs", Lang::Ces),
    ("cy", Lang::Cym),
    ("da", Lang::Dan),
    ("de", Lang::Deu),
    ("el", Lang::Ell),
    ("en", Lang::Eng),
    ("eo", Lang::Epo),
    ("es", Lang::Spa),
    ("et", Lang::Est),
    ("fa", Lang::Pes),
    ("fi", Lang::Fin),
    ("fr", Lang::Fra),
    ("gu", Lang::Guj),
    ("he", Lang::Heb),
    ("hi", Lang::Hin),
    ("hr", Lang::Hrv),
    ("hu", Lang::Hun),
    ("hy", Lang::Hye),
    ("id", Lang::Ind),
    ("it", Lang::Ita),
    ("ja", Lang::Jpn),
    ("jv", Lang::Jav),
    ("ka", Lang::Kat),
    ("km", Lang::Khm),
    ("kn", Lang::Kan),
    ("ko", Lang::Kor),
    ("la", Lang::Lat),
    ("lt", Lang::Lit),
    ("lv", Lang::Lav),
    ("mk", Lang::Mkd),
    ("ml", Lang::Mal),
    ("mr", Lang::Mar),
    ("my", Lang::Mya),
    ("nb", Lang::Nob),
    ("ne", Lang::Nep),
    ("nl", Lang::Nld),
    ("no", Lang::Nob),
    ("or", Lang::Ori),
    ("pa", Lang::Pan),
    ("pl", Lang::Pol),
    ("pt", Lang::Por),
    ("ro", Lang::Ron),
    ("ru", Lang::Rus),
    ("si", Lang::Sin),
    ("sk", Lang::Slk),
    ("sl", Lang::Slv),
    ("sn", Lang::Sna),
    ("sr", Lang::Srp),
    ("sv", Lang::Swe),
    ("ta", Lang::Tam),
    ("te", Lang::Tel),
    ("th", Lang::Tha),
    ("tk", Lang::Tuk),
    ("tl", Lang::Tgl),
    ("tr", Lang::Tur),
    ("uk", Lang::Ukr),
    ("ur", Lang::Urd),
    ("uz", Lang::Uzb),
    ("vi", Lang::Vie),
    ("yi", Lang::Yid),
    ("zh", Lang::Cmn),
    ("zu", Lang::Zul),
    ("fil", Lang::Tgl),
];

/// The whatlang language for an ISO 639-1 or 639-3 code (case-insensitive).
pub fn parse_language(code: &str) -> Option<Lang> {
    let code = code.trim().to_ascii_lowercase();
    if let Some((_, l)) = ISO_639_1.iter().find(|(c, _)| *c == code) {
        return Some(*l);
    }
    match code.as_str() {
        "zho" | "chi" => Some(Lang::Cmn),
        "fas" | "per" => Some(Lang::Pes),
        "nor" => Some(Lang::Nob),
        _ => Lang::from_code(code),
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LanguageFilter {
    langs: Vec<Lang>,
    min_score: f64,
    max_chars: Option<usize>,
}

impl LanguageFilter {
    pub(crate) fn new(cfg: &LanguageConfig, f: &Fields) -> Result<Self, DataError> {
        if cfg.languages.is_empty() {
            return Err(f.err(
                "languages",
                "is empty: list the languages to keep, e.g. [en]",
            ));
        }
        let mut langs = Vec::new();
        for code in &cfg.languages {
            let lang = parse_language(code).ok_or_else(|| {
                f.err(
                    "languages",
                    format!("{code:?} is not a language whatlang detects (use ISO 639-1 like \"en\" or 639-3 like \"eng\")"),
                )
            })?;
            langs.push(lang);
        }
        f.fraction("min_score", Some(cfg.min_score))?;
        if cfg.max_chars == Some(0) {
            return Err(f.err(
                "max_chars",
                "0 leaves nothing to detect; use null for the whole text",
            ));
        }
        Ok(LanguageFilter {
            langs,
            min_score: cfg.min_score,
            max_chars: cfg.max_chars,
        })
    }

    pub(crate) fn check(&self, text: &str) -> Result<(), &'static str> {
        let sample = match self.max_chars {
            Some(max) => text
                .char_indices()
                .nth(max)
                .map_or(text, |(i, _)| &text[..i]),
            None => text,
        };
        let Some(info) = whatlang::detect(sample) else {
            return Err("language_undetected");
        };
        if !self.langs.contains(&info.lang()) {
            return Err("wrong_language");
        }
        if info.confidence() < self.min_score {
            return Err("low_language_score");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{ARTICLE, FRENCH, GERMAN};
    use super::*;

    fn filter(langs: &[&str]) -> LanguageFilter {
        let cfg = LanguageConfig {
            languages: langs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        LanguageFilter::new(&cfg, &Fields::new("test", "language")).unwrap()
    }

    #[test]
    fn german_and_french_are_dropped_for_english_only() {
        let en = filter(&["en"]);
        assert_eq!(en.check(ARTICLE), Ok(()));
        assert_eq!(en.check(GERMAN), Err("wrong_language"));
        assert_eq!(en.check(FRENCH), Err("wrong_language"));
    }

    #[test]
    fn extra_languages_are_kept_when_listed() {
        let en_de = filter(&["en", "deu"]);
        assert_eq!(en_de.check(ARTICLE), Ok(()));
        assert_eq!(en_de.check(GERMAN), Ok(()));
        assert_eq!(en_de.check(FRENCH), Err("wrong_language"));
        assert_eq!(filter(&["EN", "de", "fr"]).check(FRENCH), Ok(()));
    }

    #[test]
    fn unsure_detections_are_dropped() {
        let en = filter(&["en"]);
        // Too short to be sure, and not language at all.
        assert!(en.check("Click here to read more.").is_err());
        assert!(en.check("SKU 1234-XL | 19.99 | 3 in stock").is_err());
        assert_eq!(en.check("12345 67890"), Err("language_undetected"));
        // A sentence is enough.
        assert_eq!(
            en.check("Add the flour and sugar to the bowl, then mix well until smooth."),
            Ok(())
        );
    }

    #[test]
    fn max_chars_detects_on_a_prefix() {
        let cfg = LanguageConfig {
            max_chars: Some(200),
            ..Default::default()
        };
        let f = LanguageFilter::new(&cfg, &Fields::new("test", "language")).unwrap();
        assert_eq!(
            f.check(&format!("{ARTICLE}\n{GERMAN}{GERMAN}{GERMAN}")),
            Ok(())
        );
        assert_eq!(
            f.check(&format!("{GERMAN}\n{ARTICLE}")),
            Err("wrong_language")
        );
    }

    #[test]
    fn codes() {
        assert_eq!(parse_language("en"), Some(Lang::Eng));
        assert_eq!(parse_language("eng"), Some(Lang::Eng));
        assert_eq!(parse_language("zh"), Some(Lang::Cmn));
        assert_eq!(parse_language("xx"), None);
        // Every whatlang language has a 639-1 code in the table (Esperanto to Welsh).
        for l in Lang::all() {
            assert!(
                ISO_639_1.iter().any(|(_, x)| x == l),
                "{l:?} has no ISO 639-1 entry"
            );
        }
        let e = LanguageFilter::new(
            &LanguageConfig {
                languages: vec!["english".into()],
                ..Default::default()
            },
            &Fields::new("data.sources[2].filters", "language"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("data.sources[2].filters.language.languages") && e.contains("english"),
            "{e}"
        );
        let e = LanguageFilter::new(
            &LanguageConfig {
                min_score: 1.5,
                ..Default::default()
            },
            &Fields::new("s", "language"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("s.language.min_score"), "{e}");
    }
}
