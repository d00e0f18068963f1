//! The socket calls behind each step, with their raw results.
//!
//! Every function makes the real system call and returns what it returned
//! (`ret`, `errno`) without interpretation. Waiting is bounded: a read or
//! write on a blocking socket first waits for readiness with `poll(2)` up to
//! the step's deadline, then calls with `MSG_DONTWAIT`, so a peer that never
//! answers can stall a step but never the harness. `close()` is always a
//! plain `close(2)`: its blocking under SO_LINGER is what is being measured.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use socket2::SockAddr;

use super::os::{Errno, RawFd, sys};
use super::sockets::{Fd, SocketApi};
use super::{os, pattern};
use crate::scenario::{
    Call, GetOpt, How, IoctlQuery, Payload, ReadAmount, SockOpt, WaitFor, limits,
};
use crate::tcp::ErrnoName;

/// The raw result of one step's calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallResult {
    /// The return value of the last system call (for data calls: total bytes
    /// moved when the step succeeded). `None` when no call completed.
    pub ret: Option<i64>,
    /// errno of a failed call, by name (`ECONNRESET`).
    pub errno: Option<ErrnoName>,
    /// Bytes moved by read/write calls.
    pub bytes: Option<u64>,
    /// A value the call reported (ioctl queue sizes, poll revents, the local
    /// port a connect got).
    pub value: Option<i64>,
    /// The socket's pending error (SO_ERROR) by name, where the step read
    /// it: the outcome of a non-blocking connect, `getsockopt SO_ERROR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub so_error: Option<ErrnoName>,
    /// A signal the call raised for this thread (`SIGPIPE` from a write to
    /// a broken connection without MSG_NOSIGNAL), taken while it was
    /// blocked, so the harness lives to record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The socket's TCP state as `getsockopt TCP_INFO` read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_state: Option<crate::tcp::TcpState>,
    /// The harness's bound ran out while waiting for the socket.
    pub timed_out: bool,
    /// A read or write moved fewer bytes than it asked for: it stopped at
    /// EAGAIN, an error, EOF or its bound. How much a buffer takes before
    /// that depends on timing and memory as much as on the stack.
    #[serde(default)]
    pub partial: bool,
    /// Plain-language detail (e.g. "EOF after 65536 bytes", "revents POLLIN|POLLRDHUP").
    pub note: Option<String>,
    /// What a `read ... keep` step read, as text (the first 4096 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The step could not be attempted (a scenario mistake such as reading
    /// before `accept`, or a harness failure): not an observation.
    pub harness_error: Option<String>,
    /// The step's event is out of sight on this stack (an `optional` wait
    /// on a socket the state source cannot see): skipped, and its facts are
    /// not observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unobserved: Option<String>,
    /// A step on several sockets (`client#1..100`, `every server`): how
    /// its calls ended. `ret`, `errno` and the like are then the value all
    /// calls agree on, or null where they differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupResult>,
    /// How long the call took, in microseconds, timed where it was made
    /// when that is not the harness's process (an agent times its own
    /// calls, so a step's duration is the stack's, not the round trip to
    /// the agent). For one call of a request on several sockets, from the
    /// request's start to that call's end. Never in a report: it becomes
    /// the step's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_us: Option<u64>,
}

/// How the calls of a step on several sockets ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupResult {
    /// The group as written: `client#1..100`, `every server`.
    pub target: String,
    /// Sockets the call was made on.
    pub sockets: u32,
    /// Calls that returned without an error and in time.
    pub ok: u32,
    /// Calls whose bound ran out.
    pub timed_out: u32,
    /// Calls that failed, by errno (a non-blocking connect's later
    /// failure by its SO_ERROR).
    pub errnos: std::collections::BTreeMap<String, u32>,
}

impl CallResult {
    /// A call that returned `ret`.
    pub fn ok(ret: i64) -> CallResult {
        CallResult {
            ret: Some(ret),
            ..Default::default()
        }
    }

    pub fn failed(e: Errno) -> CallResult {
        CallResult {
            ret: Some(-1),
            errno: Some(errno_name(e)),
            ..Default::default()
        }
    }

    pub(crate) fn harness_error(why: impl Into<String>) -> CallResult {
        CallResult {
            harness_error: Some(why.into()),
            ..Default::default()
        }
    }
}

/// `ECONNRESET` rather than "Connection reset by peer" (see [`ErrnoName`]).
pub(crate) fn errno_name(e: Errno) -> ErrnoName {
    ErrnoName::from(format!("{e:?}"))
}

/// What one direction of the connection carried, as the applications saw
/// it. The writer records how many bytes the kernel accepted; the reader
/// checks every byte it gets against what was written at that offset.
///
/// Pattern bytes are a function of their stream offset, so only literal
/// text is kept: memory stays small whatever a scenario writes.
#[derive(Debug, Default)]
pub struct StreamLog {
    /// Distinguishes the two directions' patterns, so a byte delivered to
    /// the wrong side would not verify.
    seed: u8,
    /// Literal text the kernel accepted, by stream offset, in order.
    texts: Vec<(u64, Vec<u8>)>,
    pub written: u64,
    pub read: u64,
    pub corrupted: u64,
    /// The writer lives on another endpoint, so `written` lags what is on
    /// its way: bytes past it are checked against the pattern, not counted
    /// as never written.
    writer_elsewhere: bool,
    /// A program wrote the stream: what it meant to write is unknown, so
    /// nothing read can be checked.
    program_writes: bool,
}

impl StreamLog {
    pub fn new(seed: u8) -> StreamLog {
        StreamLog {
            seed,
            ..Default::default()
        }
    }

