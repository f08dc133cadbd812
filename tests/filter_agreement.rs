//! kiln's web-text filters against datatrove 0.10.1 on real technical text and prose.
//!
//! `tests/fixtures/filters/corpus.jsonl.gz` (written by `scripts/make_filter_fixtures.py`) holds
//! ~2,300 documents taken from files installed on a Debian machine (package docs and metadata,
//! READMEs, changelogs, license and copyright files), and for each of them datatrove's word
//! tokens (spaCy's English tokenizer) and the verdict of each filter run alone with its defaults.
//! These tests run kiln's filters the same way and require the same words and, per filter and per
//! kind of text, at least 99% of documents with the same verdict.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};

use kiln_data::document::Document;
use kiln_data::filters::text::words;
use kiln_data::filters::{
    C4Config, FilterChain, FilterConfig, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Doc {
    id: String,
    kind: String,
    text: String,
    verdicts: BTreeMap<String, (bool, Option<String>)>,
    words: Vec<String>,
}

fn corpus() -> Vec<Doc> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/filters/corpus.jsonl.gz"
    );
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(|line| serde_json::from_str(&line.expect("gzip JSONL")).expect("corpus row"))
        .collect()
}

/// One filter alone, with its published defaults.
fn chain(name: &str) -> FilterChain {
    let mut cfg = FilterConfig::default();
    match name {
        "gopher_quality" => cfg.gopher_quality = Some(GopherQualityConfig::default()),
        "gopher_repetition" => cfg.gopher_repetition = Some(GopherRepetitionConfig::default()),
        "c4" => cfg.c4 = Some(C4Config::default()),
        "fineweb" => cfg.fineweb = Some(FineWebConfig::default()),
        _ => unreachable!("{name}"),
    }
    FilterChain::new(&cfg, "test").expect("default filter config")
}

#[test]
fn words_equal_datatrove_spacy_tokens() {
    let docs = corpus();
    assert!(docs.len() > 2000, "corpus has {} documents", docs.len());
    let mut differing = Vec::new();
    for d in &docs {
        let ours = words(&d.text);
        if ours != d.words {
            let at = ours
                .iter()
                .zip(&d.words)
                .position(|(a, b)| a != b)
                .unwrap_or(ours.len().min(d.words.len()));
            let lo = at.saturating_sub(3);
            differing.push(format!(
                "{}: token {at}: kiln {:?} datatrove {:?}",
                d.id,
                &ours[lo..(at + 4).min(ours.len())],
                &d.words[lo..(at + 4).min(d.words.len())]
            ));
        }
    }
    assert!(
        differing.is_empty(),
        "{} of {} documents split into other words than datatrove's:\n{}",
        differing.len(),
        docs.len(),
        differing[..differing.len().min(20)].join("\n")
    );
}

#[test]
fn filter_verdicts_agree_with_datatrove() {
    let docs = corpus();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for name in ["gopher_quality", "gopher_repetition", "c4", "fineweb"] {
        let chain = chain(name);
        for kind in ["technical", "prose"] {
            let (mut same, mut total, mut removed_kiln, mut removed_dt) = (0, 0, 0, 0);
            let mut examples = Vec::new();
            for d in docs.iter().filter(|d| d.kind == kind) {
                let mut doc = Document::from_text(d.text.clone());
                let ours = chain.apply(&mut doc).err().map(|r| r.reason);
                let (kept, reason) = &d.verdicts[name];
                total += 1;
                removed_kiln += ours.is_some() as usize;
                removed_dt += !kept as usize;
                // Same decision, and when both remove, for the same first failing rule.
                let agree = match (ours, kept) {
                    (None, true) => true,
                    (Some(r), false) => reason.as_deref().is_none_or(|dt| dt == r),
                    _ => false,
                };
                if agree {
                    same += 1;
                } else if examples.len() < 5 {
                    examples.push(format!("{}: kiln {ours:?}, datatrove {reason:?}", d.id));
                }
            }
            let agreement = same as f64 / total as f64;
            report.push(format!(
                "{name:18} {kind:9} {total:5} docs  agree {:6.2}%  removed kiln {removed_kiln:5} datatrove {removed_dt:5}",
                100.0 * agreement
            ));
            if agreement < 0.99 {
                failures.push(format!(
                    "{name} on {kind}: {:.2}% agreement\n  {}",
                    100.0 * agreement,
                    examples.join("\n  ")
                ));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
