//! The harness's side of the protocol: a connection to one agent, shared
//! by the driver's threads; each request waits for its own answer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Answer, Hello, HelloLine, MAX_LINE, Op, PROTOCOL, Request, Response};

/// An agent process, waited for as `std::process::Child` is. On Linux it
/// is started without a copy of the harness's descriptors (see
/// `sandbox::spawn_clean`); elsewhere the harness starts none.
#[cfg(target_os = "linux")]
type Process = crate::sandbox::ChildProcess;
#[cfg(not(target_os = "linux"))]
type Process = std::process::Child;

/// How long an agent may take to answer beyond the request's own bound.
pub(crate) const MARGIN: Duration = Duration::from_secs(5);

/// What `states` may take on top, per socket the agent has made in the
/// session: a stack's table holds them all, closed ones too, and some read
/// it slowly (Wine's GetTcpTable2 took more than 5 s for 1,000 sockets).
pub(crate) const STATES_PER_SOCKET: Duration = Duration::from_millis(10);

/// How much of an agent's stderr is kept, for errors: the end of it.
#[cfg(target_os = "linux")]
const STDERR_TAIL: usize = 4096;

/// The `teardown` executable that runs as an agent: `$TEARDOWN_EXE`, this
/// process if it is `teardown`, or else (tests and benchmarks run from
/// `target/*/deps/`) the `teardown` beside or above it.
pub fn agent_program() -> Result<std::path::PathBuf, String> {
    if let Some(p) = std::env::var_os("TEARDOWN_EXE") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    if exe.file_stem().is_some_and(|n| n == "teardown") {
        return Ok(exe);
    }
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join("teardown"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no teardown executable to run as the agent beside {} (build it, or set TEARDOWN_EXE)",
                exe.display()
            )
        })
}

/// Why a request to an agent got no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    #[error("cannot start {what}: {why}")]
    Start { what: String, why: String },
    #[error("{what} ended{status}{tail}")]
    Died {
        what: String,
        status: String,
        tail: String,
    },
    #[error("{what} did not answer `{op}` within {after:?}{tail}")]
    Timeout {
        what: String,
        op: String,
        after: Duration,
        tail: String,
    },
    #[error("{what} broke the protocol: {why}")]
    Protocol { what: String, why: String },
    #[error("{what} refused `{op}`: {why}")]
    Refused {
        what: String,
        op: String,
        why: String,
    },
}

/// Requests waiting for their answer, and why the agent can no longer
/// answer, once it cannot.
#[derive(Default)]
struct Waiting {
    by_id: HashMap<u64, Sender<Answer>>,
    gone: Option<String>,
}

/// A connection to one agent.
pub struct AgentClient {
    what: String,
    hello: Hello,
    writer: Mutex<Box<dyn Write + Send>>,
    waiting: Arc<Mutex<Waiting>>,
    next: AtomicU64,
    /// Sockets the agent has made or accepted in this session.
    sockets: AtomicU64,
    child: Mutex<Option<Process>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// A directory the agent's process used (a sandbox's bundle and
    /// state), removed once the process has ended.
    scratch: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("what", &self.what)
            .field("hello", &self.hello)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Starts `cmd` (an agent speaking on its stdin and stdout) and waits,
    /// up to `bound`, for its hello. `what` names it in errors ("the client
    /// host's agent").
    #[cfg(target_os = "linux")]
    pub fn spawn(
        cmd: crate::sandbox::ProgramCommand,
        what: impl Into<String>,
        bound: Duration,
    ) -> Result<AgentClient, AgentError> {
        let what = what.into();
        let started = cmd.spawn().map_err(|e| AgentError::Start {
            what: what.clone(),
            why: format!("{:?}: {e}", cmd.program()),
        })?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        keep_tail(started.stderr, Arc::clone(&tail));
        AgentClient::start(
            what,
            Box::new(BufReader::new(started.stdout)),
            Box::new(started.stdin),
            Some(started.child),
            tail,
            bound,
        )
    }

