//! The step language: one line per socket call, read like a protocol trace.
//!
//! ```text
//! client setsockopt SO_RCVBUF 4KiB
//! listener listen
//! client connect
//! server accept
//! server write 64KiB
//! server shutdown WR
//! client read until-eof
//! client write "Thank you"
//! bg client close as lclose       # runs on its own thread; may block
//! server wait state CLOSE-WAIT within 2s
//! join lclose
//! ```
//!
//! A line is either a *socket call* made by an actor (client, server,
//! listener) or a *control* step of the harness itself (sleep, join, a fault
//! rule, heal). The types keep the two apart, so a step that would need a
//! socket it cannot have, or a modifier that means nothing for it, cannot be
//! built. Numbers are converted with checks and an error names the column.
//!
//! This module turns text into [`Step`]s; it knows nothing about sockets.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits;
use super::rule::{Direction, Effect, FlagMatch, Rule};
use crate::tcp::{Flags, TcpState};

/// What an actor is: the connecting socket, the accepted one, or the
/// listening socket that accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Client,
    Server,
    Listener,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
            Role::Listener => "listener",
        }
    }
}

/// Who performs a step. The listener accepts; `server` is the accepted
/// socket. `index` numbers the connections of a case (1 for one-pair
/// scenarios, written without `#1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Actor {
    pub role: Role,
    pub index: u32,
}

impl Actor {
    pub(crate) const CLIENT: Actor = Actor {
        role: Role::Client,
        index: 1,
    };
    pub(crate) const SERVER: Actor = Actor {
        role: Role::Server,
        index: 1,
    };
    pub(crate) const LISTENER: Actor = Actor {
        role: Role::Listener,
        index: 1,
    };

    /// The side of the connection this actor's socket is (None: listener).
    pub fn side(self) -> Option<crate::tcp::Side> {
        match self.role {
            Role::Client => Some(crate::tcp::Side::Client),
            Role::Server => Some(crate::tcp::Side::Server),
            Role::Listener => None,
        }
    }

    /// The side whose host this actor's sockets live on (the listener's is
    /// the server's).
    pub fn host(self) -> crate::tcp::Side {
        self.side().unwrap_or(crate::tcp::Side::Server)
    }
}

impl fmt::Display for Actor {
    /// `client`, `server#3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.role.name())?;
        if self.index != 1 {
            write!(f, "#{}", self.index)?;
        }
        Ok(())
    }
}

/// Several connections' sockets at once: a group step acts on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// `client#3..10`: connections 3 to 10.
    Range(u32, u32),
    /// `every client`: every connection the role has an open socket for;
    /// `every server accept`: every connection a client made.
    Every,
}

impl Group {
    /// As written: `client#1..10`, `every server`.
    pub fn describe(self, role: Role) -> String {
        match self {
            Group::Range(a, b) => format!("{}#{a}..{b}", role.name()),
            Group::Every => format!("every {}", role.name()),
        }
    }
}

/// `client`, `client#3`, `client#1..100`: the actor, and the group when the
/// word names a range.
fn target(word: &str, col: usize) -> Result<(Actor, Option<Group>), StepError> {
    let Some((role, range)) = word.split_once('#').filter(|(_, i)| i.contains("..")) else {
        let actor: Actor = word.parse().map_err(|e| StepError::at(col, e))?;
        if actor.index > limits::MAX_CONNECTIONS {
            return Err(StepError::at(
                col,
                format!(
                    "connection {} is beyond the {} connections a case may have",
                    actor.index,
                    limits::MAX_CONNECTIONS
                ),
            ));
        }
        return Ok((actor, None));
    };
    let first: Actor = role.parse().map_err(|e| StepError::at(col, e))?;
    let (a, b) = range.split_once("..").expect("checked above");
    let n = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|n| (1..=limits::MAX_CONNECTIONS).contains(n))
            .ok_or_else(|| {
                StepError::at(
                    col,
                    format!(
                        "expected connection numbers 1 to {} in {word:?}, found {s:?}",
                        limits::MAX_CONNECTIONS
                    ),
                )
            })
    };
    let (a, b) = (n(a)?, n(b)?);
    if a > b {
        return Err(StepError::at(
            col,
            format!("{word:?}: the range is empty ({a} > {b})"),
        ));
    }
    Ok((
        Actor {
            role: first.role,
            index: a,
        },
        Some(Group::Range(a, b)),
    ))
}

impl std::str::FromStr for Actor {
    type Err = String;

    fn from_str(s: &str) -> Result<Actor, String> {
        let (role, index) = match s.split_once('#') {
            Some((r, i)) => (r, Some(i)),
            None => (s, None),
        };
        let role = match role {
            "client" => Role::Client,
            "server" => Role::Server,
            "listener" => Role::Listener,
            other => return Err(format!("unknown actor {other:?}")),
        };
        let index =
            match index {
                None => 1,
                Some(i) => i.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("expected a connection number after '#', found {i:?}")
                })?,
            };
        Ok(Actor { role, index })
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Actor {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Actor".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "client | server | listener, with #N for connection N > 1",
            "pattern": "^(client|server|listener)(#[1-9][0-9]*)?$"
        })
    }
}

/// `shutdown(2)`'s `how`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    Read,
    Write,
    Both,
}

/// What a write puts into the stream.
#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    /// `n` bytes of the deterministic pattern (see `driver::pattern`).
    Pattern(u64),
    /// Literal bytes, written as a quoted string.
    Text(Vec<u8>),
    /// Literal bytes and then `n` bytes of the pattern, handed to the
    /// kernel together (`"GET / HTTP/1.1\r\n\r\n" + 50000`): a request and
    /// what follows it leave in the same segments, whatever the scheduler
    /// does between two steps.
    TextThenPattern(Vec<u8>, u64),
}

impl Payload {
    pub fn len(&self) -> u64 {
        match self {
            Payload::Pattern(n) => *n,
            Payload::Text(t) => t.len() as u64,
            Payload::TextThenPattern(t, n) => t.len() as u64 + n,
        }
    }

    /// The literal bytes it starts with, if any.
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Payload::Pattern(_) => None,
            Payload::Text(t) | Payload::TextThenPattern(t, _) => Some(t),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How much a read asks for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReadAmount {
    /// Exactly `n` bytes, or fewer if EOF or an error comes first.
    Exactly(u64),
    /// Until `read()` returns 0 or fails.
    UntilEof,
    /// Whatever is queued now, without waiting.
    Available,
}

/// A socket option or file-status flag a step can set. Values are already
/// in the C types the call takes, range-checked by the parser.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SockOpt {
    /// `SO_LINGER`: `None` = off, `Some(secs)` = on with that timeout.
    Linger(Option<i32>),
    RcvBuf(i32),
    SndBuf(i32),
    ReuseAddr(bool),
    ReusePort(bool),
    KeepAlive(bool),
    NoDelay(bool),
    /// `TCP_LINGER2`: orphaned FIN-WAIT-2 lifetime in seconds (may be -1).
    Linger2(i32),
    /// `TCP_USER_TIMEOUT` in milliseconds.
    UserTimeout(u32),
    /// `O_NONBLOCK` via `fcntl(2)`.
    NonBlocking(bool),
    /// `TCP_CORK`: hold partial segments until uncorked (or 200 ms).
    Cork(bool),
    /// `TCP_KEEPIDLE`: idle seconds before the first keepalive probe.
    KeepIdle(i32),
    /// `TCP_KEEPINTVL`: seconds between keepalive probes.
    KeepIntvl(i32),
    /// `TCP_KEEPCNT`: unanswered probes before the connection is dropped.
    KeepCnt(i32),
    /// `SO_RCVLOWAT`: bytes a read waits for (and poll's readability).
    RcvLowat(i32),
}

