//! TCP vocabulary shared by every stage: connection states with their RFC 9293
//! spelling, and sides of a connection.
//!
//! This module only names things; it never talks to the kernel.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A TCP connection state (RFC 9293 section 3.3.2), as the kernel reports it.
///
/// `Display` and serde use the RFC spelling (`FIN-WAIT-1`); parsing also
/// accepts the Linux spelling (`FIN_WAIT1`, `TCP_FIN_WAIT1`) so scenario files
/// can use either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TcpState {
    #[serde(rename = "CLOSED")]
    Closed,
    #[serde(rename = "LISTEN")]
    Listen,
    #[serde(rename = "SYN-SENT")]
    SynSent,
    #[serde(rename = "SYN-RECEIVED")]
    SynReceived,
    #[serde(rename = "ESTABLISHED")]
    Established,
    #[serde(rename = "FIN-WAIT-1")]
    FinWait1,
    #[serde(rename = "FIN-WAIT-2")]
    FinWait2,
    #[serde(rename = "CLOSE-WAIT")]
    CloseWait,
    #[serde(rename = "CLOSING")]
    Closing,
    #[serde(rename = "LAST-ACK")]
    LastAck,
    #[serde(rename = "TIME-WAIT")]
    TimeWait,
}

impl TcpState {
    pub const ALL: [TcpState; 11] = [
        TcpState::Closed,
        TcpState::Listen,
        TcpState::SynSent,
        TcpState::SynReceived,
        TcpState::Established,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::CloseWait,
        TcpState::Closing,
        TcpState::LastAck,
        TcpState::TimeWait,
    ];

    /// The RFC 9293 name.
    pub fn rfc_name(self) -> &'static str {
        match self {
            TcpState::Closed => "CLOSED",
            TcpState::Listen => "LISTEN",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynReceived => "SYN-RECEIVED",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::Closing => "CLOSING",
            TcpState::LastAck => "LAST-ACK",
            TcpState::TimeWait => "TIME-WAIT",
        }
    }

    /// States that move on by themselves once the peer answers: a socket in
    /// one of them has a segment in flight that the peer has not yet
    /// acknowledged. The end-of-case settle waits for these to resolve.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            TcpState::SynSent
                | TcpState::SynReceived
                | TcpState::FinWait1
                | TcpState::Closing
                | TcpState::LastAck
        )
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rfc_name())
    }
}

impl FromStr for TcpState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Normalise "TCP_FIN_WAIT1", "fin-wait-1", "FIN_WAIT_1" to "FINWAIT1".
        let key: String = s
            .trim()
            .trim_start_matches("TCP_")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let key = if key == "SYNRECV" {
            "SYNRECEIVED".to_string()
        } else {
            key
        };
        TcpState::ALL
            .into_iter()
            .find(|st| st.rfc_name().replace('-', "") == key)
            .ok_or_else(|| {
                format!(
                    "unknown TCP state {s:?}; expected one of {}",
                    TcpState::ALL.map(|s| s.rfc_name()).join(", ")
                )
            })
    }
}

/// One end of the connection under test. The client opens it (sends the
/// SYN); the server is the socket returned by `accept()` on the listener.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_parses_rfc_and_linux_spellings() {
        for (text, want) in [
            ("FIN-WAIT-2", TcpState::FinWait2),
            ("FIN_WAIT2", TcpState::FinWait2),
            ("TCP_FIN_WAIT2", TcpState::FinWait2),
            ("time_wait", TcpState::TimeWait),
            ("SYN_RECV", TcpState::SynReceived),
            ("close-wait", TcpState::CloseWait),
        ] {
            assert_eq!(text.parse::<TcpState>().unwrap(), want, "{text}");
        }
        let err = "FIN-WAIT-3".parse::<TcpState>().unwrap_err();
        assert!(err.contains("FIN-WAIT-2"), "{err}");
    }

    #[test]
    fn display_round_trips_through_parse() {
        for st in TcpState::ALL {
            assert_eq!(st.to_string().parse::<TcpState>().unwrap(), st);
        }
    }
}
