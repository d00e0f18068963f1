//! The agent: a process on the stack under test that makes the socket
//! calls the driver sends it, so a stack the harness does not run in (a
//! namespace, a sandbox, another machine) can still be one end of a case.
//!
//! # Protocol, version 1
//!
//! JSON Lines, one object per line, over the agent's stdin and stdout (or
//! one TCP control connection, `teardown agent --listen`). The agent speaks
//! first, once:
//!
//! ```json
//! {"hello":{"protocol":1,"agent":"teardown 0.1.0","os":"linux","stack":"linux","states":"sock-diag","own_stack":true}}
//! ```
//!
//! Then every request carries the protocol version, an id the caller
//! chooses and an `op`; every response carries the id back, with `result`
//! (what the call returned, errno by name, as in a report's step), one of
//! the op's own answers, or `error` (the request was refused: it was not
//! understood, or names a handle that is not open):
//!
//! ```json
//! {"v":1,"id":1,"op":"socket","family":"ipv4"}
//! {"id":1,"handle":5}
//! {"v":1,"id":2,"op":"connect","handle":5,"to":"198.19.0.2:9000","bound_ms":5000}
//! {"id":2,"result":{"ret":0,"errno":null,"bytes":null,"value":40112,...}}
//! {"v":1,"id":3,"op":"call","handle":5,"call":{"call":"read","amount":"until-eof","dontwait":false,"peek":false},"stream":{"conn":1,"side":"client","texts":[]},"bound_ms":5000}
//! {"id":3,"data":{"result":{...},"stream":{"written":0,"read":100,"corrupted":0}}}
//! ```
//!
//! Requests are answered as they finish, not in order: a call that blocks
//! (a read, a lingering close) runs on a thread of its own, so a step in
//! the background and the steps after it proceed together. Every blocking
//! request carries its bound (`bound_ms`); the caller gives up on an
//! answer a little after it. A line that is not a request gets an `error`
//! (with `"id":null` if the id could not be read) and the agent goes on; a
//! line longer than [`MAX_LINE`] or cut off at the end of input ends the
//! session. `bye`, or the end of input, ends it and aborts every socket the
//! session still holds (SO_LINGER {1, 0}: nothing of it lingers on the
//! stack to reach a later session's connections).
//! The schema of both directions is `harness/schema/agent.schema.json`
//! (`teardown schema --agent`).
//!
//! Data is never sent over the protocol: a write sends the deterministic
//! pattern (`driver::pattern`) or a short text, a read checks what it got
//! against the pattern and the texts the caller sends with it, and both
//! answer with the stream's totals.

pub mod client;
#[cfg(target_os = "linux")]
pub mod link;
#[cfg(target_os = "linux")]
pub mod lwip;
pub mod serve;
#[cfg(target_os = "linux")]
pub mod smoltcp;

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::calls::{CallResult, FdCall};
use crate::observe::SockEntry;
use crate::scenario::Family;
use crate::tcp::Side;

/// The protocol version this build speaks.
pub(crate) const PROTOCOL: u32 = 1;

/// The longest line either side accepts: far above any request (a text
/// payload is a few hundred bytes) or answer (a socket table of thousands
/// of connections).
pub(crate) const MAX_LINE: usize = 16 << 20;

/// The agent's first line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct HelloLine {
    pub hello: Hello,
}

