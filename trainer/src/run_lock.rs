//! One training process per run directory: `<run>/lock` holds the PID and host of the process
//! that trains there. A second run on the same directory gets an error naming the holder (two
//! runs would interleave checkpoints and logs). A lock whose process is gone (killed, crashed,
//! machine rebooted on the same host) is taken over with a notice; one from another host is never
//! taken over, since its process cannot be checked from here.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Held while training; removes the lock file when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Whether process `pid` exists on this machine.
fn process_alive(pid: i32) -> bool {
    pid > 0 && !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

impl RunLock {
    /// Takes the lock of `run_dir`; `say` reports a stale lock taken over.
    pub fn acquire(run_dir: &Path, say: impl Fn(&str)) -> Result<Self> {
        let path = run_dir.join("lock");
        let me = (std::process::id(), host_name());
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    writeln!(f, "pid {} host {}", me.0, me.1)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let held = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut words = held.split_whitespace();
                    let (pid, host) = match (words.next(), words.next(), words.next(), words.next())
                    {
                        (Some("pid"), Some(pid), Some("host"), Some(host)) => {
                            (pid.parse::<i32>().unwrap_or(0), host.to_string())
                        }
                        _ => (0, String::new()),
                    };
                    if host == me.1 && !process_alive(pid) {
                        say(&format!(
                            "taking over {}: its process (PID {pid}) is gone",
                            path.display()
                        ));
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    let holder = if pid > 0 {
                        format!("PID {pid} on host {host}")
                    } else {
                        format!("an unreadable lock ({:?})", held.trim())
                    };
                    bail!(
                        "{} is in use by another training run ({holder}); wait for it, use another \
                         --out, or delete {} if that process is certainly gone",
                        run_dir.display(),
                        path.display()
                    );
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        bail!("cannot take {}: it keeps reappearing", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
