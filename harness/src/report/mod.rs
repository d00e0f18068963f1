//! The JSON report (see the report contract): the model that every sink,
//! baseline and comparison reads.
//!
//! The model composes the facts of the earlier stages: a case's calls
//! (`driver`), its fault rules (`fault`), its outcome (`analyze`) and its
//! verdict (`verdict`). `schema()` is the JSON Schema of the whole report,
//! committed as `harness/schema/report.schema.json`; [`load`] reads reports
//! back, refusing other schema versions with a clear error.

pub mod load;

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::driver::StepRecord;
use crate::facts::CaseFacts;
use crate::fault::FaultRecord;
use crate::outcome::Outcome;
use crate::verdict::{Status, Verdict};

/// Bumped when a field of the contract changes name or meaning.
///
/// 2: steps carry `key`, `verb` and a typed `actor`; fault records a `key`;
/// `unobserved` lists facts a stack could not observe (null, with the
/// reason); `verdict.status` may be `unsupported`; `host.stack` names the
/// stack and its observation backends.
pub(crate) const SCHEMA_VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    pub schema_version: u32,
    pub tool: Tool,
    pub host: Host,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ms: f64,
    /// Names the run's capture folder: `captures/<run_id>/`.
    pub run_id: String,
    pub cases: Vec<CaseReport>,
    pub summary: Summary,
    /// True if the run was stopped (Ctrl-C, SIGTERM) before every case
    /// finished; `cases` then holds the cases that finished.
    #[serde(default)]
    pub interrupted: bool,
    /// Ids of selected cases that never started because the run was stopped.
    #[serde(default)]
    pub not_run: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Host {
    /// linux | freebsd | macos | windows
    pub os: String,
    /// `uname -r` (what the stack reports; gVisor reports 4.4.0)
    pub kernel: String,
    pub arch: String,
    /// The TCP/IP stack the cases ran on, and how it was observed.
    pub stack: crate::stack::StackInfo,
    /// Teardown-related sysctls of the host's own namespace. The values each
    /// case ran with are in `cases[].sysctls`.
    pub sysctls: BTreeMap<String, String>,
    /// Present when the cases ran on the bench (`run --bench`): the stack
    /// of each side's host, and the links that joined them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<BenchHosts>,
}

/// The bench a run used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BenchHosts {
    pub client: crate::stack::StackInfo,
    pub server: crate::stack::StackInfo,
    /// The links as read back from a bench built for the record; null with
    /// `link_unobserved` if none could be built.
    pub link: Option<crate::sandbox::LinkReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_unobserved: Option<String>,
}

impl Host {
    /// What joined each case's sides.
    pub fn link(&self) -> crate::scenario::Link {
        if self.bench.is_some() {
            crate::scenario::Link::Bench
        } else {
            crate::scenario::Link::Loopback
        }
    }

    /// The stack each side ran on: on loopback the one stack, on the bench
    /// each host's.
    pub(crate) fn side_stacks(&self) -> crate::tcp::PerSide<String> {
        match &self.bench {
            Some(b) => crate::tcp::PerSide::new(b.client.name.clone(), b.server.name.clone()),
            None => crate::tcp::PerSide::both(self.stack.name.clone()),
        }
    }

    /// What expectations call the run's stacks: the one stack, or on the
    /// bench each host's, as `client/server` when they differ (as
    /// `stack::Reach::name`).
    pub(crate) fn stacks_name(&self) -> String {
        let s = self.side_stacks();
        if s.client == s.server {
            s.client
        } else {
            format!("{}/{}", s.client, s.server)
        }
    }

    /// `linux 6.18.44 x86_64`, or `gvisor 20240729 on linux 4.4.0 x86_64`.
    pub fn name(&self) -> String {
        if self.stack.name == self.os {
            format!("{} {} {}", self.os, self.kernel, self.arch)
        } else {
            format!(
                "{}{} on {} {} {}",
                self.stack.name,
                self.stack
                    .version
                    .as_ref()
                    .map_or(String::new(), |v| format!(" {v}")),
                self.os,
                self.kernel,
                self.arch
            )
        }
    }
}

