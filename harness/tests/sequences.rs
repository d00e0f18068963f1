//! Property-based sequences: random but valid socket operations on both
//! sides, each sequence run for real as a scenario, and invariants that
//! must hold whatever the kernel decides (see [`invariants`]).
//!
//! A failing sequence is shrunk by proptest to a minimal one and written out
//! as a scenario file (`target/teardown-proptest/<test>.toml`) that
//! reproduces it with `teardown run <file>`; copy it into `scenarios/` to
//! keep it. `TEARDOWN_PROPTEST_CASES` sets how many sequences run (default
//! 16, which keeps `just test` quick; `just proptest` runs 1000).
//!
//! `TEARDOWN_PROPTEST_SEED` picks the sequences: unset, a fixed seed, so
//! `just test` checks the same sequences on every run and CI fails only when
//! behaviour changes, not when the generator wanders somewhere new; a number,
//! that seed; `random`, a fresh one (what `just proptest` uses to explore).
//! The seed is printed, and named in a failure, so any run can be repeated.
//!
//! Needs root, like the other end-to-end tests.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

#[path = "support/seed.rs"]
mod seed;
use seed::seed_from_env;
use teardown::capture::{self, Reaper};
use teardown::report::CaseReport;
use teardown::runner::{self, RunOptions};
use teardown::scenario;
use teardown::verdict::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Write(usize),
    ReadAvailable,
    Shutdown(&'static str),
    Linger(Option<u32>),
    NonBlocking(bool),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..=65536).prop_map(Op::Write),
        2 => Just(Op::ReadAvailable),
        1 => prop::sample::select(vec!["RD", "WR", "RDWR"]).prop_map(Op::Shutdown),
        1 => prop::option::of(Just(0u32)).prop_map(Op::Linger),
        1 => any::<bool>().prop_map(Op::NonBlocking),
        1 => Just(Op::Close),
    ]
}

fn sequence() -> impl Strategy<Value = Vec<(Side, Op)>> {
    prop::collection::vec(
        (prop::sample::select(vec![Side::Client, Side::Server]), op()),
        0..12,
    )
}

/// The sequence as a scenario file. Operations on a side after its close
/// are left out (they are not valid calls). Then every side still open
/// shuts down writing, reads to EOF (bounded) and closes, so that "nothing
/// was lost" is a fair question whenever no RST was sent.
fn scenario_text(seq: &[(Side, Op)]) -> String {
    let mut closed = [false, false];
    let mut lines = Vec::new();
    for (side, op) in seq {
        let i = *side as usize;
        if closed[i] {
            continue;
        }
        let s = side.name();
        lines.push(match op {
            Op::Write(n) => format!("{s} write {n} dontwait"),
            Op::ReadAvailable => format!("{s} read available"),
            Op::Shutdown(how) => format!("{s} shutdown {how}"),
            Op::Linger(None) => format!("{s} setsockopt SO_LINGER off"),
            Op::Linger(Some(t)) => format!("{s} setsockopt SO_LINGER on {t}"),
            Op::NonBlocking(on) => {
                format!(
                    "{s} setsockopt O_NONBLOCK {}",
                    if *on { "on" } else { "off" }
                )
            }
            Op::Close => {
                closed[i] = true;
                format!("{s} close")
            }
        });
    }
    lines.push("# epilogue: every open side shuts down writing, reads to EOF, closes".into());
    let open: Vec<&str> = [Side::Client, Side::Server]
        .into_iter()
        .filter(|s| !closed[*s as usize])
        .map(Side::name)
        .collect();
    for s in &open {
        lines.push(format!("{s} shutdown WR"));
    }
    for s in &open {
        lines.push(format!("{s} setsockopt O_NONBLOCK off"));
        lines.push(format!("{s} read until-eof within 1s"));
    }
    for s in &open {
        lines.push(format!("{s} close"));
    }
    format!(
        "title = \"generated operation sequence\"\nsettle = \"300ms\"\nparams = {{ family = [\"ipv4\"] }}\nsteps = '''\n{}\n'''\n",
        lines.join("\n")
    )
}

/// SYN/FIN/RST per side, counted straight from the pcap with etherparse
/// (not through the harness's `wire`/`analyze` modules). The capture filter
/// is `tcp`, so every frame must have a TCP header.
fn flags_in_pcap(path: &Path) -> [[u32; 3]; 2] {
    let captured = capture::read_pcap(path).expect("the case's pcap");
    assert_eq!(captured.linktype, 1, "Linux captures lo as Ethernet");
    let mut counts = [[0u32; 3]; 2];
    for p in &captured.packets {
        // Lax: the capture's snaplen cuts long segments short, and the
        // header is all this needs.
        let sliced = etherparse::LaxSlicedPacket::from_ethernet(&p.data)
            .unwrap_or_else(|e| panic!("{}: a frame etherparse cannot read: {e}", path.display()));
        let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("{}: a captured frame without a TCP header", path.display());
        };
        let side = usize::from(tcp.source_port() == teardown::driver::SERVER_PORT);
        counts[side][0] += u32::from(tcp.syn());
        counts[side][1] += u32::from(tcp.fin());
        counts[side][2] += u32::from(tcp.rst());
    }
    counts
}

