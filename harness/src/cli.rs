//! The command line: parses arguments, calls the library, maps outcomes to
//! exit codes. No logic of its own.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Parser, Subcommand};

use crate::baseline::Baseline;
use crate::report::{self, CaseReport};
use crate::runner::{self, RunOptions};
use crate::scenario::{self, Case};
use crate::verdict::Status;
use crate::{analyze, capture, wire};

/// Exit codes of `teardown`. Documented in the README.
pub mod exit {
    /// Every case passed or had no expectation for this OS.
    pub const OK: i32 = 0;
    /// Some case's observation did not match its expectation.
    pub const MISMATCH: i32 = 1;
    /// `compare`: the reports differ.
    pub const DIFFERS: i32 = 1;
    /// Bad command line, or a filter that matched no case.
    pub const USAGE: i32 = 2;
    /// The harness could not run or observe some case (see the report).
    pub const HARNESS_ERROR: i32 = 3;
    /// A scenario file is invalid (the message names file:line:column).
    pub const INVALID_SCENARIO: i32 = 4;
    /// An input file (pcap) could not be read.
    pub const BAD_INPUT: i32 = 65;
    /// The report or captures could not be written.
    pub const IO_ERROR: i32 = 74;
    /// Observed behaviour drifted from the baseline (`--baseline`,
    /// `baseline check`).
    pub const DRIFT: i32 = 5;
    /// The run was interrupted (Ctrl-C, SIGTERM); the report holds the
    /// cases that finished.
    pub const INTERRUPTED: i32 = 130;
    /// No permission to create network namespaces or capture packets.
    pub const NO_PERMISSION: i32 = 77;
}

