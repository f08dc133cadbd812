//! One input document as it flows through the pipeline: read from a source, filtered,
//! deduplicated, then tokenized.

/// A text document and the metadata that filters may use. Fields other than `text` are filled
/// when the input has them (FineWeb parquet has `id`, `url`, `language`, `score`; JSONL may).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    pub text: String,
    pub id: Option<String>,
    pub url: Option<String>,
    /// Language code as the input labels it (e.g. FineWeb's `"en"`); not a detection.
    pub language: Option<String>,
    /// Quality score as the input labels it (e.g. FineWeb-Edu's `score`, 0–5).
    pub score: Option<f64>,
}

impl Document {
    /// A document with only text.
    pub fn from_text(text: impl Into<String>) -> Self {
        Document {
            text: text.into(),
            ..Default::default()
        }
    }
}