    /// The stream written by `writer` (each direction has its own pattern).
    pub(crate) fn written_by(writer: crate::tcp::Side) -> StreamLog {
        StreamLog::new(match writer {
            crate::tcp::Side::Client => 1,
            crate::tcp::Side::Server => 2,
        })
    }

    /// The stream is written by a program the harness does not drive.
    pub fn written_by_program(&mut self) {
        self.program_writes = true;
    }

    /// Literal text the writer handed over, by stream offset.
    pub fn texts(&self) -> &[(u64, Vec<u8>)] {
        &self.texts
    }

    /// A reader's view of a stream written on another endpoint: the texts
    /// written so far are all it knows besides the pattern.
    pub(crate) fn written_elsewhere(&mut self, texts: Vec<(u64, Vec<u8>)>) {
        self.writer_elsewhere = true;
        self.texts = texts;
    }

    /// A write of `payload` is on its way from another endpoint, starting
    /// at offset `written`: its text, if any, is known before it lands.
    pub fn remote_write_starts(&mut self, payload: &Payload) {
        self.writer_elsewhere = true;
        if let Some(t) = payload.text() {
            self.texts.push((self.written, t.to_vec()));
        }
    }

    /// The remote write begun by [`Self::remote_write_starts`] moved `sent`
    /// bytes; the stream's writer has now written `total`.
    pub fn remote_write_ended(&mut self, payload: &Payload, sent: u64, total: u64) {
        if payload.text().is_some() {
            if let Some((_, t)) = self.texts.last_mut() {
                t.truncate(usize::try_from(sent).unwrap_or(usize::MAX));
                if t.is_empty() {
                    self.texts.pop();
                }
            }
        }
        self.written = total;
    }

    /// The byte written at stream offset `at`.
    fn expected(&self, at: u64) -> u8 {
        let i = self.texts.partition_point(|(start, _)| *start <= at);
        if let Some((start, bytes)) = i.checked_sub(1).map(|i| &self.texts[i]) {
            if let Some(b) = usize::try_from(at - start).ok().and_then(|o| bytes.get(o)) {
                return *b;
            }
        }
        pattern::byte_at(at, self.seed)
    }

    /// The bytes of `payload`, a write that starts at this stream's offset
    /// `start`, from its own offset `from`, at most `n` of them: what is
    /// left of its text, then the pattern. Generated as they are needed, so
    /// a large write costs time, not memory.
    pub(crate) fn payload_bytes(
        &self,
        payload: &Payload,
        start: u64,
        from: u64,
        n: usize,
    ) -> Vec<u8> {
        let text = payload.text().unwrap_or_default();
        let text_len = text.len() as u64;
        let end = payload.len().min(from.saturating_add(n as u64));
        let at = |o: u64| usize::try_from(o).expect("an offset within a text");
        let mut out = Vec::new();
        if from < text_len {
            out.extend_from_slice(&text[at(from)..at(end.min(text_len))]);
        }
        let pattern_from = from.max(text_len);
        if end > pattern_from {
            let len = usize::try_from(end - pattern_from).expect("at most n bytes");
            out.extend(pattern::bytes(start + pattern_from, len, self.seed));
        }
        out
    }

    /// A write of `payload` that started at stream offset `start` moved
    /// `sent` bytes: its text (what of it went) is kept for the reader.
    pub fn wrote(&mut self, payload: &Payload, start: u64, sent: u64) {
        if let Some(t) = payload.text() {
            let of_text = usize::try_from(sent).map_or(t.len(), |s| s.min(t.len()));
            if of_text > 0 {
                self.texts.push((start, t[..of_text].to_vec()));
            }
        }
        self.written += sent;
    }

    /// How many of `got`, the bytes at the reader's offset, differ from
    /// what was written (a byte beyond what was written differs by
    /// definition).
    pub fn differing(&self, got: &[u8]) -> u64 {
        if self.program_writes {
            return 0;
        }
        got.iter()
            .zip(self.read..)
            .filter(|(b, at)| {
                (*at >= self.written && !self.writer_elsewhere) || self.expected(*at) != **b
            })
            .count() as u64
    }

    /// Checks bytes the reader got and consumed; returns how many differ.
    pub(crate) fn verify(&mut self, got: &[u8]) -> u64 {
        let bad = self.differing(got);
        self.read += got.len() as u64;
        self.corrupted += bad;
        bad
    }
}

/// Bytes generated and offered to the kernel at a time by a pattern write.
const WRITE_CHUNK: usize = 64 * 1024;

fn poll_for(s: Fd, events: sys::c_short, deadline: Instant) -> Result<sys::c_short, Errno> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = [sys::pollfd {
            fd: s.fd,
            events,
            revents: 0,
        }];
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        match s.api.poll(&mut pfd, ms) {
            Ok(n) if n > 0 => return Ok(pfd[0].revents),
            Ok(_) => return Ok(0),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Which of `fds` are ready now (a zero-timeout poll(2)): their revents,
/// in order (0 where not ready, or where the poll itself failed).
pub(crate) fn poll_now(api: &dyn SocketApi, mut fds: Vec<sys::pollfd>) -> Vec<sys::c_short> {
    while let Err(Errno::EINTR) = api.poll(&mut fds, 0) {}
    fds.iter().map(|p| p.revents).collect()
}

/// Blocks SIGPIPE for the calling thread (and the threads it starts), so
/// that a write which raises it leaves it pending instead of ending the
/// process: [`take_pending_sigpipe`] then says whether it was raised. (The
/// process ignores SIGPIPE, but an ignored signal that is blocked is still
/// made pending.)
#[cfg(unix)]
pub(crate) fn block_sigpipe() -> Result<(), Errno> {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGPIPE);
    nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&set), None)
}

/// Windows raises no SIGPIPE.
#[cfg(windows)]
pub(crate) fn block_sigpipe() -> Result<(), Errno> {
    Ok(())
}