#[derive(Parser, Debug)]
#[command(
    name = "teardown",
    version,
    about = "Shows, by experiment, what this OS's TCP stack does when a connection ends"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenarios: one namespace, capture and report entry per case.
    Run {
        /// Scenario files or directories [default: scenarios]. Naming
        /// some, like -f and -p, narrows a --baseline check to what ran.
        paths: Vec<PathBuf>,
        #[command(flatten)]
        select: Select,
        /// Where to write the JSON report [default: reports/<run-id>.json].
        #[arg(long)]
        report: Option<PathBuf>,
        /// Directory for pcaps; each run writes to <DIR>/<run-id>/.
        #[arg(long, default_value = "captures")]
        captures: PathBuf,
        /// Do not write pcap files.
        #[arg(long)]
        no_captures: bool,
        /// Cases to run at once [default: 8 x CPUs]. Cases mostly wait (on
        /// protocol timers and on the kernel's RCU grace periods when a
        /// capture ring is set up), so more cases than cores is efficient.
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Also write the results as JUnit XML, for CI systems.
        #[arg(long, value_name = "PATH")]
        junit: Option<PathBuf>,
        /// After the run, compare it with this baseline; drift exits 5.
        #[arg(long, value_name = "PATH")]
        baseline: Option<PathBuf>,
        /// Print only the final table.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Compare reports (other OSes, kernels, harness versions) case by case;
    /// exits 1 when anything differs.
    Compare {
        /// Two or more report files; columns A, B, ... in this order.
        #[arg(required = true, num_args = 2..)]
        reports: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: CompareFormat,
        /// close() durations that differ by at most this count as equal.
        #[arg(long, default_value_t = 100.0, value_name = "MS")]
        tolerance_ms: f64,
    },
    /// Write one self-contained HTML page for one or more reports: overview
    /// matrix, claims C1-C13, a ladder diagram per case.
    Render {
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Where to write the page.
        #[arg(long, short = 'o', default_value = "reports/teardown.html")]
        out: PathBuf,
    },
    /// Print a case's ladder diagram (segments, calls, states) as text.
    Explain {
        /// A case id (`linger-zero/ipv4`), or text that names a few cases.
        case: String,
        /// The report to read [default: the newest reports/*.json with the case].
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Record or check a baseline: the behaviour CI expects on this OS.
    Baseline {
        #[command(subcommand)]
        action: BaselineAction,
    },
    /// List the cases the scenarios expand to.
    List {
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        select: Select,
    },
    /// Check scenario files without running them (no privileges needed).
    Check {
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
    },
    /// Analyze a pcap file and print its connection facts as JSON.
    Analyze { pcap: PathBuf },
    /// Print the JSON Schema of the report.
    Schema,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CompareFormat {
    Table,
    Markdown,
    Json,
}

#[derive(Subcommand, Debug)]
enum BaselineAction {
    /// Record a baseline from one or more reports of the same cases; facts
    /// that differ between them are marked `varies` and not checked.
    Record {
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Where to write it.
        #[arg(long, short = 'o', default_value = "reports/baseline/linux.json")]
        out: PathBuf,
    },
    /// Compare a report with a baseline; prints a per-case, per-field diff
    /// and exits 5 when anything drifted.
    Check { baseline: PathBuf, report: PathBuf },
}

#[derive(clap::Args, Debug)]
struct Select {
    /// Only cases whose id contains this text, e.g. `linger` or
    /// `linger-zero/ipv6` (repeatable: any may match).
    #[arg(long, short = 'f')]
    filter: Vec<String>,
    /// Only cases with this parameter value, e.g. `family=ipv6` or
    /// `linger2=-1` (repeatable: all must match).
    #[arg(long, short = 'p', value_name = "NAME=VALUE", value_parser = param_filter)]
    param: Vec<(String, String)>,
}

fn param_filter(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, e.g. family=ipv6, found {s:?}"))
}

impl Select {
    fn is_empty(&self) -> bool {
        self.filter.is_empty() && self.param.is_empty()
    }

    fn selects(&self, c: &Case) -> bool {
        (self.filter.is_empty() || self.filter.iter().any(|f| c.id.contains(f.as_str())))
            && self
                .param
                .iter()
                .all(|(k, v)| c.params.iter().any(|(pk, pv)| pk == k && pv == v))
    }
}

/// Parses `std::env::args` and runs; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    match cli.command {
        Command::Run {
            paths,
            select,
            report,
            captures,
            no_captures,
            jobs,
            junit,
            baseline,
            quiet,
        } => {
            // A run of some scenarios, or some cases, is checked against
            // the baseline's entries for those only.
            let subset = !paths.is_empty() || !select.is_empty();
            let paths = if paths.is_empty() {
                vec![PathBuf::from("scenarios")]
            } else {
                paths
            };
            let cases = match load(&paths, &select) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // Read the baseline before spending time on the run.
            let baseline = match baseline.as_deref().map(read_baseline).transpose() {
                Ok(Some(b)) if subset => Some(b.only(cases.iter().map(|c| c.id.as_str()))),
                Ok(b) => b,
                Err(code) => return code,
            };
            if let Err(e) = runner::check_privileges() {
                eprintln!("teardown: {e}");
                return exit::NO_PERMISSION;
            }
            let start = SystemTime::now();
            let run_id = runner::run_id(start);
            let opts = RunOptions {
                captures_dir: (!no_captures).then_some(captures),
                run_id: run_id.clone(),
                jobs: jobs.unwrap_or_else(runner::default_jobs),
            };
            let stop = interrupt::install();
            let progress = Progress::new(cases.len() as u64, quiet);
            let rep = runner::run_all(&cases, &opts, stop, &|r| progress.done(r));
            progress.finish();
            // The report first: whatever happens to stdout, it is kept.
            let path =
                report.unwrap_or_else(|| Path::new("reports").join(format!("{run_id}.json")));
            if let Err(e) = report::write_report(&path, &rep) {
                eprintln!("teardown: cannot write the report {}: {e}", path.display());
                return exit::IO_ERROR;
            }
            if let Some(junit_path) = &junit {
                if let Err(e) =
                    report::write_atomic(junit_path, crate::junit::junit(&rep).as_bytes())
                {
                    eprintln!("teardown: cannot write {}: {e}", junit_path.display());
                    return exit::IO_ERROR;
                }
            }
            let mut text = report::table(&rep);
            text.push_str(&format!("report: {}\n", path.display()));
            if let Some(dir) = &opts.captures_dir {
                text.push_str(&format!("captures: {}\n", dir.join(&run_id).display()));
            }
            if let Some(p) = &junit {
                text.push_str(&format!("junit: {}\n", p.display()));
            }
            if rep.interrupted {
                text.push_str(&format!(
                    "interrupted: {} case(s) did not run; the report holds the {} that finished\n",
                    rep.not_run.len(),
                    rep.cases.len()
                ));
            }
            let drifted = baseline.as_ref().is_some_and(|b| {
                let drift = b.check(&rep);
                text.push_str(&drift_text(&drift, b, &rep));
                !drift.is_empty()
            });
            say(&text);
            if rep.interrupted {
                return exit::INTERRUPTED;
            }
            match rep.worst() {
                Some(Status::Error) => exit::HARNESS_ERROR,
                Some(Status::Fail) => exit::MISMATCH,
                _ if drifted => exit::DRIFT,
                _ => exit::OK,
            }
        }
        Command::Baseline { action } => baseline_command(action),
        Command::Render { reports, out } => {
            let loaded = match read_reports(&reports) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let page = crate::render::html(&loaded);
            if let Err(e) = report::write_atomic(&out, page.as_bytes()) {
                eprintln!("teardown: cannot write {}: {e}", out.display());
                return exit::IO_ERROR;
            }
            say(&format!("{}\n", out.display()));
            exit::OK
        }
        Command::Explain { case, report } => explain(&case, report.as_deref()),
        Command::Compare {
            reports,
            format,
            tolerance_ms,
        } => {
            let loaded = match read_reports(&reports) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let c = crate::compare::compare(&loaded, tolerance_ms);
            say(&match format {
                CompareFormat::Table => crate::compare::table(&c),
                CompareFormat::Markdown => crate::compare::markdown(&c),
                CompareFormat::Json => {
                    format!("{}\n", serde_json::to_string_pretty(&c).expect("json"))
                }
            });
            if c.differs() { exit::DIFFERS } else { exit::OK }
        }
        Command::List { paths, select } => match load(&paths, &select) {
            Ok(cases) => {
                for c in &cases {
                    let claims = c.scenario.claims.join(" ");
                    say(&format!(
                        "{:<48} {:<10} {}\n",
                        c.id, claims, c.scenario.title
                    ));
                }
                exit::OK
            }
            Err(code) => code,
        },
        Command::Check { paths } => match load(
            &paths,
            &Select {
                filter: vec![],
                param: vec![],
            },
        ) {
            Ok(cases) => {
                say(&format!("ok: {} cases\n", cases.len()));
                exit::OK
            }
            Err(code) => code,
        },
        Command::Analyze { pcap } => match capture::read_pcap(&pcap) {
            Ok(captured) => {
                let (segments, findings) = wire::segments(captured.linktype, &captured.packets);
                let t0 = captured.packets.first().map_or(0, |p| p.ts_us);
                let a = analyze::analyze(&segments, None, t0);
                let out = serde_json::json!({
                    "wire": a.wire,
                    "acked": { "client": a.acked[0], "server": a.acked[1] },
                    "client": a.client.map(|c| c.to_string()),
                    "server": a.server.map(|s| s.to_string()),
                    "packets": a.packets,
                    "findings": findings,
                });
                say(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&out).expect("json")
                ));
                exit::OK
            }
            Err(e) => {
                eprintln!("teardown: {e}");
                exit::BAD_INPUT
            }
        },
        Command::Schema => {
            say(&format!(
                "{}\n",
                serde_json::to_string_pretty(&report::schema()).expect("json")
            ));
            exit::OK
        }
    }
}

