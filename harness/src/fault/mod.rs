//! Fault injection: packet filter rules that a scenario adds and removes
//! while it runs (`drop client->server flags FIN first 1`, `heal`).
//!
//! The rules live in the case's network namespace, so they die with it and
//! the host's ruleset is never touched. The rule model is the scenario's
//! ([`crate::scenario::rule`]); each OS file turns a rule into its packet
//! filter's language (nftables on Linux) with the same functions.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

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

/// A rule as the driver put it in place: what it matches, and when it was
/// in place (ms since the case started: from the end of its step to the
/// start of the `heal` that removed it, or the end of the case).
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub key: String,
    pub rule: crate::scenario::rule::Rule,
    pub from_ms: f64,
    pub until_ms: Option<f64>,
}

/// Marks the packets the fault rules took, the way the packet filter
/// decides: rules in the order they were added, each matching segments in
/// its direction and with its flags while it was in place, `first N` only
/// N of them; the first rule that matches takes the segment. Returns how
/// many each rule took, by key, so a caller can check them against the
/// filter's own counters.
pub(crate) fn attribute(
    packets: &mut [crate::analyze::PacketRecord],
    rules: &[Placed],
) -> std::collections::BTreeMap<String, u64> {
    let mut taken: std::collections::BTreeMap<String, u64> =
        rules.iter().map(|r| (r.key.clone(), 0)).collect();
    for p in packets.iter_mut() {
        let rule = rules.iter().find(|r| {
            p.t_ms >= r.from_ms
                && r.until_ms.is_none_or(|u| p.t_ms < u)
                && r.rule.direction.from_side(p.from)
                && r.rule.flags.matches(p.flags)
                && r.rule.first.is_none_or(|n| taken[&r.key] < u64::from(n))
        });
        if let Some(r) = rule {
            *taken.get_mut(&r.key).expect("every rule counted") += 1;
            p.dropped_by = Some(r.key.clone());
        }
    }
    taken
}

/// A rule in place, as reported: where it came from and how many segments
/// it matched while it was in place.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct FaultRecord {
    /// Line of the step that added it.
    pub line: Option<usize>,
    /// How facts name it (`faults.KEY.matched`): its label, or `lineN`.
    pub key: String,
    pub label: Option<String>,
    /// The rule in the step language.
    pub rule: String,
    /// The rule in the packet filter's own language (nftables on Linux).
    pub native: String,
    /// Segments the rule matched (dropped or rejected); null if the
    /// counter could not be read.
    pub matched: Option<u64>,
}
