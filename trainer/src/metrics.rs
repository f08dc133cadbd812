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
    jsonl_path: PathBuf,
    /// Whether the last `metrics.jsonl` write failed (warned once until one succeeds again).
    jsonl_failing: bool,
    /// `None` once writing the event file failed: TensorBoard is then off for the rest of the run.
    tb: Option<tensorboard_rs::summary_writer::SummaryWriter>,
    tb_dir: PathBuf,
    bar: Option<ProgressBar>,
}

/// What tensorboard-rs's writer thread panicked with (it `expect`s every write), caught by
/// [`quiet_tensorboard_panics`] instead of printed.
static TB_FAILURE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// tensorboard-rs writes event files on a thread that panics on any I/O error (a full disk), and
/// every later call then panics too. Its panics are recorded here rather than printed; the logger
/// turns them into one warning that names the directory, and training goes on.
fn quiet_tensorboard_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let from_tensorboard = info
                .location()
                .is_some_and(|l| l.file().contains("tensorboard"));
            if !from_tensorboard {
                return previous(info);
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let mut failure = TB_FAILURE.lock().unwrap_or_else(|e| e.into_inner());
            // The first panic (the writer thread's, with the I/O error) says the most.
            if failure.as_deref().is_none_or(str::is_empty) {
                *failure = Some(message);
            }
        }));
    });
}

impl Logger {
    /// Opens the run's logs. On resume, lines after `resume_step` are dropped from `metrics.jsonl`
    /// so that the file reads as one continuous run.
    pub fn open(
        run_dir: &Path,
        total_steps: u64,
        resume_step: Option<u64>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = run_dir.join("metrics.jsonl");
        if let Some(step) = resume_step {
            truncate_after(&path, step)
                .with_context(|| format!("cannot rewrite {} for the resume", path.display()))?;
        }
        let jsonl = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let tb_dir = run_dir.join("tb");
        std::fs::create_dir_all(&tb_dir)
            .with_context(|| format!("cannot create {}", tb_dir.display()))?;
        quiet_tensorboard_panics();
        // tensorboard-rs creates its event file on its writer thread; when that fails, whether
        // `SummaryWriter::new` returns or panics depends on which thread runs first, and a panic
        // there drops a writer whose `Drop` panics again: an abort. So a directory that takes no
        // file is found out here, without calling it.
        let probe = tb_dir.join(".kiln-write-probe");
        let tb = match std::fs::write(&probe, b"") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                std::panic::catch_unwind(|| {
                    tensorboard_rs::summary_writer::SummaryWriter::new(&tb_dir)
                })
                .ok()
            }
            Err(e) => {
                *TB_FAILURE.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                None
            }
        };
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
        let mut logger = Self {
            jsonl,
            jsonl_path: path,
            jsonl_failing: false,
            tb,
            tb_dir,
            bar,
        };
        logger.with_tb(|_| {});
        Ok(logger)
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

    /// Runs `f` on the TensorBoard writer unless it failed before; if it fails now, warns once
    /// (naming the directory and the error) and turns TensorBoard off for the rest of the run.
    fn with_tb(&mut self, f: impl FnOnce(&mut tensorboard_rs::summary_writer::SummaryWriter)) {
        let panicked = match self.tb.as_mut() {
            Some(tb) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tb))).is_err(),
            None => false,
        };
        let failure = TB_FAILURE.lock().unwrap_or_else(|e| e.into_inner()).take();
        let failed = panicked || failure.is_some() || self.tb.is_none();
        if failed && !self.tb_dir.as_os_str().is_empty() {
            // Dropping a writer whose thread died panics (it joins with `expect`): leak it.
            std::mem::forget(self.tb.take());
            self.info(&format!(
                "warning: writing TensorBoard events under {} failed ({}): TensorBoard logging is \
                 off for the rest of this run; training and metrics.jsonl go on",
                self.tb_dir.display(),
                failure
                    .map(|m| m.trim_start_matches([':', ' ']).to_string())
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "the writer stopped".into())
            ));
            // Warned once: an empty path marks it.
            self.tb_dir = PathBuf::new();
        }
    }

    pub fn train(&mut self, r: &TrainRecord) {
        self.write_json(r);
        let step = r.step as usize;
        self.with_tb(|tb| {
            tb.add_scalar("train/loss", r.loss as f32, step);
            tb.add_scalar("train/lr", r.lr as f32, step);
            if let Some(g) = r.grad_norm {
                tb.add_scalar("train/grad_norm", g as f32, step);
            }
            tb.add_scalar("train/tokens_per_s", r.tokens_per_s as f32, step);
            if let Some(m) = r.mfu {
                tb.add_scalar("train/mfu", m as f32, step);
            }
        });
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
    }

    pub fn eval(&mut self, r: &EvalRecord) {
        self.write_json(r);
        let step = r.step as usize;
        let by_source = r.val_loss_by_source.len() > 1;
        self.with_tb(|tb| {
            tb.add_scalar("val/loss", r.val_loss as f32, step);
            if by_source {
                for (name, loss) in &r.val_loss_by_source {
                    tb.add_scalar(&format!("val/loss/{name}"), *loss as f32, step);
                }
            }
        });
        let mut per_source = String::new();
        if by_source {
            for (name, loss) in &r.val_loss_by_source {
                per_source += &format!(" | {name} {loss:.4}");
            }
        }
        self.info(&format!(
            "step {:>6} | val_loss {:.4} | val_ppl {:.2}{per_source}",
            r.step, r.val_loss, r.val_ppl
        ));
    }

    /// Any other JSON record (e.g. generated samples).
    pub fn record(&mut self, v: &Value) {
        self.write_json(v)
    }

    /// Appends one line to `metrics.jsonl`. A failed write (a full disk) is a warning naming the
    /// file, not the end of the run: the checkpoint that follows either succeeds or fails with
    /// its own error, keeping the earlier ones. A partly written line is cut off again, so that
    /// the file stays valid JSONL.
    fn write_json<T: Serialize>(&mut self, r: &T) {
        let mut line = serde_json::to_string(r).expect("records serialise");
        line.push('\n');
        let before = self.jsonl.metadata().map(|m| m.len()).ok();
        let result = self
            .jsonl
            .write_all(line.as_bytes())
            .and_then(|()| self.jsonl.flush());
        match result {
            Ok(()) => self.jsonl_failing = false,
            Err(e) => {
                if let Some(len) = before {
                    let _ = self.jsonl.set_len(len);
                }
                if !self.jsonl_failing {
                    self.info(&format!(
                        "warning: cannot write {}: {e}; records are lost until it can be written again; training goes on",
                        self.jsonl_path.display()
                    ));
                }
                self.jsonl_failing = true;
            }
        }
    }

    pub fn finish(mut self) {
        self.with_tb(|tb| tb.flush());
        if let Some(tb) = self.tb.take() {
            // Joins the writer thread, which panics if the final write failed.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(tb))).is_err() {
                self.with_tb(|_| {});
            }
        }
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
