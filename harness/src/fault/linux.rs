//! Linux: nftables rules in the case's namespace, through the `nft` tool.
//!
//! One table (`inet teardown`) with one chain on the **input** hook. On
//! loopback, libpcap sees a segment when it is received, before netfilter's
//! input hook runs, so a dropped segment is still in the capture (it just
//! never reaches the socket), and a retransmission shows up as a second copy.
//! An output-hook drop would hide the segment from the capture altogether;
//! that is why the input hook is used.
//!
//! "First N" uses `numgen inc`, which counts only the segments that got as
//! far as it in the rule, i.e. those that matched everything before it.

use crate::sandbox::{self, Hosts, Namespace};
use std::collections::HashMap;
use std::io::ErrorKind;

use super::FaultError;
use crate::scenario::rule::{Direction, EXACT_MATCH_FLAGS, Effect, FlagMatch, Rule};
use crate::tcp::Flags;

const TABLE: &str = "inet teardown";
const CHAIN: &str = "faults";

/// The case namespace's packet filter. `!Send` like [`Namespace`]: `nft`
/// runs as a child of the calling thread and inherits its namespace, so a
/// firewall must never move to a thread outside the case's namespace.
pub struct Firewall {
    ready: bool,
    hook: &'static str,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Firewall {
    /// A firewall for the calling thread's (fresh) namespace; nothing is
    /// installed until the first rule. On the bench's router the rules sit on
    /// the forward path (both hosts' traffic crosses it, whatever stack
    /// they run); on loopback, on the input hook.
    pub fn new(_ns: &Namespace, hosts: &Hosts) -> Firewall {
        Firewall {
            ready: false,
            hook: if hosts.is_bench() { "forward" } else { "input" },
            _not_send: std::marker::PhantomData,
        }
    }

    /// Puts `rule` in place; returns its handle and its nftables text.
    pub fn add(&mut self, rule: &Rule, server_port: u16) -> Result<(u64, String), FaultError> {
        let native = native_rule(rule, server_port);
        // The table and chain come with the first rule: one nft run, not two.
        let setup = if self.ready {
            String::new()
        } else {
            format!(
                "add table {TABLE}; add chain {TABLE} {CHAIN} {{ type filter hook {} priority 0; policy accept; }}; ",
                self.hook
            )
        };
        let echoed = nft(&[
            "--echo",
            "--handle",
            &format!("{setup}add rule {TABLE} {CHAIN} {native}"),
        ])
        .map_err(|e| refused(e, &native))?;
        self.ready = true;
        let handle = echoed
            .rsplit_once("# handle ")
            .and_then(|(_, h)| h.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| FaultError::Refused {
                rule: native.clone(),
                message: format!("nft did not echo a rule handle: {echoed:?}"),
            })?;
        Ok((handle, native))
    }

    /// Removes the rule with this handle.
    pub fn remove(&mut self, handle: u64) -> Result<(), FaultError> {
        nft(&[&format!("delete rule {TABLE} {CHAIN} handle {handle}")])
            .map(drop)
            .map_err(|e| refused(e, &format!("delete handle {handle}")))
    }

    /// Segments matched so far, per rule handle (rules in place only).
    pub fn counters(&self) -> Result<HashMap<u64, u64>, FaultError> {
        if !self.ready {
            return Ok(HashMap::new());
        }
        let json = nft(&["--json", &format!("list chain {TABLE} {CHAIN}")])
            .map_err(|e| FaultError::Counters(e.unwrap_or_else(|| "nft missing".into())))?;
        parse_counters(&json).map_err(FaultError::Counters)
    }
}

/// `None` = nft is not installed; `Some(message)` = it refused. nft runs
/// through [`sandbox::run_isolated`], never `std::process::Command`: see
/// there why a plain fork would change what other cases observe.
fn nft(args: &[&str]) -> Result<String, Option<String>> {
    let out = sandbox::run_isolated("nft", args).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            None
        } else {
            Some(format!("cannot run nft: {e}"))
        }
    })?;
    if out.code == 0 {
        Ok(out.output)
    } else {
        Err(Some(
            out.output
                .lines()
                .next()
                .unwrap_or("failed without a message")
                .to_string(),
        ))
    }
}

