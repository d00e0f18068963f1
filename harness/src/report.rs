//! The JSON report (see the report contract) and its writers.
//!
//! The model composes the facts of the earlier stages; a report is written
//! atomically (temporary file, fsync, rename), so a crash never leaves half
//! a JSON file. `schema()` is the JSON Schema of the whole report, committed
//! as `harness/schema/report.schema.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analyze::{PacketRecord, WireFacts};
use crate::driver::StepRecord;
use crate::fault::FaultRecord;
use crate::observe::Timeline;
use crate::tcp::TcpState;
use crate::verdict::{Status, Verdict};

/// Bumped when a field of the contract changes name or meaning.
pub const SCHEMA_VERSION: u32 = 1;

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
    /// True if the run was stopped (Ctrl-C, SIGTERM) before every case ran;
    /// `cases` then holds the cases that finished.
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
    /// `uname -r`
    pub kernel: String,
    pub arch: String,
    /// Teardown-related sysctls of the host's own namespace. The values each
    /// case ran with are in `cases[].sysctls`.
    pub sysctls: BTreeMap<String, String>,
}

/// Cases per verdict status.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub unchecked: usize,
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
    /// Null when there was no capture to analyze.
    pub wire: Option<WireFacts>,
    /// The connection's segments in capture order.
    pub packets: Vec<PacketRecord>,
    /// Kernel socket states over time (sock_diag).
    pub states: Timeline,
    pub final_state: FinalState,
    pub time_wait: TimeWait,
    pub data: DataFlows,
    /// Teardown sysctls inside the case's namespace.
    pub sysctls: BTreeMap<String, String>,
    /// False if some socket was still in a transient state (e.g. FIN-WAIT-1)
    /// when the settle bound ran out; the final facts were taken anyway.
    pub settled: bool,
    /// Odd things seen that are not failures: malformed packets, segments
    /// of other connections, harness notes.
    pub findings: Vec<String>,
    pub verdict: Verdict,
}

/// Wall time of each phase of a case, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Timing {
    /// New namespace, lo up, sysctls read.
    pub sandbox_ms: f64,
    /// libpcap handle opened, filtered and active; sock_diag socket opened.
    pub observe_setup_ms: f64,
    /// The steps, then the settle wait.
    pub run_ms: f64,
    /// Capture drained, pcap written, analysis, verdict.
    pub finish_ms: f64,
}

/// Each side's last kernel state (CLOSED once its socket is gone).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct FinalState {
    pub client: Option<TcpState>,
    pub server: Option<TcpState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimeWaitSide {
    Client,
    Server,
    Both,
    None,
}

/// Who held a TIME-WAIT socket at the end of the case (sock_diag).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TimeWait {
    /// Null when the case ended before the kernel's table was read.
    pub side: Option<TimeWaitSide>,
    /// The kernel's remaining TIME-WAIT timer (the smaller, if both).
    pub remaining_ms: Option<u32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct DataFlows {
    pub client_to_server: Flow,
    pub server_to_client: Flow,
}

/// Bytes of one direction, from the application's and the wire's view.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Flow {
    /// Accepted by write() calls.
    pub written: u64,
    /// Distinct payload bytes on the wire (null without a capture).
    pub sent: Option<u64>,
    /// Of those, acknowledged by the peer (null without a capture).
    pub acked: Option<u64>,
    /// Returned by the peer's read() calls.
    pub read: u64,
    /// written - read: never delivered to the peer application.
    pub lost: u64,
    /// Bytes read that differ from what was written.
    pub corrupted: u64,
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

impl Report {
    /// The worst outcome, for the exit status.
    pub fn worst(&self) -> Option<Status> {
        let s = &self.summary;
        if s.error > 0 {
            Some(Status::Error)
        } else if s.fail > 0 {
            Some(Status::Fail)
        } else if s.pass + s.unchecked > 0 {
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
            match c.verdict.status {
                Status::Pass => s.pass += 1,
                Status::Fail => s.fail += 1,
                Status::Unchecked => s.unchecked += 1,
                Status::Error => s.error += 1,
            }
        }
        s
    }
}

/// The JSON Schema of [`Report`].
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Report)).expect("a schema serialises")
}

