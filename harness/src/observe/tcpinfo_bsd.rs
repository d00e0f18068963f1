//! FreeBSD and macOS: the state in BSD's numbering (`TCP_INFO` on FreeBSD,
//! `TCP_CONNECTION_INFO` on macOS), FIONREAD, and the send queue by
//! FIONWRITE (FreeBSD) or SO_NWRITE (macOS).

use std::os::fd::RawFd;

use super::{ObserveError, bsd_state, first_byte, ioctl_int};
use crate::tcp::TcpState;

/// The request type `ioctl(2)` takes here.
pub(crate) type IoctlRequest = libc::c_ulong;

/// `TCP_CONNECTION_INFO`, netinet/tcp.h (not in the libc crate).
#[cfg(target_os = "macos")]
const TCP_CONNECTION_INFO: libc::c_int = 0x106;

/// The `IPPROTO_TCP` option whose struct starts with the state.
#[cfg(target_os = "freebsd")]
pub const INFO_OPTION: libc::c_int = libc::TCP_INFO;
#[cfg(target_os = "macos")]
pub const INFO_OPTION: libc::c_int = TCP_CONNECTION_INFO;

/// The state that first byte names.
pub fn state(n: u8) -> Option<TcpState> {
    bsd_state(n)
}

/// The state of `fd`, or None if it is not a TCP socket.
pub(crate) fn tcp_state(fd: RawFd) -> Result<Option<TcpState>, ObserveError> {
    Ok(first_byte(fd, INFO_OPTION)?.and_then(state))
}

/// Bytes queued for reading.
pub(crate) fn recv_queue(fd: RawFd) -> u32 {
    ioctl_int(fd, libc::FIONREAD)
}

/// Bytes in the send queue, sent or not.
#[cfg(target_os = "freebsd")]
pub(crate) fn send_queue(fd: RawFd) -> u32 {
    // FIONWRITE, sys/filio.h (not in the libc crate).
    ioctl_int(fd, 0x4004_6677)
}

/// Bytes in the send queue (SO_NWRITE).
#[cfg(target_os = "macos")]
pub(crate) fn send_queue(fd: RawFd) -> u32 {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len describe a writable c_int.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NWRITE,
            (&raw mut v).cast(),
            &mut len,
        )
    };
    if r == 0 {
        u32::try_from(v).unwrap_or(0)
    } else {
        0
    }
}