fn refused(e: Option<String>, rule: &str) -> FaultError {
    match e {
        None => FaultError::NoNft,
        Some(message) => FaultError::Refused {
            rule: rule.to_string(),
            message,
        },
    }
}

/// The rule as an nftables rule body.
pub(crate) fn native_rule(rule: &Rule, server_port: u16) -> String {
    let mut parts = vec![match rule.direction {
        Direction::ClientToServer => format!("tcp dport {server_port}"),
        Direction::ServerToClient => format!("tcp sport {server_port}"),
        Direction::Both => "meta l4proto tcp".to_string(),
    }];
    // nftables spells flags in lower case, joined by '|': `fin | ack`.
    let set = |mask: Flags| mask.names().to_ascii_lowercase().replace(',', " | ");
    match rule.flags {
        FlagMatch::Any => {}
        FlagMatch::AllOf(m) => parts.push(format!("tcp flags & ({}) == {}", set(m), set(m))),
        FlagMatch::Exactly(m) => {
            let want = if m.is_empty() { "0x0".into() } else { set(m) };
            parts.push(format!(
                "tcp flags & ({}) == {want}",
                set(EXACT_MATCH_FLAGS)
            ));
        }
    }
    if let Some(n) = rule.first {
        // numgen counts from 0 and only sees segments that matched so far.
        parts.push(format!("numgen inc mod 4294967295 < {n}"));
    }
    parts.push("counter".into());
    parts.push(
        match rule.effect {
            Effect::Drop => "drop",
            Effect::Reject => "reject with tcp reset",
        }
        .into(),
    );
    parts.join(" ")
}

/// Handle -> packets from `nft --json list chain`.
fn parse_counters(json: &str) -> Result<HashMap<u64, u64>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = v["nftables"]
        .as_array()
        .ok_or("no \"nftables\" array in nft's output")?;
    let mut out = HashMap::new();
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let handle = rule["handle"].as_u64().ok_or("a rule without a handle")?;
        let packets = rule["expr"]
            .as_array()
            .and_then(|e| e.iter().find_map(|x| x["counter"]["packets"].as_u64()))
            .ok_or("a rule without a counter")?;
        out.insert(handle, packets);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_render_as_nftables() {
        let r = Rule {
            effect: Effect::Drop,
            direction: Direction::ClientToServer,
            flags: FlagMatch::AllOf(Flags::FIN),
            first: Some(1),
        };
        assert_eq!(
            native_rule(&r, 9000),
            "tcp dport 9000 tcp flags & (fin) == fin numgen inc mod 4294967295 < 1 counter drop"
        );
        let r = Rule {
            effect: Effect::Reject,
            direction: Direction::ServerToClient,
            flags: FlagMatch::Exactly(Flags::ACK),
            first: None,
        };
        assert_eq!(
            native_rule(&r, 9000),
            "tcp sport 9000 tcp flags & (fin | syn | rst | psh | ack | urg) == ack counter reject with tcp reset"
        );
        let r = Rule {
            effect: Effect::Drop,
            direction: Direction::Both,
            flags: FlagMatch::Any,
            first: None,
        };
        assert_eq!(native_rule(&r, 9000), "meta l4proto tcp counter drop");
    }

    #[test]
    fn counters_come_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"chain": {"family": "inet", "table": "teardown", "name": "faults", "handle": 1}},
          {"rule": {"handle": 2, "expr": [{"match": {}}, {"counter": {"packets": 3, "bytes": 180}}, {"drop": null}]}}]}"#;
        assert_eq!(parse_counters(json), Ok(HashMap::from([(2, 3)])));
        assert!(parse_counters("{}").is_err());
    }
}
