//! The endpoint seam: every socket call of an actor goes to the endpoint of
//! the host it lives on. The step interpreter is the same for both kinds:
//!
//! - **in-process**: the socket is made on the host (in its namespace) by
//!   this process, and the calls are made on its descriptor;
//! - **agent**: the socket lives in an agent process on the host's stack
//!   (`teardown agent`), and each call is a request to it (see [`agent`]).
//!
//! [`agent`]: super::agent

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

use super::sockets::{Fd, OS};

use super::agent::client::{AgentClient, AgentError};
use super::agent::{Answer, Op, StreamRef};
use super::calls::{self, CallResult, FdCall, StreamLog};
use crate::observe::SockEntry;
use crate::sandbox::{self, Hosts, Namespace, SandboxError};
use crate::scenario::{Family, Payload};
use crate::tcp::{PerSide, Side};

/// Where one host's sockets live.
#[derive(Clone, Debug, Default)]
pub enum Endpoint {
    /// In this process.
    #[default]
    InProcess,
    /// In an agent on the host's stack.
    Agent(Arc<AgentClient>),
}

/// Why a sysctl could not be set on a host's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysctlError {
    /// The stack has no such sysctl.
    Absent,
    /// The host will not set it (an agent on a stack not its own), and why.
    Refused(String),
    /// Setting it failed.
    Failed(String),
}

/// One actor's socket, on its host's endpoint. Dropping an in-process
/// socket closes it; an agent's sockets close when its session ends.
#[derive(Debug)]
pub enum Sock {
    Local(Socket),
    Agent {
        agent: Arc<AgentClient>,
        handle: u32,
    },
}

/// What a call on a socket needs: cheap to hand to a background thread.
/// The socket stays owned by its [`Sock`].
#[derive(Clone, Debug)]
pub enum Handle {
    Local(RawFd),
    Agent {
        agent: Arc<AgentClient>,
        handle: u32,
    },
}

/// A request that got no usable answer, as a step's result: the harness's
/// failure, not an observation.
fn failed(e: &AgentError) -> CallResult {
    CallResult::harness_error(e.to_string())
}

