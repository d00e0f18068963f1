//! Kernel socket states, read from the kernel itself.
//!
//! A snapshot lists every TCP socket of the case's namespace with its state,
//! active timer and queues. Sockets without a file descriptor (TIME-WAIT,
//! LAST-ACK after close, orphans in FIN-WAIT) are only visible this way; the
//! TIME-WAIT timer is read here, never waited out. This module reports what
//! the kernel says and never infers a state.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

use std::net::SocketAddr;

use crate::tcp::TcpState;

/// The timer a socket has running, as the kernel names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    Retransmit,
    KeepAlive,
    TimeWait,
    ZeroWindowProbe,
}

/// One socket in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockEntry {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub timer: Option<TimerKind>,
    /// Time left on `timer`, in milliseconds.
    pub timer_ms: u32,
    /// Bytes queued for reading (listeners: pending connections).
    pub recv_queue: u32,
    /// Bytes not yet acknowledged (listeners: backlog).
    pub send_queue: u32,
}

/// Why the kernel's socket table could not be read.
#[derive(Debug, thiserror::Error)]
#[error("sock_diag: {0}")]
pub struct ObserveError(pub String);

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tcp::Side;

/// The addresses that identify the connection under test in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    /// The client's local address, known once it has connected.
    pub client: Option<SocketAddr>,
    /// The listener's address (also the server socket's local address).
    pub server: SocketAddr,
}

impl Ends {
    /// The kernel's entry for one side of the connection, fd or not.
    pub fn find<'a>(&self, snapshot: &'a [SockEntry], side: Side) -> Option<&'a SockEntry> {
        let client = self.client?;
        let (local, remote) = match side {
            Side::Client => (client, self.server),
            Side::Server => (self.server, client),
        };
        snapshot
            .iter()
            .find(|e| e.local == local && e.remote == remote)
    }

    /// The listening socket's entry.
    pub fn find_listener<'a>(&self, snapshot: &'a [SockEntry]) -> Option<&'a SockEntry> {
        snapshot
            .iter()
            .find(|e| e.state == TcpState::Listen && e.local.port() == self.server.port())
    }
}

/// A change of a side's kernel state, as first seen by a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StateChange {
    /// Milliseconds since the case started.
    pub t_ms: f64,
    pub state: TcpState,
}

/// Each side's states over the case, deduplicated. A socket that was seen
/// and then vanished from the kernel's table is recorded as CLOSED.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Timeline {
    pub client: Vec<StateChange>,
    pub server: Vec<StateChange>,
}

impl Timeline {
    pub fn side(&self, side: Side) -> &[StateChange] {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }

    /// Folds one snapshot into the timeline.
    pub fn record(&mut self, t_ms: f64, snapshot: &[SockEntry], ends: &Ends) {
        for side in [Side::Client, Side::Server] {
            let now = ends.find(snapshot, side).map(|e| e.state);
            let list = match side {
                Side::Client => &mut self.client,
                Side::Server => &mut self.server,
            };
            let last = list.last().map(|c| c.state);
            let next = match (now, last) {
                (Some(s), Some(l)) if s == l => None,
                (Some(s), _) => Some(s),
                (None, Some(l)) if l != TcpState::Closed => Some(TcpState::Closed),
                (None, _) => None,
            };
            if let Some(state) = next {
                list.push(StateChange { t_ms, state });
            }
        }
    }

    /// The last state seen for a side, if it was ever seen.
    pub fn last(&self, side: Side) -> Option<TcpState> {
        self.side(side).last().map(|c| c.state)
    }
}