/// `POLLIN|POLLRDHUP` style names for a revents mask.
pub(crate) fn revents_names(revents: sys::c_short) -> String {
    let names: Vec<&str> = [
        (sys::POLLIN, "POLLIN"),
        (sys::POLLOUT, "POLLOUT"),
        (os::POLL_PEER_CLOSED, "POLLRDHUP"),
        (sys::POLLERR, "POLLERR"),
        (sys::POLLHUP, "POLLHUP"),
        (sys::POLLNVAL, "POLLNVAL"),
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

pub(crate) fn is_nonblocking(s: Fd) -> bool {
    s.api
        .flags(s.fd)
        .is_ok_and(|flags| flags & sys::O_NONBLOCK != 0)
}

/// Sets or clears O_NONBLOCK.
pub(crate) fn set_nonblocking(s: Fd, on: bool) -> Result<(), Errno> {
    let flags = s.api.flags(s.fd)?;
    let flags = if on {
        flags | sys::O_NONBLOCK
    } else {
        flags & !sys::O_NONBLOCK
    };
    s.api.set_flags(s.fd, flags)
}

/// What a data call does after EAGAIN: `None` to retry once the socket is
/// ready (waiting, bounded, only when `wait`), or the step's final result.
/// `progress` says how far the call got, for the note.
fn after_eagain(
    s: Fd,
    events: sys::c_short,
    wait: bool,
    moved: u64,
    deadline: Instant,
    progress: String,
) -> Option<CallResult> {
    if wait {
        return match poll_for(s, events, deadline) {
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
            ret: Some(count(moved)),
            note: Some(format!("EAGAIN after {progress}")),
            ..Default::default()
        }
    } else {
        CallResult::failed(Errno::EAGAIN)
    })
}

/// `write`: hands `payload` to the kernel, waiting (bounded) for buffer space
/// unless the socket is non-blocking or `dontwait` was asked for. A pattern
/// payload is generated a chunk at a time, so a large write costs time, not
/// memory.
pub fn write(
    s: Fd,
    payload: &Payload,
    flags: WriteFlags,
    log: &Mutex<StreamLog>,
    deadline: Instant,
) -> CallResult {
    let WriteFlags {
        nosignal,
        dontwait,
        more,
    } = flags;
    let start = log.lock().expect("stream log").written;
    let total = payload.len();
    let wait = !dontwait && !is_nonblocking(s);
    let more = match (more, os::MSG_MORE) {
        (false, _) => 0,
        (true, Some(flag)) => flag,
        (true, None) => return not_on_this_os("MSG_MORE"),
    };
    let flags = sys::MSG_DONTWAIT | if nosignal { os::MSG_NOSIGNAL } else { 0 } | more;
    let mut sent = 0u64;
    let mut chunk: Vec<u8> = Vec::new();
    let mut chunk_at = 0u64; // offset of chunk[0] within the payload
    let mut result = loop {
        if sent == total {
            break CallResult {
                ret: Some(count(sent)),
                ..Default::default()
            };
        }
        // The unsent bytes at hand: refill the chunk once it is used up.
        // Offsets into a chunk are below WRITE_CHUNK (or a text's length).
        let in_chunk = |at: u64| usize::try_from(at).expect("an offset within a chunk");
        if sent >= chunk_at + chunk.len() as u64 {
            chunk_at = sent;
            // What is left of the text, then the pattern, in one buffer:
            // one send() hands the kernel both.
            let text_len = payload.text().map_or(0, <[u8]>::len) as u64;
            let n = in_chunk(text_len.saturating_sub(sent)) + WRITE_CHUNK;
            chunk = log
                .lock()
                .expect("stream log")
                .payload_bytes(payload, start, sent, n);
        }
        let unsent = &chunk[in_chunk(sent - chunk_at)..];
        match s.api.send(s.fd, unsent, flags) {
            Ok(n) => sent += n as u64,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let progress = format!("{sent} of {total} bytes written");
                if let Some(r) = after_eagain(s, sys::POLLOUT, wait, sent, deadline, progress) {
                    break r;
                }
            }
            Err(e) => break CallResult::failed(e),
        }
    };
    result.partial = sent < total;
    result.signal = s.api.take_pending_sigpipe().then(|| "SIGPIPE".to_string());
    log.lock().expect("stream log").wrote(payload, start, sent);
    result.bytes = Some(sent);
    result
}

/// The flags of a write step.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteFlags {
    /// `MSG_NOSIGNAL`: EPIPE without SIGPIPE.
    pub nosignal: bool,
    /// Stop at the first EAGAIN instead of waiting for buffer space.
    pub dontwait: bool,
    /// `MSG_MORE`: more data follows.
    pub more: bool,
}

/// `recv(MSG_PEEK)`: the queued bytes (up to what `amount` asks), checked
/// against what the peer wrote but not consumed. Waits (bounded) for data
/// like a read unless non-blocking, `dontwait` or `available`.
pub fn peek(
    s: Fd,
    amount: ReadAmount,
    dontwait: bool,
    keep: bool,
    log: &Mutex<StreamLog>,
    deadline: Instant,
) -> CallResult {
    let wait = !dontwait && !is_nonblocking(s) && amount != ReadAmount::Available;
    if wait {
        let ready = wait_ready(s, sys::POLLIN | os::POLL_PEER_CLOSED, deadline);
        if ready.timed_out || ready.errno.is_some() {
            return ready;
        }
    }
    let want = match amount {
        ReadAmount::Exactly(n) => usize::try_from(n).unwrap_or(usize::MAX).min(64 * 1024),
        _ => 64 * 1024,
    };
    let mut buf = vec![0u8; want];
    let n = match s
        .api
        .recv(s.fd, &mut buf, sys::MSG_PEEK | sys::MSG_DONTWAIT)
    {
        Ok(n) => n,
        Err(e) => return CallResult::failed(e),
    };
    let got = &buf[..n];
    let bad = log.lock().expect("stream log").differing(got);
    CallResult {
        ret: Some(count(got.len() as u64)),
        bytes: Some(got.len() as u64),
        partial: matches!(amount, ReadAmount::Exactly(n) if (got.len() as u64) < n),
        note: (bad > 0).then(|| format!("{bad} peeked bytes differ from what the peer wrote")),
        text: keep.then(|| kept_text(got)),
        ..Default::default()
    }
}

