//! Windows: the same items as `linux.rs` and `bsd.rs`, for Winsock. The
//! calls themselves are `sockets::Winsock`'s.
//!
//! Winsock has no descriptors, no `fcntl` and no MSG_DONTWAIT: a SOCKET is
//! a handle (kept here as a number, [`RawFd`]), a socket's blocking mode
//! can be set (FIONBIO) but not read back, so `Winsock` remembers it, and a
//! call that must not block is made with the socket non-blocking for it.
//! `sys` gives those the names the calls use on every OS, with values of
//! the harness's own where Winsock has none ([`sys::O_NONBLOCK`],
//! [`sys::MSG_DONTWAIT`]).

use windows_sys::Win32::Networking::WinSock as ws;

use crate::scenario::{IoctlQuery, SockOpt};

pub use crate::observe::RawFd;

/// The names the calls use, for Winsock.
#[allow(non_camel_case_types)]
pub mod sys {
    use windows_sys::Win32::Networking::WinSock as ws;

    pub(crate) type c_int = i32;
    pub(crate) type c_short = i16;

    /// One socket to poll (`WSAPOLLFD`, with the socket as a number).
    #[derive(Clone, Copy, Debug)]
    pub struct pollfd {
        pub fd: super::RawFd,
        pub events: c_short,
        pub revents: c_short,
    }

    pub(crate) const POLLIN: c_short = ws::POLLIN;
    pub(crate) const POLLOUT: c_short = ws::POLLOUT;
    pub(crate) const POLLERR: c_short = ws::POLLERR;
    pub(crate) const POLLHUP: c_short = ws::POLLHUP;
    pub(crate) const POLLNVAL: c_short = ws::POLLNVAL;
    pub(crate) const SOL_SOCKET: c_int = ws::SOL_SOCKET;
    pub(crate) const SO_ERROR: c_int = ws::SO_ERROR;
    pub const SO_LINGER: c_int = ws::SO_LINGER;
    pub(crate) const SO_SNDTIMEO: c_int = ws::SO_SNDTIMEO;
    pub(crate) const MSG_PEEK: c_int = ws::MSG_PEEK;
    pub const SHUT_RD: c_int = ws::SD_RECEIVE;
    pub(crate) const SHUT_WR: c_int = ws::SD_SEND;
    pub(crate) const SHUT_RDWR: c_int = ws::SD_BOTH;
    /// Not Winsock's: `Winsock` makes the socket non-blocking for a call
    /// with this flag, and takes it off the flags it passes on.
    pub(crate) const MSG_DONTWAIT: c_int = 0x4000_0000;
    /// Not Winsock's: the blocking mode `Winsock` remembers per socket.
    pub const O_NONBLOCK: c_int = 0x800;
}

/// An error as Winsock's `WSAGetLastError` gives it, named by its POSIX
/// equivalent (WSAECONNRESET is ECONNRESET), so that reports compare
/// across OSes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(i32);

#[allow(non_upper_case_globals)]
impl Errno {
    pub(crate) const EINTR: Errno = Errno(ws::WSAEINTR);
    pub(crate) const EAGAIN: Errno = Errno(ws::WSAEWOULDBLOCK);
    pub(crate) const EINPROGRESS: Errno = Errno(ws::WSAEINPROGRESS);
    pub const ENOPROTOOPT: Errno = Errno(ws::WSAENOPROTOOPT);

    /// The calling thread's last Winsock error.
    pub fn last() -> Errno {
        // SAFETY: no arguments; reads the thread's error.
        Errno(unsafe { ws::WSAGetLastError() })
    }

    pub fn from_raw(code: i32) -> Errno {
        Errno(code)
    }

    /// The POSIX name, or WSA's number where there is none.
    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            ws::WSAEINTR => "EINTR",
            ws::WSAEBADF | ws::WSAENOTSOCK => "EBADF",
            ws::WSAEACCES => "EACCES",
            ws::WSAEFAULT => "EFAULT",
            ws::WSAEINVAL => "EINVAL",
            ws::WSAEMFILE => "EMFILE",
            ws::WSAEWOULDBLOCK => "EAGAIN",
            ws::WSAEINPROGRESS => "EINPROGRESS",
            ws::WSAEALREADY => "EALREADY",
            ws::WSAEMSGSIZE => "EMSGSIZE",
            ws::WSAENOPROTOOPT => "ENOPROTOOPT",
            ws::WSAEOPNOTSUPP => "EOPNOTSUPP",
            ws::WSAEAFNOSUPPORT => "EAFNOSUPPORT",
            ws::WSAEADDRINUSE => "EADDRINUSE",
            ws::WSAEADDRNOTAVAIL => "EADDRNOTAVAIL",
            ws::WSAENETDOWN => "ENETDOWN",
            ws::WSAENETUNREACH => "ENETUNREACH",
            ws::WSAECONNABORTED => "ECONNABORTED",
            ws::WSAECONNRESET => "ECONNRESET",
            ws::WSAENOBUFS => "ENOBUFS",
            ws::WSAEISCONN => "EISCONN",
            ws::WSAENOTCONN => "ENOTCONN",
            // Winsock's send after SD_SEND and recv after SD_RECEIVE; POSIX
            // gives EPIPE and 0 there, a difference the report must show.
            ws::WSAESHUTDOWN => "ESHUTDOWN",
            ws::WSAETIMEDOUT => "ETIMEDOUT",
            ws::WSAECONNREFUSED => "ECONNREFUSED",
            ws::WSAEHOSTUNREACH => "EHOSTUNREACH",
            _ => return None,
        })
    }
}

