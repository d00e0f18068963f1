//! The seam between the calls a step makes and the stack that answers
//! them: [`SocketApi`] is a BSD socket API (the OS's, or a userspace
//! stack's with the same shape, such as lwIP's), and [`Fd`] one of its
//! descriptors. [`super::calls`] makes every call through it, so one
//! implementation of a read, a lingering close or a bounded connect serves
//! every stack that has such an API.
//!
//! Option levels and names, flags and ioctl requests are this OS's (the
//! `os` module's): a userspace stack behind this seam is built against the
//! same C headers.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::errno::Errno;
use socket2::SockAddr;

use crate::scenario::Family;

/// A stack's BSD socket calls. Each returns what the C call returns, and
/// its error as the errno it set.
pub trait SocketApi: Send + Sync {
    fn socket(&self, family: Family) -> Result<RawFd, Errno>;
    fn bind(&self, fd: RawFd, addr: &SockAddr) -> Result<(), Errno>;
    fn listen(&self, fd: RawFd, backlog: libc::c_int) -> Result<(), Errno>;
    /// `accept()`: the new descriptor and the peer's address.
    fn accept(&self, fd: RawFd) -> Result<(RawFd, Option<SocketAddr>), Errno>;
    /// `connect()`; `None` is an `AF_UNSPEC` address (dissolve the
    /// association).
    fn connect(&self, fd: RawFd, to: Option<&SockAddr>) -> Result<(), Errno>;
    /// `getsockname()`.
    fn local_addr(&self, fd: RawFd) -> Result<Option<SocketAddr>, Errno>;
    fn send(&self, fd: RawFd, buf: &[u8], flags: libc::c_int) -> Result<usize, Errno>;
    fn recv(&self, fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> Result<usize, Errno>;
    fn shutdown(&self, fd: RawFd, how: libc::c_int) -> Result<(), Errno>;
    /// `close()`: the descriptor is gone whatever it returns.
    fn close(&self, fd: RawFd) -> Result<(), Errno>;
    /// `getsockopt()` into `value`; the length it filled.
    fn getsockopt(
        &self,
        fd: RawFd,
        level: libc::c_int,
        name: libc::c_int,
        value: &mut [u8],
    ) -> Result<usize, Errno>;
    fn setsockopt(
        &self,
        fd: RawFd,
        level: libc::c_int,
        name: libc::c_int,
        value: &[u8],
    ) -> Result<(), Errno>;
    /// `fcntl(F_GETFL)`.
    fn flags(&self, fd: RawFd) -> Result<libc::c_int, Errno>;
    /// `fcntl(F_SETFL)`.
    fn set_flags(&self, fd: RawFd, flags: libc::c_int) -> Result<(), Errno>;
    /// An ioctl that writes one int.
    fn ioctl_int(&self, fd: RawFd, request: super::os::IoctlRequest) -> Result<libc::c_int, Errno>;
    /// `poll()`: how many of `fds` have revents.
    fn poll(&self, fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> Result<usize, Errno>;
    /// Whether a call on this thread raised SIGPIPE (kept pending, see
    /// [`super::calls::block_sigpipe`]); takes it if so.
    fn take_pending_sigpipe(&self) -> bool;
}

/// One descriptor of a stack's socket API.
#[derive(Clone, Copy)]
pub struct Fd<'a> {
    pub api: &'a dyn SocketApi,
    pub fd: RawFd,
}

impl Fd<'static> {
    /// A descriptor of this OS's stack.
    pub fn os(fd: RawFd) -> Fd<'static> {
        Fd { api: &Os, fd }
    }
}

impl std::fmt::Debug for Fd<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fd {}", self.fd)
    }
}

/// This OS's own socket API: the system calls.
pub struct Os;

