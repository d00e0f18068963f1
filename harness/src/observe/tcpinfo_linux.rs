//! Linux (and gVisor, which follows it): `TCP_INFO` in Linux's numbering,
//! SIOCINQ and SIOCOUTQ.

use std::os::fd::RawFd;

use super::{ObserveError, first_byte, ioctl_int, linux_state};
use crate::tcp::TcpState;

/// The request type `ioctl(2)` takes here.
pub(crate) type IoctlRequest = libc::Ioctl;

/// The `IPPROTO_TCP` option whose struct starts with the state.
pub const INFO_OPTION: libc::c_int = libc::TCP_INFO;

/// The state that first byte names.
pub fn state(n: u8) -> Option<TcpState> {
    linux_state(n)
}

/// The state of `fd`, or None if it is not a TCP socket.
pub(crate) fn tcp_state(fd: RawFd) -> Result<Option<TcpState>, ObserveError> {
    Ok(first_byte(fd, INFO_OPTION)?.and_then(state))
}

/// Bytes queued for reading.
pub(crate) fn recv_queue(fd: RawFd) -> u32 {
    ioctl_int(fd, libc::FIONREAD)
}

/// Bytes not yet acknowledged (SIOCOUTQ).
pub(crate) fn send_queue(fd: RawFd) -> u32 {
    ioctl_int(fd, libc::TIOCOUTQ)
}
