//! A program on one end of a case (`[program.server]`): started in the
//! case's namespace, watched, and stopped, with nothing of it outliving
//! the case.
//!
//! The harness starts `teardown supervise` as process 1 of a new PID
//! namespace (from a keeper thread whose death kills it: the parent-death
//! signal), and the supervisor starts the program in its own process
//! group, with a clean environment, stdin from /dev/null, and no
//! descriptor but stdout and stderr (pipes the harness drains into bounded
//! tails). On SIGTERM the supervisor passes SIGTERM to the program's group
//! and, after the grace, SIGKILL; when the program has exited it kills
//! whatever the program left behind (daemons that left its group), and
//! exits, which ends the namespace. Its reports go back on descriptor 3,
//! one JSON line each.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigHandler, SigSet, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::sandbox;
use crate::scenario::Program;

/// Bytes of each of the program's stdout and stderr kept (the last ones).
pub const TAIL_BYTES: usize = 4096;

pub use super::ProgramRecord;

/// What the supervisor is told: one JSON argument.
#[derive(Serialize, Deserialize)]
struct Spec {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    grace_ms: u64,
    limit_ms: u64,
}

/// What the supervisor says on descriptor 3.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Report {
    /// The program started (its pid in the namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<i32>,
    /// It could not be started, or the supervisor failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended: Option<String>,
    #[serde(default)]
    leftovers: u32,
}

/// A bounded tail of a stream, and its length.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    total: u64,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > TAIL_BYTES {
            let cut = self.bytes.len() - TAIL_BYTES;
            self.bytes.drain(..cut);
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

fn drain_into(mut from: impl Read + Send + 'static, tail: Arc<Mutex<Tail>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.lock().expect("tail").push(&buf[..n]);
        }
    })
}

/// Why a program could not be run as the scenario says.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProgramError {
    #[error("{0}")]
    Start(String),
}

/// A program the case started.
pub(crate) struct Running {
    program: Program,
    supervisor: Pid,
    reports: Receiver<Report>,
    keeper: Option<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
    stdout: Arc<Mutex<Tail>>,
    stderr: Arc<Mutex<Tail>>,
    work: PathBuf,
    record: ProgramRecord,
    finished: bool,
}

static WORK_DIRS: AtomicU64 = AtomicU64::new(0);

/// The teardown binary that supervises programs (`teardown supervise`).
static SUPERVISOR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Names the teardown binary to start as a program's supervisor, for a
/// process that is not it (a test binary running cases in-process); the
/// first call wins. Otherwise the running binary is used.
pub fn use_supervisor(teardown: impl Into<PathBuf>) {
    let _ = SUPERVISOR.set(teardown.into());
}

fn supervisor() -> std::io::Result<PathBuf> {
    match SUPERVISOR.get() {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe(),
    }
}