/// Writes to stdout. A reader that went away (`teardown run | head`) is not
/// an error worth a panic: the output just stops.
fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Loads every scenario under `paths` and applies the filter.
fn load(paths: &[PathBuf], select: &Select) -> Result<Vec<Case>, i32> {
    let files = scenario::discover(paths).map_err(|e| {
        eprintln!("teardown: {e}");
        exit::INVALID_SCENARIO
    })?;
    let mut cases = Vec::new();
    let mut bad = 0;
    for f in &files {
        match scenario::load(f) {
            Ok((_, c)) => cases.extend(c),
            Err(e) => {
                eprintln!("teardown: {e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        return Err(exit::INVALID_SCENARIO);
    }
    cases.retain(|c| select.selects(c));
    if cases.is_empty() {
        eprintln!(
            "teardown: no case to run (scenario files found: {}{})",
            files.len(),
            if select.is_empty() {
                String::new()
            } else {
                format!(", filter {:?}, params {:?}", select.filter, select.param)
            }
        );
        return Err(exit::USAGE);
    }
    Ok(cases)
}

fn read_report(path: &Path) -> Result<report::Report, i32> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("teardown: {}: {e}", path.display());
        exit::BAD_INPUT
    })?;
    serde_json::from_str(&text).map_err(|e| {
        eprintln!(
            "teardown: {}:{}:{}: not a teardown report: {e}",
            path.display(),
            e.line(),
            e.column()
        );
        exit::BAD_INPUT
    })
}

