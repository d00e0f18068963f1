//! End to end: the real catalogue on this machine's kernel, in namespaces.
//! Needs root (or CAP_NET_ADMIN + CAP_NET_RAW) and tshark.
//!
//! The catalogue runs once per test binary; the tests then look at that one
//! report and its captures from different angles.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use serde_json::Value;
use teardown::capture::Reaper;
use teardown::report::{CaseReport, Report};
use teardown::runner::{self, RunOptions};
use teardown::scenario::Case;
use teardown::sinks::console;
use teardown::sinks::terminal::Terminal;
use teardown::stack::Stack;
use teardown::verdict::Status;

struct Run {
    report: Report,
    json: Value,
    /// The host's nftables ruleset just before the run.
    ruleset_before: String,
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn require_privileges() {
    if let Err(e) = runner::check_privileges() {
        panic!("end-to-end tests run real sockets in network namespaces: {e}");
    }
}

fn load_all() -> Vec<Case> {
    // Program scenarios start their supervisor from the teardown binary.
    teardown::driver::program::use_supervisor(env!("CARGO_BIN_EXE_teardown"));
    teardown::catalogue::load(&[scenarios_dir()]).unwrap()
}

fn catalogue() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        require_privileges();
        let ruleset_before = host_ruleset();
        let dir = common::process_scratch("e2e");
        let opts = RunOptions {
            captures_dir: Some(dir),
            run_id: "e2e".into(),
            jobs: runner::default_jobs(),
            stack: Stack::detect(),
            expected_ms: Default::default(),
            bench: false,
            hosts: Default::default(),
        };
        let report = runner::run_all(&load_all(), &opts, &AtomicBool::new(false), &|_| {});
        let json = serde_json::to_value(&report).unwrap();
        Run {
            report,
            json,
            ruleset_before,
        }
    })
}

#[test]
fn every_case_meets_the_linux_expectations_of_its_scenario() {
    let run = catalogue();
    assert_eq!(run.report.cases.len(), load_all().len());
    let bad: Vec<String> = run
        .report
        .cases
        .iter()
        .filter(|c| c.verdict.status != Status::Pass)
        .map(|c| {
            format!(
                "{}: {:?} {:?} {:?}",
                c.id, c.verdict.status, c.verdict.error, c.verdict.mismatches
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{bad:#?}\n{}",
        console::table(&run.report, &Terminal::PLAIN)
    );
}

#[test]
fn the_console_table_has_a_row_per_case() {
    let table = console::table(&catalogue().report, &Terminal::PLAIN);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("verdict  case  "), "{}", lines[0]);
    // The verdict, then the id as `-f` takes it (an id may hold a space:
    // `call=shutdown WR`).
    for (c, row) in catalogue().report.cases.iter().zip(&lines[1..]) {
        let rest = row.strip_prefix("pass").unwrap_or_else(|| panic!("{row}"));
        assert!(
            rest.trim_start().starts_with(&format!("{}  ", c.id)),
            "{row}"
        );
    }
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("pass, 0 fail, 0 unchecked, 0 unsupported, 0 error")
    );
}

#[test]
fn every_case_is_observed_completely() {
    for c in &catalogue().report.cases {
        let o = &c.outcome;
        assert!(o.settled, "{}: did not settle", c.id);
        assert!(o.findings.is_empty(), "{}: {:?}", c.id, o.findings);
        // Only what a program did with its stream is not the harness's to
        // count.
        let program = o.program.is_some();
        assert!(
            o.unobserved
                .keys()
                .all(|k| program && k.starts_with("data.")),
            "{}: {:?}",
            c.id,
            o.unobserved
        );
        assert!(
            o.wire.is_some() && !o.packets.is_empty(),
            "{}: no capture",
            c.id
        );
        assert!(
            Path::new(c.capture.as_deref().unwrap()).exists(),
            "{}: pcap missing",
            c.id
        );
        // A connection exists once the server answered a SYN; a refused
        // connect never had one, and its client was CLOSED again within
        // microseconds.
        let connection = o.wire.as_ref().is_some_and(|w| w.sides.server.syn > 0);
        assert!(
            !connection || (!o.states.client.is_empty() && !o.states.server.is_empty()),
            "{}: no states",
            c.id
        );
        assert!(
            c.steps
                .iter()
                .all(|s| s.duration_ms >= 0.0 && s.start_ms >= 0.0),
            "{}",
            c.id
        );
    }
}

#[test]
fn report_validates_against_the_committed_schema() {
    let schema: Value = serde_json::from_str(include_str!("../schema/report.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&catalogue().json)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // and the contract's core fields are where the contract puts them
    let c = &catalogue().json["cases"][0];
    for path in [
        "/id",
        "/scenario",
        "/params/family",
        "/capture",
        "/steps/0/ret",
        "/wire/client/rst",
        "/wire/first_fin",
        "/wire/conn_state",
        "/wire/history",
        "/states/client",
        "/time_wait/side",
        "/data/client_to_server/lost",
        "/verdict/status",
        "/verdict/mismatches",
    ] {
        assert!(c.pointer(path).is_some(), "missing {path}");
    }
    for path in [
        "/schema_version",
        "/tool/name",
        "/host/os",
        "/host/kernel",
        "/host/arch",
        "/host/sysctls",
        "/started_at",
        "/duration_ms",
    ] {
        assert!(catalogue().json.pointer(path).is_some(), "missing {path}");
    }
}

/// A report read back is the report written: what `compare` will rely on.
#[test]
fn a_real_report_round_trips_through_json() {
    let text = serde_json::to_string_pretty(&catalogue().report).unwrap();
    let back: Report = serde_json::from_str(&text).unwrap();
    let again = serde_json::to_value(&back).unwrap();
    assert_eq!(first_difference(&catalogue().json, &again, ""), None);
}

/// The JSON pointer of the first place two values differ, with both values.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys()
                .chain(y.keys())
                .find_map(|k| match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(p, q, &format!("{at}/{k}")),
                    _ => Some(format!("{at}/{k}: present on one side only")),
                })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}/{i}"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} != {b}")),
    }
}

