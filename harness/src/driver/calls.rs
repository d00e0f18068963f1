//! The socket calls behind each step, with their raw results.
//!
//! Every function makes the real system call and returns what it returned
//! (`ret`, `errno`) without interpretation. Waiting is bounded: a read or
//! write on a blocking socket first waits for readiness with `poll(2)` up to
//! the step's deadline, then calls with `MSG_DONTWAIT`, so a peer that never
//! answers can stall a step but never the harness. `close()` is always a
//! plain `close(2)`: its blocking under SO_LINGER is what is being measured.

use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pattern;
use crate::scenario::{How, IoctlQuery, Payload, ReadAmount, SockOpt};

/// The raw result of one step's calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallResult {
    /// The return value of the last system call (for data calls: total bytes
    /// moved when the step succeeded). `None` when no call completed.
    pub ret: Option<i64>,
    /// errno of a failed call, by name (`ECONNRESET`).
    pub errno: Option<String>,
    /// Bytes moved by read/write calls.
    pub bytes: Option<u64>,
    /// A value the call reported (ioctl queue sizes, poll revents).
    pub value: Option<i64>,
    /// The harness's bound ran out while waiting for the socket.
    pub timed_out: bool,
    /// Plain-language detail (e.g. "EOF after 65536 bytes", "revents POLLIN|POLLRDHUP").
    pub note: Option<String>,
    /// The step could not be attempted (a scenario mistake such as reading
    /// before `accept`, or a harness failure): not an observation.
    pub harness_error: Option<String>,
}

impl CallResult {
    fn from_ret(ret: libc::c_int) -> CallResult {
        if ret < 0 {
            CallResult::failed(Errno::last())
        } else {
            CallResult {
                ret: Some(ret.into()),
                ..Default::default()
            }
        }
    }

    pub fn failed(e: Errno) -> CallResult {
        CallResult {
            ret: Some(-1),
            errno: Some(errno_name(e)),
            ..Default::default()
        }
    }

    pub fn harness_error(why: impl Into<String>) -> CallResult {
        CallResult {
            harness_error: Some(why.into()),
            ..Default::default()
        }
    }
}

/// `ECONNRESET` rather than "Connection reset by peer": names are what
/// people grep for and what compares across OSes.
pub fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

/// What one direction of the connection carried, as the applications saw it.
/// The writer appends what it hands to the kernel; the reader compares what
/// it gets at the same offsets.
#[derive(Debug, Default)]
pub struct StreamLog {
    /// Distinguishes the two directions' patterns, so a byte delivered to
    /// the wrong side would not verify.
    seed: u8,
    content: Vec<u8>,
    pub written: u64,
    pub read: u64,
    pub corrupted: u64,
}

impl StreamLog {
    pub fn new(seed: u8) -> StreamLog {
        StreamLog {
            seed,
            ..Default::default()
        }
    }

    /// Bytes the writer is about to offer, starting at the current write offset.
    fn stage(&mut self, bytes: &[u8]) {
        self.content.truncate(self.written as usize);
        self.content.extend_from_slice(bytes);
    }

    /// After a write step: forget staged bytes the kernel did not take.
    fn settle(&mut self) {
        self.content.truncate(self.written as usize);
    }

    /// Checks bytes the reader got; returns how many differ from what was written.
    fn verify(&mut self, got: &[u8]) -> u64 {
        let start = self.read as usize;
        let bad = got
            .iter()
            .enumerate()
            .filter(|(i, b)| self.content.get(start + i) != Some(b))
            .count() as u64;
        self.read += got.len() as u64;
        self.corrupted += bad;
        bad
    }

    /// Offset of the next byte to write.
    pub fn write_offset(&self) -> u64 {
        self.written
    }
}

fn poll_for(fd: RawFd, events: libc::c_short, deadline: Instant) -> Result<libc::c_short, Errno> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        match n {
            n if n > 0 => return Ok(pfd.revents),
            0 => return Ok(0),
            _ if Errno::last() == Errno::EINTR => continue,
            _ => return Err(Errno::last()),
        }
    }
}