/// A C call's `ret`: its value, or the errno it set.
fn checked(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

/// A length or count returned as `ssize_t`.
fn checked_len(ret: isize) -> Result<usize, Errno> {
    usize::try_from(ret).map_err(|_| Errno::last())
}

/// A socket address filled in by the stack, as a Rust one.
///
/// # Safety
/// `fill` must write at most `len` bytes of a socket address into the
/// storage it is given, and set `len` to what it wrote.
pub unsafe fn address_from(
    fill: impl FnOnce(*mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> Result<Option<SocketAddr>, Errno> {
    // SAFETY: the closure's contract is the function's.
    let (ret, addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let r = fill(storage.cast(), len);
            Ok(r)
        })
    }
    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    checked(ret).map(|_| addr.as_socket())
}

/// The length of an option's value, as `socklen_t`.
pub fn socklen(len: usize) -> libc::socklen_t {
    libc::socklen_t::try_from(len).expect("an option value is a few bytes")
}

impl SocketApi for Os {
    fn socket(&self, family: Family) -> Result<RawFd, Errno> {
        let domain = match family {
            Family::Ipv4 => libc::AF_INET,
            Family::Ipv6 => libc::AF_INET6,
        };
        // Close-on-exec: a program a case starts must not inherit it.
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
        #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
        let ty = libc::SOCK_STREAM;
        // SAFETY: plain system call.
        checked(unsafe { libc::socket(domain, ty, libc::IPPROTO_TCP) })
    }

    fn bind(&self, fd: RawFd, addr: &SockAddr) -> Result<(), Errno> {
        // SAFETY: `addr` holds a valid address of its length.
        checked(unsafe { libc::bind(fd, addr.as_ptr().cast(), addr.len()) }).map(drop)
    }

    fn listen(&self, fd: RawFd, backlog: libc::c_int) -> Result<(), Errno> {
        // SAFETY: plain system call.
        checked(unsafe { libc::listen(fd, backlog) }).map(drop)
    }

    fn accept(&self, fd: RawFd) -> Result<(RawFd, Option<SocketAddr>), Errno> {
        let mut new = -1;
        // SAFETY: accept writes at most `len` bytes of the peer's address.
        let peer = unsafe {
            address_from(|sa, len| {
                new = libc::accept(fd, sa, len);
                new
            })
        }?;
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        // SAFETY: F_SETFD on the descriptor just accepted.
        unsafe {
            libc::fcntl(new, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        Ok((new, peer))
    }

    fn connect(&self, fd: RawFd, to: Option<&SockAddr>) -> Result<(), Errno> {
        let ret = match to {
            // SAFETY: `to` holds a valid address of its length.
            Some(to) => unsafe { libc::connect(fd, to.as_ptr().cast(), to.len()) },
            None => {
                // SAFETY: a zeroed sockaddr with family AF_UNSPEC is valid.
                let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
                sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
                // SAFETY: pointer and length of that sockaddr.
                unsafe { libc::connect(fd, &sa, socklen(size_of::<libc::sockaddr>())) }
            }
        };
        checked(ret).map(drop)
    }

    fn local_addr(&self, fd: RawFd) -> Result<Option<SocketAddr>, Errno> {
        // SAFETY: getsockname writes at most `len` bytes.
        unsafe { address_from(|sa, len| libc::getsockname(fd, sa, len)) }
    }

    fn send(&self, fd: RawFd, buf: &[u8], flags: libc::c_int) -> Result<usize, Errno> {
        // SAFETY: pointer and length describe `buf`.
        checked_len(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) })
    }

    fn recv(&self, fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> Result<usize, Errno> {
        // SAFETY: pointer and length describe `buf`.
        checked_len(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) })
    }

    fn shutdown(&self, fd: RawFd, how: libc::c_int) -> Result<(), Errno> {
        // SAFETY: plain system call.
        checked(unsafe { libc::shutdown(fd, how) }).map(drop)
    }

    fn close(&self, fd: RawFd) -> Result<(), Errno> {
        // SAFETY: the caller gives up the descriptor.
        checked(unsafe { libc::close(fd) }).map(drop)
    }

    fn getsockopt(
        &self,
        fd: RawFd,
        level: libc::c_int,
        name: libc::c_int,
        value: &mut [u8],
    ) -> Result<usize, Errno> {
        let mut len = socklen(value.len());
        // SAFETY: `value` and `len` describe a writable buffer.
        checked(unsafe { libc::getsockopt(fd, level, name, value.as_mut_ptr().cast(), &mut len) })?;
        Ok(len as usize)
    }

    fn setsockopt(
        &self,
        fd: RawFd,
        level: libc::c_int,
        name: libc::c_int,
        value: &[u8],
    ) -> Result<(), Errno> {
        // SAFETY: pointer and length describe `value`.
        checked(unsafe {
            libc::setsockopt(fd, level, name, value.as_ptr().cast(), socklen(value.len()))
        })
        .map(drop)
    }

    fn flags(&self, fd: RawFd) -> Result<libc::c_int, Errno> {
        // SAFETY: F_GETFL has no side effects.
        checked(unsafe { libc::fcntl(fd, libc::F_GETFL) })
    }

    fn set_flags(&self, fd: RawFd, flags: libc::c_int) -> Result<(), Errno> {
        // SAFETY: F_SETFL on a descriptor.
        checked(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
    }

    fn ioctl_int(&self, fd: RawFd, request: super::os::IoctlRequest) -> Result<libc::c_int, Errno> {
        let mut v: libc::c_int = 0;
        // SAFETY: the requests used here write one int.
        checked(unsafe { libc::ioctl(fd, request, &mut v) })?;
        Ok(v)
    }

    fn poll(&self, fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> Result<usize, Errno> {
        let n = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` holds `n` valid pollfd structs.
        checked(unsafe { libc::poll(fds.as_mut_ptr(), n, timeout_ms) }).map(|n| n as usize)
    }

    fn take_pending_sigpipe(&self) -> bool {
        super::os::take_pending_sigpipe()
    }
}
