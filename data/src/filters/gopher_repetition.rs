//! Gopher repetition rules: Rae et al. 2021 ("Gopher"), appendix A.1.1 ("Repetition Removal")
//! and table A1, as implemented in datatrove's `GopherRepetitionFilter`
//! (`datatrove/pipeline/filters/gopher_repetition_filter.py`), which FineWeb ran with its
//! defaults.
//!
//! Table A1 of the paper (all "fractions of characters" are over the whole text's length):
//!
//! | rule                                   | threshold |
//! |----------------------------------------|-----------|
//! | duplicate line fraction                | 0.30      |
//! | duplicate paragraph fraction           | 0.30      |
//! | duplicate line character fraction      | 0.20      |
//! | duplicate paragraph character fraction | 0.20      |
//! | top 2-gram character fraction          | 0.20      |
//! | top 3-gram character fraction          | 0.18      |
//! | top 4-gram character fraction          | 0.16      |
//! | duplicate 5-gram character fraction    | 0.15      |
//! | duplicate 6-gram character fraction    | 0.14      |
//! | duplicate 7-gram character fraction    | 0.13      |
//! | duplicate 8-gram character fraction    | 0.12      |
//! | duplicate 9-gram character fraction    | 0.11      |
//! | duplicate 10-gram character fraction   | 0.10      |
//!
//! Counting follows datatrove exactly: paragraphs are `re.split("\n{2,}", text.strip())`,
//! lines `re.split("\n+", text)`; a duplicate is an element equal to an earlier one. The top
//! n-gram's characters are its length with single spaces between words times its count (ties go
//! to the n-gram seen first, as Python's `Counter.most_common`). Duplicated n-gram characters
//! are counted by datatrove's `find_all_duplicate` walk: at each position, an n-gram seen before
//! adds its characters (words only, no spaces) and the walk jumps `n` words; otherwise it is
//! remembered and the walk moves one word. Words are [`super::text`]'s tokens
//! (spaCy's English tokenizer, as datatrove), punctuation tokens included. N-grams are compared by 64-bit hashes
//! (no allocation per n-gram).

use serde::{Deserialize, Serialize};

use super::text::{
    char_len, hash_str, py_strip, split_newline_runs, DuplicateCounter, HashMap64, HashSet64,
    NgramHasher, MAX_NGRAM,
};
use super::{Fields, TokenCache};
use crate::DataError;

/// Settings of the Gopher repetition rules. Names and defaults are datatrove's
/// `GopherRepetitionFilter` parameters (the paper's table A1). `null` turns a rule off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherRepetitionConfig {
    /// Duplicate lines / all lines above this drops the document (`dup_line_frac`). Paper: 0.3.
    pub dup_line_frac: Option<f64>,
    /// Duplicate paragraphs / all paragraphs above this drops it (`dup_para_frac`). Paper: 0.3.
    pub dup_para_frac: Option<f64>,
    /// Characters in duplicate lines / text length above this drops it (`dup_line_char_frac`).
    /// Paper: 0.2.
    pub dup_line_char_frac: Option<f64>,
    /// Characters in duplicate paragraphs / text length above this drops it
    /// (`dup_para_char_frac`). Paper: 0.2.
    pub dup_para_char_frac: Option<f64>,
    /// `[n, max_fraction]` pairs: characters covered by the most frequent n-gram / text length
    /// above the fraction drops the document (`top_{n}_gram`). Paper: 2→0.20, 3→0.18, 4→0.16.
    /// `n` is 1 to 10.
    pub top_n_grams: Vec<(usize, f64)>,
    /// `[n, max_fraction]` pairs: characters in duplicated n-grams / text length above the
    /// fraction drops the document (`duplicated_{n}_n_grams`). Paper: 5→0.15, 6→0.14, 7→0.13,
    /// 8→0.12, 9→0.11, 10→0.10. `n` is 1 to 10.
    pub dup_n_grams: Vec<(usize, f64)>,
}

impl Default for GopherRepetitionConfig {
    fn default() -> Self {
        GopherRepetitionConfig {
            dup_line_frac: Some(0.3),
            dup_para_frac: Some(0.3),
            dup_line_char_frac: Some(0.2),
            dup_para_char_frac: Some(0.2),
            top_n_grams: vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            dup_n_grams: vec![
                (5, 0.15),
                (6, 0.14),
                (7, 0.13),
                (8, 0.12),
                (9, 0.11),
                (10, 0.10),
            ],
        }
    }
}

