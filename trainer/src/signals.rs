//! Stop requests from the outside: Ctrl-C (SIGINT), and SIGTERM / SIGHUP, which SLURM (on
//! preemption and at the time limit), Kubernetes, `docker stop` and `timeout` send. Each one asks
//! the training loop to finish the current step, write a checkpoint and exit; a second Ctrl-C
//! aborts at once without one.
//!
//! The handler only stores the signal number (async-signal-safe); a watcher thread says what
//! happens, and the loop polls [`requested`] once per step.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Once;
use std::time::Duration;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The first stop signal received (0: none).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Whether [`announce`] has spoken.
static ANNOUNCED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(sig: nix::libc::c_int) {
    let first = STOP_SIGNAL
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if !first && sig == nix::libc::SIGINT {
        const MSG: &[u8] = b"\nsecond Ctrl-C: aborting without a checkpoint\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            nix::libc::write(2, MSG.as_ptr().cast(), MSG.len());
            nix::libc::_exit(130);
        }
    }
}

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP (once per process) and a thread that
/// reports the first request on stderr.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let action = SigAction::new(
            SigHandler::Handler(on_stop_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only touches an atomic, or writes and exits.
            if let Err(e) = unsafe { sigaction(signal, &action) } {
                eprintln!("warning: cannot handle {signal}: {e}");
            }
        }
        let _ = std::thread::Builder::new()
            .name("stop-signals".into())
            .spawn(|| loop {
                if requested().is_some() {
                    announce();
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            });
    });
}

/// Says on stderr, once, what a stop request does. Called by the watcher thread as soon as a
/// signal arrives, and by the training loop when it acts on it (a step may end first).
pub fn announce() {
    let Some(signal) = requested() else {
        return;
    };
    if ANNOUNCED.swap(true, Ordering::SeqCst) {
        return;
    }
    let abort = if signal == Signal::SIGINT {
        " (press Ctrl-C again to abort now)"
    } else {
        ""
    };
    crate::metrics::log_line(&format!(
        "\n{}: finishing this step, writing a checkpoint, then exiting{abort}",
        name(signal)
    ));
}

/// "Ctrl-C" for SIGINT, the signal's name otherwise.
pub fn name(signal: Signal) -> &'static str {
    match signal {
        Signal::SIGINT => "Ctrl-C",
        other => other.as_str(),
    }
}

/// The stop signal received, if any.
pub fn requested() -> Option<Signal> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Signal::try_from(sig).ok(),
    }
}

/// The exit status for a run stopped by `signal`: 0 after Ctrl-C (the user asked for it), and
/// the shell's `128 + signal` for SIGTERM (143) and SIGHUP (129), so that a scheduler sees the
/// run was terminated (its checkpoint is written; `--resume` continues).
pub fn exit_status(signal: Signal) -> i32 {
    match signal {
        Signal::SIGINT => 0,
        other => 128 + other as i32,
    }
}
