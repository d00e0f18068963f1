//! The command line: parses arguments, calls the library, maps outcomes to
//! exit codes. No logic of its own.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Parser, Subcommand};

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
        /// Scenario files or directories.
        #[arg(default_value = "scenarios")]
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
        /// Cases to run at once [default: 4 x CPUs]. Cases mostly wait (on
        /// protocol timers and on the kernel's RCU grace periods when a
        /// capture ring is set up), so more cases than cores is efficient.
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Print only the final table.
        #[arg(long, short = 'q')]
        quiet: bool,
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

#[derive(clap::Args, Debug)]
struct Select {
    /// Only cases whose id contains this text (repeatable: any may match).
    #[arg(long, short = 'f')]
    filter: Vec<String>,
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
            quiet,
        } => {
            let cases = match load(&paths, &select) {
                Ok(c) => c,
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
            let total = cases.len();
            let done = std::sync::atomic::AtomicUsize::new(0);
            let tty = std::io::stderr().is_terminal();
            let progress = |r: &CaseReport| {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if !quiet {
                    let status = r.verdict.status.name();
                    let line = format!("[{n}/{total}] {} {status} ({:.1} ms)", r.id, r.duration_ms);
                    if tty {
                        eprint!("\r\x1b[2K{line}")
                    } else {
                        eprintln!("{line}")
                    }
                }
            };
            let rep = runner::run_all(&cases, &opts, &progress);
            if tty && !quiet {
                eprintln!();
            }
            // The report first: whatever happens to stdout, it is kept.
            let path =
                report.unwrap_or_else(|| Path::new("reports").join(format!("{run_id}.json")));
            if let Err(e) = report::write_report(&path, &rep) {
                eprintln!("teardown: cannot write the report {}: {e}", path.display());
                return exit::IO_ERROR;
            }
            let mut text = report::table(&rep);
            text.push_str(&format!("report: {}\n", path.display()));
            if let Some(dir) = &opts.captures_dir {
                text.push_str(&format!("captures: {}\n", dir.join(&run_id).display()));
            }
            say(&text);
            match rep.worst() {
                Some(Status::Error) => exit::HARNESS_ERROR,
                Some(Status::Fail) => exit::MISMATCH,
                _ => exit::OK,
            }
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
        Command::Check { paths } => match load(&paths, &Select { filter: vec![] }) {
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
    if !select.filter.is_empty() {
        cases.retain(|c| select.filter.iter().any(|f| c.id.contains(f.as_str())));
    }
    if cases.is_empty() {
        eprintln!(
            "teardown: no case to run (scenario files found: {}{})",
            files.len(),
            if select.filter.is_empty() {
                String::new()
            } else {
                format!(", filter {:?}", select.filter)
            }
        );
        return Err(exit::USAGE);
    }
    Ok(cases)
}