/// Cases per verdict status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub unchecked: usize,
    #[serde(default)]
    pub unsupported: usize,
    pub error: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct CaseReport {
    /// Scenario id and params, unique in the report: `linger-zero/ipv4`.
    pub id: String,
    /// File stem in `scenarios/`.
    pub scenario: String,
    /// The scenario file the case came from, as it was given.
    pub scenario_file: String,
    pub title: String,
    /// Claims (behaviour.md ids) the scenario checks.
    pub claims: Vec<String>,
    pub references: Vec<String>,
    pub params: BTreeMap<String, String>,
    /// Path of the case's pcap file; null if none was written.
    pub capture: Option<String>,
    pub duration_ms: f64,
    /// Where the case's wall time went; for benchmarks, not for verdicts.
    pub timing: Timing,
    pub steps: Vec<StepRecord>,
    /// Fault rules the steps put in place and what each matched.
    #[serde(default)]
    pub faults: Vec<FaultRecord>,
    /// What was observed: wire facts, states, TIME-WAIT, data accounting.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Teardown sysctls inside the case's namespace.
    pub sysctls: BTreeMap<String, String>,
    pub verdict: Verdict,
}

impl CaseReport {
    /// Whether the case drives groups of connections (`client#1..100`).
    /// Its case-level wire, state and data facts then describe its first
    /// connection only, and which connection that is, or how it fared (got a
    /// TIME-WAIT bucket, say), is chance: its behaviour is in
    /// `connections.*`. See [`CaseReport::first_connection_fact`].
    pub(crate) fn drives_groups(&self) -> bool {
        self.steps.iter().any(|s| s.result.group.is_some())
    }

    /// Whether the fact at `path` is one of those that describe a case's
    /// first connection only.
    pub(crate) fn first_connection_fact(path: &str) -> bool {
        ["wire.", "final_state.", "time_wait.", "data."]
            .iter()
            .any(|p| path.starts_with(p))
    }

    /// The case's facts, for the fact model.
    pub fn facts(&self) -> CaseFacts<'_> {
        CaseFacts {
            steps: &self.steps,
            faults: &self.faults,
            outcome: &self.outcome,
        }
    }
}

/// Wall time of each phase of a case, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Timing {
    /// New namespace, lo up, sysctls read.
    pub sandbox_ms: f64,
    /// Capture opened, filtered and active; state source opened.
    pub observe_setup_ms: f64,
    /// The steps, then the settle wait.
    pub run_ms: f64,
    /// Capture drained, pcap written, analysis, verdict.
    pub finish_ms: f64,
}

impl Report {
    /// The worst outcome, for the exit status: error, then fail; None if
    /// no case ran.
    pub fn worst(&self) -> Option<Status> {
        let s = &self.summary;
        if s.error > 0 {
            Some(Status::Error)
        } else if s.fail > 0 {
            Some(Status::Fail)
        } else if s.pass + s.unchecked + s.unsupported > 0 {
            Some(Status::Pass)
        } else {
            None
        }
    }
}

impl Summary {
    pub fn of(cases: &[CaseReport]) -> Summary {
        let mut s = Summary::default();
        for c in cases {
            *s.count_mut(c.verdict.status) += 1;
        }
        s
    }

    fn count_mut(&mut self, status: Status) -> &mut usize {
        match status {
            Status::Pass => &mut self.pass,
            Status::Fail => &mut self.fail,
            Status::Unchecked => &mut self.unchecked,
            Status::Unsupported => &mut self.unsupported,
            Status::Error => &mut self.error,
        }
    }

    /// How many cases had `status`.
    pub fn count(&self, status: Status) -> usize {
        let mut s = self.clone();
        *s.count_mut(status)
    }