/// Milliseconds left until `deadline`.
fn bound_ms(deadline: Instant) -> u64 {
    u64::try_from(
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// An answer of a kind the request does not have.
fn unexpected(agent: &AgentClient, op: &str, a: &Answer) -> CallResult {
    CallResult::harness_error(format!("{} answered `{op}` with {a:?}", agent.what()))
}

impl Endpoint {
    /// A new TCP socket on `side`'s host. Its failure (EMFILE, ENOBUFS, a
    /// dead agent) is the harness's, not an observation.
    pub fn socket(&self, hosts: &Hosts, side: Side, family: Family) -> Result<Sock, String> {
        match self {
            Endpoint::InProcess => {
                let domain = match family {
                    Family::Ipv4 => Domain::IPV4,
                    Family::Ipv6 => Domain::IPV6,
                };
                hosts
                    .on(side, || {
                        Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
                    })
                    .map_err(|e| e.to_string())?
                    .map(Sock::Local)
                    .map_err(|e| crate::sandbox::describe(&e))
            }
            Endpoint::Agent(agent) => match agent.ask(Op::Socket { family }) {
                Ok(Answer::Handle(handle)) => Ok(Sock::Agent {
                    agent: Arc::clone(agent),
                    handle,
                }),
                Ok(a) => Err(format!("{} answered `socket` with {a:?}", agent.what())),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    /// A connect on each of `socks` at once (all on this endpoint), waited
    /// for together.
    pub(crate) fn connect_many(
        &self,
        socks: &[Handle],
        to: SocketAddr,
        deadline: Instant,
    ) -> Vec<CallResult> {
        match self {
            Endpoint::InProcess => {
                let fds: Vec<RawFd> = socks.iter().filter_map(Handle::fd).collect();
                calls::connect_many(&OS, &fds, to, deadline)
            }
            Endpoint::Agent(agent) => {
                let handles = socks
                    .iter()
                    .filter_map(|h| match h {
                        Handle::Agent { handle, .. } => Some(*handle),
                        Handle::Local(_) => None,
                    })
                    .collect();
                let op = Op::ConnectMany {
                    handles,
                    to,
                    bound_ms: bound_ms(deadline),
                };
                match agent.ask(op) {
                    Ok(Answer::Results(r)) if r.len() == socks.len() => r,
                    Ok(a) => vec![unexpected(agent, "connect-many", &a); socks.len()],
                    Err(e) => vec![failed(&e); socks.len()],
                }
            }
        }
    }

    /// `close()` on each of `socks` (all on this endpoint) in order, paced
    /// as a group's calls are: an agent closes them all on one request, so
    /// the closes follow each other as closely as they do in process.
    pub(crate) fn close_many(&self, socks: Vec<Sock>) -> Vec<CallResult> {
        let Endpoint::Agent(agent) = self else {
            return socks
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    calls::pace(i);
                    s.close()
                })
                .collect();
        };
        let n = socks.len();
        let handles = socks
            .into_iter()
            .filter_map(|s| match s {
                Sock::Agent { handle, .. } => Some(handle),
                Sock::Local(_) => None,
            })
            .collect();
        match agent.ask(Op::CloseMany { handles }) {
            Ok(Answer::Results(r)) if r.len() == n => r,
            Ok(a) => vec![unexpected(agent, "close-many", &a); n],
            Err(e) => vec![failed(&e); n],
        }
    }

    /// The agent's sockets with `port` at an end, if this is an agent.
    pub fn states(&self, family: Family, port: u16) -> Option<Result<Vec<SockEntry>, String>> {
        let Endpoint::Agent(agent) = self else {
            return None;
        };
        Some(match agent.ask(Op::States { family, port }) {
            Ok(Answer::States(s)) => Ok(s),
            Ok(a) => Err(format!("{} answered `states` with {a:?}", agent.what())),
            Err(e) => Err(e.to_string()),
        })
    }

    /// Sets the sysctl `name` to `value` on `side`'s host's stack. `ns`:
    /// the calling case thread's namespace (the router's on the bench).
    pub(crate) fn write_sysctl(
        &self,
        hosts: &Hosts,
        ns: &Namespace,
        side: Side,
        name: &str,
        value: &str,
    ) -> Result<(), SysctlError> {
        match self {
            Endpoint::InProcess => {
                match hosts.on(side, || sandbox::write_sysctl(ns, name, value)) {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(SandboxError::NoSuchSysctl { .. })) => Err(SysctlError::Absent),
                    Ok(Err(e @ SandboxError::ReadOnlySysctl { .. })) => {
                        Err(SysctlError::Refused(e.to_string()))
                    }
                    Ok(Err(e)) | Err(e) => Err(SysctlError::Failed(e.to_string())),
                }
            }
            Endpoint::Agent(agent) => {
                let op = Op::Sysctl {
                    name: name.to_string(),
                    value: Some(value.to_string()),
                };
                match agent.ask(op) {
                    Ok(Answer::Sysctl(Some(_))) => Ok(()),
                    Ok(Answer::Sysctl(None)) => Err(SysctlError::Absent),
                    Ok(a) => Err(SysctlError::Failed(format!(
                        "{} answered `sysctl` with {a:?}",
                        agent.what()
                    ))),
                    Err(AgentError::Refused { why, .. }) => Err(SysctlError::Refused(why)),
                    Err(e) => Err(SysctlError::Failed(e.to_string())),
                }
            }
        }
    }

    /// A sysctl's value on `side`'s host's stack, if it has it.
    pub(crate) fn read_sysctl(&self, hosts: &Hosts, side: Side, name: &str) -> Option<String> {
        match self {
            Endpoint::InProcess => hosts.on(side, || sandbox::read_sysctl(name).ok()).ok()?,
            Endpoint::Agent(agent) => match agent.ask(Op::Sysctl {
                name: name.to_string(),
                value: None,
            }) {
                Ok(Answer::Sysctl(v)) => v,
                _ => None,
            },
        }
    }

    /// The TCP counters of `side`'s host's stack, if they are the case's
    /// own (see [`own_stack`](super::agent::Hello::own_stack)).
    pub fn counters(
        &self,
        hosts: &Hosts,
        ns: &Namespace,
        side: Side,
    ) -> Result<BTreeMap<String, i64>, String> {
        match self {
            Endpoint::InProcess => hosts
                .on(side, || sandbox::tcp_counters(ns))
                .and_then(|r| r)
                .map_err(|e| e.to_string()),
            Endpoint::Agent(agent) if !agent.hello().own_stack => Err(format!(
                "{} runs on a stack that is not its own: its counters count every connection of its machine",
                agent.what()
            )),
            Endpoint::Agent(agent) => match agent.ask(Op::Counters) {
                Ok(Answer::Counters(c)) => Ok(c),
                Ok(a) => Err(format!("{} answered `counters` with {a:?}", agent.what())),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    pub fn agent(&self) -> Option<&Arc<AgentClient>> {
        match self {
            Endpoint::InProcess => None,
            Endpoint::Agent(a) => Some(a),
        }
    }
}

impl Sock {
    pub fn handle(&self) -> Handle {
        match self {
            Sock::Local(s) => Handle::Local(s.as_raw_fd()),
            Sock::Agent { agent, handle } => Handle::Agent {
                agent: Arc::clone(agent),
                handle: *handle,
            },
        }
    }

    /// `close()`: the socket is gone whatever it returns.
    pub fn close(self) -> CallResult {
        match self {
            Sock::Local(s) => calls::close(Fd::os(s.into_raw_fd())),
            Sock::Agent { agent, handle } => match agent.ask(Op::Close { handle }) {
                Ok(Answer::Result(r)) => r,
                Ok(a) => unexpected(&agent, "close", &a),
                Err(e) => failed(&e),
            },
        }
    }
}

impl Handle {
    /// The socket's descriptor where it lives: this process's, or the
    /// agent's own number for it (which the agent's states carry).
    pub fn descriptor(&self) -> RawFd {
        match self {
            Handle::Local(fd) => *fd,
            Handle::Agent { handle, .. } => RawFd::try_from(*handle).unwrap_or(RawFd::MAX),
        }
    }

    /// The descriptor, for a socket in this process.
    pub fn fd(&self) -> Option<RawFd> {
        match self {
            Handle::Local(fd) => Some(*fd),
            Handle::Agent { .. } => None,
        }
    }

    /// Sends `op` and takes its `result`.
    fn result(agent: &AgentClient, op: Op, name: &str) -> CallResult {
        match agent.ask(op) {
            Ok(Answer::Result(r)) => r,
            Ok(a) => unexpected(agent, name, &a),
            Err(e) => failed(&e),
        }
    }

    pub fn bind(&self, addr: SocketAddr) -> CallResult {
        match self {
            Handle::Local(fd) => calls::bind(Fd::os(*fd), addr),
            Handle::Agent { agent, handle } => Handle::result(
                agent,
                Op::Bind {
                    handle: *handle,
                    addr,
                },
                "bind",
            ),
        }
    }

    /// `listen()`, binding `addr` first unless the socket is bound.
    pub fn listen(&self, addr: SocketAddr, backlog: i32) -> CallResult {
        match self {
            Handle::Local(fd) => calls::listen(Fd::os(*fd), addr, backlog),
            Handle::Agent { agent, handle } => Handle::result(
                agent,
                Op::Listen {
                    handle: *handle,
                    addr,
                    backlog,
                },
                "listen",
            ),
        }
    }

    /// The local address once the socket has a port.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Handle::Local(fd) => calls::local_addr(Fd::os(*fd)),
            Handle::Agent { agent, handle } => match agent.ask(Op::LocalAddr { handle: *handle }) {
                Ok(Answer::Addr(a)) => a,
                _ => None,
            },
        }
    }

    /// Whether the application made the socket non-blocking.
    pub(crate) fn is_nonblocking(&self) -> bool {
        match self {
            Handle::Local(fd) => calls::is_nonblocking(Fd::os(*fd)),
            Handle::Agent { agent, handle } => {
                matches!(
                    agent.ask(Op::Nonblocking { handle: *handle }),
                    Ok(Answer::Flag(true))
                )
            }
        }
    }

    pub fn connect(&self, to: SocketAddr, deadline: Instant) -> CallResult {
        match self {
            Handle::Local(fd) => calls::connect(Fd::os(*fd), to, deadline),
            Handle::Agent { agent, handle } => Handle::result(
                agent,
                Op::Connect {
                    handle: *handle,
                    to,
                    bound_ms: bound_ms(deadline),
                },
                "connect",
            ),
        }
    }

    /// Waits until the socket polls ready, bounded.
    pub fn wait(&self, ready: calls::Ready, deadline: Instant) -> CallResult {
        let none = PerSide::new(Mutex::new(StreamLog::new(0)), Mutex::new(StreamLog::new(0)));
        self.call(&FdCall::Wait { ready }, 0, Side::Client, &none, deadline)
    }

    /// One `accept()` if a connection is queued, never blocking.
    pub(crate) fn accept_now(&self) -> Result<Option<(Sock, Option<SocketAddr>)>, Box<CallResult>> {
        match self {
            Handle::Local(fd) => {
                let accepted = calls::accept_now(Fd::os(*fd))?;
                // SAFETY: the descriptor accept() just made is ours alone.
                let own = |fd| unsafe { <Socket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                Ok(accepted.map(|(fd, peer)| (Sock::Local(own(fd)), peer)))
            }
            Handle::Agent { agent, handle } => match agent.ask(Op::Accept { handle: *handle }) {
                Ok(Answer::Accepted(None)) => Ok(None),
                Ok(Answer::Accepted(Some(a))) => Ok(Some((
                    Sock::Agent {
                        agent: Arc::clone(agent),
                        handle: a.handle,
                    },
                    a.peer,
                ))),
                Ok(Answer::Result(r)) => Err(Box::new(r)),
                Ok(a) => Err(Box::new(unexpected(agent, "accept", &a))),
                Err(e) => Err(Box::new(failed(&e))),
            },
        }
    }

    /// A call that needs only the socket. `logs` are connection `conn`'s
    /// two streams (by writer), `side` the calling socket's side; for an
    /// agent's socket they mirror what the agent reports.
    pub fn call(
        &self,
        call: &FdCall,
        conn: u32,
        side: Side,
        logs: &PerSide<Mutex<StreamLog>>,
        deadline: Instant,
    ) -> CallResult {
        let (outgoing, incoming) = (&logs[side], &logs[side.peer()]);
        let (agent, handle) = match self {
            Handle::Local(fd) => {
                return calls::on_fd(Fd::os(*fd), call, outgoing, incoming, deadline);
            }
            Handle::Agent { agent, handle } => (agent, *handle),
        };
        let texts = if call.reads() {
            lock_log(incoming).texts().to_vec()
        } else {
            Vec::new()
        };
        let payload: Option<&Payload> = match call {
            FdCall::Write { payload, .. } => Some(payload),
            _ => None,
        };
        if let Some(p) = payload {
            lock_log(outgoing).remote_write_starts(p);
        }
        let op = Op::Call {
            handle,
            call: call.clone(),
            stream: StreamRef { conn, side, texts },
            bound_ms: bound_ms(deadline),
        };
        let answer = agent.ask(op);
        let (result, sent) = match answer {
            Ok(Answer::Data(d)) => {
                let mut inc = lock_log(incoming);
                if call.reads() {
                    inc.read = d.stream.read;
                    inc.corrupted = d.stream.corrupted;
                }
                let sent = d.result.bytes.unwrap_or(0);
                (d.result, Some((sent, d.stream.written)))
            }
            Ok(a) => (unexpected(agent, "call", &a), None),
            Err(e) => (failed(&e), None),
        };
        if let Some(p) = payload {
            let mut out = lock_log(outgoing);
            let (sent, total) = sent.unwrap_or((0, out.written));
            out.remote_write_ended(p, sent, total);
        }
        result
    }
}

fn lock_log(l: &Mutex<StreamLog>) -> std::sync::MutexGuard<'_, StreamLog> {
    l.lock().expect("stream log")
}
