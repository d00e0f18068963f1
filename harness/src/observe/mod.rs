//! Kernel socket states, read from the stack itself.
//!
//! A snapshot lists the TCP sockets the stack lets the harness see, with
//! their state and, where the stack says, their active timer and queues.
//! Which sockets that is depends on the state source a stack offers:
//!
//! - [`StateSource::SockDiag`] (Linux): every socket of the case's
//!   namespace, including those without a file descriptor (TIME-WAIT,
//!   LAST-ACK after close, orphans in FIN-WAIT) and their timers. The
//!   TIME-WAIT timer is read here, never waited out.
//! - [`StateSource::TcpInfo`]: `TCP_INFO` on the descriptors the harness
//!   still holds. A socket it closed is out of sight from then on.
//!
//! This module reports what the stack says and never infers a state; what a
//! source cannot see is reported as not observed (see `outcome`).

#[cfg(target_os = "linux")]
mod sockdiag;
mod tcpinfo;
#[cfg(windows)]
mod tcptable_windows;

#[cfg(unix)]
pub use tcpinfo::{INFO_OPTION, info_state};
pub use tcpinfo::{bsd_state, linux_state};

use std::net::SocketAddr;

/// A descriptor number, as a state source or an agent reports it: the
/// OS's (on Windows, a SOCKET's value), or a userspace stack's.
#[cfg(unix)]
pub use std::os::fd::RawFd;
#[cfg(windows)]
pub type RawFd = i64;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
use crate::sandbox::{Hosts, Namespace};
use crate::scenario::Family;
use crate::tcp::{PerSide, Side, TcpState};

pub use crate::tcp::TimerKind;

/// One socket in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SockEntry {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub timer: Option<TimerKind>,
    /// Time left on `timer`, in milliseconds; None where the source has no
    /// timers (TCP_INFO) or no timer runs.
    pub timer_ms: Option<u32>,
    /// Bytes queued for reading (listeners: pending connections).
    pub recv_queue: u32,
    /// Bytes not yet acknowledged (listeners: backlog).
    pub send_queue: u32,
    /// The descriptor it was read through (TCP_INFO), if any, on the
    /// host whose table it is in.
    pub fd: Option<RawFd>,
    /// The bench host whose agent reported it, set by the harness (an
    /// agent's descriptor numbers are its own); none for an entry the
    /// harness read itself.
    #[serde(skip)]
    #[schemars(skip)]
    pub host: Option<Side>,
    /// The stack's own name for the socket (sock_diag's cookie), which
    /// outlives its addresses: an aborted socket is announced destroyed
    /// with its peer's address cleared.
    #[serde(skip)]
    #[schemars(skip)]
    pub cookie: Option<u64>,
}

/// What a state source saw at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: Vec<SockEntry>,
    /// For each side's host, whether sockets without a descriptor are
    /// listed too: if so, a socket of that side missing from the snapshot
    /// is gone (CLOSED); if not, it is merely out of sight. (On the bench
    /// each host's stack has its own source.)
    pub sees_orphans: PerSide<bool>,
}

impl Snapshot {
    /// Each socket's state by (local, remote) address: for looking up
    /// thousands of connections in one snapshot.
    pub(crate) fn by_addresses(
        &self,
    ) -> std::collections::HashMap<(SocketAddr, SocketAddr), &SockEntry> {
        self.entries
            .iter()
            .filter(|e| e.state != TcpState::Listen)
            .map(|e| ((e.local, e.remote), e))
            .collect()
    }
}

/// Where socket states come from on a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StateSource {
    /// NETLINK_SOCK_DIAG: every socket of the namespace, with timers.
    SockDiag,
    /// TCP_INFO on the descriptors the harness holds.
    TcpInfo,
    /// A userspace stack's own table (smoltcp's sockets, through its
    /// agent): every socket, closed ones until CLOSED; no timers.
    StackTable,
    /// The same with the stack's timers (lwIP's control blocks: the
    /// retransmission, persist, keep-alive and TIME-WAIT timers), but no
    /// count of a listener's waiting connections.
    StackTableTimers,
    /// Windows's TCP table (GetTcpTable2): every connection of the
    /// machine, closed sockets' included, without timers or queues.
    TcpTable,
}