impl SockOpt {
    /// The option's C name (`O_NONBLOCK` for the mode set with fcntl).
    pub(crate) fn c_name(self) -> &'static str {
        match self {
            SockOpt::Linger(_) => "SO_LINGER",
            SockOpt::RcvBuf(_) => "SO_RCVBUF",
            SockOpt::SndBuf(_) => "SO_SNDBUF",
            SockOpt::ReuseAddr(_) => "SO_REUSEADDR",
            SockOpt::ReusePort(_) => "SO_REUSEPORT",
            SockOpt::KeepAlive(_) => "SO_KEEPALIVE",
            SockOpt::NoDelay(_) => "TCP_NODELAY",
            SockOpt::Linger2(_) => "TCP_LINGER2",
            SockOpt::UserTimeout(_) => "TCP_USER_TIMEOUT",
            SockOpt::NonBlocking(_) => "O_NONBLOCK",
            SockOpt::Cork(_) => "TCP_CORK",
            SockOpt::KeepIdle(_) => "TCP_KEEPIDLE",
            SockOpt::KeepIntvl(_) => "TCP_KEEPINTVL",
            SockOpt::KeepCnt(_) => "TCP_KEEPCNT",
            SockOpt::RcvLowat(_) => "SO_RCVLOWAT",
        }
    }
}

/// A socket option read back with `getsockopt(2)`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum GetOpt {
    /// `SO_ERROR`: the pending error, by name (the step's `so_error`).
    SoError,
    /// `TCP_INFO`: the socket's TCP state (the step's `tcp_state`).
    TcpInfo,
    /// `SO_LINGER`: the linger time in seconds as the step's `value`, null
    /// when off (what accept() hands on from the listener, say).
    Linger,
}

/// `ioctl(2)` queries on a connected socket.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum IoctlQuery {
    /// Bytes queued for reading (`FIONREAD`/`SIOCINQ`).
    InQueue,
    /// Bytes not yet acknowledged by the peer (`SIOCOUTQ`).
    OutQueue,
    /// Bytes not yet sent (`SIOCOUTQNSD`).
    OutQueueNotSent,
}

impl IoctlQuery {
    /// The request's C name (Linux's).
    pub(crate) fn c_name(self) -> &'static str {
        match self {
            IoctlQuery::InQueue => "FIONREAD",
            IoctlQuery::OutQueue => "SIOCOUTQ",
            IoctlQuery::OutQueueNotSent => "SIOCOUTQNSD",
        }
    }
}

/// An observable event a step can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// The actor's socket (found by the stack's state source) is in this state.
    State(TcpState),
    Readable,
    Writable,
    /// The actor's socket has this timer running (the state source's
    /// timers: sock_diag); the step's `value` is what is left of it then.
    Timer(crate::tcp::TimerKind),
    /// The listener's accept queue holds at least this many connections
    /// nobody has accepted yet (sock_diag's receive queue of a listening
    /// socket); the step's `value` is how many it held then.
    Queued(u32),
}

/// A socket call, made by an actor.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Listen {
        backlog: i32,
    },
    /// `bind()`: the client to this local port before connect; the
    /// listener (before listen) or a server socket of its own (before
    /// `server connect`) to the server's address.
    Bind(Option<u16>),
    /// `connect()`: the client to the server's address; a server socket
    /// made by `server bind` to its client's address (simultaneous open).
    Connect,
    /// `connect()` with `AF_UNSPEC`: dissolve the association.
    Disconnect,
    Accept,
    Write {
        payload: Payload,
        nosignal: bool,
        dontwait: bool,
        /// `MSG_MORE`: more data follows; hold a partial segment.
        more: bool,
    },
    Read {
        amount: ReadAmount,
        dontwait: bool,
        /// `MSG_PEEK`: look at queued bytes without consuming them.
        peek: bool,
        /// `keep`: keep what was read, up to [`limits::MAX_KEPT`] bytes, as
        /// the step's `text` (a program's response, say).
        keep: bool,
    },
    Shutdown(How),
    Close,
    SetOption(SockOpt),
    GetOption(GetOpt),
    Ioctl(IoctlQuery),
    /// `since LABEL`: the wait's clock - its duration and its `within`
    /// bound - starts when step LABEL returned, not when the wait began. A
    /// protocol timer starts at the call that armed it; measuring from
    /// there keeps a descheduled harness thread out of the number.
    Wait {
        what: WaitFor,
        since: Option<String>,
        /// `optional`: on a stack whose state source cannot see the socket
        /// (a closed one, without sock_diag) the wait is skipped and its
        /// facts are not observed, instead of the case being unsupported.
        optional: bool,
    },
}

/// An event on the wire (the capture) a step can wait for: observable on
/// every stack, whatever its socket-state source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireEvent {
    /// Both sides sent a FIN and the peer acknowledged it, or a RST ended
    /// the connection.
    Closed,
    /// Every byte the applications wrote so far, and every FIN sent, was
    /// acknowledged by the peer (or a RST ended the connection): the data
    /// is in the peer's receive queue, whatever the stack's timing.
    Acked,
}

/// A segment as the trace writes it (`wire.trace`): its sender and its
/// flags in tcpdump's spelling, and its payload length if given (`c:R`,
/// `s:F.`, `c:P.100`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentPattern {
    pub from: crate::tcp::Side,
    pub flags: crate::tcp::Flags,
    pub len: Option<u32>,
}

impl SegmentPattern {
    /// Whether a segment of `from` with `flags` and `len` payload bytes is
    /// one of these.
    pub fn matches(&self, from: crate::tcp::Side, flags: crate::tcp::Flags, len: u32) -> bool {
        self.from == from && self.flags == flags && self.len.is_none_or(|l| l == len)
    }
}

impl std::str::FromStr for SegmentPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<SegmentPattern, String> {
        use crate::tcp::{Flags, Side};
        let bad = || {
            format!(
                "{s:?} is not a segment as the trace writes it: c: or s:, then flags (S, F, R, P, U, E, W, . for ACK), then a payload length if any, e.g. c:R, s:F., c:P.100"
            )
        };
        let (from, rest) = match s.split_once(':') {
            Some(("c", rest)) => (Side::Client, rest),
            Some(("s", rest)) => (Side::Server, rest),
            _ => return Err(bad()),
        };
        let digits = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (letters, len) = rest.split_at(digits);
        let mut bits = 0u8;
        for c in letters.chars() {
            let flag = match c {
                'F' => Flags::FIN,
                'S' => Flags::SYN,
                'R' => Flags::RST,
                'P' => Flags::PSH,
                '.' => Flags::ACK,
                'U' => Flags::URG,
                'E' => Flags::ECE,
                'W' => Flags::CWR,
                _ => return Err(bad()),
            };
            if bits & flag.bits() != 0 {
                return Err(bad());
            }
            bits |= flag.bits();
        }
        if bits == 0 {
            return Err(bad());
        }
        let len = if len.is_empty() {
            None
        } else {
            Some(len.parse::<u32>().map_err(|_| bad())?)
        };
        Ok(SegmentPattern {
            from,
            flags: Flags::from_bits(bits),
            len,
        })
    }
}

/// A step of the harness itself: no socket is involved.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    Sleep(Duration),
    /// `wait wire closed`: until the capture shows the event.
    WaitWire(WireEvent),
    /// Wait for the bg step with this label.
    Join(String),
    /// `wait wire c:R [since LABEL]`: until the capture shows the next
    /// such segment of connection 1; `since` another such wait, the step's
    /// duration is the time between the two segments, by the capture's
    /// clock.
    WaitSegment {
        pattern: SegmentPattern,
        since: Option<String>,
    },
    /// Put a packet filter rule in place (`drop ...`, `reject ...`).
    Fault(Rule),
    /// Remove the fault labelled so, or every fault (`heal`).
    Heal(Option<String>),
    /// `stop server`: stop the program on that end (SIGTERM, then SIGKILL
    /// after its grace), and wait for it to exit.
    Stop(crate::tcp::Side),
}

/// What a step does.
#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    /// `[bg] ACTOR CALL`: `background` runs it on a thread of its own,
    /// joined later by label.
    ///
    /// With a `group` the call is made on each socket of the group in turn
    /// (connects and accepts all at once, waits for all together), and
    /// `actor` is the group's first member.
    Socket {
        actor: Actor,
        call: Call,
        background: bool,
        group: Option<Group>,
    },
    Control(Control),
}

