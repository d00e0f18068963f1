//! `TCP_INFO` on the descriptors the harness (or an agent) holds: the state
//! source of a stack without sock_diag (gVisor's netstack; FreeBSD and
//! macOS, where an agent runs).
//!
//! Each live descriptor gives its state, its addresses
//! (getsockname/getpeername) and its queues. How the state and the queues
//! are read is each OS's, in a file of its own with the same functions:
//! Linux's `TCP_INFO` (which gVisor follows) and SIOCINQ/SIOCOUTQ;
//! FreeBSD's `TCP_INFO` and FIONREAD/FIONWRITE; macOS's
//! `TCP_CONNECTION_INFO`, FIONREAD and SO_NWRITE. A socket the application
//! closed is not listed: this source cannot see orphans, TIME-WAIT after
//! close, or timers.

#[cfg(any(target_os = "freebsd", target_os = "macos"))]
#[path = "tcpinfo_bsd.rs"]
mod os;
#[cfg(target_os = "linux")]
#[path = "tcpinfo_linux.rs"]
mod os;

#[cfg(unix)]
pub use os::{INFO_OPTION, state as info_state};

#[cfg(unix)]
use std::net::SocketAddr;
#[cfg(unix)]
use std::os::fd::BorrowedFd;

#[cfg(unix)]
use socket2::SockRef;

use super::{ObserveError, RawFd, SockEntry};
use crate::tcp::TcpState;

/// Windows: a socket's own state (SIO_TCP_INFO) is not read; its TCP
/// table is (the `tcp-table` source).
#[cfg(windows)]
pub fn snapshot(_live: &[RawFd]) -> Result<Vec<SockEntry>, ObserveError> {
    Err(ObserveError::Unavailable(
        "TCP_INFO on Windows (SIO_TCP_INFO): Windows's states come from its TCP table",
    ))
}

/// One entry per live TCP descriptor. A descriptor that is not (or no
/// longer) a TCP socket is skipped; any other failure is an error.
#[cfg(unix)]
pub fn snapshot(live: &[RawFd]) -> Result<Vec<SockEntry>, ObserveError> {
    let mut out = Vec::with_capacity(live.len());
    for &fd in live {
        let Some(state) = os::tcp_state(fd)? else {
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
            cookie: None,
            host: None,
            state,
            local,
            remote,
            timer: None,
            timer_ms: None,
            recv_queue: os::recv_queue(fd),
            send_queue: os::send_queue(fd),
            fd: Some(fd),
        });
    }
    Ok(out)
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

/// `netinet/tcp_fsm.h` (TCPS_*), which FreeBSD's TCP_INFO and macOS's
/// TCP_CONNECTION_INFO report.
pub fn bsd_state(n: u8) -> Option<TcpState> {
    Some(match n {
        0 => TcpState::Closed,
        1 => TcpState::Listen,
        2 => TcpState::SynSent,
        3 => TcpState::SynReceived,
        4 => TcpState::Established,
        5 => TcpState::CloseWait,
        6 => TcpState::FinWait1,
        7 => TcpState::Closing,
        8 => TcpState::LastAck,
        9 => TcpState::FinWait2,
        10 => TcpState::TimeWait,
        _ => return None,
    })
}

/// `tcpi_state`, the first byte of the struct `option` fills, or None if
/// `fd` is not a TCP socket.
#[cfg(unix)]
fn first_byte(fd: RawFd, option: libc::c_int) -> Result<Option<u8>, ObserveError> {
    // 8 bytes are enough: every stack fills at least those.
    let mut buf = [0u8; 8];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf and len describe a writable buffer of len bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            option,
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
    Ok(Some(buf[0]))
}

/// A queue's length by an ioctl that writes one int; 0 where it fails.
#[cfg(unix)]
fn ioctl_int(fd: RawFd, request: os::IoctlRequest) -> u32 {
    let mut v: libc::c_int = 0;
    // SAFETY: the request writes one c_int.
    let r = unsafe { libc::ioctl(fd, request, &mut v) };
    if r == 0 {
        u32::try_from(v).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two numberings name the same states differently.
    #[test]
    fn linux_and_bsd_number_states_their_own_way() {
        assert_eq!(linux_state(1), Some(TcpState::Established));
        assert_eq!(bsd_state(4), Some(TcpState::Established));
        assert_eq!(linux_state(6), Some(TcpState::TimeWait));
        assert_eq!(bsd_state(10), Some(TcpState::TimeWait));
        assert_eq!(bsd_state(9), Some(TcpState::FinWait2));
        assert_eq!(linux_state(10), Some(TcpState::Listen));
        assert_eq!(bsd_state(1), Some(TcpState::Listen));
        assert_eq!(bsd_state(11), None);
    }
}
