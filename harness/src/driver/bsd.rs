//! FreeBSD and macOS: the socket options, ioctls and poll events that are
//! not POSIX, with the same items as `linux.rs`. What an OS has no
//! equivalent for is None, and a step asking for it is not observed there.

pub use super::posix::*;
use crate::scenario::{IoctlQuery, SockOpt};

/// `poll(2)` event for "the peer closed its side": FreeBSD's POLLRDHUP;
/// macOS has none (a peer's FIN still makes the socket readable).
#[cfg(target_os = "freebsd")]
pub(crate) const POLL_PEER_CLOSED: libc::c_short = libc::POLLRDHUP;
#[cfg(target_os = "macos")]
pub(crate) const POLL_PEER_CLOSED: libc::c_short = 0;

/// The request type `ioctl(2)` takes here.
pub(crate) type IoctlRequest = libc::c_ulong;

/// Level and name of a socket option that takes an int, or None if this
/// OS has no such option. (SO_LINGER and O_NONBLOCK are handled apart.)
pub(crate) fn int_option(opt: SockOpt) -> Option<(libc::c_int, libc::c_int)> {
    Some(match opt {
        SockOpt::RcvBuf(_) => (libc::SOL_SOCKET, libc::SO_RCVBUF),
        SockOpt::SndBuf(_) => (libc::SOL_SOCKET, libc::SO_SNDBUF),
        SockOpt::RcvLowat(_) => (libc::SOL_SOCKET, libc::SO_RCVLOWAT),
        SockOpt::ReuseAddr(_) => (libc::SOL_SOCKET, libc::SO_REUSEADDR),
        SockOpt::ReusePort(_) => (libc::SOL_SOCKET, libc::SO_REUSEPORT),
        SockOpt::KeepAlive(_) => (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
        SockOpt::NoDelay(_) => (libc::IPPROTO_TCP, libc::TCP_NODELAY),
        // TCP_NOPUSH holds partial segments as TCP_CORK does.
        SockOpt::Cork(_) => (libc::IPPROTO_TCP, libc::TCP_NOPUSH),
        #[cfg(target_os = "freebsd")]
        SockOpt::KeepIdle(_) => (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
        // macOS calls the idle time TCP_KEEPALIVE.
        #[cfg(target_os = "macos")]
        SockOpt::KeepIdle(_) => (libc::IPPROTO_TCP, libc::TCP_KEEPALIVE),
        SockOpt::KeepIntvl(_) => (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
        SockOpt::KeepCnt(_) => (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
        // No orphaned FIN-WAIT-2 timeout or user timeout per socket.
        SockOpt::Linger2(_) | SockOpt::UserTimeout(_) => return None,
        SockOpt::Linger(_) | SockOpt::NonBlocking(_) => return None,
    })
}

/// The ioctl request for a queue query, if this OS has one.
pub(crate) fn ioctl_request(q: IoctlQuery) -> Option<IoctlRequest> {
    match q {
        IoctlQuery::InQueue => Some(libc::FIONREAD),
        // FIONWRITE: bytes in the send queue, sent or not (sys/filio.h).
        #[cfg(target_os = "freebsd")]
        IoctlQuery::OutQueue => Some(0x4004_6677),
        // macOS reads it as a socket option (SO_NWRITE), not an ioctl.
        #[cfg(target_os = "macos")]
        IoctlQuery::OutQueue => None,
        IoctlQuery::OutQueueNotSent => None,
    }
}

/// `send(2)` flag for "more data follows": Linux's alone.
pub(crate) const MSG_MORE: Option<libc::c_int> = None;

/// `send(2)` flag for "no SIGPIPE": FreeBSD's MSG_NOSIGNAL; macOS has only
/// the socket option SO_NOSIGPIPE, so a write there raises it either way.
#[cfg(target_os = "freebsd")]
pub(crate) const MSG_NOSIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(target_os = "macos")]
pub(crate) const MSG_NOSIGNAL: libc::c_int = 0;

/// Whether a SIGPIPE is pending for this thread; takes it if so.
pub(crate) fn take_pending_sigpipe() -> bool {
    // SAFETY: sigset_t is plain data, filled by the calls below; sigwait
    // returns at once for a signal already pending.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        if libc::sigpending(&mut pending) != 0 || libc::sigismember(&pending, libc::SIGPIPE) != 1 {
            return false;
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig) == 0 && sig == libc::SIGPIPE
    }
}