impl StateSource {
    pub fn name(self) -> &'static str {
        match self {
            StateSource::SockDiag => "sock-diag",
            StateSource::TcpInfo => "tcp-info",
            StateSource::StackTable => "stack-table",
            StateSource::StackTableTimers => "stack-table-timers",
            StateSource::TcpTable => "tcp-table",
        }
    }

    /// Whether sockets without a descriptor (orphans, TIME-WAIT after
    /// close) can be seen.
    pub(crate) fn sees_orphans(self) -> bool {
        matches!(
            self,
            StateSource::SockDiag
                | StateSource::StackTable
                | StateSource::StackTableTimers
                | StateSource::TcpTable
        )
    }

    /// Whether the source reads the stack's timers (TIME-WAIT remaining).
    pub(crate) fn sees_timers(self) -> bool {
        matches!(self, StateSource::SockDiag | StateSource::StackTableTimers)
    }

    /// Whether a listening socket's entry counts the connections waiting
    /// to be accepted (sock_diag's receive queue; smoltcp's agent keeps its
    /// own queue). lwIP keeps them in its netconn's mailbox, which its
    /// control blocks do not count.
    pub(crate) fn sees_accept_queue(self) -> bool {
        matches!(self, StateSource::SockDiag | StateSource::StackTable)
    }

    /// Whether the source announces each socket as it is destroyed, with
    /// what its receive queue still held (sock_diag's destroy groups).
    pub(crate) fn sees_destruction(self) -> bool {
        self == StateSource::SockDiag
    }
}

/// Why the stack's socket states could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("sock_diag: {0}")]
    SockDiag(String),
    #[error("TCP_INFO: {0}")]
    TcpInfo(String),
    #[error("{0} is not available on this OS")]
    Unavailable(&'static str),
}

#[cfg(target_os = "linux")]
enum Backend {
    /// One socket per host: each sees its own host's sockets, and one
    /// subscription per host to its sockets' destruction.
    SockDiag(Vec<sockdiag::SockDiag>, Vec<sockdiag::DestroyWatch>),
    TcpInfo,
}

/// A state source opened for one case, on the case's thread (the
/// harness's, Linux's: an agent reads its own stack, `AgentStates`).
#[cfg(target_os = "linux")]
pub struct Observer {
    backend: Backend,
    source: StateSource,
    /// For each side's host, whether this observer hears of its sockets'
    /// destruction (not where an agent reads the host's table).
    watched: PerSide<bool>,
}

#[cfg(target_os = "linux")]
impl Observer {
    /// Opens `source` on each of the case's hosts but those whose agent
    /// reports its own states (`by_agent`).
    pub fn open(
        ns: &Namespace,
        hosts: &Hosts,
        family: Family,
        source: StateSource,
        by_agent: PerSide<bool>,
        both_families: bool,
    ) -> Result<Observer, ObserveError> {
        let backend = match source {
            StateSource::SockDiag => {
                let mine: Vec<Side> = hosts
                    .sides()
                    .iter()
                    .copied()
                    .filter(|&side| !by_agent[side])
                    .collect();
                let err = |e: crate::sandbox::SandboxError| ObserveError::SockDiag(e.to_string());
                Backend::SockDiag(
                    mine.iter()
                        .map(|&side| {
                            hosts.on(side, || sockdiag::SockDiag::open(ns, family, both_families))
                        })
                        .map(|r| r.map_err(err)?)
                        .collect::<Result<_, _>>()?,
                    mine.iter()
                        .map(|&side| hosts.on(side, sockdiag::DestroyWatch::open))
                        .map(|r| r.map_err(err)?)
                        .collect::<Result<_, _>>()?,
                )
            }
            StateSource::TcpInfo => Backend::TcpInfo,
            StateSource::StackTable | StateSource::StackTableTimers | StateSource::TcpTable => {
                return Err(ObserveError::Unavailable(
                    "a table an agent reads on its own stack",
                ));
            }
        };
        let watched = by_agent.map(|_, agent| source.sees_destruction() && !agent);
        Ok(Observer {
            backend,
            source,
            watched,
        })
    }

    pub fn source(&self) -> StateSource {
        self.source
    }

