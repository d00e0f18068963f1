//! The command line: parses arguments, calls the library, prints what it
//! returns, and maps outcomes and errors to exit codes in one place
//! ([`CliError::exit_code`]). No logic of its own.

pub mod args;
pub mod plan;

use std::path::{Path, PathBuf};
#[cfg(target_os = "linux")]
use std::time::SystemTime;

use clap::Parser;

use crate::baseline::{Baseline, BaselineError, Drift};
use crate::capture::CaptureError;
use crate::catalogue::{self, LoadError, SelectError};
use crate::report::load::LoadError as ReportError;
use crate::report::{self, Report};
#[cfg(target_os = "linux")]
use crate::runner::{self, RunOptions};
use crate::sandbox::SandboxError;
use crate::sinks;
use crate::sinks::terminal::{ColorChoice, Terminal};
#[cfg(target_os = "linux")]
use crate::stack::Placement;
#[cfg(target_os = "linux")]
use crate::verdict::Status;
use args::{BaselineAction, Cli, Command, CompareFormat, RunArgs};

/// Exit codes of `teardown`. Documented in the README.
pub mod exit {
    /// Every case passed, or had no expectation for this stack, or needs
    /// what the stack lacks (`unsupported`).
    pub const OK: i32 = 0;
    /// Some case's observation did not match its expectation.
    pub const MISMATCH: i32 = 1;
    /// `compare`: the reports differ.
    pub(crate) const DIFFERS: i32 = 1;
    /// Bad command line, or a selection that matched no case or names no
    /// parameter, or an explain query matching no case (or too many).
    pub const USAGE: i32 = 2;
    /// The harness could not run or observe some case (see the report).
    pub const HARNESS_ERROR: i32 = 3;
    /// A scenario file is invalid (the message names file:line:column).
    pub const INVALID_SCENARIO: i32 = 4;
    /// Observed behaviour drifted from the baseline (`--baseline`,
    /// `baseline check`).
    pub const DRIFT: i32 = 5;
    /// An input file (pcap, report, baseline) is unreadable, damaged, of
    /// another version, or not what the command reads.
    pub const BAD_INPUT: i32 = 65;
    /// The report, captures or another output could not be written.
    pub const IO_ERROR: i32 = 74;
    /// No permission to create network namespaces or capture packets.
    pub const NO_PERMISSION: i32 = 77;
    /// The run was interrupted (Ctrl-C, SIGTERM); the report holds the
    /// cases that finished.
    pub const INTERRUPTED: i32 = 130;
}