const TOP_REASONS: [&str; MAX_NGRAM] = [
    "top_1_gram",
    "top_2_gram",
    "top_3_gram",
    "top_4_gram",
    "top_5_gram",
    "top_6_gram",
    "top_7_gram",
    "top_8_gram",
    "top_9_gram",
    "top_10_gram",
];
const DUP_REASONS: [&str; MAX_NGRAM] = [
    "duplicated_1_n_grams",
    "duplicated_2_n_grams",
    "duplicated_3_n_grams",
    "duplicated_4_n_grams",
    "duplicated_5_n_grams",
    "duplicated_6_n_grams",
    "duplicated_7_n_grams",
    "duplicated_8_n_grams",
    "duplicated_9_n_grams",
    "duplicated_10_n_grams",
];

#[derive(Debug, Clone)]
pub(crate) struct GopherRepetition {
    cfg: GopherRepetitionConfig,
}

impl GopherRepetition {
    pub(crate) fn new(cfg: &GopherRepetitionConfig, f: &Fields) -> Result<Self, DataError> {
        f.fraction("dup_line_frac", cfg.dup_line_frac)?;
        f.fraction("dup_para_frac", cfg.dup_para_frac)?;
        f.fraction("dup_line_char_frac", cfg.dup_line_char_frac)?;
        f.fraction("dup_para_char_frac", cfg.dup_para_char_frac)?;
        for (name, list) in [
            ("top_n_grams", &cfg.top_n_grams),
            ("dup_n_grams", &cfg.dup_n_grams),
        ] {
            for &(n, frac) in list {
                if !(1..=MAX_NGRAM).contains(&n) {
                    return Err(f.err(
                        name,
                        format!("n-gram size {n} is not between 1 and {MAX_NGRAM}"),
                    ));
                }
                f.fraction(name, Some(frac))?;
            }
        }
        Ok(GopherRepetition { cfg: cfg.clone() })
    }

    pub(crate) fn check(&self, text: &str, cache: &mut TokenCache) -> Result<(), &'static str> {
        let c = &self.cfg;
        let text_chars = char_len(text);
        if text_chars == 0 {
            return Ok(());
        }
        let frac = |x: usize| x as f64 / text_chars as f64;

        if c.dup_para_frac.is_some() || c.dup_para_char_frac.is_some() {
            let mut counter = DuplicateCounter::default();
            split_newline_runs(py_strip(text), 2, |p| counter.add(p));
            let d = counter.counts;
            if c.dup_para_frac
                .is_some_and(|m| d.elements as f64 / d.total as f64 > m)
            {
                return Err("dup_para_frac");
            }
            if c.dup_para_char_frac.is_some_and(|m| frac(d.chars) > m) {
                return Err("dup_para_char_frac");
            }
        }
        if c.dup_line_frac.is_some() || c.dup_line_char_frac.is_some() {
            let mut counter = DuplicateCounter::default();
            split_newline_runs(text, 1, |l| counter.add(l));
            let d = counter.counts;
            if c.dup_line_frac
                .is_some_and(|m| d.elements as f64 / d.total as f64 > m)
            {
                return Err("dup_line_frac");
            }
            if c.dup_line_char_frac.is_some_and(|m| frac(d.chars) > m) {
                return Err("dup_line_char_frac");
            }
        }
        if c.top_n_grams.is_empty() && c.dup_n_grams.is_empty() {
            return Ok(());
        }
        let tokens = cache.get(text);
        let word_hashes: Vec<u64> = tokens.iter().map(|t| hash_str(t.as_str(text))).collect();
        let ngrams = NgramHasher::new(word_hashes.iter().copied());
        // prefix[i] = characters of tokens[..i]
        let mut prefix = Vec::with_capacity(tokens.len() + 1);
        prefix.push(0usize);
        for t in tokens {
            prefix.push(prefix.last().unwrap() + t.chars as usize);
        }
        // How often each token's word occurs in the document: bounds below skip the exact
        // n-gram counts when they cannot reach a threshold (most documents).
        let freq = word_frequencies(&word_hashes);

