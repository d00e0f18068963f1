//! A case's outcome: the typed facts of one case, joined from what the
//! driver observed (calls, kernel states, application byte counts) and what
//! the wire showed. Nothing here is expected; everything is observed, and
//! what could not be observed is listed in `unobserved` with the reason.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analyze::flows::FlowFacts;
use crate::analyze::{Analysis, PacketRecord, WireFacts};
use crate::driver::DriverOutput;
use crate::driver::ProgramRecord;
use crate::observe::{self, Snapshot, Timeline, TimerKind};
pub use crate::tcp::TimeWaitSide;
use crate::tcp::{PerSide, Side, TcpState};

/// Who held a TIME-WAIT socket at the end of the case, from the stack's
/// socket table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimeWait {
    /// Null when it could not be observed (see `unobserved`).
    pub side: Option<TimeWaitSide>,
    /// The kernel's remaining TIME-WAIT timer (the smaller, if both).
    pub remaining_ms: Option<u32>,
    /// How long after the last FIN its peer sent the TIME-WAIT side's timer
    /// runs out: the final snapshot's time plus the timer it showed, less
    /// that FIN's time in the capture. 2 MSL if the timer restarted on a
    /// retransmitted FIN (RFC 9293 3.10.7.4), less if not; unlike
    /// `remaining_ms`, it does not depend on how soon the harness looked.
    /// The smaller, if both sides are in TIME-WAIT.
    #[serde(default)]
    pub after_peer_fin_ms: Option<f64>,
}

/// Bytes of one direction, from the application's and the wire's view.
/// What an application end did is null where a program (not the harness)
/// is that end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Flow {
    /// Accepted by write() calls.
    pub written: Option<u64>,
    /// Distinct payload bytes on the wire (null without a capture).
    pub sent: Option<u64>,
    /// Of those, acknowledged by the peer (null without a capture).
    pub acked: Option<u64>,
    /// Returned by the peer's read() calls.
    pub read: Option<u64>,
    /// written - read: never delivered to the peer application.
    pub lost: Option<u64>,
    /// Bytes read that differ from what was written.
    pub corrupted: Option<u64>,
}

impl Flow {
    /// The application's counts for a direction `writer` wrote, as far as
    /// the harness made the calls: `program` is the end a program is.
    fn of_apps(
        c: crate::driver::FlowCounts,
        writer: Side,
        program: Option<Side>,
        sent: Option<u64>,
        acked: Option<u64>,
    ) -> Flow {
        let harness = |side: Side| program != Some(side);
        let written = harness(writer).then_some(c.written);
        let read = harness(writer.peer()).then_some(c.read);
        Flow {
            written,
            sent,
            acked,
            read,
            lost: written.zip(read).map(|(w, r)| w.saturating_sub(r)),
            corrupted: (harness(writer) && harness(writer.peer())).then_some(c.corrupted),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DataFlows {
    pub client_to_server: Flow,
    pub server_to_client: Flow,
}

/// One connection of a case that has several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionRecord {
    /// The connection's number (`client#3` made connection 3), or null for
    /// one no client step made.
    pub number: Option<u32>,
    /// What the wire shows of it.
    #[serde(flatten)]
    pub flow: FlowFacts,
    /// Each side's state in the stack's table at the end (CLOSED once
    /// gone); null where the state source cannot see it.
    pub final_state: PerSide<Option<TcpState>>,
    /// Who held TIME-WAIT for it at the end, by the stack's table.
    pub time_wait: Option<TimeWaitSide>,
    /// What the applications wrote and read on it; null when its number
    /// made more than one connection (the counts are per number).
    pub data: Option<DataFlows>,
}

/// Counts over a case's connections, which expectations can name
/// (`connections.final_state.client.TIME-WAIT`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionSummary {
    pub count: u32,
    /// By each side's final state.
    pub final_state: PerSide<BTreeMap<String, u32>>,
    /// By how the wire shows them ending: `fin` (FINs, no RST), `rst`
    /// (a RST), `none` (neither by the end of the case).
    pub ended_by: BTreeMap<String, u32>,
    /// By who held TIME-WAIT at the end: client, server, both, none.
    pub time_wait: BTreeMap<String, u32>,
}

/// What the capture says of itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CaptureStats {
    /// Packets captured.
    pub packets: u64,
    /// Packets the kernel dropped (buffer full); null where the capture
    /// backend cannot count them.
    pub dropped: Option<u64>,
    /// Packets the loopback itself dropped during the case, before the
    /// capture could see them (its backlog queue was full); null where the
    /// stack does not count them.
    pub loopback_dropped: Option<u64>,
}