/// What must hold whatever the kernel does.
fn invariants(seq: &[(Side, Op)], r: &CaseReport) -> Result<(), String> {
    if r.verdict.status == Status::Error {
        return Err(format!("harness error: {:?}", r.verdict.error));
    }
    let o = &r.outcome;
    let wire = o.wire.as_ref().ok_or("no wire facts")?;
    for (dir, f) in [
        ("client->server", &o.data.client_to_server),
        ("server->client", &o.data.server_to_client),
    ] {
        // The harness is both ends: every count is its own.
        let (Some(written), Some(read), Some(corrupted)) = (f.written, f.read, f.corrupted) else {
            return Err(format!(
                "{dir}: the harness's own counts are missing: {f:?}"
            ));
        };
        if corrupted != 0 {
            return Err(format!("{dir}: the reader got {corrupted} wrong bytes"));
        }
        if read > written {
            return Err(format!("{dir}: read {read} > written {written}"));
        }
    }
    // "Both sides read to EOF": neither closed before the epilogue (a close
    // discards unread data, silently once both FINs are through) and
    // neither gave up reading with SHUT_RD.
    let both_read_to_eof = !seq
        .iter()
        .any(|(_, op)| matches!(op, Op::Close | Op::Shutdown("RD" | "RDWR")));
    if wire.sides.client.rst == 0 && wire.sides.server.rst == 0 && both_read_to_eof {
        for (dir, f) in [
            ("client->server", &o.data.client_to_server),
            ("server->client", &o.data.server_to_client),
        ] {
            if f.lost != Some(0) {
                return Err(format!(
                    "{dir}: {:?} bytes lost with no RST on the wire and both sides reading to EOF",
                    f.lost
                ));
            }
        }
    }
    use teardown::outcome::TimeWaitSide as Tw;
    let tw = o.time_wait.side;
    if wire.sides.client.fin == 0 && matches!(tw, Some(Tw::Client | Tw::Both)) {
        return Err("the client is in TIME-WAIT without having sent a FIN".into());
    }
    if wire.sides.server.fin == 0 && matches!(tw, Some(Tw::Server | Tw::Both)) {
        return Err("the server is in TIME-WAIT without having sent a FIN".into());
    }
    let pcap = r.capture.as_deref().ok_or("no pcap written")?;
    let counted = flags_in_pcap(Path::new(pcap));
    for (i, s) in [&wire.sides.client, &wire.sides.server]
        .into_iter()
        .enumerate()
    {
        let reported = [s.syn, s.fin, s.rst];
        if reported != counted[i] {
            return Err(format!(
                "side {i}: report says SYN/FIN/RST {reported:?}, the capture has {:?}",
                counted[i]
            ));
        }
    }
    Ok(())
}

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/teardown-proptest")
}

/// Runs `property` over generated sequences. Every failing sequence is
/// written to `<out_dir>/<name>.toml`; proptest tries smaller sequences
/// after a failure and keeps the smallest that still fails, so the file
/// left behind is the minimal one. Returns that path on failure.
fn check_sequences(
    name: &str,
    cases: u32,
    property: impl Fn(&[(Side, Op)], &str) -> Result<(), String>,
) -> Result<(), (String, PathBuf)> {
    let path = out_dir().join(format!("{name}.toml"));
    let seed = seed_from_env();
    eprintln!("{name}: {cases} sequences, TEARDOWN_PROPTEST_SEED={seed}");
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    let result = runner.run(&sequence(), |seq| {
        let text = scenario_text(&seq);
        property(&seq, &text).map_err(|why| {
            std::fs::create_dir_all(out_dir()).expect("target dir");
            let file = format!(
                "# {why}\n# found with TEARDOWN_PROPTEST_SEED={seed}\n# reproduce: teardown run {}\n{text}",
                path.display()
            );
            std::fs::write(&path, file).expect("write the failing scenario");
            TestCaseError::fail(why)
        })
    });
    result.map_err(|e| (format!("{e} (TEARDOWN_PROPTEST_SEED={seed})"), path))
}

fn cases_from_env() -> u32 {
    std::env::var("TEARDOWN_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

#[test]
fn random_sequences_keep_the_invariants() {
    if let Err(e) = runner::check_privileges() {
        panic!("sequences run real sockets in network namespaces: {e}");
    }
    let scratch = tempfile::Builder::new()
        .prefix("teardown-seq-")
        .tempdir()
        .unwrap();
    let captures = scratch.path().to_path_buf();
    let opts = RunOptions {
        captures_dir: Some(captures),
        run_id: "seq".into(),
        jobs: 1,
        stack: teardown::stack::Stack::detect(),
        expected_ms: Default::default(),
        bench: false,
        hosts: Default::default(),
    };
    let reaper = Reaper::default();
    let result = check_sequences("random-sequences", cases_from_env(), |seq, text| {
        let cases = teardown::catalogue::parse(Path::new("generated.toml"), text)
            .map_err(|e| format!("the generator wrote an invalid scenario: {e}"))?;
        let report = runner::run_case(&cases[0], &opts, &reaper);
        invariants(seq, &report)
    });
    reaper.wait();
    if let Err((why, path)) = result {
        panic!(
            "{why}\nminimal failing sequence written to {}",
            path.display()
        );
    }
}

/// The shrink-and-write path itself: a property that fails whenever the
/// client closes must end with the one-step sequence `client close` in the
/// file, and that file must be a valid scenario.
#[test]
fn a_failure_shrinks_to_a_minimal_scenario_file() {
    let result = check_sequences("shrink-self-test", 256, |seq, _| {
        if seq
            .iter()
            .any(|(s, op)| *s == Side::Client && *op == Op::Close)
        {
            Err("the client closed".into())
        } else {
            Ok(())
        }
    });
    let (why, path) = result.expect_err("some sequence closes the client");
    assert!(why.contains("the client closed"), "{why}");
    let text = std::fs::read_to_string(&path).unwrap();
    let steps: Vec<&str> = text
        .split("'''")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(steps[0], "client close", "{text}");
    assert_eq!(
        steps.iter().filter(|l| !l.starts_with("server")).count(),
        1,
        "{text}"
    );
    scenario::load(&path).expect("the written file is a valid scenario");
}