/// What a `keep` read keeps: its first [`limits::MAX_KEPT`] bytes, as
/// text (bytes that are not UTF-8 as U+FFFD).
fn kept_text(got: &[u8]) -> String {
    String::from_utf8_lossy(&got[..got.len().min(limits::MAX_KEPT)]).into_owned()
}

/// `getsockopt(SO_ERROR)`: the pending error by name ("0" for none).
pub(crate) fn so_error(s: Fd) -> CallResult {
    match int_option(s, sys::SOL_SOCKET, sys::SO_ERROR) {
        Ok(v) => CallResult {
            so_error: Some(if v == 0 {
                "0".into()
            } else {
                errno_name(Errno::from_raw(v))
            }),
            ..CallResult::ok(0)
        },
        Err(e) => CallResult::failed(e),
    }
}

/// An option whose value is an int.
fn int_option(s: Fd, level: sys::c_int, name: sys::c_int) -> Result<sys::c_int, Errno> {
    let mut v = [0u8; size_of::<sys::c_int>()];
    s.api.getsockopt(s.fd, level, name, &mut v)?;
    Ok(sys::c_int::from_ne_bytes(v))
}

/// The pending error of a socket whose connect ended, by name.
fn connect_error(s: Fd) -> Option<ErrnoName> {
    match int_option(s, sys::SOL_SOCKET, sys::SO_ERROR) {
        Ok(0) => None,
        Ok(e) => Some(errno_name(Errno::from_raw(e))),
        Err(e) => Some(errno_name(e)),
    }
}

/// `getsockopt(SO_LINGER)`: the linger time as the value when on, none
/// when off; the note says which.
pub(crate) fn get_linger(s: Fd) -> CallResult {
    let mut v = [0u8; os::LINGER_LEN];
    match s
        .api
        .getsockopt(s.fd, sys::SOL_SOCKET, sys::SO_LINGER, &mut v)
    {
        Ok(_) => {
            let secs = os::linger_of(&v);
            CallResult {
                value: secs,
                note: Some(if secs.is_some() { "on" } else { "off" }.into()),
                ..CallResult::ok(0)
            }
        }
        Err(e) => CallResult::failed(e),
    }
}

/// `getsockopt(TCP_INFO)` (or this OS's equivalent, see `observe`): the
/// socket's TCP state.
#[cfg(unix)]
pub(crate) fn tcp_state(s: Fd) -> CallResult {
    let mut buf = [0u8; 8];
    match s.api.getsockopt(
        s.fd,
        sys::IPPROTO_TCP,
        crate::observe::INFO_OPTION,
        &mut buf,
    ) {
        Ok(_) => CallResult {
            tcp_state: crate::observe::info_state(buf[0]),
            ..CallResult::ok(0)
        },
        Err(e) => CallResult::failed(e),
    }
}

/// Windows: its equivalent, the SIO_TCP_INFO ioctl, is not read yet.
#[cfg(windows)]
pub(crate) fn tcp_state(_s: Fd) -> CallResult {
    CallResult {
        unobserved: Some("TCP_INFO: Windows's SIO_TCP_INFO is not read yet".into()),
        ..Default::default()
    }
}

/// A byte count as a call's return value (counts here are far below 2^63).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `read`: reads and verifies against what the peer wrote; `keep` keeps
/// the first bytes as the result's `text`.
pub fn read(
    s: Fd,
    amount: ReadAmount,
    dontwait: bool,
    keep: bool,
    log: &Mutex<StreamLog>,
    deadline: Instant,
) -> CallResult {
    let wait = !dontwait && !is_nonblocking(s) && amount != ReadAmount::Available;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut bad = 0u64;
    let mut kept = Vec::new();
    let mut result = loop {
        let want = match amount {
            ReadAmount::Exactly(n) if total >= n => {
                break CallResult {
                    ret: Some(count(total)),
                    ..Default::default()
                };
            }
            ReadAmount::Exactly(n) => {
                usize::try_from(n - total).map_or(buf.len(), |left| left.min(buf.len()))
            }
            _ => buf.len(),
        };
        let n = match s.api.recv(s.fd, &mut buf[..want], sys::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                let progress = format!("{total} bytes read");
                let events = sys::POLLIN | os::POLL_PEER_CLOSED;
                match after_eagain(s, events, wait, total, deadline, progress) {
                    None => continue,
                    Some(r) => break r,
                }
            }
            Err(e) => break CallResult::failed(e),
        };
        if n > 0 {
            bad += log.lock().expect("stream log").verify(&buf[..n]);
            if keep && kept.len() < limits::MAX_KEPT {
                kept.extend_from_slice(&buf[..n.min(limits::MAX_KEPT - kept.len())]);
            }
            total += n as u64;
            continue;
        }
        break CallResult {
            ret: Some(count(total)),
            note: Some(format!("EOF after {total} bytes")),
            ..Default::default()
        };
    };
    read_ended(&mut result, amount, total, bad, keep.then_some(&kept[..]));
    result
}

