//! Fault injection: packet filter rules that a scenario adds and removes
//! while it runs (`drop client->server flags FIN first 1`, `heal`).
//!
//! The rules live in the case's network namespace, so they die with it and
//! the host's ruleset is never touched. This module holds the OS-neutral
//! model; each OS file turns a [`Rule`] into its packet filter's language
//! (nftables on Linux) with the same functions.

use std::fmt;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

/// What happens to a matching segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Silently discarded, as if lost on the way.
    Drop,
    /// Discarded, and the sender gets a RST in the receiver's name.
    Reject,
}

/// Which way the matched segments travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
    Both,
}

/// TCP header flags, as the wire carries them.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    /// Names in the order rules print them.
    pub const NAMES: [(&str, u8); 6] = [
        ("FIN", FIN),
        ("SYN", SYN),
        ("RST", RST),
        ("PSH", PSH),
        ("ACK", ACK),
        ("URG", URG),
    ];
    /// Every flag a rule can test.
    pub const ALL: u8 = FIN | SYN | RST | PSH | ACK | URG;
}

/// Which segments match by their flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagMatch {
    /// Any segment.
    Any,
    /// Every one of these flags is set (others may be too): `flags FIN`.
    AllOf(u8),
    /// These flags and no others: `flags =ACK` is a pure ACK or a data
    /// segment without PSH.
    Exactly(u8),
}

/// One fault: which segments, and what happens to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub verdict: Verdict,
    pub direction: Direction,
    pub flags: FlagMatch,
    /// Only the first N matching segments; later ones pass.
    pub first: Option<u32>,
}

/// `FIN,ACK` for a flag mask.
pub fn flag_names(mask: u8) -> String {
    let names: Vec<&str> = flags::NAMES
        .iter()
        .filter(|(_, bit)| mask & bit != 0)
        .map(|(n, _)| *n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// Parses `FIN,ACK` (case-insensitive) into a mask; the error names the
/// unknown flag.
pub fn parse_flags(text: &str) -> Result<u8, String> {
    let mut mask = 0;
    for name in text.split(',') {
        let bit = flags::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, b)| *b)
            .ok_or_else(|| {
                format!("unknown TCP flag {name:?}; expected FIN, SYN, RST, PSH, ACK or URG, joined by ','")
            })?;
        mask |= bit;
    }
    Ok(mask)
}

impl fmt::Display for Rule {
    /// The rule in the step language, e.g. `drop client->server flags FIN first 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.verdict {
            Verdict::Drop => "drop",
            Verdict::Reject => "reject",
        })?;
        f.write_str(match self.direction {
            Direction::ClientToServer => " client->server",
            Direction::ServerToClient => " server->client",
            Direction::Both => " both",
        })?;
        match self.flags {
            FlagMatch::Any => {}
            FlagMatch::AllOf(m) => write!(f, " flags {}", flag_names(m))?,
            FlagMatch::Exactly(m) => write!(f, " flags ={}", flag_names(m))?,
        }
        if let Some(n) = self.first {
            write!(f, " first {n}")?;
        }
        Ok(())
    }
}

/// Why a fault rule could not be put in place or read back.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error(
        "`nft` was not found: fault steps need nftables (Debian/Ubuntu: apt-get install nftables)"
    )]
    NoNft,
    #[error("nft refused the rule `{rule}`: {message}")]
    Refused { rule: String, message: String },
    #[error("reading the fault rules' counters: {0}")]
    Counters(String),
}

/// A rule in place, as reported: where it came from and how many segments
/// it matched while it was in place.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct FaultRecord {
    /// Line of the step that added it.
    pub line: Option<usize>,
    pub label: Option<String>,
    /// The rule in the step language.
    pub rule: String,
    /// The rule in the packet filter's own language (nftables on Linux).
    pub native: String,
    /// Segments the rule matched (dropped or rejected); null if the
    /// counter could not be read.
    pub matched: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_print_both_ways() {
        assert_eq!(parse_flags("fin,ACK"), Ok(flags::FIN | flags::ACK));
        assert_eq!(flag_names(flags::FIN | flags::ACK), "FIN,ACK");
        assert!(parse_flags("FIN,ECE").unwrap_err().contains("\"ECE\""));
        let r = Rule {
            verdict: Verdict::Reject,
            direction: Direction::ServerToClient,
            flags: FlagMatch::Exactly(flags::ACK),
            first: Some(2),
        };
        assert_eq!(r.to_string(), "reject server->client flags =ACK first 2");
    }
}
