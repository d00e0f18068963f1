//! TCP vocabulary shared by every stage: connection states with their RFC 9293
//! spelling, header flags, and the two sides of a connection.
//!
//! This module only names things; it never talks to the kernel.

use std::fmt;
use std::ops::{Index, IndexMut};
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
    pub(crate) fn rfc_name(self) -> &'static str {
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

/// Which end holds (or held, or should hold) a TIME-WAIT socket: the side
/// that sent the last ACK of the FIN exchange, both after a simultaneous
/// close, none after a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimeWaitSide {
    Client,
    Server,
    Both,
    None,
}

impl TimeWaitSide {
    pub fn name(self) -> &'static str {
        match self {
            TimeWaitSide::Client => "client",
            TimeWaitSide::Server => "server",
            TimeWaitSide::Both => "both",
            TimeWaitSide::None => "none",
        }
    }
}

/// A value per side of a connection: `counts[Side::Client]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct PerSide<T> {
    pub client: T,
    pub server: T,
}

impl<T> PerSide<T> {
    pub fn new(client: T, server: T) -> Self {
        PerSide { client, server }
    }

    /// The same value for both sides.
    /// The two sides' values the other way round.
    pub(crate) fn swap(&mut self) {
        std::mem::swap(&mut self.client, &mut self.server);
    }

    pub fn both(v: T) -> Self
    where
        T: Clone,
    {
        PerSide {
            client: v.clone(),
            server: v,
        }
    }

    pub fn map<U>(self, mut f: impl FnMut(Side, T) -> U) -> PerSide<U> {
        PerSide {
            client: f(Side::Client, self.client),
            server: f(Side::Server, self.server),
        }
    }

    pub fn as_ref(&self) -> PerSide<&T> {
        PerSide {
            client: &self.client,
            server: &self.server,
        }
    }

    /// `(Side::Client, &client), (Side::Server, &server)`.
    pub fn iter(&self) -> impl Iterator<Item = (Side, &T)> {
        [(Side::Client, &self.client), (Side::Server, &self.server)].into_iter()
    }
}

impl<T> Index<Side> for PerSide<T> {
    type Output = T;

    fn index(&self, side: Side) -> &T {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }
}

impl<T> IndexMut<Side> for PerSide<T> {
    fn index_mut(&mut self, side: Side) -> &mut T {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }
}

impl Side {
    pub(crate) const BOTH: [Side; 2] = [Side::Client, Side::Server];
}

/// The TCP header's flag bits (RFC 9293 section 3.1, RFC 3168 for ECE and
/// CWR): one type for segments on the wire, fault rules and pictures.
///
/// `Display` is tcpdump's spelling (`S.`, `F.`, `FP.`, `R`, `.` for a bare
/// ACK); [`Flags::names`] the comma-separated names fault rules use
/// (`FIN,ACK`). Reports carry the tcpdump spelling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u8);

impl Flags {
    pub const FIN: Flags = Flags(0x01);
    pub const SYN: Flags = Flags(0x02);
    pub const RST: Flags = Flags(0x04);
    pub(crate) const PSH: Flags = Flags(0x08);
    pub const ACK: Flags = Flags(0x10);
    pub(crate) const URG: Flags = Flags(0x20);
    pub(crate) const ECE: Flags = Flags(0x40);
    pub(crate) const CWR: Flags = Flags(0x80);
    pub(crate) const NONE: Flags = Flags(0);

    /// Name, flag and tcpdump letter, in tcpdump's printing order.
    const TABLE: [(&'static str, Flags, char); 8] = [
        ("FIN", Flags::FIN, 'F'),
        ("SYN", Flags::SYN, 'S'),
        ("RST", Flags::RST, 'R'),
        ("PSH", Flags::PSH, 'P'),
        ("ACK", Flags::ACK, '.'),
        ("URG", Flags::URG, 'U'),
        ("ECE", Flags::ECE, 'E'),
        ("CWR", Flags::CWR, 'W'),
    ];

    /// The flags of a raw TCP header byte 13.
    pub const fn from_bits(bits: u8) -> Flags {
        Flags(bits)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn syn(self) -> bool {
        self.contains(Flags::SYN)
    }
    pub fn ack(self) -> bool {
        self.contains(Flags::ACK)
    }
    pub fn fin(self) -> bool {
        self.contains(Flags::FIN)
    }
    pub fn rst(self) -> bool {
        self.contains(Flags::RST)
    }
    pub fn psh(self) -> bool {
        self.contains(Flags::PSH)
    }

    /// `FIN,ACK`: the names of the set flags, or `none`.
    pub fn names(self) -> String {
        let names: Vec<&str> = Flags::TABLE
            .iter()
            .filter(|(_, f, _)| self.contains(*f))
            .map(|(n, _, _)| *n)
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }

    /// Parses `FIN,ACK` (names, case-insensitive, joined by ',').
    pub(crate) fn parse_names(text: &str) -> Result<Flags, String> {
        text.split(',').try_fold(Flags::NONE, |acc, name| {
            Flags::TABLE
                .iter()
                .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, f, _)| acc | *f)
                .ok_or_else(|| {
                    format!(
                        "unknown TCP flag {name:?}; expected {}, joined by ','",
                        Flags::TABLE.map(|(n, _, _)| n).join(", ")
                    )
                })
        })
    }