/// One parsed step line.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Line in the scenario file; `None` for the implicit connection setup.
    pub line: Option<usize>,
    /// The step as written (after parameter substitution, comment removed).
    pub text: String,
    /// `as NAME`: lets expectations and `join` refer to this step.
    pub label: Option<String>,
    /// `within DUR`: bound on any waiting this step does.
    pub within: Option<Duration>,
    pub kind: StepKind,
}

/// The call a step makes, as reports name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Listen,
    Bind,
    Connect,
    Disconnect,
    Accept,
    Write,
    Read,
    Shutdown,
    Close,
    Setsockopt,
    Getsockopt,
    Ioctl,
    Wait,
    Sleep,
    Join,
    Drop,
    Reject,
    Heal,
    Stop,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Listen => "listen",
            Verb::Bind => "bind",
            Verb::Connect => "connect",
            Verb::Disconnect => "disconnect",
            Verb::Accept => "accept",
            Verb::Write => "write",
            Verb::Read => "read",
            Verb::Shutdown => "shutdown",
            Verb::Close => "close",
            Verb::Setsockopt => "setsockopt",
            Verb::Getsockopt => "getsockopt",
            Verb::Ioctl => "ioctl",
            Verb::Wait => "wait",
            Verb::Sleep => "sleep",
            Verb::Join => "join",
            Verb::Drop => "drop",
            Verb::Reject => "reject",
            Verb::Heal => "heal",
            Verb::Stop => "stop",
        }
    }
}

impl Call {
    pub fn verb(&self) -> Verb {
        match self {
            Call::Listen { .. } => Verb::Listen,
            Call::Bind(_) => Verb::Bind,
            Call::Connect => Verb::Connect,
            Call::Disconnect => Verb::Disconnect,
            Call::Accept => Verb::Accept,
            Call::Write { .. } => Verb::Write,
            Call::Read { .. } => Verb::Read,
            Call::Shutdown(_) => Verb::Shutdown,
            Call::Close => Verb::Close,
            Call::SetOption(_) => Verb::Setsockopt,
            Call::GetOption(_) => Verb::Getsockopt,
            Call::Ioctl(_) => Verb::Ioctl,
            Call::Wait { .. } => Verb::Wait,
        }
    }

    /// Whether the call may run on a thread of its own (`bg`): calls that
    /// need only the socket's descriptor.
    pub(crate) fn can_run_in_background(&self) -> bool {
        matches!(
            self,
            Call::Write { .. }
                | Call::Read { .. }
                | Call::Shutdown(_)
                | Call::Close
                | Call::SetOption(_)
                | Call::GetOption(_)
                | Call::Ioctl(_)
                | Call::Disconnect
                | Call::Wait {
                    what: WaitFor::Readable | WaitFor::Writable,
                    ..
                }
        )
    }
}

impl Step {
    pub fn verb(&self) -> Verb {
        match &self.kind {
            StepKind::Socket { call, .. } => call.verb(),
            StepKind::Control(Control::Sleep(_)) => Verb::Sleep,
            StepKind::Control(Control::WaitWire(_) | Control::WaitSegment { .. }) => Verb::Wait,
            StepKind::Control(Control::Join(_)) => Verb::Join,
            StepKind::Control(Control::Fault(r)) => match r.effect {
                Effect::Drop => Verb::Drop,
                Effect::Reject => Verb::Reject,
            },
            StepKind::Control(Control::Heal(_)) => Verb::Heal,
            StepKind::Control(Control::Stop(_)) => Verb::Stop,
        }
    }

    pub fn actor(&self) -> Option<Actor> {
        match &self.kind {
            StepKind::Socket { actor, .. } => Some(*actor),
            StepKind::Control(_) => None,
        }
    }

    pub fn background(&self) -> bool {
        matches!(
            self.kind,
            StepKind::Socket {
                background: true,
                ..
            }
        )
    }

    /// `since LABEL` of a wait step.
    pub fn since(&self) -> Option<&str> {
        match &self.kind {
            StepKind::Socket {
                call: Call::Wait { since, .. },
                ..
            } => since.as_deref(),
            _ => None,
        }
    }

    /// How facts and reports name this step: its label, or `line12` for
    /// the step on line 12, or `setup1`.. for the implicit connection setup.
    pub fn key(&self, index: usize) -> String {
        step_key(self.label.as_deref(), self.line, index)
    }
}

/// See [`Step::key`]; `index` is the step's position in the case.
pub(crate) fn step_key(label: Option<&str>, line: Option<usize>, index: usize) -> String {
    match (label, line) {
        (Some(l), _) => l.to_string(),
        (None, Some(line)) => format!("line{line}"),
        (None, None) => format!("setup{}", index + 1),
    }
}

/// Whether `label` has the form of an implicit key (`line12`, `setup1`),
/// which a label must not take.
fn looks_like_implicit_key(label: &str) -> bool {
    ["line", "setup"].iter().any(|p| {
        label
            .strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    })
}

/// A parse error inside one step line: column (1-based, in characters) and
/// what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StepError {
    pub column: usize,
    pub message: String,
}

impl StepError {
    fn at(column: usize, message: impl Into<String>) -> Self {
        StepError {
            column,
            message: message.into(),
        }
    }
}

/// A token of a step line with the 1-based column where it starts.
#[derive(Clone, Debug, PartialEq)]
struct Token {
    column: usize,
    kind: TokenKind,
}

#[derive(Clone, Debug, PartialEq)]
enum TokenKind {
    Word(String),
    Quoted(Vec<u8>),
}

/// Splits a line into words and quoted strings; `#` outside quotes starts a
/// comment unless it follows a word character (`client#2`). Returns the
/// tokens and the line text without the comment.
fn tokenize(line: &str) -> Result<(Vec<Token>, String), StepError> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut end = chars.len();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            end = i;
            break;
        } else if c == '"' {
            let column = i + 1;
            let mut bytes = Vec::new();
            i += 1;
            loop {
                let Some(&c) = chars.get(i) else {
                    return Err(StepError::at(
                        column,
                        "unterminated string: add a closing '\"'",
                    ));
                };
                i += 1;
                match c {
                    '"' => break,
                    '\\' => {
                        let esc = chars.get(i).copied();
                        i += 1;
                        match esc {
                            Some('n') => bytes.push(b'\n'),
                            Some('r') => bytes.push(b'\r'),
                            Some('t') => bytes.push(b'\t'),
                            Some('0') => bytes.push(0),
                            Some('\\') => bytes.push(b'\\'),
                            Some('"') => bytes.push(b'"'),
                            other => {
                                return Err(StepError::at(
                                    i,
                                    format!(
                                        "unknown escape \\{}; use \\n \\r \\t \\0 \\\\ or \\\"",
                                        other.map(String::from).unwrap_or_default()
                                    ),
                                ));
                            }
                        }
                    }
                    c => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            if bytes.len() as u64 > limits::MAX_TEXT_PAYLOAD {
                return Err(StepError::at(
                    column,
                    format!(
                        "a quoted payload is at most {} bytes; write a byte count for more",
                        limits::MAX_TEXT_PAYLOAD
                    ),
                ));
            }
            tokens.push(Token {
                column,
                kind: TokenKind::Quoted(bytes),
            });
        } else {
            let column = i + 1;
            let start = i;
            while i < chars.len()
                && !chars[i].is_whitespace()
                && chars[i] != '"'
                && !(chars[i] == '#' && i == start)
            {
                i += 1;
            }
            tokens.push(Token {
                column,
                kind: TokenKind::Word(chars[start..i].iter().collect()),
            });
        }
    }
    let text: String = chars[..end].iter().collect();
    Ok((tokens, text.trim().to_string()))
}

/// A cursor over a line's tokens that produces "expected X, found Y" errors.
struct Cursor {
    tokens: Vec<Token>,
    pos: usize,
    end_column: usize,
}

