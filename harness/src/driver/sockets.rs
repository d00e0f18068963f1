//! The seam between the calls a step makes and the stack that answers
//! them: [`SocketApi`] is a BSD socket API, and [`Fd`] one of its
//! descriptors. [`super::calls`] makes every call through it, so one
//! implementation of a read, a lingering close or a bounded connect serves
//! every stack that has such an API. `CSockets` is one in C: the OS's
//! ([`OS`]) on Linux, FreeBSD and macOS, or a userspace stack's whose
//! functions have the same signatures (lwIP's `lwip_socket`, `lwip_close`,
//! ...). On Windows, [`OS`] is Winsock (`winsock.rs`).
//!
//! Option levels and names, flags and ioctl requests are this OS's (the
//! `os` module's): a userspace stack behind this seam is built against the
//! same C headers.

use std::net::SocketAddr;

use socket2::SockAddr;

use super::os::{Errno, IoctlRequest, RawFd, sys};

use crate::scenario::Family;

/// A stack's BSD socket calls. Each returns what the C call returns, and
/// its error as the errno it set.
pub trait SocketApi: Send + Sync {
    fn socket(&self, family: Family) -> Result<RawFd, Errno>;
    fn bind(&self, fd: RawFd, addr: &SockAddr) -> Result<(), Errno>;
    fn listen(&self, fd: RawFd, backlog: sys::c_int) -> Result<(), Errno>;
    /// `accept()`: the new descriptor and the peer's address.
    fn accept(&self, fd: RawFd) -> Result<(RawFd, Option<SocketAddr>), Errno>;
    /// `connect()`; `None` is an `AF_UNSPEC` address (dissolve the
    /// association).
    fn connect(&self, fd: RawFd, to: Option<&SockAddr>) -> Result<(), Errno>;
    /// `getsockname()`.
    fn local_addr(&self, fd: RawFd) -> Result<Option<SocketAddr>, Errno>;
    fn send(&self, fd: RawFd, buf: &[u8], flags: sys::c_int) -> Result<usize, Errno>;
    fn recv(&self, fd: RawFd, buf: &mut [u8], flags: sys::c_int) -> Result<usize, Errno>;
    fn shutdown(&self, fd: RawFd, how: sys::c_int) -> Result<(), Errno>;
    /// `close()`: the descriptor is gone whatever it returns.
    fn close(&self, fd: RawFd) -> Result<(), Errno>;
    /// `getsockopt()` into `value`; the length it filled.
    fn getsockopt(
        &self,
        fd: RawFd,
        level: sys::c_int,
        name: sys::c_int,
        value: &mut [u8],
    ) -> Result<usize, Errno>;
    fn setsockopt(
        &self,
        fd: RawFd,
        level: sys::c_int,
        name: sys::c_int,
        value: &[u8],
    ) -> Result<(), Errno>;
    /// `fcntl(F_GETFL)`.
    fn flags(&self, fd: RawFd) -> Result<sys::c_int, Errno>;
    /// `fcntl(F_SETFL)`.
    fn set_flags(&self, fd: RawFd, flags: sys::c_int) -> Result<(), Errno>;
    /// An ioctl that writes one int.
    fn ioctl_int(&self, fd: RawFd, request: IoctlRequest) -> Result<sys::c_int, Errno>;
    /// `poll()`: how many of `fds` have revents.
    fn poll(&self, fds: &mut [sys::pollfd], timeout_ms: sys::c_int) -> Result<usize, Errno>;
    /// Whether a call on this thread raised SIGPIPE (kept pending, see
    /// [`super::calls::block_sigpipe`]); takes it if so.
    fn take_pending_sigpipe(&self) -> bool;
    /// Whether a blocking `connect()` gives up when SO_SNDTIMEO runs out,
    /// the handshake going on (Linux's does). Where it does not, the
    /// harness bounds a blocking connect another way (see
    /// [`super::calls::connect`]).
    fn connect_obeys_send_timeout(&self) -> bool;
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
        Fd { api: &OS, fd }
    }
}

impl std::fmt::Debug for Fd<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fd {}", self.fd)
    }
}

#[cfg(windows)]
pub use super::winsock::{OS, Winsock};
#[cfg(unix)]
pub use posix_api::{CSockets, OS};

/// The BSD socket API in C (every OS but Windows).
#[cfg(unix)]
mod posix_api {
    use super::*;

    type SockAddrPtr = *const libc::sockaddr;
    type SockAddrOut = *mut libc::sockaddr;
    type LenOut = *mut libc::socklen_t;

