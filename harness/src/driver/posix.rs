//! What Linux, FreeBSD and macOS share below the socket calls: the C
//! library's names (`sys`), errno, and the byte forms of the options whose
//! value is a struct (SO_LINGER, SO_SNDTIMEO). Windows has its own
//! (`windows.rs`).

pub use ::libc as sys;
pub use nix::errno::Errno;

/// A descriptor: the OS's, or a userspace stack's number.
pub use std::os::fd::RawFd;

/// An option's value as the bytes `setsockopt` takes.
fn option_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: `value` is a plain C struct of `size_of::<T>()` bytes, made
    // from a zeroed one (its padding, if any, is zero).
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// SO_LINGER's value: on with a timeout in seconds, or off.
pub(crate) fn linger_value(secs: Option<libc::c_int>) -> Vec<u8> {
    // SAFETY: a zeroed linger is valid.
    let mut lg: libc::linger = unsafe { std::mem::zeroed() };
    lg.l_onoff = libc::c_int::from(secs.is_some());
    lg.l_linger = secs.unwrap_or(0);
    option_bytes(&lg)
}

/// SO_LINGER's value read back: the timeout if on, None if off.
pub(crate) fn linger_of(bytes: &[u8]) -> Option<i64> {
    if bytes.len() < size_of::<libc::linger>() {
        return None;
    }
    // SAFETY: the buffer holds a struct linger, two ints: any bits are valid.
    let l: libc::linger = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    (l.l_onoff != 0).then_some(l.l_linger.into())
}

/// How many bytes SO_LINGER's value takes.
pub(crate) const LINGER_LEN: usize = size_of::<libc::linger>();

/// SO_SNDTIMEO's value for a timeout of `d` (a struct timeval).
pub(crate) fn send_timeout_value(d: std::time::Duration) -> Vec<u8> {
    // SAFETY: a zeroed timeval is valid.
    let mut tv: libc::timeval = unsafe { std::mem::zeroed() };
    tv.tv_sec = libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX);
    // Below a million: fits every OS's suseconds_t.
    tv.tv_usec = d.subsec_micros() as libc::suseconds_t;
    option_bytes(&tv)
}

/// How many bytes SO_SNDTIMEO's value takes.
pub(crate) const SEND_TIMEOUT_LEN: usize = size_of::<libc::timeval>();