impl Cursor {
    fn peek_word(&self) -> Option<&str> {
        match self.tokens.get(self.pos) {
            Some(Token {
                kind: TokenKind::Word(w),
                ..
            }) => Some(w),
            _ => None,
        }
    }

    fn column(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.end_column, |t| t.column)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    fn word(&mut self, expected: &str) -> Result<(usize, String), StepError> {
        match self.tokens.get(self.pos) {
            Some(Token {
                column,
                kind: TokenKind::Word(w),
            }) => {
                self.pos += 1;
                Ok((*column, w.clone()))
            }
            Some(Token {
                column,
                kind: TokenKind::Quoted(_),
            }) => Err(StepError::at(
                *column,
                format!("expected {expected}, found a quoted string"),
            )),
            None => Err(StepError::at(
                self.end_column,
                format!("expected {expected}, found end of line"),
            )),
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        if self
            .peek_word()
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
        {
            self.pos += 1;
            true
        } else {
            false
        }
    }
}

/// The size of a pattern write, within the limit of one step.
fn write_size(cur: &mut Cursor) -> Result<u64, StepError> {
    let col = cur.column();
    let n = size(cur)?;
    if n > limits::MAX_WRITE {
        return Err(StepError::at(
            col,
            format!(
                "a write of {n} bytes is more than the {} limit (1 GiB) of one step",
                limits::MAX_WRITE
            ),
        ));
    }
    Ok(n)
}

/// Parses one step line. `Ok(None)` for blank and comment-only lines.
pub(crate) fn parse_step(line: &str, line_no: Option<usize>) -> Result<Option<Step>, StepError> {
    let (tokens, text) = tokenize(line)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let end_column = text.chars().count() + 1;
    let mut cur = Cursor {
        tokens,
        pos: 0,
        end_column,
    };

    let background = cur.eat("bg");
    let (col, head) = cur.word(
        "an actor (client, server, listener), sleep, join, stop, or a fault (drop, reject, heal)",
    )?;
    let kind = match head.as_str() {
        "sleep" => StepKind::Control(Control::Sleep(duration(&mut cur, limits::MAX_STEP_WAIT)?)),
        "wait" => {
            let (col, what) =
                cur.word("`wire` (a step's actor comes first: client wait state ...)")?;
            if what != "wire" {
                return Err(StepError::at(
                    col,
                    format!(
                        "expected `wait wire closed`, or an actor first (client wait state ...), found {what:?}"
                    ),
                ));
            }
            let (col, event) =
                cur.word("an event on the wire: closed, acked or a segment such as c:R")?;
            match event.as_str() {
                "closed" => StepKind::Control(Control::WaitWire(WireEvent::Closed)),
                "acked" => StepKind::Control(Control::WaitWire(WireEvent::Acked)),
                token if token.contains(':') => StepKind::Control(Control::WaitSegment {
                    pattern: token.parse().map_err(|e| StepError::at(col, e))?,
                    since: None,
                }),
                other => {
                    return Err(StepError::at(
                        col,
                        format!(
                            "unknown wire event {other:?}; expected closed, acked or a segment such as c:R or s:F."
                        ),
                    ));
                }
            }
        }
        "join" => StepKind::Control(Control::Join(cur.word("the label of a bg step")?.1)),
        "drop" => StepKind::Control(Control::Fault(fault(Effect::Drop, &mut cur)?)),
        "reject" => StepKind::Control(Control::Fault(fault(Effect::Reject, &mut cur)?)),
        "heal" => {
            // `heal` alone removes every fault; `heal LABEL` one of them.
            let label = match cur.peek_word() {
                Some(w) if !MODIFIERS.contains(&w) => Some(cur.word("a fault's label")?.1),
                _ => None,
            };
            StepKind::Control(Control::Heal(label))
        }
        "stop" => {
            let (col, end) = cur.word("the end whose program to stop: server or client")?;
            match end.as_str() {
                "server" => StepKind::Control(Control::Stop(crate::tcp::Side::Server)),
                "client" => StepKind::Control(Control::Stop(crate::tcp::Side::Client)),
                other => {
                    return Err(StepError::at(
                        col,
                        format!(
                            "`stop` takes the end a program runs on (server or client), not {other:?}"
                        ),
                    ));
                }
            }
        }
        word if word == "every"
            || word.starts_with("client")
            || word.starts_with("server")
            || word.starts_with("listener") =>
        {
            let (actor, group) = if word == "every" {
                let (col, role) =
                    cur.word("client or server (every client ..., every server ...)")?;
                match role.as_str() {
                    "client" => (Actor::CLIENT, Some(Group::Every)),
                    "server" => (Actor::SERVER, Some(Group::Every)),
                    other => {
                        return Err(StepError::at(
                            col,
                            format!("`every` takes client or server, not {other:?}"),
                        ));
                    }
                }
            } else {
                target(word, col)?
            };
            if actor.role == Role::Listener && (actor.index != 1 || group.is_some()) {
                return Err(StepError::at(
                    col,
                    "a case has one listener: write `listener`",
                ));
            }
            let call = call(actor, &mut cur)?;
            if let Some(g) = group {
                if background {
                    return Err(StepError::at(
                        1,
                        "a step on several sockets cannot run in the background",
                    ));
                }
                let server_connect = actor.role == Role::Server && call == Call::Connect;
                if matches!(call, Call::Bind(_) | Call::Listen { .. }) || server_connect {
                    return Err(StepError::at(
                        col,
                        format!(
                            "`{} {}` takes one socket at a time; name one connection ({}#3)",
                            g.describe(actor.role),
                            call.verb().name(),
                            actor.role.name()
                        ),
                    ));
                }
            }
            StepKind::Socket {
                actor,
                call,
                background,
                group,
            }
        }
        other => {
            return Err(StepError::at(
                col,
                format!(
                    "unknown actor {other:?}; a step starts with client, server, listener, bg, sleep, join, drop, reject or heal"
                ),
            ));
        }
    };
    if background && !matches!(kind, StepKind::Socket { .. }) {
        return Err(StepError::at(
            1,
            "only socket calls can run in the background, not sleep, join or fault steps",
        ));
    }

    let mut within = None;
    let mut label = None;
    let mut since = None;
    let mut optional = false;
    while !cur.at_end() {
        let expected = "`within DURATION`, `since LABEL`, `as LABEL` or `optional`";
        let (col, w) = cur.word(expected)?;
        match w.as_str() {
            "optional" if !optional => {
                let state_wait = matches!(
                    kind,
                    StepKind::Socket {
                        call: Call::Wait {
                            what: WaitFor::State(_),
                            ..
                        },
                        ..
                    }
                );
                if !state_wait {
                    return Err(StepError::at(
                        col,
                        "only a `wait state` step can be optional",
                    ));
                }
                optional = true;
            }
            "within" if within.is_none() => {
                within = Some(duration(&mut cur, limits::MAX_STEP_WAIT)?)
            }
            "as" if label.is_none() => label = Some(label_word(&mut cur)?),
            "since" if since.is_none() => {
                let is_wait = matches!(
                    kind,
                    StepKind::Socket {
                        call: Call::Wait { .. },
                        ..
                    } | StepKind::Control(Control::WaitSegment { .. })
                );
                if !is_wait {
                    return Err(StepError::at(
                        col,
                        "only a wait step can be timed `since` another step",
                    ));
                }
                since = Some(label_word(&mut cur)?);
            }
            other => {
                return Err(StepError::at(
                    col,
                    format!("unexpected {other:?}; expected {expected}"),
                ));
            }
        }
    }
    let kind = match kind {
        StepKind::Socket {
            actor,
            call: Call::Wait { what, .. },
            background,
            group,
        } => StepKind::Socket {
            actor,
            call: Call::Wait {
                what,
                since,
                optional,
            },
            background,
            group,
        },
        StepKind::Control(Control::WaitSegment { pattern, .. }) => {
            StepKind::Control(Control::WaitSegment { pattern, since })
        }
        other => other,
    };
    if let StepKind::Socket {
        call, background, ..
    } = &kind
    {
        if *background && label.is_none() {
            return Err(StepError::at(
                end_column,
                "a bg step needs a label to join it: add `as NAME`",
            ));
        }
        if *background && !call.can_run_in_background() {
            return Err(StepError::at(
                1,
                "only write, read, shutdown, close, setsockopt, ioctl, connect AF_UNSPEC and wait readable/writable can run in the background",
            ));
        }
    }
    Ok(Some(Step {
        line: line_no,
        text,
        label,
        within,
        kind,
    }))
}

/// The words that may follow a step's call.
const MODIFIERS: [&str; 3] = ["within", "since", "as"];

fn label_word(cur: &mut Cursor) -> Result<String, StepError> {
    let (col, name) = cur.word("a label")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(StepError::at(
            col,
            "a label uses only letters, digits, '_' and '-'",
        ));
    }
    if looks_like_implicit_key(&name) {
        return Err(StepError::at(
            col,
            format!(
                "{name:?} is how reports name an unlabelled step (lineN, setupN); choose another label"
            ),
        ));
    }
    Ok(name)
}

