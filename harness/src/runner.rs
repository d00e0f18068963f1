//! Wires the stages together: one case on its own thread and namespace, and
//! a run of many cases on a few worker threads.
//!
//! A case that fails inside the harness (capture, netlink, a panic) still
//! yields a case report, with verdict `error` and the reason; the run goes
//! on. Nothing here decides what a result should be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use crate::analyze::{self, Analysis};
use crate::capture::{self, Capture, Reaper};
use crate::driver::{self, DriverOutput};
use crate::fault::Firewall;
use crate::observe::{Observer, TimerKind};
use crate::report::{
    self, CaseReport, DataFlows, FinalState, Flow, Host, Report, Summary, TimeWait, TimeWaitSide,
    Timing, Tool,
};
use crate::sandbox::{self, SandboxError};
use crate::scenario::Case;
use crate::tcp::{Side, TcpState};
use crate::verdict;
use crate::wire;

/// Where a run puts its files, and how it runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `captures/<run_id>/` receives one pcap per case; None = no pcaps.
    pub captures_dir: Option<PathBuf>,
    pub run_id: String,
    /// Cases run at once, each on its own thread and namespace.
    pub jobs: usize,
}

/// Cases in flight by default: 8 per CPU. A case spends most of its time
/// waiting, not computing (see `capture::Reaper` and `Capture::start`).
pub fn default_jobs() -> usize {
    8 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// This OS's family name, as expectations spell it.
pub fn os_name() -> &'static str {
    std::env::consts::OS
}

/// Fails fast, before any case, if this process cannot create a namespace,
/// bring its lo up, or capture in it.
pub fn check_privileges() -> Result<(), SandboxError> {
    std::thread::spawn(|| {
        sandbox::enter_fresh_namespace().and_then(|ns| sandbox::check_capture_permission(&ns))
    })
    .join()
    .unwrap_or_else(|_| Err(SandboxError::Setup("privilege probe panicked".into())))
}

/// The host facts every report carries.
pub fn host() -> Host {
    Host {
        os: os_name().to_string(),
        kernel: sandbox::kernel_release(),
        arch: std::env::consts::ARCH.to_string(),
        sysctls: sandbox::teardown_sysctls(),
    }
}

/// Runs every case, `opts.jobs` at a time; reports keep the input order.
/// `on_done` sees each case report as it finishes (for progress output).
/// Once `stop` is set no further case starts; the cases in flight finish
/// (each is bounded by its own timeouts) and the report lists the rest in
/// `not_run`, with `interrupted` set.
pub fn run_all(
    cases: &[Case],
    opts: &RunOptions,
    stop: &AtomicBool,
    on_done: &(dyn Fn(&CaseReport) + Sync),
) -> Report {
    let started = SystemTime::now();
    let t = Instant::now();
    let next = AtomicUsize::new(0);
    let reaper = Reaper::default();
    let slots: Vec<Mutex<Option<CaseReport>>> = cases.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, cases.len().max(1)) {
            s.spawn(|| {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let r = run_case(case, opts, &reaper);
                    on_done(&r);
                    *slots[i].lock().expect("slot") = Some(r);
                }
            });
        }
    });
    reaper.wait();
    let mut not_run = Vec::new();
    let mut done = Vec::new();
    for (case, slot) in cases.iter().zip(slots) {
        match slot.into_inner().expect("slot") {
            Some(r) => done.push(r),
            None => not_run.push(case.id.clone()),
        }
    }
    let cases = done;
    Report {
        schema_version: report::SCHEMA_VERSION,
        tool: Tool {
            name: "teardown".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        host: host(),
        started_at: report::rfc3339(started),
        duration_ms: ms_since(t),
        run_id: opts.run_id.clone(),
        summary: Summary::of(&cases),
        interrupted: !not_run.is_empty(),
        not_run,
        cases,
    }
}

/// Runs one case on a fresh thread (hence a fresh namespace) and waits.
/// A panic inside becomes an `error` verdict.
pub fn run_case(case: &Case, opts: &RunOptions, reaper: &Reaper) -> CaseReport {
    isolated(case, || run_case_here(case, opts, reaper))
}

/// Runs `body` on a thread of its own and turns a panic into an `error`
/// report for `case`. The thread's namespace, sockets and fault rules die
/// with the thread, panic or not.
fn isolated(case: &Case, body: impl FnOnce() -> CaseReport + Send) -> CaseReport {
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(format!("case {}", case.id))
            .spawn_scoped(s, body)
            .map_err(|e| format!("cannot start the case thread: {e}"))?
            .join()
            .map_err(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned());
                format!(
                    "the harness panicked: {}",
                    msg.unwrap_or_else(|| "unknown panic".into())
                )
            })
    });
    let mut r = result.unwrap_or_else(|problem| empty_report(case, vec![problem]));
    r.duration_ms = ms_since(started);
    r
}

