//! Linux: `unshare(CLONE_NEWNET)` on the case's own thread.
//!
//! A network namespace belongs to the thread that unshared it; sockets,
//! pcap handles and netlink sockets created by that thread (or threads it
//! spawns) live in it. When the thread ends and the last socket closes, the
//! kernel destroys the namespace and purges whatever it held (TIME-WAIT
//! entries, orphans). So a case thread must never be reused for another case.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};

use super::{SandboxError, describe};

/// Proof that the calling thread is in a fresh namespace with `lo` up.
/// Deliberately `!Send`: the namespace belongs to this thread.
pub struct Namespace {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Namespace {
    /// The calling process's namespace, which whoever started the process
    /// made for it alone: an agent the harness starts in a case's host
    /// namespace or sandbox, told so by `teardown agent --own-stack`.
    pub(crate) fn declared_own() -> Namespace {
        Namespace {
            _not_send: std::marker::PhantomData,
        }
    }
}

/// Moves the calling thread into a new, empty network namespace and brings
/// its loopback interface up.
pub fn enter_fresh_namespace() -> Result<Namespace, SandboxError> {
    unshare_network()?;
    bring_up_loopback()?;
    Ok(Namespace {
        _not_send: std::marker::PhantomData,
    })
}

/// Moves the calling thread into a new, empty network namespace, made from
/// [`Parent`]'s where this kernel has one, so that its TCP socket table is
/// its own.
pub(super) fn unshare_network() -> Result<(), SandboxError> {
    let parent = Parent::get();
    if let Some(parent) = parent {
        nix::sched::setns(&parent.namespace, CloneFlags::CLONE_NEWNET).map_err(|e| {
            SandboxError::Setup(format!("setns to the parent namespace: {}", e.desc()))
        })?;
    }
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| match e {
        Errno::EPERM | Errno::EACCES => {
            SandboxError::NotPermitted(format!("unshare(CLONE_NEWNET): {}", e.desc()))
        }
        e => SandboxError::Setup(format!(
            "unshare(CLONE_NEWNET): {}",
            describe(&std::io::Error::from(e))
        )),
    })?;
    for (name, value) in parent.iter().flat_map(|p| &p.sized_by_table) {
        std::fs::write(sysctl_path(name), value).map_err(|e| SandboxError::Sysctl {
            name: name.to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// The namespace every case namespace is made from: one of this process's
/// own (never the host's), empty, whose `tcp_child_ehash_entries` gives each
/// namespace made from it a TCP socket table of its own.
///
/// Made from the host's namespace, a namespace shares the host's table
/// (262,144 buckets on a 24 GiB machine), and the kernel walks all of it for
/// every sock_diag dump, which the driver makes every few milliseconds
/// while it waits for a state, and again when the namespace is destroyed.
/// A table of its own is all that changes: the two sysctls the kernel sizes
/// from the table are set back to what a namespace made from the host's
/// gets, so a case sees the same values, and a case's own `[sysctl]` is
/// written after them.
struct Parent {
    namespace: std::os::fd::OwnedFd,
    /// (sysctl, value in a namespace made from the host's)
    sized_by_table: Vec<(&'static str, String)>,
}

/// Buckets of each case namespace's own TCP socket table: a case holds at
/// most a few thousand sockets.
const CASE_TABLE_BUCKETS: &str = "8192";

/// Sysctls whose default the kernel derives from the table's size.
const SIZED_BY_TABLE: [&str; 2] = [
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_max_syn_backlog",
];

impl Parent {
    /// The process's parent namespace, made on first use; None where the
    /// kernel has no per-namespace tables (before 6.1, gVisor) or the
    /// namespace cannot be made (the case's own unshare then says why).
    fn get() -> Option<&'static Parent> {
        static PARENT: std::sync::OnceLock<Option<Parent>> = std::sync::OnceLock::new();
        PARENT
            .get_or_init(|| std::thread::spawn(Parent::make).join().ok().flatten())
            .as_ref()
    }

    /// Runs on a thread of its own, which ends in the parent namespace; the
    /// descriptor keeps the namespace until the process exits. Made from
    /// the process's home namespace (its main thread's), whichever thread
    /// asks first.
    fn make() -> Option<Parent> {
        let home = std::fs::File::open("/proc/self/ns/net").ok()?;
        nix::sched::setns(home, CloneFlags::CLONE_NEWNET).ok()?;
        if !sysctl_exists("net.ipv4.tcp_child_ehash_entries") {
            return None;
        }
        unshare(CloneFlags::CLONE_NEWNET).ok()?;
        let sized_by_table = SIZED_BY_TABLE
            .iter()
            .map(|name| read_sysctl(name).ok().map(|v| (*name, v)))
            .collect::<Option<Vec<_>>>()?;
        std::fs::write(
            sysctl_path("net.ipv4.tcp_child_ehash_entries"),
            CASE_TABLE_BUCKETS,
        )
        .ok()?;
        let namespace = std::fs::File::open("/proc/thread-self/ns/net").ok()?;
        Some(Parent {
            namespace: namespace.into(),
            sized_by_table,
        })
    }
}

/// `ip link set lo up`, with the classic SIOCGIFFLAGS/SIOCSIFFLAGS ioctls
/// (a new Linux namespace's lo starts DOWN: connect() would get
/// ENETUNREACH), unless it is up already.
pub(super) fn bring_up_loopback() -> Result<(), SandboxError> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| SandboxError::Setup(format!("socket for ioctl: {}", describe(&e))))?;
    // SAFETY: ifreq is plain old data; we zero it and set the name.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: valid fd and a properly initialised ifreq for both requests.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(SandboxError::Setup(format!(
                "SIOCGIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            )));
        }
        let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if ifr.ifr_ifru.ifru_flags & up == up {
            // Already up: some stacks (gVisor) start it so, and refuse the
            // ioctl that would set it.
            return Ok(());
        }
        ifr.ifr_ifru.ifru_flags |= up;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EPERM) {
                SandboxError::NotPermitted(format!("bringing lo up was refused ({e})"))
            } else {
                SandboxError::Setup(format!("SIOCSIFFLAGS lo up: {e}"))
            });
        }
    }
    Ok(())
}