/// Every report, with the path it came from; stops at the first bad one.
fn read_reports(paths: &[PathBuf]) -> Result<Vec<(String, report::Report)>, i32> {
    paths
        .iter()
        .map(|p| read_report(p).map(|r| (p.display().to_string(), r)))
        .collect()
}

fn read_baseline(path: &Path) -> Result<Baseline, i32> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!(
            "teardown: baseline {}: {e} (record one with `just baseline`)",
            path.display()
        );
        exit::BAD_INPUT
    })?;
    Baseline::parse(&text).map_err(|e| {
        eprintln!("teardown: {}: {e}", path.display());
        exit::BAD_INPUT
    })
}

fn drift_text(drift: &crate::baseline::Drift, b: &Baseline, rep: &report::Report) -> String {
    if drift.is_empty() {
        return format!(
            "baseline: no drift ({} cases, recorded on {} {})\n",
            b.cases.len(),
            b.host.os,
            b.host.kernel
        );
    }
    let mut t = format!(
        "baseline: behaviour drifted (baseline recorded on {} {}, this run on {} {})\n",
        b.host.os, b.host.kernel, rep.host.os, rep.host.kernel
    );
    t.push_str(&drift.render());
    t.push_str("if the change is real and intended, re-record: just baseline\n");
    t
}

fn baseline_command(action: BaselineAction) -> i32 {
    match action {
        BaselineAction::Record { reports, out } => {
            let runs: Vec<report::Report> = match read_reports(&reports) {
                Ok(l) => l.into_iter().map(|(_, r)| r).collect(),
                Err(code) => return code,
            };
            if let Some(r) = runs.iter().find(|r| r.interrupted) {
                eprintln!(
                    "teardown: run {} was interrupted; record from complete runs",
                    r.run_id
                );
                return exit::BAD_INPUT;
            }
            let b = match Baseline::record(&runs) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("teardown: {e}");
                    return exit::BAD_INPUT;
                }
            };
            let mut json = serde_json::to_vec_pretty(&b).expect("baselines serialise");
            json.push(b'\n');
            if let Err(e) = report::write_atomic(&out, &json) {
                eprintln!("teardown: cannot write {}: {e}", out.display());
                return exit::IO_ERROR;
            }
            let varies = b
                .cases
                .values()
                .flat_map(|f| f.values())
                .filter(|r| matches!(r, crate::baseline::Recorded::Varies { .. }))
                .count();
            say(&format!(
                "baseline: {} ({} cases from {} run(s); {varies} fact(s) varied and are not checked)\n",
                out.display(),
                b.cases.len(),
                b.runs.len()
            ));
            exit::OK
        }
        BaselineAction::Check { baseline, report } => {
            let b = match read_baseline(&baseline) {
                Ok(b) => b,
                Err(code) => return code,
            };
            let rep = match read_report(&report) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let drift = b.check(&rep);
            say(&drift_text(&drift, &b, &rep));
            if drift.is_empty() {
                exit::OK
            } else {
                exit::DRIFT
            }
        }
    }
}

