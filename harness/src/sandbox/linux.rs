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

use super::SandboxError;

/// Proof that the calling thread is in a fresh namespace with `lo` up.
/// Deliberately `!Send`: the namespace belongs to this thread.
pub struct Namespace {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Moves the calling thread into a new, empty network namespace and brings
/// its loopback interface up.
pub fn enter_fresh_namespace() -> Result<Namespace, SandboxError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| match e {
        Errno::EPERM | Errno::EACCES => {
            SandboxError::NotPermitted(format!("unshare(CLONE_NEWNET): {}", e.desc()))
        }
        e => SandboxError::Setup(format!("unshare(CLONE_NEWNET): {}", e.desc())),
    })?;
    bring_up_loopback()?;
    Ok(Namespace {
        _not_send: std::marker::PhantomData,
    })
}

/// `ip link set lo up`, with the classic SIOCGIFFLAGS/SIOCSIFFLAGS ioctls
/// (a new namespace's lo starts DOWN: connect() would get ENETUNREACH).
fn bring_up_loopback() -> Result<(), SandboxError> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| SandboxError::Setup(format!("socket for ioctl: {e}")))?;
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
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
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
pub fn check_capture_permission(_ns: &Namespace) -> Result<(), SandboxError> {
    // SAFETY: plain socket(2); the fd is closed right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                SandboxError::NotPermitted(format!("opening a packet socket was refused ({e})"))
            }
            _ => SandboxError::Setup(format!("packet socket: {e}")),
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
pub fn read_sysctl(name: &str) -> Result<String, SandboxError> {
    std::fs::read_to_string(sysctl_path(name))
        .map(|s| s.trim().to_string())
        .map_err(|e| SandboxError::Sysctl {
            name: name.into(),
            message: e.to_string(),
        })
}

/// Writes a sysctl in the calling thread's namespace. Only call this inside a
/// case namespace: on the host thread it would change the host.
pub fn write_sysctl(_ns: &Namespace, name: &str, value: &str) -> Result<(), SandboxError> {
    std::fs::write(sysctl_path(name), value).map_err(|e| SandboxError::Sysctl {
        name: name.into(),
        message: e.to_string(),
    })
}

/// The values of [`super::TEARDOWN_SYSCTLS`] in the calling thread's
/// namespace; unreadable ones are left out (not guessed).
pub fn teardown_sysctls() -> BTreeMap<String, String> {
    super::TEARDOWN_SYSCTLS
        .iter()
        .filter_map(|n| read_sysctl(n).ok().map(|v| (n.to_string(), v)))
        .collect()
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}