    /// Connects to an agent listening at `addr` (`teardown agent
    /// --listen`), waiting up to `bound` for the connection and the hello.
    pub fn connect(
        addr: SocketAddr,
        what: impl Into<String>,
        bound: Duration,
    ) -> Result<AgentClient, AgentError> {
        let what = what.into();
        let conn =
            std::net::TcpStream::connect_timeout(&addr, bound).map_err(|e| AgentError::Start {
                what: what.clone(),
                why: format!("connecting to {addr}: {e}"),
            })?;
        let _ = conn.set_nodelay(true);
        let reader = conn.try_clone().map_err(|e| AgentError::Start {
            what: what.clone(),
            why: e.to_string(),
        })?;
        AgentClient::start(
            what,
            Box::new(BufReader::new(reader)),
            Box::new(conn),
            None,
            Arc::new(Mutex::new(Vec::new())),
            bound,
        )
    }

    fn start(
        what: String,
        reader: Box<dyn BufRead + Send>,
        writer: Box<dyn Write + Send>,
        child: Option<Process>,
        stderr: Arc<Mutex<Vec<u8>>>,
        bound: Duration,
    ) -> Result<AgentClient, AgentError> {
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let (hello_tx, hello_rx) = mpsc::channel();
        {
            let waiting = Arc::clone(&waiting);
            let name = what.clone();
            std::thread::Builder::new()
                .name("agent-answers".into())
                .spawn(move || read_answers(reader, &waiting, hello_tx, &name))
                .map_err(|e| AgentError::Start {
                    what: what.clone(),
                    why: format!("cannot start a thread: {e}"),
                })?;
        }
        let mut client = AgentClient {
            what,
            hello: Hello {
                protocol: 0,
                agent: String::new(),
                os: String::new(),
                stack: String::new(),
                stack_version: None,
                states: crate::observe::StateSource::TcpInfo,
                own_stack: false,
                unmapped: Default::default(),
            },
            writer: Mutex::new(writer),
            waiting,
            next: AtomicU64::new(1),
            sockets: AtomicU64::new(0),
            child: Mutex::new(child),
            stderr,
            scratch: None,
        };
        match hello_rx.recv_timeout(bound) {
            Ok(Ok(h)) if h.protocol == PROTOCOL => client.hello = h,
            Ok(Ok(h)) => {
                return Err(client.protocol(format!(
                    "it speaks protocol version {}, this harness {PROTOCOL}",
                    h.protocol
                )));
            }
            Ok(Err(why)) => return Err(client.protocol(why)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(AgentError::Timeout {
                    what: client.what.clone(),
                    op: "hello".into(),
                    after: bound,
                    tail: client.tail(),
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(client.died()),
        }
        Ok(client)
    }

    /// Removes `dir` once the agent's process has ended (see [`stop`]).
    ///
    /// [`stop`]: AgentClient::stop
    pub fn with_scratch(mut self, dir: std::path::PathBuf) -> AgentClient {
        self.scratch = Some(dir);
        self
    }

    /// What the agent said about itself.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// What the agent is called in errors.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Sends `op` and waits for its answer, up to the op's bound and
    /// [`MARGIN`]. An `error` answer is [`AgentError::Refused`].
    pub fn ask(&self, op: Op) -> Result<Answer, AgentError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut after = Duration::from_millis(op.bound_ms()) + MARGIN;
        if matches!(op, Op::States { .. }) {
            let sockets = self.sockets.load(Ordering::Relaxed);
            after += STATES_PER_SOCKET * u32::try_from(sockets).unwrap_or(u32::MAX);
        }
        let name = op_name(&op);
        let (tx, rx) = mpsc::channel();
        {
            let mut w = self.waiting.lock().expect("agent waiting");
            if w.gone.is_some() {
                drop(w);
                return Err(self.died());
            }
            w.by_id.insert(id, tx);
        }
        let mut line = serde_json::to_vec(&Request {
            v: PROTOCOL,
            id,
            op,
        })
        .expect("requests serialise");
        line.push(b'\n');
        let sent = {
            let mut w = self.writer.lock().expect("agent writer");
            w.write_all(&line).and_then(|()| w.flush())
        };
        if sent.is_err() {
            self.waiting
                .lock()
                .expect("agent waiting")
                .by_id
                .remove(&id);
            return Err(self.died());
        }
        match rx.recv_timeout(after) {
            Ok(Answer::Error(why)) => Err(AgentError::Refused {
                what: self.what.clone(),
                op: name,
                why,
            }),
            Ok(a) => {
                if matches!(a, Answer::Handle(_) | Answer::Accepted(Some(_))) {
                    self.sockets.fetch_add(1, Ordering::Relaxed);
                }
                Ok(a)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.waiting
                    .lock()
                    .expect("agent waiting")
                    .by_id
                    .remove(&id);
                Err(AgentError::Timeout {
                    what: self.what.clone(),
                    op: name,
                    after,
                    tail: self.tail(),
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.died()),
        }
    }

    /// Ends the session: `bye` (its sockets close), then the process is
    /// stopped if it has not ended within a second.
    pub fn stop(&self) {
        let gone = self.waiting.lock().expect("agent waiting").gone.is_some();
        if !gone {
            let line = format!(
                "{}\n",
                serde_json::to_string(&Request {
                    v: PROTOCOL,
                    id: 0,
                    op: Op::Bye
                })
                .expect("requests serialise")
            );
            let mut w = self.writer.lock().expect("agent writer");
            let _ = w.write_all(line.as_bytes()).and_then(|()| w.flush());
        }
        if let Some(mut child) = self.child.lock().expect("agent child").take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            let ended = loop {
                match child.try_wait() {
                    Ok(Some(_)) => break true,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    _ => break false,
                }
            };
            if !ended {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn protocol(&self, why: String) -> AgentError {
        AgentError::Protocol {
            what: self.what.clone(),
            why,
        }
    }

    /// The agent is gone: how it ended, and the end of what it said.
    fn died(&self) -> AgentError {
        let gone = self.waiting.lock().expect("agent waiting").gone.clone();
        let mut status = String::new();
        if let Some(child) = self.child.lock().expect("agent child").as_mut() {
            // Its output ends a moment before the process does.
            for _ in 0..50 {
                if let Ok(Some(s)) = child.try_wait() {
                    status = format!(" ({s})");
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if status.is_empty() {
            if let Some(g) = gone {
                status = format!(" ({g})");
            }
        }
        AgentError::Died {
            what: self.what.clone(),
            status,
            tail: self.tail(),
        }
    }

    /// `; its stderr ended with: ...`, or nothing if it said nothing.
    fn tail(&self) -> String {
        // Let the stderr reader catch up with a process that just ended.
        std::thread::sleep(Duration::from_millis(5));
        let t = self.stderr.lock().expect("agent stderr");
        let text = String::from_utf8_lossy(&t);
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!("; its stderr ended with: {text}")
        }
    }
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The op's name as the protocol spells it.
fn op_name(op: &Op) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Keeps the last [`STDERR_TAIL`] bytes `from` writes.
#[cfg(target_os = "linux")]
fn keep_tail(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    let _ = std::thread::Builder::new()
        .name("agent-stderr".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = into.lock().expect("agent stderr");
                t.extend_from_slice(&buf[..n]);
                let excess = t.len().saturating_sub(STDERR_TAIL);
                t.drain(..excess);
            }
        });
}

/// Reads the hello, then routes each answer to the request waiting for it.
/// When the agent's output ends or breaks the protocol, every waiting
/// request learns it at once.
fn read_answers(
    mut reader: Box<dyn BufRead + Send>,
    waiting: &Mutex<Waiting>,
    hello: Sender<Result<Hello, String>>,
    what: &str,
) {
    let mut line = Vec::new();
    let mut first = true;
    let gone = loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => break "its output ended".to_string(),
            Err(e) => break format!("reading its output: {e}"),
            Ok(_) if line.last() != Some(&b'\n') => {
                break format!("a line of {} bytes without an end", line.len());
            }
            Ok(_) => {}
        }
        if first {
            first = false;
            let parsed = serde_json::from_slice::<HelloLine>(&line)
                .map(|h| h.hello)
                .map_err(|e| {
                    format!(
                        "its first line is not a hello ({e}): {:?}",
                        String::from_utf8_lossy(&line[..line.len().min(200)])
                    )
                });
            let ok = parsed.is_ok();
            let _ = hello.send(parsed);
            if ok {
                continue;
            }
            break "no hello".into();
        }
        match serde_json::from_slice::<Response>(&line) {
            Ok(Response {
                id: Some(id),
                answer,
            }) => {
                if let Some(tx) = waiting.lock().expect("agent waiting").by_id.remove(&id) {
                    let _ = tx.send(answer);
                }
            }
            Ok(Response { id: None, answer }) => {
                eprintln!("teardown: {what} answered a request it could not read: {answer:?}");
            }
            Err(e) => break format!("an answer that is not one ({e})"),
        }
    };
    let mut w = waiting.lock().expect("agent waiting");
    w.gone = Some(gone);
    // Dropping the senders wakes every waiting request.
    w.by_id.clear();
}
