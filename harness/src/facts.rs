//! The fact model: every fact a case report holds, each named by one path
//! (`wire.client.rst`, `steps.lclose.duration_ms`) and read by one getter.
//!
//! This is the only place that knows which facts exist. Expectations check
//! their paths here ([`FactPath::parse`]), verdicts read observed values
//! here ([`resolve`]), baselines and `compare` fingerprint a case with the
//! same paths ([`fingerprint`]), and every sink that shows a fact by name
//! uses the same spelling. Adding a fact is one entry in [`KINDS`].
//!
//! A fact the stack could not observe resolves to [`Observed::Unobserved`]
//! with the reason the outcome gives (`Outcome::unobserved`), never to a
//! guess or a zero. This module reads facts; it never computes one.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value, json};

use crate::driver::StepRecord;
use crate::fault::FaultRecord;
use crate::outcome::Outcome;
use crate::scenario::Verb;
use crate::tcp::Side;

/// The parts of a case that hold facts: its calls, its fault rules and its
/// outcome. A case report lends one (`CaseReport::facts`); so does a case
/// being judged before its report exists.
#[derive(Clone, Copy, Debug)]
pub struct CaseFacts<'a> {
    pub steps: &'a [StepRecord],
    pub faults: &'a [FaultRecord],
    pub outcome: &'a Outcome,
}

/// What a report says about one fact.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// The observed value; `null` where the fact is observed to be absent
    /// (no errno, no FIN yet).
    Value(Value),
    /// The stack or the run could not observe it; why.
    Unobserved(String),
}

impl Observed {
    /// The value, with an unobserved fact as null.
    pub fn value(&self) -> Value {
        match self {
            Observed::Value(v) => v.clone(),
            Observed::Unobserved(_) => Value::Null,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Observed::Value(_) => None,
            Observed::Unobserved(r) => Some(r),
        }
    }
}

/// A data direction of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    pub(crate) const BOTH: [Direction; 2] = [Direction::ClientToServer, Direction::ServerToClient];

    pub fn name(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client_to_server",
            Direction::ServerToClient => "server_to_client",
        }
    }

    /// The side that writes in this direction.
    pub(crate) fn writer(self) -> Side {
        match self {
            Direction::ClientToServer => Side::Client,
            Direction::ServerToClient => Side::Server,
        }
    }
}

/// How `compare` and baselines treat a fact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Behaviour: part of a case's fingerprint (baselines, `compare`).
    Behaviour,
    /// Measured, machine-dependent: timings, retransmissions, timers,
    /// byte counts on the wire. Expectations may use them (with ranges);
    /// fingerprints leave them out.
    Measurement,
}

impl Use {
    /// The word `teardown facts` and the README use.
    pub fn name(self) -> &'static str {
        match self {
            Use::Behaviour => "behaviour",
            Use::Measurement => "measurement",
        }
    }
}

/// The placeholders a fact pattern may hold, and what they bind.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Binding {
    pub side: Option<Side>,
    pub direction: Option<Direction>,
    /// A step key (label, `lineN`, `setupN`) or a fault key.
    pub key: Option<String>,
    /// An errno, TCP state, ending, TIME-WAIT side or counter name.
    pub name: Option<String>,
}

type Getter = fn(&CaseFacts, &Binding) -> Option<Value>;

/// One kind of fact: its path pattern, what it means, and how to read it.
pub struct FactKind {
    /// `wire.<side>.rst`; placeholders `<side>`, `<direction>`, `<step>`,
    /// `<fault>`, `<group>` (a step on several sockets), and names:
    /// `<errno>`, `<state>`, `<ending>`, `<tw>`, `<counter>`.
    pub pattern: &'static str,
    pub doc: &'static str,
    pub used_as: Use,
    /// When a behaviour fact is a measurement after all in a given case
    /// (the byte counts of a write that filled a buffer).
    measured_when: Option<fn(&CaseFacts, &Binding) -> bool>,
    /// The value in a report; `None` when the thing it is about does not
    /// exist in that report (an unknown step key), which resolves to null.
    get: Getter,
}

/// A step that moved fewer bytes than it asked for (a `dontwait` fill):
/// how much it moved measures the buffers at that moment.
fn partial_step(c: &CaseFacts, b: &Binding) -> bool {
    step(c, b).is_some_and(|s| s.result.partial)
}

/// A direction some partial write went into: its written, read and lost
/// totals measure the buffers too.
fn partial_direction(c: &CaseFacts, b: &Binding) -> bool {
    let writer = b.direction.unwrap_or(Direction::ClientToServer).writer();
    c.steps.iter().any(|s| {
        s.verb == Verb::Write && s.result.partial && s.actor.and_then(|a| a.side()) == Some(writer)
    })
}

/// `steps.<step>.ret` of a step that returns a descriptor is "fd": the
/// number depends on what else the process has open, that it succeeded is
/// the behaviour.
fn step_ret(c: &CaseFacts, b: &Binding) -> Option<Value> {
    let s = step(c, b)?;
    Some(match s.result.ret {
        Some(fd) if fd >= 0 && s.verb == Verb::Accept => json!("fd"),
        other => json!(other),
    })
}