/// Completes a read's result: `total` bytes moved (fewer than asked is
/// `partial`), `bad` of them corrupted, and the text kept if `kept`.
pub(crate) fn read_ended(
    result: &mut CallResult,
    amount: ReadAmount,
    total: u64,
    bad: u64,
    kept: Option<&[u8]>,
) {
    result.bytes = Some(total);
    result.text = kept.map(kept_text);
    result.partial = matches!(amount, ReadAmount::Exactly(n) if total < n);
    if bad > 0 {
        let note = format!("{bad} bytes differ from what the peer wrote");
        result.note = Some(match result.note.take() {
            Some(n) => format!("{n}; {note}"),
            None => note,
        });
    }
}

pub fn shutdown(s: Fd, how: How) -> CallResult {
    let how = match how {
        How::Read => sys::SHUT_RD,
        How::Write => sys::SHUT_WR,
        How::Both => sys::SHUT_RDWR,
    };
    unit_result(s.api.shutdown(s.fd, how))
}

/// `close(2)`; takes ownership of the fd whatever the result (POSIX leaves
/// the fd state unspecified on EINTR; Linux always releases it).
pub fn close(s: Fd) -> CallResult {
    unit_result(s.api.close(s.fd))
}

/// SO_LINGER: on with a timeout in seconds, or off.
pub(crate) fn set_linger(s: Fd, secs: Option<sys::c_int>) -> Result<(), Errno> {
    s.api.setsockopt(
        s.fd,
        sys::SOL_SOCKET,
        sys::SO_LINGER,
        &os::linger_value(secs),
    )
}

pub fn setsockopt(s: Fd, opt: SockOpt) -> CallResult {
    let ret = match opt {
        SockOpt::Linger(l) => set_linger(s, l),
        SockOpt::NonBlocking(on) => set_nonblocking(s, on),
        other => {
            let Some((level, name)) = os::int_option(other) else {
                return not_on_this_os(other.c_name());
            };
            let v: sys::c_int = match other {
                SockOpt::RcvBuf(n)
                | SockOpt::SndBuf(n)
                | SockOpt::RcvLowat(n)
                | SockOpt::Linger2(n)
                | SockOpt::KeepIdle(n)
                | SockOpt::KeepIntvl(n)
                | SockOpt::KeepCnt(n) => n,
                SockOpt::ReuseAddr(b)
                | SockOpt::ReusePort(b)
                | SockOpt::KeepAlive(b)
                | SockOpt::NoDelay(b)
                | SockOpt::Cork(b) => b.into(),
                // TCP_USER_TIMEOUT takes an unsigned int: the same bits.
                SockOpt::UserTimeout(ms) => sys::c_int::from_ne_bytes(ms.to_ne_bytes()),
                SockOpt::Linger(_) | SockOpt::NonBlocking(_) => unreachable!("handled above"),
            };
            s.api.setsockopt(s.fd, level, name, &v.to_ne_bytes())
        }
    };
    unit_result(ret)
}

pub(crate) fn ioctl(s: Fd, q: IoctlQuery) -> CallResult {
    let Some(request) = os::ioctl_request(q) else {
        return not_on_this_os(q.c_name());
    };
    match s.api.ioctl_int(s.fd, request) {
        Ok(v) => CallResult {
            value: Some(v.into()),
            ..CallResult::ok(0)
        },
        Err(e) => CallResult::failed(e),
    }
}

/// The options not every OS has (an example value of each): the ones an
/// OS's agent may announce as unmapped.
const OPTIONAL: [SockOpt; 8] = [
    SockOpt::ReusePort(true),
    SockOpt::Linger2(0),
    SockOpt::UserTimeout(0),
    SockOpt::Cork(true),
    SockOpt::KeepIdle(1),
    SockOpt::KeepIntvl(1),
    SockOpt::KeepCnt(1),
    SockOpt::RcvLowat(1),
];

/// What this OS's calls have no equivalent for and that would change what
/// a case does (an option, MSG_MORE), by feature name (see
/// `scenario::features`), each with why: what an agent on it announces, so
/// that a case needing one is `unsupported` before it runs. A query with
/// no equivalent (an ioctl, TCP_INFO) changes nothing: it is made as a
/// step that observes nothing, with the reason.
pub(crate) fn unmapped_here() -> std::collections::BTreeMap<String, String> {
    let os = std::env::consts::OS;
    let options = OPTIONAL
        .into_iter()
        .filter(|o| os::int_option(*o).is_none())
        .map(|o| o.c_name());
    let more = os::MSG_MORE.is_none().then_some("MSG_MORE");
    options
        .chain(more)
        .map(|name| (name.to_string(), format!("{os} has no {name}")))
        .collect()
}

/// A call this OS has no equivalent for: not made, and what it would have
/// shown is not observed here.
fn not_on_this_os(what: &str) -> CallResult {
    CallResult {
        unobserved: Some(format!(
            "{what} has no equivalent on {}",
            std::env::consts::OS
        )),
        ..Default::default()
    }
}

/// `connect()` with an `AF_UNSPEC` address: dissolves the association
/// (Linux aborts an established connection with RST).
pub(crate) fn disconnect(s: Fd) -> CallResult {
    unit_result(s.api.connect(s.fd, None))
}