/// Progress on stderr: a bar on a terminal, one line per case otherwise
/// (CI logs), nothing with `--quiet`.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: std::sync::atomic::AtomicU64,
    quiet: bool,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} cases {elapsed} {wide_msg}",
                )
                .expect("a valid template"),
            );
            bar
        });
        Progress {
            bar,
            total,
            done: std::sync::atomic::AtomicU64::new(0),
            quiet,
        }
    }

    fn done(&self, r: &CaseReport) {
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let line = format!(
            "{} {} ({:.1} ms)",
            r.id,
            r.verdict.status.name(),
            r.duration_ms
        );
        match &self.bar {
            Some(bar) => {
                if r.verdict.status != Status::Pass && r.verdict.status != Status::Unchecked {
                    bar.println(&line);
                }
                bar.set_message(line);
                bar.inc(1);
            }
            None if !self.quiet => eprintln!("[{n}/{}] {line}", self.total),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Ctrl-C and SIGTERM: the first asks the run to stop starting cases (the
/// ones in flight finish and the report is written); the second exits at
/// once. Either way nothing is left behind: namespaces, their sockets and
/// fault rules belong to case threads and vanish with them or the process.
mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};

    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

    static STOP: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        if STOP.swap(true, Ordering::SeqCst) {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(super::exit::INTERRUPTED) };
        }
        let msg = b"\nteardown: stopping: running cases finish, then the report is written (again to quit at once)\n";
        // SAFETY: write(2) is async-signal-safe; the buffer is static.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }

    /// Installs the handlers; returns the flag they set.
    pub fn install() -> &'static AtomicBool {
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only touches an atomic and calls
            // async-signal-safe functions.
            if let Err(e) = unsafe { sigaction(sig, &action) } {
                eprintln!(
                    "teardown: cannot handle {sig}: {e}; Ctrl-C will end the run without a report"
                );
            }
        }
        &STOP
    }
}

/// `teardown explain CASE`: the ladder of one case (or of the few cases
/// whose id contains CASE) from a report.
fn explain(case: &str, report: Option<&Path>) -> i32 {
    let candidates: Vec<PathBuf> = match report {
        Some(p) => vec![p.to_path_buf()],
        None => {
            let mut files: Vec<(SystemTime, PathBuf)> = std::fs::read_dir("reports")
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
                .collect();
            files.sort();
            files.into_iter().rev().map(|(_, p)| p).collect()
        }
    };
    for path in &candidates {
        let Ok(r) = read_report(path) else {
            if report.is_some() {
                return exit::BAD_INPUT;
            }
            continue;
        };
        let exact: Vec<&CaseReport> = r.cases.iter().filter(|c| c.id == case).collect();
        let matching: Vec<&CaseReport> = if exact.is_empty() {
            r.cases.iter().filter(|c| c.id.contains(case)).collect()
        } else {
            exact
        };
        match matching.len() {
            0 => continue,
            1..=4 => {
                let mut text = format!("report: {}\n", path.display());
                for c in matching {
                    text.push_str(&crate::ladder::text(c));
                    text.push('\n');
                }
                say(&text);
                return exit::OK;
            }
            n => {
                let ids: Vec<&str> = matching.iter().map(|c| c.id.as_str()).collect();
                eprintln!(
                    "teardown: {n} cases in {} match {case:?}; name one: {}",
                    path.display(),
                    ids.join(", ")
                );
                return exit::USAGE;
            }
        }
    }
    eprintln!(
        "teardown: no report {} has a case {case:?}; run it first: teardown run -f {case}",
        report.map_or("in reports/".to_string(), |p| p.display().to_string())
    );
    exit::USAGE
}