    /// A BSD socket API in C: its functions, with the C library's signatures
    /// (`fcntl` with an int argument, `ioctl` writing one int), and what sets
    /// it apart.
    pub struct CSockets {
        pub socket: unsafe extern "C" fn(libc::c_int, libc::c_int, libc::c_int) -> libc::c_int,
        pub bind: unsafe extern "C" fn(libc::c_int, SockAddrPtr, libc::socklen_t) -> libc::c_int,
        pub listen: unsafe extern "C" fn(libc::c_int, libc::c_int) -> libc::c_int,
        pub accept: unsafe extern "C" fn(libc::c_int, SockAddrOut, LenOut) -> libc::c_int,
        pub connect: unsafe extern "C" fn(libc::c_int, SockAddrPtr, libc::socklen_t) -> libc::c_int,
        pub getsockname: unsafe extern "C" fn(libc::c_int, SockAddrOut, LenOut) -> libc::c_int,
        pub send: unsafe extern "C" fn(
            libc::c_int,
            *const libc::c_void,
            libc::size_t,
            libc::c_int,
        ) -> isize,
        pub recv: unsafe extern "C" fn(
            libc::c_int,
            *mut libc::c_void,
            libc::size_t,
            libc::c_int,
        ) -> isize,
        pub shutdown: unsafe extern "C" fn(libc::c_int, libc::c_int) -> libc::c_int,
        pub close: unsafe extern "C" fn(libc::c_int) -> libc::c_int,
        pub getsockopt: unsafe extern "C" fn(
            libc::c_int,
            libc::c_int,
            libc::c_int,
            *mut libc::c_void,
            LenOut,
        ) -> libc::c_int,
        pub setsockopt: unsafe extern "C" fn(
            libc::c_int,
            libc::c_int,
            libc::c_int,
            *const libc::c_void,
            libc::socklen_t,
        ) -> libc::c_int,
        pub fcntl: unsafe extern "C" fn(libc::c_int, libc::c_int, libc::c_int) -> libc::c_int,
        pub ioctl: unsafe extern "C" fn(libc::c_int, IoctlRequest, *mut libc::c_int) -> libc::c_int,
        pub poll: unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, libc::c_int) -> libc::c_int,
        /// Or'ed into `socket()`'s type: SOCK_CLOEXEC where the OS has it, so
        /// that a program a case starts inherits no socket.
        pub type_flags: libc::c_int,
        /// Whether an accepted descriptor is made close-on-exec after.
        pub cloexec_accepted: bool,
        /// Whether a write can raise SIGPIPE (the OS's; a userspace stack
        /// raises no signals).
        pub raises_sigpipe: bool,
        /// See [`SocketApi::connect_obeys_send_timeout`].
        pub connect_obeys_send_timeout: bool,
    }

    /// `fcntl()` with an int argument (the C library's is variadic).
    unsafe extern "C" fn os_fcntl(
        fd: libc::c_int,
        cmd: libc::c_int,
        arg: libc::c_int,
    ) -> libc::c_int {
        // SAFETY: the caller's contract is fcntl's.
        unsafe { libc::fcntl(fd, cmd, arg) }
    }

    /// `ioctl()` writing one int (the C library's is variadic).
    unsafe extern "C" fn os_ioctl(
        fd: libc::c_int,
        request: IoctlRequest,
        value: *mut libc::c_int,
    ) -> libc::c_int {
        // SAFETY: the caller's contract is ioctl's.
        unsafe { libc::ioctl(fd, request, value) }
    }

    /// This OS's own socket API: the system calls.
    pub static OS: CSockets = CSockets {
        socket: libc::socket,
        bind: libc::bind,
        listen: libc::listen,
        accept: libc::accept,
        connect: libc::connect,
        getsockname: libc::getsockname,
        send: libc::send,
        recv: libc::recv,
        shutdown: libc::shutdown,
        close: libc::close,
        getsockopt: libc::getsockopt,
        setsockopt: libc::setsockopt,
        fcntl: os_fcntl,
        ioctl: os_ioctl,
        poll: libc::poll,
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        type_flags: libc::SOCK_CLOEXEC,
        #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
        type_flags: 0,
        cloexec_accepted: true,
        raises_sigpipe: true,
        // Linux's connect sleeps for at most the send timeout; no other
        // OS's documentation says its connect does.
        connect_obeys_send_timeout: cfg!(target_os = "linux"),
    };

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
    unsafe fn address_from(
        fill: impl FnOnce(SockAddrOut, LenOut) -> libc::c_int,
    ) -> Result<Option<SocketAddr>, Errno> {
        // SAFETY: the closure's contract is the function's.
        let (ret, addr) =
            unsafe { SockAddr::try_init(|storage, len| Ok(fill(storage.cast(), len))) }
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
        checked(ret).map(|_| addr.as_socket())
    }

    /// The length of an option's value, as `socklen_t`.
    fn socklen(len: usize) -> libc::socklen_t {
        libc::socklen_t::try_from(len).expect("an option value is a few bytes")
    }

    // SAFETY (every call below): the functions are the API's own, called with
    // pointers and lengths that describe live buffers, on descriptors the
    // caller holds.
    impl SocketApi for CSockets {
        fn socket(&self, family: Family) -> Result<RawFd, Errno> {
            let domain = match family {
                Family::Ipv4 => libc::AF_INET,
                Family::Ipv6 => libc::AF_INET6,
            };
            let ty = libc::SOCK_STREAM | self.type_flags;
            // SAFETY: see above.
            checked(unsafe { (self.socket)(domain, ty, libc::IPPROTO_TCP) })
        }

        fn bind(&self, fd: RawFd, addr: &SockAddr) -> Result<(), Errno> {
            // SAFETY: see above.
            checked(unsafe { (self.bind)(fd, addr.as_ptr().cast(), addr.len()) }).map(drop)
        }

        fn listen(&self, fd: RawFd, backlog: libc::c_int) -> Result<(), Errno> {
            // SAFETY: see above.
            checked(unsafe { (self.listen)(fd, backlog) }).map(drop)
        }

        fn accept(&self, fd: RawFd) -> Result<(RawFd, Option<SocketAddr>), Errno> {
            let mut new = -1;
            // SAFETY: accept writes at most `len` bytes of the peer's address.
            let peer = unsafe {
                address_from(|sa, len| {
                    new = (self.accept)(fd, sa, len);
                    new
                })
            }?;
            if self.cloexec_accepted {
                // SAFETY: see above.
                unsafe { os_fcntl(new, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
            Ok((new, peer))
        }

        fn connect(&self, fd: RawFd, to: Option<&SockAddr>) -> Result<(), Errno> {
            let ret = match to {
                // SAFETY: see above.
                Some(to) => unsafe { (self.connect)(fd, to.as_ptr().cast(), to.len()) },
                None => {
                    // SAFETY: a zeroed sockaddr with family AF_UNSPEC is valid.
                    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
                    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
                    // SAFETY: see above.
                    unsafe { (self.connect)(fd, &sa, socklen(size_of::<libc::sockaddr>())) }
                }
            };
            checked(ret).map(drop)
        }

        fn local_addr(&self, fd: RawFd) -> Result<Option<SocketAddr>, Errno> {
            // SAFETY: getsockname writes at most `len` bytes.
            unsafe { address_from(|sa, len| (self.getsockname)(fd, sa, len)) }
        }

        fn send(&self, fd: RawFd, buf: &[u8], flags: libc::c_int) -> Result<usize, Errno> {
            // SAFETY: see above.
            checked_len(unsafe { (self.send)(fd, buf.as_ptr().cast(), buf.len(), flags) })
        }

        fn recv(&self, fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> Result<usize, Errno> {
            // SAFETY: see above.
            checked_len(unsafe { (self.recv)(fd, buf.as_mut_ptr().cast(), buf.len(), flags) })
        }

        fn shutdown(&self, fd: RawFd, how: libc::c_int) -> Result<(), Errno> {
            // SAFETY: see above.
            checked(unsafe { (self.shutdown)(fd, how) }).map(drop)
        }

        fn close(&self, fd: RawFd) -> Result<(), Errno> {
            // SAFETY: the caller gives up the descriptor.
            checked(unsafe { (self.close)(fd) }).map(drop)
        }

        fn getsockopt(
            &self,
            fd: RawFd,
            level: libc::c_int,
            name: libc::c_int,
            value: &mut [u8],
        ) -> Result<usize, Errno> {
            let mut len = socklen(value.len());
            // SAFETY: see above.
            checked(unsafe {
                (self.getsockopt)(fd, level, name, value.as_mut_ptr().cast(), &mut len)
            })?;
            Ok(len as usize)
        }

        fn setsockopt(
            &self,
            fd: RawFd,
            level: libc::c_int,
            name: libc::c_int,
            value: &[u8],
        ) -> Result<(), Errno> {
            let len = socklen(value.len());
            // SAFETY: see above.
            checked(unsafe { (self.setsockopt)(fd, level, name, value.as_ptr().cast(), len) })
                .map(drop)
        }

        fn flags(&self, fd: RawFd) -> Result<libc::c_int, Errno> {
            // SAFETY: see above.
            checked(unsafe { (self.fcntl)(fd, libc::F_GETFL, 0) })
        }

        fn set_flags(&self, fd: RawFd, flags: libc::c_int) -> Result<(), Errno> {
            // SAFETY: see above.
            checked(unsafe { (self.fcntl)(fd, libc::F_SETFL, flags) }).map(drop)
        }

        fn ioctl_int(&self, fd: RawFd, request: IoctlRequest) -> Result<libc::c_int, Errno> {
            let mut v: libc::c_int = 0;
            // SAFETY: see above; the requests used here write one int.
            checked(unsafe { (self.ioctl)(fd, request, &mut v) })?;
            Ok(v)
        }

        fn poll(&self, fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> Result<usize, Errno> {
            let n = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
            // SAFETY: see above.
            checked(unsafe { (self.poll)(fds.as_mut_ptr(), n, timeout_ms) }).map(|n| n as usize)
        }

        fn take_pending_sigpipe(&self) -> bool {
            self.raises_sigpipe && crate::driver::os::take_pending_sigpipe()
        }

        fn connect_obeys_send_timeout(&self) -> bool {
            self.connect_obeys_send_timeout
        }
    }
}