/// Where `argv[0]` is: itself if it names a path, else the first match on
/// PATH; or what to do about it.
fn resolve(program: &str, line: usize) -> Result<PathBuf, ProgramError> {
    let not_found = |why: String| {
        ProgramError::Start(format!(
            "line {line}: program {program:?} {why}; install it, or give its full path in `command` (the catalogue's servers: `just servers`)"
        ))
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(not_found("does not exist".into()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| not_found("was not found on PATH".into()))
}

impl Running {
    /// Starts `program` in the calling thread's network namespace, with
    /// `values` for the built-ins (`${address}`, `${port}`, `${dir}`;
    /// `${work}` is made here).
    pub fn start(program: &Program, values: &[(&str, String)]) -> Result<Running, ProgramError> {
        let line = program.line;
        let work = std::env::temp_dir().join(format!(
            "teardown-program-{}-{}",
            std::process::id(),
            WORK_DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&work).map_err(|e| {
            ProgramError::Start(format!(
                "line {line}: scratch directory {}: {e}",
                work.display()
            ))
        })?;
        let mut all: Vec<(&str, String)> = values.to_vec();
        all.push(("work", work.display().to_string()));
        let argv: Vec<String> = program
            .command
            .iter()
            .map(|a| Program::fill(a, &all))
            .collect();
        let found = resolve(&argv[0], line);
        let found = match found {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(e);
            }
        };
        let mut env: Vec<(String, String)> = ["PATH", "HOME", "LANG", "TZ"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        env.extend(
            program
                .env
                .iter()
                .map(|(k, v)| (k.clone(), Program::fill(v, &all))),
        );
        let mut run_argv = argv.clone();
        run_argv[0] = found.display().to_string();
        let spec = Spec {
            argv: run_argv,
            env,
            dir: work.clone(),
            grace_ms: program.stop_grace.as_millis() as u64,
            limit_ms: program.time_limit.as_millis() as u64,
        };
        let spec = serde_json::to_string(&spec).expect("a spec serializes");
        let start = |e: std::io::Error| {
            ProgramError::Start(format!("line {line}: starting its supervisor: {e}"))
        };
        let exe = supervisor().map_err(start)?;
        let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
        let pipe = || nix::unistd::pipe2(cloexec).map_err(|e| start(e.into()));
        let (status_read, status_write) = pipe()?;
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let (tx_child, rx_child) = mpsc::channel();
        // The keeper thread starts the supervisor in a PID namespace of its
        // own (unshare affects the calling thread's children only) and
        // waits for it: the supervisor's parent-death signal fires when
        // this thread ends, so the supervisor cannot outlive the harness.
        // The supervisor is started without a copy of this process's
        // descriptors (see sandbox::spawn_clean): a fork would hold every
        // parallel case's sockets until its exec.
        let keeper = std::thread::spawn(move || {
            let spawned = (|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)?;
                let child = sandbox::spawn_clean(&sandbox::CleanSpawn {
                    program: &exe,
                    argv: &[exe.as_os_str(), "supervise".as_ref(), spec.as_ref()],
                    fds: &[
                        sandbox::ChildFd::Null,
                        sandbox::ChildFd::Reopen(out_write.as_fd()),
                        sandbox::ChildFd::Reopen(err_write.as_fd()),
                        sandbox::ChildFd::Reopen(status_write.as_fd()),
                    ],
                    own_group: false,
                    die_with_thread: true,
                    keep_net_admin: false,
                    before_exec: None,
                })?;
                drop((out_write, err_write, status_write));
                Ok::<_, std::io::Error>(child)
            })();
            match spawned {
                Ok(mut child) => {
                    let _ = tx_child.send(Ok(child.id()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx_child.send(Err(e));
                }
            }
        });
        let pid = match rx_child.recv() {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                let _ = keeper.join();
                let _ = std::fs::remove_dir_all(&work);
                return Err(start(e));
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(start(std::io::Error::other("the keeper thread died")));
            }
        };
        let stdout = Arc::new(Mutex::new(Tail::default()));
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let mut readers = Vec::new();
        readers.push(drain_into(
            std::fs::File::from(out_read),
            Arc::clone(&stdout),
        ));
        readers.push(drain_into(
            std::fs::File::from(err_read),
            Arc::clone(&stderr),
        ));
        let (tx, reports) = mpsc::channel();
        readers.push(std::thread::spawn(move || {
            let file = std::fs::File::from(status_read);
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                let report = serde_json::from_str(&line).unwrap_or_else(|e| Report {
                    error: Some(format!("the supervisor said {line:?}: {e}")),
                    ..Report::default()
                });
                if tx.send(report).is_err() {
                    break;
                }
            }
        }));
        let mut running = Running {
            program: program.clone(),
            supervisor: Pid::from_raw(pid),
            reports,
            keeper: Some(keeper),
            readers,
            stdout,
            stderr,
            work,
            record: ProgramRecord::new(program.side, argv),
            finished: false,
        };
        // The supervisor says whether the program started.
        match running.reports.recv_timeout(Duration::from_secs(10)) {
            Ok(Report {
                started: Some(_), ..
            }) => Ok(running),
            Ok(r) => {
                let why = r.error.unwrap_or_else(|| "it did not start".into());
                running.finish(Duration::from_secs(2));
                Err(ProgramError::Start(format!(
                    "line {line}: program {:?} could not start: {why}",
                    running.record.command[0]
                )))
            }
            Err(_) => {
                running.finish(Duration::from_secs(2));
                Err(ProgramError::Start(format!(
                    "line {line}: the program's supervisor did not report within 10 s"
                )))
            }
        }
    }

    /// Records when it became ready.
    pub(crate) fn ready_at(&mut self, ms: f64) {
        self.record.ready_ms = Some(ms);
    }

    /// Whether it has exited (taking its final report if so).
    pub fn exited(&mut self) -> bool {
        if !self.finished {
            while let Ok(r) = self.reports.try_recv() {
                self.take(r);
            }
        }
        self.record.ended.is_some()
    }

    /// Waits, up to `bound`, for it to exit by itself; whether it did.
    pub(crate) fn exit_within(&mut self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while !self.exited() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .reports
                .recv_timeout(left.min(Duration::from_millis(20)))
            {
                Ok(r) => self.take(r),
                Err(_) if left.is_zero() => return false,
                Err(_) => {}
            }
        }
        true
    }

    fn take(&mut self, r: Report) {
        if r.ended.is_some() {
            self.record.exit_code = r.exit_code;
            self.record.signal = r.signal;
            self.record.ended = r.ended;
            self.record.leftovers = r.leftovers;
        }
    }

    /// Stops it (SIGTERM, SIGKILL after its grace) unless it has exited,
    /// waits for the supervisor, bounded, and says what became of it.
    pub fn stop(mut self) -> ProgramRecord {
        let bound = self.program.stop_grace + Duration::from_secs(2);
        self.finish(bound);
        self.record.clone()
    }

    fn finish(&mut self, bound: Duration) {
        if self.finished {
            return;
        }
        self.finished = true;
        let _ = signal::kill(self.supervisor, Signal::SIGTERM);
        let deadline = Instant::now() + bound;
        while self.record.ended.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(r) => self.take(r),
                Err(RecvTimeoutError::Timeout) => {
                    // The supervisor is stuck: killing it ends the namespace.
                    let _ = signal::kill(self.supervisor, Signal::SIGKILL);
                    self.record.ended = Some("lost".into());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.record.ended = Some("lost".into());
                }
            }
        }
        // The supervisor exits once it has reported; its pipes then close.
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let (out, err) = (
            self.stdout.lock().expect("tail"),
            self.stderr.lock().expect("tail"),
        );
        self.record.stdout = out.text();
        self.record.stderr = err.text();
        self.record.stdout_bytes = out.total;
        self.record.stderr_bytes = err.total;
        drop((out, err));
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.finish(self.program.stop_grace + Duration::from_secs(2));
    }
}

