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