/// Everything a command can fail with, each mapped to one exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Scenarios(#[from] LoadError),
    #[error("{0}")]
    Select(#[from] SelectError),
    #[error("{0}")]
    Report(#[from] ReportError),
    #[error("{0}")]
    Baseline(#[from] BaselineError),
    #[error("{0}")]
    CompareInput(#[from] crate::compare::InputError),
    #[error("{0}")]
    Capture(#[from] CaptureError),
    #[error("{0}")]
    Privileges(SandboxError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Gvisor(crate::stack::gvisor::GvisorError),
    #[error("agent: {0}")]
    Agent(String),
    #[error("the bench: {0}")]
    Bench(String),
    #[error(
        "{0} drives cases in network namespaces, which are Linux's; on {os}, run `teardown agent --listen ADDR:PORT` and drive it from a Linux machine's bench (README: The bench, A remote host)",
        os = std::env::consts::OS
    )]
    NotOnThisOs(&'static str),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Scenarios(_) => exit::INVALID_SCENARIO,
            CliError::Select(_) | CliError::Usage(_) => exit::USAGE,
            CliError::Report(ReportError::NoCase { .. } | ReportError::Ambiguous { .. }) => {
                exit::USAGE
            }
            CliError::Report(_)
            | CliError::Baseline(_)
            | CliError::CompareInput(_)
            | CliError::Capture(_) => exit::BAD_INPUT,
            CliError::Privileges(_) => exit::NO_PERMISSION,
            CliError::Gvisor(_) => exit::HARNESS_ERROR,
            CliError::Agent(_) => exit::BAD_INPUT,
            CliError::Bench(_) => exit::HARNESS_ERROR,
            CliError::NotOnThisOs(_) => exit::BAD_INPUT,
            CliError::Write { .. } => exit::IO_ERROR,
        }
    }
}

#[cfg(target_os = "linux")]
fn place(choice: crate::stack::Choice) -> Result<Placement, CliError> {
    crate::stack::place(choice).map_err(CliError::Usage)
}

/// This same command line, inside a gVisor sandbox; its exit code.
#[cfg(target_os = "linux")]
fn again_inside_gvisor() -> Result<i32, CliError> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    crate::stack::gvisor::run_inside(&args).map_err(CliError::Gvisor)
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Write {
        path: path.to_path_buf(),
        source,
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
    match dispatch(cli.command, cli.color) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("teardown: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(command: Command, color: ColorChoice) -> Result<i32, CliError> {
    match command {
        Command::Run(args) => run(args, color, None),
        Command::Probe(p) => {
            let mut args = p.run;
            if args.paths.is_empty() {
                args.paths = vec![PathBuf::from(PROBES)];
            }
            let server =
                crate::scenario::Program::user_server(&p.server_command, p.port, p.ready_within);
            run(args, color, Some(server))
        }
        Command::Compare {
            reports,
            format,
            tolerance_ms,
            measurements,
        } => {
            if reports.len() < 2 {
                return Err(CliError::Usage(
                    "compare needs at least two reports or baselines".into(),
                ));
            }
            let inputs = crate::compare::read_inputs(&reports)?;
            let c = crate::compare::compare_inputs(&inputs, tolerance_ms, measurements);
            say(&match format {
                CompareFormat::Table => sinks::compare::table(&c, &Terminal::stdout(color)),
                CompareFormat::Markdown => sinks::compare::markdown(&c),
                CompareFormat::Json => json(&c),
            });
            Ok(if c.differs() { exit::DIFFERS } else { exit::OK })
        }
        Command::Render { reports, out } => {
            let loaded = report::load::read_all(&reports)?;
            let diff = crate::compare::compare(&loaded, 100.0, false);
            let page = sinks::html::html(&loaded, &diff);
            crate::files::write_atomic(&out, page.as_bytes()).map_err(write_err(&out))?;
            say(&format!("{}\n", out.display()));
            Ok(exit::OK)
        }
        Command::Explain {
            case,
            pcap: Some(pcap),
            ..
        } => {
            let selector: crate::diagnosis::Selector = case.parse().map_err(CliError::Usage)?;
            let found =
                crate::diagnosis::explain_file(&pcap, crate::diagnosis::embedded(), &selector)?;
            if found.is_empty() {
                return Err(CliError::Usage(format!(
                    "{}: no connection matches `{case}` (teardown analyze {} lists them)",
                    pcap.display(),
                    pcap.display()
                )));
            }
            for (c, packets) in &found {
                say(&format!(
                    "{}\n",
                    sinks::analysis::connection_ladder(c, packets)
                ));
            }
            Ok(exit::OK)
        }
        Command::Explain { case, report, .. } => {
            let (path, r, found) =
                report::load::find_cases(&case, report.as_deref(), Path::new("reports"), 4)?;
            let mut text = format!("report: {}\n", path.display());
            for i in found {
                text.push_str(&sinks::ladder::text(&r.cases[i]));
                text.push('\n');
            }
            say(&text);
            Ok(exit::OK)
        }
        Command::Baseline { action } => baseline(action),
        Command::List {
            paths,
            select,
            format,
        } => {
            let cases = select.selection().apply(catalogue::load(&paths)?)?;
            match format {
                args::RunFormat::Table => {
                    say(&sinks::console::list(&cases, &Terminal::stdout(color)))
                }
                args::RunFormat::Json => say(&json(&sinks::console::list_json(&cases))),
            }
            Ok(exit::OK)
        }
        Command::Check {
            paths,
            stack,
            bench,
        } => check(&paths, stack, &bench),
        Command::Analyze(a) => analyze(a, color),
        Command::Signatures {
            inputs,
            scenarios,
            out,
        } => {
            let read = crate::compare::read_inputs(&inputs)?;
            let cases = catalogue::load(&[scenarios])?;
            let signatures = crate::diagnosis::generate(&read, &cases);
            crate::files::write_atomic_with(&out, |w| w.write_all(json(&signatures).as_bytes()))
                .map_err(|source| CliError::Write {
                    path: out.clone(),
                    source,
                })?;
            say(&format!(
                "signatures: {} ({} endings from {} input(s))\n",
                out.display(),
                signatures.signatures.len(),
                inputs.len()
            ));
            Ok(exit::OK)
        }
        Command::Facts => {
            say(&sinks::console::facts());
            Ok(exit::OK)
        }
        Command::Schema { agent } => {
            say(&json(&if agent {
                crate::driver::agent::schema()
            } else {
                report::schema()
            }));
            Ok(exit::OK)
        }
        Command::Agent {
            listen,
            smoltcp: Some(interface),
            address,
            gateway,
            ..
        } => userspace_agent(Userspace::Smoltcp, listen, interface, address, gateway),
        Command::Agent {
            listen,
            lwip: Some(interface),
            address,
            gateway,
            ..
        } => userspace_agent(Userspace::Lwip, listen, interface, address, gateway),
        Command::Agent {
            listen, own_stack, ..
        } => agent(listen, own_stack),
        Command::Supervise { spec } => supervise(&spec),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "teardown",
                &mut out,
            );
            say(&String::from_utf8_lossy(&out));
            Ok(exit::OK)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut out)
                .map_err(|source| CliError::Write {
                    path: "stdout".into(),
                    source,
                })?;
            say(&String::from_utf8_lossy(&out));
            Ok(exit::OK)
        }
    }
}