        let mut counts: HashMap64<(u32, u32)> = HashMap64::default();
        for &(n, max) in &c.top_n_grams {
            if tokens.len() < n {
                continue;
            }
            // An n-gram occurs at most as often as its rarest word.
            let bound = (0..=tokens.len() - n)
                .map(|i| {
                    let count = freq[i..i + n].iter().copied().min().unwrap_or(0) as usize;
                    count * (prefix[i + n] - prefix[i] + n - 1)
                })
                .max()
                .unwrap_or(0);
            if frac(bound) <= max {
                continue;
            }
            counts.clear();
            counts.reserve(tokens.len());
            let pow = NgramHasher::base_pow(n);
            for i in 0..=tokens.len() - n {
                counts
                    .entry(ngrams.hash(i, n, pow))
                    .or_insert((0, i as u32))
                    .0 += 1;
            }
            // Most frequent; ties go to the earliest first occurrence (Counter.most_common).
            let (count, first) = counts
                .values()
                .copied()
                .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
                .expect("at least one n-gram");
            let chars = prefix[first as usize + n] - prefix[first as usize] + (n - 1);
            if frac(chars * count as usize) > max {
                return Err(TOP_REASONS[n - 1]);
            }
        }

        let mut seen = HashSet64::default();
        // If every n-gram is distinct, so is every longer one (it would contain a repeated
        // n-gram): the smallest such n ends the work for all larger n.
        let mut all_distinct_from: Option<usize> = None;
        for &(n, max) in &c.dup_n_grams {
            if all_distinct_from.is_some_and(|m| n >= m) {
                continue;
            }
            // The walk counts non-overlapping windows whose words all occur at least twice.
            if frac(repeated_run_chars(&freq, &prefix, n)) <= max {
                continue;
            }
            let repeated = duplicated_ngram_chars(&ngrams, &prefix, n, &mut seen);
            if repeated == 0 {
                all_distinct_from = Some(all_distinct_from.map_or(n, |m| m.min(n)));
            }
            if frac(repeated) > max {
                return Err(DUP_REASONS[n - 1]);
            }
        }
        Ok(())
    }
}

/// For each position, how many times its word occurs in the whole sequence.
fn word_frequencies(word_hashes: &[u64]) -> Vec<u32> {
    let mut counts: HashMap64<u32> = HashMap64::default();
    counts.reserve(word_hashes.len());
    for &h in word_hashes {
        *counts.entry(h).or_insert(0) += 1;
    }
    word_hashes.iter().map(|h| counts[h]).collect()
}

/// Characters of the words that lie in runs of at least `n` consecutive words that each occur
/// at least twice: an upper bound on [`duplicated_ngram_chars`] (every word of a repeated
/// n-gram occurs at least twice, and the walk counts disjoint windows).
fn repeated_run_chars(freq: &[u32], prefix: &[usize], n: usize) -> usize {
    let mut total = 0;
    let mut run_start = 0;
    for i in 0..=freq.len() {
        if i == freq.len() || freq[i] < 2 {
            if i - run_start >= n {
                total += prefix[i] - prefix[run_start];
            }
            run_start = i + 1;
        }
    }
    total
}