fn step<'a>(c: &CaseFacts<'a>, b: &Binding) -> Option<&'a StepRecord> {
    let key = b.key.as_deref()?;
    c.steps.iter().find(|s| s.key == key)
}

fn fault<'a>(c: &CaseFacts<'a>, b: &Binding) -> Option<&'a FaultRecord> {
    let key = b.key.as_deref()?;
    c.faults.iter().find(|f| f.key == key)
}

fn side(b: &Binding) -> Side {
    b.side.unwrap_or(Side::Client)
}

fn flow<'a>(c: &CaseFacts<'a>, b: &Binding) -> &'a crate::outcome::Flow {
    match b.direction.unwrap_or(Direction::ClientToServer) {
        Direction::ClientToServer => &c.outcome.data.client_to_server,
        Direction::ServerToClient => &c.outcome.data.server_to_client,
    }
}

/// A step on several sockets' counts.
fn group<'a>(c: &CaseFacts<'a>, b: &Binding) -> Option<&'a crate::driver::GroupResult> {
    step(c, b)?.result.group.as_ref()
}

fn summary<'a>(c: &CaseFacts<'a>) -> Option<&'a crate::outcome::ConnectionSummary> {
    c.outcome.connection_summary.as_ref()
}

/// A count by name: 0 where nothing was counted under the name.
fn count_of(m: &BTreeMap<String, u32>, b: &Binding) -> Value {
    json!(
        b.name
            .as_deref()
            .and_then(|n| m.get(n))
            .copied()
            .unwrap_or(0)
    )
}

macro_rules! wire_side {
    ($field:ident) => {
        |c: &CaseFacts, b: &Binding| Some(json!(c.outcome.wire.as_ref()?.sides[side(b)].$field))
    };
}
macro_rules! wire {
    ($field:ident) => {
        |c: &CaseFacts, _: &Binding| Some(json!(c.outcome.wire.as_ref()?.$field))
    };
}
macro_rules! data {
    ($field:ident) => {
        |c: &CaseFacts, b: &Binding| Some(json!(flow(c, b).$field))
    };
}
macro_rules! step_field {
    ($field:ident) => {
        |c: &CaseFacts, b: &Binding| Some(json!(step(c, b)?.result.$field))
    };
}

