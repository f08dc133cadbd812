//! Keep documents by a quality score that came with the input, such as FineWeb-Edu's `score`
//! (a 0–5 educational-value rating from a classifier). FineWeb-Edu is the subset of FineWeb
//! with `int_score >= 3`, i.e. `score >= 2.5` after rounding; the FineWeb-Edu card and paper
//! describe the threshold as "3", and kiln's default `min` is 3.0 on the raw score, the
//! stricter reading (for exactly FineWeb-Edu's rows, write `min: 2.5`).

use serde::{Deserialize, Serialize};

use super::Fields;
use crate::{DataError, Document};

/// Settings of the score filter. Kept: `min <= score` and, if set, `score <= max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreConfig {
    /// Lowest score kept (inclusive). Default: 3.0 (FineWeb-Edu's threshold).
    pub min: f64,
    /// Highest score kept (inclusive). Default: none.
    pub max: Option<f64>,
    /// Drop documents without a score (or with a NaN score). Default: true.
    pub drop_missing: bool,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            min: 3.0,
            max: None,
            drop_missing: true,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ScoreFilter {
    cfg: ScoreConfig,
}

impl ScoreFilter {
    pub(crate) fn new(cfg: &ScoreConfig, f: &Fields) -> Result<Self, DataError> {
        if !cfg.min.is_finite() {
            return Err(f.err("min", format!("{} is not a finite number", cfg.min)));
        }
        if let Some(max) = cfg.max {
            if !max.is_finite() || max < cfg.min {
                return Err(f.err(
                    "max",
                    format!("{max} is not a number at or above min ({})", cfg.min),
                ));
            }
        }
        Ok(ScoreFilter { cfg: cfg.clone() })
    }

    pub(crate) fn check(&self, doc: &Document) -> Result<(), &'static str> {
        match doc.score.filter(|s| !s.is_nan()) {
            None if self.cfg.drop_missing => Err("score_missing"),
            None => Ok(()),
            Some(s) if s < self.cfg.min => Err("score_below_min"),
            Some(s) if self.cfg.max.is_some_and(|m| s > m) => Err("score_above_max"),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(score: Option<f64>) -> Document {
        Document {
            score,
            ..Document::from_text("text")
        }
    }

    fn filter(cfg: ScoreConfig) -> ScoreFilter {
        ScoreFilter::new(&cfg, &Fields::new("test", "score")).unwrap()
    }

    #[test]
    fn missing_low_and_high_scores() {
        let f = filter(ScoreConfig::default());
        assert_eq!(f.check(&doc(None)), Err("score_missing"));
        assert_eq!(f.check(&doc(Some(f64::NAN))), Err("score_missing"));
        assert_eq!(f.check(&doc(Some(2.99))), Err("score_below_min"));
        assert_eq!(f.check(&doc(Some(3.0))), Ok(()));
        assert_eq!(f.check(&doc(Some(4.7))), Ok(()));

        let keep_missing = filter(ScoreConfig {
            drop_missing: false,
            ..Default::default()
        });
        assert_eq!(keep_missing.check(&doc(None)), Ok(()));

        let band = filter(ScoreConfig {
            min: 2.5,
            max: Some(4.0),
            drop_missing: true,
        });
        assert_eq!(band.check(&doc(Some(2.5))), Ok(()));
        assert_eq!(band.check(&doc(Some(4.0))), Ok(()));
        assert_eq!(band.check(&doc(Some(4.01))), Err("score_above_max"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = ScoreFilter::new(
            &ScoreConfig {
                min: 3.0,
                max: Some(2.0),
                drop_missing: true,
            },
            &Fields::new("data.sources[0].filters", "score"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.sources[0].filters.score.max"), "{e}");
    }
}
