//! Fault rules as a scenario writes them (`drop client->server flags FIN
//! first 1`): which segments, and what happens to them. The model only;
//! `fault` puts rules in place in a case's packet filter.

use std::fmt;

use crate::tcp::Flags;

/// What happens to a matching segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
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

/// Which segments match by their flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagMatch {
    /// Any segment.
    Any,
    /// Every one of these flags is set (others may be too): `flags FIN`.
    AllOf(Flags),
    /// These flags and no others among FIN SYN RST PSH ACK URG: `flags =ACK`
    /// is a pure ACK or a data segment without PSH.
    Exactly(Flags),
}

impl FlagMatch {
    /// Whether a segment with `flags` matches, as the packet filter decides.
    pub fn matches(self, flags: Flags) -> bool {
        match self {
            FlagMatch::Any => true,
            FlagMatch::AllOf(f) => flags.contains(f),
            FlagMatch::Exactly(f) => Flags::from_bits(flags.bits() & EXACT_MATCH_FLAGS.bits()) == f,
        }
    }
}

impl Direction {
    /// Whether a segment `from` this side goes this way.
    pub fn from_side(self, from: crate::tcp::Side) -> bool {
        use crate::tcp::Side;
        matches!(
            (self, from),
            (Direction::Both, _)
                | (Direction::ClientToServer, Side::Client)
                | (Direction::ServerToClient, Side::Server)
        )
    }
}

/// The flags `flags =...` compares; ECE and CWR are left out, so that ECN
/// does not change what "a pure ACK" means.
pub(crate) const EXACT_MATCH_FLAGS: Flags = Flags::from_bits(0x3f);

/// One fault: which segments, and what happens to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub effect: Effect,
    pub direction: Direction,
    pub flags: FlagMatch,
    /// Only the first N matching segments; later ones pass.
    pub first: Option<u32>,
}

impl fmt::Display for Rule {
    /// The rule in the step language, e.g. `drop client->server flags FIN first 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.effect {
            Effect::Drop => "drop",
            Effect::Reject => "reject",
        })?;
        f.write_str(match self.direction {
            Direction::ClientToServer => " client->server",
            Direction::ServerToClient => " server->client",
            Direction::Both => " both",
        })?;
        match self.flags {
            FlagMatch::Any => {}
            FlagMatch::AllOf(m) => write!(f, " flags {}", m.names())?,
            FlagMatch::Exactly(m) => write!(f, " flags ={}", m.names())?,
        }
        if let Some(n) = self.first {
            write!(f, " first {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_prints_as_written() {
        let r = Rule {
            effect: Effect::Reject,
            direction: Direction::ServerToClient,
            flags: FlagMatch::Exactly(Flags::ACK),
            first: Some(2),
        };
        assert_eq!(r.to_string(), "reject server->client flags =ACK first 2");
    }
}
