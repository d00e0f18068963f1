//! `TCP_INFO` on the descriptors the harness holds: the state source of a
//! stack without sock_diag (gVisor's netstack).
//!
//! Each live descriptor gives its state (`tcpi_state`, Linux numbering,
//! which gVisor follows), its addresses (getsockname/getpeername) and its
//! queues (SIOCINQ/SIOCOUTQ). A socket the harness closed is not listed:
//! this source cannot see orphans, TIME-WAIT after close, or timers.

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

use socket2::SockRef;

use super::{ObserveError, SockEntry};
use crate::tcp::TcpState;

/// One entry per live TCP descriptor. A descriptor that is not (or no
/// longer) a TCP socket is skipped; any other failure is an error.
pub fn snapshot(live: &[RawFd]) -> Result<Vec<SockEntry>, ObserveError> {
    let mut out = Vec::with_capacity(live.len());
    for &fd in live {
        let Some(state) = tcpi_state(fd)? else {
            continue;
        };
        // SAFETY: the driver owns `fd` and keeps it open during the snapshot.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = SockRef::from(&borrowed);
        let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
        // A reset socket may have lost its addresses; it is still found
        // by its descriptor.
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let local = addr(sock.local_addr()).unwrap_or(unspecified);
        // A listener or an unconnected socket has no peer.
        let remote = addr(sock.peer_addr()).unwrap_or_else(|| SocketAddr::new(local.ip(), 0));
        out.push(SockEntry {
            host: None,
            state,
            local,
            remote,
            timer: None,
            timer_ms: None,
            recv_queue: queue(fd, libc::FIONREAD),
            send_queue: queue(fd, libc::TIOCOUTQ),
            fd: Some(fd),
        });
    }
    Ok(out)
}

/// `tcpi_state` of `fd`, or None if it is not a TCP socket.
fn tcpi_state(fd: RawFd) -> Result<Option<TcpState>, ObserveError> {
    // tcpi_state is the first byte of struct tcp_info; 8 bytes are enough
    // and every stack that has TCP_INFO fills at least those.
    let mut buf = [0u8; 8];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf and len describe a writable buffer of len bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSOCK | libc::EBADF | libc::EOPNOTSUPP | libc::ENOPROTOOPT) => Ok(None),
            _ => Err(ObserveError::TcpInfo(format!("getsockopt on fd {fd}: {e}"))),
        };
    }
    Ok(linux_state(buf[0]))
}

fn queue(fd: RawFd, request: libc::Ioctl) -> u32 {
    let mut v: libc::c_int = 0;
    // SAFETY: the request writes one c_int.
    let r = unsafe { libc::ioctl(fd, request, &mut v) };
    if r == 0 {
        u32::try_from(v).unwrap_or(0)
    } else {
        0
    }
}

/// `include/net/tcp_states.h`, which gVisor's TCP_INFO follows.
pub fn linux_state(n: u8) -> Option<TcpState> {
    Some(match n {
        1 => TcpState::Established,
        2 => TcpState::SynSent,
        3 | 12 => TcpState::SynReceived, // 12: TCP_NEW_SYN_RECV (request socket)
        4 => TcpState::FinWait1,
        5 => TcpState::FinWait2,
        6 => TcpState::TimeWait,
        7 => TcpState::Closed,
        8 => TcpState::CloseWait,
        9 => TcpState::LastAck,
        10 => TcpState::Listen,
        11 => TcpState::Closing,
        _ => return None,
    })
}