/// Every kind of fact in the fact model reads a real field: in some case
/// of the catalogue, each has a value that is not null.
#[test]
fn every_kind_of_fact_is_observed_somewhere_in_the_catalogue() {
    let cases = &catalogue().report.cases;
    let seen: std::collections::BTreeSet<&str> = cases
        .iter()
        .flat_map(|c| teardown::facts::all(&c.facts()))
        .filter(|(_, v)| !v.value().is_null())
        .map(|(p, _)| p.kind().pattern)
        .collect();
    for kind in teardown::facts::KINDS {
        assert!(
            seen.contains(kind.pattern),
            "{} is null in every case",
            kind.pattern
        );
    }
}

/// The independent witness: tshark reads each pcap and must count the same
/// SYN/FIN/RST segments and payload bytes per side as the report.
#[test]
fn tshark_agrees_with_the_report_on_every_case() {
    let run = catalogue(); // see host_ruleset: no fork while the catalogue runs here
    let mut disagreements = common::tshark_disagreements(&run.report);
    disagreements.extend(common::tshark_connection_disagreements(&run.report));
    let many = run
        .report
        .cases
        .iter()
        .filter(|c| c.outcome.connection_summary.is_some());
    assert!(
        many.count() > 0,
        "no case with several connections was compared"
    );
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

/// The harness reports a mismatch, with both sides, when the OS does not do
/// what the scenario expects; and an error when a step cannot run.
#[test]
fn a_wrong_expectation_fails_and_a_broken_scenario_errors() {
    require_privileges();
    let text = r#"title = "wrong on purpose"
steps = '''
client close as c
server read until-eof
server close
'''
params = { family = ["ipv4"] }
[[expect]]
os = "linux"
claims = ["test"]
facts = { "wire.client.rst" = 1, "wire.client.fin" = 1 }
"#;
    let r = run_first_case("wrong.toml", text, |_| {});
    assert_eq!(r.verdict.status, Status::Fail);
    assert_eq!(r.verdict.checks.len(), 2);
    assert_eq!(r.verdict.mismatches.len(), 1);
    let m = &r.verdict.mismatches[0];
    assert_eq!(
        (m.path.as_str(), &m.expected, &m.observed),
        ("wire.client.rst", &Value::from(1), &Value::from(0))
    );
    assert!(r.capture.is_none());

    let broken =
        "title = \"t\"\nsteps = '''\nserver read 10\n'''\nparams = { family = [\"ipv6\"] }\n";
    let r = run_first_case("broken.toml", broken, |case| {
        case.steps.retain(|s| s.text != "server accept")
    });
    assert_eq!(r.verdict.status, Status::Error);
    assert!(
        r.verdict
            .error
            .as_deref()
            .unwrap()
            .contains("`server accept` first"),
        "{:?}",
        r.verdict.error
    );
}

/// Parses scenario `text` (as if from file `name`), lets `edit` change its
/// first case, and runs that case without captures.
fn run_first_case(name: &str, text: &str, edit: impl FnOnce(&mut Case)) -> CaseReport {
    let mut cases = teardown::catalogue::parse(Path::new(name), text).unwrap();
    edit(&mut cases[0]);
    let opts = RunOptions {
        captures_dir: None,
        run_id: "t".into(),
        jobs: 1,
        stack: Stack::detect(),
        expected_ms: Default::default(),
        bench: false,
        hosts: Default::default(),
    };
    runner::run_case(&cases[0], &opts, &Reaper::default())
}

/// A blocking call is bounded: a read that nothing will satisfy times out
/// at the step's `within`, and the case goes on.
#[test]
fn a_read_that_cannot_complete_times_out_at_its_bound() {
    require_privileges();
    let text = "title = \"t\"\nsteps = '''\nclient read 10 within 150ms as r\nclient close\n'''\nparams = { family = [\"ipv4\"] }\n";
    let r = run_first_case("bound.toml", text, |_| {});
    let s = r
        .steps
        .iter()
        .find(|s| s.label.as_deref() == Some("r"))
        .unwrap();
    assert!(s.result.timed_out, "{s:?}");
    assert_eq!(s.result.ret, None);
    assert!(
        (140.0..1000.0).contains(&s.duration_ms),
        "{}",
        s.duration_ms
    );
    assert_eq!(r.verdict.status, Status::Unchecked);
    assert_eq!(
        r.outcome.wire.as_ref().unwrap().sides.client.distinct_fins,
        1,
        "the close after the timeout still ran"
    );
}

/// `since LABEL` times a wait from when LABEL returned: after a 200 ms
/// sleep, a state reached at once still reads as >= 200 ms, and the
/// record starts where the close ended.
#[test]
fn a_wait_since_a_step_is_timed_from_that_step() {
    require_privileges();
    let text = "title = \"t\"\nsteps = '''\nclient close as c\nsleep 200ms\nclient wait state FIN-WAIT-2 since c within 2s as w\nclient wait state FIN-WAIT-2 as plain\n'''\nparams = { family = [\"ipv4\"] }\n";
    let r = run_first_case("since.toml", text, |_| {});
    let step = |label: &str| {
        r.steps
            .iter()
            .find(|s| s.label.as_deref() == Some(label))
            .unwrap()
    };
    let (c, w, plain) = (step("c"), step("w"), step("plain"));
    assert!(!w.result.timed_out, "{w:?}");
    assert!(w.duration_ms >= 200.0, "{w:?}");
    assert!(
        (w.start_ms - (c.start_ms + c.duration_ms)).abs() < 0.01,
        "{c:?} {w:?}"
    );
    assert!(plain.duration_ms < 200.0, "{plain:?}");
    assert_eq!(r.verdict.error, None);
}

/// Tests that start programs wait for the catalogue first: a fork while
/// cases run in this process would copy their sockets' descriptors, and a
/// case's close() would then not close anything until the child execs (the
/// harness itself starts programs only through `sandbox::run_isolated`).
fn host_ruleset() -> String {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("nft is installed (apt-get install nftables)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fault rules live in the case namespaces: the catalogue (which drops and
/// rejects segments in several cases) leaves the host's ruleset as it was.
#[test]
fn fault_rules_never_reach_the_host_ruleset() {
    let run = catalogue();
    let before = &run.ruleset_before;
    let with_faults = run
        .report
        .cases
        .iter()
        .filter(|c| !c.faults.is_empty())
        .count();
    assert!(
        with_faults >= 5,
        "the catalogue injects faults in several cases"
    );
    for c in run.report.cases.iter().filter(|c| !c.faults.is_empty()) {
        assert!(
            c.faults.iter().all(|f| f.matched.is_some()),
            "{}: every rule's counter was read: {:?}",
            c.id,
            c.faults
        );
    }
    assert_eq!(&host_ruleset(), before);
    assert!(!host_ruleset().contains("teardown"));
}

/// Ctrl-C: the run stops starting cases, the ones in flight finish, and the
/// report that is written is complete JSON for them; exit status 130.
#[test]
fn ctrl_c_writes_a_valid_report_of_the_finished_cases() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    catalogue(); // see host_ruleset: no fork while the catalogue runs here
    let scratch = tempfile::Builder::new()
        .prefix("teardown-int-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let report_path = dir.join("report.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_teardown"))
        .args(["run", "-j", "2", "--report"])
        .arg(&report_path)
        .arg("--captures")
        .arg(dir.join("captures"))
        .arg(scenarios_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for an observable event, the first finished case, not a time.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.starts_with("[1/") {
        line.clear();
    }
    assert!(line.starts_with("[1/"), "no progress line before EOF");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let rest: Vec<String> = stderr.lines().map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopping")), "{rest:?}");

    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let total = load_all().len();
    assert!(report.interrupted);
    assert!(!report.cases.is_empty() && !report.not_run.is_empty());
    assert_eq!(report.cases.len() + report.not_run.len(), total);
    for c in &report.cases {
        assert_ne!(
            c.verdict.status,
            Status::Error,
            "{}: {:?}",
            c.id,
            c.verdict.error
        );
        assert!(
            Path::new(c.capture.as_deref().unwrap()).exists(),
            "{}",
            c.id
        );
    }
    assert!(!host_ruleset().contains("teardown"));
}

/// `explain` never cuts a call's result short: long text wraps onto the
/// next lines of its column. Every step's full label is in the ladder, read
/// back column by column.
#[test]
fn explain_shows_every_call_result_in_full() {
    use teardown::sinks::ladder;
    for c in &catalogue().report.cases {
        let text = ladder::text(c);
        // The client column: 38 characters of text (then a space and the
        // span mark) after the 12 of the time; a label wraps at a space
        // onto the next line's, so read it back without spaces.
        let squeeze = |s: &str| s.split_whitespace().collect::<String>();
        let left: String = text
            .lines()
            .map(|l| squeeze(&l.chars().skip(12).take(38).collect::<String>()))
            .collect();
        for s in &c.steps {
            let label = ladder::call_label(s);
            assert!(
                text.contains(&label) || left.contains(&squeeze(&label)),
                "{}: `{label}` is not in the ladder:\n{text}",
                c.id
            );
        }
    }
}

/// The HTML ladder never cuts a call's result short either: each call's
/// label is in a `call-label` text element, wrapped over lines (tspans),
/// and reads back whole once the markup and the line breaks are gone.
#[test]
fn the_html_ladder_shows_every_call_result_in_full() {
    use teardown::sinks::{html, ladder};
    let report = &catalogue().report;
    let reports = [(String::from("r.json"), report.clone())];
    let page = html::html(
        &reports,
        &teardown::compare::compare(&reports, 100.0, false),
    );
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    // Every call label's text, markup and whitespace removed.
    let mut labels = std::collections::BTreeSet::new();
    for (i, _) in page.match_indices("class=\"call-label\"") {
        let body = &page[i..];
        let body = &body[body.find('>').unwrap() + 1..];
        let body = &body[..body.find("</text>").unwrap()];
        let text = body
            .split('<')
            .map(|part| part.split_once('>').map_or(part, |(_, t)| t))
            .collect::<String>();
        labels.insert(squeeze(&text));
    }
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut checked = 0;
    for c in &report.cases {
        for s in &c.steps {
            let label = squeeze(&escape(&ladder::call_label(s)));
            assert!(
                labels.contains(&label),
                "{}: `{label}` is not in the HTML",
                c.id
            );
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} calls");
}

/// `teardown analyze` on a case's own pcap names that case's scenario
/// among the endings it matches: the diagnosis comes from the catalogue's
/// observations, so the catalogue must recognise itself. (A case whose
/// ending varied between the baseline's runs has no signature to match.)
#[test]
fn analyze_diagnoses_each_catalogue_pcap_as_its_own_scenario() {
    use teardown::diagnosis::{self, Filter};
    let signatures = diagnosis::embedded();
    let signed: std::collections::BTreeSet<&str> = signatures
        .signatures
        .iter()
        .flat_map(|s| {
            s.matches
                .iter()
                .flat_map(|m| m.cases.iter().map(String::as_str))
        })
        .collect();
    let mut checked = 0;
    for c in &catalogue().report.cases {
        if c.outcome.connection_summary.is_some() || !signed.contains(c.id.as_str()) {
            continue;
        }
        let pcap = Path::new(c.capture.as_deref().unwrap());
        let mut found = Vec::new();
        diagnosis::analyze_file(pcap, signatures, &Filter::default(), |d| found.push(d)).unwrap();
        assert_eq!(found.len(), 1, "{}: {found:#?}", c.id);
        assert!(
            found[0].diagnosis.names(&c.scenario),
            "{}: diagnosed as {:?}",
            c.id,
            found[0].diagnosis
        );
        checked += 1;
    }
    assert!(checked > 20, "only {checked} cases had a signature");
}

/// The mixed capture (tests/fixtures/mixed-endings.toml): seven
/// connections in one pcap, each ending the way one catalogue scenario
/// does, two of them on the same 4-tuple one after the other. `analyze`
/// finds all seven and names, for each, the scenario it repeats; tshark
/// counts the same segments per connection.
#[test]
fn analyze_names_the_scenario_behind_each_connection_of_a_mixed_capture() {
    use teardown::diagnosis::{self, Filter};
    require_privileges();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mixed-endings.toml");
    let cases = teardown::catalogue::load(&[file]).unwrap();
    let scratch = tempfile::Builder::new()
        .prefix("teardown-mixed-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let opts = RunOptions {
        captures_dir: Some(dir.clone()),
        run_id: "mixed".into(),
        jobs: 1,
        stack: Stack::detect(),
        expected_ms: Default::default(),
        bench: false,
        hosts: Default::default(),
    };
    let report = runner::run_all(&cases, &opts, &AtomicBool::new(false), &|_| {});
    let c = &report.cases[0];
    assert_eq!(c.verdict.status, Status::Pass, "{:?}", c.verdict);
    let pcap = Path::new(c.capture.as_deref().unwrap());
    let mut found = Vec::new();
    diagnosis::analyze_file(pcap, diagnosis::embedded(), &Filter::default(), |d| {
        found.push(d)
    })
    .unwrap();
    found.sort_by_key(|d| d.flow.index);
    // In the order the connections began (6 and 7 share a 4-tuple).
    let want = [
        "close-graceful",
        "linger-zero",
        "close-unread-data",
        "half-close-thank-you",
        "reset-in-close-wait",
        "reconnect-bound-port-from-time-wait",
        "close-graceful",
    ];
    assert_eq!(found.len(), want.len(), "{found:#?}");
    assert_eq!(found[5].flow.client, found[6].flow.client);
    assert_eq!(found[5].flow.server, found[6].flow.server);
    for (d, scenario) in found.iter().zip(want) {
        assert!(
            d.diagnosis.names(scenario),
            "connection {} ({} {}): {scenario} not among {:?}",
            d.flow.index,
            d.flow.wire.conn_state,
            d.flow.wire.history,
            d.diagnosis.matches
        );
    }
    let mut disagreements = common::tshark_disagreements(&report);
    disagreements.extend(common::tshark_connection_disagreements(&report));
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

/// Every segment a fault rule took is marked in the report's packets, in
/// `explain` and in the HTML, and the marks add up to the packet filter's
/// own counter, rule by rule.
#[test]
fn dropped_segments_are_marked_as_often_as_the_filter_counted() {
    use teardown::sinks::{html, ladder};
    let mut checked = 0;
    for c in &catalogue().report.cases {
        if c.faults.is_empty() || c.outcome.connection_summary.is_some() {
            continue;
        }
        let text = ladder::text(c);
        for f in &c.faults {
            let marked = c
                .outcome
                .packets
                .iter()
                .filter(|p| p.dropped_by.as_deref() == Some(f.key.as_str()))
                .count() as u64;
            assert_eq!(Some(marked), f.matched, "{}: fault {}", c.id, f.key);
            let in_text = text.matches(&format!("dropped by {}]", f.key)).count() as u64;
            assert_eq!(
                in_text, marked,
                "{}: fault {} in explain:\n{text}",
                c.id, f.key
            );
            checked += 1;
        }
        let drawn = text.matches("X |").count() + text.matches("| X").count();
        let all: usize = c
            .outcome
            .packets
            .iter()
            .filter(|p| p.dropped_by.is_some())
            .count();
        assert_eq!(drawn, all, "{}: X arrows in explain:\n{text}", c.id);
    }
    assert!(checked >= 5, "only {checked} fault rules checked");
    let report = &catalogue().report;
    let reports = [(String::from("r.json"), report.clone())];
    let page = html::html(
        &reports,
        &teardown::compare::compare(&reports, 100.0, false),
    );
    let dropped: usize = report
        .cases
        .iter()
        .map(|c| {
            c.outcome
                .packets
                .iter()
                .filter(|p| p.dropped_by.is_some())
                .count()
        })
        .sum();
    assert!(dropped > 0);
    assert_eq!(page.matches("class=\"dropped\"").count(), dropped);
}