/// Whether this process may open packet sockets (what libpcap needs), in
/// the calling thread's namespace.
pub(crate) fn check_capture_permission(_ns: &Namespace) -> Result<(), SandboxError> {
    // SAFETY: plain socket(2); the fd is closed right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                SandboxError::NotPermitted(format!("opening a packet socket was refused ({e})"))
            }
            _ => SandboxError::Setup(format!("packet socket: {}", describe(&e))),
        });
    }
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    Ok(())
}

fn sysctl_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/proc/sys").join(name.replace('.', "/"))
}

/// Reads a sysctl as the calling thread's namespace sees it
/// (`/proc/sys/net` resolves against the opener's network namespace).
pub(crate) fn read_sysctl(name: &str) -> Result<String, SandboxError> {
    std::fs::read_to_string(sysctl_path(name))
        .map(|s| s.trim().to_string())
        .map_err(|e| SandboxError::Sysctl {
            name: name.into(),
            message: e.to_string(),
        })
}

/// Writes a sysctl in the calling thread's namespace. Only call this inside a
/// case namespace: on the host thread it would change the host. A sysctl
/// this stack does not have, in a namespace or at all, is
/// [`SandboxError::NoSuchSysctl`].
pub(crate) fn write_sysctl(_ns: &Namespace, name: &str, value: &str) -> Result<(), SandboxError> {
    let path = sysctl_path(name);
    std::fs::write(&path, value).map_err(|e| {
        // Linux says ENOENT; gVisor says EPERM for a file that is not there.
        if e.kind() == std::io::ErrorKind::NotFound || !path.exists() {
            SandboxError::NoSuchSysctl { name: name.into() }
        } else if e.kind() == std::io::ErrorKind::PermissionDenied {
            // There, but not to be written (gVisor shows tcp_syn_retries
            // as a fixed 3, mode 0444).
            SandboxError::ReadOnlySysctl { name: name.into() }
        } else {
            SandboxError::Sysctl {
                name: name.into(),
                message: e.to_string(),
            }
        }
    })
}

/// Whether a sysctl exists in the calling thread's namespace.
pub(crate) fn sysctl_exists(name: &str) -> bool {
    sysctl_path(name).exists()
}