/// Why a capture cannot vouch for counts, if it lost packets: its own
/// buffer was full (`capture_dropped`), or `link` (the loopback, the
/// bench's links) dropped some before the capture saw them. Its wire facts
/// are then not observed, rather than counted short.
pub fn capture_loss(
    capture_dropped: Option<u64>,
    link_dropped: Option<u64>,
    link: &str,
) -> Option<String> {
    capture_dropped
        .filter(|n| *n > 0)
        .map(|n| {
            format!("the capture dropped {n} packets (its buffer was full): wire facts would be counted short")
        })
        .or_else(|| {
            link_dropped.filter(|n| *n > 0).map(|n| {
                format!("{link} dropped {n} packets before the capture saw them (a backlog queue, net.core.netdev_max_backlog, was full): wire facts would be counted short")
            })
        })
}

/// The stack's TCP counters around the steps, as read.
#[derive(Clone, Debug, PartialEq)]
pub enum Counters {
    /// Both readings, by counter name.
    Read {
        before: BTreeMap<String, i64>,
        after: BTreeMap<String, i64>,
    },
    /// Not the case's alone, and why (a stack that keeps them for all its
    /// namespaces while other cases ran).
    Shared(String),
    /// A reading failed, and why.
    Failed(String),
}

impl Outcome {
    /// The `netstat` facts: what each counter grew by during the steps,
    /// the ones that grew only; or why they are not observed.
    pub fn count(&mut self, counters: Counters) {
        match counters {
            Counters::Read { before, after } => {
                self.netstat = after
                    .iter()
                    .filter_map(|(k, v)| {
                        let d = v - before.get(k).copied().unwrap_or(0);
                        (d != 0).then(|| (k.clone(), d))
                    })
                    .collect();
            }
            Counters::Shared(why) => {
                self.unobserved.insert("netstat".into(), why);
            }
            Counters::Failed(e) => {
                self.unobserved
                    .insert("netstat".into(), format!("the stack's TCP counters: {e}"));
            }
        }
    }
}

/// Connections a report holds inline; a case with more writes them to a
/// JSON Lines file beside its pcap (`connections_file`).
pub const INLINE_CONNECTIONS: usize = 256;

