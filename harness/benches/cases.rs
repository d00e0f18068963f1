//! `just bench`: what a case costs, measured (needs root).
//!
//! 1. Latency: one timer-free case (close-graceful/ipv4) run alone, 60 times;
//!    median and spread of its wall time and of each phase.
//! 2. Throughput: the same case 60 times with the default job count; wall
//!    time divided by cases is the amortised cost per case.
//! 3. The full matrix (every case of every scenario) with the default job
//!    count, 3 times: wall time against its longest case (goal: at most
//!    1.2 x longest + 1 s), and the per-case overhead (everything but the
//!    steps: namespace, capture setup, analysis, pcap, verdict).
//! 4. The matrix through the real binary (`teardown run`), 3 times: wall
//!    time and the peak resident memory of that process.
//! 5. Peak resident memory of this bench process.
//! 6. Capture backends: the latency of (1) with libpcap and with the raw
//!    packet socket, interleaved run by run, so both see the same machine.
//! 7. The catalogue on gVisor (`teardown run --stack gvisor`), if runsc is
//!    there (`just runsc`): wall time, and how many cases ran.
//! 8. One case of 1,000 and one of 10,000 connections closing at once.
//! 9. `teardown analyze` on a capture of 20,000 connections, against tshark
//!    and tcptrace, 3 rounds; then the summary table 15 more times, as a
//!    rate against the goal of 1 GB/s.
//! 10. The bench (two hosts and a router) against loopback.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use teardown::capture::Reaper;
use teardown::report::CaseReport;
use teardown::runner::{self, RunOptions};
use teardown::scenario::Case;
use teardown::stack::{HostStack, Stack};
use teardown::tcp::PerSide;

const RUNS: usize = 60;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut xs: Vec<f64>) {
    xs.sort_by(f64::total_cmp);
    println!(
        "  {name:<18} median {:>7.2} ms   p10 {:>7.2}   p90 {:>7.2}   max {:>7.2}",
        percentile(&xs, 0.5),
        percentile(&xs, 0.1),
        percentile(&xs, 0.9),
        xs[xs.len() - 1]
    );
}

fn peak_rss_kib() -> u64 {
    vm_hwm_kib("/proc/self/status").unwrap_or(0)
}

/// The `VmHWM` (peak resident set) line of a `/proc/<pid>/status` file.
fn vm_hwm_kib(status_file: &str) -> Option<u64> {
    std::fs::read_to_string(status_file).ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    })
}