    /// The sockets the source sees now; `live` are the descriptors the
    /// harness holds (what TCP_INFO can look at).
    pub fn snapshot(&mut self, live: &[RawFd]) -> Result<Snapshot, ObserveError> {
        let entries = match &mut self.backend {
            Backend::SockDiag(hosts, _) => match hosts.as_mut_slice() {
                [one] => one.snapshot()?,
                many => {
                    let mut all = Vec::new();
                    for s in many {
                        all.extend(s.snapshot()?);
                    }
                    all
                }
            },
            Backend::TcpInfo => tcpinfo::snapshot(live)?,
        };
        Ok(Snapshot {
            entries,
            sees_orphans: PerSide::both(self.source.sees_orphans()),
        })
    }

    /// Adds the sockets destroyed since the last call to `into`, and the
    /// cookies `snapshot` shows for the connection's sides.
    pub(crate) fn destroyed(&mut self, into: &mut Destroyed, snapshot: &Snapshot, ends: &Ends) {
        for side in Side::BOTH {
            if let Some(c) = ends.find(snapshot, side).and_then(|e| e.cookie) {
                into.cookies[side] = Some(c);
            }
        }
        into.watched = self.watched;
        let Backend::SockDiag(_, watches) = &mut self.backend else {
            return;
        };
        for w in watches {
            match w.drain() {
                Ok(e) => into.entries.extend(e),
                Err(e) => into.lost = Some(e.to_string()),
            }
        }
    }
}

/// An agent's view of its own stack: every socket of the namespace it runs
/// in (sock_diag) or the descriptors it holds (TCP_INFO), keeping only
/// sockets with the case's port at an end, so nothing else on the machine
/// is reported.
pub(crate) struct AgentStates {
    source: StateSource,
    #[cfg(target_os = "linux")]
    diag: std::collections::HashMap<Family, sockdiag::SockDiag>,
}

impl AgentStates {
    pub fn new(source: StateSource) -> AgentStates {
        AgentStates {
            source,
            #[cfg(target_os = "linux")]
            diag: std::collections::HashMap::new(),
        }
    }

    /// The sockets of `family` with `port` at either end, and every socket
    /// of `held` (the agent's descriptors, all the session's: after a reset
    /// a stack may no longer say whom one was connected to).
    pub fn snapshot(
        &mut self,
        family: Family,
        port: u16,
        held: &[RawFd],
    ) -> Result<Vec<SockEntry>, ObserveError> {
        match self.source {
            #[cfg(target_os = "linux")]
            StateSource::SockDiag => {
                let v6 = family == Family::Ipv6;
                let diag = match self.diag.entry(family) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(sockdiag::SockDiag::open_here(family)?)
                    }
                };
                Ok(diag
                    .snapshot()?
                    .into_iter()
                    .filter(|e| e.local.is_ipv6() == v6)
                    .filter(|e| e.local.port() == port || e.remote.port() == port)
                    .collect())
            }
            #[cfg(not(target_os = "linux"))]
            StateSource::SockDiag => {
                let _ = (family, port);
                Err(ObserveError::Unavailable("sock_diag"))
            }
            StateSource::TcpInfo => Ok(tcpinfo::snapshot(held)?),
            StateSource::StackTable | StateSource::StackTableTimers => Err(
                ObserveError::Unavailable("a userspace stack's table (its own agent reads it)"),
            ),
            #[cfg(windows)]
            StateSource::TcpTable => Ok(tcptable_windows::snapshot(family, port, held)?),
            #[cfg(not(windows))]
            StateSource::TcpTable => Err(ObserveError::Unavailable("Windows's TCP table")),
        }
    }
}

