//! The agent's side of the protocol: reads requests, makes the calls on
//! its own sockets, writes the answers.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    Accepted, Answer, DataAnswer, Hello, HelloLine, MAX_LINE, Op, PROTOCOL, Request, Response,
    StreamTotals,
};
use crate::driver::calls::{self, CallResult, StreamLog};
use crate::driver::sockets::{Fd, OS, SocketApi};
use crate::observe::{AgentStates, RawFd, SockEntry};
use crate::scenario::Family;
use crate::stack::Stack;
use crate::tcp::Side;

/// Why a session ended other than by `bye` or the end of its input.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading requests: {0}")]
    Read(std::io::Error),
    #[error("writing answers: {0}")]
    Write(std::io::Error),
    #[error("a request line is longer than {MAX_LINE} bytes; the session ends")]
    TooLong,
    #[error("the input ended in the middle of a line ({0} bytes without a newline)")]
    Truncated(usize),
    /// The agent's stack did not start (a userspace stack on a link).
    #[error("starting {stack}: {why}")]
    Start { stack: &'static str, why: String },
}

/// The stack an agent serves on: its socket API, and what it tells of
/// itself beyond its sockets' calls.
pub trait AgentStack: Send + Sync {
    fn api(&self) -> &'static dyn SocketApi;
    fn hello(&self) -> Hello;
    /// The TCP sockets of `family` with `port` at either end; `held` are
    /// the session's descriptors.
    fn states(&self, family: Family, port: u16, held: &[RawFd]) -> Result<Vec<SockEntry>, String>;
    /// Sets (if `value`) and reads a sysctl; null if the stack has none.
    fn sysctl(&self, name: &str, value: Option<&str>) -> Result<Answer, String>;
    /// The stack's TCP counters, by Linux's names.
    fn counters(&self) -> Result<Answer, String>;
}

/// The OS's own stack; `own_stack`: whether it was made for the agent
/// alone (see [`Hello::own_stack`]).
pub(crate) struct OsStack {
    own_stack: bool,
    states: Mutex<AgentStates>,
}

impl OsStack {
    pub fn new(own_stack: bool) -> OsStack {
        OsStack {
            own_stack,
            states: Mutex::new(AgentStates::new(Stack::detect().states)),
        }
    }
}