/// Every fact a case report holds. Expectations, verdicts, baselines,
/// `compare` and the README's list of paths all come from this table.
pub static KINDS: &[FactKind] = &[
    FactKind {
        pattern: "wire.<side>.syn",
        doc: "SYN segments the side sent",
        used_as: Use::Behaviour,
        measured_when: None,
        get: wire_side!(syn),
    },
    FactKind {
        pattern: "wire.<side>.fin",
        doc: "FIN segments the side sent, retransmissions included",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(fin),
    },
    FactKind {
        pattern: "wire.<side>.distinct_fins",
        doc: "FINs with distinct sequence numbers: 1 for a side that closed, however often its FIN went out",
        used_as: Use::Behaviour,
        measured_when: None,
        get: wire_side!(distinct_fins),
    },
    FactKind {
        pattern: "wire.<side>.rst",
        doc: "RST segments the side sent (each stray segment after a reset can draw another)",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(rst),
    },
    FactKind {
        pattern: "wire.<side>.reset",
        doc: "whether the side sent a RST at all",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(json!(c.outcome.wire.as_ref()?.sides[side(b)].rst > 0)),
    },
    FactKind {
        pattern: "wire.<side>.sent_data",
        doc: "whether the side sent any payload",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| {
            Some(json!(
                c.outcome.wire.as_ref()?.sides[side(b)].data_bytes > 0
            ))
        },
    },
    FactKind {
        pattern: "wire.<side>.data_bytes",
        doc: "distinct payload bytes the side sent (sequence space)",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(data_bytes),
    },
    FactKind {
        pattern: "wire.<side>.retransmits",
        doc: "segments that only repeated sequence space already sent",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(retransmits),
    },
    FactKind {
        pattern: "wire.<side>.fins_with_data",
        doc: "distinct FINs that rode on a segment carrying data (FP.)",
        used_as: Use::Behaviour,
        measured_when: None,
        get: wire_side!(fins_with_data),
    },
    FactKind {
        pattern: "wire.<side>.rst_with_ack",
        doc: "RST segments with the ACK flag (R.)",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(rst_with_ack),
    },
    FactKind {
        pattern: "wire.<side>.rst_without_ack",
        doc: "RST segments without the ACK flag (R)",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(rst_without_ack),
    },
    FactKind {
        pattern: "wire.<side>.challenge_acks",
        doc: "pure ACKs answering a SYN after the handshake, or an unexpected RST (RFC 5961)",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(challenge_acks),
    },
    FactKind {
        pattern: "wire.<side>.keepalives",
        doc: "keepalive probes: 0 or 1 byte one below the next sequence number, the peer's window open",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(keepalives),
    },
    FactKind {
        pattern: "wire.<side>.window_probes",
        doc: "zero-window probes: keepalive-shaped segments while the peer's window is zero",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(window_probes),
    },
    FactKind {
        pattern: "wire.<side>.fin_retransmits",
        doc: "FIN transmissions beyond one per distinct FIN",
        used_as: Use::Measurement,
        measured_when: None,
        get: |c, b| {
            let s = &c.outcome.wire.as_ref()?.sides[side(b)];
            Some(json!(s.fin - s.distinct_fins))
        },
    },
    FactKind {
        pattern: "wire.<side>.data_after_peer_fin",
        doc: "new payload bytes the side sent after the peer's FIN (what a half-closed peer still receives)",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(data_after_peer_fin),
    },
    FactKind {
        pattern: "wire.<side>.rst_with_unacked_data",
        doc: "the side's first RST went out with some of its data unacknowledged (whether the last ACK beat the abort is timing, not policy)",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(rst_with_unacked_data),
    },
    FactKind {
        pattern: "wire.<side>.rst_for_data_after_close",
        doc: "the side's first RST answered data that arrived after its own FIN",
        used_as: Use::Behaviour,
        measured_when: None,
        get: wire_side!(rst_for_data_after_close),
    },
    FactKind {
        pattern: "wire.<side>.zero_window_at_close",
        doc: "the side's last window before the connection's first FIN or RST was zero",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire_side!(zero_window_at_close),
    },
    FactKind {
        pattern: "wire.time_wait_side",
        doc: "who should hold TIME-WAIT, from the wire: the first FIN's sender once both FINs are acked, both after crossed FINs, none after a RST, null before the close completes",
        used_as: Use::Behaviour,
        measured_when: None,
        get: wire!(time_wait_side),
    },
    FactKind {
        pattern: "wire.first_fin",
        doc: "whose FIN came first: client, server, both (simultaneous close) or null",
        used_as: Use::Behaviour,
        measured_when: None,
        get: wire!(first_fin),
    },
    FactKind {
        pattern: "wire.first_rst",
        doc: "whose RST came first, or null",
        used_as: Use::Behaviour,
        measured_when: None,
        get: wire!(first_rst),
    },
    FactKind {
        pattern: "wire.conn_state",
        doc: "Zeek's conn_state, the client being the originator",
        used_as: Use::Behaviour,
        measured_when: None,
        get: wire!(conn_state),
    },
    FactKind {
        pattern: "wire.history",
        doc: "Zeek's history string (uppercase: client)",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire!(history),
    },
    FactKind {
        pattern: "wire.close_segments",
        doc: "segments from the first FIN or RST to the end of the capture",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire!(close_segments),
    },
    FactKind {
        pattern: "wire.trace",
        doc: "every segment in order, one token each: c:S s:S. c:. c:P.100 ... (use { matches = \"REGEX\" })",
        used_as: Use::Measurement,
        measured_when: None,
        get: wire!(trace),
    },
    FactKind {
        pattern: "time_wait.side",
        doc: "which end held a TIME-WAIT socket at the end: client, server, both or none",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.time_wait.side)),
    },
    FactKind {
        pattern: "time_wait.remaining_ms",
        doc: "the kernel's remaining TIME-WAIT timer at the end (the smaller, if both)",
        used_as: Use::Measurement,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.time_wait.remaining_ms)),
    },
    FactKind {
        pattern: "time_wait.after_peer_fin_ms",
        doc: "how long after its peer's last FIN a side in TIME-WAIT leaves it (2 MSL if a retransmitted FIN restarts the timer; the smaller, if both)",
        used_as: Use::Measurement,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.time_wait.after_peer_fin_ms)),
    },
    FactKind {
        pattern: "final_state.<side>",
        doc: "the side's last TCP state (CLOSED once its socket is gone)",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(json!(c.outcome.final_state[side(b)])),
    },
    FactKind {
        pattern: "program.exit_code",
        doc: "the exit status of the case's program (null if a signal ended it, or there is none)",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.program.as_ref()?.exit_code)),
    },
    FactKind {
        pattern: "program.signal",
        doc: "the signal that ended the case's program (SIGTERM), if one did",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.program.as_ref()?.signal)),
    },
    FactKind {
        pattern: "program.ended",
        doc: "how the case's program ended: exited (by itself), stopped (on SIGTERM), killed (SIGKILL after its grace), time-limit",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.program.as_ref()?.ended)),
    },
    FactKind {
        pattern: "program.leftovers",
        doc: "processes the program left in its namespace when it exited (a daemon outside its process group, or one that outlived the SIGTERM), killed then; not those that had ended by themselves or of the stop's SIGTERM",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.program.as_ref()?.leftovers)),
    },
    FactKind {
        pattern: "program.stdout",
        doc: "the last 4096 bytes the program wrote to stdout",
        used_as: Use::Measurement,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.program.as_ref()?.stdout)),
    },
    FactKind {
        pattern: "program.stderr",
        doc: "the last 4096 bytes the program wrote to stderr",
        used_as: Use::Measurement,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.program.as_ref()?.stderr)),
    },
    FactKind {
        pattern: "unread.<side>",
        doc: "bytes the side's socket held unread as the case ended (SIOCINQ while the application held it; when the stack destroyed it, or in its table at the end, if it had closed it): what its application never read, which makes a close a reset; null for a side that never had a socket",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(json!(c.outcome.unread[side(b)])),
    },
    FactKind {
        pattern: "data.<direction>.written",
        doc: "bytes write() accepted",
        used_as: Use::Behaviour,
        measured_when: Some(partial_direction),
        get: data!(written),
    },
    FactKind {
        pattern: "data.<direction>.sent",
        doc: "distinct payload bytes on the wire",
        used_as: Use::Measurement,
        measured_when: None,
        get: data!(sent),
    },
    FactKind {
        pattern: "data.<direction>.acked",
        doc: "payload bytes the receiver acknowledged",
        used_as: Use::Measurement,
        measured_when: None,
        get: data!(acked),
    },
    FactKind {
        pattern: "data.<direction>.read",
        doc: "bytes the peer application read",
        used_as: Use::Behaviour,
        measured_when: Some(partial_direction),
        get: data!(read),
    },
    FactKind {
        pattern: "data.<direction>.lost",
        doc: "written - read: never delivered to the peer application",
        used_as: Use::Behaviour,
        measured_when: Some(partial_direction),
        get: data!(lost),
    },
    FactKind {
        pattern: "data.<direction>.corrupted",
        doc: "bytes read that differ from what was written",
        used_as: Use::Behaviour,
        measured_when: None,
        get: data!(corrupted),
    },
    FactKind {
        pattern: "steps.<step>.ret",
        doc: "the call's return value (\"fd\" for a descriptor)",
        used_as: Use::Behaviour,
        measured_when: Some(partial_step),
        get: step_ret,
    },
    FactKind {
        pattern: "steps.<step>.errno",
        doc: "errno by name (ECONNRESET), or null",
        used_as: Use::Behaviour,
        measured_when: None,
        get: step_field!(errno),
    },
    FactKind {
        pattern: "steps.<step>.timed_out",
        doc: "whether the step's bound ran out",
        used_as: Use::Behaviour,
        measured_when: None,
        get: step_field!(timed_out),
    },
    FactKind {
        pattern: "steps.<step>.duration_ms",
        doc: "how long the call took",
        used_as: Use::Measurement,
        measured_when: None,
        get: |c, b| Some(json!(step(c, b)?.duration_ms)),
    },
    FactKind {
        pattern: "steps.<step>.bytes",
        doc: "bytes a read or write moved (also when it then failed)",
        used_as: Use::Measurement,
        measured_when: None,
        get: step_field!(bytes),
    },
    FactKind {
        pattern: "steps.<step>.signal",
        doc: "a signal the call raised (SIGPIPE from a write without nosignal), or null",
        used_as: Use::Behaviour,
        measured_when: None,
        get: step_field!(signal),
    },
    FactKind {
        pattern: "steps.<step>.so_error",
        doc: "SO_ERROR by name (\"0\" for none): a non-blocking connect's outcome, getsockopt SO_ERROR",
        used_as: Use::Behaviour,
        measured_when: None,
        get: step_field!(so_error),
    },
    FactKind {
        pattern: "steps.<step>.tcp_state",
        doc: "the TCP state getsockopt TCP_INFO read",
        used_as: Use::Behaviour,
        measured_when: None,
        get: step_field!(tcp_state),
    },
    FactKind {
        pattern: "steps.<step>.value",
        doc: "a value the call reported (ioctl queue sizes, poll revents, matched segments)",
        used_as: Use::Measurement,
        measured_when: None,
        get: step_field!(value),
    },
    FactKind {
        pattern: "steps.<step>.text",
        doc: "what a `read ... keep` step read, as text (its first 4096 bytes)",
        used_as: Use::Measurement,
        measured_when: None,
        get: step_field!(text),
    },
    FactKind {
        pattern: "steps.<group>.sockets",
        doc: "sockets a step on several (client#1..100, every server) acted on",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(json!(group(c, b)?.sockets)),
    },
    FactKind {
        pattern: "steps.<group>.ok",
        doc: "of those, calls that returned without an error and in time",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(json!(group(c, b)?.ok)),
    },
    FactKind {
        pattern: "steps.<group>.timeouts",
        doc: "of those, calls whose bound ran out",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(json!(group(c, b)?.timed_out)),
    },
    FactKind {
        pattern: "steps.<group>.errnos.<errno>",
        doc: "of those, calls that failed with this errno (a non-blocking connect: its SO_ERROR)",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(count_of(&group(c, b)?.errnos, b)),
    },
    FactKind {
        pattern: "connections.count",
        doc: "connections of a case with several, as the capture shows them (a reused port starts a new one)",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, _| Some(json!(summary(c)?.count)),
    },
    FactKind {
        pattern: "connections.final_state.<side>.<state>",
        doc: "of those, how many ended with the side in this state (TIME-WAIT, CLOSED, ...)",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(count_of(&summary(c)?.final_state[side(b)], b)),
    },
    FactKind {
        pattern: "connections.ended_by.<ending>",
        doc: "of those, how many the wire shows ending by fin (FINs, no RST), rst, or none",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(count_of(&summary(c)?.ended_by, b)),
    },
    FactKind {
        pattern: "connections.time_wait.<tw>",
        doc: "of those, how many had TIME-WAIT held by the client, server, both or none at the end",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(count_of(&summary(c)?.time_wait, b)),
    },
    FactKind {
        pattern: "netstat.<counter>",
        doc: "how much one of the stack's TCP counters (ListenOverflows, TCPTimeWaitOverflow, ...) grew during the case",
        used_as: Use::Measurement,
        measured_when: None,
        get: |c, b| {
            let n = b.name.as_deref()?;
            // Counters that were read and did not move are absent: 0. (Ones
            // that could not be read are `unobserved`, so never get here.)
            Some(json!(c.outcome.netstat.get(n).copied().unwrap_or(0)))
        },
    },
    FactKind {
        pattern: "capture.packets",
        doc: "packets the capture holds",
        used_as: Use::Measurement,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.capture_stats.as_ref()?.packets)),
    },
    FactKind {
        pattern: "capture.dropped",
        doc: "packets the capture lost (its buffer was full); null where the backend cannot count them",
        used_as: Use::Measurement,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.capture_stats.as_ref()?.dropped)),
    },
    FactKind {
        pattern: "capture.loopback_dropped",
        doc: "packets the loopback (on the bench: the links, on their way into the router) dropped before the capture saw them (a backlog queue was full); null where the stack does not count them",
        used_as: Use::Measurement,
        measured_when: None,
        get: |c, _| Some(json!(c.outcome.capture_stats.as_ref()?.loopback_dropped)),
    },
    FactKind {
        pattern: "faults.<fault>.matched",
        doc: "segments the fault rule matched (dropped or rejected)",
        used_as: Use::Behaviour,
        measured_when: None,
        get: |c, b| Some(json!(fault(c, b)?.matched)),
    },
];

