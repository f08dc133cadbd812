//! Prints kiln's word tokens of documents, for comparing with datatrove's on any corpus:
//! reads JSON lines `{"text": ...}` on stdin and writes JSON lines `{"words": [...],
//! "sentences": N}` (N: datatrove's `len(split_into_sentences(text))`).
//!
//! `cargo run --release -p kiln-data --example words < docs.jsonl > kiln.jsonl`

use std::io::{BufRead, Write};

fn main() {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let doc: serde_json::Value = serde_json::from_str(&line).expect("a JSON object per line");
        let text = doc["text"].as_str().expect("a \"text\" string");
        let words = kiln_data::filters::text::words(text);
        let sentences = kiln_data::filters::text::sentences(text);
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"words": words, "sentences": sentences}),
        )
        .expect("stdout");
        out.write_all(b"\n").expect("stdout");
    }
}