/// The body of a case; must run on a thread of its own.
fn run_case_here(case: &Case, opts: &RunOptions, reaper: &Reaper) -> CaseReport {
    let phase = Instant::now();
    let ns = match sandbox::enter_fresh_namespace() {
        Ok(ns) => ns,
        Err(e) => return empty_report(case, vec![e.to_string()]),
    };
    for (name, value) in &case.sysctls {
        if let Err(e) = sandbox::write_sysctl(&ns, name, value) {
            return empty_report(
                case,
                vec![format!(
                    "{e} (the case sets it in its [sysctl] table; only per-namespace net.* sysctls can be set)"
                )],
            );
        }
    }
    let mut sysctls = sandbox::teardown_sysctls();
    for (name, _) in &case.sysctls {
        if let Ok(v) = sandbox::read_sysctl(name) {
            sysctls.insert(name.clone(), v);
        }
    }
    let sandbox_ms = ms_since(phase);
    let phase = Instant::now();
    let mut capture = match Capture::start(&ns) {
        Ok(c) => c,
        Err(e) => return empty_report(case, vec![e.to_string()]),
    };
    let mut observer = match Observer::open(&ns, case.family) {
        Ok(o) => o,
        Err(e) => return empty_report(case, vec![e.to_string()]),
    };
    let observe_setup_ms = ms_since(phase);
    let t0 = Instant::now();
    let t0_wall_us = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);

    let mut firewall = Firewall::new(&ns);
    let (out, open_sockets) = driver::run(case, t0, &mut capture, &mut observer, &mut firewall);
    let run_ms = ms_since(t0);
    let phase = Instant::now();
    let mut problems = out.problems.clone();
    // No capture, no wire facts: zeros would claim an observation.
    let captured = capture
        .finish(reaper)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    // Only now may leftover sockets close: their FIN/RST is not part of the case.
    drop(open_sockets);

    let mut findings = Vec::new();
    if !out.settled {
        findings.push(format!(
            "some socket was still in a transient state after the settle bound ({:?})",
            case.scenario.settle
        ));
    }
    let mut capture_file = None;
    let analysis = captured.map(|captured| {
        if captured.dropped > 0 {
            problems.push(format!("the capture dropped {} packets", captured.dropped));
        }
        if let Some(dir) = &opts.captures_dir {
            let path = dir
                .join(&opts.run_id)
                .join(format!("{}.pcap", case.file_stem()));
            match std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|()| capture::write_pcap(&path, &captured).map_err(|e| e.to_string()))
            {
                Ok(()) => capture_file = Some(path.display().to_string()),
                Err(e) => problems.push(e),
            }
        }
        let (segments, malformed) = wire::segments(captured.linktype, &captured.packets);
        findings.extend(malformed);
        let ends = out.ends.client.map(|c| (c, out.ends.server));
        let analysis = analyze::analyze(&segments, ends, t0_wall_us);
        if analysis.foreign_segments > 0 {
            findings.push(format!(
                "{} segments belong to no side of the connection under test",
                analysis.foreign_segments
            ));
        }
        analysis
    });
    let mut r = build_report(case, Some(&out), analysis.as_ref(), sysctls, findings);
    r.capture = capture_file;
    r.verdict = judge(case, &r, &problems);
    r.timing = Timing {
        sandbox_ms,
        observe_setup_ms,
        run_ms,
        finish_ms: ms_since(phase),
    };
    r
}

fn ms_since(t: Instant) -> f64 {
    driver::calls::ms(t.elapsed())
}

/// The case report from what was observed; `out` is None when the case
/// stopped before its steps ran, and then no driver-side fact is claimed.
fn build_report(
    case: &Case,
    out: Option<&DriverOutput>,
    analysis: Option<&Analysis>,
    sysctls: BTreeMap<String, String>,
    findings: Vec<String>,
) -> CaseReport {
    let flow = |app: driver::FlowCounts, side: usize| Flow {
        written: app.written,
        sent: analysis.map(|a| {
            if side == 0 {
                a.wire.client.data_bytes
            } else {
                a.wire.server.data_bytes
            }
        }),
        acked: analysis.map(|a| a.acked[side]),
        read: app.read,
        lost: app.written.saturating_sub(app.read),
        corrupted: app.corrupted,
    };
    // TIME-WAIT from the kernel's table at the end.
    let tw = |side| {
        out.and_then(|o| o.ends.find(&o.final_snapshot, side))
            .filter(|e| e.state == TcpState::TimeWait)
    };
    let (ctw, stw) = (tw(Side::Client), tw(Side::Server));
    let side = out.map(|_| match (ctw.is_some(), stw.is_some()) {
        (true, true) => TimeWaitSide::Both,
        (true, false) => TimeWaitSide::Client,
        (false, true) => TimeWaitSide::Server,
        (false, false) => TimeWaitSide::None,
    });
    let remaining_ms = [ctw, stw]
        .into_iter()
        .flatten()
        .filter(|e| e.timer == Some(TimerKind::TimeWait))
        .map(|e| e.timer_ms)
        .min();
    let timeline = out.map(|o| o.timeline.clone()).unwrap_or_default();
    let app = |f: fn(&DriverOutput) -> driver::FlowCounts| out.map(f).unwrap_or_default();
    CaseReport {
        id: case.id.clone(),
        scenario: case.scenario.id.clone(),
        scenario_file: case.scenario.path.display().to_string(),
        title: case.scenario.title.clone(),
        claims: case.scenario.claims.clone(),
        references: case.scenario.references.clone(),
        params: case.params.iter().cloned().collect(),
        capture: None,
        duration_ms: 0.0,
        timing: Timing::default(),
        steps: out.map(|o| o.steps.clone()).unwrap_or_default(),
        faults: out.map(|o| o.faults.clone()).unwrap_or_default(),
        wire: analysis.map(|a| a.wire.clone()),
        packets: analysis.map(|a| a.packets.clone()).unwrap_or_default(),
        final_state: FinalState {
            client: timeline.last(Side::Client),
            server: timeline.last(Side::Server),
        },
        states: timeline,
        time_wait: TimeWait { side, remaining_ms },
        data: DataFlows {
            client_to_server: flow(app(|o| o.client_to_server), 0),
            server_to_client: flow(app(|o| o.server_to_client), 1),
        },
        sysctls,
        settled: out.is_some_and(|o| o.settled),
        findings,
        verdict: verdict::Verdict {
            status: verdict::Status::Unchecked,
            mismatches: vec![],
            checks: vec![],
            error: None,
        },
    }
}