/// Who the agent is and what it runs on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Hello {
    /// The protocol version it speaks.
    pub protocol: u32,
    /// `teardown <version>`.
    pub agent: String,
    /// The OS it was built for (`linux`, `freebsd`, `macos`, `windows`).
    pub os: String,
    /// The TCP/IP stack it runs on (`linux`, `gvisor`, `smoltcp`, `lwip`).
    pub stack: String,
    /// The stack's own version where known (gVisor: the runsc release;
    /// smoltcp, lwIP: the release the agent was built with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_version: Option<String>,
    /// Where its socket states come from: `sock-diag` (every socket,
    /// closed ones included), `tcp-info` (sockets it holds), Windows's
    /// TCP table (`tcp-table`: every connection, no timers), or a
    /// userspace stack's own table, with its timers or without
    /// (`stack-table-timers`, `stack-table`).
    pub states: crate::observe::StateSource,
    /// Whether its network stack is its own, made for this session (a
    /// namespace or sandbox the harness started it in: `teardown agent
    /// --own-stack`). Only then does it set sysctls, and are its counters
    /// the session's alone; an agent on a machine of its own changes
    /// nothing of the machine's.
    #[serde(default)]
    pub own_stack: bool,
    /// Calls the stack has no mapping for, by the C name of what they need
    /// (`MSG_MORE`, `TCP_CORK`, `SHUT_RD`), each with why: a case that
    /// makes one on this host is `unsupported`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unmapped: std::collections::BTreeMap<String, String>,
}

impl Hello {
    /// The hello of an agent whose stack runs in its own process (smoltcp,
    /// lwIP): that stack is the session's alone, and its states come from
    /// its own table (`states`).
    pub fn userspace(
        stack: &str,
        version: &str,
        states: crate::observe::StateSource,
        unmapped: std::collections::BTreeMap<String, String>,
    ) -> Hello {
        Hello {
            protocol: PROTOCOL,
            agent: format!("teardown {}", env!("CARGO_PKG_VERSION")),
            os: std::env::consts::OS.to_string(),
            stack: stack.into(),
            stack_version: Some(version.into()),
            states,
            own_stack: true,
            unmapped,
        }
    }
}

/// One request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Request {
    /// The protocol version the request is written in.
    pub v: u32,
    /// Chosen by the caller; the answer carries it back.
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

/// What a request asks for. `handle` names a socket the agent made or
/// accepted; it is the agent's own descriptor number, meaningful only to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// A new TCP socket. Answer: `handle`.
    Socket {
        family: Family,
    },
    Bind {
        handle: u32,
        addr: SocketAddr,
    },
    /// `listen()`, binding `addr` first unless the socket is bound.
    Listen {
        handle: u32,
        addr: SocketAddr,
        backlog: i32,
    },
    /// `connect()`, blocking or not as the socket is. Its value is the
    /// local port the socket got.
    Connect {
        handle: u32,
        to: SocketAddr,
        bound_ms: u64,
    },
    /// A connect on each socket at once, waited for together. Answer:
    /// `results`, in order.
    ConnectMany {
        handles: Vec<u32>,
        to: SocketAddr,
        bound_ms: u64,
    },
    /// One `accept()` if a connection is queued, never blocking. Answer:
    /// `accepted` (null if the queue was empty) or a `result` with the
    /// error.
    Accept {
        handle: u32,
    },
    /// Whether O_NONBLOCK is set. Answer: `flag`.
    Nonblocking {
        handle: u32,
    },
    /// The socket's local address once it has a port. Answer: `addr`.
    LocalAddr {
        handle: u32,
    },
    /// A call that needs only the socket, with the stream it touches.
    Call {
        handle: u32,
        call: FdCall,
        stream: StreamRef,
        bound_ms: u64,
    },
    /// `close()`: the handle is gone whatever it returns.
    Close {
        handle: u32,
    },
    /// `close()` on each socket in order, as one step on a group of them
    /// does (`every client close`), paced as the harness paces its own.
    /// Answer: `results`, in order.
    CloseMany {
        handles: Vec<u32>,
    },
    /// The TCP sockets of `family` with `port` at either end. Answer:
    /// `states`.
    States {
        family: Family,
        port: u16,
    },
    /// Sets the sysctl `name` (`net.ipv4.tcp_fin_timeout`) to `value`, if
    /// given, then reads it. Answer: `sysctl`, null if the stack has no
    /// such sysctl. Setting one is refused unless the stack is the agent's
    /// own (`own_stack` in its hello).
    Sysctl {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
    /// The stack's TCP counters, by Linux's names (`TcpExt` of
    /// /proc/net/netstat, `Tcp` of /proc/net/snmp). Answer: `counters`.
    Counters,
    /// Close every socket and end the session.
    Bye,
}