/// A fact path, checked against [`KINDS`]: `wire.client.rst`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FactPath {
    kind: usize,
    binding: Binding,
}

impl fmt::Debug for FactPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FactPath({self})")
    }
}

/// The step and fault keys a case defines, for checking paths.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    /// Step keys: labels, `lineN`, `setupN`.
    pub steps: Vec<String>,
    /// Labelled steps only (named in "labels here: ...").
    pub labels: Vec<String>,
    /// Fault keys.
    pub faults: Vec<String>,
    /// Keys of steps on several sockets.
    pub groups: Vec<String>,
    /// Names a report holds, for listing its facts (a path may name any
    /// valid one; these are the ones with a count).
    pub names: Names,
}

/// The names behind `<errno>`, `<state>`, `<ending>`, `<tw>` and
/// `<counter>` in one report.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// Per step on several sockets, the errnos its calls failed with.
    pub errnos: BTreeMap<String, Vec<String>>,
    /// Per side, the final states its connections ended in.
    pub states: crate::tcp::PerSide<Vec<String>>,
    pub endings: Vec<String>,
    pub time_wait: Vec<String>,
    pub counters: Vec<String>,
}

/// Whether `got` is a name the placeholder `p` accepts, and in which
/// spelling it is kept.
fn valid_name(p: &str, got: &str) -> Option<String> {
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    match p {
        "<errno>" => (got.starts_with('E') && word(got) && got.to_ascii_uppercase() == got)
            .then(|| got.to_string()),
        "<state>" => got
            .parse::<crate::tcp::TcpState>()
            .ok()
            .map(|s| s.to_string()),
        "<ending>" => ["fin", "rst", "none"]
            .contains(&got)
            .then(|| got.to_string()),
        "<tw>" => ["client", "server", "both", "none"]
            .contains(&got)
            .then(|| got.to_string()),
        "<counter>" => word(got).then(|| got.to_string()),
        _ => None,
    }
}