/// Where each of `names` exists: probed from this thread's namespace (the
/// host's, for the main thread) and from a fresh namespace made for the
/// probe and gone with it. Needs the privileges a run needs.
pub(crate) fn sysctl_scopes(names: &[String]) -> Result<Vec<super::SysctlScope>, SandboxError> {
    use super::SysctlScope;
    let here: Vec<bool> = names.iter().map(|n| sysctl_exists(n)).collect();
    let names = names.to_vec();
    let fresh = std::thread::spawn(move || {
        let _ns = enter_fresh_namespace()?;
        Ok::<_, SandboxError>(names.iter().map(|n| sysctl_exists(n)).collect::<Vec<_>>())
    })
    .join()
    .unwrap_or_else(|_| Err(SandboxError::Setup("the sysctl probe panicked".into())))?;
    Ok(here
        .into_iter()
        .zip(fresh)
        .map(|(here, fresh)| match (here, fresh) {
            (_, true) => SysctlScope::PerNamespace,
            (true, false) => SysctlScope::InitialOnly,
            (false, false) => SysctlScope::Absent,
        })
        .collect())
}

/// The stack's TCP counters in the calling thread's namespace, by name:
/// `TcpExt` of /proc/net/netstat (TCPTimeWaitOverflow, ListenOverflows,
/// TCPAbortOnClose, ...) and `Tcp` of /proc/net/snmp (ActiveOpens,
/// EstabResets, ...). Read through /proc/thread-self: /proc/net is the
/// process's namespace, not this thread's.
pub(crate) fn tcp_counters(_ns: &Namespace) -> Result<BTreeMap<String, i64>, SandboxError> {
    let mut out = BTreeMap::new();
    for (file, prefixes) in [
        ("/proc/thread-self/net/netstat", &["TcpExt:"][..]),
        ("/proc/thread-self/net/snmp", &["Tcp:"][..]),
    ] {
        let text = std::fs::read_to_string(file).map_err(|e| SandboxError::Sysctl {
            name: file.into(),
            message: e.to_string(),
        })?;
        // Pairs of lines: "Prefix: Name1 Name2 ..." then "Prefix: 1 2 ...".
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let Some(prefix) = prefixes.iter().find(|p| names.starts_with(**p)) else {
                continue;
            };
            let names = names[prefix.len()..].split_whitespace();
            let values = values[prefix.len()..].split_whitespace();
            for (n, v) in names.zip(values) {
                if let Ok(v) = v.parse::<i64>() {
                    out.insert(n.to_string(), v);
                }
            }
        }
    }
    Ok(out)
}

/// Packets the calling thread's namespace's interfaces dropped, from the
/// drop columns of /proc/net/dev: a full backlog queue
/// (netdev_max_backlog) drops a packet before any capture sees it.
pub(crate) fn link_drops(_ns: &Namespace) -> Result<super::LinkDrops, SandboxError> {
    let file = "/proc/thread-self/net/dev";
    let unreadable = |message: String| SandboxError::Sysctl {
        name: file.into(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| unreadable(e.to_string()))?;
    let mut drops = super::LinkDrops::default();
    // Two header lines, then "name: rx bytes packets errs drop ... tx bytes
    // packets errs drop ...".
    for counts in text
        .lines()
        .filter_map(|l| l.split_once(':').map(|(_, c)| c))
    {
        let columns: Vec<u64> = counts
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if let (Some(rx), Some(tx)) = (columns.get(3), columns.get(11)) {
            drops.received += rx;
            drops.sent += tx;
        }
    }
    if !text.contains("lo:") {
        return Err(unreadable("no line for lo".into()));
    }
    Ok(drops)
}

/// The values of [`super::TEARDOWN_SYSCTLS`] in the calling thread's
/// namespace; unreadable ones are left out (not guessed).
pub(crate) fn teardown_sysctls() -> BTreeMap<String, String> {
    super::TEARDOWN_SYSCTLS
        .iter()
        .filter_map(|n| read_sysctl(n).ok().map(|v| (n.to_string(), v)))
        .collect()
}

/// `uname -r`.
pub(crate) fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What a program run by [`run_isolated`] did.
#[derive(Debug)]
pub struct ProgramOutput {
    /// Exit status, or 128 + the signal that killed it.
    pub code: i32,
    /// stdout and stderr, interleaved.
    pub output: String,
}

/// CAP_NET_ADMIN's number, for [`raise_ambient`].
const CAP_NET_ADMIN: u32 = 12;

/// Makes capability `cap` (held in the permitted set) ambient, so that a
/// program this thread execs keeps it: first inheritable (capset), then
/// ambient (prctl). Only system calls: safe between clone and exec.
///
/// # Safety
/// Changes the calling thread's capabilities; call it in a child about to
/// exec.
unsafe fn raise_ambient(cap: u32) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: the kernel reads the header and writes two Data (version 3).
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return;
        }
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        if data[word].permitted & bit == 0 {
            return;
        }
        data[word].inheritable |= bit;
        header.version = VERSION_3;
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return;
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            libc::c_ulong::from(cap),
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