    /// Parses tcpdump's spelling (`FP.`, `S.`, `R`; `none` for no flag).
    pub(crate) fn parse_tcpdump(text: &str) -> Result<Flags, String> {
        if text == "none" {
            return Ok(Flags::NONE);
        }
        text.chars().try_fold(Flags::NONE, |acc, c| {
            Flags::TABLE
                .iter()
                .find(|(_, _, l)| *l == c)
                .map(|(_, f, _)| acc | *f)
                .ok_or_else(|| format!("unknown tcpdump flag letter {c:?} in {text:?}"))
        })
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;

    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Display for Flags {
    /// tcpdump's spelling: `S`, `S.`, `F.`, `R`, `P.`, `.` for a bare ACK,
    /// `none` for a segment without flags.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        self.letters()
            .try_for_each(|c| fmt::Write::write_char(f, c))
    }
}

impl Flags {
    /// The tcpdump letters of the set flags, in tcpdump's order (none for
    /// a segment without flags; `Display` says `none` then).
    pub(crate) fn letters(self) -> impl Iterator<Item = char> {
        Flags::TABLE
            .into_iter()
            .filter(move |(_, flag, _)| self.contains(*flag))
            .map(|(_, _, letter)| letter)
    }
}

impl Serialize for Flags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Flags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Flags::parse_tcpdump(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Flags {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Flags".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "TCP flags in tcpdump's spelling: F S R P . (ACK) U E W, e.g. `S.`, `FP.`, `R`; `none` for no flag",
            "pattern": "^(none|F?S?R?P?\\.?U?E?W?)$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_like_tcpdump_and_parse_back() {
        for (flags, text) in [
            (Flags::SYN, "S"),
            (Flags::SYN | Flags::ACK, "S."),
            (Flags::FIN | Flags::PSH | Flags::ACK, "FP."),
            (Flags::RST, "R"),
            (Flags::ACK, "."),
            (Flags::NONE, "none"),
            (Flags::from_bits(0xff), "FSRP.UEW"),
        ] {
            assert_eq!(flags.to_string(), text);
            assert_eq!(Flags::parse_tcpdump(text), Ok(flags));
        }
        assert!(Flags::parse_tcpdump("FX").is_err());
    }

    #[test]
    fn flags_names_parse_and_print_both_ways() {
        assert_eq!(Flags::parse_names("fin,ACK"), Ok(Flags::FIN | Flags::ACK));
        assert_eq!((Flags::FIN | Flags::ACK).names(), "FIN,ACK");
        assert!(
            Flags::parse_names("FIN,EXE")
                .unwrap_err()
                .contains("\"EXE\"")
        );
        assert_eq!(
            serde_json::to_value(Flags::FIN | Flags::ACK).unwrap(),
            serde_json::json!("F.")
        );
    }

    #[test]
    fn per_side_indexes_by_side() {
        let mut p = PerSide::new(1, 2);
        p[Side::Server] += 10;
        assert_eq!((p[Side::Client], p[Side::Server]), (1, 12));
        assert_eq!(p.map(|s, v| (s, v * 2)).server, (Side::Server, 24));
    }

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

/// An errno by its name (`ECONNRESET`), as calls and reports give it:
/// names are what people grep for and what compares across OSes (Winsock's
/// errors take their POSIX names). Serialized as the bare name.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct ErrnoName(String);

impl ErrnoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ErrnoName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ErrnoName {
    fn from(name: &str) -> Self {
        ErrnoName(name.to_string())
    }
}

impl From<String> for ErrnoName {
    fn from(name: String) -> Self {
        ErrnoName(name)
    }
}

/// The timer a socket has running, as the kernel names it (`ss -o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TimerKind {
    Retransmit,
    KeepAlive,
    TimeWait,
    /// The persist timer: zero-window probes.
    ZeroWindowProbe,
}

impl TimerKind {
    pub const ALL: [TimerKind; 4] = [
        TimerKind::Retransmit,
        TimerKind::KeepAlive,
        TimerKind::TimeWait,
        TimerKind::ZeroWindowProbe,
    ];

    /// Its name in steps and reports: `retransmit`, `keep-alive`,
    /// `time-wait`, `zero-window-probe`.
    pub fn name(self) -> &'static str {
        match self {
            TimerKind::Retransmit => "retransmit",
            TimerKind::KeepAlive => "keep-alive",
            TimerKind::TimeWait => "time-wait",
            TimerKind::ZeroWindowProbe => "zero-window-probe",
        }
    }
}

impl std::str::FromStr for TimerKind {
    type Err = String;

    /// The step's spelling, or the common other names (`keepalive`,
    /// `persist`).
    fn from_str(s: &str) -> Result<TimerKind, String> {
        match s.to_ascii_lowercase().as_str() {
            "retransmit" | "on" => Ok(TimerKind::Retransmit),
            "keep-alive" | "keepalive" => Ok(TimerKind::KeepAlive),
            "time-wait" | "timewait" => Ok(TimerKind::TimeWait),
            "zero-window-probe" | "persist" | "probe" => Ok(TimerKind::ZeroWindowProbe),
            _ => Err(format!(
                "unknown timer {s:?}; expected retransmit, keep-alive, time-wait or zero-window-probe (persist)"
            )),
        }
    }
}