/// `teardown check`: what each case would need that the stack (or the
/// bench's hosts) lacks.
#[cfg(target_os = "linux")]
fn check(
    paths: &[PathBuf],
    stack: args::StackArg,
    bench: &args::BenchArgs,
) -> Result<i32, CliError> {
    bench_stack_args(&stack, bench)?;
    let stack = match place(stack.into())? {
        Placement::Here(s) => s,
        Placement::InsideGvisor => return again_inside_gvisor(),
    };
    let cases = catalogue::load(paths)?;
    let sysctls = catalogue::check_sysctls(&cases)?;
    if bench.bench {
        runner::check_privileges().map_err(CliError::Privileges)?;
    }
    let (reach, absent) =
        runner::reach_to_check(&stack, bench.bench.then(|| bench.hosts()), &cases, &sysctls)
            .map_err(CliError::Bench)?;
    let unsupported = crate::stack::unsupported(&cases, &reach, &absent);
    say(&sinks::console::checked(
        cases.len(),
        &sysctls,
        &reach,
        &unsupported,
    ));
    Ok(exit::OK)
}

#[cfg(target_os = "linux")]
fn supervise(spec: &str) -> Result<i32, CliError> {
    Ok(crate::driver::program::supervise(spec))
}

#[cfg(not(target_os = "linux"))]
fn supervise(_: &str) -> Result<i32, CliError> {
    Err(CliError::NotOnThisOs("teardown supervise"))
}

/// Elsewhere, what runs a case is not here.
#[cfg(not(target_os = "linux"))]
fn check(_: &[PathBuf], _: args::StackArg, _: &args::BenchArgs) -> Result<i32, CliError> {
    Err(CliError::NotOnThisOs("teardown check"))
}

/// Where `teardown probe` finds its scenarios unless told.
const PROBES: &str = "scenarios/probes";

#[cfg(not(target_os = "linux"))]
fn run(_: RunArgs, _: ColorChoice, _: Option<crate::scenario::Program>) -> Result<i32, CliError> {
    Err(CliError::NotOnThisOs("teardown run"))
}