/// Runs `program args...` in the calling thread's network namespace, the way
/// `std::process::Command` would, except that the child never holds a
/// reference to any of this process's file descriptors (see
/// [`spawn_clean`]); its output is stdout and stderr interleaved.
pub fn run_isolated(program: &str, args: &[&str]) -> std::io::Result<ProgramOutput> {
    use std::io::{Error, ErrorKind};
    use std::sync::atomic::{AtomicU64, Ordering};

    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{program} is not in PATH")))?;
    let out_path = std::env::temp_dir().join(format!(
        "teardown-{}-{}.out",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::File::create(&out_path)?;
    let remove_later = RemoveOnDrop(out_path.clone());
    let argv: Vec<&std::ffi::OsStr> = std::iter::once(program)
        .chain(args.iter().copied())
        .map(std::ffi::OsStr::new)
        .collect();
    let mut pid = spawn_clean(&CleanSpawn {
        program: &path,
        argv: &argv,
        fds: &[ChildFd::Null, ChildFd::Append(&out_path), ChildFd::Dup(1)],
        // Ctrl-C in the terminal goes to the foreground group, and must
        // stop the harness (which finishes its cases), not kill `nft`
        // half-way through a case's rule.
        own_group: true,
        die_with_thread: false,
        // Run with file capabilities instead of root (the README's setcap),
        // the child loses CAP_NET_ADMIN at exec unless it is ambient.
        // Failing that, nft says "Operation not permitted".
        keep_net_admin: true,
        before_exec: None,
    })
    .map_err(|e| Error::new(e.kind(), format!("{program}: could not be started: {e}")))?;
    let code = pid.wait()?.code_or_signal();
    let output = String::from_utf8_lossy(&std::fs::read(&out_path)?).into_owned();
    drop(remove_later);
    Ok(ProgramOutput { code, output })
}

/// A program to start with pipes on its stdin, stdout and stderr (an
/// agent), by [`ProgramCommand::spawn`]: what `std::process::Command` would
/// be, started the way [`spawn_clean`] starts one.
pub struct ProgramCommand {
    pub(crate) program: std::path::PathBuf,
    pub(crate) args: Vec<std::ffi::OsString>,
    /// SIGKILL when the thread that starts it ends.
    pub(crate) die_with_thread: bool,
    /// See [`CleanSpawn::before_exec`].
    pub(crate) before_exec: Option<unsafe fn() -> libc::c_int>,
}

/// A process started by [`ProgramCommand::spawn`] and its end of each pipe.
pub struct PipedChild {
    pub child: ChildProcess,
    pub stdin: std::fs::File,
    pub stdout: std::fs::File,
    pub stderr: std::fs::File,
}

impl ProgramCommand {
    pub(crate) fn new(program: impl Into<std::path::PathBuf>) -> ProgramCommand {
        ProgramCommand {
            program: program.into(),
            args: Vec::new(),
            die_with_thread: false,
            before_exec: None,
        }
    }

    pub(crate) fn arg(&mut self, a: impl Into<std::ffi::OsString>) -> &mut ProgramCommand {
        self.args.push(a.into());
        self
    }

    pub(crate) fn args<I, A>(&mut self, args: I) -> &mut ProgramCommand
    where
        I: IntoIterator<Item = A>,
        A: Into<std::ffi::OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn program(&self) -> &std::path::Path {
        &self.program
    }

    /// Starts it in the calling thread's namespaces.
    pub(crate) fn spawn(&self) -> std::io::Result<PipedChild> {
        let pipe =
            || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from);
        let (in_read, in_write) = pipe()?;
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let argv: Vec<&std::ffi::OsStr> = std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(|a| a.as_os_str()))
            .collect();
        use std::os::fd::AsFd;
        let child = spawn_clean(&CleanSpawn {
            program: &self.program,
            argv: &argv,
            fds: &[
                ChildFd::Reopen(in_read.as_fd()),
                ChildFd::Reopen(out_write.as_fd()),
                ChildFd::Reopen(err_write.as_fd()),
            ],
            own_group: false,
            die_with_thread: self.die_with_thread,
            keep_net_admin: false,
            before_exec: self.before_exec,
        })?;
        Ok(PipedChild {
            child,
            stdin: in_write.into(),
            stdout: out_read.into(),
            stderr: err_read.into(),
        })
    }
}

