//! Text primitives shared by the rule sets: word tokens, line and paragraph splitting the way
//! datatrove's Python does it, and cheap 64-bit hashing for duplicate detection.
//!
//! # Words
//!
//! datatrove splits English into words with spaCy's rule-based tokenizer (`spacy.blank("en")`)
//! and strips the whitespace tokens; the Gopher and FineWeb rules count and compare those words.
//! [`tokenize`] gives the same tokens ([`super::spacy_en`]): `module.function()` is
//! `module.function` `(` `)`, `--flag` and `v1.2.3` stay whole, URLs stay whole, `/usr/lib` is
//! `/usr` `/` `lib`, `don't` is `do` `n't`, `e.g.` stays whole. A token is a *symbol* when all of
//! its characters are in datatrove's `PUNCTUATION_SET`, and *alphabetic* when one of them is a
//! letter (Python's `str.isalpha`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::spacy_en::{is_datatrove_punct, is_py_alpha, Splitter};

/// One token of a text: a byte range plus what the rules need to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub start: usize,
    pub end: usize,
    /// Length in Unicode scalar values (Python's `len`).
    pub chars: u32,
    /// Made only of punctuation characters (datatrove: every char in `PUNCTUATION_SET`).
    pub symbol: bool,
    /// Contains at least one alphabetic character (Python: `any(c.isalpha() for c in w)`).
    pub alpha: bool,
}

impl Token {
    pub fn as_str<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }

    fn new(text: &str, start: usize, end: usize) -> Self {
        let word = &text[start..end];
        if word.is_ascii() {
            // One table lookup per byte: bit 0 punctuation, bit 1 letter.
            let (mut all_punct, mut any_alpha) = (1u8, 0u8);
            for &b in word.as_bytes() {
                let class = ASCII_CLASS[usize::from(b)];
                all_punct &= class;
                any_alpha |= class;
            }
            return Token {
                start,
                end,
                chars: word.len() as u32,
                symbol: all_punct & 1 == 1,
                alpha: any_alpha & 2 == 2,
            };
        }
        let (mut chars, mut symbol, mut alpha) = (0u32, true, false);
        for c in word.chars() {
            chars += 1;
            symbol &= is_datatrove_punct(c);
            alpha |= is_py_alpha(c);
        }
        Token {
            start,
            end,
            chars,
            symbol,
            alpha,
        }
    }
}

/// For each ASCII byte: bit 0 set when it is in datatrove's `PUNCTUATION_SET`, bit 1 when it is
/// a letter.
static ASCII_CLASS: std::sync::LazyLock<[u8; 128]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|b| {
        let c = b as u8 as char;
        u8::from(is_datatrove_punct(c)) | u8::from(c.is_ascii_alphabetic()) << 1
    })
});

thread_local! {
    static SPLITTER: RefCell<Splitter> = RefCell::new(Splitter::default());
}

/// Calls `f` for every token of `text`, in order (see the module docs for the rules).
pub(crate) fn tokenize(text: &str, mut f: impl FnMut(Token)) {
    with_splitter(|s| s.split(text, |start, end| f(Token::new(text, start, end))));
}

/// The word tokens of `text`, punctuation tokens included (the rules in the module docs).
///
/// ```
/// use kiln_data::filters::text::words;
/// assert_eq!(words("It's 3.5% (approx.)"), ["It", "'s", "3.5", "%", "(", "approx", ".", ")"]);
/// ```
pub fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    tokenize(text, |t| out.push(&text[t.start..t.end]));
    out
}

/// The number of [`words`] of `text`, without collecting them.
pub fn count_words(text: &str) -> usize {
    count_tokens(text)
}

/// The number of sentences of `text` as datatrove counts them for English
/// (`len(split_into_sentences(text))`: spaCy's sentencizer; 1 for a text without words).
pub fn sentences(text: &str) -> usize {
    with_splitter(|s| super::spacy_en::count_sentences(s, text))
}

/// All tokens of `text`.
pub(crate) fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::with_capacity(text.len() / 5 + 1);
    tokenize(text, |t| out.push(t));
    out
}

/// Number of tokens of `text`, without storing them.
pub(crate) fn count_tokens(text: &str) -> usize {
    let mut n = 0;
    with_splitter(|s| s.split(text, |_, _| n += 1));
    n
}

/// Runs `f` with this thread's [`Splitter`] (its buffers and chunk cache are reused).
pub(crate) fn with_splitter<R>(f: impl FnOnce(&mut Splitter) -> R) -> R {
    SPLITTER.with(|s| f(&mut s.borrow_mut()))
}