const NAME_PLACEHOLDERS: [&str; 5] = ["<errno>", "<state>", "<ending>", "<tw>", "<counter>"];

impl FactPath {
    pub fn kind(&self) -> &'static FactKind {
        &KINDS[self.kind]
    }

    /// How this fact is used in `case`: a behaviour fact whose value
    /// measures the machine there (see [`FactKind`]) is a measurement.
    pub fn used_as(&self, case: &CaseFacts) -> Use {
        let kind = self.kind();
        match kind.measured_when {
            Some(measured) if measured(case, &self.binding) => Use::Measurement,
            _ => kind.used_as,
        }
    }

    pub(crate) fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Parses `path` against the fact kinds, given the keys a case
    /// defines. The error says what would have been accepted.
    pub fn parse(path: &str, keys: &Keys) -> Result<FactPath, String> {
        let parts: Vec<&str> = path.split('.').collect();
        let mut near_key_miss = None;
        for (i, kind) in KINDS.iter().enumerate() {
            let pattern: Vec<&str> = kind.pattern.split('.').collect();
            if pattern.len() != parts.len() {
                continue;
            }
            let mut binding = Binding::default();
            let mut ok = true;
            for (p, got) in pattern.iter().zip(&parts) {
                match *p {
                    "<side>" => match *got {
                        "client" => binding.side = Some(Side::Client),
                        "server" => binding.side = Some(Side::Server),
                        _ => ok = false,
                    },
                    "<direction>" => match Direction::BOTH.iter().find(|d| d.name() == *got) {
                        Some(d) => binding.direction = Some(*d),
                        None => ok = false,
                    },
                    name if NAME_PLACEHOLDERS.contains(&name) => match valid_name(name, got) {
                        Some(n) => binding.name = Some(n),
                        None => ok = false,
                    },
                    "<step>" | "<fault>" | "<group>" => {
                        let known = match *p {
                            "<step>" => &keys.steps,
                            "<fault>" => &keys.faults,
                            _ => &keys.groups,
                        };
                        if known.iter().any(|k| k == got) {
                            binding.key = Some(got.to_string());
                        } else {
                            ok = false;
                            near_key_miss.get_or_insert((*p, got.to_string()));
                        }
                    }
                    lit => ok &= lit == *got,
                }
                if !ok {
                    break;
                }
            }
            if ok {
                return Ok(FactPath { kind: i, binding });
            }
        }
        match near_key_miss {
            Some(("<step>", key)) if parts.len() == 3 && parts[0] == "steps" => Err(format!(
                "no step is labelled {key:?}; label a step with `as {key}` or name it by line (line12) (labels here: {})",
                if keys.labels.is_empty() {
                    "none".to_string()
                } else {
                    keys.labels.join(", ")
                }
            )),
            Some(("<group>", key)) if parts[0] == "steps" && keys.steps.contains(&key) => {
                Err(format!(
                    "step {key:?} acts on one socket: {path:?} needs a step on several (client#1..10, every server)"
                ))
            }
            Some(("<fault>", key)) if parts.len() == 3 && parts[0] == "faults" => Err(format!(
                "no drop or reject step is labelled {key:?} (faults here: {})",
                if keys.faults.is_empty() {
                    "none".to_string()
                } else {
                    keys.faults.join(", ")
                }
            )),
            _ => Err(format!(
                "unknown fact {path:?}; expected one of {}",
                KINDS
                    .iter()
                    .map(|k| k.pattern)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// A path for `kind` with `binding` (used when enumerating facts).
    fn new(kind: usize, binding: Binding) -> FactPath {
        FactPath { kind, binding }
    }
}

impl fmt::Display for FactPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in self.kind().pattern.split('.') {
            if !first {
                f.write_str(".")?;
            }
            first = false;
            match p {
                "<side>" => f.write_str(self.binding.side.map_or("?", Side::name))?,
                "<direction>" => {
                    f.write_str(self.binding.direction.map_or("?", Direction::name))?
                }
                "<step>" | "<fault>" | "<group>" => {
                    f.write_str(self.binding.key.as_deref().unwrap_or("?"))?
                }
                name if NAME_PLACEHOLDERS.contains(&name) => {
                    f.write_str(self.binding.name.as_deref().unwrap_or("?"))?
                }
                lit => f.write_str(lit)?,
            }
        }
        Ok(())
    }
}

/// The keys `case` defines (for checking expectations against a report).
pub(crate) fn keys_of(case: &CaseFacts) -> Keys {
    let groups: Vec<&StepRecord> = case
        .steps
        .iter()
        .filter(|s| s.result.group.is_some())
        .collect();
    let mut names = Names {
        errnos: groups
            .iter()
            .map(|s| {
                let g = s.result.group.as_ref().expect("filtered");
                (s.key.clone(), g.errnos.keys().cloned().collect())
            })
            .collect(),
        counters: case.outcome.netstat.keys().cloned().collect(),
        ..Names::default()
    };
    if let Some(s) = &case.outcome.connection_summary {
        names.states = s.final_state.clone().map(|_, m| m.into_keys().collect());
        names.endings = s.ended_by.keys().cloned().collect();
        names.time_wait = s.time_wait.keys().cloned().collect();
    }
    Keys {
        steps: case.steps.iter().map(|s| s.key.clone()).collect(),
        labels: case.steps.iter().filter_map(|s| s.label.clone()).collect(),
        faults: case.faults.iter().map(|f| f.key.clone()).collect(),
        groups: groups.iter().map(|s| s.key.clone()).collect(),
        names,
    }
}

/// What the case says about `path`.
pub(crate) fn resolve(case: &CaseFacts, path: &FactPath) -> Observed {
    let text = path.to_string();
    // The most specific unobserved entry that covers this path.
    let covered = case
        .outcome
        .unobserved
        .iter()
        .filter(|(prefix, _)| {
            text == **prefix
                || text
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        .max_by_key(|(prefix, _)| prefix.len());
    if let Some((_, reason)) = covered {
        return Observed::Unobserved(reason.clone());
    }
    Observed::Value((path.kind().get)(case, &path.binding).unwrap_or(Value::Null))
}

/// Every fact of a case, in table order, with placeholders expanded over
/// both sides, both directions, and the case's steps and faults.
pub fn all(case: &CaseFacts) -> Vec<(FactPath, Observed)> {
    let keys = keys_of(case);
    let mut out = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        for binding in expand(kind.pattern, &keys) {
            let path = FactPath::new(i, binding);
            let v = resolve(case, &path);
            out.push((path, v));
        }
    }
    out
}

fn expand(pattern: &str, keys: &Keys) -> Vec<Binding> {
    let mut out = vec![Binding::default()];
    for p in pattern.split('.') {
        out = match p {
            "<side>" => out
                .into_iter()
                .flat_map(|b| {
                    Side::BOTH.map(|s| Binding {
                        side: Some(s),
                        ..b.clone()
                    })
                })
                .collect(),
            "<direction>" => out
                .into_iter()
                .flat_map(|b| {
                    Direction::BOTH.map(|d| Binding {
                        direction: Some(d),
                        ..b.clone()
                    })
                })
                .collect(),
            "<step>" | "<fault>" | "<group>" => {
                let list = match p {
                    "<step>" => &keys.steps,
                    "<fault>" => &keys.faults,
                    _ => &keys.groups,
                };
                out.into_iter()
                    .flat_map(|b| {
                        list.iter().map(move |k| Binding {
                            key: Some(k.clone()),
                            ..b.clone()
                        })
                    })
                    .collect()
            }
            name if NAME_PLACEHOLDERS.contains(&name) => out
                .into_iter()
                .flat_map(|b| {
                    let n = &keys.names;
                    let list: &[String] = match name {
                        "<errno>" => b
                            .key
                            .as_ref()
                            .and_then(|k| n.errnos.get(k))
                            .map_or(&[], Vec::as_slice),
                        "<state>" => &n.states[b.side.unwrap_or(Side::Client)],
                        "<ending>" => &n.endings,
                        "<tw>" => &n.time_wait,
                        _ => &n.counters,
                    };
                    list.iter()
                        .map(|x| Binding {
                            name: Some(x.clone()),
                            ..b.clone()
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
            _ => out,
        };
    }
    out
}

/// A case's behavioural facts as `path -> value` (unobserved as null): what
/// baselines record and `compare` lines up. Measurements are left out:
/// they measure the machine as much as the stack. So are the byte counts
/// of a write that filled a buffer (a `dontwait` fill): under load the same
/// kernel takes 10240 or 12288 bytes into the same 4 KiB buffers.
pub(crate) fn fingerprint(case: &CaseFacts) -> BTreeMap<String, Value> {
    all(case)
        .into_iter()
        .filter(|(p, _)| p.used_as(case) == Use::Behaviour)
        .map(|(p, v)| (p.to_string(), v.value()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::report;

    fn keys(steps: &[&str]) -> Keys {
        Keys {
            steps: steps.iter().map(|s| s.to_string()).collect(),
            labels: steps.iter().map(|s| s.to_string()).collect(),
            faults: vec!["lost".into()],
            ..Keys::default()
        }
    }

    #[test]
    fn a_count_of_several_sockets_needs_a_step_on_several() {
        let mut k = keys(&["lc"]);
        let e = FactPath::parse("steps.lc.ok", &k).unwrap_err();
        assert!(e.contains("step \"lc\" acts on one socket"), "{e}");
        k.groups.push("lc".into());
        assert!(FactPath::parse("steps.lc.ok", &k).is_ok());
        assert!(FactPath::parse("steps.lc.errnos.EADDRNOTAVAIL", &k).is_ok());
        assert!(FactPath::parse("connections.final_state.server.TIME_WAIT", &k).is_ok());
        assert!(FactPath::parse("connections.final_state.server.WAITING", &k).is_err());
        assert!(FactPath::parse("connections.ended_by.timeout", &k).is_err());
    }

    #[test]
    fn paths_parse_print_and_say_what_was_expected() {
        let k = keys(&["lc"]);
        for p in [
            "wire.client.rst",
            "data.server_to_client.lost",
            "steps.lc.errno",
            "faults.lost.matched",
            "final_state.server",
        ] {
            assert_eq!(FactPath::parse(p, &k).unwrap().to_string(), p);
        }
        let e = FactPath::parse("steps.nope.errno", &k).unwrap_err();
        assert!(
            e.contains("no step is labelled \"nope\"") && e.contains("labels here: lc"),
            "{e}"
        );
        let e = FactPath::parse("faults.x.matched", &k).unwrap_err();
        assert!(e.contains("faults here: lost"), "{e}");
        let e = FactPath::parse("wire.clinet.rst", &k).unwrap_err();
        assert!(
            e.contains("unknown fact") && e.contains("wire.<side>.rst"),
            "{e}"
        );
    }

    #[test]
    fn facts_resolve_from_the_typed_report() {
        let r = report("a", 1, Some("EPIPE"));
        let c = r.cases[0].facts();
        let k = keys_of(&c);
        let get = |p: &str| resolve(&c, &FactPath::parse(p, &k).unwrap());
        assert_eq!(get("wire.client.distinct_fins"), Observed::Value(json!(1)));
        assert_eq!(get("steps.line3.errno"), Observed::Value(json!("EPIPE")));
        assert_eq!(get("time_wait.side"), Observed::Value(json!("client")));
        assert_eq!(
            get("final_state.client"),
            Observed::Value(json!("TIME-WAIT"))
        );
    }

    #[test]
    fn unobserved_facts_carry_their_reason() {
        let mut r = report("a", 1, None);
        r.cases[0]
            .outcome
            .unobserved
            .insert("time_wait".into(), "no sock_diag on this stack".into());
        let c = r.cases[0].facts();
        let k = keys_of(&c);
        let tw = resolve(&c, &FactPath::parse("time_wait.side", &k).unwrap());
        assert_eq!(tw.reason(), Some("no sock_diag on this stack"));
        assert_eq!(tw.value(), Value::Null);
        let w = resolve(&c, &FactPath::parse("wire.client.rst", &k).unwrap());
        assert_eq!(w.reason(), None);
    }

    /// A write that filled a buffer (stopped at EAGAIN) moved what the
    /// buffers held at that moment: its byte counts, and its direction's
    /// totals, are measurements; a complete write's are behaviour.
    #[test]
    fn a_buffer_fill_is_a_measurement() {
        let mut r = report("a", 1, None);
        let c = &mut r.cases[0];
        let mut w = c.steps[0].clone();
        w.key = "fill".into();
        w.verb = Verb::Write;
        w.result.ret = Some(10240);
        c.steps.push(w);
        let complete = fingerprint(&c.facts());
        assert!(complete.contains_key("steps.fill.ret"));
        assert!(complete.contains_key("data.client_to_server.written"));
        c.steps[1].result.partial = true;
        let filled = fingerprint(&c.facts());
        assert!(!filled.contains_key("steps.fill.ret"));
        assert!(!filled.contains_key("data.client_to_server.written"));
        assert!(!filled.contains_key("data.client_to_server.lost"));
        assert!(filled.contains_key("data.server_to_client.written"));
        assert!(filled.contains_key("steps.fill.errno"));
    }

    #[test]
    fn every_kind_enumerates_and_fingerprints_leave_measurements_out() {
        let mut r = report("a", 1, None);
        // A step on several sockets, connections and counters, so that
        // every name placeholder has something to list.
        let c = &mut r.cases[0];
        c.steps[0].result.group = Some(crate::driver::GroupResult {
            target: "client#1..2".into(),
            sockets: 2,
            ok: 1,
            timed_out: 0,
            errnos: [("ECONNREFUSED".to_string(), 1)].into(),
        });
        let mut s = crate::outcome::ConnectionSummary {
            count: 2,
            ..Default::default()
        };
        s.final_state.client.insert("TIME-WAIT".into(), 2);
        s.final_state.server.insert("CLOSED".into(), 2);
        s.ended_by.insert("fin".into(), 2);
        s.time_wait.insert("client".into(), 2);
        c.outcome.connection_summary = Some(s);
        c.outcome.netstat.insert("TCPTimeWaitOverflow".into(), 3);
        let facts = all(&r.cases[0].facts());
        for (i, kind) in KINDS.iter().enumerate() {
            // The fixture has no fault.
            if kind.pattern.contains("<fault>") {
                continue;
            }
            assert!(facts.iter().any(|(p, _)| p.kind == i), "{}", kind.pattern);
        }
        let get = |path: &str| {
            facts
                .iter()
                .find(|(p, _)| p.to_string() == path)
                .map(|(_, v)| v.value())
        };
        assert_eq!(get("steps.line3.errnos.ECONNREFUSED"), Some(json!(1)));
        assert_eq!(
            get("connections.final_state.client.TIME-WAIT"),
            Some(json!(2))
        );
        assert_eq!(get("netstat.TCPTimeWaitOverflow"), Some(json!(3)));
        // A path may name what the report has no count for: that is 0.
        let k = keys_of(&r.cases[0].facts());
        let p = FactPath::parse("connections.ended_by.rst", &k).unwrap();
        assert_eq!(resolve(&r.cases[0].facts(), &p).value(), json!(0));
        let e = FactPath::parse("steps.line3.errnos.econnrefused", &k).unwrap_err();
        assert!(e.contains("unknown fact"), "{e}");
        let f = fingerprint(&r.cases[0].facts());
        assert!(f.contains_key("wire.server.distinct_fins"));
        assert!(f.contains_key("steps.line3.ret"));
        assert!(!f.contains_key("wire.client.fin"));
        assert!(!f.contains_key("steps.line3.duration_ms"));
    }
}