/// An exit status as one number: the exit code, or 128 + the signal that
/// ended the process, as a shell says it.
pub(crate) trait CodeOrSignal {
    fn code_or_signal(&self) -> i32;
}

impl CodeOrSignal for std::process::ExitStatus {
    fn code_or_signal(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.code()
            .unwrap_or_else(|| 128 + self.signal().unwrap_or(0))
    }
}

/// A child process, waited for as `std::process::Child` is.
#[derive(Debug)]
pub struct ChildProcess {
    pid: libc::pid_t,
    /// Once reaped: its pid may belong to another process since.
    status: Option<std::process::ExitStatus>,
}

impl ChildProcess {
    /// Its process id.
    pub fn id(&self) -> libc::pid_t {
        self.pid
    }

    /// Its status if it has ended, without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// Waits for it to end.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        loop {
            match self.reap(0) {
                Ok(Some(s)) => return Ok(s),
                Ok(None) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// SIGKILL, unless it has been reaped already.
    pub fn kill(&mut self) -> std::io::Result<()> {
        if self.status.is_none() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            )?;
        }
        Ok(())
    }

    fn reap(&mut self, flags: libc::c_int) -> std::io::Result<Option<std::process::ExitStatus>> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut raw = 0;
        // SAFETY: waiting for our own child.
        match unsafe { libc::waitpid(self.pid, &mut raw, flags) } {
            0 => Ok(None),
            r if r == self.pid => {
                self.status = Some(std::process::ExitStatus::from_raw(raw));
                Ok(self.status)
            }
            _ => Err(std::io::Error::last_os_error()),
        }
    }
}

/// What a child started by [`spawn_clean`] opens as one of its first
/// descriptors (0, 1, 2, ... in order).
pub(crate) enum ChildFd<'a> {
    /// /dev/null, for reading and writing.
    Null,
    /// This file, appended to.
    Append(&'a std::path::Path),
    /// One of this process's descriptors (a pipe end), opened again by the
    /// child through /proc/PID/fd with the same access mode.
    Reopen(std::os::fd::BorrowedFd<'a>),
    /// The same open file as the child's descriptor N (stderr = stdout).
    Dup(libc::c_int),
}

/// A program for [`spawn_clean`] to start.
pub(crate) struct CleanSpawn<'a> {
    pub(crate) program: &'a std::path::Path,
    /// argv, argv[0] included; the environment is this process's.
    pub(crate) argv: &'a [&'a std::ffi::OsStr],
    pub(crate) fds: &'a [ChildFd<'a>],
    /// A process group of its own.
    pub(crate) own_group: bool,
    /// SIGKILL when the calling thread ends (PR_SET_PDEATHSIG).
    pub(crate) die_with_thread: bool,
    /// Keep CAP_NET_ADMIN across exec when not root (ambient).
    pub(crate) keep_net_admin: bool,
    /// Called in the child just before exec; only system calls allowed.
    /// Returns 0, or -1 with errno set.
    pub(crate) before_exec: Option<unsafe fn() -> libc::c_int>,
}

