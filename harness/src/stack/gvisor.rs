//! gVisor from the host: running this same `teardown` command inside a
//! `runsc do` sandbox, whose netstack is then the stack under test.
//!
//! `runsc --rootless=false --network=none --net-raw do -force-overlay=false`
//! gives the command gVisor's own TCP/IP stack with only a loopback, raw
//! packet sockets for the capture, and write access to the host's files, so
//! reports and pcaps land where they would outside. Inside, the stack is
//! recognised by its kernel log (`Stack::detect`). Nothing on the host's
//! network changes: `--network=none` gives the sandbox no host interface.
//!
//! On the bench, a gVisor host is `runsc run` in the host's namespace with
//! `--network=sandbox`: netstack takes over the namespace's link (its
//! addresses and routes move into the sandbox and leave the host kernel)
//! and a `teardown agent` inside makes the calls ([`agent_command`]).

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
    // No exit code: ended by a signal, as SIGKILL (9) would.
    Ok(status.code().unwrap_or(128 + 9))
}

/// The first runsc release whose sandbox network starts in a namespace on
/// kernels with 19249c0724f2 ("net: make net.core.{r,w}mem_{default,max}
/// namespaced"; this machine's 6.18 has it): earlier ones take any
/// namespace with /proc/sys/net/core/rmem_default for the initial one and
/// refuse to start (gVisor issue 10704, fixed 2024-07-31 in 19f6b0c07).
/// Debian's runsc, in every suite, is 20240729.
#[cfg(target_os = "linux")]
const FIXED_ROOT_NETNS_CHECK: &str = "20240731";

/// A `runsc run` that starts `exe agent --own-stack` in a gVisor sandbox
/// whose netstack takes over the links of the network namespace at
/// `netns` (a bench host's), speaking the agent protocol on its stdin and
/// stdout. Its OCI bundle and runsc's state go in `scratch`, which must
/// exist and which the caller removes once the process has ended; `id`
/// names the container there. The process, the sandbox and its gofer are
/// killed if the thread that starts them ends first (PDEATHSIG, which runsc
/// passes on to its own children when it runs attached).
#[cfg(target_os = "linux")]
pub(crate) fn agent_command(
    exe: &Path,
    netns: &Path,
    scratch: &Path,
    id: &str,
) -> Result<crate::sandbox::ProgramCommand, GvisorError> {
    let runsc = find_runsc().ok_or(GvisorError::NoRunsc)?;
    let version = version(&runsc);
    let bundle = scratch.join("bundle");
    let state = scratch.join("state");
    let io = |source| GvisorError::Start {
        runsc: runsc.clone(),
        source,
    };
    std::fs::create_dir_all(&bundle).map_err(io)?;
    std::fs::create_dir_all(&state).map_err(io)?;
    let mut env = vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    if let Some(v) = &version {
        env.push(format!("TEARDOWN_STACK_VERSION={v}"));
    }
    let caps = ["CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"];
    let spec = serde_json::json!({
        "ociVersion": "1.0.0",
        "process": {
            "args": [exe, "agent", "--own-stack"],
            "cwd": "/",
            "env": env,
            "user": { "uid": 0, "gid": 0 },
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
        },
        // The host's files, read-only: the agent needs nothing else.
        "root": { "path": "/", "readonly": true },
        "hostname": "teardown-gvisor",
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
                { "type": "network", "path": netns },
            ],
        },
    });
    std::fs::write(bundle.join("config.json"), spec.to_string()).map_err(io)?;
    let mut cmd = crate::sandbox::ProgramCommand::new(&runsc);
    if let Some(platform) = std::env::var_os("TEARDOWN_RUNSC_PLATFORM") {
        cmd.arg("--platform").arg(platform);
    }
    cmd.arg("--root")
        .arg(&state)
        .args(["--network=sandbox", "--overlay2=none", "run", "--bundle"])
        .arg(&bundle)
        .arg(id);
    let hide_net_core = version
        .as_deref()
        .and_then(release_date)
        .is_some_and(|d| d < FIXED_ROOT_NETNS_CHECK);
    cmd.die_with_thread = true;
    if hide_net_core {
        cmd.before_exec = Some(hide_host_net_sysctls);
    }
    Ok(cmd)
}

/// For runsc releases before [`FIXED_ROOT_NETNS_CHECK`]: gives the process
/// a mount namespace of its own (nothing propagates back) in which
/// /proc/sys/net is an empty tmpfs, so runsc's check finds no
/// rmem_default and knows the bench host's namespace is not the host's.
/// runsc reads nothing else under /proc/sys/net (its netstack has its own
/// sysctls); the harness's own view of /proc is untouched.
///
/// Returns 0, or -1 with errno set.
///
/// # Safety
/// In a child about to exec only: it changes the calling process's mounts,
/// and makes nothing but system calls.
#[cfg(target_os = "linux")]
unsafe fn hide_host_net_sysctls() -> libc::c_int {
    // SAFETY: plain syscalls on static, NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0
            || libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
        {
            return -1;
        }
        libc::mount(
            c"none".as_ptr(),
            c"/proc/sys/net".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    }
}

/// The release date of a runsc version (`0.0~20240729.0` -> `20240729`;
/// `release-20240729.0` too).
#[cfg(target_os = "linux")]
fn release_date(version: &str) -> Option<&str> {
    let digits = version
        .rsplit(['~', '-'])
        .next()?
        .split('.')
        .next()
        .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))?;
    Some(digits)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn release_dates_are_read_from_both_spellings() {
        assert_eq!(release_date("0.0~20240729.0"), Some("20240729"));
        assert_eq!(release_date("release-20241104.0"), Some("20241104"));
        assert_eq!(release_date("0.0~git"), None);
        assert!(release_date("0.0~20240729.0").unwrap() < FIXED_ROOT_NETNS_CHECK);
    }
}
