//! A case's outcome: the typed facts of one case, joined from what the
//! driver observed (calls, kernel states, application byte counts) and what
//! the wire showed. Nothing here is expected; everything is observed, and
//! what could not be observed is listed in `unobserved` with the reason.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analyze::{Analysis, PacketRecord, WireFacts};
use crate::driver::DriverOutput;
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
}

/// Bytes of one direction, from the application's and the wire's view.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Flow {
    /// Accepted by write() calls.
    pub written: u64,
    /// Distinct payload bytes on the wire (null without a capture).
    pub sent: Option<u64>,
    /// Of those, acknowledged by the peer (null without a capture).
    pub acked: Option<u64>,
    /// Returned by the peer's read() calls.
    pub read: u64,
    /// written - read: never delivered to the peer application.
    pub lost: u64,
    /// Bytes read that differ from what was written.
    pub corrupted: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DataFlows {
    pub client_to_server: Flow,
    pub server_to_client: Flow,
}

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
}

/// Why a fact is out of sight of a TCP_INFO state source.
const OUT_OF_SIGHT: &str = "the stack's state source (TCP_INFO on descriptors) cannot see a socket after the application closed it";
const NEVER_HELD: &str = "the stack's state source (TCP_INFO on descriptors) cannot see a socket the application never held (a connection never accepted)";

/// Why a side's socket is out of sight of the state source, if it is.
fn out_of_sight(out: &DriverOutput, side: Side) -> Option<&'static str> {
    if out.final_snapshot.sees_orphans {
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
/// why). `findings` are what parsing the capture noticed.
pub fn outcome(
    driver: Option<&DriverOutput>,
    analysis: Option<&Analysis>,
    no_capture: Option<&str>,
    mut findings: Vec<String>,
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
    if let Some(a) = analysis {
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
    let final_state = final_states(out, &mut unobserved);
    let time_wait = time_wait(out, &mut unobserved);
    let flow = |writer: Side| {
        let app = out.flows[writer];
        Flow {
            written: app.written,
            sent: analysis.map(|a| a.wire.sides[writer].data_bytes),
            acked: analysis.map(|a| a.acked[writer]),
            read: app.read,
            lost: app.written.saturating_sub(app.read),
            corrupted: app.corrupted,
        }
    };
    Outcome {
        // The wire's view where the capture resolved them.
        endpoints: analysis
            .and_then(|a| a.ends)
            .or(out.ends.pair())
            .map(|p| p.map(|_, a| a.to_string())),
        wire: analysis.map(|a| a.wire.clone()),
        packets: analysis.map(|a| a.packets.clone()).unwrap_or_default(),
        states: out.timeline.clone(),
        final_state,
        time_wait,
        data: DataFlows {
            client_to_server: flow(Side::Client),
            server_to_client: flow(Side::Server),
        },
        settled: out.settled,
        findings,
        unobserved,
    }
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
    TimeWait { side, remaining_ms }
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
            timeline: Timeline::default(),
            final_snapshot: Snapshot {
                entries,
                sees_orphans,
            },
            closed,
            held: PerSide::both(true),
            settled: true,
            settle_bound: std::time::Duration::from_secs(1),
            faults: vec![],
            problems: vec![],
        }
    }

    fn tw_entry() -> SockEntry {
        SockEntry {
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
        );
        assert_eq!(o.time_wait.side, Some(TimeWaitSide::Client));
        assert_eq!(o.time_wait.remaining_ms, Some(59_000));
        assert_eq!(o.data.client_to_server.lost, 10);
        assert_eq!(o.data.client_to_server.sent, None);
        assert_eq!(o.unobserved["wire"], "no capture");
        assert!(!o.unobserved.contains_key("time_wait"));
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
        );
        assert_eq!(o.time_wait.side, Some(TimeWaitSide::Client));
        assert!(o.unobserved["time_wait.remaining_ms"].contains("timers"));
    }

    #[test]
    fn a_case_that_never_ran_observes_nothing() {
        let o = outcome(None, None, Some("libpcap refused"), vec![]);
        assert_eq!(o.time_wait.side, None);
        assert!(o.unobserved.contains_key("time_wait"));
        assert!(o.unobserved.contains_key("data"));
        assert!(!o.settled);
    }
}
