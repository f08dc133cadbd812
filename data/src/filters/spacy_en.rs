//! Word splitting equal to spaCy's rule-based English tokenizer (`spacy.blank("en")`), which is
//! what datatrove's `split_into_words(text, "en")` runs for the Gopher and FineWeb rules.
//!
//! The algorithm, in spaCy's order (`spacy/tokenizer.pyx`):
//!
//! 1. The text is cut into chunks at whitespace (Python's `str.isspace`). datatrove strips
//!    whitespace tokens, so only the chunks matter.
//! 2. A chunk that is a tokenizer exception ("special case": `don't` → `do` `n't`, `e.g.`, `:)`)
//!    becomes the exception's tokens.
//! 3. Otherwise prefixes and suffixes are split off, one of each per round, until neither
//!    matches or the rest is an exception (`_split_affixes`). A prefix rule takes the first
//!    alternative that matches (Python `re` alternation); a suffix rule the longest match.
//! 4. What is left is an exception, a URL (`URL_MATCH`, kept whole), or split at its infixes
//!    (`infix_finditer`: hyphens between letters, `/` `:` `=` between a letter or digit and a
//!    letter, `,` between letters, `.` between a lower- and an upper-case letter, ellipses, ...).
//!    An infix at position 0 is not split off.
//! 5. Exceptions that the affix rules split (`e.g.` → `e.g` `.`, `:]` → `:` `]`) are merged
//!    back where their affix tokens stand next to each other (spaCy's special-case matcher):
//!    longest first, then leftmost. The matcher also sees tokens one space apart (`) :]`); such
//!    a match is not merged but keeps overlapping ones out, as in spaCy.
//!
//! The character classes, exception lists and literal affixes come from spaCy itself, through
//! `scripts/make_text_tables.py` (`text_tables.rs`). `tests/filter_agreement.rs` checks the
//! tokens against datatrove's on real text.

use std::sync::OnceLock;

use super::text::{hash_str, HashMap64};
use super::text_tables as tables;

/// Whether `c` is in a sorted table of inclusive code point ranges.
#[inline]
fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Membership of the ASCII characters in a range table, computed at compile time.
const fn ascii_table(ranges: &[(u32, u32)]) -> [bool; 128] {
    let mut t = [false; 128];
    let mut r = 0;
    while r < ranges.len() {
        let (lo, hi) = ranges[r];
        let mut c = lo;
        while c <= hi && c < 128 {
            t[c as usize] = true;
            c += 1;
        }
        r += 1;
    }
    t
}

/// Python's `isspace` on ASCII: `\t` to `\r`, `\x1c` to `\x1f`, space.
const ASCII_SPACE: [bool; 128] = {
    let mut t = [false; 128];
    let mut c = 0;
    while c < 128 {
        t[c] = matches!(c as u8, b'\t'..=b'\r' | 0x1c..=b' ');
        c += 1;
    }
    t
};
const ASCII_PUNCTUATION_SET: [bool; 128] = ascii_table(tables::PUNCTUATION_SET);
const ASCII_PREFIX: [bool; 128] = ascii_table(tables::PREFIX_CHARS);
const ASCII_SUFFIX: [bool; 128] = ascii_table(tables::SUFFIX_CHARS);
const ASCII_DOT_SUFFIX_AFTER: [bool; 128] = ascii_table(tables::DOT_SUFFIX_AFTER);

/// `ranges` membership with the ASCII answer from `ascii`.
#[inline(always)]
fn in_table(ascii: &[bool; 128], ranges: &[(u32, u32)], c: char) -> bool {
    if c.is_ascii() {
        ascii[c as usize]
    } else {
        in_ranges(ranges, c)
    }
}