/// `--bench` puts a stack on each host, so `--stack` must leave the
/// harness's own (the router's) alone.
#[cfg(target_os = "linux")]
fn bench_stack_args(stack: &args::StackArg, bench: &args::BenchArgs) -> Result<(), CliError> {
    if bench.bench && !matches!(stack, args::StackArg::Auto | args::StackArg::Linux) {
        return Err(CliError::Usage(
            "--bench puts a stack on each host: give --client-stack and --server-stack, not --stack".into(),
        ));
    }
    Ok(())
}

/// `teardown run`, and `teardown probe` with `server` on the server end.
#[cfg(target_os = "linux")]
fn run(
    a: RunArgs,
    color: ColorChoice,
    server: Option<crate::scenario::Program>,
) -> Result<i32, CliError> {
    bench_stack_args(&a.stack, &a.bench)?;
    let run_id = runner::run_id(SystemTime::now());
    let plan = plan::RunPlan::new(&a, &run_id);
    let cases = a.select.selection().apply(catalogue::load(&plan.paths)?)?;
    let cases = match &server {
        Some(s) => catalogue::with_server(cases, s)?,
        None => cases,
    };
    catalogue::check_sysctls(&cases)?;
    // Read the baseline before spending time on the run; a subset is
    // checked against its entries for those cases only.
    let baseline = match a.baseline.as_deref().map(Baseline::read).transpose()? {
        Some(b) if plan.subset => Some(b.only(cases.iter().map(|c| c.id.as_str()))),
        b => b,
    };
    let mut stack = match place(a.stack.into())? {
        Placement::Here(s) => s,
        Placement::InsideGvisor => return again_inside_gvisor(),
    };
    if let Some(backend) = &a.capture {
        stack.capture = backend.parse().map_err(CliError::Usage)?;
    }
    for dir in &plan.outputs {
        crate::files::prepare_output_dir(dir).map_err(write_err(dir))?;
    }
    runner::check_privileges().map_err(CliError::Privileges)?;
    let opts = RunOptions {
        captures_dir: plan.captures.clone(),
        run_id: run_id.clone(),
        jobs: a
            .jobs
            .unwrap_or_else(|| runner::default_jobs_for(&a.bench.hosts())),
        stack,
        expected_ms: baseline
            .as_ref()
            .map(|b| b.durations_ms.clone())
            .unwrap_or_default(),
        bench: a.bench.bench,
        hosts: a.bench.hosts(),
    };
    let stop = runner::interrupt::install();
    let progress = sinks::progress::Progress::new(cases.len() as u64, a.quiet);
    let rep = runner::run_all(&cases, &opts, stop, &|r| progress.done(r));
    progress.finish();
    // The report first: whatever happens to stdout, it is kept.
    if let plan::ReportTo::File(path) = &plan.report {
        report::write(path, &rep).map_err(write_err(path))?;
    }
    if let Some(junit) = &plan.junit {
        crate::files::write_atomic(junit, sinks::junit::junit(&rep).as_bytes())
            .map_err(write_err(junit))?;
    }
    // With JSON on stdout, the table goes to stderr.
    let term = if plan.json_on_stdout {
        Terminal::stderr(color)
    } else {
        Terminal::stdout(color)
    };
    let mut text = sinks::console::table(&rep, &term);
    if let plan::ReportTo::File(path) = &plan.report {
        text.push_str(&format!("report: {}\n", path.display()));
    }
    if let Some(dir) = &opts.captures_dir {
        text.push_str(&format!("captures: {}\n", dir.join(&run_id).display()));
    }
    if let Some(p) = &plan.junit {
        text.push_str(&format!("junit: {}\n", p.display()));
    }
    if rep.interrupted {
        text.push_str(&format!(
            "interrupted: {} case(s) did not run; the report holds the {} that finished\n",
            rep.not_run.len(),
            rep.cases.len()
        ));
    }
    let drift = baseline.as_ref().map(|b| (b.check(&rep), b));
    if let Some((d, b)) = &drift {
        text.push_str(&drift_text(d, b, &rep));
    }
    if plan.json_on_stdout {
        eprint!("{text}");
        say(&json(&rep));
    } else {
        say(&text);
    }
    Ok(run_exit_code(
        &rep,
        drift.is_some_and(|(d, _)| !d.is_empty()),
    ))
}