impl AgentStack for OsStack {
    fn api(&self) -> &'static dyn SocketApi {
        &OS
    }

    fn hello(&self) -> Hello {
        hello(self.own_stack)
    }

    fn states(&self, family: Family, port: u16, held: &[RawFd]) -> Result<Vec<SockEntry>, String> {
        let mut states = self.states.lock().expect("agent states");
        states
            .snapshot(family, port, held)
            .map_err(|e| e.to_string())
    }

    /// Sets (if `value`) and reads a sysctl of this agent's stack.
    #[cfg(target_os = "linux")]
    fn sysctl(&self, name: &str, value: Option<&str>) -> Result<Answer, String> {
        use crate::sandbox::{self, Namespace, SandboxError};
        if !name.starts_with("net.") {
            return Err(format!(
                "only the network stack's sysctls (net.*) are served, not {name}"
            ));
        }
        if let Some(v) = value {
            if !self.own_stack {
                return Err(format!(
                    "not setting {name}: this agent's stack is not its own (it was started without --own-stack), and a sysctl would change the machine's own setting"
                ));
            }
            match sandbox::write_sysctl(&Namespace::declared_own(), name, v) {
                Ok(()) => {}
                Err(SandboxError::NoSuchSysctl { .. }) => return Ok(Answer::Sysctl(None)),
                // Refused with why: read-only, or another failure.
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(Answer::Sysctl(sandbox::read_sysctl(name).ok()))
    }

    #[cfg(not(target_os = "linux"))]
    fn sysctl(&self, name: &str, _value: Option<&str>) -> Result<Answer, String> {
        Err(format!(
            "sysctls are not served on {}: {name} is Linux's name",
            std::env::consts::OS
        ))
    }

    #[cfg(target_os = "linux")]
    fn counters(&self) -> Result<Answer, String> {
        crate::sandbox::tcp_counters(&crate::sandbox::Namespace::declared_own())
            .map(Answer::Counters)
            .map_err(|e| e.to_string())
    }

    #[cfg(not(target_os = "linux"))]
    fn counters(&self) -> Result<Answer, String> {
        Err(format!(
            "TCP counters are not read on {} yet",
            std::env::consts::OS
        ))
    }
}

/// What this agent says about itself; `own_stack`: whether its network
/// stack was made for it alone (see [`Hello::own_stack`]).
pub fn hello(own_stack: bool) -> Hello {
    let stack = Stack::detect();
    Hello {
        protocol: PROTOCOL,
        agent: format!("teardown {}", env!("CARGO_PKG_VERSION")),
        os: std::env::consts::OS.to_string(),
        stack: stack.name.to_string(),
        stack_version: stack.version.clone(),
        states: stack.states,
        own_stack,
        unmapped: crate::driver::calls::unmapped_here(),
    }
}

/// A session's streams, by connection number and writer.
type Streams = HashMap<(u32, Side), Arc<Mutex<StreamLog>>>;

/// One session's sockets and streams.
struct Session {
    stack: Box<dyn AgentStack>,
    /// The descriptors the session holds.
    sockets: Mutex<BTreeSet<RawFd>>,
    streams: Mutex<Streams>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Session {
    fn answer(&self, id: Option<u64>, answer: Answer) -> Result<(), ServeError> {
        write_line(
            &mut **self.out.lock().expect("agent output"),
            &Response { id, answer },
        )
    }

    // A handle into an i32 on Unix (fallible), an i64 on Windows (not).
    #[allow(clippy::unnecessary_fallible_conversions)]
    fn fd(&self, handle: u32) -> Result<Fd<'static>, String> {
        let api = self.stack.api();
        RawFd::try_from(handle)
            .ok()
            .filter(|fd| self.sockets.lock().expect("agent sockets").contains(fd))
            .map(|fd| Fd { api, fd })
            .ok_or_else(|| {
                format!("no open socket has handle {handle} (closed, or never made by this agent)")
            })
    }

    /// Why a request that names handles cannot be made, if one is not open.
    fn unknown_handle(&self, op: &Op) -> Option<String> {
        op.handles().iter().find_map(|h| self.fd(*h).err())
    }

    /// Closes `handle`'s socket; the handle is gone whatever close returns.
    fn close(&self, handle: u32) -> Result<CallResult, String> {
        let s = self.fd(handle)?;
        self.sockets.lock().expect("agent sockets").remove(&s.fd);
        Ok(calls::close(s))
    }

    fn stream(&self, conn: u32, writer: Side) -> Arc<Mutex<StreamLog>> {
        Arc::clone(
            self.streams
                .lock()
                .expect("agent streams")
                .entry((conn, writer))
                .or_insert_with(|| Arc::new(Mutex::new(StreamLog::written_by(writer)))),
        )
    }

    fn keep(&self, fd: RawFd) -> u32 {
        self.sockets.lock().expect("agent sockets").insert(fd);
        u32::try_from(fd).expect("descriptors are not negative")
    }

    /// Answers a request that does not block.
    fn now(&self, op: &Op) -> Result<Answer, String> {
        Ok(match op {
            Op::Socket { family } => match self.stack.api().socket(*family) {
                Ok(fd) => Answer::Handle(self.keep(fd)),
                Err(e) => Answer::Error(format!("socket(): {}", calls::errno_name(e))),
            },
            Op::Bind { handle, addr } => Answer::Result(calls::bind(self.fd(*handle)?, *addr)),
            Op::Listen {
                handle,
                addr,
                backlog,
            } => Answer::Result(calls::listen(self.fd(*handle)?, *addr, *backlog)),
            Op::Accept { handle } => match calls::accept_now(self.fd(*handle)?) {
                Ok(None) => Answer::Accepted(None),
                Ok(Some((fd, peer))) => Answer::Accepted(Some(Accepted {
                    handle: self.keep(fd),
                    peer,
                })),
                Err(r) => Answer::Result(*r),
            },
            Op::Nonblocking { handle } => Answer::Flag(calls::is_nonblocking(self.fd(*handle)?)),
            Op::LocalAddr { handle } => Answer::Addr(calls::local_addr(self.fd(*handle)?)),
            Op::States { family, port } => {
                let held: Vec<RawFd> = self
                    .sockets
                    .lock()
                    .expect("agent sockets")
                    .iter()
                    .copied()
                    .collect();
                match self.stack.states(*family, *port, &held) {
                    Ok(entries) => Answer::States(entries),
                    Err(e) => Answer::Error(e),
                }
            }
            Op::Sysctl { name, value } => self.stack.sysctl(name, value.as_deref())?,
            Op::Counters => self.stack.counters()?,
            Op::Connect { .. }
            | Op::ConnectMany { .. }
            | Op::Call { .. }
            | Op::Close { .. }
            | Op::CloseMany { .. } => {
                unreachable!("blocking requests run on their own thread")
            }
            Op::Bye => Answer::Bye(true),
        })
    }

    /// Answers a request that may block, on its own thread, with each
    /// call's time (see [`CallResult::took_us`]).
    fn blocking(&self, op: &Op) -> Result<Answer, String> {
        let start = Instant::now();
        let mut answer = self.blocking_untimed(op, start)?;
        let timed = |r: &mut CallResult| {
            r.took_us.get_or_insert_with(|| micros(start.elapsed()));
        };
        match &mut answer {
            Answer::Result(r) => timed(r),
            Answer::Data(d) => timed(&mut d.result),
            Answer::Results(rs) => rs.iter_mut().for_each(timed),
            _ => {}
        }
        Ok(answer)
    }

    fn blocking_untimed(&self, op: &Op, start: Instant) -> Result<Answer, String> {
        let deadline = start + Duration::from_millis(op.bound_ms());
        Ok(match op {
            Op::Connect { handle, to, .. } => {
                Answer::Result(calls::connect(self.fd(*handle)?, *to, deadline))
            }
            Op::ConnectMany { handles, to, .. } => {
                let fds = handles
                    .iter()
                    .map(|h| self.fd(*h).map(|s| s.fd))
                    .collect::<Result<Vec<_>, _>>()?;
                Answer::Results(calls::connect_many(self.stack.api(), &fds, *to, deadline))
            }
            Op::Call {
                handle,
                call,
                stream,
                ..
            } => {
                let fd = self.fd(*handle)?;
                let outgoing = self.stream(stream.conn, stream.side);
                let incoming = self.stream(stream.conn, stream.side.peer());
                if call.reads() {
                    incoming
                        .lock()
                        .expect("stream log")
                        .written_elsewhere(stream.texts.clone());
                }
                let result = calls::on_fd(fd, call, &outgoing, &incoming, deadline);
                let written = outgoing.lock().expect("stream log").written;
                let (read, corrupted) = {
                    let l = incoming.lock().expect("stream log");
                    (l.read, l.corrupted)
                };
                Answer::Data(DataAnswer {
                    result,
                    stream: StreamTotals {
                        written,
                        read,
                        corrupted,
                    },
                })
            }
            Op::Close { handle } => Answer::Result(self.close(*handle)?),
            Op::CloseMany { handles } => Answer::Results(
                handles
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        calls::pace(i);
                        let mut r = self.close(*h).unwrap_or_else(CallResult::harness_error);
                        r.took_us = Some(micros(start.elapsed()));
                        r
                    })
                    .collect(),
            ),
            other => self.now(other)?,
        })
    }
}

