//! Windows's socket API, Winsock, behind [`SocketApi`]: what the agent
//! calls on a Windows machine (see `windows.rs` for the names).
//!
//! Winsock has no `fcntl`: a socket's blocking mode can be set (FIONBIO)
//! but not read back, so [`Winsock`] remembers which sockets the
//! application made non-blocking, and a call with MSG_DONTWAIT is made with
//! the socket non-blocking for its duration. It has no MSG_DONTWAIT or
//! O_NONBLOCK of its own: those are the harness's values (`sys`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Mutex, Once};

use socket2::SockAddr;
use windows_sys::Win32::Networking::WinSock as ws;

use super::os::{Errno, IoctlRequest, RawFd, sys};
use super::sockets::SocketApi;
use crate::scenario::Family;

/// Winsock, with the blocking mode of every socket the application set.
pub struct Winsock {
    nonblocking: Mutex<BTreeSet<RawFd>>,
}

/// This OS's own socket API.
pub static OS: Winsock = Winsock {
    nonblocking: Mutex::new(BTreeSet::new()),
};

/// A SOCKET from its number.
fn socket(fd: RawFd) -> ws::SOCKET {
    fd as ws::SOCKET
}

/// A Winsock call's `ret`: its value, or the error it left.
fn checked(ret: i32) -> Result<i32, Errno> {
    if ret == ws::SOCKET_ERROR {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn checked_len(ret: i32) -> Result<usize, Errno> {
    usize::try_from(ret).map_err(|_| Errno::last())
}

/// A length Winsock takes (an i32; a buffer here is at most 64 KiB).
fn len_of(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Winsock before the first call: WSAStartup, once per process.
fn started() {
    static START: Once = Once::new();
    START.call_once(|| {
        // SAFETY: WSADATA is plain data, filled by the call.
        let mut data: ws::WSADATA = unsafe { std::mem::zeroed() };
        // SAFETY: version 2.2 and a WSADATA to fill.
        unsafe { ws::WSAStartup(0x0202, &mut data) };
    });
}

/// A socket address filled in by Winsock.
///
/// # Safety
/// `fill` must write at most `len` bytes of a socket address.
unsafe fn address_from(
    fill: impl FnOnce(*mut ws::SOCKADDR, *mut i32) -> i32,
) -> Result<Option<SocketAddr>, Errno> {
    // SAFETY: the closure's contract is the function's.
    let (ret, addr) = unsafe { SockAddr::try_init(|storage, len| Ok(fill(storage.cast(), len))) }
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    checked(ret).map(|_| addr.as_socket())
}

impl Winsock {
    fn is_nonblocking(&self, fd: RawFd) -> bool {
        self.nonblocking
            .lock()
            .expect("blocking modes")
            .contains(&fd)
    }

    /// FIONBIO.
    fn set_mode(&self, fd: RawFd, nonblocking: bool) -> Result<(), Errno> {
        let mut on = u32::from(nonblocking);
        // SAFETY: FIONBIO reads one u32.
        checked(unsafe { ws::ioctlsocket(socket(fd), ws::FIONBIO, &mut on) }).map(drop)
    }

    /// Runs `call` with the socket non-blocking if `flags` has
    /// MSG_DONTWAIT and the application left it blocking; the flags it
    /// gets are Winsock's.
    fn dontwait<T>(
        &self,
        fd: RawFd,
        flags: sys::c_int,
        call: impl FnOnce(i32) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let switch = flags & sys::MSG_DONTWAIT != 0 && !self.is_nonblocking(fd);
        if switch {
            self.set_mode(fd, true)?;
        }
        let out = call(flags & !sys::MSG_DONTWAIT);
        if switch {
            self.set_mode(fd, false)?;
        }
        out
    }
}

// SAFETY (every call below): Winsock's own functions, with pointers and
// lengths that describe live buffers, on sockets the caller holds.
impl SocketApi for Winsock {
    fn socket(&self, family: Family) -> Result<RawFd, Errno> {
        started();
        let af = match family {
            Family::Ipv4 => ws::AF_INET,
            Family::Ipv6 => ws::AF_INET6,
        };
        // SAFETY: see above.
        let s = unsafe { ws::socket(i32::from(af), ws::SOCK_STREAM, ws::IPPROTO_TCP) };
        if s == ws::INVALID_SOCKET {
            return Err(Errno::last());
        }
        Ok(s as RawFd)
    }

    fn bind(&self, fd: RawFd, addr: &SockAddr) -> Result<(), Errno> {
        // SAFETY: see above.
        checked(unsafe { ws::bind(socket(fd), addr.as_ptr().cast(), addr.len()) }).map(drop)
    }

    fn listen(&self, fd: RawFd, backlog: sys::c_int) -> Result<(), Errno> {
        // SAFETY: see above.
        checked(unsafe { ws::listen(socket(fd), backlog) }).map(drop)
    }

    fn accept(&self, fd: RawFd) -> Result<(RawFd, Option<SocketAddr>), Errno> {
        let mut new = ws::INVALID_SOCKET;
        // SAFETY: accept writes at most `len` bytes of the peer's address.
        let peer = unsafe {
            address_from(|sa, len| {
                new = ws::accept(socket(fd), sa, len);
                if new == ws::INVALID_SOCKET {
                    ws::SOCKET_ERROR
                } else {
                    0
                }
            })
        }?;
        Ok((new as RawFd, peer))
    }

    fn connect(&self, fd: RawFd, to: Option<&SockAddr>) -> Result<(), Errno> {
        let ret = match to {
            // SAFETY: see above.
            Some(to) => unsafe { ws::connect(socket(fd), to.as_ptr().cast(), to.len()) },
            None => {
                // SAFETY: a zeroed SOCKADDR (family AF_UNSPEC) is valid.
                let sa: ws::SOCKADDR = unsafe { std::mem::zeroed() };
                let len = len_of(size_of::<ws::SOCKADDR>());
                // SAFETY: see above.
                unsafe { ws::connect(socket(fd), &sa, len) }
            }
        };
        // A non-blocking connect under way is WSAEWOULDBLOCK in Winsock
        // (its WSAEINPROGRESS means a blocking call is running): what
        // POSIX calls EINPROGRESS, and what the caller waits on.
        match checked(ret) {
            Err(e) if e == Errno::EAGAIN && to.is_some() => Err(Errno::EINPROGRESS),
            r => r.map(drop),
        }
    }

    fn local_addr(&self, fd: RawFd) -> Result<Option<SocketAddr>, Errno> {
        // SAFETY: getsockname writes at most `len` bytes.
        unsafe { address_from(|sa, len| ws::getsockname(socket(fd), sa, len)) }
    }

    fn send(&self, fd: RawFd, buf: &[u8], flags: sys::c_int) -> Result<usize, Errno> {
        self.dontwait(fd, flags, |flags| {
            // SAFETY: see above.
            checked_len(unsafe { ws::send(socket(fd), buf.as_ptr(), len_of(buf.len()), flags) })
        })
    }

    fn recv(&self, fd: RawFd, buf: &mut [u8], flags: sys::c_int) -> Result<usize, Errno> {
        self.dontwait(fd, flags, |flags| {
            let len = len_of(buf.len());
            // SAFETY: see above.
            checked_len(unsafe { ws::recv(socket(fd), buf.as_mut_ptr(), len, flags) })
        })
    }

    fn shutdown(&self, fd: RawFd, how: sys::c_int) -> Result<(), Errno> {
        // SAFETY: see above.
        checked(unsafe { ws::shutdown(socket(fd), how) }).map(drop)
    }

    fn close(&self, fd: RawFd) -> Result<(), Errno> {
        self.nonblocking.lock().expect("blocking modes").remove(&fd);
        // SAFETY: the caller gives up the socket.
        checked(unsafe { ws::closesocket(socket(fd)) }).map(drop)
    }

    fn getsockopt(
        &self,
        fd: RawFd,
        level: sys::c_int,
        name: sys::c_int,
        value: &mut [u8],
    ) -> Result<usize, Errno> {
        let mut len = len_of(value.len());
        // SAFETY: see above.
        checked(unsafe { ws::getsockopt(socket(fd), level, name, value.as_mut_ptr(), &mut len) })?;
        Ok(usize::try_from(len).unwrap_or(0))
    }

    fn setsockopt(
        &self,
        fd: RawFd,
        level: sys::c_int,
        name: sys::c_int,
        value: &[u8],
    ) -> Result<(), Errno> {
        let len = len_of(value.len());
        // SAFETY: see above.
        checked(unsafe { ws::setsockopt(socket(fd), level, name, value.as_ptr(), len) }).map(drop)
    }

    fn flags(&self, fd: RawFd) -> Result<sys::c_int, Errno> {
        Ok(if self.is_nonblocking(fd) {
            sys::O_NONBLOCK
        } else {
            0
        })
    }

    fn set_flags(&self, fd: RawFd, flags: sys::c_int) -> Result<(), Errno> {
        let on = flags & sys::O_NONBLOCK != 0;
        self.set_mode(fd, on)?;
        let mut set = self.nonblocking.lock().expect("blocking modes");
        if on {
            set.insert(fd);
        } else {
            set.remove(&fd);
        }
        Ok(())
    }

    fn ioctl_int(&self, fd: RawFd, request: IoctlRequest) -> Result<sys::c_int, Errno> {
        let mut v: u32 = 0;
        // SAFETY: the requests used here (FIONREAD) write one u32.
        checked(unsafe { ws::ioctlsocket(socket(fd), request, &mut v) })?;
        Ok(i32::try_from(v).unwrap_or(i32::MAX))
    }

    fn poll(&self, fds: &mut [sys::pollfd], timeout_ms: sys::c_int) -> Result<usize, Errno> {
        let mut polled: Vec<ws::WSAPOLLFD> = fds
            .iter()
            .map(|p| ws::WSAPOLLFD {
                fd: socket(p.fd),
                events: p.events,
                revents: 0,
            })
            .collect();
        let n = u32::try_from(polled.len()).unwrap_or(u32::MAX);
        // SAFETY: `polled` holds `n` WSAPOLLFDs.
        let ready = checked(unsafe { ws::WSAPoll(polled.as_mut_ptr(), n, timeout_ms) })?;
        for (p, w) in fds.iter_mut().zip(&polled) {
            p.revents = w.revents;
        }
        Ok(usize::try_from(ready).unwrap_or(0))
    }

    fn take_pending_sigpipe(&self) -> bool {
        false
    }

    /// No documentation of Winsock says its blocking connect honours
    /// SO_SNDTIMEO.
    fn connect_obeys_send_timeout(&self) -> bool {
        false
    }
}
