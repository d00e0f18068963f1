//! Linux: the socket options, ioctls and poll events that are not POSIX.
//! Another OS provides the same items in its own file, or reports the
//! option as unsupported on that OS.

pub use super::posix::*;
use crate::scenario::{IoctlQuery, SockOpt};

/// `poll(2)` event for "the peer closed its side" (half-close seen).
pub(crate) const POLL_PEER_CLOSED: libc::c_short = libc::POLLRDHUP;

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
        SockOpt::Linger2(_) => (libc::IPPROTO_TCP, libc::TCP_LINGER2),
        SockOpt::UserTimeout(_) => (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
        SockOpt::Cork(_) => (libc::IPPROTO_TCP, libc::TCP_CORK),
        SockOpt::KeepIdle(_) => (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
        SockOpt::KeepIntvl(_) => (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
        SockOpt::KeepCnt(_) => (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
        SockOpt::Linger(_) | SockOpt::NonBlocking(_) => return None,
    })
}

/// The request type `ioctl(2)` takes here.
pub(crate) type IoctlRequest = libc::Ioctl;

/// The ioctl request for a queue query, if this OS has one.
pub(crate) fn ioctl_request(q: IoctlQuery) -> Option<IoctlRequest> {
    Some(match q {
        IoctlQuery::InQueue => libc::FIONREAD,
        IoctlQuery::OutQueue => libc::TIOCOUTQ, // == SIOCOUTQ
        // SIOCOUTQNSD, linux/sockios.h; not in the libc crate.
        IoctlQuery::OutQueueNotSent => 0x894B,
    })
}

/// `send(2)` flag for "more data follows".
pub(crate) const MSG_MORE: Option<libc::c_int> = Some(libc::MSG_MORE);

/// `send(2)` flag for "no SIGPIPE".
pub(crate) const MSG_NOSIGNAL: libc::c_int = libc::MSG_NOSIGNAL;

/// Whether a SIGPIPE is pending for this thread; takes it if so.
pub(crate) fn take_pending_sigpipe() -> bool {
    // SAFETY: sigset_t is plain data, filled by the calls below.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE
    }
}
