//! Run logging: `metrics.jsonl` (one JSON object per line), TensorBoard event files under `tb/`, and the
//! console (a progress bar on a terminal, plain lines otherwise).
//!
//! MFU = achieved FLOP/s ÷ peak FLOP/s. Achieved FLOP/s = tokens/s × `ModelConfig::flops_per_token`
//! (6 × matmul parameters + attention term; see that function). Peak: `train.peak_flops` if set,
//! otherwise, on CPU, the f32 FMA rate of the training threads measured at start-up
//! (`cpu_peak.rs`: it includes turbo, which a clock × width estimate misses). A figure above 100%
//! means the peak is wrong: MFU is then reported as `null` with a warning, never as an impossible
//! number.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

/// Writes a line to stderr and ignores failure: a closed pipe (`train ... 2>&1 | head -3`) or a
/// full terminal buffer must never stop training (`eprintln!` panics on such an error). The run's
/// record is `metrics.jsonl` and TensorBoard, which are written regardless.
pub fn log_line(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// [`log_line`] for stdout.
pub fn out_line(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{msg}");
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainRecord {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: Option<f64>,
    pub tokens: u64,
    pub tokens_per_s: f64,
    pub mfu: Option<f64>,
    pub elapsed_s: f64,
    pub eta_s: f64,
    pub peak_rss_mb: Option<f64>,
    /// Memory held by the GPU allocator (MiB); absent on the CPU backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_mem_mb: Option<f64>,
    /// Training tokens drawn from each data source so far (all workers).
    pub tokens_by_source: BTreeMap<String, u64>,
    /// Current epoch (0-based) of each data source.
    pub epochs_by_source: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalRecord {
    pub step: u64,
    pub val_loss: f64,
    pub val_ppl: f64,
    pub tokens: u64,
    /// Validation loss of each source with validation data; `val_loss` is their mix-weighted mean.
    pub val_loss_by_source: BTreeMap<String, f64>,
}

pub struct Logger {
    jsonl: File,
    tb: tensorboard_rs::summary_writer::SummaryWriter,
    bar: Option<ProgressBar>,
}

impl Logger {
    /// Opens the run's logs. On resume, lines after `resume_step` are dropped from `metrics.jsonl`
    /// so that the file reads as one continuous run.
    pub fn open(
        run_dir: &Path,
        total_steps: u64,
        resume_step: Option<u64>,
    ) -> std::io::Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        if let Some(step) = resume_step {
            truncate_after(&path, step)?;
        }
        let jsonl = OpenOptions::new().create(true).append(true).open(&path)?;
        let tb_dir = run_dir.join("tb");
        std::fs::create_dir_all(&tb_dir)?;
        let tb = tensorboard_rs::summary_writer::SummaryWriter::new(&tb_dir);
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total_steps);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} steps {msg} [{elapsed_precise} < {eta_precise}]",
                )
                .expect("static template"),
            );
            bar.set_position(resume_step.unwrap_or(0));
            bar
        });
        Ok(Self { jsonl, tb, bar })
    }

    /// A line for the user, printed above the progress bar when there is one.
    pub fn info(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => log_line(msg),
        }
    }

    pub fn set_step(&self, step: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
        }
    }

    pub fn train(&mut self, r: &TrainRecord) -> std::io::Result<()> {
        self.write_json(r)?;
        let step = r.step as usize;
        self.tb.add_scalar("train/loss", r.loss as f32, step);
        self.tb.add_scalar("train/lr", r.lr as f32, step);
        if let Some(g) = r.grad_norm {
            self.tb.add_scalar("train/grad_norm", g as f32, step);
        }
        self.tb
            .add_scalar("train/tokens_per_s", r.tokens_per_s as f32, step);
        if let Some(m) = r.mfu {
            self.tb.add_scalar("train/mfu", m as f32, step);
        }
        let device_mem = r
            .device_mem_mb
            .map_or(String::new(), |m| format!(" | gpu mem {m:.0}MB"));
        let line = format!(
            "step {:>6} | loss {:.4} | lr {:.3e} | grad_norm {} | tokens {} | {:.0} tok/s | mfu {} | rss {}{device_mem} | elapsed {} | eta {}",
            r.step,
            r.loss,
            r.lr,
            r.grad_norm.map_or("-".into(), |g| format!("{g:.3}")),
            r.tokens,
            r.tokens_per_s,
            r.mfu.map_or("-".into(), |m| format!("{:.1}%", m * 100.0)),
            r.peak_rss_mb.map_or("-".into(), |m| format!("{m:.0}MB")),
            fmt_duration(r.elapsed_s),
            fmt_duration(r.eta_s),
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(r.step);
                bar.set_message(format!("loss {:.4} {:.0} tok/s", r.loss, r.tokens_per_s));
                bar.println(line);
            }
            None => log_line(&line),
        }
        Ok(())
    }

    pub fn eval(&mut self, r: &EvalRecord) -> std::io::Result<()> {
        self.write_json(r)?;
        self.tb
            .add_scalar("val/loss", r.val_loss as f32, r.step as usize);
        let mut per_source = String::new();
        if r.val_loss_by_source.len() > 1 {
            for (name, loss) in &r.val_loss_by_source {
                self.tb
                    .add_scalar(&format!("val/loss/{name}"), *loss as f32, r.step as usize);
                per_source += &format!(" | {name} {loss:.4}");
            }
        }
        self.info(&format!(
            "step {:>6} | val_loss {:.4} | val_ppl {:.2}{per_source}",
            r.step, r.val_loss, r.val_ppl
        ));
        Ok(())
    }

    /// Any other JSON record (e.g. generated samples).
    pub fn record(&mut self, v: &Value) -> std::io::Result<()> {
        self.write_json(v)
    }

    fn write_json<T: Serialize>(&mut self, r: &T) -> std::io::Result<()> {
        let mut line = serde_json::to_string(r).map_err(std::io::Error::other)?;
        line.push('\n');
        self.jsonl.write_all(line.as_bytes())?;
        self.jsonl.flush()
    }

    pub fn finish(mut self) {
        self.tb.flush();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Drops the JSONL lines whose `step` is greater than `step` (resume after a crash).
fn truncate_after(path: &Path, step: u64) -> std::io::Result<()> {
    let Ok(file) = File::open(path) else {
        return Ok(());
    };
    let mut kept = String::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let later = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v.get("step").and_then(Value::as_u64))
            .is_some_and(|s| s > step);
        // A torn last line (crash mid-write) does not parse: drop it too.
        if !later && serde_json::from_str::<Value>(&line).is_ok() {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    let tmp: PathBuf = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, kept)?;
    std::fs::rename(tmp, path)
}