/// The observed facts of one case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    /// The addresses of the connection under test (`ip:port`; the client
    /// connects): null before any connect.
    #[serde(default)]
    pub endpoints: Option<PerSide<String>>,
    /// Null when there was no capture to analyze.
    pub wire: Option<WireFacts>,
    /// The connection's segments in capture order.
    pub packets: Vec<PacketRecord>,
    /// Kernel socket states over time.
    pub states: Timeline,
    /// Each side's last state (CLOSED once its socket is gone); null if
    /// never seen, or out of sight at the end (see `unobserved`).
    pub final_state: PerSide<Option<TcpState>>,
    pub time_wait: TimeWait,
    pub data: DataFlows,
    /// Bytes each side's socket still held unread when the stack destroyed
    /// it: what its application never read (closing on unread bytes is
    /// what makes a stack reset a connection). Null where not observed.
    #[serde(default)]
    pub unread: PerSide<Option<u32>>,
    /// The program on one end, and what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<ProgramRecord>,
    /// False if some socket was still in a transient state (e.g.
    /// FIN-WAIT-1) when the settle bound ran out; the final facts were
    /// taken anyway.
    pub settled: bool,
    /// Odd things seen that are not failures: malformed packets, segments
    /// of other connections, harness notes.
    pub findings: Vec<String>,
    /// Facts this run could not observe, by fact path (or a prefix of
    /// paths), with the reason: `"time_wait": "TCP_INFO cannot see ..."`.
    /// Those facts are null in the report, never guessed.
    #[serde(default)]
    pub unobserved: BTreeMap<String, String>,
    /// Every connection of a case with several (split by 4-tuple, a reused
    /// port starting a new one); empty for a case with one. Beyond
    /// [`INLINE_CONNECTIONS`] they are in `connections_file` instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionRecord>,
    /// The JSON Lines file (one connection per line) that holds the
    /// connections of a case with too many to inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_file: Option<String>,
    /// Counts over the connections of a case with several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_summary: Option<ConnectionSummary>,
    /// The stack's own TCP counters in the case's namespace that changed
    /// during the case (Linux: /proc/net/netstat and /proc/net/snmp), by
    /// name: after minus before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub netstat: BTreeMap<String, i64>,
    /// What the capture says of itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_stats: Option<CaptureStats>,
}

/// Why a fact is out of sight of a TCP_INFO state source.
const OUT_OF_SIGHT: &str = "the stack's state source (TCP_INFO on descriptors) cannot see a socket after the application closed it";
const SOME_UNSEEN: &str = "the stack's state source (TCP_INFO on descriptors) cannot see the sockets of some connections (closed, or never accepted), so a count over all of them would be short";
const NEVER_HELD: &str = "the stack's state source (TCP_INFO on descriptors) cannot see a socket the application never held (a connection never accepted)";

/// Why a side's socket is out of sight of the state source, if it is.
fn out_of_sight(out: &DriverOutput, side: Side) -> Option<&'static str> {
    if out.final_snapshot.sees_orphans[side] {
        None
    } else if out.closed[side] {
        Some(OUT_OF_SIGHT)
    } else if !out.held[side] {
        Some(NEVER_HELD)
    } else {
        None
    }
}