/// Starts a program in the calling thread's namespaces without its ever
/// holding a reference to one of this process's descriptors.
///
/// A normal fork or posix_spawn copies the whole descriptor table, so until
/// the child execs it holds a reference to every socket of every case running
/// in parallel. A case that close()s its socket in that window only drops one
/// reference: no FIN, no linger wait, no RST, until the child execs, which
/// showed up as close() returning in 1 us under SO_LINGER, as missing FINs
/// under parallel load, and as a client left in CLOSE-WAIT after its close
/// while another case's program was being started (a fork of the whole
/// harness takes milliseconds). Here the child shares the table
/// (`CLONE_FILES`, no references taken) and replaces it with an empty one
/// before it opens anything: `close_range(0, ~0, CLOSE_RANGE_UNSHARE)` copies
/// no descriptor. Its own descriptors it then opens by path.
pub(crate) fn spawn_clean(spawn: &CleanSpawn) -> std::io::Result<ChildProcess> {
    use std::ffi::{CString, c_void};
    use std::io::{Error, ErrorKind};
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;

    let cstr = |b: &[u8]| CString::new(b).map_err(|e| Error::new(ErrorKind::InvalidInput, e));
    let c_path = cstr(spawn.program.as_os_str().as_bytes())?;
    let c_args = spawn
        .argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let argv: Vec<*const libc::c_char> = c_args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();

    /// One descriptor to open: `path` with `flags`, or (null path) a dup
    /// of `dup_of`.
    struct Open {
        path: Option<CString>,
        flags: libc::c_int,
        dup_of: libc::c_int,
    }
    let opens = spawn
        .fds
        .iter()
        .map(|fd| {
            Ok(match fd {
                ChildFd::Null => Open {
                    path: Some(cstr(b"/dev/null")?),
                    flags: libc::O_RDWR,
                    dup_of: -1,
                },
                ChildFd::Append(p) => Open {
                    path: Some(cstr(p.as_os_str().as_bytes())?),
                    flags: libc::O_WRONLY | libc::O_APPEND,
                    dup_of: -1,
                },
                ChildFd::Reopen(fd) => {
                    // SAFETY: F_GETFL on a descriptor we borrow.
                    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
                    if fl < 0 {
                        return Err(Error::last_os_error());
                    }
                    let path = format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
                    Open {
                        path: Some(cstr(path.as_bytes())?),
                        flags: fl & libc::O_ACCMODE,
                        dup_of: -1,
                    }
                }
                ChildFd::Dup(n) => Open {
                    path: None,
                    flags: 0,
                    dup_of: *n,
                },
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let open_paths: Vec<*const libc::c_char> = opens
        .iter()
        .map(|o| o.path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()))
        .collect();

    /// Everything the child needs, prepared before the clone: between clone
    /// and exec the child shares our memory and may only make system calls.
    /// It writes (stage, errno) to `failure` before it gives up.
    struct ChildArgs {
        path: *const libc::c_char,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
        open_paths: *const *const libc::c_char,
        opens: *const Open,
        n_opens: usize,
        own_group: bool,
        die_with_thread: bool,
        keep_net_admin: bool,
        before_exec: Option<unsafe fn() -> libc::c_int>,
        failure: *mut [libc::c_int; 2],
    }
    const STAGES: [&str; 6] = [
        "emptying its descriptor table",
        "opening its standard descriptors",
        "its process group",
        "its parent-death signal",
        "exec",
        "its set-up before exec",
    ];
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    let mut failure: [libc::c_int; 2] = [0, 0];
    let child_args = ChildArgs {
        path: c_path.as_ptr(),
        argv: argv.as_ptr(),
        // SAFETY: reading the process environment pointer.
        envp: unsafe { environ },
        open_paths: open_paths.as_ptr(),
        opens: opens.as_ptr(),
        n_opens: opens.len(),
        own_group: spawn.own_group,
        die_with_thread: spawn.die_with_thread,
        keep_net_admin: spawn.keep_net_admin,
        before_exec: spawn.before_exec,
        failure: &mut failure,
    };

    extern "C" fn child(arg: *mut c_void) -> libc::c_int {
        // SAFETY: arg points to the parent's ChildArgs, alive because the
        // parent is suspended (CLONE_VFORK) until we exec or exit; only
        // async-signal-safe system calls follow.
        unsafe {
            let a = &*(arg as *const ChildArgs);
            let fail = |stage: libc::c_int| -> ! {
                *a.failure = [stage, *libc::__errno_location()];
                libc::_exit(127)
            };
            if libc::syscall(
                libc::SYS_close_range,
                0 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) != 0
            {
                fail(0);
            }
            // The table is empty: these become 0, 1, 2, ... in order.
            for i in 0..a.n_opens {
                let o = &*a.opens.add(i);
                let path = *a.open_paths.add(i);
                let fd = if path.is_null() {
                    libc::dup(o.dup_of)
                } else {
                    libc::open(path, o.flags)
                };
                if fd != i as libc::c_int {
                    fail(1);
                }
            }
            if a.own_group && libc::setpgid(0, 0) != 0 {
                fail(2);
            }
            if a.die_with_thread && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                fail(3);
            }
            if a.keep_net_admin && libc::geteuid() != 0 {
                raise_ambient(CAP_NET_ADMIN);
            }
            if let Some(f) = a.before_exec
                && f() != 0
            {
                fail(5);
            }
            libc::execve(a.path, a.argv, a.envp);
            fail(4)
        }
    }

    let mut stack = vec![0u8; 256 * 1024];
    // SAFETY: the top of our own buffer, aligned down to 16 bytes.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
    let top = ((top as usize) & !15) as *mut c_void;
    // SAFETY: CLONE_VM | CLONE_VFORK: the child runs `child` on `stack` and
    // the parent resumes only after the child has exec'd or exited, so the
    // stack and ChildArgs outlive the child's use of them.
    let pid = unsafe {
        libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            &child_args as *const ChildArgs as *mut c_void,
        )
    };
    if pid < 0 {
        return Err(Error::last_os_error());
    }
    drop(stack);
    let mut child = ChildProcess { pid, status: None };
    // SAFETY: the child has exec'd or exited: nothing writes it any more.
    let [stage, errno] = unsafe { std::ptr::read_volatile(&failure) };
    if errno != 0 || stage != 0 {
        let _ = child.wait();
        let e = Error::from_raw_os_error(errno);
        return Err(Error::new(
            e.kind(),
            format!(
                "{} ({}): {e}",
                spawn.program.display(),
                STAGES[stage as usize % 5]
            ),
        ));
    }
    Ok(child)
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child sees only its own stdin/stdout/stderr, even though this
    /// process has other descriptors open without close-on-exec.
    /// A case namespace has a socket table of its own (a positive
    /// tcp_ehash_entries; a namespace sharing the host's shows it negative),
    /// and the sysctls sized from the table as a namespace made from the
    /// host's has them.
    #[test]
    fn a_case_namespace_has_its_own_table_and_the_hosts_defaults() {
        let read = || {
            ["net.ipv4.tcp_ehash_entries"]
                .iter()
                .chain(&SIZED_BY_TABLE)
                .map(|n| read_sysctl(n).unwrap())
                .collect::<Vec<_>>()
        };
        let from_host = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).unwrap();
            read()
        })
        .join()
        .unwrap();
        let case = std::thread::spawn(move || {
            let _ns = enter_fresh_namespace().unwrap();
            read()
        })
        .join()
        .unwrap();
        assert!(
            sysctl_exists("net.ipv4.tcp_child_ehash_entries"),
            "kernel before 6.1"
        );
        assert!(from_host[0].starts_with('-'), "{from_host:?}");
        assert_eq!(case[0], CASE_TABLE_BUCKETS);
        assert_eq!(case[1..], from_host[1..]);
    }

    /// A pipe end handed over by path reaches the child; a program that
    /// cannot be executed is an error naming the stage, not a status.
    #[test]
    fn a_clean_spawn_reopens_pipes_and_reports_a_failed_exec() {
        use std::io::Read;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut child = spawn_clean(&CleanSpawn {
            program: std::path::Path::new("/bin/sh"),
            argv: &["sh", "-c", "echo out; echo err >&2"].map(std::ffi::OsStr::new),
            fds: &[
                ChildFd::Null,
                ChildFd::Reopen(std::os::fd::AsFd::as_fd(&write)),
                ChildFd::Dup(1),
            ],
            own_group: false,
            die_with_thread: false,
            keep_net_admin: false,
            before_exec: None,
        })
        .unwrap();
        drop(write);
        let mut text = String::new();
        std::fs::File::from(read).read_to_string(&mut text).unwrap();
        assert_eq!(child.wait().unwrap().code_or_signal(), 0);
        assert_eq!(text, "out\nerr\n");
        let e = spawn_clean(&CleanSpawn {
            program: std::path::Path::new("/nonexistent/teardown"),
            argv: &[std::ffi::OsStr::new("x")],
            fds: &[ChildFd::Null],
            own_group: false,
            die_with_thread: false,
            keep_net_admin: false,
            before_exec: None,
        })
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().contains("(exec)"), "{e}");
    }

    #[test]
    fn a_program_inherits_no_descriptor() {
        // SAFETY: plain dup of stdin without O_CLOEXEC, closed below.
        let leaked = unsafe { libc::dup(0) };
        assert!(leaked > 2);
        let out = run_isolated("sh", &["-c", "ls /proc/$$/fd; echo done >&2; exit 3"]).unwrap();
        // SAFETY: we own it.
        unsafe { libc::close(leaked) };
        assert_eq!(out.code, 3);
        let fds: Vec<&str> = out.output.lines().filter(|l| *l != "done").collect();
        assert_eq!(fds, ["0", "1", "2"], "{}", out.output);
        assert!(out.output.contains("done"));
        let missing = run_isolated("no-such-program-teardown", &[]).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