/// Python's `len(s)`: Unicode scalar values.
#[inline]
pub(crate) fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Lines as Python's `str.splitlines()` yields them: split at `\n`, `\r\n`, `\r`, `\v`, `\f`,
/// `\x1c`–`\x1e`, `\x85`, U+2028 and U+2029; no trailing empty line; nothing for `""`.
pub(crate) fn py_splitlines(text: &str) -> PyLines<'_> {
    PyLines { rest: text }
}

pub(crate) struct PyLines<'a> {
    rest: &'a str,
}

impl<'a> Iterator for PyLines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let b = self.rest.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let x = b[i];
            if x > 0x1e && x != 0xC2 && x != 0xE2 {
                i += 1;
                continue;
            }
            let sep = match x {
                b'\n' | 0x0b | 0x0c | 0x1c..=0x1e => 1,
                b'\r' => {
                    if b.get(i + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    }
                }
                0xC2 if b.get(i + 1) == Some(&0x85) => 2,
                0xE2 if b.get(i + 1) == Some(&0x80)
                    && matches!(b.get(i + 2), Some(0xA8 | 0xA9)) =>
                {
                    3
                }
                _ => 0,
            };
            if sep > 0 {
                let line = &self.rest[..i];
                self.rest = &self.rest[i + sep..];
                return Some(line);
            }
            i += 1;
        }
        let line = self.rest;
        self.rest = "";
        Some(line)
    }
}

/// Python's `str.strip()` (close enough: Rust's `trim` uses Unicode `White_Space`).
#[inline]
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim()
}

/// Pieces of `re.split(pattern, text)` for the pattern "`sep` repeated at least `min_run` times"
/// where `sep` is `\n`: `min_run = 1` is datatrove's line split `\n+`, `2` its paragraph split
/// `\n{2,}`. Like Python, an empty text gives one empty piece and separators at the ends give
/// empty pieces there.
pub(crate) fn split_newline_runs(text: &str, min_run: usize, mut f: impl FnMut(&str)) {
    let b = text.as_bytes();
    let mut piece_start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            let run_start = i;
            while i < b.len() && b[i] == b'\n' {
                i += 1;
            }
            if i - run_start >= min_run {
                f(&text[piece_start..run_start]);
                piece_start = i;
            }
        } else {
            i += 1;
        }
    }
    f(&text[piece_start..]);
}

/// 64-bit hash of a byte string (xxh3). Used as set keys for lines, paragraphs and words: two
/// different strings collide with probability ~2⁻⁶⁴ per pair, far below anything measurable.
#[inline]
pub(crate) fn hash_str(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// O(1) hashes of every n-gram of a sequence of word hashes: a polynomial hash over the
/// (uniformly random) word hashes, modulo 2⁶⁴, finished with a 64-bit mixer. Two different
/// n-grams (n ≤ 10) collide with probability below 2⁻⁵⁸.
pub(crate) struct NgramHasher {
    /// prefix[i] = Σ_{j<i} h_j · B^(i-1-j)
    prefix: Vec<u64>,
}

const NGRAM_BASE: u64 = 0x9E37_79B9_7F4A_7C15;

impl NgramHasher {
    pub fn new(word_hashes: impl Iterator<Item = u64>) -> Self {
        let mut prefix = vec![0u64];
        let mut acc = 0u64;
        for h in word_hashes {
            acc = acc.wrapping_mul(NGRAM_BASE).wrapping_add(h);
            prefix.push(acc);
        }
        NgramHasher { prefix }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.prefix.len() - 1
    }

    /// `B^n`, the factor [`Self::hash`] needs for n-grams of size `n`.
    pub fn base_pow(n: usize) -> u64 {
        (0..n).fold(1u64, |p, _| p.wrapping_mul(NGRAM_BASE))
    }

    /// Hash of the n-gram of words `i..i + n`; `pow` is [`Self::base_pow`]`(n)`.
    #[inline]
    pub fn hash(&self, i: usize, n: usize, pow: u64) -> u64 {
        let h = self.prefix[i + n].wrapping_sub(self.prefix[i].wrapping_mul(pow));
        mix64(h)
    }
}

/// MurmurHash3's 64-bit finalizer.
#[inline]
fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Largest n-gram size the repetition rules accept.
pub(crate) const MAX_NGRAM: usize = 10;

/// A hasher for keys that already are good 64-bit hashes: passes them through.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub(crate) type HashSet64 = HashSet<u64, BuildHasherDefault<IdHasher>>;
pub(crate) type HashMap64<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// datatrove's `find_duplicates`: over `items` in order, how many are repeats of an earlier one
/// and how many characters those repeats hold. Also returns the number of items.
pub(crate) fn find_duplicates<'a>(items: impl Iterator<Item = &'a str>) -> Duplicates {
    let mut counter = DuplicateCounter::default();
    items.for_each(|item| counter.add(item));
    counter.counts
}