/// Python's `str.isspace()` for one character: Unicode `White_Space` plus the information
/// separators `\x1c`–`\x1f`.
#[inline]
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.isalpha()` for one character (Unicode categories L*).
#[inline]
pub(crate) fn is_py_alpha(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        in_ranges(tables::PY_ALPHA, c)
    }
}

/// datatrove's `PUNCTUATION_SET`: a token made only of these is a "symbol", not a word.
#[inline]
pub(crate) fn is_datatrove_punct(c: char) -> bool {
    in_table(&ASCII_PUNCTUATION_SET, tables::PUNCTUATION_SET, c)
}

/// datatrove's `TERMINAL_PUNCTUATION` (FineWeb's default line-end characters).
#[inline]
pub(crate) fn is_terminal_punct(c: char) -> bool {
    in_ranges(tables::TERMINAL_PUNCTUATION, c)
}

/// The number of sentences spaCy's sentencizer (default `punct_chars`) finds in `text`, which is
/// what datatrove's `split_into_sentences` returns for English. A sentence ends at a token that
/// is one of the punctuation characters, and the next starts at the first token after it that
/// is not punctuation (Unicode category P*); whitespace other than one space between tokens is
/// a token of its own there. Like `split_into_sentences`, text without tokens is one piece.
pub(crate) fn count_sentences(splitter: &mut Splitter, text: &str) -> usize {
    let is_punct = |t: &str| t.chars().all(|c| in_ranges(tables::UNICODE_PUNCT, c));
    let mut count = 0;
    let mut seen_period = false;
    let mut prev_end = None;
    splitter.split(text, |start, end| {
        // spaCy keeps a whitespace token for any gap but a single space (and for leading
        // whitespace): it is not punctuation, so it can start a sentence.
        let gap = &text[prev_end.unwrap_or(0)..start];
        let whitespace_token = match prev_end {
            None => !gap.is_empty(),
            Some(_) => !gap.is_empty() && gap != " ",
        };
        if whitespace_token {
            if count == 0 {
                count = 1;
            } else if seen_period {
                count += 1;
                seen_period = false;
            }
        }
        let token = &text[start..end];
        let mut chars = token.chars();
        let sentence_punct = match (chars.next(), chars.next()) {
            (Some(c), None) => in_ranges(tables::SENTENCE_PUNCT, c),
            _ => false,
        };
        if count == 0 {
            count = 1;
        }
        if seen_period && !sentence_punct && !is_punct(token) {
            count += 1;
            seen_period = false;
        } else if sentence_punct {
            seen_period = true;
        }
        prev_end = Some(end);
    });
    // Trailing whitespace other than one space is a token too.
    if let Some(end) = prev_end {
        let tail = &text[end..];
        if seen_period && !tail.is_empty() && tail != " " {
            count += 1;
        }
    }
    count.max(1)
}

const ASCII_ALPHA: [bool; 128] = ascii_table(tables::ALPHA);
const ASCII_LOWER: [bool; 128] = ascii_table(tables::ALPHA_LOWER);
const ASCII_UPPER: [bool; 128] = ascii_table(tables::ALPHA_UPPER);

/// spaCy's `ALPHA`, `ALPHA_LOWER` and `ALPHA_UPPER` classes.
#[inline]
fn is_alpha(c: char) -> bool {
    in_table(&ASCII_ALPHA, tables::ALPHA, c)
}

#[inline]
fn is_lower(c: char) -> bool {
    in_table(&ASCII_LOWER, tables::ALPHA_LOWER, c)
}

#[inline]
fn is_upper(c: char) -> bool {
    in_table(&ASCII_UPPER, tables::ALPHA_UPPER, c)
}

#[inline]
fn is_quote(c: char) -> bool {
    in_ranges(tables::CONCAT_QUOTES, c)
}

/// The lookup tables built once from the generated lists.
struct Rules {
    /// Exception string hash → index into `SPECIALS`.
    specials: HashMap64<usize>,
    special_len: (usize, usize),
    /// Hash of a matcher pattern's first token → indexes into `MATCHER` (patterns of two or
    /// more tokens).
    matcher: HashMap64<Vec<usize>>,
    /// The longest second token of a pattern, in bytes: a cheap test before a lookup.
    matcher_second_len: usize,
    /// `CURRENCY` and `UNITS` (the suffixes after a digit) by hash, and the longest in bytes.
    units: HashMap64<&'static str>,
    unit_max_len: usize,
    /// Bit `first byte · 256 + last byte` set when an exception starts and ends so: most words
    /// need no hash.
    special_ends: Vec<u64>,
    /// Bit `first byte of token 1 · 256 + first byte of token 2` set when a matcher pattern
    /// starts so, and the longest first token.
    matcher_pairs: Vec<u64>,
    matcher_first_len: usize,
    /// The URL rule without its private-address look-aheads, host-name form and IPv4 form (the
    /// address captured, so that private ranges can be refused as spaCy's look-aheads do).
    url_host: regex::Regex,
    url_ip: regex::Regex,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut specials = HashMap64::default();
        for (i, (s, _)) in tables::SPECIALS.iter().enumerate() {
            specials.insert(hash_str(s), i);
        }
        let lens = tables::SPECIALS.iter().map(|(s, _)| s.len());
        let special_len = (
            lens.clone().min().unwrap_or(0),
            lens.max().unwrap_or(0),
        );
        let mut special_ends = vec![0u64; 1024];
        for (s, _) in tables::SPECIALS {
            set_bit(&mut special_ends, pair_key(s, s.as_bytes()[s.len() - 1]));
        }
        let mut matcher: HashMap64<Vec<usize>> = HashMap64::default();
        let mut matcher_pairs = vec![0u64; 1024];
        let (mut matcher_first_len, mut matcher_second_len) = (0, 0);
        for (i, (pattern, _)) in tables::MATCHER.iter().enumerate() {
            if pattern.len() > 1 {
                matcher.entry(hash_str(pattern[0])).or_default().push(i);
                set_bit(&mut matcher_pairs, pair_key(pattern[0], pattern[1].as_bytes()[0]));
                matcher_first_len = matcher_first_len.max(pattern[0].len());
                matcher_second_len = matcher_second_len.max(pattern[1].len());
            }
        }
        let mut units = HashMap64::default();
        for u in tables::CURRENCY.iter().chain(tables::UNITS) {
            units.insert(hash_str(u), *u);
        }
        let unit_max_len = units.values().map(|u| u.len()).max().unwrap_or(0);
        // spaCy's URL_PATTERN (spacy/lang/tokenizer_exceptions.py, after Diego Perini's), with
        // `\w \d \S` Unicode-aware as under Python's `(?u)`.
        let lower: String = tables::ALPHA_LOWER
            .iter()
            .map(|&(lo, hi)| format!("\\x{{{lo:x}}}-\\x{{{hi:x}}}"))
            .collect();
        let head = r"^(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?";
        let tail = r"(?::\d{2,5})?(?:[/?#]\S*)?$";
        let host = format!(
            r"(?:(?:[A-Za-z0-9\x{{a1}}-\x{{ffff}}][A-Za-z0-9\x{{a1}}-\x{{ffff}}_-]{{0,62}})?[A-Za-z0-9\x{{a1}}-\x{{ffff}}]\.)+(?:[{lower}]{{2,63}})"
        );
        let ip = r"((?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4])))";
        let build = |body: &str| {
            regex::RegexBuilder::new(&format!("{head}(?:{body}){tail}"))
                .size_limit(64 << 20)
                .build()
                .expect("the URL pattern compiles")
        };
        Rules {
            specials,
            special_len,
            matcher,
            matcher_second_len,
            units,
            unit_max_len,
            special_ends,
            matcher_pairs,
            matcher_first_len,
            url_host: build(&host),
            url_ip: build(ip),
        }
    })
}

/// Index of the bit for a string's first byte and another byte (see [`Rules::special_ends`]).
#[inline(always)]
fn pair_key(s: &str, other: u8) -> usize {
    usize::from(s.as_bytes()[0]) << 8 | usize::from(other)
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

#[inline(always)]
fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] >> (i % 64) & 1 == 1
}

impl Rules {
    #[inline]
    fn special(&self, s: &str) -> Option<&'static [&'static str]> {
        if s.len() < self.special_len.0
            || s.len() > self.special_len.1
            || !bit(&self.special_ends, pair_key(s, s.as_bytes()[s.len() - 1]))
        {
            return None;
        }
        let &i = self.specials.get(&hash_str(s))?;
        let (string, pieces) = tables::SPECIALS[i];
        (string == s).then_some(pieces)
    }

    fn is_unit(&self, s: &str) -> bool {
        self.units.get(&hash_str(s)) == Some(&s)
    }

    /// spaCy's `url_match`.
    fn is_url(&self, s: &str) -> bool {
        // Both forms need a dot; most words have none.
        if !s.contains('.') {
            return false;
        }
        if self.url_host.is_match(s) {
            return true;
        }
        match self.url_ip.captures(s) {
            Some(caps) => !is_private_ip(&caps[1]),
            None => false,
        }
    }
}

/// spaCy's look-aheads `(?!(?:10|127)(?:\.\d{1,3}){3})`, `(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})`
/// and `(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})` on an address the IPv4 form matched.
fn is_private_ip(ip: &str) -> bool {
    let octets: Vec<u32> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
    match octets.as_slice() {
        [10 | 127, ..] => true,
        [169, 254, ..] | [192, 168, ..] => true,
        [172, b, ..] => (16..=31).contains(b),
        _ => false,
    }
}

/// Length in bytes of the prefix the prefix rules split off `s` (0: none). The rules are tried
/// in spaCy's order and the first that matches wins: single characters (`+` only before a
/// non-digit), then a run of two or more dots, then `US$`, `C$`, `A$`.
fn find_prefix(s: &str) -> usize {
    let mut chars = s.chars();
    let Some(c) = chars.next() else {
        return 0;
    };
    match c {
        '+' => match chars.next() {
            Some(d) if d.is_ascii_digit() => 0,
            _ => 1,
        },
        '.' => {
            let run = s.bytes().take_while(|&b| b == b'.').count();
            if run >= 2 {
                run
            } else {
                0
            }
        }
        _ if in_table(&ASCII_PREFIX, tables::PREFIX_CHARS, c) => c.len_utf8(),
        _ if s.starts_with("US$") => 3,
        _ if s.starts_with("C$") || s.starts_with("A$") => 2,
        _ => 0,
    }
}

/// Length in bytes of the suffix the suffix rules split off `s` (0: none). Python's `re.search`
/// over `alt$|alt$|...` returns the match that starts first, i.e. the longest suffix.
fn find_suffix(rules: &Rules, s: &str) -> usize {
    let mut rev = s.chars().rev();
    let Some(last) = rev.next() else {
        return 0;
    };
    let before = rev.next();
    let before2 = rev.next();
    let mut best = 0;
    if in_table(&ASCII_SUFFIX, tables::SUFFIX_CHARS, last) {
        best = last.len_utf8();
    }
    for lit in tables::SUFFIX_STRINGS {
        if lit.len() > best && s.ends_with(lit) {
            best = lit.len();
        }
    }
    match last {
        '.' => {
            let run = s.bytes().rev().take_while(|&b| b == b'.').count();
            if run >= 2 {
                best = best.max(run);
            }
            let after_dot_class = before
                .is_some_and(|b| in_table(&ASCII_DOT_SUFFIX_AFTER, tables::DOT_SUFFIX_AFTER, b));
            let after_degree = before2 == Some('°') && before.is_some_and(|b| "FfCcKk".contains(b));
            let after_two_upper = before.is_some_and(is_upper) && before2.is_some_and(is_upper);
            if after_dot_class || after_degree || after_two_upper {
                best = best.max(1);
            }
        }
        '+' if before.is_some_and(|b| b.is_ascii_digit()) => best = best.max(1),
        _ => {}
    }
    // Currencies and units after a digit (`10km`, `5%`, `3$`): the suffix starts right after
    // an ASCII digit, so only those places are looked up; the first is the longest.
    let b = s.as_bytes();
    for d in b.len().saturating_sub(rules.unit_max_len + 1)..b.len() - 1 {
        if b[d].is_ascii_digit() && rules.is_unit(&s[d + 1..]) {
            best = best.max(b.len() - d - 1);
            break;
        }
    }
    best
}

/// The hyphens of spaCy's infix rule, in its order: at one position the first whose text
/// matches and is followed by a letter wins.
const HYPHENS: [&str; 7] = ["-", "–", "—", "--", "---", "——", "~"];

/// spaCy's `infix_finditer` for English: the byte ranges of the infixes of `s`, left to right,
/// not overlapping.
fn find_infixes(s: &str, out: &mut Vec<(usize, usize)>) {
    out.clear();
    // ASCII without any infix character: nothing to find.
    if s.is_ascii() && !s.bytes().any(|b| b".,-~:<>=/+*^".contains(&b)) {
        return;
    }
    let mut prev: Option<char> = None;
    let mut i = 0;
    while i < s.len() {
        let byte = s.as_bytes()[i];
        if byte.is_ascii_alphanumeric() {
            // No infix starts with a letter or digit.
            prev = Some(byte as char);
            i += 1;
            continue;
        }
        let c = s[i..].chars().next().expect("char boundary");
        let rest = &s[i..];
        let mut matched = 0;
        if c == '.' && rest.as_bytes().get(1) == Some(&b'.') {
            matched = rest.bytes().take_while(|&b| b == b'.').count();
        } else if c == '…' || in_ranges(tables::ICONS, c) {
            matched = c.len_utf8();
        } else {
            let next = rest[c.len_utf8()..].chars().next();
            let prev_digit = prev.is_some_and(|p| p.is_ascii_digit());
            let prev_alnum = prev.is_some_and(|p| p.is_ascii_digit() || is_alpha(p));
            let next_alpha = next.is_some_and(is_alpha);
            // The one-character rules, in spaCy's order: an operator between digits, a dot
            // between a lower- and an upper-case letter (or quotes), a comma between letters.
            let operator = prev_digit
                && "+-*^".contains(c)
                && next.is_some_and(|n| n.is_ascii_digit() || n == '-');
            let sentence_dot = c == '.'
                && prev.is_some_and(|p| is_lower(p) || is_quote(p))
                && next.is_some_and(|n| is_upper(n) || is_quote(n));
            let comma = c == ',' && prev.is_some_and(is_alpha) && next_alpha;
            if operator || sentence_dot || comma {
                matched = 1;
            } else if prev_alnum {
                for h in HYPHENS {
                    if rest.starts_with(h) && rest[h.len()..].chars().next().is_some_and(is_alpha) {
                        matched = h.len();
                        break;
                    }
                }
                if matched == 0 && ":<>=/".contains(c) && next_alpha {
                    matched = 1;
                }
            }
        }
        if matched > 0 {
            out.push((i, i + matched));
            prev = s[..i + matched].chars().next_back();
            i += matched;
        } else {
            prev = Some(c);
            i += c.len_utf8();
        }
    }
}

/// Reusable buffers for one document.
#[derive(Default)]
pub(crate) struct Splitter {
    /// The document's tokens so far, as byte ranges of the text.
    tokens: Vec<(usize, usize)>,
    /// One chunk's prefixes and the rest, then its suffixes (byte ranges of the chunk).
    pieces: Vec<(usize, usize)>,
    suffixes: Vec<(usize, usize)>,
    infixes: Vec<(usize, usize)>,
    matches: Vec<(usize, usize, usize)>,
    /// Chunks already split (by hash; spaCy keeps the same cache): web text repeats its words
    /// with their punctuation (`the`, `(see`, `3.2.1`, `example.com.`), so most chunks are a
    /// lookup.
    cache: HashMap64<CachedChunk>,
}

/// A chunk's tokens as the end offsets of its first pieces (the last ends at the chunk's end).
#[derive(Clone, Copy)]
struct CachedChunk {
    len: u16,
    n: u8,
    ends: [u16; CACHED_PIECES],
}

const CACHED_PIECES: usize = 7;
/// Entries kept before the cache is emptied (spaCy: 10,000).
const CACHE_ENTRIES: usize = 1 << 16;

impl Splitter {
    /// Calls `f(start, end)` with the byte range of every token of `text`, in order.
    pub(crate) fn split(&mut self, text: &str, mut f: impl FnMut(usize, usize)) {
        let rules = rules();
        self.tokens.clear();
        let mut chunk_start = None;
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b < 0x80 && !ASCII_SPACE[usize::from(b)] {
                // The common case: an ASCII character inside a chunk.
                if chunk_start.is_none() {
                    chunk_start = Some(i);
                }
                i += 1;
                continue;
            }
            let (space, width) = if b < 0x80 {
                (true, 1)
            } else {
                let c = text[i..].chars().next().expect("char boundary");
                (is_py_space(c), c.len_utf8())
            };
            if space {
                if let Some(start) = chunk_start.take() {
                    self.chunk(rules, text, start, i);
                }
            } else if chunk_start.is_none() {
                chunk_start = Some(i);
            }
            i += width;
        }
        if let Some(start) = chunk_start {
            self.chunk(rules, text, start, text.len());
        }
        if self.tokens.len() > 1 {
            self.merge_specials(rules, text);
        }
        for &(a, b) in &self.tokens {
            f(a, b);
        }
    }

    /// Appends the tokens of the whitespace-free chunk `text[start..end]`.
    fn chunk(&mut self, rules: &Rules, text: &str, start: usize, end: usize) {
        let s = &text[start..end];
        if let Some(pieces) = rules.special(s) {
            push_pieces(&mut self.tokens, start, pieces);
            return;
        }
        // Fast path: ASCII letters only. No affix or infix rule applies to them (a unit suffix
        // needs a digit before it) and a URL needs a dot: one token.
        if s.bytes().all(|b| b.is_ascii_alphabetic()) {
            self.tokens.push((start, end));
            return;
        }
        // A 64-bit hash and the length name a chunk: two different chunks collide with
        // probability ~2⁻⁶⁴.
        let key = hash_str(s);
        if let Some(c) = self
            .cache
            .get(&key)
            .filter(|c| usize::from(c.len) == s.len())
        {
            let mut at = start;
            for &e in &c.ends[..usize::from(c.n)] {
                self.tokens.push((at, start + usize::from(e)));
                at = start + usize::from(e);
            }
            self.tokens.push((at, end));
            return;
        }
        self.split_chunk(rules, s);
        if s.len() <= usize::from(u16::MAX) && self.pieces.len() <= CACHED_PIECES + 1 {
            if self.cache.len() >= CACHE_ENTRIES {
                self.cache.clear();
            }
            let mut ends = [0u16; CACHED_PIECES];
            let n = self.pieces.len() - 1;
            for (e, p) in ends.iter_mut().zip(&self.pieces[..n]) {
                *e = p.1 as u16;
            }
            let cached = CachedChunk {
                len: s.len() as u16,
                n: n as u8,
                ends,
            };
            self.cache.insert(key, cached);
        }
        self.tokens
            .extend(self.pieces.iter().map(|&(a, b)| (start + a, start + b)));
    }

    /// spaCy's affix, exception, URL and infix rules on one chunk (not an exception itself):
    /// its tokens as byte ranges of `s` in `self.pieces`.
    fn split_chunk(&mut self, rules: &Rules, s: &str) {
        self.pieces.clear();
        self.suffixes.clear();
        let (mut lo, mut hi) = (0, s.len());
        let mut last_size = 0;
        let mut first = true;
        while lo < hi && hi - lo != last_size {
            // The whole chunk was looked up above.
            if !first && rules.special(&s[lo..hi]).is_some() {
                break;
            }
            first = false;
            last_size = hi - lo;
            let pre = find_prefix(&s[lo..hi]);
            if pre != 0 && lo + pre < hi && rules.special(&s[lo + pre..hi]).is_some() {
                self.pieces.push((lo, lo + pre));
                lo += pre;
                break;
            }
            let suf = find_suffix(rules, &s[lo + pre..hi]);
            if suf != 0 && lo < hi - suf && rules.special(&s[lo..hi - suf]).is_some() {
                self.suffixes.push((hi - suf, hi));
                hi -= suf;
                break;
            }
            if pre != 0 && suf != 0 && pre + suf <= hi - lo {
                self.pieces.push((lo, lo + pre));
                self.suffixes.push((hi - suf, hi));
                lo += pre;
                hi -= suf;
            } else if pre != 0 {
                self.pieces.push((lo, lo + pre));
                lo += pre;
            } else if suf != 0 {
                self.suffixes.push((hi - suf, hi));
                hi -= suf;
            }
        }
        if lo < hi {
            let core = &s[lo..hi];
            if let Some(pieces) = rules.special(core) {
                push_pieces(&mut self.pieces, lo, pieces);
            } else if rules.is_url(core) {
                self.pieces.push((lo, hi));
            } else {
                find_infixes(core, &mut self.infixes);
                let mut at = 0;
                for &(a, b) in &self.infixes {
                    if a == 0 {
                        continue;
                    }
                    if a != at {
                        self.pieces.push((lo + at, lo + a));
                    }
                    self.pieces.push((lo + a, lo + b));
                    at = b;
                }
                if at < core.len() {
                    self.pieces.push((lo + at, hi));
                }
            }
        }
        self.pieces.extend(self.suffixes.drain(..).rev());
    }

    /// spaCy's special-case matcher over the document's tokens: every run of tokens equal to an
    /// exception's affix tokens, where consecutive tokens touch or are one space apart (spaCy
    /// keeps no whitespace token for a single space), is a match. Among overlapping matches the
    /// longest, then the leftmost, is kept; a kept match whose tokens touch is replaced by the
    /// exception's tokens, one with a space in it is left as it is (its text is no exception) but
    /// still keeps the matches it overlaps out. Single-token patterns replace a token by itself
    /// and are skipped.
    fn merge_specials(&mut self, rules: &Rules, text: &str) {
        self.matches.clear();
        let tokens = &self.tokens;
        let adjacent = |i: usize| {
            let gap = &text[tokens[i].1..tokens[i + 1].0];
            gap.is_empty() || gap == " "
        };
        for i in 0..tokens.len() - 1 {
            let (first, next) = (&text[tokens[i].0..tokens[i].1], tokens[i + 1]);
            if first.len() > rules.matcher_first_len
                || next.1 - next.0 > rules.matcher_second_len
                || !bit(
                    &rules.matcher_pairs,
                    pair_key(first, text.as_bytes()[next.0]),
                )
                || !adjacent(i)
            {
                continue;
            }
            let Some(candidates) = rules
                .matcher
                .get(&hash_str(&text[tokens[i].0..tokens[i].1]))
            else {
                continue;
            };
            for &m in candidates {
                let (pattern, _) = tables::MATCHER[m];
                let k = pattern.len();
                if i + k <= tokens.len()
                    && pattern
                        .iter()
                        .zip(&tokens[i..i + k])
                        .all(|(p, &(a, b))| *p == &text[a..b])
                    && (i..i + k - 1).all(adjacent)
                {
                    self.matches.push((i, i + k, m));
                }
            }
        }
        if self.matches.is_empty() {
            return;
        }
        // spaCy's `_filter_special_spans`: longest first, then leftmost; a match is kept when
        // neither end token was taken by one seen before it, and every match seen (kept or not)
        // takes its tokens.
        self.matches
            .sort_by(|a, b| (b.1 - b.0).cmp(&(a.1 - a.0)).then(a.0.cmp(&b.0)));
        let mut taken = vec![false; tokens.len()];
        let mut kept: Vec<(usize, usize, usize)> = Vec::new();
        for &(a, b, m) in &self.matches {
            if !taken[a] && !taken[b - 1] {
                kept.push((a, b, m));
            }
            taken[a..b].iter_mut().for_each(|t| *t = true);
        }
        kept.sort_unstable();
        let mut merged = Vec::with_capacity(tokens.len());
        let mut i = 0;
        for (a, b, m) in kept {
            let touching = (a..b - 1).all(|j| tokens[j].1 == tokens[j + 1].0);
            if !touching {
                continue;
            }
            merged.extend_from_slice(&tokens[i..a]);
            let special = tables::MATCHER[m].1;
            let replacement = rules
                .special(special)
                .expect("matcher patterns are specials");
            push_pieces(&mut merged, tokens[a].0, replacement);
            i = b;
        }
        merged.extend_from_slice(&tokens[i..]);
        self.tokens = merged;
    }
}

/// Appends the byte ranges of `pieces` laid end to end from `start`.
fn push_pieces(out: &mut Vec<(usize, usize)>, start: usize, pieces: &[&str]) {
    let mut at = start;
    for p in pieces {
        out.push((at, at + p.len()));
        at += p.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        Splitter::default().split(text, |a, b| out.push(&text[a..b]));
        out
    }

    /// Expected outputs are spaCy 3.8's (`[t.text for t in spacy.blank("en")(s)]`, whitespace
    /// tokens removed).
    #[test]
    fn matches_spacy_on_technical_text() {
        let cases: &[(&str, &[&str])] = &[
            (
                "Use module.function() with --flag v1.2.3 at https://example.com/a/b?x=1 or /usr/lib/x.so.",
                &[
                    "Use", "module.function", "(", ")", "with", "--flag", "v1.2.3", "at",
                    "https://example.com/a/b?x=1", "or", "/usr", "/", "lib", "/", "x.so", ".",
                ],
            ),
            (
                "Don't e.g. it's 3.5% (approx.)",
                &["Do", "n't", "e.g.", "it", "'s", "3.5", "%", "(", "approx", ".", ")"],
            ),
            ("a...b --- x—y", &["a", "...", "b", "---", "x", "—", "y"]),
            ("a[:] x", &["a", "[:", "]", "x"]),
            ("Hello:) there", &["Hello", ":)", "there"]),
            ("(e.g. this) and e.g.,", &["(", "e.g.", "this", ")", "and", "e.g.", ","]),
            ("don't DON'T Dont dont", &["do", "n't", "DON'T", "Do", "nt", "do", "nt"]),
            ("x:-) y", &["x:-", ")", "y"]),
            ("a.b.c.", &["a.b.c", "."]),
            ("U.S.A. vs. U.S. Mr.Smith", &["U.S.A.", "vs.", "U.S.", "Mr.", "Smith"]),
            ("foo-bar 1-2 a--b", &["foo", "-", "bar", "1", "-", "2", "a", "--", "b"]),
            ("C++ c++ 3+4 +3 2+", &["C++", "c++", "3", "+", "4", "+3", "2", "+"]),
            (
                "\"quoted\" 'single' it's",
                &["\"", "quoted", "\"", "'", "single", "'", "it", "'s"],
            ),
            ("10km 5% $10 10$ US$5", &["10", "km", "5", "%", "$", "10", "10", "$", "US$", "5"]),
            ("...abc abc... a..b", &["...", "abc", "abc", "...", "a", "..", "b"]),
            (
                "e-mail: x@y.com, http://a.b/c.",
                &["e", "-", "mail", ":", "x@y.com", ",", "http://a.b", "/", "c."],
            ),
            ("wasn't he'll", &["was", "n't", "he", "'ll"]),
            ("<3 </3 :3 8)", &["<3", "</3", ":3", "8)"]),
            ("c .  c\n.", &["c", ".", "c", "."]),
            // `) :` matches the exception `):` one space apart: not merged, but `:]` loses.
            ("len(start) :]}'", &["len(start", ")", ":", "]", "}", "'"]),
            ("len(start) :]", &["len(start", ")", ":]"]),
            ("x):]", &["x", "):", "]"]),
        ];
        for (text, want) in cases {
            assert_eq!(words(text), *want, "{text:?}");
        }
    }

    /// Expected: `len(datatrove.utils.text.split_into_sentences(s, "en"))`.
    #[test]
    fn sentences_as_spacy_sentencizer() {
        let mut sp = Splitter::default();
        let cases: &[(&str, usize)] = &[
            ("One. Two! Three? Four.", 4),
            ("Dr. Smith met Mr. Jones at 5 p.m. on the bridge.", 1),
            ("He said \"Stop.\" Then he left.", 2),
            ("Version 2.0 is out. It costs $3.50 today.", 2),
            ("see module.function() for details. then run it", 2),
            ("Really?! Yes... ok", 2),
            ("ab.  cd", 2),
            ("ab. \t )", 2),
            (" ab. cd", 2),
            ("x.) y", 1),
            ("End.\n", 2),
            ("End. ", 1),
            ("", 1),
        ];
        for &(text, want) in cases {
            assert_eq!(count_sentences(&mut sp, text), want, "{text:?}");
        }
    }

    #[test]
    fn private_addresses_are_not_urls() {
        let r = rules();
        assert!(r.is_url("8.8.8.8"));
        assert!(!r.is_url("10.0.0.1"));
        assert!(!r.is_url("192.168.1.1"));
        assert!(r.is_url("example.org/path"));
        assert!(!r.is_url("lower.Upper"));
    }
}