fn call(actor: Actor, cur: &mut Cursor) -> Result<Call, StepError> {
    let (col, verb) = cur.word(
        "a call (connect, accept, write, read, shutdown, close, setsockopt, ioctl, wait, listen, bind)",
    )?;
    let only = |allowed: &[Role]| -> Result<(), StepError> {
        if allowed.contains(&actor.role) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed.iter().map(|a| a.name()).collect();
            Err(StepError::at(
                col,
                format!(
                    "`{verb}` is a {} step, not a {} step",
                    names.join(" or "),
                    actor.role.name()
                ),
            ))
        }
    };
    let data_side = [Role::Client, Role::Server];
    let call = match verb.as_str() {
        "listen" => {
            only(&[Role::Listener])?;
            let backlog = if cur.eat("backlog") {
                let col = cur.column();
                let n = int(cur, "a backlog length")?;
                i32::try_from(n)
                    .ok()
                    .filter(|n| i64::from(*n) <= limits::MAX_BACKLOG)
                    .ok_or_else(|| {
                        StepError::at(
                            col,
                            format!("backlog {n} is too long; at most {}", limits::MAX_BACKLOG),
                        )
                    })?
            } else {
                16
            };
            Call::Listen { backlog }
        }
        "connect" => {
            only(&data_side)?;
            if cur.eat("AF_UNSPEC") {
                Call::Disconnect
            } else {
                Call::Connect
            }
        }
        "accept" => {
            only(&[Role::Server])?;
            Call::Accept
        }
        "bind" => {
            if actor.role != Role::Client {
                // The listener, or a server socket of its own, binds the
                // server's address (port 9000).
                if cur.peek_word().is_some_and(|w| w.parse::<u64>().is_ok()) {
                    return Err(StepError::at(
                        cur.column(),
                        format!(
                            "`{} bind` binds the server's address (port 9000) and takes no port; only `client bind PORT` does",
                            actor.role.name()
                        ),
                    ));
                }
                Call::Bind(None)
            } else {
                let col = cur.column();
                let port = int(cur, "a local port number")?;
                Call::Bind(Some(u16::try_from(port).map_err(|_| {
                    StepError::at(col, format!("port {port} is above 65535"))
                })?))
            }
        }
        "write" => {
            only(&data_side)?;
            let payload = match cur.tokens.get(cur.pos) {
                Some(Token {
                    kind: TokenKind::Quoted(bytes),
                    ..
                }) => {
                    let text = bytes.clone();
                    cur.pos += 1;
                    if cur.eat("+") {
                        Payload::TextThenPattern(text, write_size(cur)?)
                    } else {
                        Payload::Text(text)
                    }
                }
                _ => Payload::Pattern(write_size(cur)?),
            };
            let (mut nosignal, mut dontwait, mut more) = (false, false, false);
            loop {
                if cur.eat("nosignal") || cur.eat("MSG_NOSIGNAL") {
                    nosignal = true;
                } else if cur.eat("dontwait") || cur.eat("MSG_DONTWAIT") {
                    dontwait = true;
                } else if cur.eat("more") || cur.eat("MSG_MORE") {
                    more = true;
                } else {
                    break;
                }
            }
            Call::Write {
                payload,
                nosignal,
                dontwait,
                more,
            }
        }
        "read" => {
            only(&data_side)?;
            let amount = if cur.eat("until-eof") {
                ReadAmount::UntilEof
            } else if cur.eat("available") {
                ReadAmount::Available
            } else {
                ReadAmount::Exactly(size(cur).map_err(|e| StepError {
                    message: format!("{}; or until-eof, available", e.message),
                    ..e
                })?)
            };
            let (mut dontwait, mut peek, mut keep) = (false, false, false);
            loop {
                if cur.eat("dontwait") || cur.eat("MSG_DONTWAIT") {
                    dontwait = true;
                } else if cur.eat("peek") || cur.eat("MSG_PEEK") {
                    peek = true;
                } else if cur.eat("keep") {
                    keep = true;
                } else {
                    break;
                }
            }
            Call::Read {
                amount,
                dontwait,
                peek,
                keep,
            }
        }
        "shutdown" => {
            let (col, how) = cur.word("RD, WR or RDWR")?;
            let how = match how.to_ascii_uppercase().trim_start_matches("SHUT_") {
                "RD" => How::Read,
                "WR" => How::Write,
                "RDWR" => How::Both,
                _ => {
                    return Err(StepError::at(
                        col,
                        format!("unknown shutdown mode {how:?}; expected RD, WR or RDWR"),
                    ));
                }
            };
            Call::Shutdown(how)
        }
        "close" => Call::Close,
        "setsockopt" => Call::SetOption(sockopt(cur)?),
        "getsockopt" => {
            let (col, name) = cur.word("SO_ERROR, TCP_INFO or SO_LINGER")?;
            Call::GetOption(match name.to_ascii_uppercase().as_str() {
                "SO_ERROR" => GetOpt::SoError,
                "TCP_INFO" => GetOpt::TcpInfo,
                "SO_LINGER" => GetOpt::Linger,
                other => {
                    return Err(StepError::at(
                        col,
                        format!("cannot read {other:?}; expected SO_ERROR, TCP_INFO or SO_LINGER"),
                    ));
                }
            })
        }
        "ioctl" => {
            only(&data_side)?;
            let (col, q) = cur.word("FIONREAD, SIOCINQ, SIOCOUTQ or SIOCOUTQNSD")?;
            Call::Ioctl(match q.to_ascii_uppercase().as_str() {
                "FIONREAD" | "SIOCINQ" => IoctlQuery::InQueue,
                "SIOCOUTQ" => IoctlQuery::OutQueue,
                "SIOCOUTQNSD" => IoctlQuery::OutQueueNotSent,
                _ => {
                    return Err(StepError::at(
                        col,
                        format!(
                            "unknown ioctl {q:?}; expected FIONREAD, SIOCINQ, SIOCOUTQ or SIOCOUTQNSD"
                        ),
                    ));
                }
            })
        }
        "wait" => {
            let (col, what) =
                cur.word("state STATE, timer TIMER, queued N, readable or writable")?;
            let what = match what.as_str() {
                "state" => {
                    let (col, name) = cur.word("a TCP state such as FIN-WAIT-2")?;
                    WaitFor::State(name.parse().map_err(|e| StepError::at(col, e))?)
                }
                "timer" => {
                    let (col, name) = cur
                        .word("a timer: retransmit, keep-alive, time-wait or zero-window-probe")?;
                    WaitFor::Timer(name.parse().map_err(|e| StepError::at(col, e))?)
                }
                "queued" => {
                    only(&[Role::Listener])?;
                    let col = cur.column();
                    let n = int(cur, "how many connections")?;
                    WaitFor::Queued(
                        u32::try_from(n)
                            .ok()
                            .filter(|n| *n <= limits::MAX_CONNECTIONS)
                            .ok_or_else(|| {
                                StepError::at(
                                    col,
                                    format!(
                                        "{n} queued connections: at most {}",
                                        limits::MAX_CONNECTIONS
                                    ),
                                )
                            })?,
                    )
                }
                "readable" => WaitFor::Readable,
                "writable" => WaitFor::Writable,
                other => {
                    return Err(StepError::at(
                        col,
                        format!(
                            "cannot wait for {other:?}; expected state STATE, timer TIMER, queued N, readable or writable"
                        ),
                    ));
                }
            };
            Call::Wait {
                what,
                since: None,
                optional: false,
            }
        }
        other => {
            return Err(StepError::at(
                col,
                format!(
                    "unknown call {other:?}; expected one of listen, bind, connect, accept, write, read, shutdown, close, setsockopt, getsockopt, ioctl, wait"
                ),
            ));
        }
    };
    Ok(call)
}

