//! Ctrl-C and SIGTERM: the first asks the run to stop starting cases (the
//! ones in flight finish and the report is written); the second exits at
//! once. Either way nothing is left behind: namespaces, their sockets and
//! fault rules belong to case threads and vanish with them or the process.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static STOP: AtomicBool = AtomicBool::new(false);

/// The exit status of a second signal.
const INTERRUPTED: i32 = 130;

extern "C" fn on_signal(_: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(INTERRUPTED) };
    }
    let msg = b"\nteardown: stopping: running cases finish, then the report is written (again to quit at once)\n";
    // SAFETY: write(2) is async-signal-safe; the buffer is static.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Installs the handlers; returns the flag they set. A handler that cannot
/// be installed is reported on stderr (the run then ends without a report
/// on that signal).
pub fn install() -> &'static AtomicBool {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls
        // async-signal-safe functions.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            eprintln!("teardown: cannot handle {sig}: {e}; it will end the run without a report");
        }
    }
    &STOP
}