/// Waits until `fd` polls ready for `events`, or the deadline.
pub(crate) fn wait_ready(s: Fd, events: sys::c_short, deadline: Instant) -> CallResult {
    match poll_for(s, events, deadline) {
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

/// What a descriptor is polled for by a wait step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Ready {
    /// Data, EOF or the peer's half-close (`POLLIN|POLLRDHUP`).
    Readable,
    Writable,
}

/// A call that needs only the socket's descriptor (data calls also the
/// streams it writes and reads): the same on every endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "call")]
pub enum FdCall {
    Write {
        payload: Payload,
        nosignal: bool,
        dontwait: bool,
        more: bool,
    },
    Read {
        amount: ReadAmount,
        dontwait: bool,
        peek: bool,
        /// Keep what was read as the result's `text` (bounded).
        #[serde(default)]
        keep: bool,
    },
    GetOption {
        opt: GetOpt,
    },
    Shutdown {
        how: How,
    },
    SetOption {
        opt: SockOpt,
    },
    Ioctl {
        query: IoctlQuery,
    },
    Disconnect,
    Wait {
        ready: Ready,
    },
}

impl FdCall {
    /// The scenario call as a descriptor call, if it is one.
    pub fn of(call: &Call) -> Option<FdCall> {
        Some(match call.clone() {
            Call::Write {
                payload,
                nosignal,
                dontwait,
                more,
            } => FdCall::Write {
                payload,
                nosignal,
                dontwait,
                more,
            },
            Call::Read {
                amount,
                dontwait,
                peek,
                keep,
            } => FdCall::Read {
                amount,
                dontwait,
                peek,
                keep,
            },
            Call::GetOption(opt) => FdCall::GetOption { opt },
            Call::Shutdown(how) => FdCall::Shutdown { how },
            Call::SetOption(opt) => FdCall::SetOption { opt },
            Call::Ioctl(query) => FdCall::Ioctl { query },
            Call::Disconnect => FdCall::Disconnect,
            Call::Wait {
                what: WaitFor::Readable,
                ..
            } => FdCall::Wait {
                ready: Ready::Readable,
            },
            Call::Wait {
                what: WaitFor::Writable,
                ..
            } => FdCall::Wait {
                ready: Ready::Writable,
            },
            Call::Listen { .. }
            | Call::Bind(_)
            | Call::Connect
            | Call::Accept
            | Call::Close
            | Call::Wait {
                what: WaitFor::State(_) | WaitFor::Timer(_) | WaitFor::Queued(_),
                ..
            } => return None,
        })
    }

    /// Whether the call reads the stream its socket receives.
    pub fn reads(&self) -> bool {
        matches!(self, FdCall::Read { .. })
    }

    /// The socket API's features the call needs beyond what every stack
    /// has (see [`crate::scenario::features`]).
    pub fn uses(&self) -> Vec<&'static str> {
        use crate::scenario::features;
        match self {
            FdCall::Write { more, .. } => features::of_write(*more),
            FdCall::Shutdown { how } => features::of_shutdown(*how),
            FdCall::SetOption { opt } => features::of_option(*opt),
            FdCall::Ioctl { query } => features::of_ioctl(*query),
            FdCall::Disconnect => vec![features::DISCONNECT],
            _ => vec![],
        }
    }
}

/// Makes `call` on `s`; `outgoing` is the stream the socket writes,
/// `incoming` the one it reads.
pub(crate) fn on_fd(
    s: Fd,
    call: &FdCall,
    outgoing: &Mutex<StreamLog>,
    incoming: &Mutex<StreamLog>,
    deadline: Instant,
) -> CallResult {
    match call {
        FdCall::Write {
            payload,
            nosignal,
            dontwait,
            more,
        } => {
            let flags = WriteFlags {
                nosignal: *nosignal,
                dontwait: *dontwait,
                more: *more,
            };
            write(s, payload, flags, outgoing, deadline)
        }
        FdCall::Read {
            amount,
            dontwait,
            peek: false,
            keep,
        } => read(s, *amount, *dontwait, *keep, incoming, deadline),
        FdCall::Read {
            amount,
            dontwait,
            peek: true,
            keep,
        } => peek(s, *amount, *dontwait, *keep, incoming, deadline),
        FdCall::GetOption {
            opt: GetOpt::SoError,
        } => so_error(s),
        FdCall::GetOption {
            opt: GetOpt::TcpInfo,
        } => tcp_state(s),
        FdCall::GetOption {
            opt: GetOpt::Linger,
        } => get_linger(s),
        FdCall::Shutdown { how } => shutdown(s, *how),
        FdCall::SetOption { opt } => setsockopt(s, *opt),
        FdCall::Ioctl { query } => ioctl(s, *query),
        FdCall::Disconnect => disconnect(s),
        FdCall::Wait {
            ready: Ready::Readable,
        } => wait_ready(s, sys::POLLIN | os::POLL_PEER_CLOSED, deadline),
        FdCall::Wait {
            ready: Ready::Writable,
        } => wait_ready(s, sys::POLLOUT, deadline),
    }
}

fn unit_result(r: Result<(), Errno>) -> CallResult {
    match r {
        Ok(()) => CallResult::ok(0),
        Err(e) => CallResult::failed(e),
    }
}

/// The address `s` is bound to, once it has a port.
pub fn local_addr(s: Fd) -> Option<SocketAddr> {
    s.api
        .local_addr(s.fd)
        .ok()
        .flatten()
        .filter(|a| a.port() != 0)
}

pub fn bind(s: Fd, addr: SocketAddr) -> CallResult {
    unit_result(s.api.bind(s.fd, &SockAddr::from(addr)))
}

/// `listen()`, binding `addr` first unless a bind step already bound it.
pub fn listen(s: Fd, addr: SocketAddr, backlog: i32) -> CallResult {
    let bound = local_addr(s).is_some();
    let bind = || {
        if bound {
            Ok(())
        } else {
            s.api.bind(s.fd, &SockAddr::from(addr))
        }
    };
    unit_result(bind().and_then(|()| s.api.listen(s.fd, backlog)))
}