/// The outcome of a case. `driver` is None when the case stopped before
/// its steps ran; `analysis` is None without a capture (`no_capture` says
/// why). `findings` are what parsing the capture noticed; `flows` every
/// connection of a case with several.
pub fn outcome(
    driver: Option<&DriverOutput>,
    analysis: Option<&Analysis>,
    no_capture: Option<&str>,
    mut findings: Vec<String>,
    flows: Option<Vec<FlowFacts>>,
) -> Outcome {
    let mut unobserved = BTreeMap::new();
    if let Some(why) = no_capture.filter(|_| analysis.is_none()) {
        unobserved.insert("wire".to_string(), why.to_string());
        for dir in ["client_to_server", "server_to_client"] {
            for fact in ["sent", "acked"] {
                unobserved.insert(format!("data.{dir}.{fact}"), why.to_string());
            }
        }
    }
    let Some(out) = driver else {
        let why = "the case stopped before its steps ran".to_string();
        for fact in ["time_wait", "final_state", "data"] {
            unobserved.insert(fact.into(), why.clone());
        }
        return Outcome {
            wire: analysis.map(|a| a.wire.clone()),
            unobserved,
            findings,
            ..Outcome::default()
        };
    };
    if let Some(a) = analysis.filter(|_| flows.is_none()) {
        if a.foreign_segments > 0 {
            findings.push(format!(
                "{} segments belong to no side of the connection under test",
                a.foreign_segments
            ));
        }
    }
    if !out.settled {
        findings.push(format!(
            "some socket was still in a transient state after the settle bound ({:?})",
            out.settle_bound
        ));
    }

    for s in &out.steps {
        if let Some(why) = &s.result.unobserved {
            unobserved.insert(format!("steps.{}", s.key), why.clone());
        }
    }
    // Which captured segments the fault rules took. Where the filter's own
    // counter disagrees (other connections' segments, or a segment at the
    // very moment a rule came or went), the markers are not vouched for.
    let mut packets = analysis.map(|a| a.packets.clone()).unwrap_or_default();
    let taken = crate::fault::attribute(&mut packets, &out.placed);
    for f in &out.faults {
        let marked = taken.get(&f.key).copied().unwrap_or(0);
        if f.matched.is_some_and(|m| m != marked) && flows.is_none() {
            findings.push(format!(
                "fault {}: the packet filter counted {} segments, the capture shows {marked} it would have taken",
                f.key,
                f.matched.unwrap_or(0)
            ));
        }
    }
    let final_state = final_states(out, &mut unobserved);
    if let Some(p) = &out.program {
        program_unobserved(p.side, &mut unobserved);
    }
    let unread = PerSide::both(()).map(|side, ()| {
        // A side the stack never showed a full socket for (a SYN that never
        // arrived, or only a SYN-RECEIVED request that never completed)
        // has nothing unread to observe: null, as for its final state.
        let full_socket = out.timeline[side]
            .iter()
            .any(|c| !matches!(c.state, TcpState::SynReceived | TcpState::Closed));
        if !full_socket && out.destroyed.notice(&out.ends, side).is_none() {
            return None;
        }
        match unread(out, side, analysis.map(|_| packets.as_slice())) {
            Ok(n) => Some(n),
            Err(why) => {
                unobserved.insert(format!("unread.{side}"), why);
                None
            }
        }
    });
    let mut time_wait = time_wait(out, &mut unobserved);
    time_wait.after_peer_fin_ms = after_peer_fin(out, &time_wait, &packets, &mut unobserved);
    let flow = |writer: Side| {
        Flow::of_apps(
            out.flows[writer],
            writer,
            out.program.as_ref().map(|p| p.side),
            analysis.map(|a| a.wire.sides[writer].data_bytes),
            analysis.map(|a| a.acked[writer]),
        )
    };
    let (connections, connection_summary) = match flows {
        Some(flows) => {
            let (records, summary) = connections(out, flows);
            // A count over connections is observed only if every one was:
            // one unseen state would make a count short, not wrong-looking.
            for side in Side::BOTH {
                if records.iter().any(|r| r.final_state[side].is_none()) {
                    unobserved.insert(
                        format!("connections.final_state.{side}"),
                        SOME_UNSEEN.into(),
                    );
                }
            }
            if records.iter().any(|r| r.time_wait.is_none()) {
                unobserved.insert("connections.time_wait".into(), SOME_UNSEEN.into());
            }
            (records, Some(summary))
        }
        None => (Vec::new(), None),
    };
    Outcome {
        connections,
        connection_summary,
        // The wire's view where the capture resolved them.
        endpoints: analysis
            .and_then(|a| a.ends)
            .or(out.ends.pair())
            .map(|p| p.map(|_, a| a.to_string())),
        wire: analysis.map(|a| a.wire.clone()),
        packets,
        states: out.timeline.clone(),
        final_state,
        time_wait,
        unread,
        program: out.program.clone(),
        data: DataFlows {
            client_to_server: flow(Side::Client),
            server_to_client: flow(Side::Server),
        },
        settled: out.settled,
        findings,
        unobserved,
        ..Outcome::default()
    }
}

/// What a program's end did with its stream is known only from the wire:
/// what it wrote (the wire's `sent` is what its stack sent) and what it
/// read are not the harness's to count, nor whether the bytes it wrote
/// are the ones it meant.
fn program_unobserved(side: Side, unobserved: &mut BTreeMap<String, String>) {
    let why = format!(
        "the {side} is a program: what it wrote and read is not the harness's to count (data.*.sent is what its stack sent)"
    );
    let (from, to) = match side {
        Side::Client => ("client_to_server", "server_to_client"),
        Side::Server => ("server_to_client", "client_to_server"),
    };
    for fact in ["written", "lost", "corrupted"] {
        unobserved.insert(format!("data.{from}.{fact}"), why.clone());
    }
    for fact in ["read", "lost"] {
        unobserved.insert(format!("data.{to}.{fact}"), why.clone());
    }
}