/// Whether a socket listens where a client connecting to `to` would reach
/// it, in the calling thread's namespace (a program's readiness): on `to`'s
/// own address or its family's wildcard, or, for IPv4, on IPv6's wildcard
/// (a dual-stack socket). A program that binds its IPv4 socket before its
/// IPv6 one is not ready for an IPv6 case until the second is there.
#[cfg(target_os = "linux")]
pub fn listens(to: SocketAddr) -> Result<bool, ObserveError> {
    for family in [Family::Ipv4, Family::Ipv6] {
        let found = sockdiag::SockDiag::open_here(family)?
            .snapshot()?
            .iter()
            .filter(|e| e.state == TcpState::Listen && e.local.port() == to.port())
            .any(|e| {
                let at = e.local.ip();
                at == to.ip()
                    || (at.is_unspecified() && (at.is_ipv4() == to.is_ipv4() || to.is_ipv4()))
            });
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The sockets a stack announced as destroyed during a case, each with
/// its last entry (its receive queue then: the bytes its application never
/// read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destroyed {
    /// In the order announced.
    pub entries: Vec<SockEntry>,
    /// For each side's host, whether its sockets' destruction is heard of
    /// at all.
    pub watched: PerSide<bool>,
    /// Why some notices may be missing.
    pub lost: Option<String>,
    /// Each side's socket of the connection under test, by the cookie its
    /// host's table last showed for it.
    pub cookies: PerSide<Option<u64>>,
    /// What each side's socket held unread at the end by its own count
    /// (SIOCINQ, a FIN not counted), where the application still held it.
    pub held: PerSide<Option<u32>>,
}

impl Destroyed {
    /// How many bytes `side`'s socket of the connection under test held
    /// unread: when the stack destroyed it, or in `last` (the final
    /// snapshot) if it was still there; or why that is not known.
    pub fn unread(&self, ends: &Ends, side: Side, last: &Snapshot) -> Result<u32, String> {
        if !self.watched[side] {
            return Err(format!(
                "the {side}'s stack does not announce a socket's destruction to the harness"
            ));
        }
        if ends.client.is_none() {
            return Err("the connection was never made".into());
        }
        if let Some(e) = self.notice(ends, side).or_else(|| ends.find(last, side)) {
            return Ok(e.recv_queue);
        }
        Err(match &self.lost {
            Some(why) => format!("notices of destroyed sockets were lost: {why}"),
            None => format!(
                "the {side}'s socket was neither announced destroyed nor in the stack's table at the end"
            ),
        })
    }

    /// The notice of `side`'s socket's destruction, if one came.
    pub(crate) fn notice(&self, ends: &Ends, side: Side) -> Option<&SockEntry> {
        let client = ends.client?;
        let (local, remote) = match side {
            Side::Client => (client, ends.server),
            Side::Server => (ends.server, client),
        };
        let cookie = self.cookies[side];
        self.entries.iter().rev().find(|e| match cookie {
            Some(c) => e.cookie == Some(c),
            None => e.local == local && e.remote == remote,
        })
    }
}

/// What identifies the connection under test in a snapshot: its addresses,
/// and the descriptors of its sides while the application holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    /// The client's local address, known once it has connected.
    pub client: Option<SocketAddr>,
    /// The listener's address (also the server socket's local address).
    pub server: SocketAddr,
    /// Each side's descriptor while it is open. A socket read through its
    /// descriptor is found by it: after a reset, a stack may no longer
    /// report the peer's address.
    pub fds: PerSide<Option<RawFd>>,
}

impl Ends {
    /// The stack's entry for one side of the connection.
    pub fn find<'a>(&self, snapshot: &'a Snapshot, side: Side) -> Option<&'a SockEntry> {
        if let Some(fd) = self.fds[side] {
            let found = snapshot
                .entries
                .iter()
                .find(|e| e.fd == Some(fd) && e.host.is_none_or(|h| h == side));
            if let Some(e) = found {
                return Some(e);
            }
        }
        let client = self.client?;
        let (local, remote) = match side {
            Side::Client => (client, self.server),
            Side::Server => (self.server, client),
        };
        snapshot
            .entries
            .iter()
            .find(|e| e.local == local && e.remote == remote)
    }

    /// The listening socket's entry.
    pub fn find_listener<'a>(&self, snapshot: &'a Snapshot) -> Option<&'a SockEntry> {
        snapshot
            .entries
            .iter()
            .find(|e| e.state == TcpState::Listen && e.local.port() == self.server.port())
    }

    /// Whether a side that `before` showed is missing from `now`, a
    /// snapshot of every socket: gone, or missed by a dump that is not one
    /// atomic picture (see the driver's `observe`).
    pub fn lost(&self, before: &Snapshot, now: &Snapshot) -> bool {
        Side::BOTH.into_iter().any(|side| {
            now.sees_orphans[side]
                && self.find(before, side).is_some()
                && self.find(now, side).is_none()
        })
    }

    /// Both addresses, once the client's is known.
    pub(crate) fn pair(&self) -> Option<PerSide<SocketAddr>> {
        self.client.map(|c| PerSide::new(c, self.server))
    }
}