/// The exit code of a finished run.
#[cfg(target_os = "linux")]
fn run_exit_code(rep: &Report, drifted: bool) -> i32 {
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

fn baseline(action: BaselineAction) -> Result<i32, CliError> {
    match action {
        BaselineAction::Record { reports, out } => {
            let runs: Vec<Report> = report::load::read_all(&reports)?
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            let b = Baseline::record(&runs)?;
            let mut bytes = serde_json::to_vec_pretty(&b).expect("baselines serialise");
            bytes.push(b'\n');
            crate::files::write_atomic(&out, &bytes).map_err(write_err(&out))?;
            say(&format!(
                "baseline: {} ({} cases from {} run(s); {} fact(s) varied and are not checked)\n",
                out.display(),
                b.cases.len(),
                b.runs.len(),
                b.varying()
            ));
            Ok(exit::OK)
        }
        BaselineAction::Check { baseline, report } => {
            let b = Baseline::read(&baseline)?;
            let rep = report::load::read(&report)?;
            let drift = b.check(&rep);
            say(&drift_text(&drift, &b, &rep));
            Ok(if drift.is_empty() {
                exit::OK
            } else {
                exit::DRIFT
            })
        }
    }
}

fn drift_text(drift: &Drift, b: &Baseline, rep: &Report) -> String {
    if drift.is_empty() {
        return format!(
            "baseline: no drift ({} cases, recorded on {})\n",
            b.cases.len(),
            b.host.name()
        );
    }
    format!(
        "baseline: behaviour drifted (baseline recorded on {}, this run on {})\n{}if the change is real and intended, re-record: just baseline\n",
        b.host.name(),
        rep.host.name(),
        drift.render()
    )
}

/// `teardown analyze`: every connection of a capture, diagnosed, in the
/// chosen format. JSON Lines and Zeek stream as connections end; a file that
/// breaks off part-way prints what was read, says where it stopped, and
/// exits 65.
fn analyze(a: args::AnalyzeArgs, color: ColorChoice) -> Result<i32, CliError> {
    use crate::analyze::flows::{Reading, Timeouts};
    use crate::diagnosis::{self, Filter};
    use args::AnalyzeFormat;
    use sinks::analysis::{Format, Printer};
    let filter = Filter {
        port: a.port,
        host: a.host,
        state: a.state.clone(),
        diagnosis: a.diagnosis.clone(),
    };
    let format = match a.format {
        AnalyzeFormat::Table => Format::Table,
        AnalyzeFormat::Json => Format::Json,
        AnalyzeFormat::Jsonl => Format::Jsonl,
        AnalyzeFormat::Zeek => Format::Zeek,
    };
    let (mut printer, head) = Printer::new(
        format,
        a.limit,
        &a.pcap.display().to_string(),
        Terminal::stdout(color),
    );
    let mut out = Streamed::stdout();
    out.say(&head);
    let reading = Reading {
        timeouts: if a.zeek_timeouts {
            Timeouts::Zeek
        } else {
            Timeouts::Teardown
        },
        traces: format.traces(),
    };
    let stats =
        diagnosis::analyze_file_with(&a.pcap, diagnosis::embedded(), &filter, reading, |c| {
            if let Some(text) = printer.add(c) {
                out.say(&text);
            }
        })?;
    out.say(&printer.finish(&stats));
    drop(out);
    let (undecoded, other) = stats.skipped_text();
    if !undecoded.is_empty() {
        eprintln!(
            "warning: {}: packets in layers teardown does not decode were skipped (any TCP inside them is not analyzed): {}",
            a.pcap.display(),
            undecoded.join(", ")
        );
    }
    if !other.is_empty() {
        eprintln!(
            "note: {}: packets that carry no TCP were skipped: {}",
            a.pcap.display(),
            other.join(", ")
        );
    }
    match &stats.stopped {
        Some(why) => {
            eprintln!("warning: analysis stopped early: {why}");
            Ok(exit::BAD_INPUT)
        }
        None => Ok(exit::OK),
    }
}

fn json(v: &impl serde::Serialize) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(v).expect("report types serialise")
    )
}