fn sockopt(cur: &mut Cursor) -> Result<SockOpt, StepError> {
    const NAMES: &str = "SO_LINGER, SO_RCVBUF, SO_SNDBUF, SO_RCVLOWAT, SO_REUSEADDR, SO_REUSEPORT, SO_KEEPALIVE, TCP_NODELAY, TCP_CORK, TCP_LINGER2, TCP_USER_TIMEOUT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT or O_NONBLOCK";
    let (col, name) = cur.word(&format!("an option: {NAMES}"))?;
    Ok(match name.to_ascii_uppercase().as_str() {
        "SO_LINGER" => {
            if cur.eat("off") {
                SockOpt::Linger(None)
            } else if cur.eat("on") {
                let col = cur.column();
                let secs = int(cur, "the linger time in seconds")?;
                SockOpt::Linger(Some(
                    i32::try_from(secs)
                        .ok()
                        .filter(|s| i64::from(*s) <= limits::MAX_LINGER_SECS)
                        .ok_or_else(|| {
                            StepError::at(
                                col,
                                format!(
                                    "SO_LINGER {secs} s is too long; at most {} s",
                                    limits::MAX_LINGER_SECS
                                ),
                            )
                        })?,
                ))
            } else {
                return Err(StepError::at(
                    cur.column(),
                    "expected `on SECONDS` or `off`",
                ));
            }
        }
        "SO_RCVBUF" => SockOpt::RcvBuf(buffer_size(cur)?),
        "SO_SNDBUF" => SockOpt::SndBuf(buffer_size(cur)?),
        "SO_RCVLOWAT" => SockOpt::RcvLowat(buffer_size(cur)?),
        "SO_REUSEADDR" => SockOpt::ReuseAddr(flag(cur)?),
        "SO_REUSEPORT" => SockOpt::ReusePort(flag(cur)?),
        "SO_KEEPALIVE" => SockOpt::KeepAlive(flag(cur)?),
        "TCP_NODELAY" => SockOpt::NoDelay(flag(cur)?),
        "TCP_CORK" => SockOpt::Cork(flag(cur)?),
        "TCP_KEEPIDLE" => SockOpt::KeepIdle(whole_seconds(cur, "TCP_KEEPIDLE")?),
        "TCP_KEEPINTVL" => SockOpt::KeepIntvl(whole_seconds(cur, "TCP_KEEPINTVL")?),
        "TCP_KEEPCNT" => {
            let col = cur.column();
            let n = int(cur, "a probe count")?;
            SockOpt::KeepCnt(
                i32::try_from(n)
                    .ok()
                    .filter(|n| (1..=127).contains(n))
                    .ok_or_else(|| {
                        StepError::at(col, format!("TCP_KEEPCNT {n}: expected 1 to 127"))
                    })?,
            )
        }
        "TCP_LINGER2" => {
            let (col, w) = cur.word("seconds (may be -1)")?;
            SockOpt::Linger2(
                w.parse::<i32>()
                    .ok()
                    .filter(|s| (-1..=limits::MAX_LINGER_SECS).contains(&i64::from(*s)))
                    .ok_or_else(|| {
                        StepError::at(
                            col,
                            format!(
                                "expected seconds from -1 to {}, found {w:?}",
                                limits::MAX_LINGER_SECS
                            ),
                        )
                    })?,
            )
        }
        "TCP_USER_TIMEOUT" => {
            let col = cur.column();
            let d = duration(cur, limits::MAX_STEP_WAIT)?;
            SockOpt::UserTimeout(
                u32::try_from(d.as_millis())
                    .map_err(|_| StepError::at(col, "TCP_USER_TIMEOUT is at most 4294967295 ms"))?,
            )
        }
        "O_NONBLOCK" => SockOpt::NonBlocking(flag(cur)?),
        _ => {
            return Err(StepError::at(
                col,
                format!("unknown option {name:?}; expected {NAMES}"),
            ));
        }
    })
}

/// `DIRECTION [flags FLAGS|=FLAGS] [first N]` after `drop` or `reject`.
fn fault(effect: Effect, cur: &mut Cursor) -> Result<Rule, StepError> {
    const DIRS: &str = "client->server, server->client, both or all";
    let (col, dir) = cur.word(&format!("a direction: {DIRS}"))?;
    let direction = match dir.as_str() {
        "client->server" => Direction::ClientToServer,
        "server->client" => Direction::ServerToClient,
        "both" | "all" => Direction::Both,
        other => {
            return Err(StepError::at(
                col,
                format!("unknown direction {other:?}; expected {DIRS}"),
            ));
        }
    };
    let mut rule = Rule {
        effect,
        direction,
        flags: FlagMatch::Any,
        first: None,
    };
    if cur.eat("flags") {
        let (col, spec) = cur.word("flags such as FIN, FIN,ACK or =ACK (exactly)")?;
        rule.flags = match spec.strip_prefix('=') {
            Some(exact) => Flags::parse_names(exact).map(FlagMatch::Exactly),
            None => Flags::parse_names(&spec).map(FlagMatch::AllOf),
        }
        .map_err(|m| StepError::at(col, m))?;
    }
    if cur.eat("first") {
        let col = cur.column();
        let n = int(cur, "how many matching segments (first N)")?;
        rule.first = Some(u32::try_from(n).map_err(|_| {
            StepError::at(col, format!("first {n} is too many; at most 4294967295"))
        })?);
    }
    Ok(rule)
}

/// A duration in whole seconds, at least 1 (TCP_KEEPIDLE, TCP_KEEPINTVL).
fn whole_seconds(cur: &mut Cursor, what: &str) -> Result<i32, StepError> {
    let col = cur.column();
    let d = duration(cur, limits::MAX_STEP_WAIT)?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return Err(StepError::at(
            col,
            format!("{what} takes whole seconds, at least 1s"),
        ));
    }
    i32::try_from(d.as_secs()).map_err(|_| StepError::at(col, format!("{what} is too long")))
}

fn flag(cur: &mut Cursor) -> Result<bool, StepError> {
    let (col, w) = cur.word("on or off")?;
    match w.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" => Ok(true),
        "off" | "0" | "false" => Ok(false),
        _ => Err(StepError::at(
            col,
            format!("expected on or off, found {w:?}"),
        )),
    }
}

fn int(cur: &mut Cursor, what: &str) -> Result<u64, StepError> {
    let (col, w) = cur.word(what)?;
    w.parse()
        .map_err(|_| StepError::at(col, format!("expected {what}, found {w:?}")))
}

fn size(cur: &mut Cursor) -> Result<u64, StepError> {
    let (col, w) = cur.word("a byte count such as 1000, 64KiB or 1MiB")?;
    parse_size(&w).ok_or_else(|| {
        StepError::at(
            col,
            format!("expected a byte count such as 1000, 64KiB or 1MiB, found {w:?}"),
        )
    })
}

/// A socket buffer size: a byte count that fits the C `int` the option takes.
fn buffer_size(cur: &mut Cursor) -> Result<i32, StepError> {
    let col = cur.column();
    let n = size(cur)?;
    i32::try_from(n).map_err(|_| {
        StepError::at(
            col,
            format!("a buffer of {n} bytes does not fit the option (at most 2147483647)"),
        )
    })
}