/// datatrove's `find_all_duplicate(words, n)`: characters (without spaces) of n-grams that
/// repeat an earlier n-gram, jumping over each repeat.
fn duplicated_ngram_chars(
    ngrams: &NgramHasher,
    prefix: &[usize],
    n: usize,
    seen: &mut HashSet64,
) -> usize {
    seen.clear();
    if ngrams.len() < n {
        return 0;
    }
    seen.reserve(ngrams.len() + 1 - n);
    let pow = NgramHasher::base_pow(n);
    let mut repeated = 0;
    let mut i = 0;
    while i + n <= ngrams.len() {
        if seen.insert(ngrams.hash(i, n, pow)) {
            i += 1;
        } else {
            repeated += prefix[i + n] - prefix[i];
            i += n;
        }
    }
    repeated
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::ARTICLE;
    use super::*;

    fn run(cfg: &GopherRepetitionConfig, text: &str) -> Result<(), &'static str> {
        let f = GopherRepetition::new(cfg, &Fields::new("test", "gopher_repetition")).unwrap();
        f.check(text, &mut TokenCache::default())
    }

    fn check(text: &str) -> Result<(), &'static str> {
        run(&GopherRepetitionConfig::default(), text)
    }

    /// Distinct sentences (no shared 5-grams), one per line or paragraph.
    const SENTENCES: [&str; 12] = [
        "The morning train to the coast was delayed by almost an hour.",
        "Farmers in the valley expect a good harvest after the wet spring.",
        "Our new recipe uses roasted peppers, garlic and a little lemon.",
        "Scientists measured the glacier again and found it had shrunk.",
        "The museum will host a free concert for families next Sunday.",
        "Local schools are hiring teachers for mathematics and music.",
        "A small bakery on Elm Street sells bread made with rye flour.",
        "Volunteers cleaned the beach and collected forty bags of plastic.",
        "The council approved a plan to plant trees along the main road.",
        "Engineers tested the bridge with heavy trucks before it opened.",
        "Birdwatchers counted more swallows this year than ever before.",
        "The football club signed a young goalkeeper from the academy.",
    ];

    fn distinct_lines(n: usize) -> Vec<String> {
        SENTENCES[..n].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn article_passes() {
        assert_eq!(check(ARTICLE), Ok(()));
    }

    #[test]
    fn duplicate_line_fraction() {
        let only_line_rules = GopherRepetitionConfig {
            dup_line_char_frac: None,
            dup_para_frac: None,
            dup_para_char_frac: None,
            top_n_grams: vec![],
            dup_n_grams: vec![],
            ..Default::default()
        };
        // 10 lines, 3 of them repeats of line 0: 0.3 is not above 0.3.
        let doc = |dups: usize| {
            let mut lines = distinct_lines(10 - dups);
            for _ in 0..dups {
                lines.push(lines[0].clone());
            }
            lines.join("\n")
        };
        assert_eq!(run(&only_line_rules, &doc(3)), Ok(()));
        assert_eq!(run(&only_line_rules, &doc(4)), Err("dup_line_frac"));
        // With all rules on, a page of repeated navigation lines is dropped.
        let mut page = distinct_lines(6);
        page.extend(
            [
                "Home", "About us", "Contact", "Home", "About us", "Contact", "Home",
            ]
            .map(String::from),
        );
        assert_eq!(check(&page.join("\n")), Err("dup_line_frac"));
    }

    #[test]
    fn duplicate_line_characters() {
        // One long line repeated once among short distinct lines: 1 duplicate of 10 lines
        // passes the line count rule but holds more than 20% of the characters.
        let long = "Subscribe to our weekly newsletter for exclusive deals on garden furniture, \
                    outdoor lighting, barbecue grills, patio heaters and camping equipment, with \
                    free delivery on orders above fifty pounds and returns within thirty days.";
        let mut lines = distinct_lines(8);
        lines.push(long.into());
        lines.push(long.into());
        let cfg = GopherRepetitionConfig {
            dup_para_char_frac: None,
            ..Default::default()
        };
        assert_eq!(run(&cfg, &lines.join("\n")), Err("dup_line_char_frac"));
        lines.pop();
        assert_eq!(run(&cfg, &lines.join("\n")), Ok(()));
    }

    #[test]
    fn duplicate_paragraphs() {
        let paras = distinct_lines(10);
        let doc = |dups: usize| {
            let mut p = paras[..10 - dups].to_vec();
            for _ in 0..dups {
                p.push(p[1].clone());
            }
            p.join("\n\n")
        };
        let cfg = GopherRepetitionConfig {
            dup_para_char_frac: None,
            dup_line_frac: None,
            dup_line_char_frac: None,
            top_n_grams: vec![],
            dup_n_grams: vec![],
            ..Default::default()
        };
        assert_eq!(run(&cfg, &doc(3)), Ok(()));
        assert_eq!(run(&cfg, &doc(4)), Err("dup_para_frac"));
        // By characters: one copy of the 65-character paragraph is 65/648 = 0.10 of the text,
        // three copies 0.30 > 0.2.
        let chars_only = GopherRepetitionConfig {
            dup_para_frac: None,
            dup_para_char_frac: Some(0.2),
            ..cfg.clone()
        };
        assert_eq!(run(&chars_only, &doc(1)), Ok(()));
        assert_eq!(run(&chars_only, &doc(3)), Err("dup_para_char_frac"));
    }

    #[test]
    fn top_two_gram() {
        // "buy now" repeated among distinct filler: 2-gram "buy now" = 7 chars per occurrence.
        let doc = |k: usize| {
            let mut s = String::new();
            for i in 0..40 {
                s.push_str(&format!("w{i:03}x "));
            }
            for _ in 0..k {
                s.push_str("buy now ");
            }
            s.trim_end().to_string()
        };
        // 40 distinct 5-character words; "buy now" k times. Text length = 40*6 + 8k - 1.
        // k=13: 91 / 343 = 0.265 > 0.2. k=8: 56 / 303 = 0.18 <= 0.2.
        let only_top = GopherRepetitionConfig {
            dup_n_grams: vec![],
            top_n_grams: vec![(2, 0.2)],
            ..Default::default()
        };
        assert_eq!(run(&only_top, &doc(8)), Ok(()));
        assert_eq!(run(&only_top, &doc(13)), Err("top_2_gram"));
        assert_eq!(check(&doc(13)), Err("top_2_gram"));
    }

    #[test]
    fn duplicated_five_grams() {
        // A 5-word phrase (25 characters without spaces) repeated inside otherwise distinct
        // words. Text length = 60*6 + 30k - 1.
        let phrase = "click here to subscribe today";
        let doc = |k: usize| {
            let mut s = String::new();
            for i in 0..60 {
                s.push_str(&format!("w{i:03}x "));
                if i % 10 == 9 && (i / 10) < k {
                    s.push_str(phrase);
                    s.push(' ');
                }
            }
            s.trim_end().to_string()
        };
        let only5 = GopherRepetitionConfig {
            top_n_grams: vec![],
            dup_n_grams: vec![(5, 0.15)],
            ..Default::default()
        };
        // Each repeat after the first adds 25 duplicated characters (words without spaces).
        // k=2: 25 / 419 = 0.06; k=4: 75 / 479 = 0.157 > 0.15.
        assert_eq!(run(&only5, &doc(2)), Ok(()));
        assert_eq!(run(&only5, &doc(4)), Err("duplicated_5_n_grams"));
    }

    #[test]
    fn find_all_duplicate_walk_matches_datatrove() {
        // words a b a b a b, n=2: positions 0 "ab" new, 1 "ba" new, 2 "ab" dup (+2, jump to 4),
        // 4 "ab" dup (+2, jump to 6) -> 4 characters.
        let text = "a b a b a b";
        let toks = super::super::text::tokens(text);
        let ngrams = NgramHasher::new(toks.iter().map(|t| hash_str(t.as_str(text))));
        let mut prefix = vec![0];
        for t in &toks {
            prefix.push(prefix.last().unwrap() + t.chars as usize);
        }
        let mut seen = HashSet64::default();
        assert_eq!(duplicated_ngram_chars(&ngrams, &prefix, 2, &mut seen), 4);
        assert_eq!(duplicated_ngram_chars(&ngrams, &prefix, 3, &mut seen), 3);
        assert_eq!(duplicated_ngram_chars(&ngrams, &prefix, 7, &mut seen), 0);
    }

    #[test]
    fn ngram_hashes_tell_order_apart() {
        let text = "x y z y x z x y";
        let toks = super::super::text::tokens(text);
        let ngrams = NgramHasher::new(toks.iter().map(|t| hash_str(t.as_str(text))));
        let pow = NgramHasher::base_pow(2);
        // "x y" at 0 and 6 are equal; "y x" at 3 is not.
        assert_eq!(ngrams.hash(0, 2, pow), ngrams.hash(6, 2, pow));
        assert_ne!(ngrams.hash(0, 2, pow), ngrams.hash(3, 2, pow));
        assert_ne!(ngrams.hash(0, 2, pow), ngrams.hash(1, 2, pow));
    }

    /// datatrove's `GopherRepetitionFilter.filter`, transcribed with strings and no shortcuts.
    fn reference(cfg: &GopherRepetitionConfig, text: &str) -> Result<(), String> {
        use std::collections::{HashMap, HashSet};
        let len = text.chars().count() as f64;
        let dups = |items: &[&str]| {
            let mut seen = HashSet::new();
            let (mut n, mut chars) = (0usize, 0usize);
            for it in items {
                if !seen.insert(*it) {
                    n += 1;
                    chars += it.chars().count();
                }
            }
            (n, chars)
        };
        let mut paras = Vec::new();
        split_newline_runs(text.trim(), 2, |p| paras.push(p.to_string()));
        let paras: Vec<&str> = paras.iter().map(String::as_str).collect();
        let (n, chars) = dups(&paras);
        if cfg
            .dup_para_frac
            .is_some_and(|m| n as f64 / paras.len() as f64 > m)
        {
            return Err("dup_para_frac".into());
        }
        if cfg
            .dup_para_char_frac
            .is_some_and(|m| chars as f64 / len > m)
        {
            return Err("dup_para_char_frac".into());
        }
        let mut lines = Vec::new();
        split_newline_runs(text, 1, |p| lines.push(p.to_string()));
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (n, chars) = dups(&lines);
        if cfg
            .dup_line_frac
            .is_some_and(|m| n as f64 / lines.len() as f64 > m)
        {
            return Err("dup_line_frac".into());
        }
        if cfg
            .dup_line_char_frac
            .is_some_and(|m| chars as f64 / len > m)
        {
            return Err("dup_line_char_frac".into());
        }
        let words: Vec<&str> = super::super::text::tokens(text)
            .iter()
            .map(|t| t.as_str(text))
            .collect();
        for &(n, frac) in &cfg.top_n_grams {
            if words.len() < n {
                continue;
            }
            let grams: Vec<String> = (0..=words.len() - n)
                .map(|i| words[i..i + n].join(" "))
                .collect();
            let mut counter: HashMap<&str, (usize, usize)> = HashMap::new();
            for (i, g) in grams.iter().enumerate() {
                counter.entry(g.as_str()).or_insert((0, i)).0 += 1;
            }
            let (g, (count, _)) = counter
                .iter()
                .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
                .unwrap();
            if (g.chars().count() * count) as f64 / len > frac {
                return Err(format!("top_{n}_gram"));
            }
        }
        for &(n, frac) in &cfg.dup_n_grams {
            let mut seen = HashSet::new();
            let (mut repeated, mut i) = (0usize, 0usize);
            while i + n <= words.len() {
                let g = words[i..i + n].join("\u{1}");
                if seen.contains(&g) {
                    repeated += words[i..i + n]
                        .iter()
                        .map(|w| w.chars().count())
                        .sum::<usize>();
                    i += n;
                } else {
                    seen.insert(g);
                    i += 1;
                }
            }
            if repeated as f64 / len > frac {
                return Err(format!("duplicated_{n}_n_grams"));
            }
        }
        Ok(())
    }

    #[test]
    fn matches_a_direct_transcription_of_datatrove() {
        // Documents from small vocabularies repeat a lot; larger ones less. Compare every
        // verdict (with each rule group alone too, so the later rules get exercised).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |m: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m as u64) as usize
        };
        let vocab: Vec<String> = (0..300)
            .map(|i| format!("w{i}{}", "x".repeat(i % 6)))
            .collect();
        let configs = [
            GopherRepetitionConfig::default(),
            GopherRepetitionConfig {
                dup_n_grams: vec![],
                ..Default::default()
            },
            GopherRepetitionConfig {
                dup_line_frac: None,
                dup_para_frac: None,
                dup_line_char_frac: None,
                dup_para_char_frac: None,
                top_n_grams: vec![],
                ..Default::default()
            },
        ];
        let mut verdicts = std::collections::BTreeMap::new();
        for doc_i in 0..400 {
            let v = [3, 10, 40, 300][doc_i % 4];
            let mut text = String::new();
            for _ in 0..20 + next(400) {
                text.push_str(&vocab[next(v)]);
                text.push_str([" ", " ", " ", ", ", ". ", "\n", "\n\n"][next(7)]);
            }
            for cfg in &configs {
                let ours = run(cfg, &text).map_err(String::from);
                assert_eq!(ours, reference(cfg, &text), "doc {doc_i}: {text:?}");
                *verdicts.entry(ours.err().unwrap_or_default()).or_insert(0) += 1;
            }
        }
        // The generated documents reach every kind of verdict.
        for reason in ["", "dup_line_frac", "top_2_gram", "duplicated_5_n_grams"] {
            assert!(
                verdicts.contains_key(reason),
                "{reason} never happened: {verdicts:?}"
            );
        }
    }

    #[test]
    fn repetitive_spam_is_dropped() {
        let spam = "Best cheap watches online. Buy cheap watches online now.\n".repeat(20);
        assert!(check(&spam).is_err());
    }

    #[test]
    fn config_errors_name_the_field() {
        let f = Fields::new("data.sources[1].filters", "gopher_repetition");
        let bad = GopherRepetitionConfig {
            top_n_grams: vec![(11, 0.1)],
            ..Default::default()
        };
        let e = GopherRepetition::new(&bad, &f).unwrap_err().to_string();
        assert!(
            e.contains("data.sources[1].filters.gopher_repetition.top_n_grams"),
            "{e}"
        );
        let bad = GopherRepetitionConfig {
            dup_line_frac: Some(-0.1),
            ..Default::default()
        };
        let e = GopherRepetition::new(&bad, &f).unwrap_err().to_string();
        assert!(e.contains("gopher_repetition.dup_line_frac"), "{e}");
    }
}