/// [`find_duplicates`] fed one item at a time.
#[derive(Default)]
pub(crate) struct DuplicateCounter {
    seen: HashSet64,
    pub counts: Duplicates,
}

impl DuplicateCounter {
    pub fn add(&mut self, item: &str) {
        self.counts.total += 1;
        if !self.seen.insert(hash_str(item)) {
            self.counts.elements += 1;
            self.counts.chars += char_len(item);
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Duplicates {
    pub total: usize,
    pub elements: usize,
    pub chars: usize,
}

/// Gopher's symbol counts in one pass: `text.count("#")` and
/// `text.count("...") + text.count("…")` (Python's non-overlapping counts: a run of k dots
/// holds k / 3 ellipses).
pub(crate) fn count_hashes_and_ellipses(text: &str) -> (usize, usize) {
    let hashes = text.bytes().filter(|&b| b == b'#').count();
    let mut ellipses = text.matches('…').count();
    let mut rest = text;
    while let Some(p) = rest.find('.') {
        let run = rest[p..].bytes().take_while(|&b| b == b'.').count();
        ellipses += run / 3;
        rest = &rest[p + run..];
    }
    (hashes, ellipses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_splits_as_spacy_does() {
        // Expected: spaCy 3.8's `spacy.blank("en")`, whitespace tokens removed (datatrove's
        // `split_into_words`).
        assert_eq!(
            words("Hello, world... It's a well-known fact: 1,000 people paid $3.50 (e.g. me)!"),
            vec![
                "Hello", ",", "world", "...", "It", "'s", "a", "well", "-", "known", "fact", ":",
                "1,000", "people", "paid", "$", "3.50", "(", "e.g.", "me", ")", "!"
            ]
        );
        assert_eq!(
            words("«Ça va?» — oui"),
            vec!["«", "Ça", "va", "?", "»", "—", "oui"]
        );
        assert_eq!(words("students' end-"), vec!["students", "'", "end-"]);
        // A zero-width space is not whitespace to Python.
        assert_eq!(words("a\u{200B}b  \n\t c"), vec!["a\u{200B}b", "c"]);
        let t = tokens("Ünïcödé ... 2024");
        assert_eq!(t[0].chars, 7);
        assert!(t[0].alpha && !t[0].symbol);
        assert!(t[1].symbol && !t[1].alpha);
        assert!(!t[2].alpha && !t[2].symbol);
        assert_eq!(count_tokens("one two, three."), 5);
    }

    #[test]
    fn splitlines_matches_python() {
        let l: Vec<&str> = py_splitlines("a\nb\r\nc\rd\u{2028}e\n\nf\n").collect();
        assert_eq!(l, vec!["a", "b", "c", "d", "e", "", "f"]);
        assert_eq!(py_splitlines("").count(), 0);
        assert_eq!(py_splitlines("x").collect::<Vec<_>>(), vec!["x"]);
    }

    #[test]
    fn newline_runs_match_re_split() {
        let split = |t: &str, n: usize| {
            let mut v = Vec::new();
            split_newline_runs(t, n, |p| v.push(p.to_string()));
            v
        };
        // re.split("\n+", ...) and re.split("\n{2,}", ...)
        assert_eq!(split("a\nb\n\n\nc", 1), vec!["a", "b", "c"]);
        assert_eq!(split("\na\n", 1), vec!["", "a", ""]);
        assert_eq!(split("a\nb\n\nc\n\n\nd", 2), vec!["a\nb", "c", "d"]);
        assert_eq!(split("", 2), vec![""]);
    }

    #[test]
    fn duplicates_count_repeats_and_their_chars() {
        let d = find_duplicates(["ab", "cde", "ab", "ab", "x"].into_iter());
        assert_eq!(
            d,
            Duplicates {
                total: 5,
                elements: 2,
                chars: 4
            }
        );
        assert_eq!(count_hashes_and_ellipses("a....b… #x ...... ..#"), (2, 4));
    }
}
