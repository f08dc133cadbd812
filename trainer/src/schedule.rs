//! Learning-rate schedules. `lr_at(step)` gives the rate for the optimizer step with 0-based index
//! `step` of a run of `total` steps. Warmup is linear from `lr/warmup` to `lr` (nanoGPT's
//! `lr · (step + 1) / warmup`), so the first step never uses a zero rate.

use crate::recipe::{DecayShape, ScheduleSection};

#[derive(Debug, Clone)]
pub struct Schedule {
    pub section: ScheduleSection,
    pub lr: f64,
    pub total: u64,
}

impl Schedule {
    pub fn new(section: ScheduleSection, lr: f64, total: u64) -> Self {
        Self { section, lr, total }
    }

    pub fn lr_at(&self, step: u64) -> f64 {
        let warmup = match &self.section {
            ScheduleSection::Constant { warmup_steps }
            | ScheduleSection::Cosine { warmup_steps, .. }
            | ScheduleSection::Wsd { warmup_steps, .. } => *warmup_steps,
        };
        if step < warmup {
            return self.lr * (step + 1) as f64 / warmup as f64;
        }
        match &self.section {
            ScheduleSection::Constant { .. } => self.lr,
            ScheduleSection::Cosine { min_lr_ratio, .. } => {
                let span = self.total.saturating_sub(warmup).max(1);
                let progress = ((step - warmup) as f64 / span as f64).min(1.0);
                decay(self.lr, *min_lr_ratio, DecayShape::Cosine, progress)
            }
            ScheduleSection::Wsd {
                decay_steps,
                decay_fraction,
                decay_shape,
                min_lr_ratio,
                ..
            } => {
                let decay_len = match (decay_steps, decay_fraction) {
                    (Some(s), _) => *s,
                    (None, Some(f)) => (self.total as f64 * f).round() as u64,
                    (None, None) => 0,
                }
                .min(self.total.saturating_sub(warmup));
                let decay_start = self.total - decay_len;
                if step < decay_start || decay_len == 0 {
                    self.lr
                } else {
                    // The last step (total - 1) reaches progress 1: the floor is hit on the final update.
                    let progress = ((step - decay_start + 1) as f64 / decay_len as f64).min(1.0);
                    decay(self.lr, *min_lr_ratio, *decay_shape, progress)
                }
            }
        }
    }
}

/// `lr` decayed towards `min_ratio · lr` at `progress` ∈ [0, 1].
fn decay(lr: f64, min_ratio: f64, shape: DecayShape, progress: f64) -> f64 {
    let factor = match shape {
        DecayShape::Linear => 1.0 - progress,
        DecayShape::OneMinusSqrt => 1.0 - progress.sqrt(),
        DecayShape::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    };
    lr * (min_ratio + (1.0 - min_ratio) * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn warmup_is_linear_and_never_zero() {
        let s = Schedule::new(ScheduleSection::Constant { warmup_steps: 4 }, 1.0, 10);
        let lrs: Vec<f64> = (0..6).map(|i| s.lr_at(i)).collect();
        assert_eq!(lrs, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn cosine_goes_from_peak_to_floor() {
        let s = Schedule::new(
            ScheduleSection::Cosine {
                warmup_steps: 10,
                min_lr_ratio: 0.1,
            },
            2.0,
            110,
        );
        assert!(close(s.lr_at(10), 2.0));
        assert!(close(s.lr_at(60), 0.2 + 1.8 * 0.5)); // half way: midpoint
        assert!(close(s.lr_at(110), 0.2));
        assert!(s.lr_at(109) > 0.2 && s.lr_at(109) < 0.21);
    }

    #[test]
    fn wsd_is_flat_then_decays_to_floor() {
        let s = Schedule::new(
            ScheduleSection::Wsd {
                warmup_steps: 2,
                decay_steps: Some(4),
                decay_fraction: None,
                decay_shape: DecayShape::Linear,
                min_lr_ratio: 0.0,
            },
            1.0,
            10,
        );
        let lrs: Vec<f64> = (0..10).map(|i| s.lr_at(i)).collect();
        assert_eq!(
            lrs,
            vec![0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
        );
        let s = Schedule::new(
            ScheduleSection::Wsd {
                warmup_steps: 0,
                decay_steps: None,
                decay_fraction: Some(0.5),
                decay_shape: DecayShape::OneMinusSqrt,
                min_lr_ratio: 0.0,
            },
            1.0,
            8,
        );
        // decay over the last 4 steps: 1 - sqrt(k/4) for k = 1..4
        assert!(close(s.lr_at(3), 1.0));
        assert!(close(s.lr_at(4), 1.0 - 0.5));
        assert!(close(s.lr_at(7), 0.0));
    }
}