impl std::fmt::Debug for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "WSA{}", self.0),
        }
    }
}

/// `poll` event for "the peer closed its side": Winsock has none (a
/// peer's FIN makes the socket readable).
pub(crate) const POLL_PEER_CLOSED: sys::c_short = 0;

/// Level and name of a socket option that takes an int, or None if
/// Winsock has no such option. (SO_LINGER and O_NONBLOCK are handled apart.)
pub(crate) fn int_option(opt: SockOpt) -> Option<(sys::c_int, sys::c_int)> {
    Some(match opt {
        SockOpt::RcvBuf(_) => (ws::SOL_SOCKET, ws::SO_RCVBUF),
        SockOpt::SndBuf(_) => (ws::SOL_SOCKET, ws::SO_SNDBUF),
        SockOpt::ReuseAddr(_) => (ws::SOL_SOCKET, ws::SO_REUSEADDR),
        SockOpt::KeepAlive(_) => (ws::SOL_SOCKET, ws::SO_KEEPALIVE),
        SockOpt::NoDelay(_) => (ws::IPPROTO_TCP, ws::TCP_NODELAY),
        SockOpt::KeepIdle(_) => (ws::IPPROTO_TCP, ws::TCP_KEEPIDLE),
        SockOpt::KeepIntvl(_) => (ws::IPPROTO_TCP, ws::TCP_KEEPINTVL),
        SockOpt::KeepCnt(_) => (ws::IPPROTO_TCP, ws::TCP_KEEPCNT),
        // No receive low-water mark, port reuse, cork, orphan FIN-WAIT-2
        // timeout or user timeout per socket.
        SockOpt::RcvLowat(_)
        | SockOpt::ReusePort(_)
        | SockOpt::Cork(_)
        | SockOpt::Linger2(_)
        | SockOpt::UserTimeout(_) => return None,
        SockOpt::Linger(_) | SockOpt::NonBlocking(_) => return None,
    })
}

/// The request type `ioctlsocket` takes.
pub(crate) type IoctlRequest = i32;

/// The ioctl request for a queue query, if Winsock has one.
pub(crate) fn ioctl_request(q: IoctlQuery) -> Option<IoctlRequest> {
    match q {
        IoctlQuery::InQueue => Some(ws::FIONREAD),
        // The send queue is SIO_TCP_INFO's, not an ioctlsocket's.
        IoctlQuery::OutQueue | IoctlQuery::OutQueueNotSent => None,
    }
}

/// `send` flag for "more data follows": Linux's alone.
pub(crate) const MSG_MORE: Option<sys::c_int> = None;

/// Winsock raises no SIGPIPE.
pub(crate) const MSG_NOSIGNAL: sys::c_int = 0;

/// SO_LINGER's value (a LINGER of two u16s): on with a timeout in seconds,
/// or off.
pub(crate) fn linger_value(secs: Option<sys::c_int>) -> Vec<u8> {
    let on = u16::from(secs.is_some());
    let t = u16::try_from(secs.unwrap_or(0).max(0)).unwrap_or(u16::MAX);
    [on.to_ne_bytes(), t.to_ne_bytes()].concat()
}

/// SO_LINGER's value read back: the timeout if on, None if off.
pub(crate) fn linger_of(bytes: &[u8]) -> Option<i64> {
    let on = u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]);
    let t = u16::from_ne_bytes([*bytes.get(2)?, *bytes.get(3)?]);
    (on != 0).then_some(t.into())
}

/// How many bytes SO_LINGER's value takes.
pub(crate) const LINGER_LEN: usize = 4;

/// SO_SNDTIMEO's value: a DWORD of milliseconds.
pub(crate) fn send_timeout_value(d: std::time::Duration) -> Vec<u8> {
    u32::try_from(d.as_millis())
        .unwrap_or(u32::MAX)
        .to_ne_bytes()
        .to_vec()
}

/// How many bytes SO_SNDTIMEO's value takes.
pub(crate) const SEND_TIMEOUT_LEN: usize = 4;