/// `POLLIN|POLLRDHUP` style names for a revents mask.
pub fn revents_names(revents: libc::c_short) -> String {
    let names: Vec<&str> = [
        (libc::POLLIN, "POLLIN"),
        (libc::POLLOUT, "POLLOUT"),
        (libc::POLLRDHUP, "POLLRDHUP"),
        (libc::POLLERR, "POLLERR"),
        (libc::POLLHUP, "POLLHUP"),
        (libc::POLLNVAL, "POLLNVAL"),
    ]
    .iter()
    .filter(|(bit, _)| revents & bit != 0)
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

pub fn is_nonblocking(fd: RawFd) -> bool {
    // SAFETY: F_GETFL on an fd we own has no side effects.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

/// What a data call does after EAGAIN: `None` to retry once the socket is
/// ready (waiting, bounded, only when `wait`), or the step's final result.
/// `progress` says how far the call got, for the note.
fn after_eagain(
    fd: RawFd,
    events: libc::c_short,
    wait: bool,
    moved: usize,
    deadline: Instant,
    progress: String,
) -> Option<CallResult> {
    if wait {
        return match poll_for(fd, events, deadline) {
            Ok(0) => Some(CallResult {
                timed_out: true,
                note: Some(format!("not ready before the deadline; {progress}")),
                ..Default::default()
            }),
            Ok(_) => None,
            Err(e) => Some(CallResult::failed(e)),
        };
    }
    Some(if moved > 0 {
        CallResult {
            ret: Some(moved as i64),
            note: Some(format!("EAGAIN after {progress}")),
            ..Default::default()
        }
    } else {
        CallResult::failed(Errno::EAGAIN)
    })
}

/// `write`: hands `payload` to the kernel, waiting (bounded) for buffer space
/// unless the socket is non-blocking or `dontwait` was asked for.
pub fn write(
    fd: RawFd,
    payload: &Payload,
    nosignal: bool,
    dontwait: bool,
    log: &Mutex<StreamLog>,
    deadline: Instant,
) -> CallResult {
    let bytes = {
        let mut log = log.lock().expect("stream log");
        let bytes = match payload {
            Payload::Pattern(n) => pattern::bytes(log.write_offset(), *n, log.seed),
            Payload::Text(t) => t.clone(),
        };
        log.stage(&bytes);
        bytes
    };
    let wait = !dontwait && !is_nonblocking(fd);
    let flags = libc::MSG_DONTWAIT | if nosignal { libc::MSG_NOSIGNAL } else { 0 };
    let mut sent = 0usize;
    let mut result = loop {
        if sent == bytes.len() {
            break CallResult {
                ret: Some(sent as i64),
                ..Default::default()
            };
        }
        // SAFETY: pointer and length describe the unsent tail of `bytes`.
        let n = unsafe { libc::send(fd, bytes[sent..].as_ptr().cast(), bytes.len() - sent, flags) };
        if n >= 0 {
            sent += n as usize;
            log.lock().expect("stream log").written += n as u64;
            continue;
        }
        let e = Errno::last();
        match e {
            Errno::EINTR => continue,
            Errno::EAGAIN => {
                let progress = format!("{sent} of {} bytes written", bytes.len());
                match after_eagain(fd, libc::POLLOUT, wait, sent, deadline, progress) {
                    None => continue,
                    Some(r) => break r,
                }
            }
            e => break CallResult::failed(e),
        }
    };
    log.lock().expect("stream log").settle();
    result.bytes = Some(sent as u64);
    result
}

/// `read`: reads and verifies against what the peer wrote.
pub fn read(
    fd: RawFd,
    amount: ReadAmount,
    dontwait: bool,
    log: &Mutex<StreamLog>,
    deadline: Instant,
) -> CallResult {
    let wait = !dontwait && !is_nonblocking(fd) && amount != ReadAmount::Available;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut bad = 0u64;
    let mut result = loop {
        let want = match amount {
            ReadAmount::Exactly(n) if total as usize >= n => {
                break CallResult {
                    ret: Some(total as i64),
                    ..Default::default()
                };
            }
            ReadAmount::Exactly(n) => (n - total as usize).min(buf.len()),
            _ => buf.len(),
        };
        // SAFETY: buf is valid for `want` bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
        if n > 0 {
            bad += log.lock().expect("stream log").verify(&buf[..n as usize]);
            total += n as u64;
            continue;
        }
        if n == 0 {
            break CallResult {
                ret: Some(total as i64),
                note: Some(format!("EOF after {total} bytes")),
                ..Default::default()
            };
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::EAGAIN => {
                let progress = format!("{total} bytes read");
                match after_eagain(
                    fd,
                    libc::POLLIN | libc::POLLRDHUP,
                    wait,
                    total as usize,
                    deadline,
                    progress,
                ) {
                    None => continue,
                    Some(r) => break r,
                }
            }
            e => break CallResult::failed(e),
        }
    };
    result.bytes = Some(total);
    if bad > 0 {
        let note = format!("{bad} bytes differ from what the peer wrote");
        result.note = Some(match result.note.take() {
            Some(n) => format!("{n}; {note}"),
            None => note,
        });
    }
    result
}

pub fn shutdown(fd: RawFd, how: How) -> CallResult {
    let how = match how {
        How::Read => libc::SHUT_RD,
        How::Write => libc::SHUT_WR,
        How::Both => libc::SHUT_RDWR,
    };
    // SAFETY: plain syscall on an fd.
    CallResult::from_ret(unsafe { libc::shutdown(fd, how) })
}

/// `close(2)`; takes ownership of the fd whatever the result (POSIX leaves
/// the fd state unspecified on EINTR; Linux always releases it).
pub fn close(fd: RawFd) -> CallResult {
    // SAFETY: the caller gives up the fd.
    CallResult::from_ret(unsafe { libc::close(fd) })
}

pub fn setsockopt(fd: RawFd, opt: SockOpt) -> CallResult {
    fn int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> libc::c_int {
        // SAFETY: pointer and length of a c_int.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            )
        }
    }
    let ret = match opt {
        SockOpt::Linger(l) => {
            let lg = libc::linger {
                l_onoff: l.is_some() as libc::c_int,
                l_linger: l.unwrap_or(0) as libc::c_int,
            };
            // SAFETY: pointer and length of a struct linger.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&lg as *const libc::linger).cast(),
                    size_of::<libc::linger>() as u32,
                )
            }
        }
        SockOpt::RcvBuf(n) => int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, n as libc::c_int),
        SockOpt::SndBuf(n) => int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, n as libc::c_int),
        SockOpt::ReuseAddr(b) => int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, b.into()),
        SockOpt::ReusePort(b) => int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, b.into()),
        SockOpt::KeepAlive(b) => int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, b.into()),
        SockOpt::NoDelay(b) => int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, b.into()),
        SockOpt::Linger2(s) => int(fd, libc::IPPROTO_TCP, libc::TCP_LINGER2, s),
        SockOpt::UserTimeout(ms) => int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            ms as libc::c_int,
        ),
        SockOpt::NonBlocking(on) => {
            // SAFETY: F_GETFL/F_SETFL on an fd.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                if flags < 0 {
                    flags
                } else {
                    let flags = if on {
                        flags | libc::O_NONBLOCK
                    } else {
                        flags & !libc::O_NONBLOCK
                    };
                    libc::fcntl(fd, libc::F_SETFL, flags)
                }
            }
        }
    };
    CallResult::from_ret(ret)
}