/// A change of a side's kernel state, as first seen by a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StateChange {
    /// Milliseconds since the case started.
    pub t_ms: f64,
    pub state: TcpState,
}

/// Each side's states over the case, deduplicated. With a source that sees
/// every socket, one that was seen and then vanished is recorded as
/// CLOSED; with one that does not, nothing is recorded once it is out of
/// sight.
pub(crate) type Timeline = PerSide<Vec<StateChange>>;

/// Folds one snapshot into a timeline.
pub fn record(timeline: &mut Timeline, t_ms: f64, snapshot: &Snapshot, ends: &Ends) {
    for side in Side::BOTH {
        let now = ends.find(snapshot, side).map(|e| e.state);
        let list = &mut timeline[side];
        let last = list.last().map(|c| c.state);
        let next = match (now, last) {
            (Some(s), Some(l)) if s == l => None,
            (Some(s), _) => Some(s),
            (None, Some(l)) if l != TcpState::Closed && snapshot.sees_orphans[side] => {
                Some(TcpState::Closed)
            }
            (None, _) => None,
        };
        if let Some(state) = next {
            list.push(StateChange { t_ms, state });
        }
    }
}

/// The last state seen for a side, if it was ever seen.
pub fn last(timeline: &Timeline, side: Side) -> Option<TcpState> {
    timeline[side].last().map(|c| c.state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(local: &str, remote: &str, state: TcpState) -> SockEntry {
        SockEntry {
            cookie: None,
            host: None,
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            timer: None,
            timer_ms: None,
            recv_queue: 0,
            send_queue: 0,
            fd: None,
        }
    }

    fn ends() -> Ends {
        Ends {
            client: Some("127.0.0.1:40000".parse().unwrap()),
            server: "127.0.0.1:9000".parse().unwrap(),
            fds: PerSide::default(),
        }
    }

    /// After a reset a stack may report no peer address; the descriptor
    /// still names the socket.
    #[test]
    fn a_descriptor_finds_its_socket_whatever_its_addresses() {
        let mut e = entry("127.0.0.1:40000", "127.0.0.1:0", TcpState::Closed);
        e.fd = Some(7);
        let snap = Snapshot {
            entries: vec![e],
            sees_orphans: PerSide::both(false),
        };
        let mut ends = ends();
        assert_eq!(ends.find(&snap, Side::Client), None);
        ends.fds.client = Some(7);
        assert_eq!(
            ends.find(&snap, Side::Client).map(|e| e.state),
            Some(TcpState::Closed)
        );
    }

    #[test]
    fn a_vanished_socket_is_closed_only_where_orphans_are_visible() {
        let est = Snapshot {
            entries: vec![
                entry("127.0.0.1:40000", "127.0.0.1:9000", TcpState::Established),
                entry("127.0.0.1:9000", "127.0.0.1:40000", TcpState::Established),
            ],
            sees_orphans: PerSide::both(true),
        };
        for (sees, want) in [
            (true, Some(TcpState::Closed)),
            (false, Some(TcpState::Established)),
        ] {
            let mut t = Timeline::default();
            record(&mut t, 0.0, &est, &ends());
            let gone = Snapshot {
                entries: vec![est.entries[1].clone()],
                sees_orphans: PerSide::both(sees),
            };
            record(&mut t, 1.0, &gone, &ends());
            assert_eq!(last(&t, Side::Client), want, "sees orphans: {sees}");
            assert_eq!(t.server.len(), 1, "unchanged states are recorded once");
            // Only a complete table can lose a socket; it is looked for again.
            assert_eq!(ends().lost(&est, &gone), sees);
            assert!(!ends().lost(&est, &est));
            assert!(!ends().lost(&gone, &est), "appearing is not losing");
        }
    }
}