/// One `accept()` if a connection is queued (a zero-timeout poll first, so
/// a blocking listener never blocks): the new descriptor and its peer,
/// `None` if the queue is empty.
pub(crate) fn accept_now(s: Fd) -> Result<Option<(RawFd, Option<SocketAddr>)>, Box<CallResult>> {
    let ready = poll_now(
        s.api,
        vec![sys::pollfd {
            fd: s.fd,
            events: sys::POLLIN,
            revents: 0,
        }],
    );
    if ready[0] == 0 {
        return Ok(None);
    }
    match s.api.accept(s.fd) {
        Ok((fd, peer)) => Ok(Some((fd, peer))),
        Err(Errno::EAGAIN) => Ok(None),
        // EMFILE and the like: the queue stays as it is, so trying again
        // would spin.
        Err(e) => Err(Box::new(CallResult::failed(e))),
    }
}

/// `connect()`. A blocking connect is a blocking connect(2): after a
/// failure the kernel leaves the socket as the application's blocking call
/// would (not connected, ready to connect again), which a non-blocking
/// connect does not. It is bounded by the deadline through SO_SNDTIMEO,
/// which Linux applies to connect: set for the call and put back after it;
/// when it runs out the call returns EINPROGRESS and the record says the
/// bound ran out first. On a stack whose connect ignores SO_SNDTIMEO the call
/// is made on a thread of its own ([`threaded_blocking_connect`]). A non-blocking connect
/// reports EINPROGRESS as the application sees it; its outcome, waited for
/// with poll, is its `so_error`. The result's value is the local port the
/// socket got.
pub fn connect(s: Fd<'static>, to: SocketAddr, deadline: Instant) -> CallResult {
    let server = SockAddr::from(to);
    let mut r = if is_nonblocking(s) {
        let r = unit_result(s.api.connect(s.fd, Some(&server)));
        if r.errno.as_deref() == Some("EINPROGRESS") {
            nonblocking_outcome(s, r, deadline)
        } else {
            r
        }
    } else if s.api.connect_obeys_send_timeout() {
        blocking_connect(s, &server, deadline)
    } else {
        threaded_blocking_connect(s, &server, deadline)
    };
    if let Some(addr) = local_addr(s) {
        // The port the stack chose (or the one bound): an observation.
        r.value = Some(addr.port().into());
    }
    r
}

/// A blocking connect(2), bounded by SO_SNDTIMEO (the socket's own value
/// put back after the call).
fn blocking_connect(s: Fd, server: &SockAddr, deadline: Instant) -> CallResult {
    let mut previous = vec![0u8; os::SEND_TIMEOUT_LEN];
    let timeout = |v: &[u8]| s.api.setsockopt(s.fd, sys::SOL_SOCKET, sys::SO_SNDTIMEO, v);
    if let Err(e) = s
        .api
        .getsockopt(s.fd, sys::SOL_SOCKET, sys::SO_SNDTIMEO, &mut previous)
    {
        return CallResult::failed(e);
    }
    // A zero timeout means none: the shortest bound is a millisecond.
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    if let Err(e) = timeout(&os::send_timeout_value(left)) {
        return CallResult::failed(e);
    }
    let outcome = s.api.connect(s.fd, Some(server));
    let restored = timeout(&previous);
    let r = match outcome {
        Ok(()) => CallResult::ok(0),
        // The bound, not the application's, ran out: the handshake goes on
        // in the kernel.
        Err(Errno::EINPROGRESS) => still_connecting(false),
        Err(e) => CallResult::failed(e),
    };
    match restored {
        Ok(()) => r,
        Err(e) => CallResult::harness_error(format!(
            "putting back the socket's SO_SNDTIMEO after connect: {}",
            errno_name(e)
        )),
    }
}

/// A blocking connect on a stack whose connect() ignores SO_SNDTIMEO
/// (lwIP's waits on its netconn until the handshake ends, however long its
/// SYN retries take): the stack's own blocking call, made on a thread of its
/// own and waited for up to the deadline. Within the bound the result is the
/// call's own, so the socket is left as the application's call leaves it.
/// Past the bound the step says so, and the call goes on blocking that
/// thread until the stack ends the handshake (or the process ends).
fn threaded_blocking_connect(s: Fd<'static>, server: &SockAddr, deadline: Instant) -> CallResult {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = server.clone();
    let started = std::thread::Builder::new()
        .name("blocking-connect".into())
        .spawn(move || {
            // The step may have stopped listening: nothing to tell then.
            let _ = tx.send(s.api.connect(s.fd, Some(&server)));
        });
    if let Err(e) = started {
        return CallResult::harness_error(format!("starting a thread for a blocking connect: {e}"));
    }
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(outcome) => unit_result(outcome),
        Err(_) => CallResult {
            note: Some(
                "the handshake had not finished when the step's bound ran out; this stack's blocking connect() ignores SO_SNDTIMEO, so the call goes on, on a thread of its own, until the stack ends the handshake".into(),
            ),
            ..still_connecting(false)
        },
    }
}

/// A connect whose handshake had not ended when the bound ran out.
fn still_connecting(app_nonblocking: bool) -> CallResult {
    CallResult {
        ret: app_nonblocking.then_some(-1),
        errno: app_nonblocking.then(|| "EINPROGRESS".into()),
        timed_out: true,
        note: Some("the handshake had not finished when the step's bound ran out".into()),
        ..Default::default()
    }
}

/// Waits, bounded, for a non-blocking connect that returned EINPROGRESS
/// (`r`), and reads its outcome from SO_ERROR.
fn nonblocking_outcome(s: Fd, r: CallResult, deadline: Instant) -> CallResult {
    let ready = wait_ready(s, sys::POLLOUT, deadline);
    if ready.timed_out {
        return still_connecting(true);
    }
    let err = connect_error(s);
    CallResult {
        so_error: Some(err.clone().unwrap_or_else(|| "0".into())),
        note: Some(match err {
            Some(e) => format!("connect failed later: SO_ERROR {e}"),
            None => "connected".into(),
        }),
        ..r
    }
}