/// The bytes `side`'s socket held unread: at the end, by its own count,
/// if the application still held it; else when the stack destroyed it, or
/// at the end if it was still in the stack's table. The
/// stack's count (`rcv_nxt - copied_seq`) takes the peer's FIN for a byte
/// until the application reads the end of file, which it can only do after
/// every byte before it: so where the FIN had arrived (the side
/// acknowledged it on the wire), the bytes never read are one fewer.
fn unread(out: &DriverOutput, side: Side, packets: Option<&[PacketRecord]>) -> Result<u32, String> {
    if let Some(n) = out.destroyed.held[side] {
        return Ok(n);
    }
    let queued = out.destroyed.unread(&out.ends, side, &out.final_snapshot)?;
    if queued == 0 {
        return Ok(0);
    }
    let Some(packets) = packets else {
        return Err("without the wire, a FIN the stack counts in the receive queue cannot be told from a byte".into());
    };
    let fin_at = packets
        .iter()
        .filter(|p| p.from != side && p.flags.fin())
        .map(|p| p.seq.wrapping_add(p.len))
        .min();
    let fin_arrived = fin_at.is_some_and(|fin| {
        packets
            .iter()
            .filter(|p| p.from == side)
            .filter_map(|p| p.ack)
            .any(|ack| ack > fin)
    });
    Ok(queued - u32::from(fin_arrived))
}

/// Each connection's record, and the counts over them. The stack's table
/// at the end says each side's final state and who holds TIME-WAIT; the
/// driver, which connection number made it and what the applications
/// wrote and read.
fn connections(
    out: &DriverOutput,
    flows: Vec<FlowFacts>,
) -> (Vec<ConnectionRecord>, ConnectionSummary) {
    let table = out.final_snapshot.by_addresses();
    let sees_all = out.final_snapshot.sees_orphans;
    let mut number_of = std::collections::HashMap::new();
    for (n, app) in &out.connections {
        for addr in &app.clients {
            number_of.insert(*addr, *n);
        }
    }
    let flows_per_number = flows.iter().filter_map(|f| number_of.get(&f.client)).fold(
        BTreeMap::<u32, u32>::new(),
        |mut m, n| {
            *m.entry(*n).or_default() += 1;
            m
        },
    );
    // The kernel keeps one socket per 4-tuple and side, so the socket a
    // snapshot shows on a reused 4-tuple is its latest connection's; the
    // earlier ones are gone.
    let latest: std::collections::HashMap<_, usize> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| ((f.client, f.server), i))
        .collect();
    let mut summary = ConnectionSummary::default();
    let records: Vec<ConnectionRecord> = flows
        .into_iter()
        .enumerate()
        .map(|(i, flow)| {
            let number = number_of.get(&flow.client).copied();
            let superseded = latest[&(flow.client, flow.server)] != i;
            let state = |side: Side, local, remote| -> Option<TcpState> {
                match table.get(&(local, remote)) {
                    Some(_) if superseded && sees_all[side] => Some(TcpState::Closed),
                    Some(_) if superseded => None,
                    Some(e) => Some(e.state),
                    None if sees_all[side] => Some(TcpState::Closed),
                    None => None,
                }
            };
            let final_state = PerSide::new(
                state(Side::Client, flow.client, flow.server),
                state(Side::Server, flow.server, flow.client),
            );
            let time_wait = (sees_all.client && sees_all.server).then(|| {
                match final_state.map(|_, s| s == Some(TcpState::TimeWait)) {
                    PerSide {
                        client: true,
                        server: true,
                    } => TimeWaitSide::Both,
                    PerSide { client: true, .. } => TimeWaitSide::Client,
                    PerSide { server: true, .. } => TimeWaitSide::Server,
                    _ => TimeWaitSide::None,
                }
            });
            let data = number
                .filter(|n| flows_per_number.get(n) == Some(&1))
                .and_then(|n| out.connections.get(&n))
                .map(|app| {
                    let flow_of = |writer: Side| {
                        Flow::of_apps(
                            app.flows[writer],
                            writer,
                            out.program.as_ref().map(|p| p.side),
                            Some(flow.wire.sides[writer].data_bytes),
                            Some(flow.acked[writer]),
                        )
                    };
                    DataFlows {
                        client_to_server: flow_of(Side::Client),
                        server_to_client: flow_of(Side::Server),
                    }
                });
            summary.count += 1;
            for side in Side::BOTH {
                if let Some(s) = final_state[side] {
                    *summary.final_state[side].entry(s.to_string()).or_default() += 1;
                }
            }
            let w = &flow.wire;
            let ended = if w.first_rst.is_some() {
                "rst"
            } else if w.sides.client.distinct_fins + w.sides.server.distinct_fins > 0 {
                "fin"
            } else {
                "none"
            };
            *summary.ended_by.entry(ended.into()).or_default() += 1;
            if let Some(tw) = time_wait {
                *summary.time_wait.entry(tw.name().into()).or_default() += 1;
            }
            ConnectionRecord {
                number,
                flow,
                final_state,
                time_wait,
                data,
            }
        })
        .collect();
    (records, summary)
}