pub fn ioctl(fd: RawFd, q: IoctlQuery) -> CallResult {
    let req = match q {
        IoctlQuery::InQueue => libc::FIONREAD,
        IoctlQuery::OutQueue => libc::TIOCOUTQ, // == SIOCOUTQ
        IoctlQuery::OutQueueNotSent => 0x894B,  // SIOCOUTQNSD (linux/sockios.h)
    };
    let mut v: libc::c_int = 0;
    // SAFETY: each request writes one c_int.
    let ret = unsafe { libc::ioctl(fd, req as _, &mut v) };
    let mut r = CallResult::from_ret(ret);
    if ret == 0 {
        r.value = Some(v.into());
    }
    r
}

/// `connect()` with an `AF_UNSPEC` address: dissolves the association
/// (Linux aborts an established connection with RST).
pub fn disconnect(fd: RawFd) -> CallResult {
    // SAFETY: a zeroed sockaddr with family AF_UNSPEC is a valid argument.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    CallResult::from_ret(unsafe { libc::connect(fd, &sa, size_of::<libc::sockaddr>() as u32) })
}

/// Waits until `fd` polls ready for `events`, or the deadline.
pub fn wait_ready(fd: RawFd, events: libc::c_short, deadline: Instant) -> CallResult {
    match poll_for(fd, events, deadline) {
        Ok(0) => CallResult {
            timed_out: true,
            note: Some("not ready before the deadline".into()),
            ..Default::default()
        },
        Ok(rev) => CallResult {
            ret: Some(1),
            value: Some(rev.into()),
            note: Some(format!("revents {}", revents_names(rev))),
            ..Default::default()
        },
        Err(e) => CallResult::failed(e),
    }
}

/// Milliseconds, as the report shows them: rounded to the microsecond,
/// the precision of the clocks and of pcap timestamps.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