pub fn fmt_duration(s: f64) -> String {
    if !s.is_finite() {
        return "-".into();
    }
    let s = s.max(0.0) as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Peak resident memory of this process in MB (Linux `VmHWM`); `None` elsewhere.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// MFU as a fraction, or `None` (with the reason) when the peak is unknown or inconsistent.
pub fn mfu(flops_per_s: f64, peak: Option<f64>) -> Option<f64> {
    let m = flops_per_s / peak?;
    (m.is_finite() && m <= 1.0).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfu_is_never_above_one() {
        assert_eq!(mfu(50.0, Some(100.0)), Some(0.5));
        assert_eq!(mfu(150.0, Some(100.0)), None);
        assert_eq!(mfu(1.0, None), None);
    }

    #[test]
    fn resume_truncates_later_steps_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(
            &p,
            "{\"step\":1,\"loss\":2}\n{\"step\":2,\"val_loss\":2}\n{\"step\":3,\"loss\":1}\n{\"step\":4,\"lo",
        )
        .unwrap();
        truncate_after(&p, 2).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "{\"step\":1,\"loss\":2}\n{\"step\":2,\"val_loss\":2}\n"
        );
    }

    #[test]
    fn durations_format() {
        assert_eq!(fmt_duration(3725.0), "01:02:05");
        assert_eq!(fmt_duration(f64::NAN), "-");
    }
}