/// Each side's last state: the timeline's last entry, unless the state
/// source lost sight of the socket when the application closed it.
fn final_states(
    out: &DriverOutput,
    unobserved: &mut BTreeMap<String, String>,
) -> PerSide<Option<TcpState>> {
    PerSide::both(()).map(|side, ()| {
        if let Some(why) = out_of_sight(out, side) {
            unobserved.insert(format!("final_state.{side}"), why.into());
            return None;
        }
        observe::last(&out.timeline, side)
    })
}

/// How long after its peer's last FIN a side in TIME-WAIT leaves it (see
/// [`TimeWait::after_peer_fin_ms`]); the smaller, if both are.
fn after_peer_fin(
    out: &DriverOutput,
    tw: &TimeWait,
    packets: &[PacketRecord],
    unobserved: &mut BTreeMap<String, String>,
) -> Option<f64> {
    let sides: &[Side] = match tw.side {
        Some(TimeWaitSide::Client) => &[Side::Client],
        Some(TimeWaitSide::Server) => &[Side::Server],
        Some(TimeWaitSide::Both) => &Side::BOTH,
        // Not in TIME-WAIT, or not observed: said under time_wait.
        _ => return None,
    };
    let mut smallest: Option<f64> = None;
    for &side in sides {
        let Some(remaining) = out
            .ends
            .find(&out.final_snapshot, side)
            .filter(|e| e.timer == Some(TimerKind::TimeWait))
            .and_then(|e| e.timer_ms)
        else {
            unobserved.insert(
                "time_wait.after_peer_fin_ms".into(),
                "the stack's state source does not show the TIME-WAIT timer".into(),
            );
            return None;
        };
        let Some(fin) = packets
            .iter()
            .rev()
            .find(|p| p.from == side.peer() && p.flags.fin())
        else {
            unobserved.insert(
                "time_wait.after_peer_fin_ms".into(),
                format!("the capture holds no FIN from the {}", side.peer()),
            );
            return None;
        };
        // Rounded to the microsecond, as every time in a report.
        let after = out.final_snapshot_ms + f64::from(remaining) - fin.t_ms;
        let after = (after * 1e3).round() / 1e3;
        smallest = Some(smallest.map_or(after, |s| s.min(after)));
    }
    smallest
}