    /// `78 cases: 76 pass, 0 fail, 0 unchecked, 2 unsupported, 0 error`.
    pub fn line(&self, cases: usize) -> String {
        let parts: Vec<String> = Status::ALL
            .iter()
            .map(|s| format!("{} {}", self.count(*s), s.name()))
            .collect();
        format!("{cases} cases: {}", parts.join(", "))
    }
}

/// The JSON Schema of [`Report`].
/// Moves a case's connection records, when there are more than a report
/// holds inline ([`crate::outcome::INLINE_CONNECTIONS`]), to `path` (JSON
/// Lines, written atomically), or with no `path` (no captures) leaves only
/// their summary and says why. Errors name the file.
pub fn spill_connections(outcome: &mut Outcome, path: Option<&Path>) -> Result<(), String> {
    let n = outcome.connections.len();
    if n <= crate::outcome::INLINE_CONNECTIONS {
        return Ok(());
    }
    let Some(path) = path else {
        outcome.connections.clear();
        // The summary stays: only the per-connection records need a file.
        outcome.unobserved.insert(
            "connections_file".into(),
            format!("{n} connections are too many to list in the report; run with captures to write them beside the pcap"),
        );
        return Ok(());
    };
    let records = std::mem::take(&mut outcome.connections);
    crate::files::write_atomic_with(path, |w| {
        for c in &records {
            serde_json::to_writer(&mut *w, c).map_err(std::io::Error::other)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    outcome.connections_file = Some(path.display().to_string());
    Ok(())
}

pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Report)).expect("a schema serialises")
}

/// Serialises and writes a report atomically.
pub fn write(path: &Path, report: &Report) -> std::io::Result<()> {
    crate::files::write_atomic_with(path, |w| {
        serde_json::to_writer_pretty(&mut *w, report).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    })
}

/// RFC 3339 UTC timestamp of a system time, to the second.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    // Truncated, not rounded: run ids append the milliseconds.
    jiff::Timestamp::try_from(t)
        .and_then(|ts| jiff::Timestamp::from_second(ts.as_second()))
        .map_or_else(|_| "1970-01-01T00:00:00Z".into(), |ts| ts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let committed: serde_json::Value =
            serde_json::from_str(include_str!("../../schema/report.schema.json")).unwrap();
        assert!(
            committed == schema(),
            "harness/schema/report.schema.json is stale: regenerate it with `just schema`"
        );
    }

    /// Every part of a case report survives writing and reading back,
    /// including a multi-connection case's (a field of the outcome that
    /// clashed with one of the case once made every such report unreadable).
    #[test]
    fn a_report_with_every_part_reads_back_as_written() {
        let mut r = fixture::report("a", 1, None);
        let c = &mut r.cases[0];
        let flow = crate::analyze::flows::FlowFacts {
            index: 0,
            client: "127.0.0.1:40000".parse().unwrap(),
            server: "127.0.0.1:9000".parse().unwrap(),
            start_us: 1,
            duration_us: 2,
            began_before_capture: false,
            open_at_end: false,
            packets: crate::tcp::PerSide::new(3, 2),
            ip_bytes: crate::tcp::PerSide::new(156, 104),
            wire: c.outcome.wire.clone().unwrap(),
            acked: crate::tcp::PerSide::new(0, 0),
            missed: crate::tcp::PerSide::new(Some(0), Some(0)),
        };
        c.outcome
            .connections
            .push(crate::outcome::ConnectionRecord {
                number: Some(1),
                flow,
                final_state: crate::tcp::PerSide::new(Some(crate::tcp::TcpState::TimeWait), None),
                time_wait: Some(crate::tcp::TimeWaitSide::Client),
                data: Some(c.outcome.data.clone()),
            });
        c.steps[0].result.group = Some(crate::driver::GroupResult {
            target: "client#1..2".into(),
            sockets: 2,
            ok: 2,
            timed_out: 0,
            errnos: Default::default(),
        });
        c.outcome.connection_summary = Some(Default::default());
        c.outcome.netstat.insert("TW".into(), 2);
        c.outcome.capture_stats = Some(crate::outcome::CaptureStats {
            packets: 10,
            dropped: Some(0),
            loopback_dropped: Some(0),
        });
        c.outcome.connections_file = Some("x.connections.jsonl".into());
        let text = serde_json::to_string_pretty(&r).unwrap();
        let back = load::parse(std::path::Path::new("r.json"), &text).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&r).unwrap()
        );
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_258_861)),
            "2026-11-21T11:01:01Z"
        );
    }

    #[test]
    fn summary_counts_every_status() {
        let mut r = fixture::report("a", 1, None);
        let mut c = r.cases[0].clone();
        c.verdict.status = Status::Unsupported;
        r.cases.push(c);
        let s = Summary::of(&r.cases);
        assert_eq!((s.pass, s.unsupported), (1, 1));
        assert_eq!(
            s.line(2),
            "2 cases: 1 pass, 0 fail, 0 unchecked, 1 unsupported, 0 error"
        );
    }
}