fn main() {
    if let Err(e) = runner::check_privileges() {
        eprintln!("bench: {e}");
        std::process::exit(77);
    }
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    teardown::driver::program::use_supervisor(env!("CARGO_BIN_EXE_teardown"));
    let all: Vec<Case> =
        teardown::catalogue::load(std::slice::from_ref(&scenarios)).expect("scenarios");
    let case = all
        .iter()
        .find(|c| c.id == "close-graceful/ipv4")
        .expect("close-graceful/ipv4")
        .clone();
    let scratch = tempfile::Builder::new()
        .prefix("teardown-bench-")
        .tempdir()
        .unwrap();
    let captures = scratch.path().to_path_buf();
    let stack = Stack::detect();
    // The committed baseline: its durations order the matrix as `just
    // matrix` orders it (longest first).
    let baseline = scenarios
        .join("../reports/baseline")
        .join(format!("{}.json", std::env::consts::OS));
    let expected_ms = teardown::baseline::Baseline::read(&baseline)
        .map(|b| b.durations_ms)
        .unwrap_or_default();
    let opts = |jobs| RunOptions {
        captures_dir: Some(captures.clone()),
        run_id: "bench".into(),
        jobs,
        stack: stack.clone(),
        expected_ms: expected_ms.clone(),
        bench: false,
        hosts: Default::default(),
    };

    println!(
        "teardown bench on {} ({} CPUs), kernel {}",
        std::env::consts::ARCH,
        num_cpus(),
        runner::host(&stack, None).kernel
    );

    // 1. latency, one case at a time
    let reaper = Reaper::default();
    let _ = runner::run_case(&case, &opts(1), &reaper); // warm-up
    let runs: Vec<CaseReport> = (0..RUNS)
        .map(|_| runner::run_case(&case, &opts(1), &reaper))
        .collect();
    reaper.wait();
    assert!(
        runs.iter()
            .all(|r| r.verdict.status == teardown::verdict::Status::Pass),
        "the benchmark case must pass"
    );
    println!(
        "\n1. latency of {} alone, {RUNS} runs (namespace + capture + steps + analysis + pcap + verdict):",
        case.id
    );
    summary("case", runs.iter().map(|r| r.duration_ms).collect());
    summary(
        "  sandbox",
        runs.iter().map(|r| r.timing.sandbox_ms).collect(),
    );
    summary(
        "  observe setup",
        runs.iter().map(|r| r.timing.observe_setup_ms).collect(),
    );
    summary(
        "  steps + settle",
        runs.iter().map(|r| r.timing.run_ms).collect(),
    );
    summary(
        "  finish",
        runs.iter().map(|r| r.timing.finish_ms).collect(),
    );
    summary(
        "without capture setup",
        runs.iter()
            .map(|r| r.duration_ms - r.timing.observe_setup_ms)
            .collect(),
    );

    // 2. throughput
    let many: Vec<Case> = (0..RUNS).map(|_| case.clone()).collect();
    let t = Instant::now();
    let report = runner::run_all(
        &many,
        &opts(runner::default_jobs()),
        &AtomicBool::new(false),
        &|_| {},
    );
    let wall = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(report.summary.pass, RUNS);
    println!(
        "\n2. throughput: {RUNS} x {} with {} jobs: {wall:.1} ms wall, {:.2} ms per case",
        case.id,
        runner::default_jobs(),
        wall / RUNS as f64
    );

    // 3. the full matrix, in process
    println!(
        "\n3. full matrix in process: {} cases, {} jobs, goal wall <= 1.2 x longest + 1 s",
        all.len(),
        runner::default_jobs()
    );
    let mut overhead = Vec::new();
    for round in 1..=3 {
        let t = Instant::now();
        let report = runner::run_all(
            &all,
            &opts(runner::default_jobs()),
            &AtomicBool::new(false),
            &|_| {},
        );
        let wall = t.elapsed().as_secs_f64() * 1e3;
        let longest = report
            .cases
            .iter()
            .max_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms))
            .expect("cases");
        let goal = 1.2 * longest.duration_ms + 1000.0;
        println!(
            "  run {round}: {wall:.1} ms wall; longest {} {:.1} ms; ratio {:.2}; goal {goal:.0} ms {}; verdicts {} pass, {} fail, {} unchecked, {} error",
            longest.id,
            longest.duration_ms,
            wall / longest.duration_ms,
            if wall <= goal { "met" } else { "NOT met" },
            report.summary.pass,
            report.summary.fail,
            report.summary.unchecked,
            report.summary.error
        );
        let failed = not_passed(&report);
        if !failed.is_empty() {
            println!("    {failed}");
        }
        overhead.extend(report.cases.iter().map(|c| c.duration_ms - c.timing.run_ms));
    }
    summary("per-case overhead", overhead);

    // 4. the matrix through the binary, as `just run-scenarios` runs it
    println!("\n4. full matrix through `teardown run` (separate process):");
    for round in 1..=3 {
        let out_dir = captures.join(format!("binary-{round}"));
        let (wall, status, peak) = run_measured(
            std::process::Command::new(env!("CARGO_BIN_EXE_teardown"))
                .arg("run")
                .arg("--quiet")
                .arg("--report")
                .arg(out_dir.join("report.json"))
                .arg("--captures")
                .arg(&out_dir)
                .arg("--baseline")
                .arg(&baseline)
                .arg(&scenarios),
        );
        // A run that did not pass names its cases: the report goes with the
        // bench's temporary directory.
        let failed = teardown::report::load::read(&out_dir.join("report.json"))
            .map(|r| not_passed(&r))
            .unwrap_or_default();
        println!(
            "  run {round}: {wall:.1} ms wall, exit {:?}, peak RSS {peak} KiB{}",
            status.code(),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; {failed}")
            }
        );
    }

    println!(
        "\n5. peak RSS of this bench process: {} KiB",
        peak_rss_kib()
    );

    // 6. capture backends, interleaved
    println!(
        "\n6. {} alone with each capture backend, {RUNS} runs each, interleaved:",
        case.id
    );
    let mut raw_stack = stack.clone();
    raw_stack.capture = teardown::capture::CaptureBackend::RawSocket;
    let with = |s: &Stack| RunOptions {
        captures_dir: Some(captures.clone()),
        run_id: "bench".into(),
        jobs: 1,
        stack: s.clone(),
        expected_ms: Default::default(),
        bench: false,
        hosts: Default::default(),
    };
    let [libpcap, raw] = interleaved(&case, [with(&stack), with(&raw_stack)], &reaper);
    reaper.wait();
    summary("libpcap case", libpcap.iter().map(|x| x.0).collect());
    summary("  capture setup", libpcap.iter().map(|x| x.1).collect());
    summary("raw-socket case", raw.iter().map(|x| x.0).collect());
    summary("  capture setup", raw.iter().map(|x| x.1).collect());

    // 7. gVisor
    match teardown::stack::gvisor::find_runsc() {
        None => println!("\n7. gVisor: runsc not found (just runsc), skipped"),
        Some(runsc) => {
            let out_dir = captures.join("gvisor");
            let report = out_dir.join("report.json");
            let t = Instant::now();
            let status = std::process::Command::new(env!("CARGO_BIN_EXE_teardown"))
                .args([
                    "run",
                    "--stack",
                    "gvisor",
                    "--quiet",
                    "--no-captures",
                    "--report",
                ])
                .arg(&report)
                .arg(&scenarios)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run teardown");
            let wall = t.elapsed().as_secs_f64() * 1e3;
            let r = teardown::report::load::read(&report).expect("the gVisor report");
            println!(
                "\n7. the catalogue on gVisor ({}): {wall:.1} ms wall, exit {:?}; {} cases: {} pass, {} unsupported, {} fail, {} error",
                runsc.display(),
                status.code(),
                r.cases.len(),
                r.summary.pass,
                r.summary.unsupported,
                r.summary.fail,
                r.summary.error
            );
        }
    }

    // 8. many connections in one case, through the binary
    println!(
        "\n8. one case of 1,000 and one of 10,000 connections closing at once (harness/benches/ten-thousand.toml):"
    );
    let many = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ten-thousand.toml");
    for n in ["1000", "10000"] {
        let out_dir = captures.join(format!("many-{n}"));
        let report = out_dir.join("report.json");
        let (wall, status, peak) = run_measured(
            std::process::Command::new(env!("CARGO_BIN_EXE_teardown"))
                .args(["run", "--quiet", "-j", "1", "-p"])
                .arg(format!("n={n}"))
                .arg("--report")
                .arg(&report)
                .arg("--captures")
                .arg(&out_dir)
                .arg(&many),
        );
        let r = teardown::report::load::read(&report).expect("the many-connection report");
        let c = &r.cases[0];
        let stats = c.outcome.capture_stats.as_ref();
        let records = c
            .outcome
            .connections_file
            .as_ref()
            .map(|f| std::fs::read_to_string(f).expect("the connections file"))
            .unwrap_or_default();
        // Exact accounting: every connection a SYN, a FIN and no RST each
        // way, and the client in TIME-WAIT.
        let exact = records
            .lines()
            .filter(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                ["client", "server"].iter().all(|s| {
                    let w = &v["wire"][s];
                    w["syn"] == 1 && w["fin"] == 1 && w["rst"] == 0
                }) && v["final_state"]["client"] == "TIME-WAIT"
            })
            .count();
        println!(
            "  {n} connections: {wall:.1} ms wall (case {:.1} ms), exit {:?}, verdict {:?}, peak RSS {peak} KiB; \
             {} packets, capture dropped {:?}, loopback dropped {:?}; {exact} of {} connections exactly SYN+FIN each way, no RST, client TIME-WAIT",
            c.duration_ms,
            status.code(),
            c.verdict.status,
            stats.map_or(0, |s| s.packets),
            stats.and_then(|s| s.dropped),
            stats.and_then(|s| s.loopback_dropped),
            records.lines().count(),
        );
    }

    // 9. teardown analyze on a capture of 20,000 connections, against tshark
    println!(
        "\n9. `teardown analyze` on the churn capture (harness/benches/churn.toml), against tshark -z conv,tcp and tcptrace -n:"
    );
    let churn = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/churn.toml");
    let out_dir = captures.join("churn");
    let (_, status, _) = run_measured(
        std::process::Command::new(env!("CARGO_BIN_EXE_teardown"))
            .args(["run", "--quiet", "--report"])
            .arg(out_dir.join("report.json"))
            .arg("--captures")
            .arg(&out_dir)
            .arg(&churn),
    );
    let pcap = std::fs::read_dir(&out_dir)
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok().filter(|e| e.path().is_dir())))
        .map(|run| run.path().join("churn-ipv4.pcap"));
    match pcap.filter(|p| p.exists()) {
        None => println!(
            "  the churn case did not write its pcap (exit {:?}), skipped",
            status.code()
        ),
        Some(pcap) => {
            for round in 1..=3 {
                // The summary table (what tshark -z conv prints is a
                // summary too), then every connection as a JSON line.
                let (s_wall, s_status, s_peak) = run_measured(
                    std::process::Command::new(env!("CARGO_BIN_EXE_teardown"))
                        .arg("analyze")
                        .arg(&pcap),
                );
                println!(
                    "  round {round}: teardown analyze (table) {s_wall:.1} ms, peak RSS {s_peak} KiB (exit {:?})",
                    s_status.code()
                );
                let (wall, status, peak) = run_measured(
                    std::process::Command::new(env!("CARGO_BIN_EXE_teardown"))
                        .args(["analyze", "--format", "jsonl"])
                        .arg(&pcap),
                );
                let (t_wall, t_status, t_peak) = run_measured(
                    std::process::Command::new("tshark")
                        .args(["-q", "-z", "conv,tcp", "-r"])
                        .arg(&pcap),
                );
                // tcptrace's connection summary (`-n`: no name lookups).
                let (tt_wall, tt_status, tt_peak) =
                    run_measured(std::process::Command::new("tcptrace").arg("-n").arg(&pcap));
                println!(
                    "  round {round}: teardown analyze --format jsonl {wall:.1} ms, peak RSS {peak} KiB (exit {:?}); tshark {t_wall:.1} ms, peak RSS {t_peak} KiB (exit {:?}); tcptrace {tt_wall:.1} ms, peak RSS {tt_peak} KiB (exit {:?})",
                    status.code(),
                    t_status.code(),
                    tt_status.code()
                );
            }
            // The goal is a rate, and this machine's speed drifts run to
            // run: the summary table 15 more times, its median and best.
            let bytes = std::fs::metadata(&pcap).map_or(0, |m| m.len()) as f64;
            let mut walls: Vec<f64> = (0..15)
                .map(|_| {
                    run_measured(
                        std::process::Command::new(env!("CARGO_BIN_EXE_teardown"))
                            .arg("analyze")
                            .arg(&pcap),
                    )
                    .0
                })
                .collect();
            walls.sort_by(f64::total_cmp);
            let rate = |ms: f64| bytes / ms / 1e6;
            println!(
                "  summary table, 15 more runs of {:.1} MB: median {:.1} ms ({:.2} GB/s), best {:.1} ms ({:.2} GB/s); goal 1 GB/s",
                bytes / 1e6,
                percentile(&walls, 0.5),
                rate(percentile(&walls, 0.5)),
                walls[0],
                rate(walls[0]),
            );
        }
    }
    // 10. the bench against loopback, side by side
    println!(
        "\n10. the bench (two hosts and a router) against loopback, and with an agent at both ends, interleaved; goals: a case <= 2 x, the catalogue <= 1.5 x"
    );
    let on = |bench, hosts| RunOptions {
        captures_dir: Some(captures.clone()),
        run_id: "bench".into(),
        jobs: 1,
        stack: stack.clone(),
        expected_ms: Default::default(),
        bench,
        hosts,
    };
    let agents = PerSide::both(HostStack::LinuxAgent);
    let [lo, be, ag] = interleaved(
        &case,
        [
            on(false, PerSide::default()),
            on(true, PerSide::default()),
            on(true, agents),
        ],
        &reaper,
    );
    reaper.wait();
    let median = |xs: &[(f64, f64)]| {
        let mut v: Vec<f64> = xs.iter().map(|x| x.0).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    };
    summary("loopback case", lo.iter().map(|x| x.0).collect());
    summary("bench case", be.iter().map(|x| x.0).collect());
    summary("  bench setup (sandbox)", be.iter().map(|x| x.1).collect());
    summary(
        "bench case, agents at both ends",
        ag.iter().map(|x| x.0).collect(),
    );
    println!(
        "  median bench / loopback: {:.2} x; with agents / loopback: {:.2} x",
        median(&be) / median(&lo),
        median(&ag) / median(&lo)
    );
    for round in 1..=2 {
        let mut walls = Vec::new();
        for (name, args) in [
            ("on loopback", &[][..]),
            ("on the bench", &["--bench"][..]),
            (
                "with agents",
                &[
                    "--bench",
                    "--client-stack",
                    "linux-agent",
                    "--server-stack",
                    "linux-agent",
                ][..],
            ),
        ] {
            let report = captures.join(format!("bench-{}.json", walls.len()));
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_teardown"));
            cmd.args(["run", "--quiet", "--no-captures", "--report"])
                .arg(&report)
                .args(args)
                .stdout(std::process::Stdio::null());
            cmd.arg(&scenarios);
            let t = Instant::now();
            let status = cmd.status().expect("run teardown");
            let wall = t.elapsed().as_secs_f64() * 1e3;
            let r = teardown::report::load::read(&report).expect("the report");
            println!(
                "  round {round}: catalogue {name:<12} {wall:.0} ms wall (exit {:?}; {} pass of {}){}",
                status.code(),
                r.summary.pass,
                r.cases.len(),
                not_passed(&r)
            );
            walls.push(wall);
        }
        println!(
            "  round {round}: bench / loopback {:.2} x; with agents / loopback {:.2} x",
            walls[1] / walls[0],
            walls[2] / walls[0]
        );
    }
}

