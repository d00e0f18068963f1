//! gVisor from the host: running this same `teardown` command inside a
//! `runsc do` sandbox, whose netstack is then the stack under test.
//!
//! `runsc --rootless=false --network=none --net-raw do -force-overlay=false`
//! gives the command gVisor's own TCP/IP stack with only a loopback, raw
//! packet sockets for the capture, and write access to the host's files, so
//! reports and pcaps land where they would outside. Inside, the stack is
//! recognised by its kernel log (`Stack::detect`). Nothing on the host's
//! network changes: `--network=none` gives the sandbox no host interface.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use std::process::Command;

/// Why the sandbox could not be started.
#[derive(Debug, thiserror::Error)]
pub enum GvisorError {
    #[error(
        "runsc (gVisor) was not found in $TEARDOWN_RUNSC, target/gvisor/runsc or PATH: `just runsc` fetches it (without installing it), or set TEARDOWN_RUNSC"
    )]
    NoRunsc,
    #[error("cannot run {}: {source}", runsc.display())]
    Start {
        runsc: PathBuf,
        source: std::io::Error,
    },
}

/// Where runsc is: `$TEARDOWN_RUNSC`, then `target/gvisor/runsc` (what
/// `just runsc` fetches; looked for above this executable, which lives in
/// `target/{debug,release}/` or, for tests and benches, a `deps/` below
/// it, and in the working directory), then PATH.
pub fn find_runsc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TEARDOWN_RUNSC") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok();
    let above_exe = exe
        .iter()
        .flat_map(|e| e.ancestors().skip(1).take(3))
        .map(|dir| dir.join("gvisor/runsc"));
    let fetched = above_exe
        .chain([PathBuf::from("target/gvisor/runsc")])
        .find(|p| p.is_file());
    if fetched.is_some() {
        return fetched;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("runsc"))
        .find(|p| p.is_file())
}

/// runsc's own version (`0.0~20240729.0`), if it says one.
pub fn version(runsc: &Path) -> Option<String> {
    let out = Command::new(runsc).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("runsc version "))
        .map(|v| v.trim().to_string())
}

/// Runs this executable with `args` inside a gVisor sandbox and returns its
/// exit code. `TEARDOWN_RUNSC_PLATFORM` picks runsc's platform (systrap by
/// default; ptrace where systrap cannot run).
pub fn run_inside(args: &[OsString]) -> Result<i32, GvisorError> {
    let runsc = find_runsc().ok_or(GvisorError::NoRunsc)?;
    let start = |source| GvisorError::Start {
        runsc: runsc.clone(),
        source,
    };
    let exe = std::env::current_exe().map_err(start)?;
    let mut cmd = Command::new(&runsc);
    if let Some(platform) = std::env::var_os("TEARDOWN_RUNSC_PLATFORM") {
        cmd.arg("--platform").arg(platform);
    }
    cmd.args(["--rootless=false", "--network=none", "--net-raw", "do"])
        .args(["-force-overlay=false", "-quiet"])
        .arg(exe)
        .args(args);
    if let Some(v) = version(&runsc) {
        cmd.env("TEARDOWN_STACK_VERSION", v);
    }
    let status = cmd.status().map_err(start)?;
    Ok(status.code().unwrap_or(128 + libc::SIGKILL))
}