/// `teardown supervise SPEC`: process 1 of the program's PID namespace.
/// Returns the exit code.
pub(crate) fn supervise(spec: &str) -> i32 {
    // SAFETY: descriptor 3 is the status pipe the harness set up.
    let mut status = unsafe { std::fs::File::from_raw_fd(3) };
    let mut say = |r: &Report| {
        let line = serde_json::to_string(r).expect("a report serializes");
        let _ = writeln!(status, "{line}");
    };
    let fail = |say: &mut dyn FnMut(&Report), why: String| {
        say(&Report {
            error: Some(why),
            ended: Some("exited".into()),
            ..Report::default()
        });
        1
    };
    let spec: Spec = match serde_json::from_str(spec) {
        Ok(s) => s,
        Err(e) => return fail(&mut say, format!("supervise: bad spec: {e}")),
    };
    if spec.argv.is_empty() {
        return fail(&mut say, "supervise: empty command".into());
    }
    // Nothing of the harness's reaches the program: descriptor 3 is not
    // inherited, and every other beyond it is closed.
    // SAFETY: plain syscalls on descriptors this process owns.
    unsafe {
        libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
    }
    // As process 1 of its namespace it gets only signals it handles: a
    // no-op handler, with the signals blocked and taken by sigtimedwait.
    extern "C" fn nothing(_: libc::c_int) {}
    let wanted = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD];
    let mut set = SigSet::empty();
    for s in wanted {
        set.add(s);
        // SAFETY: the handler does nothing.
        let _ = unsafe { signal::signal(s, SigHandler::Handler(nothing)) };
    }
    let _ = set.thread_block();
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.dir)
        .stdin(Stdio::null())
        .process_group(0);
    // The program starts with no signal blocked, whatever this process
    // blocks for itself.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(&mut say, e.to_string()),
    };
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    say(&Report {
        started: Some(pid),
        ..Report::default()
    });
    let group = Pid::from_raw(-pid);
    let start = Instant::now();
    let limit = Duration::from_millis(spec.limit_ms);
    let grace = Duration::from_millis(spec.grace_ms);
    let mut stopping: Option<(Instant, &str)> = None;
    let mut killed = false;
    let status = loop {
        if let Some(s) = reap(pid) {
            break s;
        }
        let now = Instant::now();
        match stopping {
            None if now.duration_since(start) >= limit => {
                let _ = signal::kill(group, Signal::SIGTERM);
                stopping = Some((now, "time-limit"));
            }
            Some((since, _)) if !killed && now.duration_since(since) >= grace => {
                let _ = signal::kill(group, Signal::SIGKILL);
                killed = true;
            }
            _ => {}
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        // SAFETY: valid set and timeout; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
        if (sig == libc::SIGTERM || sig == libc::SIGINT) && stopping.is_none() {
            let _ = signal::kill(group, Signal::SIGTERM);
            stopping = Some((Instant::now(), "stopped"));
        }
    };
    // Whatever it left (a daemon in a session of its own) dies now.
    // SAFETY: kill(-1) from process 1 reaches every other process of its
    // namespace, and only those.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // A leftover is a process that was still alive for that SIGKILL to
    // end: not one that had exited by itself (a zombie its dead parent
    // never reaped) or was already dying of the stop's SIGTERM (its exit
    // status is fixed when the signal is sent), which would make the count
    // depend on how soon the scheduler ran them.
    let mut leftovers = 0;
    while let Ok(status) = nix::sys::wait::wait() {
        if matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)) {
            leftovers += 1;
        }
    }
    let (exit_code, signal) = status;
    let ended = match stopping {
        None => "exited",
        Some(_) if killed => "killed",
        Some((_, how)) => how,
    };
    say(&Report {
        exit_code,
        signal,
        ended: Some(ended.into()),
        leftovers,
        ..Report::default()
    });
    0
}

/// Reaps every child that has exited; the program's status if it was one.
fn reap(program: i32) -> Option<(Option<i32>, Option<String>)> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let mut found = None;
    while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        match s {
            WaitStatus::Exited(p, code) if p.as_raw() == program => {
                found = Some((Some(code), None));
            }
            WaitStatus::Signaled(p, sig, _) if p.as_raw() == program => {
                found = Some((None, Some(sig.as_str().to_string())));
            }
            WaitStatus::StillAlive => break,
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_bytes_and_counts_them_all() {
        let mut t = Tail::default();
        t.push(&[b'a'; TAIL_BYTES]);
        t.push(b"the end");
        assert_eq!(t.total, TAIL_BYTES as u64 + 7);
        assert_eq!(t.bytes.len(), TAIL_BYTES);
        assert!(t.text().ends_with("athe end"));
    }

    #[test]
    fn a_command_is_found_on_path_or_named_as_missing() {
        assert!(resolve("sh", 3).unwrap().is_absolute());
        let e = resolve("teardown-surely-not-installed", 3)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "line 3: program \"teardown-surely-not-installed\" was not found on PATH"
            ),
            "{e}"
        );
        let e = resolve("/nonexistent/srv", 4).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