/// A small, complete report for unit tests of the report's consumers.
#[cfg(test)]
pub(crate) mod fixture {
    use serde_json::json;

    use super::Report;

    /// One case `x/ipv4` whose client sent `fin` FINs and whose one step
    /// (`client close`, line 3) failed with `errno`.
    pub fn report(run: &str, fin: u64, errno: Option<&str>) -> Report {
        let mut r: Report = serde_json::from_value(json!({
            "schema_version": super::SCHEMA_VERSION,
            "tool": { "name": "teardown", "version": "0.1.0" },
            "host": { "os": "linux", "kernel": "6.18", "arch": "x86_64",
                "stack": { "name": "linux", "version": null, "detected_by": "test",
                    "capture": "libpcap", "states": "sock-diag", "faults": "nftables" },
                "sysctls": {} },
            "started_at": "2026-11-21T10:00:00Z", "duration_ms": 1.0, "run_id": run,
            "summary": { "pass": 1, "fail": 0, "unchecked": 0, "unsupported": 0, "error": 0 },
            "cases": [{
                "id": "x/ipv4", "scenario": "x", "scenario_file": "scenarios/x.toml",
                "title": "t", "claims": [], "references": [], "params": { "family": "ipv4" },
                "capture": null, "duration_ms": 1.0,
                "timing": { "sandbox_ms": 0.0, "observe_setup_ms": 0.0, "run_ms": 0.0, "finish_ms": 0.0 },
                "steps": [{ "line": 3, "key": "line3", "actor": "client", "verb": "close",
                    "call": "client close", "label": null,
                    "background": false, "start_ms": 0.0, "duration_ms": 0.1,
                    "ret": 0, "errno": errno, "bytes": null, "value": null, "timed_out": false,
                    "note": null, "harness_error": null }],
                "wire": { "client": { "syn": 1, "fin": fin, "distinct_fins": fin, "rst": 0, "data_bytes": 0, "retransmits": 0 },
                          "server": { "syn": 1, "fin": 1, "distinct_fins": 1, "rst": 0, "data_bytes": 0, "retransmits": 0 },
                          "first_fin": "client", "first_rst": null, "conn_state": "SF",
                          "history": "ShAFf", "close_segments": 3 },
                "packets": [], "states": { "client": [], "server": [] },
                "final_state": { "client": "TIME-WAIT", "server": "CLOSED" },
                "time_wait": { "side": "client", "remaining_ms": 60000 },
                "data": { "client_to_server": { "written": 0, "sent": 0, "acked": 0, "read": 0, "lost": 0, "corrupted": 0 },
                          "server_to_client": { "written": 0, "sent": 0, "acked": 0, "read": 0, "lost": 0, "corrupted": 0 } },
                "sysctls": {}, "settled": true, "findings": [], "unobserved": {},
                "verdict": { "status": "pass", "mismatches": [], "checks": [], "error": null }
            }]
        }))
        .expect("a valid report");
        r.run_id = run.into();
        r
    }
}