/// Calls of a group go out in bursts of [`BURST`], with a millisecond
/// between bursts: the loopback queues every packet on a per-CPU backlog of
/// `net.core.netdev_max_backlog` (1000 by default, a host-wide setting), and
/// 10,000 back-to-back closes would overflow it when softirq processing
/// falls behind. What the loopback drops anyway is counted
/// (`capture_stats.loopback_dropped`), never hidden.
const BURST: usize = 200;

/// Pauses before the `i`th call of a group, at the end of each burst.
pub(crate) fn pace(i: usize) {
    if i > 0 && i % BURST == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starts a connect on every one of `fds` at once (each made non-blocking
/// for it), then waits for all, bounded together; each result is what that
/// socket's own connect would say given whether it was non-blocking.
pub(crate) fn connect_many(
    api: &dyn SocketApi,
    fds: &[RawFd],
    to: SocketAddr,
    deadline: Instant,
) -> Vec<CallResult> {
    let server = SockAddr::from(to);
    let mut started: Vec<Option<CallResult>> = Vec::with_capacity(fds.len());
    let mut waiting = Vec::new();
    for (i, &fd) in fds.iter().enumerate() {
        pace(i);
        let s = Fd { api, fd };
        let app_nonblocking = is_nonblocking(s);
        if let Err(e) = set_nonblocking(s, true) {
            started.push(Some(CallResult::failed(e)));
            continue;
        }
        let r = unit_result(api.connect(fd, Some(&server)));
        if r.errno.as_deref() == Some("EINPROGRESS") {
            waiting.push((i, fd, app_nonblocking));
            started.push(None);
        } else {
            let _ = set_nonblocking(s, app_nonblocking);
            started.push(Some(r));
        }
    }
    // Wait for the handshakes together.
    let mut pause = Duration::from_micros(50);
    let mut left = waiting;
    while !left.is_empty() {
        let polled: Vec<sys::pollfd> = left
            .iter()
            .map(|&(_, fd, _)| sys::pollfd {
                fd,
                events: sys::POLLOUT,
                revents: 0,
            })
            .collect();
        let ready = poll_now(api, polled);
        let mut still = Vec::new();
        for ((i, fd, nb), revents) in left.into_iter().zip(ready) {
            if revents == 0 {
                still.push((i, fd, nb));
                continue;
            }
            let s = Fd { api, fd };
            let err = connect_error(s);
            let _ = set_nonblocking(s, nb);
            started[i] = Some(connected(nb, err));
        }
        left = still;
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    for (i, fd, nb) in left {
        let _ = set_nonblocking(Fd { api, fd }, nb);
        started[i] = Some(still_connecting(nb));
    }
    started.into_iter().map(Option::unwrap_or_default).collect()
}

/// A connect that was waited for: what the application's call would say.
pub(crate) fn connected(app_nonblocking: bool, err: Option<ErrnoName>) -> CallResult {
    match (app_nonblocking, err) {
        (true, err) => CallResult {
            ret: Some(-1),
            errno: Some("EINPROGRESS".into()),
            so_error: Some(err.unwrap_or_else(|| "0".into())),
            ..Default::default()
        },
        (false, None) => CallResult::ok(0),
        (false, Some(e)) => CallResult {
            ret: Some(-1),
            errno: Some(e),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a stack whose connect ignores SO_SNDTIMEO (this OS's calls, told
    /// so), a blocking connect is the stack's own call on a thread of its
    /// own: its result within the bound (0, or -1 with the refusal's
    /// errno), and past the bound a step that ran out of time while the call
    /// goes on.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_blocking_connect_runs_on_a_thread_where_the_stack_ignores_its_send_timeout() {
        use super::super::sockets::{CSockets, OS};
        let api: &'static CSockets = Box::leak(Box::new(CSockets {
            connect_obeys_send_timeout: false,
            ..OS
        }));
        let socket = || Fd {
            api,
            fd: api.socket(crate::scenario::Family::Ipv4).unwrap(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let s = socket();
        let r = connect(s, to, Instant::now() + Duration::from_secs(5));
        assert_eq!((r.ret, r.errno.as_deref()), (Some(0), None), "{r:?}");
        api.close(s.fd).unwrap();
        // Nothing listens on the port now: the RST refuses the next one.
        drop(listener);
        let s = socket();
        let r = connect(s, to, Instant::now() + Duration::from_secs(5));
        assert_eq!(
            (r.ret, r.errno.as_deref(), r.timed_out),
            (Some(-1), Some("ECONNREFUSED"), false),
            "{r:?}"
        );
        api.close(s.fd).unwrap();
        // A listener whose queue is full drops the SYN: the step runs out
        // of its bound, and the call goes on.
        let full =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        full.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))
            .unwrap();
        full.listen(0).unwrap();
        let to = full.local_addr().unwrap().as_socket().unwrap();
        let _queued = std::net::TcpStream::connect(to).unwrap();
        let s = socket();
        let r = connect(s, to, Instant::now() + Duration::from_millis(100));
        assert!(r.timed_out && r.ret.is_none(), "{r:?}");
        assert!(
            r.note
                .as_deref()
                .is_some_and(|n| n.contains("thread of its own")),
            "{r:?}"
        );
    }

    /// Linux has every option and flag a step can set: its agents announce
    /// nothing unmapped. What another OS may announce is a feature a call
    /// can need, by the same name (else no case could be found to need it).
    #[test]
    fn what_an_os_lacks_is_named_as_calls_need_it() {
        let here = unmapped_here();
        if cfg!(target_os = "linux") {
            assert!(here.is_empty(), "{here:?}");
        }
        for o in OPTIONAL {
            assert_eq!(crate::scenario::features::of_option(o), [o.c_name()]);
        }
        assert_eq!(crate::scenario::features::of_write(true), ["MSG_MORE"]);
    }
}