fn judge(case: &Case, r: &CaseReport, problems: &[String]) -> verdict::Verdict {
    let json = serde_json::to_value(r).expect("case reports serialise");
    verdict::judge(case, os_name(), &json, problems)
}

/// A report for a case that could not run far enough to observe anything.
fn empty_report(case: &Case, problems: Vec<String>) -> CaseReport {
    let mut r = build_report(case, None, None, BTreeMap::new(), vec![]);
    r.verdict = judge(case, &r, &problems);
    r
}

/// A run id from the start time, to the millisecond so that two runs in
/// the same second do not share a capture folder: `20261121T101500.123Z`.
pub fn run_id(t: SystemTime) -> String {
    let millis = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    let secs = report::rfc3339(t).replace(['-', ':'], "");
    format!("{}.{millis:03}Z", secs.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// A case that stopped before its steps ran claims no observation: no
    /// wire facts, no states, no TIME-WAIT side; the verdict says why.
    #[test]
    fn a_case_that_never_ran_reports_nulls_not_zeros() {
        let text = "title = \"t\"\nsteps = \"client close\"\n[[expect]]\nos = \"linux\"\nfacts = { \"time_wait.side\" = \"none\" }\n";
        let (_, cases) = crate::scenario::parse(std::path::Path::new("t.toml"), text).unwrap();
        let r = empty_report(&cases[0], vec!["libpcap on lo: refused".into()]);
        assert!(r.wire.is_none() && r.steps.is_empty() && r.capture.is_none());
        assert_eq!(r.time_wait.side, None);
        assert_eq!((r.final_state.client, r.final_state.server), (None, None));
        assert!(!r.settled);
        assert_eq!(r.data.client_to_server.sent, None);
        assert_eq!(r.verdict.status, crate::verdict::Status::Error);
        assert!(r.verdict.error.as_deref().unwrap().contains("refused"));
        assert_eq!(
            r.verdict.mismatches[0].observed,
            serde_json::Value::Null,
            "an unobserved side matches nothing"
        );
    }

    /// A panic inside one case is that case's `error`, with the panic's
    /// message, and does not take the run down.
    #[test]
    fn a_panicking_case_becomes_an_error_report() {
        let (_, cases) = crate::scenario::parse(
            std::path::Path::new("t.toml"),
            "title = \"t\"\nsteps = \"client close\"\n",
        )
        .unwrap();
        let r = isolated(&cases[0], || panic!("driver bug"));
        assert_eq!(r.id, cases[0].id);
        assert_eq!(r.verdict.status, crate::verdict::Status::Error);
        let why = r.verdict.error.unwrap();
        assert!(why.contains("the harness panicked: driver bug"), "{why}");
    }

    /// A stopped run starts nothing and says so, instead of pretending.
    #[test]
    fn a_stopped_run_lists_what_did_not_run() {
        let (_, cases) = crate::scenario::parse(
            std::path::Path::new("t.toml"),
            "title = \"t\"\nsteps = \"client close\"\n",
        )
        .unwrap();
        let opts = RunOptions {
            captures_dir: None,
            run_id: "r".into(),
            jobs: 2,
        };
        let stop = AtomicBool::new(true);
        let rep = run_all(&cases, &opts, &stop, &|_| panic!("no case may run"));
        assert!(rep.interrupted);
        assert!(rep.cases.is_empty());
        assert_eq!(rep.not_run, ["t/ipv4", "t/ipv6"]);
    }

    #[test]
    fn run_ids_sort_by_time_and_differ_within_a_second() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_258_861_007);
        assert_eq!(run_id(t), "20261121T110101.007Z");
        assert_ne!(run_id(t), run_id(t + Duration::from_millis(1)));
    }
}
