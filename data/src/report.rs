//! What preparation kept and removed: per source, per filter, in documents, bytes and tokens.
//!
//! Every preparation unit (an input file, or the synthetic generator) counts into a
//! [`SourceReport`]; a source's report is the sum over its units ([`SourceReport::add`]), and the
//! data report is the list of source reports. Both are written as JSON (`report.json`) and as a
//! table (`report.txt`).
//!
//! Tokens of documents removed by a filter are *estimated* (`tokens_estimated: true`): those
//! documents are never tokenized, so their bytes are converted at the bytes-per-token ratio of the
//! documents that were tokenized. Documents removed by deduplication were tokenized (dedup runs
//! after tokenization), so their token counts are exact.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Removals by one filter or dedup stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageCount {
    pub name: String,
    /// Documents that reached this stage.
    pub docs_in: u64,
    pub docs_removed: u64,
    pub bytes_removed: u64,
    pub tokens_removed: u64,
    /// `true` when `tokens_removed` is estimated from bytes (the documents were not tokenized).
    pub tokens_estimated: bool,
    /// Removals per rule (e.g. `gopher_short_doc`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, u64>,
}

/// Counts for one source (or one unit of it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    pub source: String,
    /// Input files read (0 for generated sources).
    pub files: u64,
    pub docs_read: u64,
    pub bytes_read: u64,
    /// Rows whose text was null or missing (skipped by the reader).
    pub docs_skipped: u64,
    /// One entry per enabled filter, in order, then `dedup_exact` and `dedup_near` when enabled.
    pub stages: Vec<StageCount>,
    pub docs_out: u64,
    /// Bytes of the kept documents. `bytes_read − Σ bytes_removed − bytes_out` is what the C4
    /// rules edited out of documents (dedup counts a document's bytes after those edits).
    pub bytes_out: u64,
    /// Tokens written, `<|endoftext|>` separators included.
    pub tokens_out: u64,
    pub train_docs: u64,
    pub val_docs: u64,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// Wall-clock seconds spent (summed over units and workers).
    pub seconds: f64,
}

impl SourceReport {
    /// An empty report with one zeroed [`StageCount`] per stage name.
    pub fn new(source: &str, stage_names: &[String]) -> Self {
        SourceReport {
            source: source.to_string(),
            stages: stage_names
                .iter()
                .map(|n| StageCount {
                    name: n.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Adds another unit's counts (same stages, in the same order).
    pub fn add(&mut self, other: &SourceReport) {
        self.files += other.files;
        self.docs_read += other.docs_read;
        self.bytes_read += other.bytes_read;
        self.docs_skipped += other.docs_skipped;
        for (a, b) in self.stages.iter_mut().zip(&other.stages) {
            a.docs_in += b.docs_in;
            a.docs_removed += b.docs_removed;
            a.bytes_removed += b.bytes_removed;
            a.tokens_removed += b.tokens_removed;
            a.tokens_estimated |= b.tokens_estimated;
            for (r, n) in &b.reasons {
                *a.reasons.entry(r.clone()).or_default() += n;
            }
        }
        self.docs_out += other.docs_out;
        self.bytes_out += other.bytes_out;
        self.tokens_out += other.tokens_out;
        self.train_docs += other.train_docs;
        self.val_docs += other.val_docs;
        self.train_tokens += other.train_tokens;
        self.val_tokens += other.val_tokens;
        self.seconds += other.seconds;
    }

    /// Sets the estimated token counts of filter removals from the kept documents' ratio.
    pub(crate) fn estimate_filtered_tokens(&mut self) {
        // Dedup stages count tokens exactly; their removed bytes and tokens join the kept ones
        // to measure bytes per token.
        let (mut bytes, mut tokens) = (self.bytes_out, self.tokens_out - self.docs_out);
        for s in self.stages.iter().filter(|s| !s.tokens_estimated) {
            bytes += s.bytes_removed;
            tokens += s.tokens_removed;
        }
        let bytes_per_token = if tokens > 0 {
            bytes as f64 / tokens as f64
        } else {
            4.0
        };
        for s in self.stages.iter_mut().filter(|s| s.tokens_estimated) {
            s.tokens_removed = (s.bytes_removed as f64 / bytes_per_token).round() as u64;
        }
    }

    /// A table: one line per stage with documents and tokens in and out.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "source `{}`: {} files, {} documents read ({}), {} skipped (no text), {:.1}s",
            self.source,
            self.files,
            self.docs_read,
            human_bytes(self.bytes_read),
            self.docs_skipped,
            self.seconds
        );
        let _ = writeln!(
            out,
            "  {:<20} {:>12} {:>12} {:>8} {:>14} {:>12}",
            "stage", "docs in", "removed", "removed%", "tokens removed", "bytes removed"
        );
        for s in &self.stages {
            let pct = 100.0 * s.docs_removed as f64 / s.docs_in.max(1) as f64;
            let _ = writeln!(
                out,
                "  {:<20} {:>12} {:>12} {:>7.2}% {:>14} {:>12}",
                s.name,
                s.docs_in,
                s.docs_removed,
                pct,
                format!(
                    "{}{}",
                    if s.tokens_estimated { "~" } else { "" },
                    s.tokens_removed
                ),
                human_bytes(s.bytes_removed)
            );
            for (reason, n) in &s.reasons {
                let _ = writeln!(out, "    {reason:<34} {n:>12}");
            }
        }
        let _ = writeln!(
            out,
            "  kept: {} documents, {} tokens ({} train docs / {} tokens, {} val docs / {} tokens), {}",
            self.docs_out,
            self.tokens_out,
            self.train_docs,
            self.train_tokens,
            self.val_docs,
            self.val_tokens,
            human_bytes(self.bytes_out)
        );
        let removed: u64 = self.stages.iter().map(|s| s.bytes_removed).sum();
        let edited = self.bytes_read.saturating_sub(removed + self.bytes_out);
        if edited > 0 {
            let _ = writeln!(
                out,
                "  lines edited out of documents (C4 rules): {}",
                human_bytes(edited)
            );
        }
        out.push_str("  (~ = estimated from bytes: filtered documents are not tokenized)\n");
        out
    }
}

/// `1536` → `"1.5 KiB"`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_add_up_and_estimate_filtered_tokens() {
        let names = vec!["gopher_quality".to_string(), "dedup_exact".to_string()];
        let mut a = SourceReport::new("web", &names);
        a.files = 1;
        a.docs_read = 10;
        a.stages[0].docs_in = 10;
        a.stages[0].docs_removed = 2;
        a.stages[0].bytes_removed = 800;
        a.stages[0].tokens_estimated = true;
        a.stages[0].reasons.insert("gopher_short_doc".into(), 2);
        a.stages[1].docs_in = 8;
        a.stages[1].docs_removed = 1;
        a.stages[1].bytes_removed = 400;
        a.stages[1].tokens_removed = 100;
        a.docs_out = 7;
        a.bytes_out = 2800;
        a.tokens_out = 707; // 700 text tokens + 7 separators
        let mut total = SourceReport::new("web", &names);
        total.add(&a);
        total.add(&a);
        assert_eq!(total.docs_read, 20);
        assert_eq!(total.stages[0].reasons["gopher_short_doc"], 4);
        total.estimate_filtered_tokens();
        // 4 bytes per token over kept + deduplicated documents: 1600 bytes ≈ 400 tokens.
        assert_eq!(total.stages[0].tokens_removed, 400);
        assert_eq!(total.stages[1].tokens_removed, 200);
        let text = total.to_text();
        assert!(
            text.contains("~400") && text.contains("gopher_short_doc"),
            "{text}"
        );
    }
}