/// Who holds TIME-WAIT at the end, from the final snapshot.
fn time_wait(out: &DriverOutput, unobserved: &mut BTreeMap<String, String>) -> TimeWait {
    let snap: &Snapshot = &out.final_snapshot;
    let tw = |side| {
        out.ends
            .find(snap, side)
            .filter(|e| e.state == TcpState::TimeWait)
    };
    let (ctw, stw) = (tw(Side::Client), tw(Side::Server));
    let hidden = out_of_sight(out, Side::Client).or(out_of_sight(out, Side::Server));
    let side = if let Some(why) = hidden {
        unobserved.insert(
            "time_wait".into(),
            format!("{why}; a socket enters TIME-WAIT after it is closed"),
        );
        None
    } else {
        Some(match (ctw.is_some(), stw.is_some()) {
            (true, true) => TimeWaitSide::Both,
            (true, false) => TimeWaitSide::Client,
            (false, true) => TimeWaitSide::Server,
            (false, false) => TimeWaitSide::None,
        })
    };
    let remaining_ms = [ctw, stw]
        .into_iter()
        .flatten()
        .filter(|e| e.timer == Some(TimerKind::TimeWait))
        .filter_map(|e| e.timer_ms)
        .min();
    if remaining_ms.is_none() && side.is_some_and(|s| s != TimeWaitSide::None) {
        unobserved
            .entry("time_wait.remaining_ms".into())
            .or_insert_with(|| "the stack's state source does not show timers".into());
    }
    TimeWait {
        side,
        remaining_ms,
        after_peer_fin_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::FlowCounts;
    use crate::observe::{Ends, Snapshot, SockEntry};

    fn driver(sees_orphans: bool, closed: PerSide<bool>, entries: Vec<SockEntry>) -> DriverOutput {
        DriverOutput {
            steps: vec![],
            ends: Ends {
                client: Some("127.0.0.1:40000".parse().unwrap()),
                server: "127.0.0.1:9000".parse().unwrap(),
                fds: PerSide::default(),
            },
            flows: PerSide::new(
                FlowCounts {
                    written: 10,
                    read: 0,
                    corrupted: 0,
                },
                FlowCounts::default(),
            ),
            connections: Default::default(),
            timeline: Timeline::default(),
            final_snapshot: Snapshot {
                entries,
                sees_orphans: PerSide::both(sees_orphans),
            },
            final_snapshot_ms: 1000.0,
            closed,
            held: PerSide::both(true),
            settled: true,
            settle_bound: std::time::Duration::from_secs(1),
            faults: vec![],
            placed: vec![],
            program: None,
            destroyed: Default::default(),
            problems: vec![],
        }
    }

    fn tw_entry() -> SockEntry {
        SockEntry {
            cookie: None,
            host: None,
            state: TcpState::TimeWait,
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "127.0.0.1:9000".parse().unwrap(),
            timer: Some(TimerKind::TimeWait),
            timer_ms: Some(59_000),
            recv_queue: 0,
            send_queue: 0,
            fd: None,
        }
    }

    #[test]
    fn sock_diag_sees_time_wait_after_close() {
        let o = outcome(
            Some(&driver(true, PerSide::both(true), vec![tw_entry()])),
            None,
            Some("no capture"),
            vec![],
            None,
        );
        assert_eq!(o.time_wait.side, Some(TimeWaitSide::Client));
        assert_eq!(o.time_wait.remaining_ms, Some(59_000));
        assert_eq!(o.data.client_to_server.lost, Some(10));
        assert_eq!(o.data.client_to_server.sent, None);
        assert_eq!(o.unobserved["wire"], "no capture");
        assert!(!o.unobserved.contains_key("time_wait"));
    }

    fn segment(from: Side, flags: crate::tcp::Flags, seq: u32, ack: u32, len: u32) -> PacketRecord {
        PacketRecord {
            t_ms: 0.0,
            from,
            flags,
            seq,
            ack: Some(ack),
            len,
            win: 100,
            notes: vec![],
            dropped_by: None,
        }
    }

    /// The stack counts a FIN not yet read in the receive queue: where the
    /// side acknowledged its peer's FIN, one of the queued "bytes" is it.
    #[test]
    fn unread_bytes_do_not_count_the_peers_fin() {
        use crate::tcp::Flags;
        let mut out = driver(true, PerSide::both(true), vec![]);
        out.destroyed.watched = PerSide::new(true, false);
        out.destroyed.cookies.client = Some(7);
        out.destroyed.entries.push(SockEntry {
            cookie: Some(7),
            recv_queue: 1001,
            ..tw_entry()
        });
        let fin = segment(Side::Server, Flags::FIN | Flags::ACK, 1, 1, 1000);
        let acked = segment(Side::Client, Flags::ACK, 1, 1002, 0);
        let short = segment(Side::Client, Flags::ACK, 1, 1001, 0);
        let unread = |packets: &[PacketRecord]| unread(&out, Side::Client, Some(packets));
        assert_eq!(unread(&[fin.clone(), acked]), Ok(1000));
        assert_eq!(unread(&[fin, short]), Ok(1001), "the FIN never arrived");
        assert_eq!(unread(&[]), Ok(1001));
        assert!(
            super::unread(&out, Side::Server, Some(&[]))
                .unwrap_err()
                .contains("does not announce")
        );
        assert!(
            super::unread(&out, Side::Client, None)
                .unwrap_err()
                .contains("without the wire")
        );
    }

    /// A stack without sock_diag loses sight of a socket at close(): its
    /// TIME-WAIT and final state are null with the reason, not "none".
    #[test]
    fn tcp_info_cannot_see_a_closed_socket() {
        let o = outcome(
            Some(&driver(false, PerSide::new(true, false), vec![])),
            None,
            None,
            vec![],
            None,
        );
        assert_eq!(o.time_wait.side, None);
        assert!(o.unobserved["time_wait"].contains("TCP_INFO"));
        assert_eq!(o.final_state.client, None);
        assert!(o.unobserved.contains_key("final_state.client"));
        assert!(!o.unobserved.contains_key("final_state.server"));
        // With both descriptors still open, what they show is observed.
        let mut e = tw_entry();
        e.timer = None;
        e.timer_ms = None;
        let o = outcome(
            Some(&driver(false, PerSide::both(false), vec![e])),
            None,
            None,
            vec![],
            None,
        );
        assert_eq!(o.time_wait.side, Some(TimeWaitSide::Client));
        assert!(o.unobserved["time_wait.remaining_ms"].contains("timers"));
    }

    fn fin(t_ms: f64, from: Side) -> PacketRecord {
        PacketRecord {
            t_ms,
            from,
            flags: crate::tcp::Flags::FIN,
            seq: 1,
            ack: None,
            len: 0,
            win: 0,
            notes: vec![],
            dropped_by: None,
        }
    }

    /// RFC 9293 3.10.7.4: the peer's last FIN, not the first, is what a
    /// restarted TIME-WAIT timer counts from; the time it ends is the
    /// snapshot's time plus the timer the snapshot showed.
    #[test]
    fn time_wait_is_timed_from_the_peers_last_fin() {
        let out = driver(true, PerSide::both(true), vec![tw_entry()]);
        let mut unobserved = BTreeMap::new();
        let tw = time_wait(&out, &mut unobserved);
        // Snapshot at 1000 ms showing 59 000 ms left: it ends at 60 000 ms.
        let fins = [
            fin(0.5, Side::Client),
            fin(100.0, Side::Server),
            fin(400.0, Side::Server),
        ];
        let after = after_peer_fin(&out, &tw, &fins, &mut unobserved);
        assert_eq!(after, Some(59_600.0));
        // Without a FIN from the peer there is no last FIN to count from.
        let after = after_peer_fin(&out, &tw, &fins[..1], &mut unobserved);
        assert_eq!(after, None);
        assert!(unobserved["time_wait.after_peer_fin_ms"].contains("no FIN from the server"));
    }

    #[test]
    fn a_case_that_never_ran_observes_nothing() {
        let o = outcome(None, None, Some("libpcap refused"), vec![], None);
        assert_eq!(o.time_wait.side, None);
        assert!(o.unobserved.contains_key("time_wait"));
        assert!(o.unobserved.contains_key("data"));
        assert!(!o.settled);
    }
}