/// Runs `case` RUNS times under each of `variants`, interleaved so that the
/// machine's drift is shared; each run's (duration, its setup phase: the
/// capture's for a capture variant, the sandbox's for a topology) per variant.
fn interleaved<const N: usize>(
    case: &teardown::scenario::Case,
    variants: [RunOptions; N],
    reaper: &Reaper,
) -> [Vec<(f64, f64)>; N] {
    let mut out: [Vec<(f64, f64)>; N] = std::array::from_fn(|_| Vec::new());
    for _ in 0..RUNS {
        for (opts, runs) in variants.iter().zip(out.iter_mut()) {
            let r = runner::run_case(case, opts, reaper);
            assert_eq!(
                r.verdict.status,
                teardown::verdict::Status::Pass,
                "{}",
                r.id
            );
            let setup = if opts.bench {
                r.timing.sandbox_ms
            } else {
                r.timing.observe_setup_ms
            };
            runs.push((r.duration_ms, setup));
        }
    }
    reaper.wait();
    out
}

/// `not passed: ID (status: what differed or was missing), ...` for a report's cases that
/// did not pass, so that a rare failure can be read from the bench's output
/// alone; empty when all passed.
fn not_passed(r: &teardown::report::Report) -> String {
    let failed: Vec<String> = r
        .cases
        .iter()
        .filter(|c| c.verdict.status != teardown::verdict::Status::Pass)
        .map(|c| {
            let what: Vec<String> = c
                .verdict
                .mismatches
                .iter()
                .map(|m| {
                    format!(
                        "{}: expected {}, observed {}",
                        m.path, m.expected, m.observed
                    )
                })
                .chain(c.verdict.error.clone())
                .chain(c.verdict.unsupported.iter().cloned())
                .collect();
            format!(
                "{} ({}: {})",
                c.id,
                c.verdict.status.name(),
                what.join("; ")
            )
        })
        .collect();
    if failed.is_empty() {
        String::new()
    } else {
        format!("not passed: {}", failed.join(", "))
    }
}

/// Runs a command (stdout discarded): its wall time in ms, exit status and
/// peak RSS in KiB. VmHWM only grows; sampled every millisecond it misses at
/// most the last millisecond of the run, and the wall time overshoots the
/// exit by at most that much (at 5 ms, as before, that was up to 5 ms of a
/// 50 ms run). (getrusage's ru_maxrss cannot be
/// used: it counts this big parent's memory, which the child had before
/// exec.)
fn run_measured(cmd: &mut std::process::Command) -> (f64, std::process::ExitStatus, u64) {
    let t = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run the command");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(&status_file) {
            peak = peak.max(kib);
        }
        if let Some(s) = child.try_wait().expect("wait for the command") {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    (t.elapsed().as_secs_f64() * 1e3, status, peak)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