impl Op {
    /// How long the agent may take over it, beyond the time to answer.
    pub fn bound_ms(&self) -> u64 {
        match self {
            Op::Connect { bound_ms, .. }
            | Op::ConnectMany { bound_ms, .. }
            | Op::Call { bound_ms, .. } => *bound_ms,
            // A close can linger: SO_LINGER's timeout is at most what a
            // scenario may set (the parser bounds it), and the driver's
            // step bound applies on top.
            Op::Close { .. } => 5 * 60 * 1000,
            // Each close of a group may linger too.
            Op::CloseMany { handles } => 5 * 60 * 1000 * handles.len().max(1) as u64,
            _ => 0,
        }
    }

    /// Whether the request may block, and so runs on a thread of its own.
    pub fn blocks(&self) -> bool {
        matches!(
            self,
            Op::Connect { .. }
                | Op::ConnectMany { .. }
                | Op::Call { .. }
                | Op::Close { .. }
                | Op::CloseMany { .. }
        )
    }

    /// The handles the request names.
    pub(crate) fn handles(&self) -> &[u32] {
        match self {
            Op::Bind { handle, .. }
            | Op::Listen { handle, .. }
            | Op::Connect { handle, .. }
            | Op::Accept { handle }
            | Op::Nonblocking { handle }
            | Op::LocalAddr { handle }
            | Op::Call { handle, .. }
            | Op::Close { handle } => std::slice::from_ref(handle),
            Op::ConnectMany { handles, .. } | Op::CloseMany { handles } => handles,
            Op::Socket { .. } | Op::States { .. } | Op::Sysctl { .. } | Op::Counters | Op::Bye => {
                &[]
            }
        }
    }
}

/// The stream a data call writes or reads, by connection number and the
/// calling socket's side. A read carries the texts written so far in the
/// stream it reads (its writer may be on another endpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StreamRef {
    pub conn: u32,
    pub side: Side,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub texts: Vec<(u64, Vec<u8>)>,
}

/// One answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Response {
    /// The request's id; null when a line could not be read as a request.
    pub id: Option<u64>,
    #[serde(flatten)]
    pub answer: Answer,
}

/// What an answer holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// What the call returned.
    Result(CallResult),
    /// A data call's result, and the totals of the streams it touched
    /// after it.
    Data(DataAnswer),
    Handle(u32),
    Results(Vec<CallResult>),
    Accepted(Option<Accepted>),
    Flag(bool),
    Addr(Option<SocketAddr>),
    States(Vec<SockEntry>),
    /// A sysctl's value after the request; null if the stack has none.
    Sysctl(Option<String>),
    Counters(std::collections::BTreeMap<String, i64>),
    /// `bye` was done.
    Bye(bool),
    /// The request was refused, and why.
    Error(String),
}

/// What a `call` returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DataAnswer {
    pub result: CallResult,
    pub stream: StreamTotals,
}

/// A connection `accept` took off the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Accepted {
    pub handle: u32,
    pub peer: Option<SocketAddr>,
}

/// After a data call: the bytes the calling socket's side has written in
/// its outgoing stream, and read (and found corrupted) in its incoming one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StreamTotals {
    pub written: u64,
    pub read: u64,
    pub corrupted: u64,
}

/// The JSON Schema of both directions of the protocol.
pub fn schema() -> serde_json::Value {
    #[derive(JsonSchema)]
    #[serde(untagged)]
    // Never built: it only describes the lines.
    #[allow(dead_code, clippy::large_enum_variant)]
    /// Lines of the teardown agent protocol: the agent's hello, then
    /// requests to it and its answers.
    enum Line {
        Hello(HelloLine),
        Request(Request),
        Response(Response),
    }
    serde_json::to_value(schemars::schema_for!(Line)).expect("a schema serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let committed: serde_json::Value =
            serde_json::from_str(include_str!("../../../schema/agent.schema.json")).unwrap();
        assert!(
            committed == schema(),
            "harness/schema/agent.schema.json is stale: regenerate it with `just schema`"
        );
    }
}