fn duration(cur: &mut Cursor, max: Duration) -> Result<Duration, StepError> {
    let (col, w) = cur.word("a duration such as 200ms or 2s")?;
    let d = parse_duration(&w).ok_or_else(|| {
        StepError::at(
            col,
            format!("expected a duration such as 200ms or 2s, found {w:?}"),
        )
    })?;
    if d > max {
        return Err(StepError::at(
            col,
            format!("{w} is longer than the {} s a step may wait", max.as_secs()),
        ));
    }
    Ok(d)
}

/// `1000`, `64KiB`, `1MiB`, `2KB` (decimal kilo) -> bytes.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `200ms`, `2s`, `1.5s`, `500us`, `2min` -> Duration. `None` for anything
/// else, including values too large for a `Duration` (about 1.8e19 s).
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" | "min" => n * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(line: &str) -> Step {
        parse_step(line, Some(1)).unwrap().unwrap()
    }

    fn call_of(line: &str) -> Call {
        match step(line).kind {
            StepKind::Socket { call, .. } => call,
            other => panic!("not a socket call: {other:?}"),
        }
    }

    fn control_of(line: &str) -> Control {
        match step(line).kind {
            StepKind::Control(c) => c,
            other => panic!("not a control step: {other:?}"),
        }
    }

    fn err(line: &str) -> StepError {
        parse_step(line, Some(1)).unwrap_err()
    }

    #[test]
    fn parses_the_seed_trace() {
        assert_eq!(
            call_of("server write 100KiB"),
            Call::Write {
                payload: Payload::Pattern(100 * 1024),
                nosignal: false,
                dontwait: false,
                more: false
            }
        );
        assert_eq!(call_of("server shutdown WR"), Call::Shutdown(How::Write));
        assert_eq!(
            call_of("client read until-eof"),
            Call::Read {
                amount: ReadAmount::UntilEof,
                dontwait: false,
                peek: false,
                keep: false
            }
        );
        assert_eq!(
            call_of(r#"client write "Thank you""#),
            Call::Write {
                payload: Payload::Text(b"Thank you".to_vec()),
                nosignal: false,
                dontwait: false,
                more: false
            }
        );
        assert_eq!(
            call_of("server read 9"),
            Call::Read {
                amount: ReadAmount::Exactly(9),
                dontwait: false,
                peek: false,
                keep: false
            }
        );
        assert_eq!(
            call_of("client read available keep"),
            Call::Read {
                amount: ReadAmount::Available,
                dontwait: false,
                peek: false,
                keep: true
            }
        );
        assert_eq!(
            control_of("stop server"),
            Control::Stop(crate::tcp::Side::Server)
        );
        let s = step("client close");
        assert_eq!(s.actor(), Some(Actor::CLIENT));
        assert_eq!(s.verb(), Verb::Close);
        assert_eq!(s.key(0), "line1");
    }

    #[test]
    fn parses_background_labels_and_bounds() {
        let s = step("client wait state CLOSED since lc within 4s as gone");
        assert_eq!(s.since(), Some("lc"));
        assert_eq!(s.label.as_deref(), Some("gone"));
        assert_eq!(s.key(0), "gone");
        assert_eq!(s.within, Some(Duration::from_secs(4)));
        let e = err("client close since lc");
        assert_eq!(e.column, 14, "{e:?}");
        assert!(e.message.contains("only a wait step"), "{e:?}");
        let s = step("bg client close as lc within 3s   # linger close blocks");
        assert!(s.background());
        assert_eq!(s.label.as_deref(), Some("lc"));
        assert_eq!(s.within, Some(Duration::from_secs(3)));
        assert_eq!(s.text, "bg client close as lc within 3s");
        assert_eq!(control_of("join lc"), Control::Join("lc".into()));
    }

    #[test]
    fn parses_options_waits_and_ioctls() {
        assert_eq!(
            call_of("client setsockopt SO_LINGER on 0"),
            Call::SetOption(SockOpt::Linger(Some(0)))
        );
        assert_eq!(
            call_of("client setsockopt SO_LINGER off"),
            Call::SetOption(SockOpt::Linger(None))
        );
        assert_eq!(
            call_of("client setsockopt SO_RCVBUF 4KiB"),
            Call::SetOption(SockOpt::RcvBuf(4096))
        );
        assert_eq!(
            call_of("client setsockopt TCP_LINGER2 -1"),
            Call::SetOption(SockOpt::Linger2(-1))
        );
        assert_eq!(
            call_of("client setsockopt TCP_USER_TIMEOUT 500ms"),
            Call::SetOption(SockOpt::UserTimeout(500))
        );
        assert_eq!(
            call_of("server setsockopt O_NONBLOCK on"),
            Call::SetOption(SockOpt::NonBlocking(true))
        );
        assert_eq!(
            call_of("client wait state FIN_WAIT2"),
            Call::Wait {
                what: WaitFor::State(TcpState::FinWait2),
                since: None,
                optional: false
            }
        );
        assert_eq!(
            call_of("client wait state FIN-WAIT-1 within 1s as o optional"),
            Call::Wait {
                what: WaitFor::State(TcpState::FinWait1),
                since: None,
                optional: true
            }
        );
        assert_eq!(
            control_of("wait wire closed within 2s"),
            Control::WaitWire(WireEvent::Closed)
        );
        assert_eq!(
            control_of("wait wire acked"),
            Control::WaitWire(WireEvent::Acked)
        );
        assert!(
            err("client close optional")
                .message
                .contains("only a `wait state`")
        );
        assert!(err("wait wire open").message.contains("unknown wire event"));
        assert!(err("wait state CLOSED").message.contains("actor first"));
        assert_eq!(
            call_of("server ioctl FIONREAD"),
            Call::Ioctl(IoctlQuery::InQueue)
        );
        assert_eq!(call_of("client connect AF_UNSPEC"), Call::Disconnect);
        assert_eq!(
            call_of("listener listen backlog 1"),
            Call::Listen { backlog: 1 }
        );
        assert_eq!(
            control_of("sleep 10ms"),
            Control::Sleep(Duration::from_millis(10))
        );
    }

    #[test]
    fn actors_take_a_connection_number() {
        let s = step("client#3 write 10 # a comment");
        assert_eq!(
            s.actor(),
            Some(Actor {
                role: Role::Client,
                index: 3
            })
        );
        assert_eq!(s.text, "client#3 write 10");
        assert_eq!(s.actor().unwrap().to_string(), "client#3");
        assert_eq!(Actor::SERVER.to_string(), "server");
        assert_eq!("server#1".parse::<Actor>(), Ok(Actor::SERVER));
        assert!(err("client#0 close").message.contains("connection number"));
        assert!(err("listener#2 listen").message.contains("one listener"));
    }

    #[test]
    fn blank_and_comment_lines_are_not_steps() {
        assert_eq!(parse_step("   ", Some(1)).unwrap(), None);
        assert_eq!(parse_step("  # just a comment", Some(1)).unwrap(), None);
    }

    #[test]
    fn parses_faults_heal_and_bind() {
        let s = step("drop client->server flags FIN first 1 as lost");
        assert_eq!(s.actor(), None);
        assert_eq!(s.verb(), Verb::Drop);
        assert_eq!(s.label.as_deref(), Some("lost"));
        assert_eq!(
            control_of("drop client->server flags FIN first 1 as lost"),
            Control::Fault(Rule {
                effect: Effect::Drop,
                direction: Direction::ClientToServer,
                flags: FlagMatch::AllOf(Flags::FIN),
                first: Some(1),
            })
        );
        assert_eq!(
            control_of("reject server->client flags =ACK"),
            Control::Fault(Rule {
                effect: Effect::Reject,
                direction: Direction::ServerToClient,
                flags: FlagMatch::Exactly(Flags::ACK),
                first: None,
            })
        );
        assert!(matches!(
            control_of("drop all"),
            Control::Fault(Rule {
                direction: Direction::Both,
                flags: FlagMatch::Any,
                ..
            })
        ));
        assert_eq!(control_of("heal"), Control::Heal(None));
        assert_eq!(control_of("heal lost"), Control::Heal(Some("lost".into())));
        assert_eq!(control_of("heal as h"), Control::Heal(None));
        assert_eq!(call_of("client bind 40000"), Call::Bind(Some(40000)));
        assert_eq!(call_of("listener bind"), Call::Bind(None));

        let e = err("drop sideways");
        assert_eq!(e.column, 6);
        assert!(e.message.contains("client->server"), "{}", e.message);
        let e = err("drop both flags FIN,EXE");
        assert_eq!(e.column, 17);
        assert!(
            e.message.contains("unknown TCP flag \"EXE\""),
            "{}",
            e.message
        );
        assert!(err("client bind 70000").message.contains("above 65535"));
        // A server socket of its own binds the server's address: no port.
        assert_eq!(call_of("server bind"), Call::Bind(None));
        assert!(err("server bind 1").message.contains("takes no port"));
        assert_eq!(call_of("server#2 connect"), Call::Connect);
        assert!(
            err("listener connect")
                .message
                .contains("client or server step")
        );
        let e = err("server#1..3 connect");
        assert!(
            e.message
                .contains("`server#1..3 connect` takes one socket at a time"),
            "{}",
            e.message
        );
        assert!(err("bg drop all as x").message.contains("background"));
    }

    /// Regression: `as` casts let absurd numbers through `check` as other
    /// numbers (`backlog 4294967296` became 0).
    #[test]
    fn numbers_that_do_not_fit_are_errors_at_their_column() {
        let e = err("listener listen backlog 4294967296");
        assert_eq!(e.column, 25);
        assert!(e.message.contains("too long"), "{}", e.message);
        let e = err("client setsockopt SO_LINGER on 4294967297");
        assert_eq!(e.column, 32);
        assert!(e.message.contains("too long"), "{}", e.message);
        let e = err("client setsockopt TCP_USER_TIMEOUT 5000000000s");
        assert_eq!(e.column, 36);
        let e = err("client setsockopt SO_RCVBUF 4GiB");
        assert!(e.message.contains("does not fit"), "{}", e.message);
        let e = err("client setsockopt TCP_LINGER2 99999999999");
        assert!(e.message.contains("from -1"), "{}", e.message);
    }

    #[test]
    fn labels_cannot_take_the_form_of_implicit_keys() {
        assert!(err("client close as line3").message.contains("lineN"));
        assert!(err("client close as setup1").message.contains("lineN"));
        assert_eq!(
            step("client close as lineup").label.as_deref(),
            Some("lineup")
        );
    }

    #[test]
    fn errors_point_at_the_offending_column() {
        let e = err("client wrtie 10");
        assert_eq!(e.column, 8);
        assert!(
            e.message.contains("unknown call \"wrtie\""),
            "{}",
            e.message
        );

        let e = err("client shutdown SIDEWAYS");
        assert_eq!(e.column, 17);
        assert!(e.message.contains("RD, WR or RDWR"), "{}", e.message);

        let e = err("listener write 10");
        assert!(e.message.contains("not a listener step"), "{}", e.message);

        let e = err("bg client close");
        assert!(e.message.contains("needs a label"), "{}", e.message);
        let e = err("bg client wait state TIME-WAIT as w");
        assert!(
            e.message.contains("can run in the background"),
            "{}",
            e.message
        );

        let e = err(r#"client write "unterminated"#);
        assert_eq!(e.column, 14);

        let e = err("client read 10 extra");
        assert_eq!(e.column, 16);

        let e = err("client wait state FIN-WAIT-3");
        assert!(e.message.contains("unknown TCP state"), "{}", e.message);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("2KB"), Some(2000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1TiB"), None);
        assert_eq!(parse_size("KiB"), None);
        assert_eq!(parse_size("18446744073709551615MiB"), None);
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), None);
        // Regression: Duration::from_secs_f64 panicked at about 1.8e19 s.
        assert_eq!(parse_duration("18446744073709551616s"), None);
        assert_eq!(parse_duration("1e400s"), None);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// The parser never panics and, on failure, points inside the line
            /// (or just past its end).
            #[test]
            fn never_panics_and_columns_are_in_range(line in "[ -~]{0,60}") {
                if let Err(e) = parse_step(&line, Some(1)) {
                    prop_assert!(e.column >= 1 && e.column <= line.chars().count() + 1,
                        "column {} for {:?}", e.column, line);
                }
            }

            /// Written sizes survive a round trip through the step text.
            #[test]
            fn write_sizes_round_trip(n in 0u64..10_000_000) {
                let s = parse_step(&format!("client write {n}"), None).unwrap().unwrap();
                let StepKind::Socket { call, .. } = s.kind else { panic!() };
                prop_assert_eq!(call, Call::Write { payload: Payload::Pattern(n), nosignal: false, dontwait: false, more: false });
            }
        }
    }

    #[test]
    fn timers_the_accept_queue_and_so_linger_can_be_read() {
        use crate::tcp::TimerKind;
        for (text, kind) in [
            ("client wait timer keep-alive", TimerKind::KeepAlive),
            ("client wait timer keepalive", TimerKind::KeepAlive),
            ("client wait timer persist", TimerKind::ZeroWindowProbe),
            ("server wait timer retransmit", TimerKind::Retransmit),
            ("client wait timer time-wait", TimerKind::TimeWait),
        ] {
            assert!(
                matches!(call_of(text), Call::Wait { what: WaitFor::Timer(k), .. } if k == kind),
                "{text}"
            );
        }
        assert!(
            err("client wait timer idle")
                .message
                .contains("unknown timer")
        );
        assert!(matches!(
            call_of("listener wait queued 3"),
            Call::Wait {
                what: WaitFor::Queued(3),
                ..
            }
        ));
        assert!(err("client wait queued 1").message.contains("listener"));
        assert!(
            err("listener wait queued 20001")
                .message
                .contains("at most 20000")
        );
        assert_eq!(
            call_of("server getsockopt SO_LINGER"),
            Call::GetOption(GetOpt::Linger)
        );
        assert_eq!(
            call_of("server setsockopt SO_RCVLOWAT 10"),
            Call::SetOption(SockOpt::RcvLowat(10))
        );
        // A listener can be shut down too.
        assert_eq!(call_of("listener shutdown RD"), Call::Shutdown(How::Read));
    }

    #[test]
    fn a_segment_wait_names_a_segment_as_the_trace_writes_it() {
        use crate::tcp::{Flags, Side};
        let Control::WaitSegment { pattern, since } = control_of("wait wire c:R as rst") else {
            panic!("a segment wait")
        };
        assert_eq!(
            (pattern.from, pattern.flags, pattern.len, since),
            (Side::Client, Flags::RST, None, None)
        );
        let Control::WaitSegment { pattern, since } =
            control_of("wait wire s:P.100 since rst within 2s as data")
        else {
            panic!("a segment wait")
        };
        assert_eq!(pattern.from, Side::Server);
        assert_eq!(pattern.flags.bits(), Flags::PSH.bits() | Flags::ACK.bits());
        assert_eq!((pattern.len, since.as_deref()), (Some(100), Some("rst")));
        assert!(pattern.matches(Side::Server, pattern.flags, 100));
        assert!(!pattern.matches(Side::Server, pattern.flags, 99));
        assert!(!pattern.matches(Side::Client, pattern.flags, 100));
        // Exact flags: an RST with ACK is not an RST alone.
        let rst: SegmentPattern = "c:R".parse().unwrap();
        assert!(!rst.matches(
            Side::Client,
            Flags::from_bits(Flags::RST.bits() | Flags::ACK.bits()),
            0
        ));
        for bad in ["x:R", "c:", "c:RR", "c:Q", "c:R.x", "c:12"] {
            assert!(
                err(&format!("wait wire {bad}"))
                    .message
                    .contains("not a segment"),
                "{bad}"
            );
        }
        // `since` on wire waits: only for segment waits.
        assert!(
            err("wait wire closed since x")
                .message
                .contains("only a wait step")
        );
    }
}