impl Drop for Session {
    /// The session is over (`bye`, the end of its input, or a broken
    /// connection): every socket it still holds is aborted (SO_LINGER {1,
    /// 0}: a RST, no FIN left retransmitting). An agent on a machine of its
    /// own serves case after case, and a socket left to close gracefully
    /// could still be sending into the next case's capture (seen: 20 FINs
    /// of one case's clients in the next's).
    fn drop(&mut self) {
        let sockets = std::mem::take(self.sockets.get_mut().unwrap_or_else(|e| e.into_inner()));
        let api = self.stack.api();
        for fd in sockets {
            let s = Fd { api, fd };
            let _ = calls::set_linger(s, Some(0));
            calls::close(s);
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Serves one session: the hello, then requests from `input` until `bye`
/// or its end. Every socket still open is closed when it returns.
/// `own_stack`: the agent's network stack was made for it alone.
pub fn serve(
    input: impl BufRead,
    output: Box<dyn Write + Send>,
    stack: Box<dyn AgentStack>,
) -> Result<(), ServeError> {
    // A write to a reset connection raises SIGPIPE for the calling thread
    // (and its children): kept pending, so the call's record can say so.
    let _ = calls::block_sigpipe();
    let me = stack.hello();
    let session = Arc::new(Session {
        stack,
        sockets: Mutex::new(BTreeSet::new()),
        streams: Mutex::new(HashMap::new()),
        out: Mutex::new(output),
    });
    write_line(
        &mut **session.out.lock().expect("agent output"),
        &HelloLine { hello: me },
    )?;
    let mut lines = Lines::new(input);
    loop {
        let request = match lines.next_request()? {
            None => return Ok(()),
            Some(Ok(r)) => r,
            Some(Err((id, why))) => {
                session.answer(id, Answer::Error(why))?;
                continue;
            }
        };
        match request.op {
            Op::Bye => {
                session.answer(Some(request.id), Answer::Bye(true))?;
                return Ok(());
            }
            ref op if op.blocks() => {
                // A handle that is not open is refused at once, in order.
                if let Some(why) = session.unknown_handle(&request.op) {
                    session.answer(Some(request.id), Answer::Error(why))?;
                    continue;
                }
                let s = Arc::clone(&session);
                std::thread::Builder::new()
                    .name(format!("agent-{}", request.id))
                    .spawn(move || {
                        let answer = s.blocking(&request.op).unwrap_or_else(Answer::Error);
                        // A closed output ends the session in the main loop.
                        let _ = s.answer(Some(request.id), answer);
                    })
                    .map_err(|e| ServeError::Write(std::io::Error::other(e)))?;
            }
            ref op => {
                let answer = session.now(op).unwrap_or_else(Answer::Error);
                session.answer(Some(request.id), answer)?;
            }
        }
    }
}

/// A request, or the id of a line that is not one (if it could be read)
/// and what is wrong with it.
pub(crate) type Parsed = Result<Request, (Option<u64>, String)>;

/// The request lines of a session's input.
pub struct Lines<R> {
    input: std::io::Take<R>,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    pub fn new(input: R) -> Lines<R> {
        Lines {
            input: input.take(0),
            buf: Vec::new(),
        }
    }

    /// The next line that is not blank, parsed; none at the end of input.
    /// A line longer than [`MAX_LINE`], or cut off at the end, ends the
    /// session.
    pub(crate) fn next_request(&mut self) -> Result<Option<Parsed>, ServeError> {
        loop {
            self.buf.clear();
            // At most one byte past the limit, to tell a long line from one
            // that just fits.
            self.input.set_limit(MAX_LINE as u64 + 1);
            let n = self
                .input
                .read_until(b'\n', &mut self.buf)
                .map_err(ServeError::Read)?;
            if n == 0 {
                return Ok(None);
            }
            if self.buf.last() != Some(&b'\n') {
                return Err(if n > MAX_LINE {
                    ServeError::TooLong
                } else {
                    ServeError::Truncated(n)
                });
            }
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(parse(&self.buf)));
            }
        }
    }
}

/// Writes one line of the protocol.
pub(crate) fn write_line(
    out: &mut dyn Write,
    line: &impl serde::Serialize,
) -> Result<(), ServeError> {
    let mut bytes = serde_json::to_vec(line).expect("protocol lines serialise");
    bytes.push(b'\n');
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(ServeError::Write)
}

/// A request from its line, or the id (if readable) and what is wrong.
fn parse(line: &[u8]) -> Result<Request, (Option<u64>, String)> {
    /// What every version's requests have.
    #[derive(serde::Deserialize)]
    struct Envelope {
        v: Option<u32>,
        id: Option<u64>,
    }
    let env: Envelope = serde_json::from_slice(line).map_err(|e| {
        (
            None,
            format!("not a request (a JSON object with v, id, op): {e}"),
        )
    })?;
    let id = env.id;
    match env.v {
        Some(PROTOCOL) => {}
        Some(v) => {
            return Err((
                id,
                format!("protocol version {v} is not spoken here: this agent speaks {PROTOCOL}"),
            ));
        }
        None => return Err((id, "the request has no protocol version (`v`)".into())),
    }
    if id.is_none() {
        return Err((None, "the request has no id".into()));
    }
    serde_json::from_slice(line).map_err(|e| (id, format!("a bad request: {e}")))
}

/// Serves sessions from TCP control connections at `addr`, one thread
/// each, until the process is stopped. Each session has its own sockets.
pub fn listen(
    addr: std::net::SocketAddr,
    own_stack: bool,
    ready: impl FnOnce(std::net::SocketAddr),
) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    ready(listener.local_addr()?);
    for conn in listener.incoming() {
        let conn = conn?;
        let reader = std::io::BufReader::new(conn.try_clone()?);
        std::thread::spawn(move || {
            if let Err(e) = serve(reader, Box::new(conn), Box::new(OsStack::new(own_stack))) {
                eprintln!("teardown agent: a session ended: {e}");
            }
        });
    }
    Ok(())
}