/// A sibling temporary path, unique per process and call.
pub fn temp_path_for(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Serialises and writes a report atomically.
pub fn write_report(path: &Path, report: &Report) -> std::io::Result<()> {
    let mut json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// One row per case: what a person scans first.
pub fn table(report: &Report) -> String {
    let head = [
        "scenario",
        "params",
        "client F/R",
        "server F/R",
        "first FIN",
        "TIME-WAIT",
        "lost c>s",
        "lost s>c",
        "verdict",
    ];
    let mut rows: Vec<[String; 9]> = Vec::new();
    for c in &report.cases {
        let fr = |s: Option<&crate::analyze::SideCounts>| {
            s.map_or("-".into(), |s| format!("{}/{}", s.fin, s.rst))
        };
        let w = c.wire.as_ref();
        let first = w
            .and_then(|w| w.first_fin)
            .map_or("-", |f| f.name())
            .to_string();
        let tw = c.time_wait.side.map_or("-", TimeWaitSide::name).to_string();
        let status = match c.verdict.status {
            Status::Pass => "pass".to_string(),
            Status::Unchecked => "unchecked".to_string(),
            Status::Fail => format!("FAIL ({})", c.verdict.mismatches.len()),
            Status::Error => "ERROR".to_string(),
        };
        // family first, then the other axes as name=value
        let mut params: Vec<String> = c.params.get("family").cloned().into_iter().collect();
        params.extend(
            c.params
                .iter()
                .filter(|(k, _)| *k != "family")
                .map(|(k, v)| format!("{k}={v}")),
        );
        rows.push([
            c.scenario.clone(),
            params.join(" "),
            fr(w.map(|w| &w.client)),
            fr(w.map(|w| &w.server)),
            first,
            tw,
            c.data.client_to_server.lost.to_string(),
            c.data.server_to_client.lost.to_string(),
            status,
        ]);
    }
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&head, &mut out);
    for r in &rows {
        line(&r.each_ref().map(String::as_str), &mut out);
    }
    for c in &report.cases {
        for m in &c.verdict.mismatches {
            out.push_str(&format!(
                "  {}: {} expected {} observed {} ({}:{}{})\n",
                c.id,
                m.path,
                m.expected,
                m.observed,
                c.scenario_file,
                m.line,
                if m.claims.is_empty() {
                    String::new()
                } else {
                    format!(", {}", m.claims.join(" "))
                }
            ));
        }
        if let Some(e) = &c.verdict.error {
            out.push_str(&format!("  {}: harness error: {e}\n", c.id));
        }
    }
    let s = &report.summary;
    out.push_str(&format!(
        "{} cases: {} pass, {} fail, {} unchecked, {} error\n",
        report.cases.len(),
        s.pass,
        s.fail,
        s.unchecked,
        s.error
    ));
    out
}

/// RFC 3339 UTC timestamp of a system time (no external date crate needed
/// for one formatting function).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let committed: serde_json::Value =
            serde_json::from_str(include_str!("../schema/report.schema.json")).unwrap();
        assert!(
            committed == schema(),
            "harness/schema/report.schema.json is stale: regenerate it with `just schema`"
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
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = std::env::temp_dir().join(format!("teardown-atomic-{}", std::process::id()));
        let path = dir.join("r.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("r.json")]);
        std::fs::remove_dir_all(dir).unwrap();
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
            "schema_version": 1,
            "tool": { "name": "teardown", "version": "0.1.0" },
            "host": { "os": "linux", "kernel": "6.18", "arch": "x86_64", "sysctls": {} },
            "started_at": "2026-11-21T10:00:00Z", "duration_ms": 1.0, "run_id": run,
            "summary": { "pass": 1, "fail": 0, "unchecked": 0, "error": 0 },
            "cases": [{
                "id": "x/ipv4", "scenario": "x", "scenario_file": "scenarios/x.toml",
                "title": "t", "claims": [], "references": [], "params": { "family": "ipv4" },
                "capture": null, "duration_ms": 1.0,
                "timing": { "sandbox_ms": 0.0, "observe_setup_ms": 0.0, "run_ms": 0.0, "finish_ms": 0.0 },
                "steps": [{ "line": 3, "actor": "client", "call": "client close", "label": null,
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
                "sysctls": {}, "settled": true, "findings": [],
                "verdict": { "status": "pass", "mismatches": [], "checks": [], "error": null }
            }]
        }))
        .expect("a valid report");
        r.run_id = run.into();
        r
    }
}