/// Output that streams, one piece per connection: to a terminal each piece
/// shows at once, to a pipe or a file it goes out in large writes (a write
/// per connection would cost a capture of 20,000 connections 20,000 system
/// calls). Like [`say`], a reader that went away just ends the output.
struct Streamed {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    terminal: bool,
}

impl Streamed {
    fn stdout() -> Streamed {
        use std::io::IsTerminal;
        let stdout = std::io::stdout();
        Streamed {
            terminal: stdout.is_terminal(),
            out: std::io::BufWriter::with_capacity(1 << 16, stdout.lock()),
        }
    }

    fn say(&mut self, text: &str) {
        use std::io::Write;
        let _ = self.out.write_all(text.as_bytes());
        if self.terminal {
            let _ = self.out.flush();
        }
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = self.out.flush();
    }
}

/// Writes to stdout. A reader that went away (`teardown run | head`) is not
/// an error worth a panic: the output just stops.
fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// `teardown agent`: serves one session on stdin and stdout, or sessions
/// over TCP.
/// A userspace stack an agent can run on a link.
#[derive(Clone, Copy, Debug)]
enum Userspace {
    Smoltcp,
    Lwip,
}

impl Userspace {
    /// The agent's flag that asks for it.
    fn flag(self) -> &'static str {
        match self {
            Userspace::Smoltcp => "--smoltcp",
            Userspace::Lwip => "--lwip",
        }
    }
}

/// `teardown agent --smoltcp IFACE` or `--lwip IFACE`: one session on
/// stdin and stdout.
#[cfg(target_os = "linux")]
fn userspace_agent(
    stack: Userspace,
    listen: Option<std::net::SocketAddr>,
    interface: String,
    addresses: Vec<(std::net::IpAddr, u8)>,
    gateways: Vec<std::net::IpAddr>,
) -> Result<i32, CliError> {
    use crate::driver::agent::{link, lwip, smoltcp};
    if listen.is_some() {
        return Err(CliError::Agent(format!(
            "{} serves one session on stdin and stdout; --listen is for the OS's stack",
            stack.flag()
        )));
    }
    let config = link::Config {
        interface,
        addresses,
        gateways,
    };
    let input = std::io::BufReader::new(std::io::stdin());
    let output = Box::new(std::io::stdout());
    match stack {
        Userspace::Smoltcp => smoltcp::serve(input, output, &config),
        Userspace::Lwip => lwip::serve(input, output, &config),
    }
    .map_err(|e| CliError::Agent(e.to_string()))?;
    Ok(exit::OK)
}

#[cfg(not(target_os = "linux"))]
fn userspace_agent(
    stack: Userspace,
    _listen: Option<std::net::SocketAddr>,
    _interface: String,
    _addresses: Vec<(std::net::IpAddr, u8)>,
    _gateways: Vec<std::net::IpAddr>,
) -> Result<i32, CliError> {
    Err(CliError::Agent(format!(
        "{} runs on Linux (a raw packet socket)",
        stack.flag()
    )))
}

fn agent(listen: Option<std::net::SocketAddr>, own_stack: bool) -> Result<i32, CliError> {
    use crate::driver::agent::serve;
    let failed = CliError::Agent;
    match listen {
        None => {
            let stdin = std::io::stdin().lock();
            serve::serve(
                stdin,
                Box::new(std::io::stdout()),
                Box::new(serve::OsStack::new(own_stack)),
            )
            .map_err(|e| failed(e.to_string()))?;
        }
        Some(addr) => serve::listen(addr, own_stack, |at| {
            eprintln!("teardown agent: listening on {at}");
        })
        .map_err(|e| failed(format!("{addr}: {e}")))?,
    }
    Ok(exit::OK)
}
